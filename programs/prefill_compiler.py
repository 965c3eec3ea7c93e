"""The tiny transformer's prefill compiled onto the prefill engine: every prompt token at
once, as one command stream, bit-exact with
:meth:`programs.transformer.model.IntModel.int_forward_prefill` (the pipeline of that module's
docstring; the engine is docs/ARCHITECTURE.md section 11).

:func:`compile_prefill` gives a :class:`PrefillPlan` (the DRAM image, the commands, the output
layout); :func:`run_prefill` runs it on the emulator (or the RTL in the Amaranth simulator) and
returns the outputs, the cycles and the cycles per phase.

Notation: n = the array size, M = the prompt's tokens, d = 64, Dt = d / n column tiles,
Lt = ceil(M / n) key tiles, T = the weight tiles of the whole model. A matrix of M rows and C
columns lives in SBUF (or PSUM) as ceil(C / n) column tiles of M consecutive rows
(:mod:`programs.prefill`): tile j, row r holds columns j n .. j n + n - 1 of row r.

DRAM image (built from the model alone, byte addresses in :attr:`PrefillPlan.dram_map`; the
prompt enters only through the command stream, so the image is the same for every prompt of
one model and n; the outputs follow it):

* ``weights``: every weight tile in the order the program uses it, n x n bytes each
  (:mod:`programs.prefill`'s tile t = nt Kt + kt of each matrix: row i = W[kt n + i, nt n ..]):
  per layer wq, wk, wv, wo, w1, w2, then wout (13 columns padded to 16);
* ``tok_emb`` (13 x 64) and ``pos_emb`` (64 x 64), row-major int8;
* ``ones`` (64 rows of n ones) and ``big`` (64 rows of n x 127): MULW operands;
* ``mask``: the causal staircase, rows s = -S0 .. 63 (S0 = 8 (ceil(64 / n) - 1)), lane k = -128
  when k > s, else 0; key tile j of the M x M mask is its M rows from s = -j n;
* ``tables``: the exp table, the two GELU tables (ceil(256 / n) rows each), the argmax rows
  (``padmask``: -128 in the lanes past the vocabulary of the last logits tile; ``index``: per
  logits tile, lane k = -(tile n + k));
* then the outputs (:attr:`PrefillPlan.layout`, name -> (address, shape, dtype)):
  ``l{l}.k`` and ``l{l}.v`` (M x 64 int8, row-major: byte 64 r + c = K[r, c], the KV cache),
  ``x`` (64 int8: the last token's final hidden state, before the final norm), ``logits``
  (13 int32 little-endian, the last token's) and ``token`` (one byte: the first generated token,
  the argmax of the logits computed on the engine, ties to the lowest index; the store writes n
  bytes, all equal).

SBUF (rows; :attr:`PrefillPlan.sbuf_map`): ``ones`` (max(M, 2)), ``tables``, ``x`` (8M, the
residual), ``h`` (8M: the norms' outputs, the projections a and f before the residual adds; at
the start the M rows of 127), ``q`` (8M: at the start the gathered E_tok rows; each head's
output o overwrites its own q tiles), ``k`` (8M), ``v`` (8M), ``p`` (Lt M: one head's
probabilities; at the start the mask), ``final`` (Dt + 3: the final norm's row, the argmax
rows), ``ring`` (``slots`` chunks of ``chunk`` weight tiles). u and g (16M) use the rows of q
and k once the attention is done. A store reads SBUF when its row requests issue, after the
command, so a vector op or LOAD writing rows a store may still read first WAITs for its tag
(here: the W1 REQUANT into u after the K store, once per layer). No initial SBUF: everything
comes from DRAM (``weights_in="sbuf"`` instead preloads every weight tile in SBUF, for
measuring the compute alone).

PSUM (:attr:`PrefillPlan.psum_map`): ``bias`` (Lt M: the attention mask bias, built once at the
start for every head and layer), ``scratch`` (2, the hazard fillers), ``padbias`` (the argmax's
bias row), then ``work``, shared in turn by each GEMM's C (Nt M), a head's scores, max, sum,
reciprocal and output (Lt M + 5M), a norm's products, sum and factor (10M), the final
logits and argmax rows.

The command stream, by phase (:attr:`PrefillPlan.phases`):

* ``start``: LOADs of ones, tables, mask tiles and 127s (tag 0), of E_pos (one LOAD per column
  tile: M rows at a stride of 64 bytes) and the E_tok gather (tag 13): one one-row LOAD per
  token and column tile from E_tok + 64 t + 8 kt (a token's row spans d / n SBUF tiles, M rows
  apart, and a LOAD writes consecutive SBUF rows, so a whole token row cannot be one LOAD into
  the tiled layout); the first two weight chunks; WAIT 0; the mask bias (MULW of the mask
  by 127, doubled 6 times) and the argmax's pad bias (one row, doubled until below any logit);
  WAIT 13; ADD8 E_tok rows + E_pos rows -> x (one command of 8M rows);
* per layer l: ``l.norm1`` (RMS norm x -> h), ``l.qkv`` (three GEMMs, each h @ W -> PSUM ->
  one REQUANT of 8M rows; then 16 STOREs of K and V's column tiles to DRAM, tag 14),
  ``l.attention`` (LOAD_TABLE exp; per head, :func:`programs.prefill_ops.emit_attention_head`),
  ``l.wo`` (o @ Wo, REQUANT, ADD8 into x), ``l.norm2``, ``l.mlp`` (h @ W1, REQUANT into u,
  LOAD_TABLE GELU, LUT in place, g @ W2, REQUANT, ADD8 into x);
* ``final``: STOREs of x's last row, the RMS norm of that row alone, its logits (one-row
  MATMULs over the 16 wout tiles), STORE_PSUM of the logits, the argmax (pad bias added,
  LANEMAX, SUB32 of the maximum, REQUANT x 128 -> 0 or -128, ADD8 of the index row -> -k or
  -128, MULW by ones, LANEMAX, REQUANT x -1 -> the lowest index holding the maximum), its STORE,
  HALT.

Weights stream through the ring like :func:`programs.prefill.gemm` streams tiles, in chunks:
chunk c (``chunk`` consecutive tiles of the global order, one LOAD) goes to slot c mod
``slots`` with tag 1 + slot; WAIT before the WEIGHTS of its first tile; in the steady state the
LOAD of chunk c + ``slots`` right after the WEIGHTS of chunk c's last tile (the slot is then
free). Chunks 0 and 1 load in the start phase and the ring fills during the first GEMM (the
next chunk after the WEIGHTS of a chunk's middle and last tiles), since a LOAD holds the
sequencer until the DMA has issued the previous transfer. The ring runs on across GEMMs and
phases, so the DMA prefetches the next GEMM's weights during norms and attention. Every GEMM
tile is one WEIGHTS and one MATMUL on alternating buffers.

Cycles (default configuration, emulator = RTL): "123+459=" (8 tokens) 20,105 cycles, of which
the GEMMs (qkv, wo, mlp phases) take 16,800; the DMA moves 70 KB, 3.5 bytes a cycle of the
channel's 8, and preloading the weights in SBUF saves under 1%. Small M is array-bound: a
weight tile of n rows takes n cycles to load and a buffer is free only 2n - 2 cycles after its
last row, so tiles of M < 3n - 3 rows take (a + b) / 2 cycles each, a and b of
:func:`programs.prefill.tile_periods` with gap 2: 14.5 at M = 8, 11 at M = 1.

The default configuration :data:`DEFAULT_CONFIG` = PrefillConfig(n=8, sbuf_rows=4096,
psum_rows=2048, dram_bytes=128 KiB, commands=8192, the default DRAM channel: 8 bytes a cycle,
latency 40, 64 requests in flight) fits the whole context (M = 64: 3,502 SBUF rows, 1,539 PSUM
rows, 4,260 commands, 90,824 DRAM bytes); PrefillConfig()'s 1,024 PSUM rows and 4,096 commands
hold prompts of up to 46 tokens.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from mesh.prefill import Command, DmaKind, Op, PrefillConfig, VectorOp

from .integer_ops import mask_bias
from .prefill_ops import VectorStream, emit_attention_head, emit_mask_bias, emit_rmsnorm
from .transformer import task

__all__ = ["DEFAULT_CONFIG", "PrefillPlan", "PrefillRun", "compile_prefill", "run_prefill",
           "TAG_CONST", "TAG_EMBED", "TAG_OUT"]

DEFAULT_CONFIG = PrefillConfig(n=8, sbuf_rows=4096, psum_rows=2048, dram_bytes=1 << 17,
                               dram_bandwidth=8, dram_latency=40, dma_queue=64, commands=8192)

TAG_CONST = 0             # constants, tables, mask
TAG_EMBED = 13            # the embedding gather
TAG_OUT = 14              # the output stores (K, V, x, logits, token)
MAX_SLOTS = 12            # weight chunks in flight: tags 1 .. 12
_MAX_DMA_ROWS = 65535     # the count field


def _ceil(a, b):
    return -(-a // b)


def _align(value, to=64):
    return _ceil(value, to) * to


# The plan ----------------------------------------------------------------------------------------

@dataclass
class PrefillPlan:
    """A compiled prefill: ``dram`` (the DRAM image from byte 0), ``sbuf`` (the initial SBUF,
    None unless ``weights_in`` == "sbuf"), ``commands``; ``layout`` (the outputs: name ->
    (DRAM address, shape, numpy dtype)); ``dram_map`` (inputs: name -> (address, bytes)),
    ``sbuf_map`` / ``psum_map`` (regions: name -> (first row, rows)); ``phases`` ([(name, index
    of the phase's first command)]); ``dma_bytes`` (the bytes the DMA moves, loads and
    stores); ``argmax_on_engine`` (True: ``token`` is computed by the engine); ``kv_message``
    (a :class:`programs.kv_message.KVMessage` at its DRAM base, or None)."""
    config: PrefillConfig
    tokens: list
    dram: bytes
    sbuf: object
    commands: list
    layout: dict
    dram_map: dict
    sbuf_map: dict
    psum_map: dict
    phases: list
    dma_bytes: int
    weights_in: str
    argmax_on_engine: bool = True
    kv_message: object = None

    @property
    def M(self):
        return len(self.tokens)

    def read_outputs(self, dram):
        """The outputs from a final DRAM (bytes): {name: array} (``token``: an int)."""
        out = {}
        for name, (addr, shape, dtype) in self.layout.items():
            count = int(np.prod(shape)) if shape else 1
            value = np.frombuffer(bytes(dram), dtype=dtype, count=count, offset=addr)
            out[name] = int(value[0]) if name == "token" else value.reshape(shape).copy()
        if self.kv_message is not None:
            for l in range(self.kv_message.n_layers):
                for c in "kv":
                    out[f"l{l}.{c}"] = self.kv_message.read_kv(dram, l, c)
        return out


@dataclass
class PrefillRun:
    """A run of a plan: ``outputs`` (:meth:`PrefillPlan.read_outputs`), ``cycles``, ``issue``
    (the issue cycle of every command), ``phase_cycles`` ({phase: cycles from the issue of its
    first command to the next phase's, the last one to the end of the run}), ``counters`` (the
    emulator's, empty for the RTL) and ``dram_bytes_per_cycle`` (the DMA's bytes over the
    run), ``dram`` (the final DRAM image, as far as it was read back)."""
    outputs: dict
    cycles: int
    issue: list
    phase_cycles: dict
    counters: dict = field(default_factory=dict)
    dram_bytes_per_cycle: float = 0.0
    dram: bytes = None


# The emitter ------------------------------------------------------------------------------------

class _Stream(VectorStream):
    """A :class:`VectorStream` whose vector commands writing SBUF rows first WAIT for the
    stores still reading them (:meth:`_Emitter.guard`)."""

    def __init__(self, commands, scratch, emitter):
        super().__init__(commands, scratch)
        self.emitter = emitter

    def op(self, vop, *, rows, writes=None, **fields):
        if writes is not None and writes[0] == "sbuf":
            self.emitter.guard(writes[1], 1 if len(writes) > 2 else rows)
        super().op(vop, rows=rows, writes=writes, **fields)


class _Emitter:
    """Commands with hazard-safe vector ops (:class:`_Stream`), DMA helpers and the stores
    still reading SBUF (``pending``: (first row, end, tag)): a store reads its rows when its
    requests issue, after the command, so a later write of those rows (a vector op or a LOAD)
    first WAITs for the store's tag."""

    def __init__(self, config, scratch):
        self.config, self.n = config, config.n
        self.commands = []
        self.stream = _Stream(self.commands, scratch, self)
        self.pending = []
        self.phases = []
        self.dma_bytes = 0

    def phase(self, name):
        self.phases.append((name, len(self.commands)))

    def vec(self, op, **kwargs):
        self.stream.op(op, **kwargs)

    def load(self, *, addr, row, count, tag, stride=None):
        n = self.n
        stride = n if stride is None else stride
        self.guard(row, count)
        for start in range(0, count, _MAX_DMA_ROWS):
            rows = min(_MAX_DMA_ROWS, count - start)
            self.stream.passive(Command(Op.DMA, sub=DmaKind.LOAD, tag=tag,
                                        addr=addr + start * stride, stride=stride,
                                        a=row + start, count=rows))
            self.dma_bytes += rows * n

    def store(self, *, addr, row, count, tag, stride=None, psum=False):
        """STORE_SBUF (or STORE_PSUM) of ``count`` rows from ``row``; it waits for the array and
        the vector engine, and reads the rows after it issues: SBUF rows stay pending until a
        WAIT on ``tag`` (see :meth:`guard`)."""
        row_bytes = 4 * self.n if psum else self.n
        stride = row_bytes if stride is None else stride
        kind = DmaKind.STORE_PSUM if psum else DmaKind.STORE_SBUF
        self.stream.other(Command(Op.DMA, sub=kind, tag=tag, addr=addr, stride=stride, a=row,
                                  count=count))
        self.dma_bytes += count * row_bytes
        if not psum:
            self.pending.append((row, row + count, tag))

    def wait(self, tag):
        self.stream.passive(Command(Op.WAIT, tag=tag))
        self.pending = [p for p in self.pending if p[2] != tag]

    def guard(self, first, rows):
        """Before writing SBUF rows [first, first + rows): WAIT for the stores still reading
        them."""
        for tag in sorted({t for lo, hi, t in self.pending if lo < first + rows and first < hi}):
            self.wait(tag)

    def other(self, command):
        self.stream.other(command)


class _WeightRing:
    """The weight tiles of the program in use order, streamed from DRAM through SBUF slots (or
    preloaded in SBUF). :meth:`tile` emits what comes before a tile's WEIGHTS and returns its
    SBUF row; :meth:`after_weights` what comes after."""

    def __init__(self, em, *, total, addr, ring_row, chunk, slots, preload):
        self.em, self.total, self.addr, self.row = em, total, addr, ring_row
        self.chunk, self.slots, self.preload = chunk, slots, preload
        self.chunks = _ceil(total, chunk)
        self.next = 0                            # the next tile
        self.loaded = 0                          # the next chunk to load

    def _load(self, c):
        n = self.em.n
        tiles = min(self.chunk, self.total - c * self.chunk)
        slot = c % self.slots
        self.loaded = c + 1
        self.em.load(addr=self.addr + c * self.chunk * n * n,
                     row=self.row + slot * self.chunk * n, count=tiles * n, tag=1 + slot)

    def prime(self, chunks=2):
        """The first ``chunks`` chunks (the ring fills during the first GEMM,
        :meth:`after_weights`)."""
        if not self.preload:
            for c in range(min(chunks, self.slots, self.chunks)):
                self._load(c)

    def tile(self):
        g, n = self.next, self.em.n
        if self.preload:
            return self.row + g * n
        c, i = divmod(g, self.chunk)
        if i == 0:
            self.em.wait(1 + c % self.slots)
        return self.row + ((c % self.slots) * self.chunk + i) * n

    def after_weights(self):
        """LOADs the next chunk in order (``loaded``) when its slot is free, i.e. the WEIGHTS
        of the chunk ``slots`` before it are all issued, at two points per chunk: after the
        WEIGHTS of its middle and of its last tile. In the steady state that is chunk c +
        ``slots`` after chunk c's last WEIGHTS; at the start the ring fills at two chunks per
        chunk computed (loading them all at once would hold the sequencer: a LOAD waits for
        the DMA to finish issuing the previous one)."""
        g = self.next
        self.next += 1
        if self.preload:
            return
        c, i = divmod(g, self.chunk)
        last = i == self.chunk - 1 or g == self.total - 1
        done = c + 1 if last else c              # chunks whose WEIGHTS are all issued
        point = i == self.chunk // 2 or last
        if point and self.loaded < self.chunks and self.loaded - self.slots < done:
            self._load(self.loaded)


def _gemm(em, ring, *, a_tiles, rows, c_row, Nt):
    """C = A W: per weight tile (nt, kt) in order, WEIGHTS from the ring and a MATMUL of A's
    tile kt (``rows`` rows from ``a_tiles[kt]``) into PSUM ``c_row + nt rows``."""
    n = em.n
    for nt in range(Nt):
        for kt, a in enumerate(a_tiles):
            w = ring.tile()
            buffer = em.stream.next_buffer()
            em.other(Command(Op.WEIGHTS, buffer=buffer, a=w, count=n))
            ring.after_weights()
            em.other(Command(Op.MATMUL, buffer=buffer, a=a, b=c_row + nt * rows, count=rows,
                             acc=int(kt > 0)))


# Model arrays --------------------------------------------------------------------------------

def _tiles_of(W, n):
    """The weight tiles of W (K x N) in the order t = nt Kt + kt, zero padded: (T n) x n int8."""
    K, N = W.shape
    Kt, Nt = _ceil(K, n), _ceil(N, n)
    Wp = np.zeros((Kt * n, Nt * n), dtype=np.int8)
    Wp[:K, :N] = W
    return Wp.reshape(Kt, n, Nt, n).transpose(2, 0, 1, 3).reshape(Kt * Nt * n, n)


def _weight_order(model):
    order = []
    for l, W in enumerate(model.layers):
        order += [(f"l{l}.{w}", W[w]) for w in ("wq", "wk", "wv", "wo", "w1", "w2")]
    return order + [("wout", model.wout)]


def _check_prompt(tokens, context, vocab):
    if isinstance(tokens, str):
        tokens = task.tokenize(tokens)
    try:
        arr = np.asarray(tokens)
    except ValueError:
        raise ValueError("tokens must be a sequence of token ids") from None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"tokens must be a sequence of integer token ids, not {arr!r}")
    if arr.size == 0:
        raise ValueError("tokens must not be empty")
    if arr.size > context:
        raise ValueError(f"{arr.size} tokens do not fit the context of {context} positions "
                         f"({arr.size - context} too many)")
    bad = (arr < 0) | (arr >= vocab)
    if bad.any():
        raise ValueError(f"token {arr[bad][0]} is not in the vocabulary (ids 0 .. {vocab - 1})")
    return [int(t) for t in arr]


def _need(what, needed, have, unit, detail):
    if needed > have:
        raise ValueError(f"the prefill of {what} needs {needed} {unit} ({detail}); the engine "
                         f"has {have}: {needed - have} short")


# The compiler -----------------------------------------------------------------------------------

def compile_prefill(model, tokens, config=None, *, weights_in="dram", chunk=8, slots=4,
                    kv_message=None):
    """The prefill of ``tokens`` (token ids, or a prompt string) through ``model`` (an
    :class:`~programs.transformer.model.IntModel`) as a :class:`PrefillPlan` for ``config``
    (default :data:`DEFAULT_CONFIG`); layouts and command stream in the module docstring.
    ``weights_in``: "dram" (streamed through a ring of ``slots`` chunks of ``chunk`` tiles) or
    "sbuf" (preloaded in the initial SBUF). Raises ValueError for a prompt that is empty,
    longer than the context or has a token outside the vocabulary, and for a configuration
    whose SBUF, PSUM, DRAM or command memory is too small (saying by how much).

    ``kv_message``: a :class:`programs.kv_message.KVMessage` (its ``base`` is ignored): K and V
    are stored into that message's layout (placed after the other outputs:
    :attr:`PrefillPlan.kv_message` has the DRAM base) instead of ``l{l}.k``/``l{l}.v``, the
    token is stored into every tile's token words too, and the host's header words are in the
    DRAM image; :meth:`PrefillPlan.read_outputs` reads K and V back from the message."""
    config = DEFAULT_CONFIG if config is None else config
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config must be a PrefillConfig, not {config!r}")
    if weights_in not in ("dram", "sbuf"):
        raise ValueError(f"weights_in must be 'dram' or 'sbuf', not {weights_in!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, not {chunk!r}")
    if not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
        raise ValueError(f"slots must be from 1 to {MAX_SLOTS}, not {slots!r}")
    cfg = model.config
    d, dff, V, H, dh = cfg["d_model"], cfg["d_ff"], cfg["vocab"], cfg["n_heads"], cfg["d_head"]
    context, L = cfg["context"], cfg["n_layers"]
    tokens = _check_prompt(tokens, context, V)
    n, M = config.n, len(tokens)
    if d % n or dh % n:
        raise ValueError(f"the array size n = {n} must divide d_model = {d} and d_head = {dh}")
    if V + (-V % n) > 128:
        raise ValueError(f"the argmax handles at most 128 logits columns, not {V + (-V % n)}")
    Dt, Ft, Ht, Lt, Vt = d // n, _ceil(dff, n), dh // n, _ceil(M, n), _ceil(V, n)
    table_rows = _ceil(256, n)
    what = f"{M} token{'s' * (M > 1)}"

    # DRAM image ------------------------------------------------------------------------------
    order = _weight_order(model)
    w_tiles = [_tiles_of(W.astype(np.int8), n) for _, W in order]
    tile_index, t = {}, 0
    for (name, W), tiles in zip(order, w_tiles):
        tile_index[name] = t
        t += len(tiles) // n
    T = t
    S0 = (_ceil(context, n) - 1) * n
    mask = np.zeros((S0 + context, n), dtype=np.int8)
    for i, s in enumerate(range(-S0, context)):
        mask[i, np.arange(n) > s] = -128
    tables = np.zeros((3 * table_rows + 1 + Vt, n), dtype=np.int8)
    for i, table in enumerate([model.exp_table] + [g for g in model.gelu_table]):
        tables[i * table_rows:(i + 1) * table_rows] = np.resize(
            np.asarray(table, dtype=np.int64).astype(np.int8), table_rows * n).reshape(-1, n)
    padmask_t = 3 * table_rows                       # row of the tables block
    lanes = np.arange(Vt * n)
    tables[padmask_t] = np.where(lanes[-n:] >= V, -128, 0)
    tables[padmask_t + 1:] = np.where(lanes < V, -lanes, -128).reshape(Vt, n)
    blocks = [("weights", np.concatenate(w_tiles)),
              ("tok_emb", model.tok_emb.astype(np.int8)),
              ("pos_emb", model.pos_emb.astype(np.int8)),
              ("ones", np.ones((max(context, Vt), n), dtype=np.int8)),
              ("big", np.full((context, n), 127, dtype=np.int8)),
              ("mask", mask), ("tables", tables)]
    dram_map, addr = {}, 0
    for name, block in blocks:
        dram_map[name] = (addr, block.nbytes)
        addr = _align(addr + block.nbytes)
    layout = {}
    if kv_message is None:
        for l in range(L):
            for c in "kv":
                layout[f"l{l}.{c}"] = (addr, (M, d), np.int8)
                addr = _align(addr + M * d)
    else:
        if (kv_message.d_model, kv_message.n_layers, kv_message.n, kv_message.prompt_tokens) \
                != (d, L, n, M):
            raise ValueError(f"the KV message is for d_model {kv_message.d_model}, "
                             f"{kv_message.n_layers} layers, n = {kv_message.n} and "
                             f"{kv_message.prompt_tokens} tokens; this prefill has {d}, {L}, "
                             f"{n} and {M}")
        kv_message = replace(kv_message, base=addr)
        addr = _align(kv_message.limit)
    layout["x"] = (addr, (d,), np.int8)
    addr = _align(addr + d)
    layout["logits"] = (addr, (V,), np.dtype("<i4"))
    addr = _align(addr + Vt * 4 * n)
    layout["token"] = (addr, (), np.int8)
    dram_need = addr + n
    outputs = kv_message.base if kv_message is not None else layout["l0.k"][0]
    _need(what, dram_need, config.dram_bytes, "DRAM bytes",
          f"weights {dram_map['weights'][1]}, embeddings and tables "
          f"{outputs - dram_map['tok_emb'][0]}, outputs {dram_need - outputs}")
    image = bytearray(dram_need)
    for name, block in blocks:
        a, size = dram_map[name]
        image[a:a + size] = block.tobytes()
    if kv_message is not None:
        for a, words in kv_message.host_words().items():
            image[a:a + 4 * words.size] = words.astype("<u4").tobytes()

    # SBUF and PSUM layouts ------------------------------------------------------------------
    sbuf_map, row = {}, 0
    final_rows = Dt + Vt + 1          # the final norm's row, the argmax rows, the token
    for name, rows in [("ones", max(M, Vt)), ("tables", len(tables)), ("x", Dt * M),
                       ("h", Dt * M), ("q", Dt * M), ("k", Dt * M), ("v", Dt * M),
                       ("p", Lt * M), ("final", final_rows)]:
        sbuf_map[name] = (row, rows)
        row += rows
    preload = weights_in == "sbuf"
    if preload:
        sbuf_map["weights"] = (row, T * n)
        row += T * n
    else:
        slots = min(slots, _ceil(T, chunk))
        sbuf_map["ring"] = (row, slots * chunk * n)
        row += slots * chunk * n
    sbuf_need = row
    u_rows = Ft * M
    if u_rows > 2 * Dt * M:
        raise ValueError("d_ff must be at most 2 d_model (u uses the rows of q and k)")
    detail = (f"ones {max(M, Vt)}, tables {len(tables)}, x/h/q/k/v 5 x {Dt * M}, p {Lt * M}, "
              f"final {final_rows}, "
              + (f"weights {T * n}" if preload else f"weight ring {slots} x {chunk * n}"))
    _need(what, sbuf_need, config.sbuf_rows, "SBUF rows", detail)

    bias_row, scratch = 0, Lt * M
    padbias = scratch + 2
    work = padbias + 1
    attention_rows = Lt * M + 3 * M + Ht * M
    work_rows = max(Ft * M, Dt * M, attention_rows, Dt * M + 2 * M, 3 * Vt + 3)
    psum_map = {"bias": (bias_row, Lt * M), "scratch": (scratch, 2), "padbias": (padbias, 1),
                "work": (work, work_rows)}
    _need(what, work + work_rows, config.psum_rows, "PSUM rows",
          f"mask bias {Lt * M}, scratch 3, work {work_rows} = max(C of W1 {Ft * M}, "
          f"attention {attention_rows})")

    em = _Emitter(config, scratch)
    tiles = lambda first, count, rows=M: [first + j * rows for j in range(count)]
    x_row, h_row, q_row, k_row, v_row = (sbuf_map[r][0] for r in "xhqkv")
    p_row, ones_row, tab_row = sbuf_map["p"][0], sbuf_map["ones"][0], sbuf_map["tables"][0]
    ring = _WeightRing(em, total=T, addr=dram_map["weights"][0],
                       ring_row=sbuf_map["weights" if preload else "ring"][0], chunk=chunk,
                       slots=slots, preload=preload)
    sbuf_image = None
    if preload:
        sbuf_image = np.zeros((config.sbuf_rows, n), dtype=np.int8)
        w0 = sbuf_map["weights"][0]
        sbuf_image[w0:w0 + T * n] = np.concatenate(w_tiles)
    rq = model.rq
    big_row = h_row                                  # M rows of 127, only at the start

    # Start: constants, embedding gather, mask bias -----------------------------------------
    em.phase("start")
    em.load(addr=dram_map["ones"][0], row=ones_row, count=max(M, Vt), tag=TAG_CONST)
    em.load(addr=dram_map["tables"][0], row=tab_row, count=len(tables), tag=TAG_CONST)
    em.load(addr=dram_map["big"][0], row=big_row, count=M, tag=TAG_CONST)
    for j in range(Lt):
        em.load(addr=dram_map["mask"][0] + (S0 - j * n) * n, row=p_row + j * M, count=M,
                tag=TAG_CONST)
    tok_row = q_row                                  # the gathered E_tok rows, tiled
    pos_addr, tok_addr = dram_map["pos_emb"][0], dram_map["tok_emb"][0]
    for kt in range(Dt):
        em.load(addr=pos_addr + kt * n, row=x_row + kt * M, count=M, stride=d, tag=TAG_EMBED)
    for r, t in enumerate(tokens):
        for kt in range(Dt):
            em.load(addr=tok_addr + t * d + kt * n, row=tok_row + kt * M + r, count=1,
                    tag=TAG_EMBED)
    ring.prime()
    em.wait(TAG_CONST)
    bias, doublings = mask_bias(dh)
    emit_mask_bias(em.stream, rows=M, mask_tiles=tiles(p_row, Lt), big=big_row,
                   bias_tiles=tiles(bias_row, Lt), doublings=doublings)
    pad_doublings = 0
    while 127 * 128 * 2 ** pad_doublings <= 128 * 127 * d:
        pad_doublings += 1
    if V % n:
        emit_mask_bias(em.stream, rows=1, mask_tiles=[tab_row + padmask_t], big=big_row,
                       bias_tiles=[padbias], doublings=pad_doublings)
    em.wait(TAG_EMBED)
    em.vec(VectorOp.ADD8, rows=Dt * M, a=tok_row, b=x_row, d=x_row,
           reads=[("sbuf", tok_row), ("sbuf", x_row)], writes=("sbuf", x_row))

    def requant(src, dst, rows, name):
        m, s = rq[name]
        em.vec(VectorOp.REQUANT, rows=rows, a=src, d=dst, multiplier=m, shift=s,
               reads=[("psum", src)], writes=("sbuf", dst))

    def norm(shift):
        emit_rmsnorm(em.stream, rows=M, x_tiles=tiles(x_row, Dt), y_tiles=tiles(h_row, Dt),
                     w_tiles=tiles(work, Dt), ss=work + Dt * M, r=work + Dt * M + M,
                     ones=ones_row, shift=shift)

    def gemm(name, a_tiles, N):
        assert ring.next == tile_index[name], (name, ring.next)
        _gemm(em, ring, a_tiles=a_tiles, rows=M, c_row=work, Nt=_ceil(N, n))

    # Layers ----------------------------------------------------------------------------------
    for l in range(L):
        em.phase(f"l{l}.norm1")
        norm(model.norm_shift[2 * l])
        em.phase(f"l{l}.qkv")
        for c, dst in zip("qkv", (q_row, k_row, v_row)):
            gemm(f"l{l}.w{c}", tiles(h_row, Dt), d)
            requant(work, dst, Dt * M, f"l{l}.{c}")
        for c, src in zip("kv", (k_row, v_row)):
            if kv_message is None:
                out = layout[f"l{l}.{c}"][0]
                for kt in range(Dt):
                    em.store(addr=out + kt * n, row=src + kt * M, count=M, stride=d,
                             tag=TAG_OUT)
                continue
            for address, p0, count, stride, kt in kv_message.kv_stores(l, c):
                em.store(addr=address, row=src + kt * M + p0, count=count, stride=stride,
                         tag=TAG_OUT)
        em.phase(f"l{l}.attention")
        em.vec(VectorOp.LOAD_TABLE, rows=1, a=tab_row)
        sm, ss = rq[f"l{l}.score"]
        om, os_ = rq[f"l{l}.o"]
        s_row = work
        mx, total, r = s_row + Lt * M, s_row + Lt * M + M, s_row + Lt * M + 2 * M
        out_row = s_row + Lt * M + 3 * M
        for j in range(H):
            head = tiles(q_row + j * Ht * M, Ht)
            emit_attention_head(
                em.stream, n=n, rows=M, q_tiles=head, k_tiles=tiles(k_row + j * Ht * M, Ht),
                v_tiles=tiles(v_row + j * Ht * M, Ht), bias_tiles=tiles(bias_row, Lt),
                s_tiles=tiles(s_row, Lt), p_tiles=tiles(p_row, Lt), mx=mx, total=total, r=r,
                ones=ones_row, out_tiles=tiles(out_row, Ht), o_tiles=head,
                score_multiplier=sm, score_shift=ss, out_multiplier=om, out_shift=os_)
        em.phase(f"l{l}.wo")
        gemm(f"l{l}.wo", tiles(q_row, Dt), d)
        requant(work, h_row, Dt * M, f"l{l}.attn")
        em.vec(VectorOp.ADD8, rows=Dt * M, a=x_row, b=h_row, d=x_row,
               reads=[("sbuf", x_row), ("sbuf", h_row)], writes=("sbuf", x_row))
        em.phase(f"l{l}.norm2")
        norm(model.norm_shift[2 * l + 1])
        em.phase(f"l{l}.mlp")
        u_row = q_row
        gemm(f"l{l}.w1", tiles(h_row, Dt), dff)
        requant(work, u_row, u_rows, f"l{l}.up")
        em.vec(VectorOp.LOAD_TABLE, rows=1, a=tab_row + (1 + l) * table_rows)
        em.vec(VectorOp.LUT, rows=u_rows, a=u_row, d=u_row, reads=[("sbuf", u_row)],
               writes=("sbuf", u_row))
        gemm(f"l{l}.w2", tiles(u_row, Ft), d)
        requant(work, h_row, Dt * M, f"l{l}.down")
        em.vec(VectorOp.ADD8, rows=Dt * M, a=x_row, b=h_row, d=x_row,
               reads=[("sbuf", x_row), ("sbuf", h_row)], writes=("sbuf", x_row))

    # Final: the last token's norm, logits and argmax ------------------------------------------
    em.phase("final")
    last = tiles(x_row + M - 1, Dt)                  # the last row of each column tile of x
    for kt, row_kt in enumerate(last):
        em.store(addr=layout["x"][0] + kt * n, row=row_kt, count=1, tag=TAG_OUT)
    hf = sbuf_map["final"][0]                        # the final norm's row: Dt rows
    emit_rmsnorm(em.stream, rows=1, x_tiles=last, y_tiles=tiles(hf, Dt, 1),
                 w_tiles=tiles(work, Dt, 1), ss=work + Dt, r=work + Dt + 1, ones=ones_row,
                 shift=model.norm_shift[2 * L])
    logits = work
    assert ring.next == tile_index["wout"]
    _gemm(em, ring, a_tiles=tiles(hf, Dt, 1), rows=1, c_row=logits, Nt=Vt)
    assert ring.next == T
    em.store(addr=layout["logits"][0], row=logits, count=Vt, tag=TAG_OUT, psum=True)
    # argmax: scores with the pad bias (never the logits rows, which the store may still read)
    P = "psum"
    src = [logits + t for t in range(Vt)]
    biased = logits + Vt
    mx, dd, w = biased + 1, biased + 2, biased + 2 + Vt
    tm = w + Vt
    if V % n:
        em.vec(VectorOp.ADD32, rows=1, a=src[-1], b=padbias, d=biased,
               reads=[(P, src[-1]), (P, padbias)], writes=(P, biased))
        src[-1] = biased
    for t, s in enumerate(src):
        em.vec(VectorOp.LANEMAX, rows=1, a=s, b=mx, d=mx, acc=int(t > 0),
               reads=[(P, s)] + ([(P, mx)] if t else []), writes=(P, mx))
    q8, tok8 = hf + Dt, hf + Dt + Vt                 # SBUF rows
    index_row = tab_row + padmask_t + 1
    for t, s in enumerate(src):
        em.vec(VectorOp.SUB32, rows=1, a=s, b=mx, d=dd + t, reads=[(P, s), (P, mx)],
               writes=(P, dd + t))
    em.vec(VectorOp.REQUANT, rows=Vt, a=dd, d=q8, multiplier=128, shift=0,
           reads=[(P, dd)], writes=("sbuf", q8))
    em.vec(VectorOp.ADD8, rows=Vt, a=q8, b=index_row, d=q8, reads=[("sbuf", q8)],
           writes=("sbuf", q8))
    em.vec(VectorOp.MULW, rows=Vt, a=q8, b=ones_row, d=w, reads=[("sbuf", q8)],
           writes=(P, w))
    for t in range(Vt):
        em.vec(VectorOp.LANEMAX, rows=1, a=w + t, b=tm, d=tm, acc=int(t > 0),
               reads=[(P, w + t)] + ([(P, tm)] if t else []), writes=(P, tm))
    em.vec(VectorOp.REQUANT, rows=1, a=tm, d=tok8, multiplier=-1, shift=0, reads=[(P, tm)],
           writes=("sbuf", tok8))
    em.store(addr=layout["token"][0], row=tok8, count=1, tag=TAG_OUT)
    if kv_message is not None:
        for address in kv_message.token_addresses():
            em.store(addr=address, row=tok8, count=1, tag=TAG_OUT)
    em.other(Command(Op.HALT))

    commands = em.commands
    _need(what, len(commands), config.commands, "commands",
          f"{2 * T} WEIGHTS/MATMUL of the weight tiles, {len(commands) - 2 * T} others")
    return PrefillPlan(config=config, tokens=tokens, dram=bytes(image), sbuf=sbuf_image,
                       commands=commands, layout=layout, dram_map=dram_map, sbuf_map=sbuf_map,
                       psum_map=psum_map, phases=em.phases, dma_bytes=em.dma_bytes,
                       weights_in=weights_in, kv_message=kv_message)


# Running -----------------------------------------------------------------------------------------

def _phase_cycles(plan, issue, cycles):
    starts = [(name, issue[index]) for name, index in plan.phases]
    ends = [c for _, c in starts[1:]] + [cycles]
    return {name: end - start for (name, start), end in zip(starts, ends)}


def run_prefill(plan, backend="emulator", *, max_cycles=5_000_000):
    """Run ``plan`` on ``backend`` ("emulator": :class:`emulator.prefill.PrefillEmulator` with
    the fast array model; "rtl": :class:`hdl.prefill.PrefillEngine` in the Amaranth simulator,
    slow: minutes for a full prefill) and return a :class:`PrefillRun`."""
    first_output = min(a for a, _, _ in plan.layout.values())
    issue, cycles, dram, counters = run_plan(plan, backend, max_cycles, first_output)
    return PrefillRun(outputs=plan.read_outputs(dram), cycles=cycles, issue=list(issue),
                      phase_cycles=_phase_cycles(plan, issue, cycles), counters=counters,
                      dram_bytes_per_cycle=plan.dma_bytes / cycles, dram=bytes(dram))


def run_plan(plan, backend, max_cycles, read_from):
    """(issue cycles, cycles, final DRAM image, counters) of a compiled plan (its ``config``,
    ``dram``, ``sbuf`` and ``commands``) on ``backend``, "emulator" or "rtl" (counters: the
    emulator's, empty for the RTL, whose DRAM is read back from byte ``read_from`` on)."""
    if backend == "emulator":
        from emulator.prefill import PrefillEmulator
        sbuf = None if plan.sbuf is None else plan.sbuf.view(np.uint8)
        emu = PrefillEmulator(plan.config, dram=plan.dram, sbuf=sbuf, array="fast")
        result = emu.run(plan.commands, max_cycles=max_cycles)
        return result.issue, result.cycles, result.dram, result.counters
    if backend == "rtl":
        return (*_run_rtl(plan, max_cycles, read_from), {})
    raise ValueError(f"backend must be 'emulator' or 'rtl', not {backend!r}")


def _run_rtl(plan, max_cycles, read_from):
    """(issue cycles, cycles, DRAM image, read back from byte ``read_from``) on the RTL."""
    from amaranth.sim import Simulator

    from hdl.prefill import PrefillEngine

    config = plan.config
    engine = PrefillEngine(config, dram=plan.dram,
                           sbuf=None if plan.sbuf is None else plan.sbuf.astype(np.int64))
    # the command list as the command memory's initial contents (the same as writing it
    # through the ``load`` port before raising ``run``, without the cycles that takes)
    engine.command_memory.init = [c.encode() for c in plan.commands]
    sim = Simulator(engine)
    sim.add_clock(1e-6)
    state = {}

    async def bench(ctx):
        ctx.set(engine.run, 1)
        issue = []
        for cycle in range(max_cycles):
            if ctx.get(engine.done) or ctx.get(engine.error):
                break
            if ctx.get(engine.issue_valid):
                issue.append(cycle)
            await ctx.tick()
        else:
            raise RuntimeError(f"the RTL did not stop within {max_cycles} cycles")
        if ctx.get(engine.error):
            raise RuntimeError(f"the RTL stopped with error {ctx.get(engine.error_cause)} at "
                               f"command {ctx.get(engine.error_index)}")
        state["issue"], state["cycles"] = issue, ctx.get(engine.cycles)
        W = engine.dram_model.word_bytes
        dram = bytearray(plan.dram)
        dram.extend(bytes(_align(len(dram), W) - len(dram)))
        for word in range(read_from // W, len(dram) // W):
            value = ctx.get(engine.dram_model.banks[word % 2].data[word // 2])
            dram[word * W:(word + 1) * W] = value.to_bytes(W, "little")
        state["dram"] = bytes(dram)

    sim.add_testbench(bench)
    sim.run()
    return state["issue"], state["cycles"], state["dram"]

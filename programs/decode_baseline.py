"""The single-chip decode baseline: one decode step (one token, a KV cache) of an integer model
on the prefill engine alone, every weight streamed from DRAM in the step, bit-exact with
:meth:`programs.transformer.model.IntModel.int_decode_step` (the pipeline of that module's
docstring; the engine is docs/ARCHITECTURE.md section 11). It is the baseline of the bandwidth
result: mesh decode keeps the weights in the cores' SRAM, this streams them, and its cycles
follow the DRAM bound ceil((weight bytes + KV bytes read) / ``dram_bandwidth``) wherever the
DRAM, not the array, is the bottleneck.

:func:`compile_decode_step` gives a :class:`DecodePlan`; :func:`run_decode_step` runs it on the
emulator or the RTL (Amaranth simulator) and returns the outputs, cycles and cycles per phase;
:func:`baseline_cycles` measures a step of any IntModel-compatible model (e.g.
``programs.mesh_decode.random_int_model``) against its bound, for the benchmark.

Notation: n = the array size, d = d_model, Dt = d / n, H heads of dh, f = d_ff, V = vocab, C =
context, Ct = ceil(C / n), P = the position (= the cached tokens), Lt = ceil((P + 1) / n) key
tiles. n must divide d, dh and f; V is at most 127 (the argmax).

Vector forms
------------
A vector of K int8 values is in **row form** as K / n SBUF rows of n (row t = values t n ..
t n + n - 1): the residual stream x, q, the new k and v. A GEMV input is kept **spaced**: row t
at SBUF row ``xs + t n + n - 1`` with the n - 1 rows before it zero (region ``xs``), so that one
transposed WEIGHTS of count c + 1 from ``xs + t n + n - 1 - c`` puts its n values in weight
column c and zeros in the others.

The GEMV: x-stationary with output lanes
----------------------------------------
y = x W (W: K x N, x: K values), the scheme of :func:`programs.prefill.gemv_decode` with L
**lanes** (L divides n): per K tile kt and lane c the weight tile holds x's tile kt in column c
and m = N / L rows of W^T stream through the array as activations (row r: W[kt n .. kt n + n -
1, j(c, r)]), accumulating into PSUM rows y0 .. y0 + m - 1, lane c (acc for all but the first
tile). DRAM holds each matrix as Kt x L x m rows of n bytes in the order (kt, c, r): K x N
bytes, nothing padded, and the array consumes them at n bytes a cycle.

* L = n: j(c, r) = n r + c, so PSUM row r, lane c = y[n r + c]: y in row form (N / n rows).
* L < n (n L divides N): j(c, r) = n (floor(r / n) L + c) + r mod n. After REQUANT (m SBUF
  rows of L values) a **transposition** on the array gives row form: per group q of n rows, a
  transposed WEIGHTS of the rows and a MATMUL of the identity rows e_0 .. e_(L-1) (constants)
  into PSUM rows qL .. qL + L - 1 (row qL + l = y[n (qL + l) .. + n - 1]).

A weight tile serves m rows, and the next WEIGHTS on its buffer waits for the last of them to
leave the array (2n - 2 cycles) and then loads for n: tiles stream a row a cycle only when
m >= 3n - 3 (:func:`programs.prefill.tile_periods`). Fewer lanes make m larger but cost the
transposition; :func:`choose_lanes` picks the cheapest by a cycle estimate (it picks the best of
all 64 combinations for the tiny model). At n = 8: q|k|v (fused, N = 3d, always n lanes: q, k
and v are needed in row form) 8 lanes (m = 24 for the tiny model); Wo and W2 (N = 64) 2 lanes
(m = 32), W1 (N = 128) 4 lanes; at d = 256 every GEMV has 8 lanes. The output projection uses 1
lane: the logits in column form, logit j in PSUM row j, lane 0.

DRAM image (byte addresses in :attr:`DecodePlan.dram_map`)
-----------------------------------------------------------
``stream``: every weight piece in the order the step uses it (per layer Wq|Wk|Wv, Wo, W1, W2,
then Wout; each matrix as above, a tile's m rows cut into pieces of at most ``piece`` rows);
``tok_emb`` (V x d) and ``pos_emb`` (C x d), row-major; ``consts`` (rows of n: max(Dt, H, V)
rows of ones, the identity rows, H rows of 127, H mask rows (-128 in the lanes of the last key
tile past the new key), V argmax index rows (lane 0 = -j, the others -128)); ``tables`` (the exp
table, then each distinct GELU table, ceil(256 / n) rows each); ``kv``: the KV cache,
**key-tile-major**: layer l, K (0) or V (1), key tile j, segment s (dims s n .. s n + n - 1),
position p = n j + r at byte ``kv + ((((2 l + kv) Ct + j) Dt + s) n + r) n`` (n bytes; a full
key tile of one layer's K is Dt n contiguous rows), positions < P from the cache given, position
P written by the step (outputs ``l{l}.k``, ``l{l}.v``: Dt rows n^2 bytes apart); then the
outputs ``logits`` (V PSUM rows of 4n bytes: logit j = the int32 at ``logits + 4n j``) and
``token`` (n bytes, all the token). :attr:`DecodePlan.layout` gives each output as (address,
rows, row stride, values per row, dtype); :meth:`DecodePlan.read_outputs` reads them.

The step (phases in :attr:`DecodePlan.phases`)
-----------------------------------------------
* ``start``: WAIT for the token's E_tok row, the position's E_pos row and the ones (tag 0);
  x = ADD8 of the rows.
* per layer: ``l.norm1``; ``l.qkv`` (the fused GEMV, REQUANT q to SBUF, k and v each to the
  layer's rows of the output block ``kvo`` and, one row per segment, to row P of the K / V
  region, laid out like the DRAM cache); ``l.attention``: S = q K^T for all heads at once: per
  key tile j (after a WAIT for it, tag 13) and segment s a transposed WEIGHTS of the tile's K
  rows (keys as columns) and a one-row MATMUL of q's segment into PSUM row j H + head (acc over
  the head's segments); in layer 0 the WAIT for the rest of the constants and the exp table, and
  the mask bias of the last key tile (MULW of the mask rows by 127, doubled: ``mask_bias``, as in
  prefill); LOAD_TABLE exp; the bias added to the last tile;
  :func:`programs.prefill_ops.emit_softmax` over H rows (one per head) and Lt tiles; O = P V:
  per key tile j (after a WAIT, tag 14) and segment s a WEIGHTS of V's rows and a one-row MATMUL
  of head(s)'s probabilities into PSUM row s; REQUANT o into the spaced rows. ``l.wo`` (GEMV,
  REQUANT, residual add: ADD8 for L = n, else the transposition accumulates onto x as int32,
  which the norm left in PSUM (its MULW x by ones), and a REQUANT by 1 saturates it back into
  x); ``l.norm2``; ``l.mlp`` (W1 GEMV, REQUANT, LOAD_TABLE GELU (its table waited for, tag 12),
  LUT (and the transposition), W2 GEMV, residual add).
* ``final``: the final norm, the Wout GEMV (logits in column form), the STOREs of the new K and
  V rows (one per layer and K / V) and of the logits (STORE_PSUM), the argmax on the engine
  (ROWMAX, SUB32 of the maximum per row, REQUANT x 128 -> 0 or -128, ADD8 of the index rows ->
  -j or -128, MULW by ones, ROWMAX, REQUANT x -1: the lowest index holding the maximum), its
  STORE, HALT.

RMS norm in row form: MULW x by x, ROWSUM (one row of per-lane sums), MULW x by ones (x as int32,
kept for the residual), LANESUM, RSQRT, then one one-row SCALE per row into the spaced rows.

Streaming
---------
The DMA reads the step's inputs in one order (:attr:`DecodePlan.transfers`): the start block,
per layer the W_qkv pieces (in layer 0 then the rest of the constants and the exp table), the K
cache (one LOAD per full key tile, Dt n rows, and one per segment for the last, partial tile),
the V cache likewise, the GELU table (the first layer using it), the Wo, W1, W2 pieces; then
Wout's. Pieces go round a ring of ``slots`` SBUF slots (tags 1 .. 11); the K and V caches to
fixed regions shared by the layers (a layer's cache LOADs come after the previous layer's
attention). A LOAD holds the sequencer until the DMA has issued the previous transfer, so where
it sits in the command stream matters: the compiler carries a **timing model** (the sequencer's
issue rules and the DMA's pipeline, queue and channel budget, command by command) and puts each
LOAD in front of the first command that would issue no earlier than the DMA can take it, as
soon as its ring slot is free (after the MATMUL that read the slot's previous piece has been
followed by another MATMUL or a VECTOR command: both wait for the streamer). So the DMA streams
through norms, softmax and attention as far as the ring allows, and no LOAD holds up a command
that could issue. The model is exact: :attr:`DecodePlan.predicted` is every command's issue
cycle as the emulator and the RTL run it (:attr:`DecodePlan.cycles`).

Cycles
------
The bound counts the weight matrices and the K / V rows read; the DMA also moves the embedding
rows, constants, tables (three ceil(256 / n)-row tables for the tiny model) and the output
stores: 1.9 KB for the tiny model, 2.8% of its bytes. At ``dram_bandwidth`` < n the array (n
bytes a cycle) catches up after the serial vector work; at ``dram_bandwidth`` = n it cannot,
and the step is compute-bound: it lasts as long as its compute alone (``weights_in="sbuf"``,
every input preloaded, no LOADs) plus 1 to 5%. The tiny model (n = 8, latency 40), cycles /
DRAM bound (the compute alone: 10,761 cycles at P = 8, 13,173 at P = 63):

====  =================  =================  =================  =================
P     8 B/cycle          4 B/cycle          2 B/cycle          1 B/cycle
====  =================  =================  =================  =================
0     10,425 / 8,296     17,291 / 16,592    34,256 / 33,184    68,396 / 66,368
      1.257              1.042              1.032              1.031
8     10,843 / 8,552     17,803 / 17,104    35,280 / 34,208    70,444 / 68,416
      1.268              1.041              1.031              1.030
20    11,347 / 8,936     18,615 / 17,872    36,860 / 35,744    73,560 / 71,488
      1.270              1.042              1.031              1.029
63    13,813 / 10,312    21,585 / 20,624    42,584 / 41,248    84,788 / 82,496
      1.340              1.047              1.032              1.028
====  =================  =================  =================  =================

Against everything the DMA moves the ratios at 1 to 4 B/cycle are 1.002 to 1.023. At 8 B/cycle
the tiny model's compute is 26 to 28% above its bound: two layers of d = 64 give 1,536-row
GEMVs between norms, attention (one-row MATMULs on loader-bound weight tiles, ~11 cycles for
64 bytes of K or V), transpositions and softmax, each phase waiting for the array to drain.
Larger models amortize that: random_int_model d = 128 (f = 512, 2 layers) 1.073 at 8 B/cycle,
1.011 at 4; d = 256 (f = 1024) 1.031 and 1.007; d = 512 1.017 and 1.005 (P = 16). A 16 x 16
array (n = 16) runs the tiny model at 1.135 at 8 B/cycle.
"""

from dataclasses import dataclass, field, replace
import numpy as np

from mesh.prefill import Command, DmaKind, Op, PrefillConfig, VectorOp

from .integer_ops import RSQRT_SHIFT, mask_bias
from .prefill import tile_periods
from .prefill_compiler import DEFAULT_CONFIG, _Emitter, _phase_cycles, _Stream, run_plan
from .prefill_ops import emit_mask_bias, emit_softmax

__all__ = ["DEFAULT_CONFIG", "DecodePlan", "DecodeRun", "compile_decode_step",
           "run_decode_step", "baseline_cycles", "choose_lanes", "dram_bound",
           "TAG_CONST", "TAG_TABLE", "TAG_K", "TAG_V", "TAG_OUT"]

TAG_CONST = 0             # the start block: embedding rows, constants, exp table
MAX_SLOTS = 11            # weight pieces in flight: tags 1 .. 11
TAG_TABLE = 12            # the GELU tables
TAG_K = 13                # the K cache of a layer
TAG_V = 14                # the V cache of a layer
TAG_OUT = 15              # the output stores
_S, _P = "sbuf", "psum"


def _ceil(a, b):
    return -(-a // b)


# The plan ----------------------------------------------------------------------------------------

@dataclass
class DecodePlan:
    """A compiled decode step: ``dram`` (the DRAM image from byte 0), ``sbuf`` (the initial SBUF,
    None unless ``weights_in`` == "sbuf"), ``commands``; ``layout`` (outputs: name -> (address,
    rows, row stride in bytes, values per row, numpy dtype)); ``dram_map`` (inputs: name ->
    (address, bytes)), ``sbuf_map`` / ``psum_map`` (name -> (first row, rows)); ``phases``
    ([(name, index of its first command)]); ``transfers`` (the DMA's input reads in order:
    (what, DRAM address, rows)); ``lanes`` (the lanes of each GEMV); ``weight_bytes`` and
    ``kv_bytes`` (the bound's bytes: the weight matrices, the K and V rows read); ``dma_bytes``
    (everything the DMA moves, loads and stores)."""
    config: PrefillConfig
    token: int
    position: int
    dims: dict
    dram: bytes
    sbuf: object
    commands: list
    layout: dict
    dram_map: dict
    sbuf_map: dict
    psum_map: dict
    phases: list
    transfers: list
    lanes: dict
    weight_bytes: int
    kv_bytes: int
    dma_bytes: int
    weights_in: str
    predicted: list = None

    @property
    def bound_bytes(self):
        return self.weight_bytes + self.kv_bytes

    @property
    def dram_bound(self):
        """ceil((weight bytes + KV bytes read) / dram_bandwidth): the DRAM bound in cycles."""
        return _ceil(self.bound_bytes, self.config.dram_bandwidth)

    @property
    def cycles(self):
        """The step's cycles as the compiler's timing model predicts them (the HALT's issue
        cycle + 1; the emulator and the RTL run exactly these)."""
        return self.predicted[-1] + 1

    @property
    def phase_cycles(self):
        """{phase: predicted cycles} (as :attr:`DecodeRun.phase_cycles`)."""
        issue = self.predicted
        starts = [(name, issue[index]) for name, index in self.phases]
        ends = [c for _, c in starts[1:]] + [self.cycles]
        return {name: end - start for (name, start), end in zip(starts, ends)}

    def read_outputs(self, dram):
        """The outputs from a final DRAM image: ``l{l}.k``, ``l{l}.v`` (d int8: the new K and V
        rows), ``logits`` (V int32), ``token`` (an int)."""
        data = bytes(dram)
        out = {}
        for name, (addr, rows, stride, per_row, dtype) in self.layout.items():
            dtype = np.dtype(dtype)
            values = [np.frombuffer(data, dtype=dtype, count=per_row, offset=addr + i * stride)
                      for i in range(rows)]
            value = np.concatenate(values)
            out[name] = int(value[0]) if name == "token" else value.astype(dtype).copy()
        return out


@dataclass
class DecodeRun:
    """A run of a plan: ``outputs`` (:meth:`DecodePlan.read_outputs`), ``cycles``, ``issue``
    (issue cycle of every command), ``phase_cycles``, ``counters`` (the emulator's; empty for
    the RTL), ``bound`` (the plan's DRAM bound) and ``ratio`` = cycles / bound."""
    outputs: dict
    cycles: int
    issue: list
    phase_cycles: dict
    bound: int
    counters: dict = field(default_factory=dict)

    @property
    def ratio(self):
        return self.cycles / self.bound


def dram_bound(model, position, bandwidth):
    """ceil((weight bytes + KV bytes read) / bandwidth) of one decode step at ``position``."""
    c = model.config
    d, f, V, L = c["d_model"], c["d_ff"], c["vocab"], len(model.layers)
    return _ceil(L * (4 * d * d + 2 * d * f) + d * V + L * 2 * position * d, bandwidth)


# Lanes and the GEMV layout ---------------------------------------------------------------------

def _lane_options(n, N):
    """The lane counts a GEMV of N outputs may use: n (when n divides N) and the powers of two
    L < n with n L dividing N (the transposition's groups)."""
    options = [n] if N % n == 0 else []
    L = 1
    while L < n:
        if n % L == 0 and N % (n * L) == 0:
            options.append(L)
        L *= 2
    return options


def _tile_cycles(config, m, tiles, gap):
    """Cycles of ``tiles`` WEIGHTS/MATMUL pairs of m rows on alternating buffers."""
    a, b = tile_periods(config, m, gap)
    return _ceil(tiles, 2) * a + tiles // 2 * b


def _lanes_cost(config, K, N, L):
    """An estimate of the cycles of an x-stationary GEMV with L lanes: its tiles, and for L < n
    the REQUANT of m rows (instead of N / n), the transposition's tiles and its array latency."""
    n = config.n
    Kt, m = _ceil(K, n), N // L
    cost = _tile_cycles(config, m, Kt * L, 2)
    if L < n:
        cost += m - N // n + _tile_cycles(config, L, m // n, 1) + 3 * n + 4
    return cost


def choose_lanes(config, K, N):
    """The lanes of an x-stationary GEMV of K x N (the cheapest by :func:`_lanes_cost`)."""
    options = _lane_options(config.n, N)
    if not options:
        raise ValueError(f"a GEMV of {N} outputs needs n = {config.n} to divide N")
    return min(options, key=lambda L: (_lanes_cost(config, K, N, L), -L))


def _lane_order(n, N, L):
    """j[c, r]: the output in PSUM row r, lane c (module docstring)."""
    m = N // L
    c, r = np.meshgrid(np.arange(L), np.arange(m), indexing="ij")
    if L == n:
        return n * r + c
    return n * ((r // n) * L + c) + r % n


def _gemv_rows(W, n, L, column_form=False):
    """The x-stationary rows of W (K x N int8): [(kt, c, rows (m x n))] in the stream order."""
    K, N = W.shape
    Kt = _ceil(K, n)
    Wp = np.zeros((Kt * n, N), dtype=np.int8)
    Wp[:K] = W
    j = np.arange(N)[None, :] if column_form else _lane_order(n, N, L)
    out = []
    for kt in range(Kt):
        for c in range(L):
            out.append((kt, c, np.ascontiguousarray(Wp[kt * n:(kt + 1) * n, j[c]].T)))
    return out


# The DMA stream --------------------------------------------------------------------------------

@dataclass
class _Transfer:
    what: str
    addr: int
    rows: int
    stride: int
    row: int = None            # a region's first SBUF row (None: a ring piece)
    tag: int = 0
    gate: str = None           # emitted only once this gate is open
    data: bytes = b""
    piece: int = None          # ring pieces: the index among pieces
    emitted: bool = False


class _Timing:
    """The issue cycle of each command as the engine will run it, from the sequencer's issue
    rules and the DMA's pipeline and channel (docs/ARCHITECTURE.md section 11), command by
    command as they are emitted: the feeder places each LOAD where the DMA takes it without
    holding up the next command."""

    def __init__(self, config):
        self.config = config
        self.n, self.table_rows = config.n, _ceil(256, config.n)
        self.t = -1                                  # the last command's issue cycle
        self.loader_last = self.streamer_last = self.array_last = self.vector_last = -1
        self.vector_ready = 0
        self.weights_done = [-1, -1]
        self.last_present = [None, None]
        self.dma_ready = 0                           # the DMA takes a transfer from this cycle
        self.dma_last = -1                           # the last request's completion
        self.issued = []                             # request issue cycles, in order
        self.completed = []                          # request completion cycles
        self.budget = 0
        self.tag_done = {}

    def natural(self, c):
        """The cycle ``c`` would issue in, after the commands so far."""
        n, t, op = self.n, self.t + 1, c.op
        if op == Op.DMA:
            t = max(t, self.dma_ready)
            if c.sub != DmaKind.LOAD:
                t = max(t, self.array_last + 1, self.vector_last + 1)
        elif op == Op.WAIT:
            t = max(t, self.tag_done.get(c.tag, -1) + 1)
        elif op == Op.WEIGHTS:
            t = max(t, self.loader_last + 1, self.vector_last + 1)
            last = self.last_present[c.buffer]
            if last is not None:
                t = max(t, last + 2 * n - 3)
        elif op == Op.MATMUL:
            t = max(t, self.streamer_last + 1, self.vector_last + 1,
                    self.weights_done[c.buffer])
        elif op == Op.VECTOR:
            t = max(t, self.vector_ready, self.array_last + 1, self.streamer_last + 1,
                    self.loader_last + 1)
        elif op == Op.HALT:
            t = max(t, self.dma_last + 1, self.array_last + 1, self.streamer_last + 1,
                    self.loader_last + 1, self.vector_last + 1)
        return t

    def issue(self, c):
        n, t, op = self.n, self.natural(c), c.op
        self.t = t
        if op == Op.DMA:
            self._transfer(t, c)
        elif op == Op.WEIGHTS:
            self.loader_last = self.weights_done[c.buffer] = t + n
        elif op == Op.MATMUL:
            m = max(c.count, 1)
            self.streamer_last = t + m - 1
            self.array_last = t + m + 2 * n
            self.last_present[c.buffer] = t + m
        elif op == Op.VECTOR:
            rows = self.table_rows if c.sub == VectorOp.LOAD_TABLE else max(c.count, 1)
            self.vector_ready = t + rows
            self.vector_last = t + rows + 1
        return t

    def _transfer(self, a, c):
        cfg = self.config
        Q, lat, bw = cfg.dma_queue, cfg.dram_latency, cfg.dram_bandwidth
        size = 4 * self.n if c.sub == DmaKind.STORE_PSUM else self.n
        issued, completed = self.issued, self.completed
        # row k enters the issue stage in cycle e (row 0 once the previous row has left it)
        # and is issued the cycle after, when the queue has room
        e = max(a + 1, issued[-1] if issued else -1)
        for k in range(c.count):
            i = e + 1
            if len(completed) >= Q:
                i = max(i, completed[-Q] + 1)
            prev = completed[-1] if completed else -1
            start = max(prev + 1, i + lat)
            budget = self.budget if start == prev + 1 else 0
            cycles = max(1, _ceil(size - budget, bw))
            self.budget = min(budget + cycles * bw - size, bw - 1)
            issued.append(i)
            completed.append(start + cycles - 1)
            if k == c.count - 1:
                self.dma_ready = e               # the last row in the stage: the next one
            e = i
        self.dma_last = completed[-1]
        self.tag_done[c.tag] = completed[-1]


class _Feeder:
    """The step's input reads in stream order; ring pieces and region transfers (module
    docstring). :meth:`use` gives a piece's SBUF row (WAITing for its tag the first time);
    :meth:`consumed` marks it read by the MATMUL just emitted; :meth:`release` (after every
    MATMUL and VECTOR command) frees the slots of the pieces consumed before it; :meth:`pump`
    (before every command) emits the next transfers whose slot is free and which the DMA will
    take before that command would issue."""

    def __init__(self, em, timing, transfers, *, ring_row, slot_rows, slots, preload,
                 sbuf_image):
        self.em, self.timing, self.transfers = em, timing, transfers
        self.ring_row, self.slot_rows, self.slots = ring_row, slot_rows, slots
        self.preload, self.sbuf = preload, sbuf_image
        self.pieces = [t for t in transfers if t.row is None]
        self.next = 0
        self.released = 0           # pieces whose slots are free again (in order)
        self.pending = []           # consumed, not yet released
        self.waited = set()
        self.gates = set()
        if preload:
            row = ring_row
            for t in self.pieces:
                t.row = row
                row += t.rows
            for t in transfers:
                if self.sbuf is not None:
                    data = np.frombuffer(t.data, dtype=np.int8).reshape(t.rows, em.n)
                    self.sbuf[t.row:t.row + t.rows] = data
                t.emitted = True
            self.next = len(transfers)

    def row_of(self, t):
        if self.preload or t.piece is None:
            return t.row
        return self.ring_row + (t.piece % self.slots) * self.slot_rows

    def open(self, gate):
        self.gates.add(gate)

    def _ready(self, t):
        if t.gate is not None and t.gate not in self.gates:
            return False
        return t.piece is None or t.piece - self.slots < self.released

    def pump(self, before=None, upto=None):
        """Emit the next transfers while they can go: each one whose DMA acceptance comes
        before cycle ``before`` (the next command's issue cycle), or every one up to ``upto``
        (a transfer needed now)."""
        while self.next < len(self.transfers):
            t = self.transfers[self.next]
            forced = upto is not None and self.transfers.index(upto) >= self.next
            if not self._ready(t):
                break
            if not forced:
                if before is None:
                    break
                load = max(self.timing.t + 1, self.timing.dma_ready)
                if load >= before:
                    break
            tag = 1 + t.piece % self.slots if t.piece is not None else t.tag
            t.emitted = True
            self.next += 1
            self.em.load(addr=t.addr, row=self.row_of(t), count=t.rows, tag=tag,
                         stride=t.stride)

    def use(self, t):
        """The SBUF row of piece (or region) ``t``, after a WAIT for it the first time."""
        if not t.emitted:
            self.pump(upto=t)
        if not t.emitted:
            raise AssertionError(f"{t.what} is used before its LOAD can be emitted")
        if not self.preload and id(t) not in self.waited:
            self.waited.add(id(t))
            self.em.wait(1 + t.piece % self.slots if t.piece is not None else t.tag)
        return self.row_of(t)

    def consumed(self, t):
        if t.piece is not None:
            self.pending.append(t.piece)

    def release(self):
        if self.pending:
            self.released = max(self.released, max(self.pending) + 1)
            self.pending = []


class _DecodeStream(_Stream):
    """The emitter's stream: every command goes through :meth:`_append`, which first lets the
    feeder emit the LOADs due before it, then updates the timing model (and frees the ring
    slots read before a MATMUL or VECTOR)."""

    def __init__(self, commands, scratch, emitter, timing):
        super().__init__(commands, scratch, emitter)
        self.timing, self.feeder = timing, None
        self._pumping = False
        self.predicted = []

    def _append(self, command):
        if self.feeder is not None and not self._pumping:
            self._pumping = True
            try:
                self.feeder.pump(before=self.timing.natural(command))
            finally:
                self._pumping = False
        self.commands.append(command)
        self.predicted.append(self.timing.issue(command))
        if self.feeder is not None and command.op in (Op.MATMUL, Op.VECTOR):
            self.feeder.release()

    def other(self, command):
        self._append(command)
        self._recent, self._cycle = [], 0

    def passive(self, command):
        self._append(command)

    def _emit(self, vop, *, rows, written, d=0, multiplier=0, shift=0, **fields):
        self._append(Command(Op.VECTOR, sub=int(vop), count=rows, c=d, addr=multiplier,
                             stride=shift, **fields))
        self._recent = (self._recent + [(self._cycle, written)])[-2:]
        self._cycle += rows


# Checks ------------------------------------------------------------------------------------------

def _dims(model):
    c = model.config
    dims = dict(d=int(c["d_model"]), H=int(c["n_heads"]), dh=int(c["d_head"]),
                f=int(c["d_ff"]), L=len(model.layers), V=int(model.tok_emb.shape[0]),
                C=int(model.pos_emb.shape[0]))
    if dims["H"] * dims["dh"] != dims["d"]:
        raise ValueError(f"{dims['H']} heads of {dims['dh']} do not make d_model = {dims['d']}")
    return dims


def _cache_rows(kv_cache, l, d):
    """K, V of layer l as (length, d) int arrays from a KVCache (B = 1)."""
    K, V = kv_cache.layers[l]
    if K.shape[0] != 1:
        raise ValueError(f"the decode baseline runs one sequence, not a batch of {K.shape[0]}")
    flat = lambda A: np.swapaxes(np.asarray(A)[0], 0, 1).reshape(A.shape[2], d)
    return flat(K), flat(V)


def _need(needed, have, unit, detail):
    if needed > have:
        raise ValueError(f"the decode step needs {needed} {unit} ({detail}); the engine has "
                         f"{have}: {needed - have} short")


# The compiler ------------------------------------------------------------------------------------

def compile_decode_step(model, token, position, kv_cache, config=None, *, weights_in="dram",
                        slots=MAX_SLOTS, piece=32, lanes=None, _timing_only=False):
    """One decode step of ``model`` (an IntModel or any object with its attributes) for
    ``token`` at ``position`` (= the cached tokens) with ``kv_cache`` (a KVCache of the
    positions before, batch 1, or None at position 0) as a :class:`DecodePlan` for ``config``
    (default :data:`DEFAULT_CONFIG`). ``weights_in``: "dram" (streamed, ``slots`` ring slots of
    up to ``piece`` rows) or "sbuf" (every input preloaded in SBUF: the compute alone; the
    config must have the SBUF for it). ``lanes``: {"qkv", "wo", "w1", "w2": L} overrides
    :func:`choose_lanes`. Raises ValueError for a bad token, position or cache and for a
    configuration that is too small (saying by how much)."""
    config = DEFAULT_CONFIG if config is None else config
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config must be a PrefillConfig, not {config!r}")
    if weights_in not in ("dram", "sbuf"):
        raise ValueError(f"weights_in must be 'dram' or 'sbuf', not {weights_in!r}")
    if not isinstance(slots, int) or not 2 <= slots <= MAX_SLOTS:
        raise ValueError(f"slots must be from 2 to {MAX_SLOTS}, not {slots!r}")
    if not isinstance(piece, int) or piece < 1:
        raise ValueError(f"piece must be a positive integer, not {piece!r}")
    D = _dims(model)
    d, H, dh, f, L, V, C = (D[k] for k in ("d", "H", "dh", "f", "L", "V", "C"))
    n = config.n
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < V:
        raise ValueError(f"token must be an id from 0 to {V - 1}, not {token!r}")
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise ValueError(f"position must be an integer, not {position!r}")
    P, token = int(position), int(token)
    if not 0 <= P < C:
        raise ValueError(f"position {P} is outside the context of {C} positions")
    length = 0 if kv_cache is None else kv_cache.length
    if length != P:
        raise ValueError(f"position {P} does not follow the cache's {length} tokens")
    if d % n or dh % n or f % n:
        raise ValueError(f"the array size n = {n} must divide d_model = {d}, d_head = {dh} "
                         f"and d_ff = {f}")
    if V > 127:
        raise ValueError(f"the argmax handles at most 127 logits, not {V}")
    Dt, Ft, sph = d // n, f // n, dh // n
    keys = P + 1
    Lt = _ceil(keys, n)
    k_last = keys - (Lt - 1) * n                    # keys in the last key tile
    table_rows = _ceil(256, n)
    preload = weights_in == "sbuf"

    # Lanes of each GEMV ------------------------------------------------------------------------
    shapes = {"qkv": (d, 3 * d), "wo": (d, d), "w1": (d, f), "w2": (f, d)}
    chosen = {name: choose_lanes(config, *shape) for name, shape in shapes.items()}
    chosen["qkv"] = n                               # q, k, v are needed in row form
    if 3 * d % n:
        raise ValueError(f"n = {n} must divide 3 d_model = {3 * d}")
    for name, L_ in (lanes or {}).items():
        if name not in shapes or L_ not in _lane_options(n, shapes[name][1]) or (
                name == "qkv" and L_ != n):
            raise ValueError(f"lanes[{name!r}] = {L_!r} is not a lane count for that GEMV")
        chosen[name] = L_
    chosen["out"] = 1

    # DRAM image and the input stream -----------------------------------------------------------
    gelu_ids, gelu_tables = [], []
    for table in np.asarray(model.gelu_table):
        for i, t in enumerate(gelu_tables):
            if np.array_equal(t, table):
                gelu_ids.append(i)
                break
        else:
            gelu_ids.append(len(gelu_tables))
            gelu_tables.append(table)
    tables = np.zeros(((1 + len(gelu_tables)) * table_rows, n), dtype=np.int8)
    for i, table in enumerate([model.exp_table] + gelu_tables):
        tables[i * table_rows:(i + 1) * table_rows] = np.resize(
            np.asarray(table, dtype=np.int64).astype(np.int8), table_rows * n).reshape(-1, n)
    ones_rows = max(Dt, H, V)
    lane = np.arange(n)
    consts = np.concatenate([
        np.ones((ones_rows, n), dtype=np.int8),                      # ones
        np.eye(n, dtype=np.int8),                                    # identity rows e_l
        np.full((H, n), 127, dtype=np.int8),                         # 127s
        np.tile(np.where(lane >= k_last, -128, 0).astype(np.int8), (H, 1)),   # mask
        np.where(lane[None, :] == 0, -np.arange(V)[:, None], -128).astype(np.int8)])  # index
    c_ones, c_eye = 0, ones_rows
    c_big, c_mask, c_index = c_eye + n, c_eye + n + H, c_eye + n + 2 * H

    # weight pieces: per GEMV, per tile (kt, c): [(transfer, r0, rows)]
    def gemv_pieces(name, W, L_, column_form=False):
        tiles = []
        for kt, c, rows in _gemv_rows(np.asarray(W).astype(np.int8), n, L_, column_form):
            parts = []
            for r0 in range(0, len(rows), piece):
                block = rows[r0:r0 + piece]
                parts.append((_Transfer(what=f"{name}[{kt},{c}]+{r0}", addr=0,
                                        rows=len(block), stride=n, data=block.tobytes()),
                              r0, len(block)))
            tiles.append((kt, c, parts))
        return tiles

    gemvs = []
    for l, W in enumerate(model.layers):
        wqkv = np.concatenate([W["wq"], W["wk"], W["wv"]], axis=1)
        gemvs.append({"qkv": gemv_pieces(f"l{l}.qkv", wqkv, chosen["qkv"]),
                      "wo": gemv_pieces(f"l{l}.wo", W["wo"], chosen["wo"]),
                      "w1": gemv_pieces(f"l{l}.w1", W["w1"], chosen["w1"]),
                      "w2": gemv_pieces(f"l{l}.w2", W["w2"], chosen["w2"])})
    wout = gemv_pieces("wout", model.wout, 1, column_form=True)
    pieces_of = lambda tiles: [t for _, _, parts in tiles for t, _, _ in parts]

    stream = b"".join(t.data for g in gemvs for k in ("qkv", "wo", "w1", "w2")
                      for t in pieces_of(g[k])) + b"".join(t.data for t in pieces_of(wout))
    blocks = [("stream", stream), ("tok_emb", np.asarray(model.tok_emb).astype(np.int8)),
              ("pos_emb", np.asarray(model.pos_emb).astype(np.int8)), ("consts", consts),
              ("tables", tables)]
    dram_map, addr = {}, 0
    for name, block in blocks:
        size = len(block) if isinstance(block, bytes) else block.nbytes
        dram_map[name] = (addr, size)
        addr = _ceil(addr + size, 64) * 64
    kv_addr = addr
    Ct = _ceil(C, n)                                 # key tiles of the context
    kv_size = L * 2 * Ct * Dt * n * n
    dram_map["kv"] = (kv_addr, kv_size)
    kv_row = lambda l, kv, p, s: (((2 * l + kv) * Ct + p // n) * Dt + s) * n + p % n
    addr = _ceil(kv_addr + kv_size, 64) * 64
    layout = {}
    for l in range(L):
        for kv, c in enumerate("kv"):
            layout[f"l{l}.{c}"] = (kv_addr + kv_row(l, kv, P, 0) * n, Dt, n * n, n, np.int8)
    layout["logits"] = (addr, V, 4 * n, 1, np.dtype("<i4"))
    addr = _ceil(addr + V * 4 * n, 64) * 64
    layout["token"] = (addr, 1, n, 1, np.int8)
    dram_need = addr + n
    _need(dram_need, config.dram_bytes, "DRAM bytes",
          f"weights {len(stream)}, KV cache {kv_size}, embeddings, tables and outputs "
          f"{dram_need - len(stream) - kv_size}")
    image = bytearray(dram_need)
    for name, block in blocks:
        a, size = dram_map[name]
        image[a:a + size] = block if isinstance(block, bytes) else block.tobytes()
    caches = []
    for l in range(L):
        Kc, Vc = _cache_rows(kv_cache, l, d) if P else (np.zeros((0, d)), np.zeros((0, d)))
        caches.append((Kc.astype(np.int8), Vc.astype(np.int8)))
        for kv, A in enumerate(caches[-1]):
            for p in range(P):
                for s in range(Dt):
                    a = kv_addr + kv_row(l, kv, p, s) * n
                    image[a:a + n] = A[p, s * n:(s + 1) * n].tobytes()
    a0 = dram_map["stream"][0]
    for t in [t for g in gemvs for k in ("qkv", "wo", "w1", "w2") for t in pieces_of(g[k])] + \
            pieces_of(wout):
        t.addr = a0
        a0 += len(t.data)

    # SBUF and PSUM layouts ------------------------------------------------------------------
    m_of = {name: shape[1] // chosen[name] for name, shape in shapes.items()}
    T_rows = max([m_of[k] for k in ("wo", "w1", "w2") if chosen[k] < n] + [1])
    U_rows = max(m_of["w1"], Ft)
    kv_regions = L if preload else 1
    region_rows = Lt * Dt * n                        # a layer's K (or V): the key tiles in use
    sbuf_map, row = {}, 0
    for name, rows in [("emb", 2 * Dt), ("x", Dt), ("consts", len(consts)),
                       ("tables", len(tables)), ("xs", max(d, f)), ("q", Dt),
                       ("kvo", 2 * L * Dt), ("k", kv_regions * region_rows),
                       ("v", kv_regions * region_rows), ("p", Lt * H), ("t", T_rows),
                       ("u", U_rows), ("a", Dt), ("argmax", V + 1)]:
        sbuf_map[name] = (row, rows)
        row += rows
    slot_rows = min(piece, max(max(m_of.values()), V))
    ring_row = row
    all_transfers_rows = sum(len(t.data) // n for g in gemvs for k in g
                             for t in pieces_of(g[k])) + sum(len(t.data) // n
                                                             for t in pieces_of(wout))
    if preload:
        sbuf_map["weights"] = (ring_row, all_transfers_rows)
        row += all_transfers_rows
        if _timing_only:                 # the commands only: every piece at the ring's row
            row = ring_row + max(len(t.data) // n for g in gemvs for k in g
                                 for t in pieces_of(g[k]))
    else:
        sbuf_map["ring"] = (ring_row, slots * slot_rows)
        row += slots * slot_rows
    _need(row, config.sbuf_rows, "SBUF rows",
          ", ".join(f"{k} {v[1]}" for k, v in sbuf_map.items()))
    S_ = {k: v[0] for k, v in sbuf_map.items()}
    spaced = lambda t: S_["xs"] + t * n + n - 1
    # a layer's K (V) region: key tile j, segment s, position n j + r at row (j Dt + s) n + r
    Kreg = lambda l: S_["k"] + (l if preload else 0) * region_rows
    Vreg = lambda l: S_["v"] + (l if preload else 0) * region_rows

    Y_rows = max(max(m_of.values()), 1)
    psum_map, row = {}, 0
    for name, rows in [("scratch", 2), ("y", Y_rows), ("x32", Dt), ("norm", Dt + 3),
                       ("s", Lt * H), ("softmax", 3 * H), ("bias", H), ("o", Dt),
                       ("g32", Ft), ("logits", V), ("argmax", 2 * V + 2)]:
        psum_map[name] = (row, rows)
        row += rows
    _need(row, config.psum_rows, "PSUM rows",
          ", ".join(f"{k} {v[1]}" for k, v in psum_map.items()))
    P_ = {k: v[0] for k, v in psum_map.items()}

    # The stream order ---------------------------------------------------------------------------
    tab = lambda i: dram_map["tables"][0] + i * table_rows * n
    start = [_Transfer("tok_emb row", dram_map["tok_emb"][0] + token * d, Dt, n, S_["emb"],
                       TAG_CONST),
             _Transfer("pos_emb row", dram_map["pos_emb"][0] + P * d, Dt, n, S_["emb"] + Dt,
                       TAG_CONST),
             _Transfer("ones", dram_map["consts"][0], ones_rows, n, S_["consts"], TAG_CONST)]
    rest = [_Transfer("consts", dram_map["consts"][0] + ones_rows * n, len(consts) - ones_rows,
                      n, S_["consts"] + ones_rows, TAG_CONST),
            _Transfer("exp table", tab(0), table_rows, n, S_["tables"], TAG_CONST)]
    for t in start + rest:
        t.data = bytes(image[t.addr:t.addr + t.rows * n])
    order = list(start)
    kv_tiles = {}                    # (l, kv) -> [the transfers of key tile j]
    gelu_loads = {}                  # table index -> its transfer
    for l in range(L):
        order += pieces_of(gemvs[l]["qkv"])
        if l == 0:
            order += rest
        for kv, tag, reg in ((0, TAG_K, Kreg(l)), (1, TAG_V, Vreg(l))):
            tiles = kv_tiles[l, kv] = []
            for j in range(_ceil(P, n)):
                full = min(n, P - j * n) == n
                parts = [(0, Dt * n)] if full else [(s * n, P - j * n) for s in range(Dt)]
                tiles.append([])
                for r0, rows in parts:
                    a = kv_addr + (kv_row(l, kv, j * n, 0) + r0) * n
                    t = _Transfer(f"l{l}.{'kv'[kv]} tile {j}+{r0}", a, rows, n,
                                  reg + j * Dt * n + r0, tag,
                                  gate=f"l{l - 1}.attention" if l else None,
                                  data=bytes(image[a:a + rows * n]))
                    tiles[-1].append(t)
                    order.append(t)
        gi = 1 + gelu_ids[l]
        if gelu_ids.index(gelu_ids[l]) == l:         # each distinct table once
            a = tab(gi)
            gelu_loads[gi] = _Transfer(f"l{l}.gelu table", a, table_rows, n,
                                       S_["tables"] + gi * table_rows, TAG_TABLE,
                                       data=bytes(image[a:a + table_rows * n]))
            order.append(gelu_loads[gi])
        for k in ("wo", "w1", "w2"):
            order += pieces_of(gemvs[l][k])
    order += pieces_of(wout)
    for i, t in enumerate(t for t in order if t.row is None):
        t.piece = i
    sbuf_image = (np.zeros((config.sbuf_rows, n), dtype=np.int8)
                  if preload and not _timing_only else None)

    # Emission -------------------------------------------------------------------------------
    em = _Emitter(config, P_["scratch"])
    timing = _Timing(config)
    em.stream = _DecodeStream(em.commands, P_["scratch"], em, timing)
    feeder = _Feeder(em, timing, order, ring_row=ring_row, slot_rows=slot_rows, slots=slots,
                     preload=preload, sbuf_image=sbuf_image)
    if _timing_only:
        for t in feeder.pieces:
            t.row = ring_row
    st = em.stream
    st.feeder = feeder
    rq = model.rq
    x_row, ones = S_["x"], S_["consts"] + c_ones
    eye = S_["consts"] + c_eye

    def vec(op, rows, **kw):
        em.vec(op, rows=rows, **kw)

    def requant(src, dst, rows, mult_shift):
        m, s = mult_shift
        vec(VectorOp.REQUANT, rows, a=src, d=dst, multiplier=m, shift=s,
            reads=[(_P, src)], writes=(_S, dst))

    def weights(a, count, transpose=0):
        buffer = st.next_buffer()
        em.other(Command(Op.WEIGHTS, buffer=buffer, a=a, count=count, transpose=transpose))
        return buffer

    def matmul(buffer, a, b, count, acc):
        em.other(Command(Op.MATMUL, buffer=buffer, a=a, b=b, count=count, acc=int(bool(acc))))

    def gemv(tiles, y):
        """The x-stationary GEMV of ``tiles`` (x in the spaced rows) into PSUM rows y.."""
        for i, (kt, c, parts) in enumerate(tiles):
            buffer = weights(spaced(kt) - c, c + 1, transpose=1)
            for t, r0, rows in parts:
                matmul(buffer, feeder.use(t), y + r0, rows, acc=i > 0)
                feeder.consumed(t)

    def transpose(src, m, L_, dst, acc):
        """SBUF rows src.. (m rows, L_ lanes) to row form in PSUM rows dst.. (module
        docstring)."""
        for q in range(m // n):
            buffer = weights(src + q * n, n, transpose=1)
            matmul(buffer, eye, dst + q * L_, L_, acc)

    def norm(shift):
        """RMS norm of x (row form) into the spaced rows; x as int32 into PSUM x32."""
        w, s1 = P_["norm"], P_["norm"] + Dt
        ss, r = s1 + 1, s1 + 2
        x32 = P_["x32"]
        vec(VectorOp.MULW, Dt, a=x_row, b=x_row, d=w, reads=[(_S, x_row)], writes=(_P, w))
        vec(VectorOp.ROWSUM, Dt, a=w, d=s1, reads=[(_P, w)], writes=(_P, s1, True))
        vec(VectorOp.MULW, Dt, a=x_row, b=ones, d=x32, reads=[(_S, x_row), (_S, ones)],
            writes=(_P, x32))
        vec(VectorOp.LANESUM, 1, a=s1, d=ss, reads=[(_P, s1)], writes=(_P, ss))
        vec(VectorOp.RSQRT, 1, a=ss, d=r, shift=RSQRT_SHIFT, reads=[(_P, ss)], writes=(_P, r))
        for t in range(Dt):
            vec(VectorOp.SCALE, 1, a=x32 + t, b=r, d=spaced(t), shift=shift,
                reads=[(_P, x32 + t), (_P, r)], writes=(_S, spaced(t)))

    def residual(L_, N, y, rq_name):
        """x = sat8(x + requant(y)) from the GEMV output in PSUM rows y.."""
        if L_ == n:
            a8 = S_["a"]
            requant(y, a8, N // n, rq[rq_name])
            vec(VectorOp.ADD8, N // n, a=x_row, b=a8, d=x_row,
                reads=[(_S, x_row), (_S, a8)], writes=(_S, x_row))
        else:
            m = N // L_
            requant(y, S_["t"], m, rq[rq_name])
            transpose(S_["t"], m, L_, P_["x32"], acc=True)
            requant(P_["x32"], x_row, Dt, (1, 0))

    em.phase("start")
    feeder.use(start[-1])
    vec(VectorOp.ADD8, Dt, a=S_["emb"], b=S_["emb"] + Dt, d=x_row,
        reads=[(_S, S_["emb"]), (_S, S_["emb"] + Dt)], writes=(_S, x_row))
    bias_row = P_["bias"]
    em.phase("l0.norm1")
    norm(model.norm_shift[0])
    y = P_["y"]
    kvo = S_["kvo"]
    for l in range(L):
        g = gemvs[l]
        em.phase(f"l{l}.qkv")
        gemv(g["qkv"], y)
        requant(y, S_["q"], Dt, rq[f"l{l}.q"])
        for kv, c in enumerate("kv"):
            src = y + (1 + kv) * Dt
            requant(src, kvo + (2 * l + kv) * Dt, Dt, rq[f"l{l}.{c}"])
            reg = Kreg(l) if kv == 0 else Vreg(l)
            for s in range(Dt):
                requant(src + s, reg + (P // n * Dt + s) * n + P % n, 1, rq[f"l{l}.{c}"])

        em.phase(f"l{l}.attention")
        s_row = P_["s"]
        for j in range(Lt):
            if j < len(kv_tiles[l, 0]):
                feeder.use(kv_tiles[l, 0][j][-1])
            kj = min(n, keys - j * n)
            for s in range(Dt):
                buffer = weights(Kreg(l) + (j * Dt + s) * n, kj, transpose=1)
                matmul(buffer, S_["q"] + s, s_row + j * H + s // sph, 1, acc=s % sph)
        if l == 0:
            feeder.use(rest[-1])
            if k_last < n:
                _, doublings = mask_bias(dh)
                emit_mask_bias(st, rows=H, mask_tiles=[S_["consts"] + c_mask],
                               big=S_["consts"] + c_big, bias_tiles=[bias_row],
                               doublings=doublings)
        vec(VectorOp.LOAD_TABLE, 1, a=S_["tables"])
        last = s_row + (Lt - 1) * H
        if k_last < n:
            vec(VectorOp.ADD32, H, a=last, b=bias_row, d=last,
                reads=[(_P, last), (_P, bias_row)], writes=(_P, last))
        sm = P_["softmax"]
        m_, s_ = rq[f"l{l}.score"]
        emit_softmax(st, rows=H, scores=[s_row + j * H for j in range(Lt)], mx=sm,
                     total=sm + H, r=sm + 2 * H, ones=ones,
                     out=[S_["p"] + j * H for j in range(Lt)], multiplier=m_, shift=s_)
        o = P_["o"]
        for j in range(Lt):
            if j < len(kv_tiles[l, 1]):
                feeder.use(kv_tiles[l, 1][j][-1])
            kj = min(n, keys - j * n)
            for s in range(Dt):
                buffer = weights(Vreg(l) + (j * Dt + s) * n, kj)
                matmul(buffer, S_["p"] + j * H + s // sph, o + s, 1, acc=j > 0)
        for t in range(Dt):
            requant(o + t, spaced(t), 1, rq[f"l{l}.o"])
        feeder.open(f"l{l}.attention")

        em.phase(f"l{l}.wo")
        gemv(g["wo"], y)
        residual(chosen["wo"], d, y, f"l{l}.attn")
        em.phase(f"l{l}.norm2")
        norm(model.norm_shift[2 * l + 1])
        em.phase(f"l{l}.mlp")
        gemv(g["w1"], y)
        gi = 1 + gelu_ids[l]
        feeder.use(gelu_loads[gi])
        L1 = chosen["w1"]
        u = S_["u"]
        if L1 == n:
            requant(y, u, Ft, rq[f"l{l}.up"])
            vec(VectorOp.LOAD_TABLE, 1, a=S_["tables"] + gi * table_rows)
            for t in range(Ft):
                vec(VectorOp.LUT, 1, a=u + t, d=spaced(t), reads=[(_S, u + t)],
                    writes=(_S, spaced(t)))
        else:
            m1 = f // L1
            requant(y, u, m1, rq[f"l{l}.up"])
            vec(VectorOp.LOAD_TABLE, 1, a=S_["tables"] + gi * table_rows)
            vec(VectorOp.LUT, m1, a=u, d=u, reads=[(_S, u)], writes=(_S, u))
            transpose(u, m1, L1, P_["g32"], acc=False)
            for t in range(Ft):
                requant(P_["g32"] + t, spaced(t), 1, (1, 0))
        gemv(g["w2"], y)
        residual(chosen["w2"], d, y, f"l{l}.down")
        if l + 1 < L:
            em.phase(f"l{l + 1}.norm1")
            norm(model.norm_shift[2 * l + 2])

    em.phase("final")
    norm(model.norm_shift[2 * L])
    lg = P_["logits"]
    gemv(wout, lg)
    for l in range(L):
        for kv, c in enumerate("kv"):
            em.store(addr=layout[f"l{l}.{c}"][0], row=kvo + (2 * l + kv) * Dt, count=Dt,
                     stride=n * n, tag=TAG_OUT)
    em.store(addr=layout["logits"][0], row=lg, count=V, tag=TAG_OUT, psum=True)
    am = P_["argmax"]
    mx, dd, w32, tm = am, am + 1, am + 1 + V, am + 1 + 2 * V
    q8, tok8 = S_["argmax"], S_["argmax"] + V
    vec(VectorOp.ROWMAX, V, a=lg, d=mx, reads=[(_P, lg)], writes=(_P, mx, True))
    for j in range(V):
        vec(VectorOp.SUB32, 1, a=lg + j, b=mx, d=dd + j, reads=[(_P, lg + j), (_P, mx)],
            writes=(_P, dd + j))
    vec(VectorOp.REQUANT, V, a=dd, d=q8, multiplier=128, shift=0, reads=[(_P, dd)],
        writes=(_S, q8))
    index = S_["consts"] + c_index
    vec(VectorOp.ADD8, V, a=q8, b=index, d=q8, reads=[(_S, q8)], writes=(_S, q8))
    vec(VectorOp.MULW, V, a=q8, b=ones, d=w32, reads=[(_S, q8)], writes=(_P, w32))
    vec(VectorOp.ROWMAX, V, a=w32, d=tm, reads=[(_P, w32)], writes=(_P, tm, True))
    vec(VectorOp.REQUANT, 1, a=tm, d=tok8, multiplier=-1, shift=0, reads=[(_P, tm)],
        writes=(_S, tok8))
    em.store(addr=layout["token"][0], row=tok8, count=1, tag=TAG_OUT)
    em.other(Command(Op.HALT))
    assert feeder.next == len(order) and all(t.emitted for t in order)

    commands = em.commands
    _need(len(commands), config.commands, "commands",
          f"{sum(c.op == Op.MATMUL for c in commands)} MATMULs, "
          f"{sum(c.op == Op.WEIGHTS for c in commands)} WEIGHTS, "
          f"{sum(c.op == Op.VECTOR for c in commands)} VECTORs, "
          f"{sum(c.op == Op.DMA for c in commands)} DMAs")
    weight_bytes = L * (4 * d * d + 2 * d * f) + d * V
    return DecodePlan(
        config=config, token=token, position=P, dims=D, dram=bytes(image), sbuf=sbuf_image,
        commands=commands, layout=layout, dram_map=dram_map, sbuf_map=sbuf_map,
        psum_map=psum_map, phases=em.phases,
        transfers=[(t.what, t.addr, t.rows) for t in order], lanes=chosen,
        weight_bytes=weight_bytes, kv_bytes=L * 2 * P * d, dma_bytes=em.dma_bytes,
        weights_in=weights_in, predicted=st.predicted)


# Running -----------------------------------------------------------------------------------------

def run_decode_step(plan, backend="emulator", *, max_cycles=5_000_000):
    """Run ``plan`` on ``backend`` ("emulator": :class:`emulator.prefill.PrefillEmulator` with
    the fast array model; "rtl": :class:`hdl.prefill.PrefillEngine` in the Amaranth simulator)
    and return a :class:`DecodeRun`."""
    issue, cycles, dram, counters = run_plan(plan, backend, max_cycles, plan.dram_map["kv"][0])
    return DecodeRun(outputs=plan.read_outputs(dram), cycles=cycles, issue=list(issue),
                     phase_cycles=_phase_cycles(plan, issue, cycles), bound=plan.dram_bound,
                     counters=counters)


# The sweep helper --------------------------------------------------------------------------------

def _synthetic_cache(model, position, seed=0):
    """A KVCache of ``position`` random int8 rows per layer (timing does not depend on the
    values)."""
    from programs.transformer.model import KVCache

    D = _dims(model)
    cache = KVCache.__new__(KVCache)
    cache.batch, cache.length = 1, position
    rng = np.random.default_rng(seed)
    shape = (1, D["H"], position, D["dh"])
    cache.layers = [(rng.integers(-128, 128, size=shape), rng.integers(-128, 128, size=shape))
                    for _ in range(D["L"])] if position else [None] * D["L"]
    return cache


def _roomy(config, plan_need=None):
    """``config`` with the SBUF, PSUM, DRAM and command memory at their largest (for the
    synthetic models and the preloaded comparison; the timing does not depend on the sizes)."""
    return replace(config, sbuf_rows=65536, psum_rows=max(config.psum_rows, 4096),
                   dram_bytes=max(config.dram_bytes, 1 << 24), commands=65536)


def baseline_cycles(model, position, config=None, *, compute_only=True, emulate=False,
                    **options):
    """One decode step of ``model`` (an IntModel or any object with its attributes, e.g.
    ``programs.mesh_decode.random_int_model``) at ``position`` (a random KV cache: the cycles
    do not depend on the values) against its DRAM bound. ``config`` (default
    :data:`DEFAULT_CONFIG`) gives n and the DRAM channel; the memories and the command memory
    are enlarged to whatever the model needs. The cycles are the compiler's timing model's
    (:attr:`DecodePlan.cycles`, exact: the tests check it against the emulator); with
    ``emulate`` the emulator runs the step too and must agree.

    Returns a dict: ``cycles``, ``bound`` (ceil((weight + KV bytes) / bandwidth)), ``ratio``
    (cycles / bound), ``weight_bytes``, ``kv_bytes``, ``dma_bytes`` (everything the DMA moves:
    also the embedding rows, constants, tables and output stores), ``dma_bound``
    (ceil(dma_bytes / bandwidth)), ``lanes``, ``phase_cycles`` and, with ``compute_only``,
    ``compute_cycles``: the same step with every input already in SBUF (no LOADs): the
    compute alone, the floor when the DRAM is fast."""
    config = _roomy(DEFAULT_CONFIG if config is None else config)
    cache = _synthetic_cache(model, position)
    plan = compile_decode_step(model, 0, position, cache, config, **options)
    phases = plan.phase_cycles
    if emulate:
        run = run_decode_step(plan)
        if run.issue != plan.predicted:
            raise AssertionError("the emulator and the compiler's timing model disagree")
    bw = config.dram_bandwidth
    out = dict(cycles=plan.cycles, bound=plan.dram_bound, ratio=plan.cycles / plan.dram_bound,
               weight_bytes=plan.weight_bytes, kv_bytes=plan.kv_bytes,
               dma_bytes=plan.dma_bytes, dma_bound=_ceil(plan.dma_bytes, bw),
               lanes=dict(plan.lanes), phase_cycles=phases, bandwidth=bw, n=config.n,
               position=position)
    if compute_only:
        pre = compile_decode_step(model, 0, position, cache, config, weights_in="sbuf",
                                  _timing_only=True, **options)
        out["compute_cycles"] = pre.cycles
    return out

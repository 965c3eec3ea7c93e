"""The compiler's front: :class:`MeshDecoder` maps an :class:`IntModel` onto a mesh (placement,
routes, every core's program and static data), loads a decode state (KV cache, last token,
steps) into SRAM images, runs them on the emulator and reads the results back (generated
tokens, logits, every intermediate tensor, the KV cache), and measures where the cycles go.
"""

from dataclasses import dataclass, replace

import numpy as np

from emulator import MeshEmulator
from mesh import MeshProgram, isa
from mesh.builder import MeshBuilder
from mesh.numerics import RECIP_TABLE, RSQRT_TABLE
from programs.kernels import pack_int8

from programs.delivery import Region, delivery_routes
from programs.kv_message import KVMessage

from .codegen import CoreGen, add_routes, gemv_form
from .model import ModelDims
from .plan import COLORS, EXP_ENTRIES, LAYER_CONSTS, PlacementError, plan

__all__ = ["MeshDecoder", "DecodeRun", "RQ_OPS", "KEPT_ONLY"]

RQ_OPS = ("q", "k", "v", "score", "o", "attn", "up", "down")

# Where each traced tensor lives: layout (C = south row; R = east column, RF its d_ff slice,
# RV its logits), buffer, offset in the buffer (in packed row slices: d / H / 4 words), and
# whether it is packed (four int8 per word) or one int32 per element.
TENSORS = {"x0": ("C", "x0", 0, False), "h1": ("C", "hp1", 0, True),
           "q": ("R", "qkvb", 0, True), "k": ("R", "qkvb", 1, True),
           "v": ("R", "qkvb", 2, False), "o": ("R", "opk", 0, True),
           "a": ("C", "a32", 0, False), "x1": ("C", "x1", 0, False),
           "h2": ("C", "hp2", 0, True), "u": ("RF", "u32", 0, False),
           "g": ("RF", "gpk", 0, True), "f": ("C", "f32", 0, False),
           "x2": ("C", "x2", 0, False), "final.h": ("C", "hpf", 0, True),
           "logits": ("RV", "logits", 0, False)}

# Tensors left in no buffer unless the intermediates are kept: the embedding goes straight
# into xcur, the residual works in place ("x2", the layer's output, is then read from xcur),
# the GELU table lookup requantizes its own index (no u).
KEPT_ONLY = ("x0", "a", "x1", "u", "f")

PHASES = ("receive", "embed", "norm", "gemv", "qkv", "attention", "softmax", "elementwise", "argmax",
          "state")


def _block(matrix):
    """A core's GEMV block: rows of ``matrix`` (outputs) packed four int8 per word, laid out as
    the program's form reads them (output-major for "row", word-major for "acc")."""
    words = pack_int8(matrix)
    if gemv_form(*words.shape) == "acc":
        words = words.T
    return words.reshape(-1)


def _words(values):
    return (np.asarray(values, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _signed(words):
    return np.asarray(words, dtype=np.uint32).view(np.int32).astype(np.int64)


@dataclass
class DecodeRun:
    """A finished run: the emulator's result, the tokens generated, the cycles."""
    result: object
    tokens: list
    cycles: int
    phases: dict = None


class MeshDecoder:
    """Decode steps of ``model`` on the mesh ``config``.

    ``layer_loop``: one layer body looping over per-layer SRAM blocks (small code; the
    requantize multipliers of an op are pre-scaled to the largest shift of that op over the
    layers), or False for the layers unrolled; None chooses the loop when it is exact.

    ``receive_token_words``: None, or the token words of a :class:`programs.kv_message.KVMessage`
    (the engine's n / 4): the program then starts by taking its decode state and the prompt's
    KV cache from a delivery of that message on the mesh's last color (every tile of the mesh,
    N words each), and :attr:`base` is the whole program, for any prompt: no state is loaded
    by the host (:meth:`delivery_command`)."""

    def __init__(self, model, config, layer_loop=None, keep_intermediates=True,
                 receive_token_words=None):
        self.model, self.config = model, config
        self.dims = ModelDims.of(model)
        self.plan = plan(self.dims, config, keep_intermediates)
        self.keep_intermediates = keep_intermediates
        self.geo = geo = self.plan.geometry
        self._constants(layer_loop)
        mb = MeshBuilder(config, f"decode-{config.shape}")
        add_routes(mb.routes, geo)
        self.receive = None
        if receive_token_words is not None:
            self.receive = self._receive(receive_token_words)
            delivery_routes(config, Region(0, 0, config.width, config.height),
                            self.receive[0], table=mb.routes)
        self.phase_marks = {}
        self.code_sizes = {}
        for (x, y), cp in self.plan.cores.items():
            gen = CoreGen(geo, cp, x, y, loop=self.loop, shifts=self.shifts,
                          norm_shifts=model.norm_shift, pre_shift=self.pre_shift,
                          receive=self.receive, keep=keep_intermediates)
            core = gen.build()
            self._static_data(core, cp, x, y)
            mb.place(core, [(x, y)])
            self.code_sizes[(x, y)] = core.pc
            self.phase_marks[(x, y)] = gen.marks
        worst = max(self.code_sizes.items(), key=lambda kv: kv[1])
        if worst[1] > config.imem_words:
            raise PlacementError(
                f"core {worst[0]} of the {config.shape} mesh needs {worst[1]:,} instruction "
                f"words; {config.imem_words:,} available: {worst[1] - config.imem_words:,} short "
                f"(imem_words >= {worst[1]:,} fits"
                + ("; the layer loop needs fewer" if not self.loop and geo.L > 1 else "") + ")")
        self.base = mb.build()

    def _receive(self, token_words):
        """(color, token words, header words) of the receive prelude."""
        color = self.config.colors - 1
        if color in COLORS.values():
            raise PlacementError(f"receiving the KV message needs a color beside the decode's "
                                 f"{len(COLORS)}: the mesh has {self.config.colors}; "
                                 f"colors >= {len(COLORS) + 1} fits")
        try:
            header = KVMessage(self.geo.W, self.geo.H, self.geo.d, self.geo.L, 4 * token_words,
                               1).header
        except ValueError as error:
            raise PlacementError(str(error)) from None
        return color, token_words, header

    def kv_message(self, prompt_tokens, n, steps, end):
        """The :class:`KVMessage` this program receives (engine rows of ``n`` bytes)."""
        geo = self.geo
        message = KVMessage(geo.W, geo.H, geo.d, geo.L, n, prompt_tokens, steps=steps,
                            end=-1 if end is None else int(end))
        if self.receive is None or message.token_words != self.receive[1]:
            raise ValueError(f"this decoder receives {self.receive and self.receive[1]} token "
                             f"words, the message has {message.token_words}")
        return message

    def delivery_command(self, message, src=0):
        """The delivery command's fields for ``message`` at receive-buffer word ``src``."""
        cfg = self.config
        return dict(x0=0, y0=0, width=cfg.width, height=cfg.height, words=message.words,
                    src=src, color=self.receive[0])

    # Constants ----------------------------------------------------------------------------------

    def _constants(self, layer_loop):
        m, L = self.model, self.geo.L
        rq = {op: [m.rq[f"l{l}.{op}"] for l in range(L)] for op in RQ_OPS}
        ns = {"ns1": [m.norm_shift[2 * l] for l in range(L)],
              "ns2": [m.norm_shift[2 * l + 1] for l in range(L)]}
        feasible = all(max(s for _, s in v) - s <= 16 and (mult << (max(s for _, s in v) - s))
                       < 1 << 31 for v in rq.values() for mult, s in v) \
            and all(max(v) - s <= 23 for v in ns.values() for s in v)
        if layer_loop is None:
            layer_loop = feasible and L > 1
        if layer_loop and not feasible:
            raise PlacementError("the layer loop needs every op's shifts within 16 (norms 23) "
                                 "of each other over the layers; use layer_loop=False")
        self.loop = bool(layer_loop)
        self.pre_shift = {k: self.loop and max(v) != min(v) for k, v in ns.items()}
        tables = [np.asarray(t) for t in m.gelu_table]
        distinct = np.unique(np.stack(tables), axis=0)
        self.gelu_index = [int(np.flatnonzero((distinct == t).all(axis=1))[0]) for t in tables]
        self.gelu_distinct = distinct
        self.consts = []
        if self.loop:
            self.shifts = {op: max(s for _, s in v) for op, v in rq.items()}
            self.shifts.update({k: max(v) for k, v in ns.items()})
            for l in range(L):
                row = [rq[op][l][0] << (self.shifts[op] - rq[op][l][1]) for op in RQ_OPS]
                row += [self.shifts[k] - ns[k][l] for k in ("ns1", "ns2")]
                self.consts.append(row)
        else:
            self.shifts = {op: [s for _, s in v] for op, v in rq.items()}
            self.shifts.update(ns)
            for l in range(L):
                self.consts.append([rq[op][l][0] for op in RQ_OPS] + [0, 0])
        assert len(self.consts[0]) == len(LAYER_CONSTS) - 1     # + the GELU table, per core

    # Static data --------------------------------------------------------------------------------

    def _static_data(self, core, cp, x, y):
        geo, m = self.geo, self.model
        W, H = geo.W, geo.H
        east, south = x == W - 1, y == H - 1
        cs = slice(x * geo.cd, (x + 1) * geo.cd)
        rs = slice(y * geo.rd, (y + 1) * geo.rd)
        fs = slice(y * geo.fr, (y + 1) * geo.fr)
        put = lambda name, words, layer=None: core.data(cp.addr(name, layer), _words(words))
        put("exp", np.asarray(m.exp_table, dtype=np.int64)[:EXP_ENTRIES])
        vn = geo.vn(y)
        if vn:
            v0 = y * geo.vr
            put("wout", _block(m.wout.T[v0:v0 + vn, cs]))
        if east:
            for t, table in enumerate(self.gelu_distinct):
                put(f"gelu{t}", np.asarray(table, dtype=np.int64))
            put("recip", RECIP_TABLE)
            if vn:
                b = geo.key_bits
                put("idxc", [(1 << b) - 1 - (y * geo.vr + e) for e in range(vn)])
            if south:
                put("rsqrt", RSQRT_TABLE)
        if south:
            put("tok_emb", pack_int8(m.tok_emb[:, cs]).reshape(-1))
            put("pos_emb", pack_int8(m.pos_emb[:, cs]).reshape(-1))
        for l, Wl in enumerate(m.layers):
            qkv = np.concatenate([Wl["wq"].T[rs, cs], Wl["wk"].T[rs, cs], Wl["wv"].T[rs, cs]])
            put("wqkv", _block(qkv), l)
            put("wo", _block(Wl["wo"].T[cs, rs]), l)
            put("w1", _block(Wl["w1"].T[fs, cs]), l)
            put("w2", _block(Wl["w2"].T[cs, fs]), l)
            table = cp.addr(f"gelu{self.gelu_index[l]}") if east else 0
            put("consts", self.consts[l] + [table], l)

    # State ------------------------------------------------------------------------------------------

    def state_segments(self, cache, token, steps=1, end=None):
        """{(x, y): {address: words}}: the step state and the KV cache of ``cache`` (a
        :class:`KVCache` of batch 1, its positions 0..length-1) in this placement."""
        geo = self.geo
        pos = int(cache.length)
        if getattr(cache, "batch", 1) != 1:
            raise ValueError(f"the mesh decodes one sequence; the cache holds {cache.batch}")
        if len(cache.layers) != geo.L:
            raise ValueError(f"the cache has {len(cache.layers)} layers, the model {geo.L}")
        if not 0 <= pos < geo.C:
            raise ValueError(f"position {pos} is outside the context of {geo.C}")
        if steps < 1 or pos + steps > geo.C:
            raise ValueError(f"{steps} steps from position {pos} do not fit the context of "
                             f"{geo.C}")
        if not 0 <= int(token) < geo.V:
            raise ValueError(f"token {token} is not in the vocabulary of {geo.V}")
        kv = self._kv_words(cache)
        out = {}
        for (x, y), cp in self.plan.cores.items():
            seg = {}
            nloc, own = len(range(x, pos, geo.W)), int(pos % geo.W == x)
            nk = nloc + own
            state = {"steps": steps, "token": int(token), "pos": pos, "phase": pos % geo.W,
                     "nloc": nloc, "end": -1 if end is None else int(end), "own": own,
                     "nk": nk, "n4": -(-nk // 4) * 4, "nw": -(-nk // 4)}
            for name, value in state.items():
                seg[cp.addr(name)] = _words([value])
            for l in range(geo.L):
                k, vt = kv[l][(x, y)]
                seg[cp.addr("k", l)] = k
                seg[cp.addr("vt", l)] = vt
            out[(x, y)] = seg
        return out

    def _kv_words(self, cache):
        geo = self.geo
        out = []
        for l in range(geo.L):
            layer = {}
            if cache.layers[l] is None:
                K = V = np.zeros((0, geo.d), dtype=np.int64)
            else:
                Kc, Vc = cache.layers[l]
                T = Kc.shape[2]
                K = np.swapaxes(Kc[0], 0, 1).reshape(T, geo.d)     # position x d
                V = np.swapaxes(Vc[0], 0, 1).reshape(T, geo.d)
            for (x, y) in self.plan.cores:
                ps = np.arange(x, K.shape[0], geo.W)
                rs = slice(y * geo.rd, (y + 1) * geo.rd)
                k = np.zeros((geo.ml, geo.rd), dtype=np.int64)
                k[:len(ps)] = K[ps, rs]
                v = np.zeros((geo.ml4, geo.rd), dtype=np.int64)
                v[:len(ps)] = V[ps, rs]
                vt = v.reshape(geo.vtw, 4, geo.rd).swapaxes(1, 2)     # word, dim, lane
                layer[(x, y)] = (pack_int8(k).reshape(-1), pack_int8(vt).reshape(-1))
            out.append(layer)
        return out

    def program(self, cache, token, steps=1, end=None):
        """The :class:`MeshProgram` of ``steps`` decode steps from ``cache`` and the last
        generated ``token`` (stopping early after ``end`` when given)."""
        segs = self.state_segments(cache, token, steps, end)
        cfg = self.config
        images = {}
        for idx, image in enumerate(self.base.images):
            tile = cfg.tile_xy(idx)
            images[tile] = replace(image, sram={**image.sram, **segs[tile]})
        return MeshProgram(cfg, images, self.base.routes, name=self.base.name)

    # Runs -------------------------------------------------------------------------------------------

    def run(self, cache, token, steps=1, end=None, max_cycles=2_000_000, phases=False):
        """Run on the emulator; with ``phases`` also count, per core, the cycles spent in each
        phase of the program and how many of them waited on the fabric."""
        emu = MeshEmulator(self.program(cache, token, steps, end))
        if phases:
            counts = self._run_counting(emu, max_cycles)
            result = emu.result()
        else:
            result = emu.run(max_cycles=max_cycles)
            counts = None
        return DecodeRun(result, self.tokens(result), result.cycles, counts)

    def _run_counting(self, emu, max_cycles):
        cfg = self.config
        table = np.zeros((cfg.tiles, cfg.imem_words), dtype=np.int64)
        for (x, y), marks in self.phase_marks.items():
            t = cfg.tile_index(x, y)
            for start, end, phase in marks:
                table[t, start:end] = PHASES.index(phase)
        n = len(PHASES)
        busy = np.zeros((cfg.tiles, n), dtype=np.int64)
        wait = np.zeros((cfg.tiles, n), dtype=np.int64)
        names = [nm for nm, _ in isa.COUNTERS]
        si, so = names.index("stall_in"), names.index("stall_out")
        cores = emu.cores
        tiles = np.arange(cfg.tiles)
        while not emu.done:
            if emu.cycle >= max_cycles:
                raise RuntimeError(f"not finished within {max_cycles} cycles")
            running = ~cores.halted
            phase = table[tiles, cores.pc & (cfg.imem_words - 1)]
            before = cores.counters[:, si] + cores.counters[:, so]
            emu.step()
            if cores.trapped:
                raise RuntimeError("\n".join(emu.result().trap_report(emu.program)))
            waited = (cores.counters[:, si] + cores.counters[:, so]) > before
            np.add.at(busy, (tiles[running], phase[running]), 1)
            np.add.at(wait, (tiles[running & waited], phase[running & waited]), 1)
        return {"cycles": busy, "waits": wait}

    # Reading results ----------------------------------------------------------------------------

    def tokens(self, result):
        geo, cfg = self.geo, self.config
        cp = self.plan.cores[(geo.W - 1, geo.H - 1)]
        sram = result.sram[cfg.tile_index(geo.W - 1, geo.H - 1)]
        n = int(sram[cp.addr("outn")])
        return _signed(sram[cp.addr("out"):cp.addr("out") + n]).tolist()

    def _elements(self, result, x, y, name, layer=None, count=1, offset=0, packed=False):
        """``count`` elements of buffer ``name`` from word ``offset``: int32 words, or int8
        lanes of count / 4 packed words."""
        a = self.plan.cores[(x, y)].addr(name, layer) + offset
        words = result.sram[self.config.tile_index(x, y), a:a + (count // 4 if packed else count)]
        return words.view(np.int8).astype(np.int64) if packed else _signed(words)

    def read(self, result, name, layer=None):
        """An intermediate tensor of the last step, as the reference's trace names it: "x0",
        "h1", "q", "k", "v", "o", "a", "x1", "h2", "u", "g", "f", "x2" (with ``layer``),
        "final.h", "logits"."""
        geo = self.geo
        layout, buf, offset, packed = TENSORS[name]
        if not self.keep_intermediates:
            if name in KEPT_ONLY:
                raise ValueError(f"{name!r} is traced only with keep_intermediates")
            if name == "x2":
                buf = "xcur"
        if layout == "C":
            return np.concatenate([self._elements(result, x, geo.H - 1, buf, layer, geo.cd,
                                              packed=packed) for x in range(geo.W)])
        if layout == "RV":
            return np.concatenate([self._elements(result, geo.W - 1, y, buf, layer, geo.vn(y))
                                   for y in range(geo.H)])
        n = geo.fr if layout == "RF" else geo.rd
        return np.concatenate([self._elements(result, geo.W - 1, y, buf, layer, n, offset * geo.rdw,
                                          packed) for y in range(geo.H)])

    def read_kv(self, result, layer, length):
        """K, V (length x d int8 values) of ``layer`` as the run left the cache."""
        geo, cfg = self.geo, self.config
        K = np.zeros((length, geo.d), dtype=np.int64)
        V = np.zeros((length, geo.d), dtype=np.int64)
        for (x, y), cp in self.plan.cores.items():
            sram = result.sram[cfg.tile_index(x, y)]
            ka, va = cp.addr("k", layer), cp.addr("vt", layer)
            k = sram[ka:ka + geo.ml * geo.rdw].view(np.int8).reshape(geo.ml, geo.rd)
            vt = sram[va:va + geo.rd * geo.vtw].view(np.int8).reshape(geo.vtw, geo.rd, 4)
            v = vt.swapaxes(1, 2).reshape(geo.ml4, geo.rd)
            ps = np.arange(x, length, geo.W)
            rs = slice(y * geo.rd, (y + 1) * geo.rd)
            K[ps, rs] = k[:len(ps)]
            V[ps, rs] = v[:len(ps)]
        return K, V

    # Reports ----------------------------------------------------------------------------------

    def report(self):
        return self.plan.report(self.code_sizes) + (
            f"\n  code: max {max(self.code_sizes.values())} of {self.config.imem_words} "
            f"instruction words; layers {'looped' if self.loop else 'unrolled'}")

    def measure(self, run):
        """Cycles, MAC utilization and the breakdown of a run made with ``phases=True``."""
        cfg, dims = self.config, self.dims
        steps = len(run.tokens)
        macs = dims.macs_per_token * steps
        out = {"cycles": run.cycles, "steps": steps, "cycles_per_step": run.cycles / steps,
               "useful_macs": macs, "mac_utilization": macs / (4 * cfg.tiles * run.cycles),
               "counted_macs": int(run.result.counter("macs").sum())}
        if run.phases is not None:
            busy, wait = run.phases["cycles"], run.phases["waits"]
            total = busy.sum()
            out["phase_share"] = {p: float(busy[:, k].sum() / total)
                                  for k, p in enumerate(PHASES) if busy[:, k].sum()}
            out["phase_wait_share"] = {p: float(wait[:, k].sum() / max(1, busy[:, k].sum()))
                                       for k, p in enumerate(PHASES) if busy[:, k].sum()}
            out["wait_share"] = float(wait.sum() / total)
            # The south-east core takes part in every phase (south row and east column): its
            # timeline is close to the critical path of a step.
            corner = cfg.tile_index(cfg.width - 1, cfg.height - 1)
            out["corner_cycles"] = {p: int(busy[corner, k]) for k, p in enumerate(PHASES)
                                    if busy[corner, k]}
            out["corner_waits"] = {p: int(wait[corner, k]) for k, p in enumerate(PHASES)
                                   if busy[corner, k]}
        return out

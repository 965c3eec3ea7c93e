"""Where everything of a decode step lives on a W x H mesh: the geometry of the tiling, every
core's SRAM map, the colors, and the refusal of configurations that do not fit.

The tiling (H rows j = 0..H-1 north to south, W columns i = 0..W-1 west to east):

* **C-layout** (a d_model vector on the south row): core (i, H-1) holds elements
  i*d/W .. (i+1)*d/W - 1. The residual stream x, the RMS norms and the embeddings live here.
* **R-layout** (a vector on the east column): core (W-1, j) holds row slice j (d/H elements of
  a d_model vector, d_ff/H of a d_ff one, ceil(V/H) logits).
* **GEMV type A** (C -> R: W_qkv, W1, W_out): the input goes up every column from the south row
  (color UP), core (i, j) holds the block W^T[row slice j, column slice i] (int8, four per word),
  computes its n_out partial sums (per input word, the word in a register and one
  ``vdot4.acc`` of it with that word of every output's row, accumulating into the sums at
  the SRAM's full rate: a weight word on one read port, the sum on the other; or, for long
  rows and few outputs, a ``vdot4.sum`` per output), and the partial sums stream east along every row (colors ROW0/ROW1, a ``vadd``
  of the incoming stream and the local sums per core), ending on the east column.
* **GEMV type B** (R -> C: W_o, W2): the input goes west along every row from the east column
  (color WEST), core (i, j) holds W^T[column slice i, row slice j], and the partial sums run
  south along every column (COL0/COL1), ending on the south row.
* **Attention**: row j owns dims slice j of q, k, v (n_heads / H whole heads, or 1 / g of a head
  when g = H / n_heads rows share one head); position p of the KV cache lives on column p mod W
  (local slot p div W), in one region at the same address on every core (the delivery engine
  can write it as one message): per layer K as packed int8 rows (slot x d/H dims) and V as
  (slot word x dim) words of four slots, so that P V is a ``vdot4`` over all dims per four
  keys. Softmax max and sum are row all-reduces (east, then back WEST; the east end takes the
  reciprocal); g > 1 rows of a head add their partial scores down the column (COL0/COL1) and
  share them back north (GROUP_UP).
* **Row all-reduces** of single words (the RMS norms' sums of squares, the softmax max and
  sum) run as one chain east, or, with a ninth color (BYPASS, beside the delivery's) on a
  mesh at least 4 wide, as two: columns 0..W/2-1, whose result jumps from core W/2-1 straight
  to the east core, and W/2..W-2; the east core combines both. Vector reductions stay one
  chain: a bypass stream would share the links east of the split with the second chain.
* **Argmax and the next token**: the east column's logits become keys logit x 2^b + (2^b - 1
  - index), the largest wins down the east column (COL0/COL1), and the south-east core sends
  the token UP the east column and every east core WEST along its row.
"""

from dataclasses import dataclass, field
from math import ceil

from mesh import MeshConfig

__all__ = ["PlacementError", "Geometry", "CorePlan", "Plan", "COLORS", "LAYER_CONSTS",
           "STATE_WORDS", "plan", "smallest_fits"]

# Colors (fixed): every color has one route per tile, used in every phase.
COLORS = {"ROW0": 0, "ROW1": 1, "COL0": 2, "COL1": 3, "UP": 4, "WEST": 5, "GROUP_UP": 6}
# With a color to spare (beside the delivery's, the mesh's last), the row reductions run as
# two chains, the west half's sum jumping straight to the east core on this color.
BYPASS = len(COLORS)

# Per-layer requantize multipliers and norm pre-shifts, in each layer block's constant area.
LAYER_CONSTS = ("q", "k", "v", "score", "o", "attn", "up", "down", "ns1", "ns2", "gelu")
# Step state, at the start of every core's SRAM (host-written before a run).
STATE_WORDS = ("steps", "token", "pos", "phase", "nloc", "own", "nk", "n4", "nw", "end", "outn",
               "ss")

EXP_ENTRIES = 129          # the exp table's entries 0..128 (index q + 128, q in -128..0)


class PlacementError(ValueError):
    """A model that does not fit (or does not tile onto) the mesh; the message says why and by
    how much."""


@dataclass(frozen=True)
class Geometry:
    W: int
    H: int
    d: int
    n_heads: int
    dh: int
    f: int
    L: int
    V: int
    C: int
    gelu_tables: int = 1
    split: int = 0       # > 0: the row reductions' second chain starts at this column

    @classmethod
    def of(cls, dims, config):
        W = config.width
        split = W // 2 if W >= 4 and config.colors > BYPASS + 1 else 0
        return cls(W, config.height, dims.d_model, dims.n_heads, dims.d_head,
                   dims.d_ff, dims.n_layers, dims.vocab, dims.context,
                   dims.gelu_tables or dims.n_layers, split)

    # slices
    @property
    def cd(self): return self.d // self.W
    @property
    def cdw(self): return self.cd // 4
    @property
    def rd(self): return self.d // self.H
    @property
    def rdw(self): return self.rd // 4
    @property
    def fr(self): return self.f // self.H
    @property
    def frw(self): return self.fr // 4
    # attention
    @property
    def g(self): return max(1, self.H // self.n_heads)          # rows per head
    @property
    def hl(self): return max(1, self.n_heads // self.H)         # heads per row
    @property
    def hd(self): return min(self.dh, self.rd)                   # dims of a local head
    @property
    def hw(self): return self.hd // 4
    @property
    def ml(self): return ceil(self.C / self.W)                   # KV slots per core
    @property
    def vtw(self): return ceil(self.ml / 4)
    @property
    def ml4(self): return 4 * self.vtw
    # vocabulary
    @property
    def vr(self): return ceil(self.V / self.H)

    def vn(self, j):
        return max(0, min(self.V, (j + 1) * self.vr) - j * self.vr)

    @property
    def key_bits(self):
        return max(1, (self.V - 1).bit_length())

    def problems(self, config):
        """Why this model does not tile onto this mesh (empty: it does)."""
        W, H, d, f = self.W, self.H, self.d, self.f
        found = []
        if d % (4 * W):
            found.append(f"d_model {d} does not split into {W} columns of whole words "
                         f"(it must be a multiple of 4 x width = {4 * W})")
        if d % (4 * H):
            found.append(f"d_model {d} does not split into {H} rows of whole words "
                         f"(it must be a multiple of 4 x height = {4 * H})")
        if f % (4 * H):
            found.append(f"d_ff {f} does not split into {H} rows of whole words "
                         f"(it must be a multiple of 4 x height = {4 * H})")
        if H <= self.n_heads:
            if self.n_heads % H:
                found.append(f"{self.n_heads} heads do not split evenly over {H} rows")
        elif H % self.n_heads:
            found.append(f"{H} rows do not split evenly over {self.n_heads} heads")
        need = 7 if self.g > 1 else 6
        if config.colors < need:
            found.append(f"the mapping needs {need} colors, the mesh has {config.colors}")
        b = self.key_bits
        if d * 128 * 127 * (1 << b) + (1 << b) >= 1 << 31:
            found.append(f"logits of d_model {d} with a {self.V}-token vocabulary do not fit "
                         f"the argmax key (logit x 2^{b} + index in 32 bits)")
        return found


@dataclass
class Region:
    name: str
    address: int
    words: int
    category: str


@dataclass
class CorePlan:
    """One core's SRAM map: global regions, then ``layers`` blocks of identical layout."""
    x: int
    y: int
    regions: dict = field(default_factory=dict)      # global: name -> Region
    block: dict = field(default_factory=dict)        # per layer: name -> Region (offsets)
    block_base: int = 0
    block_words: int = 0
    kv_words: int = 0            # per layer: K (slots x d/H int8) then V^T (d/H x slots)
    k_words: int = 0
    layers: int = 0
    total: int = 0

    def kv_offset(self, name):
        return 0 if name == "k" else self.k_words

    def addr(self, name, layer=None):
        if name in ("k", "vt"):
            return self.regions["kv"].address + layer * self.kv_words + self.kv_offset(name)
        if layer is None or name in self.regions:
            return self.regions[name].address
        return self.block_base + layer * self.block_words + self.block[name].address

    def size(self, name):
        return (self.block.get(name) or self.regions[name]).words

    def by_category(self):
        out = {}
        for r in self.regions.values():
            out[r.category] = out.get(r.category, 0) + r.words
        for r in self.block.values():
            out[r.category] = out.get(r.category, 0) + r.words * self.layers
        return out


class _Alloc:
    def __init__(self, target, start=0):
        self.target, self.next = target, start

    def __call__(self, name, words, category):
        if words > 0:
            self.target[name] = Region(name, self.next, int(words), category)
            self.next += int(words)


def _core_plan(geo, x, y, keep=True):
    """Core (x, y)'s SRAM map. ``keep``: the working buffers of every layer apart (so every
    layer's intermediate tensors can be read after a run), else shared by the layers."""
    W, H = geo.W, geo.H
    east, south = x == W - 1, y == H - 1
    cp = CorePlan(x, y, layers=geo.L)
    a = _Alloc(cp.regions)
    for name in STATE_WORDS:
        a(name, 1, "state")
    cp.k_words = geo.ml * geo.rdw
    cp.kv_words = cp.k_words + geo.vtw * geo.rd
    a("kv", geo.L * cp.kv_words, "kv")        # at the same address on every core
    a("exp", EXP_ENTRIES, "tables")
    a("wout", geo.vn(y) * geo.cdw, "weights")
    if not south:
        a("xin_f", geo.cdw, "buffers")
    n_max = max(3 * geo.rd, geo.fr, geo.cd, geo.vr)
    a("gp", n_max, "buffers")             # GEMV partial sums on their way
    a("gt", geo.hd, "buffers")            # P V products of one slot word
    if east:
        for t in range(geo.gelu_tables):
            a(f"gelu{t}", 256, "tables")
        a("recip", 128, "tables")
        a("logits", geo.vr, "buffers")
        a("idxc", geo.vr, "tables")
        a("argt", geo.vr, "buffers")
        if south:
            a("rsqrt", 256, "tables")
            a("out", geo.C, "buffers")
    if south:
        a("tok_emb", geo.V * geo.cdw, "embeddings")
        a("pos_emb", geo.C * geo.cdw, "embeddings")
        for name, words in (("xp", geo.cdw), ("ut", geo.cdw), ("xcur", geo.cd), ("hs", geo.cd),
                            ("hpf", geo.cdw)) + ((("x0", geo.cd),) if keep else ()):
            a(name, words, "buffers")
    block = {}
    b = _Alloc(block)
    w = b if keep else a                  # where a layer's working buffers go
    w("qkvb", 2 * geo.rdw + geo.rd, "buffers")
    if not south:
        w("xin", geo.cdw, "buffers")
    if not east:
        w("yin", max(geo.rdw, geo.frw), "buffers")
    for name, words in (("s", geo.hl * geo.ml), ("e", geo.hl * geo.ml4), ("t", geo.ml4),
                        ("pp", geo.vtw), ("maxv", geo.hl), ("sumv", geo.hl), ("op", geo.rd)):
        w(name, words, "buffers")
    if east:
        kept = (("u32", geo.fr),) if keep else ()          # u32: the trace's u only
        for name, words in (("qkvacc", 3 * geo.rd), ("opk", geo.rdw),
                            ("uacc", geo.fr), ("gpk", geo.frw)) + kept:
            w(name, words, "buffers")
    if south:
        for name, words in (("hp1", geo.cdw), ("aacc", geo.cd), ("hp2", geo.cdw),
                            ("facc", geo.cd)):
            w(name, words, "buffers")
        if keep:                          # the residual's values, for the trace only
            for name in ("a32", "x1", "f32", "x2"):
                w(name, geo.cd, "buffers")
    cp.block_base = a.next
    b = _Alloc(cp.block)
    b("wqkv", 3 * geo.rd * geo.cdw, "weights")
    b("wo", geo.cd * geo.rdw, "weights")
    b("w1", geo.fr * geo.cdw, "weights")
    b("w2", geo.cd * geo.frw, "weights")
    b("consts", len(LAYER_CONSTS), "consts")
    for name, region in block.items():
        b(name, region.words, region.category)
    cp.block_words = b.next
    cp.total = cp.block_base + geo.L * cp.block_words
    return cp


_BIG = {"wqkv": "W_qkv block", "wo": "W_o block", "w1": "W1 block", "w2": "W2 block",
        "kv": "KV cache", "tok_emb": "token embeddings",
        "pos_emb": "position embeddings", "wout": "W_out block", "gelu0": "GELU table"}


@dataclass
class Plan:
    geometry: Geometry
    config: MeshConfig
    cores: dict          # (x, y) -> CorePlan

    @property
    def max_words(self):
        return max(cp.total for cp in self.cores.values())

    @property
    def worst(self):
        return max(self.cores.values(), key=lambda cp: (cp.total, -cp.y, -cp.x))

    def report(self, code_sizes=None):
        """A readable placement report: per core its SRAM use by category (and code size)."""
        geo, cfg = self.geometry, self.config
        lines = [f"{cfg.shape} mesh, SRAM {cfg.sram_words} words per core; model d={geo.d} "
                 f"heads={geo.n_heads}x{geo.dh} d_ff={geo.f} layers={geo.L} vocab={geo.V} "
                 f"context={geo.C}",
                 f"  C-layout {geo.W} x {geo.cd}, R-layout {geo.H} x {geo.rd} (d_ff {geo.fr}); "
                 f"{geo.hl} head(s) per row, {geo.g} row(s) per head; KV slots per core "
                 f"{geo.ml} (position p on column p mod {geo.W})"]
        cats = ("weights", "kv", "embeddings", "tables", "consts", "buffers", "state")
        lines.append("  core    " + " ".join(f"{c:>10}" for c in cats) + "      total"
                     + ("   code" if code_sizes else ""))
        for (x, y), cp in sorted(self.cores.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            by = cp.by_category()
            line = f"  ({x},{y})".ljust(10) + " ".join(f"{by.get(c, 0):>10}" for c in cats) \
                + f" {cp.total:>10}"
            if code_sizes:
                line += f" {code_sizes[(x, y)]:>6}"
            lines.append(line)
        lines.append("  weights: the W_qkv, W_o, W1, W2 blocks of every layer and a W_out block on "
                     "every core; tables: exp everywhere, recip and GELU on the east column, "
                     "rsqrt on the south-east corner; embeddings: the token and position "
                     "tables' column slices on the south row")
        c0 = self.cores[(0, 0)]
        lines.append(f"  KV cache at words {c0.addr('kv')}..{c0.addr('kv') + geo.L * c0.kv_words - 1} "
                     f"of every core: per layer K ({geo.ml} slots x {geo.rdw} words) then V "
                     f"({geo.vtw} words of 4 slots x {geo.rd} dims)")
        w = self.worst
        lines.append(f"  max {self.max_words} words on core ({w.x},{w.y}) of {cfg.sram_words} "
                     f"({100 * self.max_words / cfg.sram_words:.1f}%)")
        return "\n".join(lines)


    def core_map(self, x, y):
        """Every region of core (x, y): (first word, words, name, category), by address
        (per-layer regions once per layer, named ``l<k>.<name>``)."""
        cp = self.cores[(x, y)]
        out = [(r.address, r.words, r.name, r.category) for r in cp.regions.values()]
        for layer in range(cp.layers):
            out += [(cp.addr(r.name, layer), r.words, f"l{layer}.{r.name}", r.category)
                    for r in cp.block.values()]
        return sorted(out)


def _geometry_problems(dims, config):
    return Geometry.of(dims, config).problems(config)


def _fits(dims, config, keep=True):
    if _geometry_problems(dims, config):
        return False
    geo = Geometry.of(dims, config)
    return all(_core_plan(geo, x, y, keep).total <= config.sram_words
               for y in range(config.height) for x in range(config.width))


def smallest_fits(dims, config, limit=16, keep_intermediates=True):
    """The shapes W x H (up to limit x limit, same SRAM, colors and imem as ``config``) with the
    fewest tiles on which ``dims`` fits: (tiles, [(W, H), ...]), or (None, [])."""
    found = {}
    for w in range(1, limit + 1):
        for h in range(1, limit + 1):
            try:
                cfg = MeshConfig(w, h, colors=config.colors, buffer_depth=config.buffer_depth,
                                 sram_words=config.sram_words, imem_words=config.imem_words)
            except Exception:
                continue
            if _fits(dims, cfg, keep_intermediates):
                found.setdefault(w * h, []).append((w, h))
    if not found:
        return None, []
    tiles = min(found)
    return tiles, sorted(found[tiles], key=lambda s: (abs(s[0] - s[1]), s))


def _suggestion(dims, config, keep):
    tiles, shapes = smallest_fits(dims, config, keep_intermediates=keep)
    if tiles is None:
        return f"no mesh up to 16x16 with {config.sram_words:,} words per core fits"
    first = shapes[0]
    text = f"a {first[0]}x{first[1]} mesh or larger fits"
    if len(shapes) > 1:
        others = [f"{w}x{h}" for w, h in shapes[1:]]
        verb = "does" if len(others) == 1 else "do"
        listed = others[0] if len(others) == 1 else ", ".join(others[:-1]) + " and " + others[-1]
        text += f" (so {verb} {listed}: {tiles} tiles is the fewest)"
    return text


def plan(dims, config, keep_intermediates=True):
    """The :class:`Plan` of ``dims`` (a :class:`ModelDims`) on ``config``, or a
    :class:`PlacementError` saying what does not fit and by how much. With
    ``keep_intermediates`` False the layers share their working buffers (only the last
    layer's intermediate tensors remain readable), which leaves more SRAM to weights."""
    geo = Geometry.of(dims, config)
    problems = geo.problems(config)
    if problems:
        raise PlacementError(f"the model does not tile onto the {config.shape} mesh: "
                             + "; ".join(problems))
    cores = {(x, y): _core_plan(geo, x, y, keep_intermediates)
             for y in range(config.height) for x in range(config.width)}
    p = Plan(geo, config, cores)
    w = p.worst
    if w.total > config.sram_words:
        items = [(r.words * (geo.L if name in w.block else 1),
                  (f"{geo.L} x " if name in w.block and geo.L > 1 else "")
                  + f"{_BIG.get(name, name)} {r.words:,}")
                 for name, r in list(w.block.items()) + list(w.regions.items())]
        items.sort(reverse=True)
        big = ", ".join(text for _, text in items[:4])
        raise PlacementError(
            f"core ({w.x}, {w.y}) of the {config.shape} mesh needs {w.total:,} SRAM words "
            f"(largest: {big}); {config.sram_words:,} available: "
            f"{w.total - config.sram_words:,} short; {_suggestion(dims, config, keep_intermediates)}"
            + (f"; with sram_words >= {w.total:,} the {config.shape} mesh fits"
               if w.total <= 12288 else ""))
    return p

"""The first mesh programs, each with the numpy result it must produce.

Every kernel is a function ``(config, seed=0, **sizes) -> Kernel``: a :class:`mesh.MeshProgram`
built with :mod:`mesh.builder`, plus where its outputs land and what they must hold. The same
kernel runs on every backend (emulator, Amaranth, Verilator), and :meth:`Kernel.check`
compares any backend's :class:`mesh.RunResult` with numpy.

Colors are fixed per kernel and named where they are chosen. Chains alternate two colors in a
checkerboard (``mesh.checkerboard_color``), so each tile receives on one and sends on the other.
"""

from dataclasses import dataclass, field

import numpy as np

from mesh import MeshConfig, Port, checkerboard_color
from mesh.builder import CoreBuilder, MeshBuilder

__all__ = ["Kernel", "Output", "KERNELS", "pack_int8", "vector_add", "dot", "row_broadcast",
           "column_reduce", "allreduce", "gemv"]


@dataclass(frozen=True)
class Output:
    """``expected`` words at ``address`` in the SRAM of tile (x, y)."""
    name: str
    x: int
    y: int
    address: int
    expected: np.ndarray


@dataclass
class Kernel:
    """A program and the results it must leave in SRAM.

    ``macs`` is the number of useful multiply-accumulates of the workload (for utilization: the
    mesh's peak is 4 per core per cycle, one ``vdot4`` element)."""
    name: str
    program: object
    outputs: list
    macs: int = 0
    description: str = ""
    sizes: dict = field(default_factory=dict)

    def read(self, result):
        """Each output's words as the run left them: {name: uint32 array} (outputs with the
        same name, on several tiles, are concatenated in the order listed)."""
        cfg = self.program.config
        found = {}
        for out in self.outputs:
            words = result.sram[cfg.tile_index(out.x, out.y),
                                out.address:out.address + len(out.expected)]
            found.setdefault(out.name, []).append(words)
        return {name: np.concatenate(parts) for name, parts in found.items()}

    def check(self, result):
        """A readable line per output that differs from numpy (empty: all correct)."""
        problems = []
        cfg = self.program.config
        for out in self.outputs:
            words = result.sram[cfg.tile_index(out.x, out.y),
                                out.address:out.address + len(out.expected)]
            wrong = np.flatnonzero(words != out.expected)
            if wrong.size:
                i = int(wrong[0])
                problems.append(
                    f"{self.name}: {out.name} at tile ({out.x},{out.y}) address "
                    f"{out.address + i}: {int(words[i])} != expected {int(out.expected[i])} "
                    f"({wrong.size} of {len(out.expected)} words differ)")
        return problems

    def utilization(self, cycles):
        """Useful MACs over the mesh's peak (4 per core per cycle) for a run of ``cycles``."""
        return self.macs / (4 * self.program.config.tiles * cycles)


def pack_int8(values):
    """int8 values (last axis a multiple of 4) packed 4 per uint32 word, lane k in bits
    [8k+7:8k], as ``vdot4`` reads them."""
    values = np.asarray(values)
    if values.size and (values.min() < -128 or values.max() > 127):
        raise ValueError("pack_int8: values must be int8 (-128..127)")
    if values.shape[-1] % 4:
        raise ValueError(f"pack_int8: the last axis ({values.shape[-1]}) must be a multiple "
                         f"of 4")
    lanes = np.ascontiguousarray(values, dtype=np.int8)
    return lanes.view(np.uint32).reshape(*values.shape[:-1], -1)


def _words(values):
    return np.asarray(values, dtype=np.int64).astype(np.uint32)


def _int32(rng, shape, bound=1 << 20):
    return rng.integers(-bound, bound, size=shape, dtype=np.int64)


# Descriptor use, the same in every kernel: d0, d1 sources; d2 destination; d3.. as noted.

def vector_add(config, seed=0, n=16):
    """Every core adds two int32 vectors of ``n`` elements: c = a + b."""
    rng = np.random.default_rng(seed)
    core = CoreBuilder("vector_add")
    a, b, c = core.alloc("a", n), core.alloc("b", n), core.alloc("c", n)
    core.mem_vector(0, a, n)
    core.mem_vector(1, b, n)
    core.mem_vector(2, c, n)
    core.vadd(2, 0, 1)
    core.halt()
    mb = MeshBuilder(config, "vector_add")
    mb.place(core, mb.all_tiles())
    outputs = []
    for x, y in mb.all_tiles():
        va, vb = _int32(rng, n, 1 << 31), _int32(rng, n, 1 << 31)
        mb.data(x, y, a, _words(va))
        mb.data(x, y, b, _words(vb))
        outputs.append(Output("c", x, y, c, _words(va + vb)))
    return Kernel("vector_add", mb.build(), outputs, description=vector_add.__doc__,
                  sizes={"n": n})


def dot(config, seed=0, n=256):
    """Core (0,0) computes the dot product of two int8 vectors of ``n`` elements (packed four
    per word) with one ``vdot4.sum``; the int32 result lands in ``out``."""
    if n % 4:
        raise ValueError(f"dot: n must be a multiple of 4, not {n}")
    rng = np.random.default_rng(seed)
    va = rng.integers(-128, 128, n, dtype=np.int64)
    vb = rng.integers(-128, 128, n, dtype=np.int64)
    core = CoreBuilder("dot")
    a = core.alloc("a", pack_int8(va))
    b = core.alloc("b", pack_int8(vb))
    out = core.alloc("out", 1)
    core.mem_vector(0, a, n // 4)
    core.mem_vector(1, b, n // 4)
    core.vdot4(1, 0, 1, reduce="sum")
    core.st(1, out, 0)
    core.halt()
    mb = MeshBuilder(config, "dot")
    mb.place(core, [(0, 0)])
    return Kernel("dot", mb.build(), [Output("out", 0, 0, out, _words([va @ vb]))], macs=n,
                  description=dot.__doc__, sizes={"n": n})


BROADCAST_COLOR = 0


def row_broadcast(config, seed=0, n=16):
    """Core (0, y) of every row multicasts its vector of ``n`` words to every other core of
    the row (one color, one multicast route per row); each stores it at ``v``."""
    rng = np.random.default_rng(seed)
    mb = MeshBuilder(config, "broadcast")
    source, sink = CoreBuilder("broadcast.source"), CoreBuilder("broadcast.sink")
    v = source.alloc("v", n)
    sink.alloc("v", n)
    source.mem_vector(0, v, n)
    if config.width > 1:
        source.fabric_out(2, BROADCAST_COLOR, n)
        source.vmov(2, 0)
    source.halt()
    sink.fabric_in(0, BROADCAST_COLOR, n)
    sink.mem_vector(2, v, n)
    sink.vmov(2, 0)
    sink.halt()
    outputs = []
    for y in range(config.height):
        mb.routes.row_multicast(BROADCAST_COLOR, y, 0)
        mb.place(source, [(0, y)])
        mb.place(sink, [(x, y) for x in range(1, config.width)])
        row = _words(_int32(rng, n, 1 << 31))
        mb.data(0, y, v, row)
        outputs += [Output("v", x, y, v, row) for x in range(config.width)]
    return Kernel("broadcast", mb.build(), outputs, description=row_broadcast.__doc__,
                  sizes={"n": n})


def _chain_step(core, local, n, receive, send, result):
    """One tile of a chain reduction over ``n`` int32 words at ``local``: add the stream arriving
    on color ``receive`` (None: first tile) and send the sum on color ``send``, or (send None:
    last tile) store it at ``result``."""
    core.mem_vector(0, local, n)
    if receive is not None:
        core.fabric_in(1, receive, n)
    if send is not None:
        core.fabric_out(2, send, n)
    else:
        core.mem_vector(2, result, n)
    if receive is None:
        core.vmov(2, 0)
    else:
        core.vadd(2, 1, 0)


REDUCE_COLORS = (0, 1)


def _column_step(core, x, y, height, local, n, result, colors):
    """The step of tile (x, y) in a reduction down column x toward the south."""
    receive = checkerboard_color(x, y - 1, *colors) if y > 0 else None
    send = checkerboard_color(x, y, *colors) if y < height - 1 else None
    _chain_step(core, local, n, receive, send, result)


def column_reduce(config, seed=0, n=16):
    """Every core holds an int32 vector of ``n`` words; each column sums its vectors down a
    chain toward the south, and the bottom core stores the column's sum at ``sum``."""
    rng = np.random.default_rng(seed)
    mb = MeshBuilder(config, "column_reduce")
    outputs = []
    for x in range(config.width):
        if config.height > 1:
            mb.routes.column_reduce_chain(x, REDUCE_COLORS, toward=Port.S)
        total = np.zeros(n, dtype=np.int64)
        for y in range(config.height):
            core = mb.core(x, y, f"column_reduce@({x},{y})")
            v, out = core.alloc("v", n), core.alloc("sum", n)
            _column_step(core, x, y, config.height, v, n, out, REDUCE_COLORS)
            core.halt()
            values = _int32(rng, n)
            total += values
            mb.data(x, y, v, _words(values))
        outputs.append(Output("sum", x, config.height - 1, out, _words(total)))
    return Kernel("column_reduce", mb.build(), outputs, description=column_reduce.__doc__,
                  sizes={"n": n})


ALLREDUCE_COLORS = {"row": (0, 1), "column": (2, 3), "up": 4, "west": 5}


def allreduce(config, seed=0, n=16):
    """Every core holds an int32 vector of ``n`` words and ends with the sum over the whole
    mesh at ``sum``: rows reduce toward the east column, that column reduces toward the
    south-east corner, which multicasts the total up its column, and each east-column core
    multicasts it west along its row."""
    rng = np.random.default_rng(seed)
    w, h = config.width, config.height
    c = ALLREDUCE_COLORS
    mb = MeshBuilder(config, "allreduce")
    for y in range(h):
        if w > 1:
            mb.routes.row_reduce_chain(y, c["row"], toward=Port.E)
            mb.routes.row_multicast(c["west"], y, w - 1)
    if h > 1:
        mb.routes.column_reduce_chain(w - 1, c["column"], toward=Port.S)
        mb.routes.column_multicast(c["up"], w - 1, h - 1)
    total = np.zeros(n, dtype=np.int64)
    for x, y in mb.all_tiles():
        core = mb.core(x, y, f"allreduce@({x},{y})")
        v, row_sum, out = core.alloc("v", n), core.alloc("row_sum", n), core.alloc("sum", n)
        east = x == w - 1
        # 1. Row reduction toward the east column, which keeps the row's sum.
        receive = checkerboard_color(x - 1, y, *c["row"]) if x > 0 else None
        send = checkerboard_color(x, y, *c["row"]) if not east else None
        _chain_step(core, v, n, receive, send, row_sum)
        if east:
            # 2. Column reduction toward the corner, which keeps the total.
            _column_step(core, x, y, h, row_sum, n, out, c["column"])
            # 3. The total comes back up the column (the corner has it already)...
            if y < h - 1:
                core.fabric_in(0, c["up"], n)
                core.mem_vector(2, out, n)
                core.vmov(2, 0)
            elif h > 1:
                core.mem_vector(0, out, n)
                core.fabric_out(2, c["up"], n)
                core.vmov(2, 0)
            # 4. ... and goes west along every row.
            if w > 1:
                core.mem_vector(0, out, n)
                core.fabric_out(2, c["west"], n)
                core.vmov(2, 0)
        else:
            core.fabric_in(0, c["west"], n)
            core.mem_vector(2, out, n)
            core.vmov(2, 0)
        core.halt()
        values = _int32(rng, n)
        total += values
        mb.data(x, y, v, _words(values))
    outputs = [Output("sum", x, y, out, _words(total)) for x, y in mb.all_tiles()]
    return Kernel("allreduce", mb.build(), outputs, description=allreduce.__doc__,
                  sizes={"n": n})


GEMV_COLORS = {"x": 2, "reduce": (0, 1)}


def gemv(config, seed=0, rows_per_core=32, cols_per_core=256):
    """y = W x for int8 W (H * rows_per_core by W * cols_per_core) and x, int32 y.

    Core (i, j) holds the block of W at rows j * rows_per_core.., columns i * cols_per_core..,
    row-major, four int8 per word. Row-0 cores hold the slice of x for their column and
    multicast it down the column; every core computes its block's partial sums with one
    ``vdot4.sum`` per row; partial sums are reduced along each row toward the east, and core
    (W - 1, j) stores rows j * rows_per_core.. of y at ``y``."""
    if cols_per_core % 4:
        raise ValueError(f"gemv: cols_per_core must be a multiple of 4, not {cols_per_core}")
    rng = np.random.default_rng(seed)
    w, h = config.width, config.height
    rows, words = rows_per_core, cols_per_core // 4
    matrix = rng.integers(-128, 128, (h * rows, w * cols_per_core), dtype=np.int64)
    vector = rng.integers(-128, 128, w * cols_per_core, dtype=np.int64)
    result = matrix @ vector

    block_base, x_base = 0, rows * words
    partial, y_base = x_base + words, x_base + words + rows
    if y_base + rows > config.sram_words:
        raise ValueError(f"gemv: a {rows} x {cols_per_core} block needs {y_base + rows} SRAM "
                         f"words, more than the {config.sram_words} of a core")

    mb = MeshBuilder(config, "gemv")
    for i in range(w):
        if h > 1:
            mb.routes.column_multicast(GEMV_COLORS["x"], i, 0)
    for j in range(h):
        if w > 1:
            mb.routes.row_reduce_chain(j, GEMV_COLORS["reduce"], toward=Port.E)

    programs = {}
    outputs = []
    for i, j in mb.all_tiles():
        receive = checkerboard_color(i - 1, j, *GEMV_COLORS["reduce"]) if i > 0 else None
        send = checkerboard_color(i, j, *GEMV_COLORS["reduce"]) if i < w - 1 else None
        role = (j == 0, receive, send)
        if role not in programs:
            programs[role] = _gemv_core(f"gemv{role}", h, rows, words, block_base, x_base,
                                        partial, y_base, j == 0, receive, send)
        mb.place(programs[role], [(i, j)])
        block = matrix[j * rows:(j + 1) * rows, i * cols_per_core:(i + 1) * cols_per_core]
        mb.data(i, j, block_base, pack_int8(block).reshape(-1))
        if j == 0:
            mb.data(i, j, x_base, pack_int8(vector[i * cols_per_core:(i + 1) * cols_per_core]))
    for j in range(h):
        outputs.append(Output("y", w - 1, j, y_base if w > 1 else partial,
                              _words(result[j * rows:(j + 1) * rows])))
    return Kernel("gemv", mb.build(), outputs, macs=matrix.size, description=gemv.__doc__,
                  sizes={"rows_per_core": rows, "cols_per_core": cols_per_core})


def _gemv_core(name, height, rows, words, block_base, x_base, partial, y_base, top,
               receive, send):
    core = CoreBuilder(name)
    # x: the top core sends its slice down the column; the others receive it.
    core.mem_vector(1, x_base, words)
    if height > 1:
        if top:
            core.fabric_out(2, GEMV_COLORS["x"], words)
            core.vmov(2, 1)
        else:
            core.fabric_in(0, GEMV_COLORS["x"], words)
            core.vmov(1, 0)
    # Partial sums: one vdot4.sum per row of the block (r2: where the next one goes).
    core.mem_vector(0, block_base, words)
    core.li(2, partial)
    core.li(3, rows)
    core.label("row")
    core.vdot4(1, 0, 1, reduce="sum")
    core.st(1, 0, 2)
    core.addi(2, 2, 1)
    core.dadv(0, 0, words)
    core.dbnz(3, "row")
    # Reduce the partial sums along the row toward the east.
    if receive is not None or send is not None:
        _chain_step(core, partial, rows, receive, send, y_base)
    core.halt()
    return core


KERNELS = {
    "vector_add": vector_add,
    "dot": dot,
    "broadcast": row_broadcast,
    "column_reduce": column_reduce,
    "allreduce": allreduce,
    "gemv": gemv,
}


def kernel(name, config, **kwargs):
    """The kernel called ``name`` (one of :data:`KERNELS`) for ``config``."""
    try:
        build = KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown program {name!r}: choose one of "
                         f"{', '.join(sorted(KERNELS))}") from None
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
    return build(config, **kwargs)

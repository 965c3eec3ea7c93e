"""The prefill engine top (hdl/prefill.py) against the sequencer spec (docs/ARCHITECTURE.md
section 11): construction, then Amaranth-simulator runs of small command lists
whose issue cycles are computed here from the draft's issue rules and whose memories are checked
against numpy, every error cause with its command index, the same command lists (and random
programs) against :class:`emulator.prefill.PrefillEmulator` (issue cycles, total cycles, final
memories, error index and cycle), and a Verilator lint.

Cycle 0 is the first cycle with ``run`` high. A run loads the command list through the ``load``
port (``run`` low), sets the SBUF/PSUM/DRAM contents directly in the simulator, raises ``run``
and records, per cycle, the command issued (``issue_valid``, ``issue_index``). One simulator
serves each configuration: every run resets it.
"""

from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.lib.wiring import In, Out

import hdl
from emulator.prefill import PrefillEmulator, PrefillError
from hdl.prefill import PrefillEngine
from hdl.vector_engine import VectorOp
from mesh import isa
from mesh.prefill import Command, DmaKind, EngineError, Op, PrefillConfig
from programs.integer_ops import exp_table
from programs.prefill_ops import attention_head, rmsnorm

from sim_bench import RTL_TEST_MARKS, Bench, kept
from verilator_lint import AMARANTH_WARNINGS, lint_warnings

pytestmark = RTL_TEST_MARKS


def small(**kwargs):
    base = dict(n=4, sbuf_rows=64, psum_rows=16, dram_bytes=1024, dram_bandwidth=4,
                dram_latency=3, dma_queue=4, commands=16)
    base.update(kwargs)
    return PrefillConfig(**base)


CONFIG = small()


def W(buffer, a, k):
    return Command(Op.WEIGHTS, buffer=buffer, a=a, count=k)


def MM(buffer, a, b, m, acc=0):
    return Command(Op.MATMUL, buffer=buffer, a=a, b=b, count=m, acc=acc)


def DMA(kind, tag, addr, stride, a, count):
    return Command(Op.DMA, sub=int(kind), tag=tag, addr=addr, stride=stride, a=a, count=count)


def WAIT(tag):
    return Command(Op.WAIT, tag=tag)


def VEC(op, a=0, b=0, c=0, count=1, multiplier=0, shift=0, acc=0):
    return Command(Op.VECTOR, sub=int(op.value), a=a, b=b, c=c, count=count, addr=multiplier,
                   stride=shift, acc=acc)


HALT = Command(Op.HALT)


# Construction --------------------------------------------------------------------------------

def test_members():
    engine = PrefillEngine(CONFIG)
    members = engine.signature.members
    assert {name: m.flow for name, m in members.items()} == {
        "run": In, "load": In, "done": Out, "error": Out, "error_cause": Out,
        "error_index": Out, "cycles": Out, "issue_valid": Out, "issue_index": Out,
        "dram_error": Out}
    assert {name: (m.flow, m.shape) for name, m in members["load"].signature.members.items()} \
        == {"en": (In, 1), "addr": (In, range(16)), "data": (In, 128)}
    assert members["error_index"].shape == range(17)
    assert members["error_cause"].shape == 4 and members["cycles"].shape == 32
    assert engine.command_memory.depth == 16 and engine.sbuf.depth == 64
    assert engine.psum.depth == 16 and engine.array.n == 4 and engine.vector.n == 4
    assert engine.config is CONFIG


def test_initial_contents():
    engine = PrefillEngine(CONFIG, dram=bytes(range(40)), sbuf=[[1, -1, 2, -2]],
                           psum=[[-1, 0, 1, 2**31 - 1]])
    assert engine.sbuf.init[0] == 0xFE02FF01
    assert engine.psum.init[0] == (0xFFFFFFFF | 1 << 64 | (2**31 - 1) << 96)
    bank, index, offset = engine.dram_location(17)
    assert (bank, index, offset) == (1, 0, 8)
    assert engine.dram_model.banks[1].init[0] >> 8 & 0xFF == 17


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="config must be a PrefillConfig, not 4"):
        PrefillEngine(4)
    with pytest.raises(ValueError, match="sbuf must hold at most 64 rows, not 65"):
        PrefillEngine(CONFIG, sbuf=[[0] * 4] * 65)
    with pytest.raises(ValueError, match="psum rows must hold 4 values, not 3"):
        PrefillEngine(CONFIG, psum=[[0] * 3])
    with pytest.raises(ValueError, match="contents must hold at most 1024 bytes"):
        PrefillEngine(CONFIG, dram=bytes(1025))


def test_error_causes_are_distinct():
    assert len({int(e) for e in EngineError}) == len(EngineError) and max(EngineError) < 16


# Simulation ----------------------------------------------------------------------------------

def bench_for(config):
    return kept(config, lambda: Bench(PrefillEngine(config)))


def pack(values, bits):
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (bits * k) for k, v in enumerate(values))


def unpack(raw, bits, count):
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    return [((raw >> (bits * k) & mask) ^ sign) - sign for k in range(count)]


@dataclass
class Run:
    issues: list                 # (command index, issue cycle), in order
    stop: int                    # the first cycle with done or error high
    cycles: int                  # the cycle counter at the end
    done: bool
    error: bool
    error_cause: int
    error_index: int
    sbuf: np.ndarray = field(repr=False)
    psum: np.ndarray = field(repr=False)
    dram: bytes = field(repr=False)

    @property
    def issue_cycles(self):
        return [cycle for _, cycle in self.issues]


def run_engine(commands, config=CONFIG, sbuf=None, psum=None, dram=None, limit=2000, drain=None):
    """Run ``commands`` (Command or raw int words) on a fresh engine with the given initial
    memories (numpy arrays / bytes, zero if None) until ``done`` or ``error``, then ``drain``
    more cycles (default 3n + 4, so that work in flight after an error lands)."""
    bench = bench_for(config)
    dut = bench.dut
    n = config.n
    words = [c if isinstance(c, int) else c.encode() for c in commands]
    assert len(words) <= config.commands
    drain = 3 * n + 4 if drain is None else drain

    async def job(ctx):
        if sbuf is not None:
            for i, row in enumerate(sbuf):
                ctx.set(dut.sbuf.data[i], pack(row, 8))
        if psum is not None:
            for i, row in enumerate(psum):
                ctx.set(dut.psum.data[i], pack(row, 32))
        if dram is not None:
            W = dut.dram_model.word_bytes
            for word in range((len(dram) + W - 1) // W):
                value = int.from_bytes(dram[word * W:(word + 1) * W], "little")
                ctx.set(dut.dram_model.banks[word % 2].data[word // 2], value)
        for i, word in enumerate(words):
            ctx.set(dut.load.en, 1)
            ctx.set(dut.load.addr, i)
            ctx.set(dut.load.data, word)
            await ctx.tick()
        ctx.set(dut.load.en, 0)
        ctx.set(dut.run, 1)
        issues = []
        for cycle in range(limit):
            if ctx.get(dut.done) or ctx.get(dut.error):
                stop = cycle
                break
            assert ctx.get(dut.cycles) == cycle
            if ctx.get(dut.issue_valid):
                issues.append((ctx.get(dut.issue_index), cycle))
            await ctx.tick()
        else:
            raise AssertionError(f"not stopped after {limit} cycles; issued {issues}")
        for _ in range(drain):
            await ctx.tick()
        assert not ctx.get(dut.dram_error)
        W = dut.dram_model.word_bytes
        dram_now = b"".join(
            ctx.get(dut.dram_model.banks[w % 2].data[w // 2]).to_bytes(W, "little")
            for w in range(config.dram_bytes // W))
        return Run(
            issues=issues, stop=stop, cycles=ctx.get(dut.cycles), done=bool(ctx.get(dut.done)),
            error=bool(ctx.get(dut.error)), error_cause=ctx.get(dut.error_cause),
            error_index=ctx.get(dut.error_index),
            sbuf=np.array([unpack(ctx.get(dut.sbuf.data[i]), 8, n)
                           for i in range(config.sbuf_rows)], dtype=np.int64),
            psum=np.array([unpack(ctx.get(dut.psum.data[i]), 32, n)
                           for i in range(config.psum_rows)], dtype=np.int64),
            dram=dram_now)

    return bench.execute(job)


def random_int8(rng, shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int64)


def sbuf_with(config, blocks):
    """An SBUF image (sbuf_rows x n) holding each (row, array) of ``blocks``."""
    image = np.zeros((config.sbuf_rows, config.n), dtype=np.int64)
    for row, block in blocks:
        image[row:row + len(block)] = block
    return image


# Rule-derived timings (docs/ARCHITECTURE.md section 11, "The sequencer") ------------------

def halt_after_matmul(c_matmul, m, n):
    """HALT (looked at right after) issues once the last PSUM write (cycle c + m + 2n) is past."""
    return c_matmul + m + 2 * n + 1


def tiled_schedule(tiles, m, n):
    """Issue cycles of W_0, M_0, W_1, M_1, ... on alternating buffers (no DMA, no vector), then
    HALT: W_0 = 0, M_0 = n, W_(k+1) = max(M_k + 1, M_(k-1) + m + 2n - 3),
    M_(k+1) = max(M_k + m, W_(k+1) + n)."""
    w, mm = [0], [n]
    for k in range(tiles - 1):
        free = mm[k - 1] + m + 2 * n - 3 if k >= 1 else 0
        w.append(max(mm[k] + 1, free))
        mm.append(max(mm[k] + m, w[-1] + n))
    cycles = [c for pair in zip(w, mm) for c in pair]
    return cycles + [halt_after_matmul(mm[-1], m, n)]


# Matmul --------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, m, acc", [(4, 5, 0), (3, 2, 1), (1, 9, 0), (4, 1, 1)])
def test_single_weights_and_matmul(k, m, acc):
    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(k * 100 + m)
    weights = random_int8(rng, (k, n))
    acts = random_int8(rng, (m, n))
    psum = rng.integers(-2**20, 2**20, size=(config.psum_rows, n))
    run = run_engine([W(1, 0, k), MM(1, 8, 3, m, acc), HALT], sbuf=sbuf_with(
        config, [(0, weights), (8, acts)]), psum=psum)
    halt = halt_after_matmul(n, m, n)
    assert run.issues == [(0, 0), (1, n), (2, halt)]
    assert run.done and not run.error and run.stop == halt + 1 and run.cycles == halt + 1
    full = np.zeros((n, n), dtype=np.int64)
    full[:k] = weights
    expected = psum.copy()
    expected[3:3 + m] = acts @ full + (psum[3:3 + m] if acc else 0)
    assert np.array_equal(run.psum, expected)


@pytest.mark.parametrize("tiles, m", [(2, 3), (2, 10), (3, 2), (3, 9), (4, 5)])
def test_tiled_accumulation_streams_back_to_back(tiles, m):
    """K = tiles x n: tile t's weights (B rows t n ..) on buffer t % 2, its activations
    A[:, t n ..] at SBUF row 16 + t m, all accumulating into PSUM rows 0 .. m - 1."""
    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(tiles * 10 + m)
    A = random_int8(rng, (m, tiles * n))
    B = random_int8(rng, (tiles * n, n))
    blocks = [(0, B)] + [(16 + t * m, A[:, t * n:(t + 1) * n]) for t in range(tiles)]
    commands = []
    for t in range(tiles):
        commands += [W(t % 2, t * n, n), MM(t % 2, 16 + t * m, 0, m, acc=int(t > 0))]
    run = run_engine(commands + [HALT], sbuf=sbuf_with(config, blocks))
    expected = tiled_schedule(tiles, m, n)
    assert run.issue_cycles == expected
    assert [i for i, _ in run.issues] == list(range(2 * tiles + 1))
    assert run.cycles == expected[-1] + 1
    assert np.array_equal(run.psum[:m], A @ B)
    # Rows stream with no gap when m >= 3n - 3.
    matmuls = expected[1:-1:2]
    if m >= 3 * n - 3:
        assert all(b - a == m for a, b in zip(matmuls, matmuls[1:]))


# DMA -----------------------------------------------------------------------------------------

def test_dma_round_trip():
    config, n = CONFIG, CONFIG.n
    m = 6
    rng = np.random.default_rng(7)
    A = random_int8(rng, (m, n))
    B = random_int8(rng, (n, n))
    dram = bytearray(rng.integers(0, 256, size=config.dram_bytes, dtype=np.uint8).tobytes())
    dram[0:m * n] = A.astype(np.int8).tobytes()
    # B's rows at a stride of 2n bytes from byte 100.
    for i in range(n):
        dram[100 + 2 * n * i:100 + 2 * n * i + n] = B[i].astype(np.int8).tobytes()
    commands = [
        DMA(DmaKind.LOAD, 0, 0, n, 8, m),
        DMA(DmaKind.LOAD, 5, 100, 2 * n, 0, n),
        WAIT(0), WAIT(5),
        W(0, 0, n),
        MM(0, 8, 2, m),
        DMA(DmaKind.STORE_PSUM, 2, 512, 4 * n, 2, m),
        DMA(DmaKind.STORE_SBUF, 3, 800, n, 0, n),
        WAIT(2), WAIT(3),
        HALT,
    ]
    run = run_engine(commands, dram=bytes(dram))
    assert run.done and [i for i, _ in run.issues] == list(range(len(commands)))
    c = dict(run.issues)
    assert c[0] == 0 and c[1] > c[0] and c[3] >= c[2]
    assert c[4] == c[3] + 1 and c[5] == c[4] + n
    # The PSUM store waits for the array: its last write is in c5 + m + 2n.
    assert c[6] == halt_after_matmul(c[5], m, n)
    assert c[10] == c[9] + 1 and run.cycles == c[10] + 1
    result = bytes(run.dram)
    assert np.array_equal(np.frombuffer(result[512:512 + 16 * m], dtype="<i4").reshape(m, n),
                          A @ B)
    assert np.array_equal(np.frombuffer(result[800:800 + n * n], dtype=np.int8).reshape(n, n),
                          B)
    # Nothing else in DRAM changed.
    rest = bytearray(result)
    rest[512:512 + 16 * m] = dram[512:512 + 16 * m]
    rest[800:800 + n * n] = dram[800:800 + n * n]
    assert bytes(rest) == bytes(dram)
    assert np.array_equal(run.sbuf[8:8 + m], A) and np.array_equal(run.sbuf[0:n], B)


# Vector --------------------------------------------------------------------------------------

def test_requant_after_matmul():
    config, n = CONFIG, CONFIG.n
    m, multiplier, shift = 5, 3000, 12
    rng = np.random.default_rng(3)
    A = random_int8(rng, (m, n))
    B = random_int8(rng, (n, n))
    commands = [W(0, 0, n), MM(0, 8, 4, m), VEC(VectorOp.REQUANT, a=4, c=40, count=m,
                                                multiplier=multiplier, shift=shift), HALT]
    run = run_engine(commands, sbuf=sbuf_with(config, [(0, B), (8, A)]))
    vector = halt_after_matmul(n, m, n)          # VECTOR waits for the array to drain
    halt = vector + m + 2                        # the vector engine's busy ends in c + R + 1
    assert run.issues == [(0, 0), (1, n), (2, vector), (3, halt)]
    assert run.cycles == halt + 1
    C = A @ B
    assert np.array_equal(run.psum[4:4 + m], C)
    expected = isa.requantize((C & 0xFFFFFFFF).astype(np.uint32), np.uint32(multiplier), shift)
    assert np.array_equal(run.sbuf[40:40 + m], np.asarray(expected, dtype=np.uint32).view(np.int32))


def test_matmul_waits_for_the_vector_engine():
    """A MATMUL after a VECTOR waits until the vector engine is neither busy nor taking rows."""
    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(4)
    image = random_int8(rng, (config.sbuf_rows, n))
    commands = [VEC(VectorOp.ADD8, a=0, b=10, c=20, count=3), W(0, 30, n),
                MM(0, 20, 0, 2), HALT]
    run = run_engine(commands, sbuf=image)
    # VECTOR in 0 (R = 3): busy in 1..4, ready from 3: WEIGHTS in 5, MATMUL in 5 + n.
    assert run.issue_cycles == [0, 5, 5 + n, halt_after_matmul(5 + n, 2, n)]
    added = np.clip(image[0:3] + image[10:13], -128, 127)
    assert np.array_equal(run.sbuf[20:23], added)
    assert np.array_equal(run.psum[0:2], added[0:2] @ image[30:30 + n])


# HALT ----------------------------------------------------------------------------------------

def test_halt_alone():
    run = run_engine([HALT])
    assert run.issues == [(0, 0)] and run.stop == 1 and run.cycles == 1 and run.done


def test_halt_waits_for_the_loader():
    n = CONFIG.n
    run = run_engine([W(0, 0, 2), HALT])
    assert run.issues == [(0, 0), (1, n + 1)] and run.cycles == n + 2


def test_nothing_issues_after_halt():
    run = run_engine([HALT, W(0, 0, 2), HALT])
    assert run.issues == [(0, 0)] and run.cycles == 1


# Errors --------------------------------------------------------------------------------------

N, SBUF_ROWS, PSUM_ROWS = CONFIG.n, CONFIG.sbuf_rows, CONFIG.psum_rows

ERROR_CASES = [
    # (commands, cause, index, stop cycle (error first high))
    ([0], EngineError.OP, 0, 1),
    ([HALT.encode() & ~0xF | 7], EngineError.OP, 0, 1),
    ([W(0, 0, 1), Command(Op.HALT).encode() | 0xF], EngineError.OP, 1, 2),
    ([DMA(3, 0, 0, 4, 0, 1)], EngineError.DMA_KIND, 0, 1),
    ([DMA(DmaKind.LOAD, 0, 0, 4, 0, 0)], EngineError.DMA_ROWS, 0, 1),
    ([DMA(DmaKind.LOAD, 0, 0, 4, SBUF_ROWS - 2, 3)], EngineError.DMA_ROWS, 0, 1),
    ([DMA(DmaKind.STORE_PSUM, 0, 0, 16, PSUM_ROWS - 1, 2)], EngineError.DMA_ROWS, 0, 1),
    ([DMA(DmaKind.STORE_SBUF, 0, 1024 - 3 * 10 - 4 + 1, 10, 0, 4)], EngineError.DMA_DRAM, 0, 1),
    ([DMA(DmaKind.STORE_PSUM, 0, 1024 - 16, 16, 0, 2)], EngineError.DMA_DRAM, 0, 1),
    ([W(0, 0, 0)], EngineError.WEIGHTS_COUNT, 0, 1),
    ([W(0, 0, N + 1)], EngineError.WEIGHTS_COUNT, 0, 1),
    ([W(1, SBUF_ROWS - 2, 3)], EngineError.WEIGHTS_ROWS, 0, 1),
    # A bad WEIGHTS stops the engine when it would issue: after the loader is free.
    ([W(0, 0, 2), W(1, 0, 0)], EngineError.WEIGHTS_COUNT, 1, N + 2),
    ([MM(0, 0, 0, 0)], EngineError.MATMUL_COUNT, 0, 1),
    ([MM(0, SBUF_ROWS - 1, 0, 2)], EngineError.MATMUL_SBUF, 0, 1),
    ([MM(0, 0, PSUM_ROWS - 2, 3)], EngineError.MATMUL_PSUM, 0, 1),
    ([W(0, 0, 2), MM(0, 0, PSUM_ROWS, 1)], EngineError.MATMUL_PSUM, 1, N + 1),
    ([VEC(VectorOp.ADD8, count=1, shift=64)], EngineError.VECTOR_SHIFT, 0, 1),
    ([VEC(VectorOp.RECIP, a=PSUM_ROWS, count=1, shift=64)], EngineError.VECTOR_SHIFT, 0, 1),
    ([VEC(VectorOp.REQUANT, a=PSUM_ROWS - 1, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.REQUANT, a=0, c=SBUF_ROWS - 1, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.ADD8, a=0, b=SBUF_ROWS - 1, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.ADD32, a=0, b=0, c=PSUM_ROWS, count=1)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.ROWSUM, a=0, c=PSUM_ROWS, count=3)], EngineError.VECTOR_ROWS, 0, 1),
    # The new ops' ports: each past the end by one row.
    ([VEC(VectorOp.SUB32, a=0, b=PSUM_ROWS - 1, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.SUB32, a=0, b=0, c=PSUM_ROWS - 2, count=3)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.LANEMAX, a=PSUM_ROWS - 1, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.LANEMAX, a=0, b=PSUM_ROWS - 1, count=2, acc=1)], EngineError.VECTOR_ROWS,
     0, 1),
    ([VEC(VectorOp.LANESUM, a=0, b=PSUM_ROWS - 2, count=3, acc=1)], EngineError.VECTOR_ROWS,
     0, 1),
    ([VEC(VectorOp.LANESUM, a=0, c=PSUM_ROWS - 1, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.MULW, a=SBUF_ROWS - 1, b=0, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.MULW, a=0, b=SBUF_ROWS - 2, c=0, count=3)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.MULW, a=0, b=0, c=PSUM_ROWS - 1, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.SCALE, a=0, b=0, c=SBUF_ROWS - 1, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.SCALE, a=0, b=PSUM_ROWS - 1, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.SCALE, a=PSUM_ROWS, b=0, c=0, count=1)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.RECIP, a=PSUM_ROWS - 1, c=0, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.RSQRT, a=0, c=PSUM_ROWS - 1, count=2)], EngineError.VECTOR_ROWS, 0, 1),
    # A bad VECTOR stops the engine when it would issue: once the previous one is taken.
    ([VEC(VectorOp.MULW, count=3), VEC(VectorOp.SCALE, c=SBUF_ROWS, count=1)],
     EngineError.VECTOR_ROWS, 1, 4),
    # LOAD_TABLE reads ceil(256 / n) = 64 rows whatever its count: from row 1, one too many.
    ([VEC(VectorOp.LOAD_TABLE, a=1)], EngineError.VECTOR_ROWS, 0, 1),
    ([VEC(VectorOp.ADD8, a=0, b=0, c=0, count=1)] * 16, EngineError.INDEX, 16, 17),
]


@pytest.mark.parametrize("commands, cause, index, stop", ERROR_CASES)
def test_errors(commands, cause, index, stop):
    run = run_engine(commands)
    assert run.error and not run.done
    assert (EngineError(run.error_cause), run.error_index, run.stop) == (cause, index, stop)
    assert run.cycles == stop
    assert [i for i, _ in run.issues] == list(range(index))


def test_valid_edges_are_not_errors():
    """The largest valid fields of each command run (no error)."""
    n = N
    commands = [
        DMA(DmaKind.STORE_PSUM, 1, 1024 - 16 - 15 * 0, 0, PSUM_ROWS - 1, 1),
        DMA(DmaKind.STORE_SBUF, 2, 1024 - 4 - 3 * 10, 10, SBUF_ROWS - 4, 4),
        WAIT(1), WAIT(2),
        W(0, SBUF_ROWS - n, n),
        MM(0, SBUF_ROWS - 1, PSUM_ROWS - 1, 1),
        VEC(VectorOp.LOAD_TABLE, a=0),
        VEC(VectorOp.ROWMAX, a=0, c=PSUM_ROWS - 1, count=PSUM_ROWS),
        # Without acc, LANEMAX and LANESUM do not read b (past the end here); code 9 is SUB32.
        VEC(VectorOp.LANEMAX, a=0, b=PSUM_ROWS, c=PSUM_ROWS - 2, count=2),
        VEC(VectorOp.LANESUM, a=PSUM_ROWS - 1, b=0xFFFF, c=0, count=1),
        Command(Op.VECTOR, sub=9, a=PSUM_ROWS - 1, b=0, c=PSUM_ROWS - 1, count=1),
        VEC(VectorOp.MULW, a=SBUF_ROWS - 2, b=SBUF_ROWS - 2, c=PSUM_ROWS - 2, count=2),
        VEC(VectorOp.SCALE, a=PSUM_ROWS - 1, b=PSUM_ROWS - 1, c=SBUF_ROWS - 1, count=1),
        VEC(VectorOp.RSQRT, a=PSUM_ROWS - 3, c=PSUM_ROWS - 3, count=3, shift=63),
        HALT,
    ]
    run = run_engine(commands, limit=4000)
    assert run.done and not run.error and len(run.issues) == len(commands)


# Against the emulator --------------------------------------------------------------------------

def compare_with_emulator(commands, config=CONFIG, sbuf=None, psum=None, dram=None):
    """Run ``commands`` on the RTL and on :class:`emulator.prefill.PrefillEmulator` from the same
    memories; compare the issue cycle of every command, the total cycles and the final SBUF,
    PSUM and DRAM, or, for a run that stops with an error, the command index and the cycle it
    stopped in (the emulator's ``PrefillError.cycle`` is the cycle the command would have
    issued; the RTL's ``error`` rises in the next one) and the cause (``PrefillError.cause``
    equals the RTL's ``error_cause``). Returns the RTL's :class:`Run`."""
    rtl = run_engine(commands, config, sbuf=sbuf, psum=psum, dram=dram)
    emulator = PrefillEmulator(
        config, dram=dram,
        sbuf=None if sbuf is None else np.asarray(sbuf).astype(np.int8).view(np.uint8),
        psum=None if psum is None else np.asarray(psum).astype(np.int32))
    try:
        result = emulator.run(list(commands), max_cycles=10000)
    except PrefillError as error:
        assert rtl.error, f"the emulator stopped with {error}, the RTL did not"
        assert (error.index, error.cycle + 1) == (rtl.error_index, rtl.stop), str(error)
        assert error.cause == EngineError(rtl.error_cause), str(error)
        assert emulator.issue == rtl.issue_cycles
        return rtl
    assert rtl.done and not rtl.error
    assert list(result.issue) == rtl.issue_cycles
    assert result.cycles == rtl.cycles
    assert np.array_equal(result.sbuf.astype(np.int64), rtl.sbuf)
    assert np.array_equal(result.psum.astype(np.int64), rtl.psum)
    assert bytes(result.dram) == rtl.dram
    return rtl


def tiled_commands(tiles, m, n, base=16):
    commands = []
    for t in range(tiles):
        commands += [W(t % 2, t * n, n), MM(t % 2, base + t * m, 0, m, acc=int(t > 0))]
    return commands + [HALT]


@pytest.mark.parametrize("tiles, m", [(1, 1), (2, 3), (3, 2), (3, 9), (4, 12)])
def test_tiled_against_the_emulator(tiles, m):
    rng = np.random.default_rng(tiles + 7 * m)
    image = random_int8(rng, (CONFIG.sbuf_rows, CONFIG.n))
    compare_with_emulator(tiled_commands(tiles, m, CONFIG.n), sbuf=image)


def test_dma_and_vector_against_the_emulator():
    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(21)
    dram = rng.integers(0, 256, size=config.dram_bytes, dtype=np.uint8).tobytes()
    psum = rng.integers(-2**20, 2**20, size=(config.psum_rows, n))
    commands = [
        DMA(DmaKind.LOAD, 0, 3, 9, 8, 7),
        DMA(DmaKind.LOAD, 1, 200, n, 0, n),
        WAIT(1), W(1, 0, 3), WAIT(0),
        MM(1, 8, 5, 7, acc=1),
        VEC(VectorOp.REQUANT, a=5, c=30, count=7, multiplier=-7000, shift=15),
        VEC(VectorOp.ADD32, a=0, b=5, c=12, count=4),
        DMA(DmaKind.STORE_SBUF, 2, 600, 5, 30, 7),
        DMA(DmaKind.STORE_PSUM, 3, 700, 16, 5, 7),
        VEC(VectorOp.ROWSUM, a=0, c=15, count=6),
        WAIT(2), WAIT(3),
        HALT,
    ]
    run = compare_with_emulator(commands, psum=psum, dram=dram)
    assert run.done and len(run.issues) == len(commands)


NEW_VECTOR_OPS = [(VectorOp.SUB32, 0), (VectorOp.LANEMAX, 0), (VectorOp.LANEMAX, 1),
                  (VectorOp.LANESUM, 0), (VectorOp.LANESUM, 1), (VectorOp.MULW, 0),
                  (VectorOp.SCALE, 0), (VectorOp.RECIP, 0), (VectorOp.RSQRT, 0)]


@pytest.mark.parametrize("op, acc", NEW_VECTOR_OPS)
def test_new_vector_ops_against_the_emulator(op, acc):
    """A VECTOR of each new op (acc set in the command where it matters) through the engine:
    RTL and emulator agree on every issue cycle, the run's cycles and the final memories, and
    the rows equal the vector engine's plain semantics (emulator.vector_engine.vector_op). The
    sequencer passes the command's acc bit: with it LANEMAX/LANESUM combine with PSUM b."""
    from emulator.vector_engine import vector_op

    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(40 + op.value + 100 * acc)
    sbuf = random_int8(rng, (config.sbuf_rows, n))
    psum = rng.integers(-2**31, 2**31, size=(config.psum_rows, n), dtype=np.int64)
    psum[0] = [-2**31, 2**31 - 1, 0, -1]
    psum[1] = [1, 2**30, 3, 2**31 - 1]
    rows, shift = 3, int(rng.integers(0, 64))
    a, b, c = (20, 30, 4) if op == VectorOp.MULW else (0, 8, 40 if op == VectorOp.SCALE else 4)
    commands = [VEC(op, a=a, b=b, c=c, count=rows, shift=shift, acc=acc), HALT]
    run = compare_with_emulator(commands, sbuf=sbuf, psum=psum)
    assert run.issue_cycles == [0, rows + 2]         # HALT once the vector engine is idle
    source = sbuf if op == VectorOp.MULW else psum
    uses_b = op not in (VectorOp.LANEMAX, VectorOp.LANESUM, VectorOp.RECIP, VectorOp.RSQRT)
    b_rows = source[b:b + rows] if uses_b or acc else None
    expected = vector_op(op.value, source[a:a + rows], b_rows, shift=shift)
    target = run.sbuf if op == VectorOp.SCALE else run.psum
    assert np.array_equal(target[c:c + rows], expected)


def test_softmax_steps_against_the_emulator():
    """Softmax-like and RMS-norm-like chains (rows written by one command read by the next,
    some back to back within the hazard window), RTL against the emulator."""
    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(77)
    sbuf = random_int8(rng, (config.sbuf_rows, n))
    sbuf[60] = 1                                      # a row of ones: MULW widens int8
    psum = rng.integers(-2**12, 2**12, size=(config.psum_rows, n), dtype=np.int64)
    commands = [
        VEC(VectorOp.MULW, a=0, b=60, c=0, count=1),            # x widened
        VEC(VectorOp.LANEMAX, a=0, c=1, count=1),               # R = 1 back to back: stale row
        VEC(VectorOp.LANEMAX, a=2, b=1, c=3, count=2, acc=1),
        VEC(VectorOp.SUB32, a=0, b=3, c=5, count=3),
        VEC(VectorOp.MULW, a=0, b=0, c=8, count=3),              # x^2
        VEC(VectorOp.LANESUM, a=8, c=11, count=3),
        VEC(VectorOp.LANESUM, a=8, b=11, c=11, count=3, acc=1),
        VEC(VectorOp.RSQRT, a=11, c=12, count=3, shift=40),
        VEC(VectorOp.RECIP, a=5, c=13, count=3, shift=20),
        VEC(VectorOp.SCALE, a=5, b=12, c=40, count=3, shift=30),
        HALT,
    ]
    run = compare_with_emulator(commands, sbuf=sbuf, psum=psum)
    assert run.done and len(run.issues) == len(commands)


def test_transposed_weights_against_the_emulator():
    """WEIGHTS with transpose writes SBUF row a + i into weight column i (columns k..n-1 zero):
    the MATMUL then gives A x R^T for the k rows R, on the RTL as on the emulator."""
    config, n = CONFIG, CONFIG.n
    rng = np.random.default_rng(5)
    sbuf = random_int8(rng, (config.sbuf_rows, n))
    commands = [Command(Op.WEIGHTS, buffer=1, a=8, count=3, transpose=1),
                MM(1, 20, 0, 5), W(0, 30, n), MM(0, 20, 8, 2), HALT]
    run = compare_with_emulator(commands, sbuf=sbuf)
    expected = sbuf[20:25].astype(np.int64) @ sbuf[8:11].astype(np.int64).T
    assert np.array_equal(run.psum[0:5, :3], expected) and not run.psum[0:5, 3:].any()


ATTENTION_CONFIG = small(sbuf_rows=160, psum_rows=48, commands=128)


@pytest.mark.parametrize("program", ["attention", "rmsnorm"])
def test_softmax_attention_and_rmsnorm_programs_on_the_rtl(program):
    """programs.prefill_ops's causal attention head (transposed K, mask, softmax, P x V) and RMS
    norm, on the RTL: equal to the emulator cycle for cycle and to the integer reference."""
    config = ATTENTION_CONFIG
    rng = np.random.default_rng(11)
    if program == "attention":
        Q, K, V = (rng.integers(-60, 60, size=(5, 6)).astype(np.int8) for _ in range(3))
        built = attention_head(config, Q, K, V, score_multiplier=1 << 20, score_shift=26,
                               table=exp_table(1 / 16), out_multiplier=1 << 16, out_shift=23)
        row, columns, expected = built.o_row, 6, built.O
    else:
        x = rng.integers(-128, 128, size=(5, 7)).astype(np.int8)
        built = rmsnorm(config, x, shift=26)
        row, columns, expected = built.y_row, 7, built.expected
    run = compare_with_emulator(built.commands, config, sbuf=built.sbuf[:config.sbuf_rows])
    sbuf = run.sbuf.astype(np.int8)
    np.testing.assert_array_equal(built.read(sbuf, row, columns), expected)


@pytest.mark.parametrize("case", range(len(ERROR_CASES)))
def test_errors_against_the_emulator(case):
    commands, _, _, _ = ERROR_CASES[case]
    compare_with_emulator(commands)


# Verilog -------------------------------------------------------------------------------------

def test_verilog_lints_clean(tmp_path):
    text = hdl.verilog(PrefillEngine(small(n=2, sbuf_rows=16, psum_rows=16)), "prefill")
    assert lint_warnings(text, "prefill", tmp_path) <= AMARANTH_WARNINGS


# Small n and random programs against the emulator ---------------------------------------------

CONFIG_2 = small(n=2, sbuf_rows=32, psum_rows=16, dram_latency=1, dram_bandwidth=2, dma_queue=2)


@pytest.mark.parametrize("tiles, m", [(1, 2), (2, 1), (3, 3), (3, 4)])
def test_tiled_n2(tiles, m):
    config, n = CONFIG_2, 2
    rng = np.random.default_rng(tiles * 3 + m)
    A = random_int8(rng, (m, tiles * n))
    B = random_int8(rng, (tiles * n, n))
    blocks = [(0, B)] + [(16 + t * m, A[:, t * n:(t + 1) * n]) for t in range(tiles)]
    run = run_engine(tiled_commands(tiles, m, n), config, sbuf=sbuf_with(config, blocks))
    assert run.issue_cycles == tiled_schedule(tiles, m, n)
    assert np.array_equal(run.psum[:m], A @ B)


def random_program(config, rng, length):
    """A random valid program over a few SBUF/PSUM rows (loads and vector writes into the same
    rows, stores, weights and matmuls on both buffers, waits), ending with waits and HALT."""
    n, rows = config.n, 8
    commands, tags = [], set()
    for _ in range(length):
        kind = rng.integers(6)
        if kind == 0:
            tag = int(rng.integers(3))
            tags.add(tag)
            dma_kind = DmaKind(int(rng.integers(3)))
            row_bytes = 4 * n if dma_kind == DmaKind.STORE_PSUM else n
            count = int(rng.integers(1, 4))
            commands.append(DMA(dma_kind, tag, int(rng.integers(0, 512)), row_bytes,
                                int(rng.integers(0, rows)), count))
        elif kind == 1 and tags:
            commands.append(WAIT(int(rng.choice(sorted(tags)))))
        elif kind == 2:
            commands.append(W(int(rng.integers(2)), int(rng.integers(0, rows)),
                              int(rng.integers(1, n + 1))))
        elif kind == 3:
            commands.append(MM(int(rng.integers(2)), int(rng.integers(0, rows)),
                               int(rng.integers(0, 8)), int(rng.integers(1, 6)),
                               int(rng.integers(2))))
        else:
            ops = [op for op in VectorOp if op not in (VectorOp.LUT, VectorOp.LOAD_TABLE)]
            op = ops[int(rng.integers(len(ops)))]
            commands.append(VEC(op, a=int(rng.integers(0, 8)), b=int(rng.integers(0, 8)),
                                c=int(rng.integers(0, 8)), count=int(rng.integers(1, 4)),
                                multiplier=int(rng.integers(-3000, 3000)),
                                shift=int(rng.integers(0, 24)), acc=int(rng.integers(2))))
    commands += [WAIT(t) for t in sorted(tags)]
    return commands[:config.commands - 1] + [HALT]


@pytest.mark.parametrize("config", [CONFIG, CONFIG_2], ids=["n4", "n2"])
@pytest.mark.parametrize("seed", range(6))
def test_random_programs_against_the_emulator(config, seed):
    rng = np.random.default_rng(seed)
    sbuf = random_int8(rng, (config.sbuf_rows, config.n))
    psum = rng.integers(-2**24, 2**24, size=(config.psum_rows, config.n))
    dram = rng.integers(0, 256, size=config.dram_bytes, dtype=np.uint8).tobytes()
    commands = random_program(config, rng, 12)
    compare_with_emulator(commands, config, sbuf=sbuf, psum=psum, dram=dram)


@pytest.mark.parametrize("dma_row", [10, 20])
def test_dma_write_wins_over_the_vector_engine(dma_row):
    """A LOAD of one row accepted in cycle 0 completes in cycle t (the channel rule); an ADD8
    issued in cycle 1 writes its row i in cycle 3 + i. With i = t - 3 both write in cycle t:
    on the same row the DMA's bytes stay, on different rows both writes land."""
    from emulator.dma import transfer_cycles
    config, n = CONFIG, CONFIG.n
    (t,) = transfer_cycles(config, 1, n, 0)
    i = t - 3
    assert i >= 0
    rng = np.random.default_rng(5)
    sbuf = random_int8(rng, (config.sbuf_rows, n))
    dram = rng.integers(0, 256, size=config.dram_bytes, dtype=np.uint8).tobytes()
    commands = [DMA(DmaKind.LOAD, 0, 64, n, dma_row, 1),
                VEC(VectorOp.ADD8, a=0, b=4, c=10 - i, count=i + 1), WAIT(0), HALT]
    run = run_engine(commands, sbuf=sbuf, dram=dram)
    assert run.issue_cycles[:2] == [0, 1]
    loaded = np.frombuffer(dram[64:64 + n], dtype=np.int8)
    added = np.clip(sbuf[0:i + 1] + sbuf[4:5 + i], -128, 127)
    assert np.array_equal(run.sbuf[dma_row], loaded)
    if dma_row == 10:
        assert np.array_equal(run.sbuf[10 - i:10], added[:i])
    else:
        assert np.array_equal(run.sbuf[10 - i:11], added)
    compare_with_emulator(commands, sbuf=sbuf, dram=dram)


@pytest.mark.parametrize("M, K, N", [(9, 8, 8), (3, 5, 7), (12, 4, 8)])
def test_rtl_gemm_takes_exactly_the_closed_form_cycles(M, K, N):
    """The tiler's GEMM (operands preloaded in SBUF) on the RTL: C equals numpy, and the run
    takes exactly ``gemm_cycles``, as the emulator does (tests/test_prefill_emulator.py)."""
    from programs.prefill import gemm, gemm_cycles

    config = small(psum_rows=32)
    program = gemm(config, M, K, N, seed=M * K * N, preload=True)
    run = run_engine(program.commands, config, sbuf=program.sbuf)
    assert run.done and not run.error
    assert run.cycles == gemm_cycles(config, M, K, N)
    rows = -(-N // config.n) * M
    assert np.array_equal(program.unpack_c(run.psum[:rows]), program.expected)

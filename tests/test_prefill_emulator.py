"""The prefill engine emulator (emulator/prefill.py) and its programs (programs/prefill.py):
GEMM results against numpy, cycles against the closed forms, the decode GEMV against the DRAM
bound, and every command error."""

import numpy as np
import pytest

from emulator.prefill import PrefillCycleLimit, PrefillEmulator, PrefillError
from emulator.vector_engine import VectorOp, vector_op
from mesh.prefill import Command, DmaKind, EngineError, Op, PrefillConfig
from programs.prefill import (dram_bound_cycles, gemm, gemm_cycles, gemm_matmul_span,
                              gemv_decode, tile_periods)


def run(program, array="fast", max_cycles=1_000_000):
    emu = PrefillEmulator(program.config, program.dram, sbuf=program.sbuf, array=array)
    return emu.run(program.commands, max_cycles=max_cycles)


# Results ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 8])
@pytest.mark.parametrize("preload", [False, True])
def test_gemm_bit_exact_systolic(n, preload):
    rng = np.random.default_rng(n)
    cfg = PrefillConfig(n=n)
    for _ in range(3):
        M, K, N = (int(v) for v in rng.integers(1, 3 * n + 2, size=3))
        program = gemm(cfg, M, K, N, seed=int(rng.integers(1 << 30)), preload=preload)
        result = run(program, array="systolic")
        np.testing.assert_array_equal(program.read_c(result), program.expected)
        assert result.counters["macs"] == program.tiles * M * n * n
        if preload:
            assert result.cycles == gemm_cycles(cfg, M, K, N)


def test_gemm_extreme_values():
    cfg = PrefillConfig(n=4)
    A = np.full((7, 13), -128, dtype=np.int8)
    B = np.full((13, 6), -128, dtype=np.int8)
    program = gemm(cfg, 7, 13, 6, A=A, B=B)
    result = run(program, array="systolic")
    np.testing.assert_array_equal(program.read_c(result), A.astype(np.int64) @ B)


def test_fast_array_matches_systolic():
    cfg = PrefillConfig(n=3, dram_latency=5)
    program = gemm(cfg, 4, 10, 8, seed=3)
    fast, slow = run(program, "fast"), run(program, "systolic")
    assert fast.cycles == slow.cycles and fast.issue == slow.issue
    assert fast.dram == slow.dram
    np.testing.assert_array_equal(fast.psum, slow.psum)


# Closed forms -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_gemm_cycles_exact_preloaded(n):
    cfg = PrefillConfig(n=n)
    for M in (1, 2, 3, n, 2 * n, 3 * n - 4, 3 * n - 3, 3 * n - 2, 40):
        if M < 1:
            continue
        for K, N in ((1, 1), (n, n), (n + 1, 2 * n), (3 * n, n - 1), (2 * n, 3 * n + 1)):
            program = gemm(cfg, M, K, N, seed=M, preload=True)
            result = run(program)
            assert result.cycles == gemm_cycles(cfg, M, K, N), (n, M, K, N)
            np.testing.assert_array_equal(program.read_c(result), program.expected)


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_gemm_matmul_span_with_fast_dma(n):
    cfg = PrefillConfig(n=n, dram_bandwidth=128, dram_latency=0)
    for M in (1, 3, 5, 3 * n - 3, 21):
        for K, N in ((n, n), (2 * n + 1, 3 * n - 1), (3 * n, 2 * n)):
            program = gemm(cfg, M, K, N, seed=M, slots=4)
            result = run(program)
            matmuls = [result.issue[i] for i, c in enumerate(program.commands)
                       if c.op == Op.MATMUL]
            assert matmuls[-1] - matmuls[0] == gemm_matmul_span(cfg, M, K, N, dma=True)
            np.testing.assert_array_equal(program.read_c(result), program.expected)


def test_tile_periods():
    cfg = PrefillConfig(n=8)
    assert tile_periods(cfg, 21) == (21, 21)      # M >= 3n - 3: no gap
    assert tile_periods(cfg, 20) == (20, 21)
    assert tile_periods(cfg, 1) == (9, 13)
    assert gemm_cycles(cfg, 64, 64, 64) == 8 + 63 * 64 + 64 + 16 + 2


def test_dram_bound():
    cfg = PrefillConfig(n=8, dram_bandwidth=3)
    assert dram_bound_cycles(cfg, 10) == 4
    assert dram_bound_cycles(cfg, 64, row_bytes=8) == 22
    assert dram_bound_cycles(PrefillConfig(n=8, dram_bandwidth=16), 64, row_bytes=8) == 8


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_gemv_decode_bit_exact(n):
    """x-stationary GEMV: y in column 0 of PSUM rows 0..N-1, the other columns 0; K and N
    multiples of n or not, pieces of a few rows (several per K tile, N not a multiple) and
    rings that wrap; x from SBUF or DRAM."""
    rng = np.random.default_rng(100 + n)
    for K, N in ((1, 1), (n, n), (n + 1, 2 * n - 1), (5 * n - 2, 3 * n + 2), (37, 29)):
        for slots, piece, x_in in ((2, 3, "sbuf"), (5, None, "sbuf"), (3, 7, "dram")):
            cfg = PrefillConfig(n=n, dram_bandwidth=int(rng.integers(1, 2 * n + 1)),
                                dram_latency=int(rng.integers(0, 30)))
            program = gemv_decode(cfg, K, N, seed=int(rng.integers(1 << 30)), slots=slots,
                                  piece=piece, x_in=x_in)
            result = run(program, array="systolic" if n <= 3 else "fast")
            np.testing.assert_array_equal(program.read_c(result), program.expected)
            np.testing.assert_array_equal(program.read_y(result), program.expected[0])
            assert not result.psum[:N, 1:].any()
            assert result.counters["rows_presented"] == program.tiles * N
            assert program.b_bytes == -(-K // n) * N * n


def test_gemv_decode_extreme_values():
    cfg = PrefillConfig(n=8)
    x = np.full(300, -128, dtype=np.int8)
    B = np.full((300, 40), -128, dtype=np.int8)
    program = gemv_decode(cfg, 300, 40, x=x, B=B)
    np.testing.assert_array_equal(program.read_y(run(program)), x.astype(np.int64) @ B)


@pytest.mark.parametrize("bandwidth", [1, 2, 4, 8])
@pytest.mark.parametrize("K, N", [(256, 256), (512, 128), (1024, 256)])
def test_gemv_decode_follows_dram_bound(bandwidth, K, N):
    """Within 5% of bytes(B) / bandwidth for bandwidths up to n (n = 8, latency 40): the DMA
    streams B^T with no gap and the array keeps up, so only fixed costs (~80-125 cycles: the
    first request's latency, the last piece's MATMUL and the array latency) come on top."""
    cfg = PrefillConfig(n=8, dram_bandwidth=bandwidth, dram_latency=40)
    program = gemv_decode(cfg, K, N, seed=K)
    result = run(program)
    np.testing.assert_array_equal(program.read_c(result), program.expected)
    bound = dram_bound_cycles(cfg, program.b_bytes)
    assert program.b_bytes == K * N
    assert bound <= result.cycles <= 1.05 * bound
    assert result.cycles - bound <= 130


def test_gemv_decode_small_misses_bound():
    """The fixed costs dominate small GEMVs: 64 x 64 at bandwidth 8 is 512 cycles of DRAM."""
    cfg = PrefillConfig(n=8, dram_bandwidth=8, dram_latency=40)
    program = gemv_decode(cfg, 64, 64)
    result = run(program)
    np.testing.assert_array_equal(program.read_c(result), program.expected)
    assert result.cycles > 1.05 * dram_bound_cycles(cfg, program.b_bytes)


def test_gemv_decode_does_not_fit():
    cfg = PrefillConfig(n=4, sbuf_rows=64, psum_rows=32)
    with pytest.raises(ValueError, match="PSUM rows"):
        gemv_decode(cfg, 8, 33)
    with pytest.raises(ValueError, match="SBUF rows"):
        gemv_decode(cfg, 200, 8)
    with pytest.raises(ValueError, match="slots"):
        gemv_decode(cfg, 8, 8, slots=1)


# Vector commands through the engine ----------------------------------------------------------

def test_matmul_then_requant():
    cfg = PrefillConfig(n=4)
    program = gemm(cfg, 6, 8, 4, seed=5, preload=True)
    commands = program.commands[:-1] + [
        Command(Op.VECTOR, sub=VectorOp.REQUANT, a=0, c=200, count=6, addr=-(1 << 20),
                stride=12),
        Command(Op.HALT)]
    emu = PrefillEmulator(cfg, sbuf=program.sbuf)
    result = emu.run(commands)
    expected = vector_op(VectorOp.REQUANT, program.expected.astype(np.int64),
                         multiplier=-(1 << 20), shift=12)
    np.testing.assert_array_equal(result.sbuf[200:206], expected)
    vec = result.issue[-2]
    assert result.cycles == vec + 6 + 2 + 1        # HALT after vector_busy (c + 1 .. c + R + 1)


def test_rms_norm_and_softmax_steps():
    """The new vector ops chained back to back on 4-row commands (each reads rows the previous
    one wrote, from 3 cycles after their write: no hazard): RMS norm's sum of squares, inverse
    root and per-lane scale, softmax's row maximum, subtraction and sum, and a reciprocal,
    against vector_op step by step."""
    cfg = PrefillConfig(n=4)
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, size=(4, 4))
    x[0] = [-128, 127, 0, 1]
    sbuf = np.zeros((cfg.sbuf_rows, 4), dtype=np.int8)
    sbuf[0:4], sbuf[4:8] = x, 1
    V = VectorOp

    def vec(op, a=0, b=0, c=0, shift=0, acc=0):
        return Command(Op.VECTOR, sub=op, a=a, b=b, c=c, count=4, stride=shift, acc=acc)

    commands = [vec(V.MULW, 0, 0, 0), vec(V.LANESUM, 0, c=4), vec(V.RSQRT, 4, c=8, shift=40),
                vec(V.MULW, 0, 4, 12), vec(V.SCALE, 12, 8, 100, shift=36),
                vec(V.LANEMAX, 12, c=16), vec(V.LANEMAX, 12, 16, 20, acc=1),
                vec(V.SUB32, 12, 20, 24), vec(V.LANESUM, 24, c=28),
                vec(V.RECIP, 4, c=32, shift=30), Command(Op.HALT)]
    result = PrefillEmulator(cfg, sbuf=sbuf.view(np.uint8)).run(commands)
    psum = result.psum.astype(np.int64)
    squares = vector_op(V.MULW, x, x)
    r = vector_op(V.RSQRT, vector_op(V.LANESUM, squares), shift=40)
    np.testing.assert_array_equal(psum[8:12], r)
    np.testing.assert_array_equal(psum[12:16], x)
    np.testing.assert_array_equal(result.sbuf[100:104], vector_op(V.SCALE, x, r, shift=36))
    row_max = np.repeat(x.max(axis=1, keepdims=True), 4, axis=1)
    np.testing.assert_array_equal(psum[20:24], row_max)
    np.testing.assert_array_equal(psum[24:28], x - row_max)
    np.testing.assert_array_equal(psum[28:32], vector_op(V.LANESUM, x - row_max))
    np.testing.assert_array_equal(
        psum[32:36], vector_op(V.RECIP, vector_op(V.LANESUM, squares), shift=30))
    assert np.diff(result.issue[:10]).tolist() == [4] * 9       # back to back


# Errors -------------------------------------------------------------------------------------

CFG = PrefillConfig(n=4, sbuf_rows=64, psum_rows=32, dram_bytes=1024, commands=16)

E = EngineError
ERRORS = [
    (Command(Op.DMA, sub=3, count=1), "DmaError.KIND", E.DMA_KIND),
    (Command(Op.DMA, sub=DmaKind.LOAD, a=60, count=5, stride=4), "DmaError.ROWS", E.DMA_ROWS),
    (Command(Op.DMA, sub=DmaKind.STORE_PSUM, count=0), "DmaError.ROWS", E.DMA_ROWS),
    (Command(Op.DMA, sub=DmaKind.LOAD, addr=1020, stride=4, count=2), "DmaError.DRAM",
     E.DMA_DRAM),
    (Command(Op.WEIGHTS, count=0), "WEIGHTS count 0 outside 1..4", E.WEIGHTS_COUNT),
    (Command(Op.WEIGHTS, count=5), "WEIGHTS count 5 outside 1..4", E.WEIGHTS_COUNT),
    (Command(Op.WEIGHTS, a=62, count=3), "WEIGHTS SBUF rows 62..64 past the 64 rows",
     E.WEIGHTS_ROWS),
    (Command(Op.MATMUL, count=0), "MATMUL count 0", E.MATMUL_COUNT),
    (Command(Op.MATMUL, a=60, count=5), "MATMUL SBUF rows 60..64 past the 64 rows",
     E.MATMUL_SBUF),
    (Command(Op.MATMUL, b=30, count=3), "MATMUL PSUM rows 30..32 past the 32 rows",
     E.MATMUL_PSUM),
    (Command(Op.VECTOR, sub=VectorOp.REQUANT, c=63, count=2),
     "VECTOR REQUANT: SBUF rows c 63..64 past the 64 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.ADD32, b=31, count=2),
     "VECTOR ADD32: PSUM rows b 31..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.LOAD_TABLE, a=0),      # 64 rows of 4: fits
     None, None),
    (Command(Op.VECTOR, sub=VectorOp.LOAD_TABLE, a=1),
     "VECTOR LOAD_TABLE: SBUF rows a 1..64 past the 64 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.REQUANT, stride=64), "VECTOR shift 64 above 63",
     E.VECTOR_SHIFT),
    # Every code 0..15 is an op: 9 is SUB32.
    (Command(Op.VECTOR, sub=9, a=31, b=31, c=31), None, None),
    (Command(Op.VECTOR, sub=VectorOp.SUB32, c=31, count=2),
     "VECTOR SUB32: PSUM rows c 31..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.MULW, a=63, count=2),
     "VECTOR MULW: SBUF rows a 63..64 past the 64 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.MULW, b=62, count=3),
     "VECTOR MULW: SBUF rows b 62..64 past the 64 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.MULW, a=62, b=62, c=30, count=2), None, None),
    (Command(Op.VECTOR, sub=VectorOp.MULW, c=31, count=2),
     "VECTOR MULW: PSUM rows c 31..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.SCALE, c=63, count=2),
     "VECTOR SCALE: SBUF rows c 63..64 past the 64 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.SCALE, b=32, count=1),
     "VECTOR SCALE: PSUM rows b 32..32 past the 32 rows", E.VECTOR_ROWS),
    # LANEMAX/LANESUM read b only with acc.
    (Command(Op.VECTOR, sub=VectorOp.LANESUM, b=31, count=2), None, None),
    (Command(Op.VECTOR, sub=VectorOp.LANESUM, b=31, count=2, acc=1),
     "VECTOR LANESUM: PSUM rows b 31..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.LANEMAX, b=40, acc=1),
     "VECTOR LANEMAX: PSUM rows b 40..40 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.LANEMAX, a=32),
     "VECTOR LANEMAX: PSUM rows a 32..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.RECIP, a=31, count=2),
     "VECTOR RECIP: PSUM rows a 31..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.RSQRT, c=30, count=3),
     "VECTOR RSQRT: PSUM rows c 30..32 past the 32 rows", E.VECTOR_ROWS),
    (Command(Op.VECTOR, sub=VectorOp.RSQRT, stride=64), "VECTOR shift 64 above 63",
     E.VECTOR_SHIFT),
]


@pytest.mark.parametrize("command, check, cause", ERRORS)
def test_command_errors(command, check, cause):
    emu = PrefillEmulator(CFG)
    commands = [Command(Op.WEIGHTS, count=1), command, Command(Op.HALT)]
    if check is None:
        emu.run(commands)
        return
    with pytest.raises(PrefillError) as info:
        emu.run(commands)
    error = info.value
    assert error.index == 1 and error.command.encode() == command.encode()
    assert check in error.check
    assert error.cause is cause and isinstance(error.cause, EngineError)
    message = str(error)
    assert message.startswith(f"command 1 (Command(op={command.op!r}") and check in message
    assert error.cycle == emu.cycle


def test_engine_error_lives_in_mesh_prefill():
    """EngineError is part of the architecture (mesh.prefill, next to DmaError), with its
    numbers kept; VECTOR_OP (10) is gone since every vector op code is an op."""
    import mesh.prefill
    import hdl.prefill
    assert "EngineError" in mesh.prefill.__all__ and "EngineError" not in hdl.prefill.__all__
    assert hdl.prefill.EngineError is EngineError
    assert {e.name: e.value for e in EngineError} == {
        "NONE": 0, "OP": 1, "DMA_KIND": 2, "DMA_ROWS": 3, "DMA_DRAM": 4, "WEIGHTS_COUNT": 5,
        "WEIGHTS_ROWS": 6, "MATMUL_COUNT": 7, "MATMUL_SBUF": 8, "MATMUL_PSUM": 9,
        "VECTOR_ROWS": 11, "INDEX": 12, "VECTOR_SHIFT": 13}


def test_error_waits_for_issue_conditions():
    """A bad WEIGHTS stops the engine in the cycle it would issue: after the loader is free."""
    emu = PrefillEmulator(CFG)
    with pytest.raises(PrefillError) as info:
        emu.run([Command(Op.WEIGHTS, count=4), Command(Op.WEIGHTS, count=0)])
    assert info.value.cycle == 5                 # loader writes in cycles 1..4


def test_reserved_op_word():
    emu = PrefillEmulator(CFG)
    with pytest.raises(PrefillError, match=r"command 1 \(no command\).*reserved op 7") as info:
        emu.run([Command(Op.WEIGHTS, count=1).encode(), 7])
    assert info.value.cause is EngineError.OP


def test_running_off_the_end():
    emu = PrefillEmulator(CFG)
    with pytest.raises(PrefillError, match=r"command 2 .*reserved op 0") as info:
        emu.run([Command(Op.WEIGHTS, count=2), Command(Op.MATMUL, count=1)])
    assert info.value.index == 2 and info.value.cycle == 5     # MATMUL in 4
    assert info.value.cause is EngineError.OP


def test_past_the_command_memory():
    emu = PrefillEmulator(CFG)
    with pytest.raises(PrefillError, match="command index 16 past the command memory of 16") \
            as info:
        emu.run([Command(Op.MATMUL, count=1)] * 16)
    assert info.value.cause is EngineError.INDEX
    with pytest.raises(ValueError, match="do not fit"):
        emu.load([Command(Op.HALT)] * 17)


def test_cycle_limit():
    emu = PrefillEmulator(CFG)
    with pytest.raises(PrefillCycleLimit, match="no HALT within 100 cycles") as info:
        emu.run([Command(Op.WAIT, tag=3), Command(Op.HALT)], max_cycles=100)
    assert info.value.index == 0 and info.value.cause is None


def test_shape_does_not_fit():
    """Shapes that no M block fits: one row of A next to the weight slots is past the SBUF,
    one row of C past the PSUM, or the images past the DRAM; preload=True does not tile."""
    cfg = PrefillConfig(n=4, sbuf_rows=64, psum_rows=32)
    with pytest.raises(ValueError, match=r"needs 68 SBUF rows in M blocks of 1 row \(A: 60 x 1"):
        gemm(cfg, 20, 240, 4)
    with pytest.raises(ValueError, match=r"needs 33 PSUM rows in M blocks of 1 row \(33 x 1\)"):
        gemm(cfg, 8, 4, 132)
    with pytest.raises(ValueError, match="DRAM bytes"):
        gemm(PrefillConfig(n=4, dram_bytes=1024), 16, 16, 16)
    with pytest.raises(ValueError, match=r"needs 96 SBUF rows \(A: 4 x 20"):
        gemm(cfg, 20, 16, 4, preload=True)
    with pytest.raises(ValueError, match="preload=True runs one M block"):
        gemm(PrefillConfig(n=4), 20, 16, 4, preload=True, m_block=8)
    with pytest.raises(ValueError, match=r"needs 40 SBUF rows in M blocks of 8 rows"):
        gemm(PrefillConfig(n=4, sbuf_rows=32), 20, 16, 4, m_block=8)
    with pytest.raises(ValueError, match="m_block must be a positive integer"):
        gemm(cfg, 20, 16, 4, m_block=0)


def test_command_memory_limit_names_the_split():
    """Too many commands: the message gives the count, the memory and the largest split into
    GEMMs that fit the same config (rows of A, else columns of B, else K)."""
    cfg = PrefillConfig(n=8, sbuf_rows=1024, psum_rows=512, commands=65536)
    with pytest.raises(ValueError) as info:
        gemm(cfg, 256, 256, 256)
    assert str(info.value) == (
        "GEMM 256x256x256 needs 65585 commands (16 M blocks of up to 16 rows x 1024 weight "
        "tiles), the command memory holds 65536 (tiled over M because all 256 rows at once "
        "would need 8208 SBUF rows of 1024 and 8192 PSUM rows of 512); split M: GEMMs of at "
        "most 240 rows of A "
        "(240x256x256) fit")
    assert len(gemm(cfg, 240, 256, 256).commands) <= 65536
    cfg = PrefillConfig(n=4, commands=64)
    with pytest.raises(ValueError, match=r"needs 260 commands \(1 M block of up to 10 rows x 64 "
                                         r"weight tiles\), the command memory holds 64; split M "
                                         r"and N: GEMMs of at most 10x16x12 fit"):
        gemm(cfg, 10, 16, 64)
    assert len(gemm(cfg, 10, 16, 12).commands) <= 64
    with pytest.raises(ValueError, match=r"needs 20 commands .* holds 16; no split of M or N "
                                         r"fits: split K"):
        gemm(PrefillConfig(n=4, commands=16), 5, 16, 4)


# Tiling over M ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [4, 8])
def test_gemm_m_blocks_bit_exact(n):
    """2+ M blocks (M not a multiple of the block, blocks down to 1 row, slots 1..4): C bit
    exact in DRAM, block by block; the fast array agrees with the systolic one."""
    rng = np.random.default_rng(200 + n)
    cases = [(3 * n + 5, 2 * n + 1, 3 * n - 1, 7, 2), (23, n + 3, 2 * n, 1, 1),
             (5 * n + 2, 3 * n, n, 2 * n, 4), (4 * n + 1, n, n + 2, None, 3)]
    for M, K, N, m_block, slots in cases:
        Kt, Nt = -(-K // n), -(-N // n)
        # memories too small for one block (the default block: about M / 3 rows)
        rows = m_block or M // 3
        cfg = PrefillConfig(n=n, sbuf_rows=max(16, Kt * rows + slots * n),
                            psum_rows=max(16, Nt * rows),
                            dram_bandwidth=int(rng.integers(1, 2 * n + 1)),
                            dram_latency=int(rng.integers(0, 30)))
        program = gemm(cfg, M, K, N, seed=int(rng.integers(1 << 30)), slots=slots,
                       m_block=m_block)
        blocks = program.blocks
        assert len(blocks) >= 2, (n, M, program.m_block)
        assert sum(m for _, m in blocks) == M
        assert Kt * program.m_block + program.slots * n <= cfg.sbuf_rows
        assert Nt * program.m_block <= cfg.psum_rows
        fast = run(program)
        np.testing.assert_array_equal(program.read_c(fast), program.expected)
        assert fast.counters["macs"] == program.tiles * M * n * n
        if n == 4:
            slow = run(program, array="systolic")
            assert slow.cycles == fast.cycles and slow.dram == fast.dram


def test_default_m_block():
    """The largest block that fits SBUF (next to the slots) and PSUM, evened out when the last
    block would be shorter than 3n - 3; one block (the old program) when everything fits."""
    cfg = PrefillConfig(n=8, sbuf_rows=2048, psum_rows=1024, commands=65536)
    assert gemm(cfg, 120, 64, 64).m_block == 120
    assert gemm(cfg, 64, 64, 256).m_block == 32                        # PSUM: 1024 / 32
    # 100 = 3 x 32 + 4: four even blocks of 25 keep every block >= 3n - 3 = 21
    assert gemm(cfg, 100, 64, 256).m_block == 25
    assert gemm(cfg, 100, 256, 64, slots=4).m_block == 63              # SBUF: (2048 - 32) / 32
    # 70 = 63 + 7: the 7-row tail is < 21, two blocks of 35 are not
    assert gemm(cfg, 70, 256, 64, slots=4).m_block == 35
    # 130 = 2 x 63 + 4: three even blocks (44, 44, 42) keep every block >= 21
    assert [m for _, m in gemm(cfg, 130, 256, 64, slots=4).blocks] == [44, 44, 42]
    # one block that fits is the old program: same commands as an explicit m_block >= M
    a, b = gemm(cfg, 40, 24, 24, seed=1), gemm(cfg, 40, 24, 24, seed=1, m_block=100)
    assert a.commands == b.commands and a.dram == b.dram and a.blocks == [(0, 40)]


def test_gemm_256_cubed_small_memories():
    """256 x 256 x 256 at n = 8 needs 8192 SBUF and PSUM rows in one block; with 2048 SBUF
    and 1024 PSUM rows it runs in 8 blocks of 32 rows (32793 commands)."""
    cfg = PrefillConfig(n=8, sbuf_rows=2048, psum_rows=1024, commands=65536, dram_bandwidth=64)
    program = gemm(cfg, 256, 256, 256, seed=7)
    assert program.m_block == 32 and len(program.blocks) == 8
    assert len(program.commands) == 32793
    result = run(program, max_cycles=2_000_000)
    np.testing.assert_array_equal(program.read_c(result), program.expected)
    assert result.counters["macs"] == 1024 * 256 * 64

"""The example programs on the emulator, checked against numpy; GEMV's utilization in exact
simulated cycles. (The same kernels on the RTL: tests/test_mesh_rtl_runs.py and the Verilator
harness tests.)"""

import numpy as np
import pytest

from emulator import MeshEmulator
from mesh import MeshConfig
from programs.kernels import KERNELS, gemv, kernel, pack_int8

SHAPES = [(1, 1), (2, 1), (1, 3), (2, 2), (3, 2), (4, 4)]


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_matches_numpy(name, shape):
    sizes = {"rows_per_core": 8, "cols_per_core": 64} if name == "gemv" else {}
    k = kernel(name, MeshConfig(*shape), seed=3, **sizes)
    result = MeshEmulator(k.program).run(max_cycles=50_000)
    assert k.check(result) == []
    assert result.halted.all() and not result.trapped().size


def test_a_wrong_result_is_reported():
    k = kernel("vector_add", MeshConfig(2, 1))
    result = MeshEmulator(k.program).run(max_cycles=1000)
    result.sram[1, k.outputs[1].address + 3] ^= 1
    [problem] = k.check(result)
    assert "c at tile (1,0)" in problem and "1 of 16 words differ" in problem


def test_gemv_8x8_with_half_the_sram_reaches_80_percent_of_peak():
    """The issue's bar: W fills half of every core's SRAM, and the whole run (x multicast,
    partial sums, row reduction) reaches at least 80% of 4 MACs per core per cycle."""
    config = MeshConfig(8, 8)
    k = gemv(config)
    block_words = k.sizes["rows_per_core"] * k.sizes["cols_per_core"] // 4
    assert block_words >= config.sram_words // 2
    result = MeshEmulator(k.program).run(max_cycles=10_000)
    assert k.check(result) == []
    assert result.counter("macs").sum() == k.macs
    assert result.cycles == 2402
    assert k.utilization(result.cycles) >= 0.80


def test_pack_int8_lane_order_and_errors():
    assert pack_int8([1, -1, 2, -128]).tolist() == [0x8002FF01]
    with pytest.raises(ValueError, match="int8"):
        pack_int8([128, 0, 0, 0])
    with pytest.raises(ValueError, match="multiple of 4"):
        pack_int8([1, 2, 3])


def test_unknown_program_names_the_choices():
    with pytest.raises(ValueError, match="unknown program 'gemm': choose one of allreduce"):
        kernel("gemm", MeshConfig(2, 2))


def test_gemv_refuses_a_block_larger_than_the_sram():
    with pytest.raises(ValueError, match="needs .* SRAM words, more than the 4096"):
        gemv(MeshConfig(2, 2), rows_per_core=64, cols_per_core=256)


def test_gemv_result_is_exact_int32():
    k = gemv(MeshConfig(2, 3), seed=5, rows_per_core=4, cols_per_core=16)
    result = MeshEmulator(k.program).run(max_cycles=10_000)
    y = k.read(result)["y"].view(np.int32)
    assert y.shape == (12,)
    assert k.check(result) == []

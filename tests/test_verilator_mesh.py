"""The standalone Verilator runs of whole programs (wafer/verilator_mesh.py): every example
kernel gives the same cycle count, counters, SRAM, halt and trap state and pc as the emulator;
traps, no progress and the cycle limit stop both at the same cycle; waveforms are written.

Builds are cached under build/verilator/ (one per configuration), so only the first run pays
for the compile.
"""

from pathlib import Path

import numpy as np
import pytest

from emulator import MeshEmulator
from mesh import MeshConfig
from mesh.asm import assemble
from program_cases import DEADLOCK
from programs.kernels import KERNELS, kernel
from sim_tests.simulators import require_simulator
from wafer.backends import run
from wafer.verilator_mesh import LZ4_INCLUDE_DIRS, VerilatorError, run_program

CONFIG = MeshConfig(3, 2, sram_words=1024, imem_words=256)
SMALL = MeshConfig(2, 1, colors=2, sram_words=256, imem_words=64)


@pytest.fixture(autouse=True)
def verilator():
    require_simulator("verilator")


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_on_verilator_equals_the_emulator(name):
    sizes = {"rows_per_core": 8, "cols_per_core": 96} if name == "gemv" else {}
    k = kernel(name, CONFIG, seed=11, **sizes)
    result, status, seconds = run_program(k.program, max_cycles=20_000)
    assert status == "done" and seconds > 0
    assert k.check(result) == []
    emulated = MeshEmulator(k.program).run(max_cycles=20_000)
    assert result.same_as(emulated) == []


TRAP = """
.mesh 2x1
.config colors=2 sram_words=256 imem_words=64
.core main (1,0)
    li r1, 200
    addi r1, r1, 100
    st r1, 0(r1)
    halt
"""


@pytest.mark.parametrize("text, status, cycles", [
    (TRAP, "trap", 3), (DEADLOCK, "no progress", 30)])
def test_runs_that_stop_stop_at_the_same_cycle_as_the_emulator(text, status, cycles):
    program = assemble(text, SMALL)
    verilated = run(program, "verilator", stall_limit=30)
    emulated = run(program, "emulator", stall_limit=30)
    assert (verilated.status, emulated.status) == (status, status)
    assert verilated.result.cycles == emulated.result.cycles == cycles
    assert verilated.result.same_as(emulated.result) == []
    if status == "trap":
        assert "tile (1,0) pc 2: st r1, 0(r1) (<string>:7:5): trap: SRAM address out of range" \
            in verilated.message
    else:
        assert "the emulator stops at the same cycle" in verilated.message
        assert "waits for a wavelet on color 1" in verilated.message


def test_cycle_limit():
    program = assemble(".core spin (0,0)\ntop:\n    jmp top\n", SMALL)
    outcome = run(program, "verilator", max_cycles=50)
    assert outcome.status == "cycle limit" and outcome.result.cycles == 50
    assert outcome.result.counter("instructions").tolist() == [50, 1]


WAVE_PROGRAM = ".core main (0,0)\n    li r1, 7\n    st r1, 3(r0)\n    halt\n"


def test_vcd_waves(tmp_path):
    path = tmp_path / "run.vcd"
    result, status, _ = run_program(assemble(WAVE_PROGRAM, SMALL), waves=path)
    assert status == "done" and result.sram[0, 3] == 7
    text = path.read_text()
    assert "$enddefinitions" in text and "retire" in text


def test_fst_waves(tmp_path):
    if not any(Path(d, "lz4.h").exists() for d in LZ4_INCLUDE_DIRS):
        with pytest.raises(VerilatorError, match="apt-get install liblz4-dev"):
            run_program(assemble(WAVE_PROGRAM, SMALL), waves=tmp_path / "run.fst")
        return
    path = tmp_path / "run.fst"
    result, status, _ = run_program(assemble(WAVE_PROGRAM, SMALL), waves=path)
    assert status == "done" and result.sram[0, 3] == 7
    assert path.read_bytes()[:1] == b"\x00" and path.stat().st_size > 100   # an FST header


def test_waves_need_a_known_format(tmp_path):
    program = assemble(".core main (0,0)\n    halt\n", SMALL)
    with pytest.raises(ValueError, match=r"must end in \.vcd or \.fst"):
        run_program(program, waves=tmp_path / "run.txt")


def test_result_arrays_have_the_emulator_shapes():
    program = assemble(".core main all\n    tid r1, 0\n    st r1, 5(r0)\n    halt\n", SMALL)
    result, status, _ = run_program(program)
    assert result.sram.shape == (2, 256) and result.sram.dtype == np.uint32
    assert result.sram[:, 5].tolist() == [0, 1]
    assert result.registers is None and result.halted.all()

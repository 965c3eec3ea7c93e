"""Lockstep differential fuzzing of the processing element: random valid programs
(tests/program_cases.py) on the RTL mesh in the Amaranth simulator and on the emulator. Every
retired instruction (cycle, tile, pc), every wavelet sent by every router port and every core
(cycle, tile, port, color, data), the cycle count and the final state (SRAM, registers, pc,
counters, halt and trap state) must be identical.

Programs are drawn by hypothesis (seeded: the same ones every run; ``pytest
--hypothesis-profile=explore`` draws fresh ones). One simulation per configuration is reused for
all of its programs. At least 100 programs run per CI run, on meshes from 1x1 to 4x4.
"""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emulator import MeshEmulator
from hdl.mesh_sim import MeshSimulation
from mesh import MeshConfig, isa

from program_cases import random_program

# (width, height, colors, buffer_depth) -> programs per CI run.
CONFIGS = {
    (1, 1, 2, 1): 20,
    (2, 1, 4, 2): 20,
    (1, 2, 3, 3): 12,
    (2, 2, 8, 2): 20,
    (3, 2, 4, 1): 12,
    (2, 3, 5, 2): 8,
    (4, 4, 8, 2): 10,
}
assert sum(CONFIGS.values()) >= 100


class Divergence(AssertionError):
    pass


def make_config(key):
    width, height, colors, depth = key
    return MeshConfig(width=width, height=height, colors=colors, buffer_depth=depth,
                      sram_words=256, imem_words=512)


_SIMULATIONS = {}


def simulation(config):
    if config not in _SIMULATIONS:
        _SIMULATIONS[config] = MeshSimulation(config, trace=True)
    return _SIMULATIONS[config]


def first_difference(name, rtl, emulated):
    """None when the two event lists are equal, else a sentence naming the first cycle where
    they differ and the events of both on that cycle."""
    if rtl == emulated:
        return None
    for i, (a, b) in enumerate(zip(rtl, emulated)):
        if a != b:
            cycle = min(a[0], b[0])
            break
    else:
        i = min(len(rtl), len(emulated))
        cycle = (rtl[i] if i < len(rtl) else emulated[i])[0]
    on = lambda events: [e for e in events if e[0] == cycle]   # noqa: E731
    return f"{name} differ first in cycle {cycle}: RTL {on(rtl)}, emulator {on(emulated)}"


def compare(case, simulation):
    """Run ``case`` on both models; raise :class:`Divergence` at the first difference."""
    result, status = simulation.run(case.program, max_cycles=20_000)
    emulator = MeshEmulator(case.program, trace=True)
    emulated = emulator.run(max_cycles=20_000)
    trace = simulation.trace
    problems = [first_difference("retired instructions", trace.retired, emulator.retired),
                first_difference("router wavelets", sorted(trace.wavelets),
                                 sorted(emulator.wavelets)),
                first_difference("core sends", trace.core_sends, emulator.core_sends)]
    problems = [p for p in problems if p]
    if status != "done":
        problems.append(f"the RTL run ended with {status}")
    problems += result.same_as(emulated)
    if problems:
        raise Divergence(f"{case.describe()}\n" + "\n".join(problems))
    return result


@pytest.mark.parametrize("key", list(CONFIGS), ids=lambda k: f"{k[0]}x{k[1]}c{k[2]}d{k[3]}")
def test_rtl_and_emulator_agree_on_random_programs(key):
    config = make_config(key)
    sim = simulation(config)
    retired = []

    @settings(max_examples=CONFIGS[key], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**32 - 1))
    def check(seed):
        result = compare(random_program(seed, config), sim)
        retired.append(int(result.counter("instructions").sum()))

    check()
    # The programs are not trivial: together they retire thousands of instructions.
    assert sum(retired) > 50 * CONFIGS[key]


def test_a_wrong_emulator_alu_is_caught(monkeypatch):
    """A one-bit change of one operation in the emulator (only: the RTL has its own ALU) shows
    up as a divergence naming the state that differs."""
    config = make_config((2, 1, 4, 2))
    reference = isa.alu

    def wrong(name, a, b):
        out = reference(name, a, b)
        return out ^ np.uint32(1) if name == "xor" else out
    monkeypatch.setattr(isa, "alu", wrong)     # the emulator calls isa.alu
    seeds = [s for s in range(200) if "xor" in _mnemonics(random_program(s, config))]
    with pytest.raises(Divergence, match="differs at tiles"):
        for seed in seeds[:5]:
            compare(random_program(seed, config), simulation(config))


def test_a_wrong_emulator_lut_offset_is_caught(monkeypatch):
    """vlut's index offset is fuzzed: an emulator that drops it (the RTL adds it in its own
    gates) diverges."""
    reference = isa.lookup_index
    _check_a_wrong_emulator_is_caught(
        monkeypatch, "lookup_index",
        lambda a, length, offset=0, shift=0: reference(a, length, 0, shift))


def test_a_wrong_emulator_lut_requantize_is_caught(monkeypatch):
    """vlut's requantized index is fuzzed: an emulator that ignores the shift, indexing by
    a + rs (the RTL requantizes with a multiplier of its own in stage M), diverges."""
    reference = isa.lookup_index
    _check_a_wrong_emulator_is_caught(
        monkeypatch, "lookup_index",
        lambda a, length, offset=0, shift=0: reference(a, length, offset))


def test_a_wrong_emulator_vreq_acc_is_caught(monkeypatch):
    """vreq.acc's saturation is fuzzed: an emulator whose vreq.acc wraps as the other
    instructions' acc does (the RTL saturates in its own gates) diverges."""
    reference = isa.accumulate
    _check_a_wrong_emulator_is_caught(
        monkeypatch, "accumulate", lambda old, result, saturate=False: reference(old, result))


def _check_a_wrong_emulator_is_caught(monkeypatch, name, wrong, count=3):
    """With ``isa.<name>`` replaced by ``wrong`` in the emulator only, the lockstep comparison
    reports a divergence on each of the first ``count`` random programs (of 200) whose
    emulated final SRAM or registers the mistake changes; there must be that many."""
    config = make_config((2, 1, 4, 2))

    def final_state(case):
        result = MeshEmulator(case.program).run(max_cycles=20_000)
        return result.sram.tobytes() + result.registers.tobytes()

    seeds = []
    for seed in range(200):
        case = random_program(seed, config)
        right = final_state(case)
        with monkeypatch.context() as patch:
            patch.setattr(isa, name, wrong)
            if final_state(case) != right:
                seeds.append(seed)
        if len(seeds) == count:
            break
    assert len(seeds) == count, f"the generator exercises {name} too rarely"
    monkeypatch.setattr(isa, name, wrong)
    for seed in seeds:
        with pytest.raises(Divergence, match="differs at tiles"):
            compare(random_program(seed, config), simulation(config))


def test_programs_pack_offset_and_requantize_their_lookups():
    """The generator emits .pack on vreq and vlut, vlut with an index offset rs and with a
    requantized index (rs, shift), and vreq.acc, often."""
    seen, accumulating = set(), 0
    for seed in range(40):
        case = random_program(seed, make_config((2, 2, 8, 2)))
        seen |= _packing(case)
        accumulating += bool(_vreq_acc(case))
    assert {("vreq", True, False, False), ("vlut", True, True, False),
            ("vlut", True, False, False), ("vlut", False, True, False),
            ("vlut", False, True, True), ("vlut", True, True, True)} <= seen
    assert accumulating >= 10


def _packing(case):
    """(name, pack, nonzero rs, shift > 0) of the vreq and vlut instructions of ``case`` (the
    last two only for vlut: its index offset or requantize multiplier, and shift)."""
    return {(ins.opcode.name, bool(ins.pack), ins.opcode.name == "vlut" and ins.d != 0,
             ins.opcode.name == "vlut" and ins.imm6 != 0)
            for image in case.program.images for ins in map(isa.decode, image.instructions)
            if ins.opcode.name in isa.PACKABLE}


def _vreq_acc(case):
    """The vreq.acc (accumulate into the destination) words of ``case``."""
    return [w for image in case.program.images for w in image.instructions
            if isa.decode(w).opcode.name == "vreq" and isa.decode(w).acc
            and not isa.decode(w).red]


def _mnemonics(case):
    return {isa.decode(w).opcode.name for image in case.program.images
            for w in image.instructions}


def test_first_difference_names_the_cycle_and_both_sides():
    rtl = [(3, 0, 1), (5, 1, 2)]
    emulated = [(3, 0, 1), (6, 1, 2)]
    message = first_difference("retired instructions", rtl, emulated)
    assert message == ("retired instructions differ first in cycle 5: RTL [(5, 1, 2)], "
                       "emulator []")
    assert first_difference("x", rtl, list(rtl)) is None
    assert "cycle 6" in first_difference("x", rtl, rtl + [(6, 0, 0)])


def test_programs_are_valid_on_every_shape():
    """The generator's own contract, cheaply on the emulator: no trap, no deadlock."""
    rng = random.Random(7)
    for seed in range(40):
        key = rng.choice(list(CONFIGS))
        result = MeshEmulator(random_program(seed, make_config(key)).program).run(20_000)
        assert result.halted.all() and not result.trapped().size

"""Lockstep differential tests: RTL (Amaranth simulator) against the emulator, cycle for cycle.

Random valid route sets (multicast and merge trees on random colors, sources on cores and on
edge links) with random injection and random backpressure, drawn by hypothesis. Every wavelet
event must be identical in both models, and every wavelet must arrive exactly once wherever its
route leads, in order.
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fabric_cases import check_deliveries, random_case
from lockstep import Divergence, LateEmulator, LateFabric, LockstepSession
from mesh import MeshConfig

# Fabric configurations (width, height, colors, buffer_depth). One RTL simulation is built per
# configuration and reused for every case drawn for it.
GROUPS = {
    "small": [(1, 1, 2, 1), (2, 1, 3, 2), (1, 2, 2, 3), (2, 2, 4, 2), (2, 2, 1, 1)],
    "medium": [(3, 2, 3, 2), (2, 3, 2, 1), (3, 3, 4, 2)],
    "long": [(4, 1, 3, 2), (1, 4, 2, 1), (4, 2, 2, 3)],
}
EXAMPLES = {"small": 80, "medium": 60, "long": 60}   # 200 random cases per run

_sessions = {}


def session(width, height, colors, depth):
    key = (width, height, colors, depth)
    if key not in _sessions:
        _sessions[key] = LockstepSession(MeshConfig(width=width, height=height, colors=colors,
                                                    buffer_depth=depth))
    return _sessions[key]


@pytest.mark.parametrize("group", GROUPS)
def test_rtl_and_emulator_agree(group):
    @settings(max_examples=EXAMPLES[group], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(shape=st.sampled_from(GROUPS[group]), seed=st.integers(0, 2**32 - 1))
    def check(shape, seed):
        width, height, colors, depth = shape
        case = random_case(seed, width=width, height=height, colors=colors, buffer_depth=depth)
        _, _, received = session(*shape).run(case)
        check_deliveries(case, received)

    check()


def _busy_case():
    for seed in range(100):
        case = random_case(seed, width=3, height=2, colors=3, buffer_depth=2)
        if sum(map(len, case.streams.values())) >= 20:
            return case
    raise AssertionError("no busy case among the first 100 seeds")


def test_a_one_cycle_change_in_the_emulator_is_caught():
    case = _busy_case()
    with pytest.raises(Divergence, match=r"cycle \d+: .*: RTL .*, emulator "):
        session(3, 2, 3, 2).run(case, emulator=LateEmulator(case.config, case.routes))
    session(3, 2, 3, 2).run(case)  # and the same case passes unchanged


def test_a_one_cycle_change_in_the_rtl_is_caught():
    case = _busy_case()
    with pytest.raises(Divergence, match=r"cycle \d+: .*: RTL .*, emulator "):
        LockstepSession(case.config, LateFabric).run(case)

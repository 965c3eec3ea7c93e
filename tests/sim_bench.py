"""One Amaranth simulator per design, reused for many test bench jobs: constructing a
``Simulator`` costs seconds, a reset costs nothing.

A test module that builds RTL benches sets ``pytestmark = RTL_TEST_MARKS`` and keeps its benches
with :func:`kept`; conftest.py forgets them after each module and provides the
``collect_unused_components`` fixture."""

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

#: Amaranth warns about components built and never simulated, which construction-only tests do on
#: purpose; collecting them after each test keeps the warning inside the test it belongs to.
RTL_TEST_MARKS = [
    pytest.mark.filterwarnings(f"ignore::{UnusedElaboratable.__module__}."
                               f"{UnusedElaboratable.__qualname__}"),
    pytest.mark.usefixtures("collect_unused_components"),
]

_kept = {}


def kept(key, make):
    """What ``make()`` returned for ``key`` the first time in this test module (a
    :class:`Bench`, or a tuple holding one): kept until the module's tests are done."""
    if key not in _kept:
        _kept[key] = make()
    return _kept[key]


def drop_kept():
    """Forget every kept bench (conftest.py does this after each test module)."""
    _kept.clear()


class Bench:
    """A simulator of ``dut`` that runs one test bench job per call of :meth:`execute`,
    resetting the simulation (signals and memories) between jobs. ``clock``: give the ``sync``
    domain a clock (False for purely combinational designs)."""

    def __init__(self, dut, clock=True):
        self.dut = dut
        self.sim = Simulator(dut)
        if clock:
            self.sim.add_clock(1e-6)
        self._job = None
        self._used = False

    async def _testbench(self, ctx):
        return await self._job(ctx)

    def execute(self, job):
        """Run ``job`` (an async function of the testbench context) and return its result."""
        if self._used:
            self.sim.reset()
        else:
            self.sim.add_testbench(self._testbench)
        self._used = True
        outcome = {}

        async def wrapped(ctx):
            outcome["value"] = await job(ctx)
        self._job = wrapped
        self.sim.run()
        return outcome.get("value")

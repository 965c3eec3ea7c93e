"""One Amaranth simulator per design, reused for many test bench jobs: constructing a
``Simulator`` costs seconds, a reset costs nothing."""

from amaranth.sim import Simulator


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

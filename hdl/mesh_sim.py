"""Runs of whole programs on :class:`hdl.Mesh` in the Amaranth simulator (docs/ARCHITECTURE.md
section 10), with every cycle's retired instructions and wavelets recorded on request.

Constructing a simulator costs seconds, so a :class:`MeshSimulation` is built once per mesh
configuration and runs program after program: each run resets the simulation (registers and
memories), loads the program and runs it. Memories are loaded by setting their contents
directly (the load port costs a simulated cycle per word; the standalone Verilator runs use it,
and ``tests/test_core_rtl.py`` tests it); routes go through the route write port.
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from mesh import NUM_PORTS, Port, RunResult, color_bits, isa

from .mesh import Mesh

__all__ = ["MeshSimulation", "Trace"]


@dataclass
class Trace:
    """What happened in every cycle of a run, in the emulator's trace format: ``retired``
    (cycle, tile, pc); ``wavelets`` (cycle, tile, :class:`mesh.Port`, color, data) for every
    router output; ``core_sends`` (cycle, tile, color, data)."""
    retired: list = field(default_factory=list)
    wavelets: list = field(default_factory=list)
    core_sends: list = field(default_factory=list)


class _Observed(wiring.Component):
    """The mesh plus one wide signal per cycle of what the lockstep tests compare: reading one
    signal the compiled simulation computes is far faster than reading many."""

    def __init__(self, mesh, fields):
        self.mesh = mesh
        self._fields = fields
        super().__init__({})
        self.observed = Signal(len(Cat(*fields)))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mesh = self.mesh
        m.d.comb += self.observed.eq(Cat(*self._fields))
        return m


class MeshSimulation:
    """One Amaranth simulation of a ``config`` mesh, reused for many runs.

    ``trace``: record a :class:`Trace` of every run (slower). ``waves``: write a VCD of the
    run to this path (one run per simulation)."""

    def __init__(self, config, trace=False, waves=None):
        self.config = config
        self.mesh = Mesh(config)
        self.trace_enabled = trace
        self.waves = waves
        self.trace = None
        self._tiles = [tile for row in self.mesh.tiles for tile in row]
        self._cores = [tile.core for tile in self._tiles]
        top = self.mesh
        if trace:
            self._layout = self._observation_layout()
            top = _Observed(self.mesh, [signal for _, signal in self._layout])
            self._observed = top.observed
        self.sim = Simulator(top)
        self.sim.add_clock(1e-6)
        self._used = False
        self._job = None
        self.sim.add_testbench(self._testbench)

    # Observation --------------------------------------------------------------------------------

    def _observation_layout(self):
        """[(name, signal)] per tile: retire valid and pc; the core's send; each router output."""
        layout = []
        for tile in self._tiles:
            core = tile.core
            layout += [("retire", core.retire_valid), ("retire_pc", core.retire_pc),
                       ("send", core.tx.valid), ("send_color", core.tx.color),
                       ("send_data", core.tx.data)]
            for port in range(NUM_PORTS):
                link = tile.router.o[port]
                layout += [("valid", link.valid), ("color", link.color), ("data", link.data)]
        return layout

    def _record(self, cycle, value):
        """Decode one cycle's observation word into the trace."""
        trace = self.trace
        cb = color_bits(self.config.colors)
        pc_bits = len(self._cores[0].retire_pc)
        for tile in range(self.config.tiles):
            retire = value & 1
            value >>= 1
            pc = value & ((1 << pc_bits) - 1)
            value >>= pc_bits
            if retire:
                trace.retired.append((cycle, tile, pc))
            send = value & 1
            value >>= 1
            color = value & ((1 << cb) - 1)
            value >>= cb
            data = value & 0xFFFFFFFF
            value >>= 32
            if send:
                trace.core_sends.append((cycle, tile, color, data))
            for port in range(NUM_PORTS):
                valid = value & 1
                value >>= 1
                color = value & ((1 << cb) - 1)
                value >>= cb
                data = value & 0xFFFFFFFF
                value >>= 32
                if valid:
                    trace.wavelets.append((cycle, tile, Port(port), color, data))

    # Runs ---------------------------------------------------------------------------------------

    async def _testbench(self, ctx):
        if self._job is not None:
            await self._job(ctx)

    def run(self, program, max_cycles=100_000, stall_limit=200, progress=None,
            progress_every=1000):
        """Run ``program`` (a :class:`mesh.MeshProgram` for this configuration). Returns
        (:class:`mesh.RunResult`, status) with status "done", "trap", "no progress" or
        "cycle limit" (the same rules as the emulator and the Verilator runs)."""
        if program.config != self.config:
            raise ValueError(f"the program is for {program.config}, this simulation for "
                             f"{self.config}")
        outcome = {}

        async def job(ctx):
            outcome["value"] = await self._run(ctx, program, max_cycles, stall_limit,
                                               progress, progress_every)
        self._job = job
        self.trace = Trace() if self.trace_enabled else None
        if self._used:
            self.sim.reset()
        self._used = True
        if self.waves is not None:
            with self.sim.write_vcd(str(self.waves)):
                self.sim.run()
        else:
            self.sim.run()
        return outcome["value"]

    async def _run(self, ctx, program, max_cycles, stall_limit, progress, progress_every):
        mesh = self.mesh
        # Routes through the route write port (only the ones set: the reset state is empty).
        accept, out = program.routes.masks()
        for tile, color in zip(*np.nonzero(np.asarray(accept) | np.asarray(out))):
            ctx.set(mesh.route.valid, 1)
            ctx.set(mesh.route.tile, int(tile))
            ctx.set(mesh.route.color, int(color))
            ctx.set(mesh.route.accept, int(accept[tile][color]))
            ctx.set(mesh.route.out, int(out[tile][color]))
            await ctx.tick()
        ctx.set(mesh.route.valid, 0)
        for core, imem, sram in zip(self._cores, program.imem(), program.sram()):
            for memory, words in ((core.imem, imem), (core.sram, sram)):
                for address in np.flatnonzero(words).tolist():
                    ctx.set(memory.data[address], int(words[address]))

        ctx.set(mesh.run, 1)
        cycles = idle = 0
        status = "cycle limit"
        while cycles < max_cycles:
            if self.trace is not None:
                self._record(cycles, ctx.get(self._observed))
            idle = 0 if ctx.get(mesh.progress) else idle + 1
            await ctx.tick()
            cycles += 1
            if ctx.get(mesh.trap):
                status = "trap"
                break
            if ctx.get(mesh.done):
                status = "done"
                break
            if idle >= stall_limit:
                status = "no progress"
                break
            if progress is not None and cycles % progress_every == 0:
                progress(cycles)
        ctx.set(mesh.run, 0)
        return self._result(ctx, cycles), status

    def _result(self, ctx, cycles):
        mesh, cfg = self.mesh, self.config
        tiles = cfg.tiles
        sram = np.array([[ctx.get(core.sram.data[a]) for a in range(cfg.sram_words)]
                         for core in self._cores], dtype=np.uint32)
        registers = np.array([[ctx.get(r) for r in core.registers] for core in self._cores],
                             dtype=np.uint32)
        counters = np.array([[ctx.get(mesh.counters[t][k]) for k in range(len(isa.COUNTERS))]
                             for t in range(tiles)], dtype=np.uint32)
        halted = ctx.get(mesh.halted)
        return RunResult(
            cycles=cycles, sram=sram, counters=counters,
            halted=np.array([(halted >> t) & 1 for t in range(tiles)], dtype=bool),
            trap_cause=np.array([ctx.get(mesh.trap_cause[t]) for t in range(tiles)]),
            trap_pc=np.array([ctx.get(mesh.trap_pc[t]) for t in range(tiles)]),
            pc=np.array([ctx.get(mesh.pc[t]) for t in range(tiles)]),
            registers=registers)

"""cocotb tests of a whole mesh, ``wse_mesh`` from ``hdl.mesh_verilog`` (configuration
``designs.MESH_CONFIGS[SIM_TESTS_MESH]``, default "mesh"; run by ``test_mesh.py``).

:class:`MeshRun` drives a run through the ports as ``wafer/mesh_run.cpp`` does (section 10):
reset; with ``run`` low, every route of the program through the route write port (one per
cycle), then both memories of every tile through the load port (first every address with all
tiles enabled and zero data, since reset does not clear memories, then the program's non-zero
words with ``enable`` set only for the tiles that have one at that address); then the cycle
loop of ``tb.TB`` with ``run`` high from cycle 0 until ``done`` or ``trap`` is seen (the first
such cycle is the run's cycle count); then ``run`` low and every SRAM word of every tile through
the peek port (all tiles in parallel, one address per cycle). The result is a
:class:`mesh.RunResult`, compared field by field with ``emulator.MeshEmulator``.

Edge links: by default every inbound edge link is idle and every outbound one gets no credit
(nothing may leave the mesh). With ``edges=True`` every outbound edge link has a
:class:`tb.LinkMonitor` (so a stray wavelet is seen) and :meth:`MeshRun.inject` puts a
:class:`tb.LinkDriver` on an inbound one; :meth:`MeshRun.compare_with_emulator` then replays the
drivers' injections and the monitors' credits of every cycle into ``MeshEmulator.step`` and
requires the same wavelet on every outbound edge link and the same credits on every driven
inbound edge link in every cycle.
"""

import os
from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from mesh import Port, RouteTable, RunResult, Trap, isa
from mesh.builder import CoreBuilder, MeshBuilder
from mesh.isa import TrapCause

from . import designs
from .tb import TB, _read, _Writer, bursty_pause, never, pattern, random_pause
from .traffic import load_emulator

DESIGN = os.environ.get("SIM_TESTS_MESH", "mesh")
CFG = designs.MESH_CONFIGS[DESIGN]
COUNTER_NAMES = [name for name, _ in isa.COUNTERS]
IMEM, SRAM = 0, 1               # hdl.LoadTarget (not imported: no Amaranth in the simulator)
JUNK = 0xA5A5_5A5A              # on the load lanes of tiles whose enable bit is clear
EDGES = [ep for ep in designs.endpoints(CFG) if ep.link.port is not Port.RAMP]
EDGE = {(ep.link.x, ep.link.y, ep.link.port): ep for ep in EDGES}


def edge(x, y, port):
    """The :class:`designs.Endpoint` of the edge link of tile (x, y) on ``port``."""
    return EDGE[(x, y, port)]


def edge_index(ep):
    """Index of an edge endpoint in ``MeshEmulator.step``'s edge arrays."""
    return ep.index - CFG.tiles


class MeshControl:
    """A cycle-loop component for ``run`` and the peek port: ``run`` is high from cycle 0 until
    the cycle after ``done`` or ``trap`` is first seen (``stop_cycle``, the run's cycle count;
    ``status`` "done" or "trap"); then queued :meth:`peek` addresses go out one per cycle and
    each tile's word comes back in the next cycle (``peeked[address]``, a list per tile).

    In every cycle with ``run`` high it also records ``halted`` (the per-tile bits, state at the
    start of the cycle), every tile's ``pc`` and ``progress`` (``halted_log``, ``pc_log``,
    ``progress_log``, indexed by cycle)."""

    def __init__(self, dut, tiles):
        self.dut = dut
        self.tiles = tiles
        self.run = _Writer(dut.run)
        self.peek_addr = _Writer(dut.peek__addr)
        self.peek_data = [getattr(dut, f"peek__data__{t}") for t in range(tiles)]
        self.pcs = [getattr(dut, f"pc__{t}") for t in range(tiles)]
        self.stop_cycle = None
        self.status = None
        self.halted_log = []
        self.pc_log = []
        self.progress_log = []
        self.peeks = deque()
        self.peeked = {}
        self._current = None
        self._previous = None

    def peek(self, addresses):
        self.peeks.extend(addresses)

    def drive(self, cycle):
        self._current = None
        if self.stop_cycle is None:
            self.run.set(1)
            return
        self.run.set(0)
        if self.peeks:
            self._current = self.peeks.popleft()
            self.peek_addr.set(self._current)

    def sample(self, cycle):
        if self._previous is not None:
            self.peeked[self._previous] = [_read(h, cycle, "peek data") for h in self.peek_data]
        self._previous = self._current
        if self.stop_cycle is None:
            self.halted_log.append(_read(self.dut.halted, cycle, "halted"))
            self.pc_log.append([_read(h, cycle, "pc") for h in self.pcs])
            self.progress_log.append(_read(self.dut.progress, cycle, "progress"))
            if _read(self.dut.trap, cycle, "trap"):
                self.stop_cycle, self.status = cycle, "trap"
            elif _read(self.dut.done, cycle, "done"):
                self.stop_cycle, self.status = cycle, "done"


class MeshRun(TB):
    """One run of ``program`` (a :class:`mesh.MeshProgram` for ``CFG``) on ``wse_mesh``.

    ``edges``: monitors on every outbound edge link (``monitor_pause(endpoint)`` makes each one's
    pause generator) and drivers where :meth:`inject` asks; otherwise the edges are tied off."""

    def __init__(self, dut, program, *, edges=False, monitor_pause=None):
        super().__init__(dut, CFG)
        if program.config != CFG:
            raise ValueError(f"{program.name} is for {program.config}, the design is {CFG}")
        self.program = program
        self.edges = edges
        self.drv = {}
        self.mon = {}
        self.control = MeshControl(dut, CFG.tiles)
        self.components.append(self.control)
        for ep in EDGES:
            if edges:
                pause = monitor_pause(ep) if monitor_pause else never()
                self.mon[ep.index] = self.monitor(ep.outbound, pause=pause, name=ep.outbound)
            else:
                self.tie_off(f"{ep.outbound}__credit")
        self.result = None

    def inject(self, ep, color, values, *, pause=None):
        """Queue ``values`` of ``color`` on inbound edge link ``ep`` (a driver per link, made on
        first use, with ``pause`` as its pause generator)."""
        if not self.edges:
            raise ValueError("inject needs a MeshRun with edges=True")
        if ep.index not in self.drv:
            self.drv[ep.index] = self.driver(ep.inbound, pause=pause, name=ep.inbound)
        for value in values:
            self.drv[ep.index].send(color, int(value))

    def _tie_inputs(self):
        for ep in EDGES:
            if ep.index not in self.drv:
                self.tie_off(f"{ep.inbound}__valid", f"{ep.inbound}__color",
                             f"{ep.inbound}__data")

    async def start(self):
        """Reset, write the routes and load both memories of every tile (``run`` low), then
        start the cycle loop with ``run`` high from cycle 0; returns at the start of cycle 0."""
        dut, clk = self.dut, self.dut.clk
        self._tie_inputs()
        route = {name: _Writer(getattr(dut, f"route__{name}"))
                 for name in ("valid", "tile", "color", "accept", "out")}
        load = {name: _Writer(getattr(dut, f"load__{name}"))
                for name in ("valid", "target", "addr", "enable")}
        data = [_Writer(getattr(dut, f"load__data__{t}")) for t in range(CFG.tiles)]
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(clk)
        dut.rst.value = 0
        accept, out = (np.asarray(m) for m in self.program.routes.masks())
        for tile, color in zip(*np.nonzero(accept | out)):
            route["valid"].set(1)
            route["tile"].set(int(tile))
            route["color"].set(int(color))
            route["accept"].set(int(accept[tile, color]))
            route["out"].set(int(out[tile, color]))
            await RisingEdge(clk)
        route["valid"].set(0)
        for target, memory in ((IMEM, self.program.imem()), (SRAM, self.program.sram())):
            load["valid"].set(1)
            load["target"].set(target)
            # Clear the whole memory of every tile (reset does not)...
            load["enable"].set((1 << CFG.tiles) - 1)
            for t in range(CFG.tiles):
                data[t].set(0)
            for address in range(memory.shape[1]):
                load["addr"].set(address)
                await RisingEdge(clk)
            # ... then write the non-zero words, each address into the tiles that have one
            # (as wafer/mesh_run.cpp loads); a disabled tile's lane carries a word it must not
            # take.
            for address in np.flatnonzero(memory.any(axis=0)).tolist():
                load["addr"].set(address)
                load["enable"].set(int(sum(1 << t for t in range(CFG.tiles)
                                           if memory[t, address])))
                for t in range(CFG.tiles):
                    data[t].set(int(memory[t, address]) or JUNK)
                await RisingEdge(clk)
        load["valid"].set(0)
        self._loop = cocotb.start_soon(self._run())
        while self.cycle < 0:
            await RisingEdge(clk)

    async def finish(self, *, timeout=5000, drain=False):
        """Wait for ``done`` or ``trap``, read the per-tile outputs, optionally wait until the
        edge agents are quiet (``drain``), then read every SRAM through the peek port. Returns
        (and keeps as ``self.result``) the :class:`mesh.RunResult`."""
        c, dut, tiles = self.control, self.dut, CFG.tiles
        await self.wait(lambda: c.stop_cycle is not None, timeout=timeout,
                        what=f"{self.program.name}: done or trap")
        cycle = self.cycle
        halted = _read(dut.halted, cycle, "halted")
        result = RunResult(
            cycles=c.stop_cycle,
            sram=None,
            counters=np.array([[_read(getattr(dut, f"counters__{t}__{k}"), cycle, "counter")
                                for k in range(len(COUNTER_NAMES))] for t in range(tiles)],
                              dtype=np.uint32),
            halted=np.array([bool(halted >> t & 1) for t in range(tiles)]),
            trap_cause=np.array([_read(getattr(dut, f"trap_cause__{t}"), cycle, "trap_cause")
                                 for t in range(tiles)]),
            trap_pc=np.array([_read(getattr(dut, f"trap_pc__{t}"), cycle, "trap_pc")
                              for t in range(tiles)]),
            pc=np.array([_read(getattr(dut, f"pc__{t}"), cycle, "pc") for t in range(tiles)]))
        if drain:
            await self.drain(timeout=timeout)
        c.peek(range(CFG.sram_words))
        await self.wait(lambda: len(c.peeked) == CFG.sram_words, timeout=CFG.sram_words + 20,
                        what="the SRAM read-back", poll=16)
        result.sram = np.array([c.peeked[a] for a in range(CFG.sram_words)],
                               dtype=np.uint32).T.copy()
        self.result = result
        self.log.info("%s: %s after %d cycles", self.program.name, c.status, result.cycles)
        return result

    # Checks -----------------------------------------------------------------------------------

    def received(self, ep):
        """[(color, data)] that left the mesh on outbound edge link ``ep``, in order."""
        return [(c, d) for _, c, d in self.mon[ep.index].received]

    def check_result(self, expected):
        """The RTL's :class:`RunResult` equals ``expected`` (cycles, SRAM, counters, halted,
        trap_cause, trap_pc, pc); nothing to do when ``expected`` is None (no emulator)."""
        if expected is None:
            return
        differ = self.result.same_as(expected)
        if differ:
            lines = list(differ)
            if not np.array_equal(self.result.counters, expected.counters):
                for t in np.unique(np.argwhere(self.result.counters != expected.counters)[:, 0]):
                    rtl = dict(zip(COUNTER_NAMES, self.result.counters[t].tolist()))
                    emu = dict(zip(COUNTER_NAMES, expected.counters[t].tolist()))
                    lines.append(f"tile {t} counters: RTL {rtl}, emulator {emu}")
            wrong = np.argwhere(self.result.sram != expected.sram)
            for t, a in wrong[:4]:
                lines.append(f"tile {t} SRAM[{a}]: RTL {int(self.result.sram[t, a]):#x}, "
                             f"emulator {int(expected.sram[t, a]):#x}")
            raise AssertionError(f"{self.program.name}: RTL and emulator results differ:\n  "
                                 + "\n  ".join(lines))

    def compare_with_emulator(self):
        """Replay every cycle of this run into ``MeshEmulator.step`` (the drivers' injections
        and the monitors' credits on the edge links; idle edges without agents) and require, in
        every cycle, the same wavelet on every outbound edge link and the same credits on every
        driven inbound edge link, and while ``run`` was high the same per-tile ``halted`` bits
        and ``pc`` and the same ``progress`` (some core retired an instruction or moved a vector
        stage, or some router sent a wavelet); then the same final state, reached after exactly
        the RTL's cycle count. After a trap the emulator is not stepped on (its other cores
        would go on, the RTL's are frozen). Returns the number of cycles compared (None when
        the emulator is disabled, ``SIM_TESTS_EMULATOR=0``)."""
        if load_emulator()[0] is None:
            self.log.warning("no emulator comparison: %s", load_emulator()[1])
            return None
        from emulator import MeshEmulator

        colors, n, tiles = CFG.colors, len(EDGES), CFG.tiles
        c = self.control
        cycles = self.cycle
        valid = np.zeros((cycles, n), dtype=bool)
        color = np.zeros((cycles, n), dtype=np.intp)
        data = np.zeros((cycles, n), dtype=np.uint32)
        credit = np.zeros((cycles, n, colors), dtype=bool)
        for index, drv in self.drv.items():
            for t, col, d in drv.sent:
                if t < cycles:
                    e = index - tiles
                    valid[t, e], color[t, e], data[t, e] = True, col, d
        for index, mon in self.mon.items():
            for t, bits in mon.credit_log:
                if t < cycles:
                    credit[t, index - tiles] = [bool(bits >> k & 1) for k in range(colors)]
        rtl_out = {(t, index): (col, d) for index, mon in self.mon.items()
                   for t, col, d in mon.received}
        rtl_credit = {(t, index): bits for index, drv in self.drv.items()
                      for t, bits in drv.credit_log}
        weights = 1 << np.arange(tiles)

        emu = MeshEmulator(self.program)
        problems = []
        final = final_at = None
        for t in range(cycles):
            if t < len(c.halted_log):
                want = int(weights[emu.cores.halted].sum())
                if want != c.halted_log[t]:
                    problems.append(f"cycle {t} halted: emulator {want:#x}, RTL "
                                    f"{c.halted_log[t]:#x}")
                want = emu.cores.pc.tolist()
                if want != c.pc_log[t]:
                    problems.append(f"cycle {t} pc: emulator {want}, RTL {c.pc_log[t]}")
            step = emu.step(valid[t], color[t], data[t], credit[t])
            if t < len(c.progress_log):
                want = int(bool(emu.cores.progressed or step.fabric.sent_valid.any()))
                if want != c.progress_log[t]:
                    problems.append(f"cycle {t} progress: emulator {want}, RTL "
                                    f"{c.progress_log[t]}")
            for ep in EDGES:
                e = edge_index(ep)
                want = (int(step.edge_out_color[e]), int(step.edge_out_data[e])) \
                    if step.edge_out_valid[e] else None
                got = rtl_out.get((t, ep.index))
                if want != got:
                    problems.append(f"cycle {t} {ep.outbound}: emulator {_fmt(want)}, RTL "
                                    f"{_fmt(got)}")
            for index in self.drv:
                e = index - tiles
                want = sum(1 << k for k in range(colors) if step.edge_in_credit[e, k])
                got = rtl_credit.get((t, index), 0)
                if want != got:
                    problems.append(f"cycle {t} {EDGES[e].inbound}__credit: emulator "
                                    f"{want:#x}, RTL {got:#x}")
            if problems:
                break
            if final is None and (emu.done or emu.cores.trapped):
                final, final_at = emu.result(), t + 1
                if emu.cores.trapped:
                    break
        if problems:
            raise AssertionError(f"{self.program.name}: RTL and emulator differ (same edge agent "
                                 f"decisions replayed), first divergent cycle {t}:\n  "
                                 + "\n  ".join(problems[:16]))
        assert final is not None, f"the emulator neither finished nor trapped in {cycles} cycles"
        assert final_at == c.stop_cycle, \
            f"the emulator ended in cycle {final_at}, the RTL in cycle {c.stop_cycle}"
        self.check_result(final)
        self.log.info("%s: RTL matches emulator.MeshEmulator cycle by cycle over %d cycles",
                      self.program.name, min(t + 1, cycles))
        return min(t + 1, cycles)


def _fmt(wavelet):
    return "idle" if wavelet is None else f"color {wavelet[0]} data {wavelet[1]:#010x}"


def emulate(program):
    """``MeshEmulator(program).run()``; a trap gives its result too. None when the emulator is
    disabled (``SIM_TESTS_EMULATOR=0``)."""
    if load_emulator()[0] is None:
        return None
    from emulator import MeshEmulator

    try:
        return MeshEmulator(program).run()
    except Trap as trap:
        return trap.result


async def run_kernel(dut, name, **sizes):
    """Kernel ``name`` of :mod:`programs.kernels` on the RTL and on the emulator: the same
    result, and the outputs numpy expects."""
    from programs.kernels import kernel

    k = kernel(name, CFG, seed=designs.seed(), **sizes)
    tb = MeshRun(dut, k.program)
    await tb.start()
    result = await tb.finish()
    assert tb.control.status == "done", f"{name}: the run ended by {tb.control.status}"
    problems = k.check(result)
    assert not problems, "\n".join(problems)
    tb.check_result(emulate(k.program))
    tb.compare_with_emulator()
    tb.log.info("%s %s: %d cycles, %d MACs, every SRAM word and counter as the emulator's",
                name, CFG.shape, result.cycles, int(result.counter("macs").sum()))
    tb.stop()
    return tb


# Scenarios --------------------------------------------------------------------------------------

@cocotb.test()
async def allreduce(dut):
    """programs.kernels.allreduce (n=16): row chains east, a column chain south, multicasts
    back; cycle count, counters and every SRAM word as the emulator's."""
    await run_kernel(dut, "allreduce", n=16)


@cocotb.test()
async def gemv(dut):
    """programs.kernels.gemv (8 rows x 64 int8 columns per core): column multicast of x,
    vdot4.sum per row, row reduction; as the emulator."""
    await run_kernel(dut, "gemv", rows_per_core=8, cols_per_core=64)


@cocotb.test()
async def small_kernels(dut):
    """The other kernels of programs.kernels: vector_add, dot (256 int8), broadcast (a row
    multicast) and column_reduce; each as numpy and as the emulator. First, every core stores
    what ``tid`` gives it (x, y, width, height: the position inputs wse_mesh wires to each
    wse_tile instance)."""
    mb = MeshBuilder(CFG, "positions")
    core = CoreBuilder("positions")
    where = core.alloc("tid", 4)
    for k in range(4):
        core.tid(1, k)
        core.st(1, where + k, 0)
    core.halt()
    mb.place(core, mb.all_tiles())
    tb = MeshRun(dut, mb.build())
    await tb.start()
    result = await tb.finish()
    for x, y in mb.all_tiles():
        got = result.sram[CFG.tile_index(x, y), where:where + 4].tolist()
        assert got == [x, y, CFG.width, CFG.height], f"tid on tile ({x},{y}) gave {got}"
    tb.compare_with_emulator()
    tb.stop()
    await run_kernel(dut, "vector_add", n=16)
    await run_kernel(dut, "dot", n=256)
    await run_kernel(dut, "broadcast", n=16)
    await run_kernel(dut, "column_reduce", n=16)


@cocotb.test()
async def trap(dut):
    """Core (1, 0) traps (a vector past the end of its SRAM) while core (0, 0) is in a loop
    and core (0, 1) waits for a wavelet that never comes: ``trap`` rises, ``done`` does not,
    every core freezes; cycles, pcs, trap state, counters and SRAM as the emulator's."""
    mb = MeshBuilder(CFG, "mesh_trap")
    looper = mb.core(0, 0, "looper")
    looper.li(1, 1000)
    looper.label("loop")
    looper.addi(2, 2, 3)
    looper.st(2, 5, 0)
    looper.dbnz(1, "loop")
    looper.halt()
    bad = mb.core(1, 0, "trapper")
    bad.li(1, 0x99)
    bad.st(1, 7, 0)
    bad.mem_vector(0, CFG.sram_words - 4, 8)
    bad.mem_vector(2, 0, 8)
    bad.label("bad")
    bad.vmov(2, 0)
    bad.halt()
    waiter = mb.core(0, 1, "waiter")
    mb.routes.set(0, 1, 0, inputs=Port.N, outputs=Port.RAMP)
    mb.routes.set(0, 0, 0, inputs=Port.RAMP, outputs=Port.S)
    waiter.recv(1, 0, 0)
    waiter.halt()
    program = mb.build()
    tb = MeshRun(dut, program)
    await tb.start()
    result = await tb.finish()
    assert tb.control.status == "trap", f"the run ended by {tb.control.status}"
    trapper = CFG.tile_index(1, 0)
    assert result.trap_cause[trapper] == TrapCause.SRAM_RANGE
    assert result.trap_pc[trapper] == bad.image().symbols["bad"]
    assert not result.halted[CFG.tile_index(0, 0)], "the looping core halted"
    assert result.sram[trapper, 7] == 0x99
    tb.check_result(emulate(program))
    tb.compare_with_emulator()
    tb.stop()


def edge_program():
    """Three flows through the edges of a W x H mesh (W, H >= 2):

    * west_in[0] color 0 -> core (0,0): stores the stream (FIN -> memory), adds its vector b
      and sends the sums on color 1 along row 0 to core (W-1,0), which multiplies them by 3
      (vmul by a register) and sends them on color 2 out of east_out[0];
    * north_in[W-1] color 3 down column W-1 -> core (W-1,H-1): a scalar recv / add / send
      loop sending the running sums on color 4 out of south_out[W-1], then storing the total;
    * core (0,H-1) sends its vector on color 5 out of west_out[H-1].

    Returns the program and the sizes and data it uses."""
    w, h = CFG.width, CFG.height
    rng = np.random.default_rng(designs.seed() + 10)
    n_a, n_b, n_c, factor = 24, 16, 12, 3
    b = rng.integers(-(1 << 31), 1 << 31, n_a, dtype=np.int64)
    vc = rng.integers(-(1 << 31), 1 << 31, n_c, dtype=np.int64)
    routes = RouteTable(CFG)
    routes.open_edge(0, 0, Port.W)
    routes.open_edge(w - 1, 0, Port.E)
    routes.open_edge(w - 1, 0, Port.N)
    routes.open_edge(w - 1, h - 1, Port.S)
    routes.open_edge(0, h - 1, Port.W)
    routes.set(0, 0, 0, inputs=Port.W, outputs=Port.RAMP)
    routes.set(0, 0, 1, inputs=Port.RAMP, outputs=Port.E)
    for x in range(1, w - 1):
        routes.set(x, 0, 1, inputs=Port.W, outputs=Port.E)
    routes.set(w - 1, 0, 1, inputs=Port.W, outputs=Port.RAMP)
    routes.set(w - 1, 0, 2, inputs=Port.RAMP, outputs=Port.E)
    for y in range(h - 1):
        routes.set(w - 1, y, 3, inputs=Port.N, outputs=Port.S)
    routes.set(w - 1, h - 1, 3, inputs=Port.N, outputs=Port.RAMP)
    routes.set(w - 1, h - 1, 4, inputs=Port.RAMP, outputs=Port.S)
    routes.set(0, h - 1, 5, inputs=Port.RAMP, outputs=Port.W)

    mb = MeshBuilder(CFG, "edge_streams")
    mb.routes = routes
    first = mb.core(0, 0, "edge.first")
    raw, vb = first.alloc("raw", n_a), first.alloc("b", n_a)
    first.fabric_in(0, 0, n_a)
    first.mem_vector(2, raw, n_a)
    first.vmov(2, 0)                    # raw = the stream
    first.mem_vector(0, raw, n_a)
    first.mem_vector(1, vb, n_a)
    first.fabric_out(2, 1, n_a)
    first.vadd(2, 0, 1)                 # send raw + b
    first.halt()
    mb.data(0, 0, vb, (b & 0xFFFFFFFF).astype(np.uint32))
    last = mb.core(w - 1, 0, "edge.scale")
    last.fabric_in(0, 1, n_a)
    last.fabric_out(2, 2, n_a)
    last.li(5, factor)
    last.vmul(2, 0, "r5")
    last.halt()
    summer = mb.core(w - 1, h - 1, "edge.sum")
    total = summer.alloc("total", 1)
    summer.li(3, n_b)
    summer.label("loop")
    summer.recv(1, 0, 3)
    summer.add(2, 2, 1)
    summer.send(2, 0, 4)
    summer.dbnz(3, "loop")
    summer.st(2, total, 0)
    summer.halt()
    sender = mb.core(0, h - 1, "edge.send")
    v = sender.alloc("v", n_c)
    sender.mem_vector(0, v, n_c)
    sender.fabric_out(2, 5, n_c)
    sender.vmov(2, 0)
    sender.halt()
    mb.data(0, h - 1, v, (vc & 0xFFFFFFFF).astype(np.uint32))
    return mb.build(), dict(n_a=n_a, n_b=n_b, factor=factor, b=b, vc=vc, raw=raw, total=total)


async def edge_run(dut, label, seeds):
    """One run of :func:`edge_program` with fresh data; ``seeds`` (a random.Random) makes the
    agents' pause generators, or None for agents that never pause. Checks every wavelet that
    leaves the mesh and the stored results against numpy, then the whole run cycle by cycle
    against the emulator. Returns the bench."""
    program, p = edge_program()
    w, h = CFG.width, CFG.height
    salt = 0 if seeds is None else seeds.randrange(1 << 16)
    rng = np.random.default_rng(designs.seed() + 11 + salt)
    a = rng.integers(-(1 << 31), 1 << 31, p["n_a"], dtype=np.int64)
    s = rng.integers(-(1 << 20), 1 << 20, p["n_b"], dtype=np.int64)
    east, south, west = edge(w - 1, 0, Port.E), edge(w - 1, h - 1, Port.S), edge(0, h - 1, Port.W)
    if seeds is None:
        pauses, inject_pause = {}, [never(), never()]
    else:
        pauses = {east.index: bursty_pause(seeds.random(), max_run=6, busy=0.5),
                  south.index: random_pause(0.5, seeds.random()),
                  west.index: pattern([1, 1, 0])}
        inject_pause = [random_pause(0.4, seeds.random()), random_pause(0.6, seeds.random())]
    tb = MeshRun(dut, program, edges=True,
                 monitor_pause=lambda ep: pauses.get(ep.index, never()))
    tb.inject(edge(0, 0, Port.W), 0, (a & 0xFFFFFFFF).astype(np.uint32), pause=inject_pause[0])
    tb.inject(edge(w - 1, 0, Port.N), 3, (s & 0xFFFFFFFF).astype(np.uint32),
              pause=inject_pause[1])
    await tb.start()
    result = await tb.finish(drain=True)
    assert tb.control.status == "done", f"{label}: the run ended by {tb.control.status}"

    def u32(x):
        return [int(v) for v in (np.asarray(x, dtype=np.int64) & 0xFFFFFFFF)]

    expect = {east.index: [(2, v) for v in u32((a + p["b"]) * p["factor"])],
              south.index: [(4, v) for v in u32(np.cumsum(s))],
              west.index: [(5, v) for v in u32(p["vc"])]}
    for ep in EDGES:
        got, want = tb.received(ep), expect.get(ep.index, [])
        if got != want:
            at = next((i for i, (g, x) in enumerate(zip(got, want)) if g != x),
                      min(len(got), len(want)))
            raise AssertionError(f"{label}: {ep.outbound}: {len(got)} wavelets, expected "
                                 f"{len(want)}; first difference at {at}")
    first, summer = CFG.tile_index(0, 0), CFG.tile_index(w - 1, h - 1)
    assert result.sram[first, p["raw"]:p["raw"] + p["n_a"]].tolist() == u32(a), \
        f"{label}: the stream stored by core (0,0)"
    assert int(result.sram[summer, p["total"]]) == u32([s.sum()])[0], \
        f"{label}: the total stored by core ({w - 1},{h - 1})"
    stalls = {name: int(result.counter(name).sum()) for name in ("stall_in", "stall_out")}
    if seeds is None:
        assert stalls["stall_out"] == 0, f"{label}: stall_out without backpressure: {stalls}"
    else:
        assert all(stalls.values()), f"{label}: the pauses caused no stalls: {stalls}"
    cycles = tb.compare_with_emulator()
    tb.log.info("edge_streams %s (%s): %d run cycles, %s compared, stalls %s", CFG.shape,
                label, result.cycles, cycles, stalls)
    tb.stop()
    return tb


@cocotb.test()
async def edge_streams(dut):
    """Wavelets injected on two inbound edge links by drivers and drained from three outbound
    edge links by monitors (:func:`edge_program`): once with agents that never pause, then with
    random idle cycles on the drivers and backpressure on the monitors for three pause seeds.
    Every wavelet leaving the mesh as numpy expects, cycle for cycle as the emulator replaying
    the same injections and credits, and the final state as the emulator's."""
    await edge_run(dut, "no pauses", None)
    for k in range(3):
        await edge_run(dut, f"pauses {k}", designs.rng(f"mesh-edges-{k}"))

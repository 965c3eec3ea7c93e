"""Lockstep differential harness: the same traffic on the RTL fabric (Amaranth simulator) and on
the emulator, compared every cycle.

Each model is driven by its own pair of agents built from the same seed. An agent's decisions in
a cycle depend only on its own state, so as long as the two fabrics agree the two agent pairs
stay identical; the first cycle in which any wavelet event (tile, port, color, data), any credit
on an external link, or any wavelet leaving the fabric differs raises :class:`Divergence`.

Building an Amaranth simulation of a fabric takes seconds while a case runs in a fraction of
that, so a :class:`LockstepSession` keeps one simulation per configuration and runs case after
case in it: reset, load the case's routes through the route write port, run the traffic.
"""

import numpy as np
from amaranth import Cat, Module, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import wiring
from amaranth.sim import Simulator

from emulator import FabricEmulator, TrafficSink, TrafficSource
from hdl import Fabric
from mesh import NUM_PORTS, Port, color_bits, external_links
from mesh.wavelet import DATA_BITS


class Divergence(AssertionError):
    pass


def rtl_link(fabric, link, direction):
    """The member of the RTL fabric that carries external link ``link`` ("in" or "out")."""
    if link.port is Port.RAMP:
        return getattr(fabric, f"ramp_{direction}")[link.y][link.x]
    position = link.x if link.port in (Port.N, Port.S) else link.y
    return getattr(fabric, f"{link.side}_{direction}")[position]


def _agents(case, n_links):
    return (TrafficSource(case.config, n_links, case.streams, offer_rate=case.offer_rate,
                          seed=case.seed),
            TrafficSink(case.config, n_links, accept_rate=case.accept_rate, seed=case.seed + 1))


def _bits(row):
    return sum(1 << i for i, bit in enumerate(row) if bit)


class _Job:
    def __init__(self, case, emulator):
        self.case, self.emulator = case, emulator
        self.result = self.error = None
        self.done = False


class LockstepSession:
    """One RTL simulation of a fabric for ``config``, reused for many cases.

    ``make_fabric(config)`` builds the RTL (the mutation tests pass a deliberately wrong one);
    it must expose the members of :class:`hdl.Fabric` and its ``routers``.
    """

    def __init__(self, config, make_fabric=Fabric, *, max_cycles=3000, stall_limit=200):
        self.config = config
        self.max_cycles, self.stall_limit = max_cycles, stall_limit
        self.fabric = make_fabric(config)
        self.links = external_links(config)
        self._ins = [rtl_link(self.fabric, link, "in") for link in self.links]
        self._outs = [rtl_link(self.fabric, link, "out") for link in self.links]
        self._routers = [self.fabric.routers[y][x]
                         for y in range(config.height) for x in range(config.width)]
        self._reset = Signal()
        # One ctx.set and one ctx.get per cycle, of signals the compiled simulation computes:
        # each call costs far more than its width, and an expression is evaluated slowly.
        drive = Cat(*(Cat(link.valid, link.color, link.data) for link in self._ins),
                    *(link.credit for link in self._outs))
        observe = Cat(*(link.credit for link in self._ins),
                      *(Cat(link.valid, link.color, link.data) for link in self._outs),
                      *(Cat(router.o[p].valid, router.o[p].color, router.o[p].data)
                        for router in self._routers for p in range(NUM_PORTS)))
        self._drive = Signal(len(drive))
        self._observe = Signal(len(observe))
        harness = Module()
        harness.submodules.fabric = ResetInserter(self._reset)(self.fabric)
        harness.d.comb += [drive.eq(self._drive), self._observe.eq(observe)]
        self._job = None
        self._sim = Simulator(harness)
        self._sim.add_clock(1e-6)
        self._sim.add_testbench(self._serve, background=True)

    def run(self, case, emulator=None):
        """Run ``case`` (a fabric_cases.FabricCase for this config) on both models. Returns
        (cycles, events, received): events are the RTL's (cycle, tile, port, color, data),
        received what the sinks got. ``emulator`` replaces the emulator (mutation tests)."""
        assert case.config == self.config
        job = self._job = _Job(case, emulator or FabricEmulator(case.config, case.routes))
        while not job.done:
            self._sim.advance()
        if job.error is not None:
            raise job.error
        return job.result

    def _pack_drive(self, valid, color, data, credits):
        cbits, colors = color_bits(self.config.colors), self.config.colors
        width = 1 + cbits + DATA_BITS
        packed = 0
        for i, (v, c, d) in enumerate(zip(valid.tolist(), color.tolist(), data.tolist())):
            packed |= (v | c << 1 | d << (1 + cbits)) << (i * width)
        base = len(self._ins) * width
        for i, row in enumerate(credits):
            packed |= _bits(row) << (base + i * colors)
        return packed

    def _unpack_observed(self, packed):
        cbits, colors = color_bits(self.config.colors), self.config.colors
        n_links = len(self.links)
        in_credit = np.zeros((n_links, colors), dtype=bool)
        for i in range(n_links):
            for c in range(colors):
                in_credit[i, c] = packed >> (i * colors + c) & 1
        packed >>= n_links * colors
        width = 1 + cbits + DATA_BITS

        def link(word):
            return word & 1, word >> 1 & ((1 << cbits) - 1), word >> (1 + cbits) & 0xFFFFFFFF

        outs = [link(packed >> (i * width)) for i in range(n_links)]
        out_valid = np.array([o[0] for o in outs], dtype=bool)
        out_color = np.array([o[1] for o in outs])
        out_data = np.array([o[2] for o in outs], dtype=np.uint32)
        packed >>= n_links * width
        router_out = []
        for tile in range(self.config.tiles):
            row = []
            for port in range(NUM_PORTS):
                v, c, d = link(packed >> ((tile * NUM_PORTS + port) * width))
                row.append((c, d) if v else None)
            router_out.append(row)
        return in_credit, out_valid, out_color, out_data, router_out

    async def _serve(self, ctx):
        while True:
            job = self._job
            if job is None or job.done:
                await ctx.tick()
                continue
            try:
                await self._load(ctx, job.case)
                job.result = await self._lockstep(ctx, job.case, job.emulator)
            except Exception as error:  # handed to run(); the next case starts with a reset
                job.error = error
            job.done = True

    async def _load(self, ctx, case):
        ctx.set(self._drive, 0)  # the previous case left its last cycle's inputs driven
        ctx.set(self._reset, 1)
        await ctx.tick()
        ctx.set(self._reset, 0)
        port = self.fabric.route
        for x, y, color, route in case.routes:
            ctx.set(port.valid, 1)
            ctx.set(port.tile, self.config.tile_index(x, y))
            ctx.set(port.color, color)
            ctx.set(port.accept, route.accept_mask)
            ctx.set(port.out, route.output_mask)
            await ctx.tick()
        ctx.set(port.valid, 0)

    async def _lockstep(self, ctx, case, emu):
        config, links = self.config, self.links
        n_links = len(links)
        emu_source, emu_sink = _agents(case, n_links)
        rtl_source, rtl_sink = _agents(case, n_links)
        events = []

        def fail(cycle, what, rtl_value, emu_value):
            raise Divergence(f"cycle {cycle}: {what}: RTL {rtl_value}, emulator {emu_value}\n"
                             f"{case.describe()}")

        idle = 0
        for cycle in range(self.max_cycles):
            valid, color, data = emu_source.drive()
            result = emu.step(valid, color, data, emu_sink.credits())
            emu_source.update(result.in_credit)
            emu_sink.update(result.out_valid, result.out_color, result.out_data, cycle)

            valid, color, data = rtl_source.drive()
            credits = rtl_sink.credits()
            ctx.set(self._drive, self._pack_drive(valid, color, data, credits))
            observed = self._unpack_observed(ctx.get(self._observe))
            in_credit, out_valid, out_color, out_data, router_out = observed

            sent = 0
            for tile in range(config.tiles):
                for port in range(NUM_PORTS):
                    rtl_event = router_out[tile][port]
                    emu_event = (int(result.sent_color[tile, port]),
                                 int(result.sent_data[tile, port])) \
                        if result.sent_valid[tile, port] else None
                    if rtl_event != emu_event:
                        x, y = config.tile_xy(tile)
                        fail(cycle, f"tile ({x},{y}) output {Port(port).name} sends "
                                    f"(color, data)", rtl_event, emu_event)
                    if rtl_event is not None:
                        sent += 1
                        events.append((cycle, tile, port, *rtl_event))
            if not np.array_equal(in_credit, result.in_credit):
                fail(cycle, "credits on inbound external links (link, color)",
                     list(zip(*in_credit.nonzero())), list(zip(*result.in_credit.nonzero())))
            expected = result.out_valid
            if not (np.array_equal(out_valid, expected)
                    and np.array_equal(out_color[expected], result.out_color[expected])
                    and np.array_equal(out_data[expected], result.out_data[expected])):
                fail(cycle, "wavelets on outbound external links", out_valid.nonzero(),
                     expected.nonzero())

            rtl_source.update(in_credit)
            rtl_sink.update(out_valid, out_color, out_data, cycle)
            await ctx.tick()

            if emu_source.done and emu.held() == 0 and emu_sink.held == 0:
                if rtl_sink.received != emu_sink.received:
                    raise Divergence(f"the sinks received different wavelets\n{case.describe()}")
                return cycle + 1, events, rtl_sink.received
            idle = 0 if sent or valid.any() or credits.any() else idle + 1
            if idle >= self.stall_limit:
                raise AssertionError(f"no progress for {idle} cycles at cycle {cycle}:\n"
                                     + "\n".join(emu.report()) + "\n" + case.describe())
        raise AssertionError(f"not finished after {self.max_cycles} cycles\n{case.describe()}")


class LateFabric(wiring.Component):
    """The RTL fabric with a one-cycle change: wavelets from external agents enter one cycle
    late. Only for showing that the lockstep tests catch such a change."""

    def __init__(self, config):
        self.fabric = Fabric(config)
        self.routers = self.fabric.routers
        super().__init__(self.fabric.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fabric = inner = self.fabric
        for name in self.signature.members:
            for ours, theirs in zip(_links(getattr(self, name)), _links(getattr(inner, name))):
                if name.endswith("_in"):
                    m.d.sync += [theirs.valid.eq(ours.valid), theirs.color.eq(ours.color),
                                 theirs.data.eq(ours.data)]
                    m.d.comb += ours.credit.eq(theirs.credit)
                else:
                    wiring.connect(m, wiring.flipped(ours), theirs)
        return m


def _links(member):
    """The link interfaces of a signature member: itself, or those of an array of them."""
    if hasattr(member, "signature"):
        yield member
    else:
        for item in member:
            yield from _links(item)


class LateEmulator(FabricEmulator):
    """The emulator with the same one-cycle change as :class:`LateFabric`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._late = self.idle_inputs()[:3]

    def step(self, in_valid, in_color, in_data, out_credit):
        late, self._late = self._late, (in_valid.copy(), in_color.copy(), in_data.copy())
        return super().step(*late, out_credit)

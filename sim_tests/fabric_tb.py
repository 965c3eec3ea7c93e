"""cocotb tests of the 4x4 ``hdl.Fabric`` (4 colors, buffer_depth 2, routes of
:func:`sim_tests.designs.fabric_table` given at elaboration; run by ``test_fabric.py``)."""

import cocotb

from mesh import Port

from . import designs
from .tb import bursty_pause, random_pause
from .traffic import MeshBench

CFG = designs.FABRIC_CONFIG
ENDPOINTS = designs.endpoints(CFG)
LINK = {(ep.link.x, ep.link.y, ep.link.port): ep.index for ep in ENDPOINTS}


def ramp(x, y):
    return LINK[(x, y, Port.RAMP)]


def bench(dut, **kwargs):
    return MeshBench(dut, CFG, designs.fabric_table(), ENDPOINTS, **kwargs)


async def full_rate(dut, streams, count):
    """Send ``count`` wavelets back to back on each (inbound link, color) of ``streams`` and
    check that every copy arrives exactly once, exactly one cycle per router after injection
    and at full rate, and that the emulator agrees cycle for cycle. Returns the bench."""
    tb = bench(dut)
    for link, color in streams:
        tb.send(link, color, count=count)
    await tb.reset()
    await tb.drain(timeout=count + 100)
    tb.check_scoreboard()
    for link, color in streams:
        tb.check_latency(link, color, contiguous=True)
    tb.compare_with_emulator()
    return tb


@cocotb.test()
async def row_stream(dut):
    """Color 0 from the core of (0,0) to the east edge: 4 routers, so each wavelet leaves on
    east_out[0] exactly 4 cycles after injection, at one wavelet per cycle."""
    count = 64
    tb = await full_rate(dut, [(ramp(0, 0), 0)], count)
    east = LINK[(3, 0, Port.E)]
    arrivals = sorted(tb.arrivals(east).values())
    assert arrivals == list(range(arrivals[0], arrivals[0] + count)), \
        f"east_out[0] did not carry one wavelet per cycle: {arrivals}"
    assert arrivals[0] == tb.injections(ramp(0, 0))[tb.drv[ramp(0, 0)].sent[0][2]] + 4
    stray = {i: m.received for i, m in tb.mon.items() if i != east and m.received}
    assert not stray, f"wavelets on other links: {stray}"


@cocotb.test()
async def multicast_and_columns(dut):
    """At full rate and at once: color 1 row multicast from (1,2) to the cores of row 2 and
    color 2 down every column from the north edge to the south edge. They share routers but no
    output, so every copy arrives exactly one cycle per router after injection."""
    streams = [(ramp(1, 2), 1)] + [(LINK[(x, 0, Port.N)], 2) for x in range(CFG.width)]
    await full_rate(dut, streams, count=48)


@cocotb.test()
async def tree(dut):
    """Color 3 from the core of (2,1): along row 1 both ways, at every tile of the row to the
    core, north to the north edge and south down the column to the south edge: 11 copies of
    each wavelet, each exactly one cycle per router late, at full rate."""
    tb = await full_rate(dut, [(ramp(2, 1), 3)], count=48)
    assert len(tb.sources[(ramp(2, 1), 3)]) == 11


@cocotb.test()
async def random_traffic(dut):
    """Every routed (inbound link, color) sends a random number of wavelets with random idle
    cycles; every outbound link applies random (bursty) backpressure. Scoreboard: every wavelet
    arrives exactly once at each destination, in order per (source, color). Reference: the
    emulator, replaying the same injections and credits, must produce every wavelet on every
    outbound link and every credit in the same cycle."""
    rng = designs.rng("fabric-random")
    tb = bench(dut, driver_pause=lambda i: random_pause(rng.uniform(0.1, 0.6), rng.random()),
               monitor_pause=lambda i: bursty_pause(rng.random(), max_run=rng.randint(2, 10),
                                                    busy=rng.uniform(0.2, 0.6)))
    total = 0
    for link, color in sorted(tb.sources):
        count = int(rng.randint(30, 90) * designs.scale())
        tb.send(link, color, count=count, rng=rng)
        total += count
    await tb.reset()
    await tb.drain(timeout=30 * total)
    tb.log.info("fabric random: %d wavelets injected from %d sources, %d delivered, %d cycles",
                total, len(tb.sources), tb.scoreboard.matched, tb.cycle)
    tb.check_scoreboard()
    tb.compare_with_emulator()


@cocotb.test()
async def route_write(dut):
    """Rewrite column 0's last tile through the route write port so that color 2 from
    north_in[0] ends at the core of (0,3) instead of the south edge."""
    tb = bench(dut)
    await tb.reset()
    tb.routes.write(CFG.tile_index(0, 3), 2, 1 << Port.N, 1 << Port.RAMP)
    await tb.cycles(2)
    north = LINK[(0, 0, Port.N)]
    tb.drv[north].send(2, 0xCAFE_0001)
    tb.drv[north].send(2, 0xCAFE_0002)
    await tb.wait(tb.quiet, timeout=50, what="the wavelets")
    got = [d for _, _, d in tb.mon[ramp(0, 3)].received]
    assert got == [0xCAFE_0001, 0xCAFE_0002], got
    assert not tb.mon[LINK[(0, 3, Port.S)]].received
    tb.compare_with_emulator()

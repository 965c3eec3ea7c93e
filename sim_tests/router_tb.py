"""cocotb tests of one ``hdl.Router`` (routes in :mod:`sim_tests.designs`; run by
``test_router.py``). Port p of the router is external link p's position in the 1x1 mesh:
``i__4``/``o__4`` is RAMP, ``i__0``/``o__0`` is N, and so on."""

import cocotb

from mesh import Port

from . import designs
from .tb import bursty_pause, never, pattern, random_pause
from .traffic import MeshBench

CFG = designs.ROUTER_CONFIG
ENDPOINTS = designs.endpoints(CFG, router=True)
LINK = {ep.link.port: ep.index for ep in ENDPOINTS}  # mesh.Port -> external link index


def bench(dut, **kwargs):
    return MeshBench(dut, CFG, designs.router_table(), ENDPOINTS, router=True, **kwargs)


@cocotb.test()
async def passthrough(dut):
    """Color 0 RAMP -> E: one wavelet per cycle, each leaving exactly one cycle after it was
    injected, nothing anywhere else."""
    tb = bench(dut)
    tb.send(LINK[Port.RAMP], 0, count=64)
    await tb.reset()
    await tb.drain(timeout=200)
    tb.check_scoreboard()
    tb.check_latency(LINK[Port.RAMP], 0, contiguous=True)
    arrivals = sorted(tb.arrivals(LINK[Port.E]).values())
    assert arrivals == list(range(arrivals[0], arrivals[0] + 64)), \
        f"E did not carry one wavelet per cycle: {arrivals}"
    for port in (Port.N, Port.S, Port.W, Port.RAMP):
        assert not tb.mon[LINK[port]].received, f"stray wavelets on {port.name}"
    tb.compare_with_emulator()


@cocotb.test()
async def multicast_backpressure(dut):
    """Color 1 W -> {N, E, RAMP} with E taking one wavelet every third cycle. Partial multicast:
    N and RAMP get each head no later than E does, and the next head only after E got the
    previous one (the head is popped when its last output took it)."""
    east_pause = pattern([1, 1, 0])
    tb = bench(dut, monitor_pause=lambda i: east_pause if i == LINK[Port.E] else never())
    count = 40
    words = tb.send(LINK[Port.W], 1, count=count)
    await tb.reset()
    await tb.drain(timeout=20 * count)
    tb.check_scoreboard()
    sent = tb.injections(LINK[Port.W])
    n, e, r = (tb.arrivals(LINK[p]) for p in (Port.N, Port.E, Port.RAMP))
    first = words[0]
    assert n[first] == r[first] == sent[first] + 1, "the first copy is not one cycle late"
    for k, word in enumerate(words):
        assert n[word] <= e[word] and r[word] <= e[word], \
            f"wavelet {k}: N/RAMP copy after the backpressured E copy ({n[word]}, {r[word]}, " \
            f"{e[word]})"
        if k:
            prev = words[k - 1]
            assert n[word] > e[prev] and r[word] > e[prev], \
                f"wavelet {k} left before wavelet {k - 1} was done on E"
    span = e[words[-1]] - e[first]
    # After its buffer_depth free slots, E can take one wavelet per slot freed: one every third
    # cycle.
    assert span >= 3 * (count - 1 - CFG.buffer_depth), \
        f"E took {count} wavelets in {span} cycles: too fast for a receiver that frees a slot " \
        f"every third cycle"
    tb.compare_with_emulator()


@cocotb.test()
async def random_traffic(dut):
    """Every routed (input, color) sends a random number of wavelets with random idle cycles,
    every output applies random (bursty) backpressure; each wavelet must arrive exactly once at
    each destination, in order per (input, color). Compared cycle by cycle with the emulator."""
    rng = designs.rng("router-random")
    tb = bench(dut, driver_pause=lambda i: random_pause(0.3, rng.random()),
               monitor_pause=lambda i: bursty_pause(rng.random(), max_run=6, busy=0.45))
    total = 0
    for (link, color) in sorted(tb.sources):
        count = int(rng.randint(80, 160) * designs.scale())
        tb.send(link, color, count=count, rng=rng)
        total += count
    await tb.reset()
    await tb.drain(timeout=40 * total)
    tb.log.info("router random: %d wavelets injected, %d delivered, %d cycles", total,
                tb.scoreboard.matched, tb.cycle)
    tb.check_scoreboard()
    tb.compare_with_emulator()


@cocotb.test()
async def route_write(dut):
    """The route write port replaces a route from the next cycle on; reset restores the
    elaboration-time routes."""
    tb = bench(dut)
    await tb.reset()
    # Color 0 now goes RAMP -> S instead of RAMP -> E.
    tb.routes.write(0, 0, 1 << Port.RAMP, 1 << Port.S)
    await tb.cycles(2)
    data = tb.drv[LINK[Port.RAMP]]
    data.send(0, 0x1234_5678)
    await tb.wait(lambda: data.idle and tb.quiet(), timeout=50, what="the wavelet")
    assert [d for _, _, d in tb.mon[LINK[Port.S]].received] == [0x1234_5678]
    assert not tb.mon[LINK[Port.E]].received
    tb.compare_with_emulator()
    tb.stop()

    tb2 = bench(dut)
    tb2.send(LINK[Port.RAMP], 0, count=4)
    await tb2.reset()
    await tb2.drain(timeout=50)
    tb2.check_scoreboard()  # reset put color 0 back on E


@cocotb.test()
async def unrouted_held(dut):
    """A wavelet whose input port is not in accept[c] is queued and stays there (section 5,
    step 6): nothing leaves, no credit comes back, so the sender runs out of credits after
    buffer_depth of them; other colors on other ports still flow."""
    tb = bench(dut, drive_all=True)
    north = tb.drv[LINK[Port.N]]
    for k in range(CFG.buffer_depth + 1):
        north.send(0, 0xDEAD_0000 + k)  # color 0 is accepted from RAMP only
    tb.send(LINK[Port.W], 1, count=16)
    await tb.reset()
    await tb.wait(lambda: tb.drv[LINK[Port.W]].idle, timeout=200, what="color 1 to drain")
    await tb.cycles(20)
    assert len(north.sent) == CFG.buffer_depth and north.pending == 1, \
        f"N sent {len(north.sent)} wavelets of an unaccepted color, expected buffer_depth " \
        f"({CFG.buffer_depth}) before running out of credits"
    assert north.credits[0] == 0 and not north.credit_log, "credits came back for held wavelets"
    leaked = [(m.name, r) for m in tb.mon.values() for r in m.received if r[2] >> 16 == 0xDEAD]
    assert not leaked, f"unaccepted wavelets left the router: {leaked}"
    tb.check_scoreboard()  # the color 1 multicast was not disturbed
    tb.compare_with_emulator()

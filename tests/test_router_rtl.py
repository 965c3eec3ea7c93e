"""The RTL router and fabric (hdl/) against section 5 of docs/ARCHITECTURE.md, in the Amaranth
simulator, cycle by cycle.

Cycle 0 is the first clock cycle after reset. Within a cycle the test bench sets its inputs, reads
the outputs (which depend on registered state only), then awaits the clock edge that ends the
cycle. The test bench plays the external agents of section 3: a `Sender` holds credits for an
inbound link, a `Receiver` drains an outbound link into its own buffer and returns credits.
"""

import gc
import re
from collections import deque

import pytest
from amaranth.hdl import Shape, UnusedElaboratable
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

import hdl
from hdl import Fabric, LinkSignature, RouteWriteSignature, Router
from mesh import MeshConfig, Port, Route, RouteTable, external_links


# Construction tests build components they never elaborate, which Amaranth warns about when it
# collects them; collect them here, while the filter applies.
pytestmark = pytest.mark.filterwarnings(f"ignore::{UnusedElaboratable.__module__}."
                                        f"{UnusedElaboratable.__qualname__}")


@pytest.fixture(autouse=True)
def collect_unused_components():
    yield
    gc.collect()


# External agents ---------------------------------------------------------------------------------

class Sender:
    """Injects wavelets into an inbound link, in order, each as soon as it holds a credit of its
    color; counts the credit bits the link returns."""

    def __init__(self, link, config):
        self.link = link
        self.depth = config.buffer_depth
        self.credits = [config.buffer_depth] * config.colors
        self.pending = deque()
        self.sent = []  # (cycle, color, data)

    def send(self, color, data):
        self.pending.append((color, data))

    def step(self, ctx, cycle):
        if self.pending and self.credits[self.pending[0][0]] > 0:
            color, data = self.pending.popleft()
            self.credits[color] -= 1
            ctx.set(self.link.valid, 1)
            ctx.set(self.link.color, color)
            ctx.set(self.link.data, data)
            self.sent.append((cycle, color, data))
        else:
            ctx.set(self.link.valid, 0)
        returned = ctx.get(self.link.credit)
        for color in range(len(self.credits)):
            if returned >> color & 1:
                self.credits[color] += 1
                assert self.credits[color] <= self.depth, f"cycle {cycle}: credit overflow"


class Receiver:
    """Drains an outbound link into a ``buffer_depth``-deep buffer per color, from which it takes
    one wavelet per color per cycle, returning its credit, unless ``holding``. A wavelet received
    in cycle t is taken out in cycle t + 1 at the earliest, as a router would forward it."""

    def __init__(self, link, config, holding=False):
        self.link = link
        self.depth = config.buffer_depth
        self.buffered = [0] * config.colors
        self.holding = holding
        self.received = []  # (cycle, color, data)

    def step(self, ctx, cycle):
        returned = 0
        if not self.holding:
            for color, count in enumerate(self.buffered):
                if count:
                    self.buffered[color] -= 1
                    returned |= 1 << color
        ctx.set(self.link.credit, returned)
        if ctx.get(self.link.valid):
            color, data = ctx.get(self.link.color), ctx.get(self.link.data)
            self.buffered[color] += 1
            assert self.buffered[color] <= self.depth, f"cycle {cycle}: sent without credit"
            self.received.append((cycle, color, data))

    @property
    def data(self):
        return [data for _, _, data in self.received]


def simulate(dut, agents, cycles, each_cycle=None):
    """Run ``cycles`` cycles; ``each_cycle(ctx, cycle)`` runs first in every cycle."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def testbench(ctx):
        for cycle in range(cycles):
            if each_cycle is not None:
                each_cycle(ctx, cycle)
            for agent in agents:
                agent.step(ctx, cycle)
            await ctx.tick()

    sim.add_testbench(testbench)
    sim.run()


def row_fabric(width, colors=2, depth=2, sink=Port.RAMP):
    """A width x 1 fabric routing color 0 from the RAMP of (0, 0) along the row to ``sink`` of
    (width - 1, 0)."""
    config = MeshConfig(width=width, height=1, colors=colors, buffer_depth=depth)
    routes = RouteTable(config).chain(0, [(x, 0) for x in range(width)], sink=sink)
    return config, Fabric(config, routes.validate())


def router_with(config, **routes_by_color):
    """A Router with route ``c<N>=(inputs, outputs)`` for color N."""
    routes = [None] * config.colors
    for name, (inputs, outputs) in routes_by_color.items():
        routes[int(name[1:])] = Route(frozenset(inputs), frozenset(outputs))
    return Router(config, routes)


# Construction ------------------------------------------------------------------------------------

CONFIG = MeshConfig(width=3, height=2, colors=3, buffer_depth=2)


def flow_and_width(member):
    return member.flow, Shape.cast(member.shape).width


def test_link_signature_members():
    members = LinkSignature(MeshConfig(colors=8)).members
    assert {name: flow_and_width(member) for name, member in members.items()} == {
        "valid": (Out, 1), "color": (Out, 3), "data": (Out, 32), "credit": (In, 8)}
    assert flow_and_width(LinkSignature(MeshConfig(colors=1)).members["color"]) == (Out, 1)
    assert LinkSignature(MeshConfig(colors=5)) == LinkSignature(MeshConfig(colors=5, width=7))
    assert LinkSignature(MeshConfig(colors=5)) != LinkSignature(MeshConfig(colors=6))


@pytest.mark.parametrize("tiles, width", [(1, 1), (2, 1), (16, 4), (17, 5)])
def test_route_write_signature_members(tiles, width):
    members = RouteWriteSignature(MeshConfig(colors=8), tiles=tiles).members
    assert {name: flow_and_width(member) for name, member in members.items()} == {
        "valid": (Out, 1), "tile": (Out, width), "color": (Out, 3), "accept": (Out, 5),
        "out": (Out, 5)}


def test_route_write_signature_without_tiles():
    assert "tile" not in RouteWriteSignature(MeshConfig()).members


@pytest.mark.parametrize("make", [
    lambda: LinkSignature("4x4"),
    lambda: RouteWriteSignature(None),
    lambda: Router({"colors": 8}),
    lambda: Fabric("4x4"),
])
def test_bad_config_type(make):
    with pytest.raises(TypeError, match="config must be a mesh.MeshConfig"):
        make()


@pytest.mark.parametrize("tiles", [0, -1, 2.0, True])
def test_bad_tiles(tiles):
    with pytest.raises(ValueError, match="tiles must be None or a positive integer"):
        RouteWriteSignature(CONFIG, tiles=tiles)


def test_router_routes_must_be_a_list():
    with pytest.raises(TypeError, match=r"routes must be None or a list of 3 mesh\.Route"):
        Router(CONFIG, routes=Route(frozenset({Port.N}), frozenset({Port.S})))


def test_router_routes_length():
    with pytest.raises(ValueError, match=r"one entry per color \(3\), not 2"):
        Router(CONFIG, routes=[None, None])


def test_router_route_entry_type():
    with pytest.raises(TypeError, match=r"routes\[1\] must be a mesh\.Route or None"):
        Router(CONFIG, routes=[None, (Port.N, Port.S), None])


def test_router_route_reset_values():
    router = router_with(CONFIG, c1=({Port.N, Port.W}, {Port.S, Port.RAMP}))
    colors = CONFIG.colors
    assert router.accept.init == (1 << (Port.N * colors + 1)) | (1 << (Port.W * colors + 1))
    assert [out.init for out in router.out] == [0, 0, 0b010, 0, 0b010]


def test_fabric_routes_type():
    with pytest.raises(TypeError, match="routes must be None or a mesh.RouteTable"):
        Fabric(CONFIG, routes=[None] * CONFIG.colors)


def test_fabric_routes_for_another_mesh():
    other = RouteTable(MeshConfig(width=2, height=2, colors=3))
    with pytest.raises(ValueError, match=r"routes is a table for a 2x2 mesh with 3 colors, but "
                                         r"config is a 3x2 mesh with 3 colors"):
        Fabric(CONFIG, routes=other)


def test_fabric_members():
    fabric = Fabric(CONFIG)
    assert len(fabric.ramp_in) == 2 and len(fabric.ramp_in[0]) == 3
    assert len(fabric.north_out) == 3 and len(fabric.south_in) == 3
    assert len(fabric.east_out) == 2 and len(fabric.west_in) == 2
    assert len(fabric.routers) == 2 and len(fabric.routers[1]) == 3
    assert fabric.signature.members["route"] == In(RouteWriteSignature(CONFIG, tiles=6))
    assert len(fabric.route.tile) == 3


def top_ports(text, name):
    """{port: "input" | "output"} of module ``name`` in Verilog ``text``."""
    module = text[text.index(f"module {name}("):]
    module = module[:module.index("endmodule")]
    return {port: direction for direction, port in
            re.findall(r"^\s*(input|output)\s+(?:\[\d+:0\]\s+)?(\w+);", module, re.M)}


def link_ports(prefix, inbound):
    """The Verilog ports of one link member, as seen from the component."""
    forward, backward = ("input", "output") if inbound else ("output", "input")
    return {f"{prefix}__valid": forward, f"{prefix}__color": forward,
            f"{prefix}__data": forward, f"{prefix}__credit": backward}


def test_router_verilog_ports():
    text = hdl.verilog(Router(MeshConfig(colors=2, buffer_depth=1)), "router")
    expected = {"clk": "input", "rst": "input", "route__valid": "input", "route__color": "input",
                "route__accept": "input", "route__out": "input"}
    for port in Port:
        expected |= link_ports(f"i__{int(port)}", inbound=True)
        expected |= link_ports(f"o__{int(port)}", inbound=False)
    assert top_ports(text, "router") == expected


def test_fabric_verilog_ports():
    """Every external link of mesh.external_links under its documented name, e.g.
    ramp_in__2__1__valid for tile (1, 2)."""
    config = MeshConfig(width=2, height=3, colors=1, buffer_depth=1)
    text = hdl.verilog(Fabric(config), "fabric")
    expected = {"clk": "input", "rst": "input"}
    expected |= {f"route__{name}": "input" for name in ("valid", "tile", "color", "accept", "out")}
    for link in external_links(config):
        for direction in ("in", "out"):
            prefix = re.sub(r"\[(\d+)\]", r"__\1", link.rtl_name(direction))
            expected |= link_ports(prefix, inbound=direction == "in")
    ports = top_ports(text, "fabric")
    assert ports == expected
    assert ports["ramp_in__2__1__valid"] == "input" and ports["east_out__0__credit"] == "input"


def test_no_combinational_path_from_inputs_to_outputs():
    """Outputs depend on registered state only: flipping every input within a cycle changes no
    output."""
    config = MeshConfig(colors=2, buffer_depth=2)
    everything = Route(frozenset(Port), frozenset(Port))
    router = Router(config, [everything, everything])
    outputs = [sig for link in router.o for sig in (link.valid, link.color, link.data)]
    outputs += [link.credit for link in router.i]
    inputs = [sig for link in router.i for sig in (link.valid, link.color, link.data)]
    inputs += [link.credit for link in router.o]
    inputs += [router.route.valid, router.route.color, router.route.accept, router.route.out]

    def each_cycle(ctx, cycle):
        before = [ctx.get(sig) for sig in outputs]
        for sig in inputs:
            ctx.set(sig, (1 << len(sig)) - 1)
        assert [ctx.get(sig) for sig in outputs] == before
        for sig in inputs:
            ctx.set(sig, 0)
        assert [ctx.get(sig) for sig in outputs] == before

    sender = Sender(router.i[Port.RAMP], config)
    for n in range(4):
        sender.send(n % 2, n)
    simulate(router, [sender], 8, each_cycle)
    assert len(sender.sent) == 4


# Latency and throughput --------------------------------------------------------------------------

def test_one_cycle_per_hop():
    """Injected in cycle t, a wavelet leaves the k-th router of a straight route in cycle
    t + 1 + k, on exactly the links of its route."""
    config, fabric = row_fabric(4)
    sender = Sender(fabric.ramp_in[0][0], config)
    receiver = Receiver(fabric.ramp_out[0][3], config)
    links = [(x, port, fabric.routers[0][x].o[port]) for x in range(4) for port in Port]
    seen = []

    def each_cycle(ctx, cycle):
        if cycle == 5:
            sender.send(0, 0xCAFE_F00D)
        for x, port, link in links:
            if ctx.get(link.valid):
                seen.append((cycle, x, port, ctx.get(link.color), ctx.get(link.data)))

    simulate(fabric, [sender, receiver], 16, each_cycle)
    assert sender.sent == [(5, 0, 0xCAFE_F00D)]
    assert seen == [(6, 0, Port.E, 0, 0xCAFE_F00D), (7, 1, Port.E, 0, 0xCAFE_F00D),
                    (8, 2, Port.E, 0, 0xCAFE_F00D), (9, 3, Port.RAMP, 0, 0xCAFE_F00D)]
    assert receiver.received == [(9, 0, 0xCAFE_F00D)]


@pytest.mark.parametrize("depth, interval", [(2, 1), (3, 1), (1, 2)])
def test_stream_rate(depth, interval):
    """Depth >= 2 carries one wavelet per cycle per hop, back to back; depth 1 one every other
    cycle."""
    config, fabric = row_fabric(4, depth=depth)
    sender = Sender(fabric.ramp_in[0][0], config)
    receiver = Receiver(fabric.ramp_out[0][3], config)
    for n in range(50):
        sender.send(0, 1000 + n)
    simulate(fabric, [sender, receiver], 50 * interval + 10)
    assert [cycle for cycle, _, _ in sender.sent] == [interval * n for n in range(50)]
    assert receiver.received == [(4 + interval * n, 0, 1000 + n) for n in range(50)]


def test_credit_loop_timing_on_a_router():
    """The credit for a wavelet popped in cycle t is on the inbound link in cycle t."""
    config = MeshConfig(colors=2, buffer_depth=1)
    router = router_with(config, c1=({Port.W}, {Port.E}))
    sender = Sender(router.i[Port.W], config)
    receiver = Receiver(router.o[Port.E], config)
    credits = []

    def each_cycle(ctx, cycle):
        credits.append(ctx.get(router.i[Port.W].credit))

    sender.send(1, 7)
    sender.send(1, 8)
    simulate(router, [sender, receiver], 6, each_cycle)
    # Sent in 0, forwarded (popped, credited) in 1, next sent in 2, forwarded in 3.
    assert [cycle for cycle, _, _ in sender.sent] == [0, 2]
    assert credits == [0, 0b10, 0, 0b10, 0, 0]
    assert receiver.received == [(1, 1, 7), (3, 1, 8)]


# Multicast ---------------------------------------------------------------------------------------

def test_multicast_with_one_output_backpressured():
    """One RAMP to N, E and S with S held: N and E keep receiving the head that S still waits
    for, the queue behind it stalls, and once S releases, every output gets every wavelet once,
    in order."""
    config = MeshConfig(colors=2, buffer_depth=2)
    router = router_with(config, c1=({Port.RAMP}, {Port.N, Port.E, Port.S}))
    sender = Sender(router.i[Port.RAMP], config)
    north, east = Receiver(router.o[Port.N], config), Receiver(router.o[Port.E], config)
    south = Receiver(router.o[Port.S], config, holding=True)
    for n in range(8):
        sender.send(1, n)
    release = 20

    def each_cycle(ctx, cycle):
        south.holding = cycle < release

    simulate(router, [sender, north, east, south], release + 15, each_cycle)
    before = [(cycle, data) for cycle, _, data in north.received if cycle < release]
    # S took its two credits' worth (0 and 1); 2 went to N and E only and stays at the head.
    assert before == [(1, 0), (2, 1), (3, 2)]
    assert [(cycle, data) for cycle, _, data in east.received if cycle < release] == before
    assert [(cycle, data) for cycle, _, data in south.received if cycle < release] == \
        [(1, 0), (2, 1)]
    assert [cycle for cycle, _, _ in sender.sent if cycle < release] == [0, 1, 2, 3]
    # S returns a credit in `release`, usable one cycle later: the head completes and pops.
    assert south.received[2] == (release + 1, 1, 2)
    assert north.received[3][0] == release + 2
    for receiver in (north, east, south):
        assert receiver.data == list(range(8))
        assert all(color == 1 for _, color, _ in receiver.received)


# Arbitration -------------------------------------------------------------------------------------

def test_two_inputs_alternate():
    """N (lane 0) and W (lane 3 * colors) contend for E: rr starts at 0, so N, then W, then N..."""
    config = MeshConfig(colors=2, buffer_depth=2)
    router = router_with(config, c0=({Port.N, Port.W}, {Port.E}))
    north, west = Sender(router.i[Port.N], config), Sender(router.i[Port.W], config)
    receiver = Receiver(router.o[Port.E], config)
    for n in range(10):
        north.send(0, 100 + n)
        west.send(0, 200 + n)
    simulate(router, [north, west, receiver], 25)
    expected = [data for n in range(10) for data in (100 + n, 200 + n)]
    assert receiver.received == [(1 + n, 0, data) for n, data in enumerate(expected)]


def test_round_robin_order_across_ports_and_colors():
    """Requesters (N, 1), (S, 0), (W, 1) are lanes 1, 4, 7 (colors = 2): granted in that order,
    wrapping around, one per cycle; the pointer rests one past the last grant."""
    config = MeshConfig(colors=2, buffer_depth=2)
    router = router_with(config, c0=({Port.S}, {Port.E}), c1=({Port.N, Port.W}, {Port.E}))
    senders = {port: Sender(router.i[port], config) for port in (Port.N, Port.S, Port.W)}
    receiver = Receiver(router.o[Port.E], config)
    color = {Port.N: 1, Port.S: 0, Port.W: 1}
    for n in range(6):
        for port, sender in senders.items():
            sender.send(color[port], port * 100 + n)
    pointers = []

    def each_cycle(ctx, cycle):
        pointers.append(ctx.get(router.arbiters[Port.E].pointer))

    simulate(router, [*senders.values(), receiver], 24, each_cycle)
    order = [Port.N, Port.S, Port.W]
    expected = [(1 + k, color[port], port * 100 + k // 3)
                for k, port in enumerate(order * 6)]
    assert receiver.received == expected
    assert pointers[:6] == [0, 0, 2, 5, 8, 2]  # after lanes 1, 4, 7, 1: pointer = lane + 1
    assert pointers[-1] == 8


def test_pointer_skips_to_first_requester_at_or_after_it():
    """With the pointer past lane 0, a later requester wins over lane 0."""
    config = MeshConfig(colors=1, buffer_depth=2)
    router = router_with(config, c0=({Port.N, Port.E, Port.S, Port.W}, {Port.RAMP}))
    senders = {port: Sender(router.i[port], config) for port in (Port.N, Port.E, Port.S, Port.W)}
    receiver = Receiver(router.o[Port.RAMP], config)
    senders[Port.E].send(0, 1)  # alone: granted in cycle 1, pointer -> 2 (S)

    def each_cycle(ctx, cycle):
        if cycle == 3:
            for port in (Port.N, Port.W, Port.E):
                senders[port].send(0, 10 + port)

    simulate(router, [*senders.values(), receiver], 12, each_cycle)
    # From pointer 2: W (3), then wrap to N (0), then E (1).
    assert receiver.received == [(1, 0, 1), (4, 0, 13), (5, 0, 10), (6, 0, 11)]


# Credits -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3])
def test_withheld_credits_stop_the_stream_and_returned_credits_resume_it(depth):
    """An agent that returns no credit gets exactly buffer_depth wavelets; the row behind it
    fills up (every queue full: 4 routers x depth, plus what the agent holds) and the sender
    stops. Once the agent drains, the rest arrives, in order, exactly once."""
    config, fabric = row_fabric(4, depth=depth, sink=Port.E)
    sender = Sender(fabric.ramp_in[0][0], config)
    receiver = Receiver(fabric.east_out[0], config, holding=True)
    for n in range(30):
        sender.send(0, n)
    release = 60

    def each_cycle(ctx, cycle):
        receiver.holding = cycle < release
        if cycle == release - 1:
            assert receiver.data == list(range(depth))
            assert len(sender.sent) == 5 * depth
            assert sender.credits[0] == 0

    simulate(fabric, [sender, receiver], release + 30 * (2 if depth == 1 else 1) + 10,
             each_cycle)
    assert receiver.data == list(range(30))
    assert receiver.received[depth][0] == release + 1  # credit in `release`, used one later


def test_unaccepted_input_stays_queued_without_credit():
    """A wavelet whose port is not accepted for its color waits in its queue and returns no
    credit."""
    config = MeshConfig(colors=2, buffer_depth=2)
    router = router_with(config, c0=({Port.N}, {Port.E}))
    sender = Sender(router.i[Port.W], config)
    receiver = Receiver(router.o[Port.E], config)
    sender.send(0, 1)
    sender.send(0, 2)
    sender.send(0, 3)
    simulate(router, [sender, receiver], 10)
    assert [cycle for cycle, _, _ in sender.sent] == [0, 1]
    assert sender.credits == [0, 2]
    assert receiver.received == []


# Route write port --------------------------------------------------------------------------------

def write_route(ctx, port, *, color, accept, out, tile=None):
    ctx.set(port.valid, 1)
    if tile is not None:
        ctx.set(port.tile, tile)
    ctx.set(port.color, color)
    ctx.set(port.accept, sum(1 << p for p in accept))
    ctx.set(port.out, sum(1 << p for p in out))


def test_route_write_port_on_a_router():
    """A wavelet held by an empty route leaves once the route is written: in the cycle after the
    write."""
    config = MeshConfig(colors=2, buffer_depth=2)
    router = Router(config)
    sender = Sender(router.i[Port.N], config)
    receiver = Receiver(router.o[Port.S], config)
    sender.send(1, 42)

    def each_cycle(ctx, cycle):
        if cycle == 4:
            write_route(ctx, router.route, color=1, accept={Port.N}, out={Port.S})
        else:
            ctx.set(router.route.valid, 0)

    simulate(router, [sender, receiver], 8, each_cycle)
    assert receiver.received == [(5, 1, 42)]


def test_route_write_port_on_a_fabric():
    """Routes written tile by tile through the fabric's port, then one of them rewritten to send
    to the east edge instead of the core; a write to a tile index beyond the mesh changes
    nothing."""
    config = MeshConfig(width=3, height=1, colors=2, buffer_depth=2)
    fabric = Fabric(config)
    sender = Sender(fabric.ramp_in[0][0], config)
    core = Receiver(fabric.ramp_out[0][2], config)
    east = Receiver(fabric.east_out[0], config)
    writes = {
        0: dict(tile=0, color=1, accept={Port.RAMP}, out={Port.E}),
        1: dict(tile=1, color=1, accept={Port.W}, out={Port.E}),
        2: dict(tile=2, color=1, accept={Port.W}, out={Port.RAMP}),
        3: dict(tile=3, color=1, accept={Port.W}, out={Port.W}),  # no tile 3
        10: dict(tile=2, color=1, accept={Port.W}, out={Port.E}),
    }

    def each_cycle(ctx, cycle):
        if cycle in writes:
            write_route(ctx, fabric.route, **writes[cycle])
        else:
            ctx.set(fabric.route.valid, 0)
        if cycle in (4, 12):
            sender.send(1, cycle)

    simulate(fabric, [sender, core, east], 20, each_cycle)
    assert core.received == [(4 + 3, 1, 4)]
    assert east.received == [(12 + 3, 1, 12)]

"""Cycle-exact tests of the numpy fabric emulator against docs/ARCHITECTURE.md sections 3 and 5."""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emulator import (CycleLimitExceeded, FabricEmulator, NoProgress, ProtocolError, StepResult,
                      TrafficSink, TrafficSource, run)
from mesh import MeshConfig, Port, RouteTable, external_links


class CheckedFabric(FabricEmulator):
    """An emulator that checks the credit invariant of every internal link after each step:
    the sender's credit counter plus the receiver's queue count is buffer_depth (no wavelet
    or credit is ever in flight across a clock edge)."""

    def step(self, *args):
        result = super().step(*args)
        cfg = self.config
        credit = self.credit.reshape(cfg.height, cfg.width, 5, cfg.colors)
        count = self.queue_count.reshape(cfg.height, cfg.width, 5, cfg.colors)
        pairs = [(credit[:, :-1, Port.E], count[:, 1:, Port.W]),
                 (credit[:, 1:, Port.W], count[:, :-1, Port.E]),
                 (credit[:-1, :, Port.S], count[1:, :, Port.N]),
                 (credit[1:, :, Port.N], count[:-1, :, Port.S])]
        for sender, receiver in pairs:
            assert np.all(sender.astype(int) + receiver == cfg.buffer_depth)
        assert self.held() == int(self.queue_count.sum())
        return result


def row_config(width, colors=2, depth=2):
    return MeshConfig(width=width, height=1, colors=colors, buffer_depth=depth)


def ramp_link(fabric, x, y):
    """The RAMP links come first, in tile order."""
    return fabric.config.tile_index(x, y)


def edge_link(fabric, x, y, port):
    return next(link.index for link in fabric.links if (link.x, link.y, link.port) == (x, y, port))


def arrivals(sink, link):
    """(cycle, data) of every wavelet the sink received on ``link``."""
    return [(cycle, data) for cycle, _, data in sink.received.get(link, [])]


def inject_one(fabric, link, color, data):
    valid, colors, values, credit = fabric.idle_inputs()
    valid[link], colors[link], values[link] = True, color, data
    return fabric.step(valid, colors, values, credit)


# Timing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", range(6))
def test_one_cycle_per_hop(k):
    cfg = row_config(6)
    fabric = FabricEmulator(cfg, RouteTable(cfg).chain(1, [(x, 0) for x in range(k + 1)]))
    for _ in range(3):
        fabric.step(*fabric.idle_inputs())
    t = fabric.cycle
    inject_one(fabric, ramp_link(fabric, 0, 0), 1, 0xCAFE)
    events = []
    for _ in range(k + 3):
        events += fabric.events(fabric.step(*fabric.idle_inputs()))
    expected = [(t + 1 + j, j, Port.E if j < k else Port.RAMP, 1, 0xCAFE) for j in range(k + 1)]
    assert events == expected
    assert fabric.held() == 0


@pytest.mark.parametrize("depth, period", [(2, 1), (3, 1), (1, 2)])
def test_stream_rate(depth, period):
    k, n = 4, 50
    cfg = row_config(k + 1, depth=depth)
    fabric = CheckedFabric(cfg, RouteTable(cfg).chain(0, [(x, 0) for x in range(k + 1)]))
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, i) for i in range(n)]})
    sink = TrafficSink(cfg, fabric.n_links)
    cycles, events = run(fabric, source, sink, max_cycles=1000)
    assert arrivals(sink, ramp_link(fabric, k, 0)) == [(1 + k + period * i, i) for i in range(n)]
    # Every router sends wavelet i one cycle after the previous router.
    for j in range(k + 1):
        sent = [(c, d) for c, tile, _, _, d in events if tile == j]
        assert sent == [(1 + j + period * i, i) for i in range(n)]
    # The last arrival at 1 + k + period * (n - 1); the sink takes it out one cycle later.
    assert cycles == 1 + k + period * (n - 1) + 2


def test_multicast_with_one_backpressured_receiver():
    cfg = row_config(3, colors=1)
    # (0,0) RAMP -> E; (1,0) W -> {E, RAMP}; (2,0) W -> RAMP
    routes = RouteTable(cfg).row_multicast(0, 0, 0)
    fabric = CheckedFabric(cfg, routes)
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, i) for i in range(5)]})
    accept = np.ones(fabric.n_links)
    accept[ramp_link(fabric, 1, 0)] = 0.0
    sink = TrafficSink(cfg, fabric.n_links, accept_rate=accept)
    events = []
    while fabric.cycle < 30:
        if fabric.cycle == 10:
            sink.accept_rate[ramp_link(fabric, 1, 0)] = 1.0
        valid, color, data = source.drive()
        result = fabric.step(valid, color, data, sink.credits())
        source.update(result.in_credit)
        sink.update(result.out_valid, result.out_color, result.out_data, result.cycle)
        events += fabric.events(result)
    middle = [(c, port, d) for c, tile, port, _, d in events if tile == 1]
    # w0, w1 go both ways; w2 goes east at once (partial multicast) but to the blocked RAMP only
    # after its sink starts returning credits in cycle 10; the head is not sent east twice.
    assert middle == [(2, Port.E, 0), (2, Port.RAMP, 0), (3, Port.E, 1), (3, Port.RAMP, 1),
                      (4, Port.E, 2), (11, Port.RAMP, 2), (12, Port.E, 3), (12, Port.RAMP, 3),
                      (13, Port.E, 4), (13, Port.RAMP, 4)]
    assert [d for _, d in arrivals(sink, ramp_link(fabric, 2, 0))] == list(range(5))
    assert [d for _, d in arrivals(sink, ramp_link(fabric, 1, 0))] == list(range(5))
    assert fabric.held() == 0


def test_round_robin_alternates_between_two_inputs_sharing_an_output():
    # Tile (1,0) forwards color 0 from W (requester 3*colors + 0) and color 1 from its RAMP
    # (requester 4*colors + 1) to the east edge: one output, two requesters, always both busy.
    cfg = row_config(2, colors=2)
    routes = RouteTable(cfg).chain(0, [(0, 0), (1, 0)], sink=Port.E)
    routes.set(1, 0, 1, inputs=Port.RAMP, outputs=Port.E)
    fabric = CheckedFabric(cfg, routes.validate())
    n = 20
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, 100 + i) for i in range(n)],
                                                 1: [(1, 200 + i) for i in range(n)]})
    sink = TrafficSink(cfg, fabric.n_links)
    _, events = run(fabric, source, sink, max_cycles=500)
    east = [(c, color, d) for c, tile, port, color, d in events if (tile, port) == (1, Port.E)]
    # Cycle 1: only the RAMP queue holds a wavelet (color 0 is still one hop away). From then
    # on the pointer alternates: past RAMP color 1 it wraps to W color 0, and back.
    expected = [(1, 1, 200)]
    for i in range(n):
        expected.append((2 + 2 * i, 0, 100 + i))
        if i + 1 < n:
            expected.append((3 + 2 * i, 1, 200 + i + 1))
    assert east == expected


def test_round_robin_within_one_color_from_two_ports():
    # Both requesters have color 0: W is index 3*colors, RAMP index 4*colors.
    cfg = row_config(2, colors=1)
    routes = RouteTable(cfg).chain(0, [(0, 0), (1, 0)], sink=Port.E)
    routes.set(1, 0, 0, inputs=[Port.W, Port.RAMP], outputs=Port.E, replace=True)
    fabric = CheckedFabric(cfg, routes.validate())
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, 100 + i) for i in range(6)],
                                                 1: [(0, 200 + i) for i in range(6)]})
    sink = TrafficSink(cfg, fabric.n_links)
    _, events = run(fabric, source, sink, max_cycles=500)
    east = [d for c, tile, port, _, d in events if (tile, port) == (1, Port.E)]
    assert east == [200, 100, 201, 101, 202, 102, 203, 103, 204, 104, 205, 105]


# Backpressure and no progress -------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3])
def test_sink_that_never_returns_credits_gets_buffer_depth_wavelets(depth):
    cfg = row_config(3, depth=depth)
    fabric = CheckedFabric(cfg, RouteTable(cfg).chain(0, [(0, 0), (1, 0), (2, 0)]))
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, i) for i in range(20)]})
    sink = TrafficSink(cfg, fabric.n_links, accept_rate=0.0)
    for _ in range(60):
        valid, color, data = source.drive()
        result = fabric.step(valid, color, data, sink.credits())
        source.update(result.in_credit)
        sink.update(result.out_valid, result.out_color, result.out_data, result.cycle)
    assert [d for _, d in arrivals(sink, ramp_link(fabric, 2, 0))] == list(range(depth))
    assert fabric.held() == 3 * depth     # every queue on the way is full


def test_no_progress_for_a_wavelet_on_a_port_not_accepted():
    cfg = row_config(2)
    routes = RouteTable(cfg).chain(0, [(0, 0), (1, 0)])   # (1,0) takes color 0 from W only
    fabric = FabricEmulator(cfg, routes)
    source = TrafficSource(cfg, fabric.n_links, {ramp_link(fabric, 1, 0): [(0, 7)]})
    sink = TrafficSink(cfg, fabric.n_links)
    with pytest.raises(NoProgress) as caught:
        run(fabric, source, sink, max_cycles=1000, stall_limit=50)
    message = str(caught.value)
    assert "tile (1,0) port RAMP color 0" in message
    assert "port RAMP is not accepted for color 0" in message
    assert caught.value.cycle == 51


def test_no_progress_for_a_sink_that_never_drains():
    cfg = row_config(3)
    fabric = FabricEmulator(cfg, RouteTable(cfg).chain(0, [(0, 0), (1, 0), (2, 0)]))
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, i) for i in range(20)]})
    sink = TrafficSink(cfg, fabric.n_links, accept_rate=0.0)
    with pytest.raises(NoProgress) as caught:
        run(fabric, source, sink, max_cycles=1000, stall_limit=20)
    message = str(caught.value)
    assert "tile (2,0) port W color 0: 2 wavelet(s), head blocked: waiting for credit on " \
           "outputs [RAMP]" in message
    assert "tile (1,0) port W color 0: 2 wavelet(s), head blocked: waiting for credit on " \
           "outputs [E]" in message
    assert "the sink holds 2 wavelet(s)" in message


def test_cycle_limit():
    cfg = row_config(2)
    fabric = FabricEmulator(cfg, RouteTable(cfg).chain(0, [(0, 0), (1, 0)]))
    source = TrafficSource(cfg, fabric.n_links, {0: [(0, i) for i in range(20)]})
    with pytest.raises(CycleLimitExceeded, match="not delivered within 10 cycles"):
        run(fabric, source, TrafficSink(cfg, fabric.n_links), max_cycles=10)


def test_report_for_a_route_without_output():
    cfg = row_config(1)
    fabric = FabricEmulator(cfg)
    fabric.write_route(0, 1, accept_mask=1 << Port.RAMP, out_mask=0)
    inject_one(fabric, 0, 1, 5)
    fabric.step(*fabric.idle_inputs())
    assert fabric.report() == ["tile (0,0) port RAMP color 1: 1 wavelet(s), head blocked: "
                               "route has no output for color 1"]
    fabric.write_route(0, 1, accept_mask=1 << Port.RAMP, out_mask=1 << Port.E)
    assert fabric.events(fabric.step(*fabric.idle_inputs())) == [(2, 0, Port.E, 1, 5)]


# Interface ---------------------------------------------------------------------------------------

def test_step_result_and_external_links():
    cfg = MeshConfig(width=3, height=2, colors=4)
    fabric = FabricEmulator(cfg, RouteTable(cfg).chain(2, [(0, 1), (1, 1)], source=Port.W,
                                                       sink=Port.S))
    assert fabric.n_links == 6 + 2 * 3 + 2 * 2 and len(fabric.links) == fabric.n_links
    west = edge_link(fabric, 0, 1, Port.W)
    south = edge_link(fabric, 1, 1, Port.S)
    result = inject_one(fabric, west, 2, 42)
    assert isinstance(result, StepResult) and result.cycle == 0 and fabric.cycle == 1
    assert result.sent_valid.shape == (6, 5) and result.in_credit.shape == (fabric.n_links, 4)
    result = fabric.step(*fabric.idle_inputs())
    assert result.in_credit[west].tolist() == [False, False, True, False]   # popped in cycle 1
    assert fabric.events(result) == [(1, 3, Port.E, 2, 42)]
    result = fabric.step(*fabric.idle_inputs())
    assert result.out_valid.nonzero()[0].tolist() == [south]
    assert (result.out_color[south], result.out_data[south]) == (2, 42)


def test_input_validation():
    cfg = MeshConfig(width=2, height=4, colors=8)
    fabric = FabricEmulator(cfg)
    valid, color, data, credit = fabric.idle_inputs()
    with pytest.raises(ValueError, match="in_valid must have shape"):
        fabric.step(valid[:-1], color, data, credit)
    with pytest.raises(ValueError, match="out_credit must have shape"):
        fabric.step(valid, color, data, credit[:, :2])
    west = edge_link(fabric, 0, 3, Port.W)
    valid[west], color[west] = True, 9
    with pytest.raises(ValueError, match=r"tile \(0,3\) W .*color 9 is out of range"):
        fabric.step(valid, color, data, credit)
    color[west] = 1
    data = data.astype(np.int64)
    data[west] = -1
    with pytest.raises(ValueError, match="not a 32-bit unsigned value"):
        fabric.step(valid, color, data, credit)
    credit[west, 0] = True
    with pytest.raises(ProtocolError, match=r"tile \(0,3\) W .*credit of color 0"):
        fabric.step(*fabric.idle_inputs()[:3], credit)
    assert fabric.cycle == 0 and fabric.held() == 0


def test_injecting_without_a_credit_is_a_protocol_error():
    cfg = row_config(1, depth=1)
    fabric = FabricEmulator(cfg)           # no route: the queue never drains
    inject_one(fabric, 0, 0, 1)
    with pytest.raises(ProtocolError, match=r"tile \(0,0\) RAMP.*without a credit"):
        inject_one(fabric, 0, 0, 2)
    assert fabric.held() == 1


def test_same_seeds_give_the_same_run():
    cfg = MeshConfig(width=3, height=3, colors=2)
    routes = RouteTable(cfg).row_multicast(0, 1, 1).column_multicast(1, 1, 1)
    streams = {cfg.tile_index(1, 1): [(i % 2, i) for i in range(40)]}
    runs = []
    for _ in range(2):
        fabric = FabricEmulator(cfg, routes)
        source = TrafficSource(cfg, fabric.n_links, streams, offer_rate=0.6, seed=3)
        sink = TrafficSink(cfg, fabric.n_links, accept_rate=0.4, seed=4)
        runs.append(run(fabric, source, sink, max_cycles=2000) + (sink.received,))
    assert runs[0] == runs[1]


def test_agents_check_their_inputs():
    cfg = row_config(3)
    n_links = len(external_links(cfg))
    with pytest.raises(ValueError, match="color 2 is out of range"):
        TrafficSource(cfg, n_links, {0: [(2, 0)]})
    with pytest.raises(ValueError, match="not an external link"):
        TrafficSource(cfg, n_links, {n_links: [(0, 0)]})
    with pytest.raises(ValueError, match="offer_rate must be between 0 and 1"):
        TrafficSource(cfg, n_links, {}, offer_rate=1.5)
    sink = TrafficSink(cfg, n_links, accept_rate=0.0)
    valid = np.zeros(n_links, dtype=bool)
    valid[0] = True
    color, data = np.zeros(n_links, dtype=int), np.zeros(n_links, dtype=np.uint32)
    for cycle in range(cfg.buffer_depth):
        sink.update(valid, color, data, cycle)
    with pytest.raises(ProtocolError, match="buffer full"):
        sink.update(valid, color, data, cfg.buffer_depth)


# Property: delivery exactly once, in order -----------------------------------------------------

def reach(routes, x, y, port, color):
    """Where a wavelet of ``color`` entering tile (x, y) on ``port`` goes: the set of external
    links it leaves on, and the number of internal links it crosses."""
    cfg = routes.config
    route = routes.get(x, y, color)
    if route is None or port not in route.inputs:
        return set(), 0
    links = {(link.x, link.y, link.port): link.index for link in external_links(cfg)}
    leaves, hops = set(), 0
    for out in route.outputs:
        nx, ny = x + out.delta[0], y + out.delta[1]
        if out is Port.RAMP or not cfg.on_mesh(nx, ny):
            leaves.add(links[(x, y, out)])
        else:
            further, further_hops = reach(routes, nx, ny, out.opposite, color)
            leaves |= further
            hops += 1 + further_hops
    return leaves, hops


@st.composite
def scenarios(draw):
    cfg = MeshConfig(width=draw(st.integers(1, 4)), height=draw(st.integers(1, 4)),
                     colors=draw(st.integers(1, 4)), buffer_depth=draw(st.integers(1, 3)))
    routes = RouteTable(cfg)
    sources = []                    # (x, y, port, color)
    for color in range(cfg.colors):
        kind = draw(st.sampled_from(["chain", "row", "column", "none"]))
        if kind == "row":
            y, x = draw(st.integers(0, cfg.height - 1)), draw(st.integers(0, cfg.width - 1))
            routes.row_multicast(color, y, x, include_source=draw(st.booleans()))
            if routes.get(x, y, color):       # a one-tile row without its source has no route
                sources.append((x, y, Port.RAMP, color))
        elif kind == "column":
            x, y = draw(st.integers(0, cfg.width - 1)), draw(st.integers(0, cfg.height - 1))
            routes.column_multicast(color, x, y, include_source=draw(st.booleans()))
            if routes.get(x, y, color):
                sources.append((x, y, Port.RAMP, color))
        elif kind == "chain":
            path = [(draw(st.integers(0, cfg.width - 1)), draw(st.integers(0, cfg.height - 1)))]
            for _ in range(draw(st.integers(0, 8))):
                x, y = path[-1]
                nxt = [(x + p.delta[0], y + p.delta[1]) for p in (Port.N, Port.E, Port.S, Port.W)]
                nxt = [n for n in nxt if cfg.on_mesh(*n) and n not in path]
                if not nxt:
                    break
                path.append(draw(st.sampled_from(nxt)))

            def end_ports(x, y):
                return [Port.RAMP] + [p for p in (Port.N, Port.E, Port.S, Port.W)
                                      if not cfg.on_mesh(x + p.delta[0], y + p.delta[1])]
            source = draw(st.sampled_from(end_ports(*path[0])))
            sink = draw(st.sampled_from(end_ports(*path[-1])))
            routes.chain(color, path, source=source, sink=sink)
            sources.append((*path[0], source, color))
    routes.validate()
    lengths = [draw(st.integers(0, 25)) for _ in sources]
    offer = draw(st.floats(0.2, 1.0))
    accept = draw(st.floats(0.2, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    return cfg, routes, sources, lengths, offer, accept, seed


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_wavelet_arrives_exactly_once_in_order(scenario):
    cfg, routes, sources, lengths, offer, accept, seed = scenario
    fabric = CheckedFabric(cfg, routes)
    link_of = {(link.x, link.y, link.port): link.index for link in fabric.links}
    by_link = {}                  # source link -> color -> data, in sending order
    expected = {}                 # (destination link, color) -> data, in arrival order
    wavelet_events = 0
    for s, ((x, y, port, color), n) in enumerate(zip(sources, lengths)):
        data = [(s << 16) | i for i in range(n)]
        by_link.setdefault(link_of[(x, y, port)], {})[color] = data
        leaves, hops = reach(routes, x, y, port, color)
        for link in leaves:
            expected.setdefault((link, color), []).extend(data)
        wavelet_events += n * (len(leaves) + hops)
    # Several colors may start at one link: interleave them in a random order.
    rng = np.random.default_rng(seed)
    streams = {}
    for link, colors in by_link.items():
        order = rng.permutation([c for c, data in colors.items() for _ in data])
        pending = {c: iter(data) for c, data in colors.items()}
        streams[link] = [(int(c), next(pending[c])) for c in order]
    source = TrafficSource(cfg, fabric.n_links, streams, offer_rate=offer, seed=seed)
    sink = TrafficSink(cfg, fabric.n_links, accept_rate=accept, seed=seed + 1)
    _, events = run(fabric, source, sink, max_cycles=20000)
    received = {}
    for link, wavelets in sink.received.items():
        for _, color, data in wavelets:
            received.setdefault((link, color), []).append(data)
    assert received == {key: data for key, data in expected.items() if data}
    assert len(events) == wavelet_events
    assert fabric.held() == 0 and sink.held == 0


# Differential: against a literal, one router at a time reading of section 5 ---------------------

class ReferenceFabric:
    """Section 5 written out with plain loops over tiles, outputs and requesters."""

    def __init__(self, cfg, accept, out):
        self.cfg, self.accept, self.out = cfg, accept, out
        n = cfg.tiles
        self.queue = [[[[] for _ in range(cfg.colors)] for _ in Port] for _ in range(n)]
        self.sent = [[[0] * cfg.colors for _ in Port] for _ in range(n)]
        self.credit = [[[cfg.buffer_depth] * cfg.colors for _ in Port] for _ in range(n)]
        self.rr = [[0] * len(Port) for _ in range(n)]
        self.link = {(cfg.tile_index(l.x, l.y), l.port): l.index for l in external_links(cfg)}

    def across(self, tile, port):
        """(neighbour tile, its port) on the same link, or None for an external link."""
        x, y = self.cfg.tile_xy(tile)
        nx, ny = x + port.delta[0], y + port.delta[1]
        if port is Port.RAMP or not self.cfg.on_mesh(nx, ny):
            return None
        return self.cfg.tile_index(nx, ny), port.opposite

    def step(self, in_valid, in_color, in_data, out_credit):
        cfg, colors = self.cfg, self.cfg.colors
        n_requesters = len(Port) * colors
        events, in_credit = [], np.zeros((len(self.link), colors), dtype=bool)
        arrivals, credits = [], []           # applied after all routers have arbitrated
        for t in range(cfg.tiles):
            grants = {}
            for o in Port:
                for k in range(n_requesters):
                    i = (self.rr[t][o] + k) % n_requesters
                    p, c = divmod(i, colors)
                    if (self.queue[t][p][c] and self.accept[t][c] >> p & 1
                            and self.out[t][c] >> o & 1 and not self.sent[t][p][c] >> o & 1
                            and self.credit[t][o][c] > 0):
                        grants[(p, c)] = grants.get((p, c), 0) | 1 << o
                        self.credit[t][o][c] -= 1
                        self.rr[t][o] = (i + 1) % n_requesters
                        data = self.queue[t][p][c][0]
                        events.append((t, o, c, data))
                        if self.across(t, o):
                            arrivals.append((*self.across(t, o), c, data))
                        break
            for (p, c), granted in grants.items():
                if self.out[t][c] & ~(self.sent[t][p][c] | granted) == 0:
                    self.queue[t][p][c].pop(0)
                    self.sent[t][p][c] = 0
                    if self.across(t, Port(p)):
                        credits.append((*self.across(t, Port(p)), c))
                    else:
                        in_credit[self.link[(t, Port(p))], c] = True
                else:
                    self.sent[t][p][c] |= granted
        for nt, np_, c, data in arrivals:
            self.queue[nt][np_][c].append(data)
        for nt, np_, c in credits:
            self.credit[nt][np_][c] += 1
        for (t, port), index in self.link.items():
            if in_valid[index]:
                self.queue[t][port][int(in_color[index])].append(int(in_data[index]))
            for c in range(colors):
                self.credit[t][port][c] += bool(out_credit[index, c])
        return sorted(events), in_credit


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 2**32 - 1))
def test_matches_a_literal_reading_of_the_spec_on_arbitrary_routes(width, height, colors, depth,
                                                                   seed):
    """Random masks (merges, multicasts, U-turns, loops, unaccepted ports), random traffic on
    every external link and random backpressure, compared cycle by cycle."""
    cfg = MeshConfig(width=width, height=height, colors=colors, buffer_depth=depth)
    rng = np.random.default_rng(seed)
    accept = rng.integers(0, 32, (cfg.tiles, colors)) * (rng.random((cfg.tiles, colors)) < 0.8)
    out = rng.integers(0, 32, (cfg.tiles, colors)) * (rng.random((cfg.tiles, colors)) < 0.9)
    fabric = CheckedFabric(cfg)
    for tile in range(cfg.tiles):
        for color in range(colors):
            fabric.write_route(tile, color, int(accept[tile, color]), int(out[tile, color]))
    reference = ReferenceFabric(cfg, accept.tolist(), out.tolist())
    streams = {link: [(int(rng.integers(colors)), int(rng.integers(2**32))) for _ in range(30)]
               for link in range(fabric.n_links)}
    source = TrafficSource(cfg, fabric.n_links, streams, offer_rate=0.7, seed=seed)
    sink = TrafficSink(cfg, fabric.n_links, accept_rate=0.6, seed=seed + 1)
    for _ in range(120):
        inputs = source.drive() + (sink.credits(),)
        result = fabric.step(*inputs)
        events, in_credit = reference.step(*inputs)
        assert [(t, p, c, d) for _, t, p, c, d in fabric.events(result)] == events
        assert np.array_equal(result.in_credit, in_credit)
        source.update(result.in_credit)
        sink.update(result.out_valid, result.out_color, result.out_data, result.cycle)


# Speed -----------------------------------------------------------------------------------------

def test_speed_64x64_east_streams(capsys):
    cfg = MeshConfig(width=64, height=64, colors=8, buffer_depth=2)
    routes = RouteTable(cfg)
    for y in range(cfg.height):
        routes.row_reduce_chain(y, (0, 1))        # every tile streams to its east neighbour
    fabric = FabricEmulator(cfg, routes)
    cycles = 100
    streams = {cfg.tile_index(x, y): [((x + y) % 2, i) for i in range(cycles)]
               for y in range(cfg.height) for x in range(cfg.width - 1)}
    source = TrafficSource(cfg, fabric.n_links, streams)
    sink = TrafficSink(cfg, fabric.n_links)
    start = time.perf_counter()
    for _ in range(cycles):
        valid, color, data = source.drive()
        result = fabric.step(valid, color, data, sink.credits())
        source.update(result.in_credit)
        sink.update(result.out_valid, result.out_color, result.out_data, result.cycle)
    rate = cycles / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nemulator 64x64, 8 colors, every tile streaming east: {rate:.0f} cycles/s")
    assert int(result.out_valid.sum()) == cfg.height * (cfg.width - 1)   # steady state

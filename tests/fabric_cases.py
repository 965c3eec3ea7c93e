"""Random valid route sets and traffic for the fabric tests (a pure function of a seed)."""

import random
from dataclasses import dataclass

from mesh import MeshConfig, Port, RouteTable, external_links

DIRECTIONS = (Port.N, Port.E, Port.S, Port.W)


@dataclass
class FabricCase:
    config: MeshConfig
    routes: RouteTable
    streams: dict          # external link index -> [(color, data), ...]
    offer_rate: float
    accept_rate: float
    seed: int

    def describe(self):
        lines = [f"seed {self.seed}: {self.config}, offer {self.offer_rate:.2f}, "
                 f"accept {self.accept_rate:.2f}"]
        lines += [f"  ({x},{y}) color {c}: {r}" for x, y, c, r in self.routes]
        return "\n".join(lines)


def _edge_ports(config, x, y):
    return [p for p in DIRECTIONS if not config.on_mesh(x + p.delta[0], y + p.delta[1])]


def _random_tree(rng, config, size):
    """A random tree of ``size`` tiles grown from a random root: {tile: parent or None}."""
    root = (rng.randrange(config.width), rng.randrange(config.height))
    parent = {root: None}
    frontier = [root]
    while frontier and len(parent) < size:
        x, y = rng.choice(frontier)
        free = [p for p in DIRECTIONS if config.on_mesh(x + p.delta[0], y + p.delta[1])
                and (x + p.delta[0], y + p.delta[1]) not in parent]
        if not free:
            frontier.remove((x, y))
            continue
        port = rng.choice(free)
        child = (x + port.delta[0], y + port.delta[1])
        parent[child] = (x, y)
        frontier.append(child)
    return parent


def _direction(a, b):
    for port in DIRECTIONS:
        if (a[0] + port.delta[0], a[1] + port.delta[1]) == b:
            return port
    raise AssertionError(f"{a} and {b} are not neighbours")


def random_case(seed, *, width, height, colors, buffer_depth, max_wavelets=24):
    """Per color (a random subset of them), either a multicast tree (one source, copies spread
    out to the core of some tiles and possibly to edges) or a merge tree (several sources
    converge on one sink). Sources inject from their core or from an edge link."""
    rng = random.Random(seed)
    config = MeshConfig(width=width, height=height, colors=colors, buffer_depth=buffer_depth)
    routes = RouteTable(config)
    sources = []  # (x, y, port, color)
    for color in range(colors):
        if rng.random() < 0.25:
            continue
        tree = _random_tree(rng, config, rng.randint(1, config.tiles))
        children = {tile: [] for tile in tree}
        for tile, up in tree.items():
            if up is not None:
                children[up].append(tile)
        multicast = rng.random() < 0.5
        for tile, up in tree.items():
            toward_children = {_direction(tile, c) for c in children[tile]}
            edges = _edge_ports(config, *tile)
            if multicast:
                if up is None:
                    inputs = {rng.choice(edges)} if edges and rng.random() < 0.3 else {Port.RAMP}
                    sources += [(*tile, p, color) for p in inputs]
                else:
                    inputs = {_direction(tile, up)}
                outputs = set(toward_children)
                if not outputs or rng.random() < 0.5:
                    outputs.add(Port.RAMP)
                if edges and rng.random() < 0.2:
                    outputs.add(rng.choice(edges))
            else:
                inputs = {_direction(tile, c) for c in children[tile]}
                if not inputs or rng.random() < 0.5:
                    inputs.add(Port.RAMP)
                    sources.append((*tile, Port.RAMP, color))
                if up is not None:
                    outputs = {_direction(tile, up)}
                else:
                    outputs = {rng.choice(edges)} if edges and rng.random() < 0.3 else {Port.RAMP}
            for port in (inputs | outputs) - {Port.RAMP}:
                if port in edges:
                    routes.open_edge(*tile, port)
            routes.set(*tile, color, inputs=inputs, outputs=outputs)
    routes.validate()

    index = {(l.x, l.y, l.port): l.index for l in external_links(config)}
    streams = {}
    used = set()  # every wavelet's data is unique, so deliveries can be traced to their source
    for x, y, port, color in sources:
        stream = streams.setdefault(index[(x, y, port)], [])
        for _ in range(rng.randint(0, max_wavelets)):
            data = rng.getrandbits(32)
            while data in used:
                data = rng.getrandbits(32)
            used.add(data)
            stream.append((color, data))
    for stream in streams.values():
        rng.shuffle(stream)  # interleave the colors a link injects
    return FabricCase(config, routes, streams, offer_rate=rng.choice([1.0, 0.8, 0.4]),
                      accept_rate=rng.choice([1.0, 0.7, 0.3]), seed=seed)


def destinations(routes, x, y, port, color):
    """External link indices a wavelet of ``color`` entering tile (x, y) through ``port``
    reaches, following the routes (each once: a validated table has no loops)."""
    config = routes.config
    index = {(l.x, l.y, l.port): l.index for l in external_links(config)}
    found = []
    route = routes.get(x, y, color)
    if route is None or port not in route.inputs:
        return found
    for out in sorted(route.outputs):
        nx, ny = x + out.delta[0], y + out.delta[1]
        if out is Port.RAMP or not config.on_mesh(nx, ny):
            found.append(index[(x, y, out)])
        else:
            found += destinations(routes, nx, ny, out.opposite, color)
    return found


def check_deliveries(case, received):
    """Every injected wavelet arrived exactly once at every destination its route reaches, in
    the order its source sent it (per color); nothing else arrived."""
    links = external_links(case.config)
    expected = {}
    for source, stream in case.streams.items():
        link = links[source]
        for color, data in stream:
            for dest in destinations(case.routes, link.x, link.y, link.port, color):
                expected.setdefault(dest, []).append((source, color, data))
    origin = {(color, data): source for source, stream in case.streams.items()
              for color, data in stream}
    for dest in set(expected) | set(received):
        got = [(origin.get((c, d)), c, d) for _, c, d in received.get(dest, [])]
        want = expected.get(dest, [])
        assert sorted(got, key=repr) == sorted(want, key=repr), \
            f"{links[dest]} received {len(got)} wavelets, expected {len(want)}\n{case.describe()}"
        for flow in {(s, c) for s, c, _ in want}:  # colors may overtake each other
            assert [w for w in got if w[:2] == flow] == [w for w in want if w[:2] == flow], \
                f"{links[dest]}: color {flow[1]} from {links[flow[0]]} out of order\n" \
                f"{case.describe()}"

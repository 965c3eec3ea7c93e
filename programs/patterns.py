"""Benchmark traffic patterns, and the reproducible random traffic that drives them.

A :class:`Workload` is a validated route table plus its flows: each :class:`Flow` injects on one
inbound external link and color and is delivered to one or more outbound external links. Two
workloads exist, both built from a :class:`mesh.MeshConfig` with at least 2 colors:

``east_neighbour``
    Every tile's core streams to its east neighbour's core; a tile in the last column streams to
    the east edge link. Colors alternate in a checkerboard, so tile (x, y) sends on one color
    (RAMP -> E) and receives from its west neighbour on the other (W -> RAMP).
``multicast_and_chains``
    Color 0: the core of the west-most tile of each row multicasts to every core of its row,
    its own included. Color 1: each column is a chain from the north edge link of its top tile
    down to the core of its bottom tile (the north edge, not the top core, so that every flow
    has an inbound link of its own). The bottom row's RAMP outputs carry both classes, so there
    the two contend: above a load of 1/2 the chains and the bottom row's multicast saturate.

Traffic (:func:`generates`) is a counter-based random function, so the emulator's numpy agents and
the C++ agents of the Verilator benchmark draw exactly the same decisions: flow ``f`` (its index
in ``Workload.flows``) generates a wavelet in cycle ``t`` when
``splitmix64(seed ^ (t * CYCLE_KEY) ^ (f * FLOW_KEY)) >> 11`` (all mod 2**64) is below
``load_threshold(load)``.
"""

from dataclasses import dataclass

import numpy as np

from mesh import ConfigError, MeshConfig, Port, RouteTable, checkerboard_color, external_links

__all__ = ["Flow", "Workload", "WORKLOADS", "east_neighbour", "multicast_and_chains",
           "workload", "splitmix64", "load_threshold", "generates", "CYCLE_KEY", "FLOW_KEY",
           "THRESHOLD_BITS"]

MASK64 = (1 << 64) - 1
CYCLE_KEY = 0xD1B54A32D192ED03
FLOW_KEY = 0xABC98388FB8FAC03
# Decisions compare the top 53 bits of a splitmix64 output: load 1.0 is then exactly 2**53,
# which still fits in a uint64, and every threshold is an exact integer in both languages.
THRESHOLD_BITS = 53


@dataclass(frozen=True)
class Flow:
    """Wavelets of ``color`` injected on inbound external link ``source`` (an index of
    :func:`mesh.external_links`). ``destinations`` holds, per copy, (outbound external link
    index, routers passed); the number of routers is the latency in cycles of a copy that meets
    no contention."""
    source: int
    color: int
    destinations: tuple

    @property
    def fanout(self):
        """Copies delivered per wavelet."""
        return len(self.destinations)


@dataclass(frozen=True)
class Workload:
    """A named traffic pattern on a mesh: validated ``routes`` and its ``flows``."""
    name: str
    config: MeshConfig
    routes: RouteTable
    flows: tuple

    @property
    def deliveries(self):
        """Every (flow index, outbound link, color, routers passed) a wavelet is delivered to;
        no two share an (outbound link, color)."""
        return [(f, link, flow.color, routers) for f, flow in enumerate(self.flows)
                for link, routers in flow.destinations]


def east_neighbour(config):
    """Every tile streams to its east neighbour's core (the last column to the east edge)."""
    _check_colors(config)
    routes = RouteTable(config)
    for y in range(config.height):
        for x in range(config.width):
            color = checkerboard_color(x, y, 0, 1)
            routes.set(x, y, color, inputs=Port.RAMP, outputs=Port.E)
            if x + 1 < config.width:
                routes.set(x + 1, y, color, inputs=Port.W, outputs=Port.RAMP)
            else:
                routes.open_edge(x, y, Port.E)
    sources = [(x, y, Port.RAMP, checkerboard_color(x, y, 0, 1))
               for y in range(config.height) for x in range(config.width)]
    return _workload("east_neighbour", config, routes, sources)


def multicast_and_chains(config):
    """Row multicast from each row's west-most core to every core of the row (color 0), plus a
    chain per column from the north edge to the bottom tile's core (color 1)."""
    _check_colors(config)
    w, h = config.width, config.height
    routes = RouteTable(config)
    for y in range(h):
        routes.row_multicast(0, y, 0, include_source=True)
    for x in range(w):
        routes.chain(1, [(x, y) for y in range(h)], source=Port.N, sink=Port.RAMP)
    sources = ([(0, y, Port.RAMP, 0) for y in range(h)]
               + [(x, 0, Port.N, 1) for x in range(w)])
    return _workload("multicast_and_chains", config, routes, sources)


WORKLOADS = {"east_neighbour": east_neighbour, "multicast_and_chains": multicast_and_chains}


def workload(name, config):
    """The workload called ``name`` on ``config``."""
    try:
        build = WORKLOADS[name]
    except KeyError:
        raise ConfigError(f"unknown workload {name!r}; expected one of "
                          f"{', '.join(WORKLOADS)}") from None
    return build(config)


def _check_colors(config):
    if config.colors < 2:
        raise ConfigError(f"the benchmark workloads need at least 2 colors, "
                          f"not {config.colors}")


def _workload(name, config, routes, sources):
    routes.validate()
    index = {(link.x, link.y, link.port): link.index for link in external_links(config)}
    flows = []
    for x, y, port, color in sources:
        destinations = _trace(config, routes, index, x, y, port, color)
        flows.append(Flow(index[(x, y, port)], color, tuple(sorted(destinations.items()))))
    return Workload(name, config, routes, tuple(flows))


def _trace(config, routes, index, x, y, port, color):
    """{outbound external link: routers passed} for a wavelet of ``color`` entering tile (x, y)
    on ``port``. The table is validated (loop-free), so the walk ends."""
    found = {}
    stack = [(x, y, port, 1)]
    while stack:
        x, y, port, routers = stack.pop()
        route = routes.get(x, y, color)
        assert route is not None and port in route.inputs, "a validated table accepts it"
        for out in route.outputs:
            nx, ny = x + out.delta[0], y + out.delta[1]
            if out is not Port.RAMP and config.on_mesh(nx, ny):
                stack.append((nx, ny, out.opposite, routers + 1))
            else:
                found[index[(x, y, out)]] = routers
    return found


# Reproducible traffic --------------------------------------------------------------------------

def splitmix64(x):
    """The splitmix64 finalizer of uint64 ``x`` (a Python int or a numpy uint64 array), mod 2**64.
    The C++ benchmark computes the same function on uint64_t."""
    if isinstance(x, (np.ndarray, np.uint64)):
        with np.errstate(over="ignore"):
            z = x + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def load_threshold(load):
    """The integer a decision's top 53 bits must be below for a generation probability of
    ``load`` (0 to 1) per flow per cycle."""
    if not 0 <= load <= 1:
        raise ConfigError(f"offered load must be from 0 to 1, not {load}")
    return round(load * (1 << THRESHOLD_BITS))


def generates(seed, cycles, flows, threshold):
    """Which flows generate a wavelet in which cycles: a bool array of the broadcast shape of
    ``cycles`` and ``flows`` (integers or integer arrays; e.g. cycles as a column and flow
    indices as a row)."""
    cycles = np.asarray(cycles).astype(np.uint64)
    flows = np.asarray(flows).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = (np.uint64(seed & MASK64) ^ (cycles * np.uint64(CYCLE_KEY))
               ^ (flows * np.uint64(FLOW_KEY)))
    return (splitmix64(key) >> np.uint64(64 - THRESHOLD_BITS)) < np.uint64(threshold)

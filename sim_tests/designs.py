"""The designs under test and their route tables, shared by the pytest side (which elaborates
them) and the cocotb side (which computes expectations from the same tables).

Both sides rebuild the tables from code, so nothing needs to travel through the environment
except the traffic seed (``SIM_TESTS_SEED``).

Router (``hdl.Router``, 4 colors, buffer_depth 2), routes per color::

    0: RAMP      -> E                 straight pass-through
    1: W         -> N, E, RAMP        multicast to three outputs
    2: N, S      -> W                 two inputs merge
    3: E         -> S, W              multicast sharing W with color 2

so outputs E (colors 0, 1) and W (colors 2, 3) are contended. The same router is also a 1x1
mesh, which is how it is compared with ``emulator.FabricEmulator``.

Fabric (``hdl.Fabric``, 4x4, 4 colors, buffer_depth 2)::

    0: row 0 eastward to the east edge: (0,0) takes RAMP, (x>0,0) take W and RAMP (a 4-way
       merge, plus the west edge into (0,0))  -> east_out[0]
    1: row multicast in row 2 from tile (1,2) -> ramp_out of (0,2), (2,2), (3,2)
    2: column chains north edge -> south edge, every column x: north_in[x] -> south_out[x]
    3: a tree: tile (2,1)'s core sends along row 1 both ways, every tile of row 1 forwards to
       its core, north to the north edge and south (column chains) to the south edge
"""

import os
import random

from mesh import MeshConfig, Port, Route, RouteTable, external_links
from mesh.prefill import PrefillConfig

__all__ = ["ROUTER_CONFIG", "FABRIC_CONFIG", "CORE_CONFIG", "MESH_CONFIGS", "PREFILL_CONFIG", "router_routes",
           "router_table", "fabric_table", "Endpoint", "endpoints", "destinations", "hops",
           "sources", "encode", "decode", "seed", "scale", "rng"]

ROUTER_CONFIG = MeshConfig(width=1, height=1, colors=4, buffer_depth=2)
FABRIC_CONFIG = MeshConfig(width=4, height=4, colors=4, buffer_depth=2)
# One core (hdl.Core, module "core"): the smallest memories the machine allows (SRAM) or that
# the core benches need (instruction memory), so that builds and full loads stay quick.
CORE_CONFIG = MeshConfig(width=1, height=1, colors=4, buffer_depth=2, sram_words=256,
                         imem_words=64)
# Whole meshes (hdl.mesh_verilog, top "wse_mesh"), by design name: 3x2, not square, so that a
# mix-up of width and height (tile index, edge link names) shows, and with a pass-through tile in
# the middle of each row; eight colors (allreduce needs six).
MESH_CONFIGS = {
    "mesh": MeshConfig(width=3, height=2, colors=8, buffer_depth=2, sram_words=256,
                       imem_words=64),
}

# The prefill engine (hdl.PrefillEngine with external_dram=True, module "prefill"): n = 4 and
# small memories; the DRAM is the bench's Python model, so dram_bandwidth and dram_latency here
# only set the default channel (the bench may run others with at most dma_queue outstanding).
PREFILL_CONFIG = PrefillConfig(n=4, sbuf_rows=32, psum_rows=16, dram_bytes=1024,
                               dram_bandwidth=4, dram_latency=3, dma_queue=4, commands=32)

_ROUTER_ROUTES = {
    0: ({Port.RAMP}, {Port.E}),
    1: ({Port.W}, {Port.N, Port.E, Port.RAMP}),
    2: ({Port.N, Port.S}, {Port.W}),
    3: ({Port.E}, {Port.S, Port.W}),
}


def seed():
    """The traffic seed: ``SIM_TESTS_SEED`` from the environment, 1 by default."""
    return int(os.environ.get("SIM_TESTS_SEED", "1"))


def scale():
    """Multiplier of the random tests' traffic: ``SIM_TESTS_SCALE`` from the environment, else
    8 on Verilator and 2 on Icarus (which runs the fabric at a few hundred cycles a second)."""
    if os.environ.get("SIM_TESTS_SCALE"):
        return float(os.environ["SIM_TESTS_SCALE"])
    import cocotb
    return 8.0 if "verilator" in (getattr(cocotb, "SIM_NAME", "") or "").lower() else 2.0


def router_routes(config=ROUTER_CONFIG):
    """The ``routes`` argument of ``hdl.Router``: one :class:`mesh.Route` per color."""
    return [Route(frozenset(i), frozenset(o)) for _, (i, o) in sorted(_ROUTER_ROUTES.items())]


def router_table(config=ROUTER_CONFIG):
    """The same routes as a table of the 1x1 mesh (every edge open)."""
    table = RouteTable(config)
    for port in (Port.N, Port.E, Port.S, Port.W):
        table.open_edge(0, 0, port)
    for color, (inputs, outputs) in sorted(_ROUTER_ROUTES.items()):
        table.set(0, 0, color, inputs=inputs, outputs=outputs)
    return table.validate()


def fabric_table(config=FABRIC_CONFIG):
    w, h = config.width, config.height
    table = RouteTable(config)
    # 0: row 0 eastward, merging every core of the row and the west edge.
    table.open_edge(0, 0, Port.W)
    table.open_edge(w - 1, 0, Port.E)
    for x in range(w):
        table.set(x, 0, 0, inputs={Port.RAMP, Port.W}, outputs=Port.E)
    # 1: row multicast in row 2 from (1, 2).
    table.row_multicast(1, 2, 1)
    # 2: column chains from the north edge to the south edge.
    for x in range(w):
        table.chain(2, [(x, y) for y in range(h)], source=Port.N, sink=Port.S)
    # 3: a tree rooted at (2, 1): along row 1, and at each tile north and south to the edges.
    root_x, row = 2, 1
    for x in range(w):
        outputs = {Port.N, Port.S}
        if x == root_x:
            inputs = Port.RAMP
        else:
            inputs = Port.E if x < root_x else Port.W
            outputs.add(Port.RAMP)
        if x <= root_x and x > 0:
            outputs.add(Port.W)
        if x >= root_x and x < w - 1:
            outputs.add(Port.E)
        table.set(x, row, 3, inputs=inputs, outputs=outputs)
        for y in range(row - 1, -1, -1):
            table.set(x, y, 3, inputs=Port.S, outputs=Port.N)
        for y in range(row + 1, h):
            table.set(x, y, 3, inputs=Port.N, outputs=Port.S)
        table.open_edge(x, 0, Port.N)
        table.open_edge(x, h - 1, Port.S)
    return table.validate()


# External links and where wavelets go ---------------------------------------------------------

class Endpoint:
    """One external link pair with its Verilog prefixes: ``inbound`` (e.g. ``ramp_in__2__1`` or
    ``i__4``) and ``outbound``."""

    def __init__(self, link, inbound, outbound):
        self.link = link
        self.index = link.index
        self.inbound = inbound
        self.outbound = outbound

    def __repr__(self):
        return f"Endpoint({self.index}: {self.link}, {self.inbound}/{self.outbound})"


def _prefix(rtl_name):
    # "ramp_in[2][1]" -> "ramp_in__2__1"
    return rtl_name.replace("][", "__").replace("[", "__").replace("]", "")


def endpoints(config, *, router=False):
    """Every external link of the design, in :func:`mesh.external_links` order. For a single
    router (``router=True``, a 1x1 mesh) the prefixes are ``i__{port}`` / ``o__{port}``."""
    result = []
    for link in external_links(config):
        if router:
            result.append(Endpoint(link, f"i__{int(link.port)}", f"o__{int(link.port)}"))
        else:
            result.append(Endpoint(link, _prefix(link.rtl_name("in")),
                                   _prefix(link.rtl_name("out"))))
    return result


def _link_index(config):
    return {(link.x, link.y, link.port): link.index for link in external_links(config)}


def destinations(config, table, link, color):
    """Outbound external link indices reached by a wavelet of ``color`` injected on inbound
    external link ``link`` (an :class:`mesh.ExternalLink`), each with the number of routers it
    passes (``{index: routers}``). Empty when the first router does not accept it."""
    index = _link_index(config)
    found = {}
    stack = [(link.x, link.y, link.port, 1)]
    seen = set()
    while stack:
        x, y, port, routers = stack.pop()
        if (x, y) in seen:
            raise ValueError(f"color {color}: tile ({x},{y}) reached twice from {link}")
        seen.add((x, y))
        route = table.get(x, y, color)
        if route is None or port not in route.inputs:
            continue
        for out in route.outputs:
            if out is Port.RAMP:
                found[index[(x, y, Port.RAMP)]] = routers
                continue
            nx, ny = x + out.delta[0], y + out.delta[1]
            if config.on_mesh(nx, ny):
                stack.append((nx, ny, out.opposite, routers + 1))
            else:
                found[index[(x, y, out)]] = routers
    return found


def hops(config, table, link, color, dest):
    """Routers passed from inbound ``link`` to outbound external link index ``dest``: the
    latency in cycles when nothing else competes (section 5, Timing)."""
    return destinations(config, table, link, color)[dest]


def sources(config, table):
    """``[(link, color, {dest: routers})]`` for every inbound external link and color that the
    routes accept."""
    found = []
    for link in external_links(config):
        for color in range(config.colors):
            dest = destinations(config, table, link, color)
            if dest:
                found.append((link, color, dest))
    return found


# Wavelet data: the source link and a per-(source, color) sequence number ----------------------

def encode(source, seq, rng=None):
    """Data word naming its source link (bits 31:24) and sequence number (15:0); bits 23:16 are
    random filler so that every data bit toggles."""
    filler = rng.randrange(256) if rng is not None else (seq * 37 + source) & 0xFF
    return (source & 0xFF) << 24 | filler << 16 | (seq & 0xFFFF)


def decode(data):
    """(source, seq) of a data word made by :func:`encode`."""
    return data >> 24 & 0xFF, data & 0xFFFF


def rng(name):
    """A random generator for one purpose, derived from the traffic seed."""
    return random.Random(f"{seed()}:{name}")

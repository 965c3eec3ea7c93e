"""The W x H mesh of tiles (docs/ARCHITECTURE.md sections 6 and 10), and its Verilog: the tile
as one module, ``wse_tile``, instanced W x H times by a top module, ``wse_mesh``."""

import time

from amaranth.hdl import Cat, ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, flipped

from mesh import MeshConfig

from .build import verilog
from .core import (LoadSignature, NUM_COUNTERS, PC_BITS, PeekSignature, TRAP_CAUSE_BITS,
                   WORD)
from .fabric import _Link, edge_members
from .link import LinkSignature, RouteWriteSignature
from .tile import TILE_PORTS, Tile, tile_signature

__all__ = ["Mesh", "mesh_verilog", "TILE_MODULE", "MESH_MODULE"]

TILE_MODULE = "wse_tile"
MESH_MODULE = "wse_mesh"


def mesh_signature(config):
    """The signature of :class:`Mesh` (also that of the Verilog module ``wse_mesh``)."""
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
    w, h, tiles = config.width, config.height, config.tiles
    link = LinkSignature(config)
    return wiring.Signature({
        "north_in": In(link).array(w),
        "north_out": Out(link).array(w),
        "east_in": In(link).array(h),
        "east_out": Out(link).array(h),
        "south_in": In(link).array(w),
        "south_out": Out(link).array(w),
        "west_in": In(link).array(h),
        "west_out": Out(link).array(h),
        "route": In(RouteWriteSignature(config, tiles=tiles)),
        "load": In(LoadSignature(config, tiles=tiles)),
        "peek": In(PeekSignature(config, tiles=tiles)),
        "run": In(1),
        "done": Out(1),
        "trap": Out(1),
        "progress": Out(1),
        "halted": Out(tiles),
        "trap_cause": Out(TRAP_CAUSE_BITS).array(tiles),
        "trap_pc": Out(PC_BITS).array(tiles),
        "pc": Out(PC_BITS).array(tiles),
        "counters": Out(WORD).array(tiles, NUM_COUNTERS),
    })


class Mesh(wiring.Component):
    """``config.width`` x ``config.height`` tiles (:class:`Tile`), their routers wired as
    :class:`Fabric` wires its routers, with the same edge link members; the RAMP links are
    internal. Per-tile members are indexed by the row-major tile index ``y * width + x``.

    A run (section 10): with ``run`` low, write the routes (``route``), the instruction memories
    and SRAMs (``load``, one word into every enabled tile per cycle); raise ``run``: cycle 0 is
    the first cycle with ``run`` high. ``done`` rises at the start of the cycle after the one at
    whose end every core has halted; ``trap`` at the start of the cycle after one in which some
    core trapped. A trap stops every core: their ``run`` is ``run & ~trap``, so the state at
    the end of the trap cycle stays for inspection (routers keep forwarding what they hold).
    Lower ``run`` and read the SRAMs through ``peek``.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`

    Members
    -------
    north_in, north_out : :py:`In/Out(LinkSignature(config)).array(W)`
        N port of tile (x, 0), indexed ``[x]``.
    east_in, east_out : :py:`In/Out(LinkSignature(config)).array(H)`
        E port of tile (W - 1, y), indexed ``[y]``.
    south_in, south_out : :py:`In/Out(LinkSignature(config)).array(W)`
        S port of tile (x, H - 1), indexed ``[x]``.
    west_in, west_out : :py:`In/Out(LinkSignature(config)).array(H)`
        W port of tile (0, y), indexed ``[y]``.
    route : :py:`In(RouteWriteSignature(config, tiles=W * H))`
        Route write port, as :class:`Fabric`'s.
    load : :py:`In(LoadSignature(config, tiles=W * H))`
        When ``valid`` (and ``run`` low), word ``addr`` of memory ``target`` of every tile t with
        ``enable`` bit t set becomes ``data[t]`` at the end of the cycle.
    peek : :py:`In(PeekSignature(config, tiles=W * H))`
        ``data[t]`` in cycle t + 1 is SRAM word ``addr`` of tile t in cycle t (``run`` low).
    run : :py:`In(1)`
    done : :py:`Out(1)`
        Every core has halted.
    trap : :py:`Out(1)`
        Some core has trapped.
    progress : :py:`Out(1)`
        This cycle some core retired an instruction or fired or moved a vector stage, or some
        router sent a wavelet (the no-progress rule of section 10).
    halted : :py:`Out(W * H)`
        Bit t: core t has halted (by ``halt`` or a trap).
    trap_cause, trap_pc, pc : :py:`Out(3 / 14 / 14).array(W * H)`
        Per core.
    counters : :py:`Out(32).array(W * H, len(isa.COUNTERS))`
        Per core, in the order of ``isa.COUNTERS``.

    Attributes
    ----------
    tiles : list of list of :class:`Tile`
        Indexed ``[y][x]``.
    """

    def __init__(self, config):
        super().__init__(mesh_signature(config))
        self._config = config
        self.tiles = self._make_tiles()

    @property
    def config(self):
        return self._config

    def _make_tiles(self):
        return [[Tile(self.config) for _ in range(self.config.width)]
                for _ in range(self.config.height)]

    def _place_tiles(self, m):
        for y, row in enumerate(self.tiles):
            for x, tile in enumerate(row):
                m.submodules[f"tile_{x}_{y}"] = tile

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        self._place_tiles(m)
        flat = [tile for row in self.tiles for tile in row]

        trapped = [tile.trap_cause != 0 for tile in flat]
        m.d.comb += [
            self.trap.eq(Cat(trapped).any()),
            self.done.eq(Cat(tile.halted for tile in flat).all()),
            self.progress.eq(Cat(tile.progress for tile in flat).any()),
        ]
        for index, tile in enumerate(flat):
            x, y = cfg.tile_xy(index)
            for port in TILE_PORTS:
                nx, ny = x + port.delta[0], y + port.delta[1]
                name = f"link_{x}_{y}_{port.name}"
                if cfg.on_mesh(nx, ny):
                    # Each link between tiles is named after its sending side.
                    m.submodules[f"{name}_out"] = _Link(
                        tile.o[port], self.tiles[ny][nx].i[port.opposite])
                else:
                    inbound, outbound = edge_members(self, x, y, port)
                    m.submodules[f"{name}_in"] = _Link(flipped(inbound), tile.i[port])
                    m.submodules[f"{name}_out"] = _Link(tile.o[port], flipped(outbound))
            m.d.comb += [
                tile.route.valid.eq(self.route.valid & (self.route.tile == index)),
                tile.route.color.eq(self.route.color),
                tile.route.accept.eq(self.route.accept),
                tile.route.out.eq(self.route.out),
                tile.load.valid.eq(self.load.valid & self.load.enable[index]),
                tile.load.target.eq(self.load.target),
                tile.load.addr.eq(self.load.addr),
                tile.load.data.eq(self.load.data[index]),
                tile.peek.addr.eq(self.peek.addr),
                self.peek.data[index].eq(tile.peek.data),
                tile.run.eq(self.run & ~self.trap),
                tile.x.eq(x), tile.y.eq(y),
                tile.width.eq(cfg.width), tile.height.eq(cfg.height),
                self.halted[index].eq(tile.halted),
                self.trap_cause[index].eq(tile.trap_cause),
                self.trap_pc[index].eq(tile.trap_pc),
                self.pc[index].eq(tile.pc),
            ]
            m.d.comb += [mine.eq(theirs)
                         for mine, theirs in zip(self.counters[index], tile.counters)]
        return m


class _MeshTop(Mesh):
    """:class:`Mesh` with each tile an instance of the Verilog module ``wse_tile`` instead of a
    :class:`Tile` submodule: for Verilog generation only (the module is generated once, by
    :func:`mesh_verilog`)."""

    def _make_tiles(self):
        signature = tile_signature(self.config)
        return [[signature.create(path=(f"tile_{x}_{y}",)) for x in range(self.config.width)]
                for y in range(self.config.height)]

    def _place_tiles(self, m):
        signature = tile_signature(self.config)
        for y, row in enumerate(self.tiles):
            for x, tile in enumerate(row):
                ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
                for path, member, value in signature.flatten(tile):
                    direction = "i" if member.flow == In else "o"
                    ports[f"{direction}_{'__'.join(str(part) for part in path)}"] = value
                m.submodules[f"tile_{x}_{y}"] = Instance(TILE_MODULE, **ports)


def mesh_verilog(config, timings=None):
    """Verilog text of a whole mesh: module ``wse_tile`` (one :class:`Tile`, with its position
    as inputs) followed by the top module ``wse_mesh`` (the ports of :class:`Mesh`, the same
    names as its members joined by double underscores) that instances it W x H times.

    Generating the tile once keeps the time independent of the mesh size (but for the top's
    wiring). ``timings``, a dict if given, receives the seconds spent on ``"tile"`` and
    ``"top"``."""
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
    start = time.perf_counter()
    tile_text = verilog(Tile(config), TILE_MODULE)
    middle = time.perf_counter()
    top_text = verilog(_MeshTop(config), MESH_MODULE)
    end = time.perf_counter()
    if timings is not None:
        timings["tile"] = middle - start
        timings["top"] = end - middle
    return tile_text + "\n" + top_text

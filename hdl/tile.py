"""A tile: a router and a core on its RAMP port (docs/ARCHITECTURE.md section 10)."""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from mesh import MeshConfig, Port

from .core import Core, core_members
from .link import LinkSignature, RouteWriteSignature
from .router import Router

__all__ = ["TILE_PORTS", "tile_signature", "Tile"]

# The router ports a tile exposes (RAMP is internal), in the order of its `i` and `o` members.
TILE_PORTS = (Port.N, Port.E, Port.S, Port.W)


def tile_signature(config):
    """The signature of :class:`Tile` (also that of the Verilog module ``wse_tile``)."""
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
    link = LinkSignature(config)
    return wiring.Signature({
        "i": In(link).array(len(TILE_PORTS)),
        "o": Out(link).array(len(TILE_PORTS)),
        "route": In(RouteWriteSignature(config)),
        **core_members(config),
    })


class Tile(wiring.Component):
    """A :class:`Router` (no routes at reset: they are written through ``route``) and a
    :class:`Core` on its RAMP port. The core's ``route_to_core`` / ``route_from_core`` are the
    router's route registers: RAMP in ``out[c]`` / in ``accept[c]``.

    The position inputs make one tile design serve every position of a mesh.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`

    Members
    -------
    i : :py:`In(LinkSignature(config)).array(4)`
        Inbound links of ports N, E, S, W (indexed by :class:`mesh.Port`).
    o : :py:`Out(LinkSignature(config)).array(4)`
        Outbound links of ports N, E, S, W.
    route : :py:`In(RouteWriteSignature(config))`
        The router's route write port.
    load, peek, run, x, y, width, height, halted, trap_cause, trap_pc, pc, counters
        The core's (see :class:`Core`).
    progress : :py:`Out(1)`
        The core's, or the router sends a wavelet on any port this cycle.

    Attributes
    ----------
    router : :class:`Router`
    core : :class:`Core`
    """

    def __init__(self, config):
        super().__init__(tile_signature(config))
        self._config = config
        self.router = Router(config)
        self.core = Core(config)

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        colors = self.config.colors
        m.submodules.router = router = self.router
        m.submodules.core = core = self.core

        for index, port in enumerate(TILE_PORTS):
            connect(m, flipped(self.i[index]), router.i[port])
            connect(m, router.o[port], flipped(self.o[index]))
        connect(m, core.tx, router.i[Port.RAMP])
        connect(m, router.o[Port.RAMP], core.rx)
        connect(m, flipped(self.route), router.route)
        connect(m, flipped(self.load), core.load)
        connect(m, flipped(self.peek), core.peek)
        m.d.comb += [
            core.route_to_core.eq(router.out[Port.RAMP]),
            core.route_from_core.eq(Cat(router.accept[Port.RAMP * colors + c]
                                        for c in range(colors))),
            core.run.eq(self.run),
            core.x.eq(self.x), core.y.eq(self.y),
            core.width.eq(self.width), core.height.eq(self.height),
            self.halted.eq(core.halted),
            self.progress.eq(core.progress | Cat(router.o[port].valid for port in Port).any()),
            self.trap_cause.eq(core.trap_cause),
            self.trap_pc.eq(core.trap_pc),
            self.pc.eq(core.pc),
        ]
        m.d.comb += [mine.eq(theirs) for mine, theirs in zip(self.counters, core.counters)]
        return m

"""The W x H mesh of routers (docs/ARCHITECTURE.md, sections 2 and 6)."""

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from mesh import MeshConfig, Port, RouteTable

from .link import LinkSignature, RouteWriteSignature
from .router import Router

__all__ = ["Fabric"]


def edge_members(component, x, y, port):
    """The (inbound, outbound) external members of the edge link of tile (x, y) on ``port`` of
    a component with the edge members of :class:`Fabric` (``north_in``, ..., ``west_out``)."""
    if port is Port.N:
        return component.north_in[x], component.north_out[x]
    if port is Port.E:
        return component.east_in[y], component.east_out[y]
    if port is Port.S:
        return component.south_in[x], component.south_out[x]
    return component.west_in[y], component.west_out[y]


class Fabric(wiring.Component):
    """A ``config.width`` x ``config.height`` mesh of :class:`Router`, wired neighbour to
    neighbour: the outbound link of port p of one router is the inbound link of the facing port
    of its neighbour (credits included). Every external link is a member.

    Links have no register, so a wavelet takes one cycle per hop: injected on ``ramp_in`` in
    cycle t, it leaves the k-th router of a straight route in cycle t + 1 + k. External agents
    follow the link protocol: an agent injecting on an ``*_in`` link holds credit counters starting
    at ``buffer_depth`` and counts the ``credit`` bits it reads back; an agent draining an
    ``*_out`` link returns a ``credit`` bit per wavelet it takes out of its own buffer.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Geometry, colors and queue depth.
    routes : :class:`mesh.RouteTable` or None
        Reset values of the route registers (None: no routes; write them through ``route``).
        The table is taken as it is; ``RouteTable.validate`` is the caller's to run.

    Members
    -------
    ramp_in, ramp_out : :py:`In/Out(LinkSignature(config)).array(H, W)`
        RAMP inbound / outbound link of tile (x, y), indexed ``[y][x]``.
    north_in, north_out : :py:`In/Out(LinkSignature(config)).array(W)`
        N port of tile (x, 0), indexed ``[x]``.
    east_in, east_out : :py:`In/Out(LinkSignature(config)).array(H)`
        E port of tile (W - 1, y), indexed ``[y]``.
    south_in, south_out : :py:`In/Out(LinkSignature(config)).array(W)`
        S port of tile (x, H - 1), indexed ``[x]``.
    west_in, west_out : :py:`In/Out(LinkSignature(config)).array(H)`
        W port of tile (0, y), indexed ``[y]``.
    route : :py:`In(RouteWriteSignature(config, tiles=W * H))`
        Route write port: the router of tile index ``tile`` (row-major) takes the write.

    Attributes
    ----------
    routers : list of list of :class:`Router`
        The routers, indexed ``[y][x]``.
    """

    def __init__(self, config, routes=None):
        if not isinstance(config, MeshConfig):
            raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
        if routes is not None:
            if not isinstance(routes, RouteTable):
                raise TypeError(f"routes must be None or a mesh.RouteTable, not {routes!r}")
            other = routes.config
            if (other.width, other.height, other.colors) != \
                    (config.width, config.height, config.colors):
                raise ValueError(f"routes is a table for a {other.shape} mesh with {other.colors} "
                                 f"colors, but config is a {config.shape} mesh with "
                                 f"{config.colors} colors")
        self._config = config
        w, h = config.width, config.height
        link = LinkSignature(config)
        super().__init__({
            "ramp_in": In(link).array(h, w),
            "ramp_out": Out(link).array(h, w),
            "north_in": In(link).array(w),
            "north_out": Out(link).array(w),
            "east_in": In(link).array(h),
            "east_out": Out(link).array(h),
            "south_in": In(link).array(w),
            "south_out": Out(link).array(w),
            "west_in": In(link).array(h),
            "west_out": Out(link).array(h),
            "route": In(RouteWriteSignature(config, tiles=config.tiles)),
        })
        self.routers = [
            [Router(config, None if routes is None
                    else [routes.get(x, y, c) for c in range(config.colors)])
             for x in range(w)]
            for y in range(h)]

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        for y, row in enumerate(self.routers):
            for x, router in enumerate(row):
                m.submodules[f"router_{x}_{y}"] = router
                m.submodules[f"link_{x}_{y}_RAMP_in"] = _Link(flipped(self.ramp_in[y][x]),
                                                              router.i[Port.RAMP])
                m.submodules[f"link_{x}_{y}_RAMP_out"] = _Link(router.o[Port.RAMP],
                                                               flipped(self.ramp_out[y][x]))
                for port in (Port.N, Port.E, Port.S, Port.W):
                    nx, ny = x + port.delta[0], y + port.delta[1]
                    name = f"link_{x}_{y}_{port.name}"
                    if cfg.on_mesh(nx, ny):
                        # Each link between routers is named after its sending side.
                        m.submodules[f"{name}_out"] = _Link(
                            router.o[port], self.routers[ny][nx].i[port.opposite])
                    else:
                        inbound, outbound = edge_members(self, x, y, port)
                        m.submodules[f"{name}_in"] = _Link(flipped(inbound), router.i[port])
                        m.submodules[f"{name}_out"] = _Link(router.o[port], flipped(outbound))

                m.d.comb += [
                    router.route.valid.eq(self.route.valid
                                          & (self.route.tile == cfg.tile_index(x, y))),
                    router.route.color.eq(self.route.color),
                    router.route.accept.eq(self.route.accept),
                    router.route.out.eq(self.route.out),
                ]
        return m


class _Link(Elaboratable):
    """The wires of one link, from its sender's interface to its receiver's (no register).

    Each link is a module of its own so that the Amaranth simulator, which re-evaluates a
    module's whole combinational logic when any signal it reads changes, only re-evaluates this
    link when one of its signals changes. Being wires only, it leaves no module in Verilog."""

    def __init__(self, sender, receiver):
        self._sender = sender
        self._receiver = receiver

    def elaborate(self, platform):
        m = Module()
        connect(m, self._sender, self._receiver)
        return m

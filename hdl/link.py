"""Signatures of the fabric's link and of its route write port (docs/ARCHITECTURE.md, sections 3
and 6)."""

from amaranth.lib import wiring
from amaranth.lib.wiring import Out, In

from mesh import MeshConfig, NUM_PORTS, color_bits
from mesh.wavelet import DATA_BITS

__all__ = ["LinkSignature", "RouteWriteSignature"]


def _check_config(config):
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")


class LinkSignature(wiring.Signature):
    """One link, from the sender's point of view: at most one wavelet per cycle forward, credits
    back. The link has no register: what the sender drives in cycle t is in the receiver's queue
    (or, for credits, the sender's counter) at the start of cycle t + 1.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Gives the number of colors.

    Members
    -------
    valid : :py:`Out(1)`
        A wavelet is on the link this cycle.
    color : :py:`Out(color_bits(config.colors))`
        Its color.
    data : :py:`Out(32)`
        Its data.
    credit : :py:`In(config.colors)`
        Bit c: the receiver freed one slot of its color c queue this cycle.
    """

    def __init__(self, config):
        _check_config(config)
        self._colors = config.colors
        super().__init__({
            "valid": Out(1),
            "color": Out(color_bits(config.colors)),
            "data": Out(DATA_BITS),
            "credit": In(config.colors),
        })

    @property
    def colors(self):
        return self._colors

    def __eq__(self, other):
        return type(other) is type(self) and other.colors == self.colors

    def __repr__(self):
        return f"LinkSignature(colors={self.colors})"


class RouteWriteSignature(wiring.Signature):
    """The route write port, from the writer's point of view (a component that takes it uses
    ``In(RouteWriteSignature(...))``). When ``valid`` is set, the route of ``tile`` and ``color``
    is replaced at the end of the cycle; a tile or color out of range writes nothing.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Gives the number of colors.
    tiles : :class:`int` or None
        Number of tiles the port addresses; None (a single router) leaves out the ``tile`` member.

    Members
    -------
    valid : :py:`Out(1)`
        Write this cycle.
    tile : :py:`Out(max(1, bits of tiles - 1))`
        Row-major tile index. Only present when ``tiles`` is given.
    color : :py:`Out(color_bits(config.colors))`
        The color whose route is written.
    accept : :py:`Out(5)`
        The new accept mask (bit p: input port p).
    out : :py:`Out(5)`
        The new output mask (bit p: output port p).
    """

    def __init__(self, config, tiles=None):
        _check_config(config)
        if tiles is not None and (not isinstance(tiles, int) or isinstance(tiles, bool)
                                  or tiles < 1):
            raise ValueError(f"tiles must be None or a positive integer, not {tiles!r}")
        self._colors = config.colors
        self._tiles = tiles
        members = {"valid": Out(1)}
        if tiles is not None:
            members["tile"] = Out(max(1, (tiles - 1).bit_length()))
        members.update({
            "color": Out(color_bits(config.colors)),
            "accept": Out(NUM_PORTS),
            "out": Out(NUM_PORTS),
        })
        super().__init__(members)

    @property
    def colors(self):
        return self._colors

    @property
    def tiles(self):
        return self._tiles

    def __eq__(self, other):
        return (type(other) is type(self) and other.colors == self.colors
                and other.tiles == self.tiles)

    def __repr__(self):
        return f"RouteWriteSignature(colors={self.colors}, tiles={self.tiles})"

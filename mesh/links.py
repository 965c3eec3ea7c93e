"""The fabric's external links: every tile's RAMP link and every edge link.

External agents (cores, test benches, the packet link) attach to these. Both simulators index
them in the order :func:`external_links` gives: the RAMP links in tile order, then the edge links
side by side: north (x = 0..W-1), east (y = 0..H-1), south (x = 0..W-1), west (y = 0..H-1).
"""

from dataclasses import dataclass

from .ports import Port

__all__ = ["ExternalLink", "external_links"]

_SIDES = (("north", Port.N), ("east", Port.E), ("south", Port.S), ("west", Port.W))


@dataclass(frozen=True)
class ExternalLink:
    """One external link pair (an inbound and an outbound link) at tile (x, y), port ``port``.

    ``rtl_name`` is the member of the RTL ``Fabric`` signature that carries it, with its index:
    ``ramp_in[y][x]`` / ``ramp_out[y][x]``, ``north_in[x]``, ``east_out[y]``, and so on. In
    generated Verilog the members become ``ramp_in__{y}__{x}__valid``, ``north_in__{x}__data``, ...
    """
    index: int
    x: int
    y: int
    port: Port

    @property
    def side(self):
        return "ramp" if self.port is Port.RAMP else dict((p, s) for s, p in _SIDES)[self.port]

    def rtl_name(self, direction):
        """``direction`` is "in" (into the fabric) or "out" (out of the fabric)."""
        if self.port is Port.RAMP:
            return f"ramp_{direction}[{self.y}][{self.x}]"
        position = self.x if self.port in (Port.N, Port.S) else self.y
        return f"{self.side}_{direction}[{position}]"

    def __str__(self):
        return f"tile ({self.x},{self.y}) {self.port.name}"


def external_links(config):
    """All external links of a mesh, in index order."""
    links = []
    for y in range(config.height):
        for x in range(config.width):
            links.append((x, y, Port.RAMP))
    w, h = config.width, config.height
    links += [(x, 0, Port.N) for x in range(w)]
    links += [(w - 1, y, Port.E) for y in range(h)]
    links += [(x, h - 1, Port.S) for x in range(w)]
    links += [(0, y, Port.W) for y in range(h)]
    return [ExternalLink(i, x, y, p) for i, (x, y, p) in enumerate(links)]

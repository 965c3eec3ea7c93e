"""Static per-color routes, their validation, and helpers for common patterns.

A route says, for one tile and one color, which input ports the router accepts wavelets of that
color from and which output ports it forwards them to (more than one output = multicast).
"""

from dataclasses import dataclass

from .config import ConfigError
from .ports import Port

__all__ = ["Route", "RouteError", "RouteTable", "checkerboard_color"]


class RouteError(ConfigError):
    """An invalid route or route table. The message names the tile, the color and the problem."""


def _ports(value, what, where):
    if isinstance(value, (str, int, Port)):
        value = [value]
    try:
        return frozenset(Port.parse(p) for p in value)
    except (TypeError, ValueError) as error:
        raise RouteError(f"{where}: bad {what}: {error}") from None


def _mask(ports):
    return sum(1 << p for p in ports)


def _names(ports):
    return "{" + ",".join(p.name for p in sorted(ports)) + "}" if ports else "{}"


@dataclass(frozen=True)
class Route:
    inputs: frozenset
    outputs: frozenset

    @property
    def accept_mask(self):
        return _mask(self.inputs)

    @property
    def output_mask(self):
        return _mask(self.outputs)

    def __str__(self):
        return f"{_names(self.inputs)} -> {_names(self.outputs)}"


def checkerboard_color(x, y, even, odd):
    """The color of a checkerboard: ``even`` where x + y is even, ``odd`` elsewhere. Alternating
    colors let every tile of a chain receive on one color and send on the other."""
    return even if (x + y) % 2 == 0 else odd


class RouteTable:
    """Routes of a whole mesh, plus the edge links that external agents are attached to.

    ``set`` checks one route on its own; ``validate`` checks the table as a whole (links that
    leave the mesh, neighbours that do not accept what is sent to them, loops) and reports every
    problem it finds in one :class:`RouteError`.
    """

    def __init__(self, config):
        self.config = config
        self._routes = {}       # (x, y, color) -> Route
        self._open_edges = set()  # (x, y, Port)

    # Building ------------------------------------------------------------------------------

    def set(self, x, y, color, *, inputs, outputs, replace=False):
        where = f"tile ({x},{y}) color {color}"
        try:
            self.config.check_tile(x, y)
            self.config.check_color(color, where=f"tile ({x},{y}): ")
        except ConfigError as error:
            raise RouteError(str(error)) from None
        route = Route(_ports(inputs, "input port", where), _ports(outputs, "output port", where))
        if not route.inputs:
            raise RouteError(f"{where}: route {route} accepts no input port, "
                             f"so nothing of this color can enter the router")
        if not route.outputs:
            raise RouteError(f"{where}: route {route} has no output port, so wavelets of this "
                             f"color would never leave the router")
        old = self._routes.get((x, y, color))
        if old is not None and old != route and not replace:
            raise RouteError(f"{where}: already routed {old}; refusing to overwrite it "
                             f"with {route} (pass replace=True to do so)")
        self._routes[(x, y, color)] = route
        return self

    def open_edge(self, x, y, port):
        """Declare that an external agent is attached to the edge link of tile (x, y) on
        ``port``, so routes may send to it and accept from it."""
        port = Port.parse(port)
        try:
            self.config.check_tile(x, y)
        except ConfigError as error:
            raise RouteError(str(error)) from None
        if port is Port.RAMP or self.config.on_mesh(x + port.delta[0], y + port.delta[1]):
            raise RouteError(f"tile ({x},{y}) port {port.name} is not an edge link of the "
                             f"{self.config.shape} mesh")
        self._open_edges.add((x, y, port))
        return self

    # Reading -------------------------------------------------------------------------------

    def get(self, x, y, color):
        return self._routes.get((x, y, color))

    def __iter__(self):
        """(x, y, color, route) for every configured route, in tile then color order."""
        for (x, y, color), route in sorted(self._routes.items(),
                                           key=lambda item: (item[0][1], item[0][0], item[0][2])):
            yield x, y, color, route

    def __len__(self):
        return len(self._routes)

    @property
    def open_edges(self):
        return frozenset(self._open_edges)

    def masks(self):
        """Per tile (row-major index) and color, the accept and output port masks; 0 where no
        route is configured."""
        cfg = self.config
        accept = [[0] * cfg.colors for _ in range(cfg.tiles)]
        output = [[0] * cfg.colors for _ in range(cfg.tiles)]
        for (x, y, color), route in self._routes.items():
            accept[cfg.tile_index(x, y)][color] = route.accept_mask
            output[cfg.tile_index(x, y)][color] = route.output_mask
        return accept, output

    # Whole-table checks ------------------------------------------------------------------------

    def problems(self):
        """Every problem of the table as a whole, as readable sentences."""
        cfg = self.config
        found = []
        for x, y, color, route in self:
            where = f"tile ({x},{y}) color {color}"
            for port in sorted(route.outputs - {Port.RAMP}):
                nx, ny = x + port.delta[0], y + port.delta[1]
                if not cfg.on_mesh(nx, ny):
                    if (x, y, port) not in self._open_edges:
                        found.append(f"{where}: output {port.name} leaves the mesh and no "
                                     f"external agent is attached there (open_edge({x}, {y}, "
                                     f"'{port.name}') attaches one)")
                    continue
                downstream = self._routes.get((nx, ny, color))
                if downstream is None or port.opposite not in downstream.inputs:
                    has = f"its route is {downstream}" if downstream else "it has no route"
                    found.append(f"{where}: sends {port.name} to tile ({nx},{ny}), which does "
                                 f"not accept color {color} from {port.opposite.name} ({has})")
            for port in sorted(route.inputs - {Port.RAMP}):
                nx, ny = x + port.delta[0], y + port.delta[1]
                if not cfg.on_mesh(nx, ny) and (x, y, port) not in self._open_edges:
                    found.append(f"{where}: accepts input {port.name} from outside the mesh but "
                                 f"no external agent is attached there (open_edge({x}, {y}, "
                                 f"'{port.name}') attaches one)")
        found.extend(self._loops())
        return found

    def validate(self):
        found = self.problems()
        if found:
            raise RouteError(f"{len(found)} problem(s) in the routes of the {self.config.shape} "
                             f"mesh:\n  " + "\n  ".join(found))
        return self

    def _loops(self):
        """Colors whose links form a cycle: wavelets on it would circulate (and, with multicast,
        multiply) forever and never drain."""
        cfg = self.config
        found = []
        for color in range(cfg.colors):
            succ = {}
            for x, y, c, route in self:
                if c != color:
                    continue
                nxt = []
                for port in route.outputs - {Port.RAMP}:
                    n = (x + port.delta[0], y + port.delta[1])
                    downstream = self._routes.get((*n, color))
                    if downstream is not None and port.opposite in downstream.inputs:
                        nxt.append(n)
                succ[(x, y)] = sorted(nxt)
            state = {}  # tile -> 1 while on the DFS stack, 2 when finished
            for start in sorted(succ):
                if state.get(start):
                    continue
                stack, path = [(start, iter(succ[start]))], [start]
                state[start] = 1
                while stack:
                    node, children = stack[-1]
                    child = next(children, None)
                    if child is None:
                        state[node] = 2
                        stack.pop()
                        path.pop()
                    elif state.get(child) == 1:
                        loop = path[path.index(child):] + [child]
                        found.append(f"color {color}: routes form a loop that would never drain: "
                                     + " -> ".join(f"({lx},{ly})" for lx, ly in loop))
                    elif not state.get(child):
                        state[child] = 1
                        stack.append((child, iter(succ.get(child, ()))))
                        path.append(child)
        return found

    # Helpers for common patterns ---------------------------------------------------------------

    def chain(self, color, path, *, source=Port.RAMP, sink=Port.RAMP):
        """Route ``color`` along ``path``, a list of (x, y) tiles each adjacent to the next. The
        first tile accepts from ``source`` (its core by default, or an edge port), the last
        forwards to ``sink``. Edge ports used as source or sink are opened."""
        path = [tuple(p) for p in path]
        if not path:
            raise RouteError(f"color {color}: a chain needs at least one tile")
        steps = []
        for (ax, ay), (bx, by) in zip(path, path[1:]):
            for port in (Port.N, Port.E, Port.S, Port.W):
                if (ax + port.delta[0], ay + port.delta[1]) == (bx, by):
                    steps.append(port)
                    break
            else:
                raise RouteError(f"color {color}: chain step ({ax},{ay}) -> ({bx},{by}) is not "
                                 f"between neighbouring tiles")
        source, sink = Port.parse(source), Port.parse(sink)
        for i, (x, y) in enumerate(path):
            into = source if i == 0 else steps[i - 1].opposite
            out = sink if i == len(path) - 1 else steps[i]
            for port, end in ((into, i == 0), (out, i == len(path) - 1)):
                if end and port is not Port.RAMP and \
                        not self.config.on_mesh(x + port.delta[0], y + port.delta[1]):
                    self.open_edge(x, y, port)
            self.set(x, y, color, inputs=into, outputs=out)
        return self

    def row_multicast(self, color, y, source_x, *, include_source=False):
        """Tile (source_x, y) sends on ``color``; every other tile of row y receives a copy."""
        self._line_multicast(color, source_x, include_source,
                             lambda i: (i, y), self.config.width, Port.W, Port.E)
        return self

    def column_multicast(self, color, x, source_y, *, include_source=False):
        """Tile (x, source_y) sends on ``color``; every other tile of column x receives a copy."""
        self._line_multicast(color, source_y, include_source,
                             lambda i: (x, i), self.config.height, Port.N, Port.S)
        return self

    def _line_multicast(self, color, source, include_source, tile, length, low, high):
        if not 0 <= source < length:
            raise RouteError(f"color {color}: multicast source {tile(source)} is outside the "
                             f"{self.config.shape} mesh")
        for i in range(length):
            out = set()
            if i == source:
                into = Port.RAMP
                if include_source:
                    out.add(Port.RAMP)
            else:
                into = low if i > source else high   # from the side facing the source
                out.add(Port.RAMP)
            if i <= source and i > 0:
                out.add(low)
            if i >= source and i < length - 1:
                out.add(high)
            if out:
                self.set(*tile(i), color, inputs=into, outputs=out)

    def row_reduce_chain(self, y, colors, *, toward=Port.E):
        """A chain along row y in which each tile sends to the next one toward ``toward`` (E or
        W), alternating between the two ``colors`` (a checkerboard) so that every tile receives
        on one color and sends on the other. The last tile receives only."""
        self._line_reduce(colors, toward, (Port.E, Port.W), f"row {y}",
                          [(x, y) for x in range(self.config.width)])
        return self

    def column_reduce_chain(self, x, colors, *, toward=Port.S):
        """As :meth:`row_reduce_chain`, along column x toward N or S."""
        self._line_reduce(colors, toward, (Port.S, Port.N), f"column {x}",
                          [(x, y) for y in range(self.config.height)])
        return self

    def _line_reduce(self, colors, toward, directions, name, tiles):
        toward = Port.parse(toward)
        if toward not in directions:
            raise RouteError(f"{name}: a {name.split()[0]} reduction runs "
                             f"{directions[0].name} or {directions[1].name}, not {toward.name}")
        even, odd = colors
        order = tiles if toward is directions[0] else tiles[::-1]
        for (x, y), after in zip(order, order[1:]):
            color = checkerboard_color(x, y, even, odd)
            self.set(x, y, color, inputs=Port.RAMP, outputs=toward)
            self.set(*after, color, inputs=toward.opposite, outputs=Port.RAMP)

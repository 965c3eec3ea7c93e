"""The router of one tile (docs/ARCHITECTURE.md, section 5).

Queue (p, c), for input port p and color c, is *lane* ``p * colors + c``: the requester index of
the specification. Per-lane state and requests are kept as lane vectors (bit i for lane i), so
that the logic is a few wide expressions. That also suits the Amaranth simulator, which
re-evaluates all of a module's combinational logic whenever any signal it reads changes: the
router is split into modules (queues, arbiters, the rest) whose logic each settles in one or two
passes per cycle.
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from mesh import MeshConfig, NUM_PORTS, Port, Route
from mesh.wavelet import DATA_BITS

from .link import LinkSignature, RouteWriteSignature

__all__ = ["RoundRobinArbiter", "InputQueues", "Router"]


def _check_config(config):
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")


def _or(values):
    return functools.reduce(operator.or_, values)


class RoundRobinArbiter(wiring.Component):
    """Grants one of ``width`` requesters per cycle, round robin: the first requesting index at or
    after ``pointer``, wrapping around. After a grant, ``pointer`` moves to the granted index + 1
    (modulo ``width``); a cycle without requests leaves it alone.

    The grant is combinational from ``request`` and the pointer register.

    Parameters
    ----------
    width : :class:`int`
        Number of requesters, at least 1.

    Members
    -------
    request : :py:`In(width)`
        Bit i: requester i requests this cycle.
    grant : :py:`Out(width)`
        One-hot: the granted requester; zero when nothing is requested.
    index : :py:`Out(range(width))`
        The index of the granted requester (0 when nothing is requested).

    Attributes
    ----------
    pointer : :class:`Signal`
        The first index considered this cycle; resets to 0.
    """

    def __init__(self, width):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self._width = width
        super().__init__({
            "request": In(width),
            "grant": Out(width),
            "index": Out(range(width)),
        })
        self.pointer = Signal(range(width))

    @property
    def width(self):
        return self._width

    def elaborate(self, platform):
        m = Module()
        width = self.width
        # Grant the lowest requesting index >= pointer, else the lowest requesting index; x & -x
        # isolates the lowest set bit of x. Both outputs are computed from `lowest` so that they
        # settle together (a module reading both is evaluated once, not twice, in simulation).
        at_or_after = self.request & (Const((1 << width) - 1, width) << self.pointer)[:width]
        candidates = Mux(at_or_after.any(), at_or_after, self.request)
        lowest = Signal(width)
        m.d.comb += [
            lowest.eq(candidates & (~candidates + 1)),
            self.grant.eq(lowest),
            self.index.eq(Cat((lowest & sum(1 << i for i in range(width) if i >> bit & 1)).any()
                              for bit in range(len(self.index)))),
        ]
        with m.If(self.request.any()):
            m.d.sync += self.pointer.eq(Mux(self.index == width - 1, 0, self.index + 1))
        return m


class InputQueues(wiring.Component):
    """The input queues of a router: per inbound link and color, a first-word-fall-through queue
    of ``config.buffer_depth`` wavelets, built from registers as a shift register so that its
    head is always in slot 0.

    A wavelet on inbound link p with color c is appended to queue (p, c) at the end of the cycle,
    whatever the routes say (a color out of range is ignored): it is at the head in the next
    cycle if the queue was empty. Popping and appending may happen in the same cycle. A queue
    popped in a cycle sets its ``credit`` bit on its inbound link in that cycle. Senders hold
    credits, so a queue never overflows; a wavelet sent into a full queue that is not popped in
    the same cycle would be ignored.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Number of colors and queue depth.
    inbound : list of 5 link interfaces
        The router's inbound links, indexed by port. This module reads their ``valid``,
        ``color`` and ``data`` and drives their ``credit`` directly, so that in simulation a
        change on a link re-evaluates this module only.

    Members
    -------
    pop : :py:`In(5 * colors)`
        Lane vector: remove these heads at the end of the cycle. Only non-empty queues may be
        popped.
    nonempty : :py:`Out(5 * colors)`
        Lane vector of the queues holding at least one wavelet (a register).
    heads : :py:`Out(ArrayLayout(32, 5 * colors))`
        The head of each queue, by lane (registers; meaningful when the queue is non-empty).

    Attributes
    ----------
    filled : list of :class:`Signal` (lane vector), indexed by slot
        ``filled[k]`` bit i: queue i holds more than k wavelets. ``filled[0]`` is ``nonempty``.
    slots : list of :class:`Signal` (``ArrayLayout(32, 5 * colors)``), indexed by slot
        ``slots[k][i]``: slot k of queue i. ``slots[0]`` is ``heads``.
    """

    def __init__(self, config, inbound):
        _check_config(config)
        if len(inbound) != NUM_PORTS:
            raise ValueError(f"inbound must hold {NUM_PORTS} links, not {len(inbound)}")
        self._config = config
        self._inbound = list(inbound)
        lanes = NUM_PORTS * config.colors
        words = data.ArrayLayout(DATA_BITS, lanes)
        super().__init__({
            "pop": In(lanes),
            "nonempty": Out(lanes),
            "heads": Out(words),
        })
        depth = config.buffer_depth
        self.filled = [self.nonempty] + [Signal(lanes, name=f"filled_{k}")
                                         for k in range(1, depth)]
        self.slots = [self.heads] + [Signal(words, name=f"slots_{k}") for k in range(1, depth)]

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        colors, depth = self.config.colors, self.config.buffer_depth
        lanes = NUM_PORTS * colors
        pop, filled, slots = self.pop, self.filled, self.slots

        for p, link in enumerate(self._inbound):
            m.d.comb += link.credit.eq(pop[p * colors:(p + 1) * colors])

        # The new wavelet goes into the first slot left free by this cycle's pop, if any.
        pushed = Cat((link.valid << link.color)[:colors] for link in self._inbound)  # one-hot
        held = [(filled[k + 1] & pop) | (filled[k] & ~pop) for k in range(depth - 1)]
        held.append(filled[depth - 1] & ~pop)
        for k in range(depth):
            below = held[k - 1] if k > 0 else Const((1 << lanes) - 1, lanes)
            write = Signal(lanes, name=f"write_{k}")
            m.d.comb += write.eq(pushed & below & ~held[k])
            m.d.sync += filled[k].eq(held[k] | write)
            for lane in range(lanes):
                with m.If(write[lane]):
                    m.d.sync += slots[k][lane].eq(self._inbound[lane // colors].data)
                if k + 1 < depth:
                    with m.Elif(pop[lane]):
                        m.d.sync += slots[k][lane].eq(slots[k + 1][lane])
        return m


def _route_masks(config, routes):
    """The reset (accept, out) masks per color from the ``routes`` argument of :class:`Router`."""
    if routes is None:
        return [(0, 0)] * config.colors
    if not isinstance(routes, (list, tuple)):
        raise TypeError(f"routes must be None or a list of {config.colors} mesh.Route or None "
                        f"(one per color), not {routes!r}")
    if len(routes) != config.colors:
        raise ValueError(f"routes must have one entry per color ({config.colors}), "
                         f"not {len(routes)}")
    masks = []
    for color, route in enumerate(routes):
        if route is None:
            masks.append((0, 0))
        elif isinstance(route, Route):
            masks.append((route.accept_mask, route.output_mask))
        else:
            raise TypeError(f"routes[{color}] must be a mesh.Route or None, not {route!r}")
    return masks


class Router(wiring.Component):
    """One router: five ports (indexed by :class:`mesh.Port`), each with an inbound and an
    outbound link, and per port and color an input queue of ``config.buffer_depth`` wavelets.

    Each cycle, from the state at the start of the cycle (section 5 of docs/ARCHITECTURE.md):

    * **Requests.** Queue (p, c) is requester ``i = p * colors + c``. It requests output o when
      it is non-empty, p is in ``accept[c]``, o is in ``out[c]``, its head has not gone to o yet
      (``sent``), and the credit counter of (o, c) is non-zero. Requests depend on registered
      state only, so no combinational path runs from any input to any output.
    * **Arbitration.** Each output independently grants the first requesting index at or after
      its round-robin pointer ``rr[o]`` (wrapping), drives that head on its outbound link with
      color c, spends one credit of (o, c), and moves ``rr[o]`` to the granted index + 1.
    * **Partial multicast.** A head goes to each of its outputs as soon as that output grants
      it. It is popped when it got at least one grant this cycle and ``out[c]`` is covered by
      ``sent`` and this cycle's grants; then ``credit[c]`` is set on inbound link p in the same
      cycle. Otherwise ``sent`` gains this cycle's grants.
    * **Receive.** A wavelet on inbound link p with color c is appended to queue (p, c), whatever
      the route says (a color out of range is ignored). Credit bits on outbound link o add one
      to the counters of o.

    Latency: a wavelet that arrives in cycle t leaves in cycle t + 1 at the earliest (one cycle
    per hop). Credit counters start at ``buffer_depth``, so with a depth of 2 a color sustains
    one wavelet per cycle through the router; with depth 1, one every other cycle. An idle
    outbound link carries zero color and data.

    Senders must respect their credits: a wavelet sent into a full queue that is not popped in
    the same cycle is ignored, and a credit returned beyond ``buffer_depth`` wraps its counter.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Number of colors and queue depth.
    routes : list of :class:`mesh.Route` or None, or None
        Reset value of the route of each color (``config.colors`` entries; None, for the list or
        for an entry: accept nothing, send nowhere).

    Members
    -------
    i : :py:`In(LinkSignature(config)).array(5)`
        Inbound links, indexed by port.
    o : :py:`Out(LinkSignature(config)).array(5)`
        Outbound links, indexed by port.
    route : :py:`In(RouteWriteSignature(config))`
        Route write port: when ``valid``, the route of ``color`` becomes (``accept``, ``out``) at
        the end of the cycle (a color out of range writes nothing).

    Attributes
    ----------
    The state of section 5, for inspection in simulation. A lane vector has bit
    ``p * colors + c`` for queue (p, c).

    accept : :class:`Signal` (lane vector)
        Bit (p, c): port p is in ``accept[c]``.
    out : list of :class:`Signal` (``colors`` bits), indexed by output
        ``out[o]`` bit c: output o is in ``out[c]``.
    sent : list of :class:`Signal` (lane vector), indexed by output
        ``sent[o]`` bit (p, c): the head of queue (p, c) has already gone to output o.
    credit : list of list of :class:`Signal`, ``[output][color]``
        Credit counters of the outbound links.
    queues : :class:`InputQueues`
        The input queues.
    arbiters : list of :class:`RoundRobinArbiter`, indexed by output
        ``arbiters[o].pointer`` is ``rr[o]``.
    """

    def __init__(self, config, routes=None):
        _check_config(config)
        masks = _route_masks(config, routes)
        self._config = config
        super().__init__({
            "i": In(LinkSignature(config)).array(NUM_PORTS),
            "o": Out(LinkSignature(config)).array(NUM_PORTS),
            "route": In(RouteWriteSignature(config)),
        })

        colors, depth = config.colors, config.buffer_depth
        lanes = NUM_PORTS * colors
        ports = range(NUM_PORTS)
        self.accept = Signal(lanes, name="accept", init=sum(
            1 << (p * colors + c) for c, (accept, _) in enumerate(masks) for p in ports
            if accept >> p & 1))
        self.out = [Signal(colors, name=f"out_{Port(o).name}", init=sum(
            1 << c for c, (_, out) in enumerate(masks) if out >> o & 1)) for o in ports]
        self.sent = [Signal(lanes, name=f"sent_{Port(o).name}") for o in ports]
        self.credit = [[Signal(range(depth + 1), init=depth, name=f"credit_{Port(o).name}_{c}")
                        for c in range(colors)] for o in ports]
        self.queues = InputQueues(config, self.i)
        self.arbiters = [RoundRobinArbiter(lanes) for _ in ports]

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        colors = self.config.colors
        lanes = NUM_PORTS * colors
        ports = range(NUM_PORTS)
        queues = self.queues
        m.submodules.queues = queues

        # Requests and arbitration.
        for o in ports:
            arbiter = self.arbiters[o]
            m.submodules[f"arbiter_{Port(o).name}"] = arbiter
            credited = Cat(self.credit[o][c] != 0 for c in range(colors))
            m.d.comb += arbiter.request.eq(queues.nonempty & self.accept & ~self.sent[o]
                                           & (self.out[o] & credited).replicate(NUM_PORTS))
        grants = [arbiter.grant for arbiter in self.arbiters]

        # Send the granted heads, spend their credits, count the credits coming back.
        color_bits = len(self.o[0].color)
        lane_colors = data.ArrayLayout(color_bits, lanes).const(
            [c for _ in ports for c in range(colors)])
        for o in ports:
            grant, lane, link = grants[o], self.arbiters[o].index, self.o[o]
            m.d.comb += link.valid.eq(grant.any())
            with m.If(grant.any()):  # an idle link carries zeros, not a stale head
                m.d.comb += [link.color.eq(lane_colors[lane]), link.data.eq(queues.heads[lane])]
            for c in range(colors):
                lanes_of_color = sum(1 << (p * colors + c) for p in ports)
                spent = (grant & lanes_of_color).any()
                m.d.sync += self.credit[o][c].eq(self.credit[o][c] + link.credit[c] - spent)

        # Partial multicast: a head granted this cycle whose outputs are all covered by sent and
        # this cycle's grants is done, and popped (which returns its credit).
        uncovered = _or(self.out[o].replicate(NUM_PORTS) & ~(self.sent[o] | grants[o])
                        for o in ports)
        m.d.comb += queues.pop.eq(_or(grants) & ~uncovered)
        for o in ports:
            m.d.sync += self.sent[o].eq((self.sent[o] | grants[o]) & ~queues.pop)

        with m.If(self.route.valid):
            with m.Switch(self.route.color):
                for c in range(colors):
                    with m.Case(c):
                        m.d.sync += [self.accept[p * colors + c].eq(self.route.accept[p])
                                     for p in ports]
                        m.d.sync += [self.out[o][c].eq(self.route.out[o]) for o in ports]
        return m

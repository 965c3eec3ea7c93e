"""Cycle-exact numpy model of the mesh fabric (docs/ARCHITECTURE.md, sections 3, 5 and 7).

Every router of the mesh is advanced at once: the state of section 5 is held as arrays over all
tiles, and :meth:`FabricEmulator.step` computes one cycle with whole-array operations only.

Flat indexing. Queues, ``sent`` masks and credit counters share one layout: entry
``(tile * 5 + port) * colors + color``, so an input queue and the credit counter of the
output port on the same router side have the same flat index. Inside ``step`` the requester
index of section 5 is ``i = port * colors + color`` and a queue's flat index is
``tile * 5 * colors + i``.
"""

from typing import NamedTuple

import numpy as np

from mesh import NUM_PORTS, Port, external_links

__all__ = ["FabricEmulator", "ProtocolError", "StepResult"]

_DATA_LIMIT = 1 << 32
_PORT_BITS = np.arange(NUM_PORTS)


def _mask_bytes():
    """Byte o of word m is 1 when bit o of the 5-bit port mask m is set. Gathering one 8-byte
    word per queue and viewing the result as bools is much faster than gathering bool rows."""
    table = np.zeros((1 << NUM_PORTS, 8), dtype=bool)
    table[:, :NUM_PORTS] = (np.arange(1 << NUM_PORTS)[:, None] >> _PORT_BITS) & 1
    return table.view(np.uint64).reshape(-1)


_MASK_BYTES = _mask_bytes()
_OUTPUT_BIT = (1 << _PORT_BITS).astype(float)   # bincount weights


class ProtocolError(RuntimeError):
    """A link protocol violation (section 3) by an external agent or, caught by a sink, by the
    fabric: a wavelet sent without a credit (it would overflow the receiver's queue), or a
    credit returned for a wavelet the receiver does not hold."""


class StepResult(NamedTuple):
    """Everything on the fabric's links in one cycle.

    ``out_valid``/``out_color``/``out_data`` (n_links): wavelets on the outbound external links.
    ``in_credit`` (n_links, colors): credits on the inbound external links.
    ``sent_valid``/``sent_color``/``sent_data`` (tiles, 5): the output of every router port,
    internal and external. ``cycle``: the cycle these signals belong to.
    """
    out_valid: np.ndarray
    out_color: np.ndarray
    out_data: np.ndarray
    in_credit: np.ndarray
    sent_valid: np.ndarray
    sent_color: np.ndarray
    sent_data: np.ndarray
    cycle: int


class FabricEmulator:
    """All routers of a ``config.width`` x ``config.height`` mesh, advanced one cycle per
    :meth:`step`.

    ``routes`` is a :class:`mesh.RouteTable` for the same mesh (validated or not; None means no
    routes). External links are indexed as :func:`mesh.external_links` orders them (``links``).

    State (section 5), arrays over all tiles:
    ``queue_data`` (tiles, 5, colors, buffer_depth) ring buffers with ``queue_head`` and
    ``queue_count`` (tiles, 5, colors); ``sent`` (tiles, 5, colors) port masks; ``credit``
    (tiles, 5, colors) indexed by output port; ``rr`` (tiles, 5) indexed by output port;
    ``accept`` and ``out`` (tiles, colors) port masks, and derived from them ``route_mask``
    (tiles, 5, colors): the outputs of each queue, 0 where its port is not accepted.
    """

    def __init__(self, config, routes=None):
        self.config = config
        tiles, colors, depth = config.tiles, config.colors, config.buffer_depth
        self.links = external_links(config)
        self.n_links = len(self.links)
        self.cycle = 0

        # uint8 keeps the state small (cache-friendly): depth <= 64 and 5 * colors <= 120.
        self.queue_data = np.zeros((tiles, NUM_PORTS, colors, depth), dtype=np.uint32)
        self.queue_head = np.zeros((tiles, NUM_PORTS, colors), dtype=np.uint8)
        self.queue_count = np.zeros((tiles, NUM_PORTS, colors), dtype=np.uint8)
        self.sent = np.zeros((tiles, NUM_PORTS, colors), dtype=np.uint8)
        self.credit = np.full((tiles, NUM_PORTS, colors), depth, dtype=np.uint8)
        self.rr = np.zeros((tiles, NUM_PORTS), dtype=np.uint8)
        self.accept = np.zeros((tiles, colors), dtype=np.uint8)
        self.out = np.zeros((tiles, colors), dtype=np.uint8)

        # Flat views of the same memory, used by the per-cycle path.
        self._data = self.queue_data.reshape(-1)
        self._head = self.queue_head.reshape(-1)
        self._count = self.queue_count.reshape(-1)
        self._sent = self.sent.reshape(-1)
        self._credit = self.credit.reshape(-1)
        self._rr = self.rr.reshape(-1)
        # queue_count > 0, kept up to date: scanning a bool array is several times faster.
        self._nonempty = np.zeros(self._count.size, dtype=bool)
        self._held = 0

        self._build_wiring()
        # Per queue, the outputs it forwards to: out[c] if its port is in accept[c], else 0
        # (a queue on a port not accepted for its color never requests). Derived from accept
        # and out, so routes change through write_route only.
        self.route_mask = np.zeros((tiles, NUM_PORTS, colors), dtype=np.uint8)
        self._route_mask = self.route_mask.reshape(-1)
        if routes is not None:
            self._load_routes(routes)

    # Construction -----------------------------------------------------------------------------

    def _load_routes(self, routes):
        cfg = self.config
        rcfg = routes.config
        if (rcfg.width, rcfg.height, rcfg.colors) != (cfg.width, cfg.height, cfg.colors):
            raise ValueError(f"the route table is for a {rcfg.shape} mesh with {rcfg.colors} "
                             f"colors, the emulator for a {cfg.shape} mesh with {cfg.colors}")
        accept, out = routes.masks()
        self.accept[...] = accept
        self.out[...] = out
        accepted = (self.accept[:, None, :] >> _PORT_BITS[:, None]) & 1    # (tiles, 5, colors)
        self.route_mask[...] = accepted * self.out[:, None, :]

    def _build_wiring(self):
        """Precompute where every link goes, per flat (tile, port, color) index ``q``.

        ``_across[q]`` is the other end of the link of port ``q``. For an internal link it is
        the neighbour's flat index on the facing port: the input queue that an output sends
        into, and equally the credit counter that a popped input queue returns its credit to.
        For an external link it is ``~(link * colors + color)`` (negative), the credit's place
        in the flattened ``in_credit``. int32 keeps this map small enough to stay in cache.
        ``_link_queue[link * colors + color]`` is the flat index of an external link's port.
        ``_link_side[link]`` is ``tile * 5 + port`` of an external link.
        """
        cfg = self.config
        tiles, colors = cfg.tiles, cfg.colors
        tile = np.repeat(np.arange(tiles), NUM_PORTS)
        port = np.tile(_PORT_BITS, tiles)
        x, y = tile % cfg.width, tile // cfg.width
        dx = np.array([p.delta[0] for p in Port])[port]
        dy = np.array([p.delta[1] for p in Port])[port]
        nx, ny = x + dx, y + dy
        internal = ((port != Port.RAMP) & (nx >= 0) & (nx < cfg.width)
                    & (ny >= 0) & (ny < cfg.height))
        facing_side = (ny * cfg.width + nx) * NUM_PORTS + (port + 2) % 4
        color = np.arange(colors)

        self._link_side = np.array([cfg.tile_index(link.x, link.y) * NUM_PORTS + link.port
                                    for link in self.links], dtype=np.intp)
        self._link_queue = (self._link_side[:, None] * colors + color).reshape(-1)
        self._across = np.where(internal[:, None], facing_side[:, None] * colors + color,
                                0).reshape(-1).astype(np.int32)
        assert not np.any(internal[self._link_side]), "external links are at the mesh's edge"
        assert np.count_nonzero(~internal) == self.n_links, "every port has one kind of link"
        self._across[self._link_queue] = ~np.arange(self.n_links * colors)

    # The cycle --------------------------------------------------------------------------------

    def step(self, in_valid, in_color, in_data, out_credit, checked=True):
        """Advance all routers by one cycle (section 5) and return the signals of that cycle.

        ``in_valid`` (bool), ``in_color`` (int), ``in_data`` (uint32), each of length
        ``n_links``: the wavelets agents drive on the inbound external links this cycle.
        ``out_credit`` (bool, (n_links, colors)): the credits agents return on the outbound
        external links this cycle. Injected wavelets are in their queues from the next cycle
        on; returned credits are usable from the next cycle on. Raises ValueError for malformed
        inputs and :class:`ProtocolError` for a wavelet or credit the protocol does not allow;
        then no state has changed. ``checked=False`` skips those checks, for agents that obey
        the protocol by construction (the mesh emulator's cores, whose inputs are arrays of the
        right types and which never send without a credit).
        """
        if checked:
            inject_queue, inject_data, credit_queue = self._check_inputs(
                in_valid, in_color, in_data, out_credit)
        else:
            link = np.flatnonzero(in_valid)
            inject_queue = self._link_queue[link * self.config.colors + in_color[link]]
            inject_data = in_data[link].astype(np.uint32, copy=False)
            credit_queue = self._link_queue[np.flatnonzero(out_credit)]
        cfg = self.config
        colors, depth = cfg.colors, cfg.buffer_depth
        n_requesters = NUM_PORTS * colors
        n_sides = cfg.tiles * NUM_PORTS

        # 1. Requesters: only non-empty queues can request, so work on those alone.
        queue = np.flatnonzero(self._nonempty)
        tile, requester = np.divmod(queue, n_requesters)
        color = requester % colors
        route_mask = self._route_mask[queue]
        sent_before = self._sent[queue]
        wanted = route_mask & ~sent_before
        # One (queue, output) pair per output a queue still needs, kept if that has a credit.
        pair = np.flatnonzero(_MASK_BYTES[wanted].view(bool))
        pair_queue, pair_output = pair >> 3, pair & 7
        pair_side = tile[pair_queue] * NUM_PORTS + pair_output
        pair_credit = pair_side * colors + color[pair_queue]
        has_credit = self._credit[pair_credit] > 0
        pair_queue, pair_output = pair_queue[has_credit], pair_output[has_credit]
        pair_side, pair_credit = pair_side[has_credit], pair_credit[has_credit]

        # 2. Arbitration: each output grants the requester at the smallest distance from rr.
        distance = (requester[pair_queue] - self._rr[pair_side]) % n_requesters
        best = np.full(n_sides, n_requesters, dtype=np.intp)
        np.minimum.at(best, pair_side, distance)
        won = best[pair_side] == distance     # a requester's distance is unique per output
        grant_k, grant_side, grant_credit = pair_queue[won], pair_side[won], pair_credit[won]
        grant_queue = queue[grant_k]
        grant_color = color[grant_k]
        grant_data = self._data[grant_queue * depth + self._head[grant_queue]]

        # 4. Multicast and pop: each queue's grants as a port mask (distinct bits: sum == or).
        grants = np.bincount(grant_k, weights=_OUTPUT_BIT[pair_output[won]],
                             minlength=queue.size).astype(np.uint8)
        covered = sent_before | grants
        done = (grants != 0) & ((route_mask & ~covered) == 0)
        partial = (grants != 0) & ~done
        self._sent[queue[partial]] = covered[partial]
        popped = queue[done]

        # 3. Send: spend a credit; 5. move the round-robin pointer past the granted index.
        self._credit[grant_credit] -= 1
        self._rr[grant_side] = (requester[grant_k] + 1) % n_requesters

        # 4. (cont.) Pop, and return a credit on the popped queue's inbound link.
        self._head[popped] = (self._head[popped] + 1) % depth
        self._count[popped] -= 1
        self._sent[popped] = 0
        self._nonempty[popped] = self._count[popped] > 0
        across = self._across[popped]
        to_router = across >= 0
        self._credit[across[to_router]] += 1
        in_credit = np.zeros(self.n_links * colors, dtype=bool)
        in_credit[~across[~to_router]] = True

        # 6. Receive: what the routers sent to each other, and what agents injected.
        across = self._across[grant_credit]
        to_router = across >= 0
        self._append(across[to_router], grant_data[to_router])
        self._append(inject_queue, inject_data)

        # 7. Credits returned by agents on outbound external links.
        self._credit[credit_queue] += 1

        self._held += int(np.count_nonzero(to_router)) + inject_queue.size - popped.size

        sent_valid = np.zeros(n_sides, dtype=bool)
        sent_color = np.zeros(n_sides, dtype=np.intp)
        sent_data = np.zeros(n_sides, dtype=np.uint32)
        sent_valid[grant_side] = True
        sent_color[grant_side] = grant_color
        sent_data[grant_side] = grant_data
        result = StepResult(
            out_valid=sent_valid[self._link_side], out_color=sent_color[self._link_side],
            out_data=sent_data[self._link_side], in_credit=in_credit.reshape(-1, colors),
            sent_valid=sent_valid.reshape(cfg.tiles, NUM_PORTS),
            sent_color=sent_color.reshape(cfg.tiles, NUM_PORTS),
            sent_data=sent_data.reshape(cfg.tiles, NUM_PORTS),
            cycle=self.cycle)
        self.cycle += 1
        return result

    def _append(self, queue, data):
        """Append one wavelet to each of ``queue`` (distinct queues: one link, one wavelet)."""
        depth = self.config.buffer_depth
        slot = (self._head[queue] + self._count[queue]) % depth
        self._data[queue * depth + slot] = data
        self._count[queue] += 1
        self._nonempty[queue] = True

    def _check_inputs(self, in_valid, in_color, in_data, out_credit):
        """Validate the inputs of :meth:`step` against the link protocol, and return the
        queues the injected wavelets go to, their data, and the credit counters to increment."""
        n, colors, depth = self.n_links, self.config.colors, self.config.buffer_depth
        in_valid = _as_array("in_valid", in_valid, (n,), "b")
        in_color = _as_array("in_color", in_color, (n,), "iu")
        in_data = _as_array("in_data", in_data, (n,), "iu")
        out_credit = _as_array("out_credit", out_credit, (n, colors), "b")

        link = np.flatnonzero(in_valid)
        color = in_color[link]
        data = in_data[link]
        bad = (color < 0) | (color >= colors)
        if bad.any():
            first = np.argmax(bad)
            raise ValueError(f"inbound link {self.links[link[first]]} (link {link[first]}): "
                             f"wavelet color {int(color[first])} is out of range: this mesh "
                             f"has colors 0..{colors - 1}")
        bad = (data < 0) | (data >= _DATA_LIMIT)
        if bad.any():
            first = np.argmax(bad)
            raise ValueError(f"inbound link {self.links[link[first]]} (link {link[first]}): "
                             f"wavelet data {int(data[first])} is not a 32-bit unsigned value")
        inject_queue = self._link_queue[link * colors + color]
        # A sender's credits are depth minus what the queue holds (and no more is in flight),
        # so a queue that is full at the start of the cycle means a send without a credit.
        full = self._count[inject_queue] >= depth
        if full.any():
            first = np.argmax(full)
            raise ProtocolError(f"inbound link {self.links[link[first]]} (link {link[first]}): "
                                f"wavelet of color {int(color[first])} sent in cycle "
                                f"{self.cycle} without a credit: the queue already holds "
                                f"{depth} wavelet(s)")

        slot = np.flatnonzero(out_credit)
        credit_queue = self._link_queue[slot]
        # Likewise a credit counter already at depth means the agent holds none of its wavelets.
        excess = self._credit[credit_queue] >= depth
        if excess.any():
            first_link, first_color = divmod(int(slot[np.argmax(excess)]), colors)
            raise ProtocolError(f"outbound link {self.links[first_link]} (link {first_link}): "
                                f"credit of color {first_color} returned in cycle {self.cycle} "
                                f"for a wavelet the agent does not hold")
        return inject_queue, data.astype(np.uint32, copy=False), credit_queue

    # Inspection and configuration ---------------------------------------------------------------

    def idle_inputs(self):
        """Arguments for :meth:`step` with nothing injected and no credit returned."""
        n = self.n_links
        return (np.zeros(n, dtype=bool), np.zeros(n, dtype=np.intp),
                np.zeros(n, dtype=np.uint32), np.zeros((n, self.config.colors), dtype=bool))

    def events(self, result):
        """Every wavelet sent in ``result``'s cycle as (cycle, tile, port, color, data), sorted
        by (tile, port); ``port`` is a :class:`mesh.Port`."""
        side = np.flatnonzero(result.sent_valid)
        tiles, ports = np.divmod(side, NUM_PORTS)
        colors = result.sent_color.reshape(-1)[side]
        data = result.sent_data.reshape(-1)[side]
        return [(result.cycle, t, Port(p), c, d)
                for t, p, c, d in zip(tiles.tolist(), ports.tolist(), colors.tolist(),
                                      data.tolist())]

    def write_route(self, tile, color, accept_mask, out_mask):
        """Replace the route of ``tile`` (row-major index) and ``color`` from the next step on,
        as the RTL's route write port does. Masks are 5-bit port masks; 0 means no route."""
        cfg = self.config
        if not isinstance(tile, (int, np.integer)) or not 0 <= tile < cfg.tiles:
            raise ValueError(f"route write: tile {tile!r} is not a tile index 0..{cfg.tiles - 1}")
        x, y = cfg.tile_xy(int(tile))
        if isinstance(color, np.integer):
            color = int(color)
        cfg.check_color(color, where=f"route write to tile ({x},{y}): ")
        for name, mask in (("accept", accept_mask), ("out", out_mask)):
            if not isinstance(mask, (int, np.integer)) or not 0 <= mask < (1 << NUM_PORTS):
                raise ValueError(f"route write to tile ({x},{y}) color {color}: {name} mask "
                                 f"{mask!r} is not a 5-bit port mask")
        self.accept[tile, color] = accept_mask
        self.out[tile, color] = out_mask
        accepted = (accept_mask >> _PORT_BITS) & 1
        self.route_mask[tile, :, color] = accepted * out_mask

    def held(self):
        """Wavelets currently in the routers' input queues."""
        return self._held

    def report(self):
        """One readable line per non-empty queue: where it is, how many wavelets it holds, and
        why its head is blocked."""
        cfg = self.config
        lines = []
        for tile, port, color in zip(*np.nonzero(self.queue_count)):
            x, y = cfg.tile_xy(int(tile))
            count = int(self.queue_count[tile, port, color])
            accept, out = int(self.accept[tile, color]), int(self.out[tile, color])
            sent = int(self.sent[tile, port, color])
            starved = [Port(o).name for o in Port
                       if out >> o & 1 and not sent >> o & 1 and self.credit[tile, o, color] == 0]
            if not accept >> port & 1:
                why = f"blocked: port {Port(port).name} is not accepted for color {color}"
            elif not out:
                why = f"blocked: route has no output for color {color}"
            elif starved:
                why = f"blocked: waiting for credit on outputs [{', '.join(starved)}]"
            else:
                why = "not blocked"
            lines.append(f"tile ({x},{y}) port {Port(port).name} color {color}: "
                         f"{count} wavelet(s), head {why}")
        return lines


_KIND_NAMES = {"b": "bool", "iu": "integer"}


def _as_array(name, value, shape, kinds):
    """``value`` as an array, checked to have ``shape`` and a dtype of one of ``kinds``."""
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, not {array.shape}")
    if array.dtype.kind not in kinds:
        raise ValueError(f"{name} must be a {_KIND_NAMES[kinds]} array, not {array.dtype}")
    return array

"""External agents for the fabric's external links, vectorized over all links.

Both agents obey the link protocol of docs/ARCHITECTURE.md section 3 and decide each cycle from
their own state and random stream only, never from the fabric's outputs of the same cycle. Two
instances built with the same arguments therefore behave identically against two fabrics that
behave identically (the emulator and the RTL in the lockstep tests).

One cycle with agents attached::

    valid, color, data = source.drive()
    credit = sink.credits()
    result = fabric.step(valid, color, data, credit)
    source.update(result.in_credit)
    sink.update(result.out_valid, result.out_color, result.out_data, result.cycle)
"""

import numpy as np

from .fabric import ProtocolError

__all__ = ["TrafficSource", "TrafficSink"]

_DATA_LIMIT = 1 << 32


def _rate(name, rate, n_links):
    rate = np.asarray(rate, dtype=float)
    if rate.shape not in ((), (n_links,)):
        raise ValueError(f"{name} must be a scalar or have one entry per link ({n_links}), "
                         f"not shape {rate.shape}")
    if np.any((rate < 0) | (rate > 1)):
        raise ValueError(f"{name} must be between 0 and 1")
    return np.broadcast_to(rate, (n_links,)).copy()


class TrafficSource:
    """Injects a fixed stream of wavelets into each inbound external link.

    ``streams`` maps an external link index to a sequence of (color, data) pairs (or an
    integer array of shape (n, 2)). The source holds a credit counter per link and color,
    starting at ``buffer_depth``. Each cycle it draws one uniform number per link (always, so
    its random stream does not depend on the traffic); a link sends its next wavelet when it
    has one, holds a credit for its color, and its draw is below ``offer_rate`` (a scalar or
    one rate per link).
    """

    def __init__(self, config, n_links, streams, offer_rate=1.0, seed=0):
        self.config = config
        self.n_links = n_links
        self.offer_rate = _rate("offer_rate", offer_rate, n_links)
        self.credits = np.full((n_links, config.colors), config.buffer_depth, dtype=np.intp)
        self._credits = self.credits.reshape(-1)
        self._rng = np.random.default_rng(seed)

        lengths = np.zeros(n_links, dtype=np.intp)
        colors, data = [np.zeros(1, dtype=np.uint8)], [np.zeros(1, dtype=np.uint32)]
        for link in sorted(streams):
            if not isinstance(link, (int, np.integer)) or not 0 <= link < n_links:
                raise ValueError(f"stream link {link!r} is not an external link index "
                                 f"0..{n_links - 1}")
            wavelets = np.asarray(streams[link], dtype=np.int64).reshape(-1, 2)
            bad_color = (wavelets[:, 0] < 0) | (wavelets[:, 0] >= config.colors)
            if bad_color.any():
                raise ValueError(f"stream on link {link}: color {wavelets[bad_color][0, 0]} is "
                                 f"out of range: this mesh has colors 0..{config.colors - 1}")
            bad_data = (wavelets[:, 1] < 0) | (wavelets[:, 1] >= _DATA_LIMIT)
            if bad_data.any():
                raise ValueError(f"stream on link {link}: data {wavelets[bad_data][0, 1]} is "
                                 f"not a 32-bit unsigned value")
            lengths[link] = len(wavelets)
            colors.append(wavelets[:, 0].astype(np.uint8))
            data.append(wavelets[:, 1].astype(np.uint32))
        # All streams back to back after one unused entry (read where a link has nothing left).
        self._colors = np.concatenate(colors)
        self._data = np.concatenate(data)
        self._start = 1 + np.concatenate(([0], np.cumsum(lengths)[:-1]))
        self._length = lengths
        self._position = np.zeros(n_links, dtype=np.intp)
        self._slot_base = np.arange(n_links) * config.colors   # flat (link, color) indexing

    def drive(self):
        """The wavelets sent this cycle as (valid, color, data) arrays of length n_links. The
        sends are committed: the source moves on and spends the credits."""
        draw = self._rng.random(self.n_links, dtype=np.float32)
        pending = self._position < self._length
        index = np.where(pending, self._start + self._position, 0)
        color = self._colors[index].astype(np.intp)
        slot = self._slot_base + color
        valid = pending & (self._credits[slot] > 0) & (draw < self.offer_rate)
        color[~valid] = 0
        data = np.where(valid, self._data[index], np.uint32(0))
        self._position += valid
        self._credits[slot[valid]] -= 1
        return valid, color, data

    def update(self, in_credit):
        """Take the credits the fabric returned this cycle ((n_links, colors) bool)."""
        self.credits += in_credit

    @property
    def done(self):
        """True when every stream has been sent."""
        return bool(np.all(self._position == self._length))

    @property
    def remaining(self):
        """Wavelets not sent yet."""
        return int(np.sum(self._length - self._position))


class TrafficSink:
    """Drains every outbound external link into a per-link, per-color buffer of
    ``buffer_depth`` wavelets, returning a credit for each wavelet it takes out.

    Each cycle it draws one uniform number per (link, color) (always); each non-empty buffer
    gives up one wavelet when its draw is below ``accept_rate`` (a scalar or one rate per link;
    the attribute may be changed between cycles). An arrival into a full buffer is a fabric
    protocol violation and raises :class:`ProtocolError`.
    """

    def __init__(self, config, n_links, accept_rate=1.0, seed=0):
        self.config = config
        self.n_links = n_links
        self.accept_rate = _rate("accept_rate", accept_rate, n_links)
        self.buffered = np.zeros((n_links, config.colors), dtype=np.intp)
        self._buffered = self.buffered.reshape(-1)
        self.consumed = 0
        self._rng = np.random.default_rng(seed)
        self._arrivals = []   # per cycle with arrivals: (cycle, links, colors, data)

    def credits(self):
        """The credits returned this cycle ((n_links, colors) bool), one per wavelet taken out
        of a buffer. Wavelets that arrive this cycle can be taken out from the next one on."""
        draw = self._rng.random(self.buffered.shape, dtype=np.float32)
        take = (self.buffered > 0) & (draw < self.accept_rate[:, None])
        self.buffered -= take
        self.consumed += int(np.count_nonzero(take))
        return take

    def update(self, out_valid, out_color, out_data, cycle):
        """Record the wavelets that arrived on the outbound links in ``cycle``."""
        links = np.flatnonzero(out_valid)
        if not links.size:
            return
        colors = np.asarray(out_color)[links]
        slot = links * self.config.colors + colors
        full = self._buffered[slot] >= self.config.buffer_depth
        if full.any():
            link, color = int(links[full][0]), int(colors[full][0])
            raise ProtocolError(f"outbound link {link}: a wavelet of color {color} arrived in "
                                f"cycle {cycle} with the sink's buffer full "
                                f"({self.config.buffer_depth}): the fabric sent without a credit")
        self._buffered[slot] += 1
        self._arrivals.append((cycle, links, colors, np.asarray(out_data)[links]))

    @property
    def held(self):
        """Wavelets in the sink's buffers, not taken out yet."""
        return int(self.buffered.sum())

    @property
    def received(self):
        """Every arrival so far: link -> list of (cycle, color, data) in arrival order."""
        received = {}
        for cycle, links, colors, data in self._arrivals:
            for link, color, value in zip(links.tolist(), colors.tolist(), data.tolist()):
                received.setdefault(link, []).append((cycle, color, value))
        return received

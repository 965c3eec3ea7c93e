"""The packet link's lane channel with seeded faults (docs/ARCHITECTURE.md section 12, "Channels
and faults"): one direction of one lane between the sender and the receiver, store and forward.

The rule, in short: a packet (the words between two ``last`` words, framed by the channel
itself: it does not parse packets) whose last word enters in cycle t is ready at
t + ``latency`` (+ ``reorder_delay`` if reordered); the output delivers one packet at a time at
the lane's rate, word j of a packet started in cycle s in cycle s + j x r (r = 32 / lane_width),
and starts the next packet in a cycle >= s + N x r (N words): the one ready longest (ties: in
order of entry), the duplicate copy of a packet right after it. Faults are drawn per packet when
its last word enters, from ``numpy.random.default_rng([seed, lane, 0 forward / 1 reverse])``,
always five draws in this order: ``u_drop = rng.random()``, ``u_flip = rng.random()``,
``bit = rng.integers(32 x words)``, ``u_dup = rng.random()``, ``u_reorder = rng.random()``; a fault
happens when u < its rate. A dropped packet is never delivered (and none of the other faults
apply to it); a flipped packet has bit (bit % 32) of word (bit // 32) inverted (both copies of a
duplicated packet carry the flip); a duplicated packet is delivered twice, the copy right after
the original; a reordered packet is ready ``reorder_delay`` cycles later, so later packets
overtake it. From cycle ``dead_at`` on the channel delivers nothing: what it held (a packet
partly delivered, packets waiting) is lost, and so is every packet whose last word enters from
then on (including one partly entered before).

A channel that never faults (all four rates 0) makes no draws: no outcome depends on them.

The same class drives the Amaranth-simulator tests, the cocotb benches and the emulator, so a
seed gives the same faults everywhere.
"""

import heapq
import math
from dataclasses import dataclass

import numpy as np

from mesh.config import ConfigError
from mesh.link import LinkConfig

__all__ = ["FaultConfig", "Channel", "make_channels", "DIRECTIONS", "IDLE"]

DIRECTIONS = ("forward", "reverse")
IDLE = (0, 0, 0)
MASK = 0xFFFFFFFF
MAX_DELAY = 1 << 20


def _check_probability(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a probability (a number from 0 to 1), not {value!r}")
    if not (0 <= value <= 1):       # also refuses NaN
        raise ConfigError(f"{name} must be a probability from 0 to 1, not {value!r}")


def _check_optional_int(name, value, low, high, what):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be None or an integer ({what}), not {value!r}")
    if not (low <= value <= high):
        raise ConfigError(f"{name} must be None or from {low} to {high} ({what}), not {value}")


@dataclass(frozen=True)
class FaultConfig:
    """The faults of one lane (both of its directions), each drawn per packet.

    ``drop``, ``flip``, ``duplicate``, ``reorder``: probabilities from 0 to 1 that a packet is
    dropped, has one bit flipped, is delivered twice, or is delayed by ``reorder_delay`` cycles.
    ``reorder_delay``: cycles a reordered packet is held longer (1 to 2^20; None: the default,
    2 x ``max_packet_words`` x ``word_cycles`` of the channel's :class:`LinkConfig`, two full
    packets' time on the lane, so that a packet sent right after it, or the one after that,
    overtakes it). ``dead_at``: the cycle from which the channel delivers nothing (None: never).
    """
    drop: float = 0.0
    flip: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: int | None = None
    dead_at: int | None = None

    def __post_init__(self):
        for name in ("drop", "flip", "duplicate", "reorder"):
            _check_probability(name, getattr(self, name))
        _check_optional_int("reorder_delay", self.reorder_delay, 1, MAX_DELAY, "cycles")
        _check_optional_int("dead_at", self.dead_at, 0, 1 << 62, "a cycle")

    @property
    def faulty(self):
        """Whether any fault rate is above 0 (a channel draws only then)."""
        return bool(self.drop or self.flip or self.duplicate or self.reorder)

    def delay(self, config):
        """The reorder delay in cycles under ``config``."""
        if self.reorder_delay is not None:
            return self.reorder_delay
        return 2 * config.max_packet_words * config.word_cycles


class Channel:
    """One lane in one direction: call :meth:`step` once per cycle, from cycle 0, with what
    enters the channel in that cycle; it returns ``(valid, word, last)`` delivered in that same
    cycle (0 or 1, a 32-bit int, 0 or 1; ``(0, 0, 0)`` when idle). The output never depends on
    the same cycle's input (latency >= 1). Words entering with ``valid`` low are ignored.

    Attributes
    ----------
    cycle : int
        The cycle the next :meth:`step` models.
    packets_in, dropped, flipped, duplicated, reordered, lost_dead, packets_out : int
        Packets whose last word entered; of them, dropped, flipped, duplicated, reordered (the
        last three only among packets not dropped); deliveries lost because the channel died
        (a packet held, its duplicate copy counted apart, or a packet entering a dead channel);
        deliveries completed (a duplicate counts twice). Whatever is not lost is eventually
        delivered: ``packets_in - dropped + duplicated == packets_out + lost_dead + held``.
    """

    def __init__(self, config, faults=None, seed=0, lane=0, direction="forward"):
        if not isinstance(config, LinkConfig):
            raise TypeError(f"config must be a LinkConfig, not {config!r}")
        faults = FaultConfig() if faults is None else faults
        if not isinstance(faults, FaultConfig):
            raise TypeError(f"faults must be a FaultConfig, not {faults!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
        if isinstance(lane, bool) or not isinstance(lane, int) or not 0 <= lane < config.lanes:
            raise ValueError(f"lane must be from 0 to {config.lanes - 1}, not {lane!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        self.config, self.faults = config, faults
        self.seed, self.lane, self.direction = seed, lane, direction
        self.rng = np.random.default_rng([seed, lane, DIRECTIONS.index(direction)])
        self._r = config.word_cycles
        self._latency = config.latency
        self._delay = faults.delay(config)
        self._rates = (faults.drop, faults.flip, faults.duplicate, faults.reorder)
        self._faulty = faults.faulty
        self._dead_at = math.inf if faults.dead_at is None else faults.dead_at
        self.dead = False
        self.cycle = 0
        self._entering = []             # words of the packet entering
        self._ready = []                # heap of (ready cycle, entry order, words, duplicate)
        self._order = 0
        self._cur = None                # the packet being delivered
        self._j = 0                     # its next word
        self._next = 0                  # cycle of its next word; or, idle: earliest next start
        self._copy = None               # a duplicate copy to deliver right after _cur
        self.packets_in = self.dropped = self.flipped = self.duplicated = 0
        self.reordered = self.lost_dead = self.packets_out = 0

    def __repr__(self):
        return (f"Channel(lane {self.lane} {self.direction}, cycle {self.cycle}, "
                f"{self.faults})")

    @property
    def held(self):
        """Deliveries not yet completed (packets waiting, being delivered, duplicate copies)."""
        return (len(self._ready) + sum(1 for item in self._ready if item[3])
                + (self._cur is not None) + (self._copy is not None))

    @property
    def busy(self):
        """Whether the channel holds anything: a delivery not completed or words of a packet
        entering."""
        return bool(self._ready or self._cur is not None or self._copy is not None
                    or self._entering)

    def next_delivery(self):
        """The first cycle >= :attr:`cycle` in which the output can be valid without further
        input (None if never): lets a caller skip cycles in which nothing can come out."""
        if self.dead:
            return None
        if self._cur is not None:
            t = self._next
        elif self._copy is not None:
            t = max(self._next, self.cycle)
        elif self._ready:
            t = max(self._next, self._ready[0][0], self.cycle)
        else:
            return None
        return t if t < self._dead_at else None

    def skip(self, cycles):
        """Advance ``cycles`` idle cycles at once (nothing enters). Only exact when nothing
        comes out in them: ``cycle + cycles <= next_delivery()``; raises ValueError otherwise."""
        nxt = self.next_delivery()
        if cycles < 0 or (nxt is not None and self.cycle + cycles > nxt):
            raise ValueError(f"cannot skip {cycles} cycles from cycle {self.cycle}: a word "
                             f"comes out in cycle {nxt}")
        end = self.cycle + cycles
        if not self.dead and end > self._dead_at:
            self.cycle = self._dead_at
            self._die()
        self.cycle = end

    def step(self, valid=0, word=0, last=0):
        t = self.cycle
        self.cycle = t + 1
        if t >= self._dead_at:
            if not self.dead:
                self._die()
            if valid and last:
                self.packets_in += 1
                self.lost_dead += 1
            return IDLE

        # The output, from what entered in earlier cycles.
        out = IDLE
        cur = self._cur
        if cur is None and t >= self._next:
            if self._copy is not None:
                cur, self._copy = self._copy, None
            elif self._ready and self._ready[0][0] <= t:
                _, _, cur, dup = heapq.heappop(self._ready)
                if dup:
                    self._copy = cur
            if cur is not None:
                self._cur, self._j, self._next = cur, 0, t
        if cur is not None and t == self._next:
            j = self._j
            self._next = t + self._r
            if j == len(cur) - 1:
                out = (1, cur[j], 1)
                self._cur = None
                self.packets_out += 1
            else:
                out = (1, cur[j], 0)
                self._j = j + 1

        # The input.
        if valid:
            self._entering.append(word & MASK if type(word) is int else int(word) & MASK)
            if last:
                self._enter(t)
        return out

    def _enter(self, t):
        words, self._entering = self._entering, []
        self.packets_in += 1
        ready, dup = t + self._latency, False
        if self._faulty:
            rng = self.rng
            u_drop = rng.random()
            u_flip = rng.random()
            bit = int(rng.integers(32 * len(words)))
            u_dup = rng.random()
            u_reorder = rng.random()
            drop, flip, duplicate, reorder = self._rates
            if u_drop < drop:
                self.dropped += 1
                return
            if u_flip < flip:
                words[bit // 32] ^= 1 << (bit % 32)
                self.flipped += 1
            if u_dup < duplicate:
                dup = True
                self.duplicated += 1
            if u_reorder < reorder:
                ready += self._delay
                self.reordered += 1
        heapq.heappush(self._ready, (ready, self._order, words, dup))
        self._order += 1

    def _die(self):
        self.dead = True
        self.lost_dead += self.held
        self._ready, self._cur, self._copy, self._entering = [], None, None, []


def make_channels(config, faults_per_lane=None, seed=0):
    """The ``config.lanes`` forward and reverse channels of a link: ``(forward, reverse)``, two
    lists indexed by lane. ``faults_per_lane``: None (no faults), one :class:`FaultConfig` for
    every lane, or a list of one per lane (None entries: no faults); a lane's faults, its
    ``dead_at`` included, apply to both of its directions."""
    if faults_per_lane is None or isinstance(faults_per_lane, FaultConfig):
        faults_per_lane = [faults_per_lane] * config.lanes
    faults_per_lane = list(faults_per_lane)
    if len(faults_per_lane) != config.lanes:
        raise ValueError(f"faults_per_lane must have one FaultConfig per lane ({config.lanes}), "
                         f"not {len(faults_per_lane)}")
    forward = [Channel(config, f, seed, lane, "forward") for lane, f in enumerate(faults_per_lane)]
    reverse = [Channel(config, f, seed, lane, "reverse") for lane, f in enumerate(faults_per_lane)]
    return forward, reverse

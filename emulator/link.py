"""Cycle-level models of the packet link's sender and receiver, written from
docs/ARCHITECTURE.md section 12 ("The sender", "The receiver"; not from the RTL), and
:class:`LinkEmulator`, which joins them through ``2 x lanes`` seeded channels
(:mod:`emulator.channel`).

Cycle t: every decision in t reads the state at the start of t (and, in the receiver's checks,
what lower lanes did in t); every update lands at the end of t. Each model's :meth:`step` takes
the words arriving on its lanes in the cycle and returns the words it drives in the cycle; what
a model drives never depends on the same cycle's inputs (:meth:`outputs` gives it beforehand).

Besides the specification (``mode="selective"``, selective retransmission), both models have a
go-back-N mode (``mode="go_back_n"``), an emulator-only baseline for the benchmark:

* the sender, on a timeout or a NACK of entry s, makes every INFLIGHT entry from s on RETX (each
  counting a retry as usual); an ACK is cumulative only: it makes entries base .. cumulative - 1
  ACKED (its ``seq``, the packet it answers, only picks the lane whose timeout count it clears);
* the receiver accepts packet s only if s is the next one in order (``expected``, the lowest
  packet not received; the window check still applies), sends no NACK, and answers every packet
  of the message that passes the checks up to MESSAGE with an ACK whose cumulative is
  ``expected`` after it: an accepted one, a DUPLICATE (s < expected) and an out-of-order one
  (s > expected, dropped and counted as SEQUENCE, as is s >= base + W) alike -- the standard
  receiver that discards out-of-order packets and re-sends its cumulative ACK.

The models read a packet's payload from the source memory when its lane takes it (the memory must
not change during a message) and write the receive buffer word by word in the specified cycles.
"""

import heapq
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mesh.link import (ACK_WORDS, HEADER_WORDS, MAX_MESSAGE_ID, MAX_NODE, DropCause, LinkConfig,
                       PacketType, TxError)

from .channel import make_channels

__all__ = ["TxModel", "RxModel", "LinkEmulator", "LinkResult", "LinkStalled", "MODES",
           "FREE", "INFLIGHT", "RETX", "ACKED", "default_max_cycles"]

MODES = ("selective", "go_back_n")
FREE, INFLIGHT, RETX, ACKED = 0, 1, 2, 3
STATE_NAMES = ("FREE", "INFLIGHT", "RETX", "ACKED")
MAX_PACKETS = (1 << 16) - 1
MASK = 0xFFFFFFFF
IDLE = (0, 0, 0)
_DATA, _ACK, _NACK = int(PacketType.DATA), int(PacketType.ACK), int(PacketType.NACK)


def _crc(words):
    return zlib.crc32(struct.pack(f"<{len(words)}I", *words))


def _control(type_, src, dst, message, seq, cumulative):
    words = [type_ | src << 4 | dst << 12 | message << 20, seq, cumulative, 0]
    words.append(_crc(words))
    return words


def _check_args(config, node, peer, mode):
    if not isinstance(config, LinkConfig):
        raise TypeError(f"config must be a mesh.link.LinkConfig, not {config!r}")
    for name, value in (("node", node), ("peer", peer)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NODE:
            raise ValueError(f"{name} must be an integer from 0 to {MAX_NODE}, not {value!r}")
    if node == peer:
        raise ValueError(f"node and peer must differ, both are {node}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


class _Lanes:
    """Word-serial senders of ``count`` lanes: a packet taken in cycle t leaves word j in
    t + 1 + j x r; the lane is free again from t + N x r."""

    __slots__ = ("r", "words", "next", "j", "free_at", "active", "idle")

    def __init__(self, count, r):
        self.r = r
        self.words = [None] * count
        self.next = [0] * count
        self.j = [0] * count
        self.free_at = [0] * count
        self.active = []                # lanes sending
        self.idle = [IDLE] * count

    def take(self, lane, words, t):
        if self.words[lane] is None:
            self.active.append(lane)
        self.words[lane] = words
        self.next[lane] = t + 1
        self.j[lane] = 0
        self.free_at[lane] = t + len(words) * self.r

    def outputs(self, t):
        out = list(self.idle)
        for lane in self.active:
            if self.next[lane] == t:
                words, j = self.words[lane], self.j[lane]
                out[lane] = (1, words[j], 1 if j == len(words) - 1 else 0)
        return out

    def emit(self, t):
        """The words of cycle t, accounted for (the lanes move on)."""
        if not self.active:
            return self.idle
        out = list(self.idle)
        done = False
        for lane in self.active:
            if self.next[lane] == t:
                words, j = self.words[lane], self.j[lane]
                if j == len(words) - 1:
                    out[lane] = (1, words[j], 1)
                    self.words[lane] = None
                    done = True
                else:
                    out[lane] = (1, words[j], 0)
                    self.j[lane] = j + 1
                    self.next[lane] = t + self.r
        if done:
            self.active = [lane for lane in self.active if self.words[lane] is not None]
        return out

    def sending(self):
        return bool(self.active)


def _frame(buffers, lanes_in):
    """Append the valid words of ``lanes_in`` to the lanes' buffers; the packets completed, as
    [(lane, words)] in lane order."""
    done = []
    if lanes_in is None:
        return done
    for lane, (valid, word, last) in enumerate(lanes_in):
        if valid:
            buf = buffers[lane]
            buf.append(int(word) & MASK)
            if last:
                done.append((lane, buf))
                buffers[lane] = []
    return done


class TxModel:
    """The sender (``hdl.PacketTx``), one :meth:`step` per clock cycle from cycle 0.

    Parameters
    ----------
    config : :class:`LinkConfig`
    node, peer : int
        This node and the receiver (acknowledgements must come from ``peer`` to this node).
    mode : ``"selective"`` (the specification) or ``"go_back_n"`` (see the module).

    Attributes
    ----------
    source : numpy uint32 array of ``source_words``
        The source memory.
    cycle : int
        The cycle the next :meth:`step` models.
    busy : bool
        A message is in progress.
    error : :class:`TxError`, sticky until :meth:`reset`; ``error_seq`` (the RETRY_LIMIT packet,
        the lowest if several; 0 for the other errors, as the RTL), ``error_cycle``,
        ``error_lane`` (RETRY_LIMIT: the lane the packet was last sent on; LANES_DEAD: the lane
        that died last), ``error_packet`` (the packet whose timeout killed that lane), and
        ``error_message``, a sentence naming them.
    done : list of (cycle, message id)
        The cycles ``done`` was high.
    sent, retransmits, timeouts, acks, nacks : int
        Packets taken by a lane (all; those of them sent again); window entries timed out; ACKs
        and NACKs accepted.
    drops : dict DropCause -> int
        Acknowledgements dropped, by cause.
    lane_dead : list of bool; ``dead_cycles``: [(lane, cycle it was declared dead)].
    start_cycle : int or None
        The cycle the last message's command was taken.
    """

    def __init__(self, config, node=1, peer=2, mode="selective"):
        _check_args(config, node, peer, mode)
        self.config, self.node, self.peer, self.mode = config, node, peer, mode
        self.source = np.zeros(config.source_words, dtype=np.uint32)
        self.reset()

    def reset(self):
        """The state after reset (the source memory keeps its contents)."""
        c = self.config
        L, W = c.lanes, c.window
        self.cycle = 0
        self._commands = deque()
        self.busy = False
        self.error = TxError.NONE
        self.error_seq = 0
        self.error_cycle = self.error_lane = self.error_packet = None
        self.error_message = ""
        self.message = 0
        self.dst = self.peer
        self.length = 0
        self._src = self._w = self._T = 0
        self._w0 = 0
        self.base = self.next = 0
        self._cum = 0
        self._state = [FREE] * W
        self._lane = [0] * W
        self._deadline = [0] * W
        self._retries = [0] * W
        self._retx = []                 # heap of sequence numbers (stale ones skipped)
        self._deadlines = {}            # cycle -> [sequence numbers]
        self._lanes = _Lanes(L, c.word_cycles)
        self._min_free = 0              # no lane can take a packet before (a lower bound)
        self._in = [[] for _ in range(L)]
        self._in_row = [0] * L
        self.lane_dead = [False] * L
        self.dead_cycles = []
        self.done = []
        self.sent = self.retransmits = self.timeouts = self.acks = self.nacks = 0
        self.drops = {cause: 0 for cause in DropCause}
        self.start_cycle = None

    # Commands --------------------------------------------------------------------------------

    @property
    def ready(self):
        """A command would be taken in this cycle: idle and no error."""
        return not self.busy and self.error == TxError.NONE

    def start(self, src, length, dst=None, message=0):
        """Queue a command: it is presented from the next :meth:`step` on, until taken (in the
        first cycle the sender is :attr:`ready`). ``src``: a word address of the source memory;
        ``length``: bytes; ``dst``: the destination node (default: ``peer``); ``message``: the
        id. Values that do not fit the command's fields raise ValueError; a bad message (empty,
        not whole words, past the source memory, more than 65,535 packets) is taken and sets
        error MESSAGE."""
        dst = self.peer if dst is None else dst
        for name, value, top in (("src", src, self.config.source_words - 1),
                                 ("length", length, MASK), ("dst", dst, MAX_NODE),
                                 ("message", message, MAX_MESSAGE_ID)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not 0 <= value <= top:
                raise ValueError(f"start: {name} must be an integer from 0 to {top}, "
                                 f"not {value!r}")
        self._commands.append((int(src), int(length), int(dst), int(message)))

    @property
    def pending_commands(self):
        return len(self._commands)

    def _take(self, t):
        src, length, dst, message = self._commands.popleft()
        c = self.config
        w = length // 4
        T = -(-w // c.max_payload)
        problem = None
        if length == 0:
            problem = "is empty"
        elif length % 4:
            problem = "is not a whole number of 32-bit words"
        elif src + w > c.source_words:
            problem = (f"runs past the source memory (word {src} + {w} words > "
                       f"{c.source_words})")
        elif T > MAX_PACKETS:
            problem = f"needs {T} packets, above {MAX_PACKETS}"
        if problem:
            self._fail(TxError.MESSAGE, t, 0, None, None,
                       f"message {message} of {length} bytes at word {src} {problem}")
            return
        self.busy = True
        self.start_cycle = t
        self.message, self.dst, self.length = message, dst, length
        self._src, self._w, self._T = src, w, T
        self._w0 = _DATA | self.node << 4 | dst << 12 | message << 20
        self.base = self.next = self._cum = 0
        W = c.window
        self._state = [FREE] * W
        self._retries = [0] * W
        self._retx = []
        self._deadlines = {}
        self._update_min_free()
        self._min_free = max(self._min_free, t + 1)

    def _fail(self, error, t, seq, lane, packet, detail):
        self.error = error
        self.error_seq = seq
        self.error_cycle, self.error_lane, self.error_packet = t, lane, packet
        self.error_message = f"{error.name} in cycle {t}: {detail}"
        self.busy = False

    # One cycle -------------------------------------------------------------------------------

    def outputs(self):
        """What the forward lanes carry in this cycle: [(valid, word, last)] per lane."""
        return self._lanes.outputs(self.cycle)

    def step(self, ack_in=None):
        """Model one cycle with ``ack_in`` arriving on the reverse lanes ([(valid, word, last)]
        per lane, or None: nothing); returns the forward lanes' words of the cycle."""
        out = self._lanes.emit(self.cycle)
        self._consume(ack_in)
        return out

    def _consume(self, ack_in):
        """The rest of the cycle, once its words are out."""
        t = self.cycle
        self.cycle = t + 1
        arrived = _frame(self._in, ack_in) if ack_in is not None else ()
        if not self.busy:
            for _, words in arrived:
                self._check(words, 0, 0)
            if self._commands and self.error == TxError.NONE:
                self._take(t)
            return
        c = self.config
        W, T = c.window, self._T
        state = self._state
        base0, next0 = self.base, self.next
        finished = base0 >= T
        release = not finished and state[base0 % W] == ACKED

        # 2. Lane choice (from the state at the start of t).
        sends = []
        if not finished and t >= self._min_free:
            limit = min(base0 + W, T)
            heap, free_at, dead = self._retx, self._lanes.free_at, self.lane_dead
            for l in range(c.lanes):
                if dead[l] or t < free_at[l]:
                    continue
                s = None
                while heap:
                    top = heapq.heappop(heap)
                    if top >= base0 and state[top % W] == RETX:
                        s, again = top, True
                        break
                if s is None:
                    if self.next < limit:
                        s, again = self.next, False
                        self.next += 1
                    else:
                        break
                self._send(l, s, t)
                sends.append((l, s, again))
            if sends:
                self._update_min_free()
        expiring = self._deadlines.pop(t, None)
        if not (arrived or expiring or sends or release or finished):
            return
        self._update(t, arrived, expiring, sends, release, finished, base0, next0)

    def _update_min_free(self):
        frees = [f for f, dead in zip(self._lanes.free_at, self.lane_dead) if not dead]
        self._min_free = min(frees) if frees else float("inf")

    def _update(self, t, arrived, expiring, sends, release, finished, base0, next0):
        c = self.config
        W, T, r = c.window, self._T, c.word_cycles
        state, lane_of, retries = self._state, self._lane, self._retries

        # 3. Acknowledgements.
        acked = set()
        nacked = []
        cleared = set()
        gbn = self.mode == "go_back_n"
        for _, words in arrived:
            got = self._check(words, base0, next0)
            if got is None:
                continue
            type_, seq, cumulative = got
            if type_ == _ACK:
                self.acks += 1
                cleared.add(lane_of[seq % W])
                if not gbn:
                    acked.add(seq)
            else:
                self.nacks += 1
                nacked.append(seq)
            top = min(cumulative, next0)
            low = max(base0, self._cum)
            if top > low:
                acked.update(range(low, top))
                self._cum = top

        # 4. Timeouts.
        timed = []
        for s in expiring or ():
            slot = s % W
            if (base0 <= s < next0 and state[slot] == INFLIGHT and self._deadline[slot] == t
                    and s not in acked):
                timed.append(s)
        triggers = timed + [s for s in nacked if state[s % W] == INFLIGHT and s not in acked]
        if gbn and triggers:
            first = min(triggers)
            to_retx = [s for s in range(first, next0)
                       if state[s % W] == INFLIGHT and s not in acked]
        else:
            to_retx = sorted(set(triggers))
        self.timeouts += len(timed)

        # 5. Retries, and the updates (ACKED wins, then INFLIGHT, then RETX; release wins).
        at_limit = [s for s in to_retx if retries[s % W] >= c.retry_limit]
        for s in acked:
            state[s % W] = ACKED
        timeout = c.effective_timeout
        for l, s, again in sends:
            self.sent += 1
            if again:
                self.retransmits += 1
            slot = s % W
            if s in acked:
                continue
            state[slot] = INFLIGHT
            lane_of[slot] = l
            deadline = t + (self._payload(s) + ACK_WORDS) * r + timeout
            self._deadline[slot] = deadline
            self._deadlines.setdefault(deadline, []).append(s)
            if not again:
                retries[slot] = 0
        for s in to_retx:
            slot = s % W
            state[slot] = RETX
            retries[slot] += 1
            heapq.heappush(self._retx, s)
        hit = {lane_of[s % W]: s for s in reversed(timed)}     # lane -> its lowest timeout
        died = False
        for l in cleared | hit.keys():
            after = (0 if l in cleared else self._in_row[l]) + (l in hit)
            self._in_row[l] = min(after, c.lane_dead_after)
            if after >= c.lane_dead_after and not self.lane_dead[l]:
                self.lane_dead[l] = True
                self.dead_cycles.append((l, t))
                died = True
        if died:
            self._update_min_free()
        if release:
            state[base0 % W] = FREE
            self.base = base0 + 1

        # 6. Done and errors.
        if finished:
            self.done.append((t, self.message))
            self.busy = False
        if at_limit:
            s = at_limit[0]
            self._fail(TxError.RETRY_LIMIT, t, s, lane_of[s % W], s,
                       f"packet {s} of message {self.message} was sent {1 + c.retry_limit} "
                       f"times (1 + retry_limit {c.retry_limit}) without an acknowledgement, "
                       f"the last time on lane {lane_of[s % W]}")
        elif all(self.lane_dead):
            l = self.dead_cycles[-1][0]
            s = hit.get(l)
            self._fail(TxError.LANES_DEAD, t, 0, l, s,
                       f"every lane is dead; lane {l} died last, after "
                       f"{c.lane_dead_after} timeouts in a row, the last for packet {s} of "
                       f"message {self.message} (base {self.base}, next {self.next} of "
                       f"{T} packets)")

    def _payload(self, s):
        P = self.config.max_payload
        return min(P, self._w - s * P)

    def _send(self, lane, s, t):
        P = self.config.max_payload
        lo = s * P
        p = min(P, self._w - lo)
        words = [self._w0, s | p << 16, 4 * lo, self.length]
        words += self.source[self._src + lo:self._src + lo + p].tolist()
        words.append(_crc(words))
        self._lanes.take(lane, words, t)

    def _check(self, words, base, nxt):
        """The checks of rule 3 (base, next: at the start of the cycle); (type, seq,
        cumulative) of a packet passing them, else None (the drop counted)."""
        n = len(words)
        if n < ACK_WORDS or _crc(words[:-1]) != words[-1]:
            cause = DropCause.CRC
        else:
            w0, w1 = words[0], words[1]
            type_ = w0 & 0xF
            if type_ != _ACK and type_ != _NACK:
                cause = DropCause.TYPE
            elif (w0 >> 12) & 0xFF != self.node or (w0 >> 4) & 0xFF != self.peer:
                cause = DropCause.DESTINATION
            elif w1 >> 16 or n != ACK_WORDS:
                cause = DropCause.LENGTH
            elif not self.busy or w0 >> 20 != self.message:
                cause = DropCause.MESSAGE
            elif not base <= (w1 & 0xFFFF) < nxt:
                cause = DropCause.SEQUENCE
            else:
                return type_, w1 & 0xFFFF, words[2]
        self.drops[cause] += 1
        return None

    # Skipping idle cycles --------------------------------------------------------------------

    def next_event(self):
        """The first cycle >= :attr:`cycle` in which :meth:`step`, with nothing arriving, can
        change anything but the cycle count (None: never)."""
        t = self.cycle
        lanes = self._lanes
        if lanes.sending():
            return t
        if not self.busy:
            return t if self._commands and self.error == TxError.NONE else None
        W = self.config.window
        if self.base >= self._T or self._state[self.base % W] == ACKED:
            return t
        events = []
        candidates = self.next < min(self.base + W, self._T) or any(
            s >= self.base and self._state[s % W] == RETX for s in self._retx)
        if candidates:
            frees = [f for f, dead in zip(lanes.free_at, self.lane_dead) if not dead]
            if frees:
                events.append(max(t, min(frees)))
        if self._deadlines:
            events.append(max(t, min(self._deadlines)))
        return min(events) if events else None

    def skip_to(self, cycle):
        """Jump to ``cycle`` (<= :meth:`next_event`), the cycles between changing nothing."""
        nxt = self.next_event()
        if cycle < self.cycle or (nxt is not None and cycle > nxt):
            raise ValueError(f"the sender cannot skip from cycle {self.cycle} to {cycle}")
        self.cycle = cycle

    def describe(self):
        """The sender's state in a sentence (for errors)."""
        c = self.config
        if not self.busy:
            what = "idle" if self.error == TxError.NONE else f"stopped ({self.error_message})"
        else:
            entries = []
            for s in range(self.base, self.next):
                slot = s % c.window
                st = self._state[slot]
                text = f"{s}: {STATE_NAMES[st]}"
                if st == INFLIGHT:
                    text += (f" (lane {self._lane[slot]}, deadline {self._deadline[slot]}, "
                             f"retries {self._retries[slot]})")
                elif st == RETX:
                    text += f" (retries {self._retries[slot]})"
                entries.append(text)
            what = (f"message {self.message} in progress, base {self.base}, next {self.next} "
                    f"of {self._T} packets, entries [{'; '.join(entries)}]")
        lanes = ", ".join(
            f"lane {l}: {'dead' if self.lane_dead[l] else 'alive'}, free at "
            f"{self._lanes.free_at[l]}, {self._in_row[l]} timeouts in a row"
            for l in range(c.lanes))
        return f"sender in cycle {self.cycle}: {what}; {lanes}"


class RxModel:
    """The receiver (``hdl.PacketRx``), one :meth:`step` per clock cycle from cycle 0.

    Parameters
    ----------
    config : :class:`LinkConfig`
    node, peer : int
        This node and the sender (DATA packets must come from ``peer`` to this node).
    mode : ``"selective"`` or ``"go_back_n"`` (see the module).

    Attributes
    ----------
    buffer : numpy uint32 array of ``buffer_words``
        The receive buffer.
    cycle : int
    busy : bool
        A message is in progress (``message``, ``length``, ``base``).
    done : list of (cycle, message id)
    accepted, acks, nacks, ack_drops : int
        Packets accepted; ACKs and NACKs queued; acknowledgements dropped for a full queue.
    nack_repeats : int
        NACKs sent (queued, or dropped for a full queue) for a base that already had one: after
        max(1, window / 2) packets accepted since the last NACK (rule 4).
    drops : dict DropCause -> int
        DATA packets dropped, by cause (DUPLICATE included).
    max_copies : list of int
        Per lane, the most copies into the receive buffer that ran at once (copies of one lane
        overlap when a short packet follows a long one; the RTL has two copy engines a lane).
    """

    def __init__(self, config, node=2, peer=1, mode="selective"):
        _check_args(config, node, peer, mode)
        self.config, self.node, self.peer, self.mode = config, node, peer, mode
        self.buffer = np.zeros(config.buffer_words, dtype=np.uint32)
        self.reset()

    def reset(self):
        """The state after reset (the buffer keeps its contents)."""
        c = self.config
        L = c.lanes
        self.cycle = 0
        self.busy = False
        self.message = 0
        self.length = 0
        self._w = self._T = 0
        self.base = 0
        self._expected = 0
        self._received = [False] * c.window
        self._nacked = None             # the base a NACK was sent for
        self._since = 0                 # packets accepted since the last NACK (saturating)
        self._nack_cycle = None         # the cycle of the last NACK
        self._last_id = None            # the message last completed
        self._last_T = 0
        self._in = [[] for _ in range(L)]
        self._copies = []               # [first write cycle, word address, payload, lane]
        self._copy_until = -1           # the last cycle a copy writes in
        self._copy_count = [0] * L
        self.max_copies = [0] * L
        self._queues = [deque() for _ in range(L)]
        self._queued = 0                # packets in the queues
        self._lanes = _Lanes(L, c.word_cycles)
        self.done = []
        self.accepted = self.acks = self.nacks = self.ack_drops = self.nack_repeats = 0
        self.drops = {cause: 0 for cause in DropCause}

    def outputs(self):
        """What the reverse lanes carry in this cycle: [(valid, word, last)] per lane."""
        return self._lanes.outputs(self.cycle)

    def step(self, data_in=None):
        """Model one cycle with ``data_in`` arriving on the forward lanes ([(valid, word, last)]
        per lane, or None); returns the reverse lanes' words of the cycle."""
        out = self._lanes.emit(self.cycle)
        self._consume(data_in)
        return out

    def _consume(self, data_in):
        """The rest of the cycle, once its words are out."""
        t = self.cycle
        self.cycle = t + 1
        # 4. The reverse lanes take their queues' heads (queued before t).
        if self._queued:
            lanes = self._lanes
            free_at = lanes.free_at
            for l, queue in enumerate(self._queues):
                if queue and t >= free_at[l]:
                    lanes.take(l, queue.popleft(), t)
                    self._queued -= 1
        # 3. Copies writing in t.
        if self._copies:
            buffer, kept = self.buffer, []
            for copy in self._copies:
                start, address, payload, lane = copy
                if t >= start:
                    k = t - start
                    buffer[address + k] = payload[k]
                    if k == len(payload) - 1:
                        self._copy_count[lane] -= 1
                        continue
                kept.append(copy)
            self._copies = kept
        # 5. Advance and done, from the state at the start of t.
        W = self.config.window
        active = self.busy
        base0 = self.base
        advance = active and self._received[base0 % W]
        finished = active and base0 >= self._T and self._copy_until < t
        # 1, 2. Framing and checks, lane by lane.
        if data_in is not None:
            for lane, words in _frame(self._in, data_in):
                self._packet(lane, words, t)
        if active:
            if advance:
                self._received[base0 % W] = False
                self.base = base0 + 1
            if finished:
                self.done.append((t, self.message))
                self.busy = False
                self._last_id, self._last_T = self.message, self._T

    def _packet(self, lane, words, t):
        c = self.config
        P, W = c.max_payload, c.window
        n = len(words)
        if n < ACK_WORDS or _crc(words[:-1]) != words[-1]:
            return self._drop(DropCause.CRC)
        w0, w1, offset, length = words[0], words[1], words[2], words[3]
        if w0 & 0xF != _DATA:
            return self._drop(DropCause.TYPE)
        if (w0 >> 12) & 0xFF != self.node or (w0 >> 4) & 0xFF != self.peer:
            return self._drop(DropCause.DESTINATION)
        s, p = w1 & 0xFFFF, w1 >> 16
        if n > c.max_packet_words or p == 0 or p > P or n != p + ACK_WORDS:
            return self._drop(DropCause.LENGTH)
        w = length >> 2
        if (length == 0 or length & 3 or w > c.buffer_words or s * P >= w
                or offset != 4 * P * s or p != min(P, w - s * P)):
            return self._drop(DropCause.OFFSET)
        message = w0 >> 20
        completed = not self.busy and self._last_id == message
        if not self.busy and not completed:         # starts a message (even if dropped next)
            self.busy = True
            self.message, self.length = message, length
            self._w, self._T = w, -(-w // P)
            self.base = self._expected = 0
            self._received = [False] * W
            self._nacked = None
        if self.busy and (message != self.message or length != self.length):
            return self._drop(DropCause.MESSAGE)
        base = self.base
        gbn = self.mode == "go_back_n"
        cumulative = self._last_T if completed else base
        if s >= base + W:
            self._drop(DropCause.SEQUENCE)
            if gbn and not completed:
                self._queue(lane, _ACK, message, s, self._expected)
            return
        if completed or s < base or self._received[s % W] or (gbn and s < self._expected):
            self._drop(DropCause.DUPLICATE)
            self._queue(lane, _ACK, message, s, self._expected if gbn and not completed
                        else cumulative)
            return
        if gbn and s != self._expected:
            self._drop(DropCause.SEQUENCE)
            self._queue(lane, _ACK, message, s, self._expected)
            return
        # 3. Accept.
        self.accepted += 1
        self._received[s % W] = True
        start = t + 1
        self._copies.append([start, s * P, words[HEADER_WORDS:-1], lane])
        self._copy_until = max(self._copy_until, start + p - 1)
        self._copy_count[lane] += 1
        self.max_copies[lane] = max(self.max_copies[lane], self._copy_count[lane])
        # 4. Acknowledge.
        if gbn:
            self._expected = s + 1
            self._queue(lane, _ACK, message, s, self._expected)
            return
        self._queue(lane, _ACK, message, s, cumulative)
        again = max(1, W // 2)
        self._since = min(self._since + 1, again)
        gap = self.config.nack_gap
        if (gap and not self._received[base % W] and s - base >= gap
                and (self._nacked != base or self._since >= again) and self._nack_cycle != t):
            if self._nacked == base:
                self.nack_repeats += 1
            self._nacked = base
            self._since = 0
            self._nack_cycle = t
            self._queue(lane, _NACK, message, base, base)

    def _drop(self, cause):
        self.drops[cause] += 1

    def _queue(self, lane, type_, message, seq, cumulative):
        queue = self._queues[lane]
        if len(queue) < self.config.ack_queue:
            queue.append(_control(type_, self.node, self.peer, message, seq, cumulative))
            self._queued += 1
            if type_ == _ACK:
                self.acks += 1
            else:
                self.nacks += 1
        else:
            self.ack_drops += 1

    def next_event(self):
        """The first cycle >= :attr:`cycle` in which :meth:`step`, with nothing arriving, can
        change anything but the cycle count (None: never)."""
        t = self.cycle
        if self._lanes.sending() or self._copies:
            return t
        if self.busy and (self._received[self.base % self.config.window]
                          or self.base >= self._T):
            return t
        events = [max(t, free) for queue, free in zip(self._queues, self._lanes.free_at)
                  if queue]
        return min(events) if events else None

    def skip_to(self, cycle):
        nxt = self.next_event()
        if cycle < self.cycle or (nxt is not None and cycle > nxt):
            raise ValueError(f"the receiver cannot skip from cycle {self.cycle} to {cycle}")
        self.cycle = cycle

    def describe(self):
        if not self.busy:
            return (f"receiver in cycle {self.cycle}: no message in progress (last completed: "
                    f"{self._last_id})")
        W = self.config.window
        got = [s for s in range(self.base, self.base + W) if self._received[s % W]]
        return (f"receiver in cycle {self.cycle}: message {self.message} in progress, base "
                f"{self.base} of {self._T} packets, received beyond base {got}, ACK queues "
                f"{[len(q) for q in self._queues]}")


class LinkStalled(RuntimeError):
    """A transfer that neither finished nor failed within its cycle budget (or can make no more
    progress); the message names the sender's and the receiver's state."""


@dataclass
class LinkResult:
    """What :meth:`LinkEmulator.send` did.

    ``ok``: the sender and the receiver are done and no error; ``error``/``error_message``: the
    sender's. ``start_cycle``: the cycle the command was taken; ``done_cycle``: the sender's
    ``done`` (None on error); ``rx_done_cycle``: the receiver's; ``cycles``: the cycles the run
    took (the emulator's cycle count at its end). ``words``/``data``: the receive buffer's first
    words/bytes (as many as the message). ``goodput``: payload bits per cycle over the line rate
    (lanes x lane_width), from the cycle after the command to the sender's done:
    8 x length / (done_cycle - start_cycle) / line_rate. Counters: ``sent`` (packets taken by a
    lane), ``retransmits``, ``timeouts``, ``acks_sent``/``nacks_sent`` (queued by the
    receiver), ``nack_repeats`` (NACKs for a base already NACKed), ``acks_received``/
    ``nacks_received`` (accepted by the sender), ``ack_drops`` (a full ACK queue),
    ``tx_drops``/``rx_drops`` ({DropCause: n}, nonzero only), ``accepted`` (packets the
    receiver accepted), ``lanes_dead`` (the lanes the sender declared dead), ``channels``
    (the channels' counters summed: dropped, flipped, duplicated, reordered, lost_dead),
    ``max_copies`` (per lane, the most overlapping copies).
    """
    ok: bool
    length: int
    message: int
    error: TxError = TxError.NONE
    error_message: str = ""
    start_cycle: int = 0
    done_cycle: int | None = None
    rx_done_cycle: int | None = None
    cycles: int = 0
    words: np.ndarray = None
    goodput: float | None = None
    sent: int = 0
    retransmits: int = 0
    timeouts: int = 0
    acks_sent: int = 0
    nacks_sent: int = 0
    nack_repeats: int = 0
    acks_received: int = 0
    nacks_received: int = 0
    ack_drops: int = 0
    accepted: int = 0
    tx_drops: dict = field(default_factory=dict)
    rx_drops: dict = field(default_factory=dict)
    lanes_dead: list = field(default_factory=list)
    channels: dict = field(default_factory=dict)
    max_copies: list = field(default_factory=list)

    @property
    def data(self):
        return self.words.astype("<u4").tobytes()


def default_max_cycles(config, length):
    """A cycle budget no healthy transfer of ``length`` bytes comes near: every packet, the
    window's worth more, sent 1 + retry_limit times, each a timeout and two packet times."""
    T = -(-max(length, 4) // (4 * config.max_payload))
    r = config.word_cycles
    per_try = config.effective_timeout + 2 * config.max_packet_words * r + 2 * config.latency
    return 1000 + (T + config.window) * (config.retry_limit + 1) * per_try


class LinkEmulator:
    """A sender (node ``tx_node``) and a receiver (``rx_node``) joined by ``2 x lanes`` seeded
    channels (``faults``: None, one FaultConfig, or one per lane; see
    :func:`emulator.channel.make_channels`).

    In every cycle each end's outgoing words (which do not depend on that cycle's inputs) enter
    its channels, and what the channels deliver in the cycle is the other ends' input.
    ``trace=True`` records every word entering a channel as (cycle, lane, direction, word, last)
    in :attr:`trace` (cycle order, then lane, then "forward" before "reverse"), for lockstep
    comparison with the RTL. ``skip_idle`` (default True) jumps over cycles in which nothing can
    happen (exact: the same cycles, words and counters as stepping through them).
    ``channels``: a (forward, reverse) pair of lists of channels to use instead of
    ``make_channels(config, faults, seed)`` (objects with the :class:`Channel` interface:
    ``step``, ``next_delivery``, ``skip`` and the counters), e.g. to script faults in tests.
    """

    def __init__(self, config, faults=None, seed=0, tx_node=1, rx_node=2, mode="selective",
                 trace=False, skip_idle=True, channels=None):
        self.config = config
        self.tx = TxModel(config, tx_node, rx_node, mode)
        self.rx = RxModel(config, rx_node, tx_node, mode)
        if channels is None:
            channels = make_channels(config, faults, seed)
        self.forward, self.reverse = (list(side) for side in channels)
        if not len(self.forward) == len(self.reverse) == config.lanes:
            raise ValueError(f"channels must be two lists of {config.lanes} channels")
        self._forward_steps = [ch.step for ch in self.forward]
        self._reverse_steps = [ch.step for ch in self.reverse]
        self.trace = [] if trace else None
        self.skip_idle = skip_idle
        self.cycle = 0
        self._last_message = None

    def step(self):
        """One cycle of the whole link; returns whether any word moved (on a lane or out of a
        channel)."""
        t = self.cycle
        tx, rx = self.tx, self.rx
        tx_out = tx._lanes.emit(t)
        rx_out = rx._lanes.emit(t)
        fwd = [step(*o) for step, o in zip(self._forward_steps, tx_out)]
        rev = [step(*o) for step, o in zip(self._reverse_steps, rx_out)]
        moved = (tx_out is not tx._lanes.idle or rx_out is not rx._lanes.idle
                 or fwd.count(IDLE) < len(fwd) or rev.count(IDLE) < len(rev))
        if self.trace is not None and moved:
            for l in range(self.config.lanes):
                if tx_out[l][0]:
                    self.trace.append((t, l, "forward", tx_out[l][1], tx_out[l][2]))
                if rx_out[l][0]:
                    self.trace.append((t, l, "reverse", rx_out[l][1], rx_out[l][2]))
        tx._consume(rev if rev.count(IDLE) < len(rev) else None)
        rx._consume(fwd if fwd.count(IDLE) < len(fwd) else None)
        self.cycle = t + 1
        return moved

    def next_event(self):
        """The first cycle >= :attr:`cycle` in which anything can happen (None: never)."""
        events = [e for e in (self.tx.next_event(), self.rx.next_event()) if e is not None]
        events += [e for ch in self.forward + self.reverse
                   if (e := ch.next_delivery()) is not None]
        return min(events) if events else None

    def _skip(self):
        """Jump to the next event; False if there is none."""
        nxt = self.next_event()
        if nxt is None:
            return False
        if nxt > self.cycle:
            gap = nxt - self.cycle
            self.tx.skip_to(nxt)
            self.rx.skip_to(nxt)
            for ch in self.forward + self.reverse:
                ch.skip(gap)
            self.cycle = nxt
        return True

    def describe(self):
        return f"{self.tx.describe()}; {self.rx.describe()}"

    def send(self, data, src=0, message=None, dst=None, max_cycles=None):
        """Load ``data`` (bytes, or 32-bit words: a sequence or array of ints) at word ``src`` of
        the source memory, send it as message ``message`` (default: 0 first, then one more than
        the previous message) and run until the sender and the receiver are done, or the sender
        fails; returns a :class:`LinkResult`. Raises :class:`LinkStalled` if neither happens
        within ``max_cycles`` cycles (default: :func:`default_max_cycles`)."""
        c = self.config
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            length = len(data)
            padded = data + bytes(-length % 4)
            words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
        else:
            words = np.asarray(data, dtype=np.int64)
            if words.ndim != 1 or words.size and (words.min() < 0 or words.max() > MASK):
                raise ValueError("data must be bytes or a sequence of 32-bit words")
            words = words.astype(np.uint32)
            length = 4 * len(words)
        if message is None:
            message = 0 if self._last_message is None else (self._last_message + 1) % 4096
        if message == self.rx._last_id:
            raise ValueError(f"message {message} is the id of the message the receiver last "
                             f"completed: it would take every packet for a duplicate; use "
                             f"another id")
        self._last_message = message
        fits = max(0, min(len(words), c.source_words - src))
        self.tx.source[src:src + fits] = words[:fits]
        tx, rx = self.tx, self.rx
        tx_done0, rx_done0 = len(tx.done), len(rx.done)
        tx.start(src, length, self.rx.node if dst is None else dst, message)
        budget = default_max_cycles(c, length) if max_cycles is None else max_cycles
        end = self.cycle + budget
        first = self.cycle
        moved = True
        while True:
            tx_done = len(tx.done) > tx_done0
            if tx.error != TxError.NONE or (tx_done and len(rx.done) > rx_done0):
                break
            if self.skip_idle and not moved and not self._skip():
                raise LinkStalled(f"message {message} can make no more progress in cycle "
                                  f"{self.cycle}: {self.describe()}")
            if self.cycle >= end:
                raise LinkStalled(f"message {message} neither finished nor failed within "
                                  f"{budget} cycles (cycles {first} to {self.cycle}): "
                                  f"{self.describe()}")
            moved = self.step()
        return self._result(length, message, tx_done0, rx_done0)

    def _result(self, length, message, tx_done0, rx_done0):
        c, tx, rx = self.config, self.tx, self.rx
        w = length // 4
        done = tx.done[tx_done0][0] if len(tx.done) > tx_done0 else None
        rx_done = rx.done[rx_done0][0] if len(rx.done) > rx_done0 else None
        start = tx.start_cycle if tx.error != TxError.MESSAGE else tx.error_cycle
        goodput = None
        if done is not None:
            goodput = 8 * length / (done - start) / c.line_rate
        channels = {name: sum(getattr(ch, name) for ch in self.forward + self.reverse)
                    for name in ("packets_in", "dropped", "flipped", "duplicated", "reordered",
                                 "lost_dead", "packets_out")}
        return LinkResult(
            ok=tx.error == TxError.NONE and done is not None and rx_done is not None,
            length=length, message=message, error=tx.error, error_message=tx.error_message,
            start_cycle=start, done_cycle=done, rx_done_cycle=rx_done, cycles=self.cycle,
            words=rx.buffer[:min(w, c.buffer_words)].copy(), goodput=goodput,
            sent=tx.sent, retransmits=tx.retransmits, timeouts=tx.timeouts,
            acks_sent=rx.acks, nacks_sent=rx.nacks, nack_repeats=rx.nack_repeats,
            acks_received=tx.acks,
            nacks_received=tx.nacks, ack_drops=rx.ack_drops, accepted=rx.accepted,
            tx_drops={k: v for k, v in tx.drops.items() if v},
            rx_drops={k: v for k, v in rx.drops.items() if v},
            lanes_dead=[l for l, dead in enumerate(tx.lane_dead) if dead],
            channels=channels, max_copies=list(rx.max_copies))

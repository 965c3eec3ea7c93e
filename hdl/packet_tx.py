"""The packet link's sender (docs/ARCHITECTURE.md, section 12 "The sender"), and what it shares
with the receiver (:mod:`hdl.packet_rx`): the lane signature, the word-serial lane sender and the
lane framer.

Cycle t is any clock cycle after reset. Every decision in cycle t reads the registers (the state
at the start of t) and the inputs of t; every update lands at the end of t.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mesh.link import (ACK_WORDS, HEADER_WORDS, MAX_NODE, DropCause, LinkConfig, PacketType,
                       TxError)

from .crc32 import CRC32_INIT, Crc32Word

__all__ = ["PacketTx", "LaneSignature", "COUNTER_BITS", "SEQ_BITS", "NODE_BITS",
           "MESSAGE_BITS", "DROP_CAUSES"]

COUNTER_BITS = 32     # every event counter (wraps)
SEQ_BITS = 16         # sequence numbers (word 1 [15:0])
NODE_BITS = 8         # node ids (word 0 [11:4] and [19:12])
MESSAGE_BITS = 12     # message ids (word 0 [31:20])
DROP_CAUSES = len(DropCause) + 1     # ``drops`` is indexed by the DropCause value (0 unused)
MAX_PACKETS = (1 << SEQ_BITS) - 1

# Window entry states.
FREE, INFLIGHT, RETX, ACKED = 0, 1, 2, 3


def check_link_args(config, node, peer):
    """Raise for a configuration or node ids the link cannot be built with."""
    if not isinstance(config, LinkConfig):
        raise TypeError(f"config must be a mesh.link.LinkConfig, not {config!r}")
    for name, value in (("node", node), ("peer", peer)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_NODE:
            raise ValueError(f"{name} must be an integer from 0 to {MAX_NODE}, not {value!r}")
    if node == peer:
        raise ValueError(f"node and peer must differ, both are {node}")


class LaneSignature(wiring.Signature):
    """One lane, from the sending end: ``valid`` in the cycle a word is on the lane, ``data`` (0
    while ``valid`` is low) and ``last`` (the packet's last word). A lane of r cycles per word
    carries a packet's word j in cycle t + 1 + j x r, ``valid`` high only in those cycles.

    Members
    -------
    valid, last : :py:`Out(1)`
    data : :py:`Out(32)`
    """

    def __init__(self):
        super().__init__({"valid": Out(1), "data": Out(32), "last": Out(1)})


def _bits(count):
    """Bits of an index below ``count`` (at least 1)."""
    return max(1, (count - 1).bit_length())


def _lowest(m, bits, width, name):
    """(any, index of the lowest set bit) of ``bits``, combinational."""
    index = Signal(_bits(width), name=f"{name}_index")
    for b in reversed(range(width)):
        with m.If(bits[b]):
            m.d.comb += index.eq(b)
    return bits.any(), index


def lane_sender(m, name, lane, r, max_words, take, words, header, payload=0):
    """The logic of one lane sending packets word-serially.

    When ``take`` is high in cycle t, a packet of ``words`` words (header: the four values of
    ``header`` in cycle t; then payload words; then the CRC of all words before it) leaves on
    ``lane``: word j in cycle t + 1 + j x r, with ``last`` on the CRC word; the lane is free again
    in cycle t + words x r. Payload word j is ``payload`` in the cycle it leaves (a synchronous
    memory read: give the address of word ``j_next`` - 4 in the cycle before).

    Returns (``free``: the lane may take a packet this cycle, ``j_next``: the index of the word
    the lane's next word slot carries).
    """
    sending = Signal(name=f"{name}_sending")
    j = Signal(range(max_words + 1), name=f"{name}_j")
    phase = Signal(range(max(r, 2)), name=f"{name}_phase")
    left = Signal(range(max_words * r + 1), name=f"{name}_left")
    count = Signal(range(max_words + 1), name=f"{name}_words")
    held = [Signal(32, name=f"{name}_h{k}") for k in range(HEADER_WORDS)]
    crc = Signal(32, init=CRC32_INIT, name=f"{name}_crc")
    unit = Crc32Word()
    m.submodules[f"{name}_crc"] = unit

    valid, final = Signal(name=f"{name}_valid"), Signal(name=f"{name}_final")
    word = Signal(32, name=f"{name}_word")
    m.d.comb += [
        valid.eq(sending & (phase == 0)),
        final.eq(j == count - 1),
        word.eq(payload),
    ]
    for k in range(HEADER_WORDS):
        with m.If(j == k):
            m.d.comb += word.eq(held[k])
    with m.If(final):
        m.d.comb += word.eq(crc ^ 0xFFFFFFFF)
    m.d.comb += [
        lane.valid.eq(valid),
        lane.data.eq(Mux(valid, word, 0)),
        lane.last.eq(valid & final),
        unit.crc.eq(crc),
        unit.data.eq(word),
    ]
    free, j_next = Signal(name=f"{name}_free"), Signal(range(max_words + 1), name=f"{name}_jn")
    m.d.comb += [free.eq(left == 0), j_next.eq(Mux(take, 0, j + valid))]
    with m.If(take):
        m.d.sync += [sending.eq(1), j.eq(0), phase.eq(0), left.eq(words * r - 1),
                     count.eq(words), crc.eq(CRC32_INIT)]
        m.d.sync += [held[k].eq(header[k]) for k in range(HEADER_WORDS)]
    with m.Else():
        with m.If(left != 0):
            m.d.sync += left.eq(left - 1)
        with m.If(valid):
            m.d.sync += [j.eq(j + 1), phase.eq(r - 1), crc.eq(unit.next)]
            with m.If(final):
                m.d.sync += [sending.eq(0), crc.eq(CRC32_INIT)]
        with m.Elif(sending & (phase != 0)):
            m.d.sync += phase.eq(phase - 1)
    return free, j_next


class LaneFramer:
    """The registers of one lane receiving packets: the words counted so far (saturating at
    ``max_count``), the CRC register over them and the four header words.

    Attributes (combinational, meaningful when ``end`` is high): ``end``: the packet's last word
    is on the lane; ``count``: the words before it (the packet has ``count`` + 1 words);
    ``crc_ok``: at least 5 words and the last is the CRC of the others; ``header``: words 0..3;
    ``type``, ``src``, ``dst``, ``message``, ``seq``, ``payload``: header fields.
    """

    def __init__(self, m, name, lane, max_count):
        self.count = count = Signal(range(max_count + 1), name=f"{name}_count")
        crc = Signal(32, init=CRC32_INIT, name=f"{name}_crc")
        self.header = header = [Signal(32, name=f"{name}_h{k}") for k in range(HEADER_WORDS)]
        unit = Crc32Word()
        m.submodules[f"{name}_crc"] = unit
        m.d.comb += [unit.crc.eq(crc), unit.data.eq(lane.data)]
        with m.If(lane.valid):
            with m.If(lane.last):
                m.d.sync += [count.eq(0), crc.eq(CRC32_INIT)]
            with m.Else():
                m.d.sync += [count.eq(Mux(count == max_count, max_count, count + 1)),
                             crc.eq(unit.next)]
                for k in range(HEADER_WORDS):
                    with m.If(count == k):
                        m.d.sync += header[k].eq(lane.data)
        self.end = Signal(name=f"{name}_end")
        self.crc_ok = Signal(name=f"{name}_crc_ok")
        m.d.comb += [
            self.end.eq(lane.valid & lane.last),
            self.crc_ok.eq((count >= HEADER_WORDS) & (crc ^ 0xFFFFFFFF == lane.data)),
        ]
        self.type = header[0][:4]
        self.src = header[0][4:12]
        self.dst = header[0][12:20]
        self.message = header[0][20:32]
        self.seq = header[1][:16]
        self.payload = header[1][16:32]


def first_cause(m, name, checks):
    """The DropCause of the first failing check of ``checks`` (pairs of cause and pass signal,
    in order), or 0 if all pass."""
    cause = Signal(range(DROP_CAUSES), name=f"{name}_cause")
    for drop, ok in reversed(checks):
        with m.If(~ok):
            m.d.comb += cause.eq(drop)
    return cause


def count_drops(m, drops, causes, enables):
    """Add to ``drops[c]`` the number of ``causes`` equal to c whose enable is high."""
    for c in DropCause:
        hits = [en & (cause == c) for cause, en in zip(causes, enables)]
        m.d.sync += drops[c].eq(drops[c] + sum(hits))


class PacketTx(wiring.Component):
    """The packet link's sender: a message from its source memory, cut into DATA packets sprayed
    over ``lanes`` lanes, within a window of ``window`` packets, resent on a NACK or a timeout
    (docs/ARCHITECTURE.md, section 12, "The sender": rules 1 to 6, implemented cycle for cycle).

    **Command.** ``start`` is taken in cycle t when ``start.valid`` and ``start.ready`` are high;
    ``ready`` is high when no message is in progress and ``error`` is 0. A length that is 0, not
    a multiple of 4, with src + length / 4 past the source memory, or of more than 65,535
    packets, sets ``error`` to MESSAGE; otherwise the message is in progress from t + 1
    (``busy``). DATA packets carry this node as source, ``start.dst`` as destination and
    ``start.message`` as message id; the receiver is ``peer`` (acknowledgements must come from
    it: ``start.dst`` is normally ``peer``).

    **Lanes.** Lane l's packets leave on ``data_out[l]`` and its acknowledgements arrive on
    ``ack_in[l]`` (any cycles; a packet is framed by ``last``). Lane choice, timeouts, retries
    and release follow the specification; ``done`` is high in the cycle base reaches T (the
    message is then no longer in progress). An error is sticky until reset and stops the sender
    (no packet is chosen and no message is in progress from the next cycle); the lanes finish
    the packets they have started.

    Within one cycle: an entry that is acknowledged is ACKED whatever else happens to it; an
    ACK clears the timeout count of the lane its packet was last sent on before that lane's
    timeouts of the same cycle are counted; when both RETRY_LIMIT and LANES_DEAD arise in one
    cycle, ``error`` is RETRY_LIMIT. ``error_seq`` is the sequence number of the RETRY_LIMIT
    packet (the lowest one if several in the cycle), 0 for the other errors.

    Implementation: the window is registers (entry s mod W for packet s); deadlines are
    compared for equality with a free-running cycle counter wide enough for the longest delay;
    the lanes choose in lane order through a chain of priority picks over the RETX entries
    rotated to start at ``base``; each lane has a synchronous read port on the source memory.

    Parameters
    ----------
    config : :class:`mesh.link.LinkConfig`
    node : :class:`int`
        This node's id (0 to 255).
    peer : :class:`int`
        The receiver's node id (0 to 255, not ``node``).

    Members
    -------
    load : :py:`In(Signature({"en": Out(1), "addr": Out(range(source_words)), "data": Out(32)}))`
        Write port of the source memory (word ``addr`` becomes ``data`` at the end of a cycle
        with ``en``; do not write the words of a message in progress).
    start : :py:`In(Signature({"valid": Out(1), "ready": In(1), "src": Out(range(source_words)),
    "length": Out(32), "dst": Out(8), "message": Out(12)}))`
        Messages: src is a word address, length in bytes.
    data_out : :py:`Out(LaneSignature()).array(lanes)`
        The forward lanes (DATA packets).
    ack_in : :py:`In(LaneSignature()).array(lanes)`
        The reverse lanes (ACK and NACK packets).
    busy, done : :py:`Out(1)`
        A message is in progress; the message is done (one cycle).
    error : :py:`Out(2)`
        A :class:`mesh.link.TxError` (sticky).
    error_seq : :py:`Out(16)`
    sent, retransmits, timeouts, acks, nacks : :py:`Out(32)`
        Packets chosen (all, and those of them resent); window entries timed out; ACKs and
        NACKs accepted.
    drops : :py:`Out(ArrayLayout(32, 9))`
        Acknowledgements dropped, ``drops[c]`` for :class:`mesh.link.DropCause` c.
    lane_dead : :py:`Out(lanes)`
        Bit l: lane l is dead.

    Attributes
    ----------
    source : :class:`Memory`
        The source memory (``source_words`` words of 32 bits; a test bench may read and write
        ``source.data[i]`` directly).
    """

    def __init__(self, config, node, peer):
        check_link_args(config, node, peer)
        self._config = config
        self.node, self.peer = node, peer
        self.source = Memory(shape=32, depth=config.source_words, init=[])
        lanes = config.lanes
        # The ports are made here, so that the component can be elaborated more than once.
        self._load_port = self.source.write_port()
        self._read_ports = [self.source.read_port() for _ in range(lanes)]
        super().__init__({
            "load": In(wiring.Signature({
                "en": Out(1), "addr": Out(range(config.source_words)), "data": Out(32)})),
            "start": In(wiring.Signature({
                "valid": Out(1),
                "ready": In(1),
                "src": Out(range(config.source_words)),
                "length": Out(32),
                "dst": Out(NODE_BITS),
                "message": Out(MESSAGE_BITS),
            })),
            "data_out": Out(LaneSignature()).array(lanes),
            "ack_in": In(LaneSignature()).array(lanes),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(2),
            "error_seq": Out(SEQ_BITS),
            "sent": Out(COUNTER_BITS),
            "retransmits": Out(COUNTER_BITS),
            "timeouts": Out(COUNTER_BITS),
            "acks": Out(COUNTER_BITS),
            "nacks": Out(COUNTER_BITS),
            "drops": Out(data.ArrayLayout(COUNTER_BITS, DROP_CAUSES)),
            "lane_dead": Out(lanes),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        L, W, P, r = config.lanes, config.window, config.max_payload, config.word_cycles
        S = config.source_words
        timeout, dead_after, retry_limit = (config.effective_timeout, config.lane_dead_after,
                                            config.retry_limit)
        max_words = config.max_packet_words
        log_w = (W - 1).bit_length()
        delay_bits = (max_words * r + timeout).bit_length() + 1
        m.submodules.source = self.source
        write, reads = self._load_port, self._read_ports
        m.d.comb += [write.en.eq(self.load.en), write.addr.eq(self.load.addr),
                     write.data.eq(self.load.data)]

        def index(seq):
            return seq[:log_w] if log_w else Const(0, 1)

        now = Signal(delay_bits)
        m.d.sync += now.eq(now + 1)

        # The message.
        active = Signal()
        msg_src = Signal(range(S))
        msg_words = Signal(range(S + 1))
        msg_dst, msg_id, msg_len = Signal(NODE_BITS), Signal(MESSAGE_BITS), Signal(32)
        base, nxt = Signal(SEQ_BITS), Signal(SEQ_BITS)
        base_words, next_words = Signal(range(S + P + 1)), Signal(range(S + P + 1))
        m.d.comb += self.busy.eq(active)

        # The window.
        state = [Signal(2, name=f"state_{i}") for i in range(W)]
        lane_of = [Signal(range(max(L, 2)), name=f"lane_{i}") for i in range(W)]
        deadline = [Signal(delay_bits, name=f"deadline_{i}") for i in range(W)]
        retries = [Signal(8, name=f"retries_{i}") for i in range(W)]
        base_index = index(base)
        offset = [Signal(max(log_w, 1), name=f"offset_{i}") for i in range(W)]
        for i in range(W):
            m.d.comb += offset[i].eq((Const(i, log_w + 1) - base_index)[:log_w] if log_w else 0)
        in_flight = Signal(range(W + 1))       # next - base
        m.d.comb += in_flight.eq(nxt - base)
        running = Signal()
        m.d.comb += running.eq(active & (self.error == TxError.NONE))

        # 1. Command.
        start = self.start
        accept, bad = Signal(), Signal()
        length_words = start.length[2:]
        m.d.comb += [
            start.ready.eq(~active & (self.error == TxError.NONE)),
            accept.eq(start.valid & start.ready),
            bad.eq((start.length == 0) | (start.length[:2] != 0)
                   | (start.src + length_words > S) | (length_words > MAX_PACKETS * P)),
        ]

        # 2. Lane choice: lanes in order; RETX entries by sequence number, then new packets.
        retx = Cat(s == RETX for s in state)
        remaining = Signal(W, name="retx_rotated")
        m.d.comb += remaining.eq((Cat(retx, retx) >> base_index)[:W])
        new_taken = Const(0, range(L + 1))
        takes, take_retx, chosen_seq, chosen_p = [], [], [], []
        lane_free = []
        for l in range(L):
            free = Signal(name=f"lane{l}_is_free")
            lane_free.append(free)
            eligible = Signal(name=f"lane{l}_eligible")
            m.d.comb += eligible.eq(running & ~self.lane_dead[l] & free)
            has_retx, pick = _lowest(m, remaining, W, f"lane{l}_retx")
            can_new = Signal(name=f"lane{l}_can_new")
            m.d.comb += can_new.eq((in_flight + new_taken < W)
                                   & (next_words + new_taken * P < msg_words))
            take, again = Signal(name=f"lane{l}_take"), Signal(name=f"lane{l}_again")
            m.d.comb += [again.eq(eligible & has_retx),
                         take.eq(eligible & (has_retx | can_new))]
            seq = Signal(SEQ_BITS, name=f"lane{l}_seq")
            m.d.comb += seq.eq(Mux(again, base + pick, nxt + new_taken))
            after = Signal(W, name=f"lane{l}_retx_left")
            m.d.comb += after.eq(Mux(again, remaining & ~(Const(1, W) << pick), remaining))
            remaining = after
            counted = Signal(range(L + 1), name=f"lane{l}_new_taken")
            m.d.comb += counted.eq(new_taken + (take & ~again))
            new_taken = counted
            takes.append(take)
            take_retx.append(again)
            chosen_seq.append(seq)

        # The lanes: packet s of p words is the header, payload words src + s P .. and the CRC.
        for l in range(L):
            seq = chosen_seq[l]
            seq_words = Signal(range((MAX_PACKETS + 1) * P), name=f"lane{l}_seq_words")
            rest = Signal(range(S + 1), name=f"lane{l}_rest")
            payload = Signal(range(P + 1), name=f"lane{l}_payload")
            m.d.comb += [
                seq_words.eq(seq * P),
                rest.eq(msg_words - seq_words),
                payload.eq(Mux(rest > P, P, rest)),
            ]
            chosen_p.append(payload)
            address = Signal(range(S), name=f"lane{l}_address")    # payload word 0
            with m.If(takes[l]):
                m.d.sync += address.eq(msg_src + seq_words)
            header = [PacketType.DATA | Cat(Const(0, 4), Const(self.node, NODE_BITS), msg_dst,
                                            msg_id),
                      Cat(seq, payload),
                      (seq_words << 2)[:32],
                      msg_len]
            free, j_next = lane_sender(m, f"lane{l}", self.data_out[l], r, max_words,
                                       takes[l], payload + ACK_WORDS, header, reads[l].data)
            m.d.comb += [lane_free[l].eq(free),
                         reads[l].addr.eq(address + j_next - HEADER_WORDS)]

        # 3. Acknowledgements.
        acked = [Signal(name=f"acked_{i}") for i in range(W)]
        nacked = [Signal(name=f"nacked_{i}") for i in range(W)]
        cleared = [Signal(name=f"lane{l}_cleared") for l in range(L)]
        causes, ends = [], []
        ack_count, nack_count = [], []
        lane_array = Array(lane_of)
        for k in range(L):
            frame = LaneFramer(m, f"ack{k}", self.ack_in[k], ACK_WORDS)
            seq, cumulative = frame.seq, frame.header[2]
            is_ack = frame.type == PacketType.ACK
            cause = first_cause(m, f"ack{k}", [
                (DropCause.CRC, frame.crc_ok),
                (DropCause.TYPE, is_ack | (frame.type == PacketType.NACK)),
                (DropCause.DESTINATION, (frame.dst == self.node) & (frame.src == self.peer)),
                (DropCause.LENGTH, (frame.payload == 0) & (frame.count == HEADER_WORDS)),
                (DropCause.MESSAGE, active & (frame.message == msg_id)),
                (DropCause.SEQUENCE, (seq >= base) & (seq < nxt)),
            ])
            causes.append(cause)
            ends.append(frame.end)
            ok = Signal(name=f"ack{k}_accepted")
            m.d.comb += ok.eq(frame.end & (cause == 0))
            ack_count.append(ok & is_ack)
            nack_count.append(ok & ~is_ack)
            # Entries base .. cumulative - 1, as offsets from base: below reach.
            reach = Signal(range(W + 1), name=f"ack{k}_reach")
            m.d.comb += reach.eq(Mux(cumulative <= base, 0,
                                     Mux(cumulative - base >= W, W, cumulative - base)))
            hit = index(seq)
            for i in range(W):
                covered = (offset[i] < reach) & (offset[i] < in_flight)
                with m.If(ok & (covered | (is_ack & (hit == i)))):
                    m.d.comb += acked[i].eq(1)
                with m.If(ok & ~is_ack & (hit == i)):
                    m.d.comb += nacked[i].eq(1)
            for l in range(L):
                with m.If(ok & is_ack & (lane_array[hit] == l)):
                    m.d.comb += cleared[l].eq(1)
        count_drops(m, self.drops, causes, ends)
        m.d.sync += [self.acks.eq(self.acks + sum(ack_count)),
                     self.nacks.eq(self.nacks + sum(nack_count))]

        # 4. Timeouts and 5. retries.
        timed_out = [Signal(name=f"timed_out_{i}") for i in range(W)]
        to_retx = [Signal(name=f"to_retx_{i}") for i in range(W)]
        at_limit = Signal(W)
        for i in range(W):
            inflight = active & (state[i] == INFLIGHT) & ~acked[i]
            m.d.comb += [
                timed_out[i].eq(inflight & (deadline[i] == now)),
                to_retx[i].eq(inflight & ((deadline[i] == now) | nacked[i])),
                at_limit[i].eq(to_retx[i] & (retries[i] == retry_limit)),
            ]
        dead_next = Signal(L)
        for l in range(L):
            count = Signal(range(dead_after + 1), name=f"lane{l}_timeouts")
            hit = Signal(name=f"lane{l}_timed_out")
            m.d.comb += hit.eq(Cat(timed_out[i] & (lane_of[i] == l) for i in range(W)).any())
            after = Signal(range(dead_after + 2), name=f"lane{l}_timeouts_next")
            m.d.comb += after.eq(Mux(cleared[l], 0, count) + hit)
            m.d.sync += count.eq(Mux(after > dead_after, dead_after, after))
            m.d.comb += dead_next[l].eq(self.lane_dead[l] | (after >= dead_after))
        m.d.sync += self.lane_dead.eq(dead_next)
        retry_error, lanes_error = Signal(), Signal()
        limit_rotated = Signal(W)
        m.d.comb += [
            retry_error.eq(at_limit.any()),
            lanes_error.eq(active & dead_next.all()),
            limit_rotated.eq((Cat(at_limit, at_limit) >> base_index)[:W]),
        ]
        _, limit_pick = _lowest(m, limit_rotated, W, "limit")
        m.d.sync += self.timeouts.eq(self.timeouts + sum(timed_out))

        # 6. Release and done.
        release, finished = Signal(), Signal()
        m.d.comb += [
            release.eq(active & (Array(state)[base_index] == ACKED)),
            finished.eq(active & (base_words >= msg_words)),
            self.done.eq(finished),
        ]

        # Updates.
        m.d.sync += [
            self.sent.eq(self.sent + sum(takes)),
            self.retransmits.eq(self.retransmits + sum(take_retx)),
        ]
        with m.If(accept):
            with m.If(bad):
                m.d.sync += self.error.eq(TxError.MESSAGE)
            with m.Else():
                m.d.sync += [
                    active.eq(1), base.eq(0), nxt.eq(0), base_words.eq(0), next_words.eq(0),
                    msg_src.eq(start.src), msg_words.eq(length_words), msg_dst.eq(start.dst),
                    msg_id.eq(start.message), msg_len.eq(start.length),
                ]
                m.d.sync += [s.eq(FREE) for s in state]
        with m.Elif(active):
            m.d.sync += [nxt.eq(nxt + new_taken), next_words.eq(next_words + new_taken * P)]
            with m.If(release):
                m.d.sync += [base.eq(base + 1), base_words.eq(base_words + P)]
            for i in range(W):
                with m.If(release & (base_index == i)):
                    m.d.sync += state[i].eq(FREE)
                with m.Elif(acked[i]):
                    m.d.sync += state[i].eq(ACKED)
                for l in reversed(range(L)):
                    with m.Elif(takes[l] & (index(chosen_seq[l]) == i)):
                        m.d.sync += [
                            state[i].eq(INFLIGHT), lane_of[i].eq(l),
                            deadline[i].eq(now + (chosen_p[l] + ACK_WORDS) * r + timeout),
                        ]
                        with m.If(~take_retx[l]):
                            m.d.sync += retries[i].eq(0)
                with m.Elif(to_retx[i]):
                    m.d.sync += [state[i].eq(RETX), retries[i].eq(retries[i] + 1)]
            with m.If(finished):
                m.d.sync += active.eq(0)
            with m.If(retry_error):
                m.d.sync += [self.error.eq(TxError.RETRY_LIMIT), active.eq(0),
                             self.error_seq.eq(base + limit_pick)]
            with m.Elif(lanes_error):
                m.d.sync += [self.error.eq(TxError.LANES_DEAD), active.eq(0)]
        return m

"""The packet link's receiver (docs/ARCHITECTURE.md, section 12 "The receiver").

Cycle t is any clock cycle after reset. Every decision in cycle t reads the registers (the state
at the start of t) and the inputs of t, and, for the checks, the updates of lower lanes in t;
every update lands at the end of t.
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mesh.link import ACK_WORDS, HEADER_WORDS, DropCause, PacketType

from .packet_tx import (COUNTER_BITS, DROP_CAUSES, MESSAGE_BITS, SEQ_BITS, LaneFramer,
                        LaneSignature, check_link_args, count_drops, first_cause, lane_sender)

__all__ = ["PacketRx", "COPY_ENGINES"]

#: Copies per lane that can run at once. A copy of p words runs for p cycles after its packet
#: completes; a later packet of the same lane completes N' x r >= p' + 5 cycles later, so it
#: overlaps the copy only if p' <= p - 6. Accepted packets of one message have one of two
#: payloads (max_payload and the last packet's), and a new message waits for every copy: at
#: most two copies of a lane overlap.
COPY_ENGINES = 2


class PacketRx(wiring.Component):
    """The packet link's receiver: DATA packets from ``lanes`` lanes into the receive buffer,
    checked, acknowledged on the reverse lanes (docs/ARCHITECTURE.md, section 12, "The receiver":
    rules 1 to 5, implemented cycle for cycle).

    **Framing and checks.** Lane l's packets arrive on ``data_in[l]``; a packet is complete in
    the cycle its ``last`` word arrives, and is checked in that cycle, lanes in order, each lane
    seeing what lower lanes did in the same cycle (a message they started, packets they
    accepted, a NACK they queued). The payload words are kept in the lane's packet buffer (a
    memory of ``max_payload`` words, written as they arrive).

    **Message start.** A packet that passes the checks CRC to OFFSET while no message is in
    progress, and whose id is not the last completed message's, starts a message (base 0,
    map clear, its id and length) and is checked against it; the message stays started even if
    the packet then fails SEQUENCE. In the cycle a message starts, "base at the start of t" is 0
    for the acknowledgements of the packets checked against it.

    **Accept.** An accepted packet's payload word k is written into the receive buffer in cycle
    t + 1 + k (a copy engine reads the packet buffer in t + k). Copies of one lane can overlap
    (see :data:`COPY_ENGINES`), so each lane has two copy engines, each with a read port on the
    lane's packet buffer and a write port on the receive buffer.

    **Acknowledge.** Each reverse lane has a queue of ``ack_queue`` packets. In cycle t the lane,
    if free, takes the head queued before t and sends it (word j in t + 1 + j x r, free again
    in t + 5r); then the ACK and NACK of cycle t are queued, each if the queue (after that head
    left) has room, else dropped and counted in ``ack_drops``. The NACK rule's "no NACK has been
    sent for this value of base" counts a NACK from the moment it is queued (or dropped for
    lack of room). A NACK for the same base again needs max(1, window / 2) packets accepted
    since the last NACK: a counter, capped there, of the packets accepted (those of lower lanes
    in the same cycle included) that restarts from 0 after each NACK. At most one NACK is
    queued a cycle.

    **Done.** In the first cycle with base = T and no copy writing, ``done`` is high with
    ``done_message``; no message is in progress from the next cycle, and base keeps the value T
    (a later packet of that message is a DUPLICATE, acknowledged with cumulative T).

    Parameters
    ----------
    config : :class:`mesh.link.LinkConfig`
    node : :class:`int`
        This node's id (0 to 255).
    peer : :class:`int`
        The sender's node id (0 to 255, not ``node``).

    Members
    -------
    data_in : :py:`In(LaneSignature()).array(lanes)`
        The forward lanes (DATA packets).
    ack_out : :py:`Out(LaneSignature()).array(lanes)`
        The reverse lanes (ACK and NACK packets).
    read : :py:`In(Signature({"addr": Out(range(buffer_words)), "data": In(32)}))`
        Synchronous read port of the receive buffer: ``addr`` in cycle t, the word in t + 1.
    busy, done : :py:`Out(1)`
        A message is in progress; a message is complete (one cycle).
    done_message : :py:`Out(12)`
        The id of the message completing (while ``done``).
    accepted, acks, nacks, ack_drops : :py:`Out(32)`
        Packets accepted; ACKs and NACKs queued; acknowledgements dropped for a full queue.
    drops : :py:`Out(ArrayLayout(32, 9))`
        Packets dropped, ``drops[c]`` for :class:`mesh.link.DropCause` c (DUPLICATE included).

    Attributes
    ----------
    buffer : :class:`Memory`
        The receive buffer (``buffer_words`` words of 32 bits; a test bench may read
        ``buffer.data[i]`` directly).
    """

    def __init__(self, config, node, peer):
        check_link_args(config, node, peer)
        self._config = config
        self.node, self.peer = node, peer
        self.buffer = Memory(shape=32, depth=config.buffer_words, init=[])
        lanes = config.lanes
        # The ports are made here, so that the component can be elaborated more than once.
        self._read_port = self.buffer.read_port()
        self._write_ports = [self.buffer.write_port() for _ in range(COPY_ENGINES * lanes)]
        super().__init__({
            "data_in": In(LaneSignature()).array(lanes),
            "ack_out": Out(LaneSignature()).array(lanes),
            "read": In(wiring.Signature({
                "addr": Out(range(config.buffer_words)), "data": In(32)})),
            "busy": Out(1),
            "done": Out(1),
            "done_message": Out(MESSAGE_BITS),
            "accepted": Out(COUNTER_BITS),
            "acks": Out(COUNTER_BITS),
            "nacks": Out(COUNTER_BITS),
            "ack_drops": Out(COUNTER_BITS),
            "drops": Out(data.ArrayLayout(COUNTER_BITS, DROP_CAUSES)),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        L, W, P, r = config.lanes, config.window, config.max_payload, config.word_cycles
        B, Q, gap = config.buffer_words, config.ack_queue, config.nack_gap
        max_words = config.max_packet_words
        log_w = (W - 1).bit_length()
        m.submodules.buffer = self.buffer
        reader = self._read_port
        m.d.comb += [reader.addr.eq(self.read.addr), self.read.data.eq(reader.data)]

        def bit(seq):
            """One-hot of seq mod W."""
            return Const(1, W) << (seq[:log_w] if log_w else 0)

        # The message.
        active = Signal()
        msg_id, msg_len = Signal(MESSAGE_BITS), Signal(32)
        msg_words = Signal(range(B + 1))
        base = Signal(SEQ_BITS)
        base_words = Signal(range(B + P + 1))           # base x P
        received = Signal(W)                            # bit s mod W: packet s received
        nack_valid, nack_base = Signal(), Signal(SEQ_BITS)
        again = max(1, W // 2)                          # accepted packets before a new NACK
        since = Signal(range(again + 1))                # accepted since the last NACK (capped)
        last_valid, last_id, last_total = Signal(), Signal(MESSAGE_BITS), Signal(SEQ_BITS)
        m.d.comb += self.busy.eq(active)

        # Per lane: framing, checks (lane by lane), acknowledgements.
        in_progress, started = active, Const(0, 1)
        cur_id, cur_len, cur_words = msg_id, msg_len, msg_words
        accepts, accept_seqs, nack_pushes = [], [], []
        running = since        # accepted since the last NACK, lanes below this one included
        causes, ends = [], []
        start_any = Const(0, 1)
        queued = []            # per lane: (ack, ack item fields, nack, nack item fields)
        copies = []            # per lane: (accepted, word address, payload words)
        for l in range(L):
            lane = self.data_in[l]
            frame = LaneFramer(m, f"rx{l}", lane, max_words)
            packet = Memory(shape=32, depth=P, init=[])
            m.submodules[f"packet{l}"] = packet
            keep = packet.write_port()
            m.d.comb += [
                keep.en.eq(lane.valid & ~lane.last & (frame.count >= HEADER_WORDS)
                           & (frame.count < HEADER_WORDS + P)),
                keep.addr.eq(frame.count - HEADER_WORDS),
                keep.data.eq(lane.data),
            ]

            seq, payload = frame.seq, frame.payload
            offset, length = frame.header[2], frame.header[3]
            words = length[2:]
            seq_words = Signal(range((1 << SEQ_BITS) * P), name=f"rx{l}_seq_words")
            rest = Signal(32, name=f"rx{l}_rest")
            m.d.comb += [seq_words.eq(seq * P), rest.eq(words - seq_words)]
            pre_checks = [
                (DropCause.CRC, frame.crc_ok),
                (DropCause.TYPE, frame.type == PacketType.DATA),
                (DropCause.DESTINATION, (frame.dst == self.node) & (frame.src == self.peer)),
                (DropCause.LENGTH, (frame.count < max_words) & (payload != 0) & (payload <= P)
                 & (frame.count == payload + HEADER_WORDS)),
                (DropCause.OFFSET, (length != 0) & (length[:2] == 0) & (words <= B)
                 & (seq_words < words) & (offset == seq_words * 4)
                 & (payload == Mux(rest > P, P, rest))),
            ]
            pre_ok = Signal(name=f"rx{l}_pre_ok")
            m.d.comb += pre_ok.eq(frame.end & Cat(ok for _, ok in pre_checks).all())

            # A packet of the message last completed, while none is in progress.
            completed = Signal(name=f"rx{l}_completed")
            starts = Signal(name=f"rx{l}_starts")
            m.d.comb += [
                completed.eq(~in_progress & last_valid & (frame.message == last_id)),
                starts.eq(pre_ok & ~in_progress & ~completed),
            ]
            in_progress = in_progress | starts
            started_now = Signal(name=f"rx{l}_started")
            m.d.comb += started_now.eq(started | starts)
            started = started_now
            start_any = start_any | starts
            lane_id, lane_len, lane_words = (Signal(MESSAGE_BITS, name=f"rx{l}_msg_id"),
                                             Signal(32, name=f"rx{l}_msg_len"),
                                             Signal(range(B + 1), name=f"rx{l}_msg_words"))
            m.d.comb += [
                lane_id.eq(Mux(starts, frame.message, cur_id)),
                lane_len.eq(Mux(starts, length, cur_len)),
                lane_words.eq(Mux(starts, words, cur_words)),
            ]
            cur_id, cur_len, cur_words = lane_id, lane_len, lane_words
            base_now = Signal(SEQ_BITS, name=f"rx{l}_base")
            m.d.comb += base_now.eq(Mux(started, 0, base))

            def seen(s, started=started, base_now=base_now):
                """Packet s is received: at the start of t (unless a message started in t) or
                by a lower lane in t."""
                hits = [ok & (other == s) for ok, other in zip(accepts, accept_seqs)]
                return (~started & (received & bit(s)).any()) | Cat(Const(0, 1), *hits).any()

            is_dup = Signal(name=f"rx{l}_duplicate")
            m.d.comb += is_dup.eq((seq < base_now) | seen(seq) | completed)
            cause = first_cause(m, f"rx{l}", pre_checks + [
                (DropCause.MESSAGE, ~in_progress | ((frame.message == cur_id)
                                                    & (length == cur_len))),
                (DropCause.SEQUENCE, seq < base_now + W),
                (DropCause.DUPLICATE, ~is_dup),
            ])
            causes.append(cause)
            ends.append(frame.end)
            ok, ack = Signal(name=f"rx{l}_accepted"), Signal(name=f"rx{l}_ack")
            m.d.comb += [ok.eq(frame.end & (cause == 0)),
                         ack.eq(frame.end & ((cause == 0) | (cause == DropCause.DUPLICATE)))]
            cumulative = Signal(SEQ_BITS, name=f"rx{l}_cumulative")
            m.d.comb += cumulative.eq(Mux(completed, last_total, base_now))
            nack = Signal(name=f"rx{l}_nack")
            if gap:
                # Counting this packet; capped at `again`, all the rule compares it with.
                count = Signal(range(again + 1), name=f"rx{l}_since")
                m.d.comb += count.eq(Mux(running + ok >= again, again, running + ok))
                sent_for_base = ~started & nack_valid & (nack_base == base_now)
                nacked_below = Cat(Const(0, 1), *nack_pushes).any()     # one NACK a cycle
                m.d.comb += nack.eq(ok & ~seen(base_now) & (seq - base_now >= gap)
                                    & ~nacked_below & (~sent_for_base | (count >= again)))
                after = Signal(range(again + 1), name=f"rx{l}_since_after")
                m.d.comb += after.eq(Mux(nack, 0, count))
                running = after
            accepts.append(ok)
            accept_seqs.append(seq)
            nack_pushes.append(nack)
            queued.append((ack, seq, cumulative, frame.message, nack, base_now, cur_id))
            copies.append((ok, seq_words, payload, packet))
        count_drops(m, self.drops, causes, ends)
        m.d.sync += self.accepted.eq(self.accepted + sum(accepts))

        # The copy engines.
        copying = []
        for l, (ok, seq_words, payload, packet) in enumerate(copies):
            lefts = []
            for e in range(COPY_ENGINES):
                name = f"copy{l}_{e}"
                left = Signal(range(P + 1), name=f"{name}_left")
                k = Signal(range(max(P, 2)), name=f"{name}_k")
                to = Signal(range(B), name=f"{name}_to")
                source = packet.read_port()
                sink = self._write_ports[COPY_ENGINES * l + e]
                mine = Signal(name=f"{name}_mine")
                # The first engine free for a copy starting in t + 1 takes it.
                m.d.comb += mine.eq(ok & (left <= 1)
                                    & Cat(Const(1, 1), *(other > 1 for other in lefts)).all())
                lefts.append(left)
                m.d.comb += [
                    source.addr.eq(Mux(mine, 0, k + 1)),
                    sink.en.eq(left != 0),
                    sink.addr.eq(to),
                    sink.data.eq(source.data),
                ]
                with m.If(mine):
                    m.d.sync += [left.eq(payload), k.eq(0), to.eq(seq_words)]
                with m.Elif(left != 0):
                    m.d.sync += [left.eq(left - 1), k.eq(k + 1), to.eq(to + 1)]
                copying.append(left != 0)

        # The acknowledgement queues and reverse lanes.
        item = data.StructLayout({"nack": 1, "seq": SEQ_BITS, "cumulative": SEQ_BITS,
                                  "message": MESSAGE_BITS})
        ack_total, nack_total, overflow = [], [], []
        for l, (ack, seq, cumulative, message, nack, nack_seq, nack_msg) in enumerate(queued):
            name = f"ackq{l}"
            slots = [Signal(item, name=f"{name}_{i}") for i in range(Q)]
            count = Signal(range(Q + 1), name=f"{name}_count")
            head = slots[0]
            pop = Signal(name=f"{name}_pop")
            header = [PacketType.ACK + head.nack
                      | Cat(Const(0, 4), Const(self.node, 8), Const(self.peer, 8), head.message),
                      head.seq, head.cumulative, 0]
            free, _ = lane_sender(m, f"rev{l}", self.ack_out[l], r, ACK_WORDS, pop, ACK_WORDS,
                                  header)
            m.d.comb += pop.eq(free & (count != 0))
            first, second = Signal(item, name=f"{name}_ack"), Signal(item, name=f"{name}_nack")
            m.d.comb += [
                first.nack.eq(0), first.seq.eq(seq), first.cumulative.eq(cumulative),
                first.message.eq(message),
                second.nack.eq(1), second.seq.eq(nack_seq), second.cumulative.eq(nack_seq),
                second.message.eq(nack_msg),
            ]
            kept = Signal(range(Q + 1), name=f"{name}_kept")
            fit1, fit2 = Signal(name=f"{name}_fit_ack"), Signal(name=f"{name}_fit_nack")
            m.d.comb += [
                kept.eq(count - pop),
                fit1.eq(ack & (kept < Q)),
                fit2.eq(nack & (kept + fit1 < Q)),
            ]
            for i in range(Q):
                with m.If(fit1 & (kept == i)):
                    m.d.sync += slots[i].eq(first)
                with m.Elif(fit2 & (kept + fit1 == i)):
                    m.d.sync += slots[i].eq(second)
                if i + 1 < Q:
                    with m.Elif(pop):
                        m.d.sync += slots[i].eq(slots[i + 1])
            m.d.sync += count.eq(kept + fit1 + fit2)
            ack_total.append(fit1)
            nack_total.append(fit2)
            overflow += [ack & ~fit1, nack & ~fit2]
        m.d.sync += [
            self.acks.eq(self.acks + sum(ack_total)),
            self.nacks.eq(self.nacks + sum(nack_total)),
            self.ack_drops.eq(self.ack_drops + sum(overflow)),
        ]

        # Advance, done and the message's registers.
        advance, finished = Signal(), Signal()
        m.d.comb += [
            advance.eq(active & (received & bit(base)).any()),
            finished.eq(active & (base_words >= msg_words) & ~Cat(*copying).any()),
            self.done.eq(finished),
            self.done_message.eq(Mux(finished, msg_id, 0)),
        ]
        marks = Signal(W)          # packets accepted in t
        m.d.comb += marks.eq(reduce(operator.or_, (Mux(ok, bit(s), 0)
                                                   for ok, s in zip(accepts, accept_seqs))))
        nacked = Cat(Const(0, 1), *nack_pushes).any()
        if gap:
            m.d.sync += since.eq(running)
        with m.If(start_any):
            m.d.sync += [
                active.eq(1), msg_id.eq(cur_id), msg_len.eq(cur_len), msg_words.eq(cur_words),
                base.eq(0), base_words.eq(0), received.eq(marks),
                nack_valid.eq(nacked), nack_base.eq(0),
            ]
        with m.Elif(active):
            m.d.sync += received.eq((received & ~Mux(advance, bit(base), 0)) | marks)
            with m.If(advance):
                m.d.sync += [base.eq(base + 1), base_words.eq(base_words + P)]
            with m.If(nacked):
                m.d.sync += [nack_valid.eq(1), nack_base.eq(base)]
            with m.If(finished):
                m.d.sync += [active.eq(0), last_valid.eq(1), last_id.eq(msg_id),
                             last_total.eq(base)]
        return m

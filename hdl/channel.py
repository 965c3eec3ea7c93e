"""A fault-free lane channel in RTL: :class:`emulator.channel.Channel` with no faults
(docs/ARCHITECTURE.md section 12, "Channels and faults"), cycle for cycle.

It is not a delay line: the channel stores and forwards. A packet (the words up to one with
``last``) whose last word enters in cycle t is ready in t + ``latency``; the output sends one
packet at a time, word j of a packet started in cycle s in s + j x r (r = 32 / ``lane_width``),
and the next packet may start from s + N x r (N words), the oldest ready packet first. A delay
line of ``latency`` would send word j of a packet of N words (N - 1) x r cycles earlier.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mesh.link import LinkConfig

from .packet_tx import LaneSignature

__all__ = ["LaneChannel", "channel_depth"]


def channel_depth(config):
    """Words a channel of ``config`` may hold at once, rounded up to a power of two.

    The ends send at most one word every r cycles. A word waits at most ``latency`` after its
    packet's last word entered, plus (N - 1) x r until its turn in that packet, plus the
    backlog of a packet that follows a longer one, at most ``max_packet_words`` x r: so at
    most latency / r + 2 x ``max_packet_words`` words are in the channel at once."""
    if not isinstance(config, LinkConfig):
        raise TypeError(f"config must be a mesh.link.LinkConfig, not {config!r}")
    words = config.latency // config.word_cycles + 2 * config.max_packet_words + 2
    return 1 << (words - 1).bit_length()


class LaneChannel(wiring.Component):
    """One direction of one lane without faults, store and forward, cycle-exact to
    :class:`emulator.channel.Channel` with no faults (and no ``dead_at``).

    **Contract.** Words entering on ``input`` with ``valid`` high are kept; a packet is the words
    up to and including one with ``last``. A packet whose last word enters in cycle t is ready
    in t + ``latency``. When the output is idle and its next slot has come (from cycle
    s + N x r after the previous packet of N words started in s; at once after reset), the
    oldest ready packet starts: its word j is on ``output`` in s + j x r (``valid``, ``data``,
    ``last`` on its last word; ``data`` 0 while ``valid`` is low). The output never depends on
    the same cycle's input. The ends must send at most one word every r cycles, as
    ``hdl.PacketTx`` and ``hdl.PacketRx`` do; then the :func:`channel_depth` words of storage
    never overflow. ``overflow`` (sticky) would report a word or packet that found its buffer
    full (and was not kept).

    Implementation: a word memory (data and ``last``) and a memory of the entry cycles of the
    packets' last words, both rings of :func:`channel_depth` entries; the age of the oldest
    packet against a free-running cycle counter wide enough for the longest wait.

    Parameters
    ----------
    config : :class:`mesh.link.LinkConfig`
        Gives ``latency`` and the lane rate (``word_cycles``).

    Members
    -------
    input : :py:`In(LaneSignature())`
        The words entering (from a lane's sending end).
    output : :py:`Out(LaneSignature())`
        The words delivered (to the lane's receiving end).
    overflow : :py:`Out(1)`
    """

    def __init__(self, config):
        self._depth = channel_depth(config)
        self._config = config
        r = config.word_cycles
        self._stamp_bits = (config.latency + 4 * config.max_packet_words * r).bit_length() + 1
        self.words = Memory(shape=data.StructLayout({"data": 32, "last": 1}), depth=self._depth,
                            init=[])
        self.stamps = Memory(shape=self._stamp_bits, depth=self._depth, init=[])
        self._word_write = self.words.write_port()
        self._word_read = self.words.read_port(domain="comb")
        self._stamp_write = self.stamps.write_port()
        self._stamp_read = self.stamps.read_port(domain="comb")
        super().__init__({
            "input": In(LaneSignature()),
            "output": Out(LaneSignature()),
            "overflow": Out(1),
        })

    @property
    def config(self):
        return self._config

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        config, depth = self._config, self._depth
        r, latency = config.word_cycles, config.latency
        m.submodules.words, m.submodules.stamps = self.words, self.stamps
        bits = max(1, (depth - 1).bit_length())
        now = Signal(self._stamp_bits)
        m.d.sync += now.eq(now + 1)

        # Word and packet rings.
        w_head, w_tail = Signal(bits), Signal(bits)
        w_count = Signal(range(depth + 1))
        p_head, p_tail = Signal(bits), Signal(bits)
        p_count = Signal(range(depth + 1))
        incoming = self.input
        push = Signal()
        push_packet = Signal()
        m.d.comb += [
            push.eq(incoming.valid & (w_count != depth)),
            push_packet.eq(push & incoming.last & (p_count != depth)),
            self._word_write.en.eq(push),
            self._word_write.addr.eq(w_tail),
            self._word_write.data.data.eq(incoming.data),
            self._word_write.data.last.eq(incoming.last),
            self._stamp_write.en.eq(push_packet),
            self._stamp_write.addr.eq(p_tail),
            self._stamp_write.data.eq(now),
            self._word_read.addr.eq(w_head),
            self._stamp_read.addr.eq(p_head),
        ]
        with m.If(incoming.valid & ((w_count == depth)
                                    | (incoming.last & (p_count == depth)))):
            m.d.sync += self.overflow.eq(1)

        # The output: a slot every r cycles; a packet starts when idle and the oldest is ready.
        sending = Signal()
        hold = Signal(range(max(r, 2)))
        age = Signal(self._stamp_bits)
        ready = Signal()
        m.d.comb += [
            age.eq(now - self._stamp_read.data),
            ready.eq((p_count != 0) & (age >= latency)),
        ]
        send = Signal()
        word = self._word_read.data
        m.d.comb += send.eq((hold == 0) & (sending | ready))
        m.d.comb += [
            self.output.valid.eq(send),
            self.output.data.eq(word.data & send.replicate(32)),
            self.output.last.eq(send & word.last),
        ]
        pop_packet = Signal()
        m.d.comb += pop_packet.eq(send & word.last)
        with m.If(send):
            m.d.sync += [hold.eq(r - 1), sending.eq(~word.last)]
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)

        m.d.sync += [
            w_tail.eq(w_tail + push), w_head.eq(w_head + send),
            w_count.eq(w_count + push - send),
            p_tail.eq(p_tail + push_packet), p_head.eq(p_head + pop_packet),
            p_count.eq(p_count + push_packet - pop_packet),
        ]
        return m

"""The packet link's RTL (hdl/crc32.py, hdl/packet_tx.py, hdl/packet_rx.py) against
docs/ARCHITECTURE.md section 12: the CRC against zlib; the sender alone and the receiver alone
against hand-built packets (mesh.link.build_packet) at the cycles the specification gives; the
pair through seeded channels (emulator.channel), messages delivered byte for byte, with faults;
Verilator's lint; and the pair in lockstep with emulator.link, word for word and cycle for cycle.

Cycle 0 is the first cycle of a test bench job (right after the simulator's reset). A packet
fed to a lane of r cycles per word "at cycle c" has its word j on the lane in cycle c + j x r.
One simulator serves each design; every case resets it and runs a new job.
"""

import random
import zlib

import pytest
from amaranth.hdl import Fragment

import hdl
from emulator.channel import FaultConfig
from emulator.link import LinkEmulator, RxModel
from hdl.crc32 import CRC32_INIT, Crc32Word, crc32_masks, crc32_step
from hdl.packet_rx import PacketRx
from hdl.packet_tx import PacketTx
from mesh.link import (DropCause, Header, LinkConfig, PacketType, TxError, ack_packet,
                       build_packet, crc32)

from link_harness import LinkHarness, scripted
from sim_bench import RTL_TEST_MARKS, Bench, kept
from verilator_lint import AMARANTH_WARNINGS, lint_warnings

pytestmark = RTL_TEST_MARKS

DATA, ACK, NACK = PacketType.DATA, PacketType.ACK, PacketType.NACK
TX_NODE, RX_NODE = 1, 2


def words_of(seed, count):
    rng = random.Random(seed)
    return [rng.getrandbits(32) for _ in range(count)]


def data_packet(seq, payload, length, message=7, src=TX_NODE, dst=RX_NODE, offset=None,
                count=None):
    """A DATA packet of a message of ``length`` bytes (payload words as given; ``offset``
    defaults to 4 x P x seq with P = 4, ``count`` (the payload field) to the payload's length)."""
    header = Header(type=DATA, src=src, dst=dst, message=message, seq=seq,
                    payload=len(payload) if count is None else count,
                    offset=16 * seq if offset is None else offset, length=length)
    return build_packet(header, payload)


def schedule(packets, r=1):
    """{cycle: {lane: (word, last)}} for ``packets``: (lane, first cycle, words)."""
    feeds = {}
    for lane, first, words in packets:
        for j, word in enumerate(words):
            slot = feeds.setdefault(first + j * r, {})
            assert lane not in slot, f"two words on lane {lane} in cycle {first + j * r}"
            slot[lane] = (word, int(j == len(words) - 1))
    return feeds


def packets_of(words_out):
    """Group (cycle, lane, word, last) words into packets: [(lane, first cycle, words)] by first
    cycle, then lane."""
    partial, packets = {}, []
    for t, lane, word, last in words_out:
        first, words = partial.setdefault(lane, (t, []))
        words.append(word)
        if last:
            packets.append((lane, first, words))
            del partial[lane]
    assert not partial, f"unfinished packets: {partial}"
    return sorted(packets, key=lambda packet: (packet[1], packet[0]))


async def drive(ctx, ins, outs, feeds, cycles, each=None):
    """Run ``cycles`` cycles: put ``feeds`` on the lanes ``ins``, record the words of the lanes
    ``outs`` as (cycle, lane, word, last); ``each(ctx, t)`` is called every cycle before the
    clock edge."""
    seen = []
    for t in range(cycles):
        for lane, member in enumerate(ins):
            word, last = feeds.get(t, {}).get(lane, (None, 0))
            ctx.set(member.valid, word is not None)
            ctx.set(member.data, word or 0)
            ctx.set(member.last, last)
        for lane, member in enumerate(outs):
            if ctx.get(member.valid):
                seen.append((t, lane, ctx.get(member.data), ctx.get(member.last)))
            else:
                assert ctx.get(member.data) == 0 and not ctx.get(member.last)
        if each is not None:
            each(ctx, t)
        await ctx.tick()
    return seen


# The CRC ---------------------------------------------------------------------------------------

def test_crc_step_is_zlib():
    rng = random.Random(1)
    for _ in range(200):
        words = [rng.getrandbits(32) for _ in range(rng.randrange(12))]
        register = CRC32_INIT
        for word in words:
            register = crc32_step(register, word)
        assert register ^ 0xFFFFFFFF == crc32(words) == zlib.crc32(
            b"".join(w.to_bytes(4, "little") for w in words))
    assert len(crc32_masks()) == 32 and all(0 < mask < 1 << 64 for mask in crc32_masks())


def test_crc_word_rtl_against_zlib():
    dut = Crc32Word()
    rng = random.Random(2)
    sequences = [[rng.getrandbits(32) for _ in range(rng.randrange(1, 10))] for _ in range(40)]
    sequences += [[0], [0xFFFFFFFF] * 3, [1 << b for b in range(32)]]

    async def job(ctx):
        for words in sequences:
            register = CRC32_INIT
            for word in words:
                ctx.set(dut.crc, register)
                ctx.set(dut.data, word)
                register = ctx.get(dut.next)
                assert register == crc32_step(ctx.get(dut.crc), word)
            assert register ^ 0xFFFFFFFF == zlib.crc32(
                b"".join(w.to_bytes(4, "little") for w in words))
    Bench(dut, clock=False).execute(job)


# Construction ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [PacketTx, PacketRx])
def test_arguments_are_checked(cls):
    config = LinkConfig(lanes=1, buffer_words=16, source_words=16)
    with pytest.raises(TypeError, match=r"config must be a mesh.link.LinkConfig, not None"):
        cls(None, 1, 2)
    with pytest.raises(TypeError, match=r"config must be a mesh.link.LinkConfig"):
        cls({"lanes": 1}, 1, 2)
    with pytest.raises(ValueError, match=r"node must be an integer from 0 to 255, not 256"):
        cls(config, 256, 2)
    with pytest.raises(ValueError, match=r"node must be an integer from 0 to 255, not -1"):
        cls(config, -1, 2)
    with pytest.raises(ValueError, match=r"peer must be an integer from 0 to 255, not True"):
        cls(config, 1, True)
    with pytest.raises(ValueError, match=r"peer must be an integer from 0 to 255, not 2.0"):
        cls(config, 1, 2.0)
    with pytest.raises(ValueError, match=r"node and peer must differ, both are 3"):
        cls(config, 3, 3)
    dut = cls(config, 0, 255)
    assert dut.config is config and (dut.node, dut.peer) == (0, 255)


def test_members():
    config = LinkConfig(lanes=3, buffer_words=32, source_words=64)
    tx, rx = PacketTx(config, 1, 2), PacketRx(config, 2, 1)
    assert len(tx.data_out) == len(tx.ack_in) == len(rx.data_in) == len(rx.ack_out) == 3
    assert tx.source.depth == 64 and rx.buffer.depth == 32
    assert len(tx.drops) == len(rx.drops) == len(DropCause) + 1
    assert len(tx.lane_dead) == 3 and len(tx.error) == 2
    for dut in (tx, rx):                 # elaborated twice (a simulation, then Verilog)
        Fragment.get(dut, None)
        Fragment.get(dut, None)


# The sender alone ------------------------------------------------------------------------------

TXC = LinkConfig(lanes=2, lane_width=32, latency=4, max_payload=4, window=4, timeout=30,
                 retry_limit=2, lane_dead_after=3, nack_gap=2, ack_queue=2, buffer_words=16,
                 source_words=64)


def tx_bench(config=TXC):
    return kept(("tx", config), lambda: Bench(PacketTx(config, TX_NODE, RX_NODE)))


def run_tx(words, feeds, cycles, *, config=TXC, src=5, message=0x9A, length=None):
    """Load ``words`` at ``src``, offer the message in cycle 0, feed ``feeds`` on the reverse
    lanes. Returns (packets out as (lane, first cycle, words), {signal: cycles high}, final
    state)."""
    b = tx_bench(config)
    tx = b.dut
    length = 4 * len(words) if length is None else length

    async def job(ctx):
        for i, word in enumerate(words):
            ctx.set(tx.source.data[src + i], word)
        ctx.set(tx.start.valid, 1)
        ctx.set(tx.start.src, src)
        ctx.set(tx.start.length, length)
        ctx.set(tx.start.dst, RX_NODE)
        ctx.set(tx.start.message, message)
        events = {"done": [], "busy": [], "ready": []}

        def each(ctx, t):
            if t == 0:
                assert ctx.get(tx.start.ready)
            elif t == 1:
                ctx.set(tx.start.valid, 0)
            for name, signal in (("done", tx.done), ("busy", tx.busy),
                                 ("ready", tx.start.ready)):
                if ctx.get(signal):
                    events[name].append(t)
        seen = await drive(ctx, tx.ack_in, tx.data_out, feeds, cycles, each)
        final = {name: ctx.get(getattr(tx, name))
                 for name in ("error", "error_seq", "lane_dead", "sent", "retransmits",
                              "timeouts", "acks", "nacks")}
        final["drops"] = {c: n for c in DropCause if (n := ctx.get(tx.drops[c]))}
        return packets_of(seen), events, final
    return b.execute(job)


def tx_packet(seq, payload, length, message=0x9A):
    return build_packet(Header(type=DATA, src=TX_NODE, dst=RX_NODE, message=message, seq=seq,
                               payload=len(payload), offset=16 * seq, length=length), payload)


def from_rx(kind, seq, cumulative, message=0x9A, src=RX_NODE, dst=TX_NODE):
    return ack_packet(kind, src, dst, message, seq, cumulative)


def test_tx_one_packet_words_and_timeouts():
    """A 3-word message on lane 0: taken in cycle 0, chosen in 1, word j in 2 + j. Never
    acknowledged: deadline 1 + 8 + 30 = 39, chosen again in 40 (retry 1), deadline 78, again in
    79 (retry 2), deadline 117: retry limit 2 reached, error RETRY_LIMIT from 118. Lane 0 has
    timed out 3 times in a row: dead; lane 1 never had a packet."""
    words = words_of(1, 3)
    packets, events, final = run_tx(words, {}, 125)
    expected = tx_packet(0, words, 12)
    assert packets == [(0, 2, expected), (0, 41, expected), (0, 80, expected)]
    assert events["busy"] == list(range(1, 118)) and events["done"] == []
    assert events["ready"] == [0]
    assert final == {"error": TxError.RETRY_LIMIT, "error_seq": 0, "lane_dead": 0b01, "sent": 3,
                     "retransmits": 2, "timeouts": 3, "acks": 0, "nacks": 0, "drops": {}}


def test_tx_one_packet_acknowledged():
    """The ACK's last word arrives in 24: entry 0 ACKED at the end of 24, released in 25, base
    = T in 26: done; idle (ready) from 27."""
    words = words_of(2, 3)
    feeds = schedule([(1, 20, from_rx(ACK, 0, 0))])
    packets, events, final = run_tx(words, feeds, 80)
    assert packets == [(0, 2, tx_packet(0, words, 12))]
    assert events["done"] == [26] and events["busy"] == list(range(1, 27))
    assert events["ready"] == [0] + list(range(27, 80))
    assert final["error"] == TxError.NONE and final["acks"] == 1 and final["timeouts"] == 0


@pytest.mark.parametrize("lane_width", [8, 16])
def test_tx_one_packet_slow_lane(lane_width):
    """At r = 32 / lane_width cycles per word, word j leaves in 2 + j x r; an ACK whose last
    word arrives in c gives done in c + 2."""
    config = LinkConfig(lanes=1, lane_width=lane_width, latency=4, max_payload=4, window=4,
                        timeout=100, nack_gap=2, buffer_words=16, source_words=16)
    r = config.word_cycles
    words = words_of(3, 4)
    feeds = schedule([(0, 60, from_rx(ACK, 0, 1))], r)
    packets, events, final = run_tx(words, feeds, 64 + 5 * r, config=config, src=2)
    assert packets == [(0, 2, tx_packet(0, words, 16))]
    assert events["done"] == [60 + 4 * r + 2]


def test_tx_window_nack_and_release():
    """22 words: T = 6 packets (5 x 4 words and 2), window 4. In 1 lanes 0 and 1 take packets
    0 and 1 (9 words, free in 10), in 10 packets 2 and 3; then the window is full. A NACK for 0
    arrives in 15: RETX; lane 0, free in 19, sends it again. An ACK for 1 (cumulative 0) in 25,
    an ACK for 3 with cumulative 3 in 30: entries 0..3 ACKED; released one per cycle in 31..34;
    from 32 (base 1) packet 4 on lane 0 (free since 28), in 33 (base 2) packet 5 on lane 1.
    ACKs for 4 and 5 (cumulative 6) in 55 and 56: released in 56 (4) and 57 (5); done in 58."""
    words = words_of(4, 22)
    feeds = schedule([(1, 11, from_rx(NACK, 0, 0)), (0, 21, from_rx(ACK, 1, 0)),
                      (1, 26, from_rx(ACK, 3, 3)), (0, 51, from_rx(ACK, 4, 4)),
                      (1, 52, from_rx(ACK, 5, 6))])
    packets, events, final = run_tx(words, feeds, 70)
    p = [tx_packet(s, words[4 * s:4 * s + 4], 88) for s in range(6)]
    assert packets == [(0, 2, p[0]), (1, 2, p[1]), (0, 11, p[2]), (1, 11, p[3]),
                       (0, 20, p[0]), (0, 33, p[4]), (1, 34, p[5])]
    assert events["done"] == [58]
    assert final == {"error": 0, "error_seq": 0, "lane_dead": 0, "sent": 7, "retransmits": 1,
                     "timeouts": 0, "acks": 4, "nacks": 1, "drops": {}}


def test_tx_drops_bad_acknowledgements():
    """Each malformed acknowledgement is dropped with its cause; the good one completes the
    message."""
    words = words_of(5, 2)
    good = from_rx(ACK, 0, 0)
    bad_crc = good[:-1] + [good[-1] ^ 4]
    wrong_type = build_packet(Header(type=DATA, src=RX_NODE, dst=TX_NODE, message=0x9A, seq=0,
                                     payload=0, offset=0, length=0))
    no_type = build_packet(Header(type=15, src=RX_NODE, dst=TX_NODE, message=0x9A, seq=0,
                                  payload=0, offset=0, length=0))
    longer = build_packet(Header(type=ACK, src=RX_NODE, dst=TX_NODE, message=0x9A, seq=0,
                                 payload=1, offset=0, length=0), [0])
    feeds = schedule([
        (0, 10, bad_crc), (1, 10, good[:3]),                    # CRC: a bad word, 3 words
        (0, 16, wrong_type), (1, 16, no_type),                  # TYPE: DATA, 15
        (0, 22, from_rx(ACK, 0, 0, dst=3)), (1, 22, from_rx(NACK, 0, 0, src=5)),  # DESTINATION
        (0, 28, longer), (1, 28, from_rx(ACK, 0, 0, message=0x9B)),  # LENGTH, MESSAGE
        (0, 34, from_rx(ACK, 1, 1)),                            # SEQUENCE: 1 >= next
        (1, 40, good),
    ])
    packets, events, final = run_tx(words, feeds, 50)
    assert events["done"] == [46]
    assert final["drops"] == {DropCause.CRC: 2, DropCause.TYPE: 2, DropCause.DESTINATION: 2,
                              DropCause.LENGTH: 1, DropCause.MESSAGE: 1, DropCause.SEQUENCE: 1}
    assert final["acks"] == 1 and final["nacks"] == 0


@pytest.mark.parametrize("src, length", [(0, 0), (0, 6), (60, 20), (63, 8)])
def test_tx_bad_message(src, length):
    """A length of 0, not a multiple of 4, or past the source memory: error MESSAGE from
    cycle 1, nothing sent, never ready again."""
    packets, events, final = run_tx([], {}, 10, src=src, length=length)
    assert packets == [] and events["busy"] == [] and events["ready"] == [0]
    assert final["error"] == TxError.MESSAGE and final["sent"] == 0


def test_tx_message_at_the_end_of_the_source_memory():
    words = words_of(6, 4)
    feeds = schedule([(0, 20, from_rx(ACK, 0, 1))])
    packets, events, final = run_tx(words, feeds, 30, src=60)
    assert packets == [(0, 2, tx_packet(0, words, 16))] and events["done"] == [26]


# The receiver alone ----------------------------------------------------------------------------

RXC = LinkConfig(lanes=2, lane_width=32, latency=4, max_payload=4, window=4, nack_gap=2,
                 ack_queue=2, buffer_words=32, source_words=16)


def run_rx(feeds, cycles, watch_words=()):
    """Feed ``feeds`` to the receiver (node 2, peer 1). Returns (acknowledgements out as (lane,
    first cycle, words), done cycles with message ids, final counters, the receive buffer, and
    for each word index in ``watch_words`` the first cycle it read nonzero)."""
    b = kept(("rx", RXC), lambda: Bench(PacketRx(RXC, RX_NODE, TX_NODE)))
    rx = b.dut

    async def job(ctx):
        done, written = [], {}

        def each(ctx, t):
            if ctx.get(rx.done):
                done.append((t, ctx.get(rx.done_message)))
            for i in watch_words:
                if i not in written and ctx.get(rx.buffer.data[i]):
                    written[i] = t
        seen = await drive(ctx, rx.data_in, rx.ack_out, feeds, cycles, each)
        final = {name: ctx.get(getattr(rx, name))
                 for name in ("accepted", "acks", "nacks", "ack_drops", "busy")}
        final["drops"] = {c: n for c in DropCause if (n := ctx.get(rx.drops[c]))}
        buffer = [ctx.get(rx.buffer.data[i]) for i in range(RXC.buffer_words)]
        return packets_of(seen), done, final, buffer, written
    return b.execute(job)


def to_tx(kind, seq, cumulative, message=7):
    return ack_packet(kind, RX_NODE, TX_NODE, message, seq, cumulative)


def test_rx_message_out_of_order_with_duplicates():
    """Message 7 of 40 bytes: T = 3 packets (4, 4, 2 words).

    Packet 2 on lane 1, last word in 9: starts the message, accepted; ACK(2, cumulative 0)
    and, base 0 missing with 2 - 0 >= nack_gap, NACK(0, 0) on reverse lane 1: sent from 10
    (words 11..15) and 15 (words 16..20); its payload lands in words 8, 9 in cycles 10, 11.
    Packet 0 on lane 0, last word in 13: ACK(0, 0) words 15..19; payload in 14..17; base 1 at
    the end of 14. Its duplicate on lane 1 (last word in 29): DUPLICATE, ACK(0, 1) words
    31..35. Packet 1 on lane 0 (last word in 30): ACK(1, 1) words 32..36; copied in 31..34;
    base 2 (end of 31), 3 (end of 32); done in 35, the first cycle with no copy. Then packet 2
    again (last word in 46): a completed message's duplicate, ACK(2, cumulative 3) words
    48..52."""
    words = words_of(7, 10)
    p = [data_packet(s, words[4 * s:4 * s + 4], 40) for s in range(3)]
    feeds = schedule([(1, 3, p[2]), (0, 5, p[0]), (1, 21, p[0]), (0, 22, p[1]), (1, 40, p[2])])
    acks, done, final, buffer, written = run_rx(feeds, 60, watch_words=range(10))
    assert acks == [(1, 11, to_tx(ACK, 2, 0)), (0, 15, to_tx(ACK, 0, 0)),
                    (1, 16, to_tx(NACK, 0, 0)), (1, 31, to_tx(ACK, 0, 1)),
                    (0, 32, to_tx(ACK, 1, 1)), (1, 48, to_tx(ACK, 2, 3))]
    assert done == [(35, 7)]
    assert buffer[:10] == words and buffer[10:] == [0] * 22
    # Word k of a packet accepted in t is written in t + 1 + k: readable from t + 2 + k.
    assert written == {0: 15, 1: 16, 2: 17, 3: 18, 4: 32, 5: 33, 6: 34, 7: 35, 8: 11, 9: 12}
    assert final == {"accepted": 3, "acks": 5, "nacks": 1, "ack_drops": 0, "busy": 0,
                     "drops": {DropCause.DUPLICATE: 2}}


def test_rx_drops_malformed_packets():
    """Packets failing each check, in the order of the checks, while no message is in
    progress (none of them starts one), then while message 8 (T = 8) is in progress: each
    dropped with its cause and not acknowledged but the DUPLICATE."""
    words = words_of(8, 32)
    good = data_packet(0, words[:4], 128, message=8)
    bad_crc = list(good)
    bad_crc[5] ^= 1 << 7
    before = [
        bad_crc,                                                        # CRC
        good[:4],                                                       # CRC: 4 words
        build_packet(Header(ACK, TX_NODE, RX_NODE, 8, 0, 0, 0, 0)),     # TYPE
        data_packet(0, words[:4], 128, message=8, dst=3),               # DESTINATION
        data_packet(0, words[:4], 128, message=8, src=4),               # DESTINATION (source)
        data_packet(0, words[:4], 128, message=8, count=3),             # LENGTH: 3 vs 4 framed
        data_packet(0, words[:5], 128, message=8),                      # LENGTH: above P
        data_packet(0, [], 128, message=8),                             # LENGTH: payload 0
        data_packet(0, words[:4], 132, message=8),                      # OFFSET: above buffer
        data_packet(0, words[:4], 0, message=8),                        # OFFSET: length 0
        data_packet(0, words[:4], 126, message=8),                      # OFFSET: not whole words
        data_packet(0, words[:4], 128, message=8, offset=4),            # OFFSET: offset
        data_packet(8, words[:4], 128, message=8),                      # OFFSET: s >= T
        data_packet(1, words[:3], 128, message=8),                      # OFFSET: payload
    ]
    during = [
        data_packet(1, words[4:8], 124, message=8),                     # MESSAGE: length
        data_packet(1, words[4:8], 128, message=9),                     # MESSAGE: id
        data_packet(5, words[20:24], 128, message=8),                   # SEQUENCE: 5 >= 1 + 4
        good,                                                           # DUPLICATE
    ]
    packets, t = [], 2
    for k, packet in enumerate(before + [good] + during):
        packets.append((k % 2, t, packet))
        t += 5 + len(packet)
    acks, done, final, buffer, _ = run_rx(schedule(packets), t + 10)
    assert final["drops"] == {DropCause.CRC: 2, DropCause.TYPE: 1, DropCause.DESTINATION: 2,
                              DropCause.LENGTH: 3, DropCause.OFFSET: 6, DropCause.MESSAGE: 2,
                              DropCause.SEQUENCE: 1, DropCause.DUPLICATE: 1}
    assert [words for _, _, words in acks] == [to_tx(ACK, 0, 0, 8), to_tx(ACK, 0, 1, 8)]
    assert final["accepted"] == 1 and final["busy"] == 1 and done == []
    assert buffer[:4] == words[:4] and buffer[4:] == [0] * 28


def test_rx_nacks_again_after_half_a_window():
    """Six lanes, window 8 (a NACK again after 4 accepted packets), nack_gap 1, a message of 10
    packets (P = 4), on the RTL and on emulator.link.RxModel fed the same words: the same words
    back, cycle for cycle. Packets 1 .. 6 complete in 10 on lanes 0 .. 5: lane 0's starts the
    message and queues NACK(0) (reverse lane 0: its ACK in 12..16, the NACK in 17..21); the
    count restarts and lanes 1 .. 5 bring it to 4 (capped), but a cycle has one NACK at most.
    Packet 7 on lane 1, complete in 28, is the fourth since: NACK(0) again (reverse lane 1: ACK
    in 30..34, NACK in 35..39)."""
    config = LinkConfig(lanes=6, lane_width=32, latency=4, max_payload=4, window=8,
                        nack_gap=1, ack_queue=2, buffer_words=64, source_words=16)
    b = kept(("rx", config), lambda: Bench(PacketRx(config, RX_NODE, TX_NODE)))
    rx = b.dut
    words = words_of(40, 40)
    p = [data_packet(s, words[4 * s:4 * s + 4], 160) for s in range(10)]
    feeds = schedule([(l, 2, p[l + 1]) for l in range(6)] + [(1, 20, p[7])])
    cycles = 50

    async def job(ctx):
        seen = await drive(ctx, rx.data_in, rx.ack_out, feeds, cycles)
        return packets_of(seen), ctx.get(rx.nacks), ctx.get(rx.accepted)
    acks, nacks, accepted = b.execute(job)

    model, out = RxModel(config, RX_NODE, TX_NODE), []
    for t in range(cycles):
        slot = feeds.get(t, {})
        words_in = [(1, *slot[l]) if l in slot else (0, 0, 0) for l in range(6)]
        out += [(t, l, w, last) for l, (v, w, last) in enumerate(model.step(words_in)) if v]
    assert acks == packets_of(out)
    assert (nacks, accepted) == (model.nacks, model.accepted) == (2, 7)
    assert model.nack_repeats == 1
    assert [(lane, first) for lane, first, words in acks if words[0] & 0xF == NACK] == [
        (0, 17), (1, 35)]
    assert (1, 30, to_tx(ACK, 7, 0)) in acks and (1, 35, to_tx(NACK, 0, 0)) in acks


# The pair through channels ---------------------------------------------------------------------

def pair_config(lanes, lane_width, **kwargs):
    base = dict(lanes=lanes, lane_width=lane_width, latency=6, max_payload=8, window=8,
                nack_gap=4, ack_queue=2, buffer_words=64, source_words=64)
    base.update(kwargs)
    return LinkConfig(**base)


def harness(config):
    return kept(("pair", config), lambda: LinkHarness(config, TX_NODE, RX_NODE))


def check_delivered(run, words, message=1):
    packets = -(-len(words) // 8)
    assert run.error == TxError.NONE
    assert len(run.tx_done) == 1 and run.rx_done_messages == [message]
    assert run.received == words
    assert run.rx["accepted"] == packets          # every packet accepted exactly once


@pytest.mark.parametrize("lanes, lane_width", [(1, 32), (2, 16), (4, 8), (4, 32)])
def test_pair_delivers(lanes, lane_width):
    config = pair_config(lanes, lane_width)
    words = words_of(lanes * lane_width, 37)
    run = harness(config).run(words, src=9, message=0x123)
    check_delivered(run, words, 0x123)
    assert run.tx["retransmits"] == 0 and run.rx["drops"] == {} and run.tx["drops"] == {}
    assert run.tx["sent"] == run.tx["acks"] == 5


@pytest.mark.parametrize("lanes, lane_width, seed", [(4, 32, 1), (4, 32, 2), (2, 16, 3),
                                                     (4, 8, 4)])
def test_pair_delivers_through_faults(lanes, lane_width, seed):
    config = pair_config(lanes, lane_width)
    words = words_of(seed, 64)
    faults = FaultConfig(drop=0.1, flip=0.05, duplicate=0.1, reorder=0.1)
    run = harness(config).run(words, faults, seed)
    check_delivered(run, words)
    assert run.tx["retransmits"] > 0


def test_pair_survives_a_dying_lane():
    """Lane 1 dies in cycle 30 (both directions): after lane_dead_after = 2 timeouts in a row
    it is dead and never chosen again; the other lanes deliver the message."""
    config = pair_config(4, 32, lane_dead_after=2)
    words = words_of(9, 64)
    faults = [None, FaultConfig(dead_at=30), None, FaultConfig(drop=0.2)]
    run = harness(config).run(words, faults, 5)
    check_delivered(run, words)
    assert run.lane_dead == 0b0010


def test_pair_all_lanes_dead():
    config = pair_config(2, 32)
    run = harness(config).run(words_of(10, 40), FaultConfig(dead_at=0), 0)
    assert run.error == TxError.LANES_DEAD and run.lane_dead == 0b11
    assert run.tx_done == [] and run.rx_done == [] and run.rx["accepted"] == 0


def test_pair_sends_two_messages():
    """The second message from the same simulator run after a reset, with another id: both
    arrive whole."""
    config = pair_config(2, 16)
    for k in range(2):
        words = words_of(20 + k, 23 + 9 * k)
        check_delivered(harness(config).run(words, message=5 + k), words, 5 + k)


# Lockstep with the emulator ------------------------------------------------------------------

def lockstep(config, messages, faults, seed, channels=None):
    """Run ``messages`` (words, src, id) on the RTL (:class:`LinkHarness`) and on
    ``emulator.link.LinkEmulator`` with the same seeded channels (or ``channels()``, a fresh
    (forward, reverse) pair for each); every word entering a channel (both directions, every
    lane, its cycle), the done cycles, the errors, the counters and the message received must
    be equal. Returns the RTL's run and the emulator."""
    run = harness(config).run_messages(messages, faults, seed, trace=True,
                                       channels=channels and channels())
    emulator = LinkEmulator(config, faults, seed, TX_NODE, RX_NODE, trace=True,
                            channels=channels and channels())
    results = []
    for words, src, message in messages:
        results.append(emulator.send(words, src=src, message=message))
        if results[-1].error:
            break
    mine = sorted((t, lane, direction, word, last) for t, direction, lane, word, last in run.trace)
    theirs = sorted(emulator.trace)
    for k, (a, b) in enumerate(zip(mine, theirs)):
        assert a == b, f"word {k}: RTL {a}, emulator {b}"
    assert len(mine) == len(theirs)
    last = results[-1]
    assert run.tx_done == [r.done_cycle for r in results if r.done_cycle is not None]
    assert run.rx_done == [r.rx_done_cycle for r in results if r.rx_done_cycle is not None]
    assert run.cycles == last.cycles
    assert (run.error, run.error_seq) == (last.error, emulator.tx.error_seq)
    assert run.lane_dead == sum(1 << lane for lane in last.lanes_dead)
    assert run.tx == {"sent": last.sent, "retransmits": last.retransmits,
                      "timeouts": last.timeouts, "acks": last.acks_received,
                      "nacks": last.nacks_received, "drops": last.tx_drops}
    assert run.rx == {"accepted": last.accepted, "acks": last.acks_sent,
                      "nacks": last.nacks_sent, "ack_drops": last.ack_drops,
                      "drops": last.rx_drops}
    if not last.error:
        assert run.received == list(last.words) == messages[-1][0]
    return run, emulator


FAULTS = FaultConfig(drop=0.1, flip=0.05, duplicate=0.15, reorder=0.15)


@pytest.mark.parametrize("lanes, lane_width, seed", [(4, 32, 11), (2, 16, 12), (4, 8, 13)])
def test_lockstep_two_messages_through_faults(lanes, lane_width, seed):
    """Two messages back to back (the second offered in the cycle after the first ended), so
    late packets of the first meet the receiver as a completed message's duplicates."""
    messages = [(words_of(seed, 34), 0, 0x7FF), (words_of(seed + 1, 30), 34, 0)]
    run, _ = lockstep(pair_config(lanes, lane_width), messages, FAULTS, seed)
    assert run.tx["retransmits"] and len(run.rx_done) == 2


def test_lockstep_dying_lanes_and_full_queues():
    """Lane 1 dies, lane 2 loses a third of its packets; NACKs on every gap, ACK queues of
    one: a NACK never fits behind its ACK, so each is dropped (and counted)."""
    config = pair_config(3, 32, nack_gap=1, ack_queue=1, lane_dead_after=2)
    faults = [FaultConfig(duplicate=0.3, reorder=0.3), FaultConfig(dead_at=40),
              FaultConfig(drop=0.3, flip=0.1)]
    run, _ = lockstep(config, [(words_of(14, 64), 0, 9)], faults, 14)
    assert run.lane_dead == 0b010 and run.rx["ack_drops"] and run.rx["nacks"] == 0


def test_lockstep_overlapping_copies():
    """One lane, max_payload 16, 34 words: the 2-word last packet completes while the full one
    before it is still being copied (two copy engines of lane 0 at once)."""
    config = pair_config(1, 32, max_payload=16)
    run, emulator = lockstep(config, [(words_of(15, 34), 0, 3)], None, 0)
    assert emulator.rx.max_copies == [2]


def test_lockstep_lost_retransmission_is_nacked_again():
    """The scripted case of tests/test_link_emulator.py
    (test_lost_retransmission_is_nacked_again_exact_cycles): one lane, window 16, nack_gap 1;
    packet 0 and its retransmission are lost. The receiver accepts packet 1 in 30 and NACKs 0
    (words on the reverse lane from 37); the eighth packet accepted since, packet 9 in 111,
    NACKs it again (words from 118), long before the timeout (deadline 264): packet 0 leaves a
    third time from 137; done in 189, the receiver's in 179."""
    config = LinkConfig(lanes=1, lane_width=32, latency=3, max_payload=4, window=16,
                        nack_gap=1, buffer_words=256, source_words=256)
    run, emulator = lockstep(config, [(words_of(30, 64), 0, 4)], None, 0,
                             channels=lambda: scripted(config, forward_drops=[0, 6]))
    assert (run.tx_done, run.rx_done) == ([189], [179])
    firsts, fresh = [], True
    for t, direction, lane, word, last in run.trace:
        if direction == "reverse":
            if fresh:
                firsts.append((t, word & 0xF))
            fresh = bool(last)
    assert [t for t, kind in firsts if kind == NACK] == [37, 118]
    assert run.rx["nacks"] == 2 and emulator.rx.nack_repeats == 1
    assert run.tx["retransmits"] == 2 and run.tx["timeouts"] == 0


@pytest.mark.parametrize("lanes, lane_width, seed", [(4, 32, 3), (2, 16, 7)])
def test_lockstep_five_percent_drop(lanes, lane_width, seed):
    """5% of the packets lost both ways, window 16 (NACK again after 8 accepted): 96 words in
    packets of 4, so the lost retransmissions are asked for again."""
    config = pair_config(lanes, lane_width, max_payload=4, window=16, nack_gap=2,
                         ack_queue=4, source_words=128, buffer_words=128)
    run, emulator = lockstep(config, [(words_of(seed, 96), 0, 2)], FaultConfig(drop=0.05),
                             seed)
    assert emulator.rx.nack_repeats > 0 and run.tx["retransmits"] > 0


@pytest.mark.parametrize("faults, limits, error", [
    (FaultConfig(dead_at=0), (4, 2), TxError.LANES_DEAD),
    (FaultConfig(drop=0.6), (1, 4), TxError.RETRY_LIMIT),
])
def test_lockstep_errors(faults, limits, error):
    retry_limit, lane_dead_after = limits
    config = pair_config(2, 32, retry_limit=retry_limit, lane_dead_after=lane_dead_after)
    run, _ = lockstep(config, [(words_of(16, 40), 0, 1)], faults, 16)
    assert run.error == error


# Verilog ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, top", [(PacketTx, "packet_tx"), (PacketRx, "packet_rx")])
def test_verilog_lints_clean(cls, top, tmp_path):
    """Verilator's lint finds no error, and no warning beyond the implicit width extensions and
    truncations Amaranth's Verilog always has."""
    config = LinkConfig(lanes=2, lane_width=16, latency=6, max_payload=8, window=8, nack_gap=4,
                        ack_queue=3, buffer_words=64, source_words=64)
    text = hdl.verilog(cls(config, 1, 2), top)
    assert lint_warnings(text, top, tmp_path) <= AMARANTH_WARNINGS

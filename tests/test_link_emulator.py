"""The packet link's sender and receiver models and the link emulator (emulator/link.py) against
docs/ARCHITECTURE.md section 12: exact cycle counts derived by hand from the rules, goodput
against the line rate, seeded fault sweeps (every message arrives exactly once, byte for byte,
or the sender reports an error; never silently wrong), dying lanes, the receiver's drop causes
for malformed packets fed to it directly, the sender's command errors, and the go-back-N
baseline.

Cycle 0 is the first step. Notation in the derivations: r = 32 / lane_width cycles per word,
L = latency, N = 5 + p words of a packet with p payload words, TO = effective_timeout.
"""

import numpy as np
import pytest

from emulator.channel import Channel, FaultConfig, make_channels
from emulator.link import LinkEmulator, LinkStalled, RxModel, TxModel
from mesh.link import (LANE_WIDTHS, DropCause, Header, LinkConfig, PacketType, TxError,
                       ack_packet, build_packet, crc32, parse_packet)

from link_harness import scripted

DATA, ACK, NACK = PacketType.DATA, PacketType.ACK, PacketType.NACK


def cfg(**kwargs):
    base = dict(lanes=1, lane_width=32, latency=3, max_payload=4, window=8, buffer_words=256,
                source_words=256)
    base.update(kwargs)
    return LinkConfig(**base)


def words_of(n, seed=0):
    return np.random.default_rng(seed).integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)


def one_packet_done(N, r, L):
    """The sender's done cycle for a lone packet of N words taken in cycle 1 (see
    test_one_packet_exact_cycles)."""
    return 6 + 2 * (N - 1) * r + 8 * r + 2 * L


def check_delivered(result, data, T):
    assert result.ok, result.error_message
    np.testing.assert_array_equal(result.words, data)
    assert result.accepted == T


# Exact cycles without faults ---------------------------------------------------------------

@pytest.mark.parametrize("width", [8, 16, 32])
@pytest.mark.parametrize("latency", [1, 3, 10])
@pytest.mark.parametrize("p", [1, 4])
def test_one_packet_exact_cycles(width, latency, p):
    """One lane, one packet of p words (N = p + 5).

    cycle 0: the command is taken; the message is in progress from cycle 1.
    cycle 1: lane 0 takes packet 0: word j leaves in 2 + j r, the last in 2 + (N - 1) r.
    forward channel: ready at 2 + (N - 1) r + L, word j out in 2 + (N - 1) r + L + j r; the
      receiver has the whole packet in ta = 2 + 2 (N - 1) r + L.
    receiver: accepts it in ta and queues its ACK; copies word k in ta + 1 + k; base = 1 = T
      at the start of ta + 2, so done is in the first later cycle with no copy write:
      ta + p + 1 (p >= 1).
    reverse lane: takes the ACK in ta + 1, word j in ta + 2 + j r, the last in ta + 2 + 4 r;
      reverse channel: the sender has it in tk = ta + 2 + 4 r + L + 4 r.
    sender: entry 0 is ACKED at the end of tk, released in tk + 1, done in tk + 2 =
      6 + 2 (N - 1) r + 8 r + 2 L.
    """
    config = cfg(lane_width=width, latency=latency)
    r, N = config.word_cycles, p + 5
    data = words_of(p)
    result = LinkEmulator(config).send(data)
    ta = 2 + 2 * (N - 1) * r + latency
    assert result.start_cycle == 0
    assert result.rx_done_cycle == ta + p + 1
    assert result.done_cycle == ta + 8 * r + latency + 4 == one_packet_done(N, r, latency)
    check_delivered(result, data, 1)
    assert (result.sent, result.retransmits, result.acks_sent, result.acks_received) == (
        1, 0, 1, 1)
    assert result.goodput == 8 * 4 * p / result.done_cycle / config.line_rate


def test_the_words_on_the_lanes_are_the_specified_packets():
    """The trace of the case above (r = 1, L = 3, p = 4): the DATA packet (build_packet) in
    cycles 2..10, its ACK (ack_packet, cumulative = base at the start of ta = 0) from
    ta + 2 = 23."""
    config = cfg()
    data = words_of(4)
    emulator = LinkEmulator(config, trace=True)
    emulator.send(data, message=9)
    packet = build_packet(Header(type=DATA, src=1, dst=2, message=9, seq=0, payload=4,
                                 offset=0, length=16), data)
    ack = ack_packet(ACK, src=2, dst=1, message=9, seq=0, cumulative=0)
    forward = [(t, w, last) for t, lane, d, w, last in emulator.trace if d == "forward"]
    reverse = [(t, w, last) for t, lane, d, w, last in emulator.trace if d == "reverse"]
    assert forward == [(2 + j, w, int(j == 8)) for j, w in enumerate(packet)]
    assert reverse == [(23 + j, w, int(j == 4)) for j, w in enumerate(ack)]


def test_two_lanes_release_one_entry_per_cycle():
    """Two lanes take packets 0 and 1 in cycle 1 and everything after is the same on both
    lanes, so both ACKs arrive in tk (as in test_one_packet_exact_cycles). Release is one entry
    per cycle: base = 1 at the end of tk + 1, 2 at the end of tk + 2: done in tk + 3, one cycle
    later than a lone packet. The receiver: base = 2 = T from ta + 3, copies end in ta + 4:
    done in ta + 5."""
    config = cfg(lanes=2)
    data = words_of(8)
    result = LinkEmulator(config).send(data)
    ta = 2 + 2 * 8 + 3
    assert result.done_cycle == one_packet_done(9, 1, 3) + 1 == 37
    assert result.rx_done_cycle == ta + 5
    check_delivered(result, data, 2)


@pytest.mark.parametrize("kwargs, nbytes, expected", [
    ({}, 1 << 16, 4444),
    ({"lanes": 2, "lane_width": 8, "latency": 5, "max_payload": 16, "window": 8}, 1024, 797),
    ({"lanes": 3, "lane_width": 16, "latency": 12, "max_payload": 32, "window": 16}, 3072,
     710),
])
def test_full_packets_on_every_lane_closed_form(kwargs, nbytes, expected):
    """T = k x L full packets, a window wide enough never to stall a lane: lane l takes
    packets l, l + L, .. back to back, round i in cycle 1 + i N r, so the last round is taken
    in 1 + (k - 1) N r; its L ACKs arrive in the same cycle, and the L releases take L cycles:
    done = (k - 1) N r + one_packet_done(N) + L - 1."""
    config = LinkConfig(**{"buffer_words": 1 << 14, "source_words": 1 << 14, **kwargs})
    L, P, r = config.lanes, config.max_payload, config.word_cycles
    T = nbytes // 4 // P
    assert T % L == 0
    N, k = P + 5, T // L
    done = (k - 1) * N * r + one_packet_done(N, r, config.latency) + L - 1
    assert done == expected
    data = words_of(nbytes // 4)
    result = LinkEmulator(config).send(data)
    assert result.done_cycle == done
    check_delivered(result, data, T)


def test_copies_of_one_lane_overlap():
    """One lane, P = 16, 17 words: packet 0 (16 words, N = 21) then packet 1 (1 word, N = 6).

    Lane 0 takes packet 0 in 1 (words 2..22), packet 1 in 22 (words 23..28). Forward channel:
    packet 0 out in 22 + L .. 42 + L (ta0 = 42 + L); packet 1, ready at 28 + L, waits for the
    output until 43 + L: out 43 + L .. 48 + L (ta1 = 48 + L). Copies: packet 0 writes in
    43 + L .. 58 + L, packet 1 in 49 + L -- while packet 0's copy runs (two copies at once).
    Receiver: base = 2 = T from 50 + L; the last write in 58 + L: done in 59 + L.
    ACKs: ACK 0 queued in ta0, words 44 + L .. 48 + L; ACK 1 queued in ta1, taken in 49 + L,
    words 50 + L .. 54 + L. Reverse channel: ACK 0 at the sender in 52 + 2L, ACK 1 (ready in
    54 + 2L) in 58 + 2L. Sender: base = 1 at the end of 53 + 2L, entry 1 ACKED at the end of
    58 + 2L, released in 59 + 2L: done in 60 + 2L.
    """
    config = cfg(max_payload=16)
    data = words_of(17)
    result = LinkEmulator(config).send(data)
    assert (result.done_cycle, result.rx_done_cycle) == (60 + 6, 59 + 3)
    assert result.max_copies == [2]
    check_delivered(result, data, 2)


# Exact cycles with one scripted loss -------------------------------------------------------

def test_timeout_exact_cycles():
    """One lane, one packet (p = 4, N = 9), r = 1, L = 3, timeout TO = 51; its first copy is
    lost. Taken in 1: deadline
    1 + N r + TO = 61; entry 0 becomes RETX at the end of 61; lane 0 (free since 10) takes it
    again in 62, and the rest is the lone packet taken in 1, 61 cycles later: done in
    61 + 36 = 97, the receiver's in 61 + 26 = 87."""
    config = cfg(timeout=51)
    data = words_of(4)
    result = LinkEmulator(config, channels=scripted(config, forward_drops=[0])).send(data)
    assert (result.done_cycle, result.rx_done_cycle) == (97, 87)
    assert (result.sent, result.retransmits, result.timeouts) == (2, 1, 1)
    check_delivered(result, data, 1)


def test_nack_exact_cycles():
    """One lane, two packets (p = 4, N = 9), r = 1, L = 3, nack_gap = 1; packet 0's first copy
    is lost.

    Lane 0 takes packet 0 in 1 (lost) and packet 1 in 10 (words 11..19): out of the forward
    channel in 22..30, ta1 = 30. Receiver in 30: the packet starts the message (base 0),
    is accepted; ACK (seq 1, cumulative 0) queued, then a NACK for base 0 (1 - 0 >= 1).
    Reverse lane: ACK taken in 31 (words 32..36), NACK in 36 (words 37..41); reverse channel:
    ACK at the sender in 39 + 4 = 43, NACK (ready 44, the output free from 44) in 48.
    Sender: 43: entry 1 ACKED; 48: entry 0 (INFLIGHT, deadline 61) becomes RETX; 49: lane 0
    takes it (words 50..58), out of the forward channel in 61..69, ta0 = 69. Receiver in 69:
    accepts it, ACK (0, cumulative 0) taken in 70 (words 71..75), at the sender in 82; base =
    1 at the end of 70, 2 at the end of 71; copies end in 73: done in 74. Sender: entry 0
    ACKED at the end of 82, base = 1 at the end of 83, 2 at the end of 84: done in 85.
    """
    config = cfg(nack_gap=1)
    data = words_of(8)
    result = LinkEmulator(config, channels=scripted(config, forward_drops=[0])).send(data)
    assert (result.done_cycle, result.rx_done_cycle) == (85, 74)
    assert (result.sent, result.retransmits, result.timeouts) == (3, 1, 0)
    assert (result.nacks_sent, result.nacks_received, result.acks_received) == (1, 1, 2)
    check_delivered(result, data, 2)


def test_lost_retransmission_is_nacked_again_exact_cycles():
    """One lane, 16 packets (p = 4, N = 9), r = 1, L = 3, window 16 (a NACK again after
    max(1, 16 / 2) = 8 accepted packets), nack_gap 1, TO = 200 (the default: 2 x 3 +
    17 x 9 + 5 x 5 + 16); packet 0 is lost, and so is its retransmission (forward packets 0
    and 6). A packet taken in c has its last word at the receiver in c + 2N + L - 1 = c + 20.

    Lane 0 takes packets 0 .. 5 in 1, 10, .., 46. As in test_nack_exact_cycles, packet 1
    (taken in 10) is accepted in 30 and queues NACK(0): the count restarts from 0; the NACK
    reaches the sender in 48 and entry 0 becomes RETX. Lane 0, free in 55, takes packet 0
    again (lost; deadline 55 + 9 + 200 = 264), then packets 6, 7, .. in 64, 73, ... The
    receiver accepts packets 2, 3, 4, 5 in 39, 48, 57, 66 and 6, 7, 8, 9 in 84, 93, 102, 111:
    the eighth since the NACK, packet 9 in 111, base 0 still missing, queues ACK(9, 0) and
    NACK(0, 0) again. Reverse lane: the ACK of 8 (queued 102) left in 103 (free in 108); ACK 9
    taken in 112 (words 113..117), the NACK in 117 (words 118..122, ready 125): at the sender
    in 129, entry 0 INFLIGHT becomes RETX (a NACK, not the timeout of 264). Lane 0 (packets 10
    .. 13 taken in 100 .. 127) takes packet 0 a third time in 136 (words 137..145), accepted in
    156; then packets 14, 15 (taken in 145, 154) in 165, 174.

    Receiver: base 1 at the end of 157 .. 14 at the end of 170, 15 at the end of 171, 16 = T
    at the end of 175 (packet 15 in 174); the copy of 15 writes in 175..178: done in 179.
    Sender: ACK(0) queued in 156, taken in 157 (the reverse lane free since 153), at the sender
    in 169: releases in 170 .. 183 (base 14); ACK(14) (queued 165) arrives in 178, base 15 at
    the end of 184; ACK(15) (queued 174, taken 175) in 187: released in 188, done in 189.
    """
    config = cfg(window=16, nack_gap=1)
    assert config.effective_timeout == 200
    data = words_of(64)
    emulator = LinkEmulator(config, channels=scripted(config, forward_drops=[0, 6]),
                            trace=True)
    result = emulator.send(data)
    assert (result.done_cycle, result.rx_done_cycle) == (189, 179)
    assert (result.sent, result.retransmits, result.timeouts) == (18, 2, 0)
    assert (result.nacks_sent, result.nack_repeats, result.nacks_received) == (2, 1, 2)
    check_delivered(result, data, 16)
    firsts = {d: [] for d in ("forward", "reverse")}
    fresh = {d: True for d in firsts}
    for t, lane, d, word, last in emulator.trace:
        if fresh[d]:
            firsts[d].append((t, word))
        fresh[d] = bool(last)
    nacks = [t for t, word in firsts["reverse"] if word & 0xF == NACK]
    assert nacks == [37, 118]
    sends = [t for t, _ in firsts["forward"]]
    assert sends[:7] == [2, 11, 20, 29, 38, 47, 56] and sends[15] == 137


def test_lost_ack_is_covered_by_a_later_cumulative_ack():
    """One lane, three packets; ACK 0 is lost. Packet 1 reaches the receiver after base became
    1, so ACK 1 carries cumulative 1 and makes entry 0 ACKED: no timeout, no retransmission."""
    config = cfg()
    data = words_of(12)
    result = LinkEmulator(config, channels=scripted(config, reverse_drops=[0])).send(data)
    assert (result.retransmits, result.timeouts, result.acks_received) == (0, 0, 2)
    check_delivered(result, data, 3)


# Goodput -----------------------------------------------------------------------------------

BIG = dict(lanes=4, lane_width=32, buffer_words=1 << 18, source_words=1 << 18)


def test_goodput_without_faults():
    """1 MiB on 4 lanes of 32 bits (default latency, 128-word payloads): the closed form
    (k = 512 rounds of N = 133 words) gives done = 511 x 133 + 318 + 3 = 68284 cycles, a
    goodput of 8 x 2^20 / 68284 / 128 = 96.0% of the line rate (the payload efficiency
    128 / 133 = 96.2%, less the one-packet fill and the round trip). 64 KiB (4444 cycles) only
    reaches 92.2%: the fixed ~190 cycles weigh more."""
    config = LinkConfig(**BIG)
    data = words_of(1 << 18, seed=1)
    result = LinkEmulator(config).send(data)
    assert result.done_cycle == 68284
    assert result.goodput == 8 * (1 << 20) / 68284 / 128
    assert result.goodput >= 0.95
    check_delivered(result, data, 2048)


@pytest.fixture(scope="module")
def lossy_runs():
    """1 MiB at 1% drop in both directions of every lane, selective and go-back-N."""
    config = LinkConfig(**BIG)
    data = words_of(1 << 18, seed=2)
    return data, {mode: LinkEmulator(config, FaultConfig(drop=0.01), seed=5, mode=mode).send(data)
                  for mode in ("selective", "go_back_n")}


def test_goodput_at_one_percent_drop_selective(lossy_runs):
    data, runs = lossy_runs
    result = runs["selective"]
    check_delivered(result, data, 2048)
    assert result.channels["dropped"] > 0 and result.retransmits > 0
    assert result.goodput >= 0.90, result


def test_go_back_n_delivers_but_resends_more(lossy_runs):
    data, runs = lossy_runs
    selective, gbn = runs["selective"], runs["go_back_n"]
    check_delivered(gbn, data, 2048)
    assert gbn.nacks_sent == 0
    assert gbn.retransmits > selective.retransmits
    assert gbn.goodput < selective.goodput


# Seeded sweeps -----------------------------------------------------------------------------

FAMILIES = {"moderate": 1, "extreme": 2, "go_back_n": 3}


def scenario(seed, family):
    """A random link, faults and message of ``family``:

    * moderate: drop and flip up to 5%, duplicate and reorder up to 2% per lane (each
      direction), lane_dead_after 4 to 8, retry_limit 16. Every transfer must succeed.
      (Duplicates and reorders add packets to a lane the sender keeps busy: the backlog they
      leave exceeds the default timeout's margin, and the timeouts and retransmissions that
      follow can get a lane declared dead; at higher rates, or with lane_dead_after small,
      LANES_DEAD is the expected outcome for a one-lane link.)
    * extreme: every rate up to 30%, lane_dead_after 1 to 3, retry_limit 0 to 3: a transfer
      may fail, with RETRY_LIMIT or LANES_DEAD, never silently.
    * go_back_n: as moderate, in go-back-N mode.
    """
    rng = np.random.default_rng([seed, FAMILIES[family]])
    lanes = int(rng.integers(1, 5))
    window = 2 ** int(rng.integers(0, 6))
    extreme = family == "extreme"
    config = LinkConfig(
        lanes=lanes, lane_width=int(rng.choice(LANE_WIDTHS)), latency=int(rng.integers(1, 41)),
        max_payload=int(rng.integers(1, 33)), window=window,
        nack_gap=int(rng.integers(0, window + 1)), ack_queue=int(rng.integers(1, 5)),
        retry_limit=int(rng.integers(0, 4)) if extreme else 16,
        lane_dead_after=int(rng.integers(1, 4)) if extreme else int(rng.integers(4, 9)),
        buffer_words=256, source_words=256)
    top = [0.3] * 4 if extreme else [0.05, 0.05, 0.02, 0.02]
    faults = [FaultConfig(*(float(u) * t for u, t in zip(rng.random(4), top)))
              for _ in range(lanes)]
    data = words_of(int(rng.integers(1, 193)), seed=seed)
    return config, faults, data


IMPOSSIBLE_RX = {DropCause.TYPE, DropCause.DESTINATION, DropCause.LENGTH, DropCause.OFFSET,
                 DropCause.MESSAGE}
IMPOSSIBLE_TX = {DropCause.TYPE, DropCause.DESTINATION, DropCause.LENGTH}


def run_scenario(seed, family):
    """The problems of one scenario (empty if none) and whether the transfer failed."""
    config, faults, data = scenario(seed, family)
    mode = "go_back_n" if family == "go_back_n" else "selective"
    emulator = LinkEmulator(config, faults, seed=seed, mode=mode)
    message = seed % 4096
    result = emulator.send(data, message=message)
    T = -(-len(data) // config.max_payload)
    problems = []
    rx = emulator.rx
    if rx.done:         # the receiver never completes a message with wrong contents
        if rx.done != [(result.rx_done_cycle, message)]:
            problems.append(f"receiver done events {rx.done}")
        if not np.array_equal(result.words, data):
            bad = int(np.flatnonzero(result.words != data)[0])
            problems.append(f"the receive buffer differs from the source at word {bad}")
        if rx.accepted != T:
            problems.append(f"{rx.accepted} packets accepted, not T = {T}")
    if result.error == TxError.NONE:
        if not result.ok:
            problems.append("the sender is done but the receiver is not")
    else:
        if result.error not in (TxError.RETRY_LIMIT, TxError.LANES_DEAD):
            problems.append(f"unexpected error {result.error!r}")
        if not result.error_message.startswith(f"{result.error.name} in cycle "):
            problems.append(f"error message {result.error_message!r}")
        if family != "extreme":
            problems.append(f"failed: {result.error_message}")
    if IMPOSSIBLE_RX & result.rx_drops.keys() or IMPOSSIBLE_TX & result.tx_drops.keys():
        problems.append(f"drops a fault cannot cause: {result.rx_drops} {result.tx_drops}")
    if max(result.max_copies) > 2:
        problems.append(f"{result.max_copies} copies at once on a lane")
    if problems:
        return [f"seed {seed} ({family}: {config}, faults {faults}, {len(data)} words): "
                + "; ".join(problems)], not result.ok
    return [], not result.ok


def run_chunk(family, seeds):
    problems, failed = [], 0
    for seed in seeds:
        found, fail = run_scenario(seed, family)
        problems += found
        failed += fail
    return problems, failed


@pytest.mark.parametrize("chunk", range(10))
def test_sweep_moderate_faults_always_deliver(chunk):
    """1000 scenarios (10 chunks of 100 seeds): every message arrives exactly once, byte for
    byte (the receiver accepts each packet once and completes once)."""
    problems, failed = run_chunk("moderate", range(100 * chunk, 100 * chunk + 100))
    assert not problems, "\n".join(problems)
    assert failed == 0


def test_sweep_extreme_faults_fail_only_loudly():
    """200 scenarios with fault rates up to 30% and small retry and dead-lane limits: a
    transfer delivers exactly, or fails with RETRY_LIMIT or LANES_DEAD; the receiver never
    completes a message with wrong contents."""
    problems, failed = run_chunk("extreme", range(200))
    assert not problems, "\n".join(problems)
    assert 0 < failed < 200         # both outcomes occur


@pytest.mark.parametrize("chunk", range(2))
def test_sweep_go_back_n(chunk):
    problems, failed = run_chunk("go_back_n", range(100 * chunk, 100 * chunk + 100))
    assert not problems, "\n".join(problems)
    assert failed == 0


@pytest.mark.parametrize("mode", ["selective", "go_back_n"])
def test_skipping_idle_cycles_is_exact(mode):
    """The same words on every lane in the same cycles, and the same counters, with and without
    skipping idle cycles."""
    for seed in range(12):
        config, faults, data = scenario(seed, "moderate")
        runs = []
        for skip in (True, False):
            emulator = LinkEmulator(config, faults, seed=seed, mode=mode, trace=True,
                                    skip_idle=skip)
            result = emulator.send(data)
            runs.append((emulator.trace, result.done_cycle, result.rx_done_cycle, result.sent,
                         result.timeouts, result.tx_drops, result.rx_drops, result.channels))
        assert runs[0] == runs[1], f"seed {seed}"


# Dying lanes -------------------------------------------------------------------------------

@pytest.mark.parametrize("lanes, width, dead_lane, dead_at", [
    (4, 32, 2, 1500), (4, 16, 0, 1000), (3, 32, 2, 900), (2, 8, 1, 2500), (2, 32, 0, 0),
])
def test_one_lane_dying_mid_transfer_still_delivers(lanes, width, dead_lane, dead_at):
    config = LinkConfig(lanes=lanes, lane_width=width, buffer_words=1 << 14,
                        source_words=1 << 14)
    faults = [FaultConfig(dead_at=dead_at) if l == dead_lane else None for l in range(lanes)]
    data = words_of(1 << 14 if width == 32 else 1 << 12, seed=lanes)
    result = LinkEmulator(config, faults, seed=1).send(data)
    check_delivered(result, data, len(data) // config.max_payload)
    assert result.lanes_dead == [dead_lane]
    if dead_at:
        assert result.retransmits > 0 and result.channels["lost_dead"] > 0


def test_every_lane_dying_is_lanes_dead():
    config = cfg(lanes=2, lane_dead_after=3)
    emulator = LinkEmulator(config, FaultConfig(dead_at=40), seed=0)
    result = emulator.send(words_of(64), message=3)
    assert result.error == TxError.LANES_DEAD and not result.ok
    assert result.lanes_dead == [0, 1] and result.done_cycle is None
    tx = emulator.tx
    lane, cycle = tx.dead_cycles[-1]
    assert (tx.error_lane, tx.error_cycle, tx.error_seq) == (lane, cycle, 0)
    assert result.error_message == (
        f"LANES_DEAD in cycle {cycle}: every lane is dead; lane {lane} died last, after 3 "
        f"timeouts in a row, the last for packet {tx.error_packet} of message 3 (base "
        f"{tx.base}, next {tx.next} of 16 packets)")
    assert not tx.ready and not tx.busy


def test_every_lane_dying_with_few_retries_is_retry_limit():
    config = cfg(lanes=2, lane_width=16, retry_limit=2, lane_dead_after=50)
    emulator = LinkEmulator(config, FaultConfig(dead_at=100), seed=0)
    result = emulator.send(words_of(64), message=4)
    assert result.error == TxError.RETRY_LIMIT
    tx = emulator.tx
    s = tx.error_seq
    assert result.error_message == (
        f"RETRY_LIMIT in cycle {tx.error_cycle}: packet {s} of message 4 was sent 3 times "
        f"(1 + retry_limit 2) without an acknowledgement, the last time on lane "
        f"{tx.error_lane}")
    assert tx.base <= s < tx.next


# The receiver's drops, packets fed directly ------------------------------------------------

RX = dict(lanes=2, max_payload=4, window=4, buffer_words=64, nack_gap=2)


class RxBench:
    """An RxModel (node 2, peer 1) fed packets word by word on a lane (r = 1); collects the
    packets it sends back, per lane, as (first cycle, header)."""

    def __init__(self, **kwargs):
        self.config = LinkConfig(**{**RX, **kwargs})
        self.rx = RxModel(self.config, node=2, peer=1)
        self.back = [[] for _ in range(self.config.lanes)]
        self._partial = [[] for _ in range(self.config.lanes)]

    def step(self, inputs=None):
        t = self.rx.cycle
        out = self.rx.step(inputs)
        for lane, (valid, word, last) in enumerate(out):
            if valid:
                self._partial[lane].append((t, word))
                if last:
                    packet = self._partial[lane]
                    self._partial[lane] = []
                    header, _ = parse_packet([w for _, w in packet])
                    self.back[lane].append((packet[0][0], header))

    def feed(self, words, lane=0, idle=30):
        """The packet's words on ``lane``, one a cycle; returns the cycle its last word
        arrived. Then ``idle`` cycles."""
        for j, word in enumerate(words):
            inputs = [(0, 0, 0)] * self.config.lanes
            inputs[lane] = (1, word, int(j == len(words) - 1))
            self.step(inputs)
        t = self.rx.cycle - 1
        for _ in range(idle):
            self.step()
        return t

    def acks(self, lane=0):
        return [(h.type, h.seq, h.offset, h.message) for _, h in self.back[lane]]

    def drops(self):
        return {cause: n for cause, n in self.rx.drops.items() if n}


def data_packet(seq, payload=None, *, length=40, message=5, src=1, dst=2, offset=None,
                p=None, P=4, type_=DATA):
    """Packet seq of a message of ``length`` bytes (P = 4: 40 bytes are packets of 4, 4, 2
    words)."""
    w = length // 4
    if payload is None:
        payload = list(range(100 * seq, 100 * seq + max(1, min(P, w - seq * P))))
    header = Header(type=type_, src=src, dst=dst, message=message, seq=seq,
                    payload=len(payload) if p is None else p,
                    offset=4 * P * seq if offset is None else offset, length=length)
    return build_packet(header, payload)


def with_crc(words):
    return words + [crc32(words)]


@pytest.mark.parametrize("name, packet, cause", [
    ("flipped bit", lambda: [w ^ (1 << 7) if j == 5 else w
                             for j, w in enumerate(data_packet(0))], DropCause.CRC),
    ("three words", lambda: with_crc([1, 2, 3]), DropCause.CRC),
    ("an ACK", lambda: ack_packet(ACK, 1, 2, 5, 0, 0), DropCause.TYPE),
    ("type 0", lambda: data_packet(0, type_=0), DropCause.TYPE),
    ("wrong destination", lambda: data_packet(0, dst=3), DropCause.DESTINATION),
    ("wrong source", lambda: data_packet(0, src=9), DropCause.DESTINATION),
    ("payload field 0", lambda: data_packet(0, payload=[], p=0), DropCause.LENGTH),
    ("payload above P", lambda: data_packet(0, payload=[1, 2, 3, 4, 5]), DropCause.LENGTH),
    ("payload field not the framed words", lambda: data_packet(0, payload=[1, 2, 3], p=4),
     DropCause.LENGTH),
    ("longer than max_packet_words", lambda: data_packet(0, payload=list(range(12)), p=4),
     DropCause.LENGTH),
    ("offset not 4 P s", lambda: data_packet(1, offset=20), DropCause.OFFSET),
    ("seq at T", lambda: data_packet(3, payload=[1, 2]), DropCause.OFFSET),
    ("last packet's payload wrong", lambda: data_packet(2, payload=[1, 2, 3, 4]),
     DropCause.OFFSET),
    ("length not whole words", lambda: data_packet(0, length=42), DropCause.OFFSET),
    ("length 0", lambda: data_packet(0, payload=[1], length=0), DropCause.OFFSET),
    ("longer than the buffer", lambda: data_packet(0, length=4 * 65), DropCause.OFFSET),
])
def test_receiver_drops_a_malformed_packet_by_cause(name, packet, cause):
    bench = RxBench()
    bench.feed(packet())
    assert bench.drops() == {cause: 1}, name
    assert bench.rx.accepted == 0 and not bench.rx.busy
    assert bench.back == [[], []]           # dropped silently


def test_receiver_accepts_and_acknowledges_on_the_same_lane():
    """A packet complete in t on lane 1: its ACK is queued in t, taken in t + 1, word 0 in
    t + 2, on reverse lane 1; cumulative = base at the start of t (0); payload in the buffer."""
    bench = RxBench()
    t = bench.feed(data_packet(1), lane=1)
    assert bench.rx.accepted == 1 and bench.rx.busy and bench.rx.message == 5
    assert bench.back[0] == [] and bench.back[1][0][0] == t + 2
    assert bench.acks(1) == [(ACK, 1, 0, 5)]
    assert list(bench.rx.buffer[4:8]) == [100, 101, 102, 103]


def test_receiver_message_sequence_and_duplicate_drops():
    bench = RxBench(max_payload=4, window=4, nack_gap=0)
    bench.feed(data_packet(0, length=40))                   # starts message 5 (T = 3)
    bench.feed(data_packet(0, length=40))                   # again
    bench.feed(data_packet(0, length=40, message=6))        # another message's packet
    bench.feed(data_packet(1, length=48))                   # message 5, another length
    assert bench.drops() == {DropCause.DUPLICATE: 1, DropCause.MESSAGE: 2}
    assert bench.acks() == [(ACK, 0, 0, 5), (ACK, 0, 1, 5)]    # the duplicate, ACKed again
    long = RxBench(max_payload=4, window=4, nack_gap=0)
    long.feed(data_packet(4, length=4 * 4 * 6))             # s = 4 >= base 0 + W
    assert long.drops() == {DropCause.SEQUENCE: 1}
    assert long.rx.busy and long.rx.accepted == 0           # the message started all the same


def test_receiver_completes_and_acknowledges_duplicates_with_cumulative_t():
    bench = RxBench(nack_gap=0)
    for s in (2, 0, 1):
        bench.feed(data_packet(s))
    assert [m for _, m in bench.rx.done] == [5] and not bench.rx.busy
    assert list(bench.rx.buffer[:10]) == [0, 1, 2, 3, 100, 101, 102, 103, 200, 201]
    bench.feed(data_packet(1))                              # after completion
    assert bench.drops() == {DropCause.DUPLICATE: 1}
    assert bench.acks()[-1] == (ACK, 1, 3, 5)               # cumulative T = 3
    bench.feed(data_packet(0, message=6, length=8, payload=[7, 8]))     # a new message
    assert [m for _, m in bench.rx.done] == [5, 6]
    assert list(bench.rx.buffer[:2]) == [7, 8]


def test_receiver_nack_once_per_base_and_queue_overflow():
    """nack_gap 2, ack_queue 1, message of 6 packets (window 8). Packet 3 arrives first: its ACK
    fills the queue, so the NACK for base 0 (3 - 0 >= 2) is dropped -- and counts as sent:
    packet 4 then queues only its ACK."""
    bench = RxBench(window=8, nack_gap=2, ack_queue=1)
    bench.feed(data_packet(3, length=96), idle=0)
    assert (bench.rx.acks, bench.rx.nacks, bench.rx.ack_drops) == (1, 0, 1)
    bench.feed(data_packet(4, length=96))
    assert (bench.rx.acks, bench.rx.nacks, bench.rx.ack_drops) == (2, 0, 1)
    roomy = RxBench(window=8, nack_gap=2, ack_queue=2)
    roomy.feed(data_packet(3, length=96))
    roomy.feed(data_packet(4, length=96))
    assert roomy.acks() == [(ACK, 3, 0, 5), (NACK, 0, 0, 5), (ACK, 4, 0, 5)]


def test_receiver_nacks_again_after_half_a_window():
    """Six lanes, window 8 (a NACK again after max(1, 8 / 2) = 4 accepted packets), nack_gap 1,
    a message of 10 packets. Packets 1 .. 6 complete in the same cycle on lanes 0 .. 5:
    lane 0's starts the message and queues NACK(0), the count restarts from 0; lanes 1 .. 4
    bring it to 4, but a cycle has one NACK at most; lane 5's packet counts too (the count is
    capped at 4). Packet 7, alone on lane 1, is the fourth since: NACK(0) again, on lane 1."""
    bench = RxBench(lanes=6, window=8, nack_gap=1)
    packets = [data_packet(s, length=160) for s in range(1, 7)]
    for j in range(len(packets[0])):
        bench.step([(1, p[j], int(j == len(p) - 1)) for p in packets])
    for _ in range(30):
        bench.step()
    assert (bench.rx.accepted, bench.rx.nacks, bench.rx.nack_repeats) == (6, 1, 0)
    assert bench.acks(0) == [(ACK, 1, 0, 5), (NACK, 0, 0, 5)]
    assert [bench.acks(l) for l in range(1, 6)] == [[(ACK, s, 0, 5)] for s in range(2, 7)]
    bench.feed(data_packet(7, length=160), lane=1)
    assert (bench.rx.accepted, bench.rx.nacks, bench.rx.nack_repeats) == (7, 2, 1)
    assert bench.acks(1)[1:] == [(ACK, 7, 0, 5), (NACK, 0, 0, 5)]


def test_receiver_count_restarts_after_a_dropped_nack():
    """Window 4 (again after 2), nack_gap 1, ack_queue 1: packet 1's NACK does not fit behind
    its ACK and is dropped -- it counts as sent and restarts the count. Packet 2 is the first
    since (no NACK), packet 3 the second: NACK(0) again (dropped too: a queue of one never has
    room for a NACK behind its ACK). With a queue of two both NACKs go out."""
    bench = RxBench(lanes=1, window=4, nack_gap=1, ack_queue=1)
    bench.feed(data_packet(1, length=64), idle=0)
    assert (bench.rx.nacks, bench.rx.ack_drops) == (0, 1)
    bench.feed(data_packet(2, length=64))
    bench.feed(data_packet(3, length=64))
    assert (bench.rx.nacks, bench.rx.nack_repeats, bench.rx.ack_drops) == (0, 1, 2)
    roomy = RxBench(lanes=1, window=4, nack_gap=1, ack_queue=2)
    for s in (1, 2, 3):
        roomy.feed(data_packet(s, length=64))
    assert roomy.acks() == [(ACK, 1, 0, 5), (NACK, 0, 0, 5), (ACK, 2, 0, 5), (ACK, 3, 0, 5),
                            (NACK, 0, 0, 5)]


# The sender's commands and acknowledgement checks ------------------------------------------

@pytest.mark.parametrize("src, length, problem", [
    (0, 0, "message 7 of 0 bytes at word 0 is empty"),
    (0, 6, "message 7 of 6 bytes at word 0 is not a whole number of 32-bit words"),
    (200, 4 * 57, "message 7 of 228 bytes at word 200 runs past the source memory (word 200 + "
                  "57 words > 256)"),
])
def test_sender_message_error(src, length, problem):
    tx = TxModel(cfg(), node=1, peer=2)
    tx.start(src, length, message=7)
    assert tx.ready
    tx.step()
    assert tx.error == TxError.MESSAGE and tx.error_message == f"MESSAGE in cycle 0: {problem}"
    assert not tx.ready and not tx.busy and tx.error_seq == 0
    tx.start(0, 16, message=8)                  # sticky: not taken
    for _ in range(5):
        assert tx.step() == [(0, 0, 0)]
    assert tx.pending_commands == 1 and tx.sent == 0
    tx.reset()
    assert tx.ready and tx.error == TxError.NONE


def test_sender_message_error_too_many_packets():
    config = LinkConfig(max_payload=1, source_words=1 << 17)
    tx = TxModel(config)
    tx.start(0, 4 * 65536)
    tx.step()
    assert tx.error_message == ("MESSAGE in cycle 0: message 0 of 262144 bytes at word 0 needs "
                                "65536 packets, above 65535")


@pytest.mark.parametrize("kwargs, message", [
    ({"src": 256}, "start: src must be an integer from 0 to 255, not 256"),
    ({"length": -4}, "start: length must be an integer from 0 to 4294967295, not -4"),
    ({"dst": 256}, "start: dst must be an integer from 0 to 255, not 256"),
    ({"message": 4096}, "start: message must be an integer from 0 to 4095, not 4096"),
])
def test_sender_command_fields_are_checked(kwargs, message):
    tx = TxModel(cfg())
    with pytest.raises(ValueError) as info:
        tx.start(**{"src": 0, "length": 16, **kwargs})
    assert str(info.value) == message


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="node and peer must differ, both are 3"):
        TxModel(cfg(), node=3, peer=3)
    with pytest.raises(ValueError, match="peer must be an integer from 0 to 255, not 256"):
        RxModel(cfg(), node=1, peer=256)
    with pytest.raises(ValueError, match="mode must be one of"):
        RxModel(cfg(), mode="stop_and_wait")
    with pytest.raises(TypeError, match="config must be a mesh.link.LinkConfig"):
        TxModel({})


def test_sender_drops_acknowledgements_by_cause():
    """A message of 3 packets on one lane; after cycle 1 (packet 0 taken) the reverse lane
    brings: a flipped ACK, a DATA packet, an ACK to node 3, an ACK from node 9, a 6-word ACK,
    an ACK of message 8, an ACK of seq 9 (>= next) -- then a good ACK of seq 0, released the
    cycle after it arrives."""
    config = cfg()
    tx = TxModel(config, node=1, peer=2)
    tx.source[:12] = np.arange(12)
    tx.start(0, 48, message=7)
    tx.step()
    tx.step()
    assert tx.busy and tx.next == 1

    def ack(seq=0, **kwargs):
        fields = dict(type=ACK, src=2, dst=1, message=7, seq=seq, payload=0, offset=0,
                      length=0)
        fields.update(kwargs)
        return build_packet(Header(**fields))

    flipped = ack()
    flipped[2] ^= 4
    bad = [flipped, ack(type=DATA), ack(dst=3), ack(src=9), with_crc(ack()[:-1] + [0]),
           ack(message=8), ack(seq=9)]
    for words in bad + [ack()]:
        for j, w in enumerate(words):
            tx.step([(1, w, int(j == len(words) - 1))])
    assert {c: n for c, n in tx.drops.items() if n} == {
        DropCause.CRC: 1, DropCause.TYPE: 1, DropCause.DESTINATION: 2, DropCause.LENGTH: 1,
        DropCause.MESSAGE: 1, DropCause.SEQUENCE: 1}
    assert tx.acks == 1 and tx.base == 0
    tx.step()
    assert tx.base == 1


# Go-back-N ---------------------------------------------------------------------------------

def test_go_back_n_receiver_takes_packets_in_order_only():
    bench = RxBench(nack_gap=2)
    bench.rx = RxModel(bench.config, node=2, peer=1, mode="go_back_n")
    bench.feed(data_packet(1))              # out of order: dropped, cumulative ACK re-sent
    bench.feed(data_packet(0))
    bench.feed(data_packet(0))              # a duplicate
    bench.feed(data_packet(1))
    assert bench.drops() == {DropCause.SEQUENCE: 1, DropCause.DUPLICATE: 1}
    assert bench.acks() == [(ACK, 1, 0, 5), (ACK, 0, 1, 5), (ACK, 0, 1, 5), (ACK, 1, 2, 5)]
    assert bench.rx.nacks == 0 and bench.rx.accepted == 2


def test_go_back_n_sender_resends_from_the_lost_packet():
    """Three packets on one lane, packet 0's first copy lost: the go-back-N receiver drops 1
    and 2, so the timeout of 0 resends all three; selective resends only packet 0."""
    config = cfg()
    data = words_of(12)
    counts = {}
    for mode in ("selective", "go_back_n"):
        emulator = LinkEmulator(config, mode=mode, channels=scripted(config, forward_drops=[0]))
        result = emulator.send(data)
        check_delivered(result, data, 3)
        counts[mode] = (result.retransmits, result.timeouts)
    assert counts == {"selective": (1, 1), "go_back_n": (3, 1)}


# The emulator's interface ------------------------------------------------------------------

def test_send_bytes_and_successive_messages():
    config = cfg(lanes=2, lane_width=16)
    emulator = LinkEmulator(config, FaultConfig(drop=0.05), seed=3)
    first = bytes(range(256)) * 2
    result = emulator.send(first)
    assert result.ok and result.data == first and result.message == 0
    second = words_of(40, seed=9)
    result = emulator.send(second, src=100)
    assert result.ok and result.message == 1 and result.start_cycle > 0
    np.testing.assert_array_equal(result.words, second)
    assert [m for _, m in emulator.rx.done] == [0, 1]
    with pytest.raises(ValueError, match="message 1 is the id of the message the receiver last"):
        emulator.send(second, message=1)


def test_send_of_a_bad_length_is_a_message_error():
    result = LinkEmulator(cfg()).send(b"abcdef")
    assert not result.ok and result.error == TxError.MESSAGE
    assert "6 bytes at word 0 is not a whole number of 32-bit words" in result.error_message


def test_a_stalled_transfer_names_the_state():
    config = cfg(lanes=2)
    with pytest.raises(LinkStalled) as info:
        LinkEmulator(config).send(words_of(40), message=2, max_cycles=8)
    text = str(info.value)
    assert "message 2 neither finished nor failed within 8 cycles" in text
    assert "message 2 in progress, base 0, next 2 of 10 packets" in text
    assert "0: INFLIGHT (lane 0, deadline" in text and "lane 1: alive" in text
    assert "receiver in cycle 8: no message in progress" in text


def test_channels_argument_is_checked():
    config = cfg(lanes=2)
    forward, reverse = make_channels(config)
    with pytest.raises(ValueError, match="channels must be two lists of 2 channels"):
        LinkEmulator(config, channels=(forward[:1], reverse))
    assert isinstance(LinkEmulator(config, channels=(forward, reverse)).forward[0], Channel)

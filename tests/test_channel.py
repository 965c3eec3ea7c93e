"""The packet link's lane channel (emulator/channel.py) against docs/ARCHITECTURE.md section 12,
"Channels and faults": store-and-forward timing at the lane's rate, each fault kind alone, the
documented order of the per-packet draws, a dying channel, determinism from the seed, and the
fault configuration's errors.

Cycle 0 is the first :meth:`Channel.step`. Helpers feed packets at the lane's rate (word j of a
packet whose first word enters in cycle c enters in c + j x r) and collect what comes out.
"""

import numpy as np
import pytest

from emulator.channel import Channel, FaultConfig, make_channels
from mesh.config import ConfigError
from mesh.link import LinkConfig


def cfg(**kwargs):
    base = dict(lanes=2, lane_width=32, latency=5, max_payload=8)
    base.update(kwargs)
    return LinkConfig(**base)


def feed(packets, starts, r):
    """{cycle: (word, last)} for packets entering at the lane's rate, packet i from starts[i]."""
    schedule = {}
    for words, start in zip(packets, starts):
        for j, word in enumerate(words):
            cycle = start + j * r
            assert cycle not in schedule, "packets overlap"
            schedule[cycle] = (word, int(j == len(words) - 1))
    return schedule


def back_to_back(packets, r, start=0):
    starts, t = [], start
    for words in packets:
        starts.append(t)
        t += len(words) * r
    return starts


def run(channel, schedule, cycles):
    """[(cycle, word, last)] of every valid word out in ``cycles`` cycles."""
    out = []
    for t in range(cycles):
        word, last = schedule.get(t, (0, 0))
        valid, data, end = channel.step(t in schedule, word, last)
        if valid:
            out.append((t, data, end))
        else:
            assert (data, end) == (0, 0)
    return out


def packets_out(out):
    """The delivered packets: [(first cycle, [words])]."""
    packets, current, first = [], [], None
    for cycle, word, last in out:
        if not current:
            first = cycle
        current.append(word)
        if last:
            packets.append((first, current))
            current = []
    assert not current, "a packet was cut"
    return packets


def make_packets(n, words=6, base=0):
    return [[(base + 1000 * i + j) & 0xFFFFFFFF for j in range(words)] for i in range(n)]


def reference_draws(seed, lane, direction, sizes):
    """The documented draws, per packet of sizes[i] words: (u_drop, u_flip, bit, u_dup,
    u_reorder)."""
    rng = np.random.default_rng([seed, lane, 0 if direction == "forward" else 1])
    return [(rng.random(), rng.random(), int(rng.integers(32 * n)), rng.random(), rng.random())
            for n in sizes]


# Timing without faults ---------------------------------------------------------------------

@pytest.mark.parametrize("width", [8, 16, 32])
@pytest.mark.parametrize("latency", [1, 3, 17])
def test_one_packet_word_j_at_last_plus_latency_plus_j_r(width, latency):
    config = cfg(lane_width=width, latency=latency)
    r = config.word_cycles
    words = make_packets(1, words=7)[0]
    start = 3
    t_last = start + 6 * r
    out = run(Channel(config), feed([words], [start], r), t_last + latency + 8 * r)
    assert out == [(t_last + latency + j * r, words[j], int(j == 6)) for j in range(7)]


@pytest.mark.parametrize("width", [8, 16, 32])
def test_back_to_back_packets_keep_the_lane_rate(width):
    """Packets entering at the lane's rate leave at it: packet i starts in
    max(t_last_i + latency, start_(i-1) + N_(i-1) x r) (a shorter packet waits for a longer one
    before it: store and forward)."""
    config = cfg(lane_width=width)
    r, L = config.word_cycles, config.latency
    packets = [make_packets(1, words=n, base=n)[0] for n in (5, 9, 6, 13)]
    starts = back_to_back(packets, r)
    channel = Channel(config)
    out = packets_out(run(channel, feed(packets, starts, r), 60 * r + L + 10))
    assert [words for _, words in out] == packets
    free = 0
    for (first, _), words, start in zip(out, packets, starts):
        assert first == max(start + (len(words) - 1) * r + L, free)
        free = first + len(words) * r
    assert out[2][0] == out[1][0] + 9 * r               # packet 2 waited for packet 1
    assert (channel.packets_in, channel.packets_out, channel.dropped) == (4, 4, 0)


def test_packets_entering_faster_than_the_rate_queue_at_the_output():
    """Words entering every cycle on a 8-bit lane (r = 4): the output still moves one word
    every 4 cycles, packets back to back in order of readiness, the next one starting N x r
    cycles after the previous one started."""
    config = cfg(lane_width=8, latency=2)
    packets = make_packets(3, words=5)
    starts = back_to_back(packets, 1)
    out = packets_out(run(Channel(config), feed(packets, starts, 1), 100))
    assert [words for _, words in out] == packets
    firsts = [first for first, _ in out]
    assert firsts[0] == 4 + 2
    assert firsts[1] == firsts[0] + 5 * 4 and firsts[2] == firsts[1] + 5 * 4


def test_idle_and_invalid_words_are_ignored_and_long_packets_are_carried():
    config = cfg()
    long = list(range(3 * config.max_packet_words))        # far longer than any packet
    schedule = feed([long], [0], 1)
    for t in range(len(long) + 10):         # invalid words in between carry garbage
        schedule.setdefault(t, None)
    channel = Channel(config)
    out = []
    for t in range(len(long) + 60):
        entry = schedule.get(t)
        valid, word, last = (1, *entry) if entry else (0, 0xDEADBEEF, 1)
        v, w, l = channel.step(valid, word, last)
        if v:
            out.append((t, w, l))
    assert [w for _, w, _ in out] == long
    assert out[0][0] == len(long) - 1 + config.latency


def test_output_does_not_depend_on_the_same_cycle_input():
    """Latency >= 1: a packet whose last word enters in t is not out in t, even with latency
    1 (the same output with or without that input)."""
    config = cfg(latency=1)
    a, b = Channel(config), Channel(config)
    for t in range(5):
        assert a.step(1, t, int(t == 4)) == b.step(0, 0, 0) == (0, 0, 0)
    assert a.step() == (1, 0, 0)


# Faults one at a time ----------------------------------------------------------------------

def stream(config, faults, n=12, words=6, seed=3, lane=1, direction="forward"):
    r = config.word_cycles
    packets = make_packets(n, words=words)
    starts = back_to_back(packets, r)
    channel = Channel(config, faults, seed=seed, lane=lane, direction=direction)
    out = run(channel, feed(packets, starts, r), starts[-1] + 4 * n * words * r + 200)
    return channel, packets, packets_out(out)


def test_drop_at_rate_one_delivers_nothing():
    channel, packets, out = stream(cfg(), FaultConfig(drop=1.0))
    assert out == []
    assert (channel.packets_in, channel.dropped, channel.packets_out) == (12, 12, 0)
    assert channel.flipped == channel.duplicated == channel.reordered == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flip_at_rate_one_flips_exactly_one_bit_the_drawn_one(seed):
    config = cfg()
    channel, packets, out = stream(config, FaultConfig(flip=1.0), seed=seed)
    assert channel.flipped == 12 and len(out) == 12
    draws = reference_draws(seed, 1, "forward", [6] * 12)
    for (_, got), sent, (_, _, bit, _, _) in zip(out, packets, draws):
        diff = [g ^ s for g, s in zip(got, sent)]
        assert sum(bin(d).count("1") for d in diff) == 1
        assert diff[bit // 32] == 1 << (bit % 32)


def test_duplicate_at_rate_one_delivers_each_packet_twice_in_a_row():
    config = cfg(lane_width=16)
    r = config.word_cycles
    channel, packets, out = stream(config, FaultConfig(duplicate=1.0), n=4)
    assert [words for _, words in out] == [p for p in packets for _ in range(2)]
    for i in range(0, 8, 2):                # the copy starts right after the original
        assert out[i + 1][0] == out[i][0] + 6 * r
    assert (channel.duplicated, channel.packets_out) == (4, 8)


def test_reorder_at_rate_one_delays_every_packet_and_keeps_their_order():
    config = cfg()
    delay = FaultConfig().delay(config)
    assert delay == 2 * config.max_packet_words * config.word_cycles
    channel, packets, out = stream(config, FaultConfig(reorder=1.0), n=3)
    assert [words for _, words in out] == packets
    assert out[0][0] == 5 + config.latency + delay
    assert channel.reordered == 3


@pytest.mark.parametrize("width", [8, 32])
def test_a_reordered_packet_is_overtaken_by_later_ones(width):
    """The packets with u_reorder < rate (from the documented draws) come out later than the
    packets sent after them; the others in order."""
    config = cfg(lane_width=width)
    seed, n = 5, 16
    channel, packets, out = stream(config, FaultConfig(reorder=0.3), n=n, seed=seed)
    draws = reference_draws(seed, 1, "forward", [6] * n)
    late = {i for i, d in enumerate(draws) if d[4] < 0.3}
    assert 0 < len(late) < n and channel.reordered == len(late)
    order = [packets.index(words) for _, words in out]
    assert sorted(order) == list(range(n))
    assert [i for i in order if i not in late] == sorted(set(range(n)) - late)
    for i in late:
        if i + 1 < n and i + 1 not in late:
            assert order.index(i + 1) < order.index(i), f"packet {i + 1} did not overtake {i}"


def test_draws_follow_the_documented_order_with_every_fault():
    """All four kinds at once: the outcome of each packet is the one the documented draws give,
    and a dropped packet takes no other effect (its five draws are made all the same)."""
    config = cfg()
    rates = FaultConfig(drop=0.3, flip=0.3, duplicate=0.3, reorder=0.3, reorder_delay=1000)
    seed, n = 11, 40
    channel, packets, out = stream(config, rates, n=n, seed=seed, lane=0, direction="reverse")
    draws = reference_draws(seed, 0, "reverse", [6] * n)
    expected = []
    for i, (u_drop, u_flip, bit, u_dup, u_reorder) in enumerate(draws):
        if u_drop < 0.3:
            continue
        words = list(packets[i])
        if u_flip < 0.3:
            words[bit // 32] ^= 1 << (bit % 32)
        expected += [(u_reorder < 0.3, i, words)] * (1 + (u_dup < 0.3))
    # Not reordered ones in order first (the reorder delay is longer than the whole stream).
    expected.sort(key=lambda e: (e[0], e[1]))
    assert [words for _, words in out] == [words for _, _, words in expected]
    assert channel.dropped == sum(d[0] < 0.3 for d in draws)
    assert channel.flipped == sum(d[0] >= 0.3 and d[1] < 0.3 for d in draws)
    assert channel.duplicated == sum(d[0] >= 0.3 and d[3] < 0.3 for d in draws)
    assert channel.reordered == sum(d[0] >= 0.3 and d[4] < 0.3 for d in draws)
    assert channel.packets_out == len(expected)


# A dying channel ---------------------------------------------------------------------------

def test_dead_at_loses_what_the_channel_holds_and_everything_after():
    config = cfg(latency=4)
    packets = make_packets(6, words=6)
    starts = back_to_back(packets, 1)           # last words enter at 5, 11, 17, ...
    # Packet 0 is out in 9..14, packet 1 in 15..20; die in 17: packet 1 is cut after 2 words.
    channel = Channel(config, FaultConfig(dead_at=17))
    out = run(channel, feed(packets, starts, 1), 120)
    assert [w for t, w, _ in out if t < 15] == packets[0]
    assert [w for t, w, _ in out if t >= 15] == packets[1][:2]
    assert max(t for t, _, _ in out) == 16
    assert channel.dead and channel.packets_out == 1
    assert channel.packets_in == 6 and channel.lost_dead == 5


def test_dead_at_zero_delivers_nothing_and_a_partly_entered_packet_is_lost():
    channel = Channel(cfg(), FaultConfig(dead_at=3))
    out = run(channel, feed(make_packets(2, words=6), [0, 6], 1), 60)
    assert out == [] and channel.lost_dead == channel.packets_in == 2


def test_held_accounts_for_every_delivery():
    config = cfg()
    faults = FaultConfig(drop=0.2, duplicate=0.3, reorder=0.3, dead_at=90)
    channel = Channel(config, faults, seed=4)
    packets = make_packets(30, words=6)
    schedule = feed(packets, back_to_back(packets, 1), 1)
    for t in range(400):
        word, last = schedule.get(t, (0, 0))
        channel.step(t in schedule, word, last)
        assert (channel.packets_in - channel.dropped + channel.duplicated
                == channel.packets_out + channel.lost_dead + channel.held)
    assert channel.lost_dead > 0


# Seeds and helpers -------------------------------------------------------------------------

def test_same_seed_same_faults_other_seed_lane_or_direction_others():
    config = cfg()
    faults = FaultConfig(drop=0.2, flip=0.2, duplicate=0.2, reorder=0.2)

    def trace(seed, lane, direction):
        return stream(config, faults, n=30, seed=seed, lane=lane, direction=direction)[2]

    first = trace(7, 1, "forward")
    assert trace(7, 1, "forward") == first
    assert trace(8, 1, "forward") != first
    assert trace(7, 0, "forward") != first
    assert trace(7, 1, "reverse") != first


def test_a_channel_without_faults_draws_nothing():
    channel, _, _ = stream(cfg(), FaultConfig(dead_at=10_000))
    fresh = np.random.default_rng([3, 1, 0])
    assert channel.rng.random() == fresh.random()


def test_make_channels_per_lane_faults_apply_to_both_directions():
    config = cfg(lanes=3)
    faults = [None, FaultConfig(dead_at=5), FaultConfig(drop=1.0)]
    forward, reverse = make_channels(config, faults, seed=9)
    assert [c.lane for c in forward] == [c.lane for c in reverse] == [0, 1, 2]
    assert {c.direction for c in forward} == {"forward"}
    assert {c.direction for c in reverse} == {"reverse"}
    assert forward[1].faults.dead_at == reverse[1].faults.dead_at == 5
    assert reverse[2].faults.drop == 1.0 and forward[0].faults == FaultConfig()
    one = make_channels(config, FaultConfig(flip=0.5), seed=1)
    assert all(c.faults.flip == 0.5 for side in one for c in side)
    with pytest.raises(ValueError, match=r"one FaultConfig per lane \(3\), not 2"):
        make_channels(config, faults[:2])


def test_next_delivery_and_skip():
    config = cfg(latency=7)
    channel = Channel(config)
    assert channel.next_delivery() is None
    for j in range(5):
        channel.step(1, j, int(j == 4))
    assert channel.next_delivery() == 4 + 7
    channel.skip(6)
    assert channel.cycle == 11 and channel.step() == (1, 0, 0)
    with pytest.raises(ValueError, match="a word comes out in cycle 12"):
        channel.skip(2)


# Configuration errors ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"drop": 1.5}, "drop must be a probability from 0 to 1, not 1.5"),
    ({"flip": -0.1}, "flip must be a probability from 0 to 1, not -0.1"),
    ({"duplicate": float("nan")}, "duplicate must be a probability from 0 to 1, not nan"),
    ({"reorder": "0.1"}, "reorder must be a probability (a number from 0 to 1), not '0.1'"),
    ({"drop": True}, "drop must be a probability (a number from 0 to 1), not True"),
    ({"reorder_delay": 0}, "reorder_delay must be None or from 1 to 1048576 (cycles), not 0"),
    ({"reorder_delay": 2.0}, "reorder_delay must be None or an integer (cycles), not 2.0"),
    ({"dead_at": -1},
     "dead_at must be None or from 0 to 4611686018427387904 (a cycle), not -1"),
])
def test_fault_config_is_checked(kwargs, message):
    with pytest.raises(ConfigError) as info:
        FaultConfig(**kwargs)
    assert str(info.value) == message


def test_channel_arguments_are_checked():
    config = cfg()
    with pytest.raises(ValueError, match="direction must be 'forward' or 'reverse'"):
        Channel(config, direction="up")
    with pytest.raises(ValueError, match="lane must be from 0 to 1, not 2"):
        Channel(config, lane=2)
    with pytest.raises(TypeError, match="faults must be a FaultConfig"):
        Channel(config, faults={"drop": 0.1})
    with pytest.raises(TypeError, match="config must be a LinkConfig"):
        Channel(None)

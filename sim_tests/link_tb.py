"""cocotb tests of the packet link (docs/ARCHITECTURE.md section 12): ``packet_link``, a
``hdl.PacketTx`` and a ``hdl.PacketRx`` side by side with every member as a top-level port
(``tx_*``, ``rx_*``; the wrapper is in ``test_link.py``, which builds it and runs these tests),
joined by ``emulator.channel.Channel`` objects that the bench steps in Python every cycle.

Cycle convention. The lanes' outputs of both ends are registered (they do not depend on the
lanes' inputs of the same cycle), so in every cycle t the bench, once the edge that starts t has
been processed (``ReadWrite``), reads what both ends drive on their outgoing lanes, steps every
channel once with it (``Channel.step``: the channel's output of t depends on what entered
before t only), and writes what the channels deliver in t on the other ends' incoming lanes:
they take it at the edge that ends t, exactly as ``tests/link_harness.py`` and
``emulator.link.LinkEmulator`` do. Then, in ``ReadOnly``, it samples ``done`` and the errors of
t. Cycle 0 is the first cycle after reset and the loading of the source memory (every word,
through the ``tx_load`` port; the ends are idle meanwhile, and nothing in them counts absolute
cycles).

Messages are offered as the harness offers them: the first ``start`` command in cycle 0, each
next one in the cycle after the previous message ended (the sender done and the receiver done).
The run ends after the last message ended, or at the start of the cycle in which the sender's
``error`` is first high (it arose in the cycle before); that cycle is the run's cycle count, the
counters are read in it (the state after the run), and nothing on the lanes is recorded from
it on; then the last message is read back through the receive buffer's read port
(``rx_read``: address in cycle t, word in t + 1).

Each scenario is compared with ``LinkEmulator`` (same configuration, faults and seed): every word
entering a channel (both directions, every lane, its cycle), the done cycles, the cycle count,
the error, the dead lanes, every counter, and the message read back.

Scenarios (seeds from ``designs.seed()``, i.e. ``SIM_TESTS_SEED``):

* ``clean``: two messages, no faults (no retransmission, every packet acknowledged once).
* ``faults``: two messages back to back through drops, bit flips, duplicates and reordering on
  every lane (late packets of the first meet the receiver as duplicates of a completed message).
* ``dead_lane``: lane 1 dies in cycle 40, lane 2 drops and flips, lane 0 duplicates and
  reorders; one message of 100 words.
* ``lanes_dead``: every lane dead from cycle 0: the sender ends with LANES_DEAD.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, ReadWrite, RisingEdge

from emulator.channel import FaultConfig, make_channels
from emulator.link import LinkEmulator
from mesh.link import DropCause, LinkConfig, TxError

from . import designs
from .tb import _read, _Writer

__all__ = ["LINK_CONFIG", "TX_NODE", "RX_NODE", "LinkBench"]

#: The design under test: four lanes of 16 bits (a word every 2 cycles), short channels, small
#: packets and memories, so that a scenario takes a few hundred to a thousand cycles.
LINK_CONFIG = LinkConfig(lanes=4, lane_width=16, latency=6, max_payload=8, window=8,
                         nack_gap=4, ack_queue=3, lane_dead_after=3, buffer_words=128,
                         source_words=128)
TX_NODE, RX_NODE = 1, 2
CFG = LINK_CONFIG
MASK = 0xFFFFFFFF
TX_COUNTERS = ("sent", "retransmits", "timeouts", "acks", "nacks")
RX_COUNTERS = ("accepted", "acks", "nacks", "ack_drops")
IDLE = (0, 0, 0)


class _Lane:
    """The three signals of one lane at ``prefix`` (``tx_data_out__0``, ...)."""

    def __init__(self, dut, prefix, writable):
        self.prefix = prefix
        handles = [getattr(dut, f"{prefix}__{name}") for name in ("valid", "data", "last")]
        if writable:
            self.writers = [_Writer(h) for h in handles]
        else:
            self.valid, self.data, self.last = handles

    def read(self, cycle):
        if not _read(self.valid, cycle, f"{self.prefix}.valid"):
            return IDLE
        return (1, _read(self.data, cycle, f"{self.prefix}.data"),
                _read(self.last, cycle, f"{self.prefix}.last"))

    def write(self, value):
        for writer, v in zip(self.writers, value):
            writer.set(v)


class LinkBench:
    """One run of ``messages`` ((words, src, message id) each) through channels made by
    ``make_channels(LINK_CONFIG, faults, seed)`` (the module docstring has the cycle rules).
    :meth:`run` returns a dict with the RTL's ``trace`` ((cycle, lane, direction, word, last)
    per word entering a channel), ``tx_done``/``rx_done`` (cycles), ``rx_done_messages``,
    ``cycles``, ``error``, ``error_seq``, ``lane_dead``, ``tx``/``rx`` counters (``drops`` as
    {DropCause: n}, nonzero only) and ``received`` (the last message read back)."""

    def __init__(self, dut, messages, faults=None, seed=0, *, max_cycles=20000):
        self.dut = dut
        self.messages = [([int(w) & MASK for w in words], src, message)
                         for words, src, message in messages]
        spans = sorted((src, src + len(words)) for words, src, _ in self.messages)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "overlapping messages"
        self.faults, self.seed, self.max_cycles = faults, seed, max_cycles
        self.log = dut._log
        L = CFG.lanes
        self.outs = [(_Lane(dut, f"tx_data_out__{l}", False), _Lane(dut, f"rx_ack_out__{l}", False))
                     for l in range(L)]
        self.ins = [(_Lane(dut, f"rx_data_in__{l}", True), _Lane(dut, f"tx_ack_in__{l}", True))
                    for l in range(L)]
        self.start = {name: _Writer(getattr(dut, f"tx_start__{name}"))
                      for name in ("valid", "src", "length", "dst", "message")}
        self.load = {name: _Writer(getattr(dut, f"tx_load__{name}"))
                     for name in ("en", "addr", "data")}
        self.read_addr = _Writer(dut.rx_read__addr)
        self.clock = Clock(dut.clk, 10, unit="ns")

    async def _reset_and_load(self):
        dut = self.dut
        self.clock.start()
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        memory = [0] * CFG.source_words
        for words, src, _ in self.messages:
            memory[src:src + len(words)] = words
        self.load["en"].set(1)
        for address, word in enumerate(memory):
            self.load["addr"].set(address)
            self.load["data"].set(word)
            await RisingEdge(dut.clk)
        self.load["en"].set(0)

    async def run(self):
        dut = self.dut
        await self._reset_and_load()
        forward, reverse = make_channels(CFG, self.faults, self.seed)
        channels = list(zip(forward, reverse))
        result = dict(trace=[], tx_done=[], rx_done=[], rx_done_messages=[])
        pending = list(self.messages)
        offer_at, stop_at, offered = 0, None, False
        tx_seen = rx_seen = 0
        for t in range(self.max_cycles):
            # The edge that starts cycle t has been awaited (by the loading or the last cycle).
            await ReadWrite()
            # An error (registered: it arose in t - 1) ends the run at the start of t.
            if stop_at is None and _read(dut.tx_error, t, "tx_error"):
                stop_at = t
            if t == stop_at:
                break
            if offered:
                self.start["valid"].set(0)
                offered = False
            if t == offer_at and pending:
                words, src, message = pending.pop(0)
                self.start["valid"].set(1)
                self.start["src"].set(src)
                self.start["length"].set(4 * len(words))
                self.start["dst"].set(RX_NODE)
                self.start["message"].set(message)
                offered = True
            for l in range(CFG.lanes):
                for d, direction in enumerate(("forward", "reverse")):
                    word = self.outs[l][d].read(t)
                    if word[0]:
                        result["trace"].append((t, l, direction, word[1], word[2]))
                    self.ins[l][d].write(channels[l][d].step(*word))
            await ReadOnly()
            if _read(dut.tx_done, t, "tx_done"):
                result["tx_done"].append(t)
            if _read(dut.rx_done, t, "rx_done"):
                result["rx_done"].append(t)
                result["rx_done_messages"].append(_read(dut.rx_done_message, t, "done_message"))
            if stop_at is None and len(result["tx_done"]) > tx_seen \
                    and len(result["rx_done"]) > rx_seen:
                if pending:
                    offer_at = t + 1
                    tx_seen, rx_seen = len(result["tx_done"]), len(result["rx_done"])
                else:
                    stop_at = t + 1
            await RisingEdge(dut.clk)
        else:
            raise AssertionError(f"the link did not finish within {self.max_cycles} cycles")
        # Cycle stop_at: the state at its start is the state after the run; lanes idle from now.
        t = stop_at
        result["cycles"] = t
        for lanes in self.ins:
            for lane in lanes:
                lane.write(IDLE)
        await ReadOnly()
        result["error"] = _read(dut.tx_error, t, "tx_error")
        result["error_seq"] = _read(dut.tx_error_seq, t, "tx_error_seq")
        result["lane_dead"] = _read(dut.tx_lane_dead, t, "tx_lane_dead")
        for side, names in (("tx", TX_COUNTERS), ("rx", RX_COUNTERS)):
            counters = {name: _read(getattr(dut, f"{side}_{name}"), t, f"{side}_{name}")
                        for name in names}
            drops = _read(getattr(dut, f"{side}_drops"), t, f"{side}_drops")
            counters["drops"] = {cause: n for cause in DropCause
                                 if (n := drops >> (32 * cause) & MASK)}
            result[side] = counters
        # Read the last message back: address in cycle t, word in t + 1.
        words = self.messages[-1][0]
        received = []
        for i in range(len(words) + 1):
            await RisingEdge(dut.clk)
            if i < len(words):
                self.read_addr.set(i)
            await ReadOnly()
            if i > 0:
                received.append(_read(dut.rx_read__data, t + i, "rx_read.data"))
        result["received"] = received
        self.clock.stop()
        return result


def emulate(messages, faults, seed):
    """The same messages on ``LinkEmulator``; returns (the emulator, its results)."""
    emulator = LinkEmulator(CFG, faults, seed, TX_NODE, RX_NODE, trace=True)
    results = []
    for words, src, message in messages:
        results.append(emulator.send(words, src=src, message=message))
        if results[-1].error:
            break
    return emulator, results


def compare(run, messages, faults, seed):
    """Every word entering a channel, the done cycles, the cycle count, the error and counters,
    and the message received must equal the emulator's. Returns the emulator's last result."""
    emulator, results = emulate(messages, faults, seed)
    mine, theirs = sorted(run["trace"]), sorted(emulator.trace)
    for k, (a, b) in enumerate(zip(mine, theirs)):
        assert a == b, f"channel word {k}: RTL {a}, emulator {b}"
    assert len(mine) == len(theirs), f"{len(mine)} channel words, the emulator {len(theirs)}"
    last = results[-1]
    assert run["tx_done"] == [r.done_cycle for r in results if r.done_cycle is not None]
    assert run["rx_done"] == [r.rx_done_cycle for r in results if r.rx_done_cycle is not None]
    assert run["rx_done_messages"] == [r.message for r in results
                                       if r.rx_done_cycle is not None]
    assert run["cycles"] == last.cycles, f"cycles: RTL {run['cycles']}, emulator {last.cycles}"
    assert (run["error"], run["error_seq"]) == (last.error, emulator.tx.error_seq)
    assert run["lane_dead"] == sum(1 << lane for lane in last.lanes_dead)
    assert run["tx"] == {"sent": last.sent, "retransmits": last.retransmits,
                         "timeouts": last.timeouts, "acks": last.acks_received,
                         "nacks": last.nacks_received, "drops": last.tx_drops}
    assert run["rx"] == {"accepted": last.accepted, "acks": last.acks_sent,
                         "nacks": last.nacks_sent, "ack_drops": last.ack_drops,
                         "drops": last.rx_drops}
    if not last.error:
        assert run["received"] == list(last.words) == messages[-1][0], \
            "the message read back differs"
    return last


def words_of(name, count):
    rng = random.Random(f"{designs.seed()}:{name}")
    return [rng.getrandbits(32) for _ in range(count)]


async def scenario(dut, name, messages, faults, *, ok=True):
    seed = designs.seed()
    bench = LinkBench(dut, messages, faults, seed)
    run = await bench.run()
    last = compare(run, bench.messages, faults, seed)
    if ok:
        assert last.ok and len(run["rx_done"]) == len(messages), \
            f"{name}: the link did not deliver every message ({last.error.name})"
    dut._log.info("%s: %d cycles, %d channel words, %d retransmits, dead lanes %s, error %s; "
                  "equal to the emulator", name, run["cycles"], len(run["trace"]),
                  run["tx"]["retransmits"], last.lanes_dead, TxError(run["error"]).name)
    return run, last


FAULTS = FaultConfig(drop=0.1, flip=0.05, duplicate=0.15, reorder=0.15)


@cocotb.test()
async def clean(dut):
    run, last = await scenario(dut, "clean", [(words_of("clean0", 45), 0, 0x7FF),
                                              (words_of("clean1", 37), 45, 0)], None)
    assert run["tx"]["retransmits"] == 0 and run["rx"]["drops"] == {}
    assert run["tx"]["sent"] == run["tx"]["acks"] == 6 + 5


@cocotb.test()
async def faults(dut):
    run, last = await scenario(dut, "faults", [(words_of("faults0", 60), 0, 5),
                                               (words_of("faults1", 50), 60, 6)], FAULTS)
    assert sum(last.channels[k] for k in ("dropped", "flipped", "duplicated", "reordered"))


@cocotb.test()
async def dead_lane(dut):
    lanes = [FaultConfig(duplicate=0.2, reorder=0.2), FaultConfig(dead_at=40),
             FaultConfig(drop=0.2, flip=0.1), None]
    run, last = await scenario(dut, "dead_lane", [(words_of("dead", 100), 0, 9)], lanes)
    assert last.channels["lost_dead"] > 0


@cocotb.test()
async def lanes_dead(dut):
    run, last = await scenario(dut, "lanes_dead", [(words_of("all_dead", 40), 0, 1)],
                               FaultConfig(dead_at=0), ok=False)
    assert run["error"] == TxError.LANES_DEAD and run["lane_dead"] == (1 << CFG.lanes) - 1
    assert run["tx_done"] == [] and run["rx_done"] == []

"""A packet link in one Amaranth simulation: :class:`hdl.PacketTx` and :class:`hdl.PacketRx`
with Python lane channels between them (``emulator.channel.Channel``, docs/ARCHITECTURE.md
section 12, "Channels and faults").

Cycle 0 is the first cycle of a job (right after the simulator's reset). In every cycle t the
test bench reads what both ends drive on their outgoing lanes (registers and memory outputs: they
do not depend on the lanes' inputs in the same cycle), steps every channel once with it, and
drives what the channels deliver in t on the other ends' inputs before the clock edge that ends
t. The start command is offered in cycle ``start_cycle`` (the sender is idle after reset, so it
is taken in that cycle).
"""

from dataclasses import dataclass, field

from amaranth.hdl import Module

from emulator.channel import make_channels
from hdl.packet_rx import PacketRx
from hdl.packet_tx import PacketTx
from mesh.link import DropCause

from sim_bench import Bench

TX_COUNTERS = ("sent", "retransmits", "timeouts", "acks", "nacks")
RX_COUNTERS = ("accepted", "acks", "nacks", "ack_drops")


class Scripted:
    """A channel that loses the packets whose entry index (0, 1, ..) is in ``drop`` before they
    reach the wrapped :class:`emulator.channel.Channel` (words entering with valid low are
    ignored)."""

    def __init__(self, channel, drop=()):
        self.inner, self.drop, self.index = channel, set(drop), 0

    def step(self, valid=0, word=0, last=0):
        keep = self.index not in self.drop
        if valid and last:
            self.index += 1
        return self.inner.step(valid and keep, word, last)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def scripted(config, forward_drops=(), reverse_drops=()):
    """Channels without faults, losing the listed packets of lane 0: a (forward, reverse)
    pair of lists, as ``make_channels`` returns."""
    forward, reverse = make_channels(config)
    forward[0] = Scripted(forward[0], forward_drops)
    reverse[0] = Scripted(reverse[0], reverse_drops)
    return forward, reverse


@dataclass
class LinkRun:
    """What a run of the link did. ``trace``: (cycle, direction, lane, word, last) for every word
    entering a channel ("forward": from the sender, "reverse": from the receiver), in cycle
    order, then direction, then lane. ``tx_done``/``rx_done``: the cycles ``done`` was high.
    ``tx``/``rx``: the counters at the end (``drops`` as {DropCause: count}, nonzero only);
    ``received``: the receive buffer's first words (as many as the message has)."""
    cycles: int = 0
    tx_done: list = field(default_factory=list)
    rx_done: list = field(default_factory=list)
    rx_done_messages: list = field(default_factory=list)
    error: int = 0
    error_seq: int = 0
    lane_dead: int = 0
    tx: dict = field(default_factory=dict)
    rx: dict = field(default_factory=dict)
    received: list = field(default_factory=list)
    trace: list = field(default_factory=list)


def _drops(ctx, member):
    return {cause: n for cause in DropCause if (n := ctx.get(member[cause]))}


class LinkHarness:
    """A sender (node ``tx_node``) and a receiver (``rx_node``) of ``config`` in one reusable
    simulator; :meth:`run` sends one message through seeded channels."""

    def __init__(self, config, tx_node=1, rx_node=2):
        self.config = config
        self.tx = PacketTx(config, tx_node, rx_node)
        self.rx = PacketRx(config, rx_node, tx_node)
        self.tx_node, self.rx_node = tx_node, rx_node
        top = Module()
        top.submodules.tx = self.tx
        top.submodules.rx = self.rx
        self.bench = Bench(top)

    def run(self, words, faults=None, seed=0, *, src=0, message=1, **kwargs):
        """Send one message: :meth:`run_messages` with ``[(words, src, message)]``."""
        return self.run_messages([(words, src, message)], faults, seed, **kwargs)

    def run_messages(self, messages, faults=None, seed=0, *, start_cycle=0, max_cycles=20000,
                     trace=False, tail=0, channels=None):
        """Send ``messages``, (words, src, message id) each, in order through channels with
        ``faults`` (``make_channels``: None, one FaultConfig, or one per lane): all the words
        are loaded into the source memory first (the regions must not overlap); the first
        command is offered in cycle ``start_cycle``, each next one in the cycle after the
        previous message ended (the sender done and the receiver done); a sender error ends
        the run. Then ``tail`` more cycles run, at most ``max_cycles`` cycles in all.
        ``received``: the receive buffer's words of the last message. ``channels``: a (forward,
        reverse) pair of lists of fresh channels to use instead (e.g. :func:`scripted`)."""
        tx, rx, lanes = self.tx, self.rx, self.config.lanes
        if channels is None:
            channels = make_channels(self.config, faults, seed)
        forward, reverse = channels
        messages = [([int(w) & 0xFFFFFFFF for w in words], src, message)
                    for words, src, message in messages]
        spans = sorted((src, src + len(words)) for words, src, _ in messages)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "overlapping messages"

        async def job(ctx):
            result = LinkRun()
            for words, src, _ in messages:
                for i, w in enumerate(words):
                    ctx.set(tx.source.data[src + i], w)
            outs = [(tx.data_out[l], rx.ack_out[l]) for l in range(lanes)]
            ins = [(rx.data_in[l], tx.ack_in[l]) for l in range(lanes)]
            driven = [[(0, 0, 0), (0, 0, 0)] for _ in range(lanes)]
            channels = list(zip(forward, reverse))
            pending = list(messages)
            offer_at, stop_at, offered = start_cycle, None, False
            tx_seen = rx_seen = 0
            for t in range(max_cycles):
                if offered:
                    ctx.set(tx.start.valid, 0)
                    offered = False
                if t == offer_at and pending:
                    words, src, message = pending.pop(0)
                    ctx.set(tx.start.valid, 1)
                    ctx.set(tx.start.src, src)
                    ctx.set(tx.start.length, 4 * len(words))
                    ctx.set(tx.start.dst, self.rx_node)
                    ctx.set(tx.start.message, message)
                    offered = True
                for l in range(lanes):
                    for d, (out, inp, channel) in enumerate(zip(outs[l], ins[l], channels[l])):
                        valid = ctx.get(out.valid)
                        word, last = (ctx.get(out.data), ctx.get(out.last)) if valid else (0, 0)
                        if valid and trace:
                            result.trace.append((t, ("forward", "reverse")[d], l, word, last))
                        delivered = channel.step(valid, word, last)
                        if delivered != driven[l][d]:
                            ctx.set(inp.valid, delivered[0])
                            ctx.set(inp.data, delivered[1])
                            ctx.set(inp.last, delivered[2])
                            driven[l][d] = delivered
                if ctx.get(tx.done):
                    result.tx_done.append(t)
                if ctx.get(rx.done):
                    result.rx_done.append(t)
                    result.rx_done_messages.append(ctx.get(rx.done_message))
                await ctx.tick()
                result.cycles = t + 1
                if stop_at is None:
                    error = ctx.get(tx.error)
                    ended = (len(result.tx_done) > tx_seen or error) and (
                        len(result.rx_done) > rx_seen or error)
                    if ended and pending and not error:
                        offer_at = t + 1
                        tx_seen, rx_seen = len(result.tx_done), len(result.rx_done)
                    elif ended:
                        stop_at = t + 1 + tail
                if stop_at is not None and result.cycles >= stop_at:
                    break
            result.error, result.error_seq = ctx.get(tx.error), ctx.get(tx.error_seq)
            result.lane_dead = ctx.get(tx.lane_dead)
            result.tx = {name: ctx.get(getattr(tx, name)) for name in TX_COUNTERS}
            result.tx["drops"] = _drops(ctx, tx.drops)
            result.rx = {name: ctx.get(getattr(rx, name)) for name in RX_COUNTERS}
            result.rx["drops"] = _drops(ctx, rx.drops)
            last = messages[-1][0]
            result.received = [ctx.get(rx.buffer.data[i]) for i in range(len(last))]
            return result

        return self.bench.execute(job)

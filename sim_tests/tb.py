"""cocotb 2 building blocks for the fabric's link protocol (docs/ARCHITECTURE.md, section 3).

In the style of the cocotbext-axi test benches, with the cocotb 2 API: :class:`LinkDriver`
injects wavelets on an inbound link honouring credits, :class:`LinkMonitor` drains an outbound
link into its own per-color buffer and returns credits, pause generators model idle senders and
backpressuring receivers, :class:`Scoreboard` checks ordered delivery, and :class:`TB` owns the
clock, the reset and one cycle loop that runs every driver and monitor.

Cycle convention
----------------
Cycle ``t`` is the clock period that starts at a rising edge. The router's outputs (``valid``,
``color``, ``data`` of an outbound link, ``credit`` of an inbound link) are combinational from
registered state (section 5), so they are settled once that edge has been processed. The single
cycle loop of :class:`TB` does, for every cycle ``t``::

    await RisingEdge(clk)        # edge that starts cycle t (state of cycle t now in the flops)
    component.drive(t)           # every driver/monitor writes its inputs for cycle t
    await ReadOnly()             # everything settled: inputs and outputs of cycle t
    component.sample(t)          # every driver/monitor reads the outputs of cycle t

Writes made right after the edge are seen by the flops at the *next* edge (edge t+1), exactly
like a registered agent driving a link in cycle t. Sampling in ``ReadOnly`` reads the values of
cycle t on both simulators (Icarus evaluates the callback of ``RisingEdge`` before its
non-blocking assignments and Verilator after them, so values read straight at the edge would
differ; ``ReadOnly`` is after both). Decisions taken in ``drive(t)`` only use what was sampled in
cycles ``< t``, as the spec demands of an agent:

* a wavelet a driver puts on an inbound link in cycle t is in the router's queue at the start of
  cycle t+1; a credit bit it samples in cycle t is usable from cycle t+1 on;
* a wavelet a monitor samples on an outbound link in cycle t is in its buffer from cycle t+1 on,
  so the earliest credit for it is returned in cycle t+1 (the two-cycle credit loop of
  section 3: with ``buffer_depth`` 2 and no backpressure a color runs at one wavelet per cycle).

So "a wavelet injected in cycle t and received in cycle t + k" has a latency of k cycles; through
one router k = 1 (section 5, Timing), through n routers of a straight route k = n.

Cycle 0 is the first cycle after reset: ``rst`` is released by the same write that drives the
inputs of cycle 0, so the state during cycle 0 is the reset state (as in ``emulator``'s first
``step``).

Pause generators yield one value per cycle; a truthy value pauses the agent for that cycle (a
driver sends nothing, a monitor takes nothing out of its buffer and so returns no credit). They
are advanced once per cycle whether or not the agent has anything to do, like cocotbext-axi's.
"""

import itertools
import random
from collections import defaultdict, deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["never", "pattern", "random_pause", "bursty_pause", "LinkHandles", "LinkDriver",
           "LinkMonitor", "Scoreboard", "TB", "ProtocolViolation"]


# Pause generators -------------------------------------------------------------------------------

def never():
    """Never pause: a driver sends whenever it has a wavelet and a credit; a monitor returns a
    credit the cycle after each wavelet."""
    return itertools.repeat(0)


def pattern(values):
    """Repeat ``values`` forever, e.g. ``pattern([1, 1, 0])``: paused two cycles out of three."""
    return itertools.cycle(values)


def random_pause(probability, seed):
    """Pause each cycle independently with ``probability`` (seeded, so reproducible)."""
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


def bursty_pause(seed, *, max_run=8, busy=0.5):
    """Runs of pauses and runs of activity of random lengths 1..max_run: stresses full queues
    and long stalls more than independent pauses do. ``busy`` is the fraction of runs that
    pause."""
    rng = random.Random(seed)
    while True:
        value = rng.random() < busy
        for _ in range(rng.randint(1, max_run)):
            yield value


# Links ------------------------------------------------------------------------------------------

class ProtocolViolation(AssertionError):
    """The DUT broke the link protocol (a credit it was not owed, a wavelet without a credit)."""


class LinkHandles:
    """The four signals of one link in the generated Verilog: ``{prefix}__valid``,
    ``{prefix}__color``, ``{prefix}__data`` and ``{prefix}__credit`` (section 6), e.g. prefix
    ``ramp_in__2__1`` or ``o__4``."""

    def __init__(self, dut, prefix):
        self.prefix = prefix
        try:
            self.valid = getattr(dut, f"{prefix}__valid")
            self.color = getattr(dut, f"{prefix}__color")
            self.data = getattr(dut, f"{prefix}__data")
            self.credit = getattr(dut, f"{prefix}__credit")
        except AttributeError as error:
            raise AttributeError(f"the DUT has no link {prefix!r} (expected signals "
                                 f"{prefix}__valid/color/data/credit): {error}") from None


def _read(handle, cycle, what):
    """The integer value of ``handle``, or :class:`ProtocolViolation` naming the signal and the
    cycle if it holds X or Z (an unknown on a link is a bug, never a value to guess)."""
    value = handle.value
    try:
        return int(value)
    except ValueError:
        raise ProtocolViolation(f"cycle {cycle}: {what} {handle._name} is {value} (X/Z): the "
                                f"DUT drives an unknown value") from None


class _Writer:
    """Writes a signal only when its value changes (every write costs a simulator call)."""

    __slots__ = ("handle", "last")

    def __init__(self, handle, value=0):
        self.handle = handle
        self.last = value
        handle.value = value

    def set(self, value):
        if value != self.last:
            self.handle.value = value
            self.last = value


class LinkDriver:
    """The sending agent of an inbound link: injects queued wavelets honouring credits.

    It holds one credit counter per color, starting at ``buffer_depth``; sending a wavelet of
    color c takes one, and every ``credit`` bit c the DUT sets gives one back (usable from the
    next cycle). Each unpaused cycle it sends the oldest queued wavelet whose color has a credit,
    so each color stays in order while a color out of credits does not block the others
    (``in_order=True``: strictly the oldest, head-of-line blocking like a simple core).

    ``sent`` records ``(cycle, color, data)`` of every wavelet put on the link;
    ``credit_log`` records ``(cycle, credit_bits)`` of every cycle with a non-zero credit.
    A credit that would take a counter above ``buffer_depth`` raises :class:`ProtocolViolation`.
    """

    def __init__(self, dut, prefix, colors, buffer_depth, *, pause=None, in_order=False,
                 name=None, on_send=None):
        self.link = LinkHandles(dut, prefix)
        self.name = name or prefix
        self.colors = colors
        self.depth = buffer_depth
        self.credits = [buffer_depth] * colors
        self.pause = pause if pause is not None else never()
        self.in_order = in_order
        self.on_send = on_send
        self._queues = [deque() for _ in range(colors)]  # per color: (seq, data)
        self._seq = 0
        self._pending = 0
        self.sent = []
        self.credit_log = []
        self.sending = None  # (color, data) driven this cycle, or None
        self._valid = _Writer(self.link.valid)
        self._color = _Writer(self.link.color)
        self._data = _Writer(self.link.data)

    def set_pause_generator(self, generator=None):
        """As in cocotbext-axi: a truthy value per cycle pauses the agent (None: never)."""
        self.pause = generator if generator is not None else never()

    def send(self, color, data):
        """Queue a wavelet for injection (non-blocking)."""
        if not 0 <= color < self.colors:
            raise ValueError(f"{self.name}: color {color} out of range 0..{self.colors - 1}")
        self._queues[color].append((self._seq, data))
        self._seq += 1
        self._pending += 1

    @property
    def pending(self):
        """Wavelets queued and not yet on the link."""
        return self._pending

    @property
    def idle(self):
        """Nothing queued, and every credit is back (nothing of ours left in the DUT queue)."""
        return self._pending == 0 and all(c == self.depth for c in self.credits)

    def _choose(self):
        """The color to send this cycle, or None."""
        best, best_seq = None, None
        for color, queue in enumerate(self._queues):
            if queue and (self.in_order or self.credits[color] > 0):
                seq = queue[0][0]
                if best_seq is None or seq < best_seq:
                    best, best_seq = color, seq
        if best is not None and self.credits[best] == 0:
            return None  # in_order: the oldest wavelet waits for its credit
        return best

    def drive(self, cycle):
        paused = next(self.pause)
        self.sending = None
        if self._pending and not paused:
            color = self._choose()
            if color is not None:
                _, data = self._queues[color].popleft()
                self._pending -= 1
                self.credits[color] -= 1
                self.sending = (color, data)
                self.sent.append((cycle, color, data))
                if self.on_send is not None:
                    self.on_send(self, cycle, color, data)
        if self.sending is None:
            self._valid.set(0)
        else:
            self._valid.set(1)
            self._color.set(self.sending[0])
            self._data.set(self.sending[1])

    def sample(self, cycle):
        bits = _read(self.link.credit, cycle, "credit")
        if bits:
            self.credit_log.append((cycle, bits))
            for color in range(self.colors):
                if bits >> color & 1:
                    self.credits[color] += 1
                    if self.credits[color] > self.depth:
                        raise ProtocolViolation(
                            f"cycle {cycle}: the DUT returned a credit for color {color} on "
                            f"{self.name} that was not owed (counter would be "
                            f"{self.credits[color]} > buffer_depth {self.depth})")


class LinkMonitor:
    """The receiving agent of an outbound link: records every wavelet with its cycle, keeps it
    in its own ``buffer_depth``-deep per-color buffer, and takes it out (returning a ``credit``
    bit) in a later unpaused cycle. Each unpaused cycle it takes the oldest wavelet of every
    color that has one (so at most one credit per color per cycle, as a router would).

    A wavelet arriving while its color's buffer is full means the DUT sent without a credit:
    :class:`ProtocolViolation`. ``received`` holds ``(cycle, color, data)``; ``callback(monitor,
    cycle, color, data)`` is called for each; ``credit_log`` holds ``(cycle, credit_bits)`` for
    every cycle with a non-zero credit.
    """

    def __init__(self, dut, prefix, colors, buffer_depth, *, pause=None, name=None,
                 callback=None):
        self.link = LinkHandles(dut, prefix)
        self.name = name or prefix
        self.colors = colors
        self.depth = buffer_depth
        self.pause = pause if pause is not None else never()
        self.callback = callback
        self.buffers = [deque() for _ in range(colors)]
        self.held = 0
        self.received = []
        self.credit_log = []
        self.returning = 0  # credit bits driven this cycle
        self._credit = _Writer(self.link.credit)

    def set_pause_generator(self, generator=None):
        """As in cocotbext-axi: a truthy value per cycle withholds credits (None: never)."""
        self.pause = generator if generator is not None else never()

    @property
    def idle(self):
        return self.held == 0

    def drive(self, cycle):
        paused = next(self.pause)
        bits = 0
        if self.held and not paused:
            for color, buffer in enumerate(self.buffers):
                if buffer:
                    buffer.popleft()
                    bits |= 1 << color
                    self.held -= 1
        self.returning = bits
        if bits:
            self.credit_log.append((cycle, bits))
        self._credit.set(bits)

    def sample(self, cycle):
        if not _read(self.link.valid, cycle, "valid"):
            return
        color = _read(self.link.color, cycle, "color")
        data = _read(self.link.data, cycle, "data")
        if not 0 <= color < self.colors:
            raise ProtocolViolation(f"cycle {cycle}: {self.name} carries color {color}, out of "
                                    f"range 0..{self.colors - 1}")
        if len(self.buffers[color]) >= self.depth:
            raise ProtocolViolation(
                f"cycle {cycle}: {self.name} sent a wavelet of color {color} (data {data:#x}) "
                f"without a credit: the receiver's buffer already holds {self.depth}")
        self.buffers[color].append(data)
        self.held += 1
        self.received.append((cycle, color, data))
        if self.callback is not None:
            self.callback(self, cycle, color, data)


# Checking ---------------------------------------------------------------------------------------

class Scoreboard:
    """Ordered expectations per key (e.g. (destination, source, color)).

    ``expect(key, item)`` appends; ``receive(key, item)`` must match the oldest expectation of
    that key. Mismatches and unexpected items are collected (with context) rather than raised at
    once, so one run reports them all; :meth:`check` raises if any problem or any expectation is
    left.
    """

    def __init__(self, name="scoreboard", max_errors=20):
        self.name = name
        self.expected = defaultdict(deque)
        self.errors = []
        self.max_errors = max_errors
        self.matched = 0

    def expect(self, key, item):
        self.expected[key].append(item)

    def receive(self, key, item, context=""):
        queue = self.expected.get(key)
        if not queue:
            self._error(f"{context}unexpected {item!r} for {key!r}")
            return False
        want = queue.popleft()
        if want != item:
            self._error(f"{context}for {key!r} expected {want!r}, got {item!r}")
            return False
        self.matched += 1
        return True

    def _error(self, text):
        if len(self.errors) < self.max_errors:
            self.errors.append(text)
        elif len(self.errors) == self.max_errors:
            self.errors.append("... (more errors)")

    @property
    def outstanding(self):
        return sum(len(q) for q in self.expected.values())

    def check(self):
        problems = list(self.errors)
        missing = [(k, list(q)[:3], len(q)) for k, q in self.expected.items() if q]
        for key, head, count in missing[:self.max_errors]:
            problems.append(f"missing {count} item(s) for {key!r}, first {head!r}")
        if problems:
            raise AssertionError(f"{self.name}: {len(self.errors)} error(s), "
                                 f"{sum(m[2] for m in missing)} missing, {self.matched} matched:"
                                 "\n  " + "\n  ".join(problems))


# The test bench ---------------------------------------------------------------------------------

class TB:
    """Clock, reset, and the cycle loop over drivers and monitors (see the module docstring for
    the cycle convention).

    ``config`` is the :class:`mesh.MeshConfig` (for ``colors`` and ``buffer_depth``). Create
    drivers and monitors with :meth:`driver` and :meth:`monitor` before :meth:`reset`; ``tb.cycle``
    is the current cycle (-1 until cycle 0 starts). ``hooks`` are callables ``hook(cycle)`` run
    after every component has sampled (e.g. a traffic generator that queues more wavelets).
    """

    def __init__(self, dut, config, *, period_ns=10):
        self.dut = dut
        self.config = config
        self.log = dut._log
        self.period_ns = period_ns
        self.cycle = -1
        self.components = []
        self.drivers = {}
        self.monitors = {}
        self.hooks = []
        self.scoreboard = Scoreboard()
        self._writers = []
        self._loop = None
        self._failure = None
        self.clock = Clock(dut.clk, period_ns, unit="ns")
        self.clock.start()

    def driver(self, prefix, *, pause=None, name=None, **kwargs):
        drv = LinkDriver(self.dut, prefix, self.config.colors, self.config.buffer_depth,
                         pause=pause, name=name, **kwargs)
        self.drivers[name or prefix] = drv
        self.components.append(drv)
        return drv

    def monitor(self, prefix, *, pause=None, name=None, **kwargs):
        mon = LinkMonitor(self.dut, prefix, self.config.colors, self.config.buffer_depth,
                          pause=pause, name=name, **kwargs)
        self.monitors[name or prefix] = mon
        self.components.append(mon)
        return mon

    def tie_off(self, *names, value=0):
        """Hold DUT inputs that no component drives (e.g. the route write port) at ``value``."""
        for name in names:
            self._writers.append(_Writer(getattr(self.dut, name), value))

    async def reset(self, cycles=3):
        """Hold ``rst`` for ``cycles`` edges with every link idle, then start the cycle loop;
        returns at the start of cycle 0 (after its inputs are driven)."""
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self._loop = cocotb.start_soon(self._run())
        while self.cycle < 0:
            await RisingEdge(self.dut.clk)

    def stop(self):
        """Stop the cycle loop and the clock (to hand the DUT to another TB in the same test)."""
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        self.clock.stop()

    async def _run(self):
        clk = self.dut.clk
        first = True
        try:
            while True:
                self.cycle += 1
                if first:
                    self.dut.rst.value = 0
                    first = False
                for component in self.components:
                    component.drive(self.cycle)
                await ReadOnly()
                for component in self.components:
                    component.sample(self.cycle)
                for hook in self.hooks:
                    hook(self.cycle)
                await RisingEdge(clk)
        except Exception as error:  # surfaced by wait()/cycles() in the test's own coroutine
            self._failure = error
            raise

    def _raise_failure(self):
        if self._failure is not None:
            raise self._failure

    async def cycles(self, n):
        """Let ``n`` cycles pass."""
        for _ in range(n):
            await RisingEdge(self.dut.clk)
            self._raise_failure()

    async def wait(self, condition, *, timeout, what="condition", poll=8):
        """Wait until ``condition()`` holds (checked every ``poll`` cycles, after sampling); fail
        after ``timeout`` cycles, describing what is still in flight (:meth:`status`)."""
        start = self.cycle
        while not condition():
            if self.cycle - start > timeout:
                raise AssertionError(f"timeout after {timeout} cycles (cycle {self.cycle}) "
                                     f"waiting for {what}; " + "; ".join(self.status()))
            await self.cycles(poll)
        self._raise_failure()

    def status(self):
        """Readable lines about every agent that is not idle."""
        lines = []
        for name, drv in self.drivers.items():
            if not drv.idle:
                lines.append(f"driver {name}: {drv.pending} queued, {len(drv.sent)} sent, "
                             f"credits {drv.credits}")
        for name, mon in self.monitors.items():
            if not mon.idle:
                lines.append(f"monitor {name}: holds {mon.held}, {len(mon.received)} received")
        return lines or ["every agent is idle"]

    def quiet(self):
        """Every driver has sent everything and got every credit back, and every monitor has
        emptied its buffer."""
        return (all(d.idle for d in self.drivers.values())
                and all(m.idle for m in self.monitors.values()))

    async def drain(self, *, timeout, extra=None):
        """Wait until :meth:`quiet` (and ``extra()`` if given) hold."""
        await self.wait(lambda: self.quiet() and (extra is None or extra()), timeout=timeout,
                        what="all traffic to drain")

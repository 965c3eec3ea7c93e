"""cocotb tests of the prefill engine (``hdl.PrefillEngine(designs.PREFILL_CONFIG,
external_dram=True)``, module ``prefill``; run by ``test_prefill.py``) with the DRAM played by the
bench: :class:`DramAgent` serves the engine's ``dram_req``/``dram_resp`` channel in Python.

Cycle convention: as in :mod:`sim_tests.tb` (cycle 0 is the first cycle with ``run`` high; every
agent drives its inputs of cycle t right after the edge that starts t, and samples the outputs of
t in ``ReadOnly``).

**The DRAM agent** implements the channel rule of docs/ARCHITECTURE.md section 11 (and
:mod:`hdl.dma`) with its own ``bandwidth``, ``latency`` (at least 1) and ``queue``: a request is
issued in cycle s when ``dram_req.valid`` and ``dram_req.ready`` are both high in s; it may start
in s + latency (+ a per-request random extra latency when asked); one request at a time in issue
order with the byte budget b (b += bandwidth in a cycle whose head has started, completion when
b >= R, then b = min(b - R, bandwidth - 1); b = 0 in a cycle with no started head); at most one
completion per cycle, on ``dram_resp`` in its completion cycle (``valid``, ``write``, ``meta`` as
issued, ``error`` for an out-of-range request, a read's bytes as of the start of the cycle; a
write's bytes are in DRAM at the end of it); ``ready`` is high in cycle t exactly when fewer than
``queue`` requests are outstanding at the start of t (a completion in t frees its slot from t + 1)
and, with a ``ready_pause`` generator, the generator does not pause cycle t. Everything it
drives in cycle t depends on what it sampled before t, which is why the latency must be at least
1 (with 0, the RTL model completes a request in its issue cycle, combinationally).
It also checks the request side of the handshake: a request offered (``valid``) and not taken
must be offered again unchanged in the next cycle.

**Scenarios** (a tiled GEMM from :func:`programs.prefill.gemm`: A and B loaded from the agent's
DRAM, C stored back with STORE_PSUM):

* ``gemm_exact``: the default channel of ``PREFILL_CONFIG``, no pauses. The run must equal
  :class:`emulator.prefill.PrefillEmulator` exactly: the cycle count, the issue cycle of every
  command, every row request (issue cycle, write, address, bytes) and every completion cycle, and
  the final DRAM image; C must equal numpy.
* ``gemm_exact_channels``: the same with other channels served by the agent (narrow: bandwidth
  1, latency 1, queue 1; wide and far: bandwidth 16, latency 9, queue 3; in between), each against
  the emulator configured with that channel.
* ``gemm_backpressure``: random ``ready`` pauses (independent, then bursty with random extra
  latency): C must equal numpy, the DRAM image the emulator's, nothing may be lost or duplicated,
  and the run may not be shorter than the exact one.
"""

import dataclasses
from collections import deque, namedtuple
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from . import designs
from .tb import TB, _read, _Writer, bursty_pause, never, random_pause

CFG = designs.PREFILL_CONFIG
N = CFG.n
GEMM_SHAPE = (6, 10, 6)          # M, K, N: 3 x 2 weight tiles, the last K tile 2 rows deep

Request = namedtuple("Request", "issued start write addr count data meta")
Channel = namedtuple("Channel", "bandwidth latency queue")


def default_channel():
    return Channel(CFG.dram_bandwidth, CFG.dram_latency, CFG.dma_queue)


# The DRAM ------------------------------------------------------------------------------------

class DramAgent:
    """The engine's DRAM on ``dram_req``/``dram_resp`` (the rule is in the module docstring).

    ``contents``: the initial bytes from address 0. ``ready_pause``: a pause generator (a truthy
    value holds ``ready`` low for that cycle). ``extra_latency``: None, or a callable returning
    the extra start delay of each request (drawn at issue). ``issued`` and ``completed`` log
    ``(cycle, write, addr, count)`` per request; ``stalled`` counts cycles with a request offered
    and not taken.
    """

    def __init__(self, dut, contents, channel, *, ready_pause=None, extra_latency=None):
        if channel.latency < 1:
            raise ValueError("the bench's DRAM needs a latency of at least 1 (see the docstring)")
        if not 1 <= channel.queue <= CFG.dma_queue:
            raise ValueError(f"queue must be 1..{CFG.dma_queue} (the DMA's outstanding counter)")
        self.dut = dut
        self.channel = channel
        self.memory = bytearray(CFG.dram_bytes)
        self.memory[:len(contents)] = contents
        self.pause = ready_pause if ready_pause is not None else never()
        self.extra_latency = extra_latency
        self.queue = deque()
        self.budget = 0
        self.issued, self.completed = [], []
        self.stalled = 0
        self.errors = 0
        self._held = None               # a request offered and not taken in the last cycle
        self._ready_now = 0
        self.ready = _Writer(dut.dram_req__ready)
        self.resp_valid = _Writer(dut.dram_resp__valid)
        self.resp_write = _Writer(dut.dram_resp__write)
        self.resp_error = _Writer(dut.dram_resp__error)
        self.resp_data = _Writer(dut.dram_resp__data)
        self.resp_meta = _Writer(dut.dram_resp__meta)

    @property
    def idle(self):
        return not self.queue

    def _complete(self, request, cycle):
        addr, count = request.addr, request.count
        in_range = 0 < count <= 4 * N and addr + count <= CFG.dram_bytes
        data = 0
        if in_range and request.write:
            self.memory[addr:addr + count] = request.data.to_bytes(4 * N, "little")[:count]
        elif in_range:
            data = int.from_bytes(self.memory[addr:addr + count], "little")
        if not in_range:
            self.errors += 1
        self.completed.append((cycle, request.write, addr, count))
        self.resp_valid.set(1)
        self.resp_write.set(request.write)
        self.resp_error.set(int(not in_range))
        self.resp_data.set(data)
        self.resp_meta.set(request.meta)

    def drive(self, cycle):
        bw = self.channel.bandwidth
        paused = next(self.pause)
        self._ready_now = int(len(self.queue) < self.channel.queue and not paused)
        self.ready.set(self._ready_now)
        head = self.queue[0] if self.queue else None
        completed = False
        if head is not None and cycle >= head.start:
            self.budget += bw
            if self.budget >= head.count:
                self.queue.popleft()
                self.budget = min(self.budget - head.count, bw - 1)
                self._complete(head, cycle)
                completed = True
        else:
            self.budget = 0
        if not completed:
            self.resp_valid.set(0)
            self.resp_error.set(0)

    def sample(self, cycle):
        dut = self.dut
        valid = _read(dut.dram_req__valid, cycle, "dram_req.valid")
        fields = None
        if valid:
            # a read's data bits are don't-care (X under Icarus before the first store)
            names = ("write", "addr", "count", "data", "meta")
            write = _read(dut.dram_req__write, cycle, "dram_req.write")
            fields = tuple(
                _read(getattr(dut, f"dram_req__{name}"), cycle, f"dram_req.{name}")
                if name != "data" or write else 0 for name in names)
        if self._held is not None and fields != self._held:
            raise AssertionError(f"cycle {cycle}: the request offered and not taken in cycle "
                                 f"{cycle - 1} ({self._held}) changed to {fields}")
        self._held = None
        if not valid:
            return
        if self._ready_now:
            write, addr, count, data, meta = fields
            extra = self.extra_latency() if self.extra_latency is not None else 0
            self.queue.append(Request(cycle, cycle + self.channel.latency + extra, write, addr,
                                      count, data, meta))
            self.issued.append((cycle, write, addr, count))
        else:
            self._held = fields
            self.stalled += 1


# run, the load port, done ----------------------------------------------------------------------

class EngineControl:
    """``run`` high from cycle 0 until the cycle after ``done`` (or ``error``) is first seen
    (``stop_cycle``: the first cycle at whose start it is high, which is the run's cycle count);
    ``issue_valid``/``issue_index`` are logged every cycle before that (``issues``)."""

    def __init__(self, dut):
        self.dut = dut
        self.run = _Writer(dut.run)
        self.load_en = _Writer(dut.load__en)
        self.load_addr = _Writer(dut.load__addr)
        self.load_data = _Writer(dut.load__data)
        self.stop_cycle = None
        self.issues = []

    def drive(self, cycle):
        self.run.set(int(self.stop_cycle is None))

    def sample(self, cycle):
        if self.stop_cycle is not None:
            return
        dut = self.dut
        if _read(dut.done, cycle, "done") or _read(dut.error, cycle, "error"):
            self.stop_cycle = cycle
            return
        if _read(dut.issue_valid, cycle, "issue_valid"):
            self.issues.append((_read(dut.issue_index, cycle, "issue_index"), cycle))


class PrefillBench(TB):
    """One run of ``program`` (a :class:`programs.prefill.GemmProgram` loading from DRAM) with
    the DRAM agent on ``channel``."""

    def __init__(self, dut, program, channel=None, *, ready_pause=None, extra_latency=None):
        super().__init__(dut, CFG)
        self.program = program
        self.channel = channel or default_channel()
        self.control = EngineControl(dut)
        self.dram = DramAgent(dut, program.dram, self.channel, ready_pause=ready_pause,
                              extra_latency=extra_latency)
        self.components += [self.control, self.dram]
        self.result = None

    async def start(self):
        """Reset, write the whole command memory (reset does not clear it), start the loop."""
        clk, c = self.dut.clk, self.control
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(clk)
        self.dut.rst.value = 0
        words = [cmd.encode() for cmd in self.program.commands]
        words += [0] * (CFG.commands - len(words))
        c.load_en.set(1)
        for address, word in enumerate(words):
            c.load_addr.set(address)
            c.load_data.set(word)
            await RisingEdge(clk)
        c.load_en.set(0)
        self._loop = cocotb.start_soon(self._run())
        while self.cycle < 0:
            await RisingEdge(clk)

    async def finish(self, *, timeout=20000):
        c = self.control
        await self.wait(lambda: c.stop_cycle is not None, timeout=timeout,
                        what="the engine to stop", poll=4)
        dut, cycle = self.dut, self.cycle
        result = SimpleNamespace(
            cycles=c.stop_cycle,
            counter=_read(dut.cycles, cycle, "cycles"),
            done=_read(dut.done, cycle, "done"),
            error=_read(dut.error, cycle, "error"),
            error_cause=_read(dut.error_cause, cycle, "error_cause"),
            dram_error=_read(dut.dram_error, cycle, "dram_error"),
            issue=[t for _, t in c.issues],
            issue_index=[i for i, _ in c.issues],
            dram=bytes(self.dram.memory),
            requests=list(self.dram.issued),
            completions=list(self.dram.completed))
        self.result = result
        self.log.info("%s: stopped at cycle %d; %d row requests, %d stalled cycles",
                      self.channel, result.cycles, len(result.requests), self.dram.stalled)
        return result

    def check_basic(self):
        """The run ended with HALT, no error, every request completed once, C = numpy."""
        r, p = self.result, self.program
        assert r.done and not r.error, f"engine stopped with error cause {r.error_cause}"
        assert not r.dram_error and self.dram.errors == 0, "an out-of-range DRAM request"
        assert r.counter == r.cycles, f"cycles output {r.counter}, stop seen at {r.cycles}"
        assert r.issue_index == list(range(len(p.commands))), \
            f"commands issued out of order: {r.issue_index}"
        assert self.dram.idle, f"{len(self.dram.queue)} requests still outstanding"
        assert sorted((w, a) for _, w, a, _ in r.requests) == \
            sorted((w, a) for _, w, a, _ in r.completions), "requests and completions differ"
        c = p.read_c(SimpleNamespace(dram=r.dram, psum=None))
        assert np.array_equal(c, p.expected), f"C differs from numpy:\n{c}\n{p.expected}"


# The emulator, with its DRAM channel traced ------------------------------------------------------

def emulate(program, channel):
    """Run ``program`` on :class:`PrefillEmulator` with ``channel``; returns the result and the
    logs of row requests and completions ``(cycle, write, addr, count)`` (the engine's DMA model
    is stepped through a wrapper that records its ``issued``/``completed`` events)."""
    from emulator.prefill import PrefillEmulator

    config = dataclasses.replace(CFG, dram_bandwidth=channel.bandwidth,
                                 dram_latency=channel.latency, dma_queue=channel.queue)
    emu = PrefillEmulator(config, program.dram)
    dma = emu._dma
    requests, completions = [], []
    step = dma.step

    def traced(transfer=None):
        cycle = dma.cycle
        out = step(transfer)
        if out.issued is not None:
            r = out.issued
            requests.append((cycle, int(r.write), r.addr, r.count))
        if out.completed is not None:
            r = out.completed
            completions.append((cycle, int(r.write), r.addr, r.count))
        return out

    dma.step = traced
    result = emu.run(program.commands, max_cycles=100_000)
    return result, requests, completions


def check_exact(bench, emulated):
    result, requests, completions = emulated
    r = bench.result
    assert r.cycles == result.cycles, f"cycles: RTL {r.cycles}, emulator {result.cycles}"
    assert r.issue == list(result.issue), \
        f"issue cycles differ:\n  RTL      {r.issue}\n  emulator {list(result.issue)}"
    for what, got, want in (("row requests", r.requests, requests),
                            ("completions", r.completions, completions)):
        if got != want:
            first = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b),
                         min(len(got), len(want)))
            raise AssertionError(f"{what} differ from the emulator at #{first} (RTL "
                                 f"{got[first:first + 3]}, emulator {want[first:first + 3]}; "
                                 f"{len(got)} vs {len(want)} in all)")
    assert r.dram == bytes(result.dram), "the final DRAM image differs from the emulator's"


# Tests ----------------------------------------------------------------------------------------

def gemm_program(seed=None):
    from programs.prefill import gemm

    M, K, Nn = GEMM_SHAPE
    return gemm(CFG, M, K, Nn, seed=designs.seed() if seed is None else seed)


async def run_gemm(dut, program, channel=None, **kwargs):
    bench = PrefillBench(dut, program, channel, **kwargs)
    await bench.start()
    await bench.finish()
    bench.stop()
    bench.check_basic()
    return bench


@cocotb.test()
async def gemm_exact(dut):
    program = gemm_program()
    bench = await run_gemm(dut, program)
    check_exact(bench, emulate(program, bench.channel))
    dut._log.info("gemm %s: %d cycles, %d row requests, equal to the emulator", GEMM_SHAPE,
                  bench.result.cycles, len(bench.result.requests))


CHANNELS = [Channel(1, 1, 1), Channel(16, 9, 3), Channel(3, 5, 2)]


@cocotb.test()
async def gemm_exact_channels(dut):
    program = gemm_program()
    for channel in CHANNELS:
        bench = await run_gemm(dut, program, channel)
        check_exact(bench, emulate(program, channel))
        dut._log.info("%s: %d cycles, equal to the emulator", channel, bench.result.cycles)


@cocotb.test()
async def gemm_backpressure(dut):
    import random

    program = gemm_program()
    exact, _, _ = emulate(program, default_channel())
    rng = random.Random(f"{designs.seed()}:prefill-latency")
    runs = [
        ("random ready pauses", dict(ready_pause=random_pause(0.4, f"{designs.seed()}:ready"))),
        ("bursty pauses + extra latency",
         dict(ready_pause=bursty_pause(f"{designs.seed()}:bursty", max_run=6, busy=0.4),
              extra_latency=lambda: rng.randint(0, 6))),
    ]
    for name, kwargs in runs:
        bench = await run_gemm(dut, program, **kwargs)
        r = bench.result
        assert bench.dram.stalled > 0, f"{name}: the pauses never stalled a request"
        assert r.cycles >= exact.cycles, \
            f"{name}: {r.cycles} cycles, fewer than the exact run's {exact.cycles}"
        assert r.dram == bytes(exact.dram), f"{name}: the final DRAM image differs"
        dut._log.info("%s: %d cycles (exact %d), %d stalled request cycles", name, r.cycles,
                      exact.cycles, bench.dram.stalled)

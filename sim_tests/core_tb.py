"""cocotb tests of one ``hdl.Core`` (configuration ``designs.CORE_CONFIG``; run by
``test_core.py``), with the test bench playing the core's router.

:class:`CoreBench` resets the core, writes both memories completely through the load port (reset
does not clear memories, and the previous test's words must not leak into this one), sets
``route_to_core`` / ``route_from_core`` and the position inputs, raises ``run`` (cycle 0 is the
first cycle with ``run`` high, as in ``tb.TB``), and plays the router on both RAMP links: a
:class:`tb.LinkDriver` on ``rx`` (the router's RAMP output: it injects wavelets honouring the
credits the core returns, with idle pause generators) and a :class:`tb.LinkMonitor` on ``tx``
(the router's RAMP input queues: it drains what the core sends and returns credits, with
backpressure pause generators). When ``halted`` rises it lowers ``run`` and reads the whole SRAM
through the peek port (one word per cycle, one cycle of latency).

Checks, per scenario: the SRAM against numpy, the wavelets the core sent against the expected
stream, the counters that do not depend on timing (instructions, elements, macs, sram_reads,
sram_writes, wavelets_in, wavelets_out) against counts derived from the program, the stall
counters against the pauses (zero with none, non-zero with them), and then everything exactly
against the emulator's core (``emulator.core.CoreArray``) replaying the same router decisions
cycle by cycle: the wavelet on ``tx`` and the credits on ``rx`` of every cycle, the halt cycle,
the counters, ``pc``, the trap state and the SRAM.
"""

from collections import deque
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from mesh import Port, isa
from mesh.builder import CoreBuilder
from mesh.isa import TrapCause

from . import designs
from .tb import TB, _read, _Writer, bursty_pause, never, pattern, random_pause
from .traffic import load_emulator

CFG = designs.CORE_CONFIG
ALL = (1 << CFG.colors) - 1
COUNTER_NAMES = [name for name, _ in isa.COUNTERS]
IMEM, SRAM = 0, 1               # hdl.LoadTarget (not imported: no Amaranth in the simulator)
JAM_WORD = 0xDEAD_BEEF          # what the load port carries while it must be ignored
# Counters that depend only on the program, not on when wavelets and credits arrive.
TIMING_FREE = ("instructions", "elements", "macs", "sram_reads", "sram_writes", "wavelets_in",
               "wavelets_out")


def u32(values):
    return np.asarray(values, dtype=np.int64).astype(np.uint32)


def s32(values):
    return np.asarray(values, dtype=np.uint32).view(np.int32).astype(np.int64)


def pack_int8(values):
    """int8 values packed four per word, lane k in bits [8k+7:8k] (as ``vdot4`` reads them)."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.int8)).view(np.uint32)


def memories(builder):
    """(imem, sram) uint32 arrays of ``CFG``'s sizes from a :class:`mesh.builder.CoreBuilder`."""
    image = builder.image()
    imem = np.zeros(CFG.imem_words, dtype=np.uint32)
    imem[:len(image.instructions)] = image.instructions
    sram = np.zeros(CFG.sram_words, dtype=np.uint32)
    for start, words in image.sram.items():
        sram[start:start + len(words)] = words
    return imem, sram


# The control side: run, the load and peek ports, halted --------------------------------------

class CoreControl:
    """A cycle-loop component for ``run``, the load port and the peek port.

    ``run`` is high from cycle ``run_from`` (0 unless the bench lets the router side act before
    the run) until the cycle after ``halted`` is first seen (``halt_cycle``: the first cycle at
    whose start ``halted`` is high; the run's cycle count is ``halt_cycle - run_from``), then
    low.
    With ``jam_load``, the load port carries a write of ``JAM_WORD`` to a new SRAM address every
    cycle while ``run`` is high (the core must ignore it); it is released together with ``run``.
    After the run, :meth:`peek` queues SRAM addresses: one is put on ``peek.addr`` per cycle and
    its word is read in the next cycle into ``peeked``. Until ``halted`` is seen, ``progress``
    and ``pc`` are recorded every cycle (``progress_log``, ``pc_log``, indexed by cycle).
    """

    def __init__(self, dut, *, jam_load=False, run_from=0):
        self.dut = dut
        self.run = _Writer(dut.run)
        self.load_valid = _Writer(dut.load__valid)
        self.load_target = _Writer(dut.load__target)
        self.load_addr = _Writer(dut.load__addr)
        self.load_data = _Writer(dut.load__data)
        self.peek_addr = _Writer(dut.peek__addr)
        self.jam_load = jam_load
        self.run_from = run_from
        self.halt_cycle = None
        self.progress_log = []
        self.pc_log = []
        self.peeks = deque()
        self.peeked = {}
        self._current = None
        self._previous = None

    def peek(self, addresses):
        self.peeks.extend(addresses)

    def drive(self, cycle):
        self._current = None
        if cycle < self.run_from:
            return
        if self.halt_cycle is None:
            self.run.set(1)
            if self.jam_load:
                self.load_valid.set(1)
                self.load_target.set(SRAM)
                self.load_addr.set(cycle % CFG.sram_words)
                self.load_data.set(JAM_WORD)
            return
        self.run.set(0)
        self.load_valid.set(0)
        if self.peeks:
            self._current = self.peeks.popleft()
            self.peek_addr.set(self._current)

    def sample(self, cycle):
        if self._previous is not None:
            self.peeked[self._previous] = _read(self.dut.peek__data, cycle, "peek data")
        self._previous = self._current
        if self.halt_cycle is None:
            self.progress_log.append(_read(self.dut.progress, cycle, "progress"))
            self.pc_log.append(_read(self.dut.pc, cycle, "pc"))
            if _read(self.dut.halted, cycle, "halted"):
                self.halt_cycle = cycle


# The bench ----------------------------------------------------------------------------------

class CoreBench(TB):
    """One run of ``builder``'s program (a :class:`mesh.builder.CoreBuilder`) on the core.

    ``driver_pause`` / ``monitor_pause``: pause generators of the router's sending side (``rx``)
    and receiving side (``tx``). ``to_core`` / ``from_core``: the ``route_to_core`` /
    ``route_from_core`` masks. ``position``: (x, y, width, height) for ``tid``.
    ``alias_probe``: after the program, write an illegal word to every instruction address past
    the instruction memory (the load port must drop them, not wrap them onto the program).
    ``pre_run``: cycles of the cycle loop before ``run`` rises, in which the router side already
    acts (the core, not running, must only take wavelets into its queues).
    """

    def __init__(self, dut, builder, *, driver_pause=None, monitor_pause=None, to_core=ALL,
                 from_core=ALL, position=(0, 0, 1, 1), jam_load=False, alias_probe=False,
                 pre_run=0):
        super().__init__(dut, CFG)
        self.imem, self.sram = memories(builder)
        self.name = builder.name
        self.to_core, self.from_core = to_core, from_core
        self.position = position
        self.alias_probe = alias_probe
        self.rx = self.driver("rx", pause=driver_pause, name="rx (router -> core)")
        self.tx = self.monitor("tx", pause=monitor_pause, name="tx (core -> router)")
        self.pre_run = pre_run
        self.control = CoreControl(dut, jam_load=jam_load, run_from=pre_run)
        self.components.append(self.control)
        dut.route_to_core.value = to_core
        dut.route_from_core.value = from_core
        for name, value in zip(("x", "y", "width", "height"), position):
            getattr(dut, name).value = value
        self.result = None

    async def _load(self, target, words, start=0):
        c = self.control
        c.load_valid.set(1)
        c.load_target.set(target)
        for address, word in enumerate(words, start):
            c.load_addr.set(address)
            c.load_data.set(int(word))
            await RisingEdge(self.dut.clk)
        c.load_valid.set(0)

    async def start(self):
        """Reset, load both memories (every word), then start the cycle loop (``run`` high from
        cycle ``pre_run``, normally 0); returns at the start of cycle 0 of the loop."""
        clk = self.dut.clk
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(clk)
        self.dut.rst.value = 0
        await self._load(IMEM, self.imem)
        if self.alias_probe:
            limit = 1 << len(self.dut.load__addr)
            await self._load(IMEM, [0xFFFF_FFFF] * (limit - CFG.imem_words), CFG.imem_words)
        await self._load(SRAM, self.sram)
        self._loop = cocotb.start_soon(self._run())
        while self.cycle < 0:
            await RisingEdge(clk)

    async def finish(self, *, timeout=2000, drain=True):
        """Wait for ``halted``, read the outputs and (``run`` low) the whole SRAM through the
        peek port; with ``drain``, also wait until the router side is quiet. Returns and keeps
        (``self.result``) a namespace: cycles, counters {name: value}, halted, trap_cause,
        trap_pc, pc, sram."""
        c = self.control
        await self.wait(lambda: c.halt_cycle is not None, timeout=timeout,
                        what=f"{self.name}: the core to halt")
        dut = self.dut
        cycle = self.cycle
        result = SimpleNamespace(
            cycles=c.halt_cycle - self.pre_run,
            counters={name: _read(handle, cycle, f"counter {name}") for name, handle in zip(
                COUNTER_NAMES, (getattr(dut, f"counters__{k}")
                                for k in range(len(COUNTER_NAMES))))},
            halted=_read(dut.halted, cycle, "halted"),
            trap_cause=TrapCause(_read(dut.trap_cause, cycle, "trap_cause")),
            trap_pc=_read(dut.trap_pc, cycle, "trap_pc"),
            pc=_read(dut.pc, cycle, "pc"))
        c.peek(range(CFG.sram_words))
        await self.wait(lambda: len(c.peeked) == CFG.sram_words, timeout=CFG.sram_words + 20,
                        what="the SRAM read-back", poll=16)
        result.sram = np.array([c.peeked[a] for a in range(CFG.sram_words)], dtype=np.uint32)
        if drain:
            await self.drain(timeout=timeout)
        self.result = result
        self.log.info("%s: halted at cycle %d, counters %s", self.name, result.cycles,
                      result.counters)
        return result

    # Checks -----------------------------------------------------------------------------------

    def sent_stream(self):
        """[(color, data)] the core sent, in order."""
        return [(c, d) for _, c, d in self.tx.received]

    def check_counts(self, **expected):
        """Counters named in ``expected`` equal those values."""
        got = self.result.counters
        wrong = {name: (got[name], value) for name, value in expected.items()
                 if got[name] != value}
        assert not wrong, f"{self.name}: counters (RTL, expected) differ: {wrong}"

    def check_wavelet_counts(self):
        """wavelets_in/out equal what the router side injected and received."""
        self.check_counts(wavelets_in=len(self.rx.sent), wavelets_out=len(self.tx.received))

    def compare_with_emulator(self):
        """Replay this run's router decisions (wavelets injected on ``rx`` and credits returned
        on ``tx``, per cycle) into the emulator's core and require the same ``tx`` wavelet and
        ``rx`` credits in every cycle, the same ``pc`` and ``progress`` in every cycle up to the
        halt, the same halt cycle, and the same final counters, pc, trap state and SRAM. In the
        ``pre_run`` cycles the emulator only takes the injected wavelets into its queues (and
        the RTL must neither send nor return a credit). Returns the number of cycles compared
        (None: no emulator)."""
        cls, reason = load_emulator()
        if cls is None:
            self.log.warning("no emulator comparison: %s", reason)
            return None
        from emulator.core import CoreArray

        colors, ramp = CFG.colors, 1 << int(Port.RAMP)
        accept = np.array([[ramp * (self.from_core >> c & 1) for c in range(colors)]],
                          dtype=np.uint8)
        out = np.array([[ramp * (self.to_core >> c & 1) for c in range(colors)]],
                       dtype=np.uint8)
        core = CoreArray(CFG, self.imem[None, :], self.sram[None, :], accept, out)
        x, y, width, height = self.position
        core._tid[:] = [x, y, width, height]     # the position inputs (a 1x1 mesh has 0, 0, 1, 1)
        injected = {t: (c, d) for t, c, d in self.rx.sent}
        returned = dict(self.tx.credit_log)
        rtl_sent = {t: (c, d) for t, c, d in self.tx.received}
        rtl_credit = dict(self.rx.credit_log)
        progress, pcs = self.control.progress_log, self.control.pc_log
        cycles = self.cycle
        halted_at = None
        problems = []
        valid = np.zeros(1, dtype=bool)
        color = np.zeros(1, dtype=np.intp)
        data = np.zeros(1, dtype=np.uint32)
        credit = np.zeros((1, colors), dtype=bool)
        for t in range(cycles):
            if t < len(pcs) and int(core.pc[0]) != pcs[t]:
                problems.append(f"cycle {t} pc: emulator {int(core.pc[0])}, RTL {pcs[t]}")
            if t >= self.pre_run:
                core.step()
            else:       # run low: no cycle of the core, nothing sent, no credit
                core.send_valid[0] = False
                core.credit_return[0] = False
                core.progressed = False
            want = (int(core.send_color[0]), int(core.send_data[0])) \
                if core.send_valid[0] else None
            if want != rtl_sent.get(t):
                problems.append(f"cycle {t} tx: emulator {_fmt(want)}, RTL "
                                f"{_fmt(rtl_sent.get(t))}")
            want_credit = sum(1 << c for c in range(colors) if core.credit_return[0, c])
            if want_credit != rtl_credit.get(t, 0):
                problems.append(f"cycle {t} rx credit: emulator {want_credit:#x}, RTL "
                                f"{rtl_credit.get(t, 0):#x}")
            if t < len(progress) and int(core.progressed) != progress[t]:
                problems.append(f"cycle {t} progress: emulator {int(core.progressed)}, RTL "
                                f"{progress[t]}")
            if problems:
                break
            wavelet = injected.get(t)
            valid[0] = wavelet is not None
            color[0], data[0] = wavelet if wavelet is not None else (0, 0)
            bits = returned.get(t, 0)
            credit[0] = [bool(bits >> c & 1) for c in range(colors)]
            core.deliver(valid, color, data, credit)
            if halted_at is None and core.halted[0]:
                halted_at = t + 1 - self.pre_run
        if not problems:
            r = self.result
            if halted_at != r.cycles:
                problems.append(f"halt: the emulator's core halted at the end of cycle "
                                f"{None if halted_at is None else halted_at - 1}, the RTL's "
                                f"at the end of cycle {r.cycles - 1}")
            emu_counters = dict(zip(COUNTER_NAMES, (int(v) for v in core.counters[0])))
            if emu_counters != r.counters:
                problems.append(f"counters: emulator {emu_counters}, RTL {r.counters}")
            for name, want, got in (("pc", int(core.pc[0]), r.pc),
                                    ("halted", int(core.halted[0]), r.halted),
                                    ("trap_cause", int(core.trap_cause[0]), int(r.trap_cause)),
                                    ("trap_pc", int(core.trap_pc[0]), r.trap_pc)):
                if want != got:
                    problems.append(f"{name}: emulator {want}, RTL {got}")
            wrong = np.flatnonzero(core.sram[0] != r.sram)
            if wrong.size:
                a = int(wrong[0])
                problems.append(f"SRAM: {wrong.size} word(s) differ, first at {a}: emulator "
                                f"{int(core.sram[0, a]):#x}, RTL {int(r.sram[a]):#x}")
        if problems:
            raise AssertionError(f"{self.name}: RTL core and emulator core differ (same router "
                                 f"decisions replayed):\n  " + "\n  ".join(problems[:16]))
        self.log.info("%s: RTL matches emulator.core.CoreArray exactly over %d cycles",
                      self.name, cycles - self.pre_run)
        return cycles


def _fmt(wavelet):
    return "idle" if wavelet is None else f"color {wavelet[0]} data {wavelet[1]:#010x}"


async def run_program(dut, builder, *, timeout=2000, drain=True, **kwargs):
    """A fresh :class:`CoreBench` for ``builder``, started and run to the end (``wavelets``:
    (color, data) pairs queued on ``rx`` before cycle 0)."""
    wavelets = kwargs.pop("wavelets", ())
    tb = CoreBench(dut, builder, **kwargs)
    for color, data in wavelets:
        tb.rx.send(color, int(data))
    await tb.start()
    await tb.finish(timeout=timeout, drain=drain)
    return tb


def words(rng, n, bound=1 << 31):
    return rng.integers(-bound, bound, n, dtype=np.int64)


# Scenarios --------------------------------------------------------------------------------------

@cocotb.test()
async def scalar_vector(dut):
    """Vector add, a vdot4 dot product, a vmax.max reduction, a scalar ld/mul/dbnz loop and tid,
    with no fabric traffic; the load port carries SRAM writes all through the run (ignored while
    ``run`` is high) and instruction writes past the instruction memory were made before it
    (dropped)."""
    rng = np.random.default_rng(designs.seed())
    n, packed = 16, 8
    va, vb = words(rng, n), words(rng, n)
    pa, pb = rng.integers(-128, 128, 4 * packed), rng.integers(-128, 128, 4 * packed)
    position = (5, 2, 11, 7)
    core = CoreBuilder("scalar_vector")
    a, b, c = core.alloc("a", u32(va)), core.alloc("b", u32(vb)), core.alloc("c", n)
    qa, qb = core.alloc("pa", pack_int8(pa)), core.alloc("pb", pack_int8(pb))
    out = core.alloc("out", 8)
    core.mem_vector(0, a, n)
    core.mem_vector(1, b, n)
    core.mem_vector(2, c, n)
    core.vadd(2, 0, 1)                          # c = a + b
    core.mem_vector(3, qa, packed)
    core.mem_vector(4, qb, packed)
    core.vdot4(5, 3, 4, reduce="sum")           # r5 = pa . pb
    core.st(5, out, 0)
    core.vmax(6, 0, 1, reduce="max")            # r6 = max of a and b
    core.st(6, out + 1, 0)
    core.li(8, n)
    core.li(9, a)
    core.li(10, 3)
    core.label("loop")                          # r7 = sum of 3 * a[i]
    core.ld(11, 0, 9)
    core.mul(11, 11, 10)
    core.add(7, 7, 11)
    core.addi(9, 9, 1)
    core.dbnz(8, "loop")
    core.st(7, out + 2, 0)
    for k in range(4):
        core.tid(12, k)
        core.st(12, out + 3 + k, 0)
    core.halt()
    straight = core.pc                          # instructions in the program
    tb = await run_program(dut, core, position=position, jam_load=True, alias_probe=True)
    r = tb.result
    assert r.halted and r.trap_cause is TrapCause.NONE, \
        f"expected a halt, got trap {r.trap_cause!r} at pc {r.trap_pc}"
    expect = np.zeros(8, dtype=np.uint32)
    expect[:7] = u32([pa @ pb, max(va.max(), vb.max()), 3 * va.sum(), *position])
    assert np.array_equal(r.sram[c:c + n], u32(va + vb)), "vadd result"
    assert np.array_equal(r.sram[out:out + 8], expect), \
        f"scalar results {r.sram[out:out + 8].tolist()} != {expect.tolist()}"
    assert np.array_equal(np.delete(r.sram, np.r_[c:c + n, out:out + 8]),
                          np.delete(tb.sram, np.r_[c:c + n, out:out + 8])), \
        "SRAM changed outside the results (the jammed load port wrote?)"
    loop_body = 5
    tb.check_counts(instructions=straight + loop_body * (n - 1), elements=n + packed + n,
                    macs=4 * packed + n, sram_reads=2 * n + 2 * packed + 2 * n + n,
                    sram_writes=n + 3 + 4, wavelets_in=0, wavelets_out=0, stall_in=0,
                    stall_out=0)
    assert r.counters["cycles"] == r.cycles
    tb.compare_with_emulator()


def stream_in_program(n):
    core = CoreBuilder("stream_in")
    buf, out = core.alloc("buf", n), core.alloc("out", 1)
    core.fabric_in(0, 1, n)
    core.mem_vector(2, buf, n)
    core.vmov(2, 0)                             # buf = n wavelets of color 1
    core.recv(3, 0, 2)                          # r3 = one wavelet of color 2
    core.st(3, out, 0)
    core.halt()
    return core, buf, out


@cocotb.test()
async def stream_in(dut):
    """FIN vector -> memory (color 1) and a scalar recv (color 2); once with the router sending
    whenever it can (no stall), once with random idle cycles (stall_in > 0), once with the
    router sending for 8 cycles before ``run`` rises (the core fills its queues, returns no
    credit, and then runs without a stall)."""
    rng = np.random.default_rng(designs.seed() + 1)
    n = 32
    for label, pause, pre_run in (
            ("no pauses", never(), 0),
            ("idle gaps", random_pause(0.5, designs.rng("core-in").random()), 0),
            ("before run", never(), 8)):
        stream, extra = u32(words(rng, n)), int(u32(words(rng, 1))[0])
        core, buf, out = stream_in_program(n)
        tb = await run_program(dut, core, driver_pause=pause, pre_run=pre_run,
                               wavelets=[(1, d) for d in stream] + [(2, extra)])
        r = tb.result
        assert np.array_equal(r.sram[buf:buf + n], stream), f"{label}: streamed words"
        assert r.sram[out] == extra, f"{label}: recv word {r.sram[out]:#x} != {extra:#x}"
        tb.check_counts(instructions=core.pc, elements=n, macs=0, sram_reads=0,
                        sram_writes=n + 1, wavelets_in=n + 1, wavelets_out=0, stall_out=0)
        tb.check_wavelet_counts()
        if pre_run:
            early = [(t, c) for t, c, _ in tb.rx.sent if t < pre_run]
            assert early == [(0, 1), (1, 1), (2, 2)], \
                f"{label}: before the run the router sent {early}, expected two wavelets of " \
                f"color 1 and one of color 2 (buffer_depth {CFG.buffer_depth} per color)"
            assert all(t >= pre_run for t, _ in tb.rx.credit_log), \
                f"{label}: credits before the run: {tb.rx.credit_log[:4]}"
        if label != "idle gaps":
            tb.check_counts(stall_in=0)
        else:
            assert r.counters["stall_in"] > 0, f"{label}: no stall_in with an idle sender"
        tb.log.info("stream_in (%s): %d cycles, stall_in %d", label, r.cycles,
                    r.counters["stall_in"])
        tb.compare_with_emulator()
        tb.stop()


@cocotb.test()
async def stream_out(dut):
    """Memory -> FOUT vector (color 3), then two scalar sends (color 1); once with the router
    taking everything (no stall), once with backpressure (stall_out > 0)."""
    rng = np.random.default_rng(designs.seed() + 2)
    n = 32
    for label, pause in (("no backpressure", never()),
                         ("backpressure", pattern([1, 1, 0])),
                         ("bursty backpressure",
                          bursty_pause(designs.rng("core-out").random(), max_run=6, busy=0.5))):
        vector, scalars = u32(words(rng, n)), [int(w) for w in u32(words(rng, 2))]
        core = CoreBuilder("stream_out")
        v = core.alloc("v", vector)
        core.mem_vector(0, v, n)
        core.fabric_out(2, 3, n)
        core.vmov(2, 0)
        core.li(4, scalars[0])
        core.li(5, scalars[1])
        core.send(4, 0, 1)
        core.send(5, 0, 1)
        core.halt()
        tb = await run_program(dut, core, monitor_pause=pause)
        r = tb.result
        want = [(3, int(d)) for d in vector] + [(1, d) for d in scalars]
        assert tb.sent_stream() == want, f"{label}: sent stream differs"
        tb.check_counts(instructions=core.pc, elements=n, macs=0, sram_reads=n, sram_writes=0,
                        wavelets_in=0, wavelets_out=n + 2, stall_in=0)
        tb.check_wavelet_counts()
        if label == "no backpressure":
            tb.check_counts(stall_out=0)
        else:
            assert r.counters["stall_out"] > 0, f"{label}: no stall_out under backpressure"
        tb.log.info("stream_out (%s): %d cycles, stall_out %d", label, r.cycles,
                    r.counters["stall_out"])
        tb.compare_with_emulator()
        tb.stop()


@cocotb.test()
async def stream_transform(dut):
    """FIN (color 0) + memory -> FOUT (color 2) with vadd, then FIN (color 1) x r5 -> FOUT
    (color 3) with vmul by a scalar; once at full rate (no stall at all), once with an idle
    sender and a backpressuring receiver."""
    rng = np.random.default_rng(designs.seed() + 3)
    n, m, factor = 24, 8, 7
    seed = designs.rng("core-transform")
    for label, dpause, mpause in (
            ("full rate", never(), never()),
            ("idle and backpressure", random_pause(0.5, seed.random()),
             bursty_pause(seed.random(), max_run=5, busy=0.6))):
        first, second, b = u32(words(rng, n)), u32(words(rng, m)), words(rng, n)
        core = CoreBuilder("stream_transform")
        vb = core.alloc("b", u32(b))
        core.fabric_in(0, 0, n)
        core.mem_vector(1, vb, n)
        core.fabric_out(2, 2, n)
        core.vadd(2, 0, 1)
        core.fabric_in(3, 1, m)
        core.fabric_out(4, 3, m)
        core.li(5, factor)
        core.vmul(4, 3, "r5")
        core.halt()
        tb = await run_program(dut, core, driver_pause=dpause, monitor_pause=mpause,
                               wavelets=[(0, d) for d in first] + [(1, d) for d in second])
        r = tb.result
        want = [(2, int(d)) for d in u32(s32(first) + b)] + \
               [(3, int(d)) for d in u32(s32(second) * factor)]
        got = tb.sent_stream()
        assert got == want, f"{label}: sent stream differs, first difference at " \
            f"{next(i for i, (g, w) in enumerate(zip(got + [None] * len(want), want)) if g != w)}"
        tb.check_counts(instructions=core.pc, elements=n + m, macs=m, sram_reads=n,
                        sram_writes=0, wavelets_in=n + m, wavelets_out=n + m)
        tb.check_wavelet_counts()
        stalls = r.counters["stall_in"], r.counters["stall_out"]
        if label == "full rate":
            assert stalls == (0, 0), f"{label}: stalls (in, out) {stalls} without pauses"
            # Every scalar instruction one cycle, each vector instruction n + 2 (section 9).
            assert r.cycles == (core.pc - 2) + (n + 2) + (m + 2), \
                f"{label}: {r.cycles} cycles for {n} + {m} elements at full rate"
        else:
            assert all(stalls), f"{label}: stalls (in, out) {stalls}: expected both non-zero"
        tb.log.info("stream_transform (%s): %d cycles, stalls (in, out) %s", label, r.cycles,
                    stalls)
        tb.compare_with_emulator()
        tb.stop()


@cocotb.test()
async def trap(dut):
    """Traps read back as trap_cause / trap_pc, with the effects of earlier instructions kept
    and none of the trapping one: a vector operand past the end of the SRAM and a ld at
    address sram_words (SRAM_RANGE); a recv of a color not routed to the core and a send of a
    color whose route does not accept the core (NO_ROUTE, through route_to_core /
    route_from_core)."""
    cases = []

    core = CoreBuilder("trap_vector_range")
    core.li(1, 0x55)
    core.st(1, 10, 0)
    core.mem_vector(0, CFG.sram_words - 6, 8)   # last element at sram_words + 1
    core.mem_vector(2, 0, 8)
    core.label("bad")
    core.vmov(2, 0)
    core.halt()
    cases.append((core, TrapCause.SRAM_RANGE, {}, {10: 0x55}))

    core = CoreBuilder("trap_ld_range")
    core.li(1, 0x66)
    core.st(1, 11, 0)
    core.li(2, CFG.sram_words - 3)
    core.label("bad")
    core.ld(3, 3, 2)                            # address sram_words
    core.halt()
    cases.append((core, TrapCause.SRAM_RANGE, {}, {11: 0x66}))

    core = CoreBuilder("trap_recv_unrouted")
    core.li(1, 0x77)
    core.st(1, 12, 0)
    core.recv(3, 0, 1)                          # color 1 is routed: takes the wavelet
    core.st(3, 13, 0)
    core.label("bad")
    core.recv(4, 0, 2)                          # color 2 is not
    core.halt()
    cases.append((core, TrapCause.NO_ROUTE,
                  dict(to_core=ALL & ~(1 << 2), wavelets=[(1, 0xABCD)]), {12: 0x77, 13: 0xABCD}))

    core = CoreBuilder("trap_send_unrouted")
    core.li(1, 0x88)
    core.send(1, 0, 0)                          # color 0 is accepted from the core
    core.label("bad")
    core.send(1, 0, 3)                          # color 3 is not
    core.halt()
    cases.append((core, TrapCause.NO_ROUTE, dict(from_core=ALL & ~(1 << 3)), {}))

    for core, cause, kwargs, stored in cases:
        bad = core.image().symbols["bad"]
        tb = await run_program(dut, core, drain=False, **kwargs)
        r = tb.result
        assert r.halted, f"{core.name}: not halted"
        assert (r.trap_cause, r.trap_pc, r.pc) == (cause, bad, bad), \
            f"{core.name}: trap {r.trap_cause!r} at trap_pc {r.trap_pc} (pc {r.pc}), expected " \
            f"{cause!r} at {bad}"
        tb.check_counts(instructions=bad, cycles=r.cycles)
        tb.check_wavelet_counts()
        for address, value in stored.items():
            assert r.sram[address] == value, \
                f"{core.name}: SRAM[{address}] = {int(r.sram[address]):#x}, expected {value:#x}"
        tb.log.info("%s: %r at pc %d after %d cycles", core.name, r.trap_cause, r.trap_pc,
                    r.cycles)
        tb.compare_with_emulator()
        tb.stop()
    # The last case: the send before the trapping one went out, the trapping one did not.
    assert tb.sent_stream() == [(0, 0x88)], tb.sent_stream()

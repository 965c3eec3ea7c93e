"""The RTL core, tile and mesh (hdl/) against section 9 and 10 of docs/ARCHITECTURE.md, in the
Amaranth simulator, cycle by cycle.

Cycle 0 is the first cycle with ``run`` high. Programs are built with ``mesh.isa.encode`` and
loaded through the load ports while ``run`` is low. One simulator serves each design: every case
resets it (``Simulator.reset``: signals and memories back to their initial values) and runs a new
test bench job. The test bench plays the router for a lone core: a ``Sender`` injects wavelets
into the core's input queues under the link protocol, a ``Receiver`` drains what the core sends
and returns credits.
"""

import gc
import re
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings, strategies as st

import hdl
from hdl import Core, LoadSignature, LoadTarget, Mesh, PeekSignature, Tile
from hdl.core_alu import ALU_OPS, Alu, AluOp
from hdl.tile import tile_signature
from mesh import MeshConfig, RouteTable, isa
from mesh.isa import Kind, TrapCause

from sim_bench import Bench
from verilator_lint import lint_warnings

pytestmark = pytest.mark.filterwarnings(f"ignore::{UnusedElaboratable.__module__}."
                                        f"{UnusedElaboratable.__qualname__}")

E = isa.encode
COUNTER_NAMES = [name for name, _ in isa.COUNTERS]
MASK32 = 0xFFFF_FFFF
CONFIG = MeshConfig(width=1, height=1, colors=4, buffer_depth=2, sram_words=256,
                    imem_words=64)


@pytest.fixture(autouse=True)
def collect_unused_components():
    yield
    gc.collect()


# Instructions -------------------------------------------------------------------------------------

def addi(rd, ra, imm):
    return E("addi", a=rd, b=ra, imm18=imm)


def li(rd, value):
    """rd = value (any 32-bit value): lui + ori."""
    return [E("lui", a=rd, imm18=value >> 14), E("ori", a=rd, b=rd, imm18=value & 0x3FFF)]


def desc(d, kind=Kind.MEM, base=0, length=0, stride=1, color=0):
    """Instructions that set descriptor d completely (from r0 and immediates)."""
    words = []
    if kind is Kind.MEM:
        words.append(E("dmem", a=d, b=0, imm18=base))
    else:
        words.append(E("dmem", a=d, b=0, imm18=base))
        words.append(E("dfin" if kind is Kind.FIN else "dfout", a=d, b=0, imm18=color))
    words.append(E("dlen", a=d, b=0, imm18=length))
    words.append(E("dstride", a=d, b=0, imm18=stride))
    return words


def vec(name, dd, da, db=0, *, rs=0, bsc=0, pack=0, acc=0, red=0, max_=0, shift=0):
    """A vector instruction; bit 9 is ``pack`` on vreq and vlut, ``bsc`` on the others."""
    bit9 = {"pack": pack} if name in isa.PACKABLE else {"bsc": bsc}
    assert (pack, bsc) == (bit9.get("pack", 0), bit9.get("bsc", 0)), f"{name}: bsc or pack?"
    return E(name, a=dd, b=da, c=db, d=rs, acc=acc, red=red, max=max_, imm6=shift, **bit9)


HALT = E("halt")


def u32(values):
    return np.asarray(values, dtype=np.int64).astype(np.uint32)


# Agents (the router's side of the core's RAMP links) ----------------------------------------------

class Sender:
    """Injects wavelets into a link in order, each no earlier than its cycle and only with a
    credit of its color; counts the credits coming back."""

    def __init__(self, link, config):
        self.link = link
        self.depth = config.buffer_depth
        self.credits = [config.buffer_depth] * config.colors
        self.pending = deque()   # (earliest cycle, color, data)
        self.sent = []           # (cycle, color, data)
        self.credit_cycles = []  # (cycle, credit bits)

    def send(self, color, data, cycle=0):
        self.pending.append((cycle, color, data))

    def step(self, ctx, cycle):
        if self.pending and self.pending[0][0] <= cycle \
                and self.credits[self.pending[0][1]] > 0:
            _, color, data = self.pending.popleft()
            self.credits[color] -= 1
            ctx.set(self.link.valid, 1)
            ctx.set(self.link.color, color)
            ctx.set(self.link.data, data)
            self.sent.append((cycle, color, data))
        else:
            ctx.set(self.link.valid, 0)
            ctx.set(self.link.color, 0)
            ctx.set(self.link.data, 0)
        returned = ctx.get(self.link.credit)
        if returned:
            self.credit_cycles.append((cycle, returned))
        for color in range(len(self.credits)):
            if returned >> color & 1:
                self.credits[color] += 1
                assert self.credits[color] <= self.depth, f"cycle {cycle}: credit overflow"


class Receiver:
    """Drains a link into a ``buffer_depth``-deep buffer per color and takes one wavelet per
    color per cycle out of it (returning its credit) while not ``holding``: a wavelet received
    in cycle t is taken out in t + 1 at the earliest, as a router forwards it."""

    def __init__(self, link, config, holding=False):
        self.link = link
        self.depth = config.buffer_depth
        self.buffered = [0] * config.colors
        self.holding = holding
        self.received = []   # (cycle, color, data)

    def step(self, ctx, cycle):
        returned = 0
        if not (self.holding(cycle) if callable(self.holding) else self.holding):
            for color, count in enumerate(self.buffered):
                if count:
                    self.buffered[color] -= 1
                    returned |= 1 << color
        ctx.set(self.link.credit, returned)
        if ctx.get(self.link.valid):
            color, data = ctx.get(self.link.color), ctx.get(self.link.data)
            self.buffered[color] += 1
            assert self.buffered[color] <= self.depth, f"cycle {cycle}: sent without credit"
            self.received.append((cycle, color, data))


# One simulator per design ---------------------------------------------------------------------

async def load_memory(ctx, load, target, words, enable=None):
    """Write {address: word} (or a list from 0) through a load port, one word per cycle; with
    ``enable``, ``words`` maps address -> list of per-tile words."""
    if not isinstance(words, dict):
        words = dict(enumerate(words))
    ctx.set(load.valid, 1)
    ctx.set(load.target, target)
    for address, word in words.items():
        ctx.set(load.addr, address)
        if enable is None:
            ctx.set(load.data, int(word))
        else:
            ctx.set(load.enable, enable[address])
            for tile, value in enumerate(word):
                ctx.set(load.data[tile], int(value))
        await ctx.tick()
    ctx.set(load.valid, 0)


@pytest.fixture(scope="module")
def core_bench():
    return Bench(Core(CONFIG))


ALL = (1 << CONFIG.colors) - 1


def run_core(bench, program, sram=None, *, limit=300, to_core=ALL, from_core=ALL,
             position=(0, 0, 1, 1), sender=None, receiver=None, each_cycle=None, sram_read=256):
    """Load ``program`` (a list of words, nested lists flattened) and ``sram`` ({address: word}
    or a list from 0), run until the core halts (at most ``limit`` cycles) and return what
    happened: ``cycles`` run, ``retired`` [(cycle, pc)], registers, counters, status, SRAM."""
    core = bench.dut
    words = []
    for item in program:
        words.extend(item if isinstance(item, list) else [item])
    assert len(words) <= CONFIG.imem_words
    sender = sender(core.rx) if callable(sender) else sender
    receiver = receiver(core.tx) if callable(receiver) else receiver

    async def job(ctx):
        await load_memory(ctx, core.load, LoadTarget.IMEM, words)
        if sram is not None:
            await load_memory(ctx, core.load, LoadTarget.SRAM, sram)
        ctx.set(core.route_to_core, to_core)
        ctx.set(core.route_from_core, from_core)
        for member, value in zip((core.x, core.y, core.width, core.height), position):
            ctx.set(member, value)
        ctx.set(core.run, 1)
        retired = []
        cycle = 0
        for cycle in range(limit):
            for agent in (sender, receiver):
                if agent is not None:
                    agent.step(ctx, cycle)
            if each_cycle is not None:
                each_cycle(ctx, cycle)
            if ctx.get(core.retire_valid):
                retired.append((cycle, ctx.get(core.retire_pc)))
            await ctx.tick()
            if ctx.get(core.halted):
                break
        else:
            raise AssertionError(f"the core did not halt in {limit} cycles")
        ctx.set(core.run, 0)
        return SimpleNamespace(
            cycles=cycle + 1, retired=retired,
            registers=[ctx.get(r) for r in core.registers],
            counters={name: ctx.get(c) for name, c in zip(COUNTER_NAMES, core.counters)},
            halted=ctx.get(core.halted), trap_cause=TrapCause(ctx.get(core.trap_cause)),
            trap_pc=ctx.get(core.trap_pc), pc=ctx.get(core.pc),
            sram=np.array([ctx.get(core.sram.data[i]) for i in range(sram_read)],
                          dtype=np.uint32),
            sender=sender, receiver=receiver)

    return bench.execute(job)


# Scalar instructions ------------------------------------------------------------------------------

R_OPS = [op.name for op in isa.OPCODES if op.group is isa.Group.ALU and op.format is isa.Format.R]
I_OPS = [op.name for op in isa.OPCODES if op.group is isa.Group.ALU and op.format is isa.Format.I]
WORDS = st.one_of(st.sampled_from([0, 1, 2, 31, 32, 0x7F, 0x80, 0xFF, 0x7FFF_FFFF, 0x8000_0000,
                                   MASK32, 0x8080_8080, 0x7F7F_7F7F]),
                  st.integers(0, MASK32))


@settings(max_examples=5, deadline=None)
@given(a=WORDS, b=WORDS, imms=st.lists(st.integers(-(1 << 17), (1 << 17) - 1),
                                       min_size=len(I_OPS), max_size=len(I_OPS)))
def test_scalar_alu_against_isa(core_bench, a, b, imms):
    """Every register and immediate ALU instruction against isa.alu, one cycle each."""
    program = [E("ld", a=1, b=0, imm18=0), E("ld", a=2, b=0, imm18=1)]
    expected = []
    for k, name in enumerate(R_OPS):
        program += [E(name, a=3, b=1, c=2), E("st", a=3, b=0, imm18=8 + k)]
        expected.append(int(isa.alu(name, a, b)))
    for k, name in enumerate(I_OPS):
        op = isa.BY_NAME[name]
        imm = imms[k] & 0x3FFFF if op.zero_extend else imms[k]
        program += [E(name, a=3, b=1, imm18=imm), E("st", a=3, b=0, imm18=8 + len(R_OPS) + k)]
        expected.append(int(isa.alu(name, a, imm & MASK32)))
    program.append(HALT)
    result = run_core(core_bench, program, {0: a, 1: b}, sram_read=64)
    got = result.sram[8:8 + len(expected)].tolist()
    names = R_OPS + I_OPS
    assert [(n, g) for n, g in zip(names, got)] == [(n, e) for n, e in zip(names, expected)]
    # ld takes two cycles, everything else one.
    assert result.retired == [(1, 0), (3, 1)] + [(4 + k, 2 + k) for k in range(len(program) - 2)]
    assert result.cycles == len(program) + 2
    counters = result.counters
    assert counters["instructions"] == len(program)
    assert counters["macs"] == 2  # mul, mulh
    assert counters["sram_reads"] == 2 and counters["sram_writes"] == len(expected)


@pytest.fixture(scope="module")
def alu_bench():
    return Bench(Alu(), clock=False)


def alu_reference(op, a, b, shift):
    if op is AluOp.REQ:
        return int(isa.requantize(a, b, shift))
    if op is AluOp.MOV:
        return a
    return int(isa.alu(op.name.lower(), a, b))


@settings(max_examples=8, deadline=None)
@given(cases=st.lists(st.tuples(WORDS, WORDS, st.integers(0, 63)), min_size=8, max_size=8))
def test_alu_against_isa(alu_bench, cases):
    """Every ALU operation (the int8 lane ops, dot4 and requantize included) against the
    reference semantics of mesh.isa."""
    alu = alu_bench.dut

    async def job(ctx):
        mismatches = []
        for a, b, shift in cases:
            ctx.set(alu.a, a)
            ctx.set(alu.b, b)
            ctx.set(alu.shift, shift)
            for op in AluOp:
                ctx.set(alu.op, op)
                got, want = ctx.get(alu.result), alu_reference(op, a, b, shift)
                if got != want:
                    mismatches.append((op.name, hex(a), hex(b), shift, hex(got), hex(want)))
        return mismatches

    assert alu_bench.execute(job) == []


def test_requantize_rounding_and_saturation(alu_bench):
    """Round half up at exact halves, both signs, and saturation at both ends."""
    alu = alu_bench.dut
    cases = [(3, 1, 1), (5, 1, 1), (-3 & MASK32, 1, 1), (-5 & MASK32, 1, 1), (1000, 1, 0),
             (-1000 & MASK32, 1, 0), (0x7FFF_FFFF, 0x7FFF_FFFF, 63), (0x8000_0000, 0x8000_0000, 62),
             (0x8000_0000, 0x7FFF_FFFF, 63), (255, 1, 1), (256, 1, 1), (-257 & MASK32, 1, 1)]

    async def job(ctx):
        ctx.set(alu.op, AluOp.REQ)
        got = []
        for a, b, shift in cases:
            ctx.set(alu.a, a)
            ctx.set(alu.b, b)
            ctx.set(alu.shift, shift)
            got.append(ctx.get(alu.result))
        return got

    assert alu_bench.execute(job) == [int(isa.requantize(a, b, s)) for a, b, s in cases]
    assert [v if v < 128 else v - (1 << 32) for v in alu_bench.execute(job)[:6]] == \
        [2, 3, -1, -2, 127, -128]


def test_instruction_timing(core_bench):
    """One cycle per scalar instruction, two for ld, n + 2 for a vector instruction, one for
    n = 0; a store is visible to a load issued in the next cycle; branches, calls, loops."""
    program = {
        0: addi(1, 0, 3),                        # cycle 0
        1: E("ld", a=2, b=0, imm18=0),           # 1-2
        2: E("st", a=1, b=0, imm18=1),           # 3
        3: E("ld", a=3, b=0, imm18=1),           # 4-5: sees the store of cycle 3
        4: E("beq", a=1, b=3, imm14=6),          # 6: taken
        5: addi(4, 0, 99),                       # skipped
        6: E("blt", a=3, b=1, imm14=5),          # 7: not taken
        7: E("jal", a=5, imm14=14),              # 8: r5 = 8
        8: E("dbnz", a=1, imm14=8),              # 11, 12, 13 (r1: 2, 1, 0)
        9: E("dlen", a=0, b=0, imm18=3),         # 14
        10: E("dstride", a=0, b=0, imm18=1),     # 15
        11: vec("vadd", 7, 0, 0, red=1),         # 16-20: r7 = 2 * (10 + 3 + 30)
        12: vec("vmov", 1, 2),                   # 21: n = 0
        13: HALT,                                # 22
        14: E("tid", a=6, imm18=2),              # 9: width
        15: E("jr", b=5),                        # 10
    }
    words = [program.get(i, 0) for i in range(16)]
    result = run_core(core_bench, words, [10, 20, 30], position=(2, 3, 5, 7))
    assert result.retired == [(0, 0), (2, 1), (3, 2), (5, 3), (6, 4), (7, 6), (8, 7), (9, 14),
                              (10, 15), (11, 8), (12, 8), (13, 8), (14, 9), (15, 10), (20, 11),
                              (21, 12), (22, 13)]
    assert result.cycles == 23
    assert result.registers[:8] == [0, 0, 10, 3, 0, 8, 5, 86]
    assert result.pc == 13 and result.halted and result.trap_cause is TrapCause.NONE
    assert result.counters == dict(cycles=23, instructions=17, elements=3, stall_in=0,
                                   stall_out=0, macs=0, sram_reads=2 + 6, sram_writes=1,
                                   wavelets_in=0, wavelets_out=0)


def test_tid_and_register_zero(core_bench):
    program = [E("tid", a=r, imm18=r - 1) for r in range(1, 5)]
    program += [addi(0, 0, 5), E("add", a=5, b=0, c=0), HALT]
    result = run_core(core_bench, program, position=(3, 6, 9, 12))
    assert result.registers[:6] == [0, 3, 6, 9, 12, 0]


def test_jal_link_and_lui_constants(core_bench):
    program = [li(1, 0xDEAD_BEEF), li(2, 0x8000_0001), E("jal", a=3, imm14=8), HALT, 0, 0,
               E("sra", a=4, b=2, c=3), E("mulh", a=5, b=1, c=2), E("jr", b=3)]
    result = run_core(core_bench, program)
    assert result.registers[1:6] == [0xDEAD_BEEF, 0x8000_0001, 5,
                                     int(isa.alu("sra", 0x8000_0001, 5)),
                                     int(isa.alu("mulh", 0xDEAD_BEEF, 0x8000_0001))]
    assert result.pc == 5 and result.trap_cause is TrapCause.NONE  # pc stays at the halt


# Vector instructions ----------------------------------------------------------------------------

N = 6
VECTOR_OPS = ["vmov"] + sorted(isa.BINARY_VECTOR, key=lambda name: isa.BY_NAME[name].code)


def random_words(rng, n):
    """Words mixing int8-lane patterns and full 32-bit values."""
    full = rng.integers(0, 1 << 32, n, dtype=np.uint64)
    small = rng.integers(-300, 300, n).astype(np.int64) & MASK32
    lanes = rng.integers(0, 1 << 32, n, dtype=np.uint64) & np.uint64(0x8F8F_8F8F)
    pick = rng.integers(0, 3, n)
    return np.where(pick == 0, full, np.where(pick == 1, small, lanes)).astype(np.uint32)


@pytest.mark.parametrize("seed", [1, 2])
def test_vector_ops_against_isa(core_bench, seed):
    """Every element-wise vector op on memory vectors against isa.alu; each takes n + 2
    cycles and the next instruction issues right after."""
    rng = np.random.default_rng(seed)
    a, b = random_words(rng, N), random_words(rng, N)
    program = [desc(0, base=0, length=N), desc(1, base=16, length=N), desc(2, base=64, length=N)]
    for name in VECTOR_OPS:
        program += [vec(name, 2, 0, 1), E("dadv", a=2, b=0, imm18=N)]
    program.append(HALT)
    result = run_core(core_bench, program, {**dict(enumerate(a)), **{16 + i: v
                                                                     for i, v in enumerate(b)}})
    for k, name in enumerate(VECTOR_OPS):
        got = result.sram[64 + N * k:64 + N * (k + 1)]
        want = a if name == "vmov" else isa.alu(name, a, b)
        assert got.tolist() == want.tolist(), name
    vector_retires = [cycle for cycle, pc in result.retired if pc >= 9 and (pc - 9) % 2 == 0
                      and pc < 9 + 2 * len(VECTOR_OPS)]
    assert np.diff(vector_retires).tolist() == [N + 3] * (len(VECTOR_OPS) - 1)
    macs = 4 * N * 2 + N * 1  # vdot4, vmul8; vmul
    assert result.counters["macs"] == macs
    assert result.counters["elements"] == N * len(VECTOR_OPS)
    assert result.counters["sram_reads"] == N * (2 * len(VECTOR_OPS) - 1)
    assert result.counters["sram_writes"] == N * len(VECTOR_OPS)


def s32(value):
    return int(np.uint32(value).view(np.int32))


def test_scalar_operand_reductions_and_strides(core_bench):
    """bsc (operand b = rs), .sum / .max reductions with and without acc, and strided
    operands, one of them negative."""
    rng = np.random.default_rng(7)
    a, b = random_words(rng, N), random_words(rng, N)
    rs, start = 0x0102_F0FF, 0x7000_0000
    program = [desc(0, base=0, length=N), desc(1, base=16, length=N), desc(2, base=64, length=N),
               li(3, rs), li(5, start), li(7, start),
               vec("vadd", 2, 0, rs=3, bsc=1),                 # dd = a + rs
               vec("vmul", 4, 0, 1, red=1),                    # r4 = sum a * b
               vec("vdot4", 5, 0, 1, red=1, acc=1),            # r5 = start + sum dot4
               vec("vsub", 6, 0, 1, red=1, max_=1),            # r6 = max (a - b)
               vec("vmov", 7, 0, red=1, max_=1, acc=1),        # r7 = max(start, max a)
               vec("vmul8", 8, 0, rs=3, bsc=1, red=1),         # r8 = sum mul8(a, rs)
               # Strides: a[0, 2, 4], b[21, 20, 19] (negative), dd[100, 103, 106].
               desc(3, base=0, length=3, stride=2), desc(4, base=16 + N - 1, length=3,
                                                         stride=-1),
               desc(5, base=100, length=3, stride=3),
               vec("vxor", 5, 3, 4),
               HALT]
    result = run_core(core_bench, program, {**dict(enumerate(a)),
                                            **{16 + i: v for i, v in enumerate(b)}}, limit=400)
    assert result.sram[64:64 + N].tolist() == isa.alu("vadd", a, np.uint32(rs)).tolist()
    regs = result.registers
    assert regs[4] == int(isa.alu("vmul", a, b).astype(np.uint64).sum() & MASK32)
    assert regs[5] == int((start + isa.dot4(a, b).astype(np.uint64).sum()) & MASK32)
    assert s32(regs[6]) == max(s32(v) for v in isa.alu("vsub", a, b))
    assert s32(regs[7]) == max([s32(start)] + [s32(v) for v in a])
    assert regs[8] == int(isa.alu("vmul8", a, np.uint32(rs)).astype(np.uint64).sum() & MASK32)
    assert result.sram[100:107:3].tolist() == (a[0:5:2] ^ b[::-1][:3]).tolist()
    assert result.sram[[101, 102, 104, 105]].tolist() == [0, 0, 0, 0]


def test_reduction_identity_when_empty(core_bench):
    """n = 0: a reduction writes the identity (0, or -2^31 for .max), or keeps rd with acc."""
    program = [addi(1, 0, 5), addi(2, 0, 5), addi(3, 0, 5), addi(4, 0, 5),
               vec("vadd", 1, 0, 0, red=1), vec("vadd", 2, 0, 0, red=1, max_=1),
               vec("vadd", 3, 0, 0, red=1, acc=1), vec("vadd", 4, 0, 0, red=1, acc=1, max_=1),
               HALT]
    result = run_core(core_bench, program)
    assert result.registers[1:5] == [0, 0x8000_0000, 5, 5]
    assert result.cycles == 9


def test_vreq_vpack_vlut(core_bench):
    rng = np.random.default_rng(3)
    n = 8
    a = (rng.integers(-5000, 5000, n).astype(np.int64) & MASK32).astype(np.uint32)
    a[0], a[1] = 0x7FFF_FFFF, 0x8000_0000
    mult = 0x0001_2345
    table = rng.integers(0, 1 << 32, 10, dtype=np.uint64).astype(np.uint32)
    idx = np.array([-5, 0, 3, 9, 10, 1000, -1, 7]) & MASK32
    program = [desc(0, base=0, length=n), desc(1, base=32, length=n), li(2, mult),
               [vec("vreq", 1, 0, rs=2, shift=s) for s in (0,)],
               desc(2, base=48, length=n), vec("vreq", 2, 0, rs=2, shift=13),
               desc(3, base=64, length=n // 4), vec("vpack", 3, 2),
               desc(4, base=16, length=n), desc(5, base=200, length=10, stride=0),
               desc(6, base=80, length=n), vec("vlut", 6, 4, 5),
               HALT]
    sram = {**dict(enumerate(a)), **{16 + i: v for i, v in enumerate(idx)},
            **{200 + i: v for i, v in enumerate(table)}}
    result = run_core(core_bench, program, sram)
    req0 = isa.requantize(a, mult, 0)
    req13 = isa.requantize(a, mult, 13)
    assert result.sram[32:32 + n].tolist() == req0.tolist()
    assert result.sram[48:48 + n].tolist() == req13.tolist()
    assert result.sram[64:66].tolist() == [int(isa.pack4(*req13[4 * j:4 * j + 4]))
                                           for j in range(2)]
    assert result.sram[66] == 0
    assert result.sram[80:80 + n].tolist() == \
        table[isa.lookup_index(idx.astype(np.uint32), 10)].tolist()
    # vlut reads the index and the table word: two reads per element; vreq counts one MAC.
    assert result.counters["sram_reads"] == n + n + n + 2 * n
    assert result.counters["macs"] == 2 * n
    assert result.counters["sram_writes"] == n + n + 2 + n


def test_packed_results_and_the_lut_offset(core_bench):
    """vreq.pack and vlut.pack write the low bytes of four results into one word (at
    i mod 4 = 3), as vpack does with its elements (bit 9, bsc on vpack, is ignored); vlut
    adds rs to every index before the clamp, (a + rs) mod 2^32 as a signed integer. Every
    instruction takes n + 2 cycles."""
    rng = np.random.default_rng(11)
    n = 8
    a = (rng.integers(-5000, 5000, n).astype(np.int64) & MASK32).astype(np.uint32)
    mult = 0x0001_2345
    table = rng.integers(0, 1 << 32, 10, dtype=np.uint64).astype(np.uint32)
    # + rs = -3: -8, -3, 0, 9, 10 (clamped), 997, 0x7FFFFFFE (wraps positive), 4
    idx = u32([-5, 0, 3, 12, 13, 1000, 0x8000_0001, 7])
    program = [desc(0, base=0, length=n), desc(1, base=32, length=n // 4), li(2, mult),
               vec("vreq", 1, 0, rs=2, shift=13, pack=1),                 # pc 8
               desc(3, base=16, length=n), desc(4, base=200, length=10, stride=0),
               desc(5, base=40, length=n // 4), li(6, -3 & MASK32),
               vec("vlut", 5, 3, 4, rs=6, pack=1),                        # pc 20
               desc(7, base=48, length=n), vec("vlut", 7, 3, 4, rs=6),    # pc 24
               desc(2, base=64, length=n // 4), vec("vpack", 2, 0, bsc=1),  # pc 28
               HALT]
    sram = {**dict(enumerate(a)), **{16 + i: v for i, v in enumerate(idx)},
            **{200 + i: v for i, v in enumerate(table)}}
    result = run_core(core_bench, program, sram)

    def packed(words):
        return [int(isa.pack4(*words[4 * j:4 * j + 4])) for j in range(len(words) // 4)]

    looked_up = table[isa.lookup_index(idx, 10, -3 & MASK32)]
    assert isa.lookup_index(idx, 10, -3 & MASK32).tolist() == [0, 0, 0, 9, 9, 9, 9, 4]
    assert result.sram[32:35].tolist() == packed(isa.requantize(a, mult, 13)) + [0]
    assert result.sram[40:43].tolist() == packed(looked_up) + [0]
    assert result.sram[48:48 + n].tolist() == looked_up.tolist()
    assert result.sram[64:67].tolist() == packed(a) + [0]
    retire_cycle = {pc: cycle for cycle, pc in result.retired}
    for pc in (8, 20, 24, 28):
        assert retire_cycle[pc] - retire_cycle[pc - 1] == n + 2
    c = result.counters
    assert (c["elements"], c["sram_reads"], c["sram_writes"], c["macs"]) == (
        4 * n, n + 2 * n + 2 * n + n, 2 + 2 + n + 2, n)


def test_vreq_acc_saturates(core_bench):
    """vreq.acc: dd[i] = saturate8(s32(dd[i]) + rq(a[i])), the exact sum clamped (see the
    emulator's test for the hand computation); vmov.acc on the same words still wraps. Both
    take n + 2 cycles."""
    a = [40, -40, 10, 100, -100, 0, 1, -1]
    old = [100, -100, -20, -100, 100, 1000, 0x7FFFFFFF, 0x80000000]
    n = len(a)
    program = [desc(0, base=0, length=n), desc(2, base=100, length=n),
               desc(3, base=120, length=n), li(9, 3),
               vec("vreq", 2, 0, rs=9, shift=1, acc=1),            # pc 11
               vec("vmov", 3, 0, acc=1),                           # pc 12
               HALT]
    sram = {**{i: v & MASK32 for i, v in enumerate(a)},
            **{100 + i: v & MASK32 for i, v in enumerate(old)},
            **{120 + i: v & MASK32 for i, v in enumerate(old)}}
    result = run_core(core_bench, program, sram)
    expected = [127, -128, -5, 27, -28, 127, 127, -128]
    assert result.sram[100:100 + n].tolist() == [x & MASK32 for x in expected]
    assert result.sram[120:120 + n].tolist() == [(o + x) & MASK32 for o, x in zip(old, a)]
    retire_cycle = {pc: cycle for cycle, pc in result.retired}
    for pc in (11, 12):
        assert retire_cycle[pc] - retire_cycle[pc - 1] == n + 2
    c = result.counters
    assert (c["sram_reads"], c["sram_writes"], c["macs"]) == (4 * n, 2 * n, n)


def test_vreq_acc_saturates_into_a_stride_0_destination(core_bench):
    """Three chains of a stride-0 destination, each saturating: 100 + 20 + 20 -> 127."""
    a = [5, 5, 20, 5, 5, 20]
    program = [desc(0, base=0, length=6), desc(1, base=80, length=6, stride=0), li(9, 1),
               vec("vreq", 1, 0, rs=9, shift=0, acc=1), HALT]
    result = run_core(core_bench, program, {**dict(enumerate(a)), 80: 100})
    assert result.sram[80] == 127
    assert (result.counters["sram_writes"], result.counters["sram_reads"]) == (6, 12)


@pytest.mark.parametrize("seed", [3, 4])
def test_vlut_requantized_index(core_bench, seed):
    """vlut dd, da, db, rs, shift with shift > 0: the table word at
    clamp(requantize(a[i], rs, shift) + 128, 0, db.length - 1) (isa.lookup_index; a
    multiplier of the pipeline's own in stage M), packed or not; shift 0 keeps a + rs. A
    160-entry table, so that indices above 159 clamp. Every vlut takes n + 2 cycles and
    counts no MAC."""
    rng = np.random.default_rng(seed)
    n = 12
    small = rng.integers(-150, 150, n).astype(np.int64) & MASK32
    a = np.where(rng.integers(0, 3, n) == 0, random_words(rng, n), small).astype(np.uint32)
    table = random_words(rng, 160)
    mult = int(rng.integers(0x1000, 0x3000))
    program = [desc(0, base=0, length=n), desc(1, base=64, length=160),
               desc(2, base=224, length=n), li(5, mult),
               vec("vlut", 2, 0, 1, rs=5, shift=13),                # pc 11
               desc(3, base=236, length=n), li(6, (-3) & MASK32),
               vec("vlut", 3, 0, 1, rs=6, shift=1),                 # pc 17: a negative rs
               desc(4, base=248, length=n // 4),
               vec("vlut", 4, 0, 1, rs=5, shift=12, pack=1),        # pc 21
               desc(7, base=16, length=n),
               vec("vlut", 7, 0, 1, rs=6),                          # pc 25: shift 0, a + rs
               HALT]
    sram = {**dict(enumerate(a)), **{64 + i: v for i, v in enumerate(table)}}
    result = run_core(core_bench, program, sram)

    def looked_up(rs, shift):
        return table[isa.lookup_index(a, 160, np.uint32(rs), shift)]

    assert result.sram[224:224 + n].tolist() == looked_up(mult, 13).tolist()
    assert result.sram[236:236 + n].tolist() == looked_up(-3 & MASK32, 1).tolist()
    words = looked_up(mult, 12)
    assert result.sram[248:248 + n // 4].tolist() == [
        int(isa.pack4(*words[4 * j:4 * j + 4])) for j in range(n // 4)]
    assert result.sram[16:16 + n].tolist() == looked_up(-3 & MASK32, 0).tolist()
    retire_cycle = {pc: cycle for cycle, pc in result.retired}
    for pc in (11, 17, 21, 25):
        assert retire_cycle[pc] - retire_cycle[pc - 1] == n + 2
    c = result.counters
    assert (c["elements"], c["sram_reads"], c["sram_writes"], c["macs"]) == (
        4 * n, 8 * n, 3 * n + n // 4, 0)


def test_packed_results_to_a_fabric_stream_under_backpressure(core_bench):
    """vreq.pack to a FOUT stream sends at i mod 4 = 3 only: words 0 and 1 leave in the X
    cycles of elements 3 and 7 and use up both credits; elements 8..10 send nothing and pass X
    without a credit; element 11 waits in X (stall_out) until the receiver returns one."""
    n = 12
    rng = np.random.default_rng(12)
    a = (rng.integers(-3000, 3000, n).astype(np.int64) & MASK32).astype(np.uint32)
    program = [li(9, 3), desc(0, base=0, length=n), desc(1, Kind.FOUT, color=3, length=n // 4),
               vec("vreq", 1, 0, rs=9, shift=1, pack=1), HALT]
    t0 = 9   # the vreq issues after 2 + 3 + 4 instructions
    release = 30
    receiver = Receiver(core_bench.dut.tx, CONFIG, holding=lambda cycle: cycle < release)
    result = run_core(core_bench, program, a, receiver=receiver)
    q = isa.requantize(a, 3, 1)
    words = [int(isa.pack4(*q[4 * j:4 * j + 4])) for j in range(n // 4)]
    assert receiver.received == [(t0 + 5, 3, words[0]), (t0 + 9, 3, words[1]),
                                 (release + 1, 3, words[2])]
    assert result.retired[-2:] == [(release + 1, t0), (release + 2, t0 + 1)]
    c = result.counters
    assert c["stall_out"] == release + 1 - (t0 + 13)
    assert (c["elements"], c["wavelets_out"], c["sram_reads"], c["sram_writes"], c["macs"]) == (
        n, n // 4, n, 0, n)


def vector_memory_model(mem, n, a_addr, d_addr, op):
    """Memory after a stall-free vector op: element i reads in cycle i (the memory as it was
    at the start of that cycle) and writes in cycle i + 2."""
    mem = list(mem)
    read = {}
    for t in range(n + 2):
        if t < n:
            read[t] = mem[a_addr(t)]
        if t >= 2:
            mem[d_addr(t - 2)] = op(read[t - 2])
    return mem


@pytest.mark.parametrize("offset", [1, 2, 3, -2])
def test_vector_reads_see_writes_of_earlier_cycles_only(core_bench, offset):
    """An in-place vector op overlapping itself: element i reads in its R cycle and writes in
    its X cycle, two later; a read never sees a write of the same cycle."""
    n, base = 10, 20
    start = list(range(100, 100 + 40))
    program = [desc(0, base=base, length=n), desc(1, base=base + offset, length=n),
               li(2, 1), vec("vadd", 1, 0, rs=2, bsc=1), HALT]
    result = run_core(core_bench, program, start, sram_read=40 + 0)
    model = vector_memory_model(start, n, lambda i: base + i, lambda i: base + offset + i,
                                lambda v: v + 1)
    assert result.sram.tolist() == model[:40]


def test_accumulate_into_destination(core_bench):
    """acc without red: dd[i] += result[i], the old dd[i] read in R on port 1; n + 2 cycles.
    vdot4 with a register operand (the GEMV step), a stride-0 destination (element i does
    not see the writes of i - 1 and i - 2), vreq and vmov."""
    rng = np.random.default_rng(5)
    n = 6
    w, old = random_words(rng, n), random_words(rng, n)
    x = 0x04_03_FE_81
    program = [desc(0, base=0, length=n), desc(2, base=64, length=n), li(3, x),
               vec("vdot4", 2, 0, rs=3, bsc=1, acc=1),            # pc 8: d2 += dot4(w, x)
               desc(4, base=100, length=n, stride=0),
               vec("vmov", 4, 0, acc=1),                          # pc 12: stride 0
               desc(5, base=16, length=n), desc(6, base=32, length=n),
               vec("vreq", 6, 5, rs=3, shift=9, acc=1),           # pc 19
               HALT]
    sram = {**dict(enumerate(w)), **{64 + i: v for i, v in enumerate(old)}, 100: 7,
            **{16 + i: v for i, v in enumerate(old)}, **{32 + i: 3 for i in range(n)}}
    result = run_core(core_bench, program, sram)
    assert result.sram[64:64 + n].tolist() == (old + isa.dot4(w, np.uint32(x))).tolist()
    chains = [7] * 3
    for i in range(n):
        chains[i % 3] = (chains[i % 3] + int(w[i])) & MASK32
    assert result.sram[100] == chains[(n - 1) % 3]
    # vreq.acc saturates: saturate8(3 + rq) (isa.accumulate), not 3 + rq.
    rq = isa.requantize(old, x, 9)
    assert result.sram[32:32 + n].tolist() == isa.accumulate(np.uint32(3), rq, True).tolist()
    retire_cycle = {pc: cycle for cycle, pc in result.retired}
    for pc in (8, 12, 19):   # each issues the cycle after its predecessor retires
        assert retire_cycle[pc] - retire_cycle[pc - 1] == n + 2
    c = result.counters
    assert (c["sram_reads"], c["sram_writes"], c["elements"]) == (6 * n, 3 * n, 3 * n)
    assert c["macs"] == 4 * n + n


def test_accumulate_with_a_fabric_operand_b(core_bench):
    """vsub.acc with operand b a FIN stream arriving late: R waits (stall_in) and reads the
    old dd[i] only when it fires."""
    n = 4
    a, old = [50, 60, 70, 80], [1000, 2000, 3000, 4000]
    program = [desc(0, base=0, length=n), desc(1, Kind.FIN, color=2, length=n),
               desc(2, base=8, length=n, stride=2), vec("vsub", 2, 0, 1, acc=1), HALT]
    sender = Sender(core_bench.dut.rx, CONFIG)
    for k, cycle in enumerate([12, 13, 20, 21]):
        sender.send(2, k + 1, cycle=cycle)
    result = run_core(core_bench, program, {**dict(enumerate(a)),
                                            **{8 + 2 * i: v for i, v in enumerate(old)}},
                      sender=sender)
    assert result.sram[8:16:2].tolist() == [o + x - (k + 1) for k, (o, x)
                                            in enumerate(zip(old, a))]
    assert result.sram[9:16:2].tolist() == [0, 0, 0, 0]
    c = result.counters
    assert (c["wavelets_in"], c["sram_reads"], c["sram_writes"]) == (n, 2 * n, n)
    # The vsub (pc 10) issues in cycle 10; R fires the cycle after each arrival: 13, 14, 21,
    # 22, waiting in 10..12 and 15..20.
    assert c["stall_in"] == 3 + 6
    assert result.retired[-2:] == [(22 + 2, 10), (22 + 3, 11)]


def test_accumulate_stride_0_when_r_waits(core_bench):
    """The old dd[i] is the word at the start of element i's R cycle: with wavelets taken in
    R cycles 7 (the issue), 11 and 13, element 1 sees element 0's write (cycle 9), element 2
    not element 1's (cycle 13): 100 + 1, then 101 + 2, then 101 + 4 (as in the emulator's
    test_accumulate_stride_0_when_r_waits_for_wavelets)."""
    program = [desc(0, Kind.FIN, color=2, length=3), desc(2, base=80, length=3, stride=0),
               vec("vmov", 2, 0, acc=1), HALT]
    sender = Sender(core_bench.dut.rx, CONFIG)
    for value, cycle in [(1, 0), (2, 10), (4, 12)]:
        sender.send(2, value, cycle=cycle)
    result = run_core(core_bench, program, {80: 100}, sender=sender)
    assert result.sram[80] == 105
    assert result.retired[-2:] == [(15, 7), (16, 8)]
    assert (result.counters["stall_in"], result.counters["sram_reads"]) == (4, 3)


# Fabric access ------------------------------------------------------------------------------------

def test_recv_and_send_wait_and_count_stalls(core_bench):
    """recv takes a wavelet the cycle after it arrives (returning its credit then); send goes
    out in the cycle it holds a credit, which a held-back receiver returns late."""
    program = [E("recv", a=1, b=0, imm18=1), addi(1, 1, 1),
               [E("send", a=1, b=0, imm18=2)] * 3, HALT]
    sender = Sender(core_bench.dut.rx, CONFIG)
    sender.send(1, 41, cycle=5)
    receiver = Receiver(core_bench.dut.tx, CONFIG, holding=lambda cycle: cycle < 15)
    result = run_core(core_bench, program, sender=sender, receiver=receiver)
    assert sender.sent == [(5, 1, 41)]
    assert sender.credit_cycles == [(6, 0b0010)]
    assert receiver.received == [(8, 2, 42), (9, 2, 42), (16, 2, 42)]
    assert result.retired == [(6, 0), (7, 1), (8, 2), (9, 3), (16, 4), (17, 5)]
    c = result.counters
    assert (c["stall_in"], c["stall_out"], c["wavelets_in"], c["wavelets_out"]) == (6, 6, 1, 3)
    assert c["cycles"] == 18


def test_fabric_output_vector_under_backpressure(core_bench):
    """vmov to a FOUT stream: elements leave in their X cycle while credits last; an element
    in X without a credit stalls the pipeline (stall_out) until the credit comes back."""
    n = 5
    data = [0x1000 + i for i in range(n)]
    program = [desc(0, base=0, length=n), desc(1, Kind.FOUT, color=3, length=n),
               vec("vmov", 1, 0), HALT]
    t0 = 7   # the vmov issues after 3 + 4 set-up instructions
    release = 20
    receiver = Receiver(core_bench.dut.tx, CONFIG, holding=lambda cycle: cycle < release)
    result = run_core(core_bench, program, data, receiver=receiver)
    assert receiver.received == [(c, 3, d) for c, d in zip(
        [t0 + 2, t0 + 3, release + 1, release + 2, release + 3], data)]
    assert result.retired[-2:] == [(release + 3, t0), (release + 4, t0 + 1)]
    c = result.counters
    assert c["stall_out"] == release + 1 - (t0 + 4)
    assert (c["elements"], c["wavelets_out"], c["sram_reads"]) == (n, n, n)


def test_fabric_input_vector_waits_for_wavelets(core_bench):
    """vadd of a FIN stream and a memory vector: R takes a wavelet the cycle after it arrives
    and returns its credit in that cycle; cycles in which only the queue holds R back count
    stall_in."""
    n = 4
    b = [100, 200, 300, 400]
    arrivals = [10, 11, 15, 16]
    program = [desc(0, Kind.FIN, color=1, length=n), desc(1, base=0, length=n),
               desc(2, base=8, length=n), vec("vadd", 2, 0, 1), HALT]
    t0 = 10  # issue cycle of the vadd
    sender = Sender(core_bench.dut.rx, CONFIG)
    for k, cycle in enumerate(arrivals):
        sender.send(1, k + 1, cycle=cycle)
    result = run_core(core_bench, program, b, sender=sender)
    assert [c for c, _, _ in sender.sent] == arrivals
    fired = [c + 1 for c in arrivals]
    assert sender.credit_cycles == [(c, 0b10) for c in fired]
    assert result.retired[-2:] == [(fired[-1] + 2, t0), (fired[-1] + 3, t0 + 1)]
    assert result.sram[8:12].tolist() == [101, 202, 303, 404]
    c = result.counters
    assert c["stall_in"] == (fired[0] - t0) + (fired[2] - fired[1] - 1)
    assert (c["wavelets_in"], c["sram_reads"], c["elements"]) == (n, n, n)


@pytest.mark.parametrize("fin_source", ["a", "b"])
def test_stalled_issue_reads_from_the_operand_base(core_bench, fin_source):
    """R held back by an empty queue in the issue cycle still reads the memory operand from
    its base once it fires (a previous vector instruction left the address elsewhere)."""
    n = 3
    mem = {20 + i: 10 * (i + 1) for i in range(n)}
    fin, memory = (0, 1) if fin_source == "a" else (1, 0)
    program = [desc(4, base=40, length=n), desc(5, base=60, length=n),
               vec("vadd", 5, 4, 4),                    # leaves both read addresses at 43
               desc(fin, Kind.FIN, color=2, length=n), desc(memory, base=20, length=n),
               desc(2, base=30, length=n), vec("vsub", 2, 0, 1), HALT]
    sender = Sender(core_bench.dut.rx, CONFIG)
    for k in range(n):
        sender.send(2, 1000 * (k + 1), cycle=30)
    result = run_core(core_bench, program, mem, sender=sender)
    streamed = [1000 * (k + 1) for k in range(n)]
    stored = [mem[20 + i] for i in range(n)]
    a, b = (streamed, stored) if fin_source == "a" else (stored, streamed)
    assert result.sram[30:30 + n].tolist() == [(x - y) & MASK32 for x, y in zip(a, b)]
    assert result.counters["stall_in"] > 0


def test_two_fabric_inputs_and_a_reduction(core_bench):
    """vdot4.sum of two FIN streams on different colors: both heads are taken together, only
    when both queues hold one."""
    rng = np.random.default_rng(11)
    n = 5
    a, b = random_words(rng, n), random_words(rng, n)
    program = [desc(0, Kind.FIN, color=0, length=n), desc(1, Kind.FIN, color=3, length=n),
               vec("vdot4", 4, 0, 1, red=1), HALT]
    sender = Sender(core_bench.dut.rx, CONFIG)
    for k in range(n):   # a arrives early, b late
        sender.send(0, int(a[k]), cycle=0)
        sender.send(3, int(b[k]), cycle=20)
    result = run_core(core_bench, program, sender=sender)
    assert result.registers[4] == int(isa.dot4(a, b).astype(np.uint64).sum() & MASK32)
    assert result.counters["macs"] == 4 * n
    assert result.counters["wavelets_in"] == 2 * n
    taken = [(c, bits) for c, bits in sender.credit_cycles]
    assert all(bits == 0b1001 for _, bits in taken[-(n - 2):])  # both colors in one cycle


def test_vlut_from_a_fabric_stream_to_a_fabric_stream(core_bench):
    n = 4
    table = [7, 8, 9]
    program = [desc(0, Kind.FIN, color=2, length=n), desc(1, base=50, length=3),
               desc(2, Kind.FOUT, color=1, length=n), vec("vlut", 2, 0, 1), HALT]
    sender = Sender(core_bench.dut.rx, CONFIG)
    for value in (2, MASK32, 1, 5):
        sender.send(2, value)
    receiver = Receiver(core_bench.dut.tx, CONFIG)
    run_core(core_bench, program, {50: 7, 51: 8, 52: 9}, sender=sender, receiver=receiver)
    assert [d for _, _, d in receiver.received] == [table[2], table[0], table[1], table[2]]


# Traps --------------------------------------------------------------------------------------------

NO_1 = ALL & ~0b0010   # a route mask without color 1

TRAPS = {
    # name: (program, expected cause, trap pc, routes to core, routes from core)
    "reserved opcode": ([addi(1, 0, 1), 0], TrapCause.ILLEGAL, 1),
    "falls off the program": ([addi(1, 0, 1)], TrapCause.ILLEGAL, 1),
    "descriptor 8": ([E("dmem", a=8, b=0, imm18=0)], TrapCause.ILLEGAL, 0),
    "tid 4": ([E("tid", a=1, imm18=4)], TrapCause.ILLEGAL, 0),
    "tid -1": ([E("tid", a=1, imm18=-1)], TrapCause.ILLEGAL, 0),
    "red on vpack": ([vec("vpack", 1, 0, red=1)], TrapCause.ILLEGAL, 0),
    "red on vlut": ([vec("vlut", 1, 0, 1, red=1)], TrapCause.ILLEGAL, 0),
    "db 9": ([vec("vadd", 1, 0, 9)], TrapCause.ILLEGAL, 0),
    "dd 12": ([vec("vadd", 12, 0, 1)], TrapCause.ILLEGAL, 0),
    "da 15": ([vec("vadd", 1, 15, rs=1, bsc=1)], TrapCause.ILLEGAL, 0),
    "jump past imem": ([addi(1, 0, 100), E("jr", b=1)], TrapCause.PC_RANGE, 100),
    "run past imem": ([E("jal", a=0, imm14=63)] + [0] * 62 + [addi(1, 0, 1)],
                      TrapCause.PC_RANGE, 64),
    "ld -1": ([E("ld", a=1, b=0, imm18=-1)], TrapCause.SRAM_RANGE, 0),
    "st 256": ([addi(2, 0, 300), E("st", a=1, b=2, imm18=-44)], TrapCause.SRAM_RANGE, 1),
    "ld 2^31 - 1": ([li(2, 0x7FFF_FFFF), E("ld", a=1, b=2, imm18=0)], TrapCause.SRAM_RANGE, 2),
    "vector past the end": ([desc(0, base=254, length=4), desc(1, base=0, length=4),
                             vec("vmov", 1, 0)], TrapCause.SRAM_RANGE, 6),
    "vector before 0": ([desc(0, base=0, length=4), desc(1, base=2, length=4, stride=-1),
                         vec("vmov", 1, 0)], TrapCause.SRAM_RANGE, 6),
    "vector stride 0 past the end": ([desc(0, base=0, length=4),
                                      desc(1, base=256, length=4, stride=0),
                                      vec("vmov", 1, 0)], TrapCause.SRAM_RANGE, 6),
    "table past the end": ([desc(0, base=0, length=4), desc(1, base=250, length=10),
                            desc(2, base=8, length=4), vec("vlut", 2, 0, 1)],
                           TrapCause.SRAM_RANGE, 9),
    "recv without route": ([E("recv", a=1, b=0, imm18=1)], TrapCause.NO_ROUTE, 0, NO_1),
    "recv color 4": ([E("recv", a=1, b=0, imm18=4)], TrapCause.NO_ROUTE, 0),
    "recv color -1": ([E("recv", a=1, b=0, imm18=-1)], TrapCause.NO_ROUTE, 0),
    "send without route": ([E("send", a=1, b=0, imm18=1)], TrapCause.NO_ROUTE, 0, ALL, NO_1),
    "FIN without route": ([desc(0, Kind.FIN, color=1, length=2), vec("vmov", 1, 0, red=1)],
                          TrapCause.NO_ROUTE, 4, NO_1),
    "FIN color 31": ([desc(0, Kind.FIN, color=31, length=2), vec("vmov", 1, 0, red=1)],
                     TrapCause.NO_ROUTE, 4),
    "FOUT without route": ([desc(0, base=0, length=2), desc(1, Kind.FOUT, color=1, length=2),
                            vec("vmov", 1, 0)], TrapCause.NO_ROUTE, 7, ALL, NO_1),
    "length mismatch b": ([desc(0, length=2), desc(1, length=3), vec("vadd", 0, 0, 1)],
                          TrapCause.OPERAND, 6),
    "length mismatch d": ([desc(0, length=2), vec("vadd", 1, 0, 0)], TrapCause.OPERAND, 3),
    "FOUT source": ([desc(0, Kind.FOUT, length=2), desc(1, length=2), vec("vadd", 1, 1, 0)],
                    TrapCause.OPERAND, 7),
    "FIN destination": ([desc(0, length=2), desc(1, Kind.FIN, length=2), vec("vmov", 1, 0)],
                        TrapCause.OPERAND, 7),
    "FIN table": ([desc(0, length=2), desc(1, Kind.FIN, length=2), vec("vlut", 0, 0, 1)],
                  TrapCause.OPERAND, 7),
    "empty table": ([desc(0, length=2), vec("vlut", 0, 0, 1)], TrapCause.OPERAND, 3),
    "vpack of 6": ([desc(0, length=6), desc(1, length=1), vec("vpack", 1, 0)],
                   TrapCause.OPERAND, 6),
    "vpack into 3": ([desc(0, length=8), desc(1, length=3), vec("vpack", 1, 0)],
                     TrapCause.OPERAND, 6),
    "two FIN on one color": ([desc(0, Kind.FIN, length=2), vec("vadd", 1, 0, 0, red=1)],
                             TrapCause.OPERAND, 4),
    "SRAM before OPERAND": ([desc(0, base=254, length=4), vec("vmov", 1, 0)],
                            TrapCause.SRAM_RANGE, 3),
    "acc on vpack": ([desc(0, length=8), desc(1, length=2), vec("vpack", 1, 0, acc=1)],
                     TrapCause.ILLEGAL, 6),
    "acc on vlut": ([desc(0, length=2), desc(1, length=3), vec("vlut", 0, 0, 1, acc=1)],
                    TrapCause.ILLEGAL, 6),
    "acc into FOUT": ([desc(0, base=0, length=2), desc(1, Kind.FOUT, color=1, length=2),
                       vec("vmov", 1, 0, acc=1)], TrapCause.OPERAND, 7),
    "acc with memory b": ([desc(0, length=2), desc(1, base=4, length=2),
                           vec("vadd", 1, 0, 0, acc=1)], TrapCause.OPERAND, 6),
    "vreq.pack of 6": ([desc(0, length=6), desc(1, length=1), vec("vreq", 1, 0, pack=1)],
                       TrapCause.OPERAND, 6),
    "vreq.pack into 8": ([desc(0, length=8), desc(1, length=8), vec("vreq", 1, 0, pack=1)],
                         TrapCause.OPERAND, 6),
    "vreq.pack of 0 into 1": ([desc(1, length=1), vec("vreq", 1, 0, pack=1)],
                              TrapCause.OPERAND, 3),
    "vlut.pack of 6": ([desc(0, length=6), desc(1, length=1), desc(2, base=8, length=3),
                        vec("vlut", 1, 0, 2, pack=1)], TrapCause.OPERAND, 9),
    "vlut.pack into 4": ([desc(0, length=4), desc(1, length=4), desc(2, base=8, length=3),
                          vec("vlut", 1, 0, 2, rs=1, pack=1)], TrapCause.OPERAND, 9),
    "pack with red on vreq": ([vec("vreq", 1, 0, red=1, pack=1)], TrapCause.ILLEGAL, 0),
    "pack with red and acc on vreq": ([vec("vreq", 1, 0, red=1, acc=1, pack=1)],
                                      TrapCause.ILLEGAL, 0),
    "pack with acc on vreq": ([desc(0, length=8), desc(1, length=2),
                               vec("vreq", 1, 0, acc=1, pack=1)], TrapCause.ILLEGAL, 6),
    "pack with acc before SRAM": ([desc(0, base=254, length=8),
                                   vec("vreq", 1, 0, acc=1, pack=1)], TrapCause.ILLEGAL, 3),
    "pack with red on vlut": ([vec("vlut", 1, 0, 2, red=1, pack=1)], TrapCause.ILLEGAL, 0),
    "pack with acc on vlut": ([desc(0, length=8), desc(1, length=2), desc(2, base=8, length=3),
                               vec("vlut", 1, 0, 2, acc=1, pack=1)], TrapCause.ILLEGAL, 9),
}


@pytest.mark.parametrize("name", list(TRAPS))
def test_trap(core_bench, name):
    """The trapping instruction has no effect: the core halts in its issue cycle with the
    cause and its pc; everything before it retired."""
    program, cause, trap_pc, *routes = TRAPS[name]
    to_core, from_core = (routes + [ALL, ALL])[:2]
    words = []
    for item in program:
        words.extend(item if isinstance(item, list) else [item])
    sender = Sender(core_bench.dut.rx, CONFIG)
    sender.send(0, 5)     # a wavelet a trapping instruction must not take
    result = run_core(core_bench, program, {0: 0xAAAA, 255: 0xBBBB}, to_core=to_core,
                      from_core=from_core, sender=sender)
    assert (result.trap_cause, result.trap_pc, result.halted) == (cause, trap_pc, 1)
    trap_cycle = result.cycles - 1
    assert result.retired and result.retired[-1][0] == trap_cycle - 1 or trap_cycle == 0
    assert all(pc != trap_pc for _, pc in result.retired)
    assert result.pc == trap_pc
    assert result.counters["instructions"] == len(result.retired)
    assert result.counters["wavelets_in"] == 0 and result.counters["wavelets_out"] == 0
    assert result.counters["sram_writes"] == 0 and result.sram[255] == 0xBBBB
    assert sender.credit_cycles == []


@pytest.mark.parametrize("program", [
    [vec("vadd", 1, 0, 9, rs=2, bsc=1), HALT],              # db field unused with bsc
    [vec("vadd", 12, 0, 1, red=1), HALT],                   # a is rd when reducing
    [desc(1, Kind.FIN, color=0, length=0), vec("vmov", 1, 0, red=1), HALT],  # dd unused
    [desc(1, base=300, length=3), vec("vadd", 2, 0, 1, rs=3, bsc=1), HALT],  # db unused
    [desc(0, length=4), desc(1, base=8, length=1), vec("vpack", 1, 0, bsc=1), HALT],  # bsc
    [desc(0, length=2), desc(1, base=8, length=2), vec("vmov", 1, 0, bsc=1), HALT],   # ignored
])
def test_unused_fields_do_not_trap(core_bench, program):
    result = run_core(core_bench, program)
    assert result.trap_cause is TrapCause.NONE and result.halted


def test_stall_until_route_would_never_end_is_a_trap_not_a_wait(core_bench):
    """A recv whose color the router never delivers traps at once instead of waiting."""
    result = run_core(core_bench, [E("recv", a=1, b=0, imm18=1), HALT], to_core=NO_1)
    assert result.cycles == 1 and result.counters["stall_in"] == 0


# Load and peek ports, run -------------------------------------------------------------------------

def test_load_and_peek_ports(core_bench):
    """Loads write while run is low; a peek returns the word one cycle later; while running,
    the load port is ignored and the core counts nothing before run rises."""
    core = core_bench.dut

    async def job(ctx):
        await load_memory(ctx, core.load, LoadTarget.SRAM, {3: 33, 4: 44, 255: 99, 300: 1})
        await load_memory(ctx, core.load, LoadTarget.IMEM, [E("ld", a=1, b=0, imm18=4), HALT])
        peeked = []
        for address in (3, 4, 255, 0, 3):
            ctx.set(core.peek.addr, address)
            await ctx.tick()
            peeked.append(ctx.get(core.peek.data))
        idle = [ctx.get(c) for c in core.counters] + [ctx.get(core.pc)]
        ctx.set(core.run, 1)
        ctx.set(core.load.valid, 1)
        ctx.set(core.load.target, LoadTarget.SRAM)
        ctx.set(core.load.addr, 3)
        ctx.set(core.load.data, 77)
        for _ in range(5):
            await ctx.tick()
        ctx.set(core.load.valid, 0)
        ctx.set(core.run, 0)
        ctx.set(core.peek.addr, 3)
        await ctx.tick()
        return peeked, idle, ctx.get(core.peek.data), ctx.get(core.registers[1]), \
            ctx.get(core.counters[0])

    peeked, idle, after, r1, cycles = core_bench.execute(job)
    assert peeked == [33, 44, 99, 0, 33]
    assert idle == [0] * (len(COUNTER_NAMES) + 1)
    assert (after, r1, cycles) == (33, 44, 3)


# Mesh -------------------------------------------------------------------------------------------

MESH_CONFIG = MeshConfig(width=2, height=1, colors=2, buffer_depth=2, sram_words=256,
                         imem_words=32)


@pytest.fixture(scope="module")
def mesh_bench():
    return Bench(Mesh(MESH_CONFIG))


def flatten(program):
    words = []
    for item in program:
        words.extend(item if isinstance(item, list) else [item])
    return words


def run_mesh(bench, programs, srams, routes, *, limit=200, each_cycle=None, after=0,
             peek=range(64)):
    """Write ``routes`` and load ``programs`` / ``srams`` (by tile index) through the mesh's
    ports, run until ``done`` or ``trap`` (then ``after`` more cycles with run still high),
    and read back status, counters and SRAM words ``peek`` through the peek port."""
    mesh, cfg = bench.dut, bench.dut.config
    tiles = cfg.tiles
    programs = {t: flatten(p) for t, p in programs.items()}

    def per_address(images):
        words = {}
        for tile, image in images.items():
            for address, word in (image.items() if isinstance(image, dict)
                                  else enumerate(image)):
                words.setdefault(address, [0] * tiles)[tile] = word
        enable = {address: sum(1 << t for t, image in images.items()
                               if address in (image if isinstance(image, dict)
                                              else range(len(image))))
                  for address in words}
        return words, enable

    async def job(ctx):
        accept, output = routes.masks()
        ctx.set(mesh.route.valid, 1)
        for tile in range(tiles):
            for color in range(cfg.colors):
                ctx.set(mesh.route.tile, tile)
                ctx.set(mesh.route.color, color)
                ctx.set(mesh.route.accept, accept[tile][color])
                ctx.set(mesh.route.out, output[tile][color])
                await ctx.tick()
        ctx.set(mesh.route.valid, 0)
        for target, images in ((LoadTarget.IMEM, programs), (LoadTarget.SRAM, srams)):
            words, enable = per_address(images)
            if words:
                await load_memory(ctx, mesh.load, target, words, enable)
        ctx.set(mesh.run, 1)
        cycle = 0
        for cycle in range(limit):
            if each_cycle is not None:
                each_cycle(ctx, cycle)
            await ctx.tick()
            if ctx.get(mesh.done) or ctx.get(mesh.trap):
                break
        else:
            raise AssertionError(f"the mesh neither finished nor trapped in {limit} cycles")
        for _ in range(after):
            await ctx.tick()
        outcome = SimpleNamespace(
            cycles=cycle + 1, done=ctx.get(mesh.done), trap=ctx.get(mesh.trap),
            halted=ctx.get(mesh.halted),
            trap_cause=[TrapCause(ctx.get(mesh.trap_cause[t])) for t in range(tiles)],
            trap_pc=[ctx.get(mesh.trap_pc[t]) for t in range(tiles)],
            pc=[ctx.get(mesh.pc[t]) for t in range(tiles)],
            counters=[{name: ctx.get(mesh.counters[t][k])
                       for k, name in enumerate(COUNTER_NAMES)} for t in range(tiles)])
        ctx.set(mesh.run, 0)
        sram = np.zeros((tiles, max(peek) + 1), dtype=np.uint32)
        for address in peek:
            ctx.set(mesh.peek.addr, address)
            await ctx.tick()
            for t in range(tiles):
                sram[t, address] = ctx.get(mesh.peek.data[t])
        outcome.sram = sram
        return outcome

    return bench.execute(job)


def test_mesh_streams_between_tiles_with_backpressure(mesh_bench):
    """Tile (0,0) streams n words with vmov (FOUT, color 1) to tile (1,0), which adds them to a
    memory vector (FIN) only after a delay loop. The route holds six wavelets (two per queue:
    router 0's RAMP input, router 1's W input, core 1's queue), so tile 0 sends six, one per
    cycle, then stalls in X until core 1 starts taking at cycle T: one hop per cycle and one
    credit loop later, its seventh wavelet leaves at T + 3 and the rest follow back to back."""
    n, delay = 10, 20
    routes = RouteTable(MESH_CONFIG).chain(1, [(0, 0), (1, 0)]).validate()
    sender = [addi(1, 0, n), E("dlen", a=0, b=1, imm18=0), E("dstride", a=0, b=0, imm18=1),
              E("dfout", a=1, b=0, imm18=1), E("dlen", a=1, b=1, imm18=0),
              vec("vmov", 1, 0), HALT]                              # vmov issues in cycle 5
    receiver = [addi(1, 0, n), E("dfin", a=0, b=0, imm18=1), E("dlen", a=0, b=1, imm18=0),
                desc(1, base=16, length=n), desc(2, base=32, length=n),
                addi(5, 0, delay), E("dbnz", a=5, imm14=10),        # cycles 10 .. 10 + delay - 1
                vec("vadd", 2, 0, 1), HALT]
    assert flatten(receiver)[10] == E("dbnz", a=5, imm14=10)
    t = 10 + delay                                                  # the vadd issues
    a = [1000 * (i + 1) for i in range(n)]
    b = [i + 1 for i in range(n)]
    sent, taken = [], []
    core0, core1 = mesh_bench.dut.tiles[0][0].core, mesh_bench.dut.tiles[0][1].core

    def each_cycle(ctx, cycle):
        if ctx.get(core0.tx.valid):
            sent.append(cycle)
        if ctx.get(core1.rx.credit):
            taken.append(cycle)

    result = run_mesh(mesh_bench, {0: sender, 1: receiver}, {0: a, 1: {16 + i: v for i, v in
                                                                       enumerate(b)}},
                      routes, each_cycle=each_cycle)
    assert sent == list(range(7, 13)) + [t + 3, t + 4, t + 5, t + 6]
    assert taken == [t + i for i in range(n)]
    assert result.sram[1, 32:32 + n].tolist() == [x + y for x, y in zip(a, b)]
    assert result.sram[1, 16:16 + n].tolist() == b and result.sram[0, :n].tolist() == a
    assert (result.done, result.trap, result.halted) == (1, 0, 0b11)
    assert result.cycles == t + n + 3                  # halt of tile 1 in t + n + 2
    c0, c1 = result.counters
    assert c0["stall_out"] == t + 3 - 13 and c0["cycles"] == t + 8
    assert c1["stall_in"] == 0 and c1["cycles"] == t + n + 3
    assert (c0["wavelets_out"], c1["wavelets_in"], c1["sram_writes"]) == (n, n, n)
    assert result.pc == [6, 12]


def test_mesh_trap_stops_every_core(mesh_bench):
    """A trap in one core stops the run at the end of its cycle: the other core, in an
    endless loop, executes and counts nothing more although run stays high."""
    routes = RouteTable(MESH_CONFIG)
    looping = [E("beq", a=0, b=0, imm14=0)]
    trapping = [addi(1, 0, 3), E("dbnz", a=1, imm14=1), 0]       # traps in cycle 4, pc 2
    result = run_mesh(mesh_bench, {0: looping, 1: trapping}, {}, routes, after=5,
                      peek=range(1))
    assert (result.trap, result.done, result.halted) == (1, 0, 0b10)
    assert result.cycles == 5
    assert result.trap_cause == [TrapCause.NONE, TrapCause.ILLEGAL]
    assert result.trap_pc == [0, 2]
    assert result.counters[0]["cycles"] == 5 and result.counters[0]["instructions"] == 5
    assert result.counters[1]["cycles"] == 5 and result.counters[1]["instructions"] == 4


def test_mesh_done_and_per_tile_load(mesh_bench):
    """Tiles get different programs and data through one parallel load; done rises after the
    cycle at whose end the last core halts; tid sees each tile's position."""
    program = [E("tid", a=1, imm18=0), E("tid", a=2, imm18=2), E("ld", a=3, b=0, imm18=5),
               E("add", a=3, b=3, c=1), E("st", a=3, b=0, imm18=6), HALT]
    slow = [addi(4, 0, 4), E("dbnz", a=4, imm14=1)] + program
    result = run_mesh(mesh_bench, {0: program, 1: slow}, {0: {5: 50}, 1: {5: 70}},
                      RouteTable(MESH_CONFIG), peek=range(8))
    assert result.sram[:, 5:7].tolist() == [[50, 50], [70, 71]]
    assert result.cycles == 5 + 7 and result.done
    assert [c["cycles"] for c in result.counters] == [7, 12]


# Construction -------------------------------------------------------------------------------------

def flow_and_width(member):
    from amaranth.hdl import Shape
    return member.flow, Shape.cast(member.shape).width


@pytest.mark.parametrize("make", [
    lambda: Core("4x4"), lambda: Tile(None), lambda: Mesh({"width": 2}),
    lambda: LoadSignature(8), lambda: PeekSignature("x"), lambda: hdl.mesh_verilog("2x2"),
    lambda: tile_signature(3),
])
def test_bad_config_type(make):
    with pytest.raises(TypeError, match="config must be a mesh.MeshConfig"):
        make()


@pytest.mark.parametrize("tiles", [0, -2, 1.5, True])
@pytest.mark.parametrize("signature", [LoadSignature, PeekSignature])
def test_bad_tiles(signature, tiles):
    with pytest.raises(ValueError, match="tiles must be None or a positive integer"):
        signature(CONFIG, tiles=tiles)


def test_core_members():
    config = MeshConfig(colors=5, sram_words=4096, imem_words=1024)
    members = Core(config).signature.members
    widths = {name: flow_and_width(member) for name, member in members.items()
              if not member.is_signature and not member.dimensions}
    assert widths == {
        "route_to_core": (In, 5), "route_from_core": (In, 5), "run": (In, 1), "x": (In, 16),
        "y": (In, 16), "width": (In, 16), "height": (In, 16), "halted": (Out, 1),
        "progress": (Out, 1), "trap_cause": (Out, 3), "trap_pc": (Out, 14), "pc": (Out, 14)}
    assert members["counters"].dimensions == (len(isa.COUNTERS),)
    assert members["tx"] == Out(hdl.LinkSignature(config))
    assert members["rx"] == In(hdl.LinkSignature(config))
    load = LoadSignature(config).members
    assert {n: flow_and_width(m) for n, m in load.items()} == {
        "valid": (Out, 1), "target": (Out, 1), "addr": (Out, 12), "data": (Out, 32)}
    peek = PeekSignature(config).members
    assert {n: flow_and_width(m) for n, m in peek.items()} == {"addr": (Out, 12),
                                                                 "data": (In, 32)}


def test_mesh_members():
    config = MeshConfig(width=3, height=2, colors=3, sram_words=300, imem_words=2000)
    mesh = Mesh(config)
    assert len(mesh.tiles) == 2 and len(mesh.tiles[0]) == 3
    assert len(mesh.north_out) == 3 and len(mesh.east_in) == 2
    assert len(mesh.load.addr) == 11 and len(mesh.load.enable) == 6
    assert len(mesh.load.data) == 6 and len(mesh.peek.data) == 6 and len(mesh.peek.addr) == 9
    assert len(mesh.halted) == 6 and len(mesh.counters) == 6
    assert len(mesh.counters[5]) == len(isa.COUNTERS) and len(mesh.route.tile) == 3
    assert Tile(config).signature.members == tile_signature(config).members


def test_decoder_covers_the_isa():
    """Every ALU and vector instruction has an ALU operation; every opcode a class."""
    from hdl.core_decode import InstrClass, instruction_class
    computed = {op.name for op in isa.OPCODES if op.group in (isa.Group.ALU, isa.Group.VECTOR)}
    assert computed == set(ALU_OPS)
    assert {instruction_class(op) for op in isa.OPCODES} == set(InstrClass)


# Verilog --------------------------------------------------------------------------------------

def module_ports(text, name):
    module = text[text.index(f"module {name}("):]
    module = module[:module.index("endmodule")]
    return {port: direction for direction, port in
            re.findall(r"^\s*(input|output)\s+(?:\[\d+:0\]\s+)?(\w+);", module, re.M)}


def expected_ports(signature):
    ports = {"clk": "input", "rst": "input"}
    for path, member, _ in signature.flatten(signature.create()):
        ports["__".join(str(p) for p in path)] = "input" if member.flow == In else "output"
    return ports


@pytest.fixture(scope="module")
def small_mesh_verilog():
    config = MeshConfig(width=2, height=2, colors=2, buffer_depth=1, sram_words=256,
                        imem_words=16)
    return config, hdl.mesh_verilog(config)


def test_mesh_verilog_modules_and_ports(small_mesh_verilog):
    """One wse_tile module, instanced W x H times by wse_mesh, whose ports are Mesh's members
    joined by double underscores (edge links named as on Fabric)."""
    from hdl.mesh import mesh_signature
    config, text = small_mesh_verilog
    assert module_ports(text, "wse_tile") == expected_ports(tile_signature(config))
    ports = module_ports(text, "wse_mesh")
    assert ports == expected_ports(mesh_signature(config))
    assert ports["east_out__1__credit"] == "input" and ports["load__data__3"] == "input"
    assert ports["counters__3__9"] == "output" and ports["peek__data__0"] == "output"
    assert len(re.findall(r"^\s*wse_tile tile_\d_\d \(", text, re.M)) == 4
    assert text.count("module wse_tile(") == 1


def test_mesh_verilog_lints_clean(small_mesh_verilog, tmp_path):
    _, text = small_mesh_verilog
    lint_warnings(text, "wse_mesh", tmp_path)

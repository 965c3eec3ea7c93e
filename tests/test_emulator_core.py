"""Exact-cycle tests of the core emulator (emulator/core.py, emulator/mesh.py) written by hand
from docs/ARCHITECTURE.md sections 3, 9 and 10: every instruction class's result and timing,
vector operands and pipeline timing, fabric transfers between cores with exact arrival cycles,
backpressure, traps, no progress and counters.

Run as a script (``.venv/bin/python tests/test_emulator_core.py [4 8 32]``) to measure the
emulator's speed on a vector-heavy program.
"""

import sys
import time

import numpy as np
import pytest

from emulator import (CycleLimitExceeded, MeshEmulator, MeshNoProgress, NoProgress,
                      ProtocolError)
from mesh import (CoreImage, MeshConfig, MeshProgram, Port, RouteTable, Trap, checkerboard_color,
                  isa)
from mesh.isa import TRAP_TEXT, TrapCause

E = isa.encode
ONE = MeshConfig(width=1, height=1, colors=4, sram_words=256, imem_words=64)
COUNTER = {name: k for k, (name, _) in enumerate(isa.COUNTERS)}


# Helpers --------------------------------------------------------------------------------------

def image(words, sram=None):
    segments = {} if sram is None else {0: np.asarray(sram, dtype=np.uint32)}
    return CoreImage(tuple(int(w) for w in words), segments)


def run1(words, sram=None, config=ONE, **kwargs):
    """Run one program on a 1x1 mesh; returns (emulator, result)."""
    emu = MeshEmulator(MeshProgram(config, {(0, 0): image(words, sram)}), trace=True)
    return emu, emu.run(**kwargs)


def const(r, value):
    """Two instructions that put a 32-bit constant in register r."""
    return [E("lui", a=r, imm18=value >> 14), E("ori", a=r, b=r, imm18=value & 0x3FFF)]


def mem(d, base, length, stride=1):
    """Three instructions: descriptor d = memory vector (base, length, stride)."""
    return [E("dmem", a=d, b=0, imm18=base), E("dlen", a=d, b=0, imm18=length),
            E("dstride", a=d, b=0, imm18=stride)]


def stream(d, kind, color, length):
    """Two instructions: descriptor d = FIN or FOUT stream of ``length`` on ``color``."""
    return [E("dfin" if kind == "in" else "dfout", a=d, b=0, imm18=color),
            E("dlen", a=d, b=0, imm18=length)]


def counters(result, tile=0):
    return {name: int(result.counters[tile, k]) for name, k in COUNTER.items()}


def retire_cycles(emu, tile=0):
    return [(cycle, pc) for cycle, t, pc in emu.retired if t == tile]


def s32(x):
    return int(np.uint32(x).view(np.int32))


RNG = np.random.default_rng(2024)
EDGE_VALUES = [(5, 3), (3, 5), (0xFFFFFFFF, 1), (0x80000000, 0xFFFFFFFF), (0x7FFFFFFF, 2),
               (0x12345678, 0x9ABCDEF0), (0x80000000, 31), (0, 0), (1, 33), (0xFFFFFF80, 0x7F)]


def operand_mesh(words, pairs):
    """One tile per operand pair (a, b) in SRAM words 0 and 1, all running ``words``: every
    tile executes the same instruction class in the same cycle on different data."""
    config = MeshConfig(width=len(pairs), height=1, colors=4, sram_words=256, imem_words=64)
    images = {(x, 0): image(words, [a, b]) for x, (a, b) in enumerate(pairs)}
    emu = MeshEmulator(MeshProgram(config, images), trace=True)
    return emu, emu.run()


# Scalar instructions ----------------------------------------------------------------------------

R_OPS = [op.name for op in isa.OPCODES if op.group is isa.Group.ALU and op.format is isa.Format.R]


@pytest.mark.parametrize("name", R_OPS)
def test_register_alu(name):
    """rd = alu(ra, rb) for every R-format ALU instruction, one cycle; ld takes two."""
    words = [E("ld", a=1, b=0, imm18=0), E("ld", a=2, b=0, imm18=1),
             E(name, a=3, b=1, c=2) if name != "clz" else E("clz", a=3, b=1), E("halt")]
    emu, result = operand_mesh(words, EDGE_VALUES)
    for tile, (a, b) in enumerate(EDGE_VALUES):
        assert result.registers[tile, 3] == isa.alu(name, np.uint32(a), np.uint32(b))
        assert retire_cycles(emu, tile) == [(1, 0), (3, 1), (4, 2), (5, 3)]
        macs = isa.MACS_PER_SCALAR.get(name, 0)
        assert counters(result, tile) == dict(
            cycles=6, instructions=4, elements=0, stall_in=0, stall_out=0, macs=macs,
            sram_reads=2, sram_writes=0, wavelets_in=0, wavelets_out=0)
    assert result.cycles == 6


def test_register_alu_spot_values():
    """A few results worked out by hand (operand order, signedness, shifts)."""
    cases = [("sub", 3, 5, 0xFFFFFFFE), ("sra", 0x80000000, 4, 0xF8000000),
             ("srl", 0x80000000, 4, 0x08000000), ("sll", 1, 33, 2), ("slt", 0xFFFFFFFF, 1, 1),
             ("sltu", 0xFFFFFFFF, 1, 0), ("mulh", 0x80000000, 0x80000000, 0x40000000),
             ("mul", 0x10001, 0x10001, 0x20001), ("min", 0xFFFFFFFF, 1, 0xFFFFFFFF),
             ("max", 0xFFFFFFFF, 1, 1), ("clz", 1, 0, 31), ("clz", 0, 0, 32)]
    for name, a, b, expected in cases:
        words = [E("ld", a=1, b=0, imm18=0), E("ld", a=2, b=0, imm18=1),
                 E(name, a=3, b=1, c=2) if name != "clz" else E("clz", a=3, b=1), E("halt")]
        _, result = run1(words, [a, b])
        assert result.registers[0, 3] == expected, name


I_CASES = [("addi", -5), ("addi", 131071), ("andi", 0x3FFFF), ("andi", 0x0F0F0), ("ori", 0x2AAAA),
           ("xori", 0x3FFFF), ("slli", 7), ("slli", 35), ("srli", 9), ("srai", 31),
           ("slti", -1), ("slti", 100), ("lui", 0x3FFFF), ("lui", 1)]


@pytest.mark.parametrize("name, imm", I_CASES)
def test_immediate_alu(name, imm):
    """rd = alu(ra, imm), imm18 sign-extended (zero-extended for andi, ori, xori, lui)."""
    words = [E("ld", a=1, b=0, imm18=0),
             E(name, a=3, b=1, imm18=imm) if name != "lui" else E("lui", a=3, imm18=imm),
             E("halt")]
    emu, result = operand_mesh(words, EDGE_VALUES)
    extended = np.uint32(imm & 0xFFFFFFFF)
    for tile, (a, _) in enumerate(EDGE_VALUES):
        assert result.registers[tile, 3] == isa.alu(name, np.uint32(a), extended)
        assert retire_cycles(emu, tile) == [(1, 0), (2, 1), (3, 2)]
    assert result.cycles == 4


def test_immediate_spot_values():
    cases = [(const(1, 10) + [E("addi", a=3, b=1, imm18=-11)], 0xFFFFFFFF),
             (const(1, 0xFFFFFFFF) + [E("andi", a=3, b=1, imm18=0x3FFFF)], 0x3FFFF),
             ([E("lui", a=3, imm18=0x3FFFF)], 0xFFFFC000),
             (const(1, 0x80000000) + [E("srai", a=3, b=1, imm18=4)], 0xF8000000),
             (const(1, 0xFFFFFFFE) + [E("slti", a=3, b=1, imm18=-1)], 1),
             (const(3, 0x12345678), 0x12345678)]
    for words, expected in cases:
        _, result = run1(words + [E("halt")])
        assert result.registers[0, 3] == expected


def test_r0_reads_zero_and_ignores_writes():
    words = [E("addi", a=0, b=0, imm18=5), E("addi", a=1, b=0, imm18=3), E("ld", a=0, b=0, imm18=0),
             E("add", a=2, b=0, c=1), E("halt")]
    _, result = run1(words, [99])
    assert result.registers[0, 0] == 0 and result.registers[0, 2] == 3


def test_timing_halt_and_pc():
    """Scalar instructions retire in their cycle, ld in its second; halt retires and leaves
    pc at itself; ``cycles`` counts up to and including the halt cycle."""
    words = [E("addi", a=1, b=0, imm18=1), E("ld", a=2, b=0, imm18=0), E("addi", a=3, b=2, imm18=1),
             E("halt")]
    emu, result = run1(words, [41])
    assert retire_cycles(emu) == [(0, 0), (2, 1), (3, 2), (4, 3)]
    assert result.cycles == 5 and result.registers[0, 3] == 42
    assert result.pc[0] == 3 and result.halted[0] and result.trap_cause[0] == 0
    assert counters(result)["cycles"] == 5 and counters(result)["instructions"] == 4


def test_store_then_load():
    """A store in cycle t is seen by a load issued in t + 1."""
    words = [E("addi", a=1, b=0, imm18=77), E("st", a=1, b=0, imm18=5), E("ld", a=2, b=0, imm18=5),
             E("addi", a=4, b=0, imm18=-1), E("st", a=1, b=4, imm18=10), E("halt")]
    emu, result = run1(words)
    assert result.registers[0, 2] == 77 and result.sram[0, 5] == 77 and result.sram[0, 9] == 77
    assert retire_cycles(emu) == [(0, 0), (1, 1), (3, 2), (4, 3), (5, 4), (6, 5)]
    c = counters(result)
    assert (c["sram_reads"], c["sram_writes"]) == (1, 2)


BRANCHES = [("beq", 4, 4, True), ("beq", 4, 5, False), ("bne", 4, 5, True), ("bne", 4, 4, False),
            ("blt", 0xFFFFFFFF, 1, True), ("blt", 1, 0xFFFFFFFF, False), ("blt", 3, 3, False),
            ("bge", 0xFFFFFFFF, 1, False), ("bge", 3, 3, True), ("bge", 1, 0xFFFFFFFF, True)]


@pytest.mark.parametrize("name, a, b, taken", BRANCHES)
def test_branches(name, a, b, taken):
    words = [E("ld", a=1, b=0, imm18=0), E("ld", a=2, b=0, imm18=1), E(name, a=1, b=2, imm14=5),
             E("addi", a=3, b=0, imm18=1), E("halt"), E("addi", a=3, b=0, imm18=2), E("halt")]
    emu, result = run1(words, [a, b])
    assert result.registers[0, 3] == (2 if taken else 1)
    target = 5 if taken else 3
    assert retire_cycles(emu) == [(1, 0), (3, 1), (4, 2), (5, target), (6, target + 1)]
    assert result.cycles == 7 and result.pc[0] == target + 1


def test_dbnz_loop():
    """dbnz decrements, then branches while the new value is non-zero: the loop body runs 3
    times; two cycles per iteration."""
    words = [E("addi", a=1, b=0, imm18=3), E("addi", a=2, b=2, imm18=1), E("dbnz", a=1, imm14=1),
             E("halt")]
    emu, result = run1(words)
    assert result.registers[0, 2] == 3 and result.registers[0, 1] == 0
    assert [pc for _, pc in retire_cycles(emu)] == [0, 1, 2, 1, 2, 1, 2, 3]
    assert result.cycles == 8


def test_jal_and_jr():
    words = [E("jal", a=5, imm14=3), E("addi", a=2, b=0, imm18=7), E("halt"),
             E("addi", a=1, b=0, imm18=9), E("jr", b=5)]
    emu, result = run1(words)
    assert retire_cycles(emu) == [(0, 0), (1, 3), (2, 4), (3, 1), (4, 2)]
    assert list(result.registers[0, [1, 2, 5]]) == [9, 7, 1]


def test_tid():
    config = MeshConfig(width=3, height=2, colors=4, sram_words=256, imem_words=64)
    words = [E("tid", a=1, imm18=0), E("tid", a=2, imm18=1), E("tid", a=3, imm18=2),
             E("tid", a=4, imm18=3), E("halt")]
    images = {(x, y): image(words) for x in range(3) for y in range(2)}
    result = MeshEmulator(MeshProgram(config, images)).run()
    for tile in range(6):
        assert list(result.registers[tile, 1:5]) == [tile % 3, tile // 3, 3, 2]


def test_descriptor_setup():
    words = [E("addi", a=1, b=0, imm18=0xFFFF), E("dmem", a=2, b=1, imm18=3),
             E("dlen", a=2, b=1, imm18=2), E("dstride", a=2, b=0, imm18=-3),
             E("dadv", a=2, b=1, imm18=5), E("dfin", a=3, b=0, imm18=33),
             E("dfout", a=4, b=1, imm18=1), E("dstride", a=5, b=1, imm18=0x8001), E("halt")]
    emu, _ = run1(words)
    c = emu.cores
    assert (c.desc_kind[0, 2], c.desc_base[0, 2], c.desc_length[0, 2], c.desc_stride[0, 2]) \
        == (isa.Kind.MEM, (0xFFFF + 3 + 0xFFFF + 5) & 0xFFFF, 1, -3)
    assert (c.desc_kind[0, 3], c.desc_color[0, 3]) == (isa.Kind.FIN, 1)
    assert (c.desc_kind[0, 4], c.desc_color[0, 4]) == (isa.Kind.FOUT, 0)
    assert c.desc_stride[0, 5] == (0xFFFF + 0x8001 & 0xFFFF) - 0x10000
    assert (c.desc_kind[0, 0], c.desc_base[0, 0], c.desc_length[0, 0]) == (isa.Kind.MEM, 0, 0)


# Vector instructions ----------------------------------------------------------------------------

def vector_run(op_word, a, b=None, setup=(), n=None, dd=(100, 1), da=(0, 1), db=(32, 2),
               table=None):
    """Memory vector da (base, stride) holding ``a``, db holding ``b``, destination dd; returns
    (emulator, result, t0), t0 the vector instruction's issue cycle."""
    n = len(a) if n is None else n
    sram = np.zeros(256, dtype=np.uint32)
    sram[da[0] + np.arange(n) * da[1]] = a
    if b is not None:
        sram[db[0] + np.arange(len(b)) * db[1]] = b
    if table is not None:
        sram[db[0]:db[0] + len(table)] = table
    words = list(setup) + mem(0, da[0], n, da[1])
    words += mem(1, db[0], len(table) if table is not None else n, db[1])
    words += mem(2, dd[0], n if dd[2:] == () else dd[2], dd[1])
    t0 = len(words)
    emu, result = run1(words + [op_word, E("halt")], sram)
    return emu, result, t0


def values(n, low=0, high=1 << 32):
    return RNG.integers(low, high, n, dtype=np.uint64).astype(np.uint32)


@pytest.mark.parametrize("name", sorted(isa.BINARY_VECTOR))
def test_vector_binary(name):
    """dd[i] = op(a[i], b[i]) for memory operands with strides 1 (da), 2 (db) and -1 (dd);
    n + 2 cycles."""
    n = 9
    a, b = values(n), values(n)
    emu, result, t0 = vector_run(E(name, a=2, b=0, c=1), a, b, dd=(120, -1))
    assert np.array_equal(result.sram[0, 120 - np.arange(n)], isa.alu(name, a, b))
    assert retire_cycles(emu)[-2:] == [(t0 + n + 1, t0), (t0 + n + 2, t0 + 1)]
    c = counters(result)
    assert (c["elements"], c["sram_writes"]) == (n, n)
    assert c["sram_reads"] == 2 * n
    assert c["macs"] == n * isa.MACS_PER_ELEMENT.get(name, 0)
    assert c["cycles"] == t0 + n + 3 and c["instructions"] == t0 + 2


def test_vmov_negative_source_stride():
    """da base 40, stride -3: elements at 40, 37, ..., 19."""
    n = 8
    a = values(n)
    _, result, _ = vector_run(E("vmov", a=2, b=0), a, da=(40, -3), dd=(100, 1))
    assert np.array_equal(result.sram[0, 100:100 + n], a)


def test_vector_scalar_operand():
    """bsc: operand b is rs, read at issue, for every element."""
    n = 6
    a = values(n)
    setup = const(7, 0x01020304)
    emu, result, t0 = vector_run(E("vsub", a=2, b=0, d=7, bsc=1), a, setup=setup)
    assert np.array_equal(result.sram[0, 100:100 + n], isa.alu("vsub", a, np.uint32(0x01020304)))
    assert counters(result)["sram_reads"] == n


@pytest.mark.parametrize("name", ["vadd", "vdot4", "vmul", "vmax8", "vsub"])
@pytest.mark.parametrize("use_max, acc", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_reductions(name, use_max, acc):
    """.sum / .max (signed) of the element results into rd, starting at the identity or at rd
    (.acc); rd is written when the instruction retires."""
    n = 7
    a, b = values(n), values(n)
    setup = const(5, 0x80000005)
    emu, result, t0 = vector_run(E(name, a=5, b=0, c=1, red=1, max=use_max, acc=acc), a, b,
                                 setup=setup)
    elements = isa.alu(name, a, b)
    start = 0x80000005 if acc else (0x80000000 if use_max else 0)
    if use_max:
        expected = max([s32(start)] + [s32(v) for v in elements]) & 0xFFFFFFFF
    else:
        expected = (start + int(elements.astype(np.uint64).sum())) & 0xFFFFFFFF
    assert result.registers[0, 5] == expected
    assert retire_cycles(emu)[-2][0] == t0 + n + 1
    assert not result.sram[0, 100:100 + n].any()          # nothing written
    assert counters(result)["sram_writes"] == 0


def test_reduction_with_bsc_and_empty():
    n = 5
    a = values(n)
    words = const(6, 3) + mem(0, 0, n) + [E("vmul", a=4, b=0, d=6, bsc=1, red=1), E("halt")]
    _, result = run1(words, a)
    assert result.registers[0, 4] == (3 * int(a.astype(np.uint64).sum())) & 0xFFFFFFFF
    # n = 0: retires in its issue cycle; .max starts at -2^31, .acc keeps rd.
    words = const(4, 17) + [E("vadd", a=3, b=0, c=1, red=1, max=1),
                            E("vadd", a=4, b=0, c=1, red=1, acc=1), E("halt")]
    emu, result = run1(words)
    assert result.registers[0, 3] == 0x80000000 and result.registers[0, 4] == 17
    assert retire_cycles(emu) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]


def test_vreq():
    n = 12
    a = np.concatenate([values(6), values(6, 0, 2000)]).astype(np.uint32)
    for multiplier, shift in [(3, 0), (0x7FFF, 15), (0xFFFFFFF9, 3), (1 << 20, 40), (5, 63)]:
        setup = const(9, multiplier)
        _, result, _ = vector_run(E("vreq", a=2, b=0, d=9, imm6=shift), a, setup=setup)
        assert np.array_equal(result.sram[0, 100:100 + n],
                              isa.requantize(a, np.uint32(multiplier), shift))
        assert counters(result)["macs"] == n


def test_vpack():
    """dd[j] = pack4(a[4j..4j+3]); dd.length = n / 4; a word is written at i mod 4 = 3."""
    n = 12
    a = values(n)
    emu, result, t0 = vector_run(E("vpack", a=2, b=0), a, dd=(100, 2, n // 4))
    expected = isa.pack4(a[0::4], a[1::4], a[2::4], a[3::4])
    assert np.array_equal(result.sram[0, 100:100 + 2 * (n // 4):2], expected)
    assert retire_cycles(emu)[-2][0] == t0 + n + 1
    c = counters(result)
    assert (c["elements"], c["sram_writes"], c["sram_reads"]) == (n, n // 4, n)


def test_vlut():
    """dd[i] = table[clamp(a[i], 0, len - 1)]; the table read happens as the element moves
    from M to X."""
    table = values(10)
    a = np.array([0, 9, 10, 0xFFFFFFFF, 5, 0x80000000, 0x7FFFFFFF, 3], dtype=np.uint32)
    emu, result, t0 = vector_run(E("vlut", a=2, b=0, c=1), a, table=table, db=(200, 1))
    index = np.clip(a.view(np.int32), 0, 9)
    assert np.array_equal(result.sram[0, 100:100 + len(a)], table[index])
    assert retire_cycles(emu)[-2][0] == t0 + len(a) + 1
    assert counters(result)["sram_reads"] == 2 * len(a)


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_vector_timing(n):
    """n + 2 cycles (1 when n = 0); the next instruction issues the cycle after."""
    a = values(max(n, 1))[:n]
    emu, result, t0 = vector_run(E("vadd", a=2, b=0, c=1), a, a)
    end = t0 if n == 0 else t0 + n + 1
    assert retire_cycles(emu)[-2:] == [(end, t0), (end + 1, t0 + 1)]
    assert result.cycles == end + 2


@pytest.mark.parametrize("offset", [1, 2, 3, 4])
def test_vector_read_after_write(offset):
    """Memory timing: a read sees the SRAM at the start of its cycle. dd = da + offset: element
    i reads address i in t0 + i; element i - offset wrote it in t0 + i - offset + 2, which is
    seen only when that is before t0 + i, i.e. offset >= 3."""
    n = 10
    a = values(n, 0, 1000)
    words = mem(0, 0, n) + mem(1, offset, n) + const(3, 1) + [
        E("vadd", a=1, b=0, d=3, bsc=1), E("halt")]
    _, result = run1(words, a)
    expected = np.zeros(n + offset, dtype=np.int64)
    expected[:n] = a
    for i in range(n):
        read = expected[i] if offset >= 3 else a[i]
        expected[i + offset] = read + 1
    assert np.array_equal(result.sram[0, :n + offset], expected)


# Accumulate into the destination (acc without red) ------------------------------------------

@pytest.mark.parametrize("word, op, b", [
    (E("vadd", a=2, b=0, d=7, bsc=1, acc=1), "vadd", 0x01020304),
    (E("vsub", a=2, b=0, d=7, bsc=1, acc=1, max=1), "vsub", 0x01020304),   # max ignored
    (E("vmul8", a=2, b=0, d=7, bsc=1, acc=1), "vmul8", 0x01020304),
    (E("vmov", a=2, b=0, acc=1), "vmov", 0),
])
def test_accumulate_into_destination(word, op, b):
    """dd[i] = dd[i] + result[i] (mod 2^32): the old dd[i] is read in R on port 1 (one more
    SRAM read per element), the cycles are those of the plain instruction (n + 2)."""
    n = 7
    a, old = values(n), values(n)
    sram = np.zeros(256, dtype=np.uint32)
    sram[:n], sram[100:100 + n] = a, old
    words = const(7, b) + mem(0, 0, n) + mem(2, 100, n)
    t0 = len(words)
    emu, result = run1(words + [word, E("halt")], sram)
    assert np.array_equal(result.sram[0, 100:100 + n], old + isa.alu(op, a, np.uint32(b)))
    assert retire_cycles(emu)[-2:] == [(t0 + n + 1, t0), (t0 + n + 2, t0 + 1)]
    c = counters(result)
    assert (c["sram_reads"], c["sram_writes"], c["elements"]) == (2 * n, n, n)
    assert c["macs"] == n * isa.MACS_PER_ELEMENT.get(op, 0)


def test_accumulate_vdot4_with_a_register_operand():
    """The GEMV step acc[i] += dot4(W[i], x), x a register: worked out by hand."""
    x = 0x04_03_02_01                           # lanes 1, 2, 3, 4
    w = [0x01_01_01_01, 0xFF_FF_FF_FF, 0x80_00_00_7F, 0x00_00_00_00]
    acc = [10, 0xFFFFFFFF, 0x7FFFFFFF, 5]
    # dot4: 1+2+3+4 = 10; -(1+2+3+4) = -10; 127*1 - 128*4 = -385; 0.
    expected = [20, 0xFFFFFFFF - 10, (0x7FFFFFFF - 385) & 0xFFFFFFFF, 5]
    sram = np.zeros(256, dtype=np.uint32)
    sram[0:4], sram[50:58:2] = w, acc
    words = const(3, x) + mem(0, 0, 4) + mem(2, 50, 4, 2) + [
        E("vdot4", a=2, b=0, d=3, bsc=1, acc=1), E("halt")]
    emu, result = run1(words, sram)
    assert result.sram[0, 50:58:2].tolist() == expected
    assert result.sram[0, 51:58:2].tolist() == [0, 0, 0, 0]
    c = counters(result)
    assert (c["macs"], c["sram_reads"], c["sram_writes"]) == (16, 8, 4)
    assert result.cycles == 8 + 4 + 2 + 1


def test_accumulate_into_a_stride_0_destination():
    """dd of stride 0: element i reads the word at the start of its R cycle t0 + i and writes
    it in t0 + i + 2, so it sees the writes of elements up to i - 3 only:
    w0 = 100 + 1, w1 = 100 + 2, w2 = 100 + 3, w3 = w0 + 4, w4 = w1 + 5, w5 = w2 + 6 = 109."""
    a = [1, 2, 3, 4, 5, 6]
    sram = np.zeros(256, dtype=np.uint32)
    sram[0:6], sram[80] = a, 100
    words = mem(0, 0, 6) + mem(1, 80, 6, 0) + [E("vmov", a=1, b=0, acc=1), E("halt")]
    emu, result = run1(words, sram)
    assert result.sram[0, 80] == 109
    assert result.sram[0, 79] == 0 and result.sram[0, 81] == 0
    assert counters(result)["sram_writes"] == 6 and counters(result)["sram_reads"] == 12


def test_accumulate_stride_0_when_r_waits_for_wavelets():
    """The old dd[i] is the word at the start of element i's R cycle, also when R waits: the
    FIN operand's wavelets 1, 2, 4 are sent in cycles 1, 6, 8 and taken by R in 5 (the
    issue), 9 and 11. Element 0 writes 100 + 1 in 7, seen by element 1 (R in 9): 101 + 2 in
    11; element 2 (R in 11) does not see that write of the same cycle: 101 + 4 = 105."""
    sender = [E("addi", a=1, b=0, imm18=1), E("send", a=1, b=0, imm18=0),
              E("addi", a=1, b=0, imm18=2)] + [E("add", a=0, b=0, c=0)] * 3 + [
        E("send", a=1, b=0, imm18=0), E("addi", a=1, b=0, imm18=4),
        E("send", a=1, b=0, imm18=0), E("halt")]
    sram1 = np.zeros(256, dtype=np.uint32)
    sram1[80] = 100
    receiver = stream(0, "in", 0, 3) + mem(2, 80, 3, 0) + [E("vmov", a=2, b=0, acc=1),
                                                           E("halt")]
    emu = MeshEmulator(pair_program(sender, receiver, None, sram1), trace=True)
    result = emu.run()
    assert result.sram[1, 80] == 105
    assert retire_cycles(emu, 1)[-2:] == [(13, 5), (14, 6)]
    c = counters(result, 1)
    assert (c["stall_in"], c["sram_reads"], c["sram_writes"]) == (3 + 1, 3, 3)


def test_accumulate_aliasing_the_next_elements():
    """dd = da + 1, in place (rs = r0): element i reads word i (a, port 0) and word i + 1 (its
    old dd[i], port 1) in its R cycle t0 + i. Word i was written by element i - 1 in
    t0 + i + 1 and word i + 1 is written by element i in t0 + i + 2, both later: every element
    reads the initial words, so word i + 1 ends as a[i] + a[i + 1]."""
    n = 6
    a = [10, 11, 12, 13, 14, 15, 16]
    sram = np.zeros(256, dtype=np.uint32)
    sram[:n + 1] = a
    words = mem(0, 0, n) + mem(1, 1, n) + [E("vadd", a=1, b=0, d=0, bsc=1, acc=1), E("halt")]
    _, result = run1(words, sram)
    assert result.sram[0, :n + 1].tolist() == [10, 21, 23, 25, 27, 29, 31]


def test_accumulate_with_a_fabric_operand_b():
    """vadd.acc d2, d1, d0 with d0 a FIN stream (operand b) and d1 in memory: dd[i] +=
    a[i] + wavelet i; one wavelet per element, read ports 0 (a) and 1 (dd)."""
    n = 5
    w, a, old = values(n, 0, 1000), values(n, 0, 1000), values(n, 0, 1000)
    sender = mem(0, 0, n) + stream(1, "out", 0, n) + [E("vmov", a=1, b=0), E("halt")]
    sram1 = np.zeros(256, dtype=np.uint32)
    sram1[20:20 + n], sram1[60:60 + n] = a, old
    receiver = stream(0, "in", 0, n) + mem(1, 20, n) + mem(2, 60, n) + [
        E("vadd", a=2, b=1, c=0, acc=1), E("halt")]
    emu = MeshEmulator(pair_program(sender, receiver, w, sram1), trace=True)
    result = emu.run()
    assert np.array_equal(result.sram[1, 60:60 + n], old + a + w)
    c = counters(result, 1)
    assert (c["wavelets_in"], c["sram_reads"], c["sram_writes"]) == (n, 2 * n, n)
    # The stream's element i is in (1,0)'s queue at 10 + i (test_vector_stream_between_cores):
    # R fires then, X two cycles later; the vadd (pc 8) retires at 12 + n - 1.
    assert retire_cycles(emu, 1)[-2:] == [(11 + n, 8), (12 + n, 9)]


# Packed results (.pack on vreq and vlut) and vlut's index offset -----------------------------

def test_vreq_pack_to_memory():
    """vreq.pack: result i (saturate8(round(a[i] * 1 / 2^3))) goes to lane i mod 4 of word
    i / 4, written when i mod 4 = 3, as vpack; worked out by hand: 100/8 = 12.5 -> 13 (half
    up), -12.5 -> -12, 125, -125 | 0, 0, 8, 0 | 625 -> 127, -625 -> -128, 1, -1. n + 2 cycles,
    n elements and reads, n / 4 writes, one MAC per element."""
    a = [100, -100, 1000, -1000, 3, -3, 64, 0, 5000, -5000, 8, -8]
    n = len(a)
    sram = np.zeros(256, dtype=np.uint32)
    sram[:n] = np.array(a) & 0xFFFFFFFF
    sram[100:106] = 0xEEEEEEEE
    words = const(9, 1) + mem(0, 0, n) + mem(2, 100, n // 4, 2)
    t0 = len(words)
    emu, result = run1(words + [E("vreq", a=2, b=0, d=9, imm6=3, pack=1), E("halt")], sram)
    assert result.sram[0, 100:106].tolist() == [0x837DF40D, 0xEEEEEEEE, 0x00080000, 0xEEEEEEEE,
                                                0xFF01807F, 0xEEEEEEEE]
    assert retire_cycles(emu)[-2:] == [(t0 + n + 1, t0), (t0 + n + 2, t0 + 1)]
    c = counters(result)
    assert (c["elements"], c["sram_reads"], c["sram_writes"], c["macs"]) == (n, n, n // 4, n)


def test_vpack_is_a_packing_vmov_and_ignores_bit_9():
    """vpack packs its elements as vreq.pack packs results; bit 9 (bsc) on vpack is ignored.
    vreq.pack with multiplier 1 and shift 0 packs saturate8(a[i]): the same words as vpack
    when every a[i] is in -128..127."""
    a = np.array([1, -2, 127, -128, 0, 5, -7, 64], dtype=np.int64) & 0xFFFFFFFF
    expected = [int(w) for w in isa.pack4(a[0::4], a[1::4], a[2::4], a[3::4])]
    assert expected == [0x807FFE01, 0x40F90500]
    sram = np.zeros(256, dtype=np.uint32)
    sram[:8] = a
    words = const(9, 1) + mem(0, 0, 8) + mem(2, 100, 2) + mem(3, 110, 2) + mem(4, 120, 2) + [
        E("vpack", a=2, b=0), E("vpack", a=3, b=0, bsc=1),
        E("vreq", a=4, b=0, d=9, imm6=0, pack=1), E("halt")]
    _, result = run1(words, sram)
    for base in (100, 110, 120):
        assert result.sram[0, base:base + 2].tolist() == expected


def test_vlut_pack():
    """vlut.pack: table word t[clamp(a[i] + rs)] packed by its low byte; rs = -3."""
    table = [0x11111100 + k for k in range(10)]        # low byte of entry k is k
    a = [3, 4, 0, 12, 100, -7, 8, 5]                   # + rs: 0, 1, -3, 9, 97, -10, 5, 2
    sram = np.zeros(256, dtype=np.uint32)
    sram[:8] = np.array(a) & 0xFFFFFFFF
    sram[200:210] = table
    words = const(5, -3 & 0xFFFFFFFF) + mem(0, 0, 8) + mem(1, 200, 10) + mem(2, 100, 2)
    t0 = len(words)
    emu, result = run1(words + [E("vlut", a=2, b=0, c=1, d=5, pack=1), E("halt")], sram)
    # indices 0, 1, 0, 9 | 9, 0, 5, 2
    assert result.sram[0, 100:103].tolist() == [0x09000100, 0x02050009, 0]
    assert retire_cycles(emu)[-2][0] == t0 + 8 + 1
    c = counters(result)
    assert (c["elements"], c["sram_reads"], c["sram_writes"], c["macs"]) == (8, 16, 2, 0)


BIG = MeshConfig(width=1, height=1, colors=4, sram_words=1024, imem_words=64)


def test_vlut_offset_looks_up_an_int8_table():
    """The use of the offset: a table of f(x) = x * x for the int8 inputs x = -128..127 at
    entries 0..255, looked up with rs = 128 (no separate +128 pass)."""
    table = [(x * x) for x in range(-128, 128)]
    a = [-128, -1, 0, 1, 127, -50, 33]
    sram = np.zeros(1024, dtype=np.uint32)
    sram[:len(a)] = np.array(a) & 0xFFFFFFFF
    sram[256:512] = table
    words = [E("addi", a=7, b=0, imm18=128)] + mem(0, 0, len(a)) + mem(1, 256, 256) \
        + mem(2, 600, len(a)) + [E("vlut", a=2, b=0, c=1, d=7), E("halt")]
    _, result = run1(words, sram, config=BIG)
    assert result.sram[0, 600:600 + len(a)].tolist() == [x * x for x in a]


@pytest.mark.parametrize("a, rs, index", [
    (5, 0, 5),                   # no offset (r0)
    (5, -3, 2), (2, -3, 0),      # negative offset; below 0: clamped to 0
    (5, 3, 8), (9, 3, 9),        # past the end: clamped to length - 1 = 9
    (0x7FFFFFFF, 1, 0),          # wraps to -2^31: clamped to 0, not to 9
    (0xFFFFFFFF, 2, 1),          # -1 + 2
    (0x80000000, 0x80000000, 0),  # wraps to 0
    (0x80000005, 0x7FFFFFFD, 2),  # wraps to 2
    (-200, 0x7FFFFFFF, 9),       # a large positive sum
])
def test_vlut_index_offset(a, rs, index):
    """index = clamp(s32((a + rs) mod 2^32), 0, db.length - 1); rs is read at issue (its
    register is written by the instruction just before)."""
    table = values(10)
    words = const(6, rs & 0xFFFFFFFF)
    emu, result, t0 = vector_run(E("vlut", a=2, b=0, c=1, d=6 if rs else 0),
                                 np.array([a, a], dtype=np.int64) & 0xFFFFFFFF, table=table,
                                 db=(200, 1), setup=words)
    assert result.sram[0, 100:102].tolist() == [table[index]] * 2
    assert retire_cycles(emu)[-2][0] == t0 + 2 + 1


# vreq.acc saturates; vlut's requantized index -------------------------------------------------

def test_vreq_acc_saturates():
    """vreq.acc: dd[i] = saturate8(s32(dd[i]) + rq(a[i])), the sum exact (no wrap first); with
    rs = 3, shift 1, worked out by hand: rq = 60, -60, 15, 150 -> 127, -150 -> -128, 0,
    1.5 -> 2, -1.5 -> -1; plus the old words 100, -100, -20, -100, 100, 1000, 2^31 - 1, -2^31:
    160 -> 127, -160 -> -128, -5, 27, -28, 1000 -> 127, 2^31 + 1 -> 127, -2^31 - 1 -> -128.
    vmov.acc on the same words still wraps. n + 2 cycles, one more read per element."""
    a = [40, -40, 10, 100, -100, 0, 1, -1]
    old = [100, -100, -20, -100, 100, 1000, 0x7FFFFFFF, 0x80000000]
    n = len(a)
    sram = np.zeros(256, dtype=np.uint32)
    sram[:n] = np.array(a) & 0xFFFFFFFF
    sram[100:100 + n] = np.array(old) & 0xFFFFFFFF
    sram[120:120 + n] = np.array(old) & 0xFFFFFFFF
    words = const(9, 3) + mem(0, 0, n) + mem(2, 100, n) + mem(3, 120, n)
    t0 = len(words)
    emu, result = run1(words + [E("vreq", a=2, b=0, d=9, imm6=1, acc=1),
                                E("vmov", a=3, b=0, acc=1), E("halt")], sram)
    expected = [127, -128, -5, 27, -28, 127, 127, -128]
    assert result.sram[0, 100:100 + n].tolist() == [x & 0xFFFFFFFF for x in expected]
    assert result.sram[0, 120:120 + n].tolist() == [(o + x) & 0xFFFFFFFF for o, x in zip(old, a)]
    assert retire_cycles(emu)[-3][0] - t0 == n + 1     # issued in t0, retires in t0 + n + 1
    c = counters(result)
    assert (c["sram_reads"], c["sram_writes"], c["elements"], c["macs"]) == (4 * n, 2 * n,
                                                                           2 * n, n)


def test_vreq_acc_saturates_into_a_stride_0_destination():
    """Stride 0: element i sees the writes of i - 3 and earlier only, as for every acc into
    dd; each of the three chains saturates on its own. rq = a (rs = 1, shift 0); w = 100:
    chain 0 (elements 0, 3): 105, 110; chain 1: 105, 110; chain 2 (elements 2, 5): 120, then
    140 -> 127, the final word (the wrapping add would leave 140)."""
    a = [5, 5, 20, 5, 5, 20]
    sram = np.zeros(256, dtype=np.uint32)
    sram[0:6], sram[80] = a, 100
    words = const(9, 1) + mem(0, 0, 6) + mem(1, 80, 6, 0) + [
        E("vreq", a=1, b=0, d=9, imm6=0, acc=1), E("halt")]
    _, result = run1(words, sram)
    assert result.sram[0, 80] == 127
    assert counters(result)["sram_writes"] == 6 and counters(result)["sram_reads"] == 12


def test_vlut_requantized_index():
    """vlut dd, da, db, rs, shift with shift > 0: index = requantize(a[i], rs, shift) + 128,
    clamped to the table; rs = 3, shift 2, worked out by hand: 3a / 4 = 0, 0.75 -> 1,
    1.5 -> 2, -0.75 -> -1, -1.5 -> -1 (half up), 75, -75, 37.5 -> 38, 750 -> 127, -750 -> -128;
    + 128: 128, 129, 130, 127, 127, 203, 53, 166, 255, 0. A 100-entry table clamps at 99. The
    cycles and counters are those of the plain vlut (no MAC)."""
    a = [0, 1, 2, -1, -2, 100, -100, 50, 1000, -1000]
    n = len(a)
    index = [128, 129, 130, 127, 127, 203, 53, 166, 255, 0]
    table = [1000 + k for k in range(256)]
    sram = np.zeros(1024, dtype=np.uint32)
    sram[:n] = np.array(a) & 0xFFFFFFFF
    sram[256:512] = table
    words = const(7, 3) + mem(0, 0, n) + mem(1, 256, 256) + mem(2, 600, n) + mem(3, 256, 100) \
        + mem(4, 620, n)
    t0 = len(words)
    emu, result = run1(words + [E("vlut", a=2, b=0, c=1, d=7, imm6=2),
                                E("vlut", a=4, b=0, c=3, d=7, imm6=2), E("halt")], sram,
                       config=BIG)
    assert result.sram[0, 600:600 + n].tolist() == [1000 + k for k in index]
    assert result.sram[0, 620:620 + n].tolist() == [1000 + min(k, 99) for k in index]
    assert retire_cycles(emu)[-3][0] - t0 == n + 1
    c = counters(result)
    assert (c["elements"], c["sram_reads"], c["sram_writes"], c["macs"]) == (2 * n, 4 * n,
                                                                           2 * n, 0)


def test_vlut_requantized_index_looks_up_an_int8_table():
    """The use: exp-like table of the int8 inputs x = -128..127 at entries 0..255, indexed by
    rq(s) of int32 scores s in one instruction (vreq then vlut with rs = 128 give the same)."""
    table = [(x * 7 + 3) & 0xFFFFFFFF for x in range(-128, 128)]
    scores = [-70000, -1, 0, 12345, 99999, -5000, 640, -641]
    n = len(scores)
    mult, shift = 0x5432, 20
    sram = np.zeros(1024, dtype=np.uint32)
    sram[:n] = np.array(scores) & 0xFFFFFFFF
    sram[256:512] = table
    words = const(7, mult) + [E("addi", a=8, b=0, imm18=128)] + mem(0, 0, n) \
        + mem(1, 256, 256) + mem(2, 600, n) + mem(3, 700, n) + mem(4, 720, n) + [
            E("vlut", a=2, b=0, c=1, d=7, imm6=shift),
            E("vreq", a=3, b=0, d=7, imm6=shift), E("vlut", a=4, b=3, c=1, d=8), E("halt")]
    _, result = run1(words, sram, config=BIG)
    q = isa.requantize(np.array(scores) & 0xFFFFFFFF, np.uint32(mult), shift).view(np.int32)
    assert result.sram[0, 600:600 + n].tolist() == [table[int(x) + 128] for x in q]
    assert result.sram[0, 600:600 + n].tolist() == result.sram[0, 720:720 + n].tolist()


@pytest.mark.parametrize("a, rs, shift, index", [
    (5, 2, 1, 133), (-5, 2, 1, 123),      # rq = 5, -5
    (3, 1, 1, 130), (-3, 1, 1, 127),      # 1.5 -> 2, -1.5 -> -1
    (1000, 1, 1, 199), (-1000, 1, 1, 0),  # saturated, then clamped to the 200-entry table
    (7, 0, 5, 128),                       # r0 as the multiplier: rq = 0
    (0x7FFFFFFF, 0x7FFFFFFF, 63, 128),    # (2^31 - 1)^2 / 2^63 rounds to 0
    (5, 3, 0, 8),                         # shift 0: a + rs, as before
])
def test_vlut_requantized_index_cases(a, rs, shift, index):
    table = values(200)
    emu, result, t0 = vector_run(E("vlut", a=2, b=0, c=1, d=6 if rs else 0, imm6=shift),
                                 np.array([a, a], dtype=np.int64) & 0xFFFFFFFF, table=table,
                                 db=(40, 1), setup=const(6, rs & 0xFFFFFFFF))
    assert result.sram[0, 100:102].tolist() == [table[index]] * 2
    assert retire_cycles(emu)[-2][0] == t0 + 2 + 1


def test_vlut_pack_with_a_requantized_index():
    """vlut.pack dd, da, db, rs, shift: the table words' low bytes, four to a word; rs = 1,
    shift 1: a / 2 = 0, 0.5 -> 1, 1, -0.5 -> 0, 2.5 -> 3, -2.5 -> -2, 50, -50."""
    a = [0, 1, 2, -1, 5, -5, 100, -100]
    table = [k & 0xFF for k in range(256)]        # entry k holds k: the byte is the index
    sram = np.zeros(1024, dtype=np.uint32)
    sram[:8] = np.array(a) & 0xFFFFFFFF
    sram[256:512] = table
    words = const(5, 1) + mem(0, 0, 8) + mem(1, 256, 256) + mem(2, 600, 2) + [
        E("vlut", a=2, b=0, c=1, d=5, imm6=1, pack=1), E("halt")]
    _, result = run1(words, sram, config=BIG)
    idx = [128, 129, 129, 128, 131, 126, 178, 78]
    assert result.sram[0, 600:602].tolist() == [int(isa.pack4(*idx[:4])), int(isa.pack4(*idx[4:]))]


# Fabric ---------------------------------------------------------------------------------------

PAIR = MeshConfig(width=2, height=1, colors=4, sram_words=256, imem_words=64)


def pair_program(words0, words1, sram0=None, sram1=None, color=0, back=None):
    """Tile (0,0) sends to (1,0) on ``color``; with ``back``, (1,0) to (0,0) on that color."""
    routes = RouteTable(PAIR).chain(color, [(0, 0), (1, 0)])
    if back is not None:
        routes.chain(back, [(1, 0), (0, 0)])
    return MeshProgram(PAIR, {(0, 0): image(words0, sram0), (1, 0): image(words1, sram1)},
                       routes)


def test_send_recv_one_wavelet():
    """send in cycle 1 -> router (0,0) sends E in 2 -> router (1,0) sends RAMP in 3 -> the
    recv takes it in 4 (waiting from cycle 0: 4 stall_in cycles)."""
    emu = MeshEmulator(pair_program([E("addi", a=1, b=0, imm18=42), E("send", a=1, b=0, imm18=0),
                                     E("halt")],
                                    [E("recv", a=2, b=0, imm18=0), E("halt")]), trace=True)
    result = emu.run()
    assert result.registers[1, 2] == 42
    assert emu.core_sends == [(1, 0, 0, 42)]
    assert [(c, t, p, col, d) for c, t, p, col, d in emu.wavelets] == [
        (2, 0, Port.E, 0, 42), (3, 1, Port.RAMP, 0, 42)]
    assert retire_cycles(emu, 1) == [(4, 0), (5, 1)]
    assert result.cycles == 6
    assert counters(result, 1)["stall_in"] == 4 and counters(result, 1)["wavelets_in"] == 1
    assert counters(result, 0)["wavelets_out"] == 1 and counters(result, 0)["cycles"] == 3


def test_recv_color_from_register():
    """recv/send color is ra + imm."""
    emu = MeshEmulator(pair_program([E("addi", a=3, b=0, imm18=1), E("addi", a=1, b=0, imm18=7),
                                     E("send", a=1, b=3, imm18=1), E("halt")],
                                    [E("addi", a=3, b=0, imm18=3), E("recv", a=2, b=3, imm18=-1),
                                     E("halt")], color=2))
    assert emu.run().registers[1, 2] == 7


@pytest.mark.parametrize("n", [1, 4, 16])
def test_vector_stream_between_cores(n):
    """vmov FOUT on (0,0) -> vmov FIN on (1,0), one element per cycle: element i leaves core
    (0,0) in stage X at t0 + 2 + i = 7 + i, is in (1,0)'s queue at 10 + i, is read there in
    stage R at 10 + i and written in X at 12 + i."""
    a = values(n)
    sender = mem(0, 0, n) + stream(1, "out", 0, n) + [E("vmov", a=1, b=0), E("halt")]
    receiver = stream(0, "in", 0, n) + mem(1, 100, n) + [E("vmov", a=1, b=0), E("halt")]
    emu = MeshEmulator(pair_program(sender, receiver, a), trace=True)
    result = emu.run()
    assert np.array_equal(result.sram[1, 100:100 + n], a)
    assert emu.core_sends == [(7 + i, 0, 0, int(a[i])) for i in range(n)]
    assert [(c, t, int(p)) for c, t, p, _, _ in emu.wavelets] == sorted(
        [(8 + i, 0, Port.E) for i in range(n)] + [(9 + i, 1, Port.RAMP) for i in range(n)])
    assert retire_cycles(emu, 0)[-2:] == [(6 + n, 5), (7 + n, 6)]
    assert retire_cycles(emu, 1)[-2:] == [(11 + n, 5), (12 + n, 6)]
    assert result.cycles == 13 + n
    c0, c1 = counters(result, 0), counters(result, 1)
    assert (c0["wavelets_out"], c0["stall_out"], c0["elements"]) == (n, 0, n)
    assert (c1["wavelets_in"], c1["stall_in"], c1["elements"]) == (n, 5, n)
    assert c1["sram_reads"] == 0 and c1["sram_writes"] == n


def test_vpack_to_a_stream():
    """vpack with a FOUT destination sends only at i mod 4 = 3: elements 3 and 7 fire in X
    in cycles 10 and 14; the receiver's R takes them in 13 and 17 and waits (stall_in) in
    cycles 5..12 and 14..16."""
    a = values(8)
    sender = mem(0, 0, 8) + stream(1, "out", 0, 2) + [E("vpack", a=1, b=0), E("halt")]
    receiver = stream(0, "in", 0, 2) + mem(1, 100, 2) + [E("vmov", a=1, b=0), E("halt")]
    emu = MeshEmulator(pair_program(sender, receiver, a), trace=True)
    result = emu.run()
    packed = isa.pack4(a[0::4], a[1::4], a[2::4], a[3::4])
    assert emu.core_sends == [(10, 0, 0, int(packed[0])), (14, 0, 0, int(packed[1]))]
    assert np.array_equal(result.sram[1, 100:102], packed)
    assert retire_cycles(emu, 0)[-2:] == [(14, 5), (15, 6)]
    assert retire_cycles(emu, 1)[-2:] == [(19, 5), (20, 6)]
    assert result.cycles == 21
    assert counters(result, 1)["stall_in"] == 11 and counters(result, 0)["stall_out"] == 0
    assert counters(result, 0)["elements"] == 8 and counters(result, 0)["wavelets_out"] == 2


def test_vreq_pack_to_a_stream():
    """vreq.pack with a FOUT destination sends like vpack, at i mod 4 = 3 only: issued in
    cycle 6, elements 3 and 7 fire in X in 11 and 15; the receiver's R takes them in 14 and
    18 and waits in 5..13 and 15..17."""
    a = values(8)
    sender = [E("addi", a=9, b=0, imm18=3)] + mem(0, 0, 8) + stream(1, "out", 0, 2) + [
        E("vreq", a=1, b=0, d=9, imm6=1, pack=1), E("halt")]
    receiver = stream(0, "in", 0, 2) + mem(1, 100, 2) + [E("vmov", a=1, b=0), E("halt")]
    emu = MeshEmulator(pair_program(sender, receiver, a), trace=True)
    result = emu.run()
    q = isa.requantize(a, np.uint32(3), 1)
    packed = isa.pack4(q[0::4], q[1::4], q[2::4], q[3::4])
    assert emu.core_sends == [(11, 0, 0, int(packed[0])), (15, 0, 0, int(packed[1]))]
    assert np.array_equal(result.sram[1, 100:102], packed)
    assert retire_cycles(emu, 0)[-2:] == [(15, 6), (16, 7)]
    assert retire_cycles(emu, 1)[-2:] == [(20, 5), (21, 6)]
    assert counters(result, 1)["stall_in"] == 9 + 3
    c0 = counters(result, 0)
    assert (c0["elements"], c0["wavelets_out"], c0["macs"], c0["sram_writes"]) == (8, 2, 8, 0)


def test_vlut_pack_with_an_offset_from_a_stream_to_a_stream():
    """vlut.pack with FIN indices, rs = 1 and a FOUT destination: 8 indices in, 2 packed
    words out."""
    idx = [-1, 0, 1, 2, 3, 100, -100, 4]               # + 1: 0, 1, 2, 3, 4, 5 (clamped), 0, 5
    table = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5]
    sender = mem(0, 0, 8) + stream(1, "out", 0, 8) + [E("vmov", a=1, b=0), E("halt")]
    middle = [E("addi", a=4, b=0, imm18=1)] + stream(0, "in", 0, 8) + mem(1, 50, 6) \
        + stream(2, "out", 1, 2) + [E("vlut", a=2, b=0, c=1, d=4, pack=1), E("halt")]
    receiver = stream(0, "in", 1, 2) + mem(1, 100, 2) + [E("vmov", a=1, b=0), E("halt")]
    config = MeshConfig(width=3, height=1, colors=4, sram_words=256, imem_words=64)
    routes = RouteTable(config).chain(0, [(0, 0), (1, 0)]).chain(1, [(1, 0), (2, 0)])
    program = MeshProgram(config, {
        (0, 0): image(sender, np.array(idx) & 0xFFFFFFFF),
        (1, 0): image(middle, [0] * 50 + table), (2, 0): image(receiver)}, routes)
    result = MeshEmulator(program).run()
    assert result.sram[2, 100:102].tolist() == [0xA3A2A1A0, 0xA5A0A5A4]
    c = counters(result, 1)
    assert (c["elements"], c["wavelets_in"], c["wavelets_out"], c["sram_reads"]) == (8, 8, 2, 8)


def test_reduction_over_a_stream():
    n = 10
    a, b = values(n), values(n)
    sender = mem(0, 0, n) + stream(1, "out", 0, n) + [E("vmov", a=1, b=0), E("halt")]
    receiver = stream(0, "in", 0, n) + mem(1, 0, n) + [E("vdot4", a=5, b=0, c=1, red=1),
                                                        E("halt")]
    result = MeshEmulator(pair_program(sender, receiver, a, b)).run()
    assert result.registers[1, 5] == int(isa.dot4(a, b).astype(np.uint64).sum()) & 0xFFFFFFFF
    c = counters(result, 1)
    assert (c["wavelets_in"], c["sram_reads"], c["macs"]) == (n, n, 4 * n)


def test_vector_two_streams_in():
    """Both sources FIN on different colors; the result streams back out on a third."""
    config = MeshConfig(width=3, height=1, colors=4, sram_words=256, imem_words=64)
    n = 6
    a, b = values(n, 0, 1 << 16), values(n, 0, 1 << 16)
    routes = RouteTable(config).chain(0, [(0, 0), (1, 0)]).chain(1, [(2, 0), (1, 0)])
    routes.chain(2, [(1, 0), (0, 0)])
    left = (mem(0, 0, n) + stream(1, "out", 0, n) + stream(2, "in", 2, n) + mem(3, 50, n)
            + [E("vmov", a=1, b=0), E("vmov", a=3, b=2), E("halt")])
    middle = (stream(0, "in", 0, n) + stream(1, "in", 1, n) + stream(2, "out", 2, n)
              + [E("vadd", a=2, b=0, c=1), E("halt")])
    right = mem(0, 0, n) + stream(1, "out", 1, n) + [E("vmov", a=1, b=0), E("halt")]
    emu = MeshEmulator(MeshProgram(config, {(0, 0): image(left, a), (1, 0): image(middle),
                                            (2, 0): image(right, b)}, routes))
    result = emu.run()
    assert np.array_equal(result.sram[0, 50:50 + n], a + b)
    assert counters(result, 1)["wavelets_in"] == 2 * n
    assert counters(result, 1)["wavelets_out"] == n


def test_backpressure_stall_counts():
    """(0,0) sends 10 wavelets; (1,0) loops K = 20 cycles before its first recv.

    The path holds 6 wavelets (core (1,0)'s queue, router (1,0)'s W queue, router (0,0)'s
    RAMP queue, 2 each), so sends go out in cycles 0..5 and the 7th waits. (1,0) takes the
    first in K + 1; its credit reaches router (1,0) in K + 2, which forwards and returns a
    credit to router (0,0), which forwards in K + 3 and returns a credit to the core, which
    sends in K + 4: stall_out = K + 4 - 6. From then on one per cycle, and every recv finds
    its wavelet: stall_in = 0."""
    K = 20
    sender = [E("send", a=0, b=0, imm18=0)] * 10 + [E("halt")]
    receiver = [E("addi", a=1, b=0, imm18=K), E("dbnz", a=1, imm14=1)]
    receiver += [E("recv", a=2, b=0, imm18=0)] * 10 + [E("halt")]
    emu = MeshEmulator(pair_program(sender, receiver), trace=True)
    result = emu.run()
    assert [c for c, *_ in emu.core_sends] == [0, 1, 2, 3, 4, 5] + [K + 4 + i for i in range(4)]
    assert counters(result, 0)["stall_out"] == K - 2
    assert counters(result, 1)["stall_in"] == 0
    assert [c for c, _ in retire_cycles(emu, 1)][-11:] == [K + 1 + i for i in range(11)]
    assert result.cycles == K + 12


def test_vector_backpressure():
    """A FIN/FOUT vector that waits: stalls are counted per cycle, and data is intact."""
    n = 24
    a = values(n)
    sender = mem(0, 0, n) + stream(1, "out", 0, n) + [E("vmov", a=1, b=0), E("halt")]
    receiver = ([E("addi", a=1, b=0, imm18=30), E("dbnz", a=1, imm14=1)] + stream(0, "in", 0, n)
                + mem(1, 100, n) + [E("vmov", a=1, b=0), E("halt")])
    emu = MeshEmulator(pair_program(sender, receiver, a), trace=True)
    result = emu.run()
    assert np.array_equal(result.sram[1, 100:100 + n], a)
    c0 = counters(result, 0)
    sends = [c for c, *_ in emu.core_sends]
    # Every cycle of the sender's vector instruction either fires X or stalls it (or is one of
    # the two fill cycles).
    assert c0["stall_out"] == (sends[-1] - sends[0] + 1) - n
    assert c0["stall_out"] > 0
    # X stalls hold the pipeline: M moves only when X fires, so sends stay in order.
    assert [d for *_, d in emu.core_sends] == a.tolist()


def test_packed_results_under_backpressure():
    """vreq.pack to a FOUT stream whose receiver starts late (its vmov issues in cycle 36):
    only an element that sends (i mod 4 = 3) waits in X for a credit. Issued in cycle 6, the
    sender's element 4j + 3 fires in X at 11 + 4j. Words 0..5 fill the path (three queues of
    depth 2: router (0,0)'s RAMP input, router (1,0)'s W input, core (1,0)'s input queue) and
    use the last credit at 31; elements 24..26 send nothing and fire in X in 32..34 all the
    same; element 27 waits in 35..38 (stall_out 4): the receiver takes word 0 in 36, and the
    credits pass back one hop per cycle, to the sender for 39. The rest follow every fourth
    cycle, without stalls."""
    m = 12
    n = 4 * m
    a = values(n, 0, 1 << 16)
    sender = [E("addi", a=9, b=0, imm18=5)] + mem(0, 0, n) + stream(1, "out", 0, m) + [
        E("vreq", a=1, b=0, d=9, imm6=4, pack=1), E("halt")]
    receiver = ([E("addi", a=1, b=0, imm18=30), E("dbnz", a=1, imm14=1)] + stream(0, "in", 0, m)
                + mem(1, 100, m) + [E("vmov", a=1, b=0), E("halt")])
    emu = MeshEmulator(pair_program(sender, receiver, a), trace=True)
    result = emu.run()
    q = isa.requantize(a, np.uint32(5), 4)
    packed = isa.pack4(q[0::4], q[1::4], q[2::4], q[3::4])
    assert [d for *_, d in emu.core_sends] == packed.tolist()
    assert np.array_equal(result.sram[1, 100:100 + m], packed)
    assert [c for c, *_ in emu.core_sends] == [11 + 4 * j for j in range(6)] + [
        39 + 4 * j for j in range(6)]
    assert retire_cycles(emu, 0)[-2:] == [(59, 6), (60, 7)]
    assert retire_cycles(emu, 1)[-3][0] == 35       # the receiver's vmov issues in 36
    c0 = counters(result, 0)
    assert (c0["stall_out"], c0["elements"], c0["wavelets_out"]) == (4, n, m)


def test_edge_links():
    """An agent on an edge link: a wavelet injected on tile (0,0)'s W edge in cycle 0 is taken
    by a recv in cycle 2; the core's send to the E edge leaves the mesh one cycle after."""
    routes = RouteTable(ONE).chain(0, [(0, 0)], source="W").chain(1, [(0, 0)], sink="E")
    program = MeshProgram(ONE, {(0, 0): image([E("recv", a=1, b=0, imm18=0),
                                               E("send", a=1, b=0, imm18=1), E("halt")])},
                          routes)
    emu = MeshEmulator(program, trace=True)
    n = emu.n_edge_links
    west = [i for i, link in enumerate(emu.edge_links) if link.port == Port.W][0]
    east = [i for i, link in enumerate(emu.edge_links) if link.port == Port.E][0]
    valid = np.zeros(n, dtype=bool)
    valid[west] = True
    emu.step(valid, np.zeros(n, dtype=int), np.full(n, 99, dtype=np.uint32))
    outputs = [emu.step() for _ in range(4)]
    assert retire_cycles(emu) == [(2, 0), (3, 1), (4, 2)]
    assert emu.done and emu.result().registers[0, 1] == 99
    out = [(s.cycle, int(s.edge_out_data[east]), int(s.edge_out_color[east]))
           for s in outputs if s.edge_out_valid[east]]
    assert out == [(4, 99, 1)]
    # A wavelet without a credit is refused before any state changes.
    with pytest.raises(ProtocolError):
        for _ in range(10):
            cycle = emu.cycle
            emu.step(valid, np.zeros(n, dtype=int), np.zeros(n, dtype=np.uint32))
    assert emu.cycle == cycle == emu.fabric.cycle == emu.cores.cycle
    with pytest.raises(ValueError):
        emu.step(valid[:-1], np.zeros(n - 1, dtype=int), np.zeros(n - 1, dtype=np.uint32))


# Traps ----------------------------------------------------------------------------------------

ROUTED = RouteTable(ONE).chain(1, [(0, 0)], source="W").chain(2, [(0, 0)], sink="E")

TRAPS = [
    ("reserved opcode (end of program)", [E("addi", a=1, b=0, imm18=1)], 1, TrapCause.ILLEGAL),
    ("descriptor field 8", [E("dmem", a=8, b=0, imm18=0)], 0, TrapCause.ILLEGAL),
    ("vector da 9", [E("vadd", a=0, b=9, c=1)], 0, TrapCause.ILLEGAL),
    ("vector dd 8", [E("vmov", a=8, b=0)], 0, TrapCause.ILLEGAL),
    ("tid 4", [E("tid", a=1, imm18=4)], 0, TrapCause.ILLEGAL),
    ("tid -1", [E("tid", a=1, imm18=-1)], 0, TrapCause.ILLEGAL),
    ("red on vpack", [E("vpack", a=1, b=0, red=1)], 0, TrapCause.ILLEGAL),
    ("red on vlut", [E("vlut", a=1, b=0, c=1, red=1)], 0, TrapCause.ILLEGAL),
    ("jr past imem", [E("addi", a=1, b=0, imm18=64), E("jr", b=1)], 64, TrapCause.PC_RANGE),
    ("ld past sram", [E("ld", a=1, b=0, imm18=256)], 0, TrapCause.SRAM_RANGE),
    ("st negative", [E("st", a=1, b=0, imm18=-1)], 0, TrapCause.SRAM_RANGE),
    ("vector source below 0", mem(0, 3, 5, -1) + mem(1, 10, 5) + [E("vmov", a=1, b=0)], 6,
     TrapCause.SRAM_RANGE),
    ("vector destination past end", mem(0, 0, 4) + mem(1, 250, 4, 2) + [E("vmov", a=1, b=0)], 6,
     TrapCause.SRAM_RANGE),
    ("vlut table past end", mem(0, 0, 4) + mem(2, 0, 4) + mem(1, 250, 7)
     + [E("vlut", a=2, b=0, c=1)], 9, TrapCause.SRAM_RANGE),
    ("recv unrouted color", [E("recv", a=1, b=0, imm18=0)], 0, TrapCause.NO_ROUTE),
    ("recv color >= colors", [E("recv", a=1, b=0, imm18=5)], 0, TrapCause.NO_ROUTE),
    ("recv from a send-only color", [E("recv", a=1, b=0, imm18=2)], 0, TrapCause.NO_ROUTE),
    ("send to a receive-only color", [E("send", a=1, b=0, imm18=1)], 0, TrapCause.NO_ROUTE),
    ("FIN operand unrouted", stream(0, "in", 3, 4) + mem(1, 0, 4) + [E("vmov", a=1, b=0)], 5,
     TrapCause.NO_ROUTE),
    ("FOUT destination unrouted", mem(0, 0, 4) + stream(1, "out", 1, 4) + [E("vmov", a=1, b=0)],
     5, TrapCause.NO_ROUTE),
    ("FOUT source", stream(0, "out", 2, 4) + mem(1, 0, 4) + [E("vmov", a=1, b=0)], 5,
     TrapCause.OPERAND),
    ("FIN destination", mem(0, 0, 4) + stream(1, "in", 1, 4) + [E("vmov", a=1, b=0)], 5,
     TrapCause.OPERAND),
    ("db length", mem(0, 0, 4) + mem(1, 0, 3) + mem(2, 8, 4) + [E("vadd", a=2, b=0, c=1)], 9,
     TrapCause.OPERAND),
    ("dd length", mem(0, 0, 4) + mem(2, 8, 5) + [E("vmov", a=2, b=0)], 6, TrapCause.OPERAND),
    ("vpack dd length", mem(0, 0, 8) + mem(2, 8, 8) + [E("vpack", a=2, b=0)], 6,
     TrapCause.OPERAND),
    ("vpack n not a multiple of 4", mem(0, 0, 6) + mem(2, 8, 1) + [E("vpack", a=2, b=0)], 6,
     TrapCause.OPERAND),
    ("vlut table length 0", mem(0, 0, 4) + mem(2, 8, 4) + [E("vlut", a=2, b=0, c=1)], 6,
     TrapCause.OPERAND),
    ("vlut table not MEM", mem(0, 0, 4) + mem(2, 8, 4) + stream(1, "in", 1, 4)
     + [E("vlut", a=2, b=0, c=1)], 8, TrapCause.OPERAND),
    ("two FIN on one color", stream(0, "in", 1, 4) + stream(1, "in", 1, 4) + mem(2, 8, 4)
     + [E("vadd", a=2, b=0, c=1)], 7, TrapCause.OPERAND),
    ("acc on vpack", mem(0, 0, 8) + mem(2, 8, 2) + [E("vpack", a=2, b=0, acc=1)], 6,
     TrapCause.ILLEGAL),
    ("acc on vlut", mem(0, 0, 4) + mem(2, 8, 4) + mem(1, 20, 4)
     + [E("vlut", a=2, b=0, c=1, acc=1)], 9, TrapCause.ILLEGAL),
    ("acc on vpack before SRAM_RANGE", mem(0, 250, 8) + [E("vpack", a=2, b=0, acc=1)], 3,
     TrapCause.ILLEGAL),
    ("acc into a FOUT destination", mem(0, 0, 4) + stream(1, "out", 2, 4)
     + [E("vmov", a=1, b=0, acc=1)], 5, TrapCause.OPERAND),
    ("acc into a FIN destination", mem(0, 0, 4) + stream(1, "in", 1, 4)
     + [E("vmov", a=1, b=0, acc=1)], 5, TrapCause.OPERAND),
    ("acc with a memory operand b", mem(0, 0, 4) + mem(1, 8, 4) + mem(2, 16, 4)
     + [E("vadd", a=2, b=0, c=1, acc=1)], 9, TrapCause.OPERAND),
    ("acc with db out of range", mem(0, 0, 4) + mem(1, 254, 4) + mem(2, 16, 4)
     + [E("vadd", a=2, b=0, c=1, acc=1)], 9, TrapCause.SRAM_RANGE),
    ("vreq.pack n not a multiple of 4", mem(0, 0, 6) + mem(2, 8, 1)
     + [E("vreq", a=2, b=0, pack=1)], 6, TrapCause.OPERAND),
    ("vreq.pack dd length n", mem(0, 0, 8) + mem(2, 8, 8) + [E("vreq", a=2, b=0, pack=1)], 6,
     TrapCause.OPERAND),
    ("vreq.pack n = 0 dd length 1", mem(2, 8, 1) + [E("vreq", a=2, b=0, pack=1)], 3,
     TrapCause.OPERAND),
    ("vreq.pack into a FOUT of length n", mem(0, 0, 8) + stream(1, "out", 2, 8)
     + [E("vreq", a=1, b=0, pack=1)], 5, TrapCause.OPERAND),
    ("vlut.pack n not a multiple of 4", mem(0, 0, 6) + mem(2, 8, 1) + mem(1, 20, 4)
     + [E("vlut", a=2, b=0, c=1, pack=1)], 9, TrapCause.OPERAND),
    ("vlut.pack dd length n", mem(0, 0, 4) + mem(2, 8, 4) + mem(1, 20, 4)
     + [E("vlut", a=2, b=0, c=1, d=3, pack=1)], 9, TrapCause.OPERAND),
    ("vreq.pack dd past the end", mem(0, 0, 8) + mem(2, 255, 2)
     + [E("vreq", a=2, b=0, pack=1)], 6, TrapCause.SRAM_RANGE),
    ("pack with red on vreq", [E("vreq", a=1, b=0, red=1, pack=1)], 0, TrapCause.ILLEGAL),
    ("pack with red.max.acc on vreq", [E("vreq", a=1, b=0, red=1, max=1, acc=1, pack=1)], 0,
     TrapCause.ILLEGAL),
    ("pack with acc on vreq", mem(0, 0, 8) + mem(2, 8, 2) + [E("vreq", a=2, b=0, acc=1, pack=1)],
     6, TrapCause.ILLEGAL),
    ("pack with acc on vreq before SRAM_RANGE", mem(0, 250, 8)
     + [E("vreq", a=2, b=0, acc=1, pack=1)], 3, TrapCause.ILLEGAL),
    ("pack with red on vlut", [E("vlut", a=1, b=0, c=1, red=1, pack=1)], 0, TrapCause.ILLEGAL),
    ("pack with acc on vlut", mem(0, 0, 8) + mem(2, 8, 2) + mem(1, 20, 4)
     + [E("vlut", a=2, b=0, c=1, acc=1, pack=1)], 9, TrapCause.ILLEGAL),
]


@pytest.mark.parametrize("name, words, pc, cause", TRAPS, ids=[t[0] for t in TRAPS])
def test_traps(name, words, pc, cause):
    """The instruction traps in its issue cycle with no effect; the run stops at the end of
    that cycle; the message names the tile, pc, instruction and cause."""
    program = MeshProgram(ONE, {(0, 0): image(words)}, ROUTED)
    emu = MeshEmulator(program, trace=True)
    with pytest.raises(Trap) as info:
        emu.run()
    result = info.value.result
    assert result.trap_cause[0] == cause and result.trap_pc[0] == pc and result.halted[0]
    assert result.pc[0] == pc
    assert program.where(0, pc) in str(info.value) and TRAP_TEXT[cause] in str(info.value)
    # Every earlier instruction took one cycle (or two for ld), the trap cycle is counted,
    # and the trapping instruction did not retire.
    retired = list(range(pc)) if pc < len(words) + 1 else list(range(len(words)))
    assert [p for _, p in retire_cycles(emu)] == retired
    assert counters(result)["instructions"] == len(retired)
    assert counters(result)["cycles"] == result.cycles == len(retired) + 1


def test_trap_has_no_effect_and_other_cores_finish_their_cycle():
    config = MeshConfig(width=2, height=1, colors=4, sram_words=256, imem_words=64)
    program = MeshProgram(config, {
        (0, 0): image([E("addi", a=1, b=0, imm18=5), E("ld", a=1, b=0, imm18=300)]),
        (1, 0): image([E("addi", a=1, b=0, imm18=1)] * 10 + [E("halt")])})
    with pytest.raises(Trap) as info:
        MeshEmulator(program).run()
    result = info.value.result
    assert result.cycles == 2
    assert result.registers[0, 1] == 5 and counters(result, 0)["sram_reads"] == 0
    assert result.registers[1, 1] == 1 and result.pc[1] == 2 and not result.halted[1]
    assert "tile (0,0) pc 1: ld r1, 300(r0)" in str(info.value)
    assert "tile (1,0)" not in str(info.value)


def test_trap_in_several_cores_is_reported_for_each():
    config = MeshConfig(width=2, height=2, colors=4, sram_words=256, imem_words=64)
    program = MeshProgram(config, {(0, 1): image([E("tid", a=1, imm18=9)]),
                                   (1, 1): image([0])})
    with pytest.raises(Trap) as info:
        MeshEmulator(program).run()
    message = str(info.value)
    assert "tile (0,1) pc 0: tid r1, 9" in message and "tile (1,1) pc 0" in message
    assert message.count("trap: illegal instruction") == 2


# Runs ---------------------------------------------------------------------------------------

def test_deadlock_is_no_progress():
    """Both cores recv first: no progress is reported naming both, not a hang."""
    program = pair_program([E("recv", a=1, b=0, imm18=1), E("send", a=1, b=0, imm18=0),
                            E("halt")],
                           [E("recv", a=1, b=0, imm18=0), E("send", a=1, b=0, imm18=1),
                            E("halt")], back=1)
    emu = MeshEmulator(program)
    with pytest.raises(MeshNoProgress) as info:
        emu.run(stall_limit=25)
    assert isinstance(info.value, NoProgress)
    message = str(info.value)
    assert "tile (0,0) pc 0: recv r1, r0, 1: waits for a wavelet on color 1" in message
    assert "tile (1,0) pc 0: recv r1, r0, 0: waits for a wavelet on color 0" in message
    assert emu.cycle == 25
    assert [(w.tile, w.color, w.what) for w in info.value.waiting] == [(0, 1, "wavelet"),
                                                                       (1, 0, "wavelet")]


def test_no_progress_names_credit_waits_and_blocked_queues():
    """A sender whose receiver never receives: the sender waits for a credit, and the fabric
    queues that hold its wavelets are reported."""
    routes = RouteTable(PAIR).chain(0, [(0, 0), (1, 0)]).chain(3, [(0, 0), (1, 0)])
    program = MeshProgram(PAIR, {(0, 0): image([E("send", a=0, b=0, imm18=0)] * 8 + [E("halt")]),
                                 (1, 0): image([E("recv", a=1, b=0, imm18=3)])}, routes)
    with pytest.raises(MeshNoProgress) as info:
        MeshEmulator(program).run(stall_limit=10)
    message = str(info.value)
    assert "tile (0,0) pc 6: send r0, r0, 0: waits for a credit on color 0" in message
    assert "tile (1,0) core input queue color 0: 2 wavelet(s) not taken" in message
    assert "tile (1,0) pc 0: recv r1, r0, 3: waits for a wavelet on color 3" in message
    assert "tile (1,0) port W color 0: 2 wavelet(s)" in message
    assert "tile (0,0) port RAMP color 0: 2 wavelet(s)" in message


def test_cycle_limit():
    program = MeshProgram(ONE, {(0, 0): image([E("beq", a=0, b=0, imm14=0)])})
    emu = MeshEmulator(program)
    with pytest.raises(CycleLimitExceeded) as info:
        emu.run(max_cycles=50)
    assert emu.cycle == 50 and "tile (0,0) pc 0: beq r0, r0, 0" in str(info.value)


def test_progress_callback():
    seen = []
    words = [E("addi", a=1, b=0, imm18=40), E("dbnz", a=1, imm14=1), E("halt")]
    MeshEmulator(MeshProgram(ONE, {(0, 0): image(words)})).run(progress=seen.append,
                                                                progress_every=10)
    assert seen == [10, 20, 30, 40]


MIXED = [
    # scalar arithmetic, loads and stores in a loop
    [E("addi", a=1, b=0, imm18=6), E("ld", a=2, b=1, imm18=0), E("mul", a=3, b=2, c=2),
     E("add", a=4, b=4, c=3), E("st", a=4, b=1, imm18=40), E("dbnz", a=1, imm14=1), E("halt")],
    # vectors: dot product reduction, vpack, vlut, requantize
    mem(0, 0, 8) + mem(1, 8, 8) + mem(2, 60, 2) + mem(3, 70, 8) + mem(4, 16, 5)
    + const(5, 77) + [E("vdot4", a=6, b=0, c=1, red=1), E("vpack", a=2, b=0),
                      E("vlut", a=3, b=0, c=4), E("vreq", a=3, b=1, d=5, imm6=7),
                      E("vmax", a=7, b=1, c=0, red=1, max=1), E("halt")],
    # calls and branches
    [E("jal", a=15, imm14=4), E("addi", a=2, b=2, imm18=1), E("blt", a=2, b=1, imm14=0),
     E("halt"), E("addi", a=1, b=0, imm18=3), E("jr", b=15)],
    [E("halt")],
    # accumulate into the destination: vdot4 with a register operand, a stride-0 vmov
    mem(0, 0, 9) + mem(2, 20, 9) + mem(3, 39, 9, 0) + const(4, 0x01FF0203)
    + [E("vdot4", a=2, b=0, d=4, bsc=1, acc=1), E("vmov", a=3, b=0, acc=1),
       E("vreq", a=2, b=2, d=4, imm6=20, acc=1), E("halt")],
    # packed results and vlut's index offset
    mem(0, 0, 12) + mem(1, 50, 3) + mem(2, 16, 7) + mem(3, 60, 12) + const(4, 0xFFFFFFF0)
    + [E("vreq", a=1, b=0, d=4, imm6=9, pack=1), E("vlut", a=1, b=0, c=2, d=4, pack=1),
       E("vlut", a=3, b=0, c=2, d=4), E("vpack", a=1, b=3), E("halt")],
    # saturating vreq.acc (into small words and a stride-0 word), vlut's requantized index
    mem(0, 0, 8) + mem(1, 20, 8) + mem(2, 30, 5) + mem(3, 45, 8, 0) + mem(4, 60, 8)
    + const(5, 0x3001) + [E("vand", a=1, b=0, c=0), E("vreq", a=1, b=0, d=5, imm6=24, acc=1),
                          E("vreq", a=3, b=0, d=5, imm6=30, acc=1),
                          E("vlut", a=4, b=0, c=2, d=5, imm6=27), E("halt")],
]


def test_mixed_programs_match_single_core_runs():
    """Cores doing different things in the same cycles behave exactly as each alone (the
    vectorization never mixes cores up)."""
    config = MeshConfig(width=3, height=2, colors=4, sram_words=256, imem_words=64)
    images, alone = {}, []
    for tile in range(config.tiles):
        words = MIXED[tile % len(MIXED)]
        sram = values(40 + tile)
        images[config.tile_xy(tile)] = image(words, sram)
        alone.append(run1(words, sram)[1])
    result = MeshEmulator(MeshProgram(config, images)).run()
    for tile, single in enumerate(alone):
        assert np.array_equal(result.sram[tile], single.sram[0])
        assert np.array_equal(result.registers[tile], single.registers[0])
        assert np.array_equal(result.counters[tile], single.counters[0])
        assert result.pc[tile] == single.pc[0]
    assert result.cycles == max(single.cycles for single in alone)


def test_counters_of_a_vector_program():
    n = 8
    a = values(n)
    words = mem(0, 0, n) + mem(1, 0, n) + mem(2, 100, n) + [
        E("vdot4", a=5, b=0, c=1, red=1), E("vmul8", a=2, b=0, c=1), E("mul", a=6, b=5, c=5),
        E("halt")]
    _, result = run1(words, a)
    c = counters(result)
    assert c == dict(cycles=9 + 2 * (n + 2) + 2, instructions=13, elements=2 * n, stall_in=0,
                     stall_out=0, macs=8 * n + 1, sram_reads=4 * n, sram_writes=n,
                     wavelets_in=0, wavelets_out=0)


def test_trace_off_records_nothing():
    emu = MeshEmulator(MeshProgram(ONE, {(0, 0): image([E("halt")])}))
    emu.run()
    assert emu.retired == [] and emu.wavelets == [] and emu.core_sends == []


# Speed ----------------------------------------------------------------------------------------

def benchmark_program(config, iterations):
    """Every core runs ``iterations`` times: vdot4.sum over a 64-word row, streams the row to
    its east neighbour (all but the last column) and receives its west neighbour's row (all but
    the first), on checkerboard colors."""
    routes = RouteTable(config)
    for y in range(config.height):
        routes.row_reduce_chain(y, (0, 1))
    rng = np.random.default_rng(1)
    images = {}
    for y in range(config.height):
        for x in range(config.width):
            words = mem(0, 0, 64) + mem(1, 64, 64) + mem(4, 128, 64)
            if x < config.width - 1:
                words += stream(2, "out", checkerboard_color(x, y, 0, 1), 64)
            if x > 0:
                words += stream(3, "in", checkerboard_color(x - 1, y, 0, 1), 64)
            words += [E("addi", a=2, b=0, imm18=iterations)]
            loop = len(words)
            words += [E("vdot4", a=1, b=0, c=1, red=1)]
            if x < config.width - 1:
                words += [E("vmov", a=2, b=0)]
            if x > 0:
                words += [E("vmov", a=4, b=3)]
            words += [E("dbnz", a=2, imm14=loop), E("halt")]
            images[(x, y)] = image(words, rng.integers(0, 1 << 32, 128, dtype=np.uint64))
    return MeshProgram(config, images, routes, name="vector benchmark")


def test_benchmark_program_runs():
    config = MeshConfig(width=3, height=2)
    result = MeshEmulator(benchmark_program(config, 2)).run()
    assert result.halted.all()
    assert np.array_equal(result.sram[1, 128:192], result.sram[0, 0:64])


def measure(sizes=(4, 8, 32), seconds=3.0):
    for size in sizes:
        config = MeshConfig(width=size, height=size)
        emu = MeshEmulator(benchmark_program(config, 1000))
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                emu.step()
        elapsed = time.perf_counter() - start
        print(f"{size}x{size}: {emu.cycle / elapsed:,.0f} cycles/s "
              f"({emu.cycle * config.tiles / elapsed:,.0f} core-cycles/s)")


if __name__ == "__main__":
    measure([int(arg) for arg in sys.argv[1:]] or (4, 8, 32))

"""The prefill engine's vector engine (hdl/vector_engine.py) against its timing contract, in the
Amaranth simulator, cycle by cycle, with the cycle model (emulator/vector_engine.py) and numpy.

The engine is simulated inside a harness holding the SBUF (256 rows) and the PSUM (32 rows) as
non-transparent synchronous memories (row = address modulo the rows). Cycle 0 is the first clock
cycle after reset. Within a cycle the test bench sets the command, reads the outputs, then awaits
the clock edge that ends the cycle. One simulator serves each design: every case resets it,
loads the memories and runs a new test bench job.
"""

import re

import numpy as np
import pytest
from amaranth.hdl import Module, Shape, Elaboratable
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings, strategies as st

import hdl
from emulator import vector_engine as model_module
from emulator.vector_engine import VectorCommand, VectorEngineModel, vector_op
from hdl.vector_engine import VectorEngine, VectorOp
from mesh import isa, numerics

from sim_bench import RTL_TEST_MARKS, Bench, kept
from verilator_lint import AMARANTH_WARNINGS, lint_warnings

pytestmark = RTL_TEST_MARKS

SIZES = [2, 5, 8]
SBUF_ROWS, PSUM_ROWS = 256, 32
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
Op = model_module.VectorOp


# The harness: the engine with its memories ----------------------------------------------------

class Harness(Elaboratable):
    def __init__(self, n):
        self.n = n
        self.engine = VectorEngine(n)
        self.sbuf = Memory(shape=8 * n, depth=SBUF_ROWS, init=[])
        self.psum = Memory(shape=32 * n, depth=PSUM_ROWS, init=[])

    def elaborate(self, platform):
        m = Module()
        e = self.engine
        m.submodules.engine = e
        m.submodules.sbuf = self.sbuf
        m.submodules.psum = self.psum
        for memory, depth, reads, write in [
                (self.sbuf, SBUF_ROWS, (e.sbuf_read_a, e.sbuf_read_b), e.sbuf_write),
                (self.psum, PSUM_ROWS, (e.psum_read_a, e.psum_read_b), e.psum_write)]:
            bits = (depth - 1).bit_length()
            for port in reads:
                read = memory.read_port(transparent_for=())    # non-transparent
                m.d.comb += [read.en.eq(port.en), read.addr.eq(port.addr[:bits]),
                             port.data.as_value().eq(read.data)]
            w = memory.write_port()
            m.d.comb += [w.en.eq(write.en), w.addr.eq(write.addr[:bits]),
                         w.data.eq(write.data.as_value())]
        return m


def bench_for(n):
    return kept(n, lambda: Bench(Harness(n)))


def pack(values, bits):
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (bits * k) for k, v in enumerate(values))


def unpack(raw, bits, count):
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    return [((raw >> (bits * k) & mask) ^ sign) - sign for k in range(count)]


def run(n, sbuf, psum, program, extra=4):
    """Run ``program`` (a list of (gap, VectorCommand): offer the command ``gap`` cycles after
    the previous one was taken could first be offered, i.e. after ``ready`` rises) on the
    engine with memories ``sbuf`` (256, n) and ``psum`` (32, n). Every cycle the RTL's ready,
    busy, read port enables and addresses and write port enables, addresses and data must equal
    the model's. Returns (final sbuf, final psum, log): log holds per cycle the model's outputs.
    """
    bench = bench_for(n)
    harness = bench.dut
    dut = harness.engine
    m_sbuf, m_psum = sbuf.astype(np.int64).copy(), psum.astype(np.int64).copy()
    model = VectorEngineModel(n, m_sbuf, m_psum)
    read_ports = {name: getattr(dut, name) for name in
                  ("sbuf_read_a", "sbuf_read_b", "psum_read_a", "psum_read_b")}
    write_ports = {"sbuf_write": (dut.sbuf_write, 8), "psum_write": (dut.psum_write, 32)}

    async def job(ctx):
        for i in range(SBUF_ROWS):
            ctx.set(harness.sbuf.data[i], pack(sbuf[i], 8))
        for i in range(PSUM_ROWS):
            ctx.set(harness.psum.data[i], pack(psum[i], 32))
        log = []
        pending = list(program)
        wait = pending[0][0] if pending else 0
        idle = 0
        cycle = 0
        while pending or idle < extra:
            command = None
            if pending and model.ready:
                if wait == 0:
                    command = pending[0][1]
                else:
                    wait -= 1
            ctx.set(dut.cmd.valid, command is not None)
            if command is not None:
                ctx.set(dut.cmd.op.as_value(), int(command.op))
                for field in ("src_a", "src_b", "dst", "rows", "multiplier", "shift", "acc"):
                    ctx.set(getattr(dut.cmd, field), int(getattr(command, field)))
            got_ready, got_busy = ctx.get(dut.cmd.ready), ctx.get(dut.busy)
            reads = {name: ctx.get(port.addr) for name, port in read_ports.items()
                     if ctx.get(port.en)}
            writes = {}
            for name, (port, bits) in write_ports.items():
                if ctx.get(port.en):
                    writes[name] = (ctx.get(port.addr),
                                    unpack(ctx.get(port.data.as_value()), bits, n))
            expected = model.step(command)
            assert (got_ready, got_busy) == (expected["ready"], expected["busy"]), \
                f"cycle {cycle}: ready, busy {got_ready, got_busy} != model"
            assert reads == expected["reads"], f"cycle {cycle}: reads {reads} != model"
            assert writes == {k: (a, list(v)) for k, (a, v) in expected["writes"].items()}, \
                f"cycle {cycle}: writes {writes} != model {expected['writes']}"
            log.append(expected)
            if expected["taken"]:
                pending.pop(0)
                wait = pending[0][0] if pending else 0
            idle = idle + 1 if not (pending or expected["busy"] or expected["taken"]) else 0
            cycle += 1
            await ctx.tick()
        final_sbuf = np.array([unpack(ctx.get(harness.sbuf.data[i]), 8, n)
                               for i in range(SBUF_ROWS)])
        final_psum = np.array([unpack(ctx.get(harness.psum.data[i]), 32, n)
                               for i in range(PSUM_ROWS)])
        table = [ctx.get(entry) for entry in dut.table]
        return final_sbuf, final_psum, log, table

    final_sbuf, final_psum, log, table = bench.execute(job)
    assert (final_sbuf == m_sbuf).all() and (final_psum == m_psum).all()
    assert table == model.table.tolist()
    return final_sbuf, final_psum, log


def memories(rng, n):
    sbuf = rng.integers(-128, 128, size=(SBUF_ROWS, n))
    psum = rng.integers(INT32_MIN, INT32_MAX + 1, size=(PSUM_ROWS, n), dtype=np.int64)
    return sbuf, psum


def write_cycles(log, port):
    return [(t, out["writes"][port][0]) for t, out in enumerate(log) if port in out["writes"]]


def taken_cycles(log):
    return [t for t, out in enumerate(log) if out["taken"]]


# Construction ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 33, 0, -4, 2.0, True, "8", None])
def test_size_is_checked(n):
    with pytest.raises(ValueError, match=re.escape(f"n must be an integer from 2 to 32, "
                                                   f"not {n!r}")):
        VectorEngine(n)


@pytest.mark.parametrize("entries", [128, 512, 256.0, True, None])
def test_table_entries_are_checked(entries):
    with pytest.raises(ValueError, match=re.escape(
            f"table_entries must be 256 (one entry per int8 value), not {entries!r}")):
        VectorEngine(4, table_entries=entries)


@pytest.mark.parametrize("n", [2, 5, 8, 32])
def test_members(n):
    engine = VectorEngine(n, table_entries=256)
    assert engine.n == n and engine.table_rows == -(-256 // n) and len(engine.table) == 256
    members = engine.signature.members
    assert {name: m.flow for name, m in members.items()} == {
        "cmd": In, "busy": Out, "sbuf_read_a": Out, "sbuf_read_b": Out, "sbuf_write": Out,
        "psum_read_a": Out, "psum_read_b": Out, "psum_write": Out}
    cmd = {name: (m.flow, Shape.cast(m.shape)) for name, m in
           members["cmd"].signature.members.items()}
    assert cmd == {"valid": (In, Shape(1)), "ready": (Out, Shape(1)),
                   "op": (In, Shape(4)), "src_a": (In, Shape(16)), "src_b": (In, Shape(16)),
                   "dst": (In, Shape(16)), "rows": (In, Shape(16)),
                   "multiplier": (In, Shape(32, signed=True)), "shift": (In, Shape(6)),
                   "acc": (In, Shape(1))}
    for kind, bits in (("sbuf", 8), ("psum", 32)):
        row = data.ArrayLayout(Shape(bits, signed=True), n)
        for name in (f"{kind}_read_a", f"{kind}_read_b"):
            assert {k: (m.flow, m.shape) for k, m in members[name].signature.members.items()} \
                == {"en": (Out, 1), "addr": (Out, 16), "data": (In, row)}
        assert {k: (m.flow, m.shape) for k, m in
                members[f"{kind}_write"].signature.members.items()} \
            == {"en": (Out, 1), "addr": (Out, 16), "data": (Out, row)}


def test_op_codes_agree_with_the_model():
    from mesh import prefill
    assert Op is prefill.VectorOp and "VectorOp" in prefill.__all__
    assert {op.name: op.value for op in VectorOp} == {op.name: op.value for op in Op}
    assert [op.value for op in Op] == list(range(16))


@pytest.mark.parametrize("n", [1, 33])
def test_model_size_is_checked(n):
    with pytest.raises(ValueError, match=re.escape(f"n must be an integer from 2 to 32, "
                                                   f"not {n!r}")):
        VectorEngineModel(n, np.zeros((4, 4)), np.zeros((4, 4)))


@pytest.mark.parametrize("fields, message", [
    ({"op": 16}, "op must be an integer from 0 to 15, not 16"),
    ({"op": 0, "rows": 65536}, "rows must be an integer from 0 to 65535, not 65536"),
    ({"op": 0, "dst": -1}, "dst must be an integer from 0 to 65535, not -1"),
    ({"op": 0, "shift": 64}, "shift must be an integer from 0 to 63, not 64"),
    ({"op": 10, "acc": 2}, "acc must be an integer from 0 to 1, not 2"),
    ({"op": 0, "multiplier": 2**31}, "multiplier must be an integer from -2147483648 to "
                                     "2147483647, not 2147483648"),
])
def test_command_fields_are_checked(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VectorCommand(**fields)


# The pure operations against numpy ------------------------------------------------------------

def test_vector_op_against_numpy():
    rng = np.random.default_rng(7)
    a8, b8 = rng.integers(-128, 128, size=(2, 50, 5))
    assert (vector_op(Op.ADD8, a8, b8) == np.clip(a8 + b8, -128, 127)).all()
    assert (vector_op(Op.MUL8, a8, b8) == np.clip(a8 * b8, -128, 127)).all()
    assert (vector_op(Op.MAX8, a8, b8) == np.maximum(a8, b8)).all()
    a32, b32 = rng.integers(INT32_MIN, INT32_MAX + 1, size=(2, 50, 5), dtype=np.int64)
    assert (vector_op(Op.ADD32, a32, b32) == (a32 + b32 + 2**31) % 2**32 - 2**31).all()
    assert (vector_op(Op.ROWMAX, a32) == a32.max(axis=0)).all()
    assert (vector_op(Op.ROWSUM, a32) == (a32.sum(axis=0) + 2**31) % 2**32 - 2**31).all()
    table = rng.integers(-128, 128, size=256)
    assert (vector_op(Op.LUT, a8, table=table) == table[a8 + 128]).all()
    rows = rng.integers(-128, 128, size=(52, 5))
    assert (vector_op(Op.LOAD_TABLE, rows) == rows.reshape(-1)[:256]).all()
    # Requantize: round half up of a * m / 2^s, saturated, as exact rationals.
    for shift in (0, 1, 7, 31, 40, 63):
        m = int(rng.integers(INT32_MIN, INT32_MAX + 1))
        got = vector_op(Op.REQUANT, a32[0], multiplier=m, shift=shift)
        expected = [min(max((2 * int(v) * m + 2**shift) // 2**(shift + 1), -128), 127)
                    for v in a32[0]]
        assert got.tolist() == expected


def wrap32(values):
    return (np.asarray(values, dtype=np.int64) + 2**31) % 2**32 - 2**31


def requantize_exact(a, multiplier, shift):
    """floor(a * multiplier / 2^shift + 1/2) saturated to int8, in Python integers."""
    return min(max((2 * int(a) * int(multiplier) + 2**shift) // 2**(shift + 1), -128), 127)


EDGE_32 = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1, INT32_MAX - 1, 2**30, -2**30, 2**16]


def test_new_ops_against_numpy():
    """SUB32, LANEMAX, LANESUM (with and without b), MULW, SCALE, RECIP, RSQRT as plain numpy
    formulas, on random rows and the int32 edges (wrapping sums and differences)."""
    rng = np.random.default_rng(8)
    a32, b32 = rng.integers(INT32_MIN, INT32_MAX + 1, size=(2, 40, 5), dtype=np.int64)
    a32[0], b32[0] = EDGE_32[:5], EDGE_32[5:]
    a32[1], b32[1] = INT32_MAX, INT32_MAX             # sums wrap
    a32[2], b32[2] = INT32_MIN, INT32_MAX             # differences wrap
    assert (vector_op(Op.SUB32, a32, b32) == wrap32(a32 - b32)).all()
    assert vector_op(Op.SUB32, [INT32_MIN], [1]).tolist() == [INT32_MAX]
    row_max = np.repeat(a32.max(axis=1, keepdims=True), 5, axis=1)
    row_sum = np.repeat(wrap32(a32.sum(axis=1, keepdims=True)), 5, axis=1)
    assert (vector_op(Op.LANEMAX, a32) == row_max).all()
    assert (vector_op(Op.LANEMAX, a32, b32) == np.maximum(row_max, b32)).all()
    assert (vector_op(Op.LANESUM, a32) == row_sum).all()
    assert (vector_op(Op.LANESUM, a32, b32) == wrap32(row_sum + b32)).all()
    assert vector_op(Op.LANESUM, [INT32_MAX, 1]).tolist() == [INT32_MIN] * 2
    a8, b8 = rng.integers(-128, 128, size=(2, 40, 5))
    a8[0], b8[0] = [-128, -128, 127, 127, 0], [-128, 127, -128, 127, -1]
    assert (vector_op(Op.MULW, a8, b8) == a8 * b8).all()
    assert (vector_op(Op.MULW, a8, np.ones_like(a8)) == a8).all()
    for shift in (0, 1, 15, 31, 47, 63):
        got = vector_op(Op.SCALE, a32, b32, shift=shift)
        expected = [[requantize_exact(x, m, shift) for x, m in zip(ra, rb)]
                    for ra, rb in zip(a32, b32)]
        assert got.tolist() == expected, shift
        assert (vector_op(Op.RECIP, a32, shift=shift) == numerics.recip(a32, shift)).all()
        assert (vector_op(Op.RSQRT, a32, shift=shift) == numerics.rsqrt(a32, shift)).all()
    with pytest.raises(ValueError, match="shift must be an integer from 0 to 63, not 64"):
        vector_op(Op.RECIP, a32, shift=64)
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        vector_op(Op.LANESUM, a32, b32[:, :2])


def test_ports_with_acc():
    """LANEMAX and LANESUM read PSUM b only with acc; every other op ignores acc."""
    for op in Op:
        for acc in (0, 1):
            expected = model_module.PORTS[op]
            if op in (Op.LANEMAX, Op.LANESUM) and acc:
                expected = expected[:3] + (True,) + expected[4:]
            assert model_module.ports(op, acc) == expected
    assert set(model_module.PORTS) == set(Op) and [op.value for op in Op] == list(range(16))


# The RTL, op by op ----------------------------------------------------------------------------

def single(n, command, seed, sbuf=None, psum=None):
    rng = np.random.default_rng(seed)
    s, p = memories(rng, n)
    s = s if sbuf is None else sbuf
    p = p if psum is None else psum
    final_sbuf, final_psum, log = run(n, s, p, [(0, command)])
    return s, p, final_sbuf, final_psum, log


@pytest.mark.parametrize("n", SIZES)
@settings(max_examples=12, deadline=None)
@given(drawn=st.data())
def test_elementwise_ops_against_numpy(n, drawn):
    """Each element-wise op on random rows: the written rows are the numpy result, row i of a
    command taken in cycle c is written in cycle c + i + 2, nothing else changes."""
    op = drawn.draw(st.sampled_from([Op.REQUANT, Op.ADD8, Op.MAX8, Op.MUL8, Op.ADD32]),
                    label="op")
    seed = drawn.draw(st.integers(0, 2**32 - 1), label="seed")
    rows = drawn.draw(st.integers(1, 6), label="rows")
    sbuf_op = op in (Op.ADD8, Op.MAX8, Op.MUL8)
    src_space = SBUF_ROWS if sbuf_op else PSUM_ROWS
    dst_space = PSUM_ROWS if op == Op.ADD32 else SBUF_ROWS
    src_a = drawn.draw(st.integers(0, src_space - rows), label="src_a")
    src_b = drawn.draw(st.integers(0, src_space - rows), label="src_b")
    dst = drawn.draw(st.integers(0, dst_space - rows), label="dst")
    multiplier = drawn.draw(st.integers(INT32_MIN, INT32_MAX), label="multiplier")
    shift = drawn.draw(st.integers(0, 63), label="shift")
    command = VectorCommand(op, src_a, src_b, dst, rows, multiplier, shift)
    sbuf, psum, final_sbuf, final_psum, log = single(n, command, seed)
    source = sbuf if sbuf_op else psum
    a = source[src_a:src_a + rows].astype(np.int64)
    b = source[src_b:src_b + rows].astype(np.int64)
    if op == Op.REQUANT:
        expected = np.array([[isa.requantize(np.uint32(int(v) & 0xFFFFFFFF),
                                             np.uint32(multiplier & 0xFFFFFFFF), shift)
                              for v in row] for row in a]).astype(np.uint32).view(np.int32)
    elif op == Op.ADD8:
        expected = np.clip(a + b, -128, 127)
    elif op == Op.MAX8:
        expected = np.maximum(a, b)
    elif op == Op.MUL8:
        expected = np.clip(a * b, -128, 127)
    else:
        expected = (a + b + 2**31) % 2**32 - 2**31
    # Rows overlapping the sources of later rows may be read after being written: compare
    # against the rows as computed by the hazard-free formula only when the ranges are apart.
    target, other = (final_psum, psum) if op == Op.ADD32 else (final_sbuf, sbuf)
    overlap = (op == Op.ADD32 or sbuf_op) and (
        0 < dst - src_a < rows or 0 < dst - src_b < rows)
    if not overlap:
        assert (target[dst:dst + rows] == expected).all()
    untouched = np.ones(len(target), dtype=bool)
    untouched[dst:dst + rows] = False
    assert (target[untouched] == other[untouched]).all()
    port = "psum_write" if op == Op.ADD32 else "sbuf_write"
    assert write_cycles(log, port) == [(i + 2, dst + i) for i in range(rows)]


@pytest.mark.parametrize("n", SIZES)
def test_requantize_extremes_are_bit_identical(n):
    """PSUM values and multipliers at the int32 limits, shifts 0 to 63: every element equals
    isa.requantize exactly."""
    values = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1, 2**30, -2**30, 127, -128, 255,
              -129, 2**16 + 1, -(2**16) - 1, 3, -3]
    psum = np.zeros((PSUM_ROWS, n), dtype=np.int64)
    flat = np.resize(np.array(values, dtype=np.int64), PSUM_ROWS * n)
    psum[:] = flat.reshape(PSUM_ROWS, n)
    rows = -(-len(values) // n)
    sbuf = np.zeros((SBUF_ROWS, n), dtype=np.int64)
    program = []
    shifts = [0, 1, 31, 32, 62, 63]
    multipliers = [INT32_MIN, INT32_MAX, -1, 1, -98765]
    cases = [(m, s) for m in multipliers for s in shifts]
    assert len(cases) * rows <= SBUF_ROWS
    for k, (m, s) in enumerate(cases):
        program.append((0, VectorCommand(Op.REQUANT, 0, 0, k * rows, rows, m, s)))
    final_sbuf, _, log = run(n, sbuf, psum, program)
    for k, (m, s) in enumerate(cases):
        got = final_sbuf[k * rows:(k + 1) * rows]
        expected = isa.requantize((psum[:rows] & 0xFFFFFFFF).astype(np.uint32),
                                  np.uint32(m & 0xFFFFFFFF), s)
        assert (got == expected.astype(np.uint32).view(np.int32)).all(), (m, s)
    # Back to back, no bubble.
    assert taken_cycles(log) == [rows * k for k in range(len(program))]


NEW_OPS = [Op.SUB32, Op.LANEMAX, Op.LANESUM, Op.MULW, Op.SCALE, Op.RECIP, Op.RSQRT]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", NEW_OPS)
def test_new_ops_in_rtl_against_numpy(n, op):
    """Each new op, two commands back to back (acc off and on, or two shifts) of 4 rows on random
    rows with the int32 (int8) edges: the written rows equal the plain numpy formula, row i of a
    command taken in cycle c is written in cycle c + i + 2, nothing else changes."""
    rng = np.random.default_rng(700 + 10 * n + op.value)
    sbuf, psum = memories(rng, n)
    psum[0] = np.resize(EDGE_32, n)
    psum[1] = INT32_MAX                      # LANESUM wraps
    psum[2] = INT32_MIN
    psum[3] = np.resize([0, -1, 1, INT32_MIN], n)
    psum[8] = np.resize(EDGE_32[::-1], n)
    psum[9] = INT32_MAX                      # SUB32 wraps: INT32_MIN - INT32_MAX
    psum[10] = np.resize([1, -1, 0, 2**20], n)
    sbuf[40] = np.resize([-128, 127, 0, -1, 1], n)
    sbuf[41] = np.resize([-128, -128, 127, 127, -1], n)
    sbuf[50] = np.resize([-128, 127, -128, 127, 0], n)
    rows = 4
    sbuf_in = op == Op.MULW
    a, b = (40, 50) if sbuf_in else (0, 8)
    first, second = (dict(acc=0), dict(acc=1)) if op in (Op.LANEMAX, Op.LANESUM) else \
        (dict(shift=int(rng.integers(0, 20))), dict(shift=int(rng.integers(20, 64))))
    dsts = (100, 110) if op == Op.SCALE else (16, 24)
    program = [(0, VectorCommand(op, a, b, dsts[0], rows, **first)),
               (0, VectorCommand(op, a, b, dsts[1], rows, **second))]
    final_sbuf, final_psum, log = run(n, sbuf, psum, program)
    source = sbuf if sbuf_in else psum
    ra, rb = source[a:a + rows].astype(np.int64), source[b:b + rows].astype(np.int64)
    to_sbuf = op == Op.SCALE
    target, before = (final_sbuf, sbuf) if to_sbuf else (final_psum, psum)
    for dst, fields in zip(dsts, (first, second)):
        shift, acc = fields.get("shift", 0), fields.get("acc", 0)
        if op == Op.SUB32:
            expected = wrap32(ra - rb)
        elif op == Op.LANEMAX:
            expected = np.repeat(ra.max(axis=1, keepdims=True), n, axis=1)
            expected = np.maximum(expected, rb) if acc else expected
        elif op == Op.LANESUM:
            expected = wrap32(np.repeat(ra.sum(axis=1, keepdims=True), n, axis=1)
                              + (rb if acc else 0))
        elif op == Op.MULW:
            expected = ra * rb
        elif op == Op.SCALE:
            expected = np.array([[requantize_exact(x, m, shift) for x, m in zip(x_row, m_row)]
                                 for x_row, m_row in zip(ra, rb)])
        else:
            expected = (numerics.recip if op == Op.RECIP else numerics.rsqrt)(ra, shift)
        assert (target[dst:dst + rows] == expected).all(), (dst, fields)
    untouched = np.ones(len(target), dtype=bool)
    for dst in dsts:
        untouched[dst:dst + rows] = False
    assert (target[untouched] == before[untouched]).all()
    port = "sbuf_write" if to_sbuf else "psum_write"
    assert taken_cycles(log) == [0, rows]
    assert write_cycles(log, port) == [(c + i + 2, d + i) for c, d in zip((0, rows), dsts)
                                       for i in range(rows)]
    reads_b = op not in (Op.LANEMAX, Op.LANESUM, Op.RECIP, Op.RSQRT)
    b_port = "sbuf_read_b" if sbuf_in else "psum_read_b"
    assert [t for t, out in enumerate(log) if b_port in out["reads"]] == (
        list(range(2 * rows)) if reads_b else
        list(range(rows, 2 * rows)) if op in (Op.LANEMAX, Op.LANESUM) else [])


def norm_edge_values(rng, count):
    """Every power of two up to 2^30 and its neighbours, 0, negatives, the int32 limits, then
    random int32 values up to ``count``."""
    values = {0, -1, -2, INT32_MIN, INT32_MIN + 1, INT32_MAX}
    for j in range(31):
        values.update({2**j - 1, 2**j, 2**j + 1})
    values = sorted(v for v in values if INT32_MIN <= v <= INT32_MAX)
    assert len(values) <= count
    extra = rng.integers(INT32_MIN, INT32_MAX + 1, size=count - len(values), dtype=np.int64)
    extra[: len(extra) // 2] = np.abs(extra[: len(extra) // 2])
    return np.concatenate([np.array(values, dtype=np.int64), extra])


def test_recip_rsqrt_edges_equal_numerics():
    """RECIP and RSQRT of 128 int32 values (the edges and random ones) with shifts 0, 1, 16, 30,
    47, 63, back to back: every written element equals mesh.numerics exactly."""
    n, rows = 8, 16
    rng = np.random.default_rng(900)
    sbuf, psum = memories(rng, n)
    values = norm_edge_values(rng, rows * n)
    psum[:rows] = values.reshape(rows, n)
    shifts = [0, 1, 16, 30, 47, 63]
    cases = [(op, s) for op in (Op.RECIP, Op.RSQRT) for s in shifts]
    program = [(0, VectorCommand(op, 0, 0, rows, rows, shift=s)) for op, s in cases]
    _, _, log = run(n, sbuf, psum, program)
    writes = [out["writes"]["psum_write"] for out in log if "psum_write" in out["writes"]]
    assert len(writes) == len(cases) * rows
    for k, (op, s) in enumerate(cases):
        got = np.array([row for _, row in writes[k * rows:(k + 1) * rows]])
        assert [address for address, _ in writes[k * rows:(k + 1) * rows]] == \
            list(range(rows, 2 * rows))
        function = numerics.recip if op == Op.RECIP else numerics.rsqrt
        assert (got == function(psum[:rows], s)).all(), (op.name, s)
    assert taken_cycles(log) == [rows * k for k in range(len(cases))]


@pytest.mark.parametrize("n", SIZES)
def test_load_table_then_lut(n):
    """LOAD_TABLE from ceil(256 / n) SBUF rows, then a LUT taken in the very next cycle it can
    be: every row looks up the new table (entry e = element e mod n of row a + e // n)."""
    rng = np.random.default_rng(300 + n)
    sbuf, psum = memories(rng, n)
    count = -(-256 // n)
    table = rng.integers(-128, 128, size=256)
    flat = np.resize(table, count * n)
    flat[256:] = 99                       # beyond entry 255: ignored
    sbuf[10:10 + count] = flat.reshape(count, n)
    rows = 6
    src = 10 + count + 3
    sbuf[src:src + rows, 0] = [-128, 127, 0, -1, 1, 64][:rows]
    program = [(0, VectorCommand(Op.LOAD_TABLE, 10, 0, 0, rows=1)),
               (0, VectorCommand(Op.LUT, src, 0, 200, rows=rows))]
    final_sbuf, _, log = run(n, sbuf, psum, program)
    assert taken_cycles(log) == [0, count]
    assert (final_sbuf[200:200 + rows] == table[sbuf[src:src + rows] + 128]).all()
    assert write_cycles(log, "sbuf_write") == [(count + i + 2, 200 + i) for i in range(rows)]
    # LOAD_TABLE writes no row and reads its rows one per cycle.
    assert [log[t]["reads"] for t in range(count)] == \
        [{"sbuf_read_a": 10 + i} for i in range(count)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", [Op.ROWMAX, Op.ROWSUM])
def test_reductions(n, op):
    """ROWMAX / ROWSUM over 1, 3 and 17 PSUM rows, back to back: one row written to d in cycle
    c + rows + 1, equal to numpy (the sum wrapping like int32)."""
    rng = np.random.default_rng(400 + n)
    sbuf, psum = memories(rng, n)
    psum[0] = INT32_MAX                  # the sum wraps
    psum[1] = INT32_MAX
    plan = [(0, 1, 29), (0, 3, 30), (2, 17, 31)]
    program = [(0, VectorCommand(op, a, 0, d, rows)) for a, rows, d in plan]
    _, final_psum, log = run(n, sbuf, psum, program)
    starts = taken_cycles(log)
    assert starts == [0, 1, 4]
    assert write_cycles(log, "psum_write") == [
        (c + rows + 1, d) for c, (_, rows, d) in zip(starts, plan)]
    for a, rows, d in plan:
        block = psum[a:a + rows]
        expected = block.max(axis=0) if op == Op.ROWMAX else \
            (block.sum(axis=0) + 2**31) % 2**32 - 2**31
        assert (final_psum[d] == expected).all()


@pytest.mark.parametrize("n", [2, 5])
def test_ready_and_busy_timing(n):
    """A command of R rows taken in cycle c: ready low in c + 1 .. c + R - 1, busy high in
    c + 1 .. c + R + 1, writes in c + 2 .. c + R + 1; rows = 0 counts as 1."""
    rng = np.random.default_rng(n)
    sbuf, psum = memories(rng, n)
    program = [(2, VectorCommand(Op.ADD8, 0, 50, 100, rows=4)),
               (3, VectorCommand(Op.MAX8, 0, 50, 120, rows=0))]
    _, _, log = run(n, sbuf, psum, program)
    assert taken_cycles(log) == [2, 9]
    assert [t for t, out in enumerate(log) if not out["ready"]] == [3, 4, 5]
    assert [t for t, out in enumerate(log) if out["busy"]] == [3, 4, 5, 6, 7, 10, 11]
    assert write_cycles(log, "sbuf_write") == [(4, 100), (5, 101), (6, 102), (7, 103),
                                               (11, 120)]


@pytest.mark.parametrize("n", SIZES)
def test_hazard_rule(n):
    """A command reading the rows the previous command (taken in cycle c = 0, R = 2 rows,
    writing row 100 + i in cycle i + 2) writes: a read in cycle t sees a write of cycle w only
    if w < t (the same cycle returns the old row). Reading rows 100, 101 as its rows 0, 1, the
    next command sees the old rows when taken back to back (cycle 2: reads in cycles 2, 3), the
    new ones from cycle 3 on; reading row 101 as its row 0, it needs cycle c + R + 2 = 4."""
    rng = np.random.default_rng(500 + n)
    sbuf, psum = memories(rng, n)
    first = VectorCommand(Op.ADD8, 0, 10, 100, rows=2)      # writes rows 100, 101
    new = np.clip(sbuf[0:2] + sbuf[10:12], -128, 127)
    cases = [(100, 2, 0, False), (100, 2, 1, True), (101, 1, 1, False), (101, 1, 2, True),
             (100, 2, 5, True)]
    for src, rows, gap, fresh in cases:
        second = VectorCommand(Op.MAX8, src, 20, 150, rows=rows)
        final, _, log = run(n, sbuf, psum, [(0, first), (gap, second)])
        assert taken_cycles(log) == [0, 2 + gap]
        assert (final[100:102] == new).all()
        seen = new if fresh else sbuf[100:102]
        expected = np.maximum(seen[src - 100:src - 100 + rows], sbuf[20:20 + rows])
        assert (final[150:150 + rows] == expected).all(), (src, rows, gap)


@pytest.mark.parametrize("n", [2, 5])
def test_in_place_and_overlapping_rows(n):
    """d = a (in place) reads each row before writing it; d = a + 1 reads row a + i + 1 in
    cycle c + i + 1, before row i's write (cycle c + i + 2) lands: the old values."""
    rng = np.random.default_rng(600 + n)
    sbuf, psum = memories(rng, n)
    program = [(0, VectorCommand(Op.ADD8, 30, 60, 30, rows=4)),
               (3, VectorCommand(Op.ADD8, 80, 90, 81, rows=4))]
    final, _, _ = run(n, sbuf, psum, program)
    assert (final[30:34] == np.clip(sbuf[30:34] + sbuf[60:64], -128, 127)).all()
    assert (final[81:85] == np.clip(sbuf[80:84] + sbuf[90:94], -128, 127)).all()


# Random command streams, RTL against the model -----------------------------------------------

@st.composite
def commands(draw, n):
    op = draw(st.sampled_from(list(Op)), label="op")
    rows = draw(st.integers(0, 5), label="rows")
    space = SBUF_ROWS if op in (Op.ADD8, Op.MAX8, Op.MUL8, Op.LUT, Op.LOAD_TABLE, Op.MULW) \
        else PSUM_ROWS
    return (draw(st.sampled_from([0, 0, 0, 1, 3]), label="gap"), VectorCommand(
        int(op), draw(st.integers(0, space - 1), label="a"),
        draw(st.integers(0, space - 1), label="b"),
        draw(st.integers(0, 2**16 - 1), label="d"), rows,
        draw(st.integers(INT32_MIN, INT32_MAX), label="multiplier"),
        draw(st.integers(0, 63), label="shift"), draw(st.integers(0, 1), label="acc")))


@pytest.mark.parametrize("n", SIZES)
@settings(max_examples=25, deadline=None)
@given(drawn=st.data())
def test_random_streams_match_the_model(n, drawn):
    """Random command sequences of every op, mostly back to back (overlapping rows, wrapping
    addresses, rows = 0, acc on and off, any shift): RTL and model agree on ready, busy, every
    read and every write, cycle by cycle, and on the final memories and table."""
    seed = drawn.draw(st.integers(0, 2**32 - 1), label="seed")
    program = drawn.draw(st.lists(commands(n), min_size=1, max_size=8), label="program")
    sbuf, psum = memories(np.random.default_rng(seed), n)
    _, _, log = run(n, sbuf, psum, program)
    assert len(taken_cycles(log)) == len(program)


# Verilog -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine_verilog():
    return hdl.verilog(VectorEngine(8), "vector_engine")


def test_verilog_ports(engine_verilog):
    header = re.search(r"^module vector_engine\((.*?)\);", engine_verilog, re.M | re.S).group(1)
    ports = sorted(p.strip() for p in header.split(","))
    assert "cmd__ready" in ports and "psum_write__data" in ports and "busy" in ports
    for direction, width, name in [("input", 256, "psum_read_a__data"),
                                   ("output", 64, "sbuf_write__data"),
                                   ("input", 32, "cmd__multiplier"), ("input", 6, "cmd__shift"),
                                   ("output", 16, "sbuf_read_b__addr")]:
        assert re.search(rf"^\s*{direction} \[{width - 1}:0\] {name};", engine_verilog, re.M)
    assert re.search(r"^\s*input cmd__acc;", engine_verilog, re.M)


def test_verilog_lints_clean(engine_verilog, tmp_path):
    """Verilator's lint finds no error, and no warning beyond the implicit width extensions and
    truncations Amaranth's Verilog always has."""
    assert lint_warnings(engine_verilog, "vector_engine", tmp_path) <= AMARANTH_WARNINGS

"""The prefill engine's systolic array (hdl/systolic.py) against its timing contract, in the
Amaranth simulator, cycle by cycle, with the reference model (emulator/systolic.py) and numpy.

Cycle 0 is the first clock cycle after reset. Within a cycle the test bench sets the inputs,
reads the outputs (registers: they do not depend on this cycle's inputs), then awaits the clock
edge that ends the cycle. One simulator serves each design: every case resets it and runs a new
test bench job. Array ports are set and read as whole vectors (one ``ctx.get`` per cycle for
``out.data``), unpacked in Python.
"""

import re

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings, strategies as st

import hdl
from emulator import SystolicModel, systolic_reference
from hdl import ProcessingElement, SystolicArray
from hdl.systolic import Activation

from sim_bench import RTL_TEST_MARKS, Bench, kept
from verilator_lint import AMARANTH_WARNINGS, lint_warnings

pytestmark = RTL_TEST_MARKS

SIZES = [2, 3, 5, 8]


# One simulator per design ---------------------------------------------------------------------

def array_bench(n):
    return kept(n, lambda: Bench(SystolicArray(n)))


# Vectors as port values ----------------------------------------------------------------------

def pack(values, bits):
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (bits * k) for k, v in enumerate(values))


def unpack(raw, bits, count):
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    return [((raw >> (bits * k) & mask) ^ sign) - sign for k in range(count)]


def run_array(n, schedule):
    """Run ``schedule`` on the n x n array, one entry per cycle: ``(weights, act)`` with
    ``weights`` None or (buffer, row, data[, transpose]) and ``act`` None (a bubble) or
    (buffer, data), then
    enough idle cycles to drain it. Every cycle, the RTL's output must equal the reference
    model's (valid, and data; data all zeros when not valid). Returns {cycle: output row}."""
    bench = array_bench(n)
    dut = bench.dut
    model = SystolicModel(n)
    cycles = len(schedule) + model.latency + 1
    act_data, weights_data, out_data = (dut.act.data.as_value(), dut.weights.data.as_value(),
                                        dut.out.data.as_value())

    async def job(ctx):
        outputs = {}
        for cycle in range(cycles):
            weights, act = schedule[cycle] if cycle < len(schedule) else (None, None)
            ctx.set(dut.weights.valid, weights is not None)
            if weights is not None:
                ctx.set(dut.weights.buffer, int(weights[0]))
                ctx.set(dut.weights.row, int(weights[1]))
                ctx.set(weights_data, pack(weights[2], 8))
            transpose = weights is not None and len(weights) > 3 and bool(weights[3])
            ctx.set(dut.weights.transpose, transpose)
            ctx.set(dut.act.valid, act is not None)
            if act is not None:
                ctx.set(dut.act.buffer, int(act[0]))
                ctx.set(act_data, pack(act[1], 8))
            valid, raw = ctx.get(dut.out.valid), ctx.get(out_data)
            expected = model.step(weights=None if weights is None else weights[:3], act=act,
                                  transpose=transpose)
            if expected is None:
                assert (valid, raw) == (0, 0), f"cycle {cycle}: output without a row"
            else:
                assert valid, f"cycle {cycle}: no output row"
                row = unpack(raw, 32, n)
                assert row == expected.tolist(), f"cycle {cycle}: {row} != {expected.tolist()}"
                outputs[cycle] = row
            await ctx.tick()
        return outputs

    return bench.execute(job)


def int8_matrix(rng, rows, columns):
    return rng.integers(-128, 128, size=(rows, columns))


def load(weights_by_buffer):
    """Schedule entries writing each given buffer ({buffer: (n, n) weights}), row by row."""
    return [((buffer, i, list(w[i])), None) for buffer, w in weights_by_buffer.items()
            for i in range(len(w))]


def stream(rows, buffers):
    """Schedule entries presenting ``rows`` (None: a bubble) with ``buffers`` (one per row)."""
    return [(None, None if row is None else (buffer, list(row)))
            for row, buffer in zip(rows, buffers)]


# Construction --------------------------------------------------------------------------------

def flow_and_shape(member):
    return member.flow, Shape.cast(member.shape)


@pytest.mark.parametrize("n", [1, 33, 0, -4, 2.0, True, "8", None])
def test_array_size_is_checked(n):
    with pytest.raises(ValueError, match=re.escape(f"n must be an integer from 2 to 32, "
                                                   f"not {n!r}")):
        SystolicArray(n)


def test_array_size_message():
    with pytest.raises(ValueError) as info:
        SystolicArray(33)
    assert str(info.value) == "n must be an integer from 2 to 32, not 33"


@pytest.mark.parametrize("n", [2, 3, 5, 8, 32])
def test_array_members(n):
    array = SystolicArray(n)
    assert array.n == n and array.latency == 2 * n
    members = array.signature.members
    assert {name: member.flow for name, member in members.items()} == {
        "weights": In, "act": In, "out": Out}
    int8_row = data.ArrayLayout(Shape(8, signed=True), n)
    # Members of In(...) ports, as the array sees them: inputs.
    assert {name: (m.flow, m.shape) for name, m in members["weights"].signature.members.items()} \
        == {"valid": (In, 1), "buffer": (In, 1), "transpose": (In, 1), "row": (In, range(n)),
            "data": (In, int8_row)}
    assert {name: (m.flow, m.shape) for name, m in members["act"].signature.members.items()} \
        == {"valid": (In, 1), "buffer": (In, 1), "data": (In, int8_row)}
    assert {name: (m.flow, m.shape) for name, m in members["out"].signature.members.items()} \
        == {"valid": (Out, 1), "data": (Out, data.ArrayLayout(Shape(32, signed=True), n))}
    assert len(array.pes) == n and all(len(row) == n for row in array.pes)
    assert [len(line) for line in array.skew] == list(range(n))
    assert [len(line) for line in array.deskew] == [n - j for j in range(n)]


def test_pe_members():
    pe = ProcessingElement()
    members = pe.signature.members
    assert {name: flow_and_shape(m) for name, m in members.items() if name != "weight"} == {
        "act_in": (In, Shape.cast(Activation)), "psum_in": (In, Shape(32, signed=True)),
        "act_out": (Out, Shape.cast(Activation)), "psum_out": (Out, Shape(32, signed=True))}
    assert {name: flow_and_shape(m) for name, m in members["weight"].signature.members.items()} \
        == {"valid": (In, Shape(1)), "buffer": (In, Shape(1)), "data": (In, Shape(8, True))}
    assert members["weight"].flow == In
    assert [w.shape() for w in pe.weights] == [Shape(8, signed=True)] * 2
    assert list(Activation.members) == ["valid", "buffer", "data"]


@pytest.mark.parametrize("n", [1, 33, 1.5, False])
def test_model_size_is_checked(n):
    with pytest.raises(ValueError, match=re.escape(f"n must be an integer from 2 to 32, "
                                                   f"not {n!r}")):
        SystolicModel(n)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"act": (2, [0, 0, 0])}, ValueError, "act buffer must be 0 or 1, not 2"),
    ({"act": (0, [0, 0])}, ValueError, r"act data must hold 3 values, not shape \(2,\)"),
    ({"act": (0, [0, 128, 0])}, ValueError, r"act data values must be int8"),
    ({"act": (0, [0.5, 0, 0])}, TypeError, "act data must hold integers"),
    ({"weights": (1, 3, [0, 0, 0])}, ValueError, "weights row must be an integer from 0 to 2"),
    ({"weights": (1, -1, [0, 0, 0])}, ValueError, "weights row must be an integer from 0 to 2"),
    ({"weights": (-1, 0, [0, 0, 0])}, ValueError, "weights buffer must be 0 or 1"),
    ({"weights": (0, 0, [0, -129, 0])}, ValueError, "weights data values must be int8"),
])
def test_model_inputs_are_checked(kwargs, error, message):
    model = SystolicModel(3)
    with pytest.raises(error, match=message):
        model.step(**kwargs)
    assert model.cycle == 0 and not model.weights.any()


def test_reference_is_the_int32_product():
    rng = np.random.default_rng(1)
    w, a = int8_matrix(rng, 5, 3), int8_matrix(rng, 7, 5)
    product = systolic_reference(w, a)
    assert product.dtype == np.int32 and product.shape == (7, 3)
    assert (product == a @ w).all()
    extreme = systolic_reference(np.full((32, 2), -128), np.full((1, 32), -128))
    assert extreme.tolist() == [[32 * 16384] * 2]


@pytest.mark.parametrize("weights, activations, message", [
    ([1, 2], [[1, 2]], r"weights must be a 2-D array"),
    ([[1, 2]], [[1, 2]], "activations have 2 columns but weights have 1 rows"),
    ([[1, 200]], [[1]], "weights values must be int8"),
    ([[1, 2]], [[-129]], "activations values must be int8"),
])
def test_reference_inputs_are_checked(weights, activations, message):
    with pytest.raises(ValueError, match=message):
        systolic_reference(weights, activations)


def test_model_without_rtl():
    """The model on its own: an output row exactly 2n cycles after its input row; a weight row
    written in cycle c reaches column j of a row presented in cycle t iff t + i + j >= c + 1."""
    n = 3
    model = SystolicModel(n)
    assert model.latency == 6
    w = np.arange(9).reshape(3, 3) - 4
    for i in range(n):
        assert model.step(weights=(1, i, w[i])) is None
    assert (model.weights[1] == w).all() and not model.weights[0].any()
    outputs = [model.step(act=(1, [1, 2, 3])), model.step()]
    outputs += [model.step() for _ in range(6)]
    assert [k for k, row in enumerate(outputs) if row is not None] == [6]
    assert outputs[6].tolist() == ([1, 2, 3] @ w).tolist()


# The processing element ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pe_bench():
    return Bench(ProcessingElement())


def test_pe_mac_select_forwarding_and_write_timing(pe_bench):
    pe = pe_bench.dut
    log = []

    async def job(ctx):
        async def cycle(*, act=None, psum=0, weight=None):
            """One cycle: act = (valid, buffer, data), weight = (buffer, data)."""
            valid, buffer, value = act if act is not None else (0, 0, 0)
            ctx.set(pe.act_in.valid, valid)
            ctx.set(pe.act_in.buffer, buffer)
            ctx.set(pe.act_in.data, value)
            ctx.set(pe.psum_in, psum)
            ctx.set(pe.weight.valid, weight is not None)
            if weight is not None:
                ctx.set(pe.weight.buffer, weight[0])
                ctx.set(pe.weight.data, weight[1])
            log.append((ctx.get(pe.act_out.valid), ctx.get(pe.act_out.buffer),
                        ctx.get(pe.act_out.data), ctx.get(pe.psum_out)))
            await ctx.tick()

        await cycle(weight=(0, 7))                      # 0
        await cycle(weight=(1, -3))                     # 1
        assert [ctx.get(w) for w in pe.weights] == [7, -3]
        await cycle(act=(1, 0, 5), psum=100)            # 2: 100 + 5 * 7
        await cycle(act=(1, 1, 5), psum=100)            # 3: 100 + 5 * -3
        await cycle(act=(0, 1, 5), psum=100)            # 4: bubble: psum_in unchanged
        # 5: write buffer 0 while an activation uses it: the old weight (7) is used...
        await cycle(act=(1, 0, -2), psum=0, weight=(0, 11))
        await cycle(act=(1, 0, -2), psum=0)             # 6: ... and the new one (11) after
        await cycle(act=(1, 1, -2), psum=1, weight=(0, 0))  # 7: a write to the other buffer
        await cycle()                                   # 8
        return [ctx.get(w) for w in pe.weights]

    assert pe_bench.execute(job) == [0, -3]
    # Outputs in cycle k + 1 are the results of cycle k; cycle 0 shows the reset values.
    assert log == [
        (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0),
        (1, 0, 5, 135), (1, 1, 5, 85), (0, 1, 5, 100),
        (1, 0, -2, -14), (1, 0, -2, -22), (1, 1, -2, 7),
    ]


@pytest.mark.parametrize("a, w, psum, expected", [
    (-128, -128, 0, 16384),
    (-128, 127, 0, -16256),
    (127, 127, -5, 16124),
    (-128, -128, 2**31 - 1, -(2**31) + 16383),     # wraps around int32
    (-128, 127, -(2**31), 2**31 - 16256),           # wraps the other way
    (0, -128, -(2**31), -(2**31)),
])
def test_pe_signed_extremes_and_wrap(pe_bench, a, w, psum, expected):
    pe = pe_bench.dut

    async def job(ctx):
        ctx.set(pe.weight.valid, 1)
        ctx.set(pe.weight.buffer, 1)
        ctx.set(pe.weight.data, w)
        await ctx.tick()
        ctx.set(pe.weight.valid, 0)
        ctx.set(pe.act_in.valid, 1)
        ctx.set(pe.act_in.buffer, 1)
        ctx.set(pe.act_in.data, a)
        ctx.set(pe.psum_in, psum)
        await ctx.tick()
        return ctx.get(pe.psum_out)

    assert pe_bench.execute(job) == expected


# The array -----------------------------------------------------------------------------------

def check_times(outputs, schedule, latency):
    """Every presented row has its output exactly ``latency`` cycles later, and no other."""
    presented = [t for t, (_, act) in enumerate(schedule) if act is not None]
    assert sorted(outputs) == [t + latency for t in presented]


@pytest.mark.parametrize("n", SIZES)
@settings(max_examples=15, deadline=None)
@given(drawn=st.data())
def test_random_stream_against_numpy_and_model(n, drawn):
    """Random weights in both buffers, then a random stream of rows (random buffers, bubbles):
    every output is the numpy product, at exactly t + 2n, and equals the model cycle by cycle."""
    seed = drawn.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    w = [int8_matrix(rng, n, n) for _ in range(2)]
    count = drawn.draw(st.integers(1, 3 * n), label="rows")
    rows = int8_matrix(rng, count, n)
    buffers = rng.integers(0, 2, size=count)
    bubbles = drawn.draw(st.lists(st.booleans(), min_size=count, max_size=count), label="bubbles")
    body = stream([None if bubble else row for row, bubble in zip(rows, bubbles)], buffers)
    schedule = load({0: w[0], 1: w[1]}) + body
    outputs = run_array(n, schedule)
    check_times(outputs, schedule, 2 * n)
    start = 2 * n
    for k, bubble in enumerate(bubbles):
        if not bubble:
            expected = systolic_reference(w[buffers[k]], rows[k:k + 1])[0]
            assert outputs[start + k + 2 * n] == expected.tolist()


@pytest.mark.parametrize("n", SIZES)
def test_back_to_back_alternating_buffers(n):
    rng = np.random.default_rng(n)
    w = [int8_matrix(rng, n, n) for _ in range(2)]
    rows = int8_matrix(rng, 4 * n, n)
    buffers = np.arange(4 * n) % 2
    schedule = load({0: w[0], 1: w[1]}) + stream(rows, buffers)
    outputs = run_array(n, schedule)
    first = 2 * n + 2 * n   # loading takes 2n cycles
    got = np.array([outputs[first + k] for k in range(4 * n)])
    for b in range(2):
        assert (got[buffers == b] == systolic_reference(w[b], rows[buffers == b])).all()


@pytest.mark.parametrize("n", [3, 8])
def test_bubbles_keep_their_place(n):
    """Bubbles of every length between rows: each row's output is still at t + 2n, out.valid is
    low (and out.data zero) exactly in the bubbles' cycles."""
    rng = np.random.default_rng(100 + n)
    w = int8_matrix(rng, n, n)
    pattern = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1] + [0] * (2 * n + 1) + [1, 1, 0, 1]
    rows = int8_matrix(rng, len(pattern), n)
    schedule = load({1: w}) + stream([row if p else None for row, p in zip(rows, pattern)],
                                     [1] * len(pattern))
    outputs = run_array(n, schedule)
    check_times(outputs, schedule, 2 * n)
    for k, p in enumerate(pattern):
        if p:
            assert outputs[n + k + 2 * n] == systolic_reference(w, rows[k:k + 1])[0].tolist()


def expected_with_write(n, old, new_row, i_written, c, t, buffer_written, buffer, a):
    """The contract, directly: element i of the row presented in cycle t is in PE(i, j) in
    cycle t + i + j, and a write in cycle c is seen there from cycle c + 1 on."""
    result = []
    for j in range(n):
        total = 0
        for i in range(n):
            weight = old[buffer][i][j]
            if buffer == buffer_written and i == i_written and t + i + j >= c + 1:
                weight = new_row[j]
            total += int(a[i]) * int(weight)
        result.append(total)
    return result


@pytest.mark.parametrize("n", SIZES)
def test_weight_write_during_streaming_boundary(n):
    """One write of row i of buffer 0 in cycle c while rows selecting buffer 0 (and buffer 1)
    stream every cycle: in column j, the rows presented in cycle t >= c + 1 - i - j use the
    new weights, earlier rows the old ones."""
    rng = np.random.default_rng(200 + n)
    old = [int8_matrix(rng, n, n) for _ in range(2)]
    rows_count = 4 * n
    rows = int8_matrix(rng, rows_count, n)
    buffers = rng.integers(0, 2, size=rows_count)
    buffers[: 2 * n] = 0    # around the write, every row selects the written buffer
    for i_written in sorted({0, n // 2, n - 1}):
        new_row = list(rng.integers(-128, 128, size=n))
        schedule = load({0: old[0], 1: old[1]}) + stream(rows, buffers)
        start = 2 * n
        # Rows presented in cycles c + 2 - i - n .. c - i (rows n - i .. 2n - 2 - i, all on
        # buffer 0) use the old W[i][j] in some columns and the new one in others.
        c = start + 2 * n - 2
        schedule[c] = ((0, i_written, new_row), schedule[c][1])
        outputs = run_array(n, schedule)
        mixed = 0
        for k in range(rows_count):
            t = start + k
            expected = expected_with_write(n, old, new_row, i_written, c, t, 0, buffers[k],
                                           rows[k])
            assert outputs[t + 2 * n] == expected, f"row {k} (t = {t}, write in cycle {c})"
            all_old = expected_with_write(n, old, new_row, i_written, 2**30, t, 0, buffers[k],
                                          rows[k])
            all_new = expected_with_write(n, old, new_row, i_written, -(2**30), t, 0,
                                          buffers[k], rows[k])
            mixed += expected not in (all_old, all_new)
        # The boundary ran through rows in flight: some rows used old and new weights of row i
        # in different columns.
        assert mixed > 0


@pytest.mark.parametrize("n", [2, 5])
def test_boundary_for_every_pe(n):
    """For every PE (i, j), a write in cycle c of row i of buffer 1 that changes W[i][j] only,
    and a single row with a[i] = 3 (zero elsewhere): presented in cycle t = c - i - j (its
    element i is in PE(i, j) in cycle c) it uses the old weight, in t = c + 1 - i - j the new
    one, in every column."""
    c = 3 * n
    for i in range(n):
        for j in range(n):
            for t_offset in (0, 1):
                t = c + t_offset - i - j
                new_row = [1] * n
                new_row[j] = -100
                a = [0] * n
                a[i] = 3
                schedule = load({1: np.ones((n, n), dtype=int)}) + [(None, None)] * (c + 2 - n)
                schedule[c] = ((1, i, new_row), None)
                schedule[t] = (schedule[t][0], (1, a))
                expected = [3] * n
                if t_offset:
                    expected[j] = -300
                assert run_array(n, schedule) == {t + 2 * n: expected}, (i, j, t_offset)


@pytest.mark.parametrize("n", [3, 5])
def test_rows_beyond_n_write_nothing(n):
    """A row index from n up (its field has room when n is not a power of two) writes nothing."""
    bench = array_bench(n)
    dut = bench.dut
    assert len(dut.weights.row) == (n - 1).bit_length()

    async def job(ctx):
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.weights.data.as_value(), pack([5] * n, 8))
        for buffer in (0, 1):
            for row in range(n, 1 << len(dut.weights.row)):
                ctx.set(dut.weights.buffer, buffer)
                ctx.set(dut.weights.row, row)
                await ctx.tick()
        return [ctx.get(w) for line in dut.pes for pe in line for w in pe.weights]

    assert not any(bench.execute(job))


def test_long_stream_one_row_per_cycle():
    """200 rows back to back, buffers switching in runs, while buffer 1's weights are replaced
    midway by the double-buffering rule of the docstring: every output at t + 2n, one per
    cycle, equal to the numpy product with the weights the row was meant for."""
    n = 8
    rng = np.random.default_rng(8)
    w0, w1, w1_next = (int8_matrix(rng, n, n) for _ in range(3))
    count = 200
    rows = int8_matrix(rng, count, n)
    buffers = np.array([(k // 7) % 2 for k in range(count)])
    buffers[100:120] = 0      # a run on buffer 0 while buffer 1 is rewritten
    schedule = load({0: w0, 1: w1}) + stream(rows, buffers)
    start = 2 * n
    t_last = start + max(k for k in range(100) if buffers[k] == 1)
    first_write = t_last + 2 * n - 2
    for i in range(n):
        schedule[first_write + i] = ((1, i, list(w1_next[i])), schedule[first_write + i][1])
    assert first_write + n - 1 < start + 120
    outputs = run_array(n, schedule)
    check_times(outputs, schedule, 2 * n)
    got = np.array([outputs[start + k + 2 * n] for k in range(count)])
    weights = [w0 if b == 0 else (w1 if k < 100 else w1_next) for k, b in enumerate(buffers)]
    expected = np.array([systolic_reference(w, rows[k:k + 1])[0]
                         for k, w in enumerate(weights)])
    assert (got == expected).all()


@pytest.mark.parametrize("n", SIZES)
@settings(max_examples=10, deadline=None)
@given(drawn=st.data())
def test_random_writes_while_streaming_match_the_model(n, drawn):
    """Weight writes at random cycles, rows and buffers, during a random stream: RTL and model
    agree cycle by cycle (run_array checks every cycle)."""
    seed = drawn.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    count = 5 * n
    schedule = []
    for k in range(count):
        weights = None
        if rng.random() < 0.4:
            weights = (int(rng.integers(2)), int(rng.integers(n)),
                       list(rng.integers(-128, 128, size=n)), bool(rng.integers(2)))
        act = None
        if rng.random() < 0.8:
            act = (int(rng.integers(2)), list(rng.integers(-128, 128, size=n)))
        schedule.append((weights, act))
    outputs = run_array(n, schedule)
    check_times(outputs, schedule, 2 * n)


@pytest.mark.parametrize("n", [3, 8])
def test_transposed_load_gives_q_times_k_transposed(n):
    """Writing the rows of K as columns loads K^T: streaming the rows of Q then gives
    Q x K^T, attention's scores, with K as the array produced it (one key per row)."""
    rng = np.random.default_rng(n)
    k, q = int8_matrix(rng, n, n), int8_matrix(rng, 2 * n, n)
    schedule = [((0, key, list(k[key]), True), None) for key in range(n)]
    schedule += stream(q, [0] * len(q))
    outputs = run_array(n, schedule)
    assert [outputs[t] for t in sorted(outputs)] == (q @ k.T).tolist()


# Verilog --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def array_verilog():
    return hdl.verilog(SystolicArray(8), "systolic")


def test_verilog_ports(array_verilog):
    header = re.search(r"^module systolic\((.*?)\);", array_verilog, re.M | re.S).group(1)
    assert sorted(p.strip() for p in header.split(",")) == sorted([
        "clk", "rst", "weights__valid", "weights__buffer", "weights__transpose", "weights__row",
        "weights__data",
        "act__valid", "act__buffer", "act__data", "out__valid", "out__data"])
    for direction, width, name in [("input", 3, "weights__row"), ("input", 64, "weights__data"),
                                   ("input", 64, "act__data"), ("output", 256, "out__data")]:
        assert re.search(rf"^\s*{direction} \[{width - 1}:0\] {name};", array_verilog, re.M)


def test_verilog_lints_clean(array_verilog, tmp_path):
    """Verilator's lint finds no error, and no warning beyond the implicit width extensions and
    truncations Amaranth's Verilog always has (the router and mesh have them too)."""
    assert lint_warnings(array_verilog, "systolic", tmp_path) <= AMARANTH_WARNINGS

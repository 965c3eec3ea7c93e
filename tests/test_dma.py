"""The prefill engine's DMA engine and DRAM channel (hdl/dma.py) against the channel rule: the
configuration, the closed-form timing of a lone transfer (emulator/dma.py) against hand-computed
examples and the cycle model, and the RTL (DmaEngine + DramModel + SBUF/PSUM memories in a test
wrapper) against the cycle model, cycle by cycle, in the Amaranth simulator.

Cycle 0 is the first clock cycle after reset. Within a cycle the test bench sets the command
inputs, reads the outputs, steps the model with the same offered transfer, compares, then awaits
the clock edge. One simulator serves each design (a configuration with fixed initial memory
contents): every case resets it (memories included) and runs a new test bench job.
"""


import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import hdl
from emulator.dma import (DmaModel, Transfer, check_transfer, stream_bound, transfer_cycles)
from hdl.dma import DmaEngine, DramModel, DramRequest, DramResponse
from mesh.config import ConfigError
from mesh.prefill import DmaError, DmaKind, PrefillConfig

from sim_bench import RTL_TEST_MARKS, Bench, kept
from verilator_lint import AMARANTH_WARNINGS, lint_warnings

pytestmark = RTL_TEST_MARKS

LOAD, STORE_SBUF, STORE_PSUM = DmaKind.LOAD, DmaKind.STORE_SBUF, DmaKind.STORE_PSUM


def small(**kwargs):
    base = dict(n=4, sbuf_rows=64, psum_rows=16, dram_bytes=1024, dram_bandwidth=4,
                dram_latency=3, dma_queue=4)
    base.update(kwargs)
    return PrefillConfig(**base)


# Configuration -------------------------------------------------------------------------------

def test_config_defaults():
    config = PrefillConfig()
    assert (config.n, config.sbuf_rows, config.psum_rows, config.dram_bytes,
            config.dram_bandwidth, config.dram_latency, config.dma_queue) == (
        8, 4096, 1024, 1 << 20, 8, 40, 64)
    assert (config.sbuf_row_bytes, config.psum_row_bytes) == (8, 32)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 1}, "n must be from 2 to 32, not 1"),
    ({"n": 33}, "n must be from 2 to 32, not 33"),
    ({"n": 8.0}, "n must be an integer, not 8.0"),
    ({"sbuf_rows": 15}, "sbuf_rows must be from 16 to 65536, not 15"),
    ({"psum_rows": 65537}, "psum_rows must be from 16 to 65536, not 65537"),
    ({"dram_bytes": 512}, "dram_bytes must be from 1024 to 67108864, not 512"),
    ({"dram_bytes": 3000}, "dram_bytes must be a power of two, not 3000"),
    ({"dram_bytes": 1 << 27}, "dram_bytes must be from 1024 to 67108864, not 134217728"),
    ({"dram_bandwidth": 0}, "dram_bandwidth must be from 1 to 128, not 0"),
    ({"dram_bandwidth": 129}, "dram_bandwidth must be from 1 to 128, not 129"),
    ({"dram_latency": -1}, "dram_latency must be from 0 to 1024, not -1"),
    ({"dram_latency": True}, "dram_latency must be an integer, not True"),
    ({"dma_queue": 0}, "dma_queue must be from 1 to 64, not 0"),
    ({"dma_queue": 65}, "dma_queue must be from 1 to 64, not 65"),
])
def test_config_is_checked(kwargs, message):
    with pytest.raises(ConfigError) as info:
        PrefillConfig(**kwargs)
    assert str(info.value) == message


def test_config_extremes_are_valid():
    PrefillConfig(n=2, sbuf_rows=16, psum_rows=16, dram_bytes=1024, dram_bandwidth=1,
                  dram_latency=0, dma_queue=1)
    PrefillConfig(n=32, sbuf_rows=65536, psum_rows=65536, dram_bytes=1 << 26,
                  dram_bandwidth=128, dram_latency=1024, dma_queue=64)


# Closed form ---------------------------------------------------------------------------------

def test_closed_form_hand_example():
    """n = 8, bandwidth 3, latency 5, rows issued in cycles 2, 3, 4, 5. Row 0 starts in 7 with
    b = 0: b = 3, 6, 9 -> completes in 9, b = 1. Row 1 (started since 8) continues in 10:
    b = 4, 7, 10 -> 12, b = 2. Row 2: 5, 8 -> 14, b = 0. Row 3: 3, 6, 9 -> 17. 32 bytes in the 11
    cycles 7..17 = stream_bound(32, 3)."""
    config = PrefillConfig(n=8, dram_bandwidth=3, dram_latency=5)
    assert transfer_cycles(config, 4, 8, 0) == [9, 12, 14, 17]
    assert 17 - 7 + 1 == stream_bound(32, 3) == 11


def test_closed_form_cap_and_gaps():
    # Bandwidth 16 over rows of 4 bytes, latency 0: row 0 issued in cycle 2 completes in 2, then
    # one row per cycle (the credit is capped at 15; without the cap it would grow by 12 a row).
    config = PrefillConfig(n=4, dram_bandwidth=16, dram_latency=0)
    assert transfer_cycles(config, 3, 4, 0) == [2, 3, 4]
    # Queue of 1, latency 2, rows of 16 at 16 a cycle, accepted in 10: row 0 issued in 12,
    # completes in 14; row 1 may issue in 15 (slot free), completes in 17; row 2: 18 -> 20.
    config = PrefillConfig(n=4, dram_bandwidth=16, dram_latency=2, dma_queue=1)
    assert transfer_cycles(config, 3, 16, 10) == [14, 17, 20]
    # Bandwidth 5, rows of 8, latency 1, accepted in 10 (issued 12, 13, 14): row 0 starts in 13,
    # b = 5, 10 -> 14 (b = 2); row 1 started, b = 7, 12 -> 16 (b = 4); row 2: 9 -> 17 (b = 1).
    config = PrefillConfig(n=8, dram_bandwidth=5, dram_latency=1)
    assert transfer_cycles(config, 3, 8, 10) == [14, 16, 17]


def test_stream_bound():
    assert [stream_bound(b, w) for b, w in [(32, 3), (32, 8), (1, 128), (0, 5)]] == [11, 4, 1, 0]


@pytest.mark.parametrize("n, bandwidth, latency, queue, kind", [
    (8, 3, 5, 8, LOAD), (4, 1, 0, 1, STORE_SBUF), (4, 16, 0, 2, STORE_PSUM),
    (5, 7, 20, 3, STORE_PSUM), (3, 6, 2, 64, LOAD), (8, 128, 40, 8, STORE_SBUF),
    (2, 2, 1024, 4, LOAD), (32, 100, 9, 5, STORE_PSUM),
])
def test_closed_form_matches_the_model(n, bandwidth, latency, queue, kind):
    config = PrefillConfig(n=n, sbuf_rows=64, psum_rows=64, dram_bytes=1 << 16,
                           dram_bandwidth=bandwidth, dram_latency=latency, dma_queue=queue)
    row_bytes = 4 * n if kind == STORE_PSUM else n
    rows = 37
    model = DmaModel(config)
    for _ in range(3):
        model.step()
    start = model.cycle
    steps = model.run([Transfer(kind, 5, 0, row_bytes + 1, 1, rows)])
    completions = [start + k for k, step in enumerate(steps) if step.completed]
    assert completions == transfer_cycles(config, rows, row_bytes, start)
    assert steps[-1].busy and not model.busy and model.done_tags == 1 << 5


def test_long_stream_reaches_the_bandwidth_bound():
    """With enough queue to cover the latency, 4096 rows stream within one latency (plus the
    two pipeline cycles) of bytes / bandwidth."""
    for bandwidth, n in [(8, 8), (5, 8), (3, 4)]:
        config = PrefillConfig(n=n, sbuf_rows=4096, dram_bandwidth=bandwidth, dram_latency=40,
                               dma_queue=64)
        done = transfer_cycles(config, 4096, n, 0)
        bound = stream_bound(4096 * n, bandwidth)
        assert bound <= done[-1] + 1 <= bound + 40 + 2
    # With a small queue the latency dominates: 8 rows per 41 cycles.
    config = PrefillConfig(n=8, sbuf_rows=4096, dram_bandwidth=8, dram_latency=40, dma_queue=8)
    assert transfer_cycles(config, 4096, 8, 0)[-1] > 4096 * 41 // 8


def test_check_transfer_causes():
    config = small()
    assert check_transfer(config, Transfer(LOAD, 0, 0, 4, 0, 64)) == DmaError.NONE
    assert check_transfer(config, Transfer(3, 0, 0, 4, 0, 1)) == DmaError.KIND
    assert check_transfer(config, Transfer(LOAD, 0, 0, 4, 0, 0)) == DmaError.ROWS
    assert check_transfer(config, Transfer(LOAD, 0, 0, 4, 60, 5)) == DmaError.ROWS
    assert check_transfer(config, Transfer(STORE_PSUM, 0, 0, 16, 8, 9)) == DmaError.ROWS
    assert check_transfer(config, Transfer(STORE_SBUF, 0, 1020, 0, 8, 9)) == DmaError.NONE
    assert check_transfer(config, Transfer(STORE_SBUF, 0, 1021, 0, 8, 9)) == DmaError.DRAM
    assert check_transfer(config, Transfer(STORE_PSUM, 0, 0, 101, 0, 11)) == DmaError.DRAM
    assert check_transfer(config, Transfer(STORE_PSUM, 0, 0, 100, 0, 11)) == DmaError.NONE


# Construction --------------------------------------------------------------------------------

def test_engine_members():
    config = small()
    dma = DmaEngine(config)
    members = dma.signature.members
    assert {name: m.flow for name, m in members.items()} == {
        "cmd": In, "req": Out, "resp": In, "sbuf_read": Out, "psum_read": Out,
        "sbuf_write": Out, "done_tags": Out, "busy": Out, "error": Out, "error_cause": Out}
    assert dma.row_bits == 7 and dma.meta_bits == 4 + 1 + 7
    assert members["req"].signature.members == DramRequest(config, dma.meta_bits).members
    assert members["resp"].signature.members == DramResponse(config, dma.meta_bits).flip().members
    # The members of the In(...) command port as the engine sees them.
    assert {name: (m.flow, m.shape) for name, m in members["cmd"].signature.members.items()} \
        == {"valid": (In, 1), "ready": (Out, 1), "kind": (In, 2), "tag": (In, 4),
            "dram": (In, 32), "stride": (In, 32), "row": (In, 7), "rows": (In, 7)}


def test_dram_members_and_banks():
    config = small(n=5)
    dram = DramModel(config, bytes(range(200)), meta_bits=3)
    assert {name: m.flow for name, m in dram.signature.members.items()} == {
        "req": In, "resp": Out, "error": Out}
    assert dram.word_bytes == 32 and [b.depth for b in dram.banks] == [16, 16]
    assert dram.banks[1].data.init[0] == int.from_bytes(bytes(range(32, 64)), "little")


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="config must be a PrefillConfig, not 4"):
        DmaEngine(4)
    with pytest.raises(TypeError, match="config must be a PrefillConfig"):
        DramModel(None)
    with pytest.raises(ValueError, match="meta_bits must be an integer from 0 to 64, not 65"):
        DramModel(small(), meta_bits=65)
    with pytest.raises(ValueError, match="contents must hold at most 1024 bytes, not 1025"):
        DramModel(small(), bytes(1025))
    with pytest.raises(ValueError, match="dram must hold at most 1024 bytes, not 2048"):
        DmaModel(small(), dram=bytes(2048))


# The RTL against the model -------------------------------------------------------------------

class DmaSystem(wiring.Component):
    """DmaEngine + DramModel + an SBUF and a PSUM memory (synchronous read ports)."""

    def __init__(self, config, dram=None, sbuf=None, psum=None):
        n = config.n
        self.config = config
        self.dma = DmaEngine(config)
        self.dram = DramModel(config, dram, meta_bits=self.dma.meta_bits)
        sbuf_init = [] if sbuf is None else [int.from_bytes(bytes(r), "little") for r in sbuf]
        psum_init = [] if psum is None else [
            int.from_bytes(np.asarray(r, dtype="<i4").tobytes(), "little") for r in psum]
        self.sbuf = Memory(shape=8 * n, depth=config.sbuf_rows, init=sbuf_init)
        self.psum = Memory(shape=32 * n, depth=config.psum_rows, init=psum_init)
        self._sbuf_read = self.sbuf.read_port()
        self._sbuf_write = self.sbuf.write_port()
        self._psum_read = self.psum.read_port()
        super().__init__({
            "cmd": In(self.dma.signature.members["cmd"].signature.flip()),
            "done_tags": Out(16), "busy": Out(1), "error": Out(1), "error_cause": Out(2),
            "dram_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.dram = self.dma, self.dram
        m.submodules.sbuf, m.submodules.psum = self.sbuf, self.psum
        dma = self.dma
        wiring.connect(m, wiring.flipped(self.cmd), dma.cmd)
        wiring.connect(m, dma.req, self.dram.req)
        wiring.connect(m, self.dram.resp, dma.resp)
        for port, bus in ((self._sbuf_read, dma.sbuf_read), (self._psum_read, dma.psum_read)):
            m.d.comb += [port.addr.eq(bus.addr), port.en.eq(bus.en), bus.data.eq(port.data)]
        m.d.comb += [
            self._sbuf_write.addr.eq(dma.sbuf_write.addr),
            self._sbuf_write.data.eq(dma.sbuf_write.data),
            self._sbuf_write.en.eq(dma.sbuf_write.en),
            self.done_tags.eq(dma.done_tags), self.busy.eq(dma.busy), self.error.eq(dma.error),
            self.error_cause.eq(dma.error_cause), self.dram_error.eq(self.dram.error),
        ]
        return m


def contents(config, seed):
    rng = np.random.default_rng(seed)
    dram = rng.integers(0, 256, size=config.dram_bytes, dtype=np.uint8).tobytes()
    sbuf = rng.integers(0, 256, size=(config.sbuf_rows, config.n), dtype=np.uint8)
    psum = rng.integers(-2**31, 2**31, size=(config.psum_rows, config.n), dtype=np.int64)
    return dram, sbuf, psum.astype(np.int32)


def system_bench(config):
    def make():
        dram, sbuf, psum = contents(config, 1)
        return Bench(DmaSystem(config, dram, sbuf, psum)), (dram, sbuf, psum)
    return kept(config, make)


def run_system(config, schedule, drain=True, limit=20000):
    """Offer ``schedule`` on the command port, entry by entry: ``(gap, transfer, after)`` waits
    ``gap`` idle cycles, then until ``done_tags`` has every tag in ``after`` (a tuple), then
    offers ``transfer`` until accepted. Then (``drain``) runs until the engine is idle. Every
    cycle, the RTL's outputs and events must equal the model's. Returns (model, cycles run, final
    DRAM bytes and SBUF rows of the RTL). The request ``meta`` is {tag: 4, last: 1, row}."""
    bench, (dram, sbuf, psum) = system_bench(config)
    dut = bench.dut
    dma, n = dut.dma, config.n
    model = DmaModel(config, dram, sbuf, psum)

    async def job(ctx):
        entries = list(schedule)
        gap = entries[0][0] if entries else 0
        for cycle in range(limit):
            offer = None
            if entries:
                _, transfer, after = entries[0]
                tags = ctx.get(dut.done_tags)
                if gap <= 0 and all(tags >> t & 1 for t in after):
                    offer = transfer
            ctx.set(dut.cmd.valid, offer is not None)
            if offer is not None:
                kind, tag, addr, stride, row, rows = offer
                ctx.set(dut.cmd.kind, int(kind))
                ctx.set(dut.cmd.tag, tag)
                ctx.set(dut.cmd.dram, addr)
                ctx.set(dut.cmd.stride, stride)
                ctx.set(dut.cmd.row, row)
                ctx.set(dut.cmd.rows, rows)
            step = model.step(offer)
            got = {
                "ready": ctx.get(dut.cmd.ready), "done_tags": ctx.get(dut.done_tags),
                "busy": ctx.get(dut.busy), "error": ctx.get(dut.error),
                "error_cause": ctx.get(dut.error_cause),
            }
            want = {"ready": int(step.ready), "done_tags": step.done_tags,
                    "busy": int(step.busy), "error": int(step.error),
                    "error_cause": int(step.error_cause)}
            assert got == want, f"cycle {cycle}"
            fired = ctx.get(dma.req.valid) and ctx.get(dma.req.ready)
            issued = None
            if fired:
                issued = (ctx.get(dma.req.write), ctx.get(dma.req.addr), ctx.get(dma.req.count))
            want_issued = None if step.issued is None else (
                int(step.issued.write), step.issued.addr, step.issued.count)
            assert issued == want_issued, f"cycle {cycle}: issued"
            if step.issued is not None and step.issued.write:
                raw = ctx.get(dma.req.data)
                assert raw.to_bytes(4 * n, "little")[:step.issued.count] == step.issued.data, \
                    f"cycle {cycle}: write data"
            completed = None
            if ctx.get(dma.resp.valid):
                meta = ctx.get(dma.resp.meta)
                completed = (ctx.get(dma.resp.write), meta & 15, meta >> 4 & 1, meta >> 5)
            want_completed = None if step.completed is None else (
                int(step.completed.write), step.completed.tag, int(step.completed.last),
                step.completed.row)
            assert completed == want_completed, f"cycle {cycle}: completion"
            write = None
            if ctx.get(dma.sbuf_write.en):
                write = (ctx.get(dma.sbuf_write.addr),
                         ctx.get(dma.sbuf_write.data).to_bytes(n, "little"))
            assert write == step.sbuf_write, f"cycle {cycle}: SBUF write"
            assert not ctx.get(dut.dram_error)
            if step.accepted:
                entries.pop(0)
                gap = entries[0][0] if entries else 0
            elif offer is None:
                gap -= 1
            await ctx.tick()
            if not entries and (not drain or not model.busy):
                break
        else:
            raise AssertionError(f"not done after {limit} cycles")
        W = dut.dram.word_bytes
        words = [ctx.get(dut.dram.banks[i % 2].data[i // 2])
                 for i in range(config.dram_bytes // W)]
        dram_now = b"".join(w.to_bytes(W, "little") for w in words)
        sbuf_now = np.array([list(ctx.get(dut.sbuf.data[r]).to_bytes(n, "little"))
                             for r in range(config.sbuf_rows)], dtype=np.uint8)
        return dram_now, sbuf_now

    dram_now, sbuf_now = bench.execute(job)
    assert dram_now == bytes(model.dram)
    assert np.array_equal(sbuf_now, model.sbuf)
    return model, model.cycle, dram_now, sbuf_now


def random_transfer(config, rng, invalid=0.0):
    n = config.n
    if rng.random() < invalid:
        choice = rng.integers(3)
        if choice == 0:
            return Transfer(3, int(rng.integers(16)), 0, n, 0, 1)
        if choice == 1:
            return Transfer(LOAD, int(rng.integers(16)), 0, n, config.sbuf_rows - 1, 2)
        return Transfer(STORE_SBUF, int(rng.integers(16)), config.dram_bytes - n + 1, 0, 0, 1)
    kind = DmaKind(int(rng.integers(3)))
    row_bytes = 4 * n if kind == STORE_PSUM else n
    local = config.psum_rows if kind == STORE_PSUM else config.sbuf_rows
    rows = int(rng.integers(1, 7))
    row = int(rng.integers(0, local - rows + 1))
    stride = int(rng.choice([row_bytes, 2 * row_bytes, 0, int(rng.integers(1, 3 * row_bytes))]))
    top = config.dram_bytes - (rows - 1) * stride - row_bytes
    addr = int(rng.integers(0, top + 1))
    return Transfer(kind, int(rng.integers(4)), addr, stride, row, rows)


RTL_CONFIGS = [
    small(n=4, dram_bandwidth=1, dram_latency=0, dma_queue=4),
    small(n=4, dram_bandwidth=3, dram_latency=5, dma_queue=8),
    small(n=4, dram_bandwidth=8, dram_latency=20, dma_queue=6),
    small(n=3, dram_bandwidth=2, dram_latency=1, dma_queue=1),
    small(n=5, dram_bandwidth=10, dram_latency=7, dma_queue=3),
    small(n=4, dram_bandwidth=4, dram_latency=0, dma_queue=2),
    small(n=2, dram_bandwidth=16, dram_latency=13, dma_queue=5),
]


@pytest.mark.parametrize("config", RTL_CONFIGS,
                         ids=[f"n{c.n}-bw{c.dram_bandwidth}-L{c.dram_latency}-q{c.dma_queue}"
                              for c in RTL_CONFIGS])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_transfers_match_the_model(config, seed):
    """Random valid transfers of every kind (strides 0, row size, twice it, or odd; tags 0..3,
    so tags are reused while in flight), offered back to back or after 1 or 3 idle cycles; with
    seed 1, a tenth of them are refused."""
    rng = np.random.default_rng([seed, config.dram_bandwidth, config.dram_latency])
    schedule = [(int(rng.choice([0, 0, 1, 3])), random_transfer(config, rng, 0.1 * seed), ())
                for _ in range(30)]
    model, cycles, _, _ = run_system(config, schedule)
    assert model.error == any(check_transfer(config, t) for _, t, _ in schedule)


def test_back_to_back_transfers_follow_immediately():
    config = RTL_CONFIGS[1]
    transfers = [Transfer(LOAD, 1, 0, 4, 0, 3), Transfer(STORE_SBUF, 2, 512, 4, 10, 2),
                 Transfer(STORE_PSUM, 3, 640, 16, 2, 2)]
    model = DmaModel(config)
    steps = model.run(transfers)
    issue_cycles = [k for k, s in enumerate(steps) if s.issued]
    assert issue_cycles == list(range(2, 9))
    run_system(config, [(0, t, ()) for t in transfers])


def test_long_stream_in_rtl():
    """A 120-row load with bandwidth 3 (rows of 4 bytes), latency 20 and a queue covering it:
    total time within one latency (and the two pipeline cycles) of bytes / bandwidth, and as
    the closed form says."""
    config = PrefillConfig(n=4, sbuf_rows=128, psum_rows=16, dram_bytes=1024, dram_bandwidth=3,
                           dram_latency=20, dma_queue=24)
    model, _, _, _ = run_system(config, [(0, Transfer(LOAD, 9, 7, 4, 3, 120), ())])
    done = transfer_cycles(config, 120, 4, 0)
    assert model.cycle == done[-1] + 1   # the run stops once the last row has completed
    assert stream_bound(480, 3) <= done[-1] + 1 <= stream_bound(480, 3) + 20 + 2


def test_loads_then_stores_round_trip():
    """Load rows from DRAM into SBUF, wait for the tag, store them elsewhere (with another
    stride): the stored bytes are the loaded ones, bit-exactly."""
    config = RTL_CONFIGS[2]
    schedule = [(0, Transfer(LOAD, 1, 100, 7, 20, 6), ()),
                (0, Transfer(LOAD, 2, 3, 4, 30, 5), ()),
                (0, Transfer(STORE_SBUF, 3, 600, 4, 20, 6), (1,)),
                (0, Transfer(STORE_SBUF, 4, 700, 9, 30, 5), (2,))]
    model, _, dram_now, _ = run_system(config, schedule)
    dram0, _, _ = system_bench(config)[1]
    for k in range(6):
        assert dram_now[600 + 4 * k:604 + 4 * k] == dram0[100 + 7 * k:104 + 7 * k]
    for k in range(5):
        assert dram_now[700 + 9 * k:704 + 9 * k] == dram0[3 + 4 * k:7 + 4 * k]
    assert model.done_tags == 0b11110


def test_psum_stores_int32_rows():
    config = RTL_CONFIGS[4]
    _, _, psum = system_bench(config)[1]
    model, _, dram_now, _ = run_system(config, [(0, Transfer(STORE_PSUM, 0, 33, 21, 4, 5), ())])
    for k in range(5):
        stored = np.frombuffer(dram_now[33 + 21 * k:33 + 21 * k + 20], dtype="<i4")
        assert stored.tolist() == psum[4 + k].tolist()


@pytest.mark.parametrize("transfer, cause", [
    (Transfer(3, 1, 0, 4, 0, 1), DmaError.KIND),
    (Transfer(LOAD, 1, 0, 4, 0, 0), DmaError.ROWS),
    (Transfer(LOAD, 1, 0, 4, 62, 3), DmaError.ROWS),
    (Transfer(STORE_PSUM, 1, 0, 16, 15, 2), DmaError.ROWS),
    (Transfer(STORE_SBUF, 1, 1000, 8, 0, 4), DmaError.DRAM),
    (Transfer(STORE_PSUM, 1, 1009, 0, 0, 1), DmaError.DRAM),
])
def test_out_of_range_transfers_are_refused(transfer, cause):
    """The bad transfer is refused with its cause, sticky: a later valid transfer runs, and a
    later bad one with another cause keeps the first cause."""
    config = RTL_CONFIGS[0]
    later_bad = Transfer(3, 2, 0, 4, 0, 1) if cause != DmaError.KIND else \
        Transfer(LOAD, 2, 0, 4, 0, 0)
    schedule = [(0, Transfer(LOAD, 5, 0, 4, 0, 2), ()), (0, transfer, ()),
                (0, Transfer(STORE_SBUF, 6, 200, 4, 0, 2), ()), (0, later_bad, ())]
    model, _, _, _ = run_system(config, schedule)
    assert model.error and model.error_cause == cause
    assert model.done_tags == (1 << 5) | (1 << 6)


def test_reused_tag_waits_for_the_latest_transfer():
    """Two transfers on tag 7: the bit is set only once the second completes."""
    config = RTL_CONFIGS[2]
    model = DmaModel(config)
    steps = model.run([Transfer(LOAD, 7, 0, 4, 0, 1), Transfer(LOAD, 7, 40, 4, 8, 3)])
    last = [k for k, s in enumerate(steps) if s.completed and s.completed.last]
    assert len(last) == 2
    assert all(not s.done_tags >> 7 & 1 for s in steps)
    assert model.done_tags == 1 << 7
    run_system(config, [(0, Transfer(LOAD, 7, 0, 4, 0, 1), ()),
                        (0, Transfer(LOAD, 7, 40, 4, 8, 3), ())])


# Verilog -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def system_verilog():
    return hdl.verilog(DmaSystem(small()), "dma_system")


def test_verilog_lints_clean(system_verilog, tmp_path):
    """Verilator's lint finds no error, and no warning beyond the implicit width extensions and
    truncations Amaranth's Verilog always has."""
    assert lint_warnings(system_verilog, "dma_system", tmp_path) <= AMARANTH_WARNINGS

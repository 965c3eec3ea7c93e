"""The system top (docs/ARCHITECTURE.md section 13): ``hdl.channel.LaneChannel`` in lockstep with
``emulator.channel.Channel`` without faults; ``hdl.system.SystemTop`` in the Amaranth simulator
and standalone in Verilator (``wafer.verilator_system``) against ``emulator.system.run_system``
on small synthetic images: a GEMM on the engine whose result, stored in DRAM, is the message
that the link carries and the delivery engine spreads over the mesh (2x2 in the Amaranth
simulator; in Verilator the 4x4 system of the transformer's run, so that one build serves
both), whose cores keep their words, add two of them and halt. Every handoff cycle, the mesh's SRAMs and counters, the link
counters and the DRAM are equal; failures (an engine error, a mesh that never finishes, a
trap) stop both in the same cycle. Validation of the image and of the constructors.
"""

import random
from dataclasses import replace

import numpy as np
import pytest
from emulator.channel import Channel
from emulator.mesh_delivery import DeliveryCommand
from emulator.system import SystemImage, run_system
from hdl.channel import LaneChannel, channel_depth
from hdl.system import SystemTop, system_verilog
from mesh import MeshConfig
from mesh.builder import CoreBuilder, MeshBuilder
from mesh.link import LinkConfig
from mesh.prefill import Command, DmaKind, EngineError, Op, PrefillConfig
from mesh.system import SystemCause
from programs.delivery import Region, delivery_routes, receive_code
from programs.prefill_compiler import DEFAULT_CONFIG
from wafer.system_sim import run_system_amaranth

from sim_bench import RTL_TEST_MARKS, Bench
from verilator_lint import AMARANTH_WARNINGS, lint_warnings

pytestmark = RTL_TEST_MARKS

PREFILL = PrefillConfig(n=2, sbuf_rows=16, psum_rows=16, dram_bytes=1024, dram_bandwidth=4,
                        dram_latency=3, dma_queue=4, commands=16)
LINK = LinkConfig(lanes=2, latency=5, max_payload=4, window=4, nack_gap=2, buffer_words=64,
                  source_words=64)
MESH = MeshConfig(2, 2, colors=4, sram_words=256, imem_words=64)
ROWS = 4            # rows of A: the GEMM is (ROWS x n) x (n x n)
OUT = 132           # the DRAM byte address of the result (not a multiple of the DRAM word)
RESULT = 40         # the SRAM word where each core stores the sum of its first two words


def gemm_commands(n, rows, out):
    """Load A (rows x n, DRAM 0) and B (n x n, DRAM 64), C = A x B, store C's PSUM rows at
    DRAM ``out``: ``rows`` x n int32 words, the message."""
    return [Command(Op.DMA, sub=int(DmaKind.LOAD), tag=0, addr=0, stride=n, a=0, count=rows),
            Command(Op.DMA, sub=int(DmaKind.LOAD), tag=1, addr=64, stride=n, a=rows, count=n),
            Command(Op.WAIT, tag=0), Command(Op.WAIT, tag=1),
            Command(Op.WEIGHTS, buffer=0, a=rows, count=n),
            Command(Op.MATMUL, buffer=0, a=0, b=0, count=rows),
            Command(Op.DMA, sub=int(DmaKind.STORE_PSUM), tag=2, addr=out, stride=4 * n, a=0,
                    count=rows),
            Command(Op.WAIT, tag=2), Command(Op.HALT)]


def receive_and_add(config, per_tile, color, extra=()):
    """Every core keeps its ``per_tile`` words at SRAM 0, stores the sum of the first two at
    :data:`RESULT` and halts (``extra``: instructions (name, operands) before the halt)."""
    region = Region(0, 0, config.width, config.height)
    mb = MeshBuilder(config, "receive-and-add")
    delivery_routes(config, region, color, table=mb.routes)
    core = CoreBuilder("receive_and_add")
    receive_code(core, region, color, per_tile, 0)
    core.ld(1, 0, 0)
    core.ld(2, 1, 0)
    core.add(1, 1, 2)
    core.st(1, RESULT, 0)
    for name, operands in extra:
        getattr(core, name)(*operands)
    core.halt()
    mb.place(core, region.tiles())
    return mb.build()


def gemm_image(prefill=PREFILL, link=LINK, mesh=MESH, seed=1, commands=None, extra=()):
    """(image, the message the GEMM must produce as uint32 words)."""
    n = prefill.n
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (ROWS, n)).astype(np.int8)
    b = rng.integers(-128, 128, (n, n)).astype(np.int8)
    dram = bytearray(128)
    dram[0:ROWS * n] = a.tobytes()
    dram[64:64 + n * n] = b.tobytes()
    words = ROWS * n
    per_tile = words // mesh.tiles
    color = mesh.colors - 1
    image = SystemImage(prefill, commands or gemm_commands(n, ROWS, OUT), bytes(dram), link,
                        OUT, words, DeliveryCommand(0, 0, mesh.width, mesh.height, per_tile, 0,
                                                    color),
                        receive_and_add(mesh, per_tile, color, extra))
    product = (a.astype(np.int64) @ b.astype(np.int64)).reshape(-1).astype(np.uint32)
    return image, product


def check_landed(result, product, mesh=MESH):
    """The GEMM's result is in the mesh: each tile's words at SRAM 0 and their sum."""
    per_tile = product.size // mesh.tiles
    for t in range(mesh.tiles):
        mine = product[t * per_tile:(t + 1) * per_tile]
        assert result.mesh.sram[t, :per_tile].tolist() == mine.tolist()
        assert result.mesh.sram[t, RESULT] == (int(mine[0]) + int(mine[1])) & 0xFFFFFFFF


# The channel ------------------------------------------------------------------------------------

def lane_traffic(config, seed, packets):
    """Per cycle (valid, word, last) of a lane whose end sends ``packets`` packets of 5 to
    max_packet_words words at random gaps, one word every r cycles as the link's ends do."""
    rng = random.Random(seed)
    r = config.word_cycles
    stream = []
    for _ in range(packets):
        stream += [(0, 0, 0)] * rng.choice([0, 0, 1, 3, 17])
        size = rng.choice([5, 6, config.max_packet_words, rng.randint(5, config.max_packet_words)])
        for j in range(size):
            stream.append((1, rng.getrandbits(32), int(j == size - 1)))
            stream += [(0, 0, 0)] * (r - 1)
    return stream


@pytest.mark.parametrize("config", [
    LinkConfig(lanes=1, latency=3, max_payload=8, window=4, nack_gap=2),
    LinkConfig(lanes=1, lane_width=16, latency=1, max_payload=4, window=4, nack_gap=2),
    LinkConfig(lanes=1, lane_width=8, latency=9, max_payload=3, window=4, nack_gap=2),
], ids=["r1", "r2", "r4"])
def test_lane_channel_equals_the_fault_free_channel(config):
    channel = LaneChannel(config)
    stream = lane_traffic(config, seed=config.word_cycles, packets=40)
    model = Channel(config)
    expected = [model.step(*word) for word in stream]
    expected += [model.step() for _ in range(config.latency + 4 * config.max_packet_words
                                             * config.word_cycles)]

    async def job(ctx):
        seen = []
        for cycle in range(len(expected)):
            valid, word, last = stream[cycle] if cycle < len(stream) else (0, 0, 0)
            ctx.set(channel.input.valid, valid)
            ctx.set(channel.input.data, word)
            ctx.set(channel.input.last, last)
            seen.append((ctx.get(channel.output.valid), ctx.get(channel.output.data),
                         ctx.get(channel.output.last)))
            await ctx.tick()
        assert not ctx.get(channel.overflow)
        return seen

    seen = Bench(channel).execute(job)
    assert model.packets_out == model.packets_in == 40
    assert seen == expected


def test_channel_depth_covers_latency_and_two_packets():
    config = LinkConfig(latency=20)
    assert channel_depth(config) == 512 >= 20 + 2 * config.max_packet_words
    with pytest.raises(TypeError, match="LinkConfig"):
        channel_depth(MESH)


# The system on the emulator ---------------------------------------------------------------------

def test_emulated_system_runs_the_phases_in_order():
    image, product = gemm_image()
    result = run_system(image)
    assert result.status == "done" and result.error_cause == SystemCause.NONE
    e = result.events
    # Handoffs of section 13: each phase starts the cycle after the previous one's end is seen.
    assert e["stage_start"] == e["prefill_end"] + 1
    stage = -(-image.message_words // 2) + 1         # W = 8 bytes at n = 2: 2 words a cycle
    assert e["link_start"] == e["stage_start"] + stage
    assert e["mesh_start"] == e["rx_done"] + 1
    assert e["mesh_start"] < e["delivery_done"] < e["end"] == result.cycles
    assert e["tx_done"] is not None and result.link["accepted"] == 2
    assert result.mesh.cycles == e["end"] - e["mesh_start"]
    assert result.phase_cycles == {"prefill": e["prefill_end"], "stage": stage,
                                   "link": e["mesh_start"] - e["link_start"],
                                   "mesh": result.mesh.cycles}
    check_landed(result, product)
    assert result.dram[OUT:OUT + 4 * product.size] == product.astype("<u4").tobytes()


# The system in the Amaranth simulator -----------------------------------------------------------

def test_system_top_in_amaranth_equals_the_emulator():
    image, product = gemm_image()
    rtl = run_system_amaranth(image)
    emulated = run_system(image)
    assert rtl.status == "done"
    assert rtl.same_as(emulated) == []
    check_landed(rtl, product)


def test_system_top_engine_error_stops_both_in_the_same_cycle():
    commands = gemm_commands(PREFILL.n, ROWS, OUT)
    commands[4] = Command(Op.WEIGHTS, buffer=0, a=ROWS, count=PREFILL.n + 1)   # k above n
    image, _ = gemm_image(commands=commands)
    rtl = run_system_amaranth(image)
    emulated = run_system(image)
    assert rtl.status == "error" and rtl.error_cause == SystemCause.ENGINE
    assert rtl.engine_error == EngineError.WEIGHTS_COUNT and rtl.engine_error_index == 4
    assert rtl.same_as(emulated) == []


# The system standalone in Verilator -------------------------------------------------------------

# The configuration of the transformer's system (tests/test_system.py runs the transformer on
# it): one Verilator build serves both.
V_PREFILL, V_LINK, V_MESH = DEFAULT_CONFIG, LinkConfig(), MeshConfig(4, 4)


@pytest.fixture(scope="module")
def verilator():
    from sim_tests.simulators import require_simulator

    require_simulator("verilator")


@pytest.mark.parametrize("case, status", [("done", "done"), ("engine error", "error"),
                                          ("trap", "trap"), ("no progress", "no progress")])
def test_system_on_verilator_equals_the_emulator(verilator, case, status):
    from wafer.verilator_system import run_system_verilator

    commands, extra = None, ()
    if case == "engine error":
        commands = gemm_commands(V_PREFILL.n, ROWS, OUT)[:-1] + [Command(Op.MATMUL, count=0)]
    elif case == "trap":
        extra = [("li", (3, 1 << 20)), ("st", (3, 0, 3))]      # a store past the SRAM
    elif case == "no progress":
        extra = [("recv", (3, 0, V_MESH.colors - 1))]           # no word comes: waits forever
    image, product = gemm_image(V_PREFILL, V_LINK, V_MESH, commands=commands, extra=extra)
    rtl = run_system_verilator(image, max_cycles=5000, stall_limit=50)
    emulated = run_system(image, max_cycles=5000, stall_limit=50)
    assert rtl.same_as(emulated) == []
    assert rtl.status == status
    if case == "done":
        check_landed(rtl, product, V_MESH)


def test_system_verilog_lints(verilator, tmp_path):
    from wafer.verilator_system import TOP, build

    # The Verilog of the build (hdl.system.system_verilog), not generated again.
    text = (build(V_PREFILL, V_LINK, V_MESH).parent.parent / f"{TOP}.v").read_text()
    warnings = lint_warnings(text, TOP, tmp_path)
    # CASEINCOMPLETE: the core's decoder in the mesh's tile (as linted in test_core_rtl.py).
    assert warnings <= AMARANTH_WARNINGS | {"CASEINCOMPLETE"}


# Validation -------------------------------------------------------------------------------------

def test_system_top_checks_its_configurations():
    with pytest.raises(TypeError, match="prefill_config must be a mesh.prefill.PrefillConfig"):
        SystemTop(LINK, LINK, MESH)
    with pytest.raises(TypeError, match="link_config must be a mesh.link.LinkConfig"):
        SystemTop(PREFILL, PREFILL, MESH)
    with pytest.raises(TypeError, match="mesh_config must be a mesh.config.MeshConfig"):
        system_verilog(PREFILL, LINK, LINK)
    with pytest.raises(TypeError, match="LinkConfig"):
        LaneChannel(MESH)


@pytest.mark.parametrize("change, error, match", [
    (dict(prefill_config=LINK), TypeError, "prefill_config must be a PrefillConfig"),
    (dict(delivery=(0, 0, 2, 2, 2, 0, 3)), TypeError, "delivery must be a DeliveryCommand"),
    (dict(commands=[]), ValueError, "commands must hold 1 to 16 commands"),
    (dict(commands=["HALT"]), TypeError, r"commands\[0\] must be a mesh.prefill.Command"),
    (dict(dram=bytes(2048)), ValueError, "dram holds 2048 bytes, more than the DRAM's 1024"),
    (dict(dram=[0, 1]), TypeError, "dram must be bytes"),
    (dict(message_words=0), ValueError, "message_words must be an integer from 1 to 64"),
    (dict(message_addr=130), ValueError, "message_addr 130 is not a multiple of 4"),
    (dict(message_addr=1020, message_words=8), ValueError, "runs past the 1024-byte DRAM"),
    (dict(delivery=DeliveryCommand(0, 0, 3, 2, 2, 0, 3)), ValueError,
     "delivery: field width: .* reaches past the 2x2 mesh"),
    (dict(delivery=DeliveryCommand(0, 0, 2, 2, 2, 4, 3)), ValueError,
     "delivery: src 4 \\+ 8 words reads past the 8-word message"),
])
def test_system_image_checks_its_fields(change, error, match):
    image, _ = gemm_image()
    with pytest.raises(error, match=match):
        replace(image, **change)


def test_run_system_checks_its_arguments():
    image, _ = gemm_image()
    with pytest.raises(TypeError, match="image must be a SystemImage"):
        run_system(image.program)
    with pytest.raises(ValueError, match="stall_limit must be an integer from 1"):
        run_system(image, stall_limit=0)

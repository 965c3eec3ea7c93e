"""Delivery into the mesh (docs/ARCHITECTURE.md section 12, "Delivery into the mesh"):
``hdl.mesh_delivery.MeshDelivery`` in lockstep with ``emulator.mesh_delivery.DeliveryModel``
(west links, read port, credits, done, errors, cycle by cycle, under random credit backpressure);
the packet link's receive buffer delivered into a ``MeshEmulator`` running
``programs.delivery``'s receive program (messages sent through faulty channels first); one end
to end run of the RTL (a 2x2 ``hdl.Mesh`` fed by the engine) against the emulator; bad commands.

Cycle 0 is the first cycle of a test bench job (right after the simulator's reset); in the mesh
runs it is also the first cycle with ``run`` high, and the command is offered in it.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from emulator import MeshEmulator
from emulator.channel import FaultConfig
from emulator.link import LinkEmulator
from emulator.mesh_delivery import (FIELD_BITS, DeliveryCommand, DeliveryCommandError,
                                    DeliveryError, DeliveryModel, run_delivery)
from hdl.mesh import Mesh
from hdl.mesh_delivery import MeshDelivery
from mesh import ConfigError, MeshConfig, Port, RouteTable
from mesh.link import LinkConfig
from programs.delivery import Region, delivery_program, delivery_routes

from sim_bench import RTL_TEST_MARKS, Bench, kept

pytestmark = RTL_TEST_MARKS


def words_of(seed, count):
    rng = random.Random(seed)
    return [rng.getrandbits(32) for _ in range(count)]


def command(**fields):
    return DeliveryCommand(**fields)


# The engine alone, in lockstep with the model -------------------------------------------------

ENGINE_CONFIG = MeshConfig(width=3, height=4, colors=3, buffer_depth=2, sram_words=256,
                           imem_words=64)
ENGINE_BUFFER = 96


class EngineHarness:
    """The engine with a buffer memory on its read port (a synchronous read port whose enable
    is ``read.en``) in one reusable simulator. :meth:`run` plays the routers on the west links:
    per row and color a ``buffer_depth``-deep queue that pops its head with probability
    ``pop`` in each cycle (returning a credit in that cycle), and steps the model with the same
    credits and commands; every output must be equal in every cycle."""

    def __init__(self, config, buffer_words):
        self.config = config
        self.dut = MeshDelivery(config, buffer_words)
        self.memory = Memory(shape=32, depth=buffer_words, init=[])
        self.port = self.memory.read_port()
        top = Module()
        top.submodules.dut = self.dut
        top.submodules.memory = self.memory
        top.d.comb += [self.port.en.eq(self.dut.read.en), self.port.addr.eq(self.dut.read.addr),
                       self.dut.read.data.eq(self.port.data)]
        self.bench = Bench(top)

    def run(self, buffer, commands, *, pop=1.0, seed=0, gap=0, tail=20, max_cycles=5000):
        """Offer ``commands`` in order (each from ``gap`` cycles after the previous was taken,
        held until taken); run until every command was taken and the engine is idle, then
        ``tail`` more cycles. Returns the model and the per-cycle log."""
        cfg, dut = self.config, self.dut
        H, C, D = cfg.height, cfg.colors, cfg.buffer_depth
        model = DeliveryModel(cfg, np.asarray(buffer, dtype=np.uint32))
        rng = random.Random(seed)

        async def job(ctx):
            for i, word in enumerate(buffer):
                ctx.set(self.memory.data[i], int(word))
            queues = [[0] * C for _ in range(H)]
            pending = list(commands)
            offer_at, offering = 0, None
            log = []
            stop = None
            for t in range(max_cycles):
                if offering is None and pending and t >= offer_at:
                    offering = pending.pop(0)
                    for name in FIELD_BITS:
                        ctx.set(getattr(dut.cmd, name), getattr(offering, name))
                ctx.set(dut.cmd.valid, int(offering is not None))
                credit = np.zeros((H, C), dtype=bool)
                for y in range(H):
                    bits = 0
                    for k in range(C):
                        if queues[y][k] and rng.random() < pop:
                            credit[y, k] = True
                            bits |= 1 << k
                    ctx.set(dut.west_in[y].credit, bits)
                got = dict(
                    valid=[ctx.get(dut.west_in[y].valid) for y in range(H)],
                    color=[ctx.get(dut.west_in[y].color) for y in range(H)],
                    data=[ctx.get(dut.west_in[y].data) for y in range(H)],
                    en=ctx.get(dut.read.en), addr=ctx.get(dut.read.addr),
                    ready=ctx.get(dut.cmd.ready), busy=ctx.get(dut.busy),
                    done=ctx.get(dut.done), error=ctx.get(dut.error),
                    cause=ctx.get(dut.error_cause))
                ready, error = model.ready, model.error
                step = model.step(credit, offering)
                want = dict(
                    valid=step.valid.astype(int).tolist(), color=step.color.tolist(),
                    data=step.data.tolist(), en=int(step.read_en),
                    addr=step.read_addr, ready=int(ready), busy=int(step.busy),
                    done=int(step.done), error=int(error != 0), cause=int(error))
                assert got == want, f"cycle {t}: RTL {got}\n  model {want}"
                for y in range(H):
                    for k in range(C):
                        queues[y][k] -= int(credit[y, k])
                    if got["valid"][y]:
                        k = got["color"][y]
                        assert queues[y][k] < D, f"cycle {t}: row {y} sent without a credit"
                        queues[y][k] += 1
                log.append((t, [(y, got["data"][y]) for y in range(H) if got["valid"][y]],
                            got["en"], got["done"]))
                if step.taken:
                    offering = None
                    offer_at = t + 1 + gap
                await ctx.tick()
                if stop is None and not pending and offering is None and not model.busy:
                    stop = t + tail
                if stop is not None and t >= stop:
                    break
            else:
                raise AssertionError(f"not finished within {max_cycles} cycles")
            return log

        log = self.bench.execute(job)
        return model, log


def engine():
    return kept("engine", lambda: EngineHarness(ENGINE_CONFIG, ENGINE_BUFFER))


def delivered_rows(log, config):
    """Per row, the words sent on its west link, in order."""
    rows = [[] for _ in range(config.height)]
    for _, sent, _, _ in log:
        for y, data in sent:
            rows[y].append(data)
    return rows


def expected_rows(buffer, c, config):
    rows = [[] for _ in range(config.height)]
    for r in range(c.height):
        start = c.src + r * c.row_words
        rows[c.y0 + r] = [int(w) for w in buffer[start:start + c.row_words]]
    return rows


def test_engine_full_rate():
    """No backpressure: a command taken in cycle 0 sends its words in cycles 2 .. 1 + total,
    round robin over the region's rows from y0, and done is high with the last."""
    buffer = words_of(1, ENGINE_BUFFER)
    c = command(x0=0, y0=1, width=2, height=3, words=3, src=5, color=2)
    model, log = engine().run(buffer, [c])
    sending = [t for t, sent, _, _ in log if sent]
    assert sending == list(range(2, 2 + c.total))
    assert [sent[0][0] for _, sent, _, _ in log if sent][:6] == [1, 2, 3, 1, 2, 3]
    assert [t for t, _, _, done in log if done] == [1 + c.total] == model.done
    assert delivered_rows(log, ENGINE_CONFIG) == expected_rows(buffer, c, ENGINE_CONFIG)


def test_engine_single_row_full_rate():
    """One row at buffer_depth 2 keeps one word per cycle (the credit of cycle t is used by
    the choice of t)."""
    buffer = words_of(2, ENGINE_BUFFER)
    c = command(x0=1, y0=3, width=2, height=1, words=9, src=0, color=0)
    model, log = engine().run(buffer, [c])
    assert [t for t, sent, _, _ in log if sent] == list(range(2, 2 + c.total))
    assert delivered_rows(log, ENGINE_CONFIG) == expected_rows(buffer, c, ENGINE_CONFIG)


@pytest.mark.parametrize("pop, seed", [(0.5, 1), (0.2, 2), (0.8, 3)])
def test_engine_lockstep_backpressure(pop, seed):
    """Random credit backpressure on every west link; several commands back to back (other
    colors, other regions, a bad one in between), with and without gaps."""
    buffer = words_of(10 + seed, ENGINE_BUFFER)
    commands = [
        command(x0=0, y0=0, width=3, height=4, words=2, src=3, color=1),
        command(x0=1, y0=2, width=2, height=2, words=5, src=40, color=2),
        command(x0=0, y0=0, width=1, height=1, words=1, src=ENGINE_BUFFER, color=0),  # BUFFER
        command(x0=2, y0=1, width=1, height=3, words=7, src=60, color=0),
    ]
    model, log = engine().run(buffer, commands, pop=pop, seed=seed, gap=seed - 1)
    assert len(model.done) == 3 and model.error == DeliveryError.NONE
    words = delivered_rows(log, ENGINE_CONFIG)
    offset = [0] * ENGINE_CONFIG.height
    for c in (commands[0], commands[1], commands[3]):
        for y, row in enumerate(expected_rows(buffer, c, ENGINE_CONFIG)):
            assert words[y][offset[y]:offset[y] + len(row)] == row
            offset[y] += len(row)
    assert offset == [len(row) for row in words]


@pytest.mark.parametrize("fields, cause", [
    (dict(x0=3), DeliveryError.REGION),
    (dict(y0=2, height=3), DeliveryError.REGION),
    (dict(width=0), DeliveryError.REGION),
    (dict(words=0), DeliveryError.WORDS),
    (dict(src=ENGINE_BUFFER - 5), DeliveryError.BUFFER),
    (dict(color=3), DeliveryError.COLOR),
    (dict(color=3, words=0), DeliveryError.WORDS),
])
def test_engine_bad_commands(fields, cause):
    """A bad command raises the error flag with its cause (the first failing check) and sends
    nothing; the next good command clears it."""
    base = dict(x0=0, y0=0, width=2, height=2, words=2, src=0, color=1)
    bad = command(**{**base, **fields})
    good = command(**base)
    model, log = engine().run(words_of(3, ENGINE_BUFFER), [bad], tail=3)
    assert model.error == cause and model.done == [] and not any(s for _, s, _, _ in log)
    model, log = engine().run(words_of(3, ENGINE_BUFFER), [bad, good], tail=3)
    assert model.error == DeliveryError.NONE and len(model.done) == 1


# The model's own checks ------------------------------------------------------------------------

@pytest.mark.parametrize("fields, field", [
    (dict(x0=4), "x0"), (dict(y0=3), "y0"), (dict(x0=2, width=3), "width"),
    (dict(height=4), "height"), (dict(width=0), "width"), (dict(words=0), "words"),
    (dict(src=200), "src"), (dict(color=4), "color"),
])
def test_run_delivery_names_the_bad_field(fields, field):
    config = MeshConfig(width=4, height=3, colors=4, sram_words=256, imem_words=64)
    d = delivery_program(config, Region(0, 0, 2, 2), color=1, words=3)
    base = d.command_fields(src=0)
    mesh = MeshEmulator(d.program)
    model = DeliveryModel(config, np.zeros(100, dtype=np.uint32))
    with pytest.raises(DeliveryCommandError, match=field) as info:
        run_delivery(mesh, model, command(**{**base, **fields}))
    assert info.value.field == field and mesh.cycle == 0


@pytest.mark.parametrize("name, value", [("x0", -1), ("words", 1 << 16), ("color", 32),
                                         ("src", 1 << 32), ("height", 1.5)])
def test_command_fields_must_fit(name, value):
    fields = dict(x0=0, y0=0, width=1, height=1, words=1, src=0, color=0)
    with pytest.raises(ValueError, match=f"field {name}"):
        command(**{**fields, name: value})


def test_program_helpers_refuse():
    config = MeshConfig(width=4, height=3, colors=4, sram_words=256, imem_words=64)
    with pytest.raises(ConfigError, match="reaches past"):
        delivery_program(config, Region(3, 0, 2, 1), color=0, words=1)
    with pytest.raises(ConfigError, match="color"):
        delivery_program(config, Region(0, 0, 1, 1), color=4, words=1)
    with pytest.raises(ConfigError, match="SRAM"):
        delivery_program(config, Region(0, 0, 1, 1), color=0, words=10, base=250)
    with pytest.raises(ConfigError, match="words"):
        delivery_program(config, Region(0, 0, 1, 1), color=0, words=0)


def test_routes():
    """Row y of the region: W -> E before x0, W -> {RAMP, E} inside, W -> RAMP at the last
    tile; nothing elsewhere; the west edges of the region's rows are open."""
    config = MeshConfig(width=5, height=3, colors=2, sram_words=256, imem_words=64)
    table = delivery_routes(config, Region(1, 1, 3, 2), color=1)
    table.validate()
    routes = {(x, y): (set(r.inputs), set(r.outputs)) for x, y, c, r in table if c == 1}
    W, E, RAMP = Port.W, Port.E, Port.RAMP
    for y in (1, 2):
        assert routes.pop((0, y)) == ({W}, {E})
        assert routes.pop((1, y)) == ({W}, {RAMP, E})
        assert routes.pop((2, y)) == ({W}, {RAMP, E})
        assert routes.pop((3, y)) == ({W}, {RAMP})
    assert routes == {} and len(table) == 8
    assert table.open_edges == {(0, 1, W), (0, 2, W)}
    assert isinstance(table, RouteTable)


# End to end on the emulator --------------------------------------------------------------------

LINK = LinkConfig(lanes=4, lane_width=32, latency=6, max_payload=8, window=8, nack_gap=4,
                  buffer_words=512, source_words=512)
FAULTS = FaultConfig(drop=0.1, flip=0.05, duplicate=0.1, reorder=0.1)


@pytest.mark.parametrize("shape, region, words, base, src, seed", [
    ((4, 4), Region(0, 0, 4, 4), 6, 0, 0, 1),
    ((5, 3), Region(1, 1, 3, 2), 9, 17, 11, 2),
    ((3, 4), Region(2, 3, 1, 1), 1, 255, 300, 3),
    ((4, 2), Region(1, 0, 2, 2), 40, 100, 0, 4),
])
def test_link_to_mesh_on_the_emulator(shape, region, words, base, src, seed):
    """The packet link carries the message through faulty channels into its receive buffer;
    the engine delivers it into a mesh running the receive program: every core of the region
    holds exactly its words at ``base``, every other SRAM word is zero."""
    w, h = shape
    config = MeshConfig(width=w, height=h, colors=4, sram_words=256, imem_words=64)
    d = delivery_program(config, region, color=seed % 4, words=words, base=base)
    message = words_of(100 + seed, d.message_words)
    link = LinkEmulator(LINK, FAULTS, seed)
    # Junk before the message in the buffer, so that src matters.
    link.rx.buffer[:] = words_of(seed, LINK.buffer_words)
    result = link.send(message, src=src % 64)
    assert result.ok and result.retransmits > 0
    # The link puts the message at word 0 of its buffer; deliver from ``src`` by moving it.
    buffer = link.rx.buffer.copy()
    buffer[src:src + d.message_words] = buffer[:d.message_words].copy()
    mesh = MeshEmulator(d.program)
    run = run_delivery(mesh, DeliveryModel(config, buffer), command(**d.command_fields(src)))
    assert d.check(run.result, message) == []
    assert run.result.halted.all() and run.taken_cycle == 0
    assert run.done_cycle >= 1 + d.message_words


def test_link_buffer_delivered_in_place():
    """The receive buffer itself (``RxModel.buffer``) as the engine's buffer, message at 0."""
    config = MeshConfig(width=3, height=3, colors=2, sram_words=256, imem_words=64)
    d = delivery_program(config, Region(0, 1, 3, 2), color=1, words=16, base=32)
    message = words_of(7, d.message_words)
    link = LinkEmulator(LINK, FaultConfig(drop=0.2, reorder=0.2), 7)
    assert link.send(message).ok
    run = run_delivery(MeshEmulator(d.program), DeliveryModel(config, link.rx.buffer),
                       command(**d.command_fields(0)))
    assert d.check(run.result, message) == []


# End to end on the RTL --------------------------------------------------------------------------

RTL_CONFIG = MeshConfig(width=2, height=2, colors=2, buffer_depth=2, sram_words=256,
                        imem_words=64)
RTL_BUFFER = 64


class _MeshWithDelivery(wiring.Component):
    def __init__(self, config, buffer_words):
        super().__init__({})
        self.mesh = Mesh(config)
        self.delivery = MeshDelivery(config, buffer_words)
        self.memory = Memory(shape=32, depth=buffer_words, init=[])
        self.port = self.memory.read_port()

    def elaborate(self, platform):
        m = Module()
        m.submodules.mesh = self.mesh
        m.submodules.delivery = self.delivery
        m.submodules.memory = self.memory
        d = self.delivery
        m.d.comb += [self.port.en.eq(d.read.en), self.port.addr.eq(d.read.addr),
                     d.read.data.eq(self.port.data)]
        for y in range(self.mesh.config.height):
            wiring.connect(m, d.west_in[y], self.mesh.west_in[y])
        return m


def rtl_delivery(top, program, buffer, cmd, max_cycles=2000):
    """Load ``program`` (routes through the route write port, memories directly) and ``buffer``,
    raise ``run`` and offer ``cmd`` in cycle 0; run until the mesh is done and the delivery too.
    Returns (per-cycle west link words, the cycle done was high, the mesh's stop cycle, SRAMs)."""
    cfg = program.config
    mesh, d = top.mesh, top.delivery
    cores = [tile.core for row in mesh.tiles for tile in row]

    async def job(ctx):
        accept, out = program.routes.masks()
        for tile, color in zip(*np.nonzero(np.asarray(accept) | np.asarray(out))):
            ctx.set(mesh.route.valid, 1)
            ctx.set(mesh.route.tile, int(tile))
            ctx.set(mesh.route.color, int(color))
            ctx.set(mesh.route.accept, int(accept[tile][color]))
            ctx.set(mesh.route.out, int(out[tile][color]))
            await ctx.tick()
        ctx.set(mesh.route.valid, 0)
        for core, imem, sram in zip(cores, program.imem(), program.sram()):
            for memory, words in ((core.imem, imem), (core.sram, sram)):
                for address in np.flatnonzero(words).tolist():
                    ctx.set(memory.data[address], int(words[address]))
        for i, word in enumerate(buffer):
            ctx.set(top.memory.data[i], int(word))
        for name in FIELD_BITS:
            ctx.set(getattr(d.cmd, name), getattr(cmd, name))
        ctx.set(mesh.run, 1)
        ctx.set(d.cmd.valid, 1)
        sent, done_cycle, stop = [], None, None
        for t in range(max_cycles):
            if t == 1:
                ctx.set(d.cmd.valid, 0)
            sent.append([(y, ctx.get(d.west_in[y].data)) for y in range(cfg.height)
                         if ctx.get(d.west_in[y].valid)])
            if ctx.get(d.done):
                done_cycle = t
            if stop is None and (ctx.get(mesh.done) or ctx.get(mesh.trap)):
                stop = t
            if stop is not None and done_cycle is not None:
                break
            await ctx.tick()
        ctx.set(mesh.run, 0)
        sram = np.array([[ctx.get(core.sram.data[a]) for a in range(cfg.sram_words)]
                         for core in cores], dtype=np.uint32)
        return sent, done_cycle, stop, sram, ctx.get(mesh.trap)

    return bench_of(top).execute(job)


def bench_of(top):
    return kept(("mesh", id(top)), lambda: Bench(top))


@pytest.mark.parametrize("region, words, src", [
    (Region(1, 0, 1, 2), 5, 7),      # the east column: row traffic passes through (0, y)
    (Region(0, 1, 2, 1), 6, 0),      # the south row: (1, 1) discards (0, 1)'s words first
])
def test_rtl_mesh_end_to_end(region, words, src):
    """A 2x2 mesh with the engine on its west links. The RTL's west link words in every cycle,
    the done cycle, the mesh's cycle count and every SRAM word equal the emulator's, and the
    region holds the message."""
    top = kept(("top",), lambda: _MeshWithDelivery(RTL_CONFIG, RTL_BUFFER))
    d = delivery_program(RTL_CONFIG, region, color=1, words=words, base=3)
    buffer = words_of(21 + src, RTL_BUFFER)
    cmd = command(**d.command_fields(src=src))
    sent, done_cycle, stop, sram, trap = rtl_delivery(top, d.program, buffer, cmd)
    assert not trap and len(sent) == stop + 1
    assert sum(len(s) for s in sent) == d.message_words
    mesh = MeshEmulator(d.program)
    run = run_delivery(mesh, DeliveryModel(RTL_CONFIG, np.asarray(buffer, dtype=np.uint32)),
                       cmd, record=True)
    want = [[(y, int(s.data[y])) for y in range(RTL_CONFIG.height) if s.valid[y]]
            for s in run.steps]
    assert len(want) == stop and sent[:stop] == want and sent[stop] == []
    assert done_cycle == run.done_cycle
    assert stop == run.result.cycles
    assert np.array_equal(sram, run.result.sram)
    assert d.check(run.result, buffer[src:src + d.message_words]) == []


def test_engine_one_row_one_color():
    """The smallest engine (H = 1, one color, depth 1): in lockstep with the model under
    backpressure; at depth 1 a row gets a word every other cycle at best."""
    config = MeshConfig(width=2, height=1, colors=1, buffer_depth=1, sram_words=256,
                        imem_words=64)
    harness = kept("engine-1", lambda: EngineHarness(config, 16))
    buffer = words_of(5, 16)
    c = command(x0=0, y0=0, width=2, height=1, words=4, src=8, color=0)
    model, log = harness.run(buffer, [c, c], pop=0.6, seed=4)
    assert len(model.done) == 2
    model, log = harness.run(buffer, [c])
    assert [t for t, sent, _, _ in log if sent] == list(range(2, 2 + 2 * c.total, 2))


def test_verilog_lints_clean(tmp_path):
    """Verilator's lint finds no error and no warning beyond Amaranth's usual width ones."""
    import hdl
    from verilator_lint import AMARANTH_WARNINGS, lint_warnings

    text = hdl.verilog(MeshDelivery(ENGINE_CONFIG, ENGINE_BUFFER), "mesh_delivery")
    assert lint_warnings(text, "mesh_delivery", tmp_path) <= AMARANTH_WARNINGS

"""The system top (docs/ARCHITECTURE.md section 13, "The system"): the prefill engine with its
DRAM, the packet link's sender and receiver joined by fault-free lane channels, the delivery
engine and the mesh, run one phase after another by a small sequencer.

:class:`SystemTop` is the design for the Amaranth simulator; :func:`system_verilog` is its
Verilog for Verilator: the mesh's modules (``hdl.mesh_verilog``: ``wse_tile`` once, ``wse_mesh``)
followed by the top ``wse_system``, which instances ``wse_mesh``.
"""

import time

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from mesh import MeshConfig
from mesh.delivery import FIELD_BITS
from mesh.link import LinkConfig
from mesh.prefill import COMMAND_BITS, PrefillConfig
from mesh.system import (EVENTS, LINK_COUNTERS, MESSAGE_ID, RX_NODE, TX_NODE, SystemCause,
                         SystemPhase, word_bytes)

from .build import verilog
from .channel import LaneChannel
from .core import NUM_COUNTERS, PC_BITS, TRAP_CAUSE_BITS, WORD, LoadSignature, PeekSignature
from .link import RouteWriteSignature
from .mesh import MESH_MODULE, Mesh, mesh_signature, mesh_verilog
from .mesh_delivery import CAUSE_BITS, MeshDelivery
from .packet_rx import PacketRx
from .packet_tx import COUNTER_BITS, PacketTx
from .prefill import PrefillEngine

__all__ = ["SystemTop", "system_verilog", "system_signature", "SYSTEM_MODULE", "NOT_REACHED",
           "CYCLE_BITS"]

SYSTEM_MODULE = "wse_system"
CYCLE_BITS = 32
#: The value of an event cycle that has not happened.
NOT_REACHED = (1 << CYCLE_BITS) - 1


def _check_configs(prefill_config, link_config, mesh_config):
    for name, value, kind in (("prefill_config", prefill_config, PrefillConfig),
                              ("link_config", link_config, LinkConfig),
                              ("mesh_config", mesh_config, MeshConfig)):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__module__}.{kind.__name__}, not "
                            f"{value!r}")


def system_signature(prefill_config, link_config, mesh_config):
    """The signature of :class:`SystemTop` (also that of the Verilog module ``wse_system``)."""
    _check_configs(prefill_config, link_config, mesh_config)
    W = word_bytes(prefill_config)
    dram_words = prefill_config.dram_bytes // W
    tiles = mesh_config.tiles
    index = range(prefill_config.commands + 1)
    return wiring.Signature({
        "run": In(1),
        "engine_load": In(wiring.Signature({
            "en": Out(1), "addr": Out(range(prefill_config.commands)),
            "data": Out(COMMAND_BITS)})),
        "dram_load": In(wiring.Signature({
            "en": Out(1), "addr": Out(range(dram_words)), "data": Out(8 * W)})),
        "dram_peek": In(wiring.Signature({"addr": Out(range(dram_words)), "data": In(8 * W)})),
        "route": In(RouteWriteSignature(mesh_config, tiles=tiles)),
        "mesh_load": In(LoadSignature(mesh_config, tiles=tiles)),
        "mesh_peek": In(PeekSignature(mesh_config, tiles=tiles)),
        "message": In(wiring.Signature({"addr": Out(32), "words": Out(32)})),
        "command": In(wiring.Signature({name: Out(bits) for name, bits in FIELD_BITS.items()})),
        "phase": Out(SystemPhase),
        "cycle": Out(CYCLE_BITS),
        "done": Out(1),
        "error": Out(1),
        "error_cause": Out(SystemCause),
        "trap": Out(1),
        "mesh_done": Out(1),
        "mesh_active": Out(1),
        "progress": Out(1),
        "engine_error_cause": Out(4),
        "engine_error_index": Out(index),
        "tx_error": Out(2),
        "delivery_error_cause": Out(CAUSE_BITS),
        "events": Out(data.StructLayout({name: CYCLE_BITS for name in EVENTS}),
                      init={name: NOT_REACHED for name in EVENTS}),
        "link_counters": Out(data.StructLayout({name: COUNTER_BITS for name in LINK_COUNTERS})),
        "halted": Out(tiles),
        "trap_cause": Out(TRAP_CAUSE_BITS).array(tiles),
        "trap_pc": Out(PC_BITS).array(tiles),
        "pc": Out(PC_BITS).array(tiles),
        "counters": Out(WORD).array(tiles, NUM_COUNTERS),
    })


class SystemTop(wiring.Component):
    """The disaggregated system: prefill engine, packet link, delivery engine and mesh, one phase
    after another (docs/ARCHITECTURE.md section 13, where the handoff cycles are specified).

    **Load** (with ``run`` low; no cycle counts): the engine's command memory through
    ``engine_load`` (word ``addr`` becomes ``data``, a :class:`mesh.prefill.Command`); the DRAM
    through ``dram_load`` (DRAM word ``addr`` of W bytes, W the DRAM model's word: bytes
    ``addr`` x W .. + W - 1, byte k in bits 8k .. 8k + 7, becomes ``data``); the mesh's routes,
    instruction memories and SRAMs through ``route`` and ``mesh_load`` (as on
    :class:`hdl.Mesh`). Hold ``message`` (the DRAM byte address and the words of the message)
    and ``command`` (the delivery command's fields) for the whole run.

    **Run.** Cycle 0 is the first cycle with ``run`` high; ``run`` then stays high. The phases
    (``phase``, a :class:`mesh.system.SystemPhase`): PREFILL from cycle 0 until the engine is
    done; STAGE copies the message from the DRAM into the sender's source memory, one DRAM word
    (W / 4 message words) per cycle; LINK sends it (``message`` words from source word 0, to
    node 2 as message 0) until the receiver is done; MESH: the delivery command is taken and
    the mesh's cores run from the same cycle (mesh cycle 0), until every core has halted or one
    trapped. Each phase starts in the cycle after the one in which the previous phase's end is
    seen. ``done`` (phase DONE) or ``error`` (phase ERROR, ``error_cause`` a
    :class:`mesh.system.SystemCause`) is high from the cycle after the end and stays: nothing
    more happens but for work the blocks already hold (the mesh's ``run`` is low from its end).

    **Status.** ``cycle`` counts the cycles of the run up to its end. ``events`` records the
    cycles of the handoffs (:data:`mesh.system.EVENTS`; :data:`NOT_REACHED` if not reached):
    ``prefill_end`` the first cycle with the engine's ``done`` (its cycle count),
    ``stage_start``, ``link_start`` (the sender takes the command), ``tx_done`` (the sender's
    ``done``, recorded until the end), ``rx_done`` (the receiver's ``done``), ``mesh_start``
    (mesh cycle 0), ``delivery_done`` (the delivery engine's ``done`` while the mesh runs),
    ``end`` (the first cycle at whose start the mesh's ``done`` or ``trap`` is high, or the
    cycle a failure is seen). ``trap``, ``mesh_done``: the mesh's. ``mesh_active``: the mesh's
    ``run``. ``progress``: in phase MESH, some core or router made progress (the mesh's
    ``progress``) or the delivery engine read or sent a word: the no-progress rule of a system
    run. The engine's, the sender's and the delivery engine's error causes, the link counters
    (:data:`mesh.system.LINK_COUNTERS`) and the mesh's per-core outputs are passed through.
    **Peek** (``run`` low): ``mesh_peek`` as on :class:`hdl.Mesh`; ``dram_peek.data`` in cycle
    t + 1 is DRAM word ``dram_peek.addr`` of cycle t.

    Parameters
    ----------
    prefill_config : :class:`mesh.prefill.PrefillConfig`
    link_config : :class:`mesh.link.LinkConfig`
    mesh_config : :class:`mesh.MeshConfig`

    Members
    -------
    run : :py:`In(1)`
    engine_load : :py:`In(Signature({"en": Out(1), "addr": Out(range(commands)),
    "data": Out(128)}))`
    dram_load : :py:`In(Signature({"en": Out(1), "addr": Out(range(dram_bytes // W)),
    "data": Out(8 W)}))`
    dram_peek : :py:`In(Signature({"addr": Out(range(dram_bytes // W)), "data": In(8 W)}))`
    route, mesh_load, mesh_peek : as :class:`hdl.Mesh`'s ``route``, ``load``, ``peek``
    message : :py:`In(Signature({"addr": Out(32), "words": Out(32)}))`
    command : :py:`In(Signature({field: Out(bits)}))`
        The fields of :data:`mesh.delivery.FIELD_BITS`.
    phase : :py:`Out(SystemPhase)`
    cycle : :py:`Out(32)`
    done, error, trap, mesh_done, mesh_active, progress : :py:`Out(1)`
    error_cause : :py:`Out(SystemCause)`
    engine_error_cause : :py:`Out(4)`
        A :class:`mesh.prefill.EngineError`.
    engine_error_index : :py:`Out(range(commands + 1))`
    tx_error : :py:`Out(2)`
        A :class:`mesh.link.TxError`.
    delivery_error_cause : :py:`Out(3)`
        A :class:`mesh.delivery.DeliveryError`.
    events : :py:`Out(StructLayout({event: 32}))`
    link_counters : :py:`Out(StructLayout({counter: 32}))`
    halted, trap_cause, trap_pc, pc, counters : as :class:`hdl.Mesh`'s

    Attributes
    ----------
    engine : :class:`hdl.PrefillEngine`
    tx : :class:`hdl.PacketTx`
    rx : :class:`hdl.PacketRx`
    forward, reverse : list of :class:`hdl.channel.LaneChannel`
        Per lane: data towards the receiver, acknowledgements back.
    delivery : :class:`hdl.MeshDelivery`
    mesh : :class:`hdl.Mesh`
    word_bytes : :class:`int`
        W.
    """

    def __init__(self, prefill_config, link_config, mesh_config):
        super().__init__(system_signature(prefill_config, link_config, mesh_config))
        self.prefill_config, self.link_config, self.mesh_config = (prefill_config, link_config,
                                                                   mesh_config)
        self.engine = PrefillEngine(prefill_config)
        banks = self.engine.dram_model.banks
        self.word_bytes = self.engine.dram_model.word_bytes
        # The DRAM's extra ports: loading, and one read per bank for the stage and peeking.
        self._dram_writes = [bank.write_port() for bank in banks]
        self._dram_reads = [bank.read_port() for bank in banks]
        self.tx = PacketTx(link_config, TX_NODE, RX_NODE)
        self._stage_writes = [self.tx.source.write_port()
                              for _ in range(self.word_bytes // 4)]
        self.rx = PacketRx(link_config, RX_NODE, TX_NODE)
        self.forward = [LaneChannel(link_config) for _ in range(link_config.lanes)]
        self.reverse = [LaneChannel(link_config) for _ in range(link_config.lanes)]
        self.delivery = MeshDelivery(mesh_config, link_config.buffer_words)
        self.mesh = self._make_mesh()

    def _make_mesh(self):
        return Mesh(self.mesh_config)

    def _place_mesh(self, m):
        m.submodules.mesh = self.mesh

    def elaborate(self, platform):
        m = Module()
        pcfg, lcfg, mcfg = self.prefill_config, self.link_config, self.mesh_config
        engine, tx, rx, delivery, mesh = self.engine, self.tx, self.rx, self.delivery, self.mesh
        m.submodules.engine, m.submodules.tx, m.submodules.rx = engine, tx, rx
        m.submodules.delivery = delivery
        self._place_mesh(m)
        for lane, (fwd, rev) in enumerate(zip(self.forward, self.reverse)):
            m.submodules[f"forward_{lane}"] = fwd
            m.submodules[f"reverse_{lane}"] = rev
            wiring.connect(m, tx.data_out[lane], fwd.input)
            wiring.connect(m, fwd.output, rx.data_in[lane])
            wiring.connect(m, rx.ack_out[lane], rev.input)
            wiring.connect(m, rev.output, tx.ack_in[lane])
        m.d.comb += [rx.read.addr.eq(delivery.read.addr), delivery.read.data.eq(rx.read.data)]
        for y in range(mcfg.height):
            wiring.connect(m, delivery.west_in[y], mesh.west_in[y])
        # Wavelets leaving the mesh are taken, their credits returned in the next cycle.
        outbound = [*mesh.north_out, *mesh.east_out, *mesh.south_out, *mesh.west_out]
        for link in outbound:
            m.d.sync += link.credit.eq(Mux(link.valid, Const(1, mcfg.colors) << link.color, 0))

        phase = Signal(SystemPhase)
        stopped = Signal()
        running = Signal()
        m.d.comb += [
            self.phase.eq(phase),
            stopped.eq((phase == SystemPhase.DONE) | (phase == SystemPhase.ERROR)),
            running.eq(self.run & ~stopped),
            self.done.eq(phase == SystemPhase.DONE),
            self.error.eq(phase == SystemPhase.ERROR),
        ]
        with m.If(running):
            m.d.sync += self.cycle.eq(self.cycle + 1)
        cycle = self.cycle
        events = self.events

        # Loading and peeking -------------------------------------------------------------------
        m.d.comb += [
            engine.run.eq(self.run),
            engine.load.en.eq(self.engine_load.en),
            engine.load.addr.eq(self.engine_load.addr),
            engine.load.data.eq(self.engine_load.data),
            mesh.route.valid.eq(self.route.valid), mesh.route.tile.eq(self.route.tile),
            mesh.route.color.eq(self.route.color), mesh.route.accept.eq(self.route.accept),
            mesh.route.out.eq(self.route.out),
            mesh.load.valid.eq(self.mesh_load.valid), mesh.load.target.eq(self.mesh_load.target),
            mesh.load.addr.eq(self.mesh_load.addr), mesh.load.enable.eq(self.mesh_load.enable),
            mesh.peek.addr.eq(self.mesh_peek.addr),
        ]
        for t in range(mcfg.tiles):
            m.d.comb += [mesh.load.data[t].eq(self.mesh_load.data[t]),
                         self.mesh_peek.data[t].eq(mesh.peek.data[t])]
        for k, port in enumerate(self._dram_writes):
            m.d.comb += [
                port.en.eq(self.dram_load.en & ~self.run & (self.dram_load.addr[0] == k)),
                port.addr.eq(self.dram_load.addr[1:]),
                port.data.eq(self.dram_load.data),
            ]
        peek_odd = Signal()
        m.d.sync += peek_odd.eq(self.dram_peek.addr[0])
        even, odd = self._dram_reads
        m.d.comb += self.dram_peek.data.eq(Mux(peek_odd, odd.data, even.data))

        # The stage: chunk k of C message words is DRAM words j and j + 1 (j = A / W + k),
        # read in one cycle (one from each bank) and written into the source memory in the next.
        W = self.word_bytes
        C = W // 4
        log_w, log_c = W.bit_length() - 1, C.bit_length() - 1
        address, words = self.message.addr, self.message.words
        message_bad = Signal()
        m.d.comb += message_bad.eq((words == 0) | (words > lcfg.source_words)
                                   | (address[:2] != 0)
                                   | (address + (words << 2) > pcfg.dram_bytes)
                                   | (address >= pcfg.dram_bytes))
        chunk_word = Signal(32)                  # j of the chunk being read
        chunks_left = Signal(32)
        read_chunk = Signal(32)                  # k of the chunk being read
        reading = Signal()
        m.d.comb += reading.eq((phase == SystemPhase.STAGE) & (chunks_left != 0))
        with m.If(self.run):
            m.d.comb += [even.addr.eq((chunk_word + chunk_word[0])[1:]),
                         odd.addr.eq(chunk_word[1:])]
        with m.Else():
            m.d.comb += [even.addr.eq(self.dram_peek.addr[1:]),
                         odd.addr.eq(self.dram_peek.addr[1:])]
        written, write_chunk, write_odd = Signal(), Signal(32), Signal()
        m.d.sync += [written.eq(reading), write_chunk.eq(read_chunk), write_odd.eq(chunk_word[0])]
        low, high = Signal(8 * W), Signal(8 * W)
        m.d.comb += [low.eq(Mux(write_odd, odd.data, even.data)),
                     high.eq(Mux(write_odd, even.data, odd.data))]
        window = Signal(16 * W)
        m.d.comb += window.eq(Cat(low, high) >> Cat(Const(0, 3), address[:log_w]))
        for i, port in enumerate(self._stage_writes):
            index = Signal(32, name=f"stage_index_{i}")
            m.d.comb += [
                index.eq((write_chunk << log_c) + i),
                port.en.eq(written & (index < words)),
                port.addr.eq(index),
                port.data.eq(window[32 * i:32 * (i + 1)]),
            ]
        with m.If(reading):
            m.d.sync += [chunk_word.eq(chunk_word + 1), read_chunk.eq(read_chunk + 1),
                         chunks_left.eq(chunks_left - 1)]

        # The link and the delivery ---------------------------------------------------------------
        started, commanded = Signal(), Signal()
        m.d.comb += [
            tx.start.valid.eq((phase == SystemPhase.LINK) & ~started),
            tx.start.src.eq(0),
            tx.start.length.eq(words << 2),
            tx.start.dst.eq(RX_NODE),
            tx.start.message.eq(MESSAGE_ID),
        ]
        with m.If(tx.start.valid & tx.start.ready):
            m.d.sync += started.eq(1)
        m.d.comb += delivery.cmd.valid.eq((phase == SystemPhase.MESH) & ~commanded)
        for name in FIELD_BITS:
            m.d.comb += getattr(delivery.cmd, name).eq(getattr(self.command, name))
        with m.If(delivery.cmd.valid & delivery.cmd.ready):
            m.d.sync += commanded.eq(1)
        stopping = Signal()
        m.d.comb += [
            stopping.eq(mesh.done | mesh.trap),
            self.mesh_active.eq(self.run & (phase == SystemPhase.MESH) & ~stopping),
            mesh.run.eq(self.mesh_active),
            self.progress.eq((phase == SystemPhase.MESH)
                             & (mesh.progress | delivery.read.en
                                | Cat(link.valid for link in delivery.west_in).any())),
        ]
        with m.If(running & tx.done & (events.tx_done == NOT_REACHED)):
            m.d.sync += events.tx_done.eq(cycle)
        with m.If(self.mesh_active & delivery.done & (events.delivery_done == NOT_REACHED)):
            m.d.sync += events.delivery_done.eq(cycle)

        # The sequencer ---------------------------------------------------------------------------
        def fail(cause):
            m.d.sync += [phase.eq(SystemPhase.ERROR), self.error_cause.eq(cause),
                         events.end.eq(cycle)]

        overflow = Cat(ch.overflow for ch in self.forward + self.reverse).any()
        with m.If(running):
            with m.If(overflow):
                fail(SystemCause.CHANNEL)
            with m.Elif(phase == SystemPhase.PREFILL):
                with m.If(engine.error):
                    fail(SystemCause.ENGINE)
                with m.Elif(engine.done):
                    m.d.sync += events.prefill_end.eq(cycle)
                    with m.If(message_bad):
                        fail(SystemCause.MESSAGE)
                    with m.Else():
                        m.d.sync += [
                            phase.eq(SystemPhase.STAGE), events.stage_start.eq(cycle + 1),
                            chunk_word.eq(address[log_w:]), read_chunk.eq(0),
                            chunks_left.eq((words + C - 1) >> log_c),
                        ]
            with m.Elif(phase == SystemPhase.STAGE):
                with m.If(chunks_left == 0):
                    m.d.sync += [phase.eq(SystemPhase.LINK), events.link_start.eq(cycle + 1)]
            with m.Elif(phase == SystemPhase.LINK):
                with m.If(tx.error != 0):
                    fail(SystemCause.LINK)
                with m.Elif(rx.done):
                    m.d.sync += [phase.eq(SystemPhase.MESH), events.rx_done.eq(cycle),
                                 events.mesh_start.eq(cycle + 1)]
            with m.Elif(phase == SystemPhase.MESH):
                with m.If(stopping):
                    m.d.sync += [phase.eq(SystemPhase.DONE), events.end.eq(cycle)]
                with m.Elif(delivery.error):
                    fail(SystemCause.DELIVERY)

        # Pass-through status -------------------------------------------------------------------
        m.d.comb += [
            self.trap.eq(mesh.trap),
            self.mesh_done.eq(mesh.done),
            self.engine_error_cause.eq(engine.error_cause),
            self.engine_error_index.eq(engine.error_index),
            self.tx_error.eq(tx.error),
            self.delivery_error_cause.eq(delivery.error_cause),
            self.link_counters.sent.eq(tx.sent),
            self.link_counters.retransmits.eq(tx.retransmits),
            self.link_counters.timeouts.eq(tx.timeouts),
            self.link_counters.accepted.eq(rx.accepted),
            self.halted.eq(mesh.halted),
        ]
        for t in range(mcfg.tiles):
            m.d.comb += [self.trap_cause[t].eq(mesh.trap_cause[t]),
                         self.trap_pc[t].eq(mesh.trap_pc[t]), self.pc[t].eq(mesh.pc[t])]
            m.d.comb += [mine.eq(theirs)
                         for mine, theirs in zip(self.counters[t], mesh.counters[t])]
        return m


class _SystemVerilogTop(SystemTop):
    """:class:`SystemTop` with the mesh an instance of the Verilog module ``wse_mesh`` (made by
    :func:`hdl.mesh_verilog`): for Verilog generation only."""

    def _make_mesh(self):
        return mesh_signature(self.mesh_config).create(path=("mesh",))

    def _place_mesh(self, m):
        ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in mesh_signature(self.mesh_config).flatten(self.mesh):
            direction = "i" if member.flow == In else "o"
            ports[f"{direction}_{'__'.join(str(part) for part in path)}"] = value
        m.submodules.mesh = Instance(MESH_MODULE, **ports)


def system_verilog(prefill_config, link_config, mesh_config, timings=None):
    """Verilog text of the system: the mesh's modules (``wse_tile``, ``wse_mesh``, from
    :func:`hdl.mesh_verilog`) and the top ``wse_system`` (the ports of :class:`SystemTop`, named
    as its members joined by double underscores). ``timings``, a dict if given, receives the
    seconds of ``"tile"``, ``"top"`` (the mesh's) and ``"system"``."""
    _check_configs(prefill_config, link_config, mesh_config)
    text = mesh_verilog(mesh_config, timings)
    start = time.perf_counter()
    top = verilog(_SystemVerilogTop(prefill_config, link_config, mesh_config), SYSTEM_MODULE)
    if timings is not None:
        timings["system"] = time.perf_counter() - start
    return text + "\n" + top

"""The processing element of a tile: an in-order core with an instruction memory, a data SRAM and
a vector unit (docs/ARCHITECTURE.md section 9).

The core is split into blocks, one per file: the instruction decoder (:mod:`.core_decode`), the
ALU (:mod:`.core_alu`), the register and descriptor files and the RAMP end of the links
(:mod:`.core_state`), and the vector pipeline (:mod:`.core_vector`). This module holds the
memories, the issue logic, the trap checks and the counters, and wires the blocks together.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mesh import MeshConfig, isa

from .core_alu import Alu
from .core_decode import BranchCond, Decoder, InstrClass
from .core_state import DescriptorFile, RampPort, RegisterFile
from .core_vector import VectorPipeline
from .link import LinkSignature

__all__ = ["LoadTarget", "LoadSignature", "PeekSignature", "Core", "PC_BITS", "POSITION_BITS",
           "TRAP_CAUSE_BITS", "load_address_bits"]

WORD = isa.WORD_BITS
PC_BITS = (isa.MAX_IMEM_WORDS - 1).bit_length()       # 14
TRAP_CAUSE_BITS = max(isa.TrapCause).bit_length()      # 3
POSITION_BITS = 16                                     # x, y, width, height inputs
NUM_COUNTERS = len(isa.COUNTERS)
COUNTER_INDEX = {name: i for i, (name, _) in enumerate(isa.COUNTERS)}


def _check_config(config):
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")


def _check_tiles(tiles):
    if tiles is not None and (not isinstance(tiles, int) or isinstance(tiles, bool)
                              or tiles < 1):
        raise ValueError(f"tiles must be None or a positive integer, not {tiles!r}")


def load_address_bits(config):
    """Width of a load port address: enough for the larger of the two memories."""
    return (max(config.imem_words, config.sram_words) - 1).bit_length()


def sram_address_bits(config):
    return (config.sram_words - 1).bit_length()


class LoadTarget(enum.Enum, shape=1):
    """The memory a load port write goes to."""
    IMEM = 0
    SRAM = 1


class LoadSignature(wiring.Signature):
    """The load port, from the loader's point of view (a component that takes it uses
    ``In(LoadSignature(...))``). When ``valid`` is set while the core does not run (``run``
    low), word ``addr`` of the ``target`` memory becomes ``data`` at the end of the cycle; an
    address beyond that memory writes nothing. While the core runs, the port is ignored.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Gives the memory sizes.
    tiles : :class:`int` or None
        For a mesh: the number of tiles; adds ``enable`` and makes ``data`` one word per tile.

    Members
    -------
    valid : :py:`Out(1)`
    target : :py:`Out(LoadTarget)`
    addr : :py:`Out(load_address_bits(config))`
    enable : :py:`Out(tiles)`
        Bit t: tile t (row-major) takes the write. Only present when ``tiles`` is given.
    data : :py:`Out(32)`, or :py:`Out(32).array(tiles)` when ``tiles`` is given
    """

    def __init__(self, config, tiles=None):
        _check_config(config)
        _check_tiles(tiles)
        self._config, self._tiles = config, tiles
        members = {
            "valid": Out(1),
            "target": Out(LoadTarget),
            "addr": Out(load_address_bits(config)),
        }
        if tiles is None:
            members["data"] = Out(WORD)
        else:
            members["enable"] = Out(tiles)
            members["data"] = Out(WORD).array(tiles)
        super().__init__(members)

    @property
    def tiles(self):
        return self._tiles

    def __eq__(self, other):
        return (type(other) is type(self) and other._config == self._config
                and other.tiles == self.tiles)

    def __repr__(self):
        return f"LoadSignature({self._config!r}, tiles={self.tiles})"


class PeekSignature(wiring.Signature):
    """The SRAM peek port, from the reader's point of view: ``data`` in cycle t + 1 is SRAM word
    ``addr`` of cycle t, as it was at the start of cycle t. Only meaningful while the core does
    not run (it shares SRAM read port 0 with the core).

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Gives the SRAM size.
    tiles : :class:`int` or None
        For a mesh: the number of tiles; ``data`` is then one word per tile.

    Members
    -------
    addr : :py:`Out(bits of sram_words - 1)`
    data : :py:`In(32)`, or :py:`In(32).array(tiles)` when ``tiles`` is given
    """

    def __init__(self, config, tiles=None):
        _check_config(config)
        _check_tiles(tiles)
        self._config, self._tiles = config, tiles
        super().__init__({
            "addr": Out(sram_address_bits(config)),
            "data": In(WORD) if tiles is None else In(WORD).array(tiles),
        })

    @property
    def tiles(self):
        return self._tiles

    def __eq__(self, other):
        return (type(other) is type(self) and other._config == self._config
                and other.tiles == self.tiles)

    def __repr__(self):
        return f"PeekSignature({self._config!r}, tiles={self.tiles})"


def core_members(config):
    """The members of :class:`Core` except its links (shared with :class:`hdl.Tile`)."""
    return {
        "load": In(LoadSignature(config)),
        "peek": In(PeekSignature(config)),
        "run": In(1),
        "x": In(POSITION_BITS),
        "y": In(POSITION_BITS),
        "width": In(POSITION_BITS),
        "height": In(POSITION_BITS),
        "halted": Out(1),
        "progress": Out(1),
        "trap_cause": Out(TRAP_CAUSE_BITS),
        "trap_pc": Out(PC_BITS),
        "pc": Out(PC_BITS),
        "counters": Out(WORD).array(NUM_COUNTERS),
    }


class Core(wiring.Component):
    """One core (docs/ARCHITECTURE.md section 9): ``pc``, registers, descriptors, an instruction
    memory of ``config.imem_words`` words read combinationally at ``pc``, an SRAM of
    ``config.sram_words`` words with two synchronous, non-transparent read ports and one write
    port, per-color input queues and output credits on the RAMP links, the vector pipeline
    (:class:`hdl.core_vector.VectorPipeline`), traps and the counters of ``isa.COUNTERS``.

    The core executes while ``run`` is high and it has not halted; cycle 0 is the first cycle
    with ``run`` high. While ``run`` is low it changes no state and counts nothing, except that
    its input queues keep taking the wavelets the router sends and its credit counters the
    credits the router returns (the link protocol of section 3). ``run`` is meant to rise once
    per run: while it is low, SRAM read port 0 serves the peek port.

    Each cycle, from the state at its start: an instruction *issues* when the core runs, has
    not halted, and is not in the second cycle of a ``ld`` or inside a vector instruction. At
    issue it is checked (trap causes in priority order: ``PC_RANGE``, ``ILLEGAL``,
    ``SRAM_RANGE``, ``NO_ROUTE``, ``OPERAND``); a trapping instruction has no effect but
    setting ``halted``, ``trap_cause`` and ``trap_pc`` at the end of the cycle. Scalar
    instructions complete in their issue cycle, except ``ld`` (read issued in the first cycle,
    ``rd`` written at the end of the second), ``recv`` and ``send`` (which issue again every
    cycle until their queue is non-empty / they hold a credit) and ``halt`` (which leaves ``pc``
    at the ``halt``). Vector instructions run through the pipeline and retire in the cycle their
    last element fires in X (n = 0: in the issue cycle).

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        Colors, queue depth, memory sizes.

    Members
    -------
    tx : :py:`Out(LinkSignature(config))`
        Core -> router RAMP input.
    rx : :py:`In(LinkSignature(config))`
        Router RAMP output -> core.
    route_to_core : :py:`In(colors)`
        Bit c: the router's route for color c has RAMP among its outputs.
    route_from_core : :py:`In(colors)`
        Bit c: the router's route for color c accepts RAMP.
    load : :py:`In(LoadSignature(config))`
        Write an instruction or SRAM word while ``run`` is low.
    peek : :py:`In(PeekSignature(config))`
        Read an SRAM word (one cycle later) while ``run`` is low.
    run : :py:`In(1)`
    x, y, width, height : :py:`In(16)`
        This tile's position and the mesh size, for ``tid``.
    halted : :py:`Out(1)`
        The core executed ``halt`` or trapped.
    progress : :py:`Out(1)`
        This cycle an instruction retired or a vector stage fired or moved (for the run's
        no-progress rule, section 10; in a tile, also any wavelet the router sends).
    trap_cause : :py:`Out(3)`
        A :class:`mesh.isa.TrapCause` (0 unless it trapped).
    trap_pc : :py:`Out(14)`
        The pc of the trapping instruction.
    pc : :py:`Out(14)`
    counters : :py:`Out(32).array(len(isa.COUNTERS))`
        The counters, in the order of ``isa.COUNTERS``.

    Attributes
    ----------
    imem, sram : :class:`amaranth.lib.memory.Memory`
    registers : list of 16 :class:`Signal`
        ``r0``..``r15`` (the register file's).
    descriptors : list of 8 :class:`Signal` (:data:`hdl.core_state.DescriptorLayout`)
    retire_valid : :class:`Signal`
        An instruction retires this cycle (halt included; a trapping instruction does not).
    retire_pc : :class:`Signal`
        Its pc.
    trap : :class:`Signal`
        The instruction issuing this cycle traps.
    ld_wait : :class:`Signal`
        In the second cycle of a ``ld``.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        link = LinkSignature(config)
        super().__init__({
            "tx": Out(link),
            "rx": In(link),
            "route_to_core": In(config.colors),
            "route_from_core": In(config.colors),
            **core_members(config),
        })
        self.imem = Memory(shape=WORD, depth=config.imem_words, init=[])
        self.sram = Memory(shape=WORD, depth=config.sram_words, init=[])
        self.decoder = Decoder()
        self.alu = Alu()
        self.regfile = RegisterFile()
        self.descfile = DescriptorFile(config)
        self.ramp = RampPort(config, self.tx, self.rx)
        self.vector = VectorPipeline()
        self.registers = self.regfile.registers
        self.descriptors = self.descfile.descriptors
        self.retire_valid = Signal()
        self.retire_pc = Signal(PC_BITS)
        self.trap = Signal()
        self.ld_wait = Signal()

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        colors = cfg.colors
        m.submodules.imem = imem = self.imem
        m.submodules.sram = sram = self.sram
        m.submodules.decoder = decoder = self.decoder
        m.submodules.alu = alu = self.alu
        m.submodules.regfile = regfile = self.regfile
        m.submodules.descfile = descfile = self.descfile
        m.submodules.ramp = ramp = self.ramp
        m.submodules.vector = vector = self.vector

        imem_read = imem.read_port(domain="comb")
        imem_write = imem.write_port()
        read0 = sram.read_port(transparent_for=())
        read1 = sram.read_port(transparent_for=())
        write = sram.write_port()

        pc, halted = self.pc, self.halted
        ctrl = decoder.ctrl
        cls = ctrl.cls
        run = self.run
        active = Signal()
        issue = Signal()
        m.d.comb += [
            active.eq(run & ~halted),
            issue.eq(active & ~self.ld_wait & ~vector.busy),
            imem_read.addr.eq(pc),
            decoder.word.eq(imem_read.data),
        ]

        # Operands: ra, rb, rs and the "a" register (rd, the stored / sent register, branch ra).
        reg_a, reg_b, reg_c, reg_d = regfile.read_data
        m.d.comb += [index.eq(ctrl[field]) for index, field in zip(regfile.read_index, "abcd")]
        dd, da, db = descfile.read_data
        m.d.comb += [descfile.read_index[0].eq(ctrl.a[:3]), descfile.read_index[1].eq(ctrl.b[:3]),
                     descfile.read_index[2].eq(ctrl.c[:3])]
        ea = Signal(WORD)                     # ra + imm: address, color or descriptor value
        ea_signed = Signal(range(-(1 << 32), 1 << 32))
        m.d.comb += [ea.eq(reg_b + ctrl.imm),
                     ea_signed.eq(reg_b.as_signed() + ctrl.imm.as_signed())]
        color = ea[:5]

        # Trap checks (section 9), for the instruction at pc.
        def to_core(c):      # the router delivers color c (5 bits) to the core
            return (c < colors) & self.route_to_core.bit_select(c, 1)

        def from_core(c):    # the router takes color c from the core
            return (c < colors) & self.route_from_core.bit_select(c, 1)

        def kind(desc, k):
            return desc.kind == int(k)

        mem, fin, fout = isa.Kind.MEM, isa.Kind.FIN, isa.Kind.FOUT
        vec = cls == InstrClass.VECTOR
        src_b, dst, lut, pack = ctrl.v_src_b, ~ctrl.red, ctrl.v_lut, ctrl.v_pack
        acc_dest = dst & ctrl.acc      # acc without red: dd[i] += result, dd read on port 1
        # ILLEGAL: the decoder's checks, and acc (like red) on vpack / vlut or with pack (pack is
        # vpack, or vreq / vlut with field pack).
        illegal = ctrl.illegal | (vec & acc_dest & (lut | pack))
        n = da.length
        pc_range = pc >= cfg.imem_words
        ld_st = (cls == InstrClass.LD) | (cls == InstrClass.ST)
        sram_range = Mux(ld_st, (ea_signed < 0) | (ea_signed >= cfg.sram_words),
                         vec & ((kind(da, mem) & ~da.range_ok)
                                | (src_b & kind(db, mem) & ~db.range_ok)
                                | (dst & kind(dd, mem) & ~dd.range_ok)
                                | (lut & kind(db, mem) & ~db.table_ok)))
        ea_color_ok = ea < colors
        no_route = Mux(cls == InstrClass.RECV, ~(ea_color_ok & to_core(color)),
                   Mux(cls == InstrClass.SEND, ~(ea_color_ok & from_core(color)),
                       vec & ((kind(da, fin) & ~to_core(da.color))
                              | (src_b & kind(db, fin) & ~to_core(db.color))
                              | (dst & kind(dd, fout) & ~from_core(dd.color)))))
        operand = vec & (
            kind(da, fout) | (src_b & kind(db, fout)) | (dst & kind(dd, fin))
            | (lut & (~kind(db, mem) | (db.length == 0)))
            | (src_b & (db.length != n))
            | (dst & ~pack & (dd.length != n))
            | (pack & ((n[:2] != 0) | (dd.length != n[2:])))
            | (src_b & kind(da, fin) & kind(db, fin) & (da.color == db.color))
            | (acc_dest & (~kind(dd, mem) | (src_b & kind(db, mem)))))
        cause = Signal(TRAP_CAUSE_BITS)
        with m.If(pc_range):
            m.d.comb += cause.eq(isa.TrapCause.PC_RANGE)
        with m.Elif(illegal):
            m.d.comb += cause.eq(isa.TrapCause.ILLEGAL)
        with m.Elif(sram_range):
            m.d.comb += cause.eq(isa.TrapCause.SRAM_RANGE)
        with m.Elif(no_route):
            m.d.comb += cause.eq(isa.TrapCause.NO_ROUTE)
        with m.Elif(operand):
            m.d.comb += cause.eq(isa.TrapCause.OPERAND)
        trap, go = self.trap, Signal()
        m.d.comb += [trap.eq(issue & (cause != 0)), go.eq(issue & (cause == 0))]
        with m.If(trap):
            m.d.sync += [halted.eq(1), self.trap_cause.eq(cause), self.trap_pc.eq(pc)]

        # Fabric access: recv takes a wavelet when its queue is non-empty, send sends with a
        # credit; otherwise they issue again next cycle.
        recv = go & (cls == InstrClass.RECV)
        send = go & (cls == InstrClass.SEND)
        recv_take = recv & ramp.nonempty.bit_select(color, 1)
        send_now = send & ramp.credited.bit_select(color, 1)

        # The vector unit.
        identity = Mux(ctrl.max, Const(1 << 31, WORD), Const(0, WORD))
        acc_start = Mux(ctrl.acc, reg_a, identity)
        vec_go = go & vec
        setup = vector.setup
        m.d.comb += [
            vector.enable.eq(run),
            vector.start.eq(vec_go & (n != 0)),
            setup.n.eq(n),
            setup.a_mem.eq(kind(da, mem)),
            setup.a_fin.eq(kind(da, fin)),
            setup.b_mem.eq(src_b & kind(db, mem)),
            setup.b_fin.eq(src_b & kind(db, fin)),
            setup.b_rs.eq(ctrl.v_b_rs),
            setup.d_mem.eq(dst & kind(dd, mem)),
            setup.d_fout.eq(dst & kind(dd, fout)),
            setup.d_acc.eq(acc_dest & kind(dd, mem)),
            setup.d_sat.eq(ctrl.v_acc_sat),
            setup.shift.eq(ctrl.imm6),
            setup.pack.eq(pack),
            setup.lut.eq(lut),
            setup.max.eq(ctrl.max),
            setup.a_base.eq(da.base), setup.a_stride.eq(da.stride),
            setup.b_base.eq(db.base), setup.b_stride.eq(db.stride),
            setup.d_base.eq(dd.base), setup.d_stride.eq(dd.stride),
            setup.lut_base.eq(db.base), setup.lut_length.eq(db.length),
            vector.rs.eq(reg_d),
            vector.acc_start.eq(acc_start),
            vector.a_ready.eq(ramp.nonempty.bit_select(da.color, 1)),
            vector.b_ready.eq(ramp.nonempty.bit_select(db.color, 1)),
            vector.a_head.eq(ramp.heads[da.color]),
            vector.b_head.eq(ramp.heads[db.color]),
            vector.credit.eq(ramp.credited.bit_select(dd.color, 1)),
            vector.rdata0.eq(read0.data),
            vector.rdata1.eq(read1.data),
            vector.alu_result.eq(alu.result),
        ]

        # The ALU: the scalar operands, or stage X's while a vector instruction is in flight.
        m.d.comb += [
            alu.op.eq(ctrl.alu_op),
            alu.shift.eq(ctrl.imm6),
            alu.a.eq(Mux(vector.busy, vector.alu_a, reg_b)),
            alu.b.eq(Mux(vector.busy, vector.alu_b, Mux(ctrl.b_imm, ctrl.imm, reg_c))),
        ]

        # Queues and credits.
        da_onehot = (Const(1, colors) << da.color)[:colors]
        db_onehot = (Const(1, colors) << db.color)[:colors]
        ea_onehot = (Const(1, colors) << color)[:colors]
        m.d.comb += [
            ramp.pop.eq(Mux(recv_take, ea_onehot, 0)
                        | Mux(vector.pop_a, da_onehot, 0) | Mux(vector.pop_b, db_onehot, 0)),
            ramp.send.eq(send_now | vector.send),
            ramp.send_color.eq(Mux(vector.send, dd.color, color)),
            ramp.send_data.eq(Mux(vector.send, vector.send_data, reg_a)),
        ]

        # SRAM ports. Port 0: ld, vector source a, peek (while not running). Port 1: vector
        # source b, the old dd[i] of acc without red, vlut table. Write: st, vector
        # destination, load (while not running).
        ld_go = go & (cls == InstrClass.LD)
        st_go = go & (cls == InstrClass.ST)
        with m.If(run):
            m.d.comb += [
                read0.en.eq(ld_go | vector.read0_en),
                read0.addr.eq(Mux(vector.read0_en, vector.read0_addr, ea)),
                write.en.eq(st_go | vector.write_en),
                write.addr.eq(Mux(vector.write_en, vector.write_addr, ea)),
                write.data.eq(Mux(vector.write_en, vector.write_data, reg_a)),
            ]
        with m.Else():
            load = self.load
            m.d.comb += [
                read0.en.eq(1),
                read0.addr.eq(self.peek.addr),
                write.en.eq(load.valid & (load.target == LoadTarget.SRAM)
                            & (load.addr < cfg.sram_words)),
                write.addr.eq(load.addr),
                write.data.eq(load.data),
                imem_write.en.eq(load.valid & (load.target == LoadTarget.IMEM)
                                 & (load.addr < cfg.imem_words)),
                imem_write.addr.eq(load.addr),
                imem_write.data.eq(load.data),
            ]
        m.d.comb += [
            self.peek.data.eq(read0.data),
            read1.en.eq(run & vector.read1_en),
            read1.addr.eq(vector.read1_addr),
        ]

        # Descriptor updates.
        m.d.comb += [
            descfile.write.eq(go & (cls == InstrClass.DESC)),
            descfile.op.eq(ctrl.desc_op),
            descfile.value.eq(ea),
        ]

        # Register writes (always to field a) and the next pc.
        next_pc = (pc + 1)[:PC_BITS]
        decremented = (reg_a - 1)[:WORD]
        sa, sb = reg_a.as_signed(), reg_b.as_signed()
        taken = Signal()
        with m.Switch(ctrl.cond):
            with m.Case(BranchCond.EQ):
                m.d.comb += taken.eq(reg_a == reg_b)
            with m.Case(BranchCond.NE):
                m.d.comb += taken.eq(reg_a != reg_b)
            with m.Case(BranchCond.LT):
                m.d.comb += taken.eq(sa < sb)
            with m.Case(BranchCond.GE):
                m.d.comb += taken.eq(sa >= sb)
        position = Mux(ctrl.imm[1], Mux(ctrl.imm[0], self.height, self.width),
                       Mux(ctrl.imm[0], self.y, self.x))

        retire = self.retire_valid
        reg_write = regfile.write_en
        reg_value = regfile.write_data
        m.d.comb += regfile.write_index.eq(ctrl.a)
        with m.If(go):
            with m.Switch(cls):
                with m.Case(InstrClass.HALT):
                    m.d.comb += retire.eq(1)
                    m.d.sync += halted.eq(1)
                with m.Case(InstrClass.ALU):
                    m.d.comb += [retire.eq(1), reg_write.eq(1), reg_value.eq(alu.result)]
                    m.d.sync += pc.eq(next_pc)
                with m.Case(InstrClass.LD):
                    m.d.sync += self.ld_wait.eq(1)
                with m.Case(InstrClass.ST, InstrClass.DESC):
                    m.d.comb += retire.eq(1)
                    m.d.sync += pc.eq(next_pc)
                with m.Case(InstrClass.BRANCH):
                    m.d.comb += retire.eq(1)
                    m.d.sync += pc.eq(Mux(taken, ctrl.imm14, next_pc))
                with m.Case(InstrClass.DBNZ):
                    m.d.comb += [retire.eq(1), reg_write.eq(1), reg_value.eq(decremented)]
                    m.d.sync += pc.eq(Mux(decremented != 0, ctrl.imm14, next_pc))
                with m.Case(InstrClass.JAL):
                    m.d.comb += [retire.eq(1), reg_write.eq(1), reg_value.eq(next_pc)]
                    m.d.sync += pc.eq(ctrl.imm14)
                with m.Case(InstrClass.JR):
                    m.d.comb += retire.eq(1)
                    m.d.sync += pc.eq(reg_b[:PC_BITS])
                with m.Case(InstrClass.RECV):
                    with m.If(recv_take):
                        m.d.comb += [retire.eq(1), reg_write.eq(1),
                                     reg_value.eq(ramp.heads[color])]
                        m.d.sync += pc.eq(next_pc)
                with m.Case(InstrClass.SEND):
                    with m.If(send_now):
                        m.d.comb += retire.eq(1)
                        m.d.sync += pc.eq(next_pc)
                with m.Case(InstrClass.TID):
                    m.d.comb += [retire.eq(1), reg_write.eq(1), reg_value.eq(position)]
                    m.d.sync += pc.eq(next_pc)
                with m.Case(InstrClass.VECTOR):
                    with m.If(n == 0):
                        m.d.comb += [retire.eq(1), reg_write.eq(ctrl.red),
                                     reg_value.eq(acc_start)]
                        m.d.sync += pc.eq(next_pc)
        with m.If(run & self.ld_wait):
            m.d.comb += [retire.eq(1), reg_write.eq(1), reg_value.eq(read0.data)]
            m.d.sync += [pc.eq(next_pc), self.ld_wait.eq(0)]
        with m.If(vector.retire):
            m.d.comb += [retire.eq(1), reg_write.eq(ctrl.red), reg_value.eq(vector.red_result)]
            m.d.sync += pc.eq(next_pc)
        m.d.comb += [self.retire_pc.eq(pc), self.progress.eq(retire | vector.progress)]

        # Counters.
        events = {
            "cycles": active,
            "instructions": retire,
            "elements": vector.elements,
            "stall_in": (recv & ~recv_take) | vector.stall_in,
            "stall_out": (send & ~send_now) | vector.stall_out,
            "macs": (go & (cls == InstrClass.ALU) & ctrl.mac)
                    + Mux(vector.elements, ctrl.v_macs, 0),
            "sram_reads": ld_go + vector.reads,
            "sram_writes": st_go | vector.writes,
            "wavelets_in": recv_take + vector.wavelets_in,
            "wavelets_out": send_now | vector.wavelets_out,
        }
        assert list(events) == list(COUNTER_INDEX)
        for name, event in events.items():
            counter = self.counters[COUNTER_INDEX[name]]
            m.d.sync += counter.eq(counter + event)
        return m

"""The core's vector pipeline: stages R, M and X, one element per stage (docs/ARCHITECTURE.md
section 9, "Vector instructions")."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from mesh import isa

from .core_alu import requantize, saturate8

__all__ = ["VectorSetup", "VectorPipeline"]

WORD = isa.WORD_BITS

VectorSetup = data.StructLayout({
    "n": 16,              # da.length
    "a_mem": 1,           # source a (da) is a memory vector ...
    "a_fin": 1,           # ... or a fabric input stream
    "b_mem": 1,           # source b is db, a memory vector ...
    "b_fin": 1,           # ... or a fabric input stream (both 0: b is rs or unused)
    "b_rs": 1,            # operand b is register rs
    "d_mem": 1,           # the destination dd is a memory vector ...
    "d_fout": 1,          # ... or a fabric output stream (both 0 when reducing)
    "d_acc": 1,           # acc without red: X writes old dd[i] + result, the old dd[i] read
    #                       in R on port 1 (d_mem is set, b_mem is not)
    "d_sat": 1,           # with d_acc: the sum saturates to int8 (vreq; isa.accumulate)
    "pack": 1,            # 4 results per destination word (vpack, vreq / vlut with pack)
    "lut": 1,             # vlut: the result is the table word at db.base + lookup_index(a, rs)
    "max": 1,             # a reduction combines with signed max instead of add
    "shift": 6,           # imm6; vlut: > 0 requantizes the index (multiplier rs), 0 adds rs
    "a_base": 16, "a_stride": signed(16),
    "b_base": 16, "b_stride": signed(16),
    "d_base": 16, "d_stride": signed(16),
    "lut_base": 16, "lut_length": 16,
})


class VectorPipeline(wiring.Component):
    """Runs the elements of one vector instruction through stages R, M and X.

    ``start`` is the issue cycle of a vector instruction with n > 0 that does not trap: it is
    the first cycle of stage R. ``setup``, ``rs`` and ``acc_start`` describe the instruction
    and must hold until it retires (the core decodes the instruction at ``pc`` every cycle, and
    nothing else changes registers or descriptors meanwhile). Each cycle, from the state at its
    start, and only while ``enable``:

    1. X *fires* if it holds an element that needs no credit (it does not send) or the core
       holds one for dd.color (``credit``); it writes the result (``write``), sends it
       (``send``) or combines it into the accumulator. An element that must send and has no
       credit counts ``stall_out``.
    2. M *moves* to X if it holds an element and X is empty or fires; for ``vlut`` that issues
       the table read on port 1, at the index of a + rs (``setup.b_rs`` is set: rs is b) or,
       with ``setup.shift`` > 0, of requantize(a, rs, shift) + 128, computed in M by a
       multiplier of its own (:func:`hdl.core_alu.requantize`, the ALU's ``REQ``), clamped
       to the table (:func:`mesh.isa.lookup_index`).
    3. R *fires* the next element (i < n) if M is empty or moves and every fabric input source
       queue is non-empty (``a_ready``, ``b_ready``): it issues the memory reads (port 0 for a,
       port 1 for b, or for dd[i] with ``setup.d_acc``) or takes the queue heads (``pop_a``,
       ``pop_b``). If only the queues stop it, the cycle counts ``stall_in``. With
       ``setup.d_acc`` the old dd[i] travels with the element to X, which writes it plus the
       result (with ``setup.d_sat``, vreq, the signed sum saturated to int8:
       :func:`mesh.isa.accumulate`).

    The element's result is the table word (``vlut``) or the ALU's result (``vpack`` uses
    ``MOV``). With ``setup.pack`` its low byte is lane i mod 4 of the destination word, which
    X writes or sends when i mod 4 = 3 (the three lanes before are kept in ``packed``).

    The instruction retires in the cycle its last element fires in X (``retire``);
    ``red_result`` is then the reduction's final value. The SRAM read ports must hold their
    data while their enable is low (R and the table read only re-read when the data has moved
    on), which is how M and X keep their operands through stalls.

    Members
    -------
    enable : :py:`In(1)`
        The core runs (nothing happens while low).
    start : :py:`In(1)`
    setup : :py:`In(VectorSetup)`
    rs : :py:`In(32)`
        Register rs (operand b when ``setup.b_rs``).
    acc_start : :py:`In(32)`
        The reduction accumulator's start value (rd, or the identity).
    a_ready, b_ready : :py:`In(1)`
        The input queue of da.color / db.color is non-empty.
    a_head, b_head : :py:`In(32)`
        Its head.
    credit : :py:`In(1)`
        The core holds a credit for dd.color.
    rdata0, rdata1 : :py:`In(32)`
        SRAM read port data.
    alu_result : :py:`In(32)`
        The element operation on ``alu_a``, ``alu_b``.
    busy : :py:`Out(1)`
        An instruction is in the pipeline (after its issue cycle, up to its retire cycle).
    read0_en, read1_en : :py:`Out(1)`
    read0_addr, read1_addr : :py:`Out(16)`
    pop_a, pop_b : :py:`Out(1)`
        Take the head of the da.color / db.color queue.
    write_en : :py:`Out(1)`
    write_addr : :py:`Out(16)`
    write_data : :py:`Out(32)`
    send : :py:`Out(1)`
        Send ``send_data`` on dd.color.
    send_data : :py:`Out(32)`
    alu_a, alu_b : :py:`Out(32)`
        Stage X's operands.
    retire : :py:`Out(1)`
    red_result : :py:`Out(32)`
    elements, stall_in, stall_out, writes, wavelets_out : :py:`Out(1)`
        Counter events of this cycle.
    progress : :py:`Out(1)`
        A stage fired or moved this cycle (R fired, M moved or X fired).
    reads, wavelets_in : :py:`Out(2)`
        Counter events of this cycle (up to two).

    Attributes
    ----------
    r_index : :class:`Signal`
        Elements R has fired.
    m_valid, x_valid : :class:`Signal`
        M / X holds an element.
    acc : :class:`Signal`
        The reduction accumulator.
    """

    def __init__(self):
        super().__init__({
            "enable": In(1),
            "start": In(1),
            "setup": In(VectorSetup),
            "rs": In(WORD),
            "acc_start": In(WORD),
            "a_ready": In(1), "b_ready": In(1),
            "a_head": In(WORD), "b_head": In(WORD),
            "credit": In(1),
            "rdata0": In(WORD), "rdata1": In(WORD),
            "alu_result": In(WORD),
            "busy": Out(1),
            "read0_en": Out(1), "read0_addr": Out(16),
            "read1_en": Out(1), "read1_addr": Out(16),
            "pop_a": Out(1), "pop_b": Out(1),
            "write_en": Out(1), "write_addr": Out(16), "write_data": Out(WORD),
            "send": Out(1), "send_data": Out(WORD),
            "alu_a": Out(WORD), "alu_b": Out(WORD),
            "retire": Out(1),
            "red_result": Out(WORD),
            "elements": Out(1), "stall_in": Out(1), "stall_out": Out(1), "writes": Out(1),
            "wavelets_out": Out(1), "reads": Out(2), "wavelets_in": Out(2),
            "progress": Out(1),
        })
        self.r_index = Signal(16)
        self.m_valid = Signal()
        self.x_valid = Signal()
        self.acc = Signal(WORD)

    def elaborate(self, platform):
        m = Module()
        s = self.setup

        # State: R's next element and addresses; M and X registers.
        r_index, addr_a, addr_b, addr_d = self.r_index, Signal(16), Signal(16), Signal(16)
        m_valid, m_last, m_lane = self.m_valid, Signal(), Signal(2)
        m_fin_a, m_fin_b = Signal(WORD), Signal(WORD)
        x_valid, x_last, x_lane = self.x_valid, Signal(), Signal(2)
        x_a, x_b = Signal(WORD), Signal(WORD)
        x_old = Signal(WORD)     # d_acc: the old dd[i], read in R
        acc, packed = self.acc, Signal(24)

        # X.
        x_last_of_word = ~s.pack | (x_lane == 3)
        x_sends = Signal()
        x_fire = Signal()
        value = Signal(WORD)     # the element's result, before packing or accumulating
        summed = Signal(WORD)    # d_acc: old dd[i] + value, mod 2^32 or saturated (d_sat)
        result = Signal(WORD)    # what X writes, sends or reduces
        m.d.comb += [
            x_sends.eq(s.d_fout & x_last_of_word),
            x_fire.eq(self.enable & x_valid & (~x_sends | self.credit)),
            value.eq(Mux(s.lut, self.rdata1, self.alu_result)),
            summed.eq(Mux(s.d_sat, saturate8(x_old.as_signed() + value.as_signed()),
                          x_old + value)),
            result.eq(Mux(s.pack, Cat(packed, value[:8]), Mux(s.d_acc, summed, value))),
            self.alu_a.eq(x_a),
            self.alu_b.eq(x_b),
        ]
        combined = Signal(WORD)
        m.d.comb += combined.eq(Mux(s.max, Mux(acc.as_signed() < result.as_signed(), result, acc),
                                    acc + result))
        writes = x_fire & s.d_mem & x_last_of_word
        m.d.comb += [
            self.write_en.eq(writes),
            self.write_addr.eq(addr_d),
            self.write_data.eq(result),
            self.send.eq(x_fire & x_sends),
            self.send_data.eq(result),
            self.retire.eq(x_fire & x_last),
            self.red_result.eq(combined),
        ]

        # M.
        m_a, m_b = Signal(WORD), Signal(WORD)
        m_move = Signal()
        m.d.comb += [
            m_a.eq(Mux(s.a_mem, self.rdata0, m_fin_a)),
            m_b.eq(Mux(s.b_rs, self.rs, Mux(s.b_mem, self.rdata1, m_fin_b))),
            m_move.eq(self.enable & m_valid & (~x_valid | x_fire)),
        ]
        # vlut: table index = clamp(x, 0, length - 1) of x = (a + rs) mod 2^32 as signed, or
        # with shift > 0 of x = requantize(a, rs, shift) + 128 (isa.lookup_index); b is rs.
        lut_a = Signal(WORD)
        index = Signal(16)
        lut_q = requantize(m, m_a, m_b, s.shift, name="lut")
        m.d.comb += [
            lut_a.eq(Mux(s.shift == 0, m_a + m_b, lut_q + 128)),
            index.eq(Mux(lut_a.as_signed() < 0, 0,
                         Mux(lut_a >= s.lut_length, s.lut_length - 1, lut_a[:16]))),
        ]

        # R.
        r_has = Signal()
        r_can = Signal()
        ready = (~s.a_fin | self.a_ready) & (~s.b_fin | self.b_ready)
        r_fire = Signal()
        read_a = Signal(16)
        read_b = Signal(16)      # port 1's R address: db's element, or dd's with d_acc
        base_1 = Mux(s.d_acc, s.d_base, s.b_base)
        stride_1 = Mux(s.d_acc, s.d_stride, s.b_stride)
        read_1 = s.b_mem | s.d_acc
        m.d.comb += [
            r_has.eq(self.start | (self.busy & (r_index != s.n))),
            r_can.eq(self.enable & r_has & (~m_valid | m_move)),
            r_fire.eq(r_can & ready),
            read_a.eq(Mux(self.start, s.a_base, addr_a)),
            read_b.eq(Mux(self.start, base_1, addr_b)),
            self.read0_en.eq(r_fire & s.a_mem),
            self.read0_addr.eq(read_a),
            self.read1_en.eq((r_fire & read_1) | (m_move & s.lut)),
            self.read1_addr.eq(Mux(s.lut, s.lut_base + index, read_b)),
            self.pop_a.eq(r_fire & s.a_fin),
            self.pop_b.eq(r_fire & s.b_fin),
        ]

        # Counter events.
        m.d.comb += [
            self.elements.eq(x_fire),
            self.stall_out.eq(self.enable & x_valid & x_sends & ~self.credit),
            self.stall_in.eq(r_can & ~ready),
            self.progress.eq(x_fire | m_move | r_fire),
            self.writes.eq(writes),
            self.wavelets_out.eq(x_fire & x_sends),
            self.reads.eq((r_fire & s.a_mem) + (r_fire & read_1) + (m_move & s.lut)),
            self.wavelets_in.eq((r_fire & s.a_fin) + (r_fire & s.b_fin)),
        ]

        # State updates.
        with m.If(self.enable & self.start):   # (R firing in this cycle overrides addr_a/b)
            m.d.sync += [self.busy.eq(1), addr_a.eq(s.a_base), addr_b.eq(base_1),
                         addr_d.eq(s.d_base), acc.eq(self.acc_start)]
        with m.If(r_fire):
            m.d.sync += [
                r_index.eq(r_index + 1),
                addr_a.eq(read_a + s.a_stride),
                addr_b.eq(read_b + stride_1),
                m_valid.eq(1),
                m_last.eq(r_index == s.n - 1),
                m_lane.eq(r_index[:2]),
                m_fin_a.eq(self.a_head),
                m_fin_b.eq(self.b_head),
            ]
        with m.Elif(m_move):
            m.d.sync += m_valid.eq(0)
        with m.If(m_move):
            m.d.sync += [x_valid.eq(1), x_last.eq(m_last), x_lane.eq(m_lane), x_a.eq(m_a),
                         x_b.eq(m_b), x_old.eq(self.rdata1)]
        with m.Elif(x_fire):
            m.d.sync += x_valid.eq(0)
        with m.If(x_fire):
            m.d.sync += acc.eq(combined)
            with m.If(writes):
                m.d.sync += addr_d.eq(addr_d + s.d_stride)
            with m.Switch(x_lane):
                for lane in range(3):
                    with m.Case(lane):
                        m.d.sync += packed[8 * lane:8 * lane + 8].eq(value[:8])
        with m.If(self.retire):
            m.d.sync += [self.busy.eq(0), r_index.eq(0)]
        return m

"""The core's instruction decoder: from a 32-bit instruction word to the control signals of
:class:`hdl.Core`, built from the tables of :mod:`mesh.isa` (docs/ARCHITECTURE.md section 9)."""

from amaranth.hdl import Module
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from mesh import isa

from .core_alu import ALU_OPS, AluOp

__all__ = ["InstrClass", "BranchCond", "DescOp", "ControlLayout", "Decoder"]


class InstrClass(enum.Enum, shape=4):
    """How the core executes an instruction (the class decides the cycle timing)."""
    HALT = 0
    ALU = 1      # rd = ALU(ra, rb or imm)
    LD = 2
    ST = 3
    BRANCH = 4   # beq, bne, blt, bge
    DBNZ = 5
    JAL = 6
    JR = 7
    RECV = 8
    SEND = 9
    TID = 10
    DESC = 11    # dmem, dfin, dfout, dlen, dstride, dadv
    VECTOR = 12


class BranchCond(enum.Enum, shape=2):
    EQ = 0
    NE = 1
    LT = 2
    GE = 3


class DescOp(enum.Enum, shape=3):
    """The descriptor update of a descriptor set-up instruction (``value`` is ra + imm)."""
    MEM = 0      # kind = MEM, base = value mod 2^16
    FIN = 1      # kind = FIN, color = value mod 32
    FOUT = 2     # kind = FOUT, color = value mod 32
    LEN = 3      # length = value mod 2^16
    STRIDE = 4   # stride = value as signed 16-bit
    ADV = 5      # base = (base + value) mod 2^16


_BRANCHES = {"beq": BranchCond.EQ, "bne": BranchCond.NE, "blt": BranchCond.LT,
             "bge": BranchCond.GE}
_DESCRIPTORS = {"dmem": DescOp.MEM, "dfin": DescOp.FIN, "dfout": DescOp.FOUT,
                "dlen": DescOp.LEN, "dstride": DescOp.STRIDE, "dadv": DescOp.ADV}
_CLASSES = {"halt": InstrClass.HALT, "ld": InstrClass.LD, "st": InstrClass.ST,
            "dbnz": InstrClass.DBNZ, "jal": InstrClass.JAL, "jr": InstrClass.JR,
            "recv": InstrClass.RECV, "send": InstrClass.SEND, "tid": InstrClass.TID}


def instruction_class(op):
    """The :class:`InstrClass` of :class:`mesh.isa.Opcode` ``op``."""
    if op.group is isa.Group.ALU:
        return InstrClass.ALU
    if op.group is isa.Group.VECTOR:
        return InstrClass.VECTOR
    if op.group is isa.Group.DESCRIPTOR:
        return InstrClass.DESC
    if op.name in _BRANCHES:
        return InstrClass.BRANCH
    return _CLASSES[op.name]


ControlLayout = data.StructLayout({
    "cls": InstrClass,
    "reserved": 1,     # a reserved opcode
    "illegal": 1,      # the instruction traps with ILLEGAL (reserved opcode or a bad field)
    "alu_op": AluOp,
    "b_imm": 1,        # ALU operand b is the immediate, not rb
    "imm": 32,         # imm18, sign- or zero-extended as the opcode says
    "cond": BranchCond,
    "desc_op": DescOp,
    "mac": 1,          # scalar mul / mulh: one MAC
    # Fields, as encoded.
    "a": 4, "b": 4, "c": 4, "d": 4,
    "imm14": 14, "imm6": 6,
    "bsc": 1, "acc": 1, "red": 1, "max": 1,
    # Vector instructions.
    "v_src_b": 1,      # db is a vector source (a binary op without bsc)
    "v_b_rs": 1,       # operand b is register rs (a binary op with bsc; vreq: the multiplier;
    #                    vlut: the index offset)
    "v_uses_db": 1,    # field c names a descriptor (a vector source or the vlut table)
    "v_lut": 1,
    "v_pack": 1,       # results packed four to a word: vpack, or vreq / vlut with field pack
    "v_acc_sat": 1,    # acc without red saturates the sum to int8 (isa.SATURATING_ACC: vreq)
    "v_macs": 3,       # MACs per element
})


def _field(word, name):
    field = isa.FIELDS[name]
    return word[field.lsb:field.lsb + field.width]


class Decoder(wiring.Component):
    """Combinational decoder: ``ctrl`` describes instruction ``word``.

    ``ctrl.illegal`` is the ``ILLEGAL`` trap check of section 9 (a reserved opcode; a descriptor
    field above 7: the ``d`` of a descriptor set-up instruction, ``da``, ``dd`` when not
    reducing, ``db`` when it names a descriptor; a ``tid`` selector other than 0..3; ``red`` on
    ``vpack`` or ``vlut``, or with ``pack`` on ``vreq``). Every other field is decoded whatever
    the opcode; fields that an instruction does not use are ignored by the core. Bit 9 is
    ``bsc`` (``ctrl.bsc``) or, on ``vreq`` and ``vlut``, ``pack`` (in ``ctrl.v_pack``).

    Members
    -------
    word : :py:`In(32)`
        The instruction word.
    ctrl : :py:`Out(ControlLayout)`
        The decoded control signals.
    """

    def __init__(self):
        super().__init__({
            "word": In(32),
            "ctrl": Out(ControlLayout),
        })

    def elaborate(self, platform):
        m = Module()
        word, ctrl = self.word, self.ctrl
        imm18 = _field(word, "imm18")
        # Fields are read from the word, never back from ctrl: an output computed from other
        # bits of the same output is a false combinational loop to Verilator (UNOPTFLAT),
        # which makes every cycle slower.
        f = {name: _field(word, name)
             for name in ("a", "b", "c", "d", "imm14", "imm6", "bsc", "acc", "red", "max")}
        m.d.comb += [ctrl[name].eq(value) for name, value in f.items()]
        m.d.comb += ctrl.imm.eq(imm18.as_signed())

        with m.Switch(_field(word, "op")):
            for op in isa.OPCODES:
                with m.Case(op.code):
                    cls = instruction_class(op)
                    m.d.comb += ctrl.cls.eq(cls)
                    if op.zero_extend:
                        m.d.comb += ctrl.imm.eq(imm18)
                    if op.name in ALU_OPS:
                        m.d.comb += ctrl.alu_op.eq(ALU_OPS[op.name])
                    if cls is InstrClass.ALU and op.format is isa.Format.I:
                        m.d.comb += ctrl.b_imm.eq(1)
                    if op.name in _BRANCHES:
                        m.d.comb += ctrl.cond.eq(_BRANCHES[op.name])
                    if op.name in _DESCRIPTORS:
                        m.d.comb += ctrl.desc_op.eq(_DESCRIPTORS[op.name])
                        m.d.comb += ctrl.illegal.eq(f["a"][3])
                    if op.name in isa.MACS_PER_SCALAR:
                        m.d.comb += ctrl.mac.eq(1)
                    if op.name == "tid":
                        m.d.comb += ctrl.illegal.eq(imm18 > len(isa.TID_SELECTORS) - 1)
                    if cls is InstrClass.VECTOR:
                        binary = op.name in isa.BINARY_VECTOR
                        lut = op.name == "vlut"
                        # Packing: always on vpack; on vreq and vlut when bit 9 (pack) is set.
                        pack = (_field(word, "pack") if op.name in isa.PACKABLE
                                else op.name == "vpack")
                        src_b = binary & ~f["bsc"]
                        uses_db = src_b | lut
                        m.d.comb += [
                            ctrl.v_src_b.eq(src_b),
                            ctrl.v_b_rs.eq(f["bsc"] if binary else op.name in ("vreq", "vlut")),
                            ctrl.v_uses_db.eq(uses_db),
                            ctrl.v_lut.eq(lut),
                            ctrl.v_pack.eq(pack),
                            ctrl.v_acc_sat.eq(op.name in isa.SATURATING_ACC),
                            ctrl.v_macs.eq(isa.MACS_PER_ELEMENT.get(op.name, 0)),
                        ]
                        bad_field = f["b"][3] | (~f["red"] & f["a"][3]) | (uses_db & f["c"][3])
                        if op.name not in isa.REDUCIBLE:
                            bad_field |= f["red"]
                        if op.name in isa.PACKABLE:
                            bad_field |= pack & f["red"]     # (acc: hdl.Core's check)
                        m.d.comb += ctrl.illegal.eq(bad_field)
            with m.Default():
                m.d.comb += [ctrl.reserved.eq(1), ctrl.illegal.eq(1)]
        return m

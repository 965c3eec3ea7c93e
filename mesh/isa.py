"""The core's instruction set, defined once: fields, formats, opcodes, encodings, semantics and
cycle timing (docs/ARCHITECTURE.md section 9 states the core's cycle; docs/ISA.md is generated
from this module by :func:`isa_markdown` and checked against it by a test).

Every instruction is one 32-bit word. The opcode is bits [31:26]; the other fields depend on the
format (:class:`Format`). Fields that a format does not use must be zero (the assembler writes
zeros; the core ignores them). One bit has two names: bit 9 of the vector format is field ``bsc``
on most vector instructions and field ``pack`` on vreq and vlut (:attr:`Opcode.fields`).

Arithmetic is integer only. :func:`alu` and the other functions at the end of this module are the
reference semantics, written over numpy arrays of uint32 so that the emulator can apply them to
all cores at once; the RTL implements the same functions in gates and is tested against them.
"""

import enum
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WORD_BITS", "NUM_REGISTERS", "NUM_DESCRIPTORS", "MAX_IMEM_WORDS", "Field", "FIELDS",
    "Format", "Group", "Opcode", "OPCODES", "BY_NAME", "BY_CODE", "Kind", "TrapCause",
    "COUNTERS", "TID_SELECTORS", "Instruction", "EncodingError", "encode", "decode",
    "disassemble", "alu", "lanes_op", "dot4", "requantize", "pack4", "lookup_index",
    "accumulate", "SATURATING_ACC",
]

WORD_BITS = 32
NUM_REGISTERS = 16        # r0 reads as zero; writes to it are ignored
NUM_DESCRIPTORS = 8       # d0..d7
MAX_IMEM_WORDS = 1 << 14  # branch targets are 14-bit absolute instruction addresses


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    signed: bool = False
    doc: str = ""

    @property
    def msb(self):
        return self.lsb + self.width - 1

    @property
    def mask(self):
        return (1 << self.width) - 1

    def extract(self, word):
        value = (word >> self.lsb) & self.mask
        if self.signed and value >> (self.width - 1):
            value -= 1 << self.width
        return value

    def limits(self):
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, self.mask


# Bit fields. Formats reuse positions: the 4-bit fields A, B, C, D hold registers or descriptors.
FIELDS = {f.name: f for f in [
    Field("op", 26, 6, doc="opcode"),
    Field("a", 22, 4, doc="rd (result register), the stored/sent register, branch ra, or a "
                          "descriptor (vector destination dd / descriptor written)"),
    Field("b", 18, 4, doc="ra (first source register) or vector source descriptor da"),
    Field("c", 14, 4, doc="rb (second source register) or vector source descriptor db"),
    Field("d", 10, 4, doc="rs: scalar operand register of vector instructions"),
    Field("imm18", 0, 18, signed=True, doc="immediate (sign-extended; zero-extended for "
                                            "andi, ori, xori, lui)"),
    Field("imm14", 0, 14, doc="branch target: absolute instruction address"),
    Field("bsc", 9, 1, doc="vector: operand B is register rs, the same value for every element "
                           "(bit 9 is `pack` on vreq and vlut)"),
    Field("pack", 9, 1, doc="vreq, vlut: pack the results' low bytes four to a word of dd, as "
                            "vpack does (the bit of `bsc`, which these two do not have)"),
    Field("acc", 8, 1, doc="vector: with red, start the reduction from rd instead of the "
                           "identity; without red, add each result to the old dd[i] "
                           "(vreq: saturating to int8)"),
    Field("red", 7, 1, doc="vector: reduce the results into register rd instead of writing dd"),
    Field("max", 6, 1, doc="vector reduction: combine with signed max instead of add"),
    Field("imm6", 0, 6, doc="vector: shift amount of vreq, and of vlut's requantized index"),
]}


class Format(enum.Enum):
    """How an instruction word is laid out (fields used, besides ``op``)."""
    N = ("none", ())
    R = ("rd, ra, rb", ("a", "b", "c"))
    I = ("rd, ra, imm18", ("a", "b", "imm18"))
    B = ("ra, rb, target", ("a", "b", "imm14"))
    J = ("rd, target", ("a", "imm14"))
    D = ("d, ra, imm18", ("a", "b", "imm18"))
    V = ("dd|rd, da, db|rs, flags, imm6", ("a", "b", "c", "d", "bsc", "acc", "red", "max",
                                           "imm6"))   # bsc is pack on vreq, vlut (Opcode.fields)

    def __init__(self, layout, fields):
        self.layout = layout
        self.fields = fields


class Group(enum.Enum):
    """Instruction classes, as docs/ISA.md lists them; the class decides the cycle timing."""
    CONTROL = "Control"
    ALU = "Scalar arithmetic and logic"
    MEMORY = "Scalar memory"
    BRANCH = "Branches and loops"
    FABRIC = "Scalar fabric access"
    DESCRIPTOR = "Descriptor set-up"
    VECTOR = "Vector"


@dataclass(frozen=True)
class Opcode:
    name: str
    code: int
    format: Format
    group: Group
    syntax: str          # assembly operands, as docs/ISA.md and the assembler show them
    semantics: str       # what it does, in one or two sentences
    cycles: str          # cycle timing (docs/ARCHITECTURE.md section 9 defines the terms)
    zero_extend: bool = False   # imm18 is zero-extended instead of sign-extended
    packs: bool = False  # bit 9 is field pack (results packed as by vpack) instead of bsc

    @property
    def fields(self):
        """The fields of this instruction's words: its format's, bit 9 named ``pack`` instead of
        ``bsc`` on the instructions that may pack their results (vreq, vlut)."""
        if self.packs:
            return tuple("pack" if name == "bsc" else name for name in self.format.fields)
        return self.format.fields

    @property
    def operands(self):
        """The operand names of :attr:`syntax`, optional ones (in brackets, at the end, nested:
        each needs the ones before it) included: ``vlut`` has ('dd', 'da', 'db', 'rs',
        'shift')."""
        text = self.syntax.replace("[", "").replace("]", "")
        return tuple(t.strip() for t in text.split(",") if t.strip())

    @property
    def required(self):
        """How many of :attr:`operands` must be given (the others are zero when left out)."""
        return len([t for t in self.syntax.partition("[")[0].split(",") if t.strip()])


_ONE = "1"
_VEC = "n + 2 (n = da.length; 1 when n = 0), plus stall cycles"

OPCODES = [
    # code 0 is reserved: an all-zero word (for example memory past the end of a program) is an
    # illegal instruction, so running off the end of a program traps instead of running on.
    Opcode("halt", 0x01, Format.N, Group.CONTROL, "",
           "Stop this core. It executes nothing more, and counts no more cycles.", _ONE),

    Opcode("add", 0x02, Format.R, Group.ALU, "rd, ra, rb", "rd = ra + rb (mod 2^32).", _ONE),
    Opcode("sub", 0x03, Format.R, Group.ALU, "rd, ra, rb", "rd = ra - rb (mod 2^32).", _ONE),
    Opcode("mul", 0x04, Format.R, Group.ALU, "rd, ra, rb",
           "rd = low 32 bits of ra * rb.", _ONE),
    Opcode("mulh", 0x05, Format.R, Group.ALU, "rd, ra, rb",
           "rd = high 32 bits of the signed 64-bit product ra * rb.", _ONE),
    Opcode("and", 0x06, Format.R, Group.ALU, "rd, ra, rb", "rd = ra & rb.", _ONE),
    Opcode("or", 0x07, Format.R, Group.ALU, "rd, ra, rb", "rd = ra | rb.", _ONE),
    Opcode("xor", 0x08, Format.R, Group.ALU, "rd, ra, rb", "rd = ra ^ rb.", _ONE),
    Opcode("sll", 0x09, Format.R, Group.ALU, "rd, ra, rb", "rd = ra << (rb & 31).", _ONE),
    Opcode("srl", 0x0A, Format.R, Group.ALU, "rd, ra, rb",
           "rd = ra >> (rb & 31), shifting in zeros.", _ONE),
    Opcode("sra", 0x0B, Format.R, Group.ALU, "rd, ra, rb",
           "rd = ra >> (rb & 31), shifting in the sign bit.", _ONE),
    Opcode("slt", 0x0C, Format.R, Group.ALU, "rd, ra, rb",
           "rd = 1 if ra < rb as signed integers, else 0.", _ONE),
    Opcode("sltu", 0x0D, Format.R, Group.ALU, "rd, ra, rb",
           "rd = 1 if ra < rb as unsigned integers, else 0.", _ONE),
    Opcode("min", 0x0E, Format.R, Group.ALU, "rd, ra, rb", "rd = signed minimum of ra, rb.",
           _ONE),
    Opcode("max", 0x0F, Format.R, Group.ALU, "rd, ra, rb", "rd = signed maximum of ra, rb.",
           _ONE),
    Opcode("clz", 0x10, Format.R, Group.ALU, "rd, ra",
           "rd = number of leading zero bits of ra (32 when ra = 0).", _ONE),
    Opcode("addi", 0x11, Format.I, Group.ALU, "rd, ra, imm", "rd = ra + imm.", _ONE),
    Opcode("andi", 0x12, Format.I, Group.ALU, "rd, ra, imm",
           "rd = ra & imm (imm zero-extended, 0..262143).", _ONE, zero_extend=True),
    Opcode("ori", 0x13, Format.I, Group.ALU, "rd, ra, imm",
           "rd = ra | imm (imm zero-extended).", _ONE, zero_extend=True),
    Opcode("xori", 0x14, Format.I, Group.ALU, "rd, ra, imm",
           "rd = ra ^ imm (imm zero-extended).", _ONE, zero_extend=True),
    Opcode("slli", 0x15, Format.I, Group.ALU, "rd, ra, imm", "rd = ra << (imm & 31).", _ONE),
    Opcode("srli", 0x16, Format.I, Group.ALU, "rd, ra, imm",
           "rd = ra >> (imm & 31), shifting in zeros.", _ONE),
    Opcode("srai", 0x17, Format.I, Group.ALU, "rd, ra, imm",
           "rd = ra >> (imm & 31), shifting in the sign bit.", _ONE),
    Opcode("slti", 0x18, Format.I, Group.ALU, "rd, ra, imm",
           "rd = 1 if ra < imm as signed integers, else 0.", _ONE),
    Opcode("lui", 0x19, Format.I, Group.ALU, "rd, imm",
           "rd = imm << 14 (imm zero-extended): with ori, any 32-bit constant.", _ONE,
           zero_extend=True),

    Opcode("ld", 0x1A, Format.I, Group.MEMORY, "rd, imm(ra)",
           "rd = sram[ra + imm]. Traps if the address is outside the SRAM.", "2"),
    Opcode("st", 0x1B, Format.I, Group.MEMORY, "rs, imm(ra)",
           "sram[ra + imm] = rs (rs is field a). Traps if the address is outside the SRAM.",
           _ONE),

    Opcode("beq", 0x1C, Format.B, Group.BRANCH, "ra, rb, target",
           "Go to target if ra == rb.", _ONE),
    Opcode("bne", 0x1D, Format.B, Group.BRANCH, "ra, rb, target",
           "Go to target if ra != rb.", _ONE),
    Opcode("blt", 0x1E, Format.B, Group.BRANCH, "ra, rb, target",
           "Go to target if ra < rb (signed).", _ONE),
    Opcode("bge", 0x1F, Format.B, Group.BRANCH, "ra, rb, target",
           "Go to target if ra >= rb (signed).", _ONE),
    Opcode("dbnz", 0x20, Format.B, Group.BRANCH, "ra, target",
           "Loop: ra = ra - 1, then go to target if the new ra != 0.", _ONE),
    Opcode("jal", 0x21, Format.J, Group.BRANCH, "rd, target",
           "rd = pc + 1, then go to target (call; jr returns).", _ONE),
    Opcode("jr", 0x22, Format.I, Group.BRANCH, "ra",
           "Go to the instruction address in ra (field b).", _ONE),

    Opcode("recv", 0x23, Format.I, Group.FABRIC, "rd, ra, imm",
           "Take the next wavelet of color ra + imm from this core's input queue into rd. "
           "Waits while the queue is empty.", "1, plus stall cycles"),
    Opcode("send", 0x24, Format.I, Group.FABRIC, "rs, ra, imm",
           "Send rs (field a) as a wavelet of color ra + imm to the router. Waits while this "
           "core holds no credit for that color.", "1, plus stall cycles"),
    Opcode("tid", 0x25, Format.I, Group.CONTROL, "rd, imm",
           "rd = this tile's x (imm 0), y (1), the mesh width (2) or height (3); other imm "
           "values are illegal.", _ONE),

    Opcode("dmem", 0x26, Format.D, Group.DESCRIPTOR, "d, ra, imm",
           "d becomes a memory vector: kind = MEM, base = (ra + imm) mod 2^16.", _ONE),
    Opcode("dfin", 0x27, Format.D, Group.DESCRIPTOR, "d, ra, imm",
           "d becomes a fabric input stream: kind = FIN, color = (ra + imm) mod 32.", _ONE),
    Opcode("dfout", 0x28, Format.D, Group.DESCRIPTOR, "d, ra, imm",
           "d becomes a fabric output stream: kind = FOUT, color = (ra + imm) mod 32.", _ONE),
    Opcode("dlen", 0x29, Format.D, Group.DESCRIPTOR, "d, ra, imm",
           "d.length = (ra + imm) mod 2^16.", _ONE),
    Opcode("dstride", 0x2A, Format.D, Group.DESCRIPTOR, "d, ra, imm",
           "d.stride = (ra + imm) as a signed 16-bit value.", _ONE),
    Opcode("dadv", 0x2B, Format.D, Group.DESCRIPTOR, "d, ra, imm",
           "d.base = (d.base + ra + imm) mod 2^16 (step a memory vector along).", _ONE),

    Opcode("vmov", 0x2C, Format.V, Group.VECTOR, "dd, da", "dd[i] = a[i].", _VEC),
    Opcode("vadd", 0x2D, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = a[i] + b[i] (mod 2^32).", _VEC),
    Opcode("vsub", 0x2E, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = a[i] - b[i] (mod 2^32).", _VEC),
    Opcode("vmul", 0x2F, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = low 32 bits of a[i] * b[i].", _VEC),
    Opcode("vmax", 0x30, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = signed maximum of a[i], b[i].", _VEC),
    Opcode("vmin", 0x31, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = signed minimum of a[i], b[i].", _VEC),
    Opcode("vand", 0x32, Format.V, Group.VECTOR, "dd, da, db|rs", "dd[i] = a[i] & b[i].", _VEC),
    Opcode("vor", 0x33, Format.V, Group.VECTOR, "dd, da, db|rs", "dd[i] = a[i] | b[i].", _VEC),
    Opcode("vxor", 0x34, Format.V, Group.VECTOR, "dd, da, db|rs", "dd[i] = a[i] ^ b[i].", _VEC),
    Opcode("vsll", 0x35, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = a[i] << (b[i] & 31).", _VEC),
    Opcode("vsrl", 0x36, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = a[i] >> (b[i] & 31), shifting in zeros.", _VEC),
    Opcode("vsra", 0x37, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = a[i] >> (b[i] & 31), shifting in the sign bit.", _VEC),
    Opcode("vadd8", 0x38, Format.V, Group.VECTOR, "dd, da, db|rs",
           "Per int8 lane: dd[i].k = saturate8(a[i].k + b[i].k).", _VEC),
    Opcode("vsub8", 0x39, Format.V, Group.VECTOR, "dd, da, db|rs",
           "Per int8 lane: dd[i].k = saturate8(a[i].k - b[i].k).", _VEC),
    Opcode("vmul8", 0x3A, Format.V, Group.VECTOR, "dd, da, db|rs",
           "Per int8 lane: dd[i].k = saturate8(a[i].k * b[i].k). Counts 4 MACs.", _VEC),
    Opcode("vmax8", 0x3B, Format.V, Group.VECTOR, "dd, da, db|rs",
           "Per int8 lane: dd[i].k = signed maximum of a[i].k, b[i].k.", _VEC),
    Opcode("vdot4", 0x3C, Format.V, Group.VECTOR, "dd, da, db|rs",
           "dd[i] = sum over lanes k of a[i].k * b[i].k (int8 x int8 into int32): four MACs "
           "per element.", _VEC),
    Opcode("vreq", 0x3D, Format.V, Group.VECTOR, "dd, da, rs, shift",
           "Requantize: dd[i] = saturate8(round(a[i] * rs / 2^shift)) as a sign-extended "
           "int32, rounding half up (see requantize). Counts 1 MAC. `.pack` packs the results "
           "four to a word, as vpack; `.acc` saturates: dd[i] = saturate8(dd[i] + result).",
           _VEC, packs=True),
    Opcode("vpack", 0x3E, Format.V, Group.VECTOR, "dd, da",
           "dd[j] = the low bytes of a[4j], a[4j+1], a[4j+2], a[4j+3] packed as int8 lanes "
           "0..3 (dd.length must be n / 4, and n a multiple of 4).", _VEC),
    Opcode("vlut", 0x3F, Format.V, Group.VECTOR, "dd, da, db[, rs[, shift]]",
           "Table lookup: dd[i] = sram[db.base + clamp(index, 0, db.length - 1)] with index = "
           "a[i] + rs taken mod 2^32 as a signed integer, or with shift > 0 requantize(a[i], "
           "rs, shift) + 128 (see lookup_index; rs is r0 and shift 0 when left out; db is a "
           "memory vector: the table; its stride is not used). `.pack` packs the results four "
           "to a word, as vpack.", _VEC, packs=True),
]

BY_NAME = {op.name: op for op in OPCODES}
BY_CODE = {op.code: op for op in OPCODES}

# Vector instructions whose operand B is a vector (db) or, with bsc, the register rs.
BINARY_VECTOR = frozenset(op.name for op in OPCODES
                          if op.group is Group.VECTOR and "db|rs" in op.syntax)
# Vector instructions that may reduce (red): all but vpack (4:1) and vlut. The same ones may
# accumulate into their destination (acc without red: dd[i] += result[i]).
REDUCIBLE = frozenset(op.name for op in OPCODES
                      if op.group is Group.VECTOR and op.name not in ("vpack", "vlut"))
# Vector instructions that may pack their results (field pack, bit 9): dd[j] gets the low bytes
# of results 4j..4j+3, as vpack packs its elements.
PACKABLE = frozenset(op.name for op in OPCODES if op.packs)
# Vector instructions whose accumulation into the destination (acc without red) saturates to
# int8 instead of wrapping: dd[i] = saturate8(dd[i] + result[i]) (see accumulate), so that
# vreq.acc is a residual connection x = sat8(x + rq(a)).
SATURATING_ACC = frozenset({"vreq"})
# Multiply-accumulates counted per element.
MACS_PER_ELEMENT = {"vdot4": 4, "vmul8": 4, "vmul": 1, "vreq": 1}
MACS_PER_SCALAR = {"mul": 1, "mulh": 1}


class Kind(enum.IntEnum):
    """What a descriptor describes. Reset value: MEM with base, length and stride 0."""
    MEM = 0    # sram[base + i * stride] for i in 0..length-1
    FIN = 1    # `length` wavelets taken from the core's input queue of `color`
    FOUT = 2   # `length` wavelets sent to the router on `color`


class TrapCause(enum.IntEnum):
    """Why a core stopped with a trap. A trap happens in the cycle the instruction would issue;
    the instruction has no effect, and the core halts with ``trap_cause`` and ``trap_pc`` set."""
    NONE = 0
    ILLEGAL = 1        # reserved opcode, descriptor field > 7, tid selector > 3, red or acc on
    #                    vpack/vlut or with pack
    PC_RANGE = 2       # pc outside the instruction memory
    SRAM_RANGE = 3     # a load, store, memory vector or table outside the SRAM
    NO_ROUTE = 4       # a color >= colors, or one the router never delivers to / takes from the core
    OPERAND = 5        # a vector operand of the wrong kind or length


TRAP_TEXT = {
    TrapCause.ILLEGAL: "illegal instruction",
    TrapCause.PC_RANGE: "pc outside the instruction memory",
    TrapCause.SRAM_RANGE: "SRAM address out of range",
    TrapCause.NO_ROUTE: "color with no route to or from this core",
    TrapCause.OPERAND: "vector operand of the wrong kind or length",
}

# Per-core performance counters, in this order everywhere (RTL ports, emulator arrays, reports).
# All are 32-bit and wrap.
COUNTERS = [
    ("cycles", "cycles in which the core had not halted (the halt and trap cycles included)"),
    ("instructions", "instructions retired"),
    ("elements", "vector elements completed (stage X)"),
    ("stall_in", "cycles waiting for a wavelet: recv on an empty queue, or stage R held by an "
                 "empty fabric input queue"),
    ("stall_out", "cycles waiting for a credit: send without one, or stage X holding an element "
                  "for a fabric output without one"),
    ("macs", "multiply-accumulates: 4 per vdot4 and vmul8 element, 1 per vmul and vreq element "
             "and per mul and mulh"),
    ("sram_reads", "SRAM words read (ld, memory vector operands, table lookups, the old dd[i] "
                   "of an accumulate into the destination)"),
    ("sram_writes", "SRAM words written (st, memory vector destinations)"),
    ("wavelets_in", "wavelets taken from the core's input queues"),
    ("wavelets_out", "wavelets sent to the router"),
]

TID_SELECTORS = ("x", "y", "width", "height")


class EncodingError(ValueError):
    """An instruction that cannot be encoded. The message names the operand and the problem."""


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: the opcode and the value of every field of its format (fields
    the format does not use are absent)."""
    opcode: Opcode
    fields: dict

    def __getattr__(self, name):
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None


def encode(name, **fields):
    """The 32-bit word of instruction ``name`` with the given field values (field names as in
    :data:`FIELDS`; missing fields are zero). Raises :class:`EncodingError` naming the field
    that is out of range or not used by the format."""
    op = BY_NAME.get(name)
    if op is None:
        raise EncodingError(f"unknown instruction {name!r}")
    word = op.code << FIELDS["op"].lsb
    for key, value in fields.items():
        if key not in op.fields:
            other = [f for f in op.fields if key in FIELDS
                     and (FIELDS[f].lsb, FIELDS[f].width) == (FIELDS[key].lsb, FIELDS[key].width)]
            if other:
                raise EncodingError(f"{name}: field {key!r} is not part of {name}: its bit "
                                    f"{FIELDS[key].lsb} is field {other[0]!r}")
            raise EncodingError(f"{name}: field {key!r} is not part of format {op.format.name}")
        field = FIELDS[key]
        low, high = field.limits()
        if key == "imm18" and op.zero_extend:
            low, high = 0, (1 << 18) - 1
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                or not low <= value <= high:
            raise EncodingError(f"{name}: {key} must be an integer from {low} to {high}, "
                                f"not {value!r}")
        word |= (int(value) & field.mask) << field.lsb
    return word


def decode(word):
    """The :class:`Instruction` of a 32-bit word, or None for a reserved opcode."""
    op = BY_CODE.get(FIELDS["op"].extract(word))
    if op is None:
        return None
    values = {}
    for key in op.fields:
        field = FIELDS[key]
        if key == "imm18" and op.zero_extend:
            values[key] = word & field.mask
        else:
            values[key] = field.extract(word)
    return Instruction(op, values)


def disassemble(word):
    """Assembly text for one instruction word (``.word 0x...`` for a reserved opcode)."""
    ins = decode(word)
    if ins is None:
        return f".word 0x{word:08x}"
    op, f = ins.opcode, ins.fields
    r = lambda n: f"r{n}"   # noqa: E731
    d = lambda n: f"d{n}"   # noqa: E731
    fmt = op.format
    if fmt is Format.N:
        return op.name
    if fmt is Format.R:
        if op.name == "clz":
            return f"clz {r(f['a'])}, {r(f['b'])}"
        return f"{op.name} {r(f['a'])}, {r(f['b'])}, {r(f['c'])}"
    if fmt is Format.I:
        if op.name == "ld":
            return f"ld {r(f['a'])}, {f['imm18']}({r(f['b'])})"
        if op.name == "st":
            return f"st {r(f['a'])}, {f['imm18']}({r(f['b'])})"
        if op.name == "jr":
            return f"jr {r(f['b'])}"
        if op.name in ("lui", "tid"):
            return f"{op.name} {r(f['a'])}, {f['imm18']}"
        return f"{op.name} {r(f['a'])}, {r(f['b'])}, {f['imm18']}"
    if fmt is Format.B:
        if op.name == "dbnz":
            return f"dbnz {r(f['a'])}, {f['imm14']}"
        return f"{op.name} {r(f['a'])}, {r(f['b'])}, {f['imm14']}"
    if fmt is Format.J:
        return f"jal {r(f['a'])}, {f['imm14']}"
    if fmt is Format.D:
        return f"{op.name} {d(f['a'])}, {r(f['b'])}, {f['imm18']}"
    # Vector.
    name = op.name
    if f["red"]:
        name += ".max" if f["max"] else ".sum"
    if f["acc"]:
        name += ".acc"        # with .sum/.max: start from rd; alone: dd[i] += result
    if f.get("pack"):
        name += ".pack"       # vreq, vlut: four results to a word of dd, as vpack
    dest = r(f["a"]) if f["red"] else d(f["a"])
    operands = [dest, d(f["b"])]
    if op.name == "vreq":
        operands += [r(f["d"]), str(f["imm6"])]
    elif op.name == "vlut":
        operands.append(d(f["c"]))
        if f["imm6"]:
            operands += [r(f["d"]), str(f["imm6"])]   # the requantized index: rs, shift
        elif f["d"]:
            operands.append(r(f["d"]))      # the index offset rs (r0 when left out)
    elif op.name in BINARY_VECTOR:
        operands.append(r(f["d"]) if f["bsc"] else d(f["c"]))
    return f"{name} {', '.join(operands)}"


# Reference semantics ---------------------------------------------------------------------------
# Values are numpy uint32 arrays (or scalars); results are uint32 arrays of the same shape.

def _s32(x):
    return np.asarray(x, dtype=np.uint32).view(np.int32).astype(np.int64)


def _u32(x):
    return (np.asarray(x, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _lanes(x):
    """(..., 4) signed int8 lanes of packed words; lane k is bits [8k+7:8k]."""
    x = np.asarray(x, dtype="<u4")               # little-endian: byte k is lane k
    flat = np.ascontiguousarray(x).reshape(-1)
    return flat.view(np.int8).reshape(x.shape + (4,)).astype(np.int64)


def _pack_lanes(lanes):
    lanes = np.asarray(lanes, dtype=np.int64) & 0xFF
    return _u32(sum(lanes[..., k] << (8 * k) for k in range(4)))


def _clz(x):
    x = np.asarray(x, dtype=np.uint32)
    out = np.full(x.shape, 32, dtype=np.int64)
    nonzero = x != 0
    # floor(log2) through float64 is exact for 32-bit integers.
    out[nonzero] = 31 - np.floor(np.log2(x[nonzero].astype(np.float64))).astype(np.int64)
    return out


def _mulh(a, b):
    """High 32 bits of the signed 64-bit product, split into 16-bit halves to stay in int64."""
    sa, sb = _s32(a), _s32(b)
    return _u32(((sa >> 16) * sb + (((sa & 0xFFFF) * sb) >> 16)) >> 16)


def _shift(b):
    return (np.asarray(b, dtype=np.uint32) & np.uint32(31)).astype(np.int64)


# One function per operation, on uint32 arrays. Scalar and vector forms share them.
_OPERATIONS = {
    "mov": lambda a, b: np.array(a, dtype=np.uint32),
    "add": lambda a, b: _u32(_s32(a) + _s32(b)),
    "sub": lambda a, b: _u32(_s32(a) - _s32(b)),
    "mul": lambda a, b: _u32(_s32(a) * _s32(b)),
    "mulh": _mulh,
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "sll": lambda a, b: _u32(a.astype(np.int64) << _shift(b)),
    "srl": lambda a, b: _u32(a.astype(np.int64) >> _shift(b)),
    "sra": lambda a, b: _u32(_s32(a) >> _shift(b)),
    "slt": lambda a, b: (_s32(a) < _s32(b)).astype(np.uint32),
    "sltu": lambda a, b: (a < b).astype(np.uint32),
    "min": lambda a, b: _u32(np.minimum(_s32(a), _s32(b))),
    "max": lambda a, b: _u32(np.maximum(_s32(a), _s32(b))),
    "clz": lambda a, b: _u32(_clz(a)),
    "lui": lambda a, b: _u32(b.astype(np.int64) << 14),
    "add8": lambda a, b: lanes_op("vadd8", a, b),
    "sub8": lambda a, b: lanes_op("vsub8", a, b),
    "mul8": lambda a, b: lanes_op("vmul8", a, b),
    "max8": lambda a, b: lanes_op("vmax8", a, b),
    "dot4": lambda a, b: dot4(a, b),
}
# Instruction name -> operation: immediate forms and vector forms share their base's.
_OPERATION_OF = {name: name for name in _OPERATIONS}
_OPERATION_OF.update({f"{name}i": name for name in ("add", "and", "or", "xor", "sll", "srl",
                                                    "sra", "slt")})
_OPERATION_OF.update({f"v{name}": name for name in _OPERATIONS if f"v{name}" in BY_NAME})


def alu(name, a, b):
    """The result of scalar ALU instruction or vector element operation ``name`` on 32-bit
    inputs (uint32 words or signed integers, taken as two's complement words; immediate forms
    take the extended immediate as ``b``; unary ones ignore ``b``).
    vreq, vpack and vlut are not element-wise in this sense: see :func:`requantize`,
    :func:`pack4` and :func:`lookup_index`."""
    try:
        operation = _OPERATIONS[_OPERATION_OF[name]]
    except KeyError:
        raise ValueError(f"alu: no element semantics for {name!r}") from None
    return operation(_word(a), _word(b))


def _word(value):
    """``value`` (uint32 words, or signed integers such as a sign-extended immediate) as uint32
    two's complement words."""
    value = np.asarray(value)
    if value.dtype == np.uint32:
        return value
    return (value.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def lanes_op(name, a, b):
    """Packed int8 lane ops with saturation (vadd8, vsub8, vmul8) or signed max (vmax8)."""
    la, lb = _lanes(a), _lanes(b)
    if name == "vadd8":
        r = la + lb
    elif name == "vsub8":
        r = la - lb
    elif name == "vmul8":
        r = la * lb
    elif name == "vmax8":
        r = np.maximum(la, lb)
    else:
        raise ValueError(f"lanes_op: {name!r} is not a lane op")
    return _pack_lanes(np.clip(r, -128, 127))


def dot4(a, b):
    """Sum over the four int8 lanes of a[k] * b[k], as an int32 (never overflows)."""
    return _u32((_lanes(a) * _lanes(b)).sum(axis=-1))


def requantize(a, multiplier, shift):
    """saturate8(floor(a * multiplier / 2^shift + 1/2)), sign-extended to 32 bits.

    Computed exactly as (p >> shift) + bit (shift - 1) of p, where p is the signed 64-bit
    product (no rounding term when shift = 0); that equals rounding half up and cannot
    overflow. ``shift`` is 0..63."""
    p = _s32(a) * _s32(multiplier)          # exact: |p| <= 2^62
    shift = np.asarray(shift, dtype=np.int64)
    q = p >> shift
    round_bit = np.where(shift > 0, (p >> np.maximum(shift - 1, 0)) & 1, 0)
    return _u32(np.clip(q + round_bit, -128, 127))


def pack4(a0, a1, a2, a3):
    """A packed output word (vpack, and vreq / vlut with pack): the low bytes of four results
    as lanes 0..3."""
    return _pack_lanes(np.stack([_s32(v) for v in (a0, a1, a2, a3)], axis=-1))


def lookup_index(a, table_length, offset=0, shift=0):
    """vlut's table index, clamped to 0..table_length - 1: with ``shift`` = 0, s32((a + offset)
    mod 2^32), where ``offset`` is register rs (r0, zero, when the assembly leaves it out);
    with ``shift`` > 0 (vlut's imm6), requantize(a, offset, shift) + 128: rs is then the
    requantize multiplier and the index an int8 moved to 0..255."""
    shift = np.asarray(shift, dtype=np.int64)
    index = _s32(_u32(_word(a).astype(np.int64) + _word(offset).astype(np.int64)))
    if np.any(shift > 0):
        requantized = _s32(requantize(a, _word(offset), shift)) + 128
        index = np.where(shift > 0, requantized, index)
    return np.clip(index, 0, np.asarray(table_length, dtype=np.int64) - 1)


def accumulate(old, result, saturate=False):
    """The word an accumulation into the destination (acc without red) writes: old + result
    mod 2^32, or where ``saturate`` (the instructions of :data:`SATURATING_ACC`, vreq)
    saturate8(s32(old) + s32(result)) as a sign-extended int32 (the sum taken exactly, then
    clamped to -128..127)."""
    wrapped = _u32(_word(old).astype(np.int64) + _word(result).astype(np.int64))
    saturate = np.asarray(saturate, dtype=bool)
    if not np.any(saturate):
        return wrapped
    clamped = _u32(np.clip(_s32(_word(old)) + _s32(_word(result)), -128, 127))
    return np.where(saturate, clamped, wrapped)


# docs/ISA.md ------------------------------------------------------------------------------------
# The reference page is generated from the definitions above (tests/test_isa.py checks that the
# committed file is current): ``python -m mesh.isa`` rewrites it.

KIND_TEXT = {
    Kind.MEM: "a memory vector: element i is sram[base + i * stride], for i < length",
    Kind.FIN: "a fabric input stream: `length` wavelets taken from the core's input queue of "
              "`color`",
    Kind.FOUT: "a fabric output stream: `length` wavelets sent to the router on `color`",
}

TRAP_WHEN = {
    TrapCause.ILLEGAL: "a reserved opcode; a descriptor field (dd, da, db) above 7; a `tid` "
                       "selector above 3; `red` or `acc` set on `vpack` or `vlut`, or "
                       "together with `pack` on `vreq`",
    TrapCause.PC_RANGE: "`pc` >= `imem_words`",
    TrapCause.SRAM_RANGE: "a `ld`/`st` address outside the SRAM; a memory vector whose first or "
                          "last element is outside it; a `vlut` table whose last word is "
                          "outside it",
    TrapCause.NO_ROUTE: "a `recv` or fabric input on a color >= `colors` or whose route at this "
                        "tile does not deliver to RAMP; a `send` or fabric output on a color "
                        ">= `colors` or whose route does not accept RAMP",
    TrapCause.OPERAND: "a FOUT source; a FIN destination (not reducing); a `vlut` table that is "
                       "not MEM or is empty; an operand or destination whose length differs "
                       "from da.length (for the destination of `vpack` or of a `.pack` "
                       "instruction: n / 4, with n a multiple of 4); two FIN sources "
                       "on the same color; `acc` without `red` (accumulate into dd) when dd is "
                       "not MEM or operand b is a memory vector",
}

ISA_MD_PATH = "docs/ISA.md"


def _cell(text):
    return str(text).replace("|", "\\|")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _layout(fmt):
    """The bit layout of a format, most significant field first, unused bits shown as 0."""
    used = sorted((FIELDS[name] for name in ("op",) + fmt.fields), key=lambda f: -f.msb)
    # A field some instructions of the format name otherwise (bit 9: bsc, or pack) shows both.
    names = {name: "/".join(dict.fromkeys(op.fields[k] for op in OPCODES if op.format is fmt))
             for k, name in enumerate(fmt.fields)}
    parts, bit = [], WORD_BITS - 1
    for field in used:
        if field.msb < bit:
            parts.append(f"0[{bit}:{field.msb + 1}]")
        span = f"{field.msb}:{field.lsb}" if field.width > 1 else f"{field.lsb}"
        parts.append(f"{names.get(field.name, field.name)}[{span}]")
        bit = field.lsb - 1
    if bit >= 0:
        parts.append(f"0[{bit}:0]" if bit else "0[0]")
    return " ".join(parts)


def isa_markdown():
    """The text of docs/ISA.md: the instruction set as tables, generated from this module."""
    from .asm import REFERENCE_MARKDOWN   # the assembler's own reference (imported late: it
    #                                       imports this module)
    out = []
    add = out.append
    add("# Instruction set\n")
    add("<!-- Generated from mesh/isa.py by `python -m mesh.isa`; do not edit by hand. -->\n")
    add(f"Each tile's core (docs/ARCHITECTURE.md section 9) has {NUM_REGISTERS} registers "
        f"`r0`..`r{NUM_REGISTERS - 1}` of {WORD_BITS} bits (`r0` reads as zero; writes to it "
        f"are ignored), {NUM_DESCRIPTORS} descriptors `d0`..`d{NUM_DESCRIPTORS - 1}`, an "
        f"instruction memory of `imem_words` words and a data SRAM of `sram_words` words. "
        f"Arithmetic is integer only; values are {WORD_BITS}-bit words, signed (two's "
        f"complement) where the semantics say so. The cycle counts below use the terms of "
        f"section 9 (issue, stall cycles, the vector stages R, M, X).\n")

    add("## Instruction word\n")
    add(f"Every instruction is one {WORD_BITS}-bit word. The opcode is bits "
        f"[{FIELDS['op'].msb}:{FIELDS['op'].lsb}]; the other fields depend on the format. "
        f"Fields a format does not use must be zero (the assembler writes zeros). Branch "
        f"targets are absolute instruction addresses (below {MAX_IMEM_WORDS}).\n")
    add(_table(["field", "bits", "signed", "meaning"],
               [[f"`{f.name}`", f"{f.msb}:{f.lsb}" if f.width > 1 else str(f.lsb),
                 "yes" if f.signed else "no", f.doc] for f in FIELDS.values()]) + "\n")

    add("## Formats\n")
    add(_table(["format", "operands", "layout"],
               [[f"{fmt.name}", f"`{fmt.layout}`", f"`{_layout(fmt)}`"] for fmt in Format])
        + "\n")
    add("`andi`, `ori`, `xori` and `lui` zero-extend `imm18`; every other instruction "
        "sign-extends it.\n")

    add("## Descriptors\n")
    add("A descriptor names a vector operand: its kind, base address (16 bits), length "
        "(16 bits), stride (16 bits, signed) and color (5 bits). Reset value: MEM with base, "
        "length and stride 0. The descriptor set-up instructions write one field each.\n")
    add(_table(["kind", "value", "meaning"],
               [[f"`{kind.name}`", kind.value, KIND_TEXT[kind]] for kind in Kind]) + "\n")

    add("## Instructions\n")
    add("Operands: `rd` the result register; `ra`, `rb` source registers; `rs` a register "
        "whose value is stored, sent or used as a scalar; `imm` the immediate; `target` a "
        "label or instruction address; `d`, `dd`, `da`, `db` descriptors; `a[i]`, `b[i]` the "
        "elements of the vector operands.\n")
    for group in Group:
        ops = [op for op in OPCODES if op.group is group]
        add(f"### {group.value}\n")
        add(_table(["mnemonic", "opcode", "format", "operands", "semantics", "cycles"],
                   [[f"`{op.name}`", f"0x{op.code:02X}", op.format.name,
                     f"`{op.syntax}`" if op.syntax else "", op.semantics, op.cycles]
                    for op in ops]) + "\n")
        if group is Group.CONTROL:
            add("`tid` selectors: " + ", ".join(f"{i} = {name}" for i, name
                                              in enumerate(TID_SELECTORS)) + ".\n")

    add("## Vector suffixes and operands\n")
    reducible = ", ".join(f"`{name}`" for name in sorted(REDUCIBLE, key=lambda n: BY_NAME[n].code))
    binary = ", ".join(f"`{name}`" for name in sorted(BINARY_VECTOR, key=lambda n: BY_NAME[n].code))
    packable = " and ".join(f"`{name}`" for name in sorted(PACKABLE,
                                                            key=lambda n: BY_NAME[n].code))
    saturating = " and ".join(f"`{name}`" for name in sorted(SATURATING_ACC))
    add(f"* **Scalar operand.** In {binary}, operand `db|rs` is either a descriptor (`vadd d2, "
        f"d0, d1`) or a register, the same value for every element (`vadd d2, d0, r3`: field "
        f"`bsc` set, the register in field `d`).\n"
        f"* **Reduction.** `.sum` or `.max` (field `red`, and `max` for `.max`) combines every "
        f"element's result into register `rd` instead of writing `dd`: with add mod 2^32, "
        f"or signed max. Allowed on {reducible}.\n"
        f"* **Accumulate.** `.acc` (field `acc`) on the same instructions. With `.sum` or "
        f"`.max` it starts the reduction from the value of `rd` instead of the identity (0 "
        f"for `.sum`, -2^31 for `.max`): `vdot4.sum.acc r1, d0, d1` adds a dot product to r1. "
        f"Alone it accumulates into the destination: dd[i] = dd[i] + result[i] (mod 2^32), "
        f"result[i] being what the instruction would otherwise write; on {saturating} the sum "
        f"saturates instead: dd[i] = saturate8(dd[i] + result[i]), the old word and the "
        f"requantized value added as signed integers and clamped to -128..127 (sign-extended), "
        f"so `vreq.acc d1, d0, r2, 7` is a residual connection x = sat8(x + rq(a)). The old "
        f"dd[i] is read "
        f"in stage R of element i on read port 1, so dd must be a memory vector and operand "
        f"b must not be one (b is a register, a fabric input stream, or absent); the cycles "
        f"are unchanged. `vdot4.acc d2, d0, r3` does d2[i] += dot4(d0[i], r3): four MACs per "
        f"cycle with two reads and one write. The old dd[i] is the word at the start of the "
        f"R cycle, so with a destination of stride 0 element i does not see the writes of "
        f"elements i - 1 and i - 2 unless R waited for a wavelet (docs/ARCHITECTURE.md "
        f"section 9).\n"
        f"* **Pack.** `.pack` (field `pack`, bit 9, which is `bsc` on the other vector "
        f"instructions) on {packable} packs the results as `vpack` packs its elements: "
        f"dd[j] = the low bytes of results 4j, 4j+1, 4j+2, 4j+3 as int8 lanes 0..3, written "
        f"(or sent) when element 4j+3 completes; dd.length must be n / 4 and n a multiple of "
        f"4. The cycles are those of the plain instruction: n elements, n / 4 writes or "
        f"wavelets. `vreq.pack d1, d0, r2, 7` requantizes to int8 and packs in one pass. "
        f"`.pack` cannot go with `.sum`, `.max` or `.acc` (ILLEGAL). `vpack` is the same "
        f"packing of the elements themselves.\n"
        f"* **Table offset.** `vlut dd, da, db, rs` adds register rs (field `d`) to every index "
        f"before the clamp: index = clamp(s32((a[i] + rs) mod 2^32), 0, db.length - 1). Left "
        f"out, rs is r0. A table of the 256 int8 values -128..127 stored at entries 0..255 "
        f"is looked up with rs = 128.\n"
        f"* **Requantized index.** `vlut dd, da, db, rs, shift` with shift > 0 (field `imm6`, "
        f"0 when left out) requantizes the index first: index = clamp(requantize(a[i], rs, "
        f"shift) + 128, 0, db.length - 1), rs being the multiplier, as in `vreq`; a table of "
        f"256 entries is indexed by the int8 value, -128 at entry 0 (`vlut d2, d0, d1, r3, "
        f"12` is vreq and the int8 table lookup in one pass). The cycles and counters are "
        f"those of the plain `vlut` (no MAC is counted). With shift 0 the index is a[i] + rs "
        f"as above.\n"
        "* **Multiply-accumulates** counted per element: "
        + ", ".join(f"`{name}` {n}" for name, n in MACS_PER_ELEMENT.items())
        + "; per scalar instruction: "
        + ", ".join(f"`{name}` {n}" for name, n in MACS_PER_SCALAR.items()) + ".\n"
        "* **Lanes.** The int8 instructions see a word as four signed 8-bit lanes; lane k is "
        "bits [8k+7:8k]. `saturate8` clamps to -128..127.\n")

    add("## Traps\n")
    add("A trap happens in the cycle the instruction would issue: the instruction has no "
        "effect, and the core halts with `trap_cause` and `trap_pc` set (the run stops at the "
        "end of that cycle).\n")
    add(_table(["cause", "value", "report text", "when"],
               [[f"`{cause.name}`", cause.value, TRAP_TEXT[cause], TRAP_WHEN[cause]]
                for cause in TrapCause if cause is not TrapCause.NONE]) + "\n")

    add("## Counters\n")
    add("Per core, 32 bits each (they wrap), in this order everywhere (RTL ports, emulator "
        "arrays, reports):\n")
    add(_table(["index", "counter", "counts"],
               [[i, f"`{name}`", text] for i, (name, text) in enumerate(COUNTERS)]) + "\n")

    add("## Assembly language\n")
    add(REFERENCE_MARKDOWN)
    return "\n".join(out).rstrip("\n") + "\n"


def _main(argv=None):
    import argparse
    from pathlib import Path
    parser = argparse.ArgumentParser(prog="python -m mesh.isa",
                                     description=f"Write {ISA_MD_PATH} from mesh/isa.py.")
    parser.add_argument("--print", action="store_true", help="print it instead")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if the file is not current")
    args = parser.parse_args(argv)
    from mesh.isa import isa_markdown as markdown   # the package's module, not __main__
    text = markdown()
    path = Path(__file__).resolve().parent.parent / ISA_MD_PATH
    if args.print:
        print(text, end="")
    elif args.check:
        current = path.exists() and path.read_text() == text
        print(f"{path}: {'current' if current else 'out of date'}")
        return 0 if current else 1
    else:
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

"""The instruction set (mesh/isa.py): the opcode table, encode/decode/disassemble, the reference
semantics against plain Python-int definitions written independently here, and docs/ISA.md."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mesh import isa
from mesh.isa import (BY_CODE, BY_NAME, FIELDS, OPCODES, EncodingError, Format, Group, decode,
                      disassemble, encode)

ROOT = Path(__file__).resolve().parent.parent
MASK = 0xFFFFFFFF


# docs/ISA.md -------------------------------------------------------------------------------------

def test_isa_md_is_current():
    committed = (ROOT / "docs" / "ISA.md").read_text()
    assert committed == isa.isa_markdown(), (
        "docs/ISA.md is out of date with mesh/isa.py: regenerate it with "
        "`.venv/bin/python -m mesh.isa` and commit the result")


def test_isa_md_lists_every_instruction_trap_and_counter():
    text = isa.isa_markdown()
    for op in OPCODES:
        assert f"| `{op.name}` | 0x{op.code:02X} | {op.format.name} |" in text
    for cause in isa.TrapCause:
        if cause is not isa.TrapCause.NONE:
            assert f"| `{cause.name}` | {cause.value} | {isa.TRAP_TEXT[cause]} |" in text
    for name, _ in isa.COUNTERS:
        assert f"`{name}`" in text
    for group in Group:
        assert f"### {group.value}" in text


def test_isa_md_example_assembles():
    from mesh.asm import assemble
    text = isa.isa_markdown()
    example = text.split("**Example**")[1].split("```")[1]
    program = assemble(example)
    image = program.image(0, 0)
    assert image.symbols == {"a": 0, "b": 4, "c": 8}
    assert disassemble(image.instructions[-2]) == "vadd d2, d0, d1"


def test_script_prints_the_page(capsys):
    assert isa._main(["--print"]) == 0
    assert capsys.readouterr().out == isa.isa_markdown()


# The opcode table --------------------------------------------------------------------------------

def test_opcode_table_is_consistent():
    assert len(BY_NAME) == len(OPCODES) == len(BY_CODE)
    assert 0 not in BY_CODE, "code 0 is reserved: an all-zero word must be illegal"
    assert all(0 < op.code < 64 for op in OPCODES)
    for op in OPCODES:
        assert not op.zero_extend or op.format is Format.I
        for name in op.fields:
            assert name in FIELDS
        assert not op.packs or op.group is Group.VECTOR
    assert {op.group for op in OPCODES} == set(Group)
    assert isa.PACKABLE == {"vreq", "vlut"}
    assert not isa.PACKABLE & isa.BINARY_VECTOR     # bit 9 is bsc or pack, never both


def test_fields_of_an_instruction_do_not_overlap():
    for op in OPCODES:
        used = 0
        for name in ("op",) + op.fields:
            field = FIELDS[name]
            bits = field.mask << field.lsb
            assert used & bits == 0, (op.name, name)
            used |= bits
        assert used < 1 << 32


def test_bit_9_is_bsc_or_pack():
    """Field pack shares bit 9 with bsc: vreq and vlut have pack, the other vector
    instructions bsc; either way the format's layout is the same."""
    assert (FIELDS["pack"].lsb, FIELDS["pack"].width) == (FIELDS["bsc"].lsb, 1) == (9, 1)
    for op in OPCODES:
        if op.format is Format.V:
            expected = "pack" if op.name in ("vreq", "vlut") else "bsc"
            assert op.fields == tuple(expected if f == "bsc" else f for f in op.format.fields)
        else:
            assert op.fields == op.format.fields
    assert encode("vreq", pack=1) == BY_NAME["vreq"].code << 26 | 1 << 9
    assert encode("vadd", bsc=1) == BY_NAME["vadd"].code << 26 | 1 << 9
    assert decode(encode("vlut", pack=1)).fields["pack"] == 1
    assert "bsc" not in decode(encode("vlut", pack=1)).fields
    assert "pack" not in decode(encode("vmov", bsc=1)).fields
    assert "d[13:10] bsc/pack[9] acc[8]" in isa.isa_markdown()


def test_operands_and_optional_operands():
    assert BY_NAME["vlut"].operands == ("dd", "da", "db", "rs", "shift")
    assert BY_NAME["vlut"].syntax == "dd, da, db[, rs[, shift]]"
    assert BY_NAME["vlut"].required == 3
    assert BY_NAME["ld"].operands == ("rd", "imm(ra)") and BY_NAME["ld"].required == 2
    assert BY_NAME["halt"].operands == () and BY_NAME["halt"].required == 0
    assert all(op.required == len(op.operands) for op in OPCODES if op.name != "vlut")


def test_field_limits():
    assert FIELDS["imm18"].limits() == (-(1 << 17), (1 << 17) - 1)
    assert FIELDS["imm14"].limits() == (0, (1 << 14) - 1)
    assert FIELDS["a"].extract(0b1111 << 22) == 15
    assert FIELDS["imm18"].extract(0x3FFFF) == -1


# Encoding --------------------------------------------------------------------------------------

def field_range(op, name):
    low, high = FIELDS[name].limits()
    if name == "imm18" and op.zero_extend:
        low, high = 0, (1 << 18) - 1
    return low, high


@st.composite
def any_fields(draw, op):
    """Any values of the fields of ``op``'s format (not only those an assembler would write)."""
    values = {}
    for name in op.fields:
        low, high = field_range(op, name)
        values[name] = draw(st.one_of(st.integers(low, high), st.sampled_from([low, high])))
    return values


@given(st.data())
def test_encode_decode_round_trip(data):
    op = data.draw(st.sampled_from(OPCODES))
    fields = data.draw(any_fields(op))
    word = encode(op.name, **fields)
    assert 0 <= word < 1 << 32
    assert word >> 26 == op.code
    ins = decode(word)
    assert ins.opcode is op
    assert ins.fields == fields
    for name, value in fields.items():
        assert getattr(ins, name) == value
    # Bits outside the format's fields are zero.
    used = sum(FIELDS[name].mask << FIELDS[name].lsb for name in ("op",) + op.fields)
    assert word & ~used == 0
    # Disassembly never fails, names the instruction, and is deterministic.
    text = disassemble(word)
    assert text.split()[0].split(".")[0] == op.name
    assert disassemble(word) == text


@pytest.mark.parametrize("op", OPCODES, ids=lambda op: op.name)
def test_missing_fields_are_zero(op):
    assert encode(op.name) == op.code << 26
    assert all(v == 0 for v in decode(op.code << 26).fields.values())


def test_decode_of_a_reserved_opcode():
    assert decode(0) is None
    assert disassemble(0) == ".word 0x00000000"
    assert disassemble(0x03FFFFFF) == ".word 0x03ffffff"


@pytest.mark.parametrize("name, fields, message", [
    ("frobnicate", {}, "unknown instruction 'frobnicate'"),
    ("add", {"imm18": 1}, "add: field 'imm18' is not part of format R"),
    ("halt", {"a": 1}, "halt: field 'a' is not part of format N"),
    ("add", {"a": 16}, "add: a must be an integer from 0 to 15, not 16"),
    ("add", {"b": -1}, "add: b must be an integer from 0 to 15, not -1"),
    ("addi", {"imm18": 1 << 17}, "addi: imm18 must be an integer from -131072 to 131071, not "
                                 "131072"),
    ("addi", {"imm18": -(1 << 17) - 1}, "from -131072 to 131071, not -131073"),
    ("andi", {"imm18": -1}, "andi: imm18 must be an integer from 0 to 262143, not -1"),
    ("lui", {"imm18": 1 << 18}, "lui: imm18 must be an integer from 0 to 262143, not 262144"),
    ("beq", {"imm14": 1 << 14}, "beq: imm14 must be an integer from 0 to 16383, not 16384"),
    ("vreq", {"imm6": 64}, "vreq: imm6 must be an integer from 0 to 63, not 64"),
    ("vadd", {"bsc": 2}, "vadd: bsc must be an integer from 0 to 1, not 2"),
    ("vreq", {"pack": 2}, "vreq: pack must be an integer from 0 to 1, not 2"),
    ("vreq", {"bsc": 1}, "vreq: field 'bsc' is not part of vreq: its bit 9 is field 'pack'"),
    ("vlut", {"bsc": 0}, "vlut: field 'bsc' is not part of vlut: its bit 9 is field 'pack'"),
    ("vpack", {"pack": 1}, "vpack: field 'pack' is not part of vpack: its bit 9 is field 'bsc'"),
    ("vadd", {"pack": 1}, "vadd: field 'pack' is not part of vadd: its bit 9 is field 'bsc'"),
    ("addi", {"pack": 1}, "addi: field 'pack' is not part of format I"),
    ("add", {"a": True}, "add: a must be an integer from 0 to 15, not True"),
    ("add", {"a": 1.0}, "not 1.0"),
    ("add", {"a": "r1"}, "not 'r1'"),
])
def test_encode_errors(name, fields, message):
    with pytest.raises(EncodingError) as info:
        encode(name, **fields)
    assert message in str(info.value)


def test_encode_accepts_numpy_integers():
    assert encode("addi", a=np.int64(1), imm18=np.int32(-1)) == encode("addi", a=1, imm18=-1)


def test_disassemble_formats():
    assert disassemble(encode("ld", a=1, b=2, imm18=-4)) == "ld r1, -4(r2)"
    assert disassemble(encode("st", a=3, b=0, imm18=9)) == "st r3, 9(r0)"
    assert disassemble(encode("jr", b=5)) == "jr r5"
    assert disassemble(encode("clz", a=1, b=2)) == "clz r1, r2"
    assert disassemble(encode("andi", a=1, b=2, imm18=262143)) == "andi r1, r2, 262143"
    assert disassemble(encode("dbnz", a=4, imm14=7)) == "dbnz r4, 7"
    assert disassemble(encode("jal", a=15, imm14=100)) == "jal r15, 100"
    assert disassemble(encode("dstride", a=7, b=1, imm18=-2)) == "dstride d7, r1, -2"
    assert disassemble(encode("vadd", a=2, b=0, c=1)) == "vadd d2, d0, d1"
    assert disassemble(encode("vadd", a=2, b=0, d=3, bsc=1)) == "vadd d2, d0, r3"
    assert disassemble(encode("vdot4", a=1, b=0, c=1, red=1, acc=1)) == \
        "vdot4.sum.acc r1, d0, d1"
    assert disassemble(encode("vmax", a=1, b=0, d=2, bsc=1, red=1, max=1)) == \
        "vmax.max r1, d0, r2"
    assert disassemble(encode("vreq", a=1, b=2, d=3, imm6=7)) == "vreq d1, d2, r3, 7"
    assert disassemble(encode("vlut", a=1, b=2, c=3)) == "vlut d1, d2, d3"
    assert disassemble(encode("vpack", a=1, b=2)) == "vpack d1, d2"
    # acc without red: accumulate into the destination (max without red is ignored).
    assert disassemble(encode("vdot4", a=2, b=0, d=3, bsc=1, acc=1)) == "vdot4.acc d2, d0, r3"
    assert disassemble(encode("vmov", a=1, b=0, acc=1, max=1)) == "vmov.acc d1, d0"
    assert disassemble(encode("vreq", a=1, b=2, d=3, imm6=7, acc=1)) == "vreq.acc d1, d2, r3, 7"
    # pack (vreq, vlut) and vlut's index offset rs, shown only when it is not r0.
    assert disassemble(encode("vreq", a=1, b=2, d=3, imm6=7, pack=1)) == \
        "vreq.pack d1, d2, r3, 7"
    assert disassemble(encode("vlut", a=1, b=2, c=3, pack=1)) == "vlut.pack d1, d2, d3"
    assert disassemble(encode("vlut", a=1, b=2, c=3, d=4)) == "vlut d1, d2, d3, r4"
    assert disassemble(encode("vlut", a=1, b=2, c=3, d=15, pack=1)) == \
        "vlut.pack d1, d2, d3, r15"
    # vlut's shift (imm6, the requantized index): ", rN, S" when it is not 0, r0 included.
    assert disassemble(encode("vlut", a=1, b=2, c=3, d=4, imm6=12)) == "vlut d1, d2, d3, r4, 12"
    assert disassemble(encode("vlut", a=1, b=2, c=3, imm6=1)) == "vlut d1, d2, d3, r0, 1"
    assert disassemble(encode("vlut", a=1, b=2, c=3, d=5, imm6=63, pack=1)) == \
        "vlut.pack d1, d2, d3, r5, 63"
    # bit 9 on vmov / vpack is bsc, which they ignore: not shown.
    assert disassemble(encode("vpack", a=1, b=2, bsc=1)) == "vpack d1, d2"
    # Illegal combinations still disassemble (they trap when run).
    assert disassemble(encode("vreq", a=1, b=2, d=3, red=1, acc=1, pack=1)) == \
        "vreq.sum.acc.pack r1, d2, r3, 0"


# Reference semantics, against plain Python integers ----------------------------------------------

def s32(x):
    x &= MASK
    return x - (1 << 32) if x >> 31 else x


def u32(x):
    return x & MASK


def s8(x):
    x &= 0xFF
    return x - 256 if x >> 7 else x


def lanes(word):
    return [s8(word >> (8 * k)) for k in range(4)]


def pack(values):
    return sum((v & 0xFF) << (8 * k) for k, v in enumerate(values))


def sat8(v):
    return max(-128, min(127, v))


def clz(x):
    return 32 - x.bit_length()


PYTHON_ALU = {
    "add": lambda a, b: u32(a + b),
    "sub": lambda a, b: u32(a - b),
    "mul": lambda a, b: u32(a * b),
    "mulh": lambda a, b: u32((s32(a) * s32(b)) >> 32),
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "sll": lambda a, b: u32(a << (b % 32)),
    "srl": lambda a, b: a >> (b % 32),
    "sra": lambda a, b: u32(s32(a) >> (b % 32)),
    "slt": lambda a, b: int(s32(a) < s32(b)),
    "sltu": lambda a, b: int(a < b),
    "min": lambda a, b: u32(min(s32(a), s32(b))),
    "max": lambda a, b: u32(max(s32(a), s32(b))),
    "clz": lambda a, b: clz(a),
    "lui": lambda a, b: u32(b << 14),
    "mov": lambda a, b: a,
    "add8": lambda a, b: pack([sat8(x + y) for x, y in zip(lanes(a), lanes(b))]),
    "sub8": lambda a, b: pack([sat8(x - y) for x, y in zip(lanes(a), lanes(b))]),
    "mul8": lambda a, b: pack([sat8(x * y) for x, y in zip(lanes(a), lanes(b))]),
    "max8": lambda a, b: pack([max(x, y) for x, y in zip(lanes(a), lanes(b))]),
    "dot4": lambda a, b: u32(sum(x * y for x, y in zip(lanes(a), lanes(b)))),
}

EDGES = [0, 1, 2, 31, 32, 33, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0x7FFFFFFF, 0x80000000,
         0x80000001, 0xFFFFFFFE, 0xFFFFFFFF, 0x01010101, 0x80808080, 0x7F7F7F7F, 0x807F80FF]
word32 = st.one_of(st.integers(0, MASK), st.sampled_from(EDGES))
words = st.lists(word32, min_size=1, max_size=24)


def as_array(values):
    return np.array(values, dtype=np.uint32)


def check_elementwise(numpy_result, expected, what):
    got = [int(v) for v in np.asarray(numpy_result).reshape(-1)]
    assert got == expected, what


@pytest.mark.parametrize("name", sorted(PYTHON_ALU))
@given(a=words, b=words)
def test_alu_matches_python(name, a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    instruction = name if name in BY_NAME else "v" + name
    result = isa.alu(instruction, as_array(a), as_array(b))
    assert result.dtype == np.uint32
    check_elementwise(result, [PYTHON_ALU[name](x, y) for x, y in zip(a, b)], instruction)


@pytest.mark.parametrize("name", sorted(PYTHON_ALU))
def test_alu_on_every_edge_pair(name):
    a = [x for x in EDGES for _ in EDGES]
    b = [y for _ in EDGES for y in EDGES]
    check_elementwise(isa.alu(name if name in BY_NAME else "v" + name, as_array(a), as_array(b)),
                      [PYTHON_ALU[name](x, y) for x, y in zip(a, b)], name)


@pytest.mark.parametrize("name, base", [("addi", "add"), ("andi", "and"), ("ori", "or"),
                                        ("xori", "xor"), ("slli", "sll"), ("srli", "srl"),
                                        ("srai", "sra"), ("slti", "slt")])
@given(a=word32, imm=st.integers(-(1 << 17), (1 << 18) - 1))
def test_immediate_forms(name, base, a, imm):
    # The caller passes the extended immediate as a 32-bit word.
    zero_extend = BY_NAME[name].zero_extend
    if zero_extend and imm < 0 or not zero_extend and imm >= 1 << 17:
        return
    assert int(isa.alu(name, a, u32(imm))) == PYTHON_ALU[base](a, u32(imm))


@pytest.mark.parametrize("name", ["vadd", "vsub", "vmul", "vmax", "vmin", "vand", "vor", "vxor",
                                  "vsll", "vsrl", "vsra", "vmov"])
def test_vector_forms_share_the_scalar_operation(name):
    a, b = as_array(EDGES), as_array(EDGES[::-1])
    assert np.array_equal(isa.alu(name, a, b), isa.alu(name[1:], a, b))


def test_alu_scalars_and_unknown_names():
    assert int(isa.alu("add", 0xFFFFFFFF, 1)) == 0
    assert int(isa.alu("lui", 0, 0x3FFFF)) == 0xFFFFC000
    assert int(isa.alu("clz", 0, 0)) == 32 and int(isa.alu("clz", 1, 0)) == 31
    for name in ("vreq", "vpack", "vlut", "ld", "nope"):
        with pytest.raises(ValueError, match="no element semantics"):
            isa.alu(name, 1, 2)
    with pytest.raises(ValueError, match="not a lane op"):
        isa.lanes_op("vdot4", 1, 2)


def test_clz_of_every_power_of_two_and_its_neighbours():
    values = sorted({v for k in range(32) for v in ((1 << k) - 1, 1 << k, (1 << k) + 1)
                     if v <= MASK} | {MASK})
    check_elementwise(isa.alu("clz", as_array(values), 0), [clz(v) for v in values], "clz")


def test_mulh_extremes():
    cases = [(0x80000000, 0x80000000), (0x80000000, 0x7FFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
             (0x7FFFFFFF, 0x7FFFFFFF), (0xFFFFFFFF, 1), (0x80000000, 1)]
    a, b = zip(*cases)
    check_elementwise(isa.alu("mulh", as_array(a), as_array(b)),
                      [PYTHON_ALU["mulh"](x, y) for x, y in cases], "mulh")
    assert int(isa.alu("mulh", 0x80000000, 0x80000000)) == 0x40000000


def test_lane_saturation():
    assert int(isa.lanes_op("vadd8", pack([127, -128, 100, -100]), pack([1, -1, 100, -100]))) \
        == pack([127, -128, 127, -128])
    assert int(isa.lanes_op("vmul8", pack([-128, -128, 16, -1]), pack([-128, 127, 8, -1]))) \
        == pack([127, -128, 127, 1])
    assert int(isa.lanes_op("vsub8", pack([-128, 127, 0, 5]), pack([1, -1, -128, 5]))) \
        == pack([-128, 127, 127, 0])
    assert int(isa.lanes_op("vmax8", pack([-128, 3, -1, 0]), pack([127, -3, -2, 0]))) \
        == pack([127, 3, -1, 0])


def test_dot4_extremes():
    assert int(isa.dot4(0x80808080, 0x80808080)) == 4 * 128 * 128
    assert int(isa.dot4(0x80808080, 0x7F7F7F7F)) == u32(-4 * 128 * 127)
    assert int(isa.dot4(pack([1, 2, 3, 4]), pack([5, -6, 7, -8]))) == u32(5 - 12 + 21 - 32)


def python_requantize(a, multiplier, shift):
    """saturate8(floor(a * multiplier / 2^shift + 1/2)), computed with exact integer division."""
    p = s32(a) * s32(multiplier)
    rounded = (2 * p + (1 << shift)) // (1 << (shift + 1))
    return u32(sat8(rounded))


@given(a=words, m=word32, shift=st.integers(0, 63))
def test_requantize_matches_python(a, m, shift):
    check_elementwise(isa.requantize(as_array(a), m, shift),
                      [python_requantize(x, m, shift) for x in a], "requantize")


@pytest.mark.parametrize("a, m, shift, expected", [
    (-(1 << 31), -(1 << 31), 0, 127),        # 2^62, saturated
    (-(1 << 31), -(1 << 31), 63, 1),         # 2^62 / 2^63 = 0.5, rounds up
    (-(1 << 31), -(1 << 31), 62, 1),
    (-(1 << 31), (1 << 31) - 1, 63, 0),      # just above -0.5: rounds to 0
    (-(1 << 31), (1 << 31) - 1, 0, -128),
    (-(1 << 31), 1, 31, -1),                 # exactly -1
    (3, 1, 1, 2),                            # 1.5 -> 2
    (-3, 1, 1, -1),                          # -1.5 -> -1 (half up, not away from zero)
    (-1, 1, 1, 0),                           # -0.5 -> 0
    (1, 1, 1, 1),                            # 0.5 -> 1
    (5, 1, 0, 5),                            # shift 0: no rounding term
    (-129, 1, 0, -128),
    (128, 1, 0, 127),
    (1000, 3, 5, 94),                        # 93.75 -> 94
    (0, 12345, 63, 0),
    (1, 1, 63, 0),
])
def test_requantize_cases(a, m, shift, expected):
    assert python_requantize(u32(a), u32(m), shift) == u32(expected)
    assert int(isa.requantize(u32(a), u32(m), shift)) == u32(expected)


def test_requantize_is_vectorized_over_shift_too():
    a = as_array([u32(-3), 3, 1000, u32(-(1 << 31))])
    shifts = np.array([1, 1, 5, 63])
    check_elementwise(isa.requantize(a, as_array([1, 1, 3, u32(-(1 << 31))]), shifts),
                      [u32(-1), 2, 94, 1], "requantize")


@given(st.lists(word32, min_size=4, max_size=4))
def test_pack4(values):
    assert int(isa.pack4(*(as_array([v]) for v in values))[0]) == \
        sum((v & 0xFF) << (8 * k) for k, v in enumerate(values))


@given(a=words, n=st.integers(1, 4096))
def test_lookup_index(a, n):
    check_elementwise(isa.lookup_index(as_array(a), n), [max(0, min(s32(x), n - 1)) for x in a],
                      "lookup_index")


@given(a=words, n=st.integers(1, 4096), offset=word32)
def test_lookup_index_with_an_offset(a, n, offset):
    """index = clamp(s32((a + rs) mod 2^32), 0, n - 1)."""
    check_elementwise(isa.lookup_index(as_array(a), n, np.uint32(offset)),
                      [max(0, min(s32(x + offset), n - 1)) for x in a], "lookup_index")


@pytest.mark.parametrize("a, offset, n, expected", [
    (-128, 128, 256, 0), (127, 128, 256, 255), (-1, 128, 256, 127), (5, -3, 10, 2),
    (2, -3, 10, 0),                          # below 0: clamped
    (0x7FFFFFFF, 1, 10, 0),                  # wraps to -2^31: clamped to 0, not to 9
    (0xFFFFFFFF, 2, 10, 1),                  # -1 + 2
    (0x80000000, 0x80000000, 10, 0),         # wraps to 0
    (100, 0x7FFFFF00, 10, 9),                # large, still positive: clamped to 9
    (100, 0x7FFFFFF0, 10, 0),                # past 2^31 - 1: negative, clamped to 0
])
def test_lookup_index_cases(a, offset, n, expected):
    assert int(isa.lookup_index(u32(a), n, u32(offset))) == expected
    assert int(isa.lookup_index(u32(a), n, offset)) == expected     # signed offsets too


@given(a=words, n=st.integers(1, 300), multiplier=word32, shift=st.integers(1, 63))
def test_lookup_index_requantized(a, n, multiplier, shift):
    """With shift > 0: index = clamp(requantize(a, rs, shift) + 128, 0, n - 1), rs the
    multiplier."""
    check_elementwise(isa.lookup_index(as_array(a), n, np.uint32(multiplier), shift),
                      [max(0, min(s32(python_requantize(x, multiplier, shift)) + 128, n - 1))
                       for x in a], "lookup_index")


@pytest.mark.parametrize("a, rs, shift, n, expected", [
    (100, 1, 3, 256, 13 + 128),              # 12.5 rounds half up to 13
    (-100, 1, 3, 256, -12 + 128),            # -12.5 rounds half up to -12
    (5000, 1, 3, 256, 255),                  # saturates at 127
    (-5000, 1, 3, 256, 0),                   # saturates at -128
    (5000, 1, 3, 200, 199),                  # 255, clamped to the table
    (-1, 1, 1, 256, 128),                    # -0.5 rounds to 0
    (7, -3, 1, 256, -10 + 128),              # a negative multiplier: -21 / 2 = -10.5 -> -10
    (0x7FFFFFFF, 0x7FFFFFFF, 63, 256, 128),  # (2^31 - 1)^2 / 2^63 = 0.49999 -> 0
    (5, 128, 0, 256, 133),                   # shift 0: a + rs, as before
])
def test_lookup_index_requantized_cases(a, rs, shift, n, expected):
    assert int(isa.lookup_index(u32(a), n, u32(rs), shift)) == expected
    assert int(isa.lookup_index(u32(a), n, rs, shift)) == expected


def test_lookup_index_mixes_shifts_per_element():
    """The emulator looks up the elements of many tiles at once: shift per element."""
    index = isa.lookup_index(as_array([100, 100, 100]), np.array([256, 256, 10]),
                             as_array([1, 1, 1]), np.array([0, 3, 3]))
    assert index.tolist() == [101, 141, 9]


@pytest.mark.parametrize("old, result, saturate, expected", [
    (100, 27, True, 127), (100, 28, True, 127), (100, 27, False, 127), (100, 28, False, 128),
    (-100, -28, True, -128), (-100, -29, True, -128), (-100, -29, False, -129),
    (5, -7, True, -2), (5, -7, False, -2),
    (0x7FFFFFFF, 1, True, 127),              # exact: 2^31, not -2^31 (no wrap first)
    (0x7FFFFFFF, 1, False, -(1 << 31)),      # wraps
    (-(1 << 31), -1, True, -128),
    (1000, 0, True, 127), (-1000, 0, True, -128),   # the old word is clamped too
])
def test_accumulate(old, result, saturate, expected):
    """acc without red: old + result mod 2^32, or for vreq saturate8(s32(old) + s32(result))."""
    assert int(isa.accumulate(u32(old), u32(result), saturate)) == u32(expected)
    assert isa.SATURATING_ACC == {"vreq"}


@given(old=words, result=word32, saturate=st.booleans())
def test_accumulate_matches_python(old, result, saturate):
    expected = [u32(sat8(s32(x) + s32(result))) if saturate else u32(x + result) for x in old]
    check_elementwise(isa.accumulate(as_array(old), np.uint32(result), saturate), expected,
                      "accumulate")
    mixed = isa.accumulate(as_array(old), np.uint32(result), np.array([saturate] * len(old)))
    check_elementwise(mixed, expected, "accumulate")

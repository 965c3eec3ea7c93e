"""The text assembler (mesh/asm.py), the Python program builder it parses into (mesh/builder.py),
and the example assembly programs in programs/asm/."""

import inspect
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from emulator import MeshEmulator
from mesh import MeshConfig, Port, isa
from mesh.asm import assemble, assemble_file, assemble_instruction, listing, main
from mesh.builder import (AssemblyError, CoreBuilder, Location, MeshBuilder, operand_count,
                          operand_names)
from mesh.isa import (BINARY_VECTOR, BY_NAME, NUM_DESCRIPTORS, NUM_REGISTERS, OPCODES, PACKABLE,
                      REDUCIBLE, Format, decode, disassemble, encode)

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs" / "asm"


# A complete program, assembled and built through the builder -------------------------------------

PAIR = """\
; two cores: the producer streams its vector east; the consumer adds its own and sums the result
.mesh 2x1
.equ N 8
.equ COLOR 3

.core producer (0,0)
.data v  1, 2, 3, 4, 5, 6, 7, 8
        mem_vector d0, v, N
        fabric_out d1, COLOR, N
        vmov d1, d0                     ; stream v to the consumer
        halt

.core consumer (1,0)
.data w  10, 20, 30, 40
.word    50, 60, 70, 80
.zero out N
.zero total 1
.zero count 1
        fabric_in d0, COLOR, N
        mem_vector d1, w, N
        mem_vector d2, out, N
        vadd d2, d0, d1                 ; out[i] = v[i] + w[i]
        vadd.sum r1, d2, r0             ; r1 = sum(out)
        st r1, total(r0)
        li r2, 0x12345678
        li r3, -5
        addi r4, r0, 3
        mov r5, r0
loop:   addi r5, r5, 1
        dbnz r4, loop
        st r5, count(r0)
        jmp done
        nop
done:   halt

.chain color COLOR (0,0) (1,0)
"""


def build_pair():
    mesh = MeshBuilder(MeshConfig(width=2, height=1), name="pair")
    producer = CoreBuilder("producer")
    v = producer.alloc("v", [1, 2, 3, 4, 5, 6, 7, 8])
    producer.mem_vector(0, v, 8)
    producer.fabric_out(1, 3, 8)
    producer.vmov("d1", "d0")
    producer.halt()
    consumer = CoreBuilder("consumer")
    w = consumer.alloc("w", [10, 20, 30, 40, 50, 60, 70, 80])
    out = consumer.alloc("out", 8)
    consumer.alloc("total", 1)
    consumer.alloc("count", 1)
    consumer.fabric_in(0, 3, 8)
    consumer.mem_vector(1, w, 8)
    consumer.mem_vector(2, out, 8)
    consumer.vadd("d2", "d0", "d1")
    consumer.vadd("r1", "d2", "r0", reduce="sum")
    consumer.st("r1", "total", "r0")
    consumer.li("r2", 0x12345678)
    consumer.li("r3", -5)
    consumer.addi(4, 0, 3)
    consumer.mov(5, 0)
    consumer.label("loop")
    consumer.addi(5, 5, 1)
    consumer.dbnz(4, "loop")
    consumer.st(5, "count", 0)
    consumer.jmp("done")
    consumer.nop()
    consumer.label("done")
    consumer.halt()
    mesh.place(producer, [(0, 0)])
    mesh.place(consumer, [(1, 0)])
    mesh.routes.chain(3, [(0, 0), (1, 0)])
    return mesh.build()


def same_images(a, b):
    assert a.config == b.config
    assert np.array_equal(a.imem(), b.imem())
    assert np.array_equal(a.sram(), b.sram())
    for image_a, image_b in zip(a.images, b.images):
        assert image_a.instructions == image_b.instructions
        assert image_a.symbols == image_b.symbols
        assert {k: list(v) for k, v in image_a.sram.items()} == \
            {k: list(v) for k, v in image_b.sram.items()}
    assert a.routes.masks() == b.routes.masks()
    assert a.routes.open_edges == b.routes.open_edges


def test_program_equals_the_builder_program():
    program = assemble(PAIR, filename="pair.s")
    same_images(program, build_pair())
    assert program.name == "pair"
    consumer = program.image(1, 0)
    assert consumer.symbols["loop"] == 16 and consumer.symbols["done"] == 21
    assert consumer.source[0] == "pair.s:19:9"       # fabric_in: the line of the mnemonic
    assert consumer.source[-1] == "pair.s:34:9"
    assert disassemble(consumer.instructions[9]) == "vadd.sum r1, d2, r0"
    assert disassemble(consumer.instructions[10]) == "st r1, 16(r0)"


def test_program_runs_on_the_emulator():
    result = MeshEmulator(assemble(PAIR)).run(max_cycles=10_000)
    sram = result.sram[1]
    assert list(sram[8:16]) == [11 * i for i in range(1, 9)]
    assert sram[16] == sum(11 * i for i in range(1, 9))
    assert sram[17] == 3
    assert result.registers[1, 2] == 0x12345678 and result.registers[1, 3] == 0xFFFFFFFB


def test_assemble_with_a_given_config_and_from_a_file(tmp_path):
    path = tmp_path / "pair.s"
    path.write_text(PAIR)
    program = assemble_file(path, config=MeshConfig(width=2, height=1, colors=4))
    assert program.config.colors == 4
    same_images(assemble(PAIR, config=MeshConfig(width=2, height=1)), build_pair())
    assert program.image(1, 0).source[0] == f"{path}:19:9"


def test_listing_and_command_line(tmp_path, capsys):
    text = listing(assemble(PAIR))
    assert "; tiles (1,0)" in text and "vadd.sum r1, d2, r0" in text
    path = tmp_path / "bad.s"
    path.write_text(".core main (0,0)\n  addd r1, r2, r3\n")
    assert main([str(path)]) == 1
    assert f"{path}:2:3: unknown instruction 'addd'" in capsys.readouterr().err
    path.write_text(PAIR)
    assert main([str(path)]) == 0
    assert "dbnz r4, 16" in capsys.readouterr().out


# Syntax ------------------------------------------------------------------------------------------

def one_core(body, **kwargs):
    """The image of a single core on tile (0,0) of a 1x1 mesh."""
    return assemble(".mesh 1x1\n.core main (0,0)\n" + body, **kwargs).image(0, 0)


def words_of(body):
    return [disassemble(w) for w in one_core(body).instructions]


def test_numbers_expressions_and_constants():
    image = one_core("""
.equ K 0x10
.equ M K * 2 - 1          ; 31
.data s 9
.data t 0b101, -1, 0o17, 1_000, 0xFFFFFFFF, M, s + 1, (K + 1) * 2
        addi r1, r0, -K
        addi r2, r0, M + t
        ld r3, t+2(r0)
        ld r4, (r5)
        ld r6, -(K)(r7)
        halt
""")
    assert list(image.sram[1]) == [5, 0xFFFFFFFF, 15, 1000, 0xFFFFFFFF, 31, 1, 34]
    assert [disassemble(w) for w in image.instructions] == [
        "addi r1, r0, -16", "addi r2, r0, 32", "ld r3, 3(r0)", "ld r4, 0(r5)",
        "ld r6, -16(r7)", "halt"]


def test_labels_comments_and_case():
    assert words_of("""
start:                      # a label on its own line
  ADDI R1, r0, 2 ; comment
a: b:  BNE r1, r0, start
       Jal r15, b
       jmp a
       halt
""") == ["addi r1, r0, 2", "bne r1, r0, 0", "jal r15, 1", "beq r0, r0, 1", "halt"]


def test_labels_and_data_as_immediates():
    assert words_of("""
.zero buf 4
        li r1, here
        li r2, buf
here:   addi r3, r0, buf
        halt
""") == ["addi r1, r0, 2", "addi r2, r0, 0", "addi r3, r0, 0", "halt"]


def test_vector_syntax():
    assert words_of("""
        vadd d2, d0, d1
        vadd d2, d0, r3
        vdot4.sum r1, d0, d1
        vdot4.sum.acc r1, d0, d1
        VMAX.MAX.ACC r2, d0, r4
        vreq d1, d0, r2, 7
        vreq.sum r1, d0, r2, 0
        vpack d1, d0
        vlut d2, d0, d1
        vmov.max r9, d3
        vdot4.acc d2, d0, r3
        VMOV.ACC d1, d0
        vreq.acc d1, d0, r2, 7
        vadd.acc d2, d0, d1
        vreq.pack d1, d0, r2, 7
        vlut.pack d2, d0, d1
        vlut d2, d0, d1, r5
        VLUT.PACK d2, d0, d1, R15
        vlut d2, d0, d1, r0
        vlut d2, d0, d1, r3, 12
        vlut.pack d2, d0, d1, r4, 63
        vlut d2, d0, d1, r0, 1
        vlut d2, d0, d1, r3, 0
        halt
""") == ["vadd d2, d0, d1", "vadd d2, d0, r3", "vdot4.sum r1, d0, d1",
         "vdot4.sum.acc r1, d0, d1", "vmax.max.acc r2, d0, r4", "vreq d1, d0, r2, 7",
         "vreq.sum r1, d0, r2, 0", "vpack d1, d0", "vlut d2, d0, d1", "vmov.max r9, d3",
         "vdot4.acc d2, d0, r3", "vmov.acc d1, d0", "vreq.acc d1, d0, r2, 7",
         "vadd.acc d2, d0, d1", "vreq.pack d1, d0, r2, 7", "vlut.pack d2, d0, d1",
         "vlut d2, d0, d1, r5", "vlut.pack d2, d0, d1, r15", "vlut d2, d0, d1",
         "vlut d2, d0, d1, r3, 12", "vlut.pack d2, d0, d1, r4, 63", "vlut d2, d0, d1, r0, 1",
         "vlut d2, d0, d1, r3", "halt"]


def test_pack_and_the_vlut_offset_encode_field_pack_and_rs():
    """`.pack` sets bit 9 (field pack of vreq and vlut; bsc stays unset, there is none);
    vlut's optional rs goes to field d (r0 when left out). Assembler and builder agree."""
    word = assemble_instruction("vreq.pack d1, d0, r2, 7")
    assert word == isa.encode("vreq", a=1, b=0, d=2, imm6=7, pack=1)
    assert isa.decode(word).pack == 1 and word >> 9 & 1 == 1
    assert isa.decode(word).red == isa.decode(word).acc == 0
    assert CoreBuilder("c").vreq(1, 0, "r2", 7, pack=True).image().instructions == (word,)
    # vreq's rs is a register operand, not the scalar b of bsc: bit 9 stays clear without pack.
    assert assemble_instruction("vreq d1, d0, r2, 7") >> 9 & 1 == 0
    assert CoreBuilder("c").vreq(1, 0, 5, 3).image().instructions[0] >> 9 & 1 == 0
    word = assemble_instruction("vlut.pack d2, d0, d1, r3")
    assert word == isa.encode("vlut", a=2, b=0, c=1, d=3, pack=1)
    assert CoreBuilder("c").vlut(2, 0, 1, "r3", pack=True).image().instructions == (word,)
    assert CoreBuilder("c").vlut(2, 0, 1, 3).image().instructions == (
        isa.encode("vlut", a=2, b=0, c=1, d=3),)
    # rs left out: field d is 0, the word of every program written before the offset existed.
    assert assemble_instruction("vlut d2, d0, d1") == isa.encode("vlut", a=2, b=0, c=1)
    assert CoreBuilder("c").vlut(2, 0, 1).image().instructions == (
        isa.encode("vlut", a=2, b=0, c=1),)


def test_the_vlut_shift_encodes_imm6():
    """vlut's optional fifth operand, the shift of the requantized index, goes to field imm6
    (0 when left out); assembler, builder and disassembly agree, .pack included."""
    word = assemble_instruction("vlut d2, d0, d1, r3, 12")
    assert word == isa.encode("vlut", a=2, b=0, c=1, d=3, imm6=12)
    assert CoreBuilder("c").vlut(2, 0, 1, "r3", 12).image().instructions == (word,)
    word = assemble_instruction("vlut.pack d2, d0, d1, r3, 7")
    assert word == isa.encode("vlut", a=2, b=0, c=1, d=3, imm6=7, pack=1)
    assert CoreBuilder("c").vlut(2, 0, 1, 3, 7, pack=True).image().instructions == (word,)
    assert isa.disassemble(word) == "vlut.pack d2, d0, d1, r3, 7"
    assert assemble_instruction("vlut d2, d0, d1, r3, 0") == isa.encode("vlut", a=2, b=0, c=1,
                                                                         d=3)


def test_vreq_acc_still_encodes_acc_without_red():
    """vreq.acc (saturating at run time) is the plain acc field: nothing new in the word."""
    word = assemble_instruction("vreq.acc d1, d0, r2, 7")
    assert word == isa.encode("vreq", a=1, b=0, d=2, imm6=7, acc=1)
    assert CoreBuilder("c").vreq(1, 0, "r2", 7, acc=True).image().instructions == (word,)


def test_accumulate_into_the_destination_encodes_acc_without_red():
    """`.acc` alone sets field acc and leaves red clear (dd stays a descriptor); the memory
    operand b of `vadd.acc d2, d0, d1` assembles and traps at run time (OPERAND)."""
    word = assemble_instruction("vdot4.acc d2, d0, r3")
    assert word == isa.encode("vdot4", a=2, b=0, d=3, bsc=1, acc=1)
    assert isa.decode(word).red == 0
    assert CoreBuilder("c").vdot4(2, 0, "r3", acc=True).image().instructions == (word,)


def test_pseudo_instructions():
    assert words_of("""
.zero v 16
        li r1, 5
        li r2, -131072
        li r3, 0x20000           ; 2^17: lui only
        li r4, 0xDEADBEEF
        mov r5, r4
        nop
        jmp 0
        mem_vector d0, v, 16
        mem_vector d1, v + 1, 8, 2
        fabric_in d2, 3, 4
        fabric_out d3, 4, 5
        halt
""") == ["addi r1, r0, 5", "addi r2, r0, -131072", "lui r3, 8", "lui r4, 228022",
         "ori r4, r4, 16111", "addi r5, r4, 0", "add r0, r0, r0", "beq r0, r0, 0",
         "dmem d0, r0, 0", "dlen d0, r0, 16", "dstride d0, r0, 1",
         "dmem d1, r0, 1", "dlen d1, r0, 8", "dstride d1, r0, 2",
         "dfin d2, r0, 3", "dlen d2, r0, 4", "dfout d3, r0, 4", "dlen d3, r0, 5", "halt"]


def test_data_layout():
    image = one_core("""
.data a 1, 2
.word 3                 ; continues a
.zero b 2
.data c 7
.org 100
.data d 9, 9
.zero e 3
.org 10
.word 4
        halt
""")
    assert image.symbols == {"a": 0, "b": 3, "c": 5, "d": 100, "e": 102}
    assert {k: list(v) for k, v in image.sram.items()} == {0: [1, 2, 3], 5: [7],
                                                          100: [9, 9], 10: [4]}


def test_constants_are_global_before_the_first_core_and_local_after():
    program = assemble("""
.mesh 2x1
.equ G 7
.core a (0,0)
.equ L 1
        addi r1, r0, G + L
        halt
.core b (1,0)
.equ L 2                    ; another core's L
        addi r1, r0, G + L
        halt
""")
    assert disassemble(program.image(0, 0).instructions[0]) == "addi r1, r0, 8"
    assert disassemble(program.image(1, 0).instructions[0]) == "addi r1, r0, 9"


def test_placement_forms_and_routes():
    program = assemble("""
.mesh 4x3
.core edge x=0 y=0..2        ; column 0
.place edge (3,0) (3,1), (3,2)
        halt
.core middle
.place middle x=1..2         ; both middle columns, every row
        halt
.route x=1..2 y=1 color 2 from W to E
.route (0,1) color 2 from RAMP to E
.route (3,1) color 2 from w to ramp, N
.route (3,0) color 2 from S to RAMP
.chain color 5 x=3..0 y=2 from E to W     ; right to left along row 2, from the edge to the edge
.open (0,0) N
""")
    edge, middle = program.image(0, 0), program.image(1, 0)
    for x in range(4):
        for y in range(3):
            assert program.image(x, y) is (edge if x in (0, 3) else middle)
    routes = program.routes
    assert str(routes.get(3, 1, 2)) == "{W} -> {N,RAMP}"
    assert str(routes.get(1, 1, 2)) == "{W} -> {E}"
    assert str(routes.get(3, 2, 5)) == "{E} -> {W}" and str(routes.get(0, 2, 5)) == "{E} -> {W}"
    assert routes.open_edges == {(3, 2, Port.E), (0, 2, Port.W), (0, 0, Port.N)}


def test_all_places_every_tile_and_unplaced_tiles_halt():
    program = assemble(".mesh 2x2\n.core c all\n  nop\n  halt\n")
    assert all(len(image.instructions) == 2 for image in program.images)
    program = assemble(".mesh 2x2\n.core c (1,1)\n  nop\n  halt\n")
    assert [len(image.instructions) for image in program.images] == [1, 1, 1, 2]


def test_tile_data():
    program = assemble("""
.mesh 2x1
.core worker all
.zero weights 4
.data scale 3
        halt
.tiledata (0,0) weights = 1, 2
.tiledata (1,0) weights + 1 = -1, 5, 6
""")
    sram = program.sram()
    assert list(sram[0, :5]) == [1, 2, 0, 0, 3]
    assert list(sram[1, :5]) == [0, 0xFFFFFFFF, 5, 6, 3]


def test_config_directives():
    program = assemble(".mesh 3x2\n.config colors=4 sram_words=512 imem_words=64\n"
                       ".core c (2,1)\n halt\n")
    assert program.config == MeshConfig(width=3, height=2, colors=4, sram_words=512,
                                         imem_words=64)
    assert assemble(".core c (3,3)\n halt\n").config == MeshConfig()
    config = MeshConfig(width=3, height=2, colors=4, sram_words=512, imem_words=64)
    assert assemble(".mesh 3x2\n.config colors=4\n.core c (0,0)\n halt\n",
                    config=config).config is config


# Round trip: every instruction's disassembly assembles to the same word --------------------------

@st.composite
def canonical_word(draw, op=None):
    """A word the assembler could have written: operand fields in range, other fields zero."""
    if op is None:
        op = draw(st.sampled_from(OPCODES))
    reg = st.integers(0, NUM_REGISTERS - 1)
    desc = st.integers(0, NUM_DESCRIPTORS - 1)
    imm_low, imm_high = (0, (1 << 18) - 1) if op.zero_extend else (-(1 << 17), (1 << 17) - 1)
    imm = st.one_of(st.integers(imm_low, imm_high), st.sampled_from([imm_low, imm_high, 0]))
    target = st.integers(0, (1 << 14) - 1)
    f = {}
    fmt, name = op.format, op.name
    if fmt is Format.R:
        f = {"a": draw(reg), "b": draw(reg)}
        if name != "clz":
            f["c"] = draw(reg)
    elif fmt is Format.I:
        if name == "jr":
            f = {"b": draw(reg)}
        elif name in ("lui", "tid"):
            f = {"a": draw(reg), "imm18": draw(imm)}
        else:
            f = {"a": draw(reg), "b": draw(reg), "imm18": draw(imm)}
    elif fmt is Format.B:
        f = {"a": draw(reg), "imm14": draw(target)}
        if name != "dbnz":
            f["b"] = draw(reg)
    elif fmt is Format.J:
        f = {"a": draw(reg), "imm14": draw(target)}
    elif fmt is Format.D:
        f = {"a": draw(desc), "b": draw(reg), "imm18": draw(imm)}
    elif fmt is Format.V:
        red = name in REDUCIBLE and draw(st.booleans())
        f = {"a": draw(reg) if red else draw(desc), "b": draw(desc)}
        if red:
            f.update(red=1, max=int(draw(st.booleans())), acc=int(draw(st.booleans())))
        elif name in REDUCIBLE and draw(st.booleans()):
            f["acc"] = 1           # accumulate into the destination
        if name in PACKABLE and not red and "acc" not in f and draw(st.booleans()):
            f["pack"] = 1          # results packed four to a word
        if name == "vreq":
            f.update(d=draw(reg), imm6=draw(st.integers(0, 63)))
        elif name == "vlut":
            # d: the index offset or multiplier (r0: none); imm6: the index's shift (0: none)
            f.update(c=draw(desc), d=draw(reg), imm6=draw(st.sampled_from([0, 0, 1, 12, 63])))
        elif name in BINARY_VECTOR:
            if draw(st.booleans()):
                f.update(bsc=1, d=draw(reg))
            else:
                f["c"] = draw(desc)
    return encode(name, **f)


@given(canonical_word())
def test_disassembly_reassembles_to_the_same_word(word):
    assert assemble_instruction(disassemble(word)) == word


@pytest.mark.parametrize("op", OPCODES, ids=lambda op: op.name)
@settings(max_examples=30)
@given(data=st.data())
def test_round_trip_of_every_opcode(op, data):
    word = data.draw(canonical_word(op))
    assert assemble_instruction(disassemble(word)) == word


def test_assemble_instruction_refuses_a_pseudo_expanding_to_two():
    with pytest.raises(ValueError, match="2 instructions"):
        assemble_instruction("li r1, 0x12345678")


# Errors: file:line:column of the offending token, and what was expected --------------------------

CORE = ".core main (0,0)\n"


@pytest.mark.parametrize("text, where, message", [
    # Instructions and operands.
    (CORE + "        ad r1, r2, r3\n", "2:9", "unknown instruction 'ad' (did you mean 'and'?)"),
    (CORE + "  frob r1\n", "2:3", "unknown instruction 'frob'"),
    (CORE + "  add r1, r2\n", "2:13", "add takes 3 operand(s) (rd, ra, rb), not 2"),
    (CORE + "  add r1, r2, r3, r4\n", "2:19", "add takes 3 operand(s) (rd, ra, rb), not 4"),
    (CORE + "  halt r1\n", "2:8", "halt takes 0 operand(s) (none), not 1"),
    (CORE + "  add r1, r16, r3\n", "2:11", "ra must be r0..r15, not 'r16'"),
    (CORE + "  add r1, x2, r3\n", "2:11", "ra must be r0..r15, not 'x2'"),
    (CORE + "  add r1, 5, r3\n", "2:11", "expected a register r0..r15 (ra), found '5'"),
    (CORE + "  vadd d8, d0, d1\n", "2:8", "dd must be d0..d7, not 'd8'"),
    (CORE + "  vadd d1, d0, x1\n", "2:16", "db (or a scalar register rs) must be d0..d7"),
    (CORE + "  vdot4.sum d1, d0, d1\n", "2:13", "rd must be r0..r15, not 'd1'"),
    (CORE + "  addi r1, r2, 200000\n", "2:16",
     "addi: imm18 must be an integer from -131072 to 131071, not 200000"),
    (CORE + "  andi r1, r2, -1\n", "2:16", "andi: imm18 must be an integer from 0 to 262143, "
                                           "not -1"),
    (CORE + "  ld r1, 131072(r2)\n", "2:10", "ld: imm18 must be an integer from -131072"),
    (CORE + "  vreq d1, d0, r2, 64\n", "2:20", "vreq: imm6 must be an integer from 0 to 63, "
                                               "not 64"),
    (CORE + "  beq r1, r2, 20000\n", "2:15", "beq: imm14 must be an integer from 0 to 16383, "
                                             "not 20000"),
    (CORE + "  li r1, 0x100000000\n", "2:10", "li: 4294967296 is not a 32-bit integer "
                                              "(-2147483648..4294967295)"),
    (CORE + "  addi r1, r2, r3\n", "2:16", "expected a value, found register or descriptor "
                                           "'r3'"),
    (CORE + "  addi r1, r0, 3 +\n", "2:19", "expected a value (a number, a constant, a data "
                                            "name or a label), found the end of the line"),
    (CORE + "  addi r1, r0, 3 4\n", "2:18", "unexpected '4' after an immediate"),
    (CORE + "  addi r1, r0, 12ab\n", "2:16", "bad number '12ab': numbers are decimal (42), "
                                             "hex (0x2a), binary (0b101010) or octal (0o52)"),
    (CORE + "  ld r1, r2\n", "2:10", "expected a memory operand imm(ra), e.g. 4(r2) or out(r0), "
                                    "found 'r2'"),
    (CORE + "  ld r1, 4(r22)\n", "2:12", "ra must be r0..r15, not 'r22'"),
    (CORE + "  add r1, , r2\n", "2:11", "expected an operand before ','"),
    (CORE + "  add r1, r2,\n", "2:14", "expected an operand after ','"),
    (CORE + "  add r1, r2, @\n", "2:15", "unexpected character '@'"),
    (CORE + "  vadd.acc r1, d0, d1\n", "2:12", "'.acc' alone accumulates into the destination "
                                               "vector dd (a descriptor d0..d7), not 'r1'"),
    (CORE + "  vpack.acc d1, d0\n", "2:3", "vpack cannot reduce or accumulate, so it takes no "
                                           ".acc"),
    (CORE + "  vlut.sum.acc r1, d0, d1\n", "2:3", "vlut cannot reduce, so it takes no .sum"),
    (CORE + "  vadd.sum.max r1, d0, d1\n", "2:3", "'.max' after '.sum': a reduction is either"),
    (CORE + "  vadd.avg r1, d0, d1\n", "2:3", "unknown suffix '.avg' of vadd: expected .sum, "
                                              ".max, .acc or .pack"),
    (CORE + "  vpack.pack d1, d0\n", "2:3", "vpack always packs, so it takes no .pack (.pack "
                                            "is for vreq and vlut)"),
    (CORE + "  vadd.pack d2, d0, d1\n", "2:3", "vadd cannot pack, so it takes no .pack (.pack "
                                               "is for vreq and vlut)"),
    (CORE + "  add.pack r1, r2, r3\n", "2:3", "add takes no suffix: only vector instructions "
                                              "take .sum, .max, .acc or .pack"),
    (CORE + "  vreq.sum.pack r1, d0, r2, 7\n", "2:3", "'.pack' cannot go with '.sum': a packed "
                                                      "word is written or sent whole"),
    (CORE + "  vreq.pack.max r1, d0, r2, 7\n", "2:3", "'.pack' cannot go with '.max'"),
    (CORE + "  vreq.acc.pack d1, d0, r2, 7\n", "2:3", "'.pack' cannot go with '.acc'"),
    (CORE + "  vlut.pack.pack d1, d0, d2\n", "2:3", "'.pack' is given twice"),
    (CORE + "  vlut d1, d0\n", "2:14", "vlut takes 3 to 5 operand(s) (dd, da, db[, rs[, "
                                       "shift]]), not 2"),
    (CORE + "  vlut d1, d0, d2, r1, 3, 4\n", "2:27", "vlut takes 3 to 5 operand(s) (dd, da, "
                                                     "db[, rs[, shift]]), not 6"),
    (CORE + "  vlut d1, d0, d2, r1, r2\n", "2:24", "expected a value, found register or "
                                                   "descriptor 'r2'"),
    (CORE + "  vlut d1, d0, d2, r1, 64\n", "2:24", "vlut: imm6 must be an integer from 0 to 63, "
                                                   "not 64"),
    (CORE + "  vlut d1, d0, d2, d3\n", "2:20", "rs must be r0..r15, not 'd3'"),
    (CORE + "  vlut d1, d0, d2, 128\n", "2:20", "expected a register r0..r15 (rs), found "
                                                "'128'"),
    (CORE + "  add.sum r1, r2, r3\n", "2:3", "add takes no suffix: only vector instructions"),
    (CORE + "  vpack.sum r1, d0\n", "2:3", "vpack cannot reduce, so it takes no .sum"),
    (CORE + "  li.sum r1, 1\n", "2:3", "li takes no suffixes"),
    (CORE + "  mem_vector d0, 1\n", "2:19", "mem_vector takes 3 or 4 operands (d, base, "
                                            "length[, stride]), not 2"),
    # Labels and names.
    (CORE + "  beq r1, r2, nowhere\n halt\n", "2:15",
     "undefined name 'nowhere': not a label, data name or constant"),
    (CORE + "loop: nop\n  bne r1, r0, lop\n", "3:15", "undefined name 'lop': not a label, data "
                                                     "name or constant (did you mean 'loop'?)"),
    (CORE + "loop: nop\nloop: halt\n", "3:1", "label 'loop' is already defined at <string>:2:1"),
    (CORE + "l: jmp l+1\n", "2:8", "label 'l' cannot be used here: a label stands alone"),
    (CORE + "r3: halt\n", "2:1", "'r3' is a register or descriptor name"),
    (CORE + ".data x 1\nx: halt\n", "2:7", "'x' is also a label of core 'main'"),
    (CORE + ".equ N 1\n.equ N 2\n", "3:6", "'N' is already defined at <string>:2:6"),
    (".equ N 1\n" + CORE + ".zero N 2\n", "3:7", "'N' is already defined at <string>:1:6"),
    (CORE + "x: .data y 1\n", "2:1", "a label marks an instruction, not a directive"),
    ("start: halt\n", "1:1", "a label belongs to a core's code"),
    # Data.
    (CORE + ".org 4090\n.zero buf 10\n", "3:1",
     ".zero needs SRAM words 4090..4099, but the SRAM has 4096 words (0..4095)"),
    (CORE + ".org 5000\n", "2:6", ".org 5000 is outside the SRAM (0..4095)"),
    (CORE + ".data a 1, 2, 3\n.org 1\n.data b 5\n", "4:1",
     "SRAM word 1 is already used by 'a' (at <string>:2:1)"),
    (CORE + ".data a 1, 0x100000000\n", "2:12", "data word 4294967296 is not a 32-bit integer"),
    (CORE + ".zero a 0\n", "2:9", ".zero needs at least 1 word, not 0"),
    (CORE + ".data a\n", "2:8", "expected a data word, found the end of the line"),
    (CORE + ".data a 1 2\n", "2:11", "expected ',' between values, found '2'"),
    (".data a 1\n", "1:1", ".data puts data in a core's SRAM: start a section with .core NAME"),
    (CORE + ".zero buf 4\n halt\n.tiledata (1,1) buf = 1\n", "4:11",
     "tile (1,1) runs no core, so it has no SRAM to put data in"),
    (CORE + ".data buf 4\n halt\n.tiledata (0,0) buf = 1\n", "4:17",
     "SRAM word 0 of core 'main' is already initialized by 'buf'"),
    # Structure, directives, placement.
    (" add r1, r2, r3\n", "1:2", "instruction 'add' is outside a core's code: start a section "
                                 "with .core NAME first"),
    (CORE + ".dta x 1\n", "2:1", "unknown directive '.dta' (did you mean '.data'?)"),
    (".core main\n halt\n", "1:7", "core 'main' is never placed on a tile: give tiles after its "
                                   "name (.core main (0,0)) or add .place main TILES"),
    (".core main (4,0)\n halt\n", "1:12", "tile (4,0) is outside the 4x4 mesh (x 0..3, y 0..3)"),
    (CORE + ".place main x=0..4 y=1\n", "2:13", "tile (4,1) is outside the 4x4 mesh"),
    (".core a (0,0)\n halt\n.core b (1,0) (0,0)\n halt\n", "3:15",
     "tile (0,0) already runs core 'a' (placed at <string>:1:9)"),
    (".core a (0,0)\n halt\n.core a (1,0)\n", "3:7", "core 'a' is already defined at "
                                                     "<string>:1:7"),
    (CORE + " halt\n.place mian (1,0)\n", "3:8", "no core is named 'mian' (did you mean "
                                                 "'main'?)"),
    (CORE + ".place main\n", "2:12", "expected tiles to place the core on"),
    (CORE + ".place main (1 1)\n", "2:16", "expected ',' between x and y, found '1'"),
    (".mesh 4by4\n", "1:7", "expected the mesh shape WxH (e.g. 4x4), found '4by4'"),
    (".mesh 0x4\n", "1:7", "width must be at least 1, not 0"),
    (".mesh 2x2\n.mesh 2x2\n", "2:1", ".mesh is given twice (first at <string>:1:1)"),
    (".config colorz=4\n", "1:9", "unknown configuration key 'colorz': expected one of colors, "
                                  "buffer_depth, sram_words, imem_words (did you mean 'colors'?)"),
    (".config width=4\n", "1:9", "(the shape is set by .mesh WxH)"),
    (".config colors=99\n", "1:9", "colors must be from 1 to 24, not 99"),
    (".config imem_words=16\n" + CORE + " nop\n" * 16 + " halt\n", "19:2",
     "core 'main' has 17 instructions, but the instruction memory holds 16 (imem_words)"),
    # Routes.
    (".mesh 2x1\n.core main (0,0)\n halt\n.route (0,0) color 1 from RAMP to E\n", "4:1",
     "route problem: tile (0,0) color 1: sends E to tile (1,0), which does not accept color 1 "
     "from W (it has no route)"),
    (".mesh 2x1\n.core main (0,0)\n halt\n.route (0,0) color 1 from RAMP to E\n"
     ".route (1,0) color 1 from W to E\n", "5:1",
     "route problem: tile (1,0) color 1: output E leaves the mesh and no external agent is "
     "attached there"),
    (".mesh 2x1\n.core m all\n halt\n.route (0,0) color 1 from E to E\n"
     ".route (1,0) color 1 from W to W\n", "4:1", "color 1: routes form a loop that would never "
                                                  "drain"),
    (CORE + ".route (0,0) color 1 from X to E\n", "2:27", "unknown port 'X'; expected one of N, "
                                                          "E, S, W, RAMP"),
    (CORE + ".route (0,0) color 9 from RAMP to RAMP\n", "2:1",
     "tile (0,0): color 9 is out of range: this mesh has colors 0..7"),
    (CORE + ".route (0,0) color 1 from RAMP to RAMP\n.route (0,0) color 1 from RAMP to E\n",
     "3:1", "already routed {RAMP} -> {RAMP}"),
    (CORE + ".route (0,0) colour 1 from RAMP to RAMP\n", "2:14", "expected 'color', found "
                                                                 "'colour'"),
    (CORE + ".route (0,0) color 1 RAMP to RAMP\n", "2:22", "expected 'from', found 'RAMP'"),
    (CORE + ".chain color 1 (0,0) (2,0)\n", "2:1", "chain step (0,0) -> (2,0) is not between "
                                                   "neighbouring tiles"),
    (CORE + ".chain color 1 (0,0) (1,0) to E, S\n", "2:34", "expected one port here, found "
                                                          "a second one: 'S'"),
    (CORE + ".open (1,1) N\n", "2:1", "tile (1,1) port N is not an edge link of the 4x4 mesh"),
    (CORE + ".open 1 N\n", "2:7", "expected the tile '(x,y)' after .open, found '1'"),
    (CORE + ".zero b 2\n halt\n.tiledata (0,0) b 1\n", "4:19",
     "expected '=' between the address and the words, found '1'"),
    (CORE + " halt\n.tiledata (0,0) 4095 = 1, 2\n", "3:17",
     ".tiledata needs SRAM words 4095..4096, but the SRAM has 4096 words (0..4095)"),
])
def test_error_location_and_message(text, where, message):
    with pytest.raises(AssemblyError) as info:
        assemble(text)
    error = info.value
    assert str(error).startswith(f"<string>:{where}: "), str(error)
    assert message in str(error), str(error)
    line, column = (int(n) for n in where.split(":"))
    assert error.location == Location("<string>", line, column)


def test_route_problems_name_every_directive():
    text = (".mesh 3x1\n.core m all\n halt\n"
            ".route (0,0) color 1 from RAMP to E\n"      # line 4: (1,0) does not accept
            ".route (2,0) color 2 from RAMP to W\n")     # line 5: (1,0) does not accept
    with pytest.raises(AssemblyError) as info:
        assemble(text, filename="r.s")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("r.s:4:1: route problem: tile (0,0) color 1")
    assert lines[1].startswith("r.s:5:1: tile (2,0) color 2")


def test_config_mismatch():
    with pytest.raises(AssemblyError, match=r"<string>:1:7: \.mesh 2x2 does not match the 4x4 "
                                            r"mesh this program is assembled for"):
        assemble(".mesh 2x2\n", config=MeshConfig())
    with pytest.raises(AssemblyError, match=r"<string>:1:9: \.config colors=4 does not match"):
        assemble(".config colors=4\n", config=MeshConfig())
    with pytest.raises(TypeError, match="config must be a mesh.MeshConfig"):
        assemble("", config="4x4")


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "prog.s"
    path.write_text(".core main (0,0)\n  add r1, r2\n")
    with pytest.raises(AssemblyError) as info:
        assemble_file(path)
    assert str(info.value).startswith(f"{path}:2:13: add takes 3 operand(s)")


# The builder --------------------------------------------------------------------------------------

def here():
    """The line number of the caller."""
    return inspect.currentframe().f_back.f_lineno


def run_li(value):
    """The value li leaves in r1, computed from its instructions with the reference semantics,
    and the instruction count."""
    core = CoreBuilder("li")
    core.li(1, value)
    r1 = 0
    words = core.image().instructions
    for word in words:
        ins = decode(word)
        imm = ins.imm18 & 0xFFFFFFFF
        a = r1 if ins.b == 1 else 0
        r1 = int(isa.alu(ins.opcode.name, a, imm))
    return r1, len(words)


@pytest.mark.parametrize("value, count", [
    (0, 1), (5, 1), (-5, 1), ((1 << 17) - 1, 1), (-(1 << 17), 1), (1 << 17, 1), (1 << 20, 1),
    (-(1 << 17) - 1, 2), (0x12345678, 2), (0xFFFFFFFF, 2), (-(1 << 31), 1), ((1 << 31) - 1, 2),
    (0x3FFF, 1), (0x4000, 1), (0xFFFFC000, 1),
])
def test_li_constants(value, count):
    assert run_li(value) == (value & 0xFFFFFFFF, count)


@given(st.integers(-(1 << 31), (1 << 32) - 1))
def test_li_any_32_bit_value(value):
    r1, count = run_li(value)
    assert r1 == value & 0xFFFFFFFF and count <= 2


def test_builder_labels_resolve_forward_and_backward():
    core = CoreBuilder("loops")
    core.label("top")
    core.addi(1, 1, 1)
    core.beq(1, 2, "end")
    core.jmp("top")
    core.label("end")
    core.halt()
    image = core.image()
    assert [disassemble(w) for w in image.instructions] == [
        "addi r1, r1, 1", "beq r1, r2, 3", "beq r0, r0, 0", "halt"]
    assert image.symbols == {"top": 0, "end": 3}
    assert core.pc == 4


def test_builder_alloc_and_data():
    core = CoreBuilder("data")
    assert core.alloc("a", [1, -1]) == 0
    assert core.alloc("b", 3) == 2
    assert core.data(10, [7], name="c") == 10
    assert core.alloc("d", np.arange(2)) == 11
    assert core.symbol("b") == 2
    core.ld(1, "c", 0)
    core.addi(2, 0, "d")
    core.halt()
    image = core.image()
    assert {k: list(v) for k, v in image.sram.items()} == {0: [1, 0xFFFFFFFF], 10: [7],
                                                          11: [0, 1]}
    assert image.symbols == {"a": 0, "b": 2, "c": 10, "d": 11}
    assert disassemble(image.instructions[0]) == "ld r1, 10(r0)"
    assert disassemble(image.instructions[1]) == "addi r2, r0, 11"


def test_builder_operand_forms():
    core = CoreBuilder("forms")
    core.add("r1", 2, "R3")
    core.vadd(2, 0, 1)                  # descriptors as ints
    core.vadd("d2", "d0", "r3")         # a register by name: the scalar operand
    core.vdot4(1, 0, 1, reduce="sum", acc=True)
    core.and_(1, 2, 3)
    core.or_(1, 2, 3)
    assert [disassemble(w) for w in core.image().instructions] == [
        "add r1, r2, r3", "vadd d2, d0, d1", "vadd d2, d0, r3", "vdot4.sum.acc r1, d0, d1",
        "and r1, r2, r3", "or r1, r2, r3"]
    assert operand_names(BY_NAME["ld"]) == ["rd", "imm", "ra"]
    assert operand_names(BY_NAME["halt"]) == []
    assert operand_names(BY_NAME["vlut"]) == ["dd", "da", "db", "rs", "shift"]
    assert operand_names(BY_NAME["vlut"], optional=False) == ["dd", "da", "db"]
    assert operand_count(BY_NAME["vlut"]) == "3 to 5" and operand_count(BY_NAME["ld"]) == "3"


def test_builder_locations_point_at_the_callers_line():
    core = CoreBuilder("where")
    line = here() + 1
    core.nop()
    core.halt(location=Location("prog.s", 7, 3))
    source = core.image().source
    assert source[0].endswith(f"test_asm.py:{line}") and source[1] == "prog.s:7:3"
    with pytest.raises(AssemblyError) as info:
        line = here() + 1
        core.add(1, 2, 99)
    assert info.value.location.file.endswith("test_asm.py")
    assert info.value.location.line == line
    assert str(info.value).endswith("add: rb must be r0..r15, not 99")


def test_builder_undefined_label_is_reported_at_the_instruction():
    core = CoreBuilder("undefined")
    line = here() + 1
    core.jmp("nowhere")
    with pytest.raises(AssemblyError) as info:
        core.image()
    assert info.value.location.line == line
    assert "beq: undefined label 'nowhere'" in str(info.value)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.emit("frob"), "unknown instruction 'frob'"),
    (lambda c: c.add(1, 2), "add takes 3 operand(s) (rd, ra, rb), not 2"),
    (lambda c: c.add(1, 2, 16), "add: rb must be r0..r15, not 16"),
    (lambda c: c.addi(1, 2, 1 << 17), "addi: imm18 must be an integer from -131072 to 131071"),
    (lambda c: c.addi(1, 2, 1.5), "addi: imm must be an integer or a name, not 1.5"),
    (lambda c: c.vadd(8, 0, 1), "vadd: dd must be d0..d7, not 8"),
    (lambda c: c.vpack(1, 0, reduce="sum"), "vpack cannot reduce"),
    (lambda c: c.vadd(1, 0, 1, reduce="avg"), "reduce must be 'sum' or 'max', not 'avg'"),
    (lambda c: c.vpack(1, 0, acc=True), "vpack cannot accumulate into its destination"),
    (lambda c: c.vlut(1, 0, 2, acc=True), "vlut cannot accumulate into its destination"),
    (lambda c: c.add(1, 2, 3, acc=True), "add: acc applies to vector instructions only"),
    (lambda c: c.vadd("r1", 0, 1, acc=True), "vadd: dd must be d0..d7, not 'r1'"),
    (lambda c: c.vpack(1, 0, pack=True), "vpack always packs: pack is for vreq and vlut"),
    (lambda c: c.vadd(1, 0, 2, pack=True), "vadd cannot pack: pack is for vreq and vlut"),
    (lambda c: c.add(1, 2, 3, pack=True), "add cannot pack: pack is for vreq and vlut"),
    (lambda c: c.vreq(1, 0, 2, 7, reduce="sum", pack=True),
     "vreq: pack cannot go with reduce or acc (a packed word is written or sent whole)"),
    (lambda c: c.vreq(1, 0, 2, 7, acc=True, pack=True), "vreq: pack cannot go with reduce or acc"),
    (lambda c: c.vlut(1, 0, 2, reduce="sum", pack=True), "vlut cannot reduce"),
    (lambda c: c.vlut(1, 0), "vlut takes 3 to 5 operand(s) (dd, da, db[, rs[, shift]]), not 2"),
    (lambda c: c.vlut(1, 0, 2, 3, 4, 5), "vlut takes 3 to 5 operand(s) (dd, da, db[, rs[, "
                                         "shift]]), not 6"),
    (lambda c: c.vlut(1, 0, 2, 3, 64), "vlut: imm6 must be an integer from 0 to 63, not 64"),
    (lambda c: c.vlut(1, 0, 2, "d3"), "vlut: rs must be r0..r15, not 'd3'"),
    (lambda c: c.vlut(1, 0, 2, 16), "vlut: rs must be r0..r15, not 16"),
    (lambda c: c.li(1, 1 << 32), "li: 4294967296 is not a 32-bit integer"),
    (lambda c: c.li(1, "x"), "li: 'x' is not a 32-bit integer"),
    (lambda c: (c.label("a"), c.label("a")), "label 'a' is already defined at"),
    (lambda c: c.label("not a name"), "label 'not a name' is not a name"),
    (lambda c: (c.alloc("a", 1), c.label("a")), "'a' is already the name of data"),
    (lambda c: (c.alloc("a", 1), c.alloc("a", 1)), "'a' is already defined"),
    (lambda c: c.alloc("a", -1), "cannot reserve -1 words"),
    (lambda c: c.data(-1, [1]), "data address -1 is not a non-negative integer"),
    (lambda c: c.data(0, [1 << 32]), "data word 0 (4294967296) is not a 32-bit integer"),
    (lambda c: (c.data(0, [1, 2]), c.data(1, [3])), "SRAM words 1..1 are already initialized"),
    (lambda c: (c.alloc("buf", 4), c.data(2, [3])), "SRAM words 2..2 are already initialized or "
                                                    "reserved"),
])
def test_builder_errors(call, message):
    with pytest.raises(AssemblyError) as info:
        call(CoreBuilder("errors"))
    assert message in str(info.value)
    assert info.value.location.file.endswith("test_asm.py")


def test_mesh_builder_places_cores_and_checks_tiles():
    mesh = MeshBuilder(MeshConfig(width=2, height=1))
    core = mesh.core(0, 0, name="only")
    core.halt()
    with pytest.raises(Exception, match=r"tile \(0,0\) already runs 'only'"):
        mesh.place(CoreBuilder("other"), [(0, 0)])
    with pytest.raises(Exception, match=r"tile \(2,0\) is outside the 2x1 mesh"):
        mesh.place(CoreBuilder("other"), [(2, 0)])
    with pytest.raises(TypeError, match="core must be a CoreBuilder"):
        mesh.place("core", [(1, 0)])
    program = mesh.build()
    assert program.image(0, 0).instructions == (encode("halt"),)
    assert mesh.all_tiles() == [(0, 0), (1, 0)]


# The example programs ---------------------------------------------------------------------------

VECTOR_A = [-300, -293, -272, -237, -188, -125, -48, 43, 148, 267, 400, 547, 708, 883, 1072, 1275]
VECTOR_B = [1000, 987, 948, 883, 792, 675, 532, 363, 168, -53, -300, -573, -872, -1197, -1548,
            -1925]


def dot_inputs():
    x = [(37 * i + 11) % 255 - 127 for i in range(64)]
    y = [(91 * i + 5) % 201 - 100 for i in range(64)]
    return np.array(x, dtype=np.int8), np.array(y, dtype=np.int8)


def test_vector_add_example_assembles():
    program = assemble_file(PROGRAMS / "vector_add.s")
    image = program.image(0, 0)
    assert image.symbols == {"a": 0, "b": 16, "c": 32}
    sram = program.sram()[0]
    assert list(sram[:16].view(np.int32)) == VECTOR_A
    assert list(sram[16:32].view(np.int32)) == VECTOR_B
    assert disassemble(image.instructions[-2]) == "vadd d2, d0, d1"
    assert all(len(program.image(x, y).instructions) == 1 for x in range(4) for y in range(4)
               if (x, y) != (0, 0))


def test_dot_example_assembles():
    program = assemble_file(PROGRAMS / "dot.s")
    image = program.image(0, 0)
    assert image.symbols == {"x": 0, "y": 16, "result": 32}
    x, y = dot_inputs()
    sram = program.sram()[0]
    assert np.array_equal(sram[:16].view(np.int8), x)     # little-endian: lane 0 is byte 0
    assert np.array_equal(sram[16:32].view(np.int8), y)
    assert int(x.astype(np.int64) @ y.astype(np.int64)) == -1850    # as the header says
    assert "vdot4.sum r1, d0, d1" in [disassemble(w) for w in image.instructions]


def test_examples_run_on_the_emulator():
    result = MeshEmulator(assemble_file(PROGRAMS / "vector_add.s")).run(max_cycles=10_000)
    expected = np.array(VECTOR_A, dtype=np.int64) + np.array(VECTOR_B, dtype=np.int64)
    assert np.array_equal(result.sram[0, 32:48].view(np.int32), expected)
    result = MeshEmulator(assemble_file(PROGRAMS / "dot.s")).run(max_cycles=10_000)
    x, y = dot_inputs()
    assert int(result.sram[0, 32].view(np.int32)) == int(x.astype(np.int64) @ y.astype(np.int64))

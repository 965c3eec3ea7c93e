"""The core's arithmetic: one 32-bit result per cycle, shared by the scalar instructions and the
vector pipeline's stage X (docs/ARCHITECTURE.md section 9; the reference semantics are
:func:`mesh.isa.alu` and :func:`mesh.isa.requantize`)."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from mesh import isa

__all__ = ["AluOp", "ALU_OPS", "Alu", "saturate8", "requantize"]


class AluOp(enum.Enum, shape=5):
    """What :class:`Alu` computes. ``MOV`` passes ``a``; ``LUI`` is ``b << 14``; ``REQ`` is
    :func:`mesh.isa.requantize` of ``a`` by the multiplier ``b`` and ``shift``. The others are the
    operations of :func:`mesh.isa.alu` of the same name."""
    MOV = 0
    ADD = 1
    SUB = 2
    MUL = 3
    MULH = 4
    AND = 5
    OR = 6
    XOR = 7
    SLL = 8
    SRL = 9
    SRA = 10
    SLT = 11
    SLTU = 12
    MIN = 13
    MAX = 14
    CLZ = 15
    LUI = 16
    ADD8 = 17
    SUB8 = 18
    MUL8 = 19
    MAX8 = 20
    DOT4 = 21
    REQ = 22


# The operation of every instruction that uses the ALU, by instruction name. vpack passes ``a``
# through (the vector pipeline packs it, as it packs vreq's and vlut's results with pack); vlut's
# result is the table word the vector pipeline reads.
ALU_OPS = {
    **{name: AluOp[name.upper()] for name in
       ("add", "sub", "mul", "mulh", "and", "or", "xor", "sll", "srl", "sra", "slt", "sltu",
        "min", "max", "clz", "lui")},
    **{f"{name}i": AluOp[name.upper()] for name in
       ("add", "and", "or", "xor", "sll", "srl", "sra", "slt")},
    **{f"v{name}": AluOp[name.upper()] for name in
       ("mov", "add", "sub", "mul", "max", "min", "and", "or", "xor", "sll", "srl", "sra",
        "add8", "sub8", "mul8", "max8", "dot4")},
    "vreq": AluOp.REQ, "vpack": AluOp.MOV, "vlut": AluOp.MOV,
}
assert all(name in isa.BY_NAME for name in ALU_OPS)


def saturate8(value):
    """``value`` (signed) clamped to -128..127, as a signed 8-bit value."""
    return Mux(value > 127, 127, Mux(value < -128, -128, value))[:8].as_signed()


def requantize(m, a, b, shift, product=None, name="requantize"):
    """Gates of :func:`mesh.isa.requantize` in module ``m``: ``a`` (32 bits) times the multiplier
    ``b`` (32 bits) as signed integers, rounded half up at ``shift`` (6 bits) and saturated to
    int8; returns the signed 8-bit value (``eq`` to a word sign-extends it). Rounds as
    ``(p >> (shift - 1) + 1) >> 1`` (``p`` for shift 0), which equals ``(p >> shift)`` plus bit
    ``shift - 1`` of ``p``. ``product`` is a signed 64-bit signal already holding ``a * b``
    (the ALU shares its multiplier with ``MUL`` and ``MULH``); without it a multiplier of its
    own is built. ``name`` prefixes the signals."""
    if product is None:
        product = Signal(signed(64), name=f"{name}_product")
        m.d.comb += product.eq(a.as_signed() * b.as_signed())
    halved = Signal(signed(64), name=f"{name}_halved")
    rounded = Signal(signed(65), name=f"{name}_rounded")
    m.d.comb += [
        halved.eq(product >> (shift - 1)[:6]),
        rounded.eq(Mux(shift == 0, product, (halved + 1) >> 1)),
    ]
    return saturate8(rounded)


class Alu(wiring.Component):
    """Combinational: ``result`` is ``op`` applied to ``a`` and ``b`` (and ``shift`` for
    ``REQ``), bit for bit as the reference semantics of :mod:`mesh.isa`.

    One signed 32 x 32 -> 64 bit multiplier serves ``MUL`` (low word), ``MULH`` (high word) and
    ``REQ``; four signed 8 x 8 multipliers serve the int8 lanes (``MUL8``, ``DOT4``). Shifts use
    ``b & 31``. ``REQ`` is :func:`requantize` (the vector pipeline's requantized ``vlut`` index
    uses the same function with a multiplier of its own).

    Members
    -------
    op : :py:`In(AluOp)`
        The operation.
    a, b : :py:`In(32)`
        Operands (``b`` is the extended immediate of immediate forms, the multiplier of
        ``REQ``).
    shift : :py:`In(6)`
        Shift amount of ``REQ`` (vreq's imm6).
    result : :py:`Out(32)`
        The result.
    """

    def __init__(self):
        super().__init__({
            "op": In(AluOp),
            "a": In(32),
            "b": In(32),
            "shift": In(6),
            "result": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        a, b, result = self.a, self.b, self.result
        sa, sb = a.as_signed(), b.as_signed()
        amount = b[:5]

        product = Signal(signed(64))
        m.d.comb += product.eq(sa * sb)

        # Requantize: round half up, saturate to int8 (sign-extended by the result's eq).
        requantized = requantize(m, a, b, self.shift, product=product, name="req")

        # int8 lanes.
        la = [a[8 * k:8 * k + 8].as_signed() for k in range(4)]
        lb = [b[8 * k:8 * k + 8].as_signed() for k in range(4)]
        lane_products = [Signal(signed(16), name=f"lane_product_{k}") for k in range(4)]
        m.d.comb += [lane_products[k].eq(la[k] * lb[k]) for k in range(4)]

        clz = Signal(range(33))
        m.d.comb += clz.eq(32)
        for bit in range(32):  # the highest set bit is assigned last, and wins
            with m.If(a[bit]):
                m.d.comb += clz.eq(31 - bit)

        with m.Switch(self.op):
            with m.Case(AluOp.MOV):
                m.d.comb += result.eq(a)
            with m.Case(AluOp.ADD):
                m.d.comb += result.eq(a + b)
            with m.Case(AluOp.SUB):
                m.d.comb += result.eq(a - b)
            with m.Case(AluOp.MUL):
                m.d.comb += result.eq(product[:32])
            with m.Case(AluOp.MULH):
                m.d.comb += result.eq(product[32:])
            with m.Case(AluOp.AND):
                m.d.comb += result.eq(a & b)
            with m.Case(AluOp.OR):
                m.d.comb += result.eq(a | b)
            with m.Case(AluOp.XOR):
                m.d.comb += result.eq(a ^ b)
            with m.Case(AluOp.SLL):
                m.d.comb += result.eq((a << amount)[:32])
            with m.Case(AluOp.SRL):
                m.d.comb += result.eq(a >> amount)
            with m.Case(AluOp.SRA):
                m.d.comb += result.eq(sa >> amount)
            with m.Case(AluOp.SLT):
                m.d.comb += result.eq(sa < sb)
            with m.Case(AluOp.SLTU):
                m.d.comb += result.eq(a < b)
            with m.Case(AluOp.MIN):
                m.d.comb += result.eq(Mux(sa < sb, a, b))
            with m.Case(AluOp.MAX):
                m.d.comb += result.eq(Mux(sa < sb, b, a))
            with m.Case(AluOp.CLZ):
                m.d.comb += result.eq(clz)
            with m.Case(AluOp.LUI):
                m.d.comb += result.eq((b << 14)[:32])
            with m.Case(AluOp.ADD8):
                m.d.comb += result.eq(Cat(saturate8(la[k] + lb[k]) for k in range(4)))
            with m.Case(AluOp.SUB8):
                m.d.comb += result.eq(Cat(saturate8(la[k] - lb[k]) for k in range(4)))
            with m.Case(AluOp.MUL8):
                m.d.comb += result.eq(Cat(saturate8(lane_products[k]) for k in range(4)))
            with m.Case(AluOp.MAX8):
                m.d.comb += result.eq(Cat(Mux(la[k] < lb[k], lb[k], la[k]) for k in range(4)))
            with m.Case(AluOp.DOT4):
                m.d.comb += result.eq(sum(lane_products))
            with m.Case(AluOp.REQ):
                m.d.comb += result.eq(requantized)
            with m.Default():
                m.d.comb += result.eq(Const(0, 32))
        return m

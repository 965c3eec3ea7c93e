"""The core's register-based state: register file, descriptor file, and the core's end of its
two RAMP links (input queues and output credits); docs/ARCHITECTURE.md section 9."""

from amaranth.hdl import Array, Cat, Const, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from mesh import MeshConfig, color_bits, isa
from mesh.wavelet import DATA_BITS

from .core_decode import DescOp

__all__ = ["DescriptorLayout", "RegisterFile", "DescriptorFile", "RampPort"]

WORD = isa.WORD_BITS

DescriptorLayout = data.StructLayout({
    "kind": 2,             # isa.Kind
    "base": 16,
    "length": 16,
    "stride": signed(16),
    "color": 5,
    # Derived from base, length and stride whenever the descriptor is written (they are a pure
    # function of them), so that the trap checks at issue need no multiplier:
    "range_ok": 1,         # length = 0, or base and base + (length - 1) * stride in the SRAM
    "table_ok": 1,         # length = 0, or base + length - 1 in the SRAM (a vlut table)
})

DESCRIPTOR_RESET = {"kind": int(isa.Kind.MEM), "base": 0, "length": 0, "stride": 0, "color": 0,
                    "range_ok": 1, "table_ok": 1}


def _check_config(config):
    if not isinstance(config, MeshConfig):
        raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")


class RegisterFile(wiring.Component):
    """Registers ``r0``..``r15``, 32 bits each, reset to 0; ``r0`` always reads 0 (writes to it
    are ignored). Four combinational read ports, one write port (written at the end of the
    cycle).

    Members
    -------
    read_index : :py:`In(4).array(4)`
        Register read by each read port.
    read_data : :py:`Out(32).array(4)`
        Its value at the start of the cycle.
    write_en : :py:`In(1)`
        Write ``write_data`` into ``write_index`` at the end of the cycle.
    write_index : :py:`In(4)`
    write_data : :py:`In(32)`

    Attributes
    ----------
    registers : list of 16 :class:`Signal`
        The registers (``registers[0]`` stays 0).
    """

    def __init__(self):
        n = isa.NUM_REGISTERS
        super().__init__({
            "read_index": In(4).array(4),
            "read_data": Out(WORD).array(4),
            "write_en": In(1),
            "write_index": In(4),
            "write_data": In(WORD),
        })
        self.registers = [Signal(WORD, name=f"r{i}") for i in range(n)]

    def elaborate(self, platform):
        m = Module()
        registers = Array(self.registers)
        for index, data_ in zip(self.read_index, self.read_data):
            m.d.comb += data_.eq(registers[index])
        for i, register in enumerate(self.registers[1:], start=1):
            with m.If(self.write_en & (self.write_index == i)):
                m.d.sync += register.eq(self.write_data)
        return m


class DescriptorFile(wiring.Component):
    """Descriptors ``d0``..``d7`` (:data:`DescriptorLayout`), reset to MEM with base, length and
    stride 0. Three combinational read ports; one update per cycle, of the descriptor
    ``read_index[0]`` names (the ``d`` / ``dd`` field, which is also read port 0).

    Members
    -------
    read_index : :py:`In(3).array(3)`
        Descriptor read by each read port (0: dd, 1: da, 2: db).
    read_data : :py:`Out(DescriptorLayout).array(3)`
        Its value at the start of the cycle.
    write : :py:`In(1)`
        Apply ``op`` with ``value`` (ra + imm) to descriptor ``read_index[0]`` at the end of the
        cycle.
    op : :py:`In(DescOp)`
    value : :py:`In(32)`

    Attributes
    ----------
    descriptors : list of 8 :class:`Signal` (:data:`DescriptorLayout`)
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        super().__init__({
            "read_index": In(3).array(3),
            "read_data": Out(DescriptorLayout).array(3),
            "write": In(1),
            "op": In(DescOp),
            "value": In(WORD),
        })
        self.descriptors = [Signal(DescriptorLayout, name=f"d{i}", init=DESCRIPTOR_RESET)
                            for i in range(isa.NUM_DESCRIPTORS)]

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        sram_words = self.config.sram_words
        descriptors = Array(self.descriptors)
        for index, data_ in zip(self.read_index, self.read_data):
            m.d.comb += data_.eq(descriptors[index])

        old = self.read_data[0]
        new = Signal(DescriptorLayout)
        value = self.value
        m.d.comb += new.eq(old)
        with m.Switch(self.op):
            with m.Case(DescOp.MEM):
                m.d.comb += [new.kind.eq(int(isa.Kind.MEM)), new.base.eq(value[:16])]
            with m.Case(DescOp.FIN):
                m.d.comb += [new.kind.eq(int(isa.Kind.FIN)), new.color.eq(value[:5])]
            with m.Case(DescOp.FOUT):
                m.d.comb += [new.kind.eq(int(isa.Kind.FOUT)), new.color.eq(value[:5])]
            with m.Case(DescOp.LEN):
                m.d.comb += new.length.eq(value[:16])
            with m.Case(DescOp.STRIDE):
                m.d.comb += new.stride.eq(value[:16])
            with m.Case(DescOp.ADV):
                m.d.comb += new.base.eq((old.base + value[:16])[:16])

        # The range flags of the new value: its first and last element (and table word).
        last = Signal(signed(35))
        m.d.comb += last.eq(new.base + (new.length - 1)[:16] * new.stride)
        empty = new.length == 0
        flags = Signal(2)
        m.d.comb += flags.eq(Cat(
            empty | ((new.base < sram_words) & (last >= 0) & (last < sram_words)),
            empty | (new.base + new.length - 1 < sram_words)))

        for i, descriptor in enumerate(self.descriptors):
            with m.If(self.write & (self.read_index[0] == i)):
                m.d.sync += [descriptor.eq(new), descriptor.range_ok.eq(flags[0]),
                             descriptor.table_ok.eq(flags[1])]
        return m


class RampPort(wiring.Component):
    """The core's end of its two RAMP links (section 3): the receiving end of the router's RAMP
    outbound link (``rx``: per color an input queue of ``config.buffer_depth`` wavelets) and the
    sending end of its RAMP inbound link (``tx``: per color a credit counter starting at
    ``config.buffer_depth``).

    A wavelet on ``rx`` in cycle t is appended to the queue of its color at the end of t (a color
    out of range is ignored), whether or not the core runs; a queue popped in cycle t returns its
    credit on ``rx.credit`` in t. A credit on ``tx.credit`` in cycle t is in the counter at the
    start of t + 1. ``send`` drives ``tx`` in the same cycle and spends a credit; an idle ``tx``
    carries color 0 and data 0. Queues are shift registers, so the head is always slot 0.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
    tx : interface of :py:`Out(LinkSignature(config))`
        The core's outbound link (to the router's RAMP input).
    rx : interface of :py:`In(LinkSignature(config))`
        The core's inbound link (from the router's RAMP output).

    Members
    -------
    pop : :py:`In(colors)`
        Take the heads of these (non-empty) queues at the end of the cycle.
    nonempty : :py:`Out(colors)`
        Queues holding a wavelet (a register).
    heads : :py:`Out(ArrayLayout(32, colors))`
        Head of each queue.
    send : :py:`In(1)`
        Send ``send_data`` on color ``send_color`` this cycle (only with a credit).
    send_color : :py:`In(color_bits)`
    send_data : :py:`In(32)`
    credited : :py:`Out(colors)`
        Colors whose credit counter is non-zero.

    Attributes
    ----------
    credits : list of :class:`Signal`, by color
        The credit counters.
    filled : list of :class:`Signal` (``colors`` bits), by slot
        ``filled[k]`` bit c: queue c holds more than k wavelets.
    slots : list of :class:`Signal` (``ArrayLayout(32, colors)``), by slot
    """

    def __init__(self, config, tx, rx):
        _check_config(config)
        self._config = config
        self._tx, self._rx = tx, rx
        colors, depth = config.colors, config.buffer_depth
        words = data.ArrayLayout(DATA_BITS, colors)
        super().__init__({
            "pop": In(colors),
            "nonempty": Out(colors),
            "heads": Out(words),
            "send": In(1),
            "send_color": In(color_bits(colors)),
            "send_data": In(DATA_BITS),
            "credited": Out(colors),
        })
        self.credits = [Signal(range(depth + 1), init=depth, name=f"credit_{c}")
                        for c in range(colors)]
        self.filled = [self.nonempty] + [Signal(colors, name=f"filled_{k}")
                                         for k in range(1, depth)]
        self.slots = [self.heads] + [Signal(words, name=f"slots_{k}") for k in range(1, depth)]

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        colors, depth = self.config.colors, self.config.buffer_depth
        tx, rx = self._tx, self._rx

        # Sending end.
        m.d.comb += tx.valid.eq(self.send)
        with m.If(self.send):
            m.d.comb += [tx.color.eq(self.send_color), tx.data.eq(self.send_data)]
        for c, credit in enumerate(self.credits):
            spent = self.send & (self.send_color == c)
            m.d.sync += credit.eq(credit + tx.credit[c] - spent)
        m.d.comb += self.credited.eq(Cat(credit != 0 for credit in self.credits))

        # Receiving end, as the router's input queues.
        pop, filled, slots = self.pop, self.filled, self.slots
        m.d.comb += rx.credit.eq(pop)
        pushed = (rx.valid << rx.color)[:colors]
        held = [(filled[k + 1] & pop) | (filled[k] & ~pop) for k in range(depth - 1)]
        held.append(filled[depth - 1] & ~pop)
        for k in range(depth):
            below = held[k - 1] if k > 0 else Const((1 << colors) - 1, colors)
            write = Signal(colors, name=f"write_{k}")
            m.d.comb += write.eq(pushed & below & ~held[k])
            m.d.sync += filled[k].eq(held[k] | write)
            for c in range(colors):
                with m.If(write[c]):
                    m.d.sync += slots[k][c].eq(rx.data)
                if k + 1 < depth:
                    with m.Elif(pop[c]):
                        m.d.sync += slots[k][c].eq(slots[k + 1][c])
        return m

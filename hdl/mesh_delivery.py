"""The delivery engine (docs/ARCHITECTURE.md section 12, "Delivery into the mesh"): a message in
the packet link's receive buffer streamed into the mesh's west inbound edge links, one word per
cycle, under the fabric's credit protocol.

Cycle t is any clock cycle after reset. Every decision in t reads the registers (the state at the
start of t), the command and the credits on the west links in t; every update lands at the end
of t.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from mesh import MeshConfig, color_bits
from mesh.delivery import DeliveryError, FIELD_BITS

from .link import LinkSignature

__all__ = ["MeshDelivery", "DeliveryError", "CommandSignature", "ReadSignature", "FIELD_BITS",
           "CAUSE_BITS"]

CAUSE_BITS = 3


class CommandSignature(wiring.Signature):
    """The command stream, from the sender's side: ``valid``/``ready`` and the fields of
    :data:`FIELD_BITS`."""

    def __init__(self):
        members = {"valid": Out(1), "ready": In(1)}
        members.update({name: Out(bits) for name, bits in FIELD_BITS.items()})
        super().__init__(members)


class ReadSignature(wiring.Signature):
    """A synchronous read port, from the reader's side: ``en`` and ``addr`` in cycle t, the word
    on ``data`` in t + 1."""

    def __init__(self, buffer_words):
        super().__init__({"en": Out(1), "addr": Out(range(buffer_words)), "data": In(32)})


def _lowest(m, bits, name):
    """(any, index of the lowest set bit of the list ``bits``), combinational."""
    index = Signal(range(max(2, len(bits))), name=f"{name}_index")
    for b in reversed(range(len(bits))):
        with m.If(bits[b]):
            m.d.comb += index.eq(b)
    return Cat(bits).any(), index


def _select(enable, index, values):
    """``values[index]`` when ``enable``, else 0: an OR of AND terms (no case statement that
    leaves indexes out)."""
    result = 0
    for i, value in enumerate(values):
        result = result | Mux(enable & (index == i), value, 0)
    return result


class MeshDelivery(wiring.Component):
    """Streams a message from the receive buffer into a rectangle of the mesh through its west
    edge (docs/ARCHITECTURE.md section 12, "Delivery into the mesh", implemented cycle for
    cycle).

    **Contract.** ``cmd.ready`` is high exactly when the engine is not ``busy``. A command taken
    in cycle t (``valid`` and ``ready``) is checked in t: the first failing check (REGION, WORDS,
    BUFFER, COLOR; :class:`DeliveryError`) is on ``error_cause``, with ``error`` high, from t + 1
    until the next command is taken; a bad command sends nothing. A good one is busy from t + 1.
    Each busy cycle the engine chooses at most one word: the next of the first row, round robin
    from ``rr`` (y0 at the start), that has words left and a credit for the command's color (its
    counter, or a credit returned on the link in the same cycle). The chosen word's address is
    on ``read.addr`` with ``read.en`` in that cycle (**read latency 1**: the word is expected on
    ``read.data`` in the next cycle) and the word goes out on ``west_in[y]`` in the next cycle.
    **Backpressure** is the link's: a row without credits waits (the other rows go on); the
    credit counters are kept per link and color across commands, from ``buffer_depth`` at reset.
    ``done`` is high in the cycle the command's last word is on its link, the last cycle with
    ``busy`` high. Without backpressure a command taken in t sends its words in t + 2 ..
    t + 1 + width x height x words.

    Parameters
    ----------
    config : :class:`mesh.MeshConfig`
        The mesh (its height H, colors and buffer_depth).
    buffer_words : :class:`int`
        The receive buffer's size (``LinkConfig.buffer_words``).

    Members
    -------
    cmd : :py:`In(CommandSignature())`
        ``valid``, ``ready``; ``x0``, ``y0``, ``width``, ``height``, ``words`` (16 bits), ``src``
        (32 bits), ``color`` (5 bits).
    read : :py:`Out(ReadSignature(buffer_words))`
        ``en``, ``addr`` out; ``data`` in, one cycle later. ``hdl.PacketRx``'s ``read`` port (no
        ``en``: it reads every cycle) serves it: connect ``addr`` and ``data``.
    west_in : :py:`Out(LinkSignature(config)).array(H)`
        The west inbound edge links, named as ``hdl.Mesh``'s members they drive:
        ``connect(m, delivery.west_in[y], mesh.west_in[y])``.
    busy, done, error : :py:`Out(1)`
    error_cause : :py:`Out(3)`
        A :class:`DeliveryError`.
    """

    def __init__(self, config, buffer_words):
        if not isinstance(config, MeshConfig):
            raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
        if not isinstance(buffer_words, int) or isinstance(buffer_words, bool) \
                or buffer_words < 1:
            raise ValueError(f"buffer_words must be a positive integer, not {buffer_words!r}")
        self._config = config
        self._buffer_words = buffer_words
        super().__init__({
            "cmd": In(CommandSignature()),
            "read": Out(ReadSignature(buffer_words)),
            "west_in": Out(LinkSignature(config)).array(config.height),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_cause": Out(CAUSE_BITS),
        })

    @property
    def config(self):
        return self._config

    @property
    def buffer_words(self):
        return self._buffer_words

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        W, H, C, D = cfg.width, cfg.height, cfg.colors, cfg.buffer_depth
        B = self._buffer_words
        cmd = self.cmd

        busy = Signal()
        color = Signal(color_bits(C))
        left = [Signal(range(B + 1), name=f"left_{y}") for y in range(H)]
        nxt = [Signal(range(B + 1), name=f"next_{y}") for y in range(H)]
        credit = [[Signal(range(D + 1), init=D, name=f"credit_{y}_{k}") for k in range(C)]
                  for y in range(H)]
        rr = Signal(range(max(2, H)))
        remaining = Signal(range(B + 1))
        out_valid = Signal()
        out_row = Signal(range(max(2, H)))
        out_last = Signal()
        error = Signal()
        cause = Signal(CAUSE_BITS)

        done = Signal()
        m.d.comb += [
            done.eq(out_valid & out_last),
            self.busy.eq(busy),
            self.done.eq(done),
            self.error.eq(error),
            self.error_cause.eq(cause),
            cmd.ready.eq(~busy),
        ]

        # The links: the word chosen in the previous cycle, with the read port's data.
        for y in range(H):
            link = self.west_in[y]
            here = out_valid & (out_row == y)
            m.d.comb += [
                link.valid.eq(here),
                link.color.eq(Mux(here, color, 0)),
                link.data.eq(Mux(here, self.read.data, 0)),
            ]

        # 1. Choice: the first eligible row from rr on, wrapping.
        returned = [self.west_in[y].credit for y in range(H)]
        eligible = []
        for y in range(H):
            has_credit = Cat((color == k) & ((credit[y][k] != 0) | returned[y][k])
                             for k in range(C)).any()
            e = Signal(name=f"eligible_{y}")
            m.d.comb += e.eq(busy & (left[y] != 0) & has_credit)
            eligible.append(e)
        # Rows at or after rr (the last row always is: no comparison that is constant).
        upper = [eligible[y] & (rr <= y) if y < H - 1 else eligible[y] for y in range(H)]
        any_upper, upper_index = _lowest(m, upper, "upper")
        chosen_any, lowest_index = _lowest(m, eligible, "lowest")
        chosen = Signal(range(max(2, H)))
        m.d.comb += chosen.eq(Mux(any_upper, upper_index, lowest_index))

        # 2. Read.
        m.d.comb += [
            self.read.en.eq(chosen_any),
            self.read.addr.eq(_select(chosen_any, chosen, nxt)),
        ]

        # 4. Update.
        m.d.sync += [out_valid.eq(chosen_any), out_row.eq(chosen),
                     out_last.eq(chosen_any & (remaining == 1))]
        for y in range(H):
            pick = chosen_any & (chosen == y)
            for k in range(C):
                spend = pick & (color == k)
                m.d.sync += credit[y][k].eq(credit[y][k] + returned[y][k] - spend)
            with m.If(pick):
                m.d.sync += [left[y].eq(left[y] - 1), nxt[y].eq(nxt[y] + 1)]
        with m.If(chosen_any):
            m.d.sync += [rr.eq(Mux(chosen == H - 1, 0, chosen + 1)),
                         remaining.eq(remaining - 1)]
        with m.If(done):
            m.d.sync += busy.eq(0)

        # The command: checks in the cycle it is taken.
        row_words = Signal(32)
        total = Signal(48)
        m.d.comb += [row_words.eq(cmd.width * cmd.words), total.eq(row_words * cmd.height)]
        region_bad = ((cmd.width == 0) | (cmd.height == 0) | (cmd.x0 + cmd.width > W)
                      | (cmd.y0 + cmd.height > H))
        words_bad = cmd.words == 0
        buffer_bad = cmd.src + total > B
        color_bad = cmd.color >= C
        first = Signal(CAUSE_BITS)
        with m.If(region_bad):
            m.d.comb += first.eq(DeliveryError.REGION)
        with m.Elif(words_bad):
            m.d.comb += first.eq(DeliveryError.WORDS)
        with m.Elif(buffer_bad):
            m.d.comb += first.eq(DeliveryError.BUFFER)
        with m.Elif(color_bad):
            m.d.comb += first.eq(DeliveryError.COLOR)
        with m.If(cmd.valid & ~busy):
            m.d.sync += [error.eq(first != 0), cause.eq(first)]
            with m.If(first == 0):
                m.d.sync += [busy.eq(1), color.eq(cmd.color), rr.eq(cmd.y0),
                             remaining.eq(total)]
                for y in range(H):
                    inside = (cmd.y0 <= y) & (y < cmd.y0 + cmd.height)
                    offset = Signal(range(max(2, H)), name=f"offset_{y}")
                    m.d.comb += offset.eq(y - cmd.y0)
                    m.d.sync += [
                        left[y].eq(Mux(inside, row_words, 0)),
                        nxt[y].eq(Mux(inside, cmd.src + offset * row_words, 0)),
                    ]
        return m

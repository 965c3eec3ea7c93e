"""The tensor engine of the prefill engine: an n x n weight-stationary int8 systolic array with
int32 accumulation and two weight buffers, the first block of the prefill engine (the SBUF, PSUM,
DMA, vector engine and sequencer drive it through :class:`SystolicArray`'s members).

Geometry: PE(i, j) sits in array row i (0 at the top, the north edge) and column j (0 at the west
edge). Activations flow east, one PE per cycle; partial sums flow south, one PE per cycle; the
weights stay in the PEs. Array row i holds row i of the weight matrix W (the contraction index),
so column j computes ``sum over i of act[i] * W[i][j]``: an activation row times W.

The sequencer streams activation rows through one weight buffer while it loads the other: the
buffer select travels with every activation element, so rows using different buffers may follow
each other with no gap.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Activation", "ProcessingElement", "SystolicArray", "ACT_BITS", "ACC_BITS",
           "MIN_SIZE", "MAX_SIZE"]

ACT_BITS = 8        # activations and weights: signed int8
ACC_BITS = 32       # partial sums: signed int32, wrapping around
MIN_SIZE, MAX_SIZE = 2, 32

#: One activation element as it travels east: ``valid`` (low: a bubble), ``buffer`` (the weight
#: buffer it multiplies) and ``data`` (signed int8). ``valid`` is the lowest bit.
Activation = data.StructLayout({
    "valid": 1,
    "buffer": 1,
    "data": signed(ACT_BITS),
})


class ProcessingElement(wiring.Component):
    """One PE: two int8 weight registers (buffers 0 and 1), one multiply-accumulate per cycle.

    Each cycle, from the inputs of the cycle and the registers at its start:

    * ``act_out`` becomes ``act_in`` at the end of the cycle (forwarded east one cycle later,
      bubbles included);
    * ``psum_out`` becomes ``psum_in + act_in.data * weights[act_in.buffer]`` at the end of the
      cycle when ``act_in.valid`` (signed int8 x int8 product, int32 sum wrapping around); for a
      bubble (``act_in.valid`` low) it becomes ``psum_in`` unchanged;
    * when ``weight.valid``, ``weights[weight.buffer]`` becomes ``weight.data`` at the end of the
      cycle: an activation in the PE in the same cycle still multiplies the previous value, one
      in the next cycle or later multiplies the new one.

    There is no combinational path from any input to any output. All registers reset to zero.

    Members
    -------
    weight : :py:`In(Signature({"valid": Out(1), "buffer": Out(1), "data": Out(signed(8))}))`
        Weight write port.
    act_in : :py:`In(Activation)`
        The activation element from the west.
    psum_in : :py:`In(signed(32))`
        The partial sum from the north.
    act_out : :py:`Out(Activation)`
        ``act_in`` of the previous cycle, to the east (a register).
    psum_out : :py:`Out(signed(32))`
        The partial sum to the south (a register).

    Attributes
    ----------
    weights : list of 2 :class:`Signal` (``signed(8)``)
        The weight registers of buffers 0 and 1.
    """

    def __init__(self):
        super().__init__({
            "weight": In(wiring.Signature({
                "valid": Out(1),
                "buffer": Out(1),
                "data": Out(signed(ACT_BITS)),
            })),
            "act_in": In(Activation),
            "psum_in": In(signed(ACC_BITS)),
            "act_out": Out(Activation),
            "psum_out": Out(signed(ACC_BITS)),
        })
        self.weights = [Signal(signed(ACT_BITS), name=f"weight_{b}") for b in range(2)]

    def elaborate(self, platform):
        m = Module()
        act = self.act_in
        # The product, sign-extended to 32 bits (a bubble adds zero).
        product = Signal(signed(ACC_BITS))
        m.d.comb += product.eq(Mux(act.valid, act.data * Mux(act.buffer, self.weights[1],
                                                              self.weights[0]), 0))
        m.d.sync += [
            self.act_out.eq(act),
            self.psum_out.eq(self.psum_in + product),
        ]
        with m.If(self.weight.valid):
            with m.If(self.weight.buffer):
                m.d.sync += self.weights[1].eq(self.weight.data)
            with m.Else():
                m.d.sync += self.weights[0].eq(self.weight.data)
        return m


def _check_size(n):
    if not isinstance(n, int) or isinstance(n, bool) or not MIN_SIZE <= n <= MAX_SIZE:
        raise ValueError(f"n must be an integer from {MIN_SIZE} to {MAX_SIZE}, not {n!r}")


class SystolicArray(wiring.Component):
    """An n x n weight-stationary systolic array of :class:`ProcessingElement` with two weight
    buffers, plus the delay lines that skew its input rows and de-skew its output rows.

    Cycle t is any clock cycle; all registers reset to zero.

    **Weights.** When ``weights.valid`` in cycle c, row ``weights.row`` of weight buffer
    ``weights.buffer`` becomes ``weights.data`` at the end of cycle c: element j goes into
    PE(row, j). With ``weights.transpose`` high, column ``weights.row`` is written instead:
    element i goes into PE(i, row), so n writes load the transpose of n rows (attention's
    Q x K^T takes K as it comes out of the array, one key per row). A row index of n or more
    (possible when n is not a power of two) writes nothing.

    **Activations.** An activation row presented in cycle t (``act.valid`` high, ``act.buffer``
    = b, ``act.data`` = a) travels as n elements, each carrying the valid bit and b. Element i
    enters array row i through i delay registers and then moves one PE east per cycle, so it is
    in PE(i, j) in cycle **t + i + j**, where it adds ``a[i] * W_b[i][j]`` to the partial sum of
    column j; that partial sum moves one PE south per cycle (it leaves PE(i, j) in cycle
    t + i + j + 1 into PE(i + 1, j)), and leaves the bottom row in cycle t + n + j. Column j then
    passes through n - j de-skew registers, so the whole result row is on ``out`` in cycle
    **t + 2n** exactly (:attr:`latency` = 2n): ``out.valid`` is high and ``out.data[j]`` is
    ``sum over i of a[i] * W_b[i][j]`` (int32, wrapping around; with int8 operands and n <= 32 it
    never actually wraps).

    **Streaming.** Rows may be presented back to back, one per cycle, indefinitely, with or
    without bubbles (cycles with ``act.valid`` low), and consecutive rows may select different
    buffers with no gap. Each output row appears exactly 2n cycles after its input row;
    ``out.valid`` is low in every other cycle, and ``out.data`` is then all zeros (a bubble
    travels through the array like a row, and a PE passes the partial sum of a bubble on
    unchanged, which is zero since the top row's partial-sum input is zero).

    **Weight writes while streaming.** W_b[i][j] as used for element i of the row presented in
    cycle t is the value of the weight register at the start of cycle t + i + j, the cycle the
    element is in PE(i, j). So a write of row i of buffer b in cycle c is used, in column j, by
    every row presented in cycle t >= c + 1 - i - j that selects b, and not by the rows
    presented in cycle t <= c - i - j, which use the previous value. In particular:

    * a row presented in cycle t >= c + 1 uses the new weights in every column;
    * a row presented in cycle t uses the old weights of row i in every column if the write
      happens in cycle c >= t + i + n - 1 (for any row i: c >= t + 2n - 2).

    The sequencer double-buffers with this: while rows select buffer 1 - b, it rewrites buffer b
    from cycle t_last + 2n - 2 on, where t_last is the cycle in which it presented the last row
    that selects the old contents of b, and presents the first row that selects the new contents
    in the cycle after the last write to b, or later.

    Parameters
    ----------
    n : :class:`int`
        The array size, from 2 to 32.

    Members
    -------
    weights : :py:`In(Signature({"valid": Out(1), "buffer": Out(1), "transpose": Out(1),
    "row": Out(range(n)), "data": Out(ArrayLayout(signed(8), n))}))`
        Weight row (or, with ``transpose``, column) write port.
    act : :py:`In(Signature({"valid": Out(1), "buffer": Out(1),
    "data": Out(ArrayLayout(signed(8), n))}))`
        Activation row input: element i enters array row i.
    out : :py:`Out(Signature({"valid": Out(1), "data": Out(ArrayLayout(signed(32), n))}))`
        Result rows (registers): element j is the output of column j.

    Attributes
    ----------
    n : :class:`int`
    latency : :class:`int`
        2n: cycles from an activation row to its result row.
    pes : list of list of :class:`ProcessingElement`
        ``pes[i][j]`` is PE(i, j).
    skew : list of list of :class:`Signal` (:data:`Activation`)
        ``skew[i]``: the i delay registers in front of array row i (``skew[i][-1]`` feeds
        PE(i, 0); ``skew[0]`` is empty: row 0 enters PE(0, 0) straight from ``act``).
    deskew : list of list of :class:`Signal` (``signed(32)``)
        ``deskew[j]``: the n - j registers behind column j; ``deskew[j][-1]`` drives
        ``out.data[j]``.
    """

    def __init__(self, n):
        _check_size(n)
        self._n = n
        row_of_int8 = data.ArrayLayout(signed(ACT_BITS), n)
        super().__init__({
            "weights": In(wiring.Signature({
                "valid": Out(1),
                "buffer": Out(1),
                "transpose": Out(1),
                "row": Out(range(n)),
                "data": Out(row_of_int8),
            })),
            "act": In(wiring.Signature({
                "valid": Out(1),
                "buffer": Out(1),
                "data": Out(row_of_int8),
            })),
            "out": Out(wiring.Signature({
                "valid": Out(1),
                "data": Out(data.ArrayLayout(signed(ACC_BITS), n)),
            })),
        })
        self.pes = [[ProcessingElement() for _ in range(n)] for _ in range(n)]
        self.skew = [[Signal(Activation, name=f"skew_{i}_{k}") for k in range(i)]
                     for i in range(n)]
        self.deskew = [[Signal(signed(ACC_BITS), name=f"deskew_{j}_{k}") for k in range(n - j)]
                       for j in range(n)]

    @property
    def n(self):
        return self._n

    @property
    def latency(self):
        return 2 * self._n

    def elaborate(self, platform):
        m = Module()
        n, pes = self.n, self.pes
        for i in range(n):
            for j in range(n):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]

        # Weight writes: row `row` of the addressed buffer, element j into column j; or, when
        # transposed, column `row`, element i into row i.
        w = self.weights
        for i in range(n):
            for j in range(n):
                port = pes[i][j].weight
                m.d.comb += [
                    port.valid.eq(w.valid & Mux(w.transpose, w.row == j, w.row == i)),
                    port.buffer.eq(w.buffer),
                    port.data.eq(Mux(w.transpose, w.data[i], w.data[j])),
                ]

        # Skew: element i of the row waits i cycles, then enters PE(i, 0).
        for i in range(n):
            element = Signal(Activation, name=f"act_{i}")
            m.d.comb += [
                element.valid.eq(self.act.valid),
                element.buffer.eq(self.act.buffer),
                element.data.eq(self.act.data[i]),
            ]
            for register in self.skew[i]:
                m.d.sync += register.eq(element)
                element = register
            m.d.comb += pes[i][0].act_in.eq(element)

        # The grid: activations east, partial sums south (zero into the top row).
        for i in range(n):
            for j in range(n):
                if j > 0:
                    m.d.comb += pes[i][j].act_in.eq(pes[i][j - 1].act_out)
                if i > 0:
                    m.d.comb += pes[i][j].psum_in.eq(pes[i - 1][j].psum_out)
                else:
                    m.d.comb += pes[i][j].psum_in.eq(0)

        # De-skew: column j leaves the bottom row in cycle t + n + j and waits n - j cycles.
        for j in range(n):
            value = pes[n - 1][j].psum_out
            for register in self.deskew[j]:
                m.d.sync += register.eq(value)
                value = register
            m.d.comb += self.out.data[j].eq(value)

        # The valid bit of the last element leaves PE(n - 1, n - 1) in cycle t + 2n - 1.
        m.d.sync += self.out.valid.eq(pes[n - 1][n - 1].act_out.valid)
        return m

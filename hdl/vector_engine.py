"""The vector engine of the prefill engine: element-wise work on whole SBUF rows (n int8) and PSUM
rows (n int32), one row per cycle, fully pipelined (read, compute, write).

The engine owns no row memory: the SBUF and the PSUM live outside and the engine drives their
ports (two synchronous read ports and one write port each). It owns one 256-entry int8 table for
:attr:`VectorOp.LUT`, loaded from the SBUF by :attr:`VectorOp.LOAD_TABLE`. Requantization is
bit-identical to :func:`mesh.isa.requantize` and the int8 lane operations to
:func:`mesh.isa.lanes_op`, so the prefill engine and the mesh cores agree; the reciprocal and the
reciprocal square root are bit-identical to :func:`mesh.numerics.recip` and
:func:`mesh.numerics.rsqrt` (a constant ROM built from their tables).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from mesh.numerics import FRACTION_BITS, INT32_MAX, MANTISSA_BITS, RECIP_TABLE, RSQRT_TABLE

__all__ = ["VectorOp", "VectorEngine", "ROW_BITS", "TABLE_ENTRIES", "MIN_SIZE", "MAX_SIZE",
           "table_rows"]

MIN_SIZE, MAX_SIZE = 2, 32
ROW_BITS = 16         # row addresses and row counts: up to 65536 rows per memory
TABLE_ENTRIES = 256   # one table entry per int8 value


class VectorOp(enum.Enum, shape=4):
    """The vector engine's operations (``cmd.op``). Row i of a command (i = 0 .. rows - 1) reads
    source rows a + i (and b + i) and writes row d + i, except the reductions, which write row d
    once. Elements are k = 0 .. n - 1; sat8(x) = min(max(x, -128), 127); wrap32(x) is x modulo
    2^32 as a signed int32.

    ``REQUANT``: PSUM a -> SBUF d:
        d[k] = sat8(floor(a[k] * multiplier / 2^shift + 1/2)) = ``isa.requantize(a[k],
        multiplier, shift)``, computed exactly from the signed 64-bit product p as
        (p >> shift) + bit (shift - 1) of p (no rounding bit when shift = 0).
    ``ADD8``: SBUF a, b -> SBUF d: d[k] = sat8(a[k] + b[k]) (``isa.lanes_op("vadd8")``).
    ``MAX8``: SBUF a, b -> SBUF d: d[k] = max(a[k], b[k]) (``isa.lanes_op("vmax8")``).
    ``MUL8``: SBUF a, b -> SBUF d: d[k] = sat8(a[k] * b[k]) (``isa.lanes_op("vmul8")``).
    ``ADD32``: PSUM a, b -> PSUM d: d[k] = wrap32(a[k] + b[k]).
    ``LUT``: SBUF a -> SBUF d: d[k] = table[a[k] + 128].
    ``LOAD_TABLE``: SBUF a .. a + T - 1 -> the table, T = ceil(256 / n) rows whatever ``rows``
        says: table[e] = element e mod n of row a + e // n, for e = 0 .. 255 (the elements of
        the last row beyond entry 255 are ignored). Writes no row.
    ``ROWMAX``: PSUM a .. a + rows - 1 -> PSUM d: d[k] = max over i of row (a + i)[k].
    ``ROWSUM``: PSUM a .. a + rows - 1 -> PSUM d: d[k] = wrap32(sum over i of row (a + i)[k]).
    ``SUB32``: PSUM a, b -> PSUM d: d[k] = wrap32(a[k] - b[k]).
    ``LANEMAX``: PSUM a (and PSUM b with ``acc``) -> PSUM d: d[k] = max over j of a[j], the
        row's maximum in every lane; with ``acc``: d[k] = max(max over j of a[j], b[k]).
    ``LANESUM``: PSUM a (and PSUM b with ``acc``) -> PSUM d: d[k] = wrap32(sum over j of a[j])
        in every lane; with ``acc``: d[k] = wrap32(sum over j of a[j] + b[k]).
    ``MULW``: SBUF a, b -> PSUM d: d[k] = a[k] * b[k], exact in int32 (a widening multiply;
        with b a row of ones it widens int8 to int32).
    ``SCALE``: PSUM a, b -> SBUF d: d[k] = ``isa.requantize(a[k], b[k], shift)``: REQUANT with
        a per-lane multiplier, lane k's from PSUM row b + i, and the command's shift.
    ``RECIP``: PSUM a -> PSUM d: d[k] = ``mesh.numerics.recip(a[k], shift)`` ~ 2^shift / a[k]
        (2^31 - 1 for a[k] <= 0).
    ``RSQRT``: PSUM a -> PSUM d: d[k] = ``mesh.numerics.rsqrt(a[k], shift)`` ~
        2^shift / sqrt(a[k]) (2^31 - 1 for a[k] <= 0).

    ``acc`` is used by LANEMAX and LANESUM only (the other ops ignore it). RECIP and RSQRT
    follow :mod:`mesh.numerics` exactly: per lane, a leading-one detector gives
    k = bit_length(a[k]) - 1, the 7 bits below the leading one index a constant ROM built from
    ``RECIP_TABLE`` and ``RSQRT_TABLE``, and the entry is shifted by shift - 16 - k (RSQRT:
    shift - 16 - floor(k / 2), the table half by k mod 2), a floor shift right when negative,
    saturated at 2^31 - 1. Every code 0 .. 15 is an op.
    """
    REQUANT = 0
    ADD8 = 1
    MAX8 = 2
    MUL8 = 3
    ADD32 = 4
    LUT = 5
    LOAD_TABLE = 6
    ROWMAX = 7
    ROWSUM = 8
    SUB32 = 9
    LANEMAX = 10
    LANESUM = 11
    MULW = 12
    SCALE = 13
    RECIP = 14
    RSQRT = 15


#: The ops reading each port, and writing each write port (the reductions write their last row).
#: The ops of ACC_OPS read PSUM port b too when their command's ``acc`` is set.
SBUF_READ_A_OPS = (VectorOp.ADD8, VectorOp.MAX8, VectorOp.MUL8, VectorOp.LUT,
                   VectorOp.LOAD_TABLE, VectorOp.MULW)
SBUF_READ_B_OPS = (VectorOp.ADD8, VectorOp.MAX8, VectorOp.MUL8, VectorOp.MULW)
PSUM_READ_A_OPS = (VectorOp.REQUANT, VectorOp.ADD32, VectorOp.ROWMAX, VectorOp.ROWSUM,
                   VectorOp.SUB32, VectorOp.LANEMAX, VectorOp.LANESUM, VectorOp.SCALE,
                   VectorOp.RECIP, VectorOp.RSQRT)
PSUM_READ_B_OPS = (VectorOp.ADD32, VectorOp.SUB32, VectorOp.SCALE)
ACC_OPS = (VectorOp.LANEMAX, VectorOp.LANESUM)
SBUF_WRITE_OPS = (VectorOp.REQUANT, VectorOp.ADD8, VectorOp.MAX8, VectorOp.MUL8, VectorOp.LUT,
                  VectorOp.SCALE)
PSUM_WRITE_OPS = (VectorOp.ADD32, VectorOp.ROWMAX, VectorOp.ROWSUM, VectorOp.SUB32,
                  VectorOp.LANEMAX, VectorOp.LANESUM, VectorOp.MULW, VectorOp.RECIP,
                  VectorOp.RSQRT)
REDUCTION_OPS = (VectorOp.ROWMAX, VectorOp.ROWSUM)

# The RECIP and RSQRT ROMs are mesh.numerics' tables: indexed by the mantissa m (RECIP) and by
# 128 p + m (RSQRT), so every index selects an entry.
assert len(RECIP_TABLE) == 1 << MANTISSA_BITS and len(RSQRT_TABLE) == 2 << MANTISSA_BITS
ROM_BITS = max(RECIP_TABLE + RSQRT_TABLE).bit_length()
assert min(RECIP_TABLE + RSQRT_TABLE) >= 0 and ROM_BITS < 31    # the saturating shift needs it


def table_rows(n):
    """ceil(256 / n): the SBUF rows a :attr:`VectorOp.LOAD_TABLE` command reads."""
    return -(-TABLE_ENTRIES // n)


def _check_size(n):
    if not isinstance(n, int) or isinstance(n, bool) or not MIN_SIZE <= n <= MAX_SIZE:
        raise ValueError(f"n must be an integer from {MIN_SIZE} to {MAX_SIZE}, not {n!r}")


def _check_table_entries(table_entries):
    if (not isinstance(table_entries, int) or isinstance(table_entries, bool)
            or table_entries != TABLE_ENTRIES):
        raise ValueError(f"table_entries must be {TABLE_ENTRIES} (one entry per int8 value), "
                         f"not {table_entries!r}")


def read_port_signature(element_shape, n):
    """A synchronous read port, as the engine sees it: ``en`` and ``addr`` in cycle t, the row
    on ``data`` in cycle t + 1."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(ROW_BITS),
        "data": In(data.ArrayLayout(element_shape, n)),
    })


def write_port_signature(element_shape, n):
    """A write port: when ``en`` in cycle t, row ``addr`` becomes ``data`` at the end of t."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(ROW_BITS),
        "data": Out(data.ArrayLayout(element_shape, n)),
    })


def command_signature():
    """The command stream, as the engine sees it (valid/ready: taken when both are high)."""
    return wiring.Signature({
        "valid": Out(1),
        "ready": In(1),
        "op": Out(VectorOp),
        "src_a": Out(ROW_BITS),
        "src_b": Out(ROW_BITS),
        "dst": Out(ROW_BITS),
        "rows": Out(ROW_BITS),
        "multiplier": Out(signed(32)),
        "shift": Out(range(64)),
        "acc": Out(1),
    })


def _is(op, ops):
    result = 0
    for candidate in ops:
        result = result | (op == candidate)
    return result


def _sat8(value):
    return Mux(value > 127, 127, Mux(value < -128, -128, value[:8]))


def _norm_lane(m, value, shift, is_rsqrt, recip_rom, rsqrt_rom, name):
    """RECIP (``is_rsqrt`` low) or RSQRT of the int32 ``value`` with ``shift``, as
    :func:`mesh.numerics.recip` / :func:`mesh.numerics.rsqrt`: combinational. ``recip_rom``,
    ``rsqrt_rom``: the tables as :class:`Array` of constants."""
    positive = Signal(name=f"{name}_positive")
    k = Signal(range(31), name=f"{name}_k")                  # bit_length(value) - 1
    mantissa = Signal(MANTISSA_BITS, name=f"{name}_m")       # the 7 bits below the leading one
    entry = Signal(ROM_BITS, name=f"{name}_entry")
    exponent = Signal(signed(8), name=f"{name}_exponent")   # shift - 16 - (k or k // 2)
    left, right = Signal(range(32), name=f"{name}_left"), Signal(range(32), name=f"{name}_right")
    scaled = Signal(len(entry) + 31, name=f"{name}_scaled")
    result = Signal(signed(32), name=f"{name}_result")
    magnitude = value[:31]
    # Leading-one detector: the highest set bit of a positive int32 (a later If wins).
    for bit in range(31):
        with m.If(magnitude[bit]):
            m.d.comb += k.eq(bit)
    m.d.comb += [
        positive.eq(value > 0),
        mantissa.eq((magnitude << MANTISSA_BITS) >> k),    # drops the leading one
        entry.eq(Mux(is_rsqrt, rsqrt_rom[Cat(mantissa, k[0])], recip_rom[mantissa])),
        exponent.eq(shift - FRACTION_BITS - Mux(is_rsqrt, k[1:], k)),
        # The saturating shift: left by min(e, 31) (any nonzero entry << 31 saturates), right
        # by min(-e, 31) (the entries have fewer than 31 bits).
        left.eq(Mux(exponent > 31, 31, exponent[:5])),
        right.eq(Mux(exponent < -31, 31, (-exponent)[:5])),
        scaled.eq(Mux(exponent >= 0, entry << left, entry >> right)),
        result.eq(Mux(~positive | (scaled > INT32_MAX), INT32_MAX, scaled[:32])),
    ]
    return result


class VectorEngine(wiring.Component):
    """The vector engine: one row per cycle through three stages (read, compute, write).

    Cycle t is any clock cycle; all registers reset to zero (the table too).

    **Commands.** A command is taken in cycle c when ``cmd.valid`` and ``cmd.ready`` are both
    high. It has R rows: ``rows`` for every op but :attr:`VectorOp.LOAD_TABLE`, which has
    :func:`table_rows` (n) = ceil(256 / n) rows; ``rows`` = 0 counts as 1. ``ready``
    depends on registers only (not on ``cmd.valid``): high after reset, low in cycles
    c + 1 .. c + R - 1, high again from cycle c + R. So commands can be taken back to back, one
    every R cycles, with no bubble.

    **Rows.** Row i of the command (i = 0 .. R - 1) is read in cycle **c + i**: the engine drives
    the read ports' ``en`` and ``addr`` (row a + i, and b + i, modulo 2^16) in that cycle (for
    row 0 straight from ``cmd``), the memories return the rows in cycle c + i + 1, the engine
    computes in cycle c + i + 1 and drives the write port (``en``, ``addr`` = d + i, ``data``,
    all registers) in cycle **c + i + 2**. A reduction (:attr:`VectorOp.ROWMAX`,
    :attr:`VectorOp.ROWSUM`) reads its R rows in cycles c .. c + R - 1 and writes its single row
    d in cycle **c + R + 1** (the slot of its last row). :attr:`VectorOp.LOAD_TABLE` writes the
    n entries of row i into the table at the end of cycle **c + i + 1**; a LUT row computed in
    cycle t uses the table as it is at the start of t, so a LUT taken right after a LOAD_TABLE
    (in its cycle c + R) uses the new table in every row.

    Ports per op (``en`` is low on every other port): REQUANT: PSUM read a, SBUF write; ADD8,
    MAX8, MUL8: SBUF read a and b, SBUF write; ADD32, SUB32: PSUM read a and b, PSUM write; LUT:
    SBUF read a, SBUF write; LOAD_TABLE: SBUF read a (no write); ROWMAX, ROWSUM: PSUM read a,
    PSUM write (once); LANEMAX, LANESUM: PSUM read a (and PSUM read b when ``acc``), PSUM write;
    MULW: SBUF read a and b, PSUM write; SCALE: PSUM read a and b, SBUF write; RECIP, RSQRT:
    PSUM read a, PSUM write. A read port's ``addr`` and a write port's ``addr`` and ``data`` are
    meaningless while its ``en`` is low. None of the ops 9 .. 15 is a reduction: they have the
    timing of ADD32 (row i read in c + i, computed in c + i + 1, written in c + i + 2).

    **busy** is a register output, high in cycles c + 1 .. c + R + 1 of every command taken in
    cycle c (a row is being read, computed or written). When ``busy`` is low, every write of
    every earlier command is done.

    **Memories and hazards.** The memories are expected to be non-transparent: a read in cycle
    t returns the row as written by the writes of cycles before t, and a read of a row written
    in the same cycle t returns its old value. The engine does not check hazards: a row written
    in cycle w (row i of a command taken in cycle c: w = c + i + 2) is seen by reads in cycles
    w + 1 and later only. So a command taken in cycle c' >= c + R + 2 (for instance once ``busy``
    is low) sees every row written by a command taken in cycle c with R rows; one taken earlier
    (from c + R, back to back) sees row i of it, written in cycle c + i + 2, only in reads of
    cycle c + i + 3 or later: chained commands of fewer than 3 rows that read what the previous
    one wrote need a gap (R = 1: 2 cycles; R = 2: 1 cycle). Rows written by the same command
    (d + i = a + j with j > i) are likewise seen only if read in cycle w + 1 or later.

    Parameters
    ----------
    n : :class:`int`
        Elements per row, from 2 to 32.
    table_entries : :class:`int`
        The LUT's entries: 256 (one per int8 value), the only value supported.

    Members
    -------
    cmd : :py:`In(Signature({"valid": Out(1), "ready": In(1), "op": Out(VectorOp),
    "src_a": Out(16), "src_b": Out(16), "dst": Out(16), "rows": Out(16),
    "multiplier": Out(signed(32)), "shift": Out(range(64)), "acc": Out(1)}))`
        The command stream (``src_a``, ``src_b``, ``dst``: rows a, b, d; ``acc``: LANEMAX and
        LANESUM combine with PSUM row b + i).
    busy : :py:`Out(1)`
        A row is in flight (a register).
    sbuf_read_a, sbuf_read_b : :py:`Out(Signature({"en": Out(1), "addr": Out(16),
    "data": In(ArrayLayout(signed(8), n))}))`
        SBUF synchronous read ports: ``addr`` with ``en`` in cycle t, ``data`` in t + 1.
    sbuf_write : :py:`Out(Signature({"en": Out(1), "addr": Out(16),
    "data": Out(ArrayLayout(signed(8), n))}))`
        SBUF write port (registers).
    psum_read_a, psum_read_b : :py:`Out(Signature({"en": Out(1), "addr": Out(16),
    "data": In(ArrayLayout(signed(32), n))}))`
        PSUM synchronous read ports.
    psum_write : :py:`Out(Signature({"en": Out(1), "addr": Out(16),
    "data": Out(ArrayLayout(signed(32), n))}))`
        PSUM write port (registers; ``data`` is also the reductions' accumulator).

    Attributes
    ----------
    n : :class:`int`
    table : list of 256 :class:`Signal` (``signed(8)``)
        The LUT entries.
    """

    def __init__(self, n, table_entries=TABLE_ENTRIES):
        _check_size(n)
        _check_table_entries(table_entries)
        self._n = n
        super().__init__({
            "cmd": In(command_signature()),
            "busy": Out(1),
            "sbuf_read_a": Out(read_port_signature(signed(8), n)),
            "sbuf_read_b": Out(read_port_signature(signed(8), n)),
            "sbuf_write": Out(write_port_signature(signed(8), n)),
            "psum_read_a": Out(read_port_signature(signed(32), n)),
            "psum_read_b": Out(read_port_signature(signed(32), n)),
            "psum_write": Out(write_port_signature(signed(32), n)),
        })
        self.table = [Signal(signed(8), name=f"table_{e}") for e in range(TABLE_ENTRIES)]

    @property
    def n(self):
        return self._n

    @property
    def table_rows(self):
        return table_rows(self._n)

    def elaborate(self, platform):
        m = Module()
        n, cmd = self.n, self.cmd

        # Issue (read stage): the row read in this cycle, from `cmd` when a command is taken,
        # else from the registers of the command in progress.
        remaining = Signal(ROW_BITS)        # rows still to read after this cycle's
        cur = {name: Signal(shape, name=f"cur_{name}") for name, shape in [
            ("op", VectorOp), ("a", ROW_BITS), ("b", ROW_BITS), ("d", ROW_BITS),
            ("index", range(TABLE_ENTRIES)), ("multiplier", signed(32)), ("shift", range(64)),
            ("acc", 1)]}
        issue = {name: Signal(s.shape(), name=f"issue_{name}") for name, s in cur.items()}
        issue_valid, issue_first, issue_last = Signal(), Signal(), Signal()
        taken = Signal()
        count = Signal(ROW_BITS)            # the rows of the command on `cmd`

        m.d.comb += [
            cmd.ready.eq(remaining == 0),
            taken.eq(cmd.valid & cmd.ready),
        ]
        with m.If(cmd.op == VectorOp.LOAD_TABLE):
            m.d.comb += count.eq(self.table_rows)
        with m.Elif(cmd.rows == 0):
            m.d.comb += count.eq(1)
        with m.Else():
            m.d.comb += count.eq(cmd.rows)

        with m.If(taken):
            m.d.comb += [
                issue_valid.eq(1),
                issue["op"].eq(cmd.op),
                issue["a"].eq(cmd.src_a),
                issue["b"].eq(cmd.src_b),
                issue["d"].eq(cmd.dst),
                issue["index"].eq(0),
                issue["multiplier"].eq(cmd.multiplier),
                issue["shift"].eq(cmd.shift),
                issue["acc"].eq(cmd.acc),
                issue_first.eq(1),
                issue_last.eq(count == 1),
            ]
            m.d.sync += remaining.eq(count - 1)
        with m.Elif(remaining != 0):
            m.d.comb += [issue[name].eq(cur[name]) for name in cur]
            m.d.comb += [
                issue_valid.eq(1),
                issue_first.eq(0),
                issue_last.eq(remaining == 1),
            ]
            m.d.sync += remaining.eq(remaining - 1)

        # The next row of the command: a + 1, b + 1, d + 1 (d stays for a reduction).
        is_reduction = _is(issue["op"], REDUCTION_OPS)
        m.d.sync += [
            cur["op"].eq(issue["op"]),
            cur["a"].eq(issue["a"] + 1),
            cur["b"].eq(issue["b"] + 1),
            cur["d"].eq(Mux(is_reduction, issue["d"], issue["d"] + 1)),
            cur["index"].eq(issue["index"] + 1),
            cur["multiplier"].eq(issue["multiplier"]),
            cur["shift"].eq(issue["shift"]),
            cur["acc"].eq(issue["acc"]),
        ]

        acc_b = _is(issue["op"], ACC_OPS) & issue["acc"]
        for port, reads, address in [
                (self.sbuf_read_a, _is(issue["op"], SBUF_READ_A_OPS), issue["a"]),
                (self.sbuf_read_b, _is(issue["op"], SBUF_READ_B_OPS), issue["b"]),
                (self.psum_read_a, _is(issue["op"], PSUM_READ_A_OPS), issue["a"]),
                (self.psum_read_b, _is(issue["op"], PSUM_READ_B_OPS) | acc_b, issue["b"])]:
            m.d.comb += [
                port.en.eq(issue_valid & reads),
                port.addr.eq(address),
            ]

        # Compute stage: the row read in the previous cycle, with the memories' data.
        s1 = {name: Signal(s.shape(), name=f"s1_{name}") for name, s in issue.items()}
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        m.d.sync += [s1[name].eq(issue[name]) for name in issue]
        m.d.sync += [s1_valid.eq(issue_valid), s1_first.eq(issue_first),
                     s1_last.eq(issue_last)]

        sa, sb = self.sbuf_read_a.data, self.sbuf_read_b.data
        pa, pb = self.psum_read_a.data, self.psum_read_b.data
        acc = self.psum_write.data
        op = s1["op"]
        table = Array(self.table)
        sbuf_result = Signal(data.ArrayLayout(signed(8), n))
        psum_result = Signal(data.ArrayLayout(signed(32), n))
        # LANEMAX, LANESUM: the row's maximum and wrapping sum over its lanes.
        lane_max = Signal(signed(32))
        lane_sum = Signal(signed(32))
        best = pa[0]
        for j in range(1, n):
            best = Mux(pa[j] > best, pa[j], best)
        m.d.comb += [lane_max.eq(best), lane_sum.eq(sum(pa[j] for j in range(n))[:32])]
        is_rsqrt = op == VectorOp.RSQRT
        recip_rom = Array(Const(value, ROM_BITS) for value in RECIP_TABLE)
        rsqrt_rom = Array(Const(value, ROM_BITS) for value in RSQRT_TABLE)
        for k in range(n):
            # Requantize: ((2p >> shift) + 1) >> 1 = (p >> shift) + bit (shift - 1) of p, with
            # the command's multiplier (REQUANT) or lane k of PSUM row b (SCALE).
            product = Signal(signed(64), name=f"product_{k}")
            rounded = Signal(signed(66), name=f"rounded_{k}")
            m.d.comb += [
                product.eq(pa[k] * Mux(op == VectorOp.SCALE, pb[k], s1["multiplier"])),
                rounded.eq((((product << 1) >> s1["shift"]) + 1) >> 1),
            ]
            norm = _norm_lane(m, pa[k], s1["shift"], is_rsqrt, recip_rom, rsqrt_rom,
                              f"norm_{k}")
            with m.Switch(op):
                with m.Case(VectorOp.REQUANT):
                    m.d.comb += sbuf_result[k].eq(_sat8(rounded))
                with m.Case(VectorOp.ADD8):
                    m.d.comb += sbuf_result[k].eq(_sat8(sa[k] + sb[k]))
                with m.Case(VectorOp.MAX8):
                    m.d.comb += sbuf_result[k].eq(Mux(sa[k] > sb[k], sa[k], sb[k]))
                with m.Case(VectorOp.MUL8):
                    m.d.comb += sbuf_result[k].eq(_sat8(sa[k] * sb[k]))
                with m.Case(VectorOp.LUT):
                    m.d.comb += sbuf_result[k].eq(table[sa[k].as_unsigned() ^ 0x80])
                with m.Case(VectorOp.ADD32):
                    m.d.comb += psum_result[k].eq(pa[k] + pb[k])
                with m.Case(VectorOp.ROWMAX):
                    m.d.comb += psum_result[k].eq(
                        Mux(s1_first | (pa[k] > acc[k]), pa[k], acc[k]))
                with m.Case(VectorOp.ROWSUM):
                    m.d.comb += psum_result[k].eq(Mux(s1_first, pa[k], pa[k] + acc[k]))
                with m.Case(VectorOp.SUB32):
                    m.d.comb += psum_result[k].eq(pa[k] - pb[k])
                with m.Case(VectorOp.LANEMAX):
                    m.d.comb += psum_result[k].eq(
                        Mux(s1["acc"] & (pb[k] > lane_max), pb[k], lane_max))
                with m.Case(VectorOp.LANESUM):
                    m.d.comb += psum_result[k].eq(lane_sum + Mux(s1["acc"], pb[k], 0))
                with m.Case(VectorOp.MULW):
                    m.d.comb += psum_result[k].eq(sa[k] * sb[k])
                with m.Case(VectorOp.SCALE):
                    m.d.comb += sbuf_result[k].eq(_sat8(rounded))
                with m.Case(VectorOp.RECIP, VectorOp.RSQRT):
                    m.d.comb += psum_result[k].eq(norm)
                with m.Default():    # LOAD_TABLE
                    m.d.comb += [sbuf_result[k].eq(0), psum_result[k].eq(0)]

        # The table: entry e from element e mod n of row e // n of a LOAD_TABLE.
        with m.If(s1_valid & (op == VectorOp.LOAD_TABLE)):
            for e in range(TABLE_ENTRIES):
                with m.If(s1["index"] == e // n):
                    m.d.sync += self.table[e].eq(sa[e % n])

        # Write stage: registers driving the write ports.
        s2_valid = Signal()
        writes_psum = _is(op, PSUM_WRITE_OPS)
        m.d.sync += [
            s2_valid.eq(s1_valid),
            self.sbuf_write.en.eq(s1_valid & _is(op, SBUF_WRITE_OPS)),
            self.sbuf_write.addr.eq(s1["d"]),
            self.sbuf_write.data.eq(sbuf_result),
            self.psum_write.en.eq(s1_valid & writes_psum
                                  & (~_is(op, REDUCTION_OPS) | s1_last)),
            self.psum_write.addr.eq(s1["d"]),
        ]
        with m.If(s1_valid & writes_psum):
            m.d.sync += self.psum_write.data.eq(psum_result)

        # busy in cycle t + 1: a row is read (a later row of a command read in t), computed (read
        # in t) or written (computed in t) in t + 1.
        m.d.sync += self.busy.eq(issue_valid | s1_valid)
        return m

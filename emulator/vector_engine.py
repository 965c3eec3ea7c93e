"""Cycle-level model of the prefill engine's vector engine, written from the timing contract of
:class:`hdl.vector_engine.VectorEngine` (not from its RTL), and :func:`vector_op`, the plain
numpy semantics of each operation.

The contract, in short: a command taken in cycle c with R rows reads row i in cycle c + i (its
data is the memory as written by the writes of cycles before c + i), computes it in cycle
c + i + 1 and writes it in cycle c + i + 2 (a reduction writes its one row in cycle c + R + 1; a
LOAD_TABLE row writes the table at the end of cycle c + i + 1). The next command can be taken in
cycle c + R; ``busy`` is high in cycles c + 1 .. c + R + 1. Requantization (REQUANT, SCALE) is
:func:`mesh.isa.requantize`, the int8 lane ops are :func:`mesh.isa.lanes_op`, RECIP and RSQRT are
:func:`mesh.numerics.recip` and :func:`mesh.numerics.rsqrt`. The op codes are
:class:`mesh.prefill.VectorOp` (the same as :class:`hdl.vector_engine.VectorOp`).
"""

from dataclasses import dataclass

import numpy as np

from mesh import isa, numerics
from mesh.prefill import VectorOp

__all__ = ["VectorOp", "VectorCommand", "VectorEngineModel", "vector_op", "table_rows", "ports"]

MIN_SIZE, MAX_SIZE = 2, 32
ROW_BITS = 16
TABLE_ENTRIES = 256


LANE_OPS = {VectorOp.ADD8: "vadd8", VectorOp.MAX8: "vmax8", VectorOp.MUL8: "vmul8"}
REDUCTIONS = (VectorOp.ROWMAX, VectorOp.ROWSUM)
#: The ops that read PSUM row b too when their command's ``acc`` is set.
ACC_OPS = (VectorOp.LANEMAX, VectorOp.LANESUM)
# Per op: (SBUF read a, SBUF read b, PSUM read a, PSUM read b, writes: None, "sbuf" or "psum");
# the ops of ACC_OPS read PSUM b only with ``acc`` (see :func:`ports`).
PORTS = {
    VectorOp.REQUANT: (False, False, True, False, "sbuf"),
    VectorOp.ADD8: (True, True, False, False, "sbuf"),
    VectorOp.MAX8: (True, True, False, False, "sbuf"),
    VectorOp.MUL8: (True, True, False, False, "sbuf"),
    VectorOp.ADD32: (False, False, True, True, "psum"),
    VectorOp.LUT: (True, False, False, False, "sbuf"),
    VectorOp.LOAD_TABLE: (True, False, False, False, None),
    VectorOp.ROWMAX: (False, False, True, False, "psum"),
    VectorOp.ROWSUM: (False, False, True, False, "psum"),
    VectorOp.SUB32: (False, False, True, True, "psum"),
    VectorOp.LANEMAX: (False, False, True, False, "psum"),
    VectorOp.LANESUM: (False, False, True, False, "psum"),
    VectorOp.MULW: (True, True, False, False, "psum"),
    VectorOp.SCALE: (False, False, True, True, "sbuf"),
    VectorOp.RECIP: (False, False, True, False, "psum"),
    VectorOp.RSQRT: (False, False, True, False, "psum"),
}


def ports(op, acc=0):
    """The ports of ``op`` with ``acc``: :data:`PORTS`, with PSUM read b for the ops of
    :data:`ACC_OPS` when ``acc`` is set."""
    op = VectorOp(op)
    sbuf_a, sbuf_b, psum_a, psum_b, writes = PORTS[op]
    return sbuf_a, sbuf_b, psum_a, psum_b or (op in ACC_OPS and bool(acc)), writes


def table_rows(n):
    """ceil(256 / n): the SBUF rows a LOAD_TABLE command reads."""
    return -(-TABLE_ENTRIES // n)


def _int_array(name, values, low, high):
    array = np.asarray(values)
    if array.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, not {array.dtype}")
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{name} values must be from {low} to {high}")
    return array.astype(np.int64)


def _int8(name, values):
    return _int_array(name, values, -128, 127)


def _int32(name, values):
    return _int_array(name, values, -2**31, 2**31 - 1)


def _words_to_int8(words):
    """isa.requantize's sign-extended uint32 words as signed values."""
    return np.asarray(words, dtype=np.uint32).view(np.int32).astype(np.int64)


def _lanes(name, a, b):
    """isa.lanes_op on int8 rows: packed four lanes per word (padded with zeros)."""
    a, b = np.broadcast_arrays(a, b)
    length = a.shape[-1]
    pad = [(0, 0)] * (a.ndim - 1) + [(0, -length % 4)]

    def pack(x):
        x = np.pad(x, pad).reshape(x.shape[:-1] + (-1, 4)) & 0xFF
        return sum(x[..., k] << (8 * k) for k in range(4)).astype(np.uint32)

    words = isa.lanes_op(name, pack(a), pack(b))
    lanes = np.asarray(words, dtype="<u4")[..., None].view(np.int8)
    return lanes.reshape(words.shape[:-1] + (-1,))[..., :length].astype(np.int64)


def _check_shift(shift):
    if (not isinstance(shift, (int, np.integer)) or isinstance(shift, bool)
            or not 0 <= shift <= 63):
        raise ValueError(f"shift must be an integer from 0 to 63, not {shift!r}")


def _same_shape(a, b):
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, not {a.shape} and {b.shape}")


def _wrap32(values):
    return values.astype(np.int32).astype(np.int64)


def vector_op(op, a, b=None, *, multiplier=0, shift=0, table=None):
    """The result of ``op`` (a :class:`VectorOp`) as plain numpy, on whole rows (int64 arrays;
    the element-wise ops take any shape, the lanes are the last axis).

    * REQUANT: ``a`` int32 -> int8 ``isa.requantize(a, multiplier, shift)``;
    * ADD8, MAX8, MUL8: ``a``, ``b`` int8 (same shape) -> int8 ``isa.lanes_op``;
    * ADD32, SUB32: ``a``, ``b`` int32 -> int32 ``a + b``, ``a - b`` wrapping;
    * LANEMAX, LANESUM: ``a`` int32 (and ``b`` int32, same shape, or None) -> int32: the maximum
      / the wrapping sum over the last axis, in every lane, combined with ``b`` (max / wrapping
      sum) when ``b`` is given (the command's ``acc``);
    * MULW: ``a``, ``b`` int8 -> int32 ``a * b``;
    * SCALE: ``a``, ``b`` int32 -> int8 ``isa.requantize(a, b, shift)`` (per-lane multipliers);
    * RECIP, RSQRT: ``a`` int32 -> ``mesh.numerics.recip(a, shift)`` / ``rsqrt(a, shift)``;
    * LUT: ``a`` int8, ``table`` 256 int8 -> ``table[a + 128]``;
    * LOAD_TABLE: ``a`` (rows, n) int8 with rows * n >= 256 -> the table (256 int8),
      ``a.reshape(-1)[:256]``;
    * ROWMAX, ROWSUM: ``a`` (rows, n) int32, rows >= 1 -> one row: the maximum / the wrapping
      sum over the rows.
    """
    op = VectorOp(op)
    if op == VectorOp.REQUANT:
        _check_shift(shift)
        words = _int32("a", a) & 0xFFFFFFFF
        multiplier = int(_int32("multiplier", multiplier)) & 0xFFFFFFFF
        return _words_to_int8(isa.requantize(words.astype(np.uint32), np.uint32(multiplier),
                                             shift))
    if op == VectorOp.SCALE:
        _check_shift(shift)
        a, b = _int32("a", a), _int32("b", b)
        _same_shape(a, b)
        return _words_to_int8(isa.requantize((a & 0xFFFFFFFF).astype(np.uint32),
                                             (b & 0xFFFFFFFF).astype(np.uint32), shift))
    if op in (VectorOp.RECIP, VectorOp.RSQRT):
        _check_shift(shift)
        function = numerics.recip if op == VectorOp.RECIP else numerics.rsqrt
        return np.asarray(function(_int32("a", a), shift), dtype=np.int64)
    if op in LANE_OPS:
        a, b = _int8("a", a), _int8("b", b)
        _same_shape(a, b)
        return _lanes(LANE_OPS[op], a, b)
    if op == VectorOp.MULW:
        a, b = _int8("a", a), _int8("b", b)
        _same_shape(a, b)
        return a * b
    if op in (VectorOp.ADD32, VectorOp.SUB32):
        a, b = _int32("a", a), _int32("b", b)
        _same_shape(a, b)
        return _wrap32(a + b if op == VectorOp.ADD32 else a - b)
    if op in ACC_OPS:
        a = _int32("a", a)
        if a.ndim < 1 or a.shape[-1] < 1:
            raise ValueError(f"a must have one lane or more, not shape {a.shape}")
        if op == VectorOp.LANEMAX:
            result = np.broadcast_to(a.max(axis=-1, keepdims=True), a.shape)
        else:
            result = np.broadcast_to(_wrap32(a.sum(axis=-1, keepdims=True)), a.shape)
        if b is None:
            return result.copy()
        b = _int32("b", b)
        _same_shape(a, b)
        return np.maximum(result, b) if op == VectorOp.LANEMAX else _wrap32(result + b)
    if op == VectorOp.LUT:
        table = _int8("table", table)
        if table.shape != (TABLE_ENTRIES,):
            raise ValueError(f"table must hold {TABLE_ENTRIES} values, not shape {table.shape}")
        return table[_int8("a", a) + 128]
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"a must be a 2-D array of one row or more, not shape {a.shape}")
    if op == VectorOp.LOAD_TABLE:
        a = _int8("a", a)
        if a.size < TABLE_ENTRIES:
            raise ValueError(f"a must hold {TABLE_ENTRIES} values or more, not {a.size}")
        return a.reshape(-1)[:TABLE_ENTRIES].copy()
    a = _int32("a", a)
    if op == VectorOp.ROWMAX:
        return a.max(axis=0)
    return _wrap32(a.sum(axis=0))


@dataclass(frozen=True)
class VectorCommand:
    """One command: ``op`` (a :class:`VectorOp`, 0..15), rows ``src_a``, ``src_b``, ``dst`` and
    ``rows`` (16-bit fields; ``rows`` 0 counts as 1), ``multiplier`` (int32), ``shift``
    (0..63) and ``acc`` (0 or 1: LANEMAX and LANESUM combine with PSUM row ``src_b`` + i)."""
    op: int
    src_a: int = 0
    src_b: int = 0
    dst: int = 0
    rows: int = 1
    multiplier: int = 0
    shift: int = 0
    acc: int = 0

    def __post_init__(self):
        def check(name, low, high):
            value = getattr(self, name)
            if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                    or not low <= value <= high):
                raise ValueError(f"{name} must be an integer from {low} to {high}, "
                                 f"not {value!r}")
        check("op", 0, 15)
        for name in ("src_a", "src_b", "dst", "rows"):
            check(name, 0, 2**ROW_BITS - 1)
        check("multiplier", -2**31, 2**31 - 1)
        check("shift", 0, 63)
        check("acc", 0, 1)

    def row_count(self, n):
        """R: the rows the command reads (and cycles it occupies the engine)."""
        if self.op == VectorOp.LOAD_TABLE:
            return table_rows(n)
        return max(self.rows, 1)


class _Row:
    """A row in flight: command ``command``, row ``i`` of R, read in cycle ``t``."""

    __slots__ = ("command", "i", "last", "t", "data", "gathered")

    def __init__(self, command, i, last, t, gathered):
        self.command, self.i, self.last, self.t = command, i, last, t
        self.data = None
        self.gathered = gathered     # a reduction's rows read so far (shared by its rows)


class VectorEngineModel:
    """The vector engine, one :meth:`step` per clock cycle, on numpy memories ``sbuf`` (rows, n)
    and ``psum`` (rows, n) that it reads and writes in place (int64 arrays holding int8 and int32
    values; a port address selects row ``address % len(memory)``).

    Cycle 0 is the first step after construction or :meth:`reset`; the table starts all zero.

    Attributes
    ----------
    n : :class:`int`
    cycle : :class:`int`
        The cycle the next :meth:`step` models.
    table : :class:`numpy.ndarray` (256,)
        The LUT as it is at the start of cycle :attr:`cycle`.
    """

    def __init__(self, n, sbuf, psum):
        if not isinstance(n, int) or isinstance(n, bool) or not MIN_SIZE <= n <= MAX_SIZE:
            raise ValueError(f"n must be an integer from {MIN_SIZE} to {MAX_SIZE}, not {n!r}")
        for name, memory in (("sbuf", sbuf), ("psum", psum)):
            if not isinstance(memory, np.ndarray) or memory.ndim != 2 \
                    or memory.shape[1] != n or memory.shape[0] < 1:
                raise ValueError(f"{name} must be a numpy array of shape (rows, {n})")
        self._n = n
        self.sbuf, self.psum = sbuf, psum
        self.reset()

    @property
    def n(self):
        return self._n

    def reset(self):
        """Back to cycle 0: nothing in flight, the table all zero (the memories are kept)."""
        self.cycle = 0
        self.table = np.zeros(TABLE_ENTRIES, dtype=np.int64)
        self._ready_at = 0
        self._busy_from = []
        self._reads = {}              # cycle -> [_Row] read in it
        self._computes = {}           # cycle -> [_Row] computed in it
        self._writes = {}             # cycle -> [(port, address, data)]

    @property
    def ready(self):
        """Whether a command can be taken in cycle :attr:`cycle`."""
        return self.cycle >= self._ready_at

    def step(self, command=None):
        """Model one cycle, taking ``command`` (a :class:`VectorCommand`, or None) if it is
        offered in this cycle and :attr:`ready`. Returns this cycle's outputs: a dict with
        ``ready``, ``busy``, ``taken``, ``reads`` ({port name: address} for the read ports whose
        ``en`` is high) and ``writes`` ({port name: (address, int64 row)} for the write ports
        whose ``en`` is high). Writes take effect in the memories at the end of the cycle."""
        n, t = self._n, self.cycle
        ready = self.ready
        busy = any(start <= t <= end for start, end in self._busy_from)
        taken = command is not None and ready
        if taken:
            if not isinstance(command, VectorCommand):
                raise TypeError(f"command must be a VectorCommand, not {command!r}")
            count = command.row_count(n)
            gathered = []
            for i in range(count):
                row = _Row(command, i, i == count - 1, t + i, gathered)
                self._reads.setdefault(t + i, []).append(row)
            self._ready_at = t + count
            self._busy_from.append((t + 1, t + count + 1))
        self._busy_from = [(s, e) for s, e in self._busy_from if e > t]

        # Read stage: the memories as at the start of this cycle (non-transparent).
        reads = {}
        for row in self._reads.pop(t, []):
            c = row.command
            sbuf_a, sbuf_b, psum_a, psum_b, _ = ports(c.op, c.acc)
            a_addr = (c.src_a + row.i) % 2**ROW_BITS
            b_addr = (c.src_b + row.i) % 2**ROW_BITS
            data = {}
            for name, enabled, memory, address in [
                    ("sbuf_read_a", sbuf_a, self.sbuf, a_addr),
                    ("sbuf_read_b", sbuf_b, self.sbuf, b_addr),
                    ("psum_read_a", psum_a, self.psum, a_addr),
                    ("psum_read_b", psum_b, self.psum, b_addr)]:
                if enabled:
                    reads[name] = address
                    data[name] = memory[address % len(memory)].astype(np.int64).copy()
            row.data = data
            self._computes.setdefault(t + 1, []).append(row)

        # Compute stage: the rows read in the previous cycle, with the table as it is now.
        table_updates = []
        for row in self._computes.pop(t, []):
            self._compute(row, t, table_updates)

        writes = {}
        for port, address, data in self._writes.pop(t, []):
            writes[port] = (address, data)
            memory = self.sbuf if port == "sbuf_write" else self.psum
            memory[address % len(memory)] = data
        for entries, values in table_updates:
            self.table[entries] = values
        self.cycle += 1
        return {"ready": ready, "busy": busy, "taken": taken, "reads": reads,
                "writes": writes}

    def _compute(self, row, t, table_updates):
        c, n, d = row.command, self._n, row.data
        op = VectorOp(c.op)
        result = None
        if op == VectorOp.LOAD_TABLE:
            first = row.i * n
            entries = np.arange(first, min(first + n, TABLE_ENTRIES))
            table_updates.append((entries, d["sbuf_read_a"][:len(entries)]))
            return
        if op in REDUCTIONS:
            row.gathered.append(d["psum_read_a"])
            if row.last:
                result = vector_op(op, np.stack(row.gathered))
        elif op == VectorOp.REQUANT:
            result = vector_op(op, d["psum_read_a"], multiplier=c.multiplier, shift=c.shift)
        elif op in LANE_OPS or op == VectorOp.MULW:
            result = vector_op(op, d["sbuf_read_a"], d["sbuf_read_b"])
        elif op in (VectorOp.ADD32, VectorOp.SUB32):
            result = vector_op(op, d["psum_read_a"], d["psum_read_b"])
        elif op in ACC_OPS:
            result = vector_op(op, d["psum_read_a"], d.get("psum_read_b"))
        elif op == VectorOp.SCALE:
            result = vector_op(op, d["psum_read_a"], d["psum_read_b"], shift=c.shift)
        elif op in (VectorOp.RECIP, VectorOp.RSQRT):
            result = vector_op(op, d["psum_read_a"], shift=c.shift)
        elif op == VectorOp.LUT:
            result = vector_op(op, d["sbuf_read_a"], table=self.table)
        if result is None:
            return
        port = "sbuf_write" if PORTS[op][4] == "sbuf" else "psum_write"
        address = c.dst if op in REDUCTIONS else (c.dst + row.i) % 2**ROW_BITS
        self._writes.setdefault(t + 1, []).append((port, address, result))

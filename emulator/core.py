"""The cores of every tile, vectorized across the mesh (docs/ARCHITECTURE.md section 9).

:class:`CoreArray` holds the state of section 9 for all cores as numpy arrays indexed by tile
(row-major) and computes one cycle of all of them with whole-array operations. Per cycle, the
cores are grouped by what they are doing:

* cores issuing an instruction (not halted, not in the second cycle of a ``ld``, not inside a
  vector instruction; a ``recv``/``send`` that waits simply issues again every cycle, since its
  operands and the routes cannot change while it waits) fetch the word at ``pc``, decode its
  fields with vectorized bit operations and are split by instruction class
  (:data:`_CLASS_OF`); each class has one small method (``_issue_*``) that applies it to all of
  its cores at once;
* cores in the second cycle of a ``ld`` complete it (:meth:`CoreArray._finish_loads`);
* cores inside a vector instruction, including those that issued one in this very cycle (the
  issue cycle is the first cycle of stage R), advance the R/M/X pipeline
  (:meth:`CoreArray._vector_cycle`).

Everything a core does in a cycle depends only on the state at the start of the cycle: memory
reads are made before the cycle's writes, and what arrives from the router (wavelets, credits) is
applied by :meth:`CoreArray.deliver` after the cycle, as the link timing of section 3 requires.

The core is the agent on its router's RAMP link. Its outputs in a cycle (the wavelet it sends,
the credits it returns for wavelets it takes) are written into ``send_valid``, ``send_color``,
``send_data`` (tiles,) and ``credit_return`` (tiles, colors); :class:`emulator.MeshEmulator`
makes these views of the fabric's inbound-link and credit arrays.

Speed notes: the per-cycle path uses 1-D arrays and 1-D fancy indexing only (2-D fancy
indexing is several times slower in numpy); queue counts and credits have a sentinel entry that
is never zero, and the SRAM array has one extra word per tile holding the scalar operand (rs) of
the vector instruction in flight, so operands of every kind are read the same way.
"""

import numpy as np

from mesh import Port, isa
from mesh.isa import Kind, TrapCause

__all__ = ["CoreArray", "Waiting"]

_MEM, _FIN, _FOUT = int(Kind.MEM), int(Kind.FIN), int(Kind.FOUT)
_COUNTER = {name: k for k, (name, _) in enumerate(isa.COUNTERS)}
(_CYCLES, _INSTRUCTIONS, _ELEMENTS, _STALL_IN, _STALL_OUT, _MACS, _SRAM_READS, _SRAM_WRITES,
 _WAVELETS_IN, _WAVELETS_OUT) = (_COUNTER[name] for name in (
    "cycles", "instructions", "elements", "stall_in", "stall_out", "macs", "sram_reads",
    "sram_writes", "wavelets_in", "wavelets_out"))
assert len(_COUNTER) == 10, "a counter was added to isa.COUNTERS: count it here"

_PC_MASK = isa.MAX_IMEM_WORDS - 1          # pc is 14 bits
_WORD = 0xFFFFFFFF
_RAMP_BIT = 1 << int(Port.RAMP)
_NUM_OPCODES = 1 << isa.FIELDS["op"].width
_NREG, _NDESC = isa.NUM_REGISTERS, isa.NUM_DESCRIPTORS

# Instruction classes: each is applied by one method of CoreArray (CoreArray._HANDLERS).
(_ILLEGAL, _HALT, _ALU_R, _ALU_I, _LD, _ST, _BRANCH, _DBNZ, _JAL, _JR, _RECV, _SEND, _TID,
 _DESC, _VECTOR) = range(15)
_N_CLASSES = 15

# Where a vector instruction's results go.
_TO_MEM, _TO_FOUT, _TO_SUM, _TO_MAX = range(4)


def _opcode_tables():
    """Per opcode (indexed by the 6-bit code): class, name, immediate extension, MACs, and the
    vector properties the issue checks need."""
    cls = np.full(_NUM_OPCODES, _ILLEGAL, dtype=np.intp)
    name = [None] * _NUM_OPCODES
    zext = np.zeros(_NUM_OPCODES, dtype=bool)
    macs = np.zeros(_NUM_OPCODES, dtype=np.uint32)
    binary = np.zeros(_NUM_OPCODES, dtype=bool)
    reducible = np.zeros(_NUM_OPCODES, dtype=bool)
    packable = np.zeros(_NUM_OPCODES, dtype=bool)
    special = {"halt": _HALT, "ld": _LD, "st": _ST, "beq": _BRANCH, "bne": _BRANCH,
               "blt": _BRANCH, "bge": _BRANCH, "dbnz": _DBNZ, "jal": _JAL, "jr": _JR,
               "recv": _RECV, "send": _SEND, "tid": _TID}
    for op in isa.OPCODES:
        code = op.code
        name[code] = op.name
        zext[code] = op.zero_extend
        if op.name in special:
            cls[code] = special[op.name]
        elif op.group is isa.Group.ALU:
            cls[code] = _ALU_R if op.format is isa.Format.R else _ALU_I
        elif op.group is isa.Group.DESCRIPTOR:
            cls[code] = _DESC
        elif op.group is isa.Group.VECTOR:
            cls[code] = _VECTOR
        else:
            raise AssertionError(f"opcode {op.name} has no class in the core emulator")
        macs[code] = isa.MACS_PER_ELEMENT.get(op.name, isa.MACS_PER_SCALAR.get(op.name, 0))
        binary[code] = op.name in isa.BINARY_VECTOR
        reducible[code] = op.name in isa.REDUCIBLE
        packable[code] = op.name in isa.PACKABLE
    return cls, name, zext, macs, binary, reducible, packable


_CLASS_OF, _NAME, _ZERO_EXTEND, _MACS_OF, _BINARY, _REDUCIBLE, _PACKABLE = _opcode_tables()
_CODE = {name: code for code, name in enumerate(_NAME) if name is not None}
_VPACK, _VLUT, _VREQ = _CODE["vpack"], _CODE["vlut"], _CODE["vreq"]
# Opcodes whose accumulation into the destination saturates to int8 (isa.SATURATING_ACC: vreq).
_SATURATING_ACC = np.array([name in isa.SATURATING_ACC for name in _NAME], dtype=bool)
_OP_LSB = isa.FIELDS["op"].lsb

# Vector issue checks work on a (3, k) block of operands: rows dd, da, db.
_DD, _DA, _DB = 0, 1, 2
_WRONG_KIND = np.array([[_FIN], [_FOUT], [_FOUT]])   # a FIN destination, a FOUT source


def _s32(u):
    """uint32 -> signed value as int64."""
    return np.asarray(u, dtype=np.uint32).view(np.int32).astype(np.int64)


def _u32(x):
    """int64 -> uint32, modulo 2^32."""
    return (np.asarray(x, dtype=np.int64) & _WORD).astype(np.uint32)


def _any(mask):
    return np.count_nonzero(mask) != 0


def _all(mask):
    return np.count_nonzero(mask) == mask.size


def _nz(mask):
    """Indices of the set entries of a 1-D mask (faster than np.flatnonzero)."""
    return mask.nonzero()[0]


def _field(w, name):
    f = isa.FIELDS[name]
    return (w >> f.lsb) & f.mask


def _imm18(w):
    """Sign-extended imm18 of int64 words."""
    raw = w & 0x3FFFF
    return raw - ((raw >> 17) << 18)


class Waiting:
    """What a core that makes no progress waits for (for no-progress reports): tile, pc, the
    color, and ``what``: "wavelet" (an empty input queue) or "credit" (no credit for the
    router's RAMP queue of that color)."""

    __slots__ = ("tile", "pc", "color", "what")

    def __init__(self, tile, pc, color, what):
        self.tile, self.pc, self.color, self.what = tile, pc, color, what

    def __repr__(self):
        return f"Waiting(tile={self.tile}, pc={self.pc}, color={self.color}, what={self.what!r})"


class CoreArray:
    """The cores of all ``config.tiles`` tiles (section 9), advanced one cycle per :meth:`step`.

    ``imem`` (tiles, imem_words) and ``sram`` (tiles, sram_words) are the initial memories;
    ``route_accept``/``route_out`` (tiles, colors) are the routers' accept and output port masks
    (the fabric's own arrays, so route writes are seen), used by the ``NO_ROUTE`` checks.

    State, arrays over tiles: ``pc`` (int64), ``registers`` (tiles, 16) uint32; descriptors
    ``desc_kind``, ``desc_base``, ``desc_length``, ``desc_stride``, ``desc_color`` (tiles, 8)
    int64; input queues ``queue_data`` (tiles, colors, buffer_depth) ring buffers with
    ``queue_head`` and ``queue_count`` (tiles, colors); output ``credit`` (tiles, colors);
    ``halted``, ``trap_cause``, ``trap_pc``; ``counters`` (tiles, len(isa.COUNTERS)) uint32
    (a transposed view of ``_cnt``, which is (counters, tiles) so that each counter is a
    contiguous row); ``imem`` and ``sram``; the ``ld`` in its second cycle (``ld_wait``,
    ``ld_rd``, ``ld_data``); and the vector pipeline:

    * ``v_*``, the vector instruction in flight, fixed at issue: ``v_busy``, ``v_op``, ``v_n``
      (elements), ``v_r`` (the next element stage R reads), per source a and b the flat SRAM
      address of element 0 and the stride (``v_a_fbase``, ``v_a_stride``, ...; operands that
      are not memory vectors point at the tile's scalar slot with stride 0) and the flat input
      queue (``v_a_q``, ``v_b_q``; the sentinel for non-streams), the vlut table
      (``v_t_fbase``, ``v_t_len``), the destination (``v_dmode``: memory, FOUT, .sum or .max;
      ``v_d_fbase``, ``v_d_stride``, ``v_d_cidx`` the flat credit counter of dd.color or the
      sentinel), ``v_accd`` (acc without red: the result is added to the old dd[i], which R
      reads at the address X writes; ``isa.accumulate``, saturating for vreq), ``v_rd`` and
      ``v_acc`` (the reduction), ``v_shift`` (imm6: vreq's shift, and vlut's, which
      requantizes the index when not 0), ``v_reads`` and ``v_fins`` (SRAM reads and wavelets
      per element), ``v_packs`` (the results are packed four to a word: vpack, and vreq /
      vlut with pack) and ``v_pack`` (the last four results, as uint32 words);
    * stages M and X: ``m_valid``, ``m_i`` (element index), ``m_a``, ``m_b`` (its operands),
      ``m_d`` (the old dd[i] when accumulating into dd), and ``x_*`` likewise (for vlut,
      ``m_b`` is rs, the index offset, and ``x_b`` the table word).

    A tile outside a vector instruction has v_r >= v_n and empty M and X, so its pipeline
    never moves.
    """

    def __init__(self, config, imem, sram, route_accept, route_out):
        self.config = config
        T, C, D = config.tiles, config.colors, config.buffer_depth
        self.tiles, self.colors, self.depth = T, C, D
        self.imem_words, self.sram_words = config.imem_words, config.sram_words
        S = self.sram_words

        self.imem = np.array(imem, dtype=np.uint32).reshape(T, self.imem_words)
        self._imem = self.imem.reshape(-1)
        # The SRAMs, then one scalar slot per tile (index T*S + tile).
        self._sram = np.zeros(T * S + T, dtype=np.uint32)
        self.sram = self._sram[:T * S].reshape(T, S)
        self.sram[...] = np.asarray(sram, dtype=np.uint32).reshape(T, S)
        self.route_accept = route_accept
        self.route_out = route_out
        self._route_accept = route_accept.reshape(-1)
        self._route_out = route_out.reshape(-1)
        assert np.shares_memory(self._route_out, route_out), "route masks must be contiguous"

        self.pc = np.zeros(T, dtype=np.int64)
        self.registers = np.zeros((T, _NREG), dtype=np.uint32)
        self._regs = self.registers.reshape(-1)
        self.desc_kind = np.zeros((T, _NDESC), dtype=np.int64)
        self.desc_base = np.zeros((T, _NDESC), dtype=np.int64)
        self.desc_length = np.zeros((T, _NDESC), dtype=np.int64)
        self.desc_stride = np.zeros((T, _NDESC), dtype=np.int64)
        self.desc_color = np.zeros((T, _NDESC), dtype=np.int64)
        self._desc = {name: getattr(self, f"desc_{name}").reshape(-1)
                      for name in ("kind", "base", "length", "stride", "color")}

        # Queue counts and credits have one extra entry past the end, index T*C, that is never
        # zero: operands that are not fabric streams point there, so "queue empty" and "no
        # credit" need no mask of which operands are streams.
        self._sentinel = T * C
        self.queue_data = np.zeros((T, C, D), dtype=np.uint32)
        self.queue_head = np.zeros((T, C), dtype=np.int64)
        self._qcount = np.zeros(T * C + 1, dtype=np.int64)
        self._qcount[-1] = 1
        self.queue_count = self._qcount[:-1].reshape(T, C)
        self._qdata = self.queue_data.reshape(-1)
        self._qhead = self.queue_head.reshape(-1)
        self._credit = np.full(T * C + 1, D, dtype=np.int64)
        self._credit[-1] = 1
        self.credit = self._credit[:-1].reshape(T, C)

        self.halted = np.zeros(T, dtype=bool)
        self.trap_cause = np.zeros(T, dtype=np.uint8)
        self.trap_pc = np.zeros(T, dtype=np.int64)
        self._cnt = np.zeros((len(isa.COUNTERS), T), dtype=np.uint32)
        self._row = list(self._cnt)      # one contiguous (tiles,) view per counter
        self.n_halted = 0

        # Per-tile constants.
        self._tile = np.arange(T, dtype=np.int64)
        self._tile_sram = self._tile * S
        self._tile_imem = self._tile * self.imem_words
        self._tile_queue = self._tile * C
        self._scalar_slot = T * S + self._tile
        x, y = self._tile % config.width, self._tile // config.width
        self._tid = np.stack([x, y, np.full(T, config.width), np.full(T, config.height)],
                             axis=1).astype(np.uint32).reshape(-1)

        # ld: the second cycle writes rd with the word read in the first.
        self.ld_wait = np.zeros(T, dtype=bool)
        self.ld_rd = np.zeros(T, dtype=np.int64)
        self.ld_data = np.zeros(T, dtype=np.uint32)
        self.n_loading = 0

        def z64():
            return np.zeros(T, dtype=np.int64)

        def z32():
            return np.zeros(T, dtype=np.uint32)

        self.v_busy = np.zeros(T, dtype=bool)
        self.v_op, self.v_n, self.v_r = z64(), z64(), z64()
        self.v_a_fbase, self.v_a_stride, self.v_a_q = z64(), z64(), z64()
        self.v_b_fbase, self.v_b_stride, self.v_b_q = z64(), z64(), z64()
        self.v_t_fbase, self.v_t_len = z64(), z64()
        self.v_dmode, self.v_d_fbase, self.v_d_stride, self.v_d_cidx = z64(), z64(), z64(), z64()
        self.v_accd = np.zeros(T, dtype=bool)
        self.v_packs = np.zeros(T, dtype=bool)
        self.v_rd, self.v_acc, self.v_shift = z64(), z32(), z64()
        self.v_reads, self.v_fins = z32(), z32()
        self.v_pack = np.zeros((T, 4), dtype=np.uint32)
        self.m_valid, self.m_i, self.m_a, self.m_b = np.zeros(T, bool), z64(), z32(), z32()
        self.x_valid, self.x_i, self.x_a, self.x_b = np.zeros(T, bool), z64(), z32(), z32()
        self.m_d, self.x_d = z32(), z32()
        # Tiles inside a vector instruction; of those, with a FIN source, packing results (vpack,
        # .pack), running vlut, accumulating into dd.
        self.n_busy = self.n_fin = self.n_pack = self.n_lut = self.n_accd = 0

        # Outputs of the current cycle (MeshEmulator replaces them by views of its buffers).
        self.attach_outputs(np.zeros(T, dtype=bool), np.zeros(T, dtype=np.intp),
                            np.zeros(T, dtype=np.uint32), np.zeros((T, C), dtype=bool))

        # Per-cycle bookkeeping, read by MeshEmulator.
        self.cycle = 0
        self.trace = False
        self.progressed = False      # an instruction retired or a vector stage fired
        self.trapped = False         # a core trapped in this cycle
        self._retired = []           # (tiles, pcs) of the cycle, when tracing

    @property
    def counters(self):
        """(tiles, len(isa.COUNTERS)) uint32 view of the counters."""
        return self._cnt.T

    def attach_outputs(self, valid, color, data, credit):
        """Use these arrays for the core outputs of each cycle: the wavelet each core drives on
        its RAMP inbound link (``valid``, ``color``, ``data``, (tiles,)) and the credits it
        returns on its RAMP outbound link (``credit``, (tiles, colors) bool, contiguous)."""
        self.send_valid, self.send_color, self.send_data = valid, color, data
        self.credit_return = credit
        self._credit_return = credit.reshape(-1)
        assert np.shares_memory(self._credit_return, credit), "credit must be contiguous"

    # The cycle --------------------------------------------------------------------------------

    def step(self):
        """Compute one cycle of every core from the state at its start (section 9, "One
        cycle"): counts ``cycles`` for every core that has not halted, finishes loads, issues
        instructions and advances vector pipelines. Writes the cycle's outputs into
        ``send_*``/``credit_return``; what the router sends back is applied by
        :meth:`deliver`."""
        self.send_valid[:] = False
        self._credit_return[:] = False
        self.progressed = False
        self.trapped = False
        if self.trace:
            self._retired = []
        if self.n_halted < self.tiles:
            running = ~self.halted
            self._row[_CYCLES] += running
            # Cores that issue: the running ones not inside a vector instruction or a load.
            tiles = None
            if self.n_busy + self.n_loading + self.n_halted < self.tiles:
                tiles = _nz(running & ~self.v_busy & ~self.ld_wait)
            if self.n_loading:
                self._finish_loads()
            if tiles is not None:
                self._issue(tiles)
            if self.n_busy:
                self._vector_cycle()
        self.cycle += 1

    def deliver(self, valid, color, data, credit):
        """End of the cycle (section 3): the wavelets the routers sent on the RAMP outbound
        links (``valid``, ``color``, ``data``, (tiles,)) enter the cores' input queues, and the
        credits the routers returned on the RAMP inbound links (``credit``, (tiles, colors)
        bool) are added to the cores' credit counters. Both are usable from the next cycle."""
        tiles = _nz(valid)
        if tiles.size:
            q = self._tile_queue[tiles] + color[tiles]
            slot = (self._qhead[q] + self._qcount[q]) % self.depth
            self._qdata[q * self.depth + slot] = data[tiles]
            self._qcount[q] += 1
        self.credit += credit

    def retired(self):
        """(tiles, pcs) of the instructions retired in the last cycle, in tile order (only
        recorded when ``trace`` is set)."""
        if not self._retired:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        tiles = np.concatenate([t for t, _ in self._retired])
        pcs = np.concatenate([p for _, p in self._retired])
        order = np.argsort(tiles, kind="stable")
        return tiles[order], pcs[order]

    # Helpers ----------------------------------------------------------------------------------

    def _reg(self, tiles, r):
        return self._regs[tiles * _NREG + r]

    def _write_reg(self, tiles, r, value):
        """Write ``value`` to register ``r`` of ``tiles``; writes to r0 are ignored."""
        keep = r != 0
        if _all(keep):
            self._regs[tiles * _NREG + r] = value
        else:
            self._regs[(tiles * _NREG + r)[keep]] = np.asarray(value)[keep]

    def _retire(self, tiles, next_pc):
        """An instruction of each of ``tiles`` retires in this cycle: ``instructions`` counts it
        and ``pc`` becomes ``next_pc`` (14 bits) at the end of the cycle."""
        if self.trace:
            self._retired.append((tiles.copy(), self.pc[tiles].copy()))
        self.pc[tiles] = next_pc & _PC_MASK
        self._row[_INSTRUCTIONS][tiles] += 1
        self.progressed = True

    def _traps(self, tiles, causes):
        """Section 9, "Issue and traps": the instruction of each of ``tiles`` whose entry of
        ``causes`` (a TrapCause, 0 = none) is set traps: it has no effect, and the core halts
        with ``trap_cause`` and ``trap_pc`` (``pc`` stays at the instruction). Returns the
        mask of the tiles that do not trap."""
        causes = np.asarray(causes, dtype=np.uint8)
        bad = causes != 0
        if _any(bad):
            where = tiles[bad]
            self.halted[where] = True
            self.trap_cause[where] = causes[bad]
            self.trap_pc[where] = self.pc[where]
            self.n_halted += where.size
            self.trapped = True
        return ~bad

    def _trap_all(self, tiles, cause):
        self._traps(tiles, np.full(tiles.size, cause, dtype=np.uint8))

    @staticmethod
    def _first_cause(*checks):
        """The trap cause per tile: the first of (cause, mask) pairs whose mask is set, 0 if
        none (the priority of the checks, see :meth:`_issue`)."""
        cause = np.zeros(checks[0][1].shape, dtype=np.uint8)
        for value, mask in reversed(checks):
            cause[mask] = value
        return cause

    def _pop(self, q):
        """Take the head wavelet of each (distinct) flat queue ``q`` = tile*colors + color, and
        return its credit to the router in this cycle (section 3)."""
        head = self._qhead[q]
        data = self._qdata[q * self.depth + head]
        self._qhead[q] = (head + 1) % self.depth
        self._qcount[q] -= 1
        self._credit_return[q] = True
        return data

    def _send(self, tiles, cidx, data):
        """Drive a wavelet on the RAMP inbound link of each of ``tiles``, with the color of the
        flat credit counter ``cidx`` = tile*colors + color, and spend that credit."""
        self.send_valid[tiles] = True
        self.send_color[tiles] = cidx - self._tile_queue[tiles]
        self.send_data[tiles] = data
        self._credit[cidx] -= 1
        self._row[_WAVELETS_OUT][tiles] += 1

    def _route_has_ramp(self, masks, tiles, color):
        """Per (tile, color): color < colors and bit RAMP of the route mask (the fabric's
        ``out`` for "delivers to the core", ``accept`` for "takes from the core")."""
        ok = (color >= 0) & (color < self.colors)
        flat = tiles * self.colors + np.where(ok, color, 0)
        return ok & ((masks[flat] & _RAMP_BIT) != 0)

    @staticmethod
    def _by_opcode(ops):
        """(opcode, positions) for each distinct opcode in ``ops`` (positions None: all)."""
        first = int(ops[0])
        if np.count_nonzero(ops != first) == 0:
            return [(first, None)]
        codes = _nz(np.bincount(ops, minlength=_NUM_OPCODES))
        return [(int(code), _nz(ops == code)) for code in codes]

    # Issue ------------------------------------------------------------------------------------

    def _issue(self, tiles):
        """The first cycle of the instruction at ``pc`` of each of ``tiles`` (section 9, "Issue
        and traps"): ``PC_RANGE`` when pc >= imem_words, else fetch (combinationally), decode
        and apply per instruction class. When one instruction fails several checks, the cause
        is the first of PC_RANGE, ILLEGAL, SRAM_RANGE, NO_ROUTE, OPERAND."""
        pc = self.pc[tiles]
        bad_pc = pc >= self.imem_words
        if _any(bad_pc):
            self._trap_all(tiles[bad_pc], TrapCause.PC_RANGE)
            tiles, pc = tiles[~bad_pc], pc[~bad_pc]
            if not tiles.size:
                return
        words = self._imem[self._tile_imem[tiles] + pc].astype(np.int64)
        classes = _CLASS_OF[words >> _OP_LSB]
        first = int(classes[0])
        if np.count_nonzero(classes != first) == 0:
            self._HANDLERS[first](self, tiles, words, pc)
            return
        for k in _nz(np.bincount(classes, minlength=_N_CLASSES)):
            sel = _nz(classes == k)
            self._HANDLERS[k](self, tiles[sel], words[sel], pc[sel])

    def _issue_illegal(self, tiles, w, pc):
        """A reserved opcode (including the all-zero word): trap ILLEGAL."""
        self._trap_all(tiles, TrapCause.ILLEGAL)

    def _issue_halt(self, tiles, w, pc):
        """``halt``: retires and sets ``halted`` at the end of its cycle; pc stays at the halt."""
        self._retire(tiles, pc)
        self.halted[tiles] = True
        self.n_halted += tiles.size

    def _alu(self, ops, a, b):
        """``isa.alu`` of each instruction on its operands, grouped by opcode."""
        groups = self._by_opcode(ops)
        if groups[0][1] is None:
            return isa.alu(_NAME[groups[0][0]], a, b)
        out = np.empty(a.shape, dtype=np.uint32)
        for code, sel in groups:
            out[sel] = isa.alu(_NAME[code], a[sel], b[sel])
        return out

    def _issue_alu_r(self, tiles, w, pc):
        """Register-register ALU (add .. clz): rd = alu(ra, rb), one cycle; mul/mulh count a
        MAC."""
        ops = w >> _OP_LSB
        a = self._reg(tiles, _field(w, "b"))
        b = self._reg(tiles, _field(w, "c"))
        self._write_reg(tiles, _field(w, "a"), self._alu(ops, a, b))
        macs = _MACS_OF[ops]
        if _any(macs):
            self._row[_MACS][tiles] += macs
        self._retire(tiles, pc + 1)

    def _issue_alu_i(self, tiles, w, pc):
        """Register-immediate ALU (addi .. lui): rd = alu(ra, imm), imm18 sign-extended, or
        zero-extended for andi, ori, xori and lui; one cycle."""
        ops = w >> _OP_LSB
        imm = np.where(_ZERO_EXTEND[ops], w & 0x3FFFF, _imm18(w))
        a = self._reg(tiles, _field(w, "b"))
        self._write_reg(tiles, _field(w, "a"), self._alu(ops, a, _u32(imm)))
        self._retire(tiles, pc + 1)

    def _address(self, tiles, w):
        """ld/st address ra + imm as a signed integer, and whether it is inside the SRAM."""
        address = _s32(self._reg(tiles, _field(w, "b"))) + _imm18(w)
        return address, (address >= 0) & (address < self.sram_words)

    def _issue_ld(self, tiles, w, pc):
        """``ld`` first cycle: trap SRAM_RANGE, else issue the read (the word at the start of
        this cycle); :meth:`_finish_loads` writes rd at the end of the second cycle."""
        address, inside = self._address(tiles, w)
        ok = self._traps(tiles, np.where(inside, 0, TrapCause.SRAM_RANGE))
        tiles, address, w = tiles[ok], address[ok], w[ok]
        if tiles.size:
            self.ld_data[tiles] = self._sram[self._tile_sram[tiles] + address]
            self.ld_rd[tiles] = _field(w, "a")
            self.ld_wait[tiles] = True
            self.n_loading += tiles.size
            self._row[_SRAM_READS][tiles] += 1

    def _finish_loads(self):
        """``ld`` second cycle: rd gets the word read in the first cycle; the load retires."""
        tiles = _nz(self.ld_wait)
        self._write_reg(tiles, self.ld_rd[tiles], self.ld_data[tiles])
        self.ld_wait[tiles] = False
        self.n_loading = 0
        self._retire(tiles, self.pc[tiles] + 1)

    def _issue_st(self, tiles, w, pc):
        """``st``: trap SRAM_RANGE, else sram[ra + imm] = rs (field a) at the end of the
        cycle."""
        address, inside = self._address(tiles, w)
        ok = self._traps(tiles, np.where(inside, 0, TrapCause.SRAM_RANGE))
        tiles, address, w, pc = tiles[ok], address[ok], w[ok], pc[ok]
        if tiles.size:
            self._sram[self._tile_sram[tiles] + address] = self._reg(tiles, _field(w, "a"))
            self._row[_SRAM_WRITES][tiles] += 1
            self._retire(tiles, pc + 1)

    def _issue_branch(self, tiles, w, pc):
        """beq/bne/blt/bge ra (field a), rb (field b), target: pc = target when taken."""
        ops = w >> _OP_LSB
        a = _s32(self._reg(tiles, _field(w, "a")))
        b = _s32(self._reg(tiles, _field(w, "b")))
        taken = np.select([ops == _CODE["beq"], ops == _CODE["bne"], ops == _CODE["blt"]],
                          [a == b, a != b, a < b], a >= b)
        self._retire(tiles, np.where(taken, _field(w, "imm14"), pc + 1))

    def _issue_dbnz(self, tiles, w, pc):
        """``dbnz ra, target``: ra = ra - 1, then pc = target when the new ra != 0."""
        ra = _field(w, "a")
        value = self._reg(tiles, ra) - np.uint32(1)
        self._write_reg(tiles, ra, value)
        self._retire(tiles, np.where(value != 0, _field(w, "imm14"), pc + 1))

    def _issue_jal(self, tiles, w, pc):
        """``jal rd, target``: rd = pc + 1 (14 bits), pc = target."""
        self._write_reg(tiles, _field(w, "a"), ((pc + 1) & _PC_MASK).astype(np.uint32))
        self._retire(tiles, _field(w, "imm14"))

    def _issue_jr(self, tiles, w, pc):
        """``jr ra`` (field b): pc = the low 14 bits of ra."""
        self._retire(tiles, self._reg(tiles, _field(w, "b")).astype(np.int64))

    def _fabric_color(self, tiles, w):
        """recv/send color: ra (field b) + imm, as an unsigned 32-bit value."""
        return (self._reg(tiles, _field(w, "b")).astype(np.int64) + _imm18(w)) & _WORD

    def _issue_recv(self, tiles, w, pc):
        """``recv rd, ra, imm``: trap NO_ROUTE when the router never delivers the color to the
        core; else take the queue head into rd if the queue is non-empty (retire, return the
        credit), or wait (``stall_in``)."""
        color = self._fabric_color(tiles, w)
        routed = self._route_has_ramp(self._route_out, tiles, color)
        ok = self._traps(tiles, np.where(routed, 0, TrapCause.NO_ROUTE))
        tiles, w, pc, color = tiles[ok], w[ok], pc[ok], color[ok]
        q = self._tile_queue[tiles] + color
        ready = self._qcount[q] > 0
        if not _all(ready):
            self._row[_STALL_IN][tiles[~ready]] += 1
            tiles, w, pc, q = tiles[ready], w[ready], pc[ready], q[ready]
        if tiles.size:
            self._write_reg(tiles, _field(w, "a"), self._pop(q))
            self._row[_WAVELETS_IN][tiles] += 1
            self._retire(tiles, pc + 1)

    def _issue_send(self, tiles, w, pc):
        """``send rs, ra, imm``: trap NO_ROUTE when the router does not accept the color from
        the core; else send rs (field a) if the core holds a credit for the color (retire), or
        wait (``stall_out``)."""
        color = self._fabric_color(tiles, w)
        routed = self._route_has_ramp(self._route_accept, tiles, color)
        ok = self._traps(tiles, np.where(routed, 0, TrapCause.NO_ROUTE))
        tiles, w, pc, color = tiles[ok], w[ok], pc[ok], color[ok]
        cidx = self._tile_queue[tiles] + color
        ready = self._credit[cidx] > 0
        if not _all(ready):
            self._row[_STALL_OUT][tiles[~ready]] += 1
            tiles, w, pc, cidx = tiles[ready], w[ready], pc[ready], cidx[ready]
        if tiles.size:
            self._send(tiles, cidx, self._reg(tiles, _field(w, "a")))
            self._retire(tiles, pc + 1)

    def _issue_tid(self, tiles, w, pc):
        """``tid rd, imm``: rd = x, y, width or height (imm 0..3); other imm values (negative
        ones included) trap ILLEGAL."""
        sel = _imm18(w)
        ok = self._traps(tiles, np.where((sel >= 0) & (sel < len(isa.TID_SELECTORS)), 0,
                                         TrapCause.ILLEGAL))
        tiles, w, pc, sel = tiles[ok], w[ok], pc[ok], sel[ok]
        if tiles.size:
            self._write_reg(tiles, _field(w, "a"), self._tid[tiles * 4 + sel])
            self._retire(tiles, pc + 1)

    def _issue_desc(self, tiles, w, pc):
        """Descriptor set-up (dmem, dfin, dfout, dlen, dstride, dadv) of descriptor d (field a)
        with v = ra + imm: trap ILLEGAL when d > 7; else one cycle."""
        d = _field(w, "a")
        ok = self._traps(tiles, np.where(d < _NDESC, 0, TrapCause.ILLEGAL))
        tiles, w, pc, d = tiles[ok], w[ok], pc[ok], d[ok]
        if not tiles.size:
            return
        v = self._reg(tiles, _field(w, "b")).astype(np.int64) + _imm18(w)
        slot = tiles * _NDESC + d
        kind, base = self._desc["kind"], self._desc["base"]
        for code, sel in self._by_opcode(w >> _OP_LSB):
            s = slice(None) if sel is None else sel
            name, where, value = _NAME[code], slot[s], v[s]
            if name == "dmem":
                kind[where] = _MEM
                base[where] = value & 0xFFFF
            elif name in ("dfin", "dfout"):
                kind[where] = _FIN if name == "dfin" else _FOUT
                self._desc["color"][where] = value & 31
            elif name == "dlen":
                self._desc["length"][where] = value & 0xFFFF
            elif name == "dstride":
                stride = value & 0xFFFF
                self._desc["stride"][where] = stride - ((stride >> 15) << 16)
            elif name == "dadv":
                base[where] = (base[where] + value) & 0xFFFF
            else:
                raise AssertionError(name)
        self._retire(tiles, pc + 1)

    # Vector instructions ------------------------------------------------------------------------

    def _issue_vector(self, tiles, w, pc):
        """Issue cycle of a vector instruction (section 9, "Issue and traps", "Vector
        instructions"): the checks, then the instruction is set up in the pipeline, whose R
        stage runs in this same cycle (:meth:`_vector_cycle`). With n = 0 it retires now (a
        reduction writes rd with the accumulator's start value).

        The operands are checked as a (3, k) block, rows dd, da, db; ``used`` says which rows
        are vector operands: dd unless reducing, da always, db when the op is binary without
        bsc (vlut's db is its table, checked separately). ``accd`` (acc without red) also reads
        dd, on read port 1: dd must be MEM and db must not be a memory vector. ``pack`` (vpack,
        and vreq / vlut with field pack) writes dd.length = n / 4 words; it cannot go with red
        or acc."""
        ops = w >> _OP_LSB
        field = np.stack([_field(w, "a"), _field(w, "b"), _field(w, "c")])
        bsc = _field(w, "bsc") != 0
        red = _field(w, "red") != 0
        accd = (_field(w, "acc") != 0) & ~red
        lut = ops == _VLUT
        pack = (ops == _VPACK) | (_PACKABLE[ops] & (_field(w, "pack") != 0))
        binary = _BINARY[ops]
        used = np.stack([~red, np.ones_like(red), binary & ~bsc])

        illegal = (((red | accd) & ~_REDUCIBLE[ops]) | (used & (field >= _NDESC)).any(axis=0)
                   | (lut & (field[_DB] >= _NDESC)) | (pack & (red | accd)))
        slot = tiles * _NDESC + (field & (_NDESC - 1))
        kind, base, length, stride, color = (self._desc[name][slot] for name in (
            "kind", "base", "length", "stride", "color"))
        n = length[_DA]

        mem = used & (kind == _MEM)
        last = base + (length - 1) * stride
        sram_range = (mem & (length > 0) & ((base >= self.sram_words) | (last < 0)
                                            | (last >= self.sram_words))).any(axis=0)
        table_words = base[_DB] + length[_DB]
        sram_range |= (lut & (kind[_DB] == _MEM) & (length[_DB] > 0)
                       & (table_words > self.sram_words))

        fin = used & (kind == _FIN)
        fin[_DD] = False
        fout_dest = used[_DD] & (kind[_DD] == _FOUT)
        no_route = np.zeros(tiles.size, dtype=bool)
        if _any(fin) or _any(fout_dest):
            delivered = self._route_has_ramp(self._route_out, tiles, color[_DA:])
            no_route = (fin[_DA:] & ~delivered).any(axis=0)
            no_route |= fout_dest & ~self._route_has_ramp(self._route_accept, tiles,
                                                            color[_DD])

        expect = np.where(pack, n // 4, n)
        operand = ((used & (kind == _WRONG_KIND)).any(axis=0)
                   | (used[_DD] & (length[_DD] != expect)) | (used[_DB] & (length[_DB] != n))
                   | (pack & (n % 4 != 0))
                   | (lut & ((kind[_DB] != _MEM) | (length[_DB] == 0)))
                   | (fin[_DA] & fin[_DB] & (color[_DA] == color[_DB]))
                   | (accd & ((kind[_DD] != _MEM) | mem[_DB])))
        ok = self._traps(tiles, self._first_cause((TrapCause.ILLEGAL, illegal),
                                                  (TrapCause.SRAM_RANGE, sram_range),
                                                  (TrapCause.NO_ROUTE, no_route),
                                                  (TrapCause.OPERAND, operand)))
        if not _all(ok):
            tiles, w, pc, ops, n, red, accd, lut, pack = (
                v[ok] for v in (tiles, w, pc, ops, n, red, accd, lut, pack))
            field, used, kind, base, length, stride, color, mem, fin, fout_dest = (
                v[:, ok] if v.ndim == 2 else v[ok]
                for v in (field, used, kind, base, length, stride, color, mem, fin, fout_dest))
        if not tiles.size:
            return

        # The accumulator's start value: rd (acc), else the identity of .sum / .max.
        use_max = _field(w, "max") != 0
        rd = field[_DD]
        start = np.where(_field(w, "acc") != 0, self._reg(tiles, rd),
                         np.where(use_max, np.uint32(0x80000000), np.uint32(0)))
        empty = n == 0
        if _any(empty):
            reduce = empty & red
            if _any(reduce):
                self._write_reg(tiles[reduce], rd[reduce], start[reduce])
            self._retire(tiles[empty], pc[empty] + 1)
            go = ~empty
            if not _any(go):
                return
            tiles, w, ops, n, red, accd, lut, pack, use_max, rd, start = (
                v[go] for v in (tiles, w, ops, n, red, accd, lut, pack, use_max, rd, start))
            base, length, stride, color, mem, fin, fout_dest = (
                v[:, go] if v.ndim == 2 else v[go]
                for v in (base, length, stride, color, mem, fin, fout_dest))
        self._start_vector(tiles, w, ops, n, red, accd, lut, pack, use_max, rd, start, base,
                           length, stride, color, mem, fin, fout_dest)

    def _start_vector(self, tiles, w, ops, n, red, accd, lut, pack, use_max, rd, start, base,
                      length, stride, color, mem, fin, fout_dest):
        """Put the checked vector instructions of ``tiles`` in their pipelines (the ``v_*``
        state; see the class docstring)."""
        origin = self._tile_sram[tiles]
        scalar = self._scalar_slot[tiles]
        queue = self._tile_queue[tiles]
        self._sram[scalar] = self._reg(tiles, _field(w, "d"))      # rs, read at issue
        self.v_busy[tiles] = True
        self.v_op[tiles] = ops
        self.v_n[tiles] = n
        self.v_r[tiles] = 0
        # Sources: memory vectors read base + i * stride; everything else the scalar slot
        # (rs for bsc, vreq and vlut, whose index offset it is; a placeholder for FIN, replaced
        # by the queue head).
        self.v_a_fbase[tiles] = np.where(mem[_DA], origin + base[_DA], scalar)
        self.v_a_stride[tiles] = np.where(mem[_DA], stride[_DA], 0)
        self.v_a_q[tiles] = np.where(fin[_DA], queue + color[_DA], self._sentinel)
        self.v_b_fbase[tiles] = np.where(mem[_DB], origin + base[_DB], scalar)
        self.v_b_stride[tiles] = np.where(mem[_DB], stride[_DB], 0)
        self.v_b_q[tiles] = np.where(fin[_DB], queue + color[_DB], self._sentinel)
        self.v_t_fbase[tiles] = origin + np.where(lut, base[_DB], 0)
        self.v_t_len[tiles] = np.where(lut, length[_DB], 1)
        self.v_dmode[tiles] = np.where(red, np.where(use_max, _TO_MAX, _TO_SUM),
                                       np.where(fout_dest, _TO_FOUT, _TO_MEM))
        self.v_d_fbase[tiles] = origin + np.where(mem[_DD], base[_DD], 0)
        self.v_d_stride[tiles] = np.where(mem[_DD], stride[_DD], 0)
        self.v_d_cidx[tiles] = np.where(fout_dest, queue + color[_DD], self._sentinel)
        self.v_accd[tiles] = accd
        self.v_packs[tiles] = pack
        self.v_rd[tiles] = rd
        self.v_acc[tiles] = start
        self.v_shift[tiles] = _field(w, "imm6")
        self.v_reads[tiles] = mem[_DA:].sum(axis=0) + accd     # accd: the old dd[i]
        self.v_fins[tiles] = fin.sum(axis=0)
        self.n_busy += tiles.size
        self.n_fin += np.count_nonzero(fin.any(axis=0))
        self.n_pack += np.count_nonzero(pack)
        self.n_lut += np.count_nonzero(lut)
        self.n_accd += np.count_nonzero(accd)

    def _vector_cycle(self):
        """One cycle of every vector pipeline (section 9, "Vector instructions"), all
        conditions from the state at the start of the cycle:

        1. X fires if it holds an element and, when that element sends (dd FOUT; packing:
           only i mod 4 = 3), the core holds a credit for dd.color; else ``stall_out``.
        2. M moves to X if it holds an element and X is empty or fires.
        3. R fires the next element (i < n) if M is empty or moves and every FIN source queue
           is non-empty; when only the queues stop it, ``stall_in``.

        Reads (R's operands and, accumulating into dd, the old dd[i]; vlut's table read as an
        element moves from M to X) see the SRAM as at the start of the cycle; X's writes come
        after them. The instruction retires
        in the cycle its last element fires in X.

        In masks: X is held exactly when its element must send and has no credit
        (``x_held``); then M cannot move (``m_held`` when it holds an element), and R may fire
        exactly when M is not held."""
        xv, mv = self.x_valid, self.m_valid
        x_held = xv & (self._credit[self.v_d_cidx] == 0)     # only FOUT has a real counter
        if self.n_pack:                                       # packing sends every 4th
            x_held &= ((self.x_i & 3) == 3) | ~self.v_packs
        x_fire = xv ^ x_held
        m_held = mv & x_held
        m_move = mv ^ m_held
        r_can = (self.v_r < self.v_n) & ~m_held
        if self.n_fin:
            starved = (self._qcount[self.v_a_q] == 0) | (self._qcount[self.v_b_q] == 0)
            r_fire = r_can & ~starved
            self._row[_STALL_IN] += r_can ^ r_fire
        else:
            r_fire = r_can
        self._row[_STALL_OUT] += x_held

        # R: read the operands of the next element (start-of-cycle SRAM and queues).
        rt = _nz(r_fire)
        if rt.size:
            i = self.v_r[rt]
            a = self._sram[self.v_a_fbase[rt] + i * self.v_a_stride[rt]]
            b = self._sram[self.v_b_fbase[rt] + i * self.v_b_stride[rt]]
            if self.n_fin:
                q = self.v_a_q[rt]
                fin = q != self._sentinel
                if _any(fin):
                    a[fin] = self._pop(q[fin])
                q = self.v_b_q[rt]
                fin = q != self._sentinel
                if _any(fin):
                    b[fin] = self._pop(q[fin])
                self._row[_WAVELETS_IN][rt] += self.v_fins[rt]
            if self.n_accd:
                # acc without red: the old dd[i], at the address X will write (read port 1).
                old = self._sram[self.v_d_fbase[rt] + i * self.v_d_stride[rt]]
            self._row[_SRAM_READS][rt] += self.v_reads[rt]

        # M -> X: vlut reads its table entry in the cycle the element moves (read port 1), at
        # the index of a + rs, or of requantize(a, rs, shift) + 128 (rs held as b).
        mt = _nz(m_move)
        if mt.size:
            moved_b = self.m_b[mt]
            if self.n_lut:
                lut = self.v_op[mt] == _VLUT
                if _any(lut):
                    lt = mt[lut]
                    index = isa.lookup_index(self.m_a[lt], self.v_t_len[lt], self.m_b[lt],
                                             self.v_shift[lt])
                    moved_b[lut] = self._sram[self.v_t_fbase[lt] + index]
                    self._row[_SRAM_READS][lt] += 1

        # X: compute, then write / send / reduce.
        xt = _nz(x_fire)
        if xt.size:
            self._execute(xt)

        # Advance the stage registers (X from M before M from R).
        if mt.size:
            self.x_i[mt] = self.m_i[mt]
            self.x_a[mt] = self.m_a[mt]
            self.x_b[mt] = moved_b
            if self.n_accd:
                self.x_d[mt] = self.m_d[mt]
        self.x_valid = x_held | m_move
        if rt.size:
            self.m_i[rt] = i
            self.m_a[rt] = a
            self.m_b[rt] = b
            if self.n_accd:
                self.m_d[rt] = old
            self.v_r[rt] = i + 1
        self.m_valid = m_held | r_fire
        if rt.size or mt.size or xt.size:
            self.progressed = True

    def _element_results(self, xt, ops, a, b):
        """Stage X's element results before packing: ``isa.alu``, ``isa.requantize`` (b is rs,
        the shift imm6), ``a`` for vpack, or the table word read for vlut (held as b)."""
        groups = self._by_opcode(ops)
        if groups[0][1] is None and groups[0][0] not in (_VLUT, _VREQ, _VPACK):
            return isa.alu(_NAME[groups[0][0]], a, b)
        result = np.empty(xt.size, dtype=np.uint32)
        for code, sel in groups:
            s = slice(None) if sel is None else sel
            if code == _VLUT:
                result[s] = b[s]
            elif code == _VREQ:
                result[s] = isa.requantize(a[s], b[s], self.v_shift[xt[s]])
            elif code == _VPACK:
                result[s] = a[s]
            else:
                result[s] = isa.alu(_NAME[code], a[s], b[s])
        return result

    def _execute(self, xt):
        """Stage X of the elements of tiles ``xt`` (which fire): the element result (combined
        with the old dd[i] read in R by ``isa.accumulate`` when accumulating into dd; packed by
        ``isa.pack4`` with the three before it when packing, meaningful at i mod 4 = 3), then
        the write to
        ``sram[dd.base + j * stride]`` (j = i, or i / 4 when packing, which writes or sends
        only at i mod 4 = 3), the send on dd.color, or the reduction (add mod 2^32 or signed
        max); counts elements and MACs; retires the instruction when this is its last element,
        a reduction writing rd."""
        index = self.x_i[xt]
        ops = self.v_op[xt]
        result = self._element_results(xt, ops, self.x_a[xt], self.x_b[xt])
        if self.n_accd:
            accd = self.v_accd[xt]
            if _any(accd):
                summed = isa.accumulate(self.x_d[xt], result, _SATURATING_ACC[ops])
                result = np.where(accd, summed, result)
        mode = self.v_dmode[xt]
        if self.n_pack:
            pack = self.v_packs[xt]
            if _any(pack):
                t = xt[pack]
                self.v_pack[t, index[pack] & 3] = result[pack]
                lanes = self.v_pack[t]
                result[pack] = isa.pack4(lanes[:, 0], lanes[:, 1], lanes[:, 2], lanes[:, 3])
            word = np.where(pack, index >> 2, index)
            mode = np.where(pack & ((index & 3) != 3), -1, mode)    # no word complete yet
        else:
            word = index
        write = mode == _TO_MEM
        if _any(write):
            t = xt[write]
            self._sram[self.v_d_fbase[t] + word[write] * self.v_d_stride[t]] = result[write]
            self._row[_SRAM_WRITES][t] += 1
        send = mode == _TO_FOUT
        if _any(send):
            t = xt[send]
            self._send(t, self.v_d_cidx[t], result[send])
        red = mode >= _TO_SUM
        if _any(red):
            t = xt[red]
            value, total = result[red], self.v_acc[t]
            use_max = mode[red] == _TO_MAX
            if _any(use_max):
                self.v_acc[t] = np.where(use_max, _u32(np.maximum(_s32(total), _s32(value))),
                                         total + value)
            else:
                self.v_acc[t] = total + value
        self._row[_ELEMENTS][xt] += 1
        macs = _MACS_OF[ops]
        if _any(macs):
            self._row[_MACS][xt] += macs

        last = index == self.v_n[xt] - 1
        if _any(last):
            self._finish_vector(xt[last])

    def _finish_vector(self, t):
        """The vector instructions of tiles ``t`` retire: a reduction writes rd."""
        reduce = self.v_dmode[t] >= _TO_SUM
        if _any(reduce):
            self._write_reg(t[reduce], self.v_rd[t[reduce]], self.v_acc[t[reduce]])
        ops = self.v_op[t]
        self.v_busy[t] = False
        self.n_busy -= t.size
        self.n_fin -= np.count_nonzero((self.v_a_q[t] != self._sentinel)
                                       | (self.v_b_q[t] != self._sentinel))
        self.n_pack -= np.count_nonzero(self.v_packs[t])
        self.n_lut -= np.count_nonzero(ops == _VLUT)
        self.n_accd -= np.count_nonzero(self.v_accd[t])
        self._retire(t, self.pc[t] + 1)

    # Reports ----------------------------------------------------------------------------------

    def waiting(self):
        """Every core that waits on the fabric, as :class:`Waiting` records: a recv on an empty
        queue or a send without a credit at ``pc``, a vector stage R held by an empty FIN
        queue, a vector stage X holding an element that has no credit to be sent."""
        found = []
        C = self.colors
        for tile in _nz(~self.halted & ~self.ld_wait).tolist():
            pc = int(self.pc[tile])
            if self.v_busy[tile]:
                cidx = int(self.v_d_cidx[tile])
                must_send = cidx != self._sentinel and (
                    not self.v_packs[tile] or self.x_i[tile] % 4 == 3)
                if self.x_valid[tile] and must_send and self._credit[cidx] == 0:
                    found.append(Waiting(tile, pc, cidx - tile * C, "credit"))
                if self.v_r[tile] < self.v_n[tile]:
                    for q in (int(self.v_a_q[tile]), int(self.v_b_q[tile])):
                        if q != self._sentinel and self._qcount[q] == 0:
                            found.append(Waiting(tile, pc, q - tile * C, "wavelet"))
                continue
            if pc >= self.imem_words:
                continue
            ins = isa.decode(int(self.imem[tile, pc]))
            if ins is None or ins.opcode.name not in ("recv", "send"):
                continue
            color = (int(self.registers[tile, ins.b]) + ins.imm18) & _WORD
            if color >= C:
                continue
            if ins.opcode.name == "recv" and self.queue_count[tile, color] == 0:
                found.append(Waiting(tile, pc, color, "wavelet"))
            elif ins.opcode.name == "send" and self.credit[tile, color] == 0:
                found.append(Waiting(tile, pc, color, "credit"))
        return found


CoreArray._HANDLERS = {
    _ILLEGAL: CoreArray._issue_illegal, _HALT: CoreArray._issue_halt,
    _ALU_R: CoreArray._issue_alu_r, _ALU_I: CoreArray._issue_alu_i, _LD: CoreArray._issue_ld,
    _ST: CoreArray._issue_st, _BRANCH: CoreArray._issue_branch, _DBNZ: CoreArray._issue_dbnz,
    _JAL: CoreArray._issue_jal, _JR: CoreArray._issue_jr, _RECV: CoreArray._issue_recv,
    _SEND: CoreArray._issue_send, _TID: CoreArray._issue_tid, _DESC: CoreArray._issue_desc,
    _VECTOR: CoreArray._issue_vector,
}
assert len(CoreArray._HANDLERS) == _N_CLASSES

"""Cycle-level model of the prefill engine top (docs/ARCHITECTURE.md section 11, "The
sequencer"): SBUF, PSUM, DRAM, and the sequencer running a list of :class:`mesh.prefill.Command` words, composed from the
block models :class:`emulator.systolic.SystolicModel`, :class:`emulator.dma.DmaModel` and
:class:`emulator.vector_engine.VectorEngineModel`, one :meth:`PrefillEmulator.step` per cycle.

One cycle c, in this order (every read sees the memories as at the start of c):

1. the sequencer looks at command ``pc`` and issues it if its conditions hold (the busy flags are
   those of the start of c; at most one command per cycle);
2. the weight loader and the activation streamer read the SBUF rows scheduled for c (their data
   is used in c + 1); the weight row and activation row read in c - 1 go into the array, whose
   result row of this cycle (if any) is added to PSUM as it is at the start of c;
3. the DMA steps (a store reads SBUF/PSUM at the start of c; a load's SBUF write is kept);
4. the vector engine steps (reads at the start of c, writes at the end);
5. the array's PSUM write, then the DMA's SBUF write (the DMA wins over the vector engine on the
   same SBUF row) take effect.
"""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mesh.prefill import (Command, CommandError, DmaKind, DmaError, EngineError, Op,
                          PrefillConfig)
from .dma import DmaModel, Transfer, check_transfer
from .systolic import SystolicModel
from .vector_engine import REDUCTIONS, VectorCommand, VectorEngineModel, VectorOp, ports

__all__ = ["PrefillEmulator", "PrefillResult", "PrefillError", "PrefillCycleLimit",
           "FastArray"]


class PrefillError(RuntimeError):
    """A command that cannot run. Attributes: ``index`` (command index), ``command`` (the
    :class:`Command`, or None for a reserved op / an index past the command memory), ``check``
    (the failed check, a short string), ``cycle`` (the cycle the engine stopped in), ``cause``
    (the :class:`mesh.prefill.EngineError` the RTL reports as ``error_cause``; None for a
    :class:`PrefillCycleLimit`)."""

    def __init__(self, message, index=None, command=None, check=None, cycle=None, cause=None):
        super().__init__(message)
        self.index, self.command, self.check, self.cycle = index, command, check, cycle
        self.cause = None if cause is None else EngineError(cause)


class PrefillCycleLimit(PrefillError):
    """The run did not reach HALT within its cycle limit."""


class _EngineDma(DmaModel):
    """The DMA model with a load's SBUF write kept aside (the engine applies it at the end of
    the cycle, after the vector engine's write, so that the DMA wins)."""

    def _complete(self, request):
        if request.write:
            return super()._complete(request)
        addr, count = request.addr, request.count
        in_range = 0 < count and addr + count <= self.config.dram_bytes
        data = bytes(self.dram[addr:addr + count]) if in_range else bytes(count)
        return request._replace(data=data)

    def cmd_ready(self):
        """``cmd.ready`` in the current cycle, from the state at its start (as in step)."""
        cur, stage = self._current, self._stage
        fire = stage is not None and len(self._queue) < self.config.dma_queue
        free = stage is None or fire
        return cur is None or (free and cur.left == 1)


class FastArray:
    """A drop-in for :class:`SystolicModel` that computes a row's result at presentation
    (``data @ W_buffer``) and returns it 2n cycles later. Exact under the sequencer's issue rules
    (a buffer's weights do not change while a row that uses them is in the array), and much
    faster for long runs."""

    def __init__(self, n):
        self.n, self.latency, self.cycle = n, 2 * n, 0
        self._weights = np.zeros((2, n, n), dtype=np.int64)
        self._out = deque()

    def step(self, *, weights=None, act=None, transpose=False):
        if act is not None:
            buffer, data = act
            self._out.append((self.cycle + self.latency,
                              (np.asarray(data, dtype=np.int64) @ self._weights[buffer])
                              .astype(np.int32)))
        if weights is not None:
            buffer, row, data = weights
            if transpose:
                self._weights[buffer, :, row] = data
            else:
                self._weights[buffer, row] = data
        output = None
        if self._out and self._out[0][0] == self.cycle:
            output = self._out.popleft()[1]
        self.cycle += 1
        return output


@dataclass
class PrefillResult:
    """What a run did. ``cycles``: the run lasted this many cycles (HALT's cycle + 1). ``sbuf``
    (int8), ``psum`` (int32), ``dram`` (bytes): the memories at the end. ``issue``: the issue
    cycle of each command index that issued. ``counters``: ``rows_presented``, ``macs``
    (rows presented x n^2), ``array_cycles`` (cycles with array_busy), ``streamer_cycles``,
    ``loader_cycles`` (cycles the loader wrote a weight row), ``dma_cycles`` (DMA busy),
    ``vector_cycles`` (vector_busy), ``commands`` (issued)."""
    cycles: int
    sbuf: np.ndarray
    psum: np.ndarray
    dram: bytes
    issue: list
    counters: dict = field(default_factory=dict)

    def utilization(self, n):
        """Rows presented x n^2 over cycles x n^2: the array's MAC utilization."""
        return self.counters["macs"] / (self.cycles * n * n) if self.cycles else 0.0


#: The sequencer's cause for each DMA refusal.
_DMA_CAUSES = {DmaError.KIND: EngineError.DMA_KIND, DmaError.ROWS: EngineError.DMA_ROWS,
               DmaError.DRAM: EngineError.DMA_DRAM}


def _vector_rows_check(config, vc):
    """The failed bound check of a VECTOR command, or None."""
    n = config.n
    rows = vc.row_count(n)
    sbuf_a, sbuf_b, psum_a, psum_b, writes = ports(vc.op, vc.acc)
    checks = [(sbuf_a, vc.src_a, rows, config.sbuf_rows, "SBUF rows a"),
              (sbuf_b, vc.src_b, rows, config.sbuf_rows, "SBUF rows b"),
              (psum_a, vc.src_a, rows, config.psum_rows, "PSUM rows a"),
              (psum_b, vc.src_b, rows, config.psum_rows, "PSUM rows b")]
    if writes is not None:
        count = 1 if vc.op in REDUCTIONS else rows
        limit = config.sbuf_rows if writes == "sbuf" else config.psum_rows
        checks.append((True, vc.dst, count, limit, f"{writes.upper()} rows c"))
    for enabled, first, count, limit, name in checks:
        if enabled and first + count > limit:
            return f"{name} {first}..{first + count - 1} past the {limit} rows"
    return None


class PrefillEmulator:
    """The prefill engine top, one :meth:`step` per clock cycle.

    Parameters
    ----------
    config : :class:`PrefillConfig`
    dram : bytes-like or None
        Initial DRAM contents from byte 0.
    sbuf, psum : arrays or None
        Initial SBUF (sbuf_rows, n) int8 and PSUM (psum_rows, n) int32 (zero by default; a
        convenience of the model, e.g. for preloaded operands).
    array : "systolic" or "fast"
        The array model: :class:`SystolicModel` (default) or :class:`FastArray`.
    """

    def __init__(self, config, dram=None, *, sbuf=None, psum=None, array="systolic"):
        if not isinstance(config, PrefillConfig):
            raise TypeError(f"config must be a PrefillConfig, not {config!r}")
        if array not in ("systolic", "fast"):
            raise ValueError(f"array must be 'systolic' or 'fast', not {array!r}")
        self.config = config
        self._dma = _EngineDma(config, dram=dram, sbuf=sbuf, psum=psum)
        self._vec = VectorEngineModel(config.n, self._dma.sbuf.view(np.int8), self._dma.psum)
        self._array = SystolicModel(config.n) if array == "systolic" else FastArray(config.n)
        self._words = []
        self._decoded = {}
        self.cycle = 0
        self.pc = 0
        self.done = False
        self.issue = []
        self._loader = deque()      # (read cycle, buffer, weight row, SBUF row or None, transpose)
        self._stream = deque()      # (read cycle, buffer, SBUF row, PSUM row, acc)
        self._weight_in = None      # (buffer, row, data, transpose) read last cycle, written now
        self._act_in = None         # (buffer, data, psum row, acc) read last cycle
        self._results = deque()     # (psum row, acc) of rows in the array, in order
        self.loader_last = -1       # the last cycle the loader writes a weight row
        self.streamer_last = -1     # the last cycle the streamer reads an SBUF row
        self.array_last = -1        # the last cycle a presented row writes PSUM
        self.vector_last = -1       # the last cycle of vector_busy
        self.buffer_weights_done = [-1, -1]    # last WEIGHTS's last write, per buffer
        self.buffer_last_present = [None, None]  # last MATMUL's last presentation, per buffer
        self.counters = dict(rows_presented=0, macs=0, array_cycles=0, streamer_cycles=0,
                             loader_cycles=0, dma_cycles=0, vector_cycles=0, commands=0)

    # Memories ---------------------------------------------------------------------------------

    @property
    def sbuf(self):
        """SBUF as int8 (a view: writes go to the engine's memory)."""
        return self._dma.sbuf.view(np.int8)

    @property
    def psum(self):
        return self._dma.psum

    @property
    def dram(self):
        return self._dma.dram

    # Commands ---------------------------------------------------------------------------------

    def load(self, commands):
        """Put ``commands`` (:class:`Command` objects or 128-bit words) in the command memory
        from index 0; the rest of the memory is zero (reserved op 0)."""
        words = [c.encode() if isinstance(c, Command) else int(c) for c in commands]
        if len(words) > self.config.commands:
            raise ValueError(f"{len(words)} commands do not fit the command memory of "
                             f"{self.config.commands}")
        self._words = words
        self._decoded = {}

    def _fail(self, cause, check, command=None):
        index = self.pc
        what = repr(command) if command is not None else "no command"
        raise PrefillError(f"command {index} ({what}) cannot run in cycle {self.cycle}: {check}",
                           index=index, command=command, check=check, cycle=self.cycle,
                           cause=cause)

    def _command(self):
        """The command at ``pc`` (raises PrefillError for a reserved op / past the memory)."""
        pc = self.pc
        if pc >= self.config.commands:
            self._fail(EngineError.INDEX, f"command index {pc} past the command memory of "
                                          f"{self.config.commands}")
        if pc not in self._decoded:
            word = self._words[pc] if pc < len(self._words) else 0
            try:
                self._decoded[pc] = Command.decode(word)
            except CommandError:
                op = word & 0xF
                self._fail(EngineError.OP, f"reserved op {op} (word 0x{word:032x})")
        return self._decoded[pc]

    # Busy flags at the start of the current cycle ---------------------------------------------

    def array_busy(self):
        return self.array_last >= self.cycle

    def streamer_busy(self):
        return self.streamer_last >= self.cycle

    def loader_busy(self):
        return self.loader_last >= self.cycle

    def vector_busy(self):
        return self.vector_last >= self.cycle

    def dma_busy(self):
        return self._dma.busy

    # The sequencer ----------------------------------------------------------------------------

    def _try_issue(self):
        """Issue the command at pc if its conditions hold; returns the Transfer to offer the
        DMA, the VectorCommand to offer the vector engine, and whether HALT issued."""
        cfg, c, n = self.config, self.cycle, self.config.n
        cmd = self._command()
        op = cmd.op
        if op == Op.DMA:
            store = cmd.sub in (DmaKind.STORE_SBUF, DmaKind.STORE_PSUM)
            if not self._dma.cmd_ready() or (store and (self.array_busy()
                                                         or self.vector_busy())):
                return None
            transfer = Transfer(kind=cmd.sub, tag=cmd.tag, dram=cmd.addr, stride=cmd.stride,
                                row=cmd.a, rows=cmd.count)
            cause = check_transfer(cfg, transfer)
            if cause != DmaError.NONE:
                self._fail(_DMA_CAUSES[cause],
                           f"the DMA refuses the transfer: DmaError.{cause.name}", cmd)
            return ("dma", transfer)
        if op == Op.WAIT:
            if not (self._dma.done_tags >> cmd.tag) & 1:
                return None
            return ("wait", None)
        if op == Op.WEIGHTS:
            last = self.buffer_last_present[cmd.buffer]
            if (self.loader_busy() or self.vector_busy()
                    or (last is not None and c + 1 < last + 2 * n - 2)):
                return None
            k = cmd.count
            if not 1 <= k <= n:
                self._fail(EngineError.WEIGHTS_COUNT, f"WEIGHTS count {k} outside 1..{n}", cmd)
            if cmd.a + k > cfg.sbuf_rows:
                self._fail(EngineError.WEIGHTS_ROWS,
                           f"WEIGHTS SBUF rows {cmd.a}..{cmd.a + k - 1} past the "
                           f"{cfg.sbuf_rows} rows", cmd)
            for i in range(n):
                self._loader.append((c + i, cmd.buffer, i, cmd.a + i if i < k else None,
                                     bool(cmd.transpose)))
            self.loader_last = c + n
            self.buffer_weights_done[cmd.buffer] = c + n
            return ("weights", None)
        if op == Op.MATMUL:
            if (self.streamer_busy() or self.vector_busy()
                    or self.buffer_weights_done[cmd.buffer] > c):
                return None
            m = cmd.count
            if m == 0:
                self._fail(EngineError.MATMUL_COUNT, "MATMUL count 0", cmd)
            if cmd.a + m > cfg.sbuf_rows:
                self._fail(EngineError.MATMUL_SBUF,
                           f"MATMUL SBUF rows {cmd.a}..{cmd.a + m - 1} past the "
                           f"{cfg.sbuf_rows} rows", cmd)
            if cmd.b + m > cfg.psum_rows:
                self._fail(EngineError.MATMUL_PSUM,
                           f"MATMUL PSUM rows {cmd.b}..{cmd.b + m - 1} past the "
                           f"{cfg.psum_rows} rows", cmd)
            for i in range(m):
                self._stream.append((c + i, cmd.buffer, cmd.a + i, cmd.b + i, cmd.acc))
            self.streamer_last = c + m - 1
            self.array_last = c + m + 2 * n
            self.buffer_last_present[cmd.buffer] = c + m
            return ("matmul", None)
        if op == Op.VECTOR:
            if (not self._vec.ready or self.array_busy() or self.streamer_busy()
                    or self.loader_busy()):
                return None
            if cmd.stride > 63:
                self._fail(EngineError.VECTOR_SHIFT, f"VECTOR shift {cmd.stride} above 63", cmd)
            multiplier = cmd.addr - (1 << 32) if cmd.addr >= 1 << 31 else cmd.addr
            vc = VectorCommand(op=cmd.sub, src_a=cmd.a, src_b=cmd.b, dst=cmd.c,
                               rows=cmd.count, multiplier=multiplier, shift=cmd.stride,
                               acc=cmd.acc)
            check = _vector_rows_check(cfg, vc)
            if check is not None:
                self._fail(EngineError.VECTOR_ROWS, f"VECTOR {VectorOp(cmd.sub).name}: {check}",
                           cmd)
            self.vector_last = c + vc.row_count(n) + 1
            return ("vector", vc)
        if op == Op.HALT:
            if (self.dma_busy() or self.array_busy() or self.streamer_busy()
                    or self.loader_busy() or self.vector_busy()):
                return None
            return ("halt", None)
        # Not reached: Op has no other values.
        self._fail(EngineError.OP, f"reserved op {int(op)}", cmd)

    def step(self):
        """Model one cycle; returns False once the engine is done (HALT issued earlier)."""
        if self.done:
            return False
        c, n = self.cycle, self.config.n
        counters = self.counters
        # Busy counters, from the state at the start of the cycle.
        counters["array_cycles"] += self.array_last >= c
        counters["streamer_cycles"] += self.streamer_last >= c
        counters["vector_cycles"] += self.vector_last >= c
        counters["dma_cycles"] += self._dma.busy

        issued = self._try_issue()
        transfer = vcommand = None
        halt = False
        if issued is not None:
            kind, payload = issued
            if kind == "dma":
                transfer = payload
            elif kind == "vector":
                vcommand = payload
            halt = kind == "halt"

        # Loader and streamer reads (SBUF at the start of c), array step.
        sbuf = self.sbuf
        weight_in, act_in = self._weight_in, self._act_in
        self._weight_in = self._act_in = None
        if self._loader and self._loader[0][0] == c:
            _, buffer, row, sbuf_row, transpose = self._loader.popleft()
            data = (sbuf[sbuf_row].astype(np.int64) if sbuf_row is not None
                    else np.zeros(n, dtype=np.int64))
            self._weight_in = (buffer, row, data, transpose)
        if self._stream and self._stream[0][0] == c:
            _, buffer, sbuf_row, psum_row, acc = self._stream.popleft()
            self._act_in = (buffer, sbuf[sbuf_row].astype(np.int64), psum_row, acc)
        if weight_in is not None:
            counters["loader_cycles"] += 1
        act = None
        if act_in is not None:
            act = (act_in[0], act_in[1])
            self._results.append((act_in[2], act_in[3]))
            counters["rows_presented"] += 1
        out = self._array.step(weights=None if weight_in is None else weight_in[:3], act=act,
                               transpose=weight_in is not None and weight_in[3])
        psum_write = None
        if out is not None:
            psum_row, acc = self._results.popleft()
            value = out.astype(np.int64)
            if acc:
                value = value + self.psum[psum_row]
            psum_write = (psum_row, value.astype(np.int32))   # wraps like int32

        dma_step = self._dma.step(transfer)
        if transfer is not None and not dma_step.accepted:
            raise AssertionError("the DMA did not take a transfer it was ready for")
        self._vec.step(vcommand)
        if psum_write is not None:
            self.psum[psum_write[0]] = psum_write[1]
        if dma_step.sbuf_write is not None:
            row, data = dma_step.sbuf_write
            self._dma.sbuf[row] = np.frombuffer(data, dtype=np.uint8)

        if issued is not None:
            self.issue.append(c)
            counters["commands"] += 1
            self.pc += 1
        self.cycle += 1
        if halt:
            self.done = True
        return True

    def run(self, commands=None, max_cycles=1_000_000):
        """Load ``commands`` (if given) and step until HALT; returns a :class:`PrefillResult`.
        Raises :class:`PrefillError` for a command that cannot run and
        :class:`PrefillCycleLimit` when HALT has not issued after ``max_cycles`` cycles."""
        if commands is not None:
            self.load(commands)
        while not self.done:
            if self.cycle >= max_cycles:
                raise PrefillCycleLimit(
                    f"no HALT within {max_cycles} cycles (command {self.pc} waiting)",
                    index=self.pc, check="cycle limit", cycle=self.cycle)
            self.step()
        counters = dict(self.counters)
        counters["macs"] = counters["rows_presented"] * self.config.n ** 2
        return PrefillResult(cycles=self.cycle, sbuf=self.sbuf.copy(), psum=self.psum.copy(),
                             dram=bytes(self.dram), issue=list(self.issue), counters=counters)

"""Cycle-level model of the prefill engine's DMA engine and DRAM channel, written from the timing
contract of :mod:`hdl.dma` (not from its RTL), and the closed-form timing of a lone transfer.

The channel rule, in short: row requests are issued in order, at most one per cycle; request r
of R_r bytes issued in cycle s_r may transfer from cycle s_r + L; the channel serves the oldest
request with a byte budget b that gains ``bandwidth`` in each cycle the head request has started
(it completes when b >= R_r: b -= R_r, then b is capped at bandwidth - 1) and is 0 after a cycle
with no started head; one completion per cycle; at most ``dma_queue`` requests outstanding.
The DMA's pipeline (current transfer, issue stage) issues row k of a transfer accepted in cycle
a into an idle engine in cycle a + 2 + k unless the queue is full.
"""

from collections import deque, namedtuple

import numpy as np

from mesh.prefill import DmaError, DmaKind, PrefillConfig

__all__ = ["DmaModel", "DmaStep", "Transfer", "RowRequest", "transfer_cycles", "stream_bound",
           "check_transfer"]

TAGS = 16

#: A transfer: ``kind`` (:class:`DmaKind` value, 3 is refused), ``tag`` (0..15), ``dram`` (byte
#: address of row 0), ``stride`` (bytes between rows in DRAM), ``row`` (first local row),
#: ``rows`` (count).
Transfer = namedtuple("Transfer", "kind tag dram stride row rows")

#: A row request: ``write``, ``addr`` (DRAM byte), ``count`` (bytes), ``row`` (local row),
#: ``tag``, ``last`` (the last row of its transfer), ``kind``, ``data`` (bytes; write data, or the
#: read data once completed), ``issued`` (cycle).
RowRequest = namedtuple("RowRequest", "write addr count row tag last kind data issued")

#: What one cycle did. Outputs as the RTL shows them during the cycle: ``ready`` (cmd.ready),
#: ``done_tags``, ``busy``, ``error``, ``error_cause``. Events of the cycle: ``accepted`` (the
#: offered transfer was taken, refused or not), ``issued`` (the :class:`RowRequest` issued, or
#: None), ``completed`` (the :class:`RowRequest` completed, with its read data, or None),
#: ``sbuf_write`` ((row, bytes) written into SBUF at the end of the cycle, or None).
DmaStep = namedtuple("DmaStep", "ready done_tags busy error error_cause accepted issued "
                     "completed sbuf_write")


def _row_bytes(config, kind):
    return 4 * config.n if kind == DmaKind.STORE_PSUM else config.n


def check_transfer(config, transfer):
    """The :class:`DmaError` of ``transfer``: the first failing check, or NONE."""
    kind, _, dram, stride, row, rows = transfer
    if kind not in (DmaKind.LOAD, DmaKind.STORE_SBUF, DmaKind.STORE_PSUM):
        return DmaError.KIND
    local = config.psum_rows if kind == DmaKind.STORE_PSUM else config.sbuf_rows
    if rows == 0 or row + rows > local:
        return DmaError.ROWS
    if dram + (rows - 1) * stride + _row_bytes(config, kind) > config.dram_bytes:
        return DmaError.DRAM
    return DmaError.NONE


def stream_bound(nbytes, bandwidth):
    """The fewest cycles in which the channel can move ``nbytes``: ceil(nbytes / bandwidth)."""
    return -(-nbytes // bandwidth)


def transfer_cycles(config, rows, row_bytes, start):
    """The completion cycle of each row of a lone transfer of ``rows`` rows of ``row_bytes``
    accepted in cycle ``start`` by an idle engine with an empty channel.

    From the rule: row k is issued in s_k = max(start + 2 + k, s_(k-1) + 1, c_(k-Q) + 1); it
    starts transferring in t_k = max(s_k + L, c_(k-1) + 1) with the carried budget b if
    t_k = c_(k-1) + 1 (no idle cycle in between), else with 0; it completes after the fewest
    cycles m >= 1 with b + m x bandwidth >= row_bytes: c_k = t_k + m - 1, leaving
    min(b + m x bandwidth - row_bytes, bandwidth - 1).
    """
    bw, L, Q = config.dram_bandwidth, config.dram_latency, config.dma_queue
    issued, done = [], []
    budget = 0
    for k in range(rows):
        s = start + 2 + k
        if k:
            s = max(s, issued[-1] + 1)
        if k >= Q:
            s = max(s, done[k - Q] + 1)
        t = s + L
        if done and t <= done[-1] + 1:
            t, carry = done[-1] + 1, budget
        else:
            carry = 0
        m = max(1, -(-(row_bytes - carry) // bw))
        done.append(t + m - 1)
        budget = min(carry + m * bw - row_bytes, bw - 1)
        issued.append(s)
    return done


class _Current:
    __slots__ = ("kind", "tag", "dram", "stride", "row", "left")

    def __init__(self, transfer):
        self.kind, self.tag, self.dram, self.stride, self.row, self.left = (
            int(transfer.kind), transfer.tag, transfer.dram, transfer.stride, transfer.row,
            transfer.rows)


class DmaModel:
    """The DMA engine, the DRAM channel and the memories they touch, one :meth:`step` per clock
    cycle (cycle 0 is the first step after construction or :meth:`reset`).

    Parameters
    ----------
    config : :class:`PrefillConfig`
    dram : bytes-like or None
        Initial DRAM contents from byte 0.
    sbuf : array of shape (sbuf_rows, n) or None
        Initial SBUF (int8 or uint8; kept as uint8 bytes).
    psum : array of shape (psum_rows, n) or None
        Initial PSUM (int32).

    Attributes
    ----------
    dram : :class:`bytearray`
    sbuf : :class:`numpy.ndarray` of uint8, (sbuf_rows, n)
    psum : :class:`numpy.ndarray` of int32, (psum_rows, n)
    cycle : :class:`int`
        The cycle the next :meth:`step` models.
    """

    def __init__(self, config, dram=None, sbuf=None, psum=None):
        if not isinstance(config, PrefillConfig):
            raise TypeError(f"config must be a PrefillConfig, not {config!r}")
        self.config = config
        self.dram = bytearray(config.dram_bytes)
        if dram is not None:
            dram = bytes(dram)
            if len(dram) > config.dram_bytes:
                raise ValueError(f"dram must hold at most {config.dram_bytes} bytes, not "
                                 f"{len(dram)}")
            self.dram[:len(dram)] = dram
        self.sbuf = np.zeros((config.sbuf_rows, config.n), dtype=np.uint8)
        if sbuf is not None:
            self.sbuf[:] = np.asarray(sbuf).astype(np.uint8)
        self.psum = np.zeros((config.psum_rows, config.n), dtype=np.int32)
        if psum is not None:
            self.psum[:] = np.asarray(psum)
        self.reset()

    def reset(self):
        """Reset the engine and channel state (not the memories' contents)."""
        self.cycle = 0
        self._current = None
        self._stage = None              # the issue stage: a RowRequest (issued = None)
        self._queue = deque()           # outstanding RowRequests, oldest first
        self._budget = 0
        self._pending = [0] * TAGS
        self.done_tags = 0
        self.error = False
        self.error_cause = DmaError.NONE

    @property
    def busy(self):
        return self._current is not None or self._stage is not None or bool(self._queue)

    def _local_bytes(self, kind, row):
        if kind == DmaKind.STORE_PSUM:
            return self.psum[row].astype("<i4").tobytes()
        return self.sbuf[row].tobytes()

    def step(self, transfer=None):
        """Model one cycle with ``transfer`` (a :class:`Transfer`, or None) offered on the
        command port; returns a :class:`DmaStep`."""
        config, t = self.config, self.cycle
        n, Q, L, bw = config.n, config.dma_queue, config.dram_latency, config.dram_bandwidth
        outputs = dict(done_tags=self.done_tags, busy=self.busy, error=self.error,
                       error_cause=self.error_cause)

        # The pipeline's handshakes, from the state at the start of the cycle.
        cur, stage = self._current, self._stage
        fire = stage is not None and len(self._queue) < Q
        free = stage is None or fire
        advance = cur is not None and free
        ready = cur is None or (advance and cur.left == 1)

        # The row moving into the issue stage reads SBUF/PSUM as they are at the start.
        new_stage = None if free else stage
        if advance:
            kind = cur.kind
            new_stage = RowRequest(
                write=kind != DmaKind.LOAD, addr=cur.dram, count=_row_bytes(config, kind),
                row=cur.row, tag=cur.tag, last=cur.left == 1, kind=kind,
                data=None if kind == DmaKind.LOAD else self._local_bytes(kind, cur.row),
                issued=None)
            cur.dram += cur.stride
            cur.row += 1
            cur.left -= 1
            if cur.left == 0:
                self._current = None

        # The channel.
        issued = stage._replace(issued=t) if fire else None
        if issued is not None:
            self._queue.append(issued)
        completed = sbuf_write = None
        head = self._queue[0] if self._queue else None
        if head is not None and t >= head.issued + L:
            self._budget += bw
            if self._budget >= head.count:
                self._queue.popleft()
                self._budget = min(self._budget - head.count, bw - 1)
                completed = self._complete(head)
                if not head.write:
                    sbuf_write = (head.row, completed.data[:n])
        else:
            self._budget = 0
        self._stage = new_stage

        # Acceptance.
        accepted = transfer is not None and ready
        inc_tag = None
        if accepted:
            cause = check_transfer(config, transfer)
            if cause == DmaError.NONE:
                self._current = _Current(transfer)
                inc_tag = transfer.tag
            else:
                if not self.error:
                    self.error_cause = cause
                self.error = True

        # Tags.
        if completed is not None and completed.last:
            tag = completed.tag
            self._pending[tag] -= 1
            if self._pending[tag] == 0 and inc_tag != tag:
                self.done_tags |= 1 << tag
        if inc_tag is not None:
            self._pending[inc_tag] += 1
            self.done_tags &= ~(1 << inc_tag)

        self.cycle += 1
        return DmaStep(ready=ready, accepted=accepted, issued=issued, completed=completed,
                       sbuf_write=sbuf_write, **outputs)

    def _complete(self, request):
        """Apply a completing request to the memories; returns it with its read data."""
        addr, count = request.addr, request.count
        in_range = 0 < count and addr + count <= self.config.dram_bytes
        if request.write:
            if in_range:
                self.dram[addr:addr + count] = request.data[:count]
            return request
        data = bytes(self.dram[addr:addr + count]) if in_range else bytes(count)
        if in_range:
            self.sbuf[request.row] = np.frombuffer(data[:self.config.n], dtype=np.uint8)
        return request._replace(data=data)

    def run(self, transfers, limit=1_000_000):
        """Offer ``transfers`` in order, each until accepted, then step until idle; returns the
        list of :class:`DmaStep`."""
        steps, pending = [], deque(transfers)
        while pending or self.busy:
            if len(steps) >= limit:
                raise RuntimeError(f"the DMA is still busy after {limit} cycles")
            step = self.step(pending[0] if pending else None)
            if step.accepted:
                pending.popleft()
            steps.append(step)
        return steps

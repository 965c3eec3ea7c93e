"""The prefill engine's DMA engine and its off-chip DRAM channel model.

:class:`DmaEngine` splits transfers (rows between DRAM and SBUF/PSUM) into **row requests** to
:class:`DramModel`, which holds the DRAM contents and implements the channel timing rule below.
:mod:`emulator.dma` is the cycle-level model of both, written from this rule.

**The DRAM channel rule.** Row requests are issued in order, at most one per cycle (a request is
issued in cycle s when ``req.valid`` and ``req.ready`` are both high in cycle s). Request r of
R_r bytes (n for an SBUF row, 4n for a PSUM row) issued in cycle s_r may start transferring in
cycle s_r + L (L = ``dram_latency``; with L = 0, in its issue cycle). The channel serves one
request at a time, in issue order, with a byte budget b (0 after reset). In each cycle t:

* if the head request (the oldest not completed) has started (t >= s_r + L), b += bandwidth;
  then if b >= R_r, the request completes at the end of cycle t and b -= R_r, b is then capped at
  bandwidth - 1 (credit never carries more than one partial cycle);
* if there is no started head request in cycle t, b = 0.

At most one request completes per cycle. A read's data is on ``resp`` in its completion cycle
(the DMA writes it into SBUF at the end of that cycle); a write's bytes are in DRAM at the end of
its completion cycle (a read completing later sees them). At most ``dma_queue`` requests are
outstanding (issued and not completed): ``req.ready`` is high in cycle t exactly when fewer than
``dma_queue`` requests issued before cycle t are still outstanding at the start of cycle t (a
completion in cycle t frees its slot from cycle t + 1).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mesh.prefill import DmaError, DmaKind, PrefillConfig

__all__ = ["DmaEngine", "DramModel", "DramRequest", "DramResponse", "DmaKind", "DmaError",
           "ADDR_BITS", "TAGS"]

ADDR_BITS = 32      # DRAM byte addresses and strides on the command and request ports
TAGS = 16
STAMP_BITS = 16     # issue-cycle stamps: ages stay below 1024 + 64 * 129 < 2**16


def _check_config(config):
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config must be a PrefillConfig, not {config!r}")


def _check_meta_bits(meta_bits):
    if not isinstance(meta_bits, int) or isinstance(meta_bits, bool) or not 0 <= meta_bits <= 64:
        raise ValueError(f"meta_bits must be an integer from 0 to 64, not {meta_bits!r}")


class DramRequest(wiring.Signature):
    """A row request, from the DMA's side (all members ``Out`` but ``ready``).

    ``valid``/``ready``: the handshake (issued when both are high). ``write``: a write (else a
    read). ``addr``: byte address. ``count``: bytes, 1 to 4n (the DMA uses n or 4n). ``data``:
    write data, byte k in bits 8k..8k+7 (bytes at and beyond ``count`` ignored). ``meta``: opaque,
    echoed on the response.
    """

    def __init__(self, config, meta_bits):
        _check_config(config)
        _check_meta_bits(meta_bits)
        super().__init__({
            "valid": Out(1),
            "ready": In(1),
            "write": Out(1),
            "addr": Out(ADDR_BITS),
            "count": Out(range(4 * config.n + 1)),
            "data": Out(32 * config.n),
            "meta": Out(meta_bits),
        })


class DramResponse(wiring.Signature):
    """A completion, from the DRAM's side (all members ``Out``): ``valid`` in the completion cycle
    of a request; ``write``, ``meta`` as issued; ``error`` when the request was out of range (it
    had no effect); ``data``: a read's bytes (zero beyond its count, and zero for writes and for
    erroneous requests)."""

    def __init__(self, config, meta_bits):
        _check_config(config)
        _check_meta_bits(meta_bits)
        super().__init__({
            "valid": Out(1),
            "write": Out(1),
            "error": Out(1),
            "data": Out(32 * config.n),
            "meta": Out(meta_bits),
        })


class DramModel(wiring.Component):
    """The off-chip DRAM: ``dram_bytes`` bytes behind the channel rule of this module.

    The bytes are stored in two banks of words of W bytes (W: the power of two at least 4n), word
    i of the DRAM in bank i % 2 at index i // 2, byte k of a word in bits 8k..8k+7, so that any
    request (at most 4n bytes, any byte address) touches at most one word of each bank. Reads use
    asynchronous ports: the response carries the contents as of the start of the completion cycle
    (all earlier completed writes included).

    A request is **out of range** when ``count`` is 0 or more than 4n, or ``addr + count`` exceeds
    ``dram_bytes``. It still completes according to the rule, but without effect: no byte
    changes, ``resp.error`` is high and ``resp.data`` is zero, and the sticky ``error`` goes high
    at the end of the completion cycle (until reset).

    The queue of outstanding requests is a memory of ``dma_queue`` entries; when it is empty, the
    request being issued is the head directly (so with L = 0 it may complete in its issue cycle:
    a combinational path from ``req`` to ``resp``). Each entry is stamped with the issue cycle
    (a free-running 16-bit counter; the age of an outstanding request stays below
    1024 + 64 x 129 cycles, so the stamps never alias).

    Parameters
    ----------
    config : :class:`PrefillConfig`
    contents : bytes-like or None
        Initial contents from byte 0 (at most ``dram_bytes``; the rest is zero).
    meta_bits : :class:`int`
        Width of the echoed ``meta`` field, 0 to 64.

    Members
    -------
    req : :py:`In(DramRequest(config, meta_bits))`
    resp : :py:`Out(DramResponse(config, meta_bits))`
    error : :py:`Out(1)`
        Sticky: an out-of-range request has completed.

    Attributes
    ----------
    word_bytes : :class:`int`
        W.
    banks : list of 2 :class:`Memory`
        The even and odd words (read them in a test bench with ``ctx.get(bank.data[index])``).
    """

    def __init__(self, config, contents=None, *, meta_bits=0):
        _check_config(config)
        _check_meta_bits(meta_bits)
        self._config = config
        self.meta_bits = meta_bits
        n = config.n
        self.word_bytes = W = 1 << (4 * n - 1).bit_length()
        depth = config.dram_bytes // (2 * W)
        init = [[0] * depth, [0] * depth]
        if contents is not None:
            contents = bytes(contents)
            if len(contents) > config.dram_bytes:
                raise ValueError(f"contents must hold at most {config.dram_bytes} bytes, not "
                                 f"{len(contents)}")
            for word in range((len(contents) + W - 1) // W):
                init[word % 2][word // 2] = int.from_bytes(contents[word * W:(word + 1) * W],
                                                           "little")
        self.banks = [Memory(shape=unsigned(8 * W), depth=depth, init=init[k]) for k in range(2)]
        self._bank_read = [bank.read_port(domain="comb") for bank in self.banks]
        self._bank_write = [bank.write_port(granularity=8) for bank in self.banks]
        self._entry = data.StructLayout({
            "write": 1,
            "addr": ADDR_BITS,
            "count": range(4 * n + 1),
            "data": 32 * n,
            "meta": meta_bits,
            "stamp": STAMP_BITS,
        })
        self.queue = Memory(shape=self._entry, depth=config.dma_queue, init=[])
        self._queue_read = self.queue.read_port(domain="comb")
        self._queue_write = self.queue.write_port()
        super().__init__({
            "req": In(DramRequest(config, meta_bits)),
            "resp": Out(DramResponse(config, meta_bits)),
            "error": Out(1),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config, req, resp = self._config, self.req, self.resp
        n, W, Q = config.n, self.word_bytes, config.dma_queue
        bw, L = config.dram_bandwidth, config.dram_latency
        m.submodules.bank_even, m.submodules.bank_odd = self.banks
        m.submodules.queue = self.queue

        now = Signal(STAMP_BITS)
        m.d.sync += now.eq(now + 1)

        # The queue of outstanding requests.
        count = Signal(range(Q + 1))
        rd, wr = Signal(range(Q)), Signal(range(Q))
        m.d.comb += req.ready.eq(count < Q)
        incoming = Signal()
        m.d.comb += incoming.eq(req.valid & req.ready)
        new = Signal(self._entry)
        m.d.comb += [
            new.write.eq(req.write), new.addr.eq(req.addr), new.count.eq(req.count),
            new.data.eq(req.data), new.meta.eq(req.meta), new.stamp.eq(now),
        ]
        m.d.comb += self._queue_read.addr.eq(rd)

        # The head: the oldest queued request, or the one being issued into an empty queue.
        head, head_valid = Signal(self._entry), Signal()
        m.d.comb += [
            head.eq(Mux(count != 0, self._queue_read.data, new)),
            head_valid.eq((count != 0) | incoming),
        ]
        age, started = Signal(STAMP_BITS), Signal()
        m.d.comb += [
            age.eq(now - head.stamp),
            started.eq(head_valid & (age >= L)),
        ]

        # The byte budget.
        # b < R <= 4n while a request waits for bytes, b <= bandwidth - 1 after a completion.
        budget = Signal(range(max(bw, 4 * n) + 1))
        total = Signal(range(max(bw, 4 * n) + bw + 1))
        complete = Signal()
        m.d.comb += [
            total.eq(budget + bw),
            complete.eq(started & (total >= head.count)),
        ]
        left = Signal(range(max(bw, 4 * n) + bw + 1))
        m.d.comb += left.eq(total - head.count)
        with m.If(~started):
            m.d.sync += budget.eq(0)
        with m.Elif(complete):
            m.d.sync += budget.eq(Mux(left > bw - 1, bw - 1, left))
        with m.Else():
            m.d.sync += budget.eq(total)

        push, pop = Signal(), Signal()
        m.d.comb += [
            push.eq(incoming & ~((count == 0) & complete)),
            pop.eq(complete & (count != 0)),
            self._queue_write.addr.eq(wr),
            self._queue_write.data.eq(new),
            self._queue_write.en.eq(push),
        ]

        def advance(pointer):
            return Mux(pointer == Q - 1, 0, pointer + 1)
        with m.If(push):
            m.d.sync += wr.eq(advance(wr))
        with m.If(pop):
            m.d.sync += rd.eq(advance(rd))
        m.d.sync += count.eq(count + push - pop)

        # The banks: word i of the head's address and word i + 1.
        in_range = Signal()
        m.d.comb += in_range.eq((head.count != 0) & (head.count <= 4 * n)
                                & (head.addr + head.count <= config.dram_bytes))
        wbits = W.bit_length() - 1
        offset = head.addr[:wbits]
        word = head.addr[wbits:]
        odd_first = word[0]
        bank_bits = len(self._bank_read[0].addr)
        index = Signal(max(bank_bits, 1))
        m.d.comb += index.eq(word[1:])
        even_index = Signal(max(bank_bits, 1))
        m.d.comb += even_index.eq(index + odd_first)   # wraps at the top: then unused
        for port, at in ((self._bank_read[0], even_index), (self._bank_read[1], index),
                         (self._bank_write[0], even_index), (self._bank_write[1], index)):
            if bank_bits:
                m.d.comb += port.addr.eq(at)
        low, high = Signal(8 * W), Signal(8 * W)
        m.d.comb += [
            low.eq(Mux(odd_first, self._bank_read[1].data, self._bank_read[0].data)),
            high.eq(Mux(odd_first, self._bank_read[0].data, self._bank_read[1].data)),
        ]
        shift = Cat(Const(0, 3), offset)
        byte_mask = Signal(4 * n)
        m.d.comb += byte_mask.eq(Cat(head.count > k for k in range(4 * n)))
        bit_mask = Cat(byte_mask[k].replicate(8) for k in range(4 * n))
        window = Signal(16 * W)
        m.d.comb += window.eq(Cat(low, high) >> shift)
        read_data = Signal(32 * n)
        m.d.comb += read_data.eq(window[:32 * n] & bit_mask)

        write_window, write_enables = Signal(16 * W), Signal(2 * W)
        m.d.comb += [
            write_window.eq((head.data & bit_mask) << shift),
            write_enables.eq(byte_mask << offset),
        ]
        do_write = Signal()
        m.d.comb += do_write.eq(complete & head.write & in_range)
        low_en, high_en = write_enables[:W], write_enables[W:]
        low_data, high_data = write_window[:8 * W], write_window[8 * W:]
        even, odd = self._bank_write
        m.d.comb += [
            even.en.eq(Mux(do_write, Mux(odd_first, high_en, low_en), 0)),
            even.data.eq(Mux(odd_first, high_data, low_data)),
            odd.en.eq(Mux(do_write, Mux(odd_first, low_en, high_en), 0)),
            odd.data.eq(Mux(odd_first, low_data, high_data)),
        ]

        m.d.comb += [
            resp.valid.eq(complete),
            resp.write.eq(head.write),
            resp.error.eq(~in_range),
            resp.data.eq(Mux(head.write | ~in_range, 0, read_data)),
            resp.meta.eq(head.meta),
        ]
        with m.If(complete & ~in_range):
            m.d.sync += self.error.eq(1)
        return m


class DmaEngine(wiring.Component):
    """The DMA engine: transfers of rows between DRAM and SBUF/PSUM, split into row requests.

    **Transfers.** A transfer is accepted in cycle a when ``cmd.valid`` and ``cmd.ready`` are
    both high. Its row k (k from 0 to ``rows`` - 1) is at DRAM byte ``dram + k * stride`` and at
    local row ``row + k`` of SBUF (LOAD, STORE_SBUF; rows of n bytes) or PSUM (STORE_PSUM; rows of
    4n bytes, n little-endian int32). ``tag`` (0 to 15) names the transfer for ``done_tags``.

    **Refusal.** An accepted transfer is refused (dropped: no request, ``done_tags`` unchanged)
    when one of these checks fails, the first failing one giving the cause
    (:class:`DmaError`): KIND, ``kind`` is 3; ROWS, ``rows`` is 0 or ``row + rows`` exceeds
    ``sbuf_rows`` (``psum_rows`` for STORE_PSUM); DRAM, ``dram + (rows - 1) * stride + R``
    exceeds ``dram_bytes`` (R: n, or 4n for STORE_PSUM). ``error`` goes high at the end of cycle
    a and stays high; ``error_cause`` takes the cause of the first refused transfer and keeps it
    (both until reset).

    **Pipeline.** Registers: the current transfer (its next row) and the issue stage (one row
    request). In each cycle, the issue stage's request is offered on ``req``; the stage is free
    when it is empty or its request is issued this cycle. When the stage is free and there is a
    current transfer, its next row moves into the stage at the end of the cycle (for a store,
    its SBUF/PSUM row is read in that cycle on ``sbuf_read``/``psum_read``: synchronous ports,
    address and ``en`` in cycle c, data in cycle c + 1 and held while ``en`` is low, which is the
    write data of the request while it waits in the stage). ``cmd.ready`` is high when there is
    no current transfer, or its last row moves into the stage this cycle. So, with no stalls, row
    k of a transfer accepted in cycle a is issued in cycle a + 2 + k, and the first row of a
    transfer accepted in the cycle the previous one's last row moves on is issued right after
    that last row. When the DRAM queue is full (``req.ready`` low) the stage and then the current
    transfer wait. Generally: s_0 = a + 2 if the engine was idle, s_k = max(s_(k-1) + 1,
    c_(k-Q) + 1) for consecutive requests (c: completion cycles, Q = ``dma_queue``).

    **Completions.** A completing read (a LOAD row) is written to SBUF on ``sbuf_write`` in its
    completion cycle (into the SBUF at the end of it). Stores read SBUF/PSUM when issued, not
    when completed, and are not ordered after earlier loads' SBUF writes: a store of rows an
    earlier load writes must wait for that load's tag.

    **Tags.** ``done_tags`` bit t is high when the latest transfer accepted with tag t has
    completed all its rows (its last row's request completed in an earlier cycle). Accepting a
    transfer on tag t clears bit t at the end of the acceptance cycle; the completion of the last
    outstanding transfer on tag t sets it at the end of the completion cycle (if no transfer on
    t is accepted in that cycle). All bits are low after reset.

    ``busy`` is high when there is a current transfer, a request in the issue stage, or an
    outstanding request (all registers: ``busy`` is low in the cycle a transfer is accepted into
    an idle engine, and in the cycle after the last completion).

    Parameters
    ----------
    config : :class:`PrefillConfig`

    Members
    -------
    cmd : :py:`In(Signature({"valid": Out(1), "ready": In(1), "kind": Out(2), "tag": Out(4),
    "dram": Out(32), "stride": Out(32), "row": Out(row_bits), "rows": Out(row_bits)}))`
        Transfers; ``row_bits`` is the bit length of max(sbuf_rows, psum_rows).
    req : :py:`Out(DramRequest(config, meta_bits))`
        Row requests to :class:`DramModel`; ``meta`` is ``{tag: 4, last: 1, row: row_bits}``.
    resp : :py:`In(DramResponse(config, meta_bits))`
    sbuf_read : :py:`Out(Signature({"en": Out(1), "addr": Out(range(sbuf_rows)),
    "data": In(8n)}))`
        Synchronous SBUF read port (for STORE_SBUF).
    psum_read : :py:`Out(Signature({"en": Out(1), "addr": Out(range(psum_rows)),
    "data": In(32n)}))`
        Synchronous PSUM read port (for STORE_PSUM).
    sbuf_write : :py:`Out(Signature({"en": Out(1), "addr": Out(range(sbuf_rows)),
    "data": Out(8n)}))`
        SBUF write port (LOAD rows, written at the end of the cycle ``en`` is high).
    done_tags : :py:`Out(16)`
    busy, error : :py:`Out(1)`
    error_cause : :py:`Out(2)`
        A :class:`DmaError` value.

    Attributes
    ----------
    meta_bits : :class:`int`
        The width of the DRAM requests' ``meta``: pass it to :class:`DramModel`.
    row_bits : :class:`int`
    """

    def __init__(self, config):
        _check_config(config)
        self._config = config
        n = config.n
        self.row_bits = row_bits = max(config.sbuf_rows, config.psum_rows).bit_length()
        self._meta = data.StructLayout({"tag": 4, "last": 1, "row": row_bits})
        self.meta_bits = self._meta.size
        super().__init__({
            "cmd": In(wiring.Signature({
                "valid": Out(1),
                "ready": In(1),
                "kind": Out(2),
                "tag": Out(4),
                "dram": Out(ADDR_BITS),
                "stride": Out(ADDR_BITS),
                "row": Out(row_bits),
                "rows": Out(row_bits),
            })),
            "req": Out(DramRequest(config, self.meta_bits)),
            "resp": In(DramResponse(config, self.meta_bits)),
            "sbuf_read": Out(wiring.Signature({
                "en": Out(1), "addr": Out(range(config.sbuf_rows)), "data": In(8 * n)})),
            "psum_read": Out(wiring.Signature({
                "en": Out(1), "addr": Out(range(config.psum_rows)), "data": In(32 * n)})),
            "sbuf_write": Out(wiring.Signature({
                "en": Out(1), "addr": Out(range(config.sbuf_rows)), "data": Out(8 * n)})),
            "done_tags": Out(TAGS),
            "busy": Out(1),
            "error": Out(1),
            "error_cause": Out(2),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config, cmd, req, resp = self._config, self.cmd, self.req, self.resp
        n, Q, row_bits = config.n, config.dma_queue, self.row_bits

        # The current transfer: its next row.
        cur_valid = Signal()
        cur_kind, cur_tag = Signal(2), Signal(4)
        cur_dram, cur_stride = Signal(ADDR_BITS), Signal(ADDR_BITS)
        cur_row, cur_left = Signal(row_bits), Signal(row_bits)
        # The issue stage: one row request.
        iss_valid, iss_last = Signal(), Signal()
        iss_kind, iss_tag = Signal(2), Signal(4)
        iss_addr, iss_row = Signal(ADDR_BITS), Signal(row_bits)

        psum = iss_kind == DmaKind.STORE_PSUM
        meta = Signal(self._meta)
        m.d.comb += [
            meta.tag.eq(iss_tag), meta.last.eq(iss_last), meta.row.eq(iss_row),
            req.valid.eq(iss_valid),
            req.write.eq(iss_kind != DmaKind.LOAD),
            req.addr.eq(iss_addr),
            req.count.eq(Mux(psum, 4 * n, n)),
            req.data.eq(Mux(psum, self.psum_read.data, self.sbuf_read.data)),
            req.meta.eq(meta),
        ]
        fire, free, advance = Signal(), Signal(), Signal()
        m.d.comb += [
            fire.eq(iss_valid & req.ready),
            free.eq(~iss_valid | fire),
            advance.eq(cur_valid & free),
            cmd.ready.eq(~cur_valid | (advance & (cur_left == 1))),
            self.sbuf_read.addr.eq(cur_row),
            self.sbuf_read.en.eq(advance & (cur_kind == DmaKind.STORE_SBUF)),
            self.psum_read.addr.eq(cur_row),
            self.psum_read.en.eq(advance & (cur_kind == DmaKind.STORE_PSUM)),
        ]
        with m.If(advance):
            m.d.sync += [
                iss_valid.eq(1), iss_kind.eq(cur_kind), iss_tag.eq(cur_tag),
                iss_addr.eq(cur_dram), iss_row.eq(cur_row), iss_last.eq(cur_left == 1),
                cur_dram.eq(cur_dram + cur_stride), cur_row.eq(cur_row + 1),
                cur_left.eq(cur_left - 1),
            ]
            with m.If(cur_left == 1):
                m.d.sync += cur_valid.eq(0)
        with m.Elif(fire):
            m.d.sync += iss_valid.eq(0)

        # Acceptance and the checks.
        accept = Signal()
        m.d.comb += accept.eq(cmd.valid & cmd.ready)
        cmd_psum = cmd.kind == DmaKind.STORE_PSUM
        local_rows = Mux(cmd_psum, config.psum_rows, config.sbuf_rows)
        span = Signal(row_bits)
        m.d.comb += span.eq(cmd.rows - 1)
        end = Signal(ADDR_BITS + ADDR_BITS + row_bits + 2)
        m.d.comb += end.eq(cmd.dram + span * cmd.stride + Mux(cmd_psum, 4 * n, n))
        cause = Signal(2)
        with m.If(cmd.kind == 3):
            m.d.comb += cause.eq(DmaError.KIND)
        with m.Elif((cmd.rows == 0) | (cmd.row + cmd.rows > local_rows)):
            m.d.comb += cause.eq(DmaError.ROWS)
        with m.Elif(end > config.dram_bytes):
            m.d.comb += cause.eq(DmaError.DRAM)
        accepted_ok = Signal()
        m.d.comb += accepted_ok.eq(accept & (cause == DmaError.NONE))
        with m.If(accepted_ok):
            m.d.sync += [
                cur_valid.eq(1), cur_kind.eq(cmd.kind), cur_tag.eq(cmd.tag),
                cur_dram.eq(cmd.dram), cur_stride.eq(cmd.stride), cur_row.eq(cmd.row),
                cur_left.eq(cmd.rows),
            ]
        with m.If(accept & (cause != DmaError.NONE)):
            m.d.sync += self.error.eq(1)
            with m.If(~self.error):
                m.d.sync += self.error_cause.eq(cause)

        # Completions: LOAD rows into SBUF, tags.
        done = Signal(self._meta)
        m.d.comb += [
            done.eq(resp.meta),
            self.sbuf_write.en.eq(resp.valid & ~resp.write),
            self.sbuf_write.addr.eq(done.row),
            self.sbuf_write.data.eq(resp.data[:8 * n]),
        ]
        last_done = resp.valid & done.last
        for t in range(TAGS):
            pending = Signal(range(Q + 3), name=f"pending_{t}")
            inc, dec = Signal(name=f"inc_{t}"), Signal(name=f"dec_{t}")
            m.d.comb += [inc.eq(accepted_ok & (cmd.tag == t)), dec.eq(last_done & (done.tag == t))]
            m.d.sync += pending.eq(pending + inc - dec)
            with m.If(inc):
                m.d.sync += self.done_tags[t].eq(0)
            with m.Elif(dec & (pending == 1)):
                m.d.sync += self.done_tags[t].eq(1)

        outstanding = Signal(range(Q + 1))
        m.d.sync += outstanding.eq(outstanding + fire - resp.valid)
        m.d.comb += self.busy.eq(cur_valid | iss_valid | (outstanding != 0))
        return m

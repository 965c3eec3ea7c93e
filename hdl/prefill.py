"""The prefill engine top: the sequencer and the blocks it drives (docs/ARCHITECTURE.md
section 11, "The sequencer").

:class:`PrefillEngine` holds a command memory of ``config.commands`` 128-bit words
(:class:`mesh.prefill.Command`), the SBUF (``sbuf_rows`` rows of n int8) and the PSUM
(``psum_rows`` rows of n int32), the weight loader, the activation streamer, the
:class:`~hdl.systolic.SystolicArray`, the :class:`~hdl.dma.DmaEngine` with its
:class:`~hdl.dma.DramModel`, and the :class:`~hdl.vector_engine.VectorEngine`. The sequencer issues
the commands in order, at most one per cycle, each in the first cycle whose issue conditions hold
(evaluated from the registers at the start of the cycle); a command that cannot run stops the
engine with a :class:`mesh.prefill.EngineError` cause.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mesh.prefill import COMMAND_BITS, COMMAND_FIELDS, DmaKind, EngineError, Op, PrefillConfig

from .dma import DmaEngine, DramModel, DramRequest, DramResponse
from .systolic import SystolicArray
from .vector_engine import (ACC_OPS, PSUM_READ_A_OPS, PSUM_READ_B_OPS, PSUM_WRITE_OPS,
                            REDUCTION_OPS, SBUF_READ_A_OPS, SBUF_READ_B_OPS, SBUF_WRITE_OPS,
                            VectorEngine, VectorOp, table_rows)

__all__ = ["PrefillEngine", "CYCLE_BITS"]

CYCLE_BITS = 32


def _field(word, name):
    lsb, width = COMMAND_FIELDS[name]
    return word[lsb:lsb + width]


def _any(*terms):
    result = 0
    for term in terms:
        result = result | term
    return result


class PrefillEngine(wiring.Component):
    """The prefill engine: command memory, sequencer, SBUF, PSUM, weight loader, activation
    streamer, systolic array, DMA + DRAM model and vector engine.

    **Run.** Commands are written through ``load`` while ``run`` is low (``load.en`` is ignored
    while ``run`` is high). Cycle 0 is the first cycle with ``run`` high; ``run`` must then stay
    high (the sequencer and ``cycles`` pause while it is low). Command i is looked at from the
    cycle after command i - 1 issued (command 0 from cycle 0) and issues in the first cycle c
    whose conditions hold (the draft's table; at most one command per cycle). ``issue_valid``
    is high in c with ``issue_index`` = i. ``cycles`` counts the cycles with ``run`` high up to
    the stop: it is c at the start of cycle c, and stays c + 1 once the engine stopped in c.

    **Stop.** A HALT issued in cycle c sets ``done`` from c + 1 (the run lasted ``cycles`` =
    c + 1 cycles). A command that cannot run sets ``error`` from the cycle after the one in
    which it would have issued (its issue conditions held), with ``error_cause`` (an
    :class:`EngineError`) and ``error_index`` (its index; ``commands`` for a run past the end of
    the command memory). Nothing issues after a stop; work already in flight completes. The
    causes, and the order of the checks, are :class:`mesh.prefill.EngineError`.

    **Issue conditions and effects** (per command, c = the issue cycle):

    * DMA: ``dma.cmd.ready``, and for STORE kinds also not array_busy and not vector_busy; the
      DMA takes the transfer in c. The sequencer checks the transfer itself (the DMA's checks,
      on the full 16-bit fields) and stops with DMA_KIND/DMA_ROWS/DMA_DRAM instead of issuing.
    * WAIT tag: ``done_tags[tag]`` in c.
    * WEIGHTS buffer, a, k: not loader_busy, not vector_busy, and the buffer is free (the last
      MATMUL on it, issued in c0 with m rows, presented its last row in t = c0 + m, and
      c >= t + 2n - 3). SBUF row a + i is read in c + i, weight row i is written in c + 1 + i
      (zeros for i >= k), the last write in c + n.
    * MATMUL buffer, a, b, m, acc: not streamer_busy, not vector_busy, and the last WEIGHTS on the
      buffer wrote its last row in a cycle <= c. SBUF row a + i is read in c + i, presented in
      c + 1 + i, its result is on the array's output in c + 1 + i + 2n and written to PSUM row
      b + i at the end of that cycle (plus the PSUM row as it is at the start of the cycle when
      ``acc``).
    * VECTOR: the vector engine's ``ready``, not array_busy, not streamer_busy, not loader_busy;
      the engine takes the command in c (op = sub, src_a = a, src_b = b, dst = c, rows = count,
      multiplier = addr, shift = stride, acc = acc). A shift above 63 stops the engine with
      VECTOR_SHIFT, a row past the SBUF/PSUM on a port the op uses (PSUM b for LANEMAX and
      LANESUM only with acc) with VECTOR_ROWS.
    * HALT: none of dma, array, streamer, loader, vector busy.

    The busy terms are down-counters (registers), so no issue condition depends on the command
    being issued in the same cycle.

    **Memories.** All synchronous read ports are non-transparent (a read sees the writes of
    earlier cycles). SBUF: read by the DMA, the loader, the streamer and the vector engine (two
    ports); written by the DMA and the vector engine (two write ports; when both write the same
    row in the same cycle the vector engine's write is dropped, so the DMA's write wins). PSUM:
    one combinational read port for accumulation, synchronous reads for the DMA and the vector
    engine, one write port shared by the array results and the vector engine (never in the same
    cycle, by the issue rules; the array's write would win).

    Parameters
    ----------
    config : :class:`PrefillConfig`
    dram : bytes-like or None
        The DRAM's initial contents from byte 0 (the rest zero).
    sbuf, psum : sequence of rows or None
        Initial contents (rows of n ints; SBUF int8, PSUM int32; missing rows zero).
    external_dram : bool
        False (default): the engine holds its :class:`~hdl.dma.DramModel`. True: it has none;
        the DMA's DRAM channel is exposed as the members ``dram_req`` and ``dram_resp`` (below)
        for a DRAM model outside the engine (e.g. a cocotb coroutine), which must then follow
        the channel rule of :mod:`hdl.dma` itself (``dram_req.ready`` bounds the outstanding
        requests; the DMA counts at most ``dma_queue`` of them). ``dram`` must then be None.

    Members
    -------
    run : :py:`In(1)`
    load : :py:`In(Signature({"en": Out(1), "addr": Out(range(commands)), "data": Out(128)}))`
        Command memory write port (word ``addr`` becomes ``data`` at the end of the cycle).
    done, error : :py:`Out(1)`
    error_cause : :py:`Out(4)`
        A :class:`mesh.prefill.EngineError`.
    error_index : :py:`Out(range(commands + 1))`
    cycles : :py:`Out(32)`
    issue_valid : :py:`Out(1)`
        A command issues in this cycle.
    issue_index : :py:`Out(range(commands + 1))`
        The index of the command looked at (the program counter).
    dram_error : :py:`Out(1)`
        The DRAM model's sticky out-of-range flag (never set when the checks are right). With
        ``external_dram``: sticky, set at the end of a cycle with ``dram_resp.valid`` and
        ``dram_resp.error`` both high.
    dram_req : :py:`Out(DramRequest(config, dma.meta_bits))`
        Only with ``external_dram``: the DMA's row requests (``valid``, ``write``, ``addr``,
        ``count``, ``data``, ``meta`` out; ``ready`` in; issued when ``valid`` and ``ready``).
    dram_resp : :py:`In(DramResponse(config, dma.meta_bits))`
        Only with ``external_dram``: completions into the DMA (``valid`` in the completion
        cycle, ``write`` and ``meta`` as issued, ``error``, a read's ``data``).

    Attributes
    ----------
    config : :class:`PrefillConfig`
    command_memory, sbuf, psum : :class:`Memory`
        Read or write them in a simulation test bench with ``ctx.get(memory.data[i])``.
    array : :class:`SystolicArray`
    dma : :class:`DmaEngine`
    dram_model : :class:`DramModel` or None
        Its ``banks`` hold the DRAM bytes (see :meth:`dram_location`); None with
        ``external_dram``.
    external_dram : bool
    vector : :class:`VectorEngine`
    """

    def __init__(self, config, *, dram=None, sbuf=None, psum=None, external_dram=False):
        if not isinstance(config, PrefillConfig):
            raise TypeError(f"config must be a PrefillConfig, not {config!r}")
        if external_dram and dram is not None:
            raise ValueError("dram contents cannot be given with external_dram=True (the "
                             "external DRAM model holds them)")
        self.external_dram = bool(external_dram)
        self._config = config
        n = config.n
        self.command_memory = Memory(shape=unsigned(COMMAND_BITS), depth=config.commands,
                                     init=[])
        self.sbuf = Memory(shape=unsigned(8 * n), depth=config.sbuf_rows,
                           init=self._rows_init(sbuf, 8, config.sbuf_rows, "sbuf"))
        self.psum = Memory(shape=unsigned(32 * n), depth=config.psum_rows,
                           init=self._rows_init(psum, 32, config.psum_rows, "psum"))
        self.array = SystolicArray(n)
        self.dma = DmaEngine(config)
        self.dram_model = (None if self.external_dram
                           else DramModel(config, dram, meta_bits=self.dma.meta_bits))
        self.vector = VectorEngine(n)
        index = range(config.commands + 1)
        channel = {}
        if self.external_dram:
            channel = {"dram_req": Out(DramRequest(config, self.dma.meta_bits)),
                       "dram_resp": In(DramResponse(config, self.dma.meta_bits))}
        super().__init__({
            "run": In(1),
            "load": In(wiring.Signature({
                "en": Out(1), "addr": Out(range(config.commands)),
                "data": Out(COMMAND_BITS)})),
            "done": Out(1),
            "error": Out(1),
            "error_cause": Out(4),
            "error_index": Out(index),
            "cycles": Out(CYCLE_BITS),
            "issue_valid": Out(1),
            "issue_index": Out(index),
            "dram_error": Out(1),
            **channel,
        })

    def _rows_init(self, rows, bits, depth, name):
        if rows is None:
            return []
        rows = list(rows)
        if len(rows) > depth:
            raise ValueError(f"{name} must hold at most {depth} rows, not {len(rows)}")
        mask = (1 << bits) - 1
        result = []
        for row in rows:
            row = [int(v) for v in row]
            if len(row) != self._config.n:
                raise ValueError(f"{name} rows must hold {self._config.n} values, not {len(row)}")
            result.append(sum((v & mask) << (bits * j) for j, v in enumerate(row)))
        return result

    @property
    def config(self):
        return self._config

    def dram_location(self, byte):
        """(bank, index, bit offset) of DRAM byte ``byte`` in :attr:`dram_model`'s banks."""
        if self.dram_model is None:
            raise ValueError("an engine with external_dram=True has no DRAM model")
        W = self.dram_model.word_bytes
        word = byte // W
        return word % 2, word // 2, 8 * (byte % W)

    def elaborate(self, platform):
        m = Module()
        config = self._config
        n = config.n
        m.submodules.command_memory = self.command_memory
        m.submodules.sbuf, m.submodules.psum = self.sbuf, self.psum
        m.submodules.array = array = self.array
        m.submodules.dma = dma = self.dma
        m.submodules.vector = vector = self.vector
        if self.external_dram:
            wiring.connect(m, dma.req, wiring.flipped(self.dram_req))
            wiring.connect(m, wiring.flipped(self.dram_resp), dma.resp)
            with m.If(self.dram_resp.valid & self.dram_resp.error):
                m.d.sync += self.dram_error.eq(1)
        else:
            m.submodules.dram = dram = self.dram_model
            wiring.connect(m, dma.req, dram.req)
            wiring.connect(m, dram.resp, dma.resp)
            m.d.comb += self.dram_error.eq(dram.error)

        sbuf_bits = max((config.sbuf_rows - 1).bit_length(), 1)
        psum_bits = max((config.psum_rows - 1).bit_length(), 1)

        # The command memory ----------------------------------------------------------------
        pc = Signal(range(config.commands + 1))
        cmd_read = self.command_memory.read_port(domain="comb")
        cmd_write = self.command_memory.write_port()
        m.d.comb += [
            cmd_read.addr.eq(pc),
            cmd_write.en.eq(self.load.en & ~self.run),
            cmd_write.addr.eq(self.load.addr),
            cmd_write.data.eq(self.load.data),
        ]
        word = cmd_read.data
        op, sub, tag = _field(word, "op"), _field(word, "sub"), _field(word, "tag")
        buffer, acc = _field(word, "buffer"), _field(word, "acc")
        transpose = _field(word, "transpose")
        a, b, c = _field(word, "a"), _field(word, "b"), _field(word, "c")
        count, addr, stride = _field(word, "count"), _field(word, "addr"), _field(word, "stride")

        # Busy state (down-counters, at the start of each cycle) -------------------------------
        # loader: weight writes left (busy: a write in this cycle or later).
        ld_left = Signal(range(n + 1))
        ld_row = Signal(range(n + 1))
        ld_k = Signal(range(n + 1))
        ld_buffer = Signal()
        ld_transpose = Signal()
        ld_addr = Signal(sbuf_bits)
        # streamer: SBUF reads left after the issue cycle.
        st_left = Signal(16)
        st_addr = Signal(sbuf_bits)
        st_dest = Signal(psum_bits)
        st_buffer, st_acc = Signal(), Signal()
        # array: cycles until the last PSUM write has happened (busy while nonzero).
        arr_left = Signal(range((1 << 16) + 2 * n + 1))
        # per buffer: cycles until a WEIGHTS may rewrite it.
        hold = [Signal(range((1 << 16) + 2 * n), name=f"hold_{k}") for k in range(2)]

        loader_busy = ld_left != 0
        streamer_busy = st_left != 0
        array_busy = arr_left != 0
        vector_busy = vector.busy | ~vector.cmd.ready
        dma_busy = dma.busy
        weights_pending = (ld_left > 1) & (ld_buffer == buffer)
        buffer_held = Mux(buffer, hold[1] != 0, hold[0] != 0)

        # The checks -------------------------------------------------------------------------
        cause = Signal(4)
        ready = Signal()
        past_end = Signal()
        m.d.comb += past_end.eq(pc == config.commands)

        psum_kind = sub == DmaKind.STORE_PSUM
        dma_end = Signal(64)
        m.d.comb += dma_end.eq(addr + (count - 1)[:16] * stride + Mux(psum_kind, 4 * n, n))

        vrows = Signal(17)
        m.d.comb += vrows.eq(Mux(sub == VectorOp.LOAD_TABLE.value, table_rows(n),
                                 Mux(count == 0, 1, count)))
        def uses(ops):
            return _any(*(sub == o.value for o in ops))

        def past(start, limit):
            return (start + vrows) > limit

        row_ops = [o for o in PSUM_WRITE_OPS if o not in REDUCTION_OPS]
        vector_bad_rows = _any(
            uses(SBUF_READ_A_OPS) & past(a, config.sbuf_rows),
            uses(SBUF_READ_B_OPS) & past(b, config.sbuf_rows),
            uses(PSUM_READ_A_OPS) & past(a, config.psum_rows),
            (uses(PSUM_READ_B_OPS) | (uses(ACC_OPS) & acc)) & past(b, config.psum_rows),
            uses(SBUF_WRITE_OPS) & past(c, config.sbuf_rows),
            uses(row_ops) & past(c, config.psum_rows),
            uses(REDUCTION_OPS) & (c + 1 > config.psum_rows),      # a reduction writes one row
        )

        with m.If(past_end):
            m.d.comb += [ready.eq(1), cause.eq(EngineError.INDEX)]
        with m.Else():
            with m.Switch(op):
                with m.Case(Op.DMA):
                    store = (sub == DmaKind.STORE_SBUF) | psum_kind
                    m.d.comb += ready.eq(dma.cmd.ready & ~(store & (array_busy | vector_busy)))
                    with m.If(sub >= 3):
                        m.d.comb += cause.eq(EngineError.DMA_KIND)
                    with m.Elif((count == 0) | (a + count > Mux(psum_kind, config.psum_rows,
                                                                config.sbuf_rows))):
                        m.d.comb += cause.eq(EngineError.DMA_ROWS)
                    with m.Elif(dma_end > config.dram_bytes):
                        m.d.comb += cause.eq(EngineError.DMA_DRAM)
                with m.Case(Op.WAIT):
                    m.d.comb += ready.eq(dma.done_tags.bit_select(tag, 1))
                with m.Case(Op.WEIGHTS):
                    m.d.comb += ready.eq(~loader_busy & ~vector_busy & ~buffer_held)
                    with m.If((count == 0) | (count > n)):
                        m.d.comb += cause.eq(EngineError.WEIGHTS_COUNT)
                    with m.Elif(a + count > config.sbuf_rows):
                        m.d.comb += cause.eq(EngineError.WEIGHTS_ROWS)
                with m.Case(Op.MATMUL):
                    m.d.comb += ready.eq(~streamer_busy & ~vector_busy & ~weights_pending)
                    with m.If(count == 0):
                        m.d.comb += cause.eq(EngineError.MATMUL_COUNT)
                    with m.Elif(a + count > config.sbuf_rows):
                        m.d.comb += cause.eq(EngineError.MATMUL_SBUF)
                    with m.Elif(b + count > config.psum_rows):
                        m.d.comb += cause.eq(EngineError.MATMUL_PSUM)
                with m.Case(Op.VECTOR):
                    m.d.comb += ready.eq(vector.cmd.ready & ~array_busy & ~streamer_busy
                                         & ~loader_busy)
                    with m.If(stride > 63):
                        m.d.comb += cause.eq(EngineError.VECTOR_SHIFT)
                    with m.Elif(vector_bad_rows):
                        m.d.comb += cause.eq(EngineError.VECTOR_ROWS)
                with m.Case(Op.HALT):
                    m.d.comb += ready.eq(~dma_busy & ~array_busy & ~streamer_busy
                                         & ~loader_busy & ~vector_busy)
                with m.Default():
                    m.d.comb += [ready.eq(1), cause.eq(EngineError.OP)]

        # Issue ------------------------------------------------------------------------------
        active, fire, issue, fail = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            active.eq(self.run & ~self.done & ~self.error),
            fire.eq(active & ready),
            issue.eq(fire & (cause == EngineError.NONE)),
            fail.eq(fire & (cause != EngineError.NONE)),
            self.issue_valid.eq(issue),
            self.issue_index.eq(pc),
        ]
        is_op = {o: issue & ~past_end & (op == o) for o in Op}
        with m.If(active):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(issue):
            m.d.sync += pc.eq(pc + 1)
        with m.If(is_op[Op.HALT]):
            m.d.sync += self.done.eq(1)
        with m.If(fail):
            m.d.sync += [self.error.eq(1), self.error_cause.eq(cause), self.error_index.eq(pc)]

        # SBUF ports ---------------------------------------------------------------------------
        sbuf_dma = self.sbuf.read_port(transparent_for=())
        sbuf_ld = self.sbuf.read_port(transparent_for=())
        sbuf_st = self.sbuf.read_port(transparent_for=())
        sbuf_va = self.sbuf.read_port(transparent_for=())
        sbuf_vb = self.sbuf.read_port(transparent_for=())
        sbuf_w_dma = self.sbuf.write_port()
        sbuf_w_vec = self.sbuf.write_port()
        psum_acc = self.psum.read_port(domain="comb")
        psum_dma = self.psum.read_port(transparent_for=())
        psum_va = self.psum.read_port(transparent_for=())
        psum_vb = self.psum.read_port(transparent_for=())
        psum_w = self.psum.write_port()

        # The DMA --------------------------------------------------------------------------------
        m.d.comb += [
            dma.cmd.valid.eq(is_op[Op.DMA]),
            dma.cmd.kind.eq(sub[:2]),
            dma.cmd.tag.eq(tag),
            dma.cmd.dram.eq(addr),
            dma.cmd.stride.eq(stride),
            dma.cmd.row.eq(a),
            dma.cmd.rows.eq(count),
            sbuf_dma.en.eq(dma.sbuf_read.en), sbuf_dma.addr.eq(dma.sbuf_read.addr),
            dma.sbuf_read.data.eq(sbuf_dma.data),
            psum_dma.en.eq(dma.psum_read.en), psum_dma.addr.eq(dma.psum_read.addr),
            dma.psum_read.data.eq(psum_dma.data),
            sbuf_w_dma.en.eq(dma.sbuf_write.en), sbuf_w_dma.addr.eq(dma.sbuf_write.addr),
            sbuf_w_dma.data.eq(dma.sbuf_write.data),
        ]

        # The vector engine ------------------------------------------------------------------------
        vcmd = vector.cmd
        m.d.comb += [
            vcmd.valid.eq(is_op[Op.VECTOR]),
            vcmd.op.as_value().eq(sub),
            vcmd.src_a.eq(a), vcmd.src_b.eq(b), vcmd.dst.eq(c), vcmd.rows.eq(count),
            vcmd.multiplier.eq(addr.as_signed()),
            vcmd.shift.eq(stride[:6]),            # checked: stride <= 63
            vcmd.acc.eq(acc),
        ]
        for port, bus in ((sbuf_va, vector.sbuf_read_a), (sbuf_vb, vector.sbuf_read_b)):
            m.d.comb += [port.en.eq(bus.en), port.addr.eq(bus.addr[:sbuf_bits]),
                         bus.data.as_value().eq(port.data)]
        for port, bus in ((psum_va, vector.psum_read_a), (psum_vb, vector.psum_read_b)):
            m.d.comb += [port.en.eq(bus.en), port.addr.eq(bus.addr[:psum_bits]),
                         bus.data.as_value().eq(port.data)]
        vw = vector.sbuf_write
        same_row = dma.sbuf_write.en & (dma.sbuf_write.addr == vw.addr[:sbuf_bits])
        m.d.comb += [
            sbuf_w_vec.en.eq(vw.en & ~same_row),     # the DMA's write wins
            sbuf_w_vec.addr.eq(vw.addr[:sbuf_bits]),
            sbuf_w_vec.data.eq(vw.data.as_value()),
        ]

        # The weight loader --------------------------------------------------------------------
        ld_read_now = Signal()
        m.d.comb += [
            ld_read_now.eq(is_op[Op.WEIGHTS] | (loader_busy & (ld_row + 1 < ld_k))),
            sbuf_ld.en.eq(ld_read_now),
            sbuf_ld.addr.eq(Mux(is_op[Op.WEIGHTS], a, ld_addr)),
            array.weights.valid.eq(loader_busy),
            array.weights.buffer.eq(ld_buffer),
            array.weights.transpose.eq(ld_transpose),
            array.weights.row.eq(ld_row),
            array.weights.data.as_value().eq(Mux(ld_row < ld_k, sbuf_ld.data, 0)),
        ]
        with m.If(is_op[Op.WEIGHTS]):
            m.d.sync += [ld_left.eq(n), ld_row.eq(0), ld_k.eq(count), ld_buffer.eq(buffer),
                         ld_transpose.eq(transpose),
                         ld_addr.eq(a + 1)]
        with m.Elif(loader_busy):
            m.d.sync += [ld_left.eq(ld_left - 1), ld_row.eq(ld_row + 1), ld_addr.eq(ld_addr + 1)]

        # The activation streamer ------------------------------------------------------------------
        mm = is_op[Op.MATMUL]
        st_read_now = Signal()
        row_buffer, row_dest, row_acc = Signal(), Signal(psum_bits), Signal()
        m.d.comb += [
            st_read_now.eq(mm | streamer_busy),
            sbuf_st.en.eq(st_read_now),
            sbuf_st.addr.eq(Mux(mm, a, st_addr)),
            row_buffer.eq(Mux(mm, buffer, st_buffer)),
            row_dest.eq(Mux(mm, b, st_dest)),
            row_acc.eq(Mux(mm, acc, st_acc)),
        ]
        with m.If(mm):
            m.d.sync += [st_left.eq(count - 1), st_addr.eq(a + 1), st_dest.eq(b + 1),
                         st_buffer.eq(buffer), st_acc.eq(acc)]
        with m.Elif(streamer_busy):
            m.d.sync += [st_left.eq(st_left - 1), st_addr.eq(st_addr + 1),
                         st_dest.eq(st_dest + 1)]

        # Presentation (the cycle after the read) and the delay line to the PSUM write.
        tracker = data.StructLayout({"valid": 1, "buffer": 1, "dest": psum_bits, "acc": 1})
        line = [Signal(tracker, name=f"line_{k}") for k in range(2 * n + 1)]
        m.d.sync += [
            line[0].valid.eq(st_read_now), line[0].buffer.eq(row_buffer),
            line[0].dest.eq(row_dest), line[0].acc.eq(row_acc),
        ]
        m.d.sync += [line[k + 1].eq(line[k]) for k in range(2 * n)]
        presented, result = line[0], line[2 * n]
        m.d.comb += [
            array.act.valid.eq(presented.valid),
            array.act.buffer.eq(presented.buffer),
            array.act.data.as_value().eq(sbuf_st.data),
        ]

        # Counters.
        with m.If(mm):
            m.d.sync += arr_left.eq(count + 2 * n)
        with m.Elif(array_busy):
            m.d.sync += arr_left.eq(arr_left - 1)
        for k in range(2):
            with m.If(mm & (buffer == k)):
                m.d.sync += hold[k].eq(count + 2 * n - 4)
            with m.Elif(hold[k] != 0):
                m.d.sync += hold[k].eq(hold[k] - 1)

        # PSUM writes: array results (with accumulation), else the vector engine.
        old = psum_acc.data
        summed = Cat((array.out.data[j] + Mux(result.acc, old[32 * j:32 * (j + 1)].as_signed(), 0)
                      )[:32] for j in range(n))
        pw = vector.psum_write
        m.d.comb += psum_acc.addr.eq(result.dest)
        with m.If(result.valid):
            m.d.comb += [psum_w.en.eq(1), psum_w.addr.eq(result.dest), psum_w.data.eq(summed)]
        with m.Else():
            m.d.comb += [psum_w.en.eq(pw.en), psum_w.addr.eq(pw.addr[:psum_bits]),
                         psum_w.data.eq(pw.data.as_value())]
        return m

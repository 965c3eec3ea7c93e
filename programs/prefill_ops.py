"""Softmax, RMS norm and attention on the prefill engine: command streams that reproduce the
integer references of :mod:`programs.integer_ops` bit for bit, with the vector engine's
operations (docs/ARCHITECTURE.md section 11).

Layouts follow :mod:`programs.prefill`: a matrix of M rows (tokens) and C columns lives in
ceil(C / n) column tiles of M consecutive rows each, tile j holding columns j n .. j n + n - 1.

The vector engine does not check read-after-write hazards between back-to-back commands (a
command sees row i of the one before only from 3 cycles after that row was read); the
:class:`VectorStream` here inserts a filler command where a dependent one would come too early.

The steps are emitters that append to a given :class:`VectorStream` at given row addresses
(:func:`emit_mask_bias`, :func:`emit_softmax`, :func:`emit_attention_head`,
:func:`emit_rmsnorm`; every ``*_tiles`` argument is a list of first rows, one per column tile of
``rows`` rows), so that a larger program (:mod:`programs.prefill_compiler`) lays out its own
memories; :func:`attention_head` and :func:`rmsnorm` are self-contained programs built on them.
"""

from dataclasses import dataclass

import numpy as np

from mesh.prefill import Command, Op, PrefillConfig, VectorOp

from .integer_ops import (PROB_SHIFT, RECIP_SHIFT, RSQRT_SHIFT, as_int8, attention_reference,
                          mask_bias, rmsnorm_reference)

__all__ = ["VectorStream", "AttentionProgram", "attention_head", "RmsNormProgram", "rmsnorm",
           "emit_mask_bias", "emit_softmax", "emit_attention_head", "emit_rmsnorm"]

_HAZARD = 3               # a row written by command i is read safely 3 cycles after its read


def _ceil(a, b):
    return -(-a // b)


# Hazard-safe vector commands --------------------------------------------------------------------

class VectorStream:
    """Appends VECTOR commands to ``commands``, inserting a filler (ADD32 on ``scratch`` PSUM
    rows, at most 2 rows) in front of a command that would read a row too soon after an earlier
    back-to-back command wrote it. Any non-vector command in between resets the tracking: the
    sequencer does not issue WEIGHTS, MATMUL, STORE or HALT while the vector engine is busy.
    A LOAD or WAIT does not wait for the vector engine: :meth:`passive` appends one and keeps the
    tracking (such a command can only delay the next vector command, which is safe).

    ``buffer``: the weight buffer of the next WEIGHTS/MATMUL pair (:meth:`next_buffer`
    alternates it, so that consecutive weight tiles double-buffer)."""

    def __init__(self, commands, scratch):
        self.commands, self.scratch = commands, scratch
        self._recent = []            # (start, {(memory, row): write offset}) of recent commands
        self._cycle = 0              # the next vector command's start, in vector-engine cycles
        self.buffer = 0

    def other(self, command):
        self.commands.append(command)
        self._recent, self._cycle = [], 0

    def passive(self, command):
        """Append a command that does not wait for the vector engine (DMA LOAD, WAIT)."""
        self.commands.append(command)

    def next_buffer(self):
        """The weight buffer to use next (0, 1, 0, ...)."""
        buffer, self.buffer = self.buffer, 1 - self.buffer
        return buffer

    def _needed(self, reads):
        gap = 0
        for start, written in self._recent:
            for offset, key in reads:
                if key in written:
                    gap = max(gap, start + written[key] + _HAZARD - (self._cycle + offset))
        return gap

    def op(self, vop, *, rows, a=0, b=0, d=0, multiplier=0, shift=0, acc=0,
           reads=(), writes=None):
        """One VECTOR command of ``rows`` rows. ``reads``: (memory, first row) of each operand it
        reads row by row; ``writes``: (memory, first row), or (memory, row, True) for a
        reduction writing one row."""
        reads = [(i, (mem, first + i)) for mem, first in reads for i in range(rows)]
        gap = self._needed(reads)
        if gap > 0:
            self._emit(VectorOp.ADD32, rows=gap, a=self.scratch, b=self.scratch, d=self.scratch,
                       written={})
        written = {}
        if writes is not None:
            mem, first = writes[:2]
            if len(writes) > 2:
                written[(mem, first)] = rows - 1
            else:
                written = {(mem, first + i): i for i in range(rows)}
        self._emit(vop, rows=rows, a=a, b=b, d=d, multiplier=multiplier, shift=shift, acc=acc,
                   written=written)

    def _emit(self, vop, *, rows, written, d=0, multiplier=0, shift=0, **fields):
        self.commands.append(Command(Op.VECTOR, sub=int(vop), count=rows, c=d, addr=multiplier,
                                     stride=shift, **fields))
        self._recent = (self._recent + [(self._cycle, written)])[-2:]
        self._cycle += rows


def emit_softmax(stream, *, rows, scores, mx, total, r, ones, out, multiplier, shift):
    """Softmax (:func:`~programs.integer_ops.softmax_reference`, the mask already added) over
    the column tiles of ``rows`` rows at PSUM rows ``scores`` (a list of first rows): int8
    probabilities to the SBUF tiles ``out`` (same count). Uses the score rows as scratch, PSUM
    rows ``mx``, ``total``, ``r`` (``rows`` each) and SBUF rows ``ones`` (``rows`` rows of ones);
    the exp table must be loaded (LOAD_TABLE)."""
    P = "psum"
    for j, rows_j in enumerate(scores):
        stream.op(VectorOp.LANEMAX, rows=rows, a=rows_j, b=mx, d=mx, acc=int(j > 0),
                  reads=[(P, rows_j)] + ([(P, mx)] if j else []), writes=(P, mx))
    for j, (rows_j, out_j) in enumerate(zip(scores, out)):
        stream.op(VectorOp.SUB32, rows=rows, a=rows_j, b=mx, d=rows_j,
                  reads=[(P, rows_j), (P, mx)], writes=(P, rows_j))
        stream.op(VectorOp.REQUANT, rows=rows, a=rows_j, d=out_j, multiplier=multiplier,
                  shift=shift, reads=[(P, rows_j)], writes=("sbuf", out_j))
        stream.op(VectorOp.LUT, rows=rows, a=out_j, d=out_j,
                  reads=[("sbuf", out_j)], writes=("sbuf", out_j))
        stream.op(VectorOp.MULW, rows=rows, a=out_j, b=ones, d=rows_j,
                  reads=[("sbuf", out_j), ("sbuf", ones)], writes=(P, rows_j))
        stream.op(VectorOp.LANESUM, rows=rows, a=rows_j, b=total, d=total, acc=int(j > 0),
                  reads=[(P, rows_j)] + ([(P, total)] if j else []), writes=(P, total))
    stream.op(VectorOp.RECIP, rows=rows, a=total, d=r, shift=RECIP_SHIFT, reads=[(P, total)],
              writes=(P, r))
    for rows_j, out_j in zip(scores, out):
        stream.op(VectorOp.SCALE, rows=rows, a=rows_j, b=r, d=out_j, shift=PROB_SHIFT,
                  reads=[(P, rows_j), (P, r)], writes=("sbuf", out_j))


def emit_mask_bias(stream, *, rows, mask_tiles, big, bias_tiles, doublings):
    """The mask bias in PSUM: per tile, MULW of the SBUF mask tile (-128 where masked, else 0)
    by ``big`` (``rows`` SBUF rows of 127), then ``doublings`` ADD32 of the tile to itself, so
    masked entries hold :func:`~programs.integer_ops.mask_bias` and the others 0."""
    for mask_j, bias_j in zip(mask_tiles, bias_tiles):
        stream.op(VectorOp.MULW, rows=rows, a=mask_j, b=big, d=bias_j,
                  reads=[("sbuf", mask_j), ("sbuf", big)], writes=("psum", bias_j))
        for _ in range(doublings):
            stream.op(VectorOp.ADD32, rows=rows, a=bias_j, b=bias_j, d=bias_j,
                      reads=[("psum", bias_j)], writes=("psum", bias_j))


def emit_attention_head(stream, *, n, rows, q_tiles, k_tiles, v_tiles, bias_tiles, s_tiles,
                        p_tiles, mx, total, r, ones, out_tiles, o_tiles, score_multiplier,
                        score_shift, out_multiplier, out_shift):
    """One attention head over ``rows`` tokens (queries and keys alike): Q, K, V in the SBUF
    tiles ``q_tiles``, ``k_tiles``, ``v_tiles`` (one per n columns of the head dimension), the
    mask bias in the PSUM tiles ``bias_tiles`` (one per n keys, :func:`emit_mask_bias`).

    S = Q K^T into the PSUM tiles ``s_tiles`` (per key tile and head-dim tile a transposed
    WEIGHTS of K's rows and a MATMUL of Q's rows, accumulating over the head dimension); S +
    bias; :func:`emit_softmax` into the SBUF tiles ``p_tiles`` (``mx``, ``total``, ``r``,
    ``ones`` as there); O = P V into the PSUM tiles ``out_tiles`` (per head-dim tile and key
    tile, WEIGHTS of V's rows and a MATMUL of P's rows, accumulating over keys); O requantized
    into the SBUF tiles ``o_tiles`` (which may be ``q_tiles``: Q is dead by then). The exp
    table must be loaded."""
    P_, S_ = "psum", "sbuf"
    for j, s_j in enumerate(s_tiles):                     # S = Q K^T
        keys = min(n, rows - j * n)
        for kt, (q_t, k_t) in enumerate(zip(q_tiles, k_tiles)):
            buffer = stream.next_buffer()
            stream.other(Command(Op.WEIGHTS, buffer=buffer, transpose=1, a=k_t + j * n,
                                 count=keys))
            stream.other(Command(Op.MATMUL, buffer=buffer, a=q_t, b=s_j, count=rows,
                                 acc=int(kt > 0)))
    for s_j, bias_j in zip(s_tiles, bias_tiles):
        stream.op(VectorOp.ADD32, rows=rows, a=s_j, b=bias_j, d=s_j,
                  reads=[(P_, s_j), (P_, bias_j)], writes=(P_, s_j))
    emit_softmax(stream, rows=rows, scores=s_tiles, mx=mx, total=total, r=r, ones=ones,
                 out=p_tiles, multiplier=score_multiplier, shift=score_shift)
    for v_t, out_t in zip(v_tiles, out_tiles):            # O = P V
        for j, p_j in enumerate(p_tiles):
            buffer = stream.next_buffer()
            stream.other(Command(Op.WEIGHTS, buffer=buffer, a=v_t + j * n,
                                 count=min(n, rows - j * n)))
            stream.other(Command(Op.MATMUL, buffer=buffer, a=p_j, b=out_t, count=rows,
                                 acc=int(j > 0)))
    for out_t, o_t in zip(out_tiles, o_tiles):
        stream.op(VectorOp.REQUANT, rows=rows, a=out_t, d=o_t, multiplier=out_multiplier,
                  shift=out_shift, reads=[(P_, out_t)], writes=(S_, o_t))


def emit_rmsnorm(stream, *, rows, x_tiles, y_tiles, w_tiles, ss, r, ones, shift):
    """RMS norm (:func:`~programs.integer_ops.rmsnorm_reference`) of the int8 SBUF tiles
    ``x_tiles`` (``rows`` rows each) into the SBUF tiles ``y_tiles``: MULW x by x into the PSUM
    tiles ``w_tiles``, LANESUM over them into PSUM ``ss``, RSQRT into PSUM ``r``, MULW x by
    ``ones`` (int8 to int32) and SCALE by the per-token factor."""
    for x_j, w_j in zip(x_tiles, w_tiles):
        stream.op(VectorOp.MULW, rows=rows, a=x_j, b=x_j, d=w_j,
                  reads=[("sbuf", x_j)], writes=("psum", w_j))
    for j, w_j in enumerate(w_tiles):
        stream.op(VectorOp.LANESUM, rows=rows, a=w_j, b=ss, d=ss, acc=int(j > 0),
                  reads=[("psum", w_j)] + ([("psum", ss)] if j else []),
                  writes=("psum", ss))
    stream.op(VectorOp.RSQRT, rows=rows, a=ss, d=r, shift=RSQRT_SHIFT,
              reads=[("psum", ss)], writes=("psum", r))
    for x_j, w_j, y_j in zip(x_tiles, w_tiles, y_tiles):
        stream.op(VectorOp.MULW, rows=rows, a=x_j, b=ones, d=w_j,
                  reads=[("sbuf", x_j), ("sbuf", ones)], writes=("psum", w_j))
        stream.op(VectorOp.SCALE, rows=rows, a=w_j, b=r, d=y_j, shift=shift,
                  reads=[("psum", w_j), ("psum", r)], writes=("sbuf", y_j))


# Attention head ----------------------------------------------------------------------------------

@dataclass
class AttentionProgram:
    """One attention head as one command stream: ``sbuf`` (the initial SBUF), ``commands``,
    ``P`` and ``O`` (the integer reference's probabilities and output), and where the engine
    leaves them: P from SBUF row ``p_row`` and O from SBUF row ``o_row``, each in column tiles
    of M rows."""
    config: PrefillConfig
    M: int
    head_dim: int
    sbuf: np.ndarray
    commands: list
    P: np.ndarray
    O: np.ndarray
    p_row: int
    o_row: int

    def read(self, sbuf, row, columns):
        """The M x ``columns`` int8 matrix tiled from SBUF row ``row``."""
        n, M = self.config.n, self.M
        tiles = [np.asarray(sbuf[row + j * M: row + j * M + M], dtype=np.int8)
                 for j in range(_ceil(columns, n))]
        return np.concatenate(tiles, axis=1)[:, :columns]


def _tiled(matrix, n):
    """The rows of ``matrix`` (M x C) in column tiles of n: (ceil(C / n) x M) x n int8."""
    M, C = matrix.shape
    padded = np.zeros((M, _ceil(C, n) * n), dtype=np.int8)
    padded[:, :C] = matrix
    return np.concatenate([padded[:, j * n:(j + 1) * n] for j in range(_ceil(C, n))])


def attention_head(config, Q, K, V, *, score_multiplier, score_shift, table, out_multiplier,
                   out_shift, causal=True):
    """The prefill engine's command stream for one causal attention head (Q, K, V: M x d_h
    int8, as the array produced them, one token per row):

    1. the mask bias in PSUM (once): MULW of the SBUF mask (-128 where masked) by 127, doubled
       k times (:func:`mask_bias`);
    2. S = Q K^T: per key tile and head-dim tile, a transposed WEIGHTS of K's rows (the tile's
       columns are keys) and a MATMUL of Q's rows, accumulating over the head dimension;
    3. S + bias (ADD32), then the softmax of :func:`softmax_reference` into SBUF (P);
    4. O = P V: per head-dim tile and key tile, WEIGHTS of V's rows and a MATMUL of P's rows,
       accumulating over keys; O requantized into SBUF.
    """
    n = config.n
    Q, K, V = as_int8("Q", Q), as_int8("K", K), as_int8("V", V)
    M, dh = Q.shape
    if K.shape != (M, dh) or V.shape != (M, dh):
        raise ValueError(f"Q, K and V must have the same shape, not {Q.shape}, {K.shape}, "
                         f"{V.shape}")
    Lt, Dt = _ceil(M, n), _ceil(dh, n)
    bias, doublings = mask_bias(dh)
    mask = np.tril(np.ones((M, M), dtype=bool)) if causal else np.ones((M, M), dtype=bool)

    # SBUF: Q, K, V (Dt tiles of M rows), the mask (Lt tiles), ones and 127s (M rows each),
    # the table, P (Lt tiles), O (Dt tiles).
    q_row, k_row, v_row = 0, Dt * M, 2 * Dt * M
    mask_row = 3 * Dt * M
    ones_row = mask_row + Lt * M
    big_row = ones_row + M
    table_row = big_row + M
    p_row = table_row + _ceil(256, n)
    o_row = p_row + Lt * M
    sbuf_rows = o_row + Dt * M
    # PSUM: S and the bias (Lt tiles each), max, sum, reciprocal (M each), O (Dt tiles), scratch.
    s_row, bias_row = 0, Lt * M
    mx_row = 2 * Lt * M
    total_row, r_row = mx_row + M, mx_row + 2 * M
    out_row = mx_row + 3 * M
    scratch = out_row + Dt * M
    psum_rows = scratch + 2
    for name, needed, have in [("SBUF", sbuf_rows, config.sbuf_rows),
                               ("PSUM", psum_rows, config.psum_rows)]:
        if needed > have:
            raise ValueError(f"attention over {M} tokens with head dimension {dh} needs "
                             f"{needed} {name} rows; the engine has {have}")

    sbuf = np.zeros((config.sbuf_rows, n), dtype=np.int8)
    sbuf[q_row:k_row] = _tiled(Q, n)
    sbuf[k_row:v_row] = _tiled(K, n)
    sbuf[v_row:mask_row] = _tiled(V, n)
    masked = np.full((M, Lt * n), -128, dtype=np.int8)     # padded keys are masked too
    masked[:, :M][mask] = 0
    sbuf[mask_row:ones_row] = _tiled(masked, n)
    sbuf[ones_row:big_row] = 1
    sbuf[big_row:table_row] = 127
    sbuf[table_row:table_row + _ceil(256, n)] = np.resize(np.asarray(table, np.int8),
                                                          _ceil(256, n) * n).reshape(-1, n)

    commands = []
    stream = VectorStream(commands, scratch)
    stream.op(VectorOp.LOAD_TABLE, rows=1, a=table_row)
    tiles = lambda first, count: [first + j * M for j in range(count)]
    emit_mask_bias(stream, rows=M, mask_tiles=tiles(mask_row, Lt), big=big_row,
                   bias_tiles=tiles(bias_row, Lt), doublings=doublings)
    emit_attention_head(
        stream, n=n, rows=M, q_tiles=tiles(q_row, Dt), k_tiles=tiles(k_row, Dt),
        v_tiles=tiles(v_row, Dt), bias_tiles=tiles(bias_row, Lt), s_tiles=tiles(s_row, Lt),
        p_tiles=tiles(p_row, Lt), mx=mx_row, total=total_row, r=r_row, ones=ones_row,
        out_tiles=tiles(out_row, Dt), o_tiles=tiles(o_row, Dt),
        score_multiplier=score_multiplier, score_shift=score_shift,
        out_multiplier=out_multiplier, out_shift=out_shift)
    stream.other(Command(Op.HALT))
    if len(commands) > config.commands:
        raise ValueError(f"attention needs {len(commands)} commands; the command memory holds "
                         f"{config.commands}")
    P, O = attention_reference(Q, K, V, score_multiplier=score_multiplier,
                               score_shift=score_shift, table=table,
                               out_multiplier=out_multiplier, out_shift=out_shift,
                               causal=causal)
    return AttentionProgram(config=config, M=M, head_dim=dh, sbuf=sbuf, commands=commands,
                            P=P, O=O, p_row=p_row, o_row=o_row)


# RMS norm ----------------------------------------------------------------------------------------

@dataclass
class RmsNormProgram:
    """RMS norm of int8 x (M x d) in SBUF: the result in SBUF from row ``y_row`` (column tiles
    of M rows); ``expected`` is :func:`rmsnorm_reference`."""
    config: PrefillConfig
    M: int
    d: int
    sbuf: np.ndarray
    commands: list
    expected: np.ndarray
    y_row: int

    read = AttentionProgram.read


def rmsnorm(config, x, shift):
    """The command stream for :func:`rmsnorm_reference`: MULW x by x, LANESUM over the column
    tiles, RSQRT, MULW x by ones (int8 to int32), SCALE by the per-token factor."""
    n = config.n
    x = as_int8("x", x)
    M, d = x.shape
    Dt = _ceil(d, n)
    x_row, ones_row, y_row = 0, Dt * M, Dt * M + M
    w_row, ss_row, r_row = 0, Dt * M, Dt * M + M
    scratch = r_row + M
    for name, needed, have in [("SBUF", y_row + Dt * M, config.sbuf_rows),
                               ("PSUM", scratch + 2, config.psum_rows)]:
        if needed > have:
            raise ValueError(f"RMS norm of {M} x {d} needs {needed} {name} rows; the engine "
                             f"has {have}")
    sbuf = np.zeros((config.sbuf_rows, n), dtype=np.int8)
    sbuf[x_row:ones_row] = _tiled(x.astype(np.int8), n)
    sbuf[ones_row:y_row] = 1
    commands = []
    stream = VectorStream(commands, scratch)
    emit_rmsnorm(stream, rows=M, x_tiles=[x_row + j * M for j in range(Dt)],
                 y_tiles=[y_row + j * M for j in range(Dt)],
                 w_tiles=[w_row + j * M for j in range(Dt)], ss=ss_row, r=r_row,
                 ones=ones_row, shift=shift)
    stream.other(Command(Op.HALT))
    return RmsNormProgram(config=config, M=M, d=d, sbuf=sbuf, commands=commands,
                          expected=rmsnorm_reference(x, shift), y_row=y_row)

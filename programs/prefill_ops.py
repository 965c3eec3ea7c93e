"""Softmax, RMS norm and attention on the prefill engine: command streams that reproduce the
integer references of :mod:`programs.integer_ops` bit for bit, with the vector engine's
operations (docs/ARCHITECTURE.md section 11).

Layouts follow :mod:`programs.prefill`: a matrix of M rows (tokens) and C columns lives in
ceil(C / n) column tiles of M consecutive rows each, tile j holding columns j n .. j n + n - 1.

The vector engine does not check read-after-write hazards between back-to-back commands (a
command sees row i of the one before only from 3 cycles after that row was read); the
:class:`VectorStream` here inserts a filler command where a dependent one would come too early.
"""

from dataclasses import dataclass

import numpy as np

from mesh.prefill import Command, Op, PrefillConfig, VectorOp

from .integer_ops import (PROB_SHIFT, RECIP_SHIFT, RSQRT_SHIFT, as_int8, attention_reference,
                          mask_bias, rmsnorm_reference)

__all__ = ["VectorStream", "AttentionProgram", "attention_head", "RmsNormProgram", "rmsnorm"]

_HAZARD = 3               # a row written by command i is read safely 3 cycles after its read


def _ceil(a, b):
    return -(-a // b)


# Hazard-safe vector commands --------------------------------------------------------------------

class VectorStream:
    """Appends VECTOR commands to ``commands``, inserting a filler (ADD32 on ``scratch`` PSUM
    rows, at most 2 rows) in front of a command that would read a row too soon after an earlier
    back-to-back command wrote it. Any non-vector command in between resets the tracking: the
    sequencer does not issue WEIGHTS, MATMUL, STORE or HALT while the vector engine is busy."""

    def __init__(self, commands, scratch):
        self.commands, self.scratch = commands, scratch
        self._recent = []            # (start, {(memory, row): write offset}) of recent commands
        self._cycle = 0              # the next vector command's start, in vector-engine cycles

    def other(self, command):
        self.commands.append(command)
        self._recent, self._cycle = [], 0

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


def _softmax(stream, *, M, tiles, scores, mx, total, r, ones, out, multiplier, shift):
    """Softmax over the ``tiles`` column tiles of M rows at PSUM row ``scores`` (masked already):
    int8 probabilities to SBUF row ``out`` (same tiling). Uses the score rows as scratch, PSUM
    rows ``mx``, ``total``, ``r`` (M each) and SBUF row ``ones`` (M rows of ones)."""
    P = "psum"
    for j in range(tiles):
        rows_j = scores + j * M
        stream.op(VectorOp.LANEMAX, rows=M, a=rows_j, b=mx, d=mx, acc=int(j > 0),
                  reads=[(P, rows_j)] + ([(P, mx)] if j else []), writes=(P, mx))
    for j in range(tiles):
        rows_j = scores + j * M
        stream.op(VectorOp.SUB32, rows=M, a=rows_j, b=mx, d=rows_j,
                  reads=[(P, rows_j), (P, mx)], writes=(P, rows_j))
        stream.op(VectorOp.REQUANT, rows=M, a=rows_j, d=out + j * M, multiplier=multiplier,
                  shift=shift, reads=[(P, rows_j)], writes=("sbuf", out + j * M))
        stream.op(VectorOp.LUT, rows=M, a=out + j * M, d=out + j * M,
                  reads=[("sbuf", out + j * M)], writes=("sbuf", out + j * M))
        stream.op(VectorOp.MULW, rows=M, a=out + j * M, b=ones, d=rows_j,
                  reads=[("sbuf", out + j * M), ("sbuf", ones)], writes=(P, rows_j))
        stream.op(VectorOp.LANESUM, rows=M, a=rows_j, b=total, d=total, acc=int(j > 0),
                  reads=[(P, rows_j)] + ([(P, total)] if j else []), writes=(P, total))
    stream.op(VectorOp.RECIP, rows=M, a=total, d=r, shift=RECIP_SHIFT, reads=[(P, total)],
              writes=(P, r))
    for j in range(tiles):
        rows_j = scores + j * M
        stream.op(VectorOp.SCALE, rows=M, a=rows_j, b=r, d=out + j * M, shift=PROB_SHIFT,
                  reads=[(P, rows_j), (P, r)], writes=("sbuf", out + j * M))


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
    P_, S_ = "psum", "sbuf"
    stream.op(VectorOp.LOAD_TABLE, rows=1, a=table_row)
    for j in range(Lt):                                   # the bias
        rows_j = bias_row + j * M
        stream.op(VectorOp.MULW, rows=M, a=mask_row + j * M, b=big_row, d=rows_j,
                  reads=[(S_, mask_row + j * M), (S_, big_row)], writes=(P_, rows_j))
        for _ in range(doublings):
            stream.op(VectorOp.ADD32, rows=M, a=rows_j, b=rows_j, d=rows_j,
                      reads=[(P_, rows_j)], writes=(P_, rows_j))
    weights = 0
    for j in range(Lt):                                   # S = Q K^T
        keys = min(n, M - j * n)
        for kt in range(Dt):
            stream.other(Command(Op.WEIGHTS, buffer=weights % 2, transpose=1,
                                 a=k_row + kt * M + j * n, count=keys))
            stream.other(Command(Op.MATMUL, buffer=weights % 2, a=q_row + kt * M,
                                 b=s_row + j * M, count=M, acc=int(kt > 0)))
            weights += 1
    for j in range(Lt):
        rows_j = s_row + j * M
        stream.op(VectorOp.ADD32, rows=M, a=rows_j, b=bias_row + j * M, d=rows_j,
                  reads=[(P_, rows_j), (P_, bias_row + j * M)], writes=(P_, rows_j))
    _softmax(stream, M=M, tiles=Lt, scores=s_row, mx=mx_row, total=total_row, r=r_row,
             ones=ones_row, out=p_row, multiplier=score_multiplier, shift=score_shift)
    for nt in range(Dt):                                  # O = P V
        for j in range(Lt):
            stream.other(Command(Op.WEIGHTS, buffer=weights % 2, a=v_row + nt * M + j * n,
                                 count=min(n, M - j * n)))
            stream.other(Command(Op.MATMUL, buffer=weights % 2, a=p_row + j * M,
                                 b=out_row + nt * M, count=M, acc=int(j > 0)))
            weights += 1
    for nt in range(Dt):
        stream.op(VectorOp.REQUANT, rows=M, a=out_row + nt * M, d=o_row + nt * M,
                  multiplier=out_multiplier, shift=out_shift, reads=[(P_, out_row + nt * M)],
                  writes=(S_, o_row + nt * M))
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
    for j in range(Dt):
        stream.op(VectorOp.MULW, rows=M, a=x_row + j * M, b=x_row + j * M, d=w_row + j * M,
                  reads=[("sbuf", x_row + j * M)], writes=("psum", w_row + j * M))
    for j in range(Dt):
        stream.op(VectorOp.LANESUM, rows=M, a=w_row + j * M, b=ss_row, d=ss_row, acc=int(j > 0),
                  reads=[("psum", w_row + j * M)] + ([("psum", ss_row)] if j else []),
                  writes=("psum", ss_row))
    stream.op(VectorOp.RSQRT, rows=M, a=ss_row, d=r_row, shift=RSQRT_SHIFT,
              reads=[("psum", ss_row)], writes=("psum", r_row))
    for j in range(Dt):
        stream.op(VectorOp.MULW, rows=M, a=x_row + j * M, b=ones_row, d=w_row + j * M,
                  reads=[("sbuf", x_row + j * M), ("sbuf", ones_row)],
                  writes=("psum", w_row + j * M))
        stream.op(VectorOp.SCALE, rows=M, a=w_row + j * M, b=r_row, d=y_row + j * M,
                  shift=shift, reads=[("psum", w_row + j * M), ("psum", r_row)],
                  writes=("sbuf", y_row + j * M))
    stream.other(Command(Op.HALT))
    return RmsNormProgram(config=config, M=M, d=d, sbuf=sbuf, commands=commands,
                          expected=rmsnorm_reference(x, shift), y_row=y_row)

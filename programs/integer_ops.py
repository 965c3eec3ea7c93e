"""The integer operations of the tiny transformer, defined once.

These functions define the numbers: the prefill engine's command streams
(:mod:`programs.prefill_ops`) and the mesh's decode kernels reproduce them bit for bit, and the
model's integer reference is built from them. Each step is one the machines have: requantize
(``mesh.isa.requantize``), int8 tables, and the reciprocal and reciprocal square root of
:mod:`mesh.numerics`.

* ``softmax_reference(S, mask, multiplier, shift, table, head_dim)``, over the last axis of
  int32 scores S: masked scores get :func:`mask_bias` added (far below any score); m = the max;
  q = requantize(s - m, multiplier, shift), an int8 in [-128, 0]; e = table[q + 128], an int8 in
  [0, 127] (:func:`exp_table`: the entry for -128 is 0, "minus infinity", so masked and padded
  keys add nothing); sum = the sum of e; r = recip(sum, 30); p = requantize(e, r, 23) =
  round(e x 2^7 / sum) within the table's precision, an int8 in [0, 127].
* ``rmsnorm_reference(x, shift)``, over the last axis of int8 x: ss = sum of x^2;
  r = rsqrt(ss, 30); y = requantize(x, r, shift). With d features, y = x / rms(x) x
  2^(30 - shift) / sqrt(d): ``shift`` sets the output scale (the gain is folded into the next
  weights).
"""

from math import exp

import numpy as np

from mesh import isa
from mesh.numerics import recip, rsqrt

__all__ = ["exp_table", "activation_table", "softmax_reference", "rmsnorm_reference",
           "attention_reference", "mask_bias", "as_int8", "RECIP_SHIFT", "PROB_SHIFT",
           "RSQRT_SHIFT"]

RECIP_SHIFT = 30          # r = recip(sum, 30) ~ 2^30 / sum
PROB_SHIFT = 23           # p = e x r / 2^23 ~ e x 2^7 / sum
RSQRT_SHIFT = 30          # r = rsqrt(ss, 30) ~ 2^30 / sqrt(ss)


def as_int8(name, value):
    """``value`` as an int64 array, checked to hold int8 values (ValueError naming it)."""
    value = np.asarray(value)
    if value.dtype.kind not in "iu" or value.size and (value.min() < -128 or value.max() > 127):
        raise ValueError(f"{name} must hold int8 values")
    return value.astype(np.int64)


# Tables ----------------------------------------------------------------------------------------

def exp_table(step):
    """The LUT for softmax: entry q + 128 = round(127 exp(q x step)) for q = -127 .. 0, entry 0
    (q = -128, a saturated difference) is 0, entries for q > 0 (never used) are 127."""
    if not step > 0:
        raise ValueError(f"step must be positive, not {step!r}")
    table = [0] + [int(127 * exp(q * step) + 0.5) for q in range(-127, 1)] + [127] * 127
    return np.array(table, dtype=np.int8)


def activation_table(function, in_scale, out_scale):
    """A LUT applying ``function`` (float -> float, e.g. GELU or SiLU) to int8 values:
    entry q + 128 = sat8(round(function(q x in_scale) / out_scale))."""
    q = np.arange(-128, 128)
    y = np.array([function(v * in_scale) for v in q]) / out_scale
    return np.clip(np.floor(y + 0.5), -128, 127).astype(np.int8)


# References ------------------------------------------------------------------------------------

def mask_bias(head_dim):
    """The bias added to masked scores: below -2 x the largest |score| of a head_dim-long int8
    dot product (2^14 x head_dim), so a masked score is below every unmasked one. It is
    -16,256 x 2^k, the smallest such k, as the engine builds it (127 x -128, doubled k times)."""
    bound, bias = 2 * (1 << 14) * head_dim, -127 * 128
    doublings = 0
    while -bias <= bound:
        bias, doublings = 2 * bias, doublings + 1
    return bias, doublings


def softmax_reference(S, mask, multiplier, shift, table, head_dim):
    """Integer softmax over the last axis (see the module docstring): int8 probabilities."""
    S = np.asarray(S, dtype=np.int64)
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), S.shape)
    bias, _ = mask_bias(head_dim)
    s = np.where(mask, S, S + bias)
    d = s - s.max(axis=-1, keepdims=True)
    q = isa.requantize(d, multiplier, shift).astype(np.int32)
    e = np.asarray(table, dtype=np.int64)[q + 128]
    total = e.sum(axis=-1, keepdims=True)
    r = recip(total, RECIP_SHIFT)
    return isa.requantize(e, r, PROB_SHIFT).astype(np.int32).astype(np.int8)


def rmsnorm_reference(x, shift):
    """Integer RMS norm over the last axis of int8 x (see the module docstring)."""
    x = as_int8("x", x)
    r = rsqrt((x * x).sum(axis=-1, keepdims=True), RSQRT_SHIFT)
    return isa.requantize(x, r, shift).astype(np.int32).astype(np.int8)


def attention_reference(Q, K, V, *, score_multiplier, score_shift, table, out_multiplier,
                        out_shift, causal=True):
    """One attention head on int8 Q, K, V (M x d_h): int8 P = softmax(Q K^T) (causal: token r
    sees keys 0..r) and O = requantize(P V) (int8, M x d_h). Returns (P, O)."""
    Q, K, V = as_int8("Q", Q), as_int8("K", K), as_int8("V", V)
    M, dh = Q.shape
    S = Q @ K.T
    mask = np.tril(np.ones((M, M), dtype=bool)) if causal else np.ones((M, M), dtype=bool)
    P = softmax_reference(S, mask, score_multiplier, score_shift, table, dh)
    O = isa.requantize(P.astype(np.int64) @ V, out_multiplier, out_shift)
    return P, O.astype(np.int32).astype(np.int8)

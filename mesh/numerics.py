"""Integer reciprocal and reciprocal square root, defined once for every machine that needs them.

Softmax divides by a sum and RMS norm by a root mean square. Neither the prefill engine's vector
engine nor a mesh core divides; both normalize the operand to its leading one and look the
mantissa up in a fixed table, as hardware activation units do. The functions here are the exact
integer definitions: the prefill engine's ``RECIP`` and ``RSQRT`` vector ops
(docs/ARCHITECTURE.md section 11) compute them bit for bit, and mesh programs load the same
tables into SRAM for ``vlut``.

For an int32 a > 0 let k = bit_length(a) - 1 (a lies in [2^k, 2^(k+1))) and let
m = floor(a x 2^7 / 2^k) - 2^7, the 7 bits below the leading one (0..127). Then

* ``recip(a, s)`` = sat(RECIP_TABLE[m] x 2^(s - 16 - k)) ~ 2^s / a,
* ``rsqrt(a, s)`` = sat(RSQRT_TABLE[128 p + m] x 2^(s - 16 - h)) ~ 2^s / sqrt(a), where
  p = k mod 2 and h = floor(k / 2),

where x 2^e for e < 0 is a floor shift right, sat(v) = min(v, 2^31 - 1), and a <= 0 gives
2^31 - 1 (the largest int32: "infinitely large"). The tables hold 1 / (1 + m / 128) and
1 / sqrt(2^p (1 + m / 128)) in 16 fractional bits, rounded to nearest (ties up), and the mantissa is truncated,
so the result is within 2^-7 relative of the true value, plus the floor of the final shift.
"""

import numpy as np

__all__ = ["MANTISSA_BITS", "RECIP_TABLE", "RSQRT_TABLE", "INT32_MAX", "recip", "rsqrt"]

MANTISSA_BITS = 7                # table index bits below the leading one
FRACTION_BITS = 16               # the tables' fixed point
INT32_MAX = (1 << 31) - 1
_M = 1 << MANTISSA_BITS


def _round_ratio(numerator, denominator):
    """round(numerator / denominator) with ties up, in integers."""
    return (2 * numerator + denominator) // (2 * denominator)


#: RECIP_TABLE[m] = round(2^16 x 128 / (128 + m)), m = 0..127: values 32,897 .. 65,536.
RECIP_TABLE = tuple(_round_ratio(_M << FRACTION_BITS, _M + m) for m in range(_M))


def _rsqrt_entry(p, m):
    # round(2^16 / sqrt(2^p (128 + m) / 128)) = round(sqrt(2^32 x 128 / (2^p (128 + m)))),
    # computed exactly: the integer square root of 4x, then halved with ties up.
    from math import isqrt
    x_num, x_den = (1 << (2 * FRACTION_BITS)) * _M, (1 << p) * (_M + m)
    twice = isqrt(4 * x_num // x_den)                     # floor(2 sqrt(x)), x not a square
    return (twice + 1) // 2


#: RSQRT_TABLE[128 p + m] = round(2^16 / sqrt(2^p (1 + m / 128))), p = 0, 1; m = 0..127.
RSQRT_TABLE = tuple(_rsqrt_entry(p, m) for p in (0, 1) for m in range(_M))


def _normalize(a):
    """(valid, k, m) of int64 array a: valid where a > 0, k = bit_length(a) - 1, m the mantissa
    index (0 where not valid)."""
    a = np.asarray(a, dtype=np.int64)
    valid = a > 0
    safe = np.where(valid, a, 1)
    k = np.floor(np.log2(safe.astype(np.float64))).astype(np.int64)
    # log2 of a float can be off by one next to a power of two: correct k exactly.
    k = np.where(safe >= (np.int64(1) << (k + 1)), k + 1, k)
    k = np.where(safe < (np.int64(1) << k), k - 1, k)
    m = ((safe << MANTISSA_BITS) >> k) - _M
    return valid, k, m


def _scale(table_value, exponent):
    """sat(table_value x 2^exponent) with a floor shift for a negative exponent."""
    left = np.clip(exponent, 0, 40)               # 2^16 << 40 already saturates
    right = np.clip(-exponent, 0, 62)
    value = np.where(exponent >= 0, table_value << left, table_value >> right)
    return np.minimum(value, INT32_MAX)


def _check_shift(s):
    s = np.asarray(s, dtype=np.int64)
    if np.any((s < 0) | (s > 63)):
        raise ValueError(f"shift must be 0..63, not {s!r}")
    return s


def recip(a, s):
    """~ 2^s / a for int32 a (element-wise, int64 results in 0 .. 2^31 - 1); see the module."""
    s = _check_shift(s)
    valid, k, m = _normalize(a)
    value = _scale(np.asarray(RECIP_TABLE, dtype=np.int64)[m], s - FRACTION_BITS - k)
    return np.where(valid, value, INT32_MAX)


def rsqrt(a, s):
    """~ 2^s / sqrt(a) for int32 a (element-wise, int64 results in 0 .. 2^31 - 1)."""
    s = _check_shift(s)
    valid, k, m = _normalize(a)
    p, h = k & 1, k >> 1
    table = np.asarray(RSQRT_TABLE, dtype=np.int64)
    value = _scale(table[p * _M + m], s - FRACTION_BITS - h)
    return np.where(valid, value, INT32_MAX)

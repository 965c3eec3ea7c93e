"""mesh.numerics: the integer reciprocal and reciprocal square root (the prefill engine's RECIP
and RSQRT vector ops and the tables mesh programs load): the tables against exact decimal
arithmetic, the functions against their definition in plain integers and against float."""

import re
from decimal import Decimal, getcontext

import numpy as np
import pytest

from mesh import numerics
from mesh.numerics import INT32_MAX, RECIP_TABLE, RSQRT_TABLE, recip, rsqrt

getcontext().prec = 60


def round_half_up(value):
    return int((value + Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR"))


def edge_values():
    """Every power of two up to 2^30 and its neighbours, the int32 limits, 0 and negatives."""
    values = {0, -1, -2, -(2**31), INT32_MAX, 3, 5, 7}
    for j in range(31):
        values.update({2**j - 1, 2**j, 2**j + 1})
    return sorted(v for v in values if -(2**31) <= v <= INT32_MAX)


def reference(a, s, sqrt):
    """The module's definition in plain Python integers."""
    if a <= 0:
        return INT32_MAX
    k = a.bit_length() - 1
    m = (a << 7 >> k) - 128
    if sqrt:
        entry, exponent = RSQRT_TABLE[128 * (k % 2) + m], s - 16 - k // 2
    else:
        entry, exponent = RECIP_TABLE[m], s - 16 - k
    value = entry << exponent if exponent >= 0 else entry >> -exponent
    return min(value, INT32_MAX)


def test_tables():
    assert len(RECIP_TABLE) == 128 and len(RSQRT_TABLE) == 256
    assert (RECIP_TABLE[0], RECIP_TABLE[-1]) == (65536, 32897)
    assert (RSQRT_TABLE[0], RSQRT_TABLE[127], RSQRT_TABLE[128], RSQRT_TABLE[255]) == \
        (65536, 46432, 46341, 32832)
    assert list(RECIP_TABLE) == [round_half_up(Decimal(2**16 * 128) / (128 + m))
                                 for m in range(128)]
    assert list(RSQRT_TABLE) == [
        round_half_up(Decimal(2**16) / (Decimal(2**p * (128 + m)) / 128).sqrt())
        for p in (0, 1) for m in range(128)]
    # Decreasing: a larger mantissa never gives a larger result.
    assert all(x >= y for x, y in zip(RECIP_TABLE, RECIP_TABLE[1:]))
    assert all(x >= y for x, y in zip(RSQRT_TABLE, RSQRT_TABLE[1:]))


@pytest.mark.parametrize("function, sqrt", [(recip, False), (rsqrt, True)])
def test_against_the_definition(function, sqrt):
    rng = np.random.default_rng(11)
    values = edge_values() + [int(v) for v in rng.integers(1, 2**31, size=200)]
    for s in range(64):
        got = function(np.array(values, dtype=np.int64), s)
        assert got.dtype == np.int64
        assert got.tolist() == [reference(a, s, sqrt) for a in values], s


@pytest.mark.parametrize("function", [recip, rsqrt])
def test_non_positive_is_int32_max(function):
    for s in (0, 17, 63):
        assert function(np.array([0, -1, -(2**31), -12345]), s).tolist() == [INT32_MAX] * 4
    assert function(0, 5) == INT32_MAX and function(-7, 0) == INT32_MAX


@pytest.mark.parametrize("function, exact", [
    (recip, lambda a, s: 2.0**s / a),
    (rsqrt, lambda a, s: 2.0**s / np.sqrt(a)),
])
def test_accuracy(function, exact):
    """Unsaturated results are within 2^-7 relative of the float value when the final shift is
    exact (a left shift or none), and within 2^-7 relative plus the floor's 1 otherwise."""
    rng = np.random.default_rng(12)
    a = np.concatenate([np.array([v for v in edge_values() if v > 0], dtype=np.int64),
                        rng.integers(1, 2**31, size=2000)])
    checked = 0
    for s in range(64):
        got = function(a, s).astype(np.float64)
        true = exact(a.astype(np.float64), s)
        unsaturated = got < INT32_MAX
        error = np.abs(got - true)
        assert (error[unsaturated] < 2.0**-7 * true[unsaturated] + 1).all(), s
        large = unsaturated & (got >= 2**16)          # 2^16: the floor costs < 2^-16
        assert (error[large] / true[large] < 2.0**-7 + 2.0**-16).all(), s
        exact_shift = unsaturated & (2.0**s >= 2**16 * a)    # left shift: no floor at all
        assert (error[exact_shift] / true[exact_shift] < 2.0**-7).all(), s
        checked += int(exact_shift.sum())
    assert checked > 1000


@pytest.mark.parametrize("function", [recip, rsqrt])
@pytest.mark.parametrize("shift", [-1, 64, 100])
def test_bad_shift(function, shift):
    with pytest.raises(ValueError, match=re.escape("shift must be 0..63")):
        function(np.array([1, 2]), shift)
    with pytest.raises(ValueError, match=re.escape("shift must be 0..63")):
        function(5, np.array([0, shift]))


def test_exports():
    assert set(numerics.__all__) == {"MANTISSA_BITS", "RECIP_TABLE", "RSQRT_TABLE", "INT32_MAX",
                                     "recip", "rsqrt"}

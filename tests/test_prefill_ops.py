"""Softmax, RMS norm and attention on the prefill engine (programs/prefill_ops.py): the integer
references against float, and the engine's command streams against the references, bit for bit
(the RTL runs of the same streams are in test_prefill_rtl.py)."""

from math import erf, sqrt

import numpy as np
import pytest

from emulator.prefill import PrefillEmulator
from mesh.prefill import Op, PrefillConfig
from programs.integer_ops import (activation_table, attention_reference, exp_table, mask_bias,
                                  rmsnorm_reference, softmax_reference)
from programs.prefill_ops import VectorStream, attention_head, rmsnorm

STEP = 1 / 16             # exp table: q = -16 is exp(-1)


def run(program, config):
    emu = PrefillEmulator(config, sbuf=program.sbuf)
    return emu.run(program.commands)


# References ----------------------------------------------------------------------------------

def test_exp_table():
    table = exp_table(STEP)
    assert table.dtype == np.int8 and len(table) == 256
    assert table[0] == 0 and table[128] == 127 and table[128 - 16] == round(127 / np.e)
    assert (np.diff(table[1:129].astype(int)) >= 0).all()
    with pytest.raises(ValueError, match="step must be positive"):
        exp_table(0)


def test_activation_table_is_gelu():
    gelu = activation_table(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))), 1 / 32, 1 / 32)
    assert gelu[128] == 0 and gelu[128 + 64] == round(0.5 * 2 * (1 + erf(2 / sqrt(2))) * 32)
    assert gelu[0] == round(-4 * 0.5 * (1 + erf(-4 / sqrt(2))) * 32)


def test_mask_bias_is_below_every_score():
    for dh in (1, 8, 16, 64):
        bias, doublings = mask_bias(dh)
        assert bias == -127 * 128 * 2 ** doublings and -bias > 2 * (1 << 14) * dh
        assert -bias // 2 <= 2 * (1 << 14) * dh


def test_softmax_reference_tracks_float():
    rng = np.random.default_rng(1)
    S = rng.integers(-3000, 3000, size=(16, 40))
    multiplier, shift = 1 << 20, 26          # q = (s - max) / 64: exp((s - max) / 1024)
    P = softmax_reference(S, True, multiplier, shift, exp_table(STEP), head_dim=16)
    x = (S - S.max(axis=1, keepdims=True)) / 1024
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert P.dtype == np.int8 and P.min() >= 0
    assert np.abs(P / 128 - p).max() < 0.03
    assert (np.abs(P.astype(int).sum(axis=1) - 128) <= 8).all()


def test_softmax_reference_masks():
    S = np.array([[5, 100000, 7], [0, 0, 0]])
    mask = np.array([[True, False, True], [True, True, True]])
    P = softmax_reference(S, mask, 1 << 20, 26, exp_table(STEP), head_dim=16)
    assert P[0, 1] == 0 and P[0, 0] > 0 and P[0, 2] > 0
    assert P[1].tolist() == [43, 43, 43]


def test_rmsnorm_reference_tracks_float():
    rng = np.random.default_rng(2)
    x = rng.integers(-100, 100, size=(8, 64))
    y = rmsnorm_reference(x, 23)     # 2^(30 - shift) / sqrt(64) = 16: x / rms(x) x 16
    expected = x / np.sqrt((x.astype(float) ** 2).mean(axis=1, keepdims=True)) * 16
    assert np.abs(y - expected).max() <= 1.5
    assert rmsnorm_reference(np.zeros((1, 8), dtype=int), 20).tolist() == [[0] * 8]


# The vector stream's hazard fillers ------------------------------------------------------------

def test_stream_inserts_a_filler_only_when_needed():
    from mesh.prefill import VectorOp
    commands = []
    stream = VectorStream(commands, scratch=100)
    stream.op(VectorOp.ADD32, rows=1, a=0, b=0, d=1, reads=[("psum", 0)], writes=("psum", 1))
    stream.op(VectorOp.ADD32, rows=1, a=1, b=1, d=2, reads=[("psum", 1)], writes=("psum", 2))
    assert [(c.sub, c.count, c.a) for c in commands] == [
        (int(VectorOp.ADD32), 1, 0), (int(VectorOp.ADD32), 2, 100), (int(VectorOp.ADD32), 1, 1)]
    commands.clear()
    stream = VectorStream(commands, scratch=100)
    stream.op(VectorOp.ADD32, rows=3, a=0, b=0, d=3, reads=[("psum", 0)], writes=("psum", 3))
    stream.op(VectorOp.ADD32, rows=3, a=3, b=3, d=6, reads=[("psum", 3)], writes=("psum", 6))
    assert len(commands) == 2
    stream.other(commands[0])
    assert stream._recent == []


# On the engine -----------------------------------------------------------------------------------

def attention_inputs(seed, M, dh):
    rng = np.random.default_rng(seed)
    return [rng.integers(-60, 60, size=(M, dh)).astype(np.int8) for _ in range(3)]


ATTENTION = dict(score_multiplier=1 << 20, score_shift=26, table=exp_table(STEP),
                 out_multiplier=1 << 16, out_shift=23)


@pytest.mark.parametrize("n, M, dh", [(8, 16, 16), (8, 13, 16), (4, 9, 6), (8, 1, 8),
                                      (8, 2, 16), (3, 7, 5)])
def test_attention_head_on_the_engine_equals_the_reference(n, M, dh):
    config = PrefillConfig(n=n, sbuf_rows=1024, psum_rows=512)
    Q, K, V = attention_inputs(M * 100 + dh, M, dh)
    program = attention_head(config, Q, K, V, **ATTENTION)
    result = run(program, config)
    np.testing.assert_array_equal(program.read(result.sbuf, program.p_row, M), program.P)
    np.testing.assert_array_equal(program.read(result.sbuf, program.o_row, dh), program.O)


def test_attention_reference_is_causal():
    Q, K, V = attention_inputs(5, 6, 8)
    P, O = attention_reference(Q, K, V, **ATTENTION)
    assert (np.triu(P, 1) == 0).all() and P[0, 0] == 127
    P2, _ = attention_reference(Q, K, V, causal=False, **ATTENTION)
    assert (P2[0, 1:] != 0).any()


def test_non_causal_attention_on_the_engine():
    config = PrefillConfig(n=4, sbuf_rows=512, psum_rows=256)
    Q, K, V = attention_inputs(9, 10, 4)
    program = attention_head(config, Q, K, V, causal=False, **ATTENTION)
    result = run(program, config)
    np.testing.assert_array_equal(program.read(result.sbuf, program.o_row, 4), program.O)


def test_attention_that_does_not_fit_is_refused():
    config = PrefillConfig(n=8, sbuf_rows=256, psum_rows=64)
    Q, K, V = attention_inputs(1, 64, 16)
    with pytest.raises(ValueError, match=r"attention over 64 tokens with head dimension 16 "
                                         r"needs \d+ SBUF rows; the engine has 256"):
        attention_head(config, Q, K, V, **ATTENTION)


@pytest.mark.parametrize("n, M, d", [(8, 16, 64), (8, 5, 20), (4, 2, 8), (3, 1, 7)])
def test_rmsnorm_on_the_engine_equals_the_reference(n, M, d):
    config = PrefillConfig(n=n, sbuf_rows=512, psum_rows=256)
    x = np.random.default_rng(d).integers(-128, 128, size=(M, d)).astype(np.int8)
    x[0] = 0 if M > 1 else x[0]
    program = rmsnorm(config, x, shift=26)
    result = run(program, config)
    np.testing.assert_array_equal(program.read(result.sbuf, program.y_row, d), program.expected)
    assert program.commands[-1].op == Op.HALT

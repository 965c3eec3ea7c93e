"""The tiny transformer (programs/transformer): the addition task, the shipped model file, the
float and integer references (integer prefill against step-by-step decode, accuracy on
held-out prompts, golden outputs), and input checks. No torch needed."""

import hashlib

import numpy as np
import pytest

from programs.integer_ops import exp_table
from programs.transformer import model as M
from programs.transformer import task
from programs.transformer.model import CONFIG, IntModel, KVCache


@pytest.fixture(scope="module")
def int_model():
    return IntModel.load()


@pytest.fixture(scope="module")
def weights():
    return M.load_float_weights()


@pytest.fixture(scope="module")
def heldout():
    a, b = task.heldout_pairs(100, seed=1)
    return [task.prompt(x, y) for x, y in zip(a.tolist(), b.tolist())]


# The task ------------------------------------------------------------------------------------------

def test_tokenizer_round_trip():
    text = "0123456789+=$"
    assert task.tokenize(text) == list(range(13))
    assert task.detokenize(task.tokenize(text)) == text
    assert task.VOCAB_SIZE == CONFIG["vocab"] == 13
    with pytest.raises(ValueError, match="not in the vocabulary"):
        task.tokenize("1-2")
    with pytest.raises(ValueError, match="not a token id"):
        task.detokenize([3, 13])


def test_answers_are_reversed_sums():
    assert task.detokenize(task.prompt(123, 459)) == "123+459="
    assert task.detokenize(task.answer(123, 459)) == "285$"
    assert task.detokenize(task.answer(999, 999)) == "8991$"
    assert task.detokenize(task.answer(0, 0)) == "0$"
    assert task.parse_prompt("7+40=") == (7, 40)
    assert task.check("123+459=", task.tokenize("285$"))
    assert task.check("123+459=", task.tokenize("285$77"))         # after END: ignored
    assert not task.check("123+459=", task.tokenize("285"))        # no END
    assert not task.check("123+459=", task.tokenize("582$"))
    assert not task.check(task.prompt(1, 2), task.tokenize("$"))
    for bad in ("12+3", "012+3=", "1234+1=", "+3=", "1+2=3"):
        with pytest.raises(ValueError, match="is not a prompt"):
            task.parse_prompt(bad)
    with pytest.raises(ValueError, match="0 .. 999"):
        task.prompt(1000, 1)


def test_split_is_deterministic_and_disjoint():
    a = np.repeat(np.arange(1000), 1000)
    b = np.tile(np.arange(1000), 1000)
    held = task.is_heldout(a, b)
    assert abs(held.mean() - 0.1) < 0.002
    rng = np.random.default_rng(3)
    ta, tb = task.sample_pairs(rng, 2000, "train")
    ha, hb = task.heldout_pairs(2000)
    assert not task.is_heldout(ta, tb).any() and task.is_heldout(ha, hb).all()
    assert np.array_equal(task.heldout_pairs(50)[0], ha[:50])
    digits = np.char.str_len(ta.astype(str))
    assert all(abs((digits == n).mean() - 1 / 3) < 0.05 for n in (1, 2, 3))


# The model file ------------------------------------------------------------------------------------

def test_model_file_shapes_and_ranges(int_model, weights):
    assert M.WEIGHTS_PATH.stat().st_size < 1 << 20
    d, ff, V, C = 64, 128, 13, 64
    assert CONFIG == {"vocab": V, "d_model": d, "n_heads": 4, "d_head": 16, "d_ff": ff,
                      "n_layers": 2, "context": C}
    assert {k: v.shape for k, v in weights.items()} == M.float_weight_names()
    assert all(v.dtype == np.float32 for v in weights.values())
    a = int_model.arrays
    shapes = {"tok_emb": (V, d), "pos_emb": (C, d), "wout": (d, V)}
    for l in range(2):
        shapes.update({f"l{l}.w{c}": (d, d) for c in "qkvo"})
        shapes.update({f"l{l}.w1": (d, ff), f"l{l}.w2": (ff, d)})
    for name, shape in shapes.items():
        w = a["int." + name]
        assert w.dtype == np.int8 and w.shape == shape, name
        assert w.min() >= -128 and w.max() <= 127
    for name in shapes:
        if name not in ("tok_emb", "pos_emb"):   # weights use -127 .. 127, max |w| = 127
            assert np.abs(a["int." + name].astype(int)).max() == 127, name
    names = [str(n) for n in a["rq.names"]]
    assert names == [f"l{l}.{c}" for l in range(2)
                     for c in ("q", "k", "v", "score", "o", "attn", "up", "down")]
    values = a["rq.values"]
    assert values.shape == (16, 2) and values.dtype == np.int64
    assert ((values[:, 0] >= 1 << 14) & (values[:, 0] < 1 << 15)).all()
    assert ((values[:, 1] >= 0) & (values[:, 1] <= 63)).all()
    assert a["int.norm_shift"].shape == (5,) and (a["int.norm_shift"] <= 63).all()
    assert np.array_equal(a["int.exp_table"], exp_table(1 / 16))
    assert a["int.gelu_table"].shape == (2, 256) and a["int.gelu_table"].dtype == np.int8


def test_integer_model_is_the_float_weights_quantized(int_model, weights):
    """The shipped integer arrays are exactly model.quantize of the shipped float weights with
    the shipped activation scales: the two references are one model."""
    scales = {k: v for k, v in int_model.scales.items() if not k.startswith("w.")}
    scales["norm_shift"] = int_model.norm_shift
    again = M.quantize(weights, scales)
    for name, value in again.items():
        assert np.array_equal(value, int_model.arrays[name]), name


def test_quantize_multiplier():
    for ratio in (1e-6, 0.00391, 0.5, 1.0, 3.7, 20000.0):
        m, s = M.quantize_multiplier(ratio)
        assert 1 << 14 <= m < 1 << 15 and 0 <= s <= 63
        assert abs(m / 2 ** s / ratio - 1) < 2 ** -14
    assert M.quantize_multiplier(1 / 128) == (1 << 14, 21)
    with pytest.raises(ValueError, match="positive"):
        M.quantize_multiplier(0)


# Integer reference ------------------------------------------------------------------------------------

def test_prefill_equals_step_by_step_decode(int_model):
    for text in ("123+459=", "9+9=81", "0+0=", "999+1=0001$", "45+678=32"):
        tokens = task.tokenize(text)
        logits, cache = int_model.int_forward_prefill(tokens)
        assert logits.shape == (len(tokens), 13) and cache.length == len(tokens)
        step_cache = KVCache()
        rows = [int_model.int_decode_step(t, i, step_cache) for i, t in enumerate(tokens)]
        assert np.array_equal(np.stack(rows), logits), text
        for l in range(2):
            for a, b in zip(cache.layers[l], step_cache.layers[l]):
                assert np.array_equal(a, b)
        # Continuing either cache gives the same logits.
        nxt = int(np.argmax(logits[-1]))
        assert np.array_equal(int_model.int_decode_step(nxt, len(tokens), cache),
                              int_model.int_decode_step(nxt, len(tokens), step_cache))


def test_generation_with_cache_equals_full_recompute(int_model):
    for text in ("123+459=", "7+8=", "500+500="):
        tokens = task.tokenize(text)
        generated = int_model.generate_int(tokens)
        seq = list(tokens)
        for _ in generated:
            logits, _ = int_model.int_forward_prefill(seq)
            seq.append(int(np.argmax(logits[-1])))
        assert seq[len(tokens):] == generated


def test_batched_generation_equals_single(int_model, weights, heldout):
    prompts = heldout[:12]
    assert int_model.generate_int_batch(prompts) == [int_model.generate_int(p) for p in prompts]
    assert M.generate_float_batch(weights, prompts) == [M.generate_float(weights, p)
                                                        for p in prompts]


def test_heldout_accuracy_and_agreement(int_model, weights, heldout):
    int_out = int_model.generate_int_batch(heldout)
    float_out = M.generate_float_batch(weights, heldout)
    int_exact = sum(task.check(p, g) for p, g in zip(heldout, int_out))
    float_exact = sum(task.check(p, g) for p, g in zip(heldout, float_out))
    agree = sum(f == i for f, i in zip(float_out, int_out))
    assert float_exact >= 90 and int_exact >= 90 and agree >= 90, (float_exact, int_exact, agree)


GOLDEN = {"123+459=": "285$", "999+999=": "8991$", "7+86=": "39$"}
# sha256 of the int64 little-endian bytes of int_forward_prefill("123+459=285$")'s logits.
GOLDEN_LOGITS_SHA256 = (
    "baee5b2c345fef26795abb8f8a9c2d3be8d79b9be15a0567460b80a65ac3bafc")


def test_golden(int_model, weights):
    for prompt, expected in GOLDEN.items():
        assert task.detokenize(int_model.generate_int(prompt)) == expected
        assert task.detokenize(M.generate_float(weights, prompt)) == expected
    logits, _ = int_model.int_forward_prefill(task.tokenize("123+459=285$"))
    digest = hashlib.sha256(logits.astype("<i8").tobytes()).hexdigest()
    assert digest == GOLDEN_LOGITS_SHA256


def test_trace_holds_int8_intermediates(int_model):
    trace = {}
    logits, _ = int_model.int_forward_prefill(task.tokenize("12+34="), trace=trace)
    assert np.array_equal(trace["logits"][0], logits)   # traces are batches of 1
    for name in ("x0", "l0.h1", "l0.q", "l0.P", "l0.o", "l1.x2", "l1.g", "final.h"):
        assert trace[name].min() >= -128 and trace[name].max() <= 127, name
    assert trace["l0.P"].min() >= 0 and trace["l0.S"].shape == (1, 4, 6, 6)


# Bad inputs ---------------------------------------------------------------------------------

def test_bad_inputs(int_model, weights):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        int_model.int_forward_prefill([1, 2, 13])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        int_model.int_forward_prefill([1, -1])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        M.float_forward(weights, [1, 99])
    with pytest.raises(ValueError, match="do not fit the context of 64"):
        int_model.int_forward_prefill([1] * 65)
    with pytest.raises(ValueError, match="do not fit the context of 64"):
        int_model.generate_int([1] * 65)
    with pytest.raises(ValueError, match="do not fit the context of 64"):
        M.generate_float(weights, [1] * 65)
    with pytest.raises(ValueError, match="must not be empty"):
        int_model.int_forward_prefill([])
    with pytest.raises(ValueError, match="integer token ids"):
        int_model.int_forward_prefill([1.0, 2.0])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        int_model.generate_int("12*3=")
    cache = KVCache()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        int_model.int_decode_step(13, 0, cache)
    with pytest.raises(ValueError, match="does not follow"):
        int_model.int_decode_step(1, 3, cache)
    _, full = int_model.int_forward_prefill([1] * 64)
    with pytest.raises(ValueError, match="outside the context of 64"):
        int_model.int_decode_step(1, 64, full)
    # A full context generates nothing more.
    assert int_model.generate_int([1] * 64) == []
    with pytest.raises(ValueError, match="must be a KVCache"):
        int_model.int_decode_step(1, 0, None)

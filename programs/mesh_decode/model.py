"""The model side of mesh decode: the dimensions the compiler reads from an :class:`IntModel`,
synthetic integer models of any size (random int8 weights, valid requantize constants) that run
through the very same integer reference code, and reference helpers (prefill, step traces).

:class:`programs.transformer.model.IntModel` reads its head count, layer count, vocabulary and
context from the module constant ``CONFIG``. A :class:`SyntheticIntModel` runs the same methods
with ``CONFIG`` temporarily set to its own dimensions (restored afterwards), so the reference it
is checked against is ``IntModel``'s code path, not a copy of it.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from math import sqrt

import numpy as np

from programs.integer_ops import activation_table, exp_table, mask_bias
from programs.transformer import model as tm

__all__ = ["ModelDims", "SyntheticIntModel", "random_int_model", "model_config",
           "prefill", "decode_trace"]


@dataclass(frozen=True)
class ModelDims:
    """What the compiler needs to know about a model's shape."""
    d_model: int
    n_heads: int
    d_head: int
    d_ff: int
    n_layers: int
    vocab: int
    context: int
    gelu_tables: int = 0        # distinct GELU tables (0: one per layer)

    @classmethod
    def of(cls, model):
        c = model.config
        dims = cls(d_model=int(c["d_model"]), n_heads=int(c["n_heads"]),
                   d_head=int(c["d_head"]), d_ff=int(c["d_ff"]), n_layers=len(model.layers),
                   vocab=int(model.tok_emb.shape[0]), context=int(model.pos_emb.shape[0]),
                   gelu_tables=len(np.unique(np.asarray(model.gelu_table), axis=0)))
        if dims.n_heads * dims.d_head != dims.d_model:
            raise ValueError(f"the model's {dims.n_heads} heads of {dims.d_head} do not make "
                             f"d_model = {dims.d_model}")
        return dims

    @property
    def macs_per_token(self):
        """Multiply-accumulates of the weight GEMVs of one decode step."""
        d, f = self.d_model, self.d_ff
        return self.n_layers * (4 * d * d + 2 * d * f) + d * self.vocab

    @property
    def weight_bytes(self):
        """Bytes of int8 weight matrices (each is used once per token: = macs_per_token)."""
        return self.macs_per_token


@contextmanager
def model_config(config):
    """``programs.transformer.model.CONFIG`` set to ``config`` for the duration (restored)."""
    saved = dict(tm.CONFIG)
    tm.CONFIG.clear()
    tm.CONFIG.update(config)
    try:
        yield
    finally:
        tm.CONFIG.clear()
        tm.CONFIG.update(saved)


class SyntheticIntModel(tm.IntModel):
    """An :class:`IntModel` with dimensions of its own (see the module docstring)."""

    def __init__(self, arrays, config):
        self._own_config = dict(config)
        with model_config(self._own_config):
            super().__init__(arrays)
        self.config = dict(self._own_config)

    def new_cache(self, batch=1):
        with model_config(self._own_config):
            return tm.KVCache(batch)

    def int_forward_prefill(self, tokens, trace=None):
        with model_config(self._own_config):
            return super().int_forward_prefill(tokens, trace)

    def int_decode_step(self, token, position, kv_cache, trace=None):
        with model_config(self._own_config):
            return super().int_decode_step(token, position, kv_cache, trace)

    def generate_int_batch(self, prompts, max_new=tm.task.MAX_ANSWER):
        with model_config(self._own_config):
            return super().generate_int_batch(prompts, max_new)


def _rq_for(ratio):
    return tm.quantize_multiplier(ratio)


def random_int_model(d_model, n_heads, d_ff, n_layers, vocab, seed=0, context=64):
    """A synthetic integer model: random int8 weights (-127 .. 127) and embeddings, requantize
    constants chosen so that every int8 activation spreads over a good part of its range
    (statistically, for random weights), norm shifts likewise, GELU tables as the real model
    builds them. It runs the integer reference exactly as the trained model does."""
    if d_model % n_heads:
        raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
    rng = np.random.default_rng(seed)
    d, dh, f = d_model, d_model // n_heads, d_ff
    w = lambda *shape: rng.integers(-127, 128, size=shape).astype(np.int8)
    arrays = {"int.tok_emb": rng.integers(-90, 91, size=(vocab, d)).astype(np.int8),
              "int.pos_emb": rng.integers(-40, 41, size=(context, d)).astype(np.int8)}
    sw = 127 / sqrt(3)                       # std of a uniform int8 weight
    target = 40.0                            # std of an int8 activation
    # rmsnorm output: x / rms(x) x 2^(30 - shift) / sqrt(d): pick the shift for std ~ target.
    norm_shift = int(round(30 - np.log2(target * sqrt(d))))
    rq, gelu_tables = {}, []
    bias, _ = mask_bias(dh)
    for l in range(n_layers):
        for name, shape in (("wq", (d, d)), ("wk", (d, d)), ("wv", (d, d)), ("wo", (d, d)),
                            ("w1", (d, f)), ("w2", (f, d))):
            arrays[f"int.l{l}.{name}"] = w(*shape)
        proj = target / (sqrt(d) * sw * target)
        for c in "qkv":
            rq[f"l{l}.{c}"] = _rq_for(proj * rng.uniform(0.8, 1.25))
        # Scores q.k have std ~ sqrt(dh) target^2; map 3 std onto the exp table's 128 steps,
        # and keep masked scores below -128 as the quantizer requires.
        score = 64 / (3 * sqrt(dh) * target * target)
        worst = -bias - 2 * dh * 128 * 128
        rq[f"l{l}.score"] = _rq_for(max(score, 130 / worst))
        rq[f"l{l}.o"] = _rq_for(1 / 128 * rng.uniform(0.9, 1.6))
        rq[f"l{l}.attn"] = _rq_for(target / (sqrt(d) * sw * 40))
        rq[f"l{l}.up"] = _rq_for(proj * rng.uniform(0.8, 1.25))
        gelu_tables.append(activation_table(tm.gelu, 3 / 127, 2 / 127))
        rq[f"l{l}.down"] = _rq_for(target / (sqrt(f) * sw * 50))
    arrays["int.wout"] = w(d, vocab)
    arrays["int.norm_shift"] = np.array([norm_shift] * (2 * n_layers + 1), dtype=np.int64)
    arrays["int.exp_step"] = np.array(tm.EXP_STEP)
    arrays["int.exp_table"] = exp_table(tm.EXP_STEP)
    arrays["int.gelu_table"] = np.stack(gelu_tables)
    arrays["rq.names"] = np.array(list(rq))
    arrays["rq.values"] = np.array(list(rq.values()), dtype=np.int64)
    arrays["scale.names"] = np.array([], dtype=str)
    arrays["scale.values"] = np.array([], dtype=np.float64)
    config = {"vocab": vocab, "d_model": d, "n_heads": n_heads, "d_head": dh, "d_ff": f,
              "n_layers": n_layers, "context": context}
    return SyntheticIntModel(arrays, config)


# Reference helpers ---------------------------------------------------------------------------

def _config_of(model):
    return getattr(model, "_own_config", None) or dict(tm.CONFIG)


def prefill(model, tokens):
    """(logits of the last prompt token, KV cache, first generated token) of the integer
    reference for a prompt (token ids or a task string)."""
    if isinstance(tokens, str):
        tokens = tm.task.tokenize(tokens)
    logits, cache = model.int_forward_prefill(np.asarray(tokens, dtype=np.int64))
    return logits[-1], cache, int(np.argmax(logits[-1]))


def decode_trace(model, token, cache):
    """One reference decode step on a copy of ``cache``: (logits, trace dict, new cache)."""
    import copy
    cache = copy.deepcopy(cache)
    trace = {}
    logits = model.int_decode_step(int(token), cache.length, cache, trace=trace)
    return logits, trace, cache

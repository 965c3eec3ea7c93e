"""The tiny transformer: its definition, the float reference and the integer reference.

The model
---------
Decoder only, pre-norm, no biases: vocabulary V = 13 (:mod:`.task`), d = 64, 2 layers, 4 heads
of d_h = 16, an MLP of d_ff = 128 with GELU (the tanh form,
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))), learned token and position embeddings
(64 positions), RMS norms with gain vectors, a final RMS norm and an untied output projection.
Causal attention. Weight matrices are stored as ``x @ W`` (shape in x out).

The float reference (:func:`float_forward`)::

    x = E_tok[t] + E_pos[p]
    per layer:  h = norm(x) g1;  q, k, v = h Wq, h Wk, h Wv;  per head
                o_h = softmax(q_h k_h^T / 4 + causal mask) v_h;  x = x + concat(o) Wo
                h = norm(x) g2;  x = x + gelu(h W1) W2
    logits = norm(x) g_f Wout,   norm(x) = x / sqrt(mean(x^2) + 1e-5)

The integer reference (:class:`IntModel`), exactly
-----------------------------------------------------
Everything is an integer; int8 values are int8, accumulators int32 (they never come near
2^31). ``rq(a, name)`` is ``mesh.isa.requantize(a, multiplier, shift)`` with the per-tensor
constants ``name`` of the model file (``rq.names`` / ``rq.values``): saturate8(floor(a x
multiplier / 2^shift + 1/2)). sat8(v) = clip(v, -128, 127). ``@`` is an integer matrix product
(int8 x int8 summed in int32). ``rmsnorm(x, s)`` and ``softmax(...)`` are
:func:`programs.integer_ops.rmsnorm_reference` and :func:`~programs.integer_ops.softmax_reference`.
Every multiplier is in [2^14, 2^15) and every shift in 0..63.

1. Embedding, token t at position p (0-based)::

       x = sat8(E_tok[t] + E_pos[p])                  # int8 (V x 64), (64 x 64) tables

   The residual stream x is int8 at ONE scale s_x throughout (``scale.x``).
2. Per layer l = 0, 1 (names ``l{l}.*``; M tokens, rows of x)::

       h  = rmsnorm(x, norm_shift[2l])                # int8, the gain g1 is folded into W
       q  = rq(h @ Wq, "l.q");  k = rq(h @ Wk, "l.k");  v = rq(h @ Wv, "l.v")   # M x 64 int8
       per head j (columns 16j .. 16j + 15 of q, k, v):
           S  = q_j @ k_j^T                           # int32 M x M (decode: 1 x keys so far)
           P  = softmax(S, causal, *rq["l.score"], exp_table, head_dim=16)  # int8, 1/128 scale
           o_j = rq(P @ v_j, "l.o")                   # int8 M x 16
       a  = rq(concat(o_0 .. o_3) @ Wo, "l.attn")     # int8 at s_x
       x  = sat8(x + a)
       h  = rmsnorm(x, norm_shift[2l + 1])
       u  = rq(h @ W1, "l.up")                        # int8 M x 128
       g  = gelu_table[l][u + 128]                    # int8
       f  = rq(g @ W2, "l.down")                      # int8 at s_x
       x  = sat8(x + f)

   The causal mask of prefill is ``softmax_reference``'s: masked scores get
   ``mask_bias(16)`` = -16,256 x 2^6 added, which the score constants map below -128, so they
   take the table's entry 0 (= 0) and prefill equals step-by-step decode bit for bit (the
   quantizer checks this bound).
3. Final: ``h = rmsnorm(x, norm_shift[4]); logits = h @ Wout`` (int32, M x 13); the next
   token is the argmax of the last row, ties to the lowest index.

The order of ``norm_shift`` is l0 attention, l0 MLP, l1 attention, l1 MLP, final. With d = 64,
rmsnorm(x, s) = x / rms(x) x 2^(27 - s) (to within its tables' 2^-7), so the norm's output
scale is 2^(s - 27) per unit of x / rms(x). ``rq`` constants per layer: ``q, k, v`` (h @ W ->
int8 at scale.q/k/v), ``score`` (S - max -> the exp table's index: ratio s_q s_k / (4 step)),
``o`` (P @ v -> int8 at scale.o: ratio s_v / (128 s_o)), ``attn`` (-> s_x), ``up`` (-> scale.u),
``down`` (-> s_x). The exp table is ``exp_table(exp_step)`` with exp_step = 1/16 (entry
q + 128 = round(127 exp(q / 16)), so down to e^-7.9); gelu_table[l] =
``activation_table(gelu, scale.u[l], scale.g[l])``.

Weights in the file: ``int.tok_emb`` (13 x 64), ``int.pos_emb`` (64 x 64), ``int.l{l}.wq``,
``wk``, ``wv``, ``wo`` (64 x 64), ``w1`` (64 x 128), ``w2`` (128 x 64), ``int.wout``
(64 x 13): int8, laid out as ``x @ W``; the norms' gains are folded in (W' = diag(g) W before
quantizing, so ``wq, wk, wv`` carry g1, ``w1`` g2 and ``wout`` the final gain). Weight scales
are per tensor: max |W'| / 127, values round(W' / scale) in -127 .. 127; the embeddings are
round(E / s_x) clipped to -128 .. 127. The largest accumulator magnitudes are below 2^22
(128 x 128 x 128 for g @ W2), the masked softmax differences below 2^21. ``scale.names`` /
``scale.values`` record every float scale (``x``, ``l{l}.q`` .. ``l{l}.g``, ``w.*`` the
weights'), for information only: the integer pipeline uses none of them. The float weights (float32, ``float.*``) are the float
reference's.
"""

from math import floor, log2, pi, sqrt, tanh
from pathlib import Path

import numpy as np

from mesh import isa
from programs.integer_ops import (activation_table, exp_table, mask_bias, rmsnorm_reference,
                                  softmax_reference)

from . import task

__all__ = ["CONFIG", "WEIGHTS_PATH", "EXP_STEP", "MULTIPLIER_BITS", "gelu", "float_forward",
           "generate_float", "generate_float_batch", "calibrate", "quantize_multiplier",
           "quantize", "save", "load_float_weights", "IntModel", "KVCache", "float_weight_names",
           "norm_scale"]

CONFIG = {"vocab": task.VOCAB_SIZE, "d_model": 64, "n_heads": 4, "d_head": 16, "d_ff": 128,
          "n_layers": 2, "context": task.CONTEXT}
WEIGHTS_PATH = Path(__file__).with_name("weights.npz")
EXP_STEP = 1 / 16                 # the exp table's step: index q means exp(q / 16)
MULTIPLIER_BITS = 15              # every requantize multiplier is in [2^14, 2^15)
NORM_EPS = 1e-5                   # the float reference's RMS norm epsilon
_GELU_C = sqrt(2 / pi)


def gelu(x):
    """GELU, the tanh form (torch's ``gelu(approximate='tanh')``), element-wise."""
    if np.isscalar(x):
        return 0.5 * x * (1 + tanh(_GELU_C * (x + 0.044715 * x ** 3)))
    x = np.asarray(x)
    return 0.5 * x * (1 + np.tanh(_GELU_C * (x + 0.044715 * x ** 3)))


def float_weight_names(config=CONFIG):
    """{name: shape} of the float weights."""
    d, ff, V, C = config["d_model"], config["d_ff"], config["vocab"], config["context"]
    shapes = {"tok_emb": (V, d), "pos_emb": (C, d)}
    for l in range(config["n_layers"]):
        shapes.update({f"l{l}.norm1": (d,), f"l{l}.wq": (d, d), f"l{l}.wk": (d, d),
                       f"l{l}.wv": (d, d), f"l{l}.wo": (d, d), f"l{l}.norm2": (d,),
                       f"l{l}.w1": (d, ff), f"l{l}.w2": (ff, d)})
    shapes.update({"norm_f": (d,), "wout": (d, V)})
    return shapes


# Input checks ------------------------------------------------------------------------------------

def _check_tokens(tokens, *, allow_batch=True, context=CONFIG["context"]):
    """tokens as an int64 array (T,) or (B, T), checked (ValueError with a clear message)."""
    try:
        arr = np.asarray(tokens)
    except ValueError:
        raise ValueError("tokens must be a sequence or a rectangular batch of token ids") from None
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer token ids, not {arr.dtype} values")
    if arr.ndim not in ((1, 2) if allow_batch else (1,)):
        raise ValueError(f"tokens must be a sequence (T,) or a batch (B, T), not shape {arr.shape}")
    if arr.shape[-1] == 0:
        raise ValueError("tokens must not be empty")
    if arr.shape[-1] > context:
        raise ValueError(f"{arr.shape[-1]} tokens do not fit the context of {context} positions")
    bad = (arr < 0) | (arr >= CONFIG["vocab"])
    if bad.any():
        raise ValueError(f"token {arr[bad].reshape(-1)[0]} is not in the vocabulary "
                         f"(ids 0 .. {CONFIG['vocab'] - 1})")
    return arr.astype(np.int64)


def _check_prompt(prompt, context=CONFIG["context"]):
    if isinstance(prompt, str):
        prompt = task.tokenize(prompt)
    return _check_tokens(prompt, allow_batch=False, context=context).tolist()


# Float reference ---------------------------------------------------------------------------------

def _norm(x):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + NORM_EPS)


def float_forward(weights, tokens, trace=None):
    """Float logits (float64, (T, V) or (B, T, V)) of token ids (T,) or (B, T). With a dict
    ``trace``, records the activations the quantizer calibrates on: ``x`` (every residual
    point), ``l.n1``, ``l.n2``, ``final.n`` (x / rms, before the gain), ``l.q, k, v, o, u, g``."""
    tokens = _check_tokens(tokens)
    W = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    H, dh = CONFIG["n_heads"], CONFIG["d_head"]
    T = tokens.shape[-1]
    rec = (lambda name, v: trace.setdefault(name, []).append(v)) if trace is not None else (
        lambda name, v: None)
    x = W["tok_emb"][tokens] + W["pos_emb"][:T]
    rec("x", x)
    causal = np.tril(np.ones((T, T), dtype=bool))
    for l in range(CONFIG["n_layers"]):
        n = _norm(x)
        rec(f"l{l}.n1", n)
        h = n * W[f"l{l}.norm1"]
        q, k, v = (h @ W[f"l{l}.w{c}"] for c in "qkv")
        for c, t in zip("qkv", (q, k, v)):
            rec(f"l{l}.{c}", t)
        heads = lambda t: np.swapaxes(t.reshape(t.shape[:-1] + (H, dh)), -2, -3)
        s = heads(q) @ np.swapaxes(heads(k), -1, -2) / sqrt(dh)
        s = np.where(causal, s, -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        o = np.swapaxes(p @ heads(v), -2, -3).reshape(x.shape)
        rec(f"l{l}.o", o)
        x = x + o @ W[f"l{l}.wo"]
        rec("x", x)
        n = _norm(x)
        rec(f"l{l}.n2", n)
        u = (n * W[f"l{l}.norm2"]) @ W[f"l{l}.w1"]
        g = gelu(u)
        rec(f"l{l}.u", u), rec(f"l{l}.g", g)
        x = x + g @ W[f"l{l}.w2"]
        rec("x", x)
    n = _norm(x)
    rec("final.n", n)
    return (n * W["norm_f"]) @ W["wout"]


def generate_float_batch(weights, prompts, max_new=task.MAX_ANSWER):
    """Greedy generation with the float reference for several prompts (token lists or strings),
    recomputing the sequence each step; stops at END, after ``max_new`` tokens or when the
    sequence fills the context. Returns a list of token lists."""
    prompts = [_check_prompt(p) for p in prompts]
    out = [None] * len(prompts)
    for length in sorted({len(p) for p in prompts}):
        idx = [i for i, p in enumerate(prompts) if len(p) == length]
        seq = np.array([prompts[i] for i in idx], dtype=np.int64)
        done = np.zeros(len(idx), dtype=bool)
        gen = [[] for _ in idx]
        for _ in range(min(max_new, CONFIG["context"] - length)):
            nxt = np.argmax(float_forward(weights, seq)[:, -1], axis=-1)
            for j in np.flatnonzero(~done):
                gen[j].append(int(nxt[j]))
            done |= nxt == task.END
            if done.all():
                break
            seq = np.concatenate([seq, nxt[:, None]], axis=1)
        for j, i in enumerate(idx):
            out[i] = gen[j]
    return out


def generate_float(weights, prompt, max_new=task.MAX_ANSWER):
    """Greedy generation with the float reference: the generated token ids (END included when
    produced)."""
    return generate_float_batch(weights, [prompt], max_new)[0]


# Quantization --------------------------------------------------------------------------------------

def quantize_multiplier(ratio, bits=MULTIPLIER_BITS):
    """(multiplier, shift) with multiplier / 2^shift ~ ratio, multiplier in [2^(bits-1), 2^bits)
    and shift in 0..63 (a ratio too large for shift 0 keeps shift 0 and a larger multiplier)."""
    if not ratio > 0:
        raise ValueError(f"a requantize ratio must be positive, not {ratio!r}")
    shift = bits - 1 - floor(log2(ratio))
    if shift < 0:
        multiplier, shift = floor(ratio + 0.5), 0
        if multiplier >= 1 << 31:
            raise ValueError(f"ratio {ratio} is too large for an int32 multiplier")
        return multiplier, shift
    multiplier = floor(ratio * 2.0 ** shift + 0.5)
    if multiplier == 1 << bits:
        multiplier, shift = multiplier >> 1, shift - 1
    if shift > 63:
        raise ValueError(f"ratio {ratio} is too small for a shift of at most 63")
    return multiplier, shift


def norm_scale(shift, d=CONFIG["d_model"]):
    """The output scale of ``rmsnorm_reference(x, shift)`` on d features, per unit of
    x / rms(x): sqrt(d) x 2^(shift - 30)."""
    return sqrt(d) * 2.0 ** (shift - 30)


def norm_shift_for(max_abs, d=CONFIG["d_model"]):
    """The smallest shift whose norm output covers max_abs (units of x / rms(x)) in int8."""
    shift = 0
    while 127 * norm_scale(shift, d) < max_abs:
        shift += 1
    return shift


def _stat(values, percentile):
    a = np.abs(np.concatenate([np.asarray(v).reshape(-1) for v in values]))
    return float(np.max(a) if percentile >= 100 else np.percentile(a, percentile))


def calibrate(weights, sequences, percentile=100.0, residual_percentile=None):
    """Activation scales from running the float reference on ``sequences`` (token arrays, rows
    of a batch or a list of equal-length batches): {"x": s_x, "norm_shift": [5 shifts],
    "l{l}.q" .. "l{l}.g": scales}. A scale is (max or ``percentile`` of |activation|) / 127."""
    trace = {}
    batches = sequences if isinstance(sequences, (list, tuple)) else [sequences]
    for batch in batches:
        float_forward(weights, batch, trace)
    rp = percentile if residual_percentile is None else residual_percentile
    scales = {"x": _stat(trace["x"], rp) / 127}
    names = [f"l{l}.n{i}" for l in range(CONFIG["n_layers"]) for i in (1, 2)] + ["final.n"]
    scales["norm_shift"] = [norm_shift_for(_stat(trace[n], percentile)) for n in names]
    for l in range(CONFIG["n_layers"]):
        for c in "qkvoug":
            scales[f"l{l}.{c}"] = _stat(trace[f"l{l}.{c}"], percentile) / 127
    return scales


def _quantize_weight(w):
    scale = float(np.max(np.abs(w))) / 127
    if scale == 0:
        scale = 1.0
    return np.clip(np.floor(w / scale + 0.5), -127, 127).astype(np.int8), scale


def quantize(weights, scales):
    """The integer model's arrays (a dict to save under ``int.`` / ``rq.`` / ``scale.`` keys)
    from float weights and activation ``scales`` (:func:`calibrate`)."""
    W = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    L, dh = CONFIG["n_layers"], CONFIG["d_head"]
    s_x = scales["x"]
    shifts = [int(s) for s in scales["norm_shift"]]
    out, rq, sc = {}, {}, {"x": s_x}
    out["int.tok_emb"] = np.clip(np.floor(W["tok_emb"] / s_x + 0.5), -128, 127).astype(np.int8)
    out["int.pos_emb"] = np.clip(np.floor(W["pos_emb"] / s_x + 0.5), -128, 127).astype(np.int8)
    gelu_tables = []
    bias, _ = mask_bias(dh)
    for l in range(L):
        s_n1, s_n2 = norm_scale(shifts[2 * l]), norm_scale(shifts[2 * l + 1])
        s = {c: scales[f"l{l}.{c}"] for c in "qkvoug"}
        for c in "qkv":
            wq, ws = _quantize_weight(W[f"l{l}.norm1"][:, None] * W[f"l{l}.w{c}"])
            out[f"int.l{l}.w{c}"], sc[f"w.l{l}.{c}"] = wq, ws
            rq[f"l{l}.{c}"] = quantize_multiplier(s_n1 * ws / s[c])
        ratio = s["q"] * s["k"] / (sqrt(dh) * EXP_STEP)
        rq[f"l{l}.score"] = m, sh = quantize_multiplier(ratio)
        # A masked score must saturate to -128 (table entry 0) for prefill to equal decode.
        worst = -bias - 2 * dh * 128 * 128
        if worst * m / 2.0 ** sh < 128.5:
            raise ValueError(f"layer {l}: the score ratio {ratio:.3g} is too small for the mask")
        rq[f"l{l}.o"] = quantize_multiplier(s["v"] / (128 * s["o"]))
        wq, ws = _quantize_weight(W[f"l{l}.wo"])
        out[f"int.l{l}.wo"], sc[f"w.l{l}.o"] = wq, ws
        rq[f"l{l}.attn"] = quantize_multiplier(s["o"] * ws / s_x)
        wq, ws = _quantize_weight(W[f"l{l}.norm2"][:, None] * W[f"l{l}.w1"])
        out[f"int.l{l}.w1"], sc[f"w.l{l}.1"] = wq, ws
        rq[f"l{l}.up"] = quantize_multiplier(s_n2 * ws / s["u"])
        gelu_tables.append(activation_table(gelu, s["u"], s["g"]))
        wq, ws = _quantize_weight(W[f"l{l}.w2"])
        out[f"int.l{l}.w2"], sc[f"w.l{l}.2"] = wq, ws
        rq[f"l{l}.down"] = quantize_multiplier(s["g"] * ws / s_x)
        for c in "qkvoug":
            sc[f"l{l}.{c}"] = s[c]
    wq, ws = _quantize_weight(W["norm_f"][:, None] * W["wout"])
    out["int.wout"], sc["w.out"] = wq, ws
    out["int.norm_shift"] = np.array(shifts, dtype=np.int64)
    out["int.exp_step"] = np.array(EXP_STEP)
    out["int.exp_table"] = exp_table(EXP_STEP)
    out["int.gelu_table"] = np.stack(gelu_tables)
    out["rq.names"] = np.array(list(rq))
    out["rq.values"] = np.array(list(rq.values()), dtype=np.int64)
    out["scale.names"] = np.array(list(sc))
    out["scale.values"] = np.array(list(sc.values()), dtype=np.float64)
    return out


def save(path, weights, quantized):
    """Writes the model file: float weights (float32, ``float.*``), the integer model, the
    configuration (``config.*``)."""
    arrays = {f"float.{k}": np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    arrays.update(quantized)
    arrays.update({f"config.{k}": np.array(v) for k, v in CONFIG.items()})
    np.savez_compressed(path, **arrays)


def _load(path):
    path = WEIGHTS_PATH if path is None else Path(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    config = {k[len("config."):]: int(v) for k, v in arrays.items() if k.startswith("config.")}
    if config != CONFIG:
        raise ValueError(f"{path}: the model file's configuration {config} is not {CONFIG}")
    return arrays


def load_float_weights(path=None):
    """The float reference's weights {name: float32 array} from the model file."""
    arrays = _load(path)
    return {k[len("float."):]: v for k, v in arrays.items() if k.startswith("float.")}


# Integer reference ------------------------------------------------------------------------------

def _mm(a, b):
    """The integer matrix product of integer arrays (int64 result). Done in float64, which is
    exact here: every product and partial sum is an integer far below 2^53."""
    return np.matmul(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
                     ).astype(np.int64)


def _rq(a, mult_shift):
    m, s = mult_shift
    return isa.requantize(a, m, s).astype(np.int32).astype(np.int64)


def _sat8(v):
    return np.clip(v, -128, 127)


class KVCache:
    """Keys and values of the tokens so far: per layer, int8-valued int64 arrays K, V of shape
    (B, heads, length, 16). ``length`` is the next position."""

    def __init__(self, batch=1):
        self.batch = batch
        self.layers = [None] * CONFIG["n_layers"]
        self.length = 0

    def append(self, l, k, v):
        if self.layers[l] is None:
            self.layers[l] = (k, v)
        else:
            K, V = self.layers[l]
            self.layers[l] = (np.concatenate([K, k], axis=2), np.concatenate([V, v], axis=2))
        return self.layers[l]


class IntModel:
    """The integer model of the model file (see the module docstring for the exact pipeline)."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.config = dict(CONFIG)
        g = lambda name: arrays["int." + name].astype(np.int64)
        self.tok_emb, self.pos_emb, self.wout = g("tok_emb"), g("pos_emb"), g("wout")
        self.layers = [{w: g(f"l{l}.{w}") for w in ("wq", "wk", "wv", "wo", "w1", "w2")}
                       for l in range(CONFIG["n_layers"])]
        self.norm_shift = [int(s) for s in arrays["int.norm_shift"]]
        self.exp_table = arrays["int.exp_table"]
        self.gelu_table = arrays["int.gelu_table"].astype(np.int64)
        self.rq = {str(n): (int(v[0]), int(v[1]))
                   for n, v in zip(arrays["rq.names"], arrays["rq.values"])}
        self.scales = {str(n): float(v)
                       for n, v in zip(arrays["scale.names"], arrays["scale.values"])}

    @classmethod
    def load(cls, path=None):
        """The integer model of the model file (default: the shipped ``weights.npz``)."""
        return cls(_load(path))

    # One pass over new tokens at positions start .. start + T - 1 -------------------------------

    def _forward(self, tokens, start, cache, trace):
        B, T = tokens.shape
        H, dh = CONFIG["n_heads"], CONFIG["d_head"]
        rec = (lambda name, v: trace.__setitem__(name, v)) if trace is not None else (
            lambda name, v: None)
        x = _sat8(self.tok_emb[tokens] + self.pos_emb[start:start + T])
        rec("x0", x)
        heads = lambda t: np.swapaxes(t.reshape(B, T, H, dh), 1, 2)       # B H T dh
        # Query row r (position start + r) sees keys 0 .. start + r.
        mask = np.arange(start + T)[None, :] <= (start + np.arange(T))[:, None]
        for l, W in enumerate(self.layers):
            h = rmsnorm_reference(x, self.norm_shift[2 * l])
            q = _rq(_mm(h, W["wq"]), self.rq[f"l{l}.q"])
            k = _rq(_mm(h, W["wk"]), self.rq[f"l{l}.k"])
            v = _rq(_mm(h, W["wv"]), self.rq[f"l{l}.v"])
            K, V = cache.append(l, heads(k), heads(v))
            S = _mm(heads(q), np.swapaxes(K, -1, -2))                           # B H T keys
            m, s = self.rq[f"l{l}.score"]
            P = softmax_reference(S, mask, m, s, self.exp_table, dh).astype(np.int64)
            o = _rq(_mm(P, V), self.rq[f"l{l}.o"])                              # B H T dh
            o = np.swapaxes(o, 1, 2).reshape(B, T, H * dh)
            a = _rq(_mm(o, W["wo"]), self.rq[f"l{l}.attn"])
            x1 = _sat8(x + a)
            h2 = rmsnorm_reference(x1, self.norm_shift[2 * l + 1])
            u = _rq(_mm(h2, W["w1"]), self.rq[f"l{l}.up"])
            gl = self.gelu_table[l][u + 128]
            f = _rq(_mm(gl, W["w2"]), self.rq[f"l{l}.down"])
            x2 = _sat8(x1 + f)
            for name, val in (("h1", h), ("q", q), ("k", k), ("v", v), ("S", S), ("P", P),
                              ("o", o), ("a", a), ("x1", x1), ("h2", h2), ("u", u), ("g", gl),
                              ("f", f), ("x2", x2)):
                rec(f"l{l}.{name}", val)
            x = x2
        cache.length = start + T
        h = rmsnorm_reference(x, self.norm_shift[-1])
        rec("final.h", h)
        logits = _mm(h, self.wout)
        rec("logits", logits)
        return logits

    def int_forward_prefill(self, tokens, trace=None):
        """All tokens at once, from position 0: (int32 logits (T, V) or (B, T, V), the
        :class:`KVCache` to decode on from). ``trace``: a dict to fill with every intermediate
        integer tensor (``x0``, ``l{l}.h1`` .. ``l{l}.x2``, ``final.h``, ``logits``)."""
        tokens = _check_tokens(tokens)
        batched = tokens.ndim == 2
        tokens = tokens if batched else tokens[None]
        cache = KVCache(tokens.shape[0])
        logits = self._forward(tokens, 0, cache, trace)
        return (logits if batched else logits[0]), cache

    def int_decode_step(self, token, position, kv_cache, trace=None):
        """One token (an id, or a (B,) array of ids) at ``position`` (= kv_cache.length):
        appends its keys and values to ``kv_cache`` and returns its int32 logits ((V,) or
        (B, V))."""
        if not isinstance(kv_cache, KVCache):
            raise ValueError("kv_cache must be a KVCache (from int_forward_prefill or KVCache())")
        tok = _check_tokens(np.reshape(token, (-1, 1)))
        batched = np.ndim(token) == 1
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise ValueError(f"position must be an integer, not {position!r}")
        if position != kv_cache.length:
            raise ValueError(f"position {position} does not follow the cache's "
                             f"{kv_cache.length} tokens")
        if position >= CONFIG["context"]:
            raise ValueError(f"position {position} is outside the context of "
                             f"{CONFIG['context']} positions")
        if kv_cache.layers[0] is not None and kv_cache.layers[0][0].shape[0] != tok.shape[0]:
            raise ValueError(f"{tok.shape[0]} tokens for a cache of batch "
                             f"{kv_cache.layers[0][0].shape[0]}")
        logits = self._forward(tok, int(position), kv_cache, trace)[:, 0]
        return logits if batched else logits[0]

    # Generation ---------------------------------------------------------------------------------

    def generate_int_batch(self, prompts, max_new=task.MAX_ANSWER):
        """Greedy generation for several prompts (token lists or strings): prefill, then decode
        steps on the KV cache; stops at END, after ``max_new`` tokens or when the sequence
        fills the context. Returns a list of token lists (END included when produced)."""
        prompts = [_check_prompt(p) for p in prompts]
        out = [None] * len(prompts)
        for length in sorted({len(p) for p in prompts}):
            idx = [i for i, p in enumerate(prompts) if len(p) == length]
            logits, cache = self.int_forward_prefill(np.array([prompts[i] for i in idx]))
            last = logits[:, -1]
            done = np.zeros(len(idx), dtype=bool)
            gen = [[] for _ in idx]
            budget = min(max_new, CONFIG["context"] - length)
            for step in range(budget):
                nxt = np.argmax(last, axis=-1)
                for j in np.flatnonzero(~done):
                    gen[j].append(int(nxt[j]))
                done |= nxt == task.END
                if done.all() or step == budget - 1:
                    break
                last = self.int_decode_step(nxt, cache.length, cache)
            for j, i in enumerate(idx):
                out[i] = gen[j]
        return out

    def generate_int(self, prompt, max_new=task.MAX_ANSWER):
        """Greedy generation with the integer model: the generated token ids."""
        return self.generate_int_batch([prompt], max_new)[0]

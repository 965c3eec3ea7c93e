"""Trains the tiny transformer on the addition task, quantizes it and writes the model file.

    python -m programs.transformer.train --out programs/transformer/weights.npz [--steps N]
        [--qat-steps N] [--seed S] [--threads T]

Needs torch (the ``train`` optional dependency); the shipped ``weights.npz`` makes it
unnecessary for everything else. On CPU, seeded, deterministic for a given torch build and
thread count:

1. float training on the training split (AdamW, warmup then cosine decay; cross entropy on the
   answer tokens only);
2. calibration: the float reference (:func:`~.model.float_forward`, numpy) on training
   sequences gives every activation scale (:func:`~.model.calibrate`);
3. quantization-aware fine-tuning: the forward pass simulates the integer pipeline (int8
   embeddings, saturating int8 residual at s_x, the norms' power-of-two output scales, int8
   weights with the gains folded in, int8 q/k/v/o/u/g at the calibrated scales, the exp
   table's index and values, probabilities on the 1/128 grid) with straight-through rounding,
   the activation scales held fixed;
4. :func:`~.model.quantize` with those same scales, and :func:`~.model.save`.
"""

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import model as M
from . import task

SEQ = 13                  # the longest sequence: "999+999=" and "8991$"


# Data ---------------------------------------------------------------------------------------------

def encode(a, b):
    """(tokens (n, SEQ) padded with END, prompt lengths, sequence lengths) of pairs."""
    n = len(a)
    out = np.full((n, SEQ), task.END, dtype=np.int64)
    plen, slen = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        p = task.prompt(x, y)
        s = p + task.answer(x, y)
        out[i, :len(s)] = s
        plen[i], slen[i] = len(p), len(s)
    return out, plen, slen


def batch(rng, n, split="train"):
    tokens, plen, slen = encode(*task.sample_pairs(rng, n, split))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    j = np.arange(SEQ - 1)[None, :]
    mask = (j >= plen[:, None] - 1) & (j < slen[:, None] - 1)     # predictions of the answer
    return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(mask)


def grouped(tokens, slen):
    """Sequences grouped by length: a list of (n_i, L_i) arrays (for the numpy references)."""
    return [tokens[slen == L, :L] for L in np.unique(slen)]


# The model ------------------------------------------------------------------------------------

def ste_round(x):
    return x + (torch.round(x) - x).detach()


def fake_quant(x, scale, lo=-128, hi=127):
    return torch.clamp(ste_round(x / scale), lo, hi) * scale


def fake_quant_weight(w):
    scale = (w.detach().abs().max() / 127).clamp_min(1e-12)
    return fake_quant(w, scale, -127, 127)


class Transformer(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        shapes = M.float_weight_names()
        L = M.CONFIG["n_layers"]
        self.p = torch.nn.ParameterDict()
        for name, shape in shapes.items():
            key = name.replace(".", "_")
            if "norm" in name:
                value = torch.ones(shape)
            elif "emb" in name:
                value = torch.randn(shape, generator=g) * 0.5
            else:
                std = 1 / math.sqrt(shape[0])
                if name.endswith(("wo", "w2")):
                    std /= math.sqrt(2 * L)
                value = torch.randn(shape, generator=g) * std
            self.p[key] = torch.nn.Parameter(value)

    def weights(self):
        """The float weights as numpy float32 arrays."""
        return {name: self.p[name.replace(".", "_")].detach().numpy().astype(np.float32)
                for name in M.float_weight_names()}

    def w(self, name):
        return self.p[name.replace(".", "_")]

    def forward(self, tokens, scales=None):
        """Logits (B, T, V); with ``scales`` (from calibrate) the integer pipeline's fake
        quantization."""
        B, T = tokens.shape
        H, dh = M.CONFIG["n_heads"], M.CONFIG["d_head"]
        q8 = scales is not None
        if q8:
            s_x = scales["x"]
            resid = lambda v: torch.clamp(v, -128 * s_x, 127 * s_x)
            x = resid(fake_quant(self.w("tok_emb"), s_x)[tokens]
                      + fake_quant(self.w("pos_emb"), s_x)[:T])
        else:
            x = self.w("tok_emb")[tokens] + self.w("pos_emb")[:T]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))

        def norm(v, index, gain, *ws):
            n = v / torch.sqrt((v * v).mean(-1, keepdim=True) + M.NORM_EPS)
            if not q8:
                n = n * gain
                return [n @ W for W in ws]
            n = fake_quant(n, M.norm_scale(scales["norm_shift"][index]))
            return [n @ fake_quant_weight(gain[:, None] * W) for W in ws]

        heads = lambda t: t.view(B, T, H, dh).transpose(1, 2)
        for l in range(M.CONFIG["n_layers"]):
            q, k, v = norm(x, 2 * l, self.w(f"l{l}.norm1"),
                           *(self.w(f"l{l}.w{c}") for c in "qkv"))
            if q8:
                q, k, v = (fake_quant(t, scales[f"l{l}.{c}"]) for c, t in zip("qkv", (q, k, v)))
            s = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(dh)
            if q8:
                s = s.masked_fill(~causal, -1e9)
                d = s - s.max(-1, keepdim=True).values.detach()
                idx = torch.clamp(ste_round(d / M.EXP_STEP), -128, 0)
                e = ste_round(127 * torch.exp(idx * M.EXP_STEP)) * (idx > -128)
                p = fake_quant(e / e.sum(-1, keepdim=True), 1 / 128, 0, 127)
                o = fake_quant((p @ heads(v)).transpose(1, 2).reshape(B, T, H * dh),
                               scales[f"l{l}.o"])
                x = resid(x + fake_quant(o @ fake_quant_weight(self.w(f"l{l}.wo")), s_x))
            else:
                p = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
                o = (p @ heads(v)).transpose(1, 2).reshape(B, T, H * dh)
                x = x + o @ self.w(f"l{l}.wo")
            (u,) = norm(x, 2 * l + 1, self.w(f"l{l}.norm2"), self.w(f"l{l}.w1"))
            if q8:
                u = fake_quant(u, scales[f"l{l}.u"])
                g = fake_quant(F.gelu(u, approximate="tanh"), scales[f"l{l}.g"])
                x = resid(x + fake_quant(g @ fake_quant_weight(self.w(f"l{l}.w2")), s_x))
            else:
                x = x + F.gelu(u, approximate="tanh") @ self.w(f"l{l}.w2")
        (logits,) = norm(x, 2 * M.CONFIG["n_layers"], self.w("norm_f"), self.w("wout"))
        return logits


# Training ---------------------------------------------------------------------------------------

def exact_rate(net, data, scales=None):
    """The fraction of sequences whose every answer token is the argmax (teacher forced: the
    same as greedy generation being exactly right)."""
    inputs, targets, mask = data
    with torch.no_grad():
        pred = net(inputs, scales).argmax(-1)
    return float(((pred == targets) | ~mask).all(-1).float().mean())


def run(net, rng, steps, lr, scales, log_every, eval_data, label, weight_decay, batch_size):
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.98))
    warmup = min(200, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1, (i + 1) / max(1, warmup)) * (
        0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))) if steps else 1)
    start = time.time()
    for i in range(steps):
        inputs, targets, mask = batch(rng, batch_size)
        logits = net(inputs, scales)
        loss = F.cross_entropy(logits[mask], targets[mask])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if (i + 1) % log_every == 0 or i + 1 == steps:
            rate = exact_rate(net, eval_data, scales)
            print(f"{label} step {i + 1}/{steps}: loss {loss.item():.4f}, held-out exact "
                  f"{rate:.3f} ({time.time() - start:.0f} s)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(M.WEIGHTS_PATH))
    parser.add_argument("--steps", type=int, default=3000, help="float training steps")
    parser.add_argument("--qat-steps", type=int, default=500,
                        help="quantization-aware fine-tuning steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest for this small model)")
    parser.add_argument("--percentile", type=float, default=100.0,
                        help="calibration: the percentile of |activation| that int8 covers")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    net = Transformer(args.seed)
    eval_data = batch(np.random.default_rng(10_000 + args.seed), 1000, "heldout")
    run(net, rng, args.steps, args.lr, None, 500, eval_data, "float", 0.01, args.batch)

    tokens, _, slen = encode(*task.sample_pairs(np.random.default_rng(20_000 + args.seed), 2000))
    scales = M.calibrate(net.weights(), grouped(tokens, slen), args.percentile)
    print("calibrated:", {k: (round(v, 5) if isinstance(v, float) else v)
                          for k, v in scales.items()})
    print(f"fake-quantized before fine-tuning: held-out exact "
          f"{exact_rate(net, eval_data, scales):.3f}")
    run(net, rng, args.qat_steps, args.lr / 10, scales, 500, eval_data, "qat", 0.0, args.batch)
    weights = net.weights()
    M.save(args.out, weights, M.quantize(weights, scales))
    print(f"wrote {args.out} after {time.time() - start:.0f} s")
    from .evaluate import evaluate
    r = evaluate(500, 0, args.out)
    print(f"held-out (500 prompts): float {r['float']} exact, integer {r['int']} exact, "
          f"{r['agree']} identical generations")


if __name__ == "__main__":
    main()

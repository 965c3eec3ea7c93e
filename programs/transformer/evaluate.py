"""Held-out accuracy of the float and integer references, and how often they agree.

    python -m programs.transformer.evaluate [--n 500] [--seed 0] [--weights PATH]

Greedy generation on ``n`` held-out prompts (:func:`.task.heldout_pairs`, never trained on);
an answer is exact when :func:`.task.check` accepts it; the two references agree on a prompt
when they generate the same token sequence.
"""

import argparse
import time

from . import model as M
from . import task


def evaluate(n=500, seed=0, path=None):
    """{"n", "float", "int", "agree"}: counts of exact float answers, exact integer answers and
    identical generations on ``n`` held-out prompts, and the seconds each reference took."""
    a, b = task.heldout_pairs(n, seed)
    prompts = [task.prompt(x, y) for x, y in zip(a.tolist(), b.tolist())]
    weights, int_model = M.load_float_weights(path), M.IntModel.load(path)
    t0 = time.time()
    float_out = M.generate_float_batch(weights, prompts)
    t1 = time.time()
    int_out = int_model.generate_int_batch(prompts)
    t2 = time.time()
    return {"n": n,
            "float": sum(task.check(p, g) for p, g in zip(prompts, float_out)),
            "int": sum(task.check(p, g) for p, g in zip(prompts, int_out)),
            "agree": sum(f == i for f, i in zip(float_out, int_out)),
            "float_seconds": t1 - t0, "int_seconds": t2 - t1}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="held-out prompts")
    parser.add_argument("--seed", type=int, default=0, help="which held-out sample")
    parser.add_argument("--weights", default=None, help="the model file (default: shipped)")
    args = parser.parse_args(argv)
    r = evaluate(args.n, args.seed, args.weights)
    n = r["n"]
    print(f"held-out prompts: {n}")
    print(f"float reference:   {r['float']}/{n} exact ({100 * r['float'] / n:.1f}%), "
          f"{r['float_seconds']:.1f} s")
    print(f"integer reference: {r['int']}/{n} exact ({100 * r['int'] / n:.1f}%), "
          f"{r['int_seconds']:.1f} s")
    print(f"agreement:         {r['agree']}/{n} identical generations "
          f"({100 * r['agree'] / n:.1f}%)")


if __name__ == "__main__":
    main()

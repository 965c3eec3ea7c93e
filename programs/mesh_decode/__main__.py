"""``python -m programs.mesh_decode [WxH ...] [--prompt P] [--steps N]``: the placement report
and the measured decode of the tiny model on each mesh: tokens (checked against the integer
reference), cycles per step, MAC utilization, and where the core-cycles go."""

import argparse
import time

from mesh import MeshConfig
from programs.transformer import task
from programs.transformer.model import IntModel

from . import MeshDecoder, prefill
from .decoder import PHASES


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m programs.mesh_decode")
    parser.add_argument("shapes", nargs="*", default=["4x4", "8x8"])
    parser.add_argument("--prompt", default="123+459=")
    parser.add_argument("--steps", type=int, default=None,
                        help="decode steps (default: until END, as generate_int)")
    parser.add_argument("--report", action="store_true", help="print the placement reports")
    args = parser.parse_args(argv)
    model = IntModel.load()
    expected = model.generate_int(args.prompt)
    steps = args.steps or len(expected) - 1
    _, cache, first = prefill(model, args.prompt)
    for shape in args.shapes:
        dec = MeshDecoder(model, MeshConfig.parse_shape(shape))
        if args.report:
            print(dec.report())
        start = time.time()
        run = dec.run(cache, first, steps=steps, end=task.END, phases=True)
        m = dec.measure(run)
        ok = [first] + run.tokens == expected[:len(run.tokens) + 1]
        print(f"{shape}: {args.prompt!r} -> {task.detokenize([first] + run.tokens)!r} "
              f"({'equal to' if ok else 'DIFFERENT FROM'} generate_int), {m['steps']} steps "
              f"in {m['cycles']} cycles: {m['cycles_per_step']:.0f} cycles/step, MAC "
              f"utilization {100 * m['mac_utilization']:.1f}% of 4 x {dec.config.tiles} per "
              f"cycle ({m['useful_macs']} weight MACs; {m['counted_macs']} counted), "
              f"emulated in {time.time() - start:.1f} s")
        share, wait = m["phase_share"], m["phase_wait_share"]
        print("  core-cycles: " + ", ".join(
            f"{p} {100 * share[p]:.1f}% ({100 * wait[p]:.0f}% waiting)"
            for p in PHASES if p in share))
        cc, cw = m["corner_cycles"], m["corner_waits"]
        print("  south-east core, per step: " + ", ".join(
            f"{p} {cc[p] / m['steps']:.0f} ({cw[p] / m['steps']:.0f} waiting)"
            for p in PHASES if p in cc))
        print(f"  waiting for the fabric (stall_in/stall_out): {100 * m['wait_share']:.1f}% of "
              f"all core-cycles")


if __name__ == "__main__":
    main()

"""The ``wafer`` command line.

    wafer run [--prompt P] [--mesh WxH] [--backend emulator] [--json] [--clock-mhz F]
              [--drop P] [--seed S] [--compare]
    wafer run PROGRAM [--mesh WxH] [--backend emulator|verilator|amaranth] [--json]
                      [--size NAME=VALUE ...] [--seed S] [--max-cycles N] [--waves FILE]
    wafer demo [--mesh WxH] [--json]
    wafer trace PROGRAM [--mesh WxH] [--backend ...] [--size NAME=VALUE ...] [--png FILE]
                        [--waves FILE] [--json [FILE]]
    wafer bench gemv [--sizes ...] [--rtl-sizes ...] [--json [FILE]]
    wafer bench prefill [--shapes MxKxN,...] [--bandwidths B,...] [--decode KxN,...]
                        [--decode-bandwidths B,...] [--n N] [--latency L] [--seed S]
                        [--json [FILE]] [--quick]
    wafer bench fabric [--sizes ...] [--rtl-sizes ...] [--loads ...] [--cycles N] [--seed S]
                       [--json [FILE]] [--quick]
    wafer bench link [--sizes 16K,256K,1M] [--lanes 1,2,4] [--drops 0,0.001,0.01,0.05]
                     [--seeds 1,2,3,4] [--json [FILE]] [--plot FILE] [--quick]
    wafer bench decode [--strong WxH,...] [--weak WxH,...] [--bandwidths B,...]
                       [--dram-bandwidth B] [--share F] [--sram-words N] [--colors N]
                       [--ttft WxH,...] [--json [FILE]] [--plot FILE] [--quick]

``wafer run`` without PROGRAM is the main demo: disaggregated inference of the tiny
transformer (prefill on the prefill engine, the KV cache over the packet link, decode on the
mesh; :mod:`programs.system`), on the emulators; ``wafer demo`` is the fabric demo.

Mistakes in what was asked (a bad mesh shape, a load out of range, an assembly error) print one
line and exit with status 2; a benchmark whose RTL and emulator results differ, and a program
that traps, stops making progress or computes a wrong result, and a link run that does not
deliver its message byte for byte, exit with status 1.
"""

import argparse
import json
import sys
from pathlib import Path

from mesh import ConfigError, MeshConfig

__all__ = ["main"]

DEFAULT_JSON = "results/bench_fabric.json"


class UsageError(Exception):
    """A command-line value that cannot be used; the message is one line."""


def _report_options(parser, json_default, plot_default=None, plot_what=None, quick=None):
    """A benchmark's --json option, and --plot and --quick when given (``plot_what``: what the
    plot shows; ``quick``: what the short sweep runs)."""
    parser.add_argument("--json", nargs="?", const="-", default=json_default, metavar="FILE",
                        help="write the JSON report to FILE (default: %(default)s); without "
                             "FILE, print it to stdout instead of the tables")
    if plot_default is not None:
        parser.add_argument("--plot", default=plot_default, metavar="FILE",
                            help=f"write the {plot_what} plot (PNG) to FILE; 'none' for no plot "
                                 f"(default: %(default)s)")
    if quick is not None:
        parser.add_argument("--quick", action="store_true",
                            help=f"a short sweep ({quick}); explicit options still apply")


def _parser():
    parser = argparse.ArgumentParser(
        prog="wafer", description="A wafer-scale engine at reduced scale: demo and benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the fabric demo on the emulator")
    demo.add_argument("--mesh", metavar="WxH", help="mesh shape (default: the demo's, 8x8)")
    demo.add_argument("--json", action="store_true",
                      help="print a machine-readable JSON report instead of the readable one")

    run = commands.add_parser(
        "run", help="without PROGRAM: disaggregated inference end to end (the main demo); "
                    "with PROGRAM: a program on the mesh (emulator, Verilator or Amaranth)",
        description="Without PROGRAM: the tiny transformer answers --prompt with prefill on "
                    "the prefill engine, its KV cache sent over the packet link and delivered "
                    "into the mesh, and decode on the mesh, on the emulators; prints the answer "
                    "(checked against the integer reference), the cycles of every phase, time "
                    "to first token, tokens per second at a nominal clock and counters (exit "
                    "status 1 if the tokens differ from the reference). With PROGRAM: run an "
                    "example kernel (checked against numpy) or an assembly file to completion, "
                    "and print results, cycles, speed and counters.")
    run.add_argument("program", metavar="PROGRAM", nargs="?",
                     help="an example kernel (allreduce, broadcast, column_reduce, dot, gemv, "
                          "vector_add) or an assembly file (.s); none: the disaggregated demo")
    run.add_argument("--mesh", metavar="WxH",
                     help="mesh shape (demo and kernels: default 4x4; assembly: the file's "
                          ".mesh)")
    run.add_argument("--prompt", default=None, metavar="P",
                     help="demo: the prompt, a+b= with a, b of 1 to 3 digits (default: "
                          "123+459=)")
    run.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                     help="demo: the nominal clock for times and tokens per second (default: "
                          "1000 MHz)")
    run.add_argument("--drop", type=float, default=None, metavar="P",
                     help="demo: probability that the link drops a packet, every lane "
                          "(default: 0)")
    run.add_argument("--compare", action="store_true",
                     help="demo: also run the prompt on the prefill engine alone (prefill and "
                          "decode steps) and compare")
    run.add_argument("--backend", choices=("emulator", "verilator", "amaranth"),
                     default="emulator", help="simulator (default: %(default)s)")
    run.add_argument("--json", action="store_true", help="print a JSON report")
    run.add_argument("--size", action="append", metavar="NAME=VALUE",
                     help="a kernel size parameter, e.g. --size rows_per_core=16 (repeatable)")
    run.add_argument("--seed", type=int, default=0,
                     help="kernel data seed; demo: the link's fault seed (default: 0)")
    run.add_argument("--max-cycles", type=int, default=1_000_000, metavar="N",
                     help="stop after N cycles (default: %(default)s)")
    run.add_argument("--stall-limit", type=int, default=200, metavar="N",
                     help="report no progress after N idle cycles (default: %(default)s)")
    run.add_argument("--waves", metavar="FILE",
                     help="write a waveform (.vcd; .fst on verilator) of an RTL run")

    bench = commands.add_parser("bench", help="run a benchmark")
    benchmarks = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    fabric = benchmarks.add_parser(
        "fabric", help="fabric throughput, latency and simulator speed (emulator and Verilator)",
        description="Accepted throughput and latency versus offered load for two workloads "
                    "(east_neighbour, multicast_and_chains), and simulator speed, on the "
                    "emulator and on the RTL compiled by Verilator. Every RTL run is checked "
                    "to equal the emulator run with the same parameters.")
    fabric.add_argument("--sizes", metavar="WxH,...",
                        help="emulator meshes (default: 8x8,16x16,32x32,64x64)")
    fabric.add_argument("--rtl-sizes", metavar="WxH,...",
                        help="Verilator meshes, also run on the emulator; 'none' for no RTL "
                             "(default: 4x4,8x8)")
    fabric.add_argument("--loads", metavar="L,...",
                        help="offered loads, wavelets per flow per cycle, 0 to 1 "
                             "(default: 0.1,0.3,0.5,0.7,0.9,1.0)")
    fabric.add_argument("--cycles", metavar="N",
                        help="cycles per run, warm-up included (default: by mesh size, "
                             "2000 to 15000)")
    fabric.add_argument("--seed", default="1", metavar="S",
                        help="traffic seed (default: %(default)s)")
    _report_options(fabric, DEFAULT_JSON, quick="8x8 emulator, 4x4 RTL, loads 0.1,0.5,1.0, "
                                                "1000 cycles")
    gemv_bench = benchmarks.add_parser(
        "gemv", help="GEMV on the mesh: MAC rate against the peak, simulator speed",
        description="y = W x with W tiled over the mesh, on the emulator and on Verilator; "
                    "cycles, MAC rate against the peak of 4 per core per cycle, and cycles/s. "
                    "Every Verilator run is checked equal to the emulator run.")
    gemv_bench.add_argument("--sizes", metavar="WxH,...",
                            help="emulator meshes (default: 4x4,8x8,32x32)")
    gemv_bench.add_argument("--rtl-sizes", metavar="WxH,...",
                            help="Verilator meshes, also run on the emulator; 'none' for no RTL "
                                 "(default: 4x4,8x8)")
    _report_options(gemv_bench, "results/bench_gemv.json")
    prefill = benchmarks.add_parser(
        "prefill", help="GEMMs and decode GEMVs on the prefill engine at several DRAM bandwidths",
        description="A tiny transformer's prefill GEMMs (A and B from DRAM, C stored back) and "
                    "decode GEMVs on the prefill engine's emulator: cycles, utilization, the "
                    "closed-form compute cycles, DMA stalls, DRAM bytes and bounds, and "
                    "SCALE-Sim's weight-stationary count. Every result is checked against numpy.")
    prefill.add_argument("--shapes", metavar="MxKxN,...",
                         help="GEMM shapes; 'none' for no GEMMs (default: 64x64x64,64x64x256,"
                              "64x256x64,64x256x256,64x256x1024,256x256x256)")
    prefill.add_argument("--bandwidths", metavar="B,...",
                         help="DRAM bytes per cycle for the GEMMs, 1 to 128 (default: 1,4,16,64)")
    prefill.add_argument("--decode", metavar="KxN,...",
                         help="decode GEMV shapes (1 x K x N); 'none' for none "
                              "(default: 256x256,1024x256)")
    prefill.add_argument("--decode-bandwidths", metavar="B,...",
                         help="DRAM bytes per cycle for the GEMVs (default: 1,2,4,8)")
    prefill.add_argument("--n", metavar="N", help="array size, 2 to 32 (default: 8)")
    prefill.add_argument("--latency", metavar="L",
                         help="DRAM latency in cycles, 0 to 1024 (default: 40)")
    prefill.add_argument("--seed", metavar="S", help="operand seed (default: 1)")
    _report_options(prefill, "results/bench_prefill.json",
                    quick="16x16x16 and 32x16x32 at 1 and 64 B/cycle, 1x64x32 at 1 and 8")
    link = benchmarks.add_parser(
        "link", help="packet link goodput and completion time against loss, lanes and size",
        description="The packet link (EFA/SRD stand-in) on its emulator: goodput over the line "
                    "rate and message completion cycles against the drop probability, the lane "
                    "count and the message size, selective retransmission and the go-back-N "
                    "baseline in the same run, several seeds per point; every message is "
                    "checked byte for byte. Tables, a JSON report and a PNG plot.")
    link.add_argument("--sizes", metavar="S,...",
                      help="message sizes in bytes, K and M suffixes allowed (default: "
                           "16K,256K,1M)")
    link.add_argument("--lanes", metavar="L,...", help="lane counts, 1 to 8 (default: 1,2,4)")
    link.add_argument("--drops", metavar="P,...",
                      help="drop probabilities per packet, 0 to 1 (default: 0,0.001,0.01,0.05)")
    link.add_argument("--seeds", metavar="S,...", help="channel seeds (default: 1,2,3,4)")
    _report_options(link, "results/bench_link.json", "results/bench_link.png", "goodput",
                    quick="4K and 16K messages, 1 and 4 lanes, drop 0 and 0.05, seeds 1 and 2")
    decode = benchmarks.add_parser(
        "decode", help="mesh decode (weights in SRAM) against the engine streaming from DRAM",
        description="The bandwidth result: one decode step on the mesh (weights resident in "
                    "the cores' SRAM, emulator) against the same step on the prefill engine "
                    "streaming every weight from DRAM, for the tiny model on every mesh "
                    "(strong scaling) and models filling a share of each mesh's SRAM (weak "
                    "scaling); rooflines, speedup against the SRAM/DRAM bandwidth ratio, the "
                    "share of core-cycles waiting on the fabric, and time to first token of "
                    "the disaggregated system against one engine. Tables, a JSON report and a "
                    "PNG plot.")
    decode.add_argument("--strong", metavar="WxH,...",
                        help="meshes for the tiny model; 'none' for none (default: "
                             "2x2,4x4,8x8,16x16)")
    decode.add_argument("--weak", metavar="WxH,...",
                        help="meshes for the weak-scaling models; 'none' for none (default: "
                             "4x4,8x8,16x16)")
    decode.add_argument("--bandwidths", metavar="B,...",
                        help="the baseline's DRAM bandwidths, bytes per cycle (default: "
                             "1,2,4,8,16)")
    decode.add_argument("--dram-bandwidth", metavar="B",
                        help="the default DRAM bandwidth (speedup plot, time to first token; "
                             "default: 1, the closest to an H100's balance point)")
    decode.add_argument("--share", metavar="F",
                        help="weak scaling: the model (2 d_model <= d_ff <= 4 d_model) with "
                             "the smallest weights of at least this share of the mesh's SRAM "
                             "that places, else the largest below it that places (default: "
                             "0.5)")
    decode.add_argument("--sram-words", metavar="N",
                        help="data SRAM per core of every mesh, in 32-bit words, 256 to 12288 "
                             "(default: 4096 = 16 KiB; 12288 = 48 KiB is a Cerebras WSE-3 "
                             "core's)")
    decode.add_argument("--colors", metavar="N",
                        help="colors of every mesh, 1 to 24 (default: 8; with 9 or more the "
                             "decode's single-word row all-reduces take a bypass color)")
    decode.add_argument("--ttft", metavar="WxH,...",
                        help="meshes of the time-to-first-token comparison; 'none' for none "
                             "(default: 4x4,8x8)")
    _report_options(decode, "results/bench_decode.json", "results/bench_decode.png", "speedup",
                    quick="4x4 strong and weak, 1 and 8 B/cycle, time to first token on 4x4")
    from wafer.trace import add_parser as add_trace_parser
    add_trace_parser(commands)
    return parser


def _shapes(text, option):
    if text.strip().lower() == "none":
        return ()
    shapes = []
    for part in text.split(","):
        try:
            config = MeshConfig.parse_shape(part.strip())
        except ConfigError as error:
            raise UsageError(f"{option}: {error}") from None
        shapes.append((config.width, config.height))
    return tuple(shapes)


def _loads(text):
    try:
        loads = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--loads: {text!r} is not a comma-separated list of numbers") from None
    for load in loads:
        if not 0 < load <= 1:
            raise UsageError(f"--loads: offered load {load} is not in (0, 1]")
    return loads


def _integer(text, option, minimum):
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not an integer") from None
    if value < minimum:
        raise UsageError(f"{option}: must be at least {minimum}, not {value}")
    return value


def _sweep(args):
    from wafer.bench_fabric import QUICK, Sweep

    values = dict(QUICK) if args.quick else {}
    if args.sizes is not None:
        values["sizes"] = _shapes(args.sizes, "--sizes")
    if args.rtl_sizes is not None:
        values["rtl_sizes"] = _shapes(args.rtl_sizes, "--rtl-sizes")
    if args.loads is not None:
        values["loads"] = _loads(args.loads)
    if args.cycles is not None:
        # Fewer cycles would leave no room for both a warm-up and a measured window.
        values["cycles"] = _integer(args.cycles, "--cycles", 10)
    sweep = Sweep(seed=_integer(args.seed, "--seed", 0), **values)
    if not sweep.meshes():
        raise UsageError("nothing to run: --sizes and --rtl-sizes are both empty")
    return sweep


def _run_benchmark(args, run_sweep, render, failures, width=None):
    """Run a benchmark sweep with a progress bar; print its tables and write its JSON report to
    ``args.json`` (or print the JSON when ``args.json`` is "-"). ``failures``: the exceptions
    that mean a wrong result (printed, exit status 1). ``width``: a minimum console width for
    wide tables (a narrow terminal then wraps lines rather than rich truncating every cell)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    to_stdout = args.json == "-"
    console = Console(stderr=to_stdout)
    if width is not None and console.width < width:
        console = Console(stderr=to_stdout, width=width)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True,
                      disable=not console.is_terminal) as progress:
            report = run_sweep(progress)
    except failures as error:
        console.print(f"FAILED: {error}", style="bold red", markup=False, highlight=False)
        return 1
    if to_stdout:
        print(json.dumps(report, indent=1))
    else:
        render(report, console)
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        console.print(f"JSON report: {args.json}")
    return 0


def _bench_fabric(args):
    from wafer import verilator
    from wafer.bench_fabric import RtlMismatch, render, run_sweep

    sweep = _sweep(args)
    if sweep.rtl_sizes and verilator.missing_reason():
        raise UsageError(f"cannot run the RTL benchmark: {verilator.missing_reason()} "
                         f"(--rtl-sizes none runs the emulator only)")
    return _run_benchmark(args, lambda progress: run_sweep(sweep, progress), render,
                          (RtlMismatch, verilator.VerilatorError))


def _bench_gemv(args):
    from wafer import verilator
    from wafer.bench_gemv import GemvMismatch, GemvSweep, render_gemv, run_gemv_sweep

    values = {}
    if args.sizes is not None:
        values["sizes"] = _shapes(args.sizes, "--sizes")
    if args.rtl_sizes is not None:
        values["rtl_sizes"] = _shapes(args.rtl_sizes, "--rtl-sizes")
    sweep = GemvSweep(**values)
    if not sweep.meshes():
        raise UsageError("nothing to run: --sizes and --rtl-sizes are both empty")
    if sweep.rtl_sizes and verilator.missing_reason():
        raise UsageError(f"cannot run the RTL benchmark: {verilator.missing_reason()} "
                         f"(--rtl-sizes none runs the emulator only)")
    return _run_benchmark(args, lambda progress: run_gemv_sweep(sweep, progress), render_gemv,
                          (GemvMismatch, verilator.VerilatorError))


def _dims(text, option, count):
    """Comma-separated shapes of ``count`` positive integers joined by 'x'; 'none': ()."""
    if text.strip().lower() == "none":
        return ()
    shapes = []
    for part in text.split(","):
        fields = part.strip().lower().split("x")
        try:
            dims = tuple(int(field) for field in fields)
        except ValueError:
            dims = ()
        if len(dims) != count or min(dims) < 1:
            form = "x".join("MKN"[3 - count:])
            raise UsageError(f"{option}: {part.strip()!r} is not a shape {form} of positive "
                             f"integers")
        shapes.append(dims)
    return tuple(shapes)


def _bandwidths(text, option):
    values = []
    for part in text.split(","):
        value = _integer(part.strip(), option, 1)
        if value > 128:
            raise UsageError(f"{option}: at most 128 bytes per cycle, not {value}")
        values.append(value)
    return tuple(values)


def _prefill_sweep(args):
    from wafer.bench_prefill import QUICK, PrefillSweep

    values = dict(QUICK) if args.quick else {}
    if args.shapes is not None:
        values["shapes"] = _dims(args.shapes, "--shapes", 3)
    if args.bandwidths is not None:
        values["bandwidths"] = _bandwidths(args.bandwidths, "--bandwidths")
    if args.decode is not None:
        values["decode_shapes"] = _dims(args.decode, "--decode", 2)
    if args.decode_bandwidths is not None:
        values["decode_bandwidths"] = _bandwidths(args.decode_bandwidths,
                                                  "--decode-bandwidths")
    if args.n is not None:
        values["n"] = _integer(args.n, "--n", 2)
    if args.latency is not None:
        values["latency"] = _integer(args.latency, "--latency", 0)
    if args.seed is not None:
        values["seed"] = _integer(args.seed, "--seed", 0)
    sweep = PrefillSweep(**values)
    if not (sweep.shapes and sweep.bandwidths) and not (sweep.decode_shapes
                                                        and sweep.decode_bandwidths):
        raise UsageError("nothing to run: no GEMM shapes or bandwidths, and no decode shapes "
                         "or bandwidths")
    try:
        sweep.check()
    except ValueError as error:     # ConfigError too: an array size or latency out of range
        raise UsageError(str(error)) from None
    return sweep


def _list(text, option, parse, what):
    values = []
    for part in text.split(","):
        try:
            values.append(parse(part.strip()))
        except ValueError:
            raise UsageError(f"{option}: {part.strip()!r} is not {what}") from None
    return tuple(dict.fromkeys(values))         # in order, each once


def _size(text):
    scale = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:].lower(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def _link_sweep(args):
    from wafer.bench_link import QUICK, LinkSweep

    values = dict(QUICK) if args.quick else {}
    if args.sizes is not None:
        values["sizes"] = _list(args.sizes, "--sizes", _size,
                                "a size in bytes (e.g. 4096, 16K, 1M)")
    if args.lanes is not None:
        values["lanes"] = _list(args.lanes, "--lanes", int, "an integer")
    if args.drops is not None:
        values["drops"] = _list(args.drops, "--drops", float, "a probability")
    if args.seeds is not None:
        values["seeds"] = tuple(dict.fromkeys(_integer(part.strip(), "--seeds", 0)
                                              for part in args.seeds.split(",")))
    sweep = LinkSweep(**values)
    try:
        sweep.check()
    except ValueError as error:     # ConfigError too: lanes or a probability out of range
        raise UsageError(str(error)) from None
    return sweep


def _plotted(args, run_sweep, plot):
    """``run_sweep`` followed by its PNG at ``--plot`` (``none``: no plot); the report names
    the file."""
    path = None if args.plot.strip().lower() == "none" else args.plot

    def run(progress):
        report = run_sweep(progress)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            plot(report, path)
        report["plot"] = path
        return report
    return run


def _bench_link(args):
    from wafer.bench_link import LinkMismatch, plot_link, render_link, run_link_sweep

    sweep = _link_sweep(args)
    run = _plotted(args, lambda progress: run_link_sweep(sweep, progress), plot_link)
    # Four drop columns of up to 30 characters (a failed run's note) after three key columns.
    return _run_benchmark(args, run, render_link, (LinkMismatch,), width=150)


def _mesh_shapes(text, option):
    if text.strip().lower() == "none":
        return ()
    shapes = []
    for part in text.split(","):
        try:
            config = MeshConfig.parse_shape(part.strip())
        except ConfigError as error:
            raise UsageError(f"{option}: {error}") from None
        shapes.append(config.shape)
    return tuple(dict.fromkeys(shapes))


def _decode_sweep(args):
    from wafer.bench_decode import QUICK, DecodeSweep

    values = dict(QUICK) if args.quick else {}
    for name in ("strong", "weak", "ttft"):
        text = getattr(args, name)
        if text is not None:
            values[name] = _mesh_shapes(text, f"--{name}")
    if args.bandwidths is not None:
        values["bandwidths"] = tuple(dict.fromkeys(_bandwidths(args.bandwidths,
                                                               "--bandwidths")))
    if args.dram_bandwidth is not None:
        values["dram_bandwidth"] = _bandwidths(args.dram_bandwidth, "--dram-bandwidth")[0]
    if args.share is not None:
        values["share"] = _list(args.share, "--share", float, "a number")[0]
    for field in ("sram_words", "colors"):        # MeshConfig fields, checked by it
        text = getattr(args, field)
        if text is not None:
            option = "--" + field.replace("_", "-")
            value = _integer(text.strip(), option, 1)
            try:
                MeshConfig(**{field: value})
            except ConfigError as error:
                raise UsageError(f"{option}: {error}") from None
            values[field] = value
    sweep = DecodeSweep(**values)
    try:
        sweep.check()
    except ValueError as error:     # ConfigError too
        raise UsageError(str(error)) from None
    if not sweep.points():
        raise UsageError("nothing to run: --strong, --weak and --ttft are all empty")
    return sweep


def _bench_decode(args):
    from wafer.bench_decode import DecodeMismatch, plot_decode, render_decode, \
        run_decode_sweep

    sweep = _decode_sweep(args)
    run = _plotted(args, lambda progress: run_decode_sweep(sweep, progress), plot_decode)
    # The baseline table has twelve columns.
    return _run_benchmark(args, run, render_decode, (DecodeMismatch,), width=160)


def _bench_prefill(args):
    from wafer.bench_prefill import PrefillMismatch, render_prefill, run_prefill_sweep

    sweep = _prefill_sweep(args)
    # The GEMM table has eleven columns.
    return _run_benchmark(args, lambda progress: run_prefill_sweep(sweep, progress),
                          render_prefill, (PrefillMismatch,), width=140)


def _demo(args):
    """Check ``--mesh`` here, so that a bad shape is a one-line usage error, and hand the
    arguments (``mesh`` a "WxH" string or None, ``json`` a bool) to the demo."""
    from wafer.demo import run_demo

    if args.mesh is not None:
        try:
            MeshConfig.parse_shape(args.mesh)
        except ConfigError as error:
            raise UsageError(f"--mesh: {error}") from None
    return run_demo(args)


def _run(args):
    """``wafer run``: the disaggregated demo without PROGRAM, else the program."""
    demo_only = {"--prompt": args.prompt, "--clock-mhz": args.clock_mhz, "--drop": args.drop,
                 "--compare": args.compare or None}
    if args.program is None:
        from wafer.system_demo import DEFAULT_PROMPT, system_command
        args.prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt
        args.clock_mhz = 1000.0 if args.clock_mhz is None else args.clock_mhz
        args.drop = 0.0 if args.drop is None else args.drop
        return system_command(args)
    for option, value in demo_only.items():
        if value is not None:
            raise UsageError(f"{option} applies to the disaggregated demo (wafer run without "
                             f"PROGRAM), not to {args.program}")
    from wafer.run_program import run_command
    return run_command(args)


def main(argv=None):
    """Entry point of the ``wafer`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            status = _demo(args)
        elif args.command == "run":
            status = _run(args)
        elif args.command == "trace":
            from wafer.trace import trace_command
            status = trace_command(args)
        elif args.benchmark == "gemv":
            status = _bench_gemv(args)
        elif args.benchmark == "prefill":
            status = _bench_prefill(args)
        elif args.benchmark == "link":
            status = _bench_link(args)
        elif args.benchmark == "decode":
            status = _bench_decode(args)
        else:
            status = _bench_fabric(args)
    except (UsageError, ConfigError) as error:
        print(f"wafer: error: {error}", file=sys.stderr)
        return 2
    return status or 0

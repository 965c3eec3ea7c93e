"""The fabric benchmark (``wafer bench fabric``): accepted throughput and latency versus offered
load for the workloads of :mod:`programs.patterns`, and simulator speed, on the emulator and on
the RTL compiled by Verilator.

One run is a workload on a mesh at one offered load: every flow generates a wavelet with
probability ``load`` per cycle (:func:`programs.patterns.generates`) into an unbounded source
queue; the head of the queue is injected as soon as the flow holds a credit for its color. A
wavelet's data is its generation cycle. Sinks take every arriving wavelet out at once (their
credit goes back the next cycle, as a sink's first chance to drive it). After ``warmup`` cycles,
a ``window`` of cycles is measured. Both backends return the same integer counts
(:func:`counts_equal` compares them), from which :func:`summarize` derives:

* accepted throughput: wavelets delivered per flow per cycle, a multicast wavelet counted once
  (each delivered copy weighs 1 / fanout), and that as a fraction of the offered load;
* latency of every copy delivered in the window (arrival cycle - generation cycle): mean, p99.
"""

import time
from dataclasses import dataclass

import numpy as np

from emulator import FabricEmulator
from mesh import MeshConfig
from programs.patterns import WORKLOADS, generates, load_threshold

__all__ = ["BENCH_COLORS", "bench_config", "BenchAgents", "run_emulator", "counts_equal",
           "summarize", "Sweep", "QUICK", "RtlMismatch", "run_sweep", "render"]

# Each workload uses 2 colors; 4 keeps idle colors in the routers (as a real program would
# have) while the RTL of an 8x8 fabric still elaborates and compiles in a few minutes.
BENCH_COLORS = 4
BUFFER_DEPTH = 2
BIRTH_BLOCK = 256


def bench_config(width, height, colors=BENCH_COLORS):
    """The mesh the benchmark runs on."""
    return MeshConfig(width=width, height=height, colors=colors, buffer_depth=BUFFER_DEPTH)


class BenchAgents:
    """The benchmark's sources and sinks for every flow of ``workload``, vectorized over flows
    and deliveries. Per cycle::

        valid, color, data, credit = agents.drive(cycle)
        result = emulator.step(valid, color, data, credit)
        agents.observe(cycle, result)

    ``counts()`` gives what was measured in cycles ``warmup`` .. ``warmup + window - 1``.
    A cycle's generation is decided before its injection, so a wavelet generated while its
    flow holds a credit and has nothing queued is injected in the same cycle.
    """

    def __init__(self, workload, load, seed, warmup, window, n_links):
        config = workload.config
        flows = workload.flows
        self.seed = seed
        self.threshold = load_threshold(load)
        self.warmup = warmup
        self.end = warmup + window
        self.n_links = n_links
        self.colors = config.colors
        self.flow_index = np.arange(len(flows))
        self.flow_link = np.array([flow.source for flow in flows], dtype=np.intp)
        self.flow_color = np.array([flow.color for flow in flows], dtype=np.intp)
        deliveries = workload.deliveries
        self.delivery_link = np.array([link for _, link, _, _ in deliveries], dtype=np.intp)
        self.delivery_color = np.array([color for _, _, color, _ in deliveries], dtype=np.intp)

        # Unbounded source queues: row f holds the generation cycles of flow f's wavelets; a
        # flow generates at most one per cycle, so a row of self.end entries never overflows.
        self.queue = np.zeros((len(flows), self.end), dtype=np.uint32)
        self.generated = np.zeros(len(flows), dtype=np.intp)
        self.injected = np.zeros(len(flows), dtype=np.intp)
        self.credit = np.full(len(flows), config.buffer_depth, dtype=np.intp)
        self.sink_credit = np.zeros((n_links, self.colors), dtype=bool)

        self.births = np.zeros((0, len(flows)), dtype=bool)   # generates() rows, by block
        self.births_from = 0
        self.generated_in_window = 0
        self.injected_in_window = 0
        self.delivered = np.zeros(len(deliveries), dtype=np.int64)
        self.latencies = []

    def drive(self, cycle):
        """The step inputs of ``cycle``: (in_valid, in_color, in_data, out_credit)."""
        if not self.births_from <= cycle < self.births_from + len(self.births):
            # Drawn a block of cycles at a time: one numpy call instead of one per cycle.
            block = np.arange(cycle, min(cycle + BIRTH_BLOCK, self.end))
            self.births = generates(self.seed, block[:, None], self.flow_index, self.threshold)
            self.births_from = cycle
        new = np.flatnonzero(self.births[cycle - self.births_from])
        self.queue[new, self.generated[new]] = cycle
        self.generated[new] += 1
        inject = np.flatnonzero((self.generated > self.injected) & (self.credit > 0))
        valid = np.zeros(self.n_links, dtype=bool)
        color = np.zeros(self.n_links, dtype=np.intp)
        data = np.zeros(self.n_links, dtype=np.uint32)
        links = self.flow_link[inject]
        valid[links] = True
        color[links] = self.flow_color[inject]
        data[links] = self.queue[inject, self.injected[inject]]
        self.injected[inject] += 1
        self.credit[inject] -= 1
        if self.warmup <= cycle < self.end:
            self.generated_in_window += new.size
            self.injected_in_window += inject.size
        return valid, color, data, self.sink_credit

    def observe(self, cycle, result):
        """Take the credits and the arrivals of ``cycle``'s step ``result``."""
        self.credit += result.in_credit[self.flow_link, self.flow_color]
        arrived = (result.out_valid[self.delivery_link]
                   & (result.out_color[self.delivery_link] == self.delivery_color))
        if np.count_nonzero(arrived) != np.count_nonzero(result.out_valid):
            raise AssertionError(f"cycle {cycle}: a wavelet left the fabric on a link and color "
                                 f"that no flow of the workload is routed to")
        # The sink frees its buffer slot at once; the credit can be driven next cycle.
        sink_credit = np.zeros((self.n_links, self.colors), dtype=bool)
        sink_credit[self.delivery_link[arrived], self.delivery_color[arrived]] = True
        self.sink_credit = sink_credit
        if self.warmup <= cycle < self.end:
            self.delivered += arrived
            born = result.out_data[self.delivery_link[arrived]]
            self.latencies.append((np.uint32(cycle) - born).astype(np.int64))

    def counts(self):
        """The measured integers (the same keys and meaning as the Verilator harness prints):
        ``generated`` and ``injected`` in the window, ``delivered`` per delivery of
        ``workload.deliveries``, ``latency`` as sorted [[cycles, copies], ...], and ``backlog``
        (wavelets in the source queues at the end)."""
        latencies = np.concatenate(self.latencies) if self.latencies else np.zeros(0, np.int64)
        values, copies = np.unique(latencies, return_counts=True)
        return {
            "generated": int(self.generated_in_window),
            "injected": int(self.injected_in_window),
            "delivered": self.delivered.tolist(),
            "latency": [[int(v), int(c)] for v, c in zip(values, copies)],
            "backlog": int(np.sum(self.generated - self.injected)),
        }


def run_emulator(workload, load, seed, warmup, window):
    """Run ``workload`` on the emulator; return (counts, wall seconds of the cycle loop)."""
    emulator = FabricEmulator(workload.config, workload.routes)
    agents = BenchAgents(workload, load, seed, warmup, window, emulator.n_links)
    start = time.perf_counter()
    for cycle in range(warmup + window):
        result = emulator.step(*agents.drive(cycle))
        agents.observe(cycle, result)
    return agents.counts(), time.perf_counter() - start


def counts_equal(first, second):
    """None when two count dicts are equal, else a sentence naming the first difference."""
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            index = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return (f"{key!r} differs first at entry {index}: "
                    f"{a[index] if index < len(a) else 'nothing'} vs "
                    f"{b[index] if index < len(b) else 'nothing'} "
                    f"(lengths {len(a)} and {len(b)})")
        return f"{key!r} differs: {a!r} vs {b!r}"
    return None


def summarize(workload, load, window, counts):
    """The reported metrics of one run from its ``counts`` (:meth:`BenchAgents.counts`)."""
    flows = workload.flows
    delivered = np.array(counts["delivered"], dtype=float)
    fanout = np.array([flows[f].fanout for f, _, _, _ in workload.deliveries], dtype=float)
    flow_of = np.array([f for f, _, _, _ in workload.deliveries])
    # A multicast wavelet counts once: each of its copies weighs 1 / fanout.
    per_flow = np.bincount(flow_of, weights=delivered / fanout, minlength=len(flows)) / window
    throughput = float(per_flow.mean())
    values = np.array([v for v, _ in counts["latency"]], dtype=float)
    copies = np.array([c for _, c in counts["latency"]], dtype=float)
    total = copies.sum()
    if total:
        mean = float((values * copies).sum() / total)
        p99 = float(values[np.searchsorted(np.cumsum(copies), 0.99 * total)])
    else:
        mean = p99 = None
    return {
        "throughput": throughput,
        "throughput_fraction": throughput / load if load else None,
        "min_flow_throughput": float(per_flow.min()),
        "latency_mean": mean,
        "latency_p99": p99,
        "delivered": int(delivered.sum()),
        "generated": counts["generated"],
        "backlog": counts["backlog"],
    }


# The sweep ------------------------------------------------------------------------------------

DEFAULT_SIZES = ((8, 8), (16, 16), (32, 32), (64, 64))
DEFAULT_RTL_SIZES = ((4, 4), (8, 8))
DEFAULT_LOADS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
QUICK = {"sizes": ((8, 8),), "rtl_sizes": ((4, 4),), "loads": (0.1, 0.5, 1.0), "cycles": 1000}
WARMUP_FRACTION = 0.2
# Default run length: about this many router-cycles, from MIN_CYCLES to MAX_CYCLES cycles. The
# emulator's cost per cycle is nearly flat up to 16x16 and then grows with the mesh, so this
# keeps the default sweep at about 5 minutes on 2 cores with long windows on the small meshes.
ROUTER_CYCLES_PER_RUN = 8_000_000
MIN_CYCLES, MAX_CYCLES = 2000, 15000


class RtlMismatch(AssertionError):
    """The RTL on Verilator and the emulator disagree on a run: they are meant to be the same
    machine, cycle for cycle."""


@dataclass(frozen=True)
class Sweep:
    """What ``wafer bench fabric`` runs: every workload at every load on the emulator at
    ``sizes`` and ``rtl_sizes`` ((width, height) pairs), and on Verilator at ``rtl_sizes``.
    ``cycles`` (warm-up included) is the length of every run; None picks it per mesh."""
    sizes: tuple = DEFAULT_SIZES
    rtl_sizes: tuple = DEFAULT_RTL_SIZES
    loads: tuple = DEFAULT_LOADS
    cycles: int | None = None
    seed: int = 1

    def meshes(self):
        """Every mesh the emulator runs on, smallest first."""
        return sorted(set(self.sizes) | set(self.rtl_sizes), key=lambda s: (s[0] * s[1], s))

    def cycles_for(self, width, height):
        if self.cycles is not None:
            return self.cycles
        return max(MIN_CYCLES, min(MAX_CYCLES, ROUTER_CYCLES_PER_RUN // (width * height)))

    @property
    def runs(self):
        """Number of simulator runs (emulator and RTL)."""
        return len(WORKLOADS) * len(self.loads) * (len(self.meshes()) + len(self.rtl_sizes))


def run_sweep(sweep, progress=None):
    """Run ``sweep``; return the report (JSON-serialisable). ``progress``, a
    :class:`rich.progress.Progress`, gets one task advanced per run. Raises :class:`RtlMismatch`
    as soon as an RTL run differs from the emulator run with the same parameters."""
    from wafer import verilator

    started = time.perf_counter()
    task = progress.add_task("fabric benchmark", total=sweep.runs) if progress else None

    def show(description, done=0):
        if progress:
            progress.update(task, description=description, advance=done)

    runs, builds = [], []
    for width, height in sweep.meshes():
        config = bench_config(width, height)
        cycles = sweep.cycles_for(width, height)
        warmup = int(cycles * WARMUP_FRACTION)
        window = cycles - warmup
        on_rtl = (width, height) in sweep.rtl_sizes
        for name, make_workload in WORKLOADS.items():
            workload = make_workload(config)
            if on_rtl:
                show(f"building the RTL of {name} {config.shape} (minutes when not cached)")
                build_start = time.perf_counter()
                cached = verilator.is_built(workload)
                program = verilator.build(workload)
                builds.append({"workload": name, "mesh": config.shape, "cached": cached,
                               "seconds": round(time.perf_counter() - build_start, 2)})
            for load in sweep.loads:
                show(f"emulator {name} {config.shape} load {load}")
                counts, wall = run_emulator(workload, load, sweep.seed, warmup, window)
                runs.append(_record("emulator", workload, load, sweep.seed, warmup, window,
                                    counts, wall))
                show(f"emulator {name} {config.shape} load {load}", done=1)
                if not on_rtl:
                    continue
                show(f"Verilator {name} {config.shape} load {load}")
                rtl_counts, rtl_wall = verilator.run(program, load, sweep.seed, warmup, window)
                difference = counts_equal(rtl_counts, counts)
                if difference is not None:
                    raise RtlMismatch(
                        f"RTL != emulator for {name} on {config.shape}, load {load}, seed "
                        f"{sweep.seed}, {warmup} + {window} cycles: {difference} (RTL vs emulator)")
                runs.append(_record("verilator", workload, load, sweep.seed, warmup, window,
                                    rtl_counts, rtl_wall))
                show(f"Verilator {name} {config.shape} load {load}", done=1)

    checked = sum(1 for run in runs if run["backend"] == "verilator")
    return {
        "benchmark": "fabric",
        "config": {"colors": BENCH_COLORS, "buffer_depth": BUFFER_DEPTH},
        "seed": sweep.seed,
        "loads": list(sweep.loads),
        "warmup_fraction": WARMUP_FRACTION,
        "runs": runs,
        "speed": _speed(runs),
        "builds": builds,
        "rtl_runs_checked": checked,
        "rtl_equals_emulator": True if checked else None,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def _record(backend, workload, load, seed, warmup, window, counts, wall):
    config = workload.config
    cycles = warmup + window
    return {
        "backend": backend,
        "workload": workload.name,
        "mesh": config.shape,
        "tiles": config.tiles,
        "load": load,
        "seed": seed,
        "cycles": cycles,
        "warmup": warmup,
        "window": window,
        **summarize(workload, load, window, counts),
        "wall_seconds": wall,
        "cycles_per_second": cycles / wall,
        "router_cycles_per_second": cycles * config.tiles / wall,
    }


def _speed(runs):
    """Per backend and mesh: cycles simulated, over the wall time of their cycle loops."""
    totals = {}
    for run in runs:
        key = (run["backend"], run["mesh"], run["tiles"])
        cycles, wall = totals.get(key, (0, 0.0))
        totals[key] = (cycles + run["cycles"], wall + run["wall_seconds"])
    return [{"backend": backend, "mesh": mesh, "tiles": tiles, "cycles": cycles,
             "wall_seconds": wall, "cycles_per_second": cycles / wall,
             "router_cycles_per_second": cycles * tiles / wall}
            for (backend, mesh, tiles), (cycles, wall) in totals.items()]


# Output -------------------------------------------------------------------------------------

def render(report, console):
    """Print the report as rich tables: throughput and latency versus offered load per workload,
    then simulator speed."""
    from rich.table import Table

    config = report["config"]
    console.print(f"fabric benchmark: {config['colors']} colors, buffer depth "
                  f"{config['buffer_depth']}, seed {report['seed']}, warm-up "
                  f"{report['warmup_fraction']:.0%} of each run")
    rtl_checked = {(r["workload"], r["mesh"], r["load"]) for r in report["runs"]
                   if r["backend"] == "verilator"}
    for name in WORKLOADS:
        table = Table(title=f"{name}: throughput and latency vs offered load")
        for column in ("mesh", "offered", "accepted", "acc/off", "worst flow", "lat mean",
                       "lat p99", "RTL"):
            table.add_column(column, justify="left" if column == "mesh" else "right")
        mesh = None
        for run in report["runs"]:
            if run["backend"] != "emulator" or run["workload"] != name:
                continue
            if mesh is not None and run["mesh"] != mesh:
                table.add_section()
            mesh = run["mesh"]
            table.add_row(
                run["mesh"], f"{run['load']:.2f}", f"{run['throughput']:.3f}",
                _fraction(run["throughput_fraction"]), f"{run['min_flow_throughput']:.3f}",
                _cycles(run["latency_mean"], ".1f"), _cycles(run["latency_p99"], ".0f"),
                "=" if (name, run["mesh"], run["load"]) in rtl_checked else "")
        console.print(table)
    console.print("offered: wavelets generated per flow per cycle; accepted: delivered per flow "
                  "per cycle (a multicast wavelet once); worst flow: the lowest flow's accepted "
                  "rate; latency in cycles from generation to arrival (above saturation the "
                  "source queues grow, and latency with the run length); RTL '=': Verilator "
                  "gave identical counts and latencies")

    table = Table(title="simulator speed (cycle loop with agents, over all runs)")
    for column in ("backend", "mesh", "routers", "cycles", "cycles/s", "router-cycles/s"):
        table.add_column(column, justify="left" if column in ("backend", "mesh") else "right")
    for row in sorted(report["speed"], key=lambda r: (r["backend"], r["tiles"])):
        table.add_row(row["backend"], row["mesh"], str(row["tiles"]), f"{row['cycles']:,}",
                      f"{row['cycles_per_second']:,.0f}",
                      f"{row['router_cycles_per_second']:,.0f}")
    console.print(table)

    for build in report["builds"]:
        if not build["cached"]:
            console.print(f"built the RTL of {build['workload']} {build['mesh']} in "
                          f"{build['seconds']:.0f} s (cached under build/verilator/)")
    if report["rtl_equals_emulator"]:
        console.print(f"RTL == emulator: yes ({report['rtl_runs_checked']} runs, identical "
                      f"counts and latencies)")
    else:
        console.print("RTL == emulator: not checked (no RTL sizes)")
    console.print(f"total wall time: {report['wall_seconds']:.1f} s")


def _fraction(value):
    return "-" if value is None else f"{value:.1%}"


def _cycles(value, spec):
    return "-" if value is None else format(value, spec)

"""The prefill-engine benchmark (``wafer bench prefill``): the GEMMs of a tiny transformer's
prefill and the decode GEMVs on the prefill engine's emulator (docs/ARCHITECTURE.md section 11),
at several DRAM bandwidths.

GEMM C = A x B (A M x K, B K x N, int8; C int32) with the tiler :func:`programs.prefill.gemm`:
A and B are loaded from DRAM (B one weight tile at a time, double buffered), C is stored back.
Per shape and bandwidth it reports the cycles; the utilization, useful MACs M K N over
n^2 x cycles; the closed-form compute cycles (:func:`programs.prefill.gemm_cycles`, the program
with A and B preloaded in SBUF, checked exactly once per shape by a preloaded run); the cycles
from the first MATMUL's issue to the last one's against :func:`programs.prefill.gemm_matmul_span`
(more means the DMA stalled the array); the DRAM bytes moved (A, B, C) and the fewest cycles the
channel needs for them (:func:`programs.prefill.dram_bound_cycles`, one row per cycle at most).
The decode GEMVs (1 x K x N, :func:`programs.prefill.gemv_decode`) report their cycles against
the DRAM bound of their weight bytes. Every result is checked against numpy.

Against SCALE-Sim's weight-stationary model. SCALE-Sim v2 (``systolic_compute_ws.py``) maps a
GEMM onto an R x C array as F = ceil(K / R) x ceil(N / C) folds with T = M input rows each; per
fold its demand matrices hold R cycles of weight fill, T rows of input, C - 1 cycles of drain
and R - 1 of input skew, 2R + C + T - 2 cycles, and the folds run one after the other:
F x (2R + C + T - 2) compute cycles. Our engine holds two weight buffers: the next tile's
weights are loaded (n cycles) while the current tile streams, and the next MATMUL starts the
cycle after the current one's last row, so fill and drain are paid once per GEMM, not per fold.
With n = R = C and M >= 3n - 3 (a tile's rows cover the weight load and the buffer's reuse
distance) :func:`gemm_cycles` is F x M + 3n + 2 (n for the first weights, 2n for the last row to
cross the array and reach PSUM, 2 for HALT), against SCALE-Sim's F x M + F x (3n - 2). For
64 x 64 x 64 on an 8 x 8 array (F = 64): SCALE-Sim 64 x (16 + 8 + 64 - 2) = 5,504 cycles, ours
64 x 64 + 26 = 4,122: SCALE-Sim pays 22 fill/drain cycles in each of the 64 folds (1,408), we pay
26 once. With short tiles (M < 3n - 3, e.g. M = 16 at n = 8) our MATMULs issue alternately
a = n + 1 (n + 2 with the DMA program's WAITs) and max(a, M + 3n - 3 - a) cycles apart: the
weight load and the buffer's drain, not the stream, set the rate. SCALE-Sim's compute count
excludes DRAM; ours is the whole run: the DMA prologue (first tile, A) and C's store are in the
measured cycles.
"""

import time
from dataclasses import dataclass

import numpy as np

from emulator.prefill import PrefillEmulator
from mesh.prefill import DmaKind, Op, PrefillConfig
from programs.prefill import MAX_SLOTS, dram_bound_cycles, gemm, gemm_cycles, \
    gemm_matmul_span, gemv_decode

__all__ = ["PrefillSweep", "PrefillMismatch", "run_prefill_sweep", "render_prefill",
           "scalesim_ws_cycles", "bench_config", "DEFAULT_JSON", "QUICK"]

DEFAULT_JSON = "results/bench_prefill.json"

# A short sweep (``--quick`` and the tests).
QUICK = dict(shapes=((16, 16, 16), (32, 16, 32)), bandwidths=(1, 64),
             decode_shapes=((64, 32),), decode_bandwidths=(1, 8))

_MAX_CYCLES = 50_000_000


class PrefillMismatch(RuntimeError):
    """A result that differs from numpy, or a preloaded run that differs from the closed form."""


@dataclass
class PrefillSweep:
    # (M, K, N): attention projections (d = 64 and 256), the MLP (4d), a longer prompt.
    shapes: tuple = ((64, 64, 64), (64, 64, 256), (64, 256, 64), (64, 256, 256),
                     (64, 256, 1024), (256, 256, 256))
    bandwidths: tuple = (1, 4, 16, 64)             # DRAM bytes per cycle
    decode_shapes: tuple = ((256, 256), (1024, 256))   # (K, N) of 1 x K x N GEMVs
    decode_bandwidths: tuple = (1, 2, 4, 8)
    n: int = 8
    latency: int = 40
    seed: int = 1

    def runs(self):
        """The number of emulator runs: per shape, one per bandwidth and one preloaded."""
        return (len(self.shapes) * (len(self.bandwidths) + 1)
                + len(self.decode_shapes) * len(self.decode_bandwidths))

    def check(self):
        """Build every program once (cheap next to running it); raises ValueError (ConfigError)
        for a shape that does not fit the engine."""
        for M, K, N in self.shapes:
            for bandwidth in self.bandwidths[:1]:
                gemm(bench_config(self, M, K, N, bandwidth), M, K, N, seed=self.seed)
            gemm(bench_config(self, M, K, N, 1, preload=True), M, K, N, seed=self.seed,
                 preload=True)
        for K, N in self.decode_shapes:
            for bandwidth in self.decode_bandwidths[:1]:
                gemv_decode(bench_config(self, 1, K, N, bandwidth), K, N, seed=self.seed)


def _ceil(a, b):
    return -(-a // b)


def _room(need, minimum, maximum):
    """The power of two >= need (at least ``minimum``), capped at ``maximum``: sizes beyond the
    engine's limits are left to the program builder, which names what does not fit."""
    size = max(minimum, 1 << max(0, need - 1).bit_length())
    return min(size, maximum)


def bench_config(sweep, M, K, N, bandwidth, preload=False):
    """A :class:`PrefillConfig` of the sweep's n and latency with SBUF, PSUM, DRAM and the
    command memory sized for an M x K x N GEMM (powers of two, at least the defaults)."""
    n = sweep.n
    Kt, Nt = _ceil(K, n), _ceil(N, n)
    T = Kt * Nt
    sbuf = Kt * M + (T if preload else MAX_SLOTS) * n
    dram = Kt * M * n + T * n * n + Nt * M * 4 * n
    if M == 1:      # room for gemv_decode's layouts too (x tiles, a ring of B^T pieces)
        sbuf = max(sbuf, Kt * n + MAX_SLOTS * max(N, n))
        dram = max(dram, Kt * N * n + Kt * n * n)
    commands = 4 * T + 2 * _ceil(max(Kt, 4 * Nt) * M, 32768) + MAX_SLOTS + 8
    return PrefillConfig(n=n, sbuf_rows=_room(sbuf, 4096, 65536),
                         psum_rows=_room(max(Nt * M, N), 1024, 65536),
                         dram_bytes=_room(dram, 1 << 20, 1 << 26),
                         dram_bandwidth=bandwidth, dram_latency=sweep.latency,
                         commands=_room(commands, 4096, 65536))


def scalesim_ws_cycles(n, M, K, N):
    """SCALE-Sim v2's weight-stationary compute cycles on an n x n array: ceil(K / n) x
    ceil(N / n) folds of 2n + n + M - 2 cycles each (see the module docstring)."""
    return _ceil(K, n) * _ceil(N, n) * (3 * n + M - 2)


def _dram_traffic(program):
    """(bytes, rows) moved per DMA kind by the program's commands, and the fewest cycles the
    channel needs for them: per kind, ceil(bytes / bandwidth) and at least a row per cycle."""
    config = program.config
    row_bytes = {DmaKind.LOAD: config.n, DmaKind.STORE_SBUF: config.n,
                 DmaKind.STORE_PSUM: 4 * config.n}
    moved = {kind: 0 for kind in row_bytes}
    for command in program.commands:
        if command.op == Op.DMA:
            moved[DmaKind(command.sub)] += command.count * row_bytes[DmaKind(command.sub)]
    bound = sum(dram_bound_cycles(config, nbytes, row_bytes[kind])
                for kind, nbytes in moved.items() if nbytes)
    return moved, bound


def _matmul_issues(program, result):
    return [result.issue[i] for i, command in enumerate(program.commands)
            if command.op == Op.MATMUL]


def _run(program, label):
    """Run ``program`` on the emulator (fast array); check C against numpy."""
    start = time.perf_counter()
    emulator = PrefillEmulator(program.config, program.dram or None, sbuf=program.sbuf,
                               array="fast")
    result = emulator.run(program.commands, max_cycles=_MAX_CYCLES)
    seconds = time.perf_counter() - start
    got = program.read_c(result)
    if not np.array_equal(got, program.expected):
        wrong = int(np.count_nonzero(got != program.expected))
        raise PrefillMismatch(f"{label}: {wrong} of {program.expected.size} elements of C "
                              f"differ from numpy")
    return result, seconds


def _gemm_entry(sweep, M, K, N, bandwidth):
    config = bench_config(sweep, M, K, N, bandwidth)
    program = gemm(config, M, K, N, seed=sweep.seed)
    label = f"GEMM {M}x{K}x{N} at {bandwidth} B/cycle"
    result, seconds = _run(program, label)
    n = config.n
    moved, bound = _dram_traffic(program)
    issues = _matmul_issues(program, result)
    span = issues[-1] - issues[0]
    span_formula = gemm_matmul_span(config, M, K, N, dma=True)
    compute = gemm_cycles(config, M, K, N)
    return {
        "M": M, "K": K, "N": N, "dram_bandwidth": bandwidth, "tiles": program.tiles,
        "cycles": result.cycles, "useful_macs": program.useful_macs,
        "utilization": program.useful_macs / (n * n * result.cycles),
        "array_utilization": result.utilization(n),
        "compute_cycles": compute, "scalesim_ws_cycles": scalesim_ws_cycles(n, M, K, N),
        "matmul_span": span, "matmul_span_formula": span_formula,
        "stall_cycles": span - span_formula, "dma_stalled": span > span_formula,
        "dram_bytes": {"A": moved[DmaKind.LOAD] - program.b_bytes, "B": program.b_bytes,
                       "C": moved[DmaKind.STORE_PSUM]},
        "dram_bytes_total": sum(moved.values()), "dram_bound_cycles": bound,
        "cycles_over_bound": result.cycles / max(compute, bound),
        "counters": result.counters, "seconds": seconds,
        "cycles_per_second": result.cycles / seconds if seconds else 0.0,
    }


def _closed_form_entry(sweep, M, K, N):
    config = bench_config(sweep, M, K, N, 1, preload=True)
    program = gemm(config, M, K, N, seed=sweep.seed, preload=True)
    result, seconds = _run(program, f"GEMM {M}x{K}x{N} preloaded")
    compute = gemm_cycles(config, M, K, N)
    if result.cycles != compute:
        raise PrefillMismatch(f"GEMM {M}x{K}x{N} preloaded: {result.cycles} cycles, the closed "
                              f"form (gemm_cycles) says {compute}")
    return {"M": M, "K": K, "N": N, "cycles": result.cycles, "compute_cycles": compute,
            "scalesim_ws_cycles": scalesim_ws_cycles(config.n, M, K, N),
            "utilization": program.useful_macs / (config.n ** 2 * result.cycles),
            "seconds": seconds}


def _decode_entry(sweep, K, N, bandwidth):
    config = bench_config(sweep, 1, K, N, bandwidth)
    program = gemv_decode(config, K, N, seed=sweep.seed)
    result, seconds = _run(program, f"decode GEMV 1x{K}x{N} at {bandwidth} B/cycle")
    moved, bound_all = _dram_traffic(program)
    bound = dram_bound_cycles(config, program.b_bytes, config.n)
    return {
        "K": K, "N": N, "dram_bandwidth": bandwidth, "cycles": result.cycles,
        "useful_macs": program.useful_macs,
        "utilization": program.useful_macs / (config.n ** 2 * result.cycles),
        "b_bytes": program.b_bytes, "dram_bound_cycles": bound,
        "ratio": result.cycles / bound,
        "dram_bytes_total": sum(moved.values()), "dram_bound_cycles_all": bound_all,
        "seconds": seconds,
    }


def run_prefill_sweep(sweep, progress=None):
    """Run the sweep; returns the JSON-ready report. ``progress``: a rich Progress or None.
    Raises :class:`PrefillMismatch` for a wrong result."""
    task = progress.add_task("prefill", total=sweep.runs()) if progress else None

    def step(description, fn, *args):
        if progress:
            progress.update(task, description=description)
        entry = fn(sweep, *args)
        if progress:
            progress.advance(task)
        return entry

    start = time.perf_counter()
    gemms, closed = [], []
    for M, K, N in sweep.shapes:
        closed.append(step(f"GEMM {M}x{K}x{N} preloaded", _closed_form_entry, M, K, N))
        for bandwidth in sweep.bandwidths:
            gemms.append(step(f"GEMM {M}x{K}x{N} at {bandwidth} B/cycle", _gemm_entry,
                              M, K, N, bandwidth))
    decode = [step(f"decode 1x{K}x{N} at {bandwidth} B/cycle", _decode_entry, K, N, bandwidth)
              for K, N in sweep.decode_shapes for bandwidth in sweep.decode_bandwidths]
    n = sweep.n
    M, K, N = 64, 64, 64
    return {
        "benchmark": "prefill", "n": n, "dram_latency": sweep.latency, "seed": sweep.seed,
        "array": "fast", "gemm": gemms, "closed_form": closed, "decode": decode,
        "scalesim_comparison": {
            "formula": "SCALE-Sim v2 weight stationary: ceil(K/n) x ceil(N/n) folds x "
                       "(2n + n + M - 2) cycles; ours (gemm_cycles, M >= 3n - 3): "
                       "folds x M + 3n + 2",
            "example": {"M": M, "K": K, "N": N, "n": n,
                        "scalesim_ws_cycles": scalesim_ws_cycles(n, M, K, N),
                        "gemm_cycles": gemm_cycles(PrefillConfig(n=n), M, K, N)},
            "difference": "SCALE-Sim pays the weight fill (n), the skew (n - 1) and the drain "
                          "(n - 1) in every fold; our double-buffered weights load while the "
                          "previous tile streams and the MATMULs run back to back, so fill and "
                          "drain (3n + 2 cycles with HALT) are paid once per GEMM",
        },
        "seconds": time.perf_counter() - start,
    }


def render_prefill(report, console):
    if report["gemm"]:
        _render_gemm(report, console)
    if report["decode"]:
        _render_decode(report, console)
    example = report["scalesim_comparison"]["example"]
    closed = (f"Preloaded runs equal gemm_cycles for all {len(report['closed_form'])} shapes. "
              if report["closed_form"] else "")
    console.print(
        f"{closed}SCALE-Sim WS counts ceil(K/n) ceil(N/n) (3n + M - 2) cycles: for "
        f"{example['M']}x{example['K']}x{example['N']}, {example['scalesim_ws_cycles']:,} "
        f"against our {example['gemm_cycles']:,} (fill and drain paid once, not per fold). "
        f"Wall time {report['seconds']:.1f} s.", highlight=False)


def _render_gemm(report, console):
    from rich.table import Table

    n = report["n"]
    table = Table(title=f"Prefill GEMMs on the {n} x {n} engine (DRAM latency "
                        f"{report['dram_latency']}; C = A x B, A and B from DRAM, C stored)")
    for column in ("M x K x N", "B/cyc", "cycles", "util", "closed form", "SCALE-Sim",
                   "MATMUL span / formula", "stall", "DRAM bytes", "DRAM bound", "/ bound"):
        table.add_column(column, justify="left" if column == "M x K x N" else "right",
                         no_wrap=True)
    for r in report["gemm"]:
        table.add_row(f"{r['M']}x{r['K']}x{r['N']}", str(r["dram_bandwidth"]),
                      f"{r['cycles']:,}", f"{100 * r['utilization']:.1f}%",
                      f"{r['compute_cycles']:,}", f"{r['scalesim_ws_cycles']:,}",
                      f"{r['matmul_span']:,} / {r['matmul_span_formula']:,}",
                      f"+{r['stall_cycles']:,}" if r["dma_stalled"] else "no",
                      f"{r['dram_bytes_total']:,}", f"{r['dram_bound_cycles']:,}",
                      f"{r['cycles_over_bound']:.2f}")
    console.print(table)
    console.print("closed form: gemm_cycles, the compute of the preloaded program (each shape's "
                  "preloaded run equals it); SCALE-Sim: its weight-stationary count; MATMUL "
                  "span: first to last MATMUL issue, against gemm_matmul_span (stall: the "
                  "excess); / bound: cycles over max(closed form, DRAM bound)", highlight=False)


def _render_decode(report, console):
    from rich.table import Table

    table = Table(title="Decode GEMVs (1 x K x N): cycles against the DRAM bound of the "
                        "weights")
    for column in ("1 x K x N", "B/cyc", "cycles", "weight bytes", "DRAM bound", "ratio",
                   "util"):
        table.add_column(column, justify="left" if column == "1 x K x N" else "right",
                         no_wrap=True)
    for r in report["decode"]:
        table.add_row(f"1x{r['K']}x{r['N']}", str(r["dram_bandwidth"]), f"{r['cycles']:,}",
                      f"{r['b_bytes']:,}", f"{r['dram_bound_cycles']:,}", f"{r['ratio']:.2f}",
                      f"{100 * r['utilization']:.2f}%")
    console.print(table)

"""The GEMV benchmark (``wafer bench gemv``): y = W x with W tiled over the mesh
(``programs.kernels.gemv``), on the emulator and on the RTL compiled by Verilator.

Per mesh it reports the simulated cycles, the MAC rate against the mesh's peak (the roofline:
4 MACs per core per cycle, one ``vdot4`` element, which is also the SRAM roofline: each element
reads one word of W and one of x, the two read ports), and how fast each backend simulated the
run (cycles/s and core-cycles/s, measured in the same process one after the other). Every
result is checked against numpy, and every Verilator run must equal the emulator's run exactly
(cycles, counters, SRAM).
"""

from dataclasses import dataclass

from mesh import MeshConfig
from programs.kernels import gemv

from .backends import run

__all__ = ["GemvSweep", "run_gemv_sweep", "render_gemv", "DEFAULT_JSON"]

DEFAULT_JSON = "results/bench_gemv.json"


class GemvMismatch(RuntimeError):
    """A wrong result, or a Verilator run that differs from the emulator's."""


@dataclass
class GemvSweep:
    sizes: tuple = ((4, 4), (8, 8), (32, 32))     # emulator
    rtl_sizes: tuple = ((4, 4), (8, 8))           # Verilator (and the emulator)
    rows_per_core: int = 32
    cols_per_core: int = 256
    seed: int = 1

    def meshes(self):
        return sorted(set(self.sizes) | set(self.rtl_sizes))


def _entry(k, outcome, config):
    result = outcome.result
    return {
        "mesh": config.shape, "tiles": config.tiles, "backend": outcome.backend,
        "cycles": result.cycles, "macs": k.macs,
        "mac_utilization": k.utilization(result.cycles),
        "w_fraction_of_sram": (k.sizes["rows_per_core"] * k.sizes["cols_per_core"] // 4)
        / config.sram_words,
        "seconds": outcome.seconds,
        "cycles_per_second": outcome.cycles_per_second,
        "core_cycles_per_second": outcome.core_cycles_per_second(config.tiles),
    }


def run_gemv_sweep(sweep, progress=None):
    """Run the sweep; returns the JSON-ready report. ``progress``: a rich Progress or None."""
    runs = []
    meshes = sweep.meshes()
    task = progress.add_task("gemv", total=len(meshes)) if progress else None
    for width, height in meshes:
        config = MeshConfig(width, height)
        k = gemv(config, seed=sweep.seed, rows_per_core=sweep.rows_per_core,
                 cols_per_core=sweep.cols_per_core)
        backends = ["emulator"] + (["verilator"] if (width, height) in sweep.rtl_sizes else [])
        outcomes = {}
        for backend in backends:
            if progress:
                progress.update(task, description=f"gemv {config.shape} on {backend}")
            outcome = run(k.program, backend, max_cycles=1_000_000).check()
            problems = k.check(outcome.result)
            if problems:
                raise GemvMismatch("\n".join(problems))
            outcomes[backend] = outcome
            runs.append(_entry(k, outcome, config))
        if "verilator" in outcomes:
            differ = outcomes["verilator"].result.same_as(outcomes["emulator"].result)
            if differ:
                raise GemvMismatch(f"gemv {config.shape}: Verilator and emulator differ: "
                                   f"{'; '.join(differ)}")
        if progress:
            progress.advance(task)
    return {"benchmark": "gemv", "rows_per_core": sweep.rows_per_core,
            "cols_per_core": sweep.cols_per_core, "seed": sweep.seed,
            "peak_macs_per_core_cycle": 4, "runs": runs}


def render_gemv(report, console):
    from rich.table import Table

    table = Table(title=f"GEMV, {report['rows_per_core']} x {report['cols_per_core']} int8 "
                        f"block of W per core (roofline: 4 MACs per core per cycle)")
    for column in ("mesh", "backend", "cycles", "MAC rate / peak", "W / SRAM", "wall s",
                   "cycles/s", "core-cycles/s"):
        table.add_column(column, justify="left" if column in ("mesh", "backend") else "right")
    for r in report["runs"]:
        table.add_row(r["mesh"], r["backend"], f"{r['cycles']:,}",
                      f"{100 * r['mac_utilization']:.1f}%",
                      f"{100 * r['w_fraction_of_sram']:.0f}%", f"{r['seconds']:.2f}",
                      f"{r['cycles_per_second']:,.0f}", f"{r['core_cycles_per_second']:,.0f}")
    console.print(table)

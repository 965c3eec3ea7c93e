"""``wafer run``: one program on one backend, with its results, cycles and counters.

PROGRAM is the name of an example kernel (``programs.kernels.KERNELS``: checked against numpy)
or the path of an assembly file (``mesh.asm``: its data is printed). The report gives the cycle
count, how fast the backend simulated it, the MAC rate against the mesh's peak (4 per core per
cycle), and every counter summed over the cores with its range.
"""

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mesh import ConfigError, MeshConfig, isa
from programs.kernels import KERNELS, kernel

from .backends import run

__all__ = ["load_program", "run_command"]

DEFAULT_MESH = "4x4"


class ProgramNotFound(ConfigError):
    pass


def parse_sizes(items):
    """``NAME=INT`` items (kernel size parameters) as a dict."""
    sizes = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"--size {item!r} is not NAME=VALUE, e.g. rows_per_core=16")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ConfigError(f"--size {item!r}: {value!r} is not an integer") from None
    return sizes


def load_program(name, mesh=None, seed=0, sizes=None):
    """(program, kernel or None) for PROGRAM ``name``: a kernel name or an assembly file."""
    if name in KERNELS:
        config = MeshConfig.parse_shape(mesh or DEFAULT_MESH)
        try:
            k = kernel(name, config, seed=seed, **(sizes or {}))
        except TypeError as error:
            raise ConfigError(f"{name}: {error}") from None
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return k.program, k
    path = Path(name)
    if path.suffix == ".s" or path.exists():
        if not path.exists():
            raise ProgramNotFound(f"no such assembly file: {name}")
        if sizes:
            raise ConfigError("--size applies to the example kernels, not to assembly files")
        from mesh.asm import assemble_file
        config = MeshConfig.parse_shape(mesh) if mesh else None
        return assemble_file(path, config), None
    raise ProgramNotFound(f"unknown program {name!r}: give an assembly file (.s) or one of "
                          f"{', '.join(sorted(KERNELS))}")


def report(program, k, outcome, status, problems):
    """The JSON-ready report of a run."""
    cfg = program.config
    result = outcome.result
    names = [n for n, _ in isa.COUNTERS]
    counters = {name: result.counters[:, i].astype(int).tolist() for i, name in enumerate(names)}
    macs = int(result.counter("macs").sum())
    peak = 4 * cfg.tiles * max(result.cycles, 1)
    data = {
        "program": program.name, "mesh": cfg.shape, "backend": outcome.backend,
        "status": status, "cycles": result.cycles,
        "seconds": round(outcome.seconds, 6),
        "cycles_per_second": round(outcome.cycles_per_second, 1),
        "core_cycles_per_second": round(outcome.core_cycles_per_second(cfg.tiles), 1),
        "macs": macs, "mac_utilization": macs / peak,
        "counters": counters,
        "totals": {name: int(sum(values)) for name, values in counters.items()},
        "traps": result.trap_report(program),
    }
    if k is not None:
        data["check"] = {"correct": not problems, "problems": problems,
                         "outputs": {n: v.view(np.int32).astype(int).tolist()[:64]
                                     for n, v in k.read(result).items()}}
        data["useful_macs"] = k.macs
    else:
        data["data"] = _data_symbols(program, result)
    return data


def _data_symbols(program, result, limit=16):
    """{"(x,y)": {name: words as int32}} of the named SRAM areas of every tile's program (at
    most ``limit`` words each)."""
    out = {}
    for tile, image in enumerate(program.images):
        words = {name: result.sram[tile, address:address + min(size, limit)].view(np.int32)
                 .astype(int).tolist()
                 for name, (address, size) in sorted(image.data.items(), key=lambda kv: kv[1])}
        if words:
            x, y = program.config.tile_xy(tile)
            out[f"({x},{y})"] = words
    return out


def run_command(args):
    """Run ``wafer run`` with parsed ``args``; return the exit status."""
    if args.waves is not None:
        if args.backend == "emulator":
            raise ConfigError("--waves needs an RTL backend (--backend verilator or amaranth): "
                              "the emulator has no signals to dump")
        allowed = (".vcd", ".fst") if args.backend == "verilator" else (".vcd",)
        if Path(args.waves).suffix.lower() not in allowed:
            raise ConfigError(f"--waves: {args.waves!r} must end in {' or '.join(allowed)} "
                              f"on {args.backend}")
    program, k = load_program(args.program, args.mesh, args.seed, parse_sizes(args.size))
    console = Console(stderr=args.json, soft_wrap=True)   # long paths and reports stay whole
    columns = (SpinnerColumn(), TextColumn("{task.description}: cycle {task.completed}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(f"{program.name} on {args.backend}", total=None)
        outcome = run(program, args.backend, max_cycles=args.max_cycles,
                      stall_limit=args.stall_limit,
                      progress=lambda cycle: progress.update(task, completed=cycle),
                      waves=args.waves)
    status, error = outcome.status, outcome.message
    problems = k.check(outcome.result) if k is not None and status == "done" else []
    data = report(program, k, outcome, status, problems)
    if args.json:
        if error:
            data["error"] = error
        print(json.dumps(data, indent=1))
    else:
        _render(console, data, error)
    return 0 if status == "done" and not problems else 1


def _render(console, data, error):
    console.print(f"[bold]{data['program']}[/] on a {data['mesh']} mesh, {data['backend']}: "
                  f"{data['status']} after {data['cycles']} cycles")
    if error:
        console.print(error, style="red", markup=False, highlight=False)
    check = data.get("check")
    if check is not None:
        if check["correct"]:
            console.print("result: correct (every output equals numpy)", style="green")
        for problem in check["problems"]:
            console.print(f"WRONG: {problem}", style="bold red", markup=False)
    for tile, words in data.get("data", {}).items():
        for name, values in words.items():
            console.print(f"tile {tile} {name} = {values}", markup=False, highlight=False)
    console.print(f"speed: {data['seconds']:.3f} s, {data['cycles_per_second']:,.0f} cycles/s, "
                  f"{data['core_cycles_per_second']:,.0f} core-cycles/s")
    console.print(f"MACs: {data['macs']:,} = {100 * data['mac_utilization']:.1f}% of the peak "
                  f"(4 per core per cycle)")
    table = Table(title="counters over all cores", title_justify="left")
    for column in ("counter", "total", "min", "max"):
        table.add_column(column, justify="left" if column == "counter" else "right")
    for name, values in data["counters"].items():
        table.add_row(name, f"{sum(values):,}", f"{min(values):,}", f"{max(values):,}")
    console.print(table)

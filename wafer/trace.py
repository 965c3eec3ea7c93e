"""``wafer trace``: where a program's wavelets go, as a per-link utilization heatmap.

    wafer trace PROGRAM [--mesh WxH] [--backend emulator|verilator|amaranth] [--size NAME=VALUE]
                        [--seed S] [--max-cycles N] [--stall-limit N] [--png FILE]
                        [--waves FILE] [--json [FILE]]

PROGRAM is resolved as ``wafer run`` resolves it (an example kernel or an assembly file). The run
is traced and every directed link of the mesh gets a count of the wavelets it carried; its
utilization is that count over the run's cycles (a link carries at most one wavelet per cycle).
The links are: the links between neighbouring routers (one per direction), the edge links (out
of the mesh and into it: nothing drives the inbound ones in a program run, so they stay 0), and
each core's RAMP link pair (core to router, router to core).

Where the counts come from, by backend:

* ``emulator``: the emulator's trace (:class:`emulator.MeshEmulator` with ``trace=True``: every
  router output and every core send of every cycle).
* ``amaranth``: the trace of the RTL in the Amaranth simulator (:class:`hdl.mesh_sim.
  MeshSimulation` with ``trace=True``, the same events), checked equal, link by link, to the
  emulator's counts of the same program; the result (cycles, memories, counters) too.
* ``verilator``: the standalone Verilator program records no per-link events, so the counts
  are the emulator's of the same program, which is cycle-exact to the RTL: the Verilator run's
  cycles, memories and every counter (``wavelets_out``, the core-to-router RAMP links, among
  them) are checked equal to the emulator's, and a difference is an error (status 1).

``--waves`` writes the RTL run's waveform through the path ``wafer run --waves`` uses (Verilator:
.vcd or .fst; Amaranth: .vcd); with ``--waves`` and no ``--backend`` the RTL run is Verilator's.

Each tile is filled with its core's busy fraction: the cycles it ran (had not halted) less the
cycles it stalled on the fabric (counters ``cycles - stall_in - stall_out``, floored at 0) over
the run's cycles. A vector instruction waiting at both ends in one cycle counts that cycle as
both stalls, so busy is a lower bound; the JSON report gives the three counters as fractions.
"""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mesh import NUM_PORTS, ConfigError, Port, isa

__all__ = ["LinkUse", "TraceMismatch", "add_parser", "trace_command", "trace_program",
           "plot_heatmap"]

SIDES = (Port.N, Port.E, Port.S, Port.W)
WAVE_SUFFIXES = {"verilator": (".vcd", ".fst"), "amaranth": (".vcd",)}
SOURCES = {
    "emulator": "the emulator's trace",
    "amaranth": "the RTL's trace in the Amaranth simulator (equal to the emulator's)",
    "verilator": "the emulator's trace of the same program, cycle-exact to the RTL (the "
                 "Verilator run has no per-link trace; its cycles, memories and counters were "
                 "checked equal to the emulator's)",
}


class TraceMismatch(RuntimeError):
    """The RTL run and the emulator run of the same program differ."""


@dataclass
class LinkUse:
    """The wavelets every link carried in a run of ``cycles`` cycles on a ``config`` mesh.

    ``sent`` (tiles, 5): wavelets sent by each router output port. The N/E/S/W outputs are the
    links to the neighbouring routers, or at the mesh's edge the outbound edge links; the RAMP
    output is the link to the tile's own core. ``core_sent`` (tiles,): wavelets each core sent
    to its router (the inbound RAMP link)."""
    config: object
    cycles: int
    sent: np.ndarray
    core_sent: np.ndarray

    @classmethod
    def from_trace(cls, config, cycles, wavelets, core_sends):
        """Count the events of a trace: ``wavelets`` (cycle, tile, port, color, data) per router
        output, ``core_sends`` (cycle, tile, color, data) per core send."""
        tiles = config.tiles
        sides = np.fromiter((t * NUM_PORTS + p for _, t, p, _, _ in wavelets), np.int64,
                            len(wavelets))
        senders = np.fromiter((t for _, t, _, _ in core_sends), np.int64, len(core_sends))
        return cls(config, int(cycles),
                   np.bincount(sides, minlength=tiles * NUM_PORTS).reshape(tiles, NUM_PORTS),
                   np.bincount(senders, minlength=tiles))

    def __eq__(self, other):
        return (isinstance(other, LinkUse) and self.cycles == other.cycles
                and np.array_equal(self.sent, other.sent)
                and np.array_equal(self.core_sent, other.core_sent))

    def links(self):
        """One dict per directed link: ``kind`` (internal, edge_out, edge_in, ramp_in: core to
        router, ramp_out: router to core), ``tile`` (x, y) and ``port`` of the router side it
        leaves from (enters, for edge_in and ramp_in), ``source`` and ``dest`` as [x, y] (None
        outside the mesh; the tile's own for RAMP links), ``name``, ``wavelets`` and
        ``utilization``."""
        cfg = self.config
        cycles = max(self.cycles, 1)
        out = []

        def add(kind, x, y, port, source, dest, name, count):
            out.append({"kind": kind, "tile": [x, y], "port": port.name, "source": source,
                        "dest": dest, "name": name, "wavelets": int(count),
                        "utilization": int(count) / cycles})

        for tile in range(cfg.tiles):
            x, y = cfg.tile_xy(tile)
            for port in SIDES:
                dx, dy = port.delta
                nx, ny = x + dx, y + dy
                if 0 <= nx < cfg.width and 0 <= ny < cfg.height:
                    add("internal", x, y, port, [x, y], [nx, ny], f"({x},{y})->({nx},{ny})",
                        self.sent[tile, port])
                else:
                    add("edge_out", x, y, port, [x, y], None, f"({x},{y})->edge {port.name}",
                        self.sent[tile, port])
                    add("edge_in", x, y, port, None, [x, y], f"edge {port.name}->({x},{y})", 0)
            add("ramp_in", x, y, Port.RAMP, [x, y], [x, y], f"core({x},{y})->router",
                self.core_sent[tile])
            add("ramp_out", x, y, Port.RAMP, [x, y], [x, y], f"router({x},{y})->core",
                self.sent[tile, Port.RAMP])
        return out


# Running --------------------------------------------------------------------------------------


@dataclass
class Traced:
    """A traced run: ``use`` (:class:`LinkUse`), ``result`` (:class:`mesh.RunResult` of the
    backend), ``status`` and ``message`` as :class:`wafer.backends.Run` gives them, ``seconds``
    of the backend's run."""
    backend: str
    use: LinkUse
    result: object
    status: str
    message: str
    seconds: float


def _emulate(program, max_cycles, stall_limit, progress=None):
    """The emulator's traced run: (LinkUse, RunResult, status, message, seconds)."""
    from emulator import MeshEmulator
    from wafer.backends import _run_emulator

    emulator = MeshEmulator(program, trace=True)
    run = _run_emulator(program, max_cycles, stall_limit, progress, emulator=emulator)
    use = LinkUse.from_trace(program.config, run.result.cycles, emulator.wavelets,
                             emulator.core_sends)
    return use, run.result, run.status, run.message, run.seconds


def _counter(result, name):
    return result.counters[:, [n for n, _ in isa.COUNTERS].index(name)].astype(np.int64)


def trace_program(program, backend="emulator", max_cycles=1_000_000, stall_limit=200,
                  waves=None, progress=None):
    """Run ``program`` on ``backend`` with link counting (see the module's description) and
    return a :class:`Traced`. Raises :class:`TraceMismatch` when an RTL run differs from the
    emulator's run of the same program."""
    use, result, status, message, seconds = _emulate(
        program, max_cycles, stall_limit, progress if backend == "emulator" else None)
    if np.any(_counter(result, "wavelets_out") != use.core_sent):
        raise TraceMismatch(f"{program.name}: the emulator's trace and its wavelets_out counters "
                            f"differ")
    if backend == "emulator":
        return Traced("emulator", use, result, status, message, seconds)
    if backend == "verilator":
        from wafer.backends import run

        # The path of ``wafer run --backend verilator [--waves FILE]``.
        outcome = run(program, "verilator", max_cycles=max_cycles, stall_limit=stall_limit,
                      waves=waves)
        rtl_result, rtl_status, rtl_seconds = outcome.result, outcome.status, outcome.seconds
        rtl_use = None
    elif backend == "amaranth":
        from hdl.mesh_sim import MeshSimulation

        simulation = MeshSimulation(program.config, trace=True, waves=waves)
        start = time.perf_counter()
        rtl_result, rtl_status = simulation.run(program, max_cycles=max_cycles,
                                                stall_limit=stall_limit, progress=progress)
        rtl_seconds = time.perf_counter() - start
        rtl_use = LinkUse.from_trace(program.config, rtl_result.cycles,
                                     simulation.trace.wavelets, simulation.trace.core_sends)
    else:
        raise ValueError(f"unknown backend {backend!r}: choose one of emulator, verilator, "
                         f"amaranth")
    problems = [] if rtl_status == status else [f"status {rtl_status} != {status}"]
    problems += rtl_result.same_as(result)
    if rtl_use is not None and rtl_use != use:
        differ = np.argwhere(rtl_use.sent != use.sent)[:4].tolist()
        problems.append(f"link counts differ (tile, port): {differ}"
                        if differ else "core send counts differ")
    if problems:
        raise TraceMismatch(f"{program.name} on {backend} and on the emulator differ: "
                            + "; ".join(problems))
    # Same stop, same cycle: the emulator's report explains it (the RTL cannot say more).
    return Traced(backend, use if rtl_use is None else rtl_use, rtl_result, rtl_status, message,
                  rtl_seconds)


# The report -----------------------------------------------------------------------------------


def report(program, k, traced, problems, source, top=8):
    """The JSON-ready report: run, links, tiles and a summary."""
    cfg = program.config
    use, result = traced.use, traced.result
    cycles = max(result.cycles, 1)
    links = use.links()
    running = _counter(result, "cycles")
    stall_in, stall_out = _counter(result, "stall_in"), _counter(result, "stall_out")
    busy = np.maximum(running - stall_in - stall_out, 0)
    tiles = []
    for tile in range(cfg.tiles):
        x, y = cfg.tile_xy(tile)
        tiles.append({"tile": [x, y], "busy": busy[tile] / cycles,
                      "running": running[tile] / cycles, "stall_in": stall_in[tile] / cycles,
                      "stall_out": stall_out[tile] / cycles,
                      "wavelets_in": int(_counter(result, "wavelets_in")[tile]),
                      "wavelets_out": int(_counter(result, "wavelets_out")[tile])})
    summary = {}
    for kind in ("internal", "edge_out", "ramp_in", "ramp_out"):
        values = [link["utilization"] for link in links if link["kind"] == kind]
        summary[kind] = {"links": len(values), "used": sum(v > 0 for v in values),
                         "wavelets": sum(link["wavelets"] for link in links
                                         if link["kind"] == kind),
                         "mean_utilization": float(np.mean(values)) if values else 0.0,
                         "max_utilization": max(values, default=0.0)}
    busiest = sorted((link for link in links if link["wavelets"]),
                     key=lambda link: (-link["wavelets"], link["name"]))[:top]
    data = {
        "program": program.name, "mesh": cfg.shape, "backend": traced.backend,
        "status": traced.status, "cycles": result.cycles, "source": source,
        "correct": (not problems) if k is not None and traced.status == "done" else None,
        "problems": problems,
        "utilization": "wavelets carried / cycles of the run",
        "busy": "(cycles - stall_in - stall_out counters, floored at 0) / cycles of the run",
        "summary": summary, "busiest": [link["name"] for link in busiest],
        "links": links, "tiles": tiles,
        # The same counts as grids [y][x]: what each router output port sent, and each core.
        "grids": {**{port.name: use.sent[:, port].reshape(cfg.height, cfg.width).tolist()
                     for port in Port},
                  "core": use.core_sent.reshape(cfg.height, cfg.width).tolist()},
    }
    return data


# The heatmap ----------------------------------------------------------------------------------

_HALF = 0.3         # half the side of a tile's square
_GAP = 0.035        # between a tile and an arrow's ends
_LANE = 0.11        # a link's offset from the line between tile centres


def _link_arrow(x, y, port):
    """(x0, y0, dx, dy) of the arrow of router (x, y)'s output ``port`` (a side), in data
    coordinates (y grows downward). Eastbound links run above the row line, westbound below;
    southbound right of the column line, northbound left."""
    dx, dy = port.delta
    x0 = x + dx * (_HALF + _GAP) + dy * _LANE
    y0 = y + dy * (_HALF + _GAP) - dx * _LANE
    length = 1 - 2 * (_HALF + _GAP)
    return x0, y0, dx * length, dy * length


def plot_heatmap(data, path):
    """Draw ``data`` (a :func:`report`) as a PNG at ``path``."""
    from matplotlib import colormaps
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrow, Rectangle

    width, height = (int(v) for v in data["mesh"].split("x"))
    cell = min(0.9, 14 / max(width, height))          # inches per tile
    span_x, span_y = width + 0.8, height + 0.8           # data units shown
    left, right, top, bottom = 0.55, 2.1, 0.85, 0.75     # margins, inches
    mesh_w, mesh_h = span_x * cell, span_y * cell
    area_h = max(mesh_h, 3.2)                            # room for the colorbars' labels
    fig_w = max(left + mesh_w + right, 7.0)
    fig_h = bottom + area_h + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=110)
    ax = fig.add_axes((left / fig_w, (bottom + (area_h - mesh_h) / 2) / fig_h, mesh_w / fig_w,
                       mesh_h / fig_h))
    bar_h = min(area_h, 4.5)
    bar_y = (bottom + (area_h - bar_h) / 2) / fig_h
    link_ax = fig.add_axes(((left + mesh_w + 0.25) / fig_w, bar_y, 0.16 / fig_w, bar_h / fig_h))
    busy_ax = fig.add_axes(((left + mesh_w + 1.25) / fig_w, bar_y, 0.16 / fig_w, bar_h / fig_h))

    busy_cmap = LinearSegmentedColormap.from_list("busy", ["#ffffff", "#6f9fd8"])
    link_cmap = LinearSegmentedColormap.from_list(
        "links", colormaps["YlOrRd"](np.linspace(0.3, 1.0, 64)))
    peak = max((link["utilization"] for link in data["links"]), default=0.0)
    link_norm = Normalize(0, peak if peak > 0 else 1)

    tiles = {tuple(t["tile"]): t for t in data["tiles"]}
    squares = [Rectangle((x - _HALF, y - _HALF), 2 * _HALF, 2 * _HALF) for x, y in tiles]
    square_set = PatchCollection(squares, cmap=busy_cmap, norm=Normalize(0, 1),
                                 edgecolor="#444444", linewidth=0.8 * min(1, cell / 0.5))
    square_set.set_array(np.array([t["busy"] for t in tiles.values()]))
    ax.add_collection(square_set)

    shaft = 0.065
    used, used_values, idle = [], [], []
    for link in data["links"]:
        x, y = link["tile"]
        kind, port = link["kind"], Port[link["port"]]
        if kind in ("internal", "edge_out"):
            x0, y0, dx, dy = _link_arrow(x, y, port)
        elif kind == "edge_in":       # drawn as the output of a router just outside the edge
            ddx, ddy = port.delta
            x0, y0, dx, dy = _link_arrow(x + ddx, y + ddy, port.opposite)
        else:                         # inside the tile: up core -> router, down router -> core
            x0, dx = x + (-0.13 if kind == "ramp_in" else 0.13), 0
            y0, dy = (y + 0.25, -0.17) if kind == "ramp_in" else (y + 0.08, 0.17)
        arrow = FancyArrow(x0, y0, dx, dy, width=shaft, head_width=2.2 * shaft,
                           head_length=1.4 * shaft, length_includes_head=True)
        if link["wavelets"]:
            used.append(arrow)
            used_values.append(link["utilization"])
        else:
            idle.append(arrow)
    ax.add_collection(PatchCollection(idle, facecolor="#d4d4d4", edgecolor="none"))
    link_set = PatchCollection(used, cmap=link_cmap, norm=link_norm, edgecolor="none")
    link_set.set_array(np.array(used_values, dtype=float))
    ax.add_collection(link_set)

    if max(width, height) <= 16:
        size = 7 * min(1.0, cell / 0.8)
        for (x, y), t in tiles.items():
            ax.text(x, y - 0.17, f"({x},{y})", ha="center", va="center", fontsize=size)
            ax.text(x, y - 0.03, f"{100 * t['busy']:.0f}%", ha="center", va="center",
                    fontsize=size, color="#1a3d6d")
    ax.set_xlim(-0.9, width - 0.1)
    ax.set_ylim(height - 0.1, -0.9)
    ax.set_xticks(range(width))
    ax.set_yticks(range(height))
    ax.tick_params(length=0, labelsize=8, labeltop=True, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)

    link_bar = fig.colorbar(link_set, cax=link_ax)
    link_bar.set_label("link utilization (wavelets / cycle); grey: 0", fontsize=8)
    link_bar.ax.tick_params(labelsize=7)
    busy_bar = fig.colorbar(square_set, cax=busy_ax)
    busy_bar.set_label("core busy fraction (tile fill)", fontsize=8)
    busy_bar.ax.tick_params(labelsize=7)

    internal = data["summary"]["internal"]
    fig.suptitle(f"{data['program']} on {data['mesh']} ({data['backend']}): {data['status']} "
                 f"after {data['cycles']:,} cycles\nrouter-to-router links: mean utilization "
                 f"{100 * internal['mean_utilization']:.1f}%, busiest link of all "
                 f"{100 * peak:.1f}%", fontsize=10, y=1 - 0.12 / fig_h, va="top")
    note = ("Arrows are directed links: eastbound above westbound, southbound right of "
            "northbound, edge links outside the mesh. In a tile: left, up = core to router; "
            "right, down = router to core.")
    fig.text(0.02, 0.42 / fig_h, note, fontsize=6.5, wrap=True)
    fig.text(0.02, 0.12 / fig_h, f"Counts: {data['source']}.", fontsize=6.5, wrap=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# The command ----------------------------------------------------------------------------------


def add_parser(commands):
    """Register ``wafer trace`` on the ``commands`` subparsers of the ``wafer`` parser."""
    trace = commands.add_parser(
        "trace", help="run a program and draw a per-link utilization heatmap of the mesh",
        description="Run an example kernel or an assembly file (as 'wafer run' does), count "
                    "the wavelets every directed link carried, and draw the mesh with each "
                    "link's utilization (wavelets per cycle) and each core's busy fraction as "
                    "a PNG; print the busiest links. On the verilator and amaranth backends the "
                    "RTL run is checked equal to the emulator's.")
    trace.add_argument("program", metavar="PROGRAM",
                       help="an example kernel (allreduce, broadcast, column_reduce, dot, gemv, "
                            "vector_add) or an assembly file (.s)")
    trace.add_argument("--mesh", metavar="WxH",
                       help="mesh shape (kernels: default 4x4; assembly: the file's .mesh)")
    trace.add_argument("--backend", choices=("emulator", "verilator", "amaranth"),
                       help="simulator (default: emulator; verilator with --waves)")
    trace.add_argument("--size", action="append", metavar="NAME=VALUE",
                       help="a kernel size parameter, e.g. --size rows_per_core=16 "
                            "(repeatable)")
    trace.add_argument("--seed", type=int, default=0, help="kernel data seed (default: 0)")
    trace.add_argument("--max-cycles", type=int, default=1_000_000, metavar="N",
                       help="stop after N cycles (default: %(default)s)")
    trace.add_argument("--stall-limit", type=int, default=200, metavar="N",
                       help="report no progress after N idle cycles (default: %(default)s)")
    trace.add_argument("--png", metavar="FILE",
                       help="the heatmap (default: results/trace_PROGRAM_WxH.png); 'none' for "
                            "no heatmap")
    trace.add_argument("--waves", metavar="FILE",
                       help="write a waveform of the RTL run (.vcd; .fst on verilator)")
    trace.add_argument("--json", nargs="?", const="-", metavar="FILE",
                       help="write the utilization numbers as JSON to FILE; without FILE, print "
                            "them to stdout instead of the summary")
    return trace


def _default_png(program):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", program.name).strip("_") or "program"
    return f"results/trace_{name}_{program.config.shape}.png"


def trace_command(args):
    """Run ``wafer trace`` with parsed ``args``; return the exit status."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from wafer.run_program import load_program, parse_sizes

    backend = args.backend or ("verilator" if args.waves else "emulator")
    if args.waves is not None:
        if backend == "emulator":
            raise ConfigError("--waves needs an RTL backend (--backend verilator or amaranth): "
                              "the emulator has no signals to dump")
        allowed = WAVE_SUFFIXES[backend]
        if Path(args.waves).suffix.lower() not in allowed:
            raise ConfigError(f"--waves: {args.waves!r} must end in {' or '.join(allowed)} "
                              f"on {backend}")
    for option, value in (("--max-cycles", args.max_cycles), ("--stall-limit", args.stall_limit)):
        if value < 1:
            raise ConfigError(f"{option}: must be at least 1, not {value}")
    if args.mesh is not None:
        from mesh import MeshConfig
        try:
            MeshConfig.parse_shape(args.mesh)
        except ConfigError as error:
            raise ConfigError(f"--mesh: {error}") from None
    program, k = load_program(args.program, args.mesh, args.seed, parse_sizes(args.size))
    if backend == "verilator":
        from wafer.verilator import missing_reason
        if missing_reason():
            raise ConfigError(f"cannot run on Verilator: {missing_reason()}")
    png = args.png if args.png is not None else _default_png(program)
    png = None if png.strip().lower() == "none" else png

    to_stdout = args.json == "-"
    console = Console(stderr=to_stdout, soft_wrap=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}: cycle {task.completed}"),
               TimeElapsedColumn())
    from wafer.verilator_mesh import VerilatorError
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True,
                      disable=not console.is_terminal) as progress:
            task = progress.add_task(f"{program.name} on {backend}", total=None)
            traced = trace_program(program, backend, args.max_cycles, args.stall_limit,
                                   args.waves,
                                   lambda cycle: progress.update(task, completed=cycle))
    except (TraceMismatch, VerilatorError) as error:
        console.print(f"FAILED: {error}", style="bold red", markup=False, highlight=False)
        return 1
    problems = k.check(traced.result) if k is not None and traced.status == "done" else []
    data = report(program, k, traced, problems, SOURCES[backend])
    data["png"] = png
    data["waves"] = args.waves
    if traced.message:
        data["error"] = traced.message
    if png:
        plot_heatmap(data, png)
    if to_stdout:
        print(json.dumps(data, indent=1))
    else:
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1) + "\n")
        render(data, console)
    return 0 if traced.status == "done" and not problems else 1


def render(data, console):
    """The readable summary: the run, utilization by kind of link, the busiest links."""
    from rich.table import Table

    console.print(f"[bold]{data['program']}[/] on a {data['mesh']} mesh, {data['backend']}: "
                  f"{data['status']} after {data['cycles']} cycles")
    if data.get("error"):
        console.print(data["error"], style="red", markup=False, highlight=False)
    if data["correct"]:
        console.print("result: correct (every output equals numpy)", style="green")
    for problem in data["problems"]:
        console.print(f"WRONG: {problem}", style="bold red", markup=False)
    console.print(f"link counts from {data['source']}", markup=False, highlight=False)
    kinds = Table(title="links by kind", title_justify="left")
    for column in ("kind", "links", "used", "wavelets", "mean util.", "max util."):
        kinds.add_column(column, justify="left" if column == "kind" else "right")
    names = {"internal": "router to router", "edge_out": "edge (out of the mesh)",
             "ramp_in": "core to router", "ramp_out": "router to core"}
    for kind, s in data["summary"].items():
        kinds.add_row(names[kind], str(s["links"]), str(s["used"]), f"{s['wavelets']:,}",
                      f"{100 * s['mean_utilization']:.1f}%", f"{100 * s['max_utilization']:.1f}%")
    console.print(kinds)
    by_name = {link["name"]: link for link in data["links"]}
    if data["busiest"]:
        busiest = Table(title="busiest links", title_justify="left")
        for column in ("link", "wavelets", "utilization"):
            busiest.add_column(column, justify="left" if column == "link" else "right")
        for name in data["busiest"]:
            link = by_name[name]
            busiest.add_row(name, f"{link['wavelets']:,}", f"{100 * link['utilization']:.1f}%")
        console.print(busiest)
    else:
        console.print("no wavelet moved on any link")
    busy = [t["busy"] for t in data["tiles"]]
    console.print(f"core busy: mean {100 * np.mean(busy):.1f}%, max {100 * max(busy):.1f}%")
    for label, key in (("heatmap", "png"), ("waveform", "waves")):
        if data.get(key):
            console.print(f"{label}: {data[key]}", markup=False, highlight=False)

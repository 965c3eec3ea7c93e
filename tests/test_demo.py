"""The default demo (``wafer demo``): exact cycles on the emulator, and the command line."""

import json

import pytest

from mesh import ConfigError, MeshConfig
from wafer.cli import main
from wafer.demo import demo_report


@pytest.mark.parametrize("width, height", [(2, 2), (4, 4), (8, 8), (5, 3)])
def test_flows_run_at_one_hop_per_cycle_and_full_rate(width, height):
    report = demo_report(MeshConfig(width=width, height=height), wavelets=32)
    assert report["ok"], report["problems"]
    multicast, chain = report["flows"]
    # Injected from cycle 0, one per cycle: the k-th router sends in cycle k + 1.
    assert (multicast["first_arrival"], multicast["last_arrival"]) == (height, height + 31)
    assert (chain["first_arrival"], chain["last_arrival"]) == (width, width + 31)
    assert multicast["copies"] == width * (height - 1) * 32
    assert chain["copies"] == height * 32
    # The run ends once the sinks have taken out the last arrival, the cycle after it.
    assert report["cycles"] == max(width, height) + 31 + 2


def test_demo_refuses_a_mesh_too_small():
    with pytest.raises(ConfigError, match="at least 2x2"):
        demo_report(MeshConfig(width=1, height=4))


def test_cli_demo_json(capsys):
    assert main(["demo", "--mesh", "3x3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["mesh"] == "3x3"
    gemv = report["gemv"]
    assert gemv["ok"] and gemv["shape"] == [96, 768] and gemv["macs"] == 96 * 768
    assert gemv["mac_utilization"] > 0.8


def test_cli_demo_readable(capsys):
    assert main(["demo", "--mesh", "2x2"]) == 0
    out = capsys.readouterr().out
    assert "OK: every copy arrived exactly once, in order." in out
    assert "GEMV on the 2x2 mesh's cores" in out and "OK: y equals numpy." in out


@pytest.mark.parametrize("shape", ["3y", "1x4", "0x2"])
def test_cli_demo_bad_mesh(shape, capsys):
    assert main(["demo", "--mesh", shape]) == 2
    error = capsys.readouterr().err
    assert error.startswith("wafer: error:") and "\n" == error[-1] and error.count("\n") == 1

"""The fabric (``hdl.Fabric``) under cocotb, on Verilator and Icarus.

One build per simulator (``sim_build/fabric/<simulator>/``) and one simulator run of all selected
cocotb tests of ``sim_tests/fabric_tb.py`` (a launch costs seconds); each pytest item reports
one of them, with its part of the simulator log when it fails.
"""

import pytest

from . import simulators

SCENARIOS = ["row_stream", "multicast_and_columns", "tree", "random_traffic", "route_write"]


@pytest.fixture(scope="module")
def verilog():
    return simulators.generate("fabric")


@pytest.fixture(scope="module")
def fabric_results(request, simulator, verilog):
    text, top = verilog
    runner, directory = simulators.build(simulator, "fabric", top, text)
    scenarios = simulators.selected_scenarios(request, simulator, SCENARIOS)
    return simulators.run_all(simulator, runner, directory, top, "sim_tests.fabric_tb", scenarios)


@pytest.mark.parametrize("simulator", simulators.SIMULATORS, indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fabric(fabric_results, scenario):
    fabric_results.check(scenario)

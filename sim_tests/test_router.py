"""The router (``hdl.Router``) under cocotb, on Verilator and Icarus.

One build per simulator (``sim_build/router/<simulator>/``) and one simulator run of all selected
cocotb tests of ``sim_tests/router_tb.py`` (a launch costs seconds); each pytest item reports
one of them, with its part of the simulator log when it fails.
"""

import pytest

from . import simulators

SCENARIOS = ["passthrough", "multicast_backpressure", "random_traffic", "route_write",
             "unrouted_held"]


@pytest.fixture(scope="module")
def verilog():
    return simulators.generate("router")


@pytest.fixture(scope="module")
def router_results(request, simulator, verilog):
    text, top = verilog
    runner, directory = simulators.build(simulator, "router", top, text)
    scenarios = simulators.selected_scenarios(request, simulator, SCENARIOS)
    return simulators.run_all(simulator, runner, directory, top, "sim_tests.router_tb", scenarios)


@pytest.mark.parametrize("simulator", simulators.SIMULATORS, indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_router(router_results, scenario):
    router_results.check(scenario)

"""One core (``hdl.Core``, configuration ``designs.CORE_CONFIG``) under cocotb, on Verilator and
Icarus.

One build per simulator (``sim_build/core/<simulator>/``) and one simulator run of all selected
cocotb tests of ``sim_tests/core_tb.py``; each pytest item reports one of them, with its part of
the simulator log when it fails.
"""

import pytest

from . import simulators

SCENARIOS = ["scalar_vector", "stream_in", "stream_out", "stream_transform", "trap"]


@pytest.fixture(scope="module")
def verilog():
    return simulators.generate("core")


@pytest.fixture(scope="module")
def core_results(request, simulator, verilog):
    text, top = verilog
    runner, directory = simulators.build(simulator, "core", top, text)
    scenarios = simulators.selected_scenarios(request, simulator, SCENARIOS)
    return simulators.run_all(simulator, runner, directory, top, "sim_tests.core_tb", scenarios)


@pytest.mark.parametrize("simulator", simulators.SIMULATORS, indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_core(core_results, scenario):
    core_results.check(scenario)

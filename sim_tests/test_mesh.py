"""A whole mesh (``wse_mesh`` from ``hdl.mesh_verilog``, configuration
``designs.MESH_CONFIGS["mesh"]``) under cocotb, on Verilator and Icarus.

One build per simulator (``sim_build/mesh/<simulator>/``) and one simulator run of all selected
cocotb tests of ``sim_tests/mesh_tb.py``; each pytest item reports one of them, with its part of
the simulator log when it fails.
"""

import pytest

from . import simulators

DESIGN = "mesh"
SCENARIOS = ["allreduce", "gemv", "small_kernels", "trap", "edge_streams"]


@pytest.fixture(scope="module")
def verilog():
    return simulators.generate(DESIGN)


@pytest.fixture(scope="module")
def mesh_results(request, simulator, verilog):
    text, top = verilog
    runner, directory = simulators.build(simulator, DESIGN, top, text)
    scenarios = simulators.selected_scenarios(request, simulator, SCENARIOS)
    return simulators.run_all(simulator, runner, directory, top, "sim_tests.mesh_tb", scenarios,
                              extra_env={"SIM_TESTS_MESH": DESIGN})


@pytest.mark.parametrize("simulator", simulators.SIMULATORS, indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_mesh(mesh_results, scenario):
    mesh_results.check(scenario)

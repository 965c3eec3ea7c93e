"""The prefill engine (``hdl.PrefillEngine(designs.PREFILL_CONFIG, external_dram=True)``) under
cocotb, with the DRAM played in Python by ``sim_tests/prefill_tb.py``, on Verilator and Icarus.

One build per simulator (``sim_build/prefill/<simulator>/``) and one simulator run of all
selected cocotb tests; each pytest item reports one of them, with its part of the simulator log
when it fails.
"""

import gc

import pytest

from . import simulators

SCENARIOS = ["gemm_exact", "gemm_exact_channels", "gemm_backpressure"]


@pytest.fixture(scope="module")
def verilog():
    return simulators.generate("prefill")


@pytest.fixture(scope="module")
def prefill_results(request, simulator, verilog):
    text, top = verilog
    runner, directory = simulators.build(simulator, "prefill", top, text)
    scenarios = simulators.selected_scenarios(request, simulator, SCENARIOS)
    return simulators.run_all(simulator, runner, directory, top, "sim_tests.prefill_tb",
                              scenarios)


@pytest.mark.parametrize("simulator", simulators.SIMULATORS, indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_prefill(prefill_results, scenario):
    prefill_results.check(scenario)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_external_dram_members():
    """``external_dram=True`` replaces the DRAM model by the ``dram_req``/``dram_resp`` members
    (the DMA's request and response signatures); the default engine is unchanged."""
    from amaranth.lib.wiring import In, Out

    import hdl
    from hdl.dma import DramRequest, DramResponse

    from .designs import PREFILL_CONFIG as config

    engine = hdl.PrefillEngine(config, external_dram=True)
    members = engine.signature.members
    meta_bits = engine.dma.meta_bits
    assert members["dram_req"].flow is Out and members["dram_resp"].flow is In
    assert members["dram_req"].signature.members == DramRequest(config, meta_bits).members
    assert members["dram_resp"].signature.members == DramResponse(config, meta_bits).flip().members
    assert engine.dram_model is None and engine.external_dram
    with pytest.raises(ValueError, match="no DRAM model"):
        engine.dram_location(0)
    with pytest.raises(ValueError, match="external_dram"):
        hdl.PrefillEngine(config, dram=b"\x01", external_dram=True)
    default = hdl.PrefillEngine(config)
    assert "dram_req" not in default.signature.members and not default.external_dram
    assert set(members) - set(default.signature.members) == {"dram_req", "dram_resp"}
    del engine, default, members
    gc.collect()        # the unelaborated components warn when collected: inside the filter

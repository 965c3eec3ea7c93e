"""The packet link (``hdl.PacketTx`` and ``hdl.PacketRx`` side by side in one top module,
``packet_link``) under cocotb, with the lanes' channels played in Python by
``sim_tests/link_tb.py``, on Verilator and Icarus, compared cycle by cycle with
``emulator.link.LinkEmulator``.

One build per simulator (``sim_build/link/<simulator>/``) and one simulator run of all selected
cocotb tests; each pytest item reports one of them, with its part of the simulator log when it
fails. The Verilog is generated here (the wrapper below, ``LINK_CONFIG`` from ``link_tb.py``)
and cached under ``sim_build/link/`` by a digest of ``hdl/``, ``mesh/``, ``designs.py``, the
wrapper's source and the configuration, as ``simulators.generate`` caches the other designs.
"""

import gc
import inspect

import pytest

from . import simulators

DESIGN = "link"
TOP = "packet_link"
SCENARIOS = ["clean", "faults", "dead_lane", "lanes_dead"]


def link_pair(config, tx_node, rx_node):
    """A component holding a ``PacketTx`` (node ``tx_node``) and a ``PacketRx`` (``rx_node``),
    not connected to each other: every member of each is a member of the pair, prefixed
    ``tx_`` / ``rx_`` (Verilog ports ``tx_data_out__0__valid``, ``rx_read__addr``, ...)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring

    from hdl.packet_rx import PacketRx
    from hdl.packet_tx import PacketTx

    class LinkPair(wiring.Component):
        def __init__(self):
            self.tx = PacketTx(config, tx_node, rx_node)
            self.rx = PacketRx(config, rx_node, tx_node)
            members = {}
            for prefix, part in (("tx", self.tx), ("rx", self.rx)):
                for name, member in part.signature.members.items():
                    members[f"{prefix}_{name}"] = member
            super().__init__(members)

        def elaborate(self, platform):
            m = Module()
            m.submodules.tx = self.tx
            m.submodules.rx = self.rx
            mine = {path: value for path, _, value in self.signature.flatten(self)}
            for prefix, part in (("tx", self.tx), ("rx", self.rx)):
                for path, member, value in part.signature.flatten(part):
                    outer = mine[(f"{prefix}_{path[0]}", *path[1:])]
                    if member.flow == wiring.Out:
                        m.d.comb += outer.eq(value)
                    else:
                        m.d.comb += value.eq(outer)
            return m

    return LinkPair()


def generate():
    """(Verilog text, top module) of the pair, cached."""
    from hdl.toolchain import build_lock

    from .link_tb import LINK_CONFIG, RX_NODE, TX_NODE

    key = simulators._sources_digest(DESIGN, repr(LINK_CONFIG), TX_NODE, RX_NODE,
                                     inspect.getsource(link_pair))
    directory = simulators.SIM_BUILD / DESIGN
    cached = directory / f"{DESIGN}.{key}.v"
    with build_lock(directory):
        if cached.exists():
            return cached.read_text(), TOP
        import hdl

        text = hdl.verilog(link_pair(LINK_CONFIG, TX_NODE, RX_NODE), TOP)
        gc.collect()
        for old in directory.glob(f"{DESIGN}.*.v"):
            old.unlink()
        cached.write_text(text)
        return text, TOP


@pytest.fixture(scope="module")
def verilog():
    return generate()


@pytest.fixture(scope="module")
def link_results(request, simulator, verilog):
    text, top = verilog
    runner, directory = simulators.build(simulator, DESIGN, top, text)
    scenarios = simulators.selected_scenarios(request, simulator, SCENARIOS)
    return simulators.run_all(simulator, runner, directory, top, "sim_tests.link_tb", scenarios)


@pytest.mark.parametrize("simulator", simulators.SIMULATORS, indirect=True)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_link(link_results, scenario):
    link_results.check(scenario)


def _check_pair_members():
    from amaranth.lib.wiring import In, Out

    from .link_tb import LINK_CONFIG, RX_NODE, TX_NODE

    pair = link_pair(LINK_CONFIG, TX_NODE, RX_NODE)
    members = pair.signature.members
    for prefix, part in (("tx", pair.tx), ("rx", pair.rx)):
        for name, member in part.signature.members.items():
            assert members[f"{prefix}_{name}"] == member
    assert members["tx_data_out"].flow is Out and members["rx_data_in"].flow is In
    assert len(members) == len(pair.tx.signature.members) + len(pair.rx.signature.members)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_pair_members():
    """The pair's ports are the sender's and the receiver's members, prefixed, same flows."""
    _check_pair_members()
    gc.collect()        # the unelaborated components warn when collected: inside the filter

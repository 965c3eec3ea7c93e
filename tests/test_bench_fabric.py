"""Quick checks of the fabric benchmark: its workloads, its numpy agents (cycle-exact latencies
and saturation), the reproducible traffic, and one small Verilator run equal to the emulator."""

import numpy as np
import pytest

from mesh import ConfigError, Port, external_links
from programs import patterns
from programs.patterns import WORKLOADS, generates, load_threshold, splitmix64
from wafer.bench_fabric import bench_config, run_emulator, summarize
from wafer.cli import main

SIZES = [(1, 1), (1, 3), (3, 1), (2, 2), (5, 3), (8, 8)]


@pytest.mark.parametrize("name", WORKLOADS)
@pytest.mark.parametrize("width, height", SIZES)
def test_workloads_validate_and_deliver_once_per_link_and_color(name, width, height):
    workload = patterns.workload(name, bench_config(width, height))
    workload.routes.validate()
    sources = [flow.source for flow in workload.flows]
    assert len(set(sources)) == len(sources), "every flow has an inbound link of its own"
    targets = [(link, color) for _, link, color, _ in workload.deliveries]
    assert len(set(targets)) == len(targets)


def test_workloads_reject_unknown_names_and_too_few_colors():
    with pytest.raises(ConfigError, match="unknown workload 'ring'"):
        patterns.workload("ring", bench_config(2, 2))
    with pytest.raises(ConfigError, match="at least 2 colors"):
        patterns.east_neighbour(bench_config(2, 2, colors=1))


def test_east_neighbour_pairs_each_tile_with_its_east_neighbour():
    config = bench_config(4, 3)
    links = external_links(config)
    for flow in patterns.east_neighbour(config).flows:
        source = links[flow.source]
        (destination, routers), = flow.destinations
        target = links[destination]
        if source.x + 1 < config.width:
            assert (target.x, target.y, target.port, routers) == \
                (source.x + 1, source.y, Port.RAMP, 2)
        else:
            assert (target.x, target.y, target.port, routers) == (source.x, source.y, Port.E, 1)


def test_multicast_and_chains_reach_every_core_of_the_row_and_the_bottom_core():
    config = bench_config(4, 3)
    links = external_links(config)
    flows = patterns.multicast_and_chains(config).flows
    rows, chains = flows[:config.height], flows[config.height:]
    for y, flow in enumerate(rows):
        assert sorted((links[d].x, links[d].y, r) for d, r in flow.destinations) == \
            [(x, y, x + 1) for x in range(config.width)]
    for x, flow in enumerate(chains):
        assert links[flow.source].port is Port.N
        assert [(links[d].x, links[d].y, links[d].port, r) for d, r in flow.destinations] == \
            [(x, config.height - 1, Port.RAMP, config.height)]


def test_splitmix64_matches_the_reference_and_numpy():
    assert splitmix64(0) == 0xE220A8397B1DCDAF   # first output of splitmix64 seeded with 0
    values = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert splitmix64(values).tolist() == [splitmix64(int(v)) for v in values]


def test_generation_rate_follows_the_load():
    flows = np.arange(64)
    hits = sum(generates(3, cycle, flows, load_threshold(0.3)).sum() for cycle in range(500))
    assert abs(hits / (64 * 500) - 0.3) < 0.01
    assert generates(3, 7, flows, load_threshold(1.0)).all()
    assert not generates(3, 7, flows, load_threshold(0.0)).any()


def test_east_neighbour_latency_is_exact():
    """East_neighbour has no contention and the credit loop sustains a wavelet per cycle, so a
    wavelet is injected in the cycle it is generated, leaves its own router the next cycle and
    the neighbour's router (to its core) the cycle after: latency 2. In the last column it leaves
    on the east edge from its own router: latency 1. Every delivery count is then exact: the
    wavelets generated in cycle t are delivered in the window if t + latency < window."""
    workload = patterns.workload("east_neighbour", bench_config(4, 2))
    window, seed, load = 600, 5, 0.2
    counts, _ = run_emulator(workload, load, seed=seed, warmup=0, window=window)
    flows = np.arange(len(workload.flows))
    born = np.array([generates(seed, t, flows, load_threshold(load)) for t in range(window)])
    expected_latency = {}
    for d, (f, _, _, routers) in enumerate(workload.deliveries):
        assert routers == (1 if (f + 1) % workload.config.width == 0 else 2)
        expected = int(born[:window - routers, f].sum())
        assert counts["delivered"][d] == expected
        expected_latency[routers] = expected_latency.get(routers, 0) + expected
    assert dict(counts["latency"]) == expected_latency
    assert counts["generated"] == counts["injected"] == int(born.sum())
    assert counts["backlog"] == 0


def test_east_neighbour_saturates_at_one_wavelet_per_cycle_per_flow():
    workload = patterns.workload("east_neighbour", bench_config(4, 4))
    counts, _ = run_emulator(workload, 1.0, seed=1, warmup=50, window=400)
    summary = summarize(workload, 1.0, 400, counts)
    assert summary["throughput"] == 1.0
    assert summary["min_flow_throughput"] == 1.0
    assert counts["backlog"] == 0
    assert set(dict(counts["latency"])) == {1, 2}


def test_multicast_and_chains_bottom_row_saturates_at_half():
    workload = patterns.workload("multicast_and_chains", bench_config(4, 4))
    counts, _ = run_emulator(workload, 1.0, seed=1, warmup=200, window=800)
    summary = summarize(workload, 1.0, 800, counts)
    assert summary["min_flow_throughput"] == pytest.approx(0.5, abs=0.01)
    # Rows 0..2 at 1, the bottom row's multicast and the 4 chains at 1/2: (3 + 2.5) / 8.
    assert summary["throughput"] == pytest.approx(5.5 / 8, abs=0.01)
    assert counts["backlog"] > 0


@pytest.mark.parametrize("simulator", ["verilator"], indirect=True)
def test_verilator_equals_emulator_on_2x2(simulator):
    """The same machine, cycle-exact: identical counts and latencies, with contention (the
    bottom row) at the higher load. Verilator missing skips this, except under CI."""
    from wafer import verilator as rtl_bench

    workload = patterns.workload("multicast_and_chains", bench_config(2, 2))
    program = rtl_bench.build(workload)
    for load in (0.3, 0.8):
        rtl, _ = rtl_bench.run(program, load, seed=11, warmup=40, window=160)
        emulated, _ = run_emulator(workload, load, seed=11, warmup=40, window=160)
        assert rtl == emulated
        assert sum(rtl["delivered"]) > 0


def test_cli_rejects_a_bad_mesh_with_one_line_and_status_2(capsys):
    assert main(["bench", "fabric", "--sizes", "8by8"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "WxH" in error


def test_cli_rejects_a_load_out_of_range(capsys):
    assert main(["bench", "fabric", "--loads", "0.5,1.5"]) == 2
    assert "1.5" in capsys.readouterr().err


def test_cli_quick_emulator_sweep_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = main(["bench", "fabric", "--sizes", "2x2", "--rtl-sizes", "none",
                   "--loads", "0.5", "--cycles", "100", "--json", str(path)])
    assert status == 0
    import json

    report = json.loads(path.read_text())
    assert [run["workload"] for run in report["runs"]] == list(WORKLOADS)
    assert report["rtl_equals_emulator"] is None
    assert "router-cycles/s" in capsys.readouterr().out


def test_cli_fails_loudly_when_rtl_and_emulator_differ(monkeypatch, capsys):
    from wafer import bench_fabric, verilator

    def off_by_one(program, load, seed, warmup, window):
        counts, wall = run_emulator(program, load, seed, warmup, window)
        counts["delivered"][0] += 1
        return counts, wall

    # The "program" is the workload itself, so the fake run can replay it on the emulator.
    monkeypatch.setattr(verilator, "missing_reason", lambda: None)
    monkeypatch.setattr(verilator, "is_built", lambda workload: True)
    monkeypatch.setattr(verilator, "build", lambda workload: workload)
    monkeypatch.setattr(verilator, "run", off_by_one)
    status = main(["bench", "fabric", "--sizes", "none", "--rtl-sizes", "2x2", "--loads", "0.5",
                   "--cycles", "60", "--json", "-"])
    assert status == 1
    error = capsys.readouterr().err
    assert "RTL != emulator for east_neighbour on 2x2" in error
    assert "'delivered' differs first at entry 0" in error
    assert bench_fabric.counts_equal({"a": [1, 2]}, {"a": [1, 2]}) is None

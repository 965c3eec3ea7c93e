"""Quick checks of the prefill benchmark (``wafer bench prefill``): the report of a tiny sweep,
the closed form where the DMA cannot stall, a wrong result caught, and the command line."""

import json

import numpy as np
import pytest

from programs.prefill import gemm_cycles
from wafer import bench_prefill
from wafer.bench_prefill import QUICK, PrefillMismatch, PrefillSweep, bench_config, \
    run_prefill_sweep, scalesim_ws_cycles
from wafer.cli import main

TINY = dict(shapes=((16, 16, 16), (32, 16, 24)), bandwidths=(2, 64),
            decode_shapes=((32, 16),), decode_bandwidths=(1, 8))


@pytest.fixture(scope="module")
def report():
    return run_prefill_sweep(PrefillSweep(**TINY))


def test_report_has_every_run_and_key(report):
    assert report["benchmark"] == "prefill" and report["n"] == 8
    assert len(report["gemm"]) == 4 and len(report["closed_form"]) == 2
    assert len(report["decode"]) == 2
    gemm_keys = {"M", "K", "N", "dram_bandwidth", "cycles", "useful_macs", "utilization",
                 "compute_cycles", "scalesim_ws_cycles", "matmul_span", "matmul_span_formula",
                 "stall_cycles", "dma_stalled", "dram_bytes", "dram_bytes_total",
                 "dram_bound_cycles", "cycles_over_bound"}
    for r in report["gemm"]:
        assert gemm_keys <= r.keys()
        assert 0 < r["utilization"] <= 1
        assert r["useful_macs"] == r["M"] * r["K"] * r["N"]
        assert r["cycles"] >= max(r["compute_cycles"], r["dram_bound_cycles"])
        assert r["dram_bytes_total"] == sum(r["dram_bytes"].values())
        assert r["dram_bytes"]["C"] == r["M"] * 4 * 8 * -(-r["N"] // 8)
    for r in report["decode"]:
        assert {"K", "N", "dram_bandwidth", "cycles", "b_bytes", "dram_bound_cycles",
                "ratio"} <= r.keys()
        assert r["ratio"] >= 1 and 0 < r["utilization"] <= 1
    json.dumps(report)


def test_closed_form_and_no_stall_where_the_dma_keeps_up(report):
    for r in report["closed_form"]:
        assert r["cycles"] == r["compute_cycles"]
    # 32 rows per tile >= 3n - 3 and 64 bytes per cycle: the weight tiles arrive in time.
    fast = [r for r in report["gemm"] if r["M"] == 32 and r["dram_bandwidth"] == 64]
    assert fast and all(not r["dma_stalled"] and r["matmul_span"] == r["matmul_span_formula"]
                        for r in fast)
    # At 2 bytes per cycle the 64-byte tiles take longer than a tile's compute: stalls.
    slow = [r for r in report["gemm"] if r["dram_bandwidth"] == 2]
    assert all(r["dma_stalled"] and r["stall_cycles"] > 0 for r in slow)


def test_scalesim_count_pays_fill_and_drain_per_fold():
    # 64 folds of 3n + M - 2 = 86 cycles, against 64 x 64 + 3n + 2 once.
    assert scalesim_ws_cycles(8, 64, 64, 64) == 5504
    assert gemm_cycles(bench_config(PrefillSweep(), 64, 64, 64, 1), 64, 64, 64) == 4122


def test_a_wrong_result_is_reported(monkeypatch):
    real = bench_prefill.gemm

    def wrong(*args, **kwargs):
        program = real(*args, **kwargs)
        program.expected = program.expected + np.int32(1)
        return program

    monkeypatch.setattr(bench_prefill, "gemm", wrong)
    with pytest.raises(PrefillMismatch, match="differ from numpy"):
        run_prefill_sweep(PrefillSweep(shapes=((8, 8, 8),), bandwidths=(8,), decode_shapes=()))
    assert main(["bench", "prefill", "--shapes", "8x8x8", "--bandwidths", "8",
                 "--decode", "none", "--json", "-"]) == 1


def test_cli_prints_tables_and_writes_json(tmp_path, capsys, monkeypatch):
    path = tmp_path / "out" / "prefill.json"
    assert main(["bench", "prefill", "--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Prefill GEMMs" in out and "Decode GEMVs" in out and "16x16x16" in out
    report = json.loads(path.read_text())
    assert len(report["gemm"]) == len(QUICK["shapes"]) * len(QUICK["bandwidths"])
    assert main(["bench", "prefill", "--shapes", "8x8x16", "--bandwidths", "4",
                 "--decode", "none", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["M"], r["K"], r["N"]) for r in printed["gemm"]] == [(8, 8, 16)]
    assert printed["decode"] == []


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "64x64"], "--shapes"),
    (["--shapes", "0x8x8"], "--shapes"),
    (["--bandwidths", "0"], "--bandwidths"),
    (["--bandwidths", "200"], "--bandwidths"),
    (["--decode", "abc"], "--decode"),
    (["--decode-bandwidths", "x"], "--decode-bandwidths"),
    (["--n", "1"], "--n"),
    (["--n", "64"], "n must be"),
    (["--latency", "-1"], "--latency"),
    (["--shapes", "none", "--decode", "none"], "nothing to run"),
    (["--shapes", "4096x4096x8"], "needs 67716 commands"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    assert main(["bench", "prefill", *argv, "--json", "-"]) == 2
    assert message in capsys.readouterr().err

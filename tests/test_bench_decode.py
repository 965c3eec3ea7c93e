"""Quick checks of the decode bandwidth benchmark (``wafer bench decode``): the QUICK sweep's
report and its fields, the mesh's cycles equal to the decoder's exact cycles, the baseline's
equal to ``baseline_cycles``, the speedup and roofline columns computed from those, the PNG
plot, a refused mesh reported, the weak-scaling model's shape, ``--sram-words`` and the command
line."""

import json
from dataclasses import replace

import pytest

from mesh import MeshConfig
from programs.decode_baseline import DEFAULT_CONFIG, baseline_cycles
from programs.mesh_decode import MeshDecoder, ModelDims, PlacementError, plan, prefill
from programs.transformer import task
from programs.transformer.model import IntModel
from wafer.bench_decode import QUICK, DecodeSweep, plot_decode, run_decode_sweep, \
    weak_model_dims
from wafer.cli import main


@pytest.fixture(scope="module")
def report():
    return run_decode_sweep(DecodeSweep(**QUICK))


def _point(report, scaling, mesh):
    return next(p for p in report["points"] if (p["scaling"], p["mesh"]) == (scaling, mesh))


def test_report_fields(report):
    assert report["benchmark"] == "decode"
    assert report["sram_words"] == 4096 and report["sram_bytes_per_core"] == 16384
    assert report["dram_bandwidth"] == 1 and report["bandwidths"] == [1, 8]
    assert "H100" in report["dram_bandwidth_source"]
    assert report["balance_matched_bandwidth"] == pytest.approx(128 * 3.35 / 989)
    assert [(p["scaling"], p["mesh"]) for p in report["points"]] == [("strong", "4x4"),
                                                                       ("weak", "4x4")]
    for p in report["points"]:
        assert p["fits"] and p["cores"] == 16 and p["sram_bandwidth"] == 16 * 8
        assert p["sram_words"] == 4096 and p["sram_bytes"] == 16 * 4096 * 4
        assert p["weight_share"] == p["weight_bytes"] / p["sram_bytes"]
        m = p["mesh_decode"]
        assert {"cycles", "cycles_per_token", "mac_utilization", "fabric_wait_share",
                "phase_share", "roofline", "roofline_share"} <= m.keys()
        assert 0 < m["fabric_wait_share"] < 1 and 0 < m["roofline_share"] <= 1
        assert m["roofline"] == p["weight_bytes"] / (4 * p["cores"])
        assert m["roofline_share"] == m["roofline"] / m["cycles"]
        assert sorted(p["baseline"]) == ["1", "8"]
    weak = _point(report, "weak", "4x4")
    assert (weak["model"]["d_model"], weak["model"]["d_ff"]) == weak_model_dims(
        MeshConfig.parse_shape("4x4"), 0.5)
    [t] = report["ttft"]
    assert t["mesh"] == "4x4" and t["sram_words"] == 4096 and t["tokens"] >= 2
    d, s = t["disaggregated"], t["single_engine"]
    assert d["ttft"] == d["prefill"] + d["transfer"] + d["first_decode_step"]
    assert d["transfer"] == d["link"] + d["delivery"] > 0
    # (the prefills differ: the disaggregated one stores K, V and the token as the KV message)
    assert s["ttft"] == s["prefill"] + s["first_decode_step"]
    assert t["ttft_speedup"] == s["ttft"] / d["ttft"] > 1
    assert t["total_speedup"] == s["total"] / d["total"] > 1
    json.dumps(report)


def test_mesh_cycles_equal_the_decoders_for_the_tiny_model_on_4x4(report):
    model = IntModel.load()
    _, cache, first = prefill(model, task.tokenize(QUICK.get("prompt", "123+459=")))
    run = MeshDecoder(model, MeshConfig.parse_shape("4x4")).run(cache, first, steps=1)
    p = _point(report, "strong", "4x4")
    assert p["position"] == cache.length == 8
    assert p["mesh_decode"]["cycles"] == p["mesh_decode"]["cycles_per_token"] == run.cycles
    assert run.cycles == 3569       # simulated cycles are exact


def test_baseline_cycles_and_speedup(report):
    model = IntModel.load()
    p = _point(report, "strong", "4x4")
    for key, b in p["baseline"].items():
        bw = int(key)
        want = baseline_cycles(model, p["position"], replace(DEFAULT_CONFIG, dram_bandwidth=bw))
        assert b["cycles"] == want["cycles"] and b["bound"] == want["bound"]
        assert b["compute_cycles"] == want["compute_cycles"]
        assert b["effective_bandwidth"] == min(bw, 8)
        assert b["roofline"] == p["weight_bytes"] / min(bw, 8)
        assert b["roofline_share"] == b["roofline"] / b["cycles"]
        assert b["speedup"] == b["cycles"] / p["mesh_decode"]["cycles"]
        assert b["bandwidth_ratio"] == p["sram_bandwidth"] / min(bw, 8)
    est = p["balance_estimate"]
    assert not est["simulated"] and est["speedup"] == pytest.approx(
        p["baseline"]["1"]["cycles"] * 989 / (128 * 3.35) / p["mesh_decode"]["cycles"])
    # DRAM-bound at 1 B/cycle: the mesh beats the baseline by far more than at 8 B/cycle.
    assert p["baseline"]["1"]["speedup"] > 4 * p["baseline"]["8"]["speedup"] > 4


def test_plot_is_a_png(report, tmp_path):
    path = tmp_path / "decode.png"
    plot_decode(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_tables_json_plot_and_a_refused_mesh(tmp_path, capsys):
    out, png = tmp_path / "d.json", tmp_path / "d.png"
    assert main(["bench", "decode", "--strong", "2x2,4x4", "--weak", "none", "--ttft", "none",
                 "--bandwidths", "8", "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "Mesh decode" in text and "Baseline" in text and "2x2: skipped" in text
    data = json.loads(out.read_text())
    refused, fits = data["points"]
    assert not refused["fits"] and refused["refused"] and fits["fits"]
    assert data["bandwidths"] == [1, 8]
    assert png.read_bytes()[:4] == b"\x89PNG"


def _weak(d, f):
    return ModelDims(d, 4, d // 4, f, 2, 13, 16, 2)


def _places(config, d, f):
    try:
        plan(_weak(d, f), config, False)
        return True
    except (PlacementError, ValueError):
        return False


@pytest.mark.parametrize("shape, share", [("4x4", 0.2), ("4x4", 0.5), ("8x8", 0.5),
                                          ("4x4", 0.95), ("8x8", 0.95)])
def test_weak_model_dims_the_smallest_at_or_above_the_share_that_places_else_below(shape,
                                                                                    share):
    config = MeshConfig.parse_shape(shape)
    total = config.tiles * config.sram_words * 4
    d, f = weak_model_dims(config, share)
    weights = _weak(d, f).weight_bytes
    assert d % 32 == f % 32 == 0 and 2 * d <= f <= 4 * d and _places(config, d, f)
    # every candidate (d_model, d_ff multiples of 32, 2 d <= f <= 4 d) within the SRAM
    candidates = [(d2, f2, _weak(d2, f2).weight_bytes) for d2 in range(32, 1025, 32)
                  for f2 in range(2 * d2, 4 * d2 + 1, 32)
                  if _weak(d2, f2).weight_bytes <= total]
    reachable = any(_places(config, d2, f2) for d2, f2, w in candidates if w >= share * total)
    assert (weights >= share * total) == reachable
    if reachable:
        # none with fewer weight bytes at or above the share places
        assert not any(_places(config, d2, f2) for d2, f2, w in candidates
                       if share * total <= w < weights)
    else:
        # the fallback: none larger below the share places either
        assert not any(_places(config, d2, f2) for d2, f2, w in candidates if w > weights)
    if share == 0.2:        # the tiny model's shape (d 64, f 128) alone is 25% of 4x4's SRAM
        assert reachable
    if share == 0.95:       # the KV cache, tables and buffers need room too
        assert not reachable


def test_weak_model_dims_grow_with_the_sram_per_core():
    small = weak_model_dims(MeshConfig.parse_shape("8x8"), 0.5)
    large = weak_model_dims(MeshConfig.parse_shape("8x8", sram_words=12288), 0.5)
    assert _weak(*large).weight_bytes > 2 * _weak(*small).weight_bytes


def test_sram_words_and_colors_set_every_mesh_of_the_sweep(monkeypatch, tmp_path):
    seen = []
    import wafer.bench_decode as bench

    def point(sweep, scaling, shape, model_of):
        seen.append(sweep.mesh(shape))
        return {"scaling": scaling, "mesh": shape, "fits": False, "refused": "not run"}

    monkeypatch.setattr(bench, "_point", point)
    out = tmp_path / "d.json"
    assert main(["bench", "decode", "--strong", "2x2", "--weak", "4x4", "--ttft", "none",
                 "--sram-words", "12288", "--colors", "9", "--json", str(out), "--plot",
                 "none"]) == 0
    assert [(c.shape, c.sram_words, c.colors) for c in seen] == [("2x2", 12288, 9),
                                                                 ("4x4", 12288, 9)]
    data = json.loads(out.read_text())
    assert data["sram_words"] == 12288 and data["sram_bytes_per_core"] == 48 * 1024
    assert data["colors"] == 9
    assert DecodeSweep(sram_words=12288).mesh("8x8") == MeshConfig(8, 8, sram_words=12288)
    assert DecodeSweep().sram_words == MeshConfig().sram_words == 4096
    assert DecodeSweep().colors == MeshConfig().colors == 8


@pytest.mark.parametrize("argv, message", [
    (["--strong", "3y3"], "--strong"),
    (["--bandwidths", "0"], "--bandwidths"),
    (["--sram-words", "100"], "--sram-words: sram_words must be from 256 to 12288, not 100"),
    (["--sram-words", "12289"], "--sram-words: sram_words must be from 256 to 12288"),
    (["--sram-words", "x"], "--sram-words: 'x' is not an integer"),
    (["--colors", "25"], "--colors: colors must be from 1 to 24, not 25"),
    (["--strong", "none", "--weak", "none", "--ttft", "none"], "nothing to run"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    assert main(["bench", "decode", *argv, "--plot", "none", "--json", "-"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_step_the_engine_cannot_hold_is_reported_not_raised(report, tmp_path):
    """A baseline the prefill engine refuses (e.g. more commands than its memory holds, as for
    the 16x16 weak model with 48 KiB cores) leaves the mesh point, with the reason, out of the
    baseline table and the plot."""
    import copy

    from rich.console import Console

    from wafer.bench_decode import render_decode

    refused = copy.deepcopy(report)
    point = _point(refused, "weak", "4x4")
    point["baseline"] = {}
    point["baseline_refused"] = "the decode step needs 83535 commands; the engine has 65536"
    point.pop("balance_estimate", None)
    console = Console(record=True, width=200)
    render_decode(refused, console)
    text = console.export_text()
    assert "weak scaling, 4x4: no baseline, the prefill engine cannot run the step: the " \
        "decode step needs 83535 commands" in text
    plot_decode(refused, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0

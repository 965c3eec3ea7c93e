"""``wafer trace``: per-link counts against counts derived from the programs, the heatmap PNG,
the JSON report, RTL agreement and command-line errors."""

import json
import struct

import pytest

from mesh import MeshConfig, Port
from programs.kernels import kernel
from wafer.backends import Run
from wafer.cli import main
from wafer.trace import LinkUse, TraceMismatch, trace_program

from program_cases import DEADLOCK

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def trace_json(capsys, *argv):
    status = main(["trace", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def png_size(path):
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def by_name(report):
    return {link["name"]: link for link in report["links"]}


def test_row_broadcast_uses_each_east_link_of_a_row_for_n_cycles(capsys, tmp_path):
    n, w, h = 8, 4, 3
    png = tmp_path / "heat.png"
    status, report = trace_json(capsys, "broadcast", "--mesh", f"{w}x{h}", "--size", f"n={n}",
                                "--png", str(png))
    assert status == 0 and report["status"] == "done" and report["correct"] is True
    cycles = report["cycles"]
    links = by_name(report)
    for y in range(h):
        for x in range(w):
            # Eastbound along the row from (0, y) to the last core, nothing else between tiles.
            east = links.get(f"({x},{y})->({x + 1},{y})")
            if east is not None:
                assert east["wavelets"] == n and east["utilization"] == n / cycles
            for port, (dx, dy) in (("W", (-1, 0)), ("N", (0, -1)), ("S", (0, 1))):
                link = links.get(f"({x},{y})->({x + dx},{y + dy})")
                assert link is None or link["wavelets"] == 0
            assert links[f"core({x},{y})->router"]["wavelets"] == (n if x == 0 else 0)
            assert links[f"router({x},{y})->core"]["wavelets"] == (0 if x == 0 else n)
    assert all(link["wavelets"] == 0 for link in report["links"]
               if link["kind"] in ("edge_out", "edge_in"))
    # The same counts as grids, and the summary.
    assert report["grids"]["E"] == [[n] * (w - 1) + [0]] * h
    assert report["grids"]["core"] == [[n] + [0] * (w - 1)] * h
    internal = report["summary"]["internal"]
    assert internal["links"] == 2 * ((w - 1) * h + w * (h - 1))
    assert internal["used"] == (w - 1) * h and internal["wavelets"] == n * (w - 1) * h
    assert internal["mean_utilization"] == pytest.approx(n * (w - 1) * h / cycles
                                                         / internal["links"])
    assert report["summary"]["edge_out"]["links"] == 2 * (w + h)
    assert report["busiest"][0] == "(0,0)->(1,0)"
    # Per-core counters agree with the RAMP link counts.
    for tile in report["tiles"]:
        x, y = tile["tile"]
        assert tile["wavelets_out"] == links[f"core({x},{y})->router"]["wavelets"]
        assert tile["wavelets_in"] == links[f"router({x},{y})->core"]["wavelets"]
        assert 0 <= tile["busy"] <= tile["running"] <= 1
    assert set(report) >= {"program", "mesh", "backend", "status", "cycles", "source", "links",
                           "tiles", "summary", "busiest", "grids", "png", "waves"}
    assert report["program"] == "broadcast" and report["mesh"] == f"{w}x{h}"
    assert report["backend"] == "emulator" and report["png"] == str(png)
    # The heatmap: a PNG of a sensible size.
    width, height = png_size(png)
    assert 500 <= width <= 3000 and 400 <= height <= 3000


def test_column_reduce_uses_each_south_link_for_n_cycles(capsys, tmp_path):
    n, w, h = 4, 2, 3
    status, report = trace_json(capsys, "column_reduce", "--mesh", f"{w}x{h}", "--size",
                                f"n={n}", "--png", "none")
    assert status == 0 and report["png"] is None
    grids = report["grids"]
    assert grids["S"] == [[n] * w] * (h - 1) + [[0] * w]
    assert grids["N"] == grids["E"] == grids["W"] == [[0] * w] * h
    assert grids["RAMP"] == [[0] * w] + [[n] * w] * (h - 1)
    assert grids["core"] == [[n] * w] * (h - 1) + [[0] * w]


def test_vector_add_moves_nothing_and_the_summary_says_so(capsys, tmp_path):
    png = tmp_path / "va.png"
    status = main(["trace", "vector_add", "--mesh", "2x2", "--png", str(png), "--json",
                   str(tmp_path / "va.json")])
    out = capsys.readouterr().out
    assert status == 0
    assert "no wavelet moved on any link" in out and f"heatmap: {png}" in out
    report = json.loads((tmp_path / "va.json").read_text())
    assert all(link["wavelets"] == 0 for link in report["links"])
    assert png_size(png)[0] > 0


def test_a_stopped_run_still_draws_its_heatmap_and_exits_1(capsys, tmp_path):
    source = tmp_path / "deadlock.s"
    source.write_text(DEADLOCK)
    png = tmp_path / "deadlock.png"
    status, report = trace_json(capsys, str(source), "--stall-limit", "20", "--png", str(png))
    assert status == 1 and report["status"] == "no progress"
    assert "no progress" in report["error"] and report["correct"] is None
    assert png_size(png)[0] > 0


def test_the_default_summary_lists_the_busiest_links(capsys, tmp_path):
    png = tmp_path / "b.png"
    assert main(["trace", "broadcast", "--mesh", "3x1", "--size", "n=5", "--png",
                 str(png)]) == 0
    out = capsys.readouterr().out
    assert "busiest links" in out and "(0,0)->(1,0)" in out
    assert "router to router" in out and "cycles" in out


def test_amaranth_trace_equals_the_emulator_counts(tmp_path):
    """The RTL's own trace (Amaranth) gives the same per-link counts; the VCD is written."""
    program = kernel("broadcast", MeshConfig.parse_shape("2x2"), n=3).program
    waves = tmp_path / "run.vcd"
    rtl = trace_program(program, "amaranth", waves=str(waves))
    emulated = trace_program(program, "emulator")
    assert rtl.status == "done" and rtl.use == emulated.use
    assert rtl.use.sent[0, Port.E] == 3 and rtl.use.sent[1, Port.RAMP] == 3
    assert waves.stat().st_size > 1000


def test_a_verilator_run_that_differs_from_the_emulator_is_an_error(monkeypatch):
    program = kernel("broadcast", MeshConfig.parse_shape("2x1"), n=2).program

    def fake_run(program, backend, max_cycles, stall_limit, waves):
        result = trace_program(program, "emulator").result
        result.counters[1, 0] += 1
        return Run("verilator", result, 0.1)
    monkeypatch.setattr("wafer.backends.run", fake_run)
    with pytest.raises(TraceMismatch, match="counters differs"):
        trace_program(program, "verilator")


def test_link_use_counts_trace_events():
    config = MeshConfig.parse_shape("2x1")
    use = LinkUse.from_trace(config, 10, [(0, 0, Port.E, 0, 7), (1, 0, Port.E, 0, 8),
                                          (2, 1, Port.RAMP, 0, 7)], [(0, 0, 0, 7)])
    assert use.sent.tolist() == [[0, 2, 0, 0, 0], [0, 0, 0, 0, 1]]
    assert use.core_sent.tolist() == [1, 0]
    links = {link["name"]: link for link in use.links()}
    assert links["(0,0)->(1,0)"]["utilization"] == 0.2
    assert links["(1,0)->(0,0)"]["wavelets"] == 0
    assert sum(link["kind"] == "edge_in" for link in links.values()) == 6
    assert LinkUse.from_trace(config, 10, [], []).sent.tolist() == [[0] * 5] * 2


@pytest.mark.parametrize("argv, message", [
    (["nosuchkernel"], "unknown program 'nosuchkernel'"),
    (["missing.s"], "no such assembly file"),
    (["broadcast", "--mesh", "4by4"], "--mesh: mesh shape '4by4' is not of the form WxH"),
    (["broadcast", "--mesh", "0x4"], "--mesh: width must be at least 1"),
    (["broadcast", "--size", "n"], "is not NAME=VALUE"),
    (["broadcast", "--backend", "emulator", "--waves", "x.vcd"], "needs an RTL backend"),
    (["broadcast", "--backend", "amaranth", "--waves", "x.fst"], "must end in .vcd on amaranth"),
    (["broadcast", "--waves", "x.txt"], "must end in .vcd or .fst on verilator"),
    (["broadcast", "--max-cycles", "0"], "--max-cycles: must be at least 1"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(["trace", *argv, "--png", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wafer: error: ") and message in err and err.count("\n") == 1

"""Quick checks of the packet link benchmark (``wafer bench link``): the report of the QUICK
sweep and its fields, the PNG plot, the closed form without faults, go-back-N against selective
retransmission at 5% loss, a delivery mismatch caught, and the command line."""

import json

import numpy as np
import pytest

from emulator.link import LinkEmulator
from wafer import bench_link
from wafer.bench_link import QUICK, LinkMismatch, LinkSweep, bench_config, closed_form_cycles, \
    message, plot_link, run_link_sweep
from wafer.cli import main


@pytest.fixture(scope="module")
def report():
    return run_link_sweep(LinkSweep(**QUICK))


RUN_KEYS = {"mode", "lanes", "size", "drop", "seed", "delivered", "error", "error_message",
            "goodput", "tx_cycles", "rx_cycles", "closed_form_cycles", "packets", "sent",
            "retransmits", "timeouts", "nacks", "nack_repeats", "channel_drops", "lanes_dead",
            "cycles_simulated", "seconds"}
POINT_KEYS = {"mode", "lanes", "size", "drop", "runs", "delivered", "errors", "ceiling",
              "closed_form_cycles", "retransmits_mean", "timeouts_mean", "nack_repeats_mean"}
MEASURED_KEYS = {"goodput_mean", "goodput_min", "tx_cycles_mean", "tx_cycles_max",
                 "tx_cycles_min", "rx_cycles_mean", "rx_cycles_max"}


def test_report_has_every_run_point_and_key(report):
    sweep = LinkSweep(**QUICK)
    assert report["benchmark"] == "link" and report["modes"] == ["selective", "go_back_n"]
    assert len(report["runs"]) == sweep.runs() == 2 * 2 * 2 * 2 * 2
    assert len(report["points"]) == sweep.runs() // len(sweep.seeds)
    assert report["ceiling"] == pytest.approx(128 / 133)
    assert {"link", "faults", "ceiling_formula", "goodput_formula", "sizes", "lanes", "drops",
            "seeds", "failed_runs", "cycles_simulated", "seconds",
            "cycles_per_second"} <= report.keys()
    for r in report["runs"]:
        assert r.keys() == RUN_KEYS
        if r["delivered"]:
            assert r["error"] is None and r["tx_cycles"] > 0 and r["rx_cycles"] > 0
            config = bench_config(sweep, r["lanes"], r["size"])
            assert r["goodput"] == 8 * r["size"] / r["tx_cycles"] / config.line_rate
            assert r["goodput"] <= config.efficiency()
        else:
            assert r["error"] in ("RETRY_LIMIT", "LANES_DEAD") and r["goodput"] is None
    for p in report["points"]:
        assert POINT_KEYS <= p.keys()
        assert (MEASURED_KEYS <= p.keys()) == (p["delivered"] > 0)
        if p["delivered"]:
            assert p["goodput_min"] <= p["goodput_mean"] <= p["ceiling"]
            assert p["tx_cycles_min"] <= p["tx_cycles_mean"] <= p["tx_cycles_max"]
    assert report["failed_runs"] == sum(not r["delivered"] for r in report["runs"])
    json.dumps(report)


def test_no_fault_runs_equal_the_closed_form(report):
    """16 KiB on 4 lanes: T = 32 packets of N = 133 words, k = 8 rounds; a lone packet is done
    in D = 6 + 2 x 132 + 8 + 2 x 20 = 318: done = 7 x 133 + 318 + 3 = 1252 cycles. On one lane
    31 x 133 + 318 = 4441; 4 KiB on 4 lanes 133 + 318 + 3 = 454."""
    sweep = LinkSweep(**QUICK)
    assert closed_form_cycles(bench_config(sweep, 4, 16384), 16384) == 1252
    assert closed_form_cycles(bench_config(sweep, 1, 16384), 16384) == 4441
    assert closed_form_cycles(bench_config(sweep, 4, 4096), 4096) == 454
    assert closed_form_cycles(bench_config(sweep, 4, 4096 + 512), 4096 + 512) is None
    clean = [r for r in report["runs"] if r["drop"] == 0]
    assert len(clean) == 16 and all(r["delivered"] for r in clean)
    for r in clean:
        config = bench_config(sweep, r["lanes"], r["size"])
        assert r["tx_cycles"] == r["closed_form_cycles"] == closed_form_cycles(config, r["size"])
        assert r["goodput"] == 8 * r["size"] / r["closed_form_cycles"] / config.line_rate
        assert r["retransmits"] == r["timeouts"] == 0
    # The same run again, from scratch.
    config = bench_config(sweep, 4, 16384)
    again = LinkEmulator(config).send(message(16384, 1))
    assert again.done_cycle - again.start_cycle == 1252
    # Closed form at the full benchmark's largest point: 1 MiB on 4 lanes, 96.0% of line rate.
    big = bench_config(LinkSweep(), 4, 1 << 20)
    assert closed_form_cycles(big, 1 << 20) == 68284


def test_go_back_n_is_slower_than_selective_at_five_percent_on_four_lanes(report):
    """Simulated cycles, deterministic per seed: for 16 KiB each seed's go-back-N run takes
    longer; at 4 KiB (8 packets) one seed's only loss costs both modes the same timeout."""
    runs = {(r["size"], r["seed"], r["mode"]): r for r in report["runs"]
            if r["lanes"] == 4 and r["drop"] == 0.05}
    for seed in QUICK["seeds"]:
        selective, gbn = runs[16384, seed, "selective"], runs[16384, seed, "go_back_n"]
        assert selective["delivered"] and gbn["delivered"]
        assert gbn["tx_cycles"] > selective["tx_cycles"]
        assert gbn["retransmits"] > selective["retransmits"]
        small = runs[4096, seed, "selective"], runs[4096, seed, "go_back_n"]
        assert small[1]["tx_cycles"] >= small[0]["tx_cycles"]


def test_plot_is_a_png(report, tmp_path):
    path = tmp_path / "link.png"
    plot_link(report, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_a_delivery_mismatch_is_a_failure(monkeypatch, capsys):
    class Corrupting(LinkEmulator):
        def send(self, *args, **kwargs):
            result = super().send(*args, **kwargs)
            result.words = result.words.copy()
            result.words[3] ^= np.uint32(1 << 9)
            return result

    monkeypatch.setattr(bench_link, "LinkEmulator", Corrupting)
    sweep = LinkSweep(sizes=(1024,), lanes=(2,), drops=(0.0,), seeds=(1,))
    with pytest.raises(LinkMismatch, match="1 of 256 words of the receive buffer differ"):
        run_link_sweep(sweep)
    assert main(["bench", "link", "--sizes", "1K", "--lanes", "2", "--drops", "0", "--seeds",
                 "1", "--plot", "none", "--json", "-"]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_cli_prints_tables_and_writes_json_and_plot(tmp_path, capsys):
    path, png = tmp_path / "out" / "link.json", tmp_path / "plots" / "link.png"
    assert main(["bench", "link", "--sizes", "2K,4096", "--lanes", "1,2", "--drops",
                 "0,0.05", "--seeds", "3", "--json", str(path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "Packet link goodput" in out and "Message completion" in out and "go-back-N" in out
    report = json.loads(path.read_text())
    assert report["sizes"] == [2048, 4096] and report["seeds"] == [3]
    assert len(report["runs"]) == 2 * 2 * 2 * 2 and report["plot"] == str(png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "link", "--sizes", "1K", "--lanes", "1", "--drops", "0",
                 "--seeds", "1", "--plot", "none", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["mode"], r["size"]) for r in printed["runs"]] == [("selective", 1024),
                                                                 ("go_back_n", 1024)]
    assert printed["plot"] is None


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "abc"], "--sizes"),
    (["--sizes", "6"], "positive multiple of 4"),
    (["--sizes", "8M"], "at most 4 MiB"),
    (["--lanes", "9"], "lanes must be"),
    (["--lanes", "x"], "--lanes"),
    (["--drops", "1.5"], "drop must be a probability"),
    (["--drops", "y"], "--drops"),
    (["--seeds", "-1"], "--seeds"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    assert main(["bench", "link", *argv, "--plot", "none", "--json", "-"]) == 2
    assert message in capsys.readouterr().err

"""Disaggregated inference end to end (programs/system.py, ``wafer run`` without PROGRAM):
prefill on the engine, the KV cache over the packet link, delivery into the mesh, decode on the
mesh; the tokens equal IntModel.generate_int on 4x4 and 8x8, with and without link faults.

Each full run takes several seconds on the emulators, so every test here runs one prompt once
(about 40 s of CPU in all)."""

import json

import pytest

from emulator.channel import FaultConfig
from mesh import MeshConfig
from mesh.link import LinkConfig
from programs import system
from programs.transformer import task
from programs.transformer.model import IntModel
from wafer.cli import main


@pytest.fixture(scope="module")
def model():
    return IntModel.load()


def check_phases(run):
    """The cycle accounting of a run adds up."""
    assert run.exact and run.tokens == run.reference
    r = run.report()
    ph = r["phases"]
    assert ph["transfer"]["cycles"] == ph["transfer"]["link"]["cycles"] \
        + ph["transfer"]["delivery"]["cycles"]
    assert r["total_cycles"] == ph["prefill"]["cycles"] + ph["transfer"]["cycles"] \
        + ph["decode"]["cycles"]
    dec = ph["decode"]
    assert dec["steps"] == len(run.tokens) - 1 == len(dec["token_cycles"])
    assert sum(dec["step_cycles"]) == dec["token_cycles"][-1] <= dec["cycles"]
    assert all(c > 0 for c in dec["step_cycles"])
    t = r["ttft"]
    assert t["cycles"] == t["prefill"] + t["link"] + t["delivery"] + t["first_decode_step"]
    assert t["first_decode_step"] == dec["token_cycles"][0]
    assert ph["prefill"]["first_token"] == run.tokens[0]
    # The header and the prompt's K and V slots, per tile.
    link = ph["transfer"]["link"]
    assert link["message_words"] == ph["transfer"]["delivery"]["words"] \
        == link["words_per_tile"] * MeshConfig.parse_shape(run.mesh).tiles
    assert 0 < dec["mac_utilization"] < 1
    return r


def test_cli_demo_default_is_123_plus_459_on_4x4(capsys):
    """``wafer run`` alone: the prompt, the answer, the reference check, the phases, time to
    first token and tokens per second at the stated clock."""
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "prompt: 123+459=" in out
    assert "answer: 582" in out and "correct" in out
    assert "tokens: equal to the integer reference" in out
    assert "4x4 mesh" in out and "no overlap" in out
    for phase in ("prefill", "link", "delivery", "decode", "total"):
        assert f"│ {phase}" in out
    assert "time to first token:" in out and "at 1000 MHz" in out
    assert "tokens per second at 1000 MHz (nominal clock)" in out
    assert "MAC utilization" in out and "retransmissions 0" in out


def test_cli_demo_json_fields(model, capsys):
    assert main(["run", "--prompt", "7+5=", "--json", "--clock-mhz", "500"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["prompt"] == "7+5=" and r["mesh"] == "4x4" and r["backend"] == "emulator"
    assert r["tokens"] == model.generate_int("7+5=") == r["reference"]
    assert r["exact"] and r["correct"] and r["answer"] == "12" and r["text"] == "21$"
    assert r["clock_mhz"] == 500 and r["sequential"]
    ph = r["phases"]
    assert set(ph) == {"prefill", "transfer", "decode"}
    assert set(ph["transfer"]) == {"cycles", "link", "delivery"}
    assert ph["transfer"]["link"]["retransmits"] == 0
    assert ph["transfer"]["link"]["prompt_kv_bytes"] == 2 * 2 * 4 * 64     # layers, K+V, M, d
    assert r["total_us"] == pytest.approx(r["total_cycles"] / 500, abs=1e-3)
    assert r["ttft"]["us"] == pytest.approx(r["ttft"]["cycles"] / 500, abs=1e-3)
    tps = r["tokens_per_second"]
    assert tps["decode"] == pytest.approx(500e6 / ph["decode"]["cycles_per_token"], rel=1e-6)
    assert tps["end_to_end"] == pytest.approx(len(r["tokens"]) * 500e6 / r["total_cycles"],
                                              rel=1e-6)
    for key in ("cycles", "token_cycles", "step_cycles", "cycles_per_token", "mac_utilization",
                "counters"):
        assert key in ph["decode"]


def test_link_faults_drops_and_a_dead_lane_still_exact(model):
    """Drops, duplicates, reordering and bit flips on some lanes and lane 1 dead from cycle
    50: the link retransmits and the tokens are still exactly the reference's. The message is
    short (a few packets a lane), so a lane is declared dead after 2 timeouts in a row."""
    faults = [FaultConfig(drop=0.05), FaultConfig(dead_at=50),
              FaultConfig(drop=0.05, duplicate=0.02, reorder=0.02), FaultConfig(flip=0.02)]
    run = system.run_disaggregated("999+999=", "4x4", faults=faults, seed=3, model=model,
                                   link_config=LinkConfig(lane_dead_after=2))
    assert run.tokens == model.generate_int("999+999=") == [8, 9, 9, 1, task.END]
    assert run.correct and run.answer == "1998"
    check_phases(run)
    assert run.link["retransmits"] > 0 and 1 in run.link["lanes_dead"]
    assert run.link["channel_drops"] > 0


def test_8x8_tokens_equal_the_reference(model):
    run = system.run_disaggregated("45+67=", "8x8", model=model)
    assert run.tokens == model.generate_int("45+67=")
    r = check_phases(run)
    # the header (10 words) and one slot of K and V (2 words each) per layer
    assert r["mesh"] == "8x8" and run.link["words_per_tile"] == 10 + 2 * 2 * 2


def test_4x4_another_prompt_with_phase_accounting(model):
    run = system.run_disaggregated("305+8=", "4x4", model=model)
    assert run.tokens == model.generate_int("305+8=")
    check_phases(run)


def _fake_run(tokens, reference):
    """A SystemRun with made-up cycles, for the CLI's paths that do not need a real run."""
    prefill = {"cycles": 100, "prompt_tokens": 8, "first_token": tokens[0], "phase_cycles": {},
               "dma_bytes": 10, "dram_bytes_per_cycle": 0.1, "array": "8x8", "macs": 1,
               "array_utilization": 0.5}
    link = {"cycles": 10, "stage_cycles": 3, "link_cycles": 7, "sender_done_cycles": 12,
            "message_words": 16, "message_bytes": 64,
            "prompt_kv_bytes": 32,
            "words_per_tile": 1, "lanes": 4, "lane_width": 32, "latency": 20, "packets": 1,
            "retransmits": 0, "timeouts": 0, "nacks": 0, "lanes_dead": [], "channel_drops": 0,
            "channel_lost_dead": 0, "goodput": 0.5, "seed": 0}
    delivery = {"cycles": 20, "words": 16, "words_per_tile": 1,
                "color": 7}
    n = len(tokens) - 1
    decode = {"cycles": 30 * n, "steps": n, "token_cycles": [30 * (i + 1) for i in range(n)],
              "step_cycles": [30] * n, "cycles_per_token": 30, "weight_macs": 1,
              "mac_utilization": 0.1, "counted_mac_utilization": 0.1,
              "fabric_wait_share": 0.2, "counters": {}}
    ttft = {"prefill": 100, "link": 10, "delivery": 20, "first_decode_step": 30, "cycles": 160,
            "first_token_on_engine": 100}
    return system.SystemRun("123+459=", "4x4", "emulator", tokens, reference, prefill, link,
                            delivery, decode, ttft)


def test_exit_status_1_when_the_tokens_differ_from_the_reference(monkeypatch, capsys):
    monkeypatch.setattr(system, "run_disaggregated",
                        lambda *a, **k: _fake_run([2, 8, 6, task.END], [2, 8, 5, task.END]))
    assert main(["run"]) == 1
    out = capsys.readouterr().out
    assert "answer: 682" in out and "WRONG" in out
    assert "MISMATCH: the integer reference generates 2 8 5 END" in out
    assert main(["run", "--json"]) == 1
    r = json.loads(capsys.readouterr().out)
    assert not r["exact"] and not r["correct"]


def test_a_link_failure_exits_1(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise system.SystemFailure("the link did not deliver the KV message: RETRY_LIMIT")
    monkeypatch.setattr(system, "run_disaggregated", fail)
    assert main(["run"]) == 1
    assert "FAILED: the link did not deliver" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "--backend", "amaranth"], "runs on the emulator or on verilator"),
    (["run", "--backend", "verilator", "--drop", "0.1"], "faults are modelled on the emulator"),
    (["run", "--prompt", "12+"], "--prompt: '12+' is not a prompt"),
    (["run", "--mesh", "3x3"], "the model does not tile onto the 3x3 mesh"),
    (["run", "--mesh", "4by4"], "mesh shape '4by4' is not of the form WxH"),
    (["run", "--mesh", "16x16"], "d_model / H must be a multiple of 8 (a mesh of at most 8 rows"),
    (["run", "--size", "a=1"], "--size applies to wafer run PROGRAM"),
    (["run", "--waves", "x.vcd"], "--waves applies to wafer run PROGRAM"),
    (["run", "--clock-mhz", "0"], "--clock-mhz must be positive"),
    (["run", "--drop", "1"], "--drop must be a probability"),
    (["run", "gemv", "--prompt", "1+2="], "--prompt applies to the disaggregated demo"),
    (["run", "dot", "--clock-mhz", "500"], "--clock-mhz applies to the disaggregated demo"),
    (["run", "dot", "--compare"], "--compare applies to the disaggregated demo"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_backends_and_faults_refused():
    with pytest.raises(ValueError, match="runs on emulator or verilator, not 'amaranth'"):
        system.run_disaggregated("1+2=", backend="amaranth")
    with pytest.raises(ValueError, match="faults are modelled on the emulator only"):
        system.run_disaggregated("1+2=", backend="verilator", faults=FaultConfig(drop=0.1))


def test_a_link_that_loses_everything_is_a_system_failure(model, monkeypatch):
    """Every lane dead from the start: the sender gives up and the run says so (no decode on
    a missing cache)."""
    faults = FaultConfig(dead_at=0)
    with pytest.raises(system.SystemFailure, match="did not deliver"):
        system.run_disaggregated("1+2=", "4x4", faults=faults, model=model,
                                 link_config=LinkConfig(retry_limit=1, lane_dead_after=1))


def test_single_engine_prefill_and_decode_steps_equal_the_reference(model, monkeypatch,
                                                                    capsys):
    """The comparison run on the prefill engine alone: the same prefill, then decode steps of
    programs.decode_baseline; the tokens are the reference's. ``wafer run --compare`` shows
    both (the disaggregated run stubbed here: its own tests run it)."""
    pytest.importorskip("programs.decode_baseline")
    one = system.run_single_engine("123+459=", model=model)
    assert one.exact and one.tokens == [2, 8, 5, task.END]
    dec = one.decode
    assert dec["steps"] == 3 and dec["cycles"] == sum(dec["step_cycles"]) \
        == dec["token_cycles"][-1]
    assert all(c >= b for c, b in zip(dec["step_cycles"], dec["step_dram_bounds"]))
    assert one.total_cycles == one.prefill["cycles"] + dec["cycles"]
    assert one.ttft["cycles"] == one.prefill["cycles"] + dec["step_cycles"][0]

    monkeypatch.setattr(system, "run_disaggregated",
                        lambda *a, **k: _fake_run([2, 8, 5, task.END], [2, 8, 5, task.END]))
    monkeypatch.setattr(system, "run_single_engine", lambda *a, **k: one)
    assert main(["run", "--compare"]) == 0
    out = capsys.readouterr().out
    assert "│ mesh 4x4" in out and "│ engine only" in out
    assert f"{dec['cycles_per_token']:,.0f}" in out
    assert main(["run", "--compare", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["single_engine"]["exact"] and r["single_engine"]["tokens"] == one.tokens
    assert r["single_engine"]["phases"]["decode"]["step_cycles"] == dec["step_cycles"]
    one.tokens = [2, 8, 6, task.END]
    assert main(["run", "--compare"]) == 1


def test_4x4_on_the_rtl_system_top_equals_the_emulator_and_the_reference(model):
    """The same system image on the RTL system top (standalone Verilator; the build takes a
    minute or more): every phase cycle, mesh SRAM and counter, link counter and the DRAM equal
    the emulator's (run_disaggregated raises SystemFailure otherwise), and the tokens are the
    integer reference's."""
    from sim_tests.simulators import require_simulator

    require_simulator("verilator")
    run = system.run_disaggregated("123+459=", "4x4", backend="verilator", model=model)
    assert run.tokens == model.generate_int("123+459=") == [2, 8, 5, task.END]
    assert run.rtl["equal_to_emulator"] and run.rtl["cycles"] == run.system_cycles \
        == run.total_cycles
    check_phases(run)

"""``wafer run``: kernels and assembly files on a backend, reports, exit statuses and errors."""

import json

import pytest

from wafer.cli import main

from program_cases import DEADLOCK


def run_json(capsys, *argv):
    status = main(["run", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_gemv_json_report(capsys):
    status, report = run_json(capsys, "gemv", "--mesh", "2x2", "--size", "rows_per_core=4",
                              "--size", "cols_per_core=32")
    assert status == 0
    assert report["status"] == "done" and report["check"]["correct"]
    assert report["mesh"] == "2x2" and report["backend"] == "emulator"
    assert report["macs"] == report["useful_macs"] == 8 * 64
    assert report["totals"]["macs"] == 8 * 64
    assert len(report["counters"]["cycles"]) == 4
    assert max(report["counters"]["cycles"]) == report["cycles"]
    assert 0 < report["mac_utilization"] < 1 and report["cycles_per_second"] > 0


def test_readable_report_of_an_assembly_file(capsys):
    assert main(["run", "programs/asm/dot.s"]) == 0
    out = capsys.readouterr().out
    assert "dot on a 4x4 mesh, emulator: done after" in out
    assert "tile (0,0) result = [-1850]" in out
    assert "macs" in out and "core-cycles/s" in out


def test_amaranth_backend_gives_the_emulator_cycles(capsys):
    reports = [run_json(capsys, "allreduce", "--mesh", "2x2", "--backend", backend)[1]
               for backend in ("emulator", "amaranth")]
    assert reports[0]["cycles"] == reports[1]["cycles"]
    assert reports[0]["counters"] == reports[1]["counters"]
    assert reports[1]["check"]["correct"]


def test_no_progress_exits_1_with_what_each_core_waits_for(tmp_path, capsys):
    path = tmp_path / "deadlock.s"
    path.write_text(DEADLOCK)
    assert main(["run", str(path), "--stall-limit", "20"]) == 1
    out = capsys.readouterr().out
    assert "no progress after 20 cycles" in out
    assert "deadlock.s:8:5): waits for a wavelet on color 1" in " ".join(out.split())


def test_trap_exits_1_naming_tile_pc_and_source(tmp_path, capsys):
    path = tmp_path / "trap.s"
    path.write_text(".mesh 1x1\n.core main (0,0)\n    li r1, 9999\n    ld r2, 0(r1)\n"
                    "    halt\n")
    status, report = run_json(capsys, str(path))
    assert status == 1 and report["status"] == "trap"
    assert report["traps"] == [f"tile (0,0) pc 1: ld r2, 0(r1) ({path}:4:5): trap: SRAM "
                               f"address out of range"]


@pytest.mark.parametrize("argv, message", [
    (["run", "gemm"], "unknown program 'gemm': give an assembly file (.s) or one of allreduce"),
    (["run", "missing.s"], "no such assembly file: missing.s"),
    (["run", "gemv", "--mesh", "4by4"], "mesh shape '4by4' is not of the form WxH"),
    (["run", "gemv", "--size", "rows=3"], "gemv: gemv() got an unexpected keyword argument"),
    (["run", "gemv", "--size", "rows_per_core"], "is not NAME=VALUE"),
    (["run", "gemv", "--size", "cols_per_core=6"], "cols_per_core must be a multiple of 4"),
    (["run", "dot", "--waves", "x.vcd"], "--waves needs an RTL backend"),
    (["run", "dot", "--backend", "amaranth", "--waves", "x.fst"], "must end in .vcd on amaranth"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_assembly_errors_name_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.s"
    path.write_text(".core main (0,0)\n    addi r1, r2\n")
    assert main(["run", str(path)]) == 2
    assert f"{path}:2:16: addi takes 3 operand(s) (rd, ra, imm), not 2" in capsys.readouterr().err

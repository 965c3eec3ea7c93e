"""One way to run a program on any backend: the emulator, the RTL in the Amaranth simulator,
or the RTL compiled by Verilator into a standalone program.

:func:`run` returns a :class:`Run` (the :class:`mesh.RunResult`, how the run ended, its wall
time) for a finished run, and raises the same errors on every backend for one that did not
finish: :class:`mesh.Trap`, :class:`RunStopped` (no progress, or the cycle limit). Both carry
the state at the stop in ``result``.
"""

import time
from dataclasses import dataclass

from mesh import Trap

__all__ = ["BACKENDS", "Run", "RunStopped", "run"]

BACKENDS = ("emulator", "verilator", "amaranth")


class RunStopped(RuntimeError):
    """A run stopped before every core halted: no progress for ``stall_limit`` cycles, or the
    cycle limit. ``result``: the state at the stop; ``reason``: "no progress" or "cycle limit"."""

    def __init__(self, message, result, reason):
        super().__init__(message)
        self.result = result
        self.reason = reason


@dataclass
class Run:
    """A finished run: ``result``; ``seconds`` of simulation (the cycle loop, without loading
    and read-back where the backend can tell them apart)."""
    backend: str
    result: object
    seconds: float

    @property
    def cycles_per_second(self):
        return self.result.cycles / self.seconds if self.seconds > 0 else float("inf")

    def core_cycles_per_second(self, tiles):
        return self.cycles_per_second * tiles


def run(program, backend="emulator", max_cycles=1_000_000, stall_limit=200, progress=None,
        waves=None):
    """Run ``program`` (a :class:`mesh.MeshProgram`) to completion on ``backend``.

    ``progress`` (emulator and Amaranth) is called with the cycle count now and then; ``waves``
    (Verilator and Amaranth) is a .vcd (or, on Verilator, .fst) path for a waveform."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "emulator":
        if waves is not None:
            raise ValueError("--waves needs an RTL backend (verilator or amaranth): the "
                             "emulator has no signals to dump")
        return _run_emulator(program, max_cycles, stall_limit, progress)
    if backend == "verilator":
        return _run_verilator(program, max_cycles, stall_limit, waves)
    return _run_amaranth(program, max_cycles, stall_limit, progress, waves)


def _run_emulator(program, max_cycles, stall_limit, progress):
    from emulator import MeshCycleLimitExceeded, MeshEmulator, MeshNoProgress

    emulator = MeshEmulator(program)
    start = time.perf_counter()
    try:
        result = emulator.run(max_cycles=max_cycles, stall_limit=stall_limit,
                              progress=progress)
    except MeshNoProgress as error:
        raise RunStopped(str(error), error.result, "no progress") from None
    except MeshCycleLimitExceeded as error:
        raise RunStopped(str(error), error.result, "cycle limit") from None
    return Run("emulator", result, time.perf_counter() - start)


def _run_verilator(program, max_cycles, stall_limit, waves):
    from wafer.verilator_mesh import run_program

    result, status, seconds = run_program(program, max_cycles=max_cycles,
                                          stall_limit=stall_limit, waves=waves)
    _raise_for(program, result, status, stall_limit, max_cycles)
    return Run("verilator", result, seconds)


def _run_amaranth(program, max_cycles, stall_limit, progress, waves):
    from hdl.mesh_sim import MeshSimulation

    simulation = MeshSimulation(program.config, waves=waves)
    start = time.perf_counter()
    result, status = simulation.run(program, max_cycles=max_cycles, stall_limit=stall_limit,
                                    progress=progress)
    seconds = time.perf_counter() - start
    _raise_for(program, result, status, stall_limit, max_cycles)
    return Run("amaranth", result, seconds)


def _raise_for(program, result, status, stall_limit, max_cycles):
    """The errors of an RTL run that did not finish, worded as the emulator words them."""
    if status == "trap":
        lines = result.trap_report(program)
        raise Trap(f"{program.name}: {len(lines)} core(s) trapped in cycle "
                   f"{result.cycles - 1}:\n  " + "\n  ".join(lines), result)
    if status == "no progress":
        raise RunStopped(f"{program.name}: no progress for {stall_limit} cycles (up to cycle "
                         f"{result.cycles}); the emulator's run of the same program reports "
                         f"what each core waits for", result, status)
    if status == "cycle limit":
        raise RunStopped(f"{program.name}: not finished within {max_cycles} cycles", result,
                         status)

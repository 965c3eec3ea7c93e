"""One way to run a program on any backend: the emulator, the RTL in the Amaranth simulator,
or the RTL compiled by Verilator into a standalone program.

:func:`run` returns a :class:`Run` whatever the outcome: ``status`` is "done", "trap",
"no progress" or "cycle limit", ``message`` says what happened (a trap report names tile, pc,
instruction and cause; a no-progress report names what every core waits for), and ``result``
holds the state at the end. :meth:`Run.check` raises for a run that did not finish.
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
    """A run: ``result``; ``status`` and ``message`` (empty when done); ``seconds`` of
    simulation (the cycle loop, without building, loading and read-back where the backend can
    tell them apart)."""
    backend: str
    result: object
    seconds: float
    status: str = "done"
    message: str = ""

    @property
    def cycles_per_second(self):
        return self.result.cycles / self.seconds if self.seconds > 0 else float("inf")

    def core_cycles_per_second(self, tiles):
        return self.cycles_per_second * tiles

    def check(self):
        """Raise :class:`mesh.Trap` or :class:`RunStopped` unless the run finished."""
        if self.status == "trap":
            raise Trap(self.message, self.result)
        if self.status != "done":
            raise RunStopped(self.message, self.result, self.status)
        return self


def run(program, backend="emulator", max_cycles=1_000_000, stall_limit=200, progress=None,
        waves=None):
    """Run ``program`` (a :class:`mesh.MeshProgram`) on ``backend`` until it finishes or stops.

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
        from wafer.verilator_mesh import run_program

        result, status, seconds = run_program(program, max_cycles=max_cycles,
                                              stall_limit=stall_limit, waves=waves)
    else:
        from hdl.mesh_sim import MeshSimulation

        simulation = MeshSimulation(program.config, waves=waves)
        start = time.perf_counter()
        result, status = simulation.run(program, max_cycles=max_cycles,
                                        stall_limit=stall_limit, progress=progress)
        seconds = time.perf_counter() - start
    message = _rtl_message(program, result, status, max_cycles, stall_limit)
    return Run(backend, result, seconds, status, message)


def _run_emulator(program, max_cycles, stall_limit, progress, emulator=None):
    """The run on ``emulator`` (a new :class:`emulator.MeshEmulator` of ``program`` if None;
    ``wafer trace`` passes a tracing one)."""
    from emulator import MeshCycleLimitExceeded, MeshEmulator, MeshNoProgress

    emulator = emulator or MeshEmulator(program)
    start = time.perf_counter()
    try:
        result = emulator.run(max_cycles=max_cycles, stall_limit=stall_limit,
                              progress=progress)
        status, message = "done", ""
    except Trap as stop:
        result, status, message = stop.result, "trap", str(stop)
    except MeshNoProgress as stop:
        result, status, message = stop.result, "no progress", str(stop)
    except MeshCycleLimitExceeded as stop:
        result, status, message = stop.result, "cycle limit", str(stop)
    return Run("emulator", result, time.perf_counter() - start, status, message)


def _rtl_message(program, result, status, max_cycles, stall_limit):
    """What an RTL run that did not finish reports, worded as the emulator words it. The RTL
    cannot say what each core waits for, so a no-progress stop is explained by the emulator's
    run of the same program (which must stop at the same cycle)."""
    if status == "done":
        return ""
    if status == "trap":
        lines = result.trap_report(program)
        return (f"{program.name}: {len(lines)} core(s) trapped in cycle {result.cycles - 1}:\n"
                f"  " + "\n  ".join(lines))
    if status == "cycle limit":
        return f"{program.name}: not finished within {max_cycles} cycles"
    emulated = _run_emulator(program, max_cycles, stall_limit, None)
    if emulated.status == "no progress" and emulated.result.cycles == result.cycles:
        return (f"{program.name}: no progress for {stall_limit} cycles, up to cycle "
                f"{result.cycles} (the emulator stops at the same cycle; its report):\n"
                f"{emulated.message}")
    return (f"{program.name}: no progress for {stall_limit} cycles, up to cycle "
            f"{result.cycles}; the emulator's run of the same program ended differently "
            f"({emulated.status} after {emulated.result.cycles} cycles): a divergence")

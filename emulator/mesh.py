"""The whole mesh: the fabric emulator plus a core on every tile's RAMP link
(docs/ARCHITECTURE.md section 10), and runs of a :class:`mesh.MeshProgram` on it.

One cycle (:meth:`MeshEmulator.step`): the cores compute their cycle from the state at its start
and drive their RAMP inbound links (the wavelet each sends) and the credits on their RAMP
outbound links (one per wavelet taken); the routers do the same in
:meth:`FabricEmulator.step`; then what the routers sent to the cores and the credits they
returned are delivered, usable from the next cycle (section 3). The RAMP links are the fabric's
external links 0..tiles-1; the edge links are idle unless the caller drives them.
"""

from typing import NamedTuple

import numpy as np

from mesh import MeshProgram, RunResult, Trap, isa

from .core import CoreArray
from .fabric import FabricEmulator, StepResult
from .run import CycleLimitExceeded, NoProgress

__all__ = ["MeshEmulator", "MeshStep", "MeshNoProgress", "MeshCycleLimitExceeded"]


class MeshNoProgress(NoProgress):
    """A run in which cores are still running but for ``stall_limit`` cycles in a row no
    instruction retired, no vector stage fired and no wavelet moved in the fabric. The message
    names every waiting core (tile, pc, instruction, the color and whether it waits for a
    wavelet or a credit) and every blocked fabric queue. ``waiting``: the
    :class:`emulator.core.Waiting` records; ``result``: the state when the run stopped."""

    def __init__(self, cycle, stall_limit, lines, waiting, result):
        super().__init__(cycle, stall_limit, lines)
        self.waiting = waiting
        self.result = result


class MeshCycleLimitExceeded(CycleLimitExceeded):
    """A run that did not finish within its cycle limit. ``result``: the state when it
    stopped."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


class MeshStep(NamedTuple):
    """The signals of one mesh cycle: ``fabric`` is the fabric's :class:`StepResult`; the
    ``edge_*`` arrays are its parts on the edge links (external links tiles.., in the order of
    ``mesh.external_links``): wavelets leaving the mesh and credits for edge inputs."""
    cycle: int
    fabric: StepResult
    edge_out_valid: np.ndarray
    edge_out_color: np.ndarray
    edge_out_data: np.ndarray
    edge_in_credit: np.ndarray


class MeshEmulator:
    """A :class:`mesh.MeshProgram` loaded on a cycle-exact model of the mesh.

    ``fabric`` is a :class:`FabricEmulator` with the program's routes, ``cores`` a
    :class:`CoreArray` with its images. ``cycle`` counts the cycles stepped.

    With ``trace=True`` every cycle is recorded: ``retired``, (cycle, tile, pc) of every
    retired instruction; ``wavelets``, the fabric's wavelet events as
    :meth:`FabricEmulator.events` gives them (every router port); ``core_sends``,
    (cycle, tile, color, data) of every wavelet a core sends to its router.
    """

    def __init__(self, program, trace=False):
        if not isinstance(program, MeshProgram):
            raise TypeError(f"program must be a mesh.MeshProgram, not {program!r}")
        self.program = program
        self.config = cfg = program.config
        self.fabric = FabricEmulator(cfg, program.routes)
        self.cores = CoreArray(cfg, program.imem(), program.sram(), self.fabric.accept,
                               self.fabric.out)
        self.cycle = 0
        self.trace = bool(trace)
        self.retired = []
        self.wavelets = []
        self.core_sends = []

        tiles, n = cfg.tiles, self.fabric.n_links
        self.n_edge_links = n - tiles
        self.edge_links = self.fabric.links[tiles:]
        # The fabric's inputs; the cores write their part (links 0..tiles-1) directly.
        self._in_valid = np.zeros(n, dtype=bool)
        self._in_color = np.zeros(n, dtype=np.intp)
        self._in_data = np.zeros(n, dtype=np.uint32)
        self._out_credit = np.zeros((n, cfg.colors), dtype=bool)
        self.cores.attach_outputs(self._in_valid[:tiles], self._in_color[:tiles],
                                  self._in_data[:tiles], self._out_credit[:tiles])
        self._edges_driven = False

    # Cycles -----------------------------------------------------------------------------------

    def step(self, edge_valid=None, edge_color=None, edge_data=None, edge_credit=None):
        """Advance the cores and the fabric by one cycle and return its :class:`MeshStep`.

        The optional edge inputs are in :meth:`FabricEmulator.step`'s format restricted to the
        edge links: ``edge_valid``/``edge_color``/``edge_data`` (n_edge_links,), the wavelets
        agents drive into the mesh (give all three or none), and ``edge_credit``
        (n_edge_links, colors) bool, the credits they return for wavelets they took from
        outbound edge links. They are checked against the link protocol before any state
        changes (ValueError, :class:`ProtocolError`)."""
        tiles = self.config.tiles
        if edge_valid is not None or edge_credit is not None or self._edges_driven:
            self._drive_edges(edge_valid, edge_color, edge_data, edge_credit)
        cores = self.cores
        cores.trace = self.trace
        cores.step()
        # The cores obey the link protocol by construction, and edge inputs were checked by
        # _drive_edges: the fabric need not check again.
        result = self.fabric.step(self._in_valid, self._in_color, self._in_data,
                                  self._out_credit, checked=False)
        cores.deliver(result.out_valid[:tiles], result.out_color[:tiles],
                      result.out_data[:tiles], result.in_credit[:tiles])
        if self.trace:
            self._record(result)
        self.cycle += 1
        return MeshStep(result.cycle, result, result.out_valid[tiles:],
                        result.out_color[tiles:], result.out_data[tiles:],
                        result.in_credit[tiles:])

    def _drive_edges(self, valid, color, data, credit):
        """Put the edge inputs of this cycle into the fabric's input arrays (zeros where not
        given) and check them against the protocol while no state has changed yet."""
        tiles, n, colors = self.config.tiles, self.n_edge_links, self.config.colors
        given = [v is not None for v in (valid, color, data)]
        if any(given) and not all(given):
            raise ValueError("edge_valid, edge_color and edge_data go together: give all three "
                             "or none")
        self._in_valid[tiles:] = False
        self._in_color[tiles:] = 0
        self._in_data[tiles:] = 0
        self._out_credit[tiles:] = False
        self._edges_driven = True      # until they are known good: the next step clears them
        for name, value, shape, target in (
                ("edge_valid", valid, (n,), self._in_valid),
                ("edge_color", color, (n,), self._in_color),
                ("edge_data", data, (n,), self._in_data),
                ("edge_credit", credit, (n, colors), self._out_credit)):
            if value is None:
                continue
            value = np.asarray(value)
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape} (one entry per edge link), "
                                 f"not {value.shape}")
            if name == "edge_valid" or name == "edge_credit":
                if value.dtype.kind != "b":
                    raise ValueError(f"{name} must be a bool array, not {value.dtype}")
            elif value.dtype.kind not in "iu":
                raise ValueError(f"{name} must be an integer array, not {value.dtype}")
            if name == "edge_color":
                if np.any(valid & ((value < 0) | (value >= colors))):
                    bad = int(np.flatnonzero(valid & ((value < 0) | (value >= colors)))[0])
                    raise ValueError(f"inbound link {self.edge_links[bad]}: wavelet color "
                                     f"{int(value[bad])} is out of range: this mesh has colors "
                                     f"0..{colors - 1}")
            elif name == "edge_data":
                if np.any(valid & ((value < 0) | (value > 0xFFFFFFFF))):
                    bad = int(np.flatnonzero(valid & ((value < 0) | (value > 0xFFFFFFFF)))[0])
                    raise ValueError(f"inbound link {self.edge_links[bad]}: wavelet data "
                                     f"{int(value[bad])} is not a 32-bit unsigned value")
            target[tiles:] = value
        # The cores' part is written in their step; check the edges alone now (the fabric's own
        # check, with the core links idle), so that a violation changes no state.
        core_valid = self._in_valid[:tiles].copy()
        core_credit = self._out_credit[:tiles].copy()
        self._in_valid[:tiles] = False
        self._out_credit[:tiles] = False
        try:
            self.fabric._check_inputs(self._in_valid, self._in_color, self._in_data,
                                      self._out_credit)
        finally:
            self._in_valid[:tiles] = core_valid
            self._out_credit[:tiles] = core_credit
        self._edges_driven = valid is not None or credit is not None

    def _record(self, result):
        cycle = result.cycle
        tiles, pcs = self.cores.retired()
        self.retired.extend((cycle, t, p) for t, p in zip(tiles.tolist(), pcs.tolist()))
        self.wavelets.extend(self.fabric.events(result))
        senders = np.flatnonzero(self.cores.send_valid)
        self.core_sends.extend(
            (cycle, t, c, d) for t, c, d in zip(
                senders.tolist(), self.cores.send_color[senders].tolist(),
                self.cores.send_data[senders].tolist()))

    # Runs ---------------------------------------------------------------------------------------

    @property
    def done(self):
        """Every core has halted."""
        return self.cores.n_halted == self.config.tiles

    def run(self, max_cycles=1_000_000, stall_limit=200, progress=None, progress_every=1000):
        """Run until every core has halted (section 10) and return the :class:`RunResult`.

        Raises :class:`mesh.Trap` at the end of a cycle in which a core trapped (its
        ``result`` is the state at the end of that cycle), :class:`MeshNoProgress` when cores
        are running but for ``stall_limit`` cycles in a row nothing retired, fired or moved,
        and :class:`MeshCycleLimitExceeded` when ``max_cycles`` more cycles do not finish the
        run. ``progress``, if given, is called with the cycle count every ``progress_every``
        cycles."""
        start = self.cycle
        stalled = 0
        cores = self.cores
        while not self.done:
            if self.cycle - start >= max_cycles:
                running = np.flatnonzero(~cores.halted)
                where = [self.program.where(int(t), int(cores.pc[t])) for t in running[:8]]
                raise MeshCycleLimitExceeded(
                    f"{self.program.name}: not finished within {max_cycles} cycles: "
                    f"{running.size} core(s) still running, e.g.:\n  " + "\n  ".join(where),
                    self.result())
            step = self.step()
            if cores.trapped:
                result = self.result()
                lines = result.trap_report(self.program)
                raise Trap(f"{self.program.name}: {len(lines)} core(s) trapped in cycle "
                           f"{step.cycle}:\n  " + "\n  ".join(lines), result)
            if cores.progressed or step.fabric.sent_valid.any():
                stalled = 0
            elif not self.done:
                stalled += 1
                if stalled >= stall_limit:
                    waiting = cores.waiting()
                    raise MeshNoProgress(self.cycle, stall_limit, self._stall_report(waiting),
                                         waiting, self.result())
            if progress is not None and self.cycle % progress_every == 0:
                progress(self.cycle)
        return self.result()

    def _stall_report(self, waiting):
        """Lines for a no-progress report: every waiting core, wavelets held in core input
        queues, and every non-empty fabric queue."""
        lines = []
        for w in waiting:
            if w.what == "wavelet":
                why = f"waits for a wavelet on color {w.color} (its input queue is empty)"
            else:
                why = (f"waits for a credit on color {w.color} (the router's RAMP queue of "
                       f"that color is full)")
            lines.append(f"{self.program.where(w.tile, w.pc)}: {why}")
        cores = self.cores
        for tile, color in zip(*np.nonzero(cores.queue_count)):
            x, y = self.config.tile_xy(int(tile))
            lines.append(f"tile ({x},{y}) core input queue color {int(color)}: "
                         f"{int(cores.queue_count[tile, color])} wavelet(s) not taken")
        return lines + self.fabric.report()

    def result(self):
        """The state as a :class:`mesh.RunResult` (copies)."""
        c = self.cores
        return RunResult(cycles=self.cycle, sram=c.sram.copy(), counters=c.counters.copy(),
                         halted=c.halted.copy(), trap_cause=c.trap_cause.copy(),
                         trap_pc=c.trap_pc.copy(), pc=c.pc.copy(),
                         registers=c.registers.copy())

    def counter(self, name):
        """One counter of every core, as a (tiles,) array (a copy)."""
        names = [n for n, _ in isa.COUNTERS]
        return self.cores.counters[:, names.index(name)].copy()

"""The system top's cycle-exact model (docs/ARCHITECTURE.md section 13, "The system"): the
prefill engine, the stage into the sender's memory, the packet link over fault-free channels,
and the delivery engine feeding the mesh, one phase after another, every handoff in the cycle
the RTL (``hdl.system.SystemTop``) makes it.

:class:`SystemImage` is the input of a run on any backend: the engine's program and DRAM, the
message and the delivery command, and the mesh program. :func:`run_system` runs it on the
emulators (:class:`~emulator.prefill.PrefillEmulator`, :class:`~emulator.link.LinkEmulator`
with no faults, :class:`~emulator.mesh_delivery.DeliveryModel` and
:class:`~emulator.MeshEmulator`) and returns a :class:`SystemResult`, the same type as
``wafer.verilator_system.run_system_verilator``'s.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from mesh import MeshProgram, RunResult
from mesh.delivery import DeliveryError
from mesh.link import LinkConfig, TxError
from mesh.prefill import Command, EngineError, PrefillConfig
from mesh.system import (EVENTS, LINK_COUNTERS, MESSAGE_ID, RX_NODE, TX_NODE, SystemCause,
                         stage_cycles)

from .link import LinkEmulator
from .mesh import MeshEmulator
from .mesh_delivery import DeliveryCommand, DeliveryModel, check_command, west_edge_indices
from .prefill import PrefillCycleLimit, PrefillEmulator, PrefillError

__all__ = ["SystemImage", "SystemResult", "run_system", "STATUSES"]

#: How a run ends.
STATUSES = ("done", "trap", "error", "no progress", "cycle limit")
MAX_PACKETS = (1 << 16) - 1


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


@dataclass(frozen=True)
class SystemImage:
    """Everything a system run needs (docs/ARCHITECTURE.md section 13), checked on
    construction (ValueError or TypeError naming the field).

    ``prefill_config``: the engine's :class:`PrefillConfig`; ``commands``: its command list
    (:class:`mesh.prefill.Command`, at least one, at most ``prefill_config.commands``); ``dram``:
    the DRAM's initial bytes from byte 0 (at most ``dram_bytes``; the rest zero);
    ``link_config``: the :class:`LinkConfig` of both ends; ``message_addr``, ``message_words``:
    the message, a DRAM byte address (a multiple of 4) and its 32-bit words (1 to the sender's
    ``source_words`` and the receiver's ``buffer_words``, inside the DRAM, at most 65,535
    packets); ``delivery``: the :class:`~emulator.mesh_delivery.DeliveryCommand` (good for the
    mesh and the buffer, and reading only words of the message: src + width x height x words
    <= ``message_words``); ``program``: the :class:`mesh.MeshProgram` the cores run from the
    delivery's first cycle; ``name``: for reports."""
    prefill_config: PrefillConfig
    commands: tuple
    dram: bytes
    link_config: LinkConfig
    message_addr: int
    message_words: int
    delivery: DeliveryCommand
    program: MeshProgram
    name: str = "system"

    def __post_init__(self):
        for name, kind in (("prefill_config", PrefillConfig), ("link_config", LinkConfig),
                           ("delivery", DeliveryCommand), ("program", MeshProgram)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, not "
                                f"{getattr(self, name)!r}")
        pcfg, lcfg = self.prefill_config, self.link_config
        commands = tuple(self.commands)
        for index, command in enumerate(commands):
            if not isinstance(command, Command):
                raise TypeError(f"commands[{index}] must be a mesh.prefill.Command, not "
                                f"{command!r}")
            command.encode()            # raises CommandError for a field out of range
        if not 1 <= len(commands) <= pcfg.commands:
            raise ValueError(f"commands must hold 1 to {pcfg.commands} commands (the command "
                             f"memory), not {len(commands)}")
        object.__setattr__(self, "commands", commands)
        if not isinstance(self.dram, (bytes, bytearray, memoryview)):
            raise TypeError(f"dram must be bytes, not {type(self.dram).__name__}")
        dram = bytes(self.dram)
        if len(dram) > pcfg.dram_bytes:
            raise ValueError(f"dram holds {len(dram)} bytes, more than the DRAM's "
                             f"{pcfg.dram_bytes}")
        object.__setattr__(self, "dram", dram)
        _check_int("message_words", self.message_words, 1,
                   min(lcfg.source_words, lcfg.buffer_words))
        _check_int("message_addr", self.message_addr, 0, pcfg.dram_bytes - 4)
        object.__setattr__(self, "message_words", int(self.message_words))
        object.__setattr__(self, "message_addr", int(self.message_addr))
        if self.message_addr % 4:
            raise ValueError(f"message_addr {self.message_addr} is not a multiple of 4")
        end = self.message_addr + 4 * self.message_words
        if end > pcfg.dram_bytes:
            raise ValueError(f"the message, DRAM bytes {self.message_addr}..{end - 1}, runs past "
                             f"the {pcfg.dram_bytes}-byte DRAM")
        packets = -(-self.message_words // lcfg.max_payload)
        if packets > MAX_PACKETS:
            raise ValueError(f"the message needs {packets} packets of {lcfg.max_payload} words, "
                             f"more than {MAX_PACKETS}")
        mcfg = self.program.config
        cause, name, sentence = check_command(mcfg, lcfg.buffer_words, self.delivery)
        if cause != DeliveryError.NONE:
            raise ValueError(f"delivery: field {name}: {sentence}")
        if self.delivery.src + self.delivery.total > self.message_words:
            raise ValueError(f"delivery: src {self.delivery.src} + {self.delivery.total} words "
                             f"reads past the {self.message_words}-word message")

    @property
    def mesh_config(self):
        return self.program.config


@dataclass
class SystemResult:
    """What a system run did, on any backend.

    ``status``: one of :data:`STATUSES`. ``cycles``: the run's cycle count: ``events["end"]``
    when it ended (done, trap or error), else the cycles run when it stopped (no progress,
    cycle limit). ``events``: {event: system cycle or None} for :data:`EVENTS` (section 13).
    ``mesh``: the mesh's :class:`mesh.RunResult` (its ``cycles`` are mesh cycles, from
    ``mesh_start``; no registers); ``dram``: the engine's DRAM at the end; ``error_cause``: a
    :class:`SystemCause`; ``engine_error`` (an :class:`EngineError`) and
    ``engine_error_index``, ``tx_error`` (a :class:`TxError`), ``delivery_error`` (a
    :class:`DeliveryError`): the blocks' causes; ``link``: {counter: value} for
    :data:`LINK_COUNTERS`; ``backend``; ``seconds``: wall time of the run. Only the emulator
    fills ``engine`` (the engine emulator's run result: issue cycles, counters) and
    ``link_details`` (NACKs, dead lanes, the channels' fault counts, the sender's start and
    done cycles); neither is compared by :meth:`same_as`."""
    status: str
    cycles: int
    events: dict
    mesh: RunResult
    dram: bytes
    error_cause: SystemCause = SystemCause.NONE
    engine_error: EngineError = EngineError.NONE
    engine_error_index: int = 0
    tx_error: TxError = TxError.NONE
    delivery_error: DeliveryError = DeliveryError.NONE
    link: dict = field(default_factory=dict)
    backend: str = "emulator"
    seconds: float = 0.0
    engine: object = None
    link_details: dict = field(default_factory=dict)

    @property
    def phase_cycles(self):
        """{phase: cycles} of the phases that ended: prefill, stage, link (to the receiver's
        done, plus the handoff cycle), mesh."""
        e = self.events
        spans = {"prefill": (0, "prefill_end"), "stage": ("stage_start", "link_start"),
                 "link": ("link_start", "mesh_start"), "mesh": ("mesh_start", "end")}
        out = {}
        for name, (start, end) in spans.items():
            first = 0 if start == 0 else e[start]
            if first is not None and e[end] is not None and (name != "mesh"
                                                             or self.status in ("done", "trap")):
                out[name] = e[end] - first
        return out

    def same_as(self, other):
        """The fields in which two results differ (empty when identical; ``backend`` and
        ``seconds`` are not compared)."""
        differ = []
        for name in ("status", "cycles", "events", "error_cause", "engine_error",
                     "engine_error_index", "tx_error", "delivery_error", "link"):
            if getattr(self, name) != getattr(other, name):
                differ.append(f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}")
        if self.dram != other.dram:
            diff = np.flatnonzero(np.frombuffer(self.dram, np.uint8)
                                  != np.frombuffer(other.dram, np.uint8)) \
                if len(self.dram) == len(other.dram) else None
            differ.append("dram differs" + (f" from byte {int(diff[0])}" if diff is not None
                                            else " in length"))
        differ += [f"mesh {line}" for line in self.mesh.same_as(other.mesh)]
        return differ


def run_system(image, max_cycles=10_000_000, stall_limit=200, *, faults=None, seed=0,
               watch=None):
    """Run ``image`` (a :class:`SystemImage`) on the emulators, cycle-exact to the RTL system
    top, and return a :class:`SystemResult`.

    The run stops when every core has halted (status "done") or one trapped ("trap"), when a
    phase fails ("error"), when in phase MESH ``stall_limit`` cycles in a row make no progress
    ("no progress": no core or router progress, no word read or sent by the delivery engine),
    or after ``max_cycles`` system cycles ("cycle limit").

    Beyond the RTL (emulator only): ``faults`` and ``seed`` give the link's channels seeded
    faults (:func:`emulator.channel.make_channels`); a sender that then fails ends the run with
    status "error", cause LINK, in the cycle its error is seen. ``watch(mesh)``, if given, is
    called after every mesh cycle with the :class:`~emulator.MeshEmulator`."""
    if not isinstance(image, SystemImage):
        raise TypeError(f"image must be a SystemImage, not {image!r}")
    _check_int("max_cycles", max_cycles, 1, 1 << 31)
    _check_int("stall_limit", stall_limit, 1, 1 << 31)
    clock = time.perf_counter()
    events = dict.fromkeys(EVENTS)
    mesh = MeshEmulator(image.program)
    lk = LinkEmulator(image.link_config, faults=faults, seed=seed, tx_node=TX_NODE,
                      rx_node=RX_NODE)
    engine = PrefillEmulator(image.prefill_config, dram=image.dram, array="fast")
    prefill = None

    def result(status, cycles, dram, **causes):
        return SystemResult(
            status=status, cycles=cycles, events=events, mesh=_mesh_result(mesh, events),
            dram=bytes(dram), link=_link_counters(lk),
            seconds=time.perf_counter() - clock, engine=prefill,
            link_details=_link_details(lk), **causes)

    # PREFILL: cycles 0 .. P - 1; the engine's done is seen in P.
    try:
        prefill = engine.run(image.commands, max_cycles=max_cycles)
    except PrefillCycleLimit:
        return result("cycle limit", max_cycles, engine.dram)
    except PrefillError as error:
        events["end"] = error.cycle + 1
        return result("error", error.cycle + 1, engine.dram, error_cause=SystemCause.ENGINE,
                      engine_error=error.cause, engine_error_index=error.index)
    P = prefill.cycles
    events["prefill_end"] = P

    # STAGE: from P + 1, one chunk read a cycle, the last one written in the last cycle.
    S = P + 1
    events["stage_start"] = S
    words = image.message_words
    lk.tx.source[:words] = np.frombuffer(
        prefill.dram, dtype="<u4", count=words, offset=image.message_addr)

    # LINK: the sender takes the command in L0; the receiver's done is seen in R.
    L0 = S + stage_cycles(image.prefill_config, words)
    events["link_start"] = L0
    lk.tx.start(0, 4 * words, RX_NODE, MESSAGE_ID)

    def step_link():
        lk.step()
        if lk.tx.done and events["tx_done"] is None:
            events["tx_done"] = L0 + lk.tx.done[0][0]

    while not lk.rx.done:
        if L0 + lk.cycle >= max_cycles:
            return result("cycle limit", max_cycles, prefill.dram)
        if lk.tx.error != TxError.NONE:             # only with faults
            events["end"] = L0 + lk.cycle
            return result("error", L0 + lk.cycle, prefill.dram, error_cause=SystemCause.LINK,
                          tx_error=lk.tx.error)
        step_link()
    R = L0 + lk.rx.done[0][0]
    events["rx_done"] = R

    # MESH: from M = R + 1 the delivery command is taken and the cores run (mesh cycle 0).
    M = R + 1
    events["mesh_start"] = M
    if M > max_cycles:
        return result("cycle limit", max_cycles, prefill.dram)
    while L0 + lk.cycle < M:        # the link's cycles up to the mesh's start
        step_link()
    cfg = image.mesh_config
    model = DeliveryModel(cfg, lk.rx.buffer)
    west = west_edge_indices(mesh)
    n = mesh.n_edge_links
    valid = np.zeros(n, dtype=bool)
    color = np.zeros(n, dtype=np.intp)
    data = np.zeros(n, dtype=np.uint32)
    credit = np.zeros((n, cfg.colors), dtype=bool)
    stalled = 0
    offer = image.delivery
    while True:
        t = M + mesh.cycle
        if t >= max_cycles:
            return result("cycle limit", max_cycles, prefill.dram)
        valid[west], color[west], data[west] = model.outputs()
        step = mesh.step(valid, color, data, credit)
        out = model.step(step.edge_in_credit[west], offer)
        offer = None
        step_link()
        if out.done and events["delivery_done"] is None:
            events["delivery_done"] = t
        if watch is not None:
            watch(mesh)
        credit[...] = False
        if step.edge_out_valid.any():
            idx = np.flatnonzero(step.edge_out_valid)
            credit[idx, step.edge_out_color[idx]] = True
        if mesh.cores.trapped or mesh.done:
            break
        moved = (mesh.cores.progressed or step.fabric.sent_valid.any() or out.valid.any()
                 or out.read_en)
        stalled = 0 if moved else stalled + 1
        if stalled >= stall_limit:
            return result("no progress", t + 1, prefill.dram,
                          delivery_error=model.error)
    E = M + mesh.cycle
    events["end"] = E
    step_link()                     # the link runs in cycle E too
    return result("trap" if mesh.cores.trapped else "done", E, prefill.dram,
                  delivery_error=model.error)


def _mesh_result(mesh, events):
    """The mesh's state as a :class:`RunResult` without registers (the RTL does not read them
    back), its cycles counted from ``mesh_start``."""
    r = mesh.result()
    return RunResult(cycles=mesh.cycle, sram=r.sram, counters=r.counters, halted=r.halted,
                     trap_cause=r.trap_cause, trap_pc=r.trap_pc, pc=r.pc)


def _link_counters(lk):
    counters = {"sent": lk.tx.sent, "retransmits": lk.tx.retransmits,
                "timeouts": lk.tx.timeouts, "accepted": lk.rx.accepted}
    return {name: counters[name] for name in LINK_COUNTERS}


def _link_details(lk):
    channels = {name: sum(getattr(ch, name) for ch in lk.forward + lk.reverse)
                for name in ("dropped", "flipped", "duplicated", "reordered", "lost_dead")}
    return {"nacks": lk.rx.nacks,
            "lanes_dead": [lane for lane, dead in enumerate(lk.tx.lane_dead) if dead],
            "start_cycle": lk.tx.start_cycle,
            "done_cycle": lk.tx.done[0][0] if lk.tx.done else None, **channels}

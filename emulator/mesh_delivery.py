"""Cycle-exact model of the delivery engine (docs/ARCHITECTURE.md section 12, "Delivery into the
mesh"), written from the specification: a message in the packet link's receive buffer streamed
into the mesh's west inbound edge links, and :func:`run_delivery`, which steps it together with a
:class:`emulator.MeshEmulator` running a receive program (``programs/delivery.py``).

Cycle t: every decision in t reads the state at the start of t and the credits returned on the
west links in t; every update lands at the end of t. :meth:`DeliveryModel.outputs` gives what the
engine drives on the west links in the current cycle (it does not depend on that cycle's inputs),
so a caller steps the mesh with it first and then :meth:`DeliveryModel.step` with the mesh's
credits of the same cycle.
"""

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from mesh import MeshConfig, Port, Trap
from mesh.delivery import DeliveryError, FIELD_BITS

__all__ = ["DeliveryError", "DeliveryCommand", "DeliveryCommandError", "DeliveryModel",
           "DeliveryStep", "DeliveryRun", "check_command", "west_edge_indices", "run_delivery",
           "FIELD_BITS"]



class DeliveryCommandError(ValueError):
    """A bad delivery command: ``cause`` (:class:`DeliveryError`) and ``field``, the command
    field named in the message."""

    def __init__(self, cause, field, message):
        super().__init__(message)
        self.cause = cause
        self.field = field


@dataclass(frozen=True)
class DeliveryCommand:
    """A delivery command: the region x0 .. x0 + width - 1 by y0 .. y0 + height - 1, ``words``
    per tile, from buffer word ``src``, on ``color``. Each value must fit its field
    (:data:`FIELD_BITS`), else ValueError naming it."""
    x0: int
    y0: int
    width: int
    height: int
    words: int
    src: int
    color: int

    def __post_init__(self):
        for f in fields(self):
            value, bits = getattr(self, f.name), FIELD_BITS[f.name]
            if isinstance(value, np.integer):
                value = int(value)
                object.__setattr__(self, f.name, value)
            if not isinstance(value, int) or isinstance(value, bool) \
                    or not 0 <= value < (1 << bits):
                raise ValueError(f"delivery command field {f.name} must be an integer from 0 to "
                                 f"{(1 << bits) - 1} (a {bits}-bit field), not {value!r}")

    @property
    def total(self):
        """Words of the message: width x height x words."""
        return self.width * self.height * self.words

    @property
    def row_words(self):
        return self.width * self.words


def check_command(config, buffer_words, command):
    """(cause, field, sentence) of ``command``'s first failing check, or (NONE, None, "")."""
    c = command
    W, H = config.width, config.height
    region = f"region x0={c.x0} y0={c.y0} width={c.width} height={c.height}"
    if c.width == 0:
        return DeliveryError.REGION, "width", f"{region}: width is 0"
    if c.height == 0:
        return DeliveryError.REGION, "height", f"{region}: height is 0"
    if c.x0 >= W:
        return DeliveryError.REGION, "x0", f"{region}: x0 is outside the {config.shape} mesh"
    if c.y0 >= H:
        return DeliveryError.REGION, "y0", f"{region}: y0 is outside the {config.shape} mesh"
    if c.x0 + c.width > W:
        return (DeliveryError.REGION, "width",
                f"{region}: x0 + width = {c.x0 + c.width} reaches past the {config.shape} mesh")
    if c.y0 + c.height > H:
        return (DeliveryError.REGION, "height",
                f"{region}: y0 + height = {c.y0 + c.height} reaches past the {config.shape} "
                f"mesh")
    if c.words == 0:
        return DeliveryError.WORDS, "words", "words (per tile) is 0"
    if c.src + c.total > buffer_words:
        return (DeliveryError.BUFFER, "src",
                f"src {c.src} + {c.total} message words = {c.src + c.total} is past the end of "
                f"the {buffer_words}-word receive buffer")
    if c.color >= config.colors:
        return (DeliveryError.COLOR, "color",
                f"color {c.color} is out of range: this mesh has colors 0..{config.colors - 1}")
    return DeliveryError.NONE, None, ""


class DeliveryStep(NamedTuple):
    """The signals of one cycle: the west links (``valid``, ``color``, ``data``, (H,) arrays),
    the read port (``read_en``, ``read_addr``), ``taken`` (a command was taken), ``done`` and
    ``busy`` (as the RTL's outputs in that cycle)."""
    cycle: int
    valid: np.ndarray
    color: np.ndarray
    data: np.ndarray
    read_en: bool
    read_addr: int
    taken: bool
    done: bool
    busy: bool


class DeliveryModel:
    """The delivery engine of a ``config`` mesh reading ``buffer`` (a 1-D array of
    ``buffer_words`` 32-bit words, e.g. :attr:`emulator.link.RxModel.buffer`; read when a word
    is chosen, which the specification's one-cycle read latency makes equivalent).

    Attributes: ``cycle`` (the cycle the next :meth:`step` models), ``busy``, ``error`` (a
    :class:`DeliveryError`), ``error_field`` and ``error_message`` (of the last command taken),
    ``credit`` ((H, colors) counters), ``left`` and ``next`` (per row), ``rr``, ``command``
    (the last good command), ``taken`` and ``done`` (cycles), ``sent`` (per row, words sent).
    """

    def __init__(self, config, buffer):
        if not isinstance(config, MeshConfig):
            raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
        buffer = np.asarray(buffer)
        if buffer.ndim != 1 or buffer.size == 0:
            raise ValueError("buffer must be a non-empty 1-D array of words")
        self.config = config
        self.buffer = buffer
        self.buffer_words = buffer.size
        self.reset()

    def reset(self):
        """The state after reset."""
        cfg = self.config
        H = cfg.height
        self.cycle = 0
        self.busy = False
        self.error = DeliveryError.NONE
        self.error_field = None
        self.error_message = ""
        self.command = None
        self.color = 0
        self.credit = np.full((H, cfg.colors), cfg.buffer_depth, dtype=np.int64)
        self.left = [0] * H
        self.next = [0] * H
        self.rr = 0
        self.remaining = 0
        # The word chosen in the previous cycle: (row, data, last), sent in this cycle.
        self._out = None
        self.taken = []
        self.done = []
        self.sent = [0] * H

    @property
    def ready(self):
        """A command offered in this cycle is taken."""
        return not self.busy

    def outputs(self):
        """The west links in this cycle: (valid, color, data), (H,) arrays."""
        H = self.config.height
        valid = np.zeros(H, dtype=bool)
        color = np.zeros(H, dtype=np.intp)
        data = np.zeros(H, dtype=np.uint32)
        if self._out is not None:
            row, word, _ = self._out
            valid[row] = True
            color[row] = self.color
            data[row] = word
        return valid, color, data

    def step(self, credit=None, command=None):
        """Model one cycle: ``credit`` ((H, colors) bool, or None) the credits returned on the
        west links in it, ``command`` a :class:`DeliveryCommand` offered in it (or None).
        Returns the cycle's :class:`DeliveryStep`."""
        cfg = self.config
        H, colors = cfg.height, cfg.colors
        t = self.cycle
        if credit is None:
            credit = np.zeros((H, colors), dtype=bool)
        else:
            credit = np.asarray(credit)
            if credit.shape != (H, colors) or credit.dtype.kind != "b":
                raise ValueError(f"credit must be a bool array of shape {(H, colors)}, not "
                                 f"{credit.dtype} {credit.shape}")
        if command is not None and not isinstance(command, DeliveryCommand):
            raise TypeError(f"command must be a DeliveryCommand, not {command!r}")
        valid, color, data = self.outputs()
        busy = self.busy
        done = self._out is not None and self._out[2]
        if self._out is not None:
            self.sent[self._out[0]] += 1

        # 1. Choice (busy only), with the credits of this cycle.
        chosen = None
        if busy:
            c = self.color
            for k in range(H):
                y = (self.rr + k) % H
                if self.left[y] > 0 and (self.credit[y, c] > 0 or credit[y, c]):
                    chosen = y
                    break
        # 2. Read.
        read_en, read_addr = chosen is not None, 0
        out = None
        if chosen is not None:
            read_addr = self.next[chosen]
            out = (chosen, int(self.buffer[read_addr]) & 0xFFFFFFFF, self.remaining == 1)

        # 4. Update.
        self.credit += credit
        if chosen is not None:
            y = chosen
            self.left[y] -= 1
            self.next[y] += 1
            self.credit[y, self.color] -= 1
            self.rr = (y + 1) % H
            self.remaining -= 1
        self._out = out
        if done:
            self.done.append(t)
            self.busy = False

        # The command (taken when not busy at the start of t).
        taken = command is not None and not busy
        if taken:
            self._take(command, t)
        self.cycle = t + 1
        return DeliveryStep(t, valid, color, data, read_en, read_addr, taken, done, busy)

    def _take(self, command, t):
        cause, field, message = check_command(self.config, self.buffer_words, command)
        self.taken.append(t)
        self.error, self.error_field, self.error_message = cause, field, message
        if cause != DeliveryError.NONE:
            return
        c = command
        self.command = c
        self.busy = True
        self.color = c.color
        self.rr = c.y0
        self.remaining = c.total
        for y in range(self.config.height):
            inside = c.y0 <= y < c.y0 + c.height
            self.left[y] = c.row_words if inside else 0
            self.next[y] = c.src + (y - c.y0) * c.row_words if inside else 0

    def describe(self):
        if not self.busy:
            return f"delivery idle (error {self.error.name})"
        return (f"delivery busy: words left per row {self.left}, credits for color "
                f"{self.color} {self.credit[:, self.color].tolist()}, rr {self.rr}")


# Runs with the mesh emulator -------------------------------------------------------------------

def west_edge_indices(mesh):
    """Indices of the west inbound/outbound edge links of ``mesh`` (a :class:`MeshEmulator`) in
    its edge arrays, by row y."""
    found = {link.y: i for i, link in enumerate(mesh.edge_links) if link.port is Port.W}
    return np.array([found[y] for y in range(mesh.config.height)], dtype=np.intp)


@dataclass
class DeliveryRun:
    """What :func:`run_delivery` did: the mesh's :class:`mesh.RunResult` (``result``), the
    cycles the command was taken and the delivery was done (mesh cycles), and the steps of the
    delivery engine if recorded (``steps``)."""
    result: object
    taken_cycle: int
    done_cycle: int
    cycles: int
    steps: list


class DeliveryStalled(RuntimeError):
    """A delivery run in which nothing moved for ``stall_limit`` cycles."""


def run_delivery(mesh, model, command, *, max_cycles=1_000_000, stall_limit=200, record=False,
                 watch=None):
    """Offer ``command`` to ``model`` (a :class:`DeliveryModel` of the same configuration) in the
    mesh's current cycle and step both, the engine's west links driving ``mesh``'s (a
    :class:`emulator.MeshEmulator`, e.g. running ``programs.delivery`` 's receive program),
    until the delivery is done and every core has halted. Returns a :class:`DeliveryRun`.

    A bad command raises :class:`DeliveryCommandError` naming the field (before any cycle runs);
    a trap raises :class:`mesh.Trap`; ``stall_limit`` cycles in a row without progress (no core
    progress, no wavelet moved, no word sent) raise :class:`DeliveryStalled`; ``max_cycles``
    cycles without finishing raise RuntimeError. ``watch(cycle)``, if given, is called after
    every cycle with the number of cycles run."""
    cfg = mesh.config
    if model.config != cfg:
        raise ValueError(f"the delivery model is for {model.config}, the mesh is {cfg}")
    cause, field, message = check_command(cfg, model.buffer_words, command)
    if cause != DeliveryError.NONE:
        raise DeliveryCommandError(cause, field, f"bad delivery command ({cause.name}, field "
                                                 f"{field}): {message}")
    if not model.ready:
        raise RuntimeError("the delivery engine is busy")
    west = west_edge_indices(mesh)
    n = mesh.n_edge_links
    colors = cfg.colors
    valid = np.zeros(n, dtype=bool)
    color = np.zeros(n, dtype=np.intp)
    data = np.zeros(n, dtype=np.uint32)
    credit = np.zeros((n, colors), dtype=bool)
    start = mesh.cycle
    taken = None
    done = None
    steps = []
    stalled = 0
    offer = command
    while done is None or not mesh.done:
        if mesh.cycle - start >= max_cycles:
            raise RuntimeError(f"delivery not finished within {max_cycles} cycles: "
                               f"{model.describe()}")
        v, c, d = model.outputs()
        valid[west], color[west], data[west] = v, c, d
        step = mesh.step(valid, color, data, credit)
        if mesh.cores.trapped:
            result = mesh.result()
            lines = result.trap_report(mesh.program)
            raise Trap(f"{mesh.program.name}: {len(lines)} core(s) trapped in cycle "
                       f"{step.cycle}:\n  " + "\n  ".join(lines), result)
        out = model.step(step.edge_in_credit[west], offer)
        if record:
            steps.append(out)
        if out.taken:
            taken, offer = step.cycle, None
        if out.done:
            done = step.cycle
        if watch is not None:
            watch(mesh.cycle)
        moved = (mesh.cores.progressed or step.fabric.sent_valid.any() or out.valid.any()
                 or out.read_en)
        stalled = 0 if moved else stalled + 1
        if stalled >= stall_limit:
            waiting = mesh.cores.waiting()
            raise DeliveryStalled(f"no progress for {stall_limit} cycles (cycle {mesh.cycle}): "
                                  f"{model.describe()}\n  "
                                  + "\n  ".join(mesh._stall_report(waiting)))
        # Credits for wavelets leaving on outbound edge links are returned at once (the routes
        # of a delivery never send out of the mesh; anything else is taken and dropped).
        credit[...] = False
        if step.edge_out_valid.any():
            idx = np.flatnonzero(step.edge_out_valid)
            credit[idx, step.edge_out_color[idx]] = True
    return DeliveryRun(mesh.result(), taken, done, mesh.cycle - start, steps)

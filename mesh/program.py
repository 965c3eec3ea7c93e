"""Program images (what is loaded into a mesh before a run) and run results (what every backend
returns after one), docs/ARCHITECTURE.md section 10."""

from dataclasses import dataclass, field

import numpy as np

from .config import ConfigError, MeshConfig
from .isa import COUNTERS, TRAP_TEXT, TrapCause, disassemble, encode
from .routes import RouteTable

__all__ = ["CoreImage", "MeshProgram", "RunResult", "ProgramError", "Trap"]

_WORD_LIMIT = 1 << 32


class ProgramError(ConfigError):
    """An image that does not fit the machine. The message names the tile and the problem."""


@dataclass(frozen=True)
class CoreImage:
    """What one core starts with.

    ``instructions``: instruction words from address 0 (the rest of the instruction memory is
    zero, an illegal instruction). ``sram``: initial SRAM contents as segments
    {start address: words} (a sequence or uint32 array; the rest is zero). ``source``: optional, per instruction, where it came from (``"file:line"``), for
    trap reports. ``symbols``: optional {name: address} of labels and data, for reports.
    ``data``: optional {name: (address, words)} of the named SRAM areas, for reports.
    """
    instructions: tuple
    sram: dict = field(default_factory=dict)
    source: tuple = ()
    symbols: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    def check(self, config, where):
        if len(self.instructions) > config.imem_words:
            raise ProgramError(f"{where}: {len(self.instructions)} instructions do not fit the "
                               f"instruction memory of {config.imem_words} words")
        for address, word in enumerate(self.instructions):
            if not isinstance(word, (int, np.integer)) or not 0 <= word < _WORD_LIMIT:
                raise ProgramError(f"{where}: instruction {address} is {word!r}, not a 32-bit "
                                   f"word")
        used = np.zeros(config.sram_words, dtype=bool)
        for start, words in self.sram.items():
            words = np.asarray(words)
            end = start + len(words) if isinstance(start, (int, np.integer)) else None
            if end is None or start < 0 or end > config.sram_words:
                raise ProgramError(f"{where}: SRAM segment of {len(words)} word(s) at "
                                   f"{start!r} is outside 0..{config.sram_words - 1}")
            if words.size and (words.dtype.kind not in "iu" or words.min() < 0
                               or words.max() >= _WORD_LIMIT):
                raise ProgramError(f"{where}: the SRAM segment at {start} holds values that "
                                   f"are not 32-bit unsigned words")
            if used[start:end].any():
                raise ProgramError(f"{where}: SRAM segments overlap at address "
                                   f"{start + int(np.argmax(used[start:end]))}")
            used[start:end] = True
        if self.source and len(self.source) != len(self.instructions):
            raise ProgramError(f"{where}: {len(self.source)} source locations for "
                               f"{len(self.instructions)} instructions")


HALT_ONLY = CoreImage(instructions=(encode("halt"),))


class MeshProgram:
    """Images for every core of a mesh plus its route table.

    ``images`` maps (x, y) to a :class:`CoreImage`; a tile without one gets a program that only
    halts. ``routes`` is a :class:`RouteTable` for the same mesh (validated here)."""

    def __init__(self, config, images, routes=None, name="program"):
        if not isinstance(config, MeshConfig):
            raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
        self.config = config
        self.name = name
        self.routes = routes if routes is not None else RouteTable(config)
        if not isinstance(self.routes, RouteTable):
            raise TypeError(f"routes must be a mesh.RouteTable, not {self.routes!r}")
        other = self.routes.config
        if (other.width, other.height, other.colors) != (config.width, config.height,
                                                         config.colors):
            raise ProgramError(f"{name}: the route table is for a {other.shape} mesh with "
                               f"{other.colors} colors, the program for a {config.shape} mesh "
                               f"with {config.colors}")
        self.routes.validate()
        self.images = []
        for (x, y) in images:
            if not config.on_mesh(x, y):
                raise ProgramError(f"{name}: an image is given for tile ({x},{y}), outside the "
                                   f"{config.shape} mesh")
        for index in range(config.tiles):
            x, y = config.tile_xy(index)
            image = images.get((x, y), HALT_ONLY)
            if not isinstance(image, CoreImage):
                raise TypeError(f"{name}: the image of tile ({x},{y}) must be a CoreImage, not "
                                f"{image!r}")
            image.check(config, f"{name}: tile ({x},{y})")
            self.images.append(image)

    def image(self, x, y):
        return self.images[self.config.tile_index(x, y)]

    def imem(self):
        """Instruction memories as a (tiles, imem_words) uint32 array."""
        out = np.zeros((self.config.tiles, self.config.imem_words), dtype=np.uint32)
        for tile, image in enumerate(self.images):
            out[tile, :len(image.instructions)] = image.instructions
        return out

    def sram(self):
        """Initial SRAMs as a (tiles, sram_words) uint32 array."""
        out = np.zeros((self.config.tiles, self.config.sram_words), dtype=np.uint32)
        for tile, image in enumerate(self.images):
            for start, words in image.sram.items():
                out[tile, start:start + len(words)] = words
        return out

    def where(self, tile, pc):
        """A readable location for instruction ``pc`` of ``tile``: its disassembly and, when
        known, its source line."""
        x, y = self.config.tile_xy(tile)
        image = self.images[tile]
        text = disassemble(image.instructions[pc]) if pc < len(image.instructions) \
            else "(past the end of the program)"
        source = f" ({image.source[pc]})" if pc < len(image.source) else ""
        return f"tile ({x},{y}) pc {pc}: {text}{source}"


class Trap(RuntimeError):
    """A run stopped by a core trap. ``result`` is the state at the end of the trap cycle."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


@dataclass
class RunResult:
    """The outcome of a run on any backend (section 10). Arrays are indexed by tile (row-major).

    ``cycles``: number of cycles run. ``sram`` (tiles, sram_words), ``counters``
    (tiles, len(isa.COUNTERS)), ``halted``, ``trap_cause``, ``trap_pc``, ``pc`` (tiles,): uint32 /
    int arrays. ``registers`` (tiles, 16) is None on backends that do not read them back."""
    cycles: int
    sram: np.ndarray
    counters: np.ndarray
    halted: np.ndarray
    trap_cause: np.ndarray
    trap_pc: np.ndarray
    pc: np.ndarray = None
    registers: np.ndarray = None

    def counter(self, name):
        """One counter of every core, as a (tiles,) array."""
        names = [n for n, _ in COUNTERS]
        return self.counters[:, names.index(name)]

    def trapped(self):
        """Tile indices whose core trapped."""
        return np.flatnonzero(self.trap_cause != TrapCause.NONE)

    def trap_report(self, program):
        """One line per trapped core: tile, pc, instruction, source and cause."""
        return [f"{program.where(int(t), int(self.trap_pc[t]))}: trap: "
                f"{TRAP_TEXT[TrapCause(int(self.trap_cause[t]))]}" for t in self.trapped()]

    def same_as(self, other):
        """The fields in which two results differ (empty when identical); registers and pc are
        compared only when both have them."""
        differ = []
        if self.cycles != other.cycles:
            differ.append(f"cycles {self.cycles} != {other.cycles}")
        for name in ("sram", "counters", "halted", "trap_cause", "trap_pc", "pc", "registers"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is None or theirs is None:
                continue
            if not np.array_equal(np.asarray(mine), np.asarray(theirs)):
                tiles = np.unique(np.argwhere(np.asarray(mine) != np.asarray(theirs))[:, 0])
                differ.append(f"{name} differs at tiles {tiles.tolist()[:8]}")
        return differ


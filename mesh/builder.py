"""Build programs from Python: one :class:`CoreBuilder` per distinct core program, a
:class:`MeshBuilder` that places them on tiles and holds the routes.

The compiler and the example programs use this API; the text assembler (:mod:`mesh.asm`)
parses into it, so both check operands the same way and report errors the same way.

Every instruction of :data:`mesh.isa.OPCODES` is a method named after it (``and_``, ``or_`` for
the Python keywords), taking its operands in assembly order (``mesh.isa.Opcode.syntax``)::

    core = CoreBuilder("dot")
    x = core.alloc("x", [1, 2, 3, 4])
    core.mem_vector(0, x, 4)              # d0 = memory vector x[0..3]
    core.vdot4(1, 0, 0, reduce="sum")     # r1 = sum of dot4(x[i], x[i])
    core.st(1, 0, "r0")                   # sram[0 + r0] = r1 (``st rs, imm(ra)``)
    core.halt()

A memory operand ``imm(ra)`` is two arguments, ``imm`` then ``ra``. Registers are ints (1) or
names ("r1"); descriptors ints (0) or names ("d0"); an operand that may be either (``db|rs``) is a
register only when given by name ("r1"). Targets are label names or instruction addresses;
immediates are ints or names of data (their address, see :meth:`CoreBuilder.alloc`) or labels.
"""

import keyword
import os
import sys
from dataclasses import dataclass, replace

import numpy as np

from .config import ConfigError
from .isa import (BY_NAME, NUM_DESCRIPTORS, NUM_REGISTERS, PACKABLE, REDUCIBLE,
                  EncodingError, Format, OPCODES, encode)
from .program import CoreImage, MeshProgram
from .routes import RouteTable

__all__ = ["AssemblyError", "CoreBuilder", "MeshBuilder", "Location"]


@dataclass(frozen=True)
class Location:
    """Where an instruction came from: a file (or builder name), line and column (1-based;
    0 when unknown)."""
    file: str
    line: int = 0
    column: int = 0

    def __str__(self):
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}" + (f":{self.column}" if self.column else "")


class AssemblyError(ConfigError):
    """A bad instruction, operand, label or data directive. The message starts with its
    location (``file:line:column``)."""

    def __init__(self, location, message):
        super().__init__(f"{location}: {message}")
        self.location = location
        self.reason = message


# Which field each operand name of an Opcode.syntax goes to, per format.
_TOKEN_FIELDS = {
    Format.N: {},
    Format.R: {"rd": "a", "ra": "b", "rb": "c"},
    Format.I: {"rd": "a", "rs": "a", "ra": "b", "imm": "imm18"},
    Format.B: {"ra": "a", "rb": "b", "target": "imm14"},
    Format.J: {"rd": "a", "target": "imm14"},
    Format.D: {"d": "a", "ra": "b", "imm": "imm18"},
    Format.V: {"dd": "a", "da": "b", "db": "c", "rs": "d", "shift": "imm6"},
}
_REGISTER_TOKENS = {"rd", "rs", "ra", "rb"}
_DESCRIPTOR_TOKENS = {"d", "dd", "da", "db"}
REDUCTIONS = ("sum", "max")
_PACKABLE = " and ".join(sorted(PACKABLE, key=lambda name: BY_NAME[name].code))


def operand_names(opcode, optional=True):
    """The operand names of ``opcode`` in builder order: assembly order with a memory operand
    ``imm(ra)`` as two, e.g. ``ld`` takes ['rd', 'imm', 'ra']; optional operands (``rs`` and
    ``shift`` of ``vlut dd, da, db[, rs[, shift]]``) only with ``optional``."""
    names = []
    tokens = opcode.operands if optional else opcode.operands[:opcode.required]
    for token in tokens:
        names.extend(["imm", "ra"] if token == "imm(ra)" else [token])
    return names


def operand_count(opcode):
    """How many operands ``opcode`` takes, as text for error messages: '3', '3 or 4', or
    '3 to 5'."""
    least, most = len(operand_names(opcode, optional=False)), len(operand_names(opcode))
    if least == most:
        return str(most)
    return f"{least} or {most}" if most == least + 1 else f"{least} to {most}"


def parse_register(value, what="register"):
    """A register number from 3 or "r3"; ValueError naming the problem otherwise."""
    return _parse_indexed(value, "r", NUM_REGISTERS, what)


def parse_descriptor(value, what="descriptor"):
    return _parse_indexed(value, "d", NUM_DESCRIPTORS, what)


def _parse_indexed(value, prefix, count, what):
    given = value
    if isinstance(value, str):
        text = value.strip().lower()
        if not (text.startswith(prefix) and text[1:].isdigit()):
            raise ValueError(f"{what} must be {prefix}0..{prefix}{count - 1}, not {given!r}")
        value = int(text[1:])
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
        raise ValueError(f"{what} must be {prefix}0..{prefix}{count - 1}, not {given!r}")
    return value


@dataclass
class _Pending:
    """An instruction whose label and symbol operands are resolved when the image is built."""
    name: str
    fields: dict
    symbolic: dict       # field -> (label or symbol name, offset)
    location: Location


class CoreBuilder:
    """The program of one core (or of many cores running the same code): instructions with
    labels, and SRAM data with named allocations.

    ``name`` appears in error messages and source locations."""

    def __init__(self, name="core"):
        self.name = name
        self._code = []
        self._labels = {}
        self._label_locations = {}
        self._data = {}
        self._symbols = {}
        self._sizes = {}
        self._reserved = {}       # address -> words reserved by alloc without contents
        self._next_free = 0

    # Labels and data -------------------------------------------------------------------------

    def label(self, name, location=None):
        """Mark the address of the next instruction as ``name``."""
        location = location or self._here()
        if not isinstance(name, str) or not name.isidentifier():
            raise AssemblyError(location, f"label {name!r} is not a name")
        if name in self._labels:
            raise AssemblyError(location, f"label {name!r} is already defined at "
                                          f"{self._label_locations[name]}")
        if name in self._symbols:
            raise AssemblyError(location, f"{name!r} is already the name of data")
        self._labels[name] = len(self._code)
        self._label_locations[name] = location
        return name

    @property
    def pc(self):
        """The address the next instruction will have."""
        return len(self._code)

    def data(self, address, words, name=None, location=None):
        """Put ``words`` (ints or an integer array; negative values as two's complement) into
        SRAM from ``address``."""
        location = location or self._here()
        words = _words(words, location)
        _check_segment({**self._data, **self._reserved}, address, len(words), location)
        self._data[address] = words
        if name is not None:
            self._define_symbol(name, address, location, len(words))
        self._next_free = max(self._next_free, address + len(words))
        return address

    def alloc(self, name, size_or_words, location=None):
        """Reserve SRAM after everything allocated so far: ``size_or_words`` words of zeros, or
        the given words. Returns the address, and ``name`` becomes a symbol for it."""
        location = location or self._here()
        address = self._next_free
        if isinstance(size_or_words, int) and not isinstance(size_or_words, bool):
            if size_or_words < 0:
                raise AssemblyError(location, f"cannot reserve {size_or_words} words")
            self._define_symbol(name, address, location, size_or_words)
            self._reserved[address] = range(size_or_words)   # only its length matters
            self._next_free += size_or_words
            return address
        return self.data(address, size_or_words, name=name, location=location)

    def symbol(self, name):
        """The SRAM address of data ``name``."""
        return self._symbols[name]

    def _define_symbol(self, name, address, location, size):
        if not isinstance(name, str) or not name.isidentifier():
            raise AssemblyError(location, f"data name {name!r} is not a name")
        if name in self._symbols or name in self._labels:
            raise AssemblyError(location, f"{name!r} is already defined")
        self._symbols[name] = address
        self._sizes[name] = size

    # Instructions ----------------------------------------------------------------------------

    def emit(self, name, *operands, reduce=None, acc=False, pack=False, location=None):
        """Append instruction ``name`` with ``operands`` in assembly order (optional operands
        may be left out: they are zero). ``reduce`` ("sum" or "max"), ``acc`` and ``pack``
        apply to vector instructions (see docs/ISA.md): ``acc`` with ``reduce`` starts the
        reduction from rd, ``acc`` alone adds every result to the old dd[i] (dd a memory
        vector, operand b not one: the core checks that at run time); ``pack`` (vreq, vlut)
        packs the results' low bytes four to a word of dd, as vpack does."""
        location = location or self._here()
        opcode = BY_NAME.get(name)
        if opcode is None:
            raise AssemblyError(location, f"unknown instruction {name!r}")
        names = operand_names(opcode)
        if not len(operand_names(opcode, optional=False)) <= len(operands) <= len(names):
            raise AssemblyError(location, f"{name} takes {operand_count(opcode)} operand(s) "
                                          f"({opcode.syntax or 'none'}), not {len(operands)}")
        fields, symbolic = {}, {}
        token_fields = _TOKEN_FIELDS[opcode.format]
        if reduce is not None:
            if name not in REDUCIBLE:
                raise AssemblyError(location, f"{name} cannot reduce")
            if reduce not in REDUCTIONS:
                raise AssemblyError(location, f"reduce must be 'sum' or 'max', not {reduce!r}")
            fields["red"] = 1
            fields["max"] = int(reduce == "max")
            fields["acc"] = int(bool(acc))
        elif acc:
            # acc alone: accumulate into the destination, dd[i] += result[i] (docs/ISA.md).
            if opcode.format is not Format.V:
                raise AssemblyError(location, f"{name}: acc applies to vector instructions only")
            if name not in REDUCIBLE:
                raise AssemblyError(location, f"{name} cannot accumulate into its destination "
                                              f"(acc is allowed where a reduction is)")
            fields["acc"] = 1
        if pack:
            if name not in PACKABLE:
                what = "always packs" if name == "vpack" else "cannot pack"
                raise AssemblyError(location, f"{name} {what}: pack is for {_PACKABLE}")
            if reduce is not None or acc:
                raise AssemblyError(location, f"{name}: pack cannot go with reduce or acc (a "
                                              f"packed word is written or sent whole)")
            fields["pack"] = 1
        for token, value in zip(names, operands):
            try:
                self._operand(opcode, token, value, token_fields, fields, symbolic,
                              reduce is not None)
            except ValueError as error:
                raise AssemblyError(location, f"{name}: {error}") from None
        try:
            encode(name, **{k: v for k, v in fields.items()})
        except EncodingError as error:
            raise AssemblyError(location, str(error)) from None
        self._code.append(_Pending(name, fields, symbolic, location))
        return self

    def _operand(self, opcode, token, value, token_fields, fields, symbolic, reducing):
        if token == "db|rs":
            if _is_register(value):
                fields["d"] = parse_register(value, "scalar operand rs")
                fields["bsc"] = 1
            else:
                fields["c"] = parse_descriptor(value, "operand db")
        elif token == "dd" and reducing:
            fields["a"] = parse_register(value, "reduction destination rd")
        elif token in _REGISTER_TOKENS:
            fields[token_fields[token]] = parse_register(value, token)
        elif token in _DESCRIPTOR_TOKENS:
            fields[token_fields[token]] = parse_descriptor(value, token)
        elif token in ("imm", "shift"):
            self._immediate(token_fields[token], value, fields, symbolic, token)
        elif token == "target":
            if isinstance(value, str):
                symbolic["imm14"] = (value, 0)
                fields["imm14"] = 0
            else:
                self._immediate("imm14", value, fields, symbolic, "target")
        else:   # pragma: no cover - the opcode table only uses the tokens above
            raise ValueError(f"operand {token!r} of {opcode.name} is not understood")

    def _immediate(self, field, value, fields, symbolic, what):
        if isinstance(value, str):
            symbolic[field] = (value, 0)
            fields[field] = 0
        elif isinstance(value, int) and not isinstance(value, bool):
            fields[field] = value
        else:
            raise ValueError(f"{what} must be an integer or a name, not {value!r}")

    def _here(self):
        """The caller's location: the first frame outside this module (the Python line that
        built the instruction), so that errors and trap reports point at the program."""
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename == __file__:
            frame = frame.f_back
        if frame is None:
            return Location(self.name)
        return Location(os.path.relpath(frame.f_code.co_filename), frame.f_lineno)

    # Pseudo-instructions and descriptor set-up ------------------------------------------------

    def li(self, rd, value, location=None):
        """rd = value (any 32-bit integer): addi, or lui then ori."""
        location = location or self._here()
        if not isinstance(value, int) or isinstance(value, bool) \
                or not -(1 << 31) <= value < (1 << 32):
            raise AssemblyError(location, f"li: {value!r} is not a 32-bit integer")
        if -(1 << 17) <= value < (1 << 17):
            return self.emit("addi", rd, 0, value, location=location)
        value &= 0xFFFFFFFF
        self.emit("lui", rd, value >> 14, location=location)
        if value & 0x3FFF:
            self.emit("ori", rd, rd, value & 0x3FFF, location=location)
        return self

    def mov(self, rd, ra, location=None):
        return self.emit("addi", rd, ra, 0, location=location)

    def nop(self, location=None):
        return self.emit("add", 0, 0, 0, location=location)

    def jmp(self, target, location=None):
        return self.emit("beq", 0, 0, target, location=location)

    def mem_vector(self, d, base, length, stride=1, location=None):
        """d = the memory vector sram[base + i * stride], i < length (3 instructions)."""
        self.emit("dmem", d, 0, base, location=location)
        self.emit("dlen", d, 0, length, location=location)
        return self.emit("dstride", d, 0, stride, location=location)

    def fabric_in(self, d, color, length, location=None):
        """d = ``length`` wavelets of ``color`` from the fabric (2 instructions)."""
        self.emit("dfin", d, 0, color, location=location)
        return self.emit("dlen", d, 0, length, location=location)

    def fabric_out(self, d, color, length, location=None):
        """d = ``length`` wavelets sent on ``color`` (2 instructions)."""
        self.emit("dfout", d, 0, color, location=location)
        return self.emit("dlen", d, 0, length, location=location)

    # The image --------------------------------------------------------------------------------

    def image(self):
        """The :class:`mesh.CoreImage`: labels and data names resolved, source locations kept."""
        words, source = [], []
        for pending in self._code:
            fields = dict(pending.fields)
            for field, (name, offset) in pending.symbolic.items():
                if field == "imm14":
                    if name not in self._labels:
                        raise AssemblyError(pending.location, f"{pending.name}: undefined "
                                                              f"label {name!r}")
                    fields[field] = self._labels[name] + offset
                else:
                    if name in self._symbols:
                        fields[field] = self._symbols[name] + offset
                    elif name in self._labels:
                        fields[field] = self._labels[name] + offset
                    else:
                        raise AssemblyError(pending.location, f"{pending.name}: undefined name "
                                                              f"{name!r}")
            try:
                words.append(encode(pending.name, **fields))
            except EncodingError as error:
                raise AssemblyError(pending.location, str(error)) from None
            source.append(str(pending.location))
        symbols = dict(self._symbols)
        symbols.update(self._labels)
        return CoreImage(instructions=tuple(words), sram=dict(self._data),
                         source=tuple(source), symbols=symbols,
                         data={name: (address, self._sizes[name])
                               for name, address in self._symbols.items()})


def _words(words, location):
    """``words`` as a uint32 array, or an AssemblyError naming the first bad one."""
    try:
        array = np.asarray(words)
    except (TypeError, ValueError):
        array = np.asarray(list(words), dtype=object)
    if array.ndim != 1:
        array = array.reshape(-1) if array.dtype.kind in "iu" else array
    if array.dtype.kind not in "iu" or (array.size and (
            array.min() < -(1 << 31) or array.max() >= (1 << 32))):
        for offset, word in enumerate(array.tolist()):
            if not isinstance(word, int) or isinstance(word, bool) \
                    or not -(1 << 31) <= word < (1 << 32):
                raise AssemblyError(location, f"data word {offset} ({word!r}) is not a 32-bit "
                                              f"integer")
    return (array.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _check_segment(segments, address, length, location):
    """Refuse a segment at a bad address or overlapping one already in ``segments``."""
    if not isinstance(address, (int, np.integer)) or isinstance(address, bool) or address < 0:
        raise AssemblyError(location, f"data address {address!r} is not a non-negative integer")
    for start, words in segments.items():
        if start < address + length and address < start + len(words):
            raise AssemblyError(location, f"SRAM words {max(start, address)}.."
                                          f"{min(start + len(words), address + length) - 1} "
                                          f"are already initialized or reserved")


def _is_register(value):
    return isinstance(value, str) and value.strip().lower().startswith("r")


def _method(opcode):
    def method(self, *operands, reduce=None, acc=False, pack=False, location=None):
        return self.emit(opcode.name, *operands, reduce=reduce, acc=acc, pack=pack,
                         location=location)
    method.__name__ = _method_name(opcode.name)
    method.__doc__ = (f"``{opcode.name} {opcode.syntax}``: {opcode.semantics} "
                      f"Cycles: {opcode.cycles}.")
    return method


def _method_name(name):
    return name + "_" if keyword.iskeyword(name) else name


for _opcode in OPCODES:
    setattr(CoreBuilder, _method_name(_opcode.name), _method(_opcode))


class MeshBuilder:
    """Places core programs on tiles and holds the route table of a whole mesh.

    ``routes`` is a :class:`mesh.RouteTable` to fill in (its helpers build common patterns)."""

    def __init__(self, config, name="program"):
        self.config = config
        self.name = name
        self.routes = RouteTable(config)
        self._placed = {}
        self._tile_data = {}

    def place(self, core, tiles):
        """Run ``core`` (a :class:`CoreBuilder`) on each tile of ``tiles`` ((x, y) pairs)."""
        if not isinstance(core, CoreBuilder):
            raise TypeError(f"core must be a CoreBuilder, not {core!r}")
        for x, y in tiles:
            self.config.check_tile(x, y)
            if (x, y) in self._placed:
                raise ConfigError(f"{self.name}: tile ({x},{y}) already runs "
                                  f"{self._placed[(x, y)].name!r}")
            self._placed[(x, y)] = core
        return core

    def data(self, x, y, address, words):
        """Tile-specific SRAM contents on top of the program placed on (x, y): the same code
        can run on many tiles, each with its own data. Returns ``address``."""
        self.config.check_tile(x, y)
        location = Location(f"{self.name}: tile ({x},{y})")
        segments = self._tile_data.setdefault((x, y), {})
        words = _words(words, location)
        _check_segment(segments, address, len(words), location)
        segments[address] = words
        return address

    def core(self, x, y, name=None):
        """A new :class:`CoreBuilder` placed on tile (x, y)."""
        return self.place(CoreBuilder(name or f"{self.name}@({x},{y})"), [(x, y)])

    def all_tiles(self):
        return [(x, y) for y in range(self.config.height) for x in range(self.config.width)]

    def build(self):
        """The :class:`mesh.MeshProgram` (routes validated; tiles without a program halt)."""
        images, cache = {}, {}
        for tile, core in self._placed.items():
            if id(core) not in cache:
                cache[id(core)] = core.image()
            images[tile] = cache[id(core)]
        for tile, segments in self._tile_data.items():
            if tile not in images:
                raise ConfigError(f"{self.name}: tile {tile} has data but no program")
            image = images[tile]
            for address, words in segments.items():
                _check_segment(image.sram, address, len(words),
                               Location(f"{self.name}: tile {tile}"))
            images[tile] = replace(image, sram={**image.sram, **segments})
        return MeshProgram(self.config, images, self.routes, name=self.name)

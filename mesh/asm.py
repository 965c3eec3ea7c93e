"""A text assembly language for a whole mesh program: core programs, their data, where they run
and the routes between them, in one file. docs/ISA.md ("Assembly language") is the reference;
:data:`REFERENCE_MARKDOWN` below is its text.

The assembler parses into :mod:`mesh.builder`: every instruction becomes one
:meth:`CoreBuilder.emit` call (or a pseudo-instruction method), so operands are checked by the
same code, and every error is a :class:`mesh.builder.AssemblyError` whose location is the
``file:line:column`` of the offending token. Routes go into the builder's
:class:`mesh.RouteTable`; a route table that fails validation is reported at the line of the
directive that made the bad route.

    program = assemble_file("programs/asm/vector_add.s")
    program = assemble(text, config=MeshConfig(width=2, height=2))

``python -m mesh.asm FILE.s`` prints a listing (address, word, disassembly, source line) per core.
"""

import dataclasses
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .builder import (AssemblyError, CoreBuilder, Location, MeshBuilder, operand_count,
                      parse_descriptor, parse_register)
from .config import ConfigError, MeshConfig
from .isa import BY_NAME, PACKABLE, REDUCIBLE, EncodingError, Group, disassemble, encode
from .ports import Port
from .program import HALT_ONLY
from .routes import RouteError

__all__ = ["assemble", "assemble_file", "assemble_instruction", "listing", "AssemblyError",
           "REFERENCE_MARKDOWN", "PSEUDO_INSTRUCTIONS", "DIRECTIVES"]

# The pseudo-instructions: builder methods that expand to one or more instructions.
PSEUDO_INSTRUCTIONS = {
    "li": ("rd, value", "rd = any 32-bit value: addi, or lui then ori"),
    "mov": ("rd, ra", "rd = ra (addi rd, ra, 0)"),
    "nop": ("", "do nothing for a cycle (add r0, r0, r0)"),
    "jmp": ("target", "go to target (beq r0, r0, target)"),
    "mem_vector": ("d, base, length[, stride]",
                   "d = memory vector sram[base + i*stride], i < length (stride 1 by default): "
                   "dmem, dlen, dstride"),
    "fabric_in": ("d, color, length", "d = length wavelets received on color: dfin, dlen"),
    "fabric_out": ("d, color, length", "d = length wavelets sent on color: dfout, dlen"),
}

DIRECTIVES = {
    ".mesh": "WxH",
    ".config": "key=value ...",
    ".equ": "NAME value",
    ".core": "NAME [tiles]",
    ".place": "NAME tiles",
    ".data": "NAME word, word, ...",
    ".word": "word, word, ...",
    ".zero": "NAME count",
    ".org": "address",
    ".tiledata": "(x,y) address = word, word, ...",
    ".route": "tiles color C from PORTS to PORTS",
    ".chain": "color C tile tile ... [from PORT] [to PORT]",
    ".open": "(x,y) PORT",
}

_DATA_DIRECTIVES = {".data", ".word", ".zero", ".org"}
_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(MeshConfig)
                     if f.name not in ("width", "height"))
_REGISTER_OPERANDS = {"rd", "rs", "ra", "rb"}
_DESCRIPTOR_OPERANDS = {"d", "dd", "da", "db"}
_IMMEDIATE_FIELDS = {"imm": "imm18", "shift": "imm6", "target": "imm14"}
_SUFFIXES = ("sum", "max", "acc", "pack")
_PACKABLE = " and ".join(sorted(PACKABLE, key=lambda name: BY_NAME[name].code))
_WORD_RANGE = (-(1 << 31), (1 << 32) - 1)

_TOKEN_RE = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>[;\#].*)
  | (?P<name>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<number>[0-9][A-Za-z0-9_]*)
  | (?P<punct>\.\.|[,():=+\-*])
""", re.VERBOSE)
_NUMBER_RE = re.compile(r"0[xX](?P<hex>[0-9a-fA-F_]+)|0[bB](?P<bin>[01_]+)|0[oO](?P<oct>[0-7_]+)"
                        r"|(?P<dec>[0-9][0-9_]*)")
_REGISTER_LIKE = re.compile(r"[rRdD][0-9]+")


def assemble(text, config=None, filename="<string>"):
    """The :class:`mesh.MeshProgram` of assembly ``text``. ``config`` (a :class:`MeshConfig`)
    fixes the machine; without it, ``.mesh`` and ``.config`` build one (4x4 and the defaults
    when absent). Raises :class:`AssemblyError` at the first error."""
    return _Assembler(text, config, str(filename)).run()


def assemble_file(path, config=None):
    """:func:`assemble` on the text of file ``path`` (errors name the path as given)."""
    path = Path(path)
    return assemble(path.read_text(), config=config, filename=str(path))


def assemble_instruction(text):
    """The word of one instruction line (no labels: targets are numbers), for tools and tests:
    ``assemble_instruction(disassemble(word)) == word`` for every canonical word."""
    program = assemble(f".mesh 1x1\n.core one (0,0)\n{text}\n", filename="<instruction>")
    words = program.image(0, 0).instructions
    if len(words) != 1:
        raise ValueError(f"{text!r} is {len(words)} instructions, not one")
    return words[0]


def listing(program):
    """Readable text of an assembled program: per distinct core image, the tiles it runs on and
    every instruction (address, word, disassembly, source location)."""
    lines, seen = [], {}
    for index, image in enumerate(program.images):
        seen.setdefault(id(image), (image, []))[1].append(program.config.tile_xy(index))
    for image, tiles in seen.values():
        where = " ".join(f"({x},{y})" for x, y in tiles)
        if image is HALT_ONLY:
            lines += [f"; tiles {where}: no program (they halt)", ""]
            continue
        lines.append(f"; tiles {where}")
        for pc, word in enumerate(image.instructions):
            source = image.source[pc] if pc < len(image.source) else ""
            lines.append(f"{pc:5d}  {word:08x}  {disassemble(word):<32s}; {source}")
        lines.append("")
    return "\n".join(lines)


def _words_text(start, end, of=""):
    """'SRAM word 5 is' or 'SRAM words 5..7 are' for the range start..end-1."""
    if end - start == 1:
        return f"SRAM word {start}{of} is"
    return f"SRAM words {start}..{end - 1}{of} are"


# Lexing ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    kind: str        # "name", "number", "punct" or "end" (the end of the line)
    text: str
    location: Location

    def __str__(self):
        if self.kind == "end":
            return repr(self.text) if self.text else "the end of the line"
        return repr(self.text)


@dataclass
class _Statement:
    labels: list      # label name tokens
    head: _Token      # directive or mnemonic (None for a line with only labels)
    args: list        # the tokens after the head
    end: _Token       # the end-of-line token (for "expected ... at the end of the line")
    section: int      # index of the .core section it is in, or -1 before the first .core


@dataclass
class _Core:
    name: str
    token: _Token
    builder: CoreBuilder
    constants: dict     # name -> (value, location)
    data: dict          # name -> (address, length, location)
    segments: list      # (address, length, location, what, initialized) of all data
    labels: set
    statements: list
    placed: bool = False
    instruction_locations: list = None


@dataclass(frozen=True)
class _Label:
    """A bare label name used as an operand: the builder resolves it."""
    name: str


class _Cursor:
    """Tokens of one directive or operand, consumed left to right."""

    def __init__(self, assembler, tokens, end):
        self.asm = assembler
        self.tokens = list(tokens)
        self.end = end
        self.index = 0

    def peek(self, ahead=0):
        i = self.index + ahead
        return self.tokens[i] if i < len(self.tokens) else self.end

    def next(self):
        token = self.peek()
        self.index += 1
        return token

    def at_end(self):
        return self.index >= len(self.tokens)

    def is_punct(self, text, ahead=0):
        token = self.peek(ahead)
        return token.kind == "punct" and token.text == text

    def accept(self, text):
        if self.is_punct(text):
            return self.next()
        return None

    def expect(self, text, what=None):
        token = self.next()
        if token.kind != "punct" or token.text != text:
            self.asm.error(token, f"expected {what or repr(text)}, found {token}")
        return token

    def expect_name(self, what):
        token = self.next()
        if token.kind != "name" or token.text.startswith("."):
            self.asm.error(token, f"expected {what}, found {token}")
        return token

    def expect_keyword(self, word):
        token = self.next()
        if token.kind != "name" or token.text.lower() != word:
            self.asm.error(token, f"expected {word!r}, found {token}")
        return token

    def expect_end(self, what="the end of the line"):
        if not self.at_end():
            self.asm.error(self.peek(), f"expected {what}, found {self.peek()}")


# The assembler ----------------------------------------------------------------------------------

class _Assembler:
    def __init__(self, text, config, filename):
        if config is not None and not isinstance(config, MeshConfig):
            raise TypeError(f"config must be a mesh.MeshConfig, not {config!r}")
        self.file = filename
        self.text = text
        self.given_config = config
        self.config = None
        self.constants = {}            # global .equ: name -> value
        self.definitions = {}          # global name -> location of its definition
        self.cores = []
        self.core_by_name = {}
        self.placements = {}           # (x, y) -> (core name token, location)
        self.place_requests = []       # (core name token, [(tile, location)])
        self.route_sites = {}          # (x, y, color) -> location of the directive
        self.tile_data = []            # (.tiledata token, tile, its location, cursor at address)
        self.first_route = None

    # Errors ----------------------------------------------------------------------------------

    def error(self, where, message):
        location = where.location if isinstance(where, _Token) else where
        raise AssemblyError(location, message)

    def suggest(self, word, choices):
        close = difflib.get_close_matches(word, list(choices), n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    # Lexing ----------------------------------------------------------------------------------

    def lex(self):
        statements, section = [], -1
        for number, line in enumerate(self.text.splitlines(), start=1):
            tokens, position, last_end = [], 0, 1
            while position < len(line):
                match = _TOKEN_RE.match(line, position)
                if match is None:
                    self.error(Location(self.file, number, position + 1),
                               f"unexpected character {line[position]!r}")
                kind = match.lastgroup
                if kind == "comment":
                    break
                if kind != "space":
                    tokens.append(_Token(kind, match.group(),
                                         Location(self.file, number, position + 1)))
                    last_end = match.end() + 1
                position = match.end()
            end = _Token("end", "", Location(self.file, number, last_end))
            if not tokens:
                continue
            labels, i = [], 0
            while i + 1 < len(tokens) and tokens[i].kind == "name" \
                    and not tokens[i].text.startswith(".") and tokens[i + 1].text == ":":
                labels.append(tokens[i])
                i += 2
            head = tokens[i] if i < len(tokens) else None
            if head is not None and head.kind != "name":
                self.error(head, f"expected an instruction, a directive or a label, found {head}")
            if head is not None and head.text.lower() == ".core":
                section += 1
            statements.append(_Statement(labels, head, tokens[i + 1:], end, section))
        return statements

    # Numbers, names and expressions ----------------------------------------------------------

    def number(self, token):
        match = _NUMBER_RE.fullmatch(token.text)
        if match is None or match.group().endswith("_"):
            self.error(token, f"bad number {token.text!r}: numbers are decimal (42), hex (0x2a), "
                              f"binary (0b101010) or octal (0o52)")
        for group, base in (("hex", 16), ("bin", 2), ("oct", 8), ("dec", 10)):
            if match.group(group) is not None:
                return int(match.group(group).replace("_", ""), base)

    def check_new_name(self, token, what, core=None):
        """A name being defined: not a register, not already defined in its scope."""
        name = token.text
        if token.kind != "name" or name.startswith(".") or "." in name:
            self.error(token, f"expected {what}, found {token}")
        if _REGISTER_LIKE.fullmatch(name):
            self.error(token, f"{name!r} is a register or descriptor name; choose another name "
                              f"for the {what}")
        previous = self.definitions.get(name)
        if core is not None:
            if name in core.constants:
                previous = core.constants[name][1]
            elif name in core.data:
                previous = core.data[name][2]
            elif name in core.labels:
                self.error(token, f"{name!r} is also a label of core {core.name!r}")
        if previous is not None:
            self.error(token, f"{name!r} is already defined at {previous}")
        return name

    def parse_expression(self, cursor):
        """expression := term (('+' | '-') term)*; term := unary ('*' unary)*;
        unary := '-' unary | primary; primary := number | name | '(' expression ')'."""
        node = self.parse_term(cursor)
        while cursor.is_punct("+") or cursor.is_punct("-"):
            op = cursor.next()
            node = ("binary", op, node, self.parse_term(cursor))
        return node

    def parse_term(self, cursor):
        node = self.parse_unary(cursor)
        while cursor.is_punct("*"):
            op = cursor.next()
            node = ("binary", op, node, self.parse_unary(cursor))
        return node

    def parse_unary(self, cursor):
        if cursor.is_punct("-") or cursor.is_punct("+"):
            op = cursor.next()
            return ("negate" if op.text == "-" else "plus", op, self.parse_unary(cursor))
        token = cursor.next()
        if token.kind == "number":
            return ("number", token, self.number(token))
        if token.kind == "name" and not token.text.startswith("."):
            return ("name", token, token.text)
        if token.kind == "punct" and token.text == "(":
            node = self.parse_expression(cursor)
            cursor.expect(")", "')'")
            return node
        self.error(token, f"expected a value (a number, a constant, a data name or a label), "
                          f"found {token}")

    def lookup(self, token, core):
        """The value of a name: a constant, the address of data, or a _Label."""
        name = token.text
        if core is not None:
            if name in core.constants:
                return core.constants[name][0]
            if name in core.data:
                return core.data[name][0]
        if name in self.constants:
            return self.constants[name]
        if core is not None and name in core.labels:
            return _Label(name)
        if _REGISTER_LIKE.fullmatch(name):
            self.error(token, f"expected a value, found register or descriptor {name!r}")
        known = set(self.constants) | (set(core.constants) | set(core.data) | core.labels
                                       if core is not None else set())
        kinds = "a label, data name or constant" if core is not None else "a constant"
        self.error(token, f"undefined name {name!r}: not {kinds}{self.suggest(name, known)}")

    def evaluate(self, node, core, allow_label=False):
        kind, token = node[0], node[1]
        if kind == "number":
            return node[2]
        if kind == "name":
            value = self.lookup(token, core)
            if isinstance(value, _Label) and not allow_label:
                self.error(token, f"label {value.name!r} cannot be used here: a label stands "
                                  f"alone as a branch target or immediate (no arithmetic)")
            return value
        if kind == "negate":
            return -self.evaluate(node[2], core)
        if kind == "plus":
            return self.evaluate(node[2], core)
        left, right = self.evaluate(node[2], core), self.evaluate(node[3], core)
        return {"+": left + right, "-": left - right, "*": left * right}[token.text]

    def value(self, cursor, core, what="a value", allow_label=False):
        """Parse and evaluate one expression from ``cursor``."""
        if cursor.at_end():
            self.error(cursor.peek(), f"expected {what}, found {cursor.peek()}")
        return self.evaluate(self.parse_expression(cursor), core, allow_label)

    def operand_value(self, tokens, end, core, what, allow_label=False):
        """An operand that is exactly one expression."""
        cursor = _Cursor(self, tokens, end)
        value = self.value(cursor, core, what, allow_label)
        if not cursor.at_end():
            self.error(cursor.peek(), f"unexpected {cursor.peek()} after {what}")
        return value

    def comma_values(self, cursor, core, what):
        """One or more expressions separated by commas, to the end of the line; returns
        [(value, first token)]."""
        values = []
        while True:
            token = cursor.peek()
            values.append((self.value(cursor, core, what), token))
            if cursor.at_end():
                return values
            cursor.expect(",", "',' between values")

    # Tiles and ports -------------------------------------------------------------------------

    def parse_tiles(self, cursor, core, stop=()):
        """Tiles: '(x,y)' items, 'all', and rectangles 'x=A..B y=C..D' (an axis left out means
        all of it; ranges are inclusive and may run downward). Returns [(tile, location)]."""
        tiles = []
        while not cursor.at_end():
            token = cursor.peek()
            if token.kind == "name":
                word = token.text.lower()
                tile_word = word == "all" or word in ("x", "y") and cursor.is_punct("=", 1)
                if word in stop or tiles and not tile_word:
                    break       # the next part of the directive
            if cursor.accept(","):
                continue
            if cursor.is_punct("("):
                cursor.next()
                x = self.value(cursor, core, "the tile's x")
                cursor.expect(",", "',' between x and y")
                y = self.value(cursor, core, "the tile's y")
                cursor.expect(")", "')' after the tile")
                tiles.append(((x, y), token.location))
            elif token.kind == "name" and token.text.lower() == "all":
                cursor.next()
                tiles += [((x, y), token.location) for y in range(self.config.height)
                          for x in range(self.config.width)]
            elif token.kind == "name" and token.text.lower() in ("x", "y") \
                    and cursor.is_punct("=", 1):
                ranges = {}
                while cursor.peek().kind == "name" and cursor.peek().text.lower() in ("x", "y") \
                        and cursor.is_punct("=", 1):
                    axis = cursor.next()
                    if axis.text.lower() in ranges:
                        self.error(axis, f"{axis.text}= is given twice for one rectangle")
                    cursor.next()
                    low = self.value(cursor, core, f"the first {axis.text}")
                    high = self.value(cursor, core, f"the last {axis.text}") \
                        if cursor.accept("..") else low
                    step = 1 if high >= low else -1
                    ranges[axis.text.lower()] = range(low, high + step, step)
                xs = ranges.get("x", range(self.config.width))
                ys = ranges.get("y", range(self.config.height))
                tiles += [((x, y), token.location) for y in ys for x in xs]
            else:
                self.error(token, f"expected a tile: '(x,y)', 'all', or 'x=A..B y=C..D', "
                                  f"found {token}")
        for (x, y), location in tiles:
            if not self.config.on_mesh(x, y):
                self.error(location, f"tile ({x},{y}) is outside the {self.config.shape} mesh "
                                     f"(x 0..{self.config.width - 1}, y "
                                     f"0..{self.config.height - 1})")
        return tiles

    def port(self, cursor):
        token = cursor.next()
        if token.kind != "name":
            self.error(token, f"expected a port (N, E, S, W or RAMP), found {token}")
        try:
            return Port.parse(token.text)
        except ValueError:
            self.error(token, f"unknown port {token.text!r}; expected one of N, E, S, W, RAMP")

    def parse_port(self, cursor):
        """Exactly one port."""
        port = self.port(cursor)
        if cursor.is_punct(","):
            self.error(cursor.peek(1), f"expected one port here, found a second one: "
                                       f"{cursor.peek(1)}")
        return port

    def parse_ports(self, cursor):
        """One or more ports separated by commas."""
        ports = [self.port(cursor)]
        while cursor.accept(","):
            ports.append(self.port(cursor))
        return ports

    # Passes ----------------------------------------------------------------------------------

    def run(self):
        statements = self.lex()
        self.read_config(statements)
        self.mesh = MeshBuilder(self.config, name=self.program_name())
        current = None
        for statement in statements:
            if statement.head is not None and statement.head.text.lower() == ".core":
                current = self.start_core(statement, statements)
            else:
                self.statement(statement, current)
        for core in self.cores:
            self.check_imem(core)
        self.place_cores()
        self.apply_tile_data()
        self.check_routes()
        try:
            return self.mesh.build()
        except AssemblyError:
            raise
        except ConfigError as error:   # pragma: no cover - every case is checked above
            raise AssemblyError(Location(self.file), str(error)) from None

    def program_name(self):
        return "program" if self.file.startswith("<") else Path(self.file).stem

    def read_config(self, statements):
        """.mesh and .config, wherever they are (once each)."""
        seen = {}
        shape, values = None, {}
        for statement in statements:
            head = statement.head
            if head is None or head.text.lower() not in (".mesh", ".config"):
                continue
            directive = head.text.lower()
            if directive in seen:
                self.error(head, f"{directive} is given twice (first at {seen[directive]})")
            seen[directive] = head.location
            cursor = _Cursor(self, statement.args, statement.end)
            if directive == ".mesh":
                token = cursor.next()
                match = re.fullmatch(r"([0-9]+)[xX]([0-9]+)", token.text)
                if match is None:
                    self.error(token, f"expected the mesh shape WxH (e.g. 4x4), found {token}")
                shape = (int(match.group(1)), int(match.group(2)), token)
                cursor.expect_end()
            else:
                if cursor.at_end():
                    self.error(cursor.peek(), f"expected key=value with a key from "
                                              f"{', '.join(_CONFIG_KEYS)}")
                while not cursor.at_end():
                    key = cursor.expect_name("a configuration key")
                    if key.text not in _CONFIG_KEYS:
                        hint = " (the shape is set by .mesh WxH)" \
                            if key.text in ("width", "height") else \
                            self.suggest(key.text, _CONFIG_KEYS)
                        self.error(key, f"unknown configuration key {key.text!r}: expected one "
                                        f"of {', '.join(_CONFIG_KEYS)}{hint}")
                    if key.text in values:
                        self.error(key, f"{key.text} is given twice")
                    cursor.expect("=", "'=' after the key")
                    number = cursor.next()
                    if number.kind != "number":
                        self.error(number, f"expected a number for {key.text}, found {number}")
                    values[key.text] = (self.number(number), key)
        if self.given_config is not None:
            config = self.given_config
            if shape is not None and (shape[0], shape[1]) != (config.width, config.height):
                self.error(shape[2], f".mesh {shape[0]}x{shape[1]} does not match the "
                                     f"{config.shape} mesh this program is assembled for")
            for key, (value, token) in values.items():
                if getattr(config, key) != value:
                    self.error(token, f".config {key}={value} does not match the configuration "
                                      f"this program is assembled for "
                                      f"({key}={getattr(config, key)})")
            self.config = config
            return
        kwargs = {key: value for key, (value, _) in values.items()}
        if shape is not None:
            kwargs.update(width=shape[0], height=shape[1])
        try:
            self.config = MeshConfig(**kwargs)
        except ConfigError as error:
            message = str(error)
            culprit = next((token for key, (_, token) in values.items()
                            if message.startswith(key)), shape[2] if shape else None)
            self.error(culprit.location if culprit else Location(self.file), message)

    def start_core(self, statement, statements):
        cursor = _Cursor(self, statement.args, statement.end)
        token = cursor.expect_name("the core's name after .core")
        name = token.text
        if name in self.core_by_name:
            self.error(token, f"core {name!r} is already defined at "
                              f"{self.core_by_name[name].token.location}")
        if _REGISTER_LIKE.fullmatch(name):
            self.error(token, f"{name!r} is a register or descriptor name; choose another name "
                              f"for the core")
        section = len(self.cores)
        if statement.labels:
            self.error(statement.labels[0], "a label marks an instruction, not a directive")
        core = _Core(name=name, token=token, builder=CoreBuilder(name), constants={}, data={},
                     segments=[], labels=set(),
                     statements=[s for s in statements if s.section == section],
                     instruction_locations=[])
        self.cores.append(core)
        self.core_by_name[name] = core
        for s in core.statements:
            for label in s.labels:
                core.labels.add(label.text)
        if not cursor.at_end():
            self.place_requests.append((token, self.parse_tiles(cursor, None)))
        self.read_data(core)
        return core

    def read_data(self, core):
        """The .equ and data directives of a core's section, in order, before its code: code
        may use data defined anywhere in the section. Data goes to the builder as one segment
        per .data and the .word lines that continue it."""
        pointer = 0
        state = {"pending": None, "high": 0}   # the segment being collected; builder's next free

        def flush():
            pending = state["pending"]
            if pending is None:
                return
            address, words, name, location = pending
            if address == state["high"] and name is not None:
                core.builder.alloc(name, words, location=location)
            else:
                core.builder.data(address, words, name=name, location=location)
            state["high"] = max(state["high"], address + len(words))
            state["pending"] = None

        for statement in core.statements:
            head = statement.head
            if head is None:
                continue
            directive = head.text.lower()
            cursor = _Cursor(self, statement.args, statement.end)
            if directive == ".equ":
                self.define_constant(statement, core)
            elif directive == ".org":
                flush()
                pointer = self.value(cursor, core, "an SRAM address")
                cursor.expect_end()
                if not 0 <= pointer < self.config.sram_words:
                    self.error(statement.args[0], f".org {pointer} is outside the SRAM "
                                                  f"(0..{self.config.sram_words - 1})")
            elif directive == ".zero":
                flush()
                name_token = cursor.expect_name("the data's name after .zero")
                name = self.check_new_name(name_token, "data name", core)
                count_token = cursor.peek()
                count = self.value(cursor, core, "the number of words")
                cursor.expect_end()
                if count < 1:
                    self.error(count_token, f".zero needs at least 1 word, not {count}")
                self.reserve(core, head, name, pointer, count, False)
                if pointer == state["high"]:
                    core.builder.alloc(name, count, location=head.location)
                else:
                    core.builder.data(pointer, [0] * count, name=name, location=head.location)
                state["high"] = max(state["high"], pointer + count)
                core.data[name] = (pointer, count, head.location)
                pointer += count
            elif directive in (".data", ".word"):
                name = None
                if directive == ".data":
                    name_token = cursor.expect_name("the data's name after .data")
                    name = self.check_new_name(name_token, "data name", core)
                values = self.comma_values(cursor, core, "a data word")
                for word, token in values:
                    if not _WORD_RANGE[0] <= word <= _WORD_RANGE[1]:
                        self.error(token, f"data word {word} is not a 32-bit integer "
                                          f"({_WORD_RANGE[0]}..{_WORD_RANGE[1]})")
                words = [word for word, _ in values]
                self.reserve(core, head, name, pointer, len(words), True)
                pending = state["pending"]
                if directive == ".word" and pending is not None \
                        and pending[0] + len(pending[1]) == pointer:
                    pending[1].extend(words)
                    if pending[2] is not None:
                        start, length, location = core.data[pending[2]]
                        core.data[pending[2]] = (start, length + len(words), location)
                else:
                    flush()
                    state["pending"] = (pointer, words, name, head.location)
                    if name is not None:
                        core.data[name] = (pointer, len(words), head.location)
                pointer += len(words)
        flush()

    def reserve(self, core, head, name, address, count, initialized):
        end = address + count
        if end > self.config.sram_words:
            self.error(head, f"{head.text} needs SRAM words {address}..{end - 1}, but the SRAM "
                             f"has {self.config.sram_words} words "
                             f"(0..{self.config.sram_words - 1})")
        for start, length, location, what, _ in core.segments:
            if start < end and address < start + length:
                used = _words_text(max(start, address), min(end, start + length))
                self.error(head, f"{used} already used by {what} (at {location})")
        what = repr(name) if name else "unnamed data"
        core.segments.append((address, count, head.location, what, initialized))

    def define_constant(self, statement, core):
        cursor = _Cursor(self, statement.args, statement.end)
        token = cursor.expect_name("the constant's name after .equ")
        name = self.check_new_name(token, "constant name", core)
        if core is not None and name in core.labels:
            self.error(token, f"{name!r} is also a label of core {core.name!r}")
        if not cursor.accept(","):
            cursor.accept("=")
        value = self.value(cursor, core, "the constant's value")
        cursor.expect_end()
        if core is None:
            self.constants[name] = value
            self.definitions[name] = token.location
        else:
            core.constants[name] = (value, token.location)

    def statement(self, statement, core):
        head = statement.head
        if statement.labels and core is None:
            self.error(statement.labels[0], "a label belongs to a core's code: start a section "
                                            "with .core NAME first")
        if statement.labels and head is not None and head.text.startswith("."):
            self.error(statement.labels[0], "a label marks an instruction, not a directive "
                                            "(data is named by .data NAME or .zero NAME)")
        for label in statement.labels:
            name = label.text
            if _REGISTER_LIKE.fullmatch(name):
                self.error(label, f"{name!r} is a register or descriptor name; choose another "
                                  f"name for the label")
            if name in self.constants or name in core.constants:
                self.error(label, f"{name!r} is already a constant")
            core.builder.label(name, location=label.location)
        if head is None:
            return
        text = head.text.lower()
        if text.startswith("."):
            self.directive(statement, core, text)
        elif core is None:
            self.error(head, f"instruction {head.text!r} is outside a core's code: start a "
                             f"section with .core NAME first")
        else:
            before = core.builder.pc
            self.instruction(statement, core)
            core.instruction_locations += [head.location] * (core.builder.pc - before)

    def directive(self, statement, core, text):
        head = statement.head
        cursor = _Cursor(self, statement.args, statement.end)
        if text in (".mesh", ".config"):
            return
        if text == ".equ":
            if core is None:
                self.define_constant(statement, None)
            return
        if text in _DATA_DIRECTIVES:
            if core is None:
                self.error(head, f"{text} puts data in a core's SRAM: start a section with "
                                 f".core NAME first")
            return
        if text == ".place":
            name = cursor.expect_name("the name of a core after .place")
            tiles = self.parse_tiles(cursor, core)
            if not tiles:
                self.error(cursor.peek(), "expected tiles to place the core on: '(x,y)', 'all' "
                                          "or 'x=A..B y=C..D'")
            self.place_requests.append((name, tiles))
        elif text == ".route":
            tiles = self.parse_tiles(cursor, core, stop=("color",))
            if not tiles:
                self.error(cursor.peek(), f"expected the tiles of the route, found "
                                          f"{cursor.peek()}")
            cursor.expect_keyword("color")
            color = self.value(cursor, core, "the route's color")
            cursor.expect_keyword("from")
            inputs = self.parse_ports(cursor)
            cursor.expect_keyword("to")
            outputs = self.parse_ports(cursor)
            cursor.expect_end()
            for (x, y), _ in tiles:
                self.route(head, x, y, color, lambda: self.mesh.routes.set(
                    x, y, color, inputs=inputs, outputs=outputs))
        elif text == ".chain":
            cursor.expect_keyword("color")
            color = self.value(cursor, core, "the chain's color")
            tiles = self.parse_tiles(cursor, core, stop=("from", "to"))
            source = sink = Port.RAMP
            if cursor.peek().kind == "name" and cursor.peek().text.lower() == "from":
                cursor.next()
                source = self.parse_port(cursor)
            if cursor.peek().kind == "name" and cursor.peek().text.lower() == "to":
                cursor.next()
                sink = self.parse_port(cursor)
            cursor.expect_end("'from PORT', 'to PORT' or the end of the line")
            if not tiles:
                self.error(head, ".chain needs at least one tile")
            path = [tile for tile, _ in tiles]
            self.route(head, path[0][0], path[0][1], color, lambda: self.mesh.routes.chain(
                color, path, source=source, sink=sink))
            for x, y in path:
                self.route_sites[(x, y, color)] = head.location
        elif text == ".open":
            (x, y), _ = self.parse_one_tile(cursor, core, ".open")
            port = self.parse_port(cursor)
            cursor.expect_end()
            try:
                self.mesh.routes.open_edge(x, y, port)
            except RouteError as error:
                self.error(head, str(error))
        elif text == ".tiledata":
            tile, location = self.parse_one_tile(cursor, core, ".tiledata")
            self.tile_data.append((head, tile, location, cursor))
        else:
            self.error(head, f"unknown directive {head.text!r}"
                             f"{self.suggest(text, DIRECTIVES)}; the directives are "
                             f"{', '.join(DIRECTIVES)}")

    def parse_one_tile(self, cursor, core, directive):
        """'(x,y)': one tile of the mesh, and its location."""
        start = cursor.next()
        if start.kind != "punct" or start.text != "(":
            self.error(start, f"expected the tile '(x,y)' after {directive}, found {start}")
        x = self.value(cursor, core, "the tile's x")
        cursor.expect(",", "',' between x and y")
        y = self.value(cursor, core, "the tile's y")
        cursor.expect(")", "')' after the tile")
        if not self.config.on_mesh(x, y):
            self.error(start, f"tile ({x},{y}) is outside the {self.config.shape} mesh "
                              f"(x 0..{self.config.width - 1}, y 0..{self.config.height - 1})")
        return (x, y), start.location

    def route(self, head, x, y, color, action):
        try:
            action()
        except (RouteError, ConfigError) as error:
            self.error(head, str(error))
        self.route_sites[(x, y, color)] = head.location
        if self.first_route is None:
            self.first_route = head.location

    # Instructions ----------------------------------------------------------------------------

    def split_operands(self, statement):
        """The operands: comma-separated token groups (commas inside parentheses do not
        separate), each with the token that ends it (the comma, or the end of the line)."""
        groups, current, depth = [], [], 0
        for token in statement.args:
            if token.kind == "punct" and token.text == "," and depth == 0:
                if not current:
                    self.error(token, "expected an operand before ','")
                groups.append((current, _Token("end", ",", token.location)))
                current = []
                continue
            if token.kind == "punct" and token.text in "()":
                depth += 1 if token.text == "(" else -1
            current.append(token)
        if current:
            groups.append((current, statement.end))
        elif groups:
            self.error(statement.end, "expected an operand after ','")
        return groups

    def instruction(self, statement, core):
        head = statement.head
        base, *suffixes = head.text.lower().split(".")
        operands = self.split_operands(statement)
        if base in PSEUDO_INSTRUCTIONS:
            if suffixes:
                self.error(head, f"{base} takes no suffixes")
            return self.pseudo(base, operands, statement, core)
        opcode = BY_NAME.get(base)
        if opcode is None:
            choices = list(BY_NAME) + list(PSEUDO_INSTRUCTIONS)
            self.error(head, f"unknown instruction {head.text!r}{self.suggest(base, choices)}")
        reduce, acc, pack = self.suffixes(head, opcode, base, suffixes)
        syntax = list(opcode.operands)
        self.check_count(head, statement, operands, syntax, opcode.syntax,
                         least=opcode.required, count=operand_count(opcode))
        args = []
        for token_name, (tokens, end) in zip(syntax, operands):
            if token_name == "imm(ra)":
                args += self.memory_operand(tokens, end, core, base)
            elif token_name in _REGISTER_OPERANDS or (token_name == "dd" and reduce):
                args.append(self.register(tokens, "rd" if token_name == "dd" else token_name))
            elif token_name == "dd" and acc and tokens[0].kind == "name" \
                    and tokens[0].text.lower().startswith("r"):
                self.error(tokens[0], f"'.acc' alone accumulates into the destination vector "
                                      f"dd (a descriptor d0..d7), not {tokens[0].text!r}; "
                                      f"'.sum.acc' adds into a register")
            elif token_name in _DESCRIPTOR_OPERANDS:
                args.append(self.descriptor(tokens, token_name))
            elif token_name == "db|rs":
                if tokens[0].kind == "name" and tokens[0].text.lower().startswith("r"):
                    args.append(self.register(tokens, "the scalar operand rs"))
                else:
                    args.append(self.descriptor(tokens, "db (or a scalar register rs)"))
            else:
                args.append(self.immediate(tokens, end, core, base,
                                           _IMMEDIATE_FIELDS[token_name], token_name))
        core.builder.emit(base, *args, reduce=reduce, acc=acc, pack=pack,
                          location=head.location)

    def suffixes(self, head, opcode, base, suffixes):
        """reduce ("sum", "max" or None), acc and pack from the suffixes of a mnemonic (.acc
        alone: accumulate into the destination descriptor; .pack: vreq and vlut pack their
        results four to a word)."""
        reduce, acc, pack = None, False, False
        for suffix in suffixes:
            if opcode.group is not Group.VECTOR:
                self.error(head, f"{base} takes no suffix: only vector instructions take .sum, "
                                 f".max, .acc or .pack")
            if suffix not in _SUFFIXES:
                self.error(head, f"unknown suffix '.{suffix}' of {base}: expected .sum, .max, "
                                 f".acc or .pack")
            if suffix == "pack":
                if base not in PACKABLE:
                    what = "always packs" if base == "vpack" else "cannot pack"
                    self.error(head, f"{base} {what}, so it takes no .pack (.pack is for "
                                     f"{_PACKABLE})")
                if pack:
                    self.error(head, "'.pack' is given twice")
                pack = True
                continue
            if base not in REDUCIBLE:
                if suffix == "acc":
                    self.error(head, f"{base} cannot reduce or accumulate, so it takes no .acc")
                self.error(head, f"{base} cannot reduce, so it takes no .{suffix}")
            if suffix == "acc":
                if acc:
                    self.error(head, "'.acc' is given twice")
                acc = True
            elif reduce is not None:
                self.error(head, f"'.{suffix}' after '.{reduce}': a reduction is either .sum or "
                                 f".max")
            else:
                reduce = suffix
        if pack and (reduce is not None or acc):
            self.error(head, f"'.pack' cannot go with '.{reduce or 'acc'}': a packed word is "
                             f"written or sent whole, not reduced or accumulated")
        return reduce, acc, pack

    def check_count(self, head, statement, operands, syntax, text, least=None, count=None):
        """The number of operands is len(syntax), or from ``least`` to it (optional ones)."""
        least = len(syntax) if least is None else least
        if least <= len(operands) <= len(syntax):
            return
        where = operands[len(syntax)][0][0] if len(operands) > len(syntax) else statement.end
        self.error(where, f"{head.text} takes {count or len(syntax)} operand(s) "
                          f"({text or 'none'}), not {len(operands)}")

    def single(self, tokens, what):
        if len(tokens) != 1 or tokens[0].kind != "name":
            self.error(tokens[0], f"expected {what}, found "
                                  f"{' '.join(t.text for t in tokens)!r}")
        return tokens[0]

    def register(self, tokens, what):
        token = self.single(tokens, f"a register r0..r15 ({what})")
        try:
            parse_register(token.text, what)
        except ValueError as error:
            self.error(token, str(error))
        return token.text.lower()

    def descriptor(self, tokens, what):
        token = self.single(tokens, f"a descriptor d0..d7 ({what})")
        try:
            parse_descriptor(token.text, what)
        except ValueError as error:
            self.error(token, str(error))
        return token.text.lower()

    def immediate(self, tokens, end, core, name, field, what):
        """An immediate operand: an int checked against ``field`` of instruction ``name`` by
        :func:`mesh.isa.encode` (the message gives the range), or a label name."""
        description = {"imm": "an immediate", "shift": "a shift amount",
                       "target": "a branch target (a label or an address)"}.get(what, what)
        value = self.operand_value(tokens, end, core, description, allow_label=True)
        if isinstance(value, _Label):
            return value.name
        try:
            encode(name, **{field: value})
        except EncodingError as error:
            self.error(tokens[0], str(error))
        return value

    def memory_operand(self, tokens, end, core, name):
        """imm(ra): an expression (optional: 0) followed by '(register)'."""
        if len(tokens) < 3 or tokens[-1].text != ")" or tokens[-3].text != "(" \
                or tokens[-2].kind != "name":
            self.error(tokens[0], f"expected a memory operand imm(ra), e.g. 4(r2) or out(r0), "
                                  f"found {' '.join(t.text for t in tokens)!r}")
        ra = self.register(tokens[-2:-1], "ra")
        if len(tokens) == 3:
            return [0, ra]
        imm = self.immediate(tokens[:-3], _Token("end", "(", tokens[-3].location), core, name,
                             "imm18", "imm")
        return [imm, ra]

    def pseudo(self, name, operands, statement, core):
        head = statement.head
        syntax = PSEUDO_INSTRUCTIONS[name][0]
        names = [t.strip(" []") for t in syntax.split(",")] if syntax else []
        if name == "mem_vector" and len(operands) not in (3, 4):
            where = operands[4][0][0] if len(operands) > 4 else statement.end
            self.error(where, f"mem_vector takes 3 or 4 operands ({syntax}), not "
                              f"{len(operands)}")
        if name != "mem_vector":
            self.check_count(head, statement, operands, names, syntax)
        b, loc = core.builder, head.location
        if name == "nop":
            b.nop(location=loc)
        elif name == "mov":
            b.mov(self.register(operands[0][0], "rd"), self.register(operands[1][0], "ra"),
                  location=loc)
        elif name == "jmp":
            b.jmp(self.immediate(*operands[0], core, "beq", "imm14", "target"), location=loc)
        elif name == "li":
            rd = self.register(operands[0][0], "rd")
            tokens, end = operands[1]
            value = self.operand_value(tokens, end, core, "a value", allow_label=True)
            if isinstance(value, _Label):
                b.addi(rd, "r0", value.name, location=loc)
            else:
                if not _WORD_RANGE[0] <= value <= _WORD_RANGE[1]:
                    self.error(tokens[0], f"li: {value} is not a 32-bit integer "
                                          f"({_WORD_RANGE[0]}..{_WORD_RANGE[1]})")
                b.li(rd, value, location=loc)
        else:
            d = self.descriptor(operands[0][0], "d")
            first = {"mem_vector": "dmem", "fabric_in": "dfin", "fabric_out": "dfout"}[name]
            values = [self.immediate(*operands[1], core, first, "imm18", names[1]),
                      self.immediate(*operands[2], core, "dlen", "imm18", names[2])]
            if name == "mem_vector":
                stride = self.immediate(*operands[3], core, "dstride", "imm18", "stride") \
                    if len(operands) == 4 else 1
                b.mem_vector(d, values[0], values[1], stride, location=loc)
            else:
                getattr(b, name)(d, values[0], values[1], location=loc)

    # The end: placement, per-tile data, instruction memory, routes -------------------------------

    def check_imem(self, core):
        count = core.builder.pc
        if count > self.config.imem_words:
            self.error(core.instruction_locations[self.config.imem_words],
                       f"core {core.name!r} has {count} instructions, but the instruction "
                       f"memory holds {self.config.imem_words} (imem_words); this is the first "
                       f"that does not fit")

    def place_cores(self):
        for name_token, tiles in self.place_requests:
            core = self.core_by_name.get(name_token.text)
            if core is None:
                self.error(name_token, f"no core is named {name_token.text!r}"
                                       f"{self.suggest(name_token.text, self.core_by_name)}")
            for tile, location in tiles:
                if tile in self.placements:
                    other, where = self.placements[tile]
                    self.error(location, f"tile ({tile[0]},{tile[1]}) already runs core "
                                         f"{other!r} (placed at {where})")
                self.placements[tile] = (core.name, location)
            self.mesh.place(core.builder, [tile for tile, _ in tiles])
            core.placed = True
        for core in self.cores:
            if not core.placed:
                self.error(core.token, f"core {core.name!r} is never placed on a tile: give "
                                       f"tiles after its name (.core {core.name} (0,0)) or add "
                                       f".place {core.name} TILES")

    def apply_tile_data(self):
        """.tiledata (x,y) address = words: per-tile SRAM words on top of the core's image."""
        for head, tile, location, cursor in self.tile_data:
            if tile not in self.placements:
                self.error(location, f"tile ({tile[0]},{tile[1]}) runs no core, so it has no "
                                     f"SRAM to put data in")
            core = self.core_by_name[self.placements[tile][0]]
            address_token = cursor.peek()
            address = self.value(cursor, core, "an SRAM address (e.g. a data name)")
            cursor.expect("=", "'=' between the address and the words")
            values = self.comma_values(cursor, core, "a data word")
            for word, token in values:
                if not _WORD_RANGE[0] <= word <= _WORD_RANGE[1]:
                    self.error(token, f"data word {word} is not a 32-bit integer "
                                      f"({_WORD_RANGE[0]}..{_WORD_RANGE[1]})")
            end = address + len(values)
            if address < 0 or end > self.config.sram_words:
                self.error(address_token, f".tiledata needs SRAM words {address}..{end - 1}, "
                                          f"but the SRAM has {self.config.sram_words} words "
                                          f"(0..{self.config.sram_words - 1})")
            for start, length, where, what, initialized in core.segments:
                if initialized and start < end and address < start + length:
                    used = _words_text(max(start, address), min(end, start + length),
                                       f" of core {core.name!r}")
                    self.error(address_token, f"{used} already initialized by {what} (at "
                                              f"{where}); per-tile data goes into .zero space")
            try:
                self.mesh.data(tile[0], tile[1], address, [w for w, _ in values])
            except AssemblyError as error:
                self.error(head, error.reason)

    def check_routes(self):
        problems = self.mesh.routes.problems()
        if not problems:
            return
        located = []
        for problem in problems:
            match = re.match(r"tile \((\d+),(\d+)\) color (\d+)", problem) \
                or re.match(r"color (\d+): .*?\((\d+),(\d+)\)", problem)
            location = None
            if match and problem.startswith("tile"):
                x, y, color = (int(g) for g in match.groups())
                location = self.route_sites.get((x, y, color))
            elif match:
                color, x, y = (int(g) for g in match.groups())
                location = self.route_sites.get((x, y, color))
            located.append((location or self.first_route or Location(self.file), problem))
        first, rest = located[0], located[1:]
        more = "".join(f"\n{location}: {problem}" for location, problem in rest)
        raise AssemblyError(first[0], f"route problem: {first[1]}{more}")


REFERENCE_MARKDOWN = """\
`mesh/asm.py` reads a whole mesh program from one text file: `assemble_file(path)` (or
`assemble(text)`) returns a `mesh.MeshProgram`. It parses into `mesh.builder`, so it checks
operands exactly as the Python builder does. Every error names the `file:line:column` of the
offending token and what was expected there. `python -m mesh.asm FILE.s` prints a listing.

**Lines.** One statement per line: optional labels (`name:`), then an instruction or a
directive. Comments start with `;` or `#` and run to the end of the line. Mnemonics, registers
and ports are case-insensitive; names are case-sensitive.

**Values.** Numbers are decimal (`42`, `-7`), hex (`0x2a`), binary (`0b101010`) or octal
(`0o52`), with optional `_` separators. Wherever a number goes you may write an expression of
numbers, constants (`.equ`) and data names (their SRAM address) with `+ - *` and parentheses:
`out + 4`, `N * 4 - 1`. A label (an instruction address) stands alone: `loop`, not `loop + 1`.

**Instructions** are written as `mesh.isa.disassemble` prints them: operands separated by
commas, a memory operand as `imm(ra)` (`ld r1, 4(r2)`, `st r1, out(r0)`, `ld r1, (r2)`),
branch targets as labels or absolute addresses. A vector instruction takes `.sum` or `.max`
to reduce into a register, plus `.acc` to start from that register (`vdot4.sum.acc r1, d0,
d1`); `.acc` alone adds each result to the destination vector: `vdot4.acc d2, d0, r3` does
d2[i] += dot4(d0[i], r3). Its operand `db|rs` is a descriptor (`vadd d2, d0, d1`) or a
register, the same scalar for every element (`vadd d2, d0, r3`). `vreq` and `vlut` take
`.pack` to pack their results four to a word as `vpack` does (`vreq.pack d1, d0, r2, 7`), and
`vlut` two optional last operands: the register added to every index (`vlut d2, d0, d1, r3`),
then a shift, which makes the index requantize(a, rs, shift) + 128 (`vlut d2, d0, d1, r3, 12`).
`vreq.acc` saturates its sum to int8 (`vreq.acc d1, d0, r2, 7`: d1 = sat8(d1 + rq(d0))).

**Pseudo-instructions** (builder methods):

| pseudo | operands | expands to |
|--------|----------|------------|
{pseudo}

**Directives.**

| directive | meaning |
|-----------|---------|
| `.mesh WxH` | the mesh shape (default 4x4). With a `config` passed to `assemble`, it must match. |
| `.config key=value ...` | other `MeshConfig` parameters: {config_keys}. |
| `.equ NAME value` | a constant; before the first `.core` it is global, after it local to that core. |
| `.core NAME [tiles]` | start the code and data of core program NAME, optionally placing it. |
| `.place NAME tiles` | run core program NAME on these tiles too. Every core must be placed; tiles without a core only halt. |
| `.data NAME w, w, ...` | words in this core's SRAM, at the next free address; NAME is their address. |
| `.word w, w, ...` | more words right after the previous data. |
| `.zero NAME count` | reserve `count` words (zero at the start of the run). |
| `.org address` | put the following data at this SRAM address. |
| `.tiledata (x,y) address = w, ...` | words for the core on one tile only (address: e.g. a `.zero` name of that core). |
| `.route tiles color C from P,P to P,P` | the route of color C at each tile: the input ports it accepts, the output ports it forwards to (ports N, E, S, W, RAMP; RAMP is the tile's core). |
| `.chain color C tile tile ... [from P] [to P]` | route C along neighbouring tiles: `RouteTable.chain` (from/to default RAMP; an edge port is opened). |
| `.open (x,y) PORT` | an external agent is attached to this edge link (`RouteTable.open_edge`). |

Tiles are `(x,y)`, `all`, or a rectangle `x=0..3 y=1` (inclusive ranges; an axis left out
means all of it; a downward range `x=3..0` runs right to left, which orders a `.chain`).

**Example** (one core adds two vectors):

```
; c = a + b over 4 words, on tile (0,0)
.mesh 1x1
.equ N 4
.core main (0,0)
.data a  1, 2, 3, 4
.data b  10, 20, 30, 40
.zero c  N
        mem_vector d0, a, N
        mem_vector d1, b, N
        mem_vector d2, c, N
        vadd d2, d0, d1        ; c[i] = a[i] + b[i]
        halt
```
"""

REFERENCE_MARKDOWN = REFERENCE_MARKDOWN.replace("{pseudo}", "\n".join(
    f"| `{name}` | {f'`{syntax}`' if syntax else '(none)'} | {meaning} |"
    for name, (syntax, meaning) in PSEUDO_INSTRUCTIONS.items())).replace(
    "{config_keys}", ", ".join(f"`{key}`" for key in _CONFIG_KEYS))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mesh.asm FILE.s", file=sys.stderr)
        return 2
    try:
        program = assemble_file(argv[0])
    except AssemblyError as error:
        print(error, file=sys.stderr)
        return 1
    print(listing(program))
    return 0


if __name__ == "__main__":
    sys.exit(main())

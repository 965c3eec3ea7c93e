"""Mesh programs that receive a delivery (docs/ARCHITECTURE.md section 12, "Delivery into the
mesh"): the routes that carry each row's words from the west edge to the region's cores, the
code with which each core keeps its N words, and a checker of the SRAMs a run leaves.

A message of w x h x N words for the region x0 .. x0 + w - 1 by y0 .. y0 + h - 1: message word
((y - y0) * w + (x - x0)) * N + k is word k of tile (x, y), stored at SRAM ``base + k``.

Usage (emulator; the RTL is the same with ``hdl.MeshDelivery`` on the mesh's west links)::

    d = delivery_program(config, Region(1, 0, 2, 2), color=3, words=4, base=16)
    mesh = MeshEmulator(d.program)
    model = DeliveryModel(config, rx.buffer)           # the packet link's receive buffer
    run = run_delivery(mesh, model, DeliveryCommand(**d.command_fields(src=0)))
    assert not d.check(run.result, rx.buffer[:d.message_words])
"""

from dataclasses import dataclass

import numpy as np

from mesh import ConfigError, Port, RouteTable
from mesh.builder import CoreBuilder, MeshBuilder

__all__ = ["Region", "Delivery", "delivery_routes", "receive_code", "delivery_program",
           "MAX_VECTOR"]

#: The longest vector a descriptor describes (16-bit lengths).
MAX_VECTOR = (1 << 16) - 1


@dataclass(frozen=True)
class Region:
    """Tiles x0 .. x0 + width - 1 by y0 .. y0 + height - 1."""
    x0: int
    y0: int
    width: int
    height: int

    def check(self, config):
        """Raise ConfigError unless the region is non-empty and inside the mesh."""
        for name in ("x0", "y0", "width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"region {name} must be a non-negative integer, not {value!r}")
        if self.width == 0 or self.height == 0:
            raise ConfigError(f"region {self} is empty")
        if self.x0 + self.width > config.width or self.y0 + self.height > config.height:
            raise ConfigError(f"region {self} reaches past the {config.shape} mesh")
        return self

    def tiles(self):
        """The region's tiles, row-major."""
        return [(x, y) for y in range(self.y0, self.y0 + self.height)
                for x in range(self.x0, self.x0 + self.width)]

    def __contains__(self, tile):
        x, y = tile
        return self.x0 <= x < self.x0 + self.width and self.y0 <= y < self.y0 + self.height


def delivery_routes(config, region, color, table=None):
    """Routes of ``color`` for a delivery into ``region`` (section 12): in each row y of the
    region the west edge of (0, y) is open, tiles 0 .. x0 - 1 forward W -> E, tiles x0 .. x0 + w
    - 2 forward W -> {RAMP, E} and the last tile of the region W -> RAMP. Filled into ``table``
    (a :class:`mesh.RouteTable`, e.g. a ``MeshBuilder``'s ``routes``) or a new one; returned."""
    region.check(config)
    config.check_color(color, where="delivery: ")
    table = RouteTable(config) if table is None else table
    last = region.x0 + region.width - 1
    for y in range(region.y0, region.y0 + region.height):
        table.open_edge(0, y, Port.W)
        for x in range(last + 1):
            if x < region.x0:
                outputs = Port.E
            elif x < last:
                outputs = {Port.RAMP, Port.E}
            else:
                outputs = Port.RAMP
            table.set(x, y, color, inputs=Port.W, outputs=outputs)
    return table


def receive_code(core, region, color, words, base, *, registers=(1, 2, 3),
                 descriptors=(0, 1, 2)):
    """Append to ``core`` (a :class:`CoreBuilder` run on the tiles of ``region``) the code that
    takes the w x ``words`` wavelets of its row on ``color``, keeps its own ``words`` at SRAM
    ``base`` and discards the others; no ``halt`` (the program goes on after it).

    The core finds its place with ``tid``: it discards (x - x0) x words wavelets with a
    ``vmov.sum`` into a scratch register, stores ``words`` with one ``vmov`` from a FIN operand to
    memory, and discards the remaining (x0 + w - 1 - x) x words. Uses the three ``registers``
    (all clobbered) and three ``descriptors``; 13 to 16 instructions."""
    if not isinstance(words, int) or isinstance(words, bool) or not 1 <= words <= MAX_VECTOR:
        raise ConfigError(f"delivery: words per tile must be 1 to {MAX_VECTOR}, not {words!r}")
    if (region.width - 1) * words > MAX_VECTOR:
        raise ConfigError(f"delivery: (width - 1) x words = {(region.width - 1) * words} "
                          f"wavelets to discard do not fit one vector ({MAX_VECTOR})")
    ra, rb, rc = registers
    skip, keep, store = descriptors
    core.tid(ra, 0)                          # ra = x
    core.addi(ra, ra, -region.x0)            # ra = x - x0
    core.li(rc, words)
    core.mul(rb, ra, rc)                     # rb = (x - x0) * N: the words before this tile's
    core.dfin(skip, 0, color)
    core.dlen(skip, rb, 0)
    core.vmov(rc, skip, reduce="sum")        # discard them
    core.fabric_in(keep, color, words)
    core.mem_vector(store, base, words)
    core.vmov(store, keep)                   # this tile's N words into SRAM
    core.li(ra, (region.width - 1) * words)
    core.sub(ra, ra, rb)                     # ra = (x0 + w - 1 - x) * N: the words after them
    core.dlen(skip, ra, 0)
    core.vmov(rc, skip, reduce="sum")        # discard them
    return core


@dataclass
class Delivery:
    """A receive program (``program``, a :class:`mesh.MeshProgram`) for a delivery of ``words``
    per tile into ``region`` on ``color``, stored at SRAM ``base``."""
    program: object
    region: Region
    color: int
    words: int
    base: int

    @property
    def message_words(self):
        return self.region.width * self.region.height * self.words

    def command_fields(self, src=0):
        """The delivery command's fields (``emulator.mesh_delivery.DeliveryCommand(**...)``, or
        the RTL's ``cmd`` members) for a message at buffer word ``src``."""
        r = self.region
        return dict(x0=r.x0, y0=r.y0, width=r.width, height=r.height, words=self.words,
                    src=src, color=self.color)

    def expected(self, message):
        """{(x, y): the words tile (x, y) must hold at ``base``} for ``message`` (the
        ``message_words`` words, uint32)."""
        message = np.asarray(message, dtype=np.uint32).reshape(-1)
        if message.size != self.message_words:
            raise ValueError(f"the message has {message.size} words, the delivery "
                             f"{self.message_words}")
        r, n = self.region, self.words
        return {(x, y): message[((y - r.y0) * r.width + (x - r.x0)) * n:][:n]
                for x, y in r.tiles()}

    def check(self, result, message):
        """Readable lines for every tile whose SRAM differs from what the delivery of
        ``message`` must leave (empty: all correct): tiles of the region hold exactly their N
        words at ``base`` and zeros elsewhere; the other tiles' SRAMs are untouched (zero)."""
        cfg = self.program.config
        expected = self.expected(message)
        problems = []
        for y in range(cfg.height):
            for x in range(cfg.width):
                want = np.zeros(cfg.sram_words, dtype=np.uint32)
                if (x, y) in expected:
                    want[self.base:self.base + self.words] = expected[(x, y)]
                got = np.asarray(result.sram[cfg.tile_index(x, y)], dtype=np.uint32)
                wrong = np.flatnonzero(got != want)
                if wrong.size:
                    a = int(wrong[0])
                    problems.append(f"tile ({x},{y}) SRAM word {a}: {int(got[a]):#x}, expected "
                                    f"{int(want[a]):#x} ({wrong.size} word(s) differ)")
        return problems


def delivery_program(config, region, color, words, base=0, name="delivery"):
    """A :class:`Delivery`: every core of ``region`` runs :func:`receive_code` and halts; the
    routes are :func:`delivery_routes`; the other tiles only halt."""
    region.check(config)
    if not isinstance(base, int) or isinstance(base, bool) or base < 0 \
            or base + words > config.sram_words:
        raise ConfigError(f"delivery: SRAM words {base}..{base + words - 1} are not inside the "
                          f"{config.sram_words}-word SRAM")
    mb = MeshBuilder(config, name)
    delivery_routes(config, region, color, table=mb.routes)
    core = CoreBuilder(f"{name}_receive")
    receive_code(core, region, color, words, base)
    core.halt()
    mb.place(core, region.tiles())
    return Delivery(mb.build(), region, color, words, base)

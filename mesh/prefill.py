"""The validated configuration of the prefill engine (docs/ARCHITECTURE.md section 11).

Memory geometry: an SBUF row is n int8 values (n bytes); a PSUM row is n int32 values, 4n bytes,
each value little-endian (byte 4j + k of the row is byte k of element j). DRAM is byte
addressed; the DMA moves whole rows between DRAM and SBUF/PSUM.
"""

from dataclasses import dataclass
from enum import IntEnum

from .config import ConfigError, _check_int

__all__ = ["DmaError", "EngineError", "DmaKind", "PrefillConfig", "Op", "VectorOp", "Command",
           "CommandError", "COMMAND_BITS", "COMMAND_FIELDS"]

MIN_N, MAX_N = 2, 32
MIN_ROWS, MAX_ROWS = 16, 65536
MIN_DRAM_BYTES, MAX_DRAM_BYTES = 1 << 10, 1 << 26


class DmaKind(IntEnum):
    """The kind of a DMA transfer (2 bits; the value 3 is not a kind and is refused)."""
    LOAD = 0          # DRAM -> SBUF, rows of n bytes
    STORE_SBUF = 1    # SBUF -> DRAM, rows of n bytes
    STORE_PSUM = 2    # PSUM -> DRAM, rows of 4n bytes (n little-endian int32)


class DmaError(IntEnum):
    """Why the DMA refused a transfer (2 bits), checked in this order."""
    NONE = 0
    KIND = 1          # kind is 3
    ROWS = 2          # rows is 0, or row + rows exceeds the SBUF's (PSUM's) rows
    DRAM = 3          # dram + (rows - 1) * stride + row bytes exceeds dram_bytes


class EngineError(IntEnum):
    """Why the prefill engine's sequencer stopped (its ``error_cause``, 4 bits; the emulator's
    ``PrefillError.cause``), checked in this order per command (docs/ARCHITECTURE.md section 11,
    "Errors"). The value 10 is unused (it was a VECTOR op code above ROWSUM, before every code
    0..15 became an op)."""
    NONE = 0
    OP = 1              # a reserved op (0, 7..15)
    DMA_KIND = 2        # DMA: kind (sub) is 3 or more (DmaError.KIND)
    DMA_ROWS = 3        # DMA: count is 0, or a + count exceeds the SBUF's (PSUM's) rows
    DMA_DRAM = 4        # DMA: addr + (count - 1) * stride + row bytes exceeds dram_bytes
    WEIGHTS_COUNT = 5   # WEIGHTS: count (k) outside 1..n
    WEIGHTS_ROWS = 6    # WEIGHTS: a + k exceeds sbuf_rows
    MATMUL_COUNT = 7    # MATMUL: count (m) is 0
    MATMUL_SBUF = 8     # MATMUL: a + m exceeds sbuf_rows
    MATMUL_PSUM = 9     # MATMUL: b + m exceeds psum_rows
    VECTOR_ROWS = 11    # VECTOR: a row its op reads or writes is past the SBUF/PSUM
    INDEX = 12          # the command index is past the command memory
    VECTOR_SHIFT = 13   # VECTOR: shift (stride) above 63 (checked before VECTOR_ROWS)


@dataclass(frozen=True)
class PrefillConfig:
    """The prefill engine's sizes and DRAM channel parameters.

    ``n``: the systolic array size (2 to 32). ``sbuf_rows``: SBUF rows of n int8 (16 to 65536).
    ``psum_rows``: PSUM rows of n int32 (16 to 65536). ``dram_bytes``: the off-chip DRAM size,
    a power of two from 1 KiB to 64 MiB. ``dram_bandwidth``: bytes the DRAM channel moves per
    cycle (1 to 128). ``dram_latency``: cycles from issuing a row request to the first cycle it
    may transfer (0 to 1024). ``dma_queue``: row requests that may be outstanding, issued and not
    completed (1 to 64); a stream reaches the bandwidth bound only when the queue covers the
    latency (about ``dram_latency`` x rows per cycle requests), hence the default of 64. The
    channel timing rule is in :mod:`hdl.dma`. ``commands``: the sequencer's command memory, in
    128-bit commands (16 to 65536).
    """
    n: int = 8
    sbuf_rows: int = 4096
    psum_rows: int = 1024
    dram_bytes: int = 1 << 20
    dram_bandwidth: int = 8
    dram_latency: int = 40
    dma_queue: int = 64
    commands: int = 4096

    def __post_init__(self):
        _check_int("n", self.n, MIN_N, MAX_N)
        _check_int("sbuf_rows", self.sbuf_rows, MIN_ROWS, MAX_ROWS)
        _check_int("psum_rows", self.psum_rows, MIN_ROWS, MAX_ROWS)
        _check_int("dram_bytes", self.dram_bytes, MIN_DRAM_BYTES, MAX_DRAM_BYTES)
        if self.dram_bytes & (self.dram_bytes - 1):
            raise ConfigError(f"dram_bytes must be a power of two, not {self.dram_bytes}")
        _check_int("dram_bandwidth", self.dram_bandwidth, 1, 128)
        _check_int("dram_latency", self.dram_latency, 0, 1024)
        _check_int("dma_queue", self.dma_queue, 1, 64)
        _check_int("commands", self.commands, 16, 65536)

    @property
    def sbuf_row_bytes(self):
        """n: the bytes of one SBUF row."""
        return self.n

    @property
    def psum_row_bytes(self):
        """4n: the bytes of one PSUM row (n little-endian int32)."""
        return 4 * self.n


# Commands -----------------------------------------------------------------------------------
#
# The sequencer runs a list of commands from its command memory, one 128-bit word each
# (docs/ARCHITECTURE.md section 11, "The sequencer"). Fields, by bit position:

class Op(IntEnum):
    """A command's operation (bits [3:0]). 0 is reserved, so an all-zero word (memory past the
    end of a command list) is an error rather than a silent no-op."""
    DMA = 1        # kind, tag, addr (DRAM bytes), stride (bytes), a (first row), count (rows)
    WAIT = 2       # tag
    WEIGHTS = 3    # buffer, a (first SBUF row), count (k rows, 1..n), transpose
    MATMUL = 4     # buffer, a (first SBUF row), b (first PSUM row), count (m rows), acc
    VECTOR = 5     # sub (VectorOp), a, b, c (destination), count (rows), addr (multiplier),
                   # stride (shift), acc (LANEMAX, LANESUM: combine with PSUM rows b)
    HALT = 6


class VectorOp(IntEnum):
    """A VECTOR command's operation (its ``sub``, 4 bits): every code is an op. The formulas and
    ports are in :class:`hdl.vector_engine.VectorOp` (the same codes) and docs/ARCHITECTURE.md
    section 11, "The vector engine"."""
    REQUANT = 0       # PSUM a -> SBUF d: isa.requantize(a, multiplier, shift)
    ADD8 = 1          # SBUF a, b -> SBUF d, saturating
    MAX8 = 2          # SBUF a, b -> SBUF d
    MUL8 = 3          # SBUF a, b -> SBUF d, saturating
    ADD32 = 4         # PSUM a, b -> PSUM d, wrapping
    LUT = 5           # SBUF a -> SBUF d through the table
    LOAD_TABLE = 6    # ceil(256 / n) SBUF rows from a -> the table
    ROWMAX = 7        # PSUM a .. a + rows - 1 -> PSUM d (one row)
    ROWSUM = 8        # PSUM a .. a + rows - 1 -> PSUM d (one row), wrapping
    SUB32 = 9         # PSUM a, b -> PSUM d, wrapping
    LANEMAX = 10      # PSUM a (and b with acc) -> PSUM d: the row's maximum in every lane
    LANESUM = 11      # PSUM a (and b with acc) -> PSUM d: the row's sum in every lane, wrapping
    MULW = 12         # SBUF a, b -> PSUM d: the exact int32 product
    SCALE = 13        # PSUM a, b -> SBUF d: isa.requantize(a, b, shift)
    RECIP = 14        # PSUM a -> PSUM d: mesh.numerics.recip(a, shift)
    RSQRT = 15        # PSUM a -> PSUM d: mesh.numerics.rsqrt(a, shift)


COMMAND_BITS = 128
COMMAND_FIELDS = {             # name: (lsb, width)
    "op": (0, 4),
    "sub": (4, 4),             # DMA kind, or vector op
    "tag": (8, 4),
    "buffer": (12, 1),
    "acc": (13, 1),
    "transpose": (14, 1),     # WEIGHTS: SBUF row i becomes weight column i
    "a": (16, 16),
    "b": (32, 16),
    "c": (48, 16),
    "count": (64, 16),
    "addr": (80, 32),          # DMA: DRAM byte address; VECTOR: multiplier (int32, two's complement)
    "stride": (112, 16),       # DMA: DRAM bytes between rows; VECTOR: shift (0..63)
}


class CommandError(ConfigError):
    """A command that cannot be encoded or run. The message names the command's index."""


@dataclass(frozen=True)
class Command:
    """One sequencer command: ``op`` and its fields (see :data:`COMMAND_FIELDS`; unused ones
    0). ``multiplier`` is carried in ``addr`` (as a signed value here)."""
    op: Op
    sub: int = 0
    tag: int = 0
    buffer: int = 0
    acc: int = 0
    transpose: int = 0
    a: int = 0
    b: int = 0
    c: int = 0
    count: int = 0
    addr: int = 0
    stride: int = 0

    def encode(self):
        """The 128-bit command word (raises :class:`CommandError` for a field out of range)."""
        word = 0
        for name, (lsb, width) in COMMAND_FIELDS.items():
            value = int(getattr(self, name))
            if name == "addr" and self.op == Op.VECTOR and -(1 << 31) <= value < 0:
                value &= 0xFFFFFFFF            # a negative multiplier, as two's complement
            if not 0 <= value < (1 << width):
                raise CommandError(f"{self.op.name} command: {name} = {getattr(self, name)} "
                                   f"does not fit its {width} bits")
            word |= value << lsb
        return word

    @classmethod
    def decode(cls, word):
        values = {name: (word >> lsb) & ((1 << width) - 1)
                  for name, (lsb, width) in COMMAND_FIELDS.items()}
        try:
            values["op"] = Op(values["op"])
        except ValueError:
            raise CommandError(f"command word 0x{word:032x}: op {values['op']} is not a "
                               f"command") from None
        if values["op"] == Op.VECTOR and values["addr"] >> 31:
            values["addr"] -= 1 << 32
        return cls(**values)

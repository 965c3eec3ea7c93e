"""The validated configuration of the prefill engine (docs/ARCHITECTURE.md section 11).

Memory geometry: an SBUF row is n int8 values (n bytes); a PSUM row is n int32 values, 4n bytes,
each value little-endian (byte 4j + k of the row is byte k of element j). DRAM is byte
addressed; the DMA moves whole rows between DRAM and SBUF/PSUM.
"""

from dataclasses import dataclass
from enum import IntEnum

from .config import ConfigError, _check_int

__all__ = ["DmaError", "DmaKind", "PrefillConfig", "Op", "Command", "CommandError",
           "COMMAND_BITS", "COMMAND_FIELDS"]

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
    WEIGHTS = 3    # buffer, a (first SBUF row), count (k rows, 1..n)
    MATMUL = 4     # buffer, a (first SBUF row), b (first PSUM row), count (m rows), acc
    VECTOR = 5     # sub (VectorOp), a, b, c (destination), count (rows), addr (multiplier),
                   # stride (shift)
    HALT = 6


COMMAND_BITS = 128
COMMAND_FIELDS = {             # name: (lsb, width)
    "op": (0, 4),
    "sub": (4, 4),             # DMA kind, or vector op
    "tag": (8, 4),
    "buffer": (12, 1),
    "acc": (13, 1),
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

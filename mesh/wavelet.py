"""The wavelet: 32 bits of data plus a color index."""

from dataclasses import dataclass

__all__ = ["DATA_BITS", "Wavelet", "color_bits"]

DATA_BITS = 32


def color_bits(colors):
    """Width of the color field for a fabric with ``colors`` colors (at least one bit)."""
    return max(1, (colors - 1).bit_length())


@dataclass(frozen=True)
class Wavelet:
    """One wavelet. Packed form (as in the RTL's flat link vector): data in bits [31:0],
    color above it."""
    color: int
    data: int

    def __post_init__(self):
        if not 0 <= self.data < (1 << DATA_BITS):
            raise ValueError(f"wavelet data {self.data!r} is not a 32-bit unsigned value")
        if self.color < 0:
            raise ValueError(f"wavelet color {self.color} is negative")

    def pack(self):
        return self.data | (self.color << DATA_BITS)

    @classmethod
    def unpack(cls, word):
        return cls(color=word >> DATA_BITS, data=word & ((1 << DATA_BITS) - 1))

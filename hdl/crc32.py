"""CRC-32 over 32-bit words, one word per cycle: the packet link's CRC (docs/ARCHITECTURE.md,
section 12; ``mesh.link.crc32``).

The CRC is IEEE 802.3's, reflected, as ``zlib.crc32``: over bytes b_0 .. b_{n-1} the register
starts at ``CRC32_INIT`` (all ones), takes each byte in turn, and the CRC is the register XOR
all ones. A word is taken little-endian (bits 7:0 first). Without the initial value and the final
inversion, one word's step is a linear map over GF(2) of the register and the word together:
:class:`Crc32Word` computes it as 32 XOR reductions whose masks are derived at elaboration time by
evaluating that map (through ``zlib``) on the 64 unit vectors.
"""

import zlib
from functools import cache

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Crc32Word", "CRC32_INIT", "crc32_step", "crc32_masks"]

CRC32_INIT = 0xFFFFFFFF
_ALL_ONES = 0xFFFFFFFF


def crc32_step(register, word):
    """The CRC register after ``word`` (little-endian): the linear step, no inversions.
    ``zlib.crc32(b, v)`` starts from the register ~v and returns ~register."""
    return zlib.crc32(int(word).to_bytes(4, "little"), register ^ _ALL_ONES) ^ _ALL_ONES


@cache
def crc32_masks():
    """32 masks over the 64 bits Cat(register, word): output bit i of :func:`crc32_step` is the
    XOR of the input bits its mask selects."""
    columns = [crc32_step(1 << b, 0) for b in range(32)] + [crc32_step(0, 1 << b)
                                                            for b in range(32)]
    masks = tuple(sum(1 << b for b, column in enumerate(columns) if column >> i & 1)
                  for i in range(32))
    # The step is linear: spot-check superposition on a value that mixes both inputs.
    register, word = 0x1234_5678, 0x9ABC_DEF0
    assert crc32_step(register, word) == crc32_step(register, 0) ^ crc32_step(0, word)
    return masks


class Crc32Word(wiring.Component):
    """One word's CRC-32 step, combinational: ``next`` = the register after ``data``.

    Start the register at :data:`CRC32_INIT` and feed the words in order; the CRC of the words
    so far (``zlib.crc32`` of their little-endian bytes) is the register XOR 0xFFFFFFFF.

    Members
    -------
    crc : :py:`In(32)`
        The register before the word.
    data : :py:`In(32)`
        The word (byte 0 in bits 7:0 is taken first).
    next : :py:`Out(32)`
        The register after the word.
    """

    def __init__(self):
        super().__init__({"crc": In(32), "data": In(32), "next": Out(32)})

    def elaborate(self, platform):
        m = Module()
        inputs = Cat(self.crc, self.data)
        m.d.comb += self.next.eq(Cat((inputs & mask).xor() for mask in crc32_masks()))
        return m

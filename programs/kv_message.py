"""The KV message: what the prefill engine sends the mesh, laid out in the engine's DRAM so that
the packet link can send it as it is and the delivery engine can hand every tile its own words.

The mesh decoder (:mod:`programs.mesh_decode`) keeps position p of the KV cache on column
x = p mod W (local slot s = p div W) and dims slice y (d / H dims) on row y. The message holds,
for each tile, exactly the slots the prompt filled (S = ceil(M / W) per tile, M prompt tokens),
in the order the delivery engine splits a message: tile (x, y)'s N words are message words
(y W + x) N .. + N - 1 (docs/ARCHITECTURE.md section 12, "Delivery into the mesh").

A tile's N words:

=============  ============================================================================
words          what
=============  ============================================================================
0 .. tw - 1    the first generated token, every byte of them (tw = n / 4: the engine stores
               one n-byte SBUF row holding the token in every lane; the mesh takes its low
               byte). Written by the engine, one STORE per tile.
tw             N, the words per tile (every tile reads tile 0's, to find its own words)
tw + 1 ..      steps (the decode budget), pos (= M), phase (= M mod W), nloc (the positions
               this column holds), end (the END token), S: written by the host, which knows
               the prompt's length, into the DRAM image
HEADER ..      per layer: K, then V: S slots of d / H int8 each (four per word, dims in
               order), slot s the position s W + x; slots past the prompt are zero
=============  ============================================================================

HEADER = tw + 7 rounded up to a multiple of tw, so that every K/V row slice starts on an n-byte
boundary of the DRAM. The engine stores K and V straight into this layout: a column tile of n
dims of W consecutive positions is one STORE of W rows at a stride of 4N bytes (one tile to the
next), so d / H must be a multiple of n. :meth:`KVMessage.read_kv` reads K and V back.
"""

from dataclasses import dataclass
from math import ceil

import numpy as np

__all__ = ["KVMessage", "HEADER_FIELDS"]

#: The host-written header words after the token words and N, in order.
HEADER_FIELDS = ("steps", "pos", "phase", "nloc", "end", "slots")


@dataclass(frozen=True)
class KVMessage:
    """The message of an M-token prompt (``prompt_tokens``) of a model with ``d_model`` and
    ``n_layers`` for a ``width`` x ``height`` mesh, from a prefill engine of array size ``n``,
    at DRAM byte ``base``; ``steps`` (the decode budget) and ``end`` (the token that stops it,
    -1 for none) go into the header. Raises ValueError naming what does not fit."""
    width: int
    height: int
    d_model: int
    n_layers: int
    n: int
    prompt_tokens: int
    steps: int = 1
    end: int = -1
    base: int = 0

    def __post_init__(self):
        for name in ("width", "height", "d_model", "n_layers", "n", "prompt_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"KV message: {name} must be a positive integer, not {value!r}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"KV message: steps must be a non-negative integer, not "
                             f"{self.steps!r}")
        if not isinstance(self.base, int) or self.base < 0 or self.base % max(4, self.n):
            raise ValueError(f"KV message: the DRAM base {self.base!r} must be a non-negative "
                             f"multiple of {max(4, self.n)} bytes")
        if self.n % 4:
            raise ValueError(f"KV message: the engine's rows of n = {self.n} bytes must be whole "
                             f"32-bit words (n a multiple of 4)")
        if self.d_model % self.height or (self.d_model // self.height) % self.n:
            raise ValueError(
                f"KV message: a {self.height}-row mesh splits d_model {self.d_model} into "
                f"{self.d_model / self.height:g}-byte row slices; the engine stores {self.n}-byte "
                f"rows, so d_model / H must be a multiple of {self.n} (a mesh of at most "
                f"{self.d_model // self.n} rows, or an engine with a smaller n)")

    # Sizes -------------------------------------------------------------------------------------

    @property
    def tiles(self):
        return self.width * self.height

    @property
    def token_words(self):
        return self.n // 4

    @property
    def header(self):
        tw = self.token_words
        return ceil((tw + 1 + len(HEADER_FIELDS)) / tw) * tw

    @property
    def slots(self):
        """S: the slots each tile receives (ceil(M / W))."""
        return ceil(self.prompt_tokens / self.width)

    @property
    def slice_words(self):
        """d / H int8 of a row slice, in words."""
        return self.d_model // self.height // 4

    @property
    def words(self):
        """N: the words of one tile."""
        return self.header + 2 * self.n_layers * self.slots * self.slice_words

    @property
    def total_words(self):
        return self.tiles * self.words

    @property
    def total_bytes(self):
        return 4 * self.total_words

    @property
    def limit(self):
        """The DRAM byte after the message."""
        return self.base + self.total_bytes

    # Addresses ---------------------------------------------------------------------------------

    def tile_address(self, x, y):
        """The DRAM byte of tile (x, y)'s first word."""
        return self.base + 4 * self.words * (y * self.width + x)

    def kv_stores(self, layer, which):
        """The STOREs of K (``which`` "k") or V ("v") of ``layer``: (DRAM address, first
        position, count, stride in bytes, column tile kt): W consecutive positions (or what is
        left of the prompt) of one column tile of n dims each."""
        n, W, rd = self.n, self.width, self.d_model // self.height
        offset = self.header + (2 * layer + (which == "v")) * self.slots * self.slice_words
        out = []
        for kt in range(self.d_model // n):
            y, within = divmod(kt * n, rd)
            for s in range(self.slots):
                p0 = s * W
                count = min(W, self.prompt_tokens - p0)
                address = (self.tile_address(0, y) + 4 * (offset + s * self.slice_words)
                           + within)
                out.append((address, p0, count, 4 * self.words, kt))
        return out

    def token_addresses(self):
        """The DRAM byte of every tile's token words (one n-byte STORE each)."""
        return [self.tile_address(x, y) for y in range(self.height) for x in range(self.width)]

    # Contents ----------------------------------------------------------------------------------

    def nloc(self, x):
        return len(range(x, self.prompt_tokens, self.width))

    def host_words(self):
        """{DRAM byte address: uint32 words}: the header words the host writes (N and
        :data:`HEADER_FIELDS` of every tile)."""
        steps, end = self.steps, self.end
        out = {}
        for y in range(self.height):
            for x in range(self.width):
                values = dict(steps=steps, pos=self.prompt_tokens,
                              phase=self.prompt_tokens % self.width, nloc=self.nloc(x),
                              end=end, slots=self.slots)
                words = [self.words] + [values[f] for f in HEADER_FIELDS]
                out[self.tile_address(x, y) + 4 * self.token_words] = \
                    (np.asarray(words, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)
        return out

    def read_kv(self, dram, layer, which):
        """K or V of ``layer`` (M x d_model int8) from a DRAM image holding the message."""
        raw = np.frombuffer(bytes(dram), dtype=np.int8)
        out = np.zeros((self.prompt_tokens, self.d_model), dtype=np.int8)
        for address, p0, count, stride, kt in self.kv_stores(layer, which):
            for i in range(count):
                a = address + i * stride
                out[p0 + i, kt * self.n:(kt + 1) * self.n] = raw[a:a + self.n]
        return out

    def read_token(self, dram, x=0, y=0):
        """The token in tile (x, y)'s token words."""
        return int(np.frombuffer(bytes(dram), dtype=np.int8, count=1,
                                 offset=self.tile_address(x, y))[0])

    def message(self, dram):
        """The message's words (uint32) from a DRAM image."""
        return np.frombuffer(bytes(dram), dtype="<u4", count=self.total_words,
                             offset=self.base).astype(np.uint32)

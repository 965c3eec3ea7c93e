"""Programs for the prefill engine (docs/ARCHITECTURE.md section 11, "The sequencer"): the
tiled GEMM and its closed-form cycle counts, and the x-stationary decode GEMV
(:func:`gemv_decode`, its own layout in its docstring).

Layouts (n = the array size, Kt = ceil(K / n), Nt = ceil(N / n), shapes zero-padded to
multiples of n in the images):

* A (M x K int8), in SBUF rows [0, Kt x M): row kt x M + r holds A[r, kt n : kt n + n]. The DRAM
  image holds the same rows from byte 0 (one LOAD of Kt x M rows, stride n).
* B (K x N int8) as T = Kt x Nt weight tiles, used in the order t = nt x Kt + kt: tile t is n rows
  of n bytes, row i = B[kt n + i, nt n : nt n + n]. In DRAM the tiles follow A, n x n bytes each;
  only the k = min(n, K - kt n) real rows are loaded (the loader zeroes weight rows k..n-1).
  In SBUF a ring of ``slots`` tiles follows A (row Kt x M + s x n for slot s).
* C (M x N int32) in PSUM rows [0, Nt x M): row nt x M + r holds C[r, nt n : nt n + n]; in DRAM
  the same rows of 4n bytes follow B (one STORE_PSUM).

The command list: LOAD tile 0 (tag 1), LOAD A (tag 0), LOAD tiles 1..S-1 (tags 2..S); then per
tile t: WAIT its tag, WEIGHTS (buffer t mod 2), [WAIT 0 before the first MATMUL], LOAD tile t + S
into the slot WEIGHTS t just read (so the DMA runs S tiles ahead of compute), MATMUL (M rows,
accumulating for kt > 0); then STORE_PSUM of C and HALT. With ``preload=True`` A and B start in
SBUF (:attr:`GemmProgram.sbuf`, B's T tiles after A) and there is no DMA: WEIGHTS, MATMUL per
tile, HALT, C stays in PSUM -- the program :func:`gemm_cycles` counts exactly.

Tiling over M (DMA program only): when A (Kt x M SBUF rows, next to the weight slots) or C
(Nt x M PSUM rows) does not fit, M is cut into blocks of Mb rows (``m_block``; by default the
largest that fits, evened out when that keeps every block >= 3n - 3 rows), the last one maybe
shorter. Block (r0, m) uses the layouts above with m for M: its A rows kt x m + r in SBUF rows
[0, Kt x m) and in DRAM from byte r0 x Kt x n; its C rows nt x m + r in PSUM rows [0, Nt x m) and
in DRAM from c_addr + r0 x Nt x 4n (one block, Mb = M, is exactly the layout above). Every
block streams all T weight tiles: global tile g = b x T + t uses slot g mod S, buffer g mod 2,
and the ring runs on across blocks (LOAD g + S after WEIGHTS g). For block b > 0, after the
WEIGHTS of its first tile: STORE_PSUM of block b - 1's C (it waits for the array, so the A rows
are free), LOAD of block b's A (tag 0 both), WAIT 0, then its MATMULs. The last block's C is
stored before HALT.
"""

from dataclasses import dataclass

import numpy as np

from mesh.prefill import Command, DmaKind, Op, PrefillConfig

__all__ = ["GemmProgram", "GemvProgram", "gemm", "gemv_decode", "gemm_cycles", "gemm_matmul_span",
           "tile_periods", "dram_bound_cycles", "MAX_SLOTS"]

MAX_SLOTS = 15            # weight-tile slots in the ring, tags 1..15 (tag 0: A, then C)
_MAX_DMA_ROWS = 32768     # rows per DMA command (the count field has 16 bits)


def _ceil(a, b):
    return -(-a // b)


@dataclass
class GemmProgram:
    """A GEMM program: ``dram`` (the DRAM image, bytes), ``sbuf`` (the initial SBUF, int8, or
    None), ``commands``, ``expected`` (C, M x N int32); C lands at ``c_addr`` in DRAM
    (``c_in`` == "dram") or from PSUM row 0 (``c_in`` == "psum") in the layout of the module
    docstring. ``useful_macs`` = M x K x N."""
    config: PrefillConfig
    M: int
    K: int
    N: int
    A: np.ndarray
    B: np.ndarray
    expected: np.ndarray
    dram: bytes
    sbuf: object
    commands: list
    c_in: str
    c_addr: int
    slots: int
    m_block: int = None

    @property
    def tiles(self):
        return _ceil(self.K, self.config.n) * _ceil(self.N, self.config.n)

    @property
    def blocks(self):
        """[(r0, rows)]: the M blocks (one, (0, M), unless the program tiles over M)."""
        return _m_blocks(self.M, self.m_block or self.M)

    @property
    def useful_macs(self):
        return self.M * self.K * self.N

    @property
    def b_bytes(self):
        """The bytes of B the program moves from DRAM (the real rows of every tile)."""
        n, K = self.config.n, self.K
        return sum(min(n, K - kt * n) * n for kt in range(_ceil(K, n))) * _ceil(self.N, n)

    def unpack_c(self, rows):
        """C (M x N int32) from its rows (Nt x M, n) int32, as in PSUM or DRAM."""
        n, M, N = self.config.n, self.M, self.N
        Nt = _ceil(N, n)
        rows = np.asarray(rows, dtype=np.int32).reshape(Nt * M, n)
        return np.concatenate([rows[Nt * r0:Nt * (r0 + m)].reshape(Nt, m, n).transpose(1, 0, 2)
                               .reshape(m, Nt * n) for r0, m in self.blocks])[:, :N]

    def read_c(self, result):
        """C from a run's result (:class:`emulator.prefill.PrefillResult`)."""
        n, M = self.config.n, self.M
        rows = _ceil(self.N, n) * M
        if self.c_in == "psum":
            return self.unpack_c(result.psum[:rows])
        data = np.frombuffer(result.dram, dtype="<i4", count=rows * n, offset=self.c_addr)
        return self.unpack_c(data.reshape(rows, n))


def _operand(name, value, shape, rng):
    if value is None:
        return rng.integers(-128, 128, size=shape, dtype=np.int64).astype(np.int8)
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, not {value.shape}")
    if value.dtype.kind not in "iu" or (value.size and (value.min() < -128
                                                        or value.max() > 127)):
        raise ValueError(f"{name} must hold int8 values")
    return value.astype(np.int8)


def _m_blocks(M, m_block):
    """[(r0, rows)]: M cut into blocks of ``m_block`` rows (the last one may be shorter)."""
    return [(r0, min(m_block, M - r0)) for r0 in range(0, M, m_block)]


def _gemm_command_count(Kt, Nt, blocks, slots):
    """The length of the DMA program's command list (module docstring) for these M blocks."""
    T = Kt * Nt
    total = len(blocks) * T
    count = 4 * total                            # per tile: WAIT, WEIGHTS, LOAD, MATMUL
    for _, rows in blocks:
        count += _ceil(Kt * rows, _MAX_DMA_ROWS) + 1     # LOAD A block, WAIT 0
        count += _ceil(Nt * rows, _MAX_DMA_ROWS)         # STORE_PSUM C block
    return count + 1                                     # HALT


def _choose_m_block(config, M, Kt, Nt, slots):
    """The default block: the most rows whose A block (Kt x rows) fits SBUF next to the
    ``slots`` weight-tile slots and whose C block (Nt x rows) fits PSUM (0 when not even one
    row fits). When the last, shorter block would have fewer than 3n - 3 rows (gaps between
    MATMULs, :func:`tile_periods`) the blocks are evened out over the same number of blocks if
    that keeps every one >= 3n - 3."""
    n = config.n
    most = min(M, (config.sbuf_rows - slots * n) // Kt, config.psum_rows // Nt)
    if most < 1 or most == M:
        return max(most, 0)
    blocks = _ceil(M, most)
    tail = M - (blocks - 1) * most
    even = _ceil(M, blocks)
    if tail < 3 * n - 3 and M - (blocks - 1) * even >= 3 * n - 3:
        return even
    return most


def gemm(config, M, K, N, *, A=None, B=None, seed=0, slots=2, preload=False, m_block=None):
    """The tiled GEMM C = A x B (A M x K int8, B K x N int8, C int32) as a
    :class:`GemmProgram` (layouts and command order in the module docstring). ``A``/``B``
    default to random int8 from ``seed``. ``slots``: weight tiles in flight (2: double
    buffering; up to 15). ``m_block``: rows of A per M block (default: one block when A and C
    fit, else the largest block that fits, :func:`_choose_m_block`); only the DMA program
    tiles over M. Raises ValueError when the operands do not fit SBUF, PSUM, DRAM or the
    command memory."""
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config must be a PrefillConfig, not {config!r}")
    for name, value in (("M", M), ("K", K), ("N", N)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if m_block is not None and (not isinstance(m_block, int) or m_block < 1):
        raise ValueError(f"m_block must be a positive integer, not {m_block!r}")
    n = config.n
    Kt, Nt = _ceil(K, n), _ceil(N, n)
    T = Kt * Nt
    rng = np.random.default_rng(seed)
    A = _operand("A", A, (M, K), rng)
    B = _operand("B", B, (K, N), rng)
    expected = (A.astype(np.int64) @ B.astype(np.int64)).astype(np.int32)

    Ap = np.zeros((M, Kt * n), dtype=np.int8)
    Ap[:, :K] = A
    Bp = np.zeros((Kt * n, Nt * n), dtype=np.int8)
    Bp[:K, :N] = B
    b_tiles = Bp.reshape(Kt, n, Nt, n).transpose(2, 0, 1, 3).reshape(T * n, n)  # (nt Kt + kt) n + i
    ks = [min(n, K - kt * n) for kt in range(Kt)]
    c_rows = Nt * M

    if not 1 <= slots <= MAX_SLOTS:
        raise ValueError(f"slots must be from 1 to {MAX_SLOTS}, not {slots}")
    shape = f"GEMM {M}x{K}x{N}"
    slots = min(slots, T)
    if preload:
        if m_block is not None and m_block < M:
            raise ValueError(f"{shape}: preload=True runs one M block (m_block={m_block} < "
                             f"M={M}); use the DMA program (preload=False) to tile over M")
        Mb = M
    else:
        if m_block is None:
            Mb = _choose_m_block(config, M, Kt, Nt, slots)
            if Mb < 1:
                # not even one row fits: report the one-row needs below
                Mb = 1
        else:
            Mb = min(m_block, M)
    w_base = Kt * Mb
    sbuf_need = w_base + (T * n if preload else slots * n)
    if sbuf_need > config.sbuf_rows:
        hint = "" if preload else f" in M blocks of {Mb} row{'s' * (Mb > 1)}"
        raise ValueError(f"{shape} needs {sbuf_need} SBUF rows{hint} (A: {Kt} x {Mb}, "
                         f"weights: {sbuf_need - w_base}), the SBUF has {config.sbuf_rows}")
    if Nt * Mb > config.psum_rows:
        hint = "" if preload else f" in M blocks of {Mb} row{'s' * (Mb > 1)}"
        raise ValueError(f"{shape} needs {Nt * Mb} PSUM rows{hint} ({Nt} x {Mb}) for C, "
                         f"the PSUM has {config.psum_rows}")
    blocks = _m_blocks(M, Mb)

    commands = []
    if preload:
        a_rows = Ap.reshape(M, Kt, n).transpose(1, 0, 2).reshape(Kt * M, n)   # kt x M + r
        sbuf = np.zeros((config.sbuf_rows, n), dtype=np.int8)
        sbuf[:w_base] = a_rows
        sbuf[w_base:w_base + T * n] = b_tiles
        for t in range(T):
            nt, kt = divmod(t, Kt)
            commands.append(Command(Op.WEIGHTS, buffer=t % 2, a=w_base + t * n, count=ks[kt]))
            commands.append(Command(Op.MATMUL, buffer=t % 2, a=kt * M, b=nt * M, count=M,
                                    acc=int(kt > 0)))
        commands.append(Command(Op.HALT))
        dram, c_in, c_addr = b"", "psum", 0
    else:
        needed = _gemm_command_count(Kt, Nt, blocks, slots)
        if needed > config.commands:
            raise ValueError(_commands_message(config, shape, needed, M, K, N, Kt, Nt, Mb,
                                               slots))
        sbuf = None
        # A block by block: block (r0, m) holds rows kt x m + r from byte r0 x Kt x n
        a_image = np.concatenate([Ap[r0:r0 + m].reshape(m, Kt, n).transpose(1, 0, 2)
                                  .reshape(Kt * m, n) for r0, m in blocks])
        a_addr, b_addr = 0, Kt * M * n
        c_addr = b_addr + T * n * n
        dram_need = c_addr + c_rows * 4 * n
        if dram_need > config.dram_bytes:
            raise ValueError(f"{shape} needs {dram_need} DRAM bytes, the DRAM has "
                             f"{config.dram_bytes}")
        image = bytearray(dram_need)
        image[a_addr:b_addr] = a_image.tobytes()
        image[b_addr:c_addr] = b_tiles.tobytes()
        dram = bytes(image)
        total = len(blocks) * T          # weight tiles streamed: every tile once per block

        def load_tile(g):
            s, t = g % slots, g % T
            return Command(Op.DMA, sub=DmaKind.LOAD, tag=1 + s, addr=b_addr + t * n * n,
                           stride=n, a=w_base + s * n, count=ks[t % Kt])

        def chunks(rows):
            for start in range(0, rows, _MAX_DMA_ROWS):
                yield start, min(_MAX_DMA_ROWS, rows - start)

        def load_a(r0, m):
            for row, count in chunks(Kt * m):
                commands.append(Command(Op.DMA, sub=DmaKind.LOAD, tag=0,
                                        addr=a_addr + (Kt * r0 + row) * n, stride=n, a=row,
                                        count=count))

        def store_c(r0, m):
            for row, count in chunks(Nt * m):
                commands.append(Command(Op.DMA, sub=DmaKind.STORE_PSUM, tag=0,
                                        addr=c_addr + (Nt * r0 + row) * 4 * n, stride=4 * n,
                                        a=row, count=count))

        commands.append(load_tile(0))
        load_a(*blocks[0])
        commands.extend(load_tile(g) for g in range(1, slots))
        for bi, (r0, m) in enumerate(blocks):
            for t in range(T):
                g = bi * T + t
                nt, kt = divmod(t, Kt)
                s = g % slots
                commands.append(Command(Op.WAIT, tag=1 + s))
                commands.append(Command(Op.WEIGHTS, buffer=g % 2, a=w_base + s * n,
                                        count=ks[kt]))
                if t == 0:
                    if bi > 0:
                        # the store waits for the array (the previous block's MATMULs), so
                        # the A block it frees can be reloaded behind it; WAIT 0 covers both
                        store_c(*blocks[bi - 1])
                        load_a(r0, m)
                    commands.append(Command(Op.WAIT, tag=0))
                if g + slots < total:
                    commands.append(load_tile(g + slots))
                commands.append(Command(Op.MATMUL, buffer=g % 2, a=kt * m, b=nt * m, count=m,
                                        acc=int(kt > 0)))
        store_c(*blocks[-1])
        commands.append(Command(Op.HALT))
        assert len(commands) == needed
        c_in = "dram"
    if len(commands) > config.commands:
        raise ValueError(f"{shape} needs {len(commands)} commands, the command "
                         f"memory holds {config.commands}")
    return GemmProgram(config=config, M=M, K=K, N=N, A=A, B=B, expected=expected, dram=dram,
                       sbuf=sbuf, commands=commands, c_in=c_in, c_addr=c_addr, slots=slots,
                       m_block=Mb)


def _commands_message(config, shape, needed, M, K, N, Kt, Nt, Mb, slots):
    """The ValueError text for a DMA program longer than the command memory, with the largest
    split into separate GEMMs (same config) whose programs fit: fewer rows of A per GEMM, or,
    when one M block is already too long, fewer columns of B."""
    n = config.n
    fits = lambda rows, nt: _gemm_command_count(Kt, nt, _m_blocks(rows, min(Mb, rows)),
                                                slots) <= config.commands
    blocks = _ceil(M, Mb)
    text = (f"{shape} needs {needed} commands ({blocks} M block{'s' * (blocks > 1)} of up to "
            f"{Mb} rows x {Kt * Nt} weight tiles), the command memory holds {config.commands}")
    if blocks > 1:
        text += (f" (tiled over M because all {M} rows at once would need "
                 f"{Kt * M + slots * n} SBUF rows of {config.sbuf_rows} and {Nt * M} PSUM rows "
                 f"of {config.psum_rows})")
    rows = max((r for r in range(Mb, M, Mb) if fits(r, Nt)), default=0)
    if rows:
        return text + f"; split M: GEMMs of at most {rows} rows of A ({rows}x{K}x{N}) fit"
    cols = max((nt for nt in range(1, Nt) if fits(min(Mb, M), nt)), default=0)
    if cols:
        return text + (f"; split M and N: GEMMs of at most {min(Mb, M)}x{K}x{cols * n} fit")
    return text + "; no split of M or N fits: split K (and add the partial products)"


@dataclass
class GemvProgram:
    """A decode GEMV program (:func:`gemv_decode`): ``dram`` (the DRAM image: B^T by K tile
    from ``b_addr``, then, with ``x_in`` == "dram", the x tiles at ``x_addr``), ``sbuf`` (the
    initial SBUF: the x tiles from row 0 when ``x_in`` == "sbuf", else None), ``commands``,
    ``expected`` (y as a 1 x N int32 array, like a GEMM's C). y stays in PSUM: y[j] is column 0
    of PSUM row j (:meth:`read_y`; :meth:`read_c` gives it as 1 x N). ``M`` = 1 and ``A`` = x
    (1 x K) keep the :class:`GemmProgram` names."""
    config: PrefillConfig
    K: int
    N: int
    x: np.ndarray
    B: np.ndarray
    expected: np.ndarray
    dram: bytes
    sbuf: object
    commands: list
    slots: int
    piece: int
    x_in: str
    b_addr: int
    x_addr: int
    M: int = 1
    c_in: str = "psum"

    @property
    def A(self):
        return self.x.reshape(1, self.K)

    @property
    def tiles(self):
        """K tiles: one WEIGHTS (an x tile) each."""
        return _ceil(self.K, self.config.n)

    @property
    def pieces(self):
        return self.tiles * _ceil(self.N, self.piece)

    @property
    def useful_macs(self):
        return self.K * self.N

    @property
    def b_bytes(self):
        """The bytes of B the program moves from DRAM: ceil(K / n) x N rows of n bytes (K x N
        when n divides K)."""
        return self.tiles * self.N * self.config.n

    @property
    def x_bytes(self):
        """The bytes of x moved from DRAM (0 when x starts in SBUF)."""
        return self.K * self.config.n if self.x_in == "dram" else 0

    def read_y(self, result):
        """y (N int32) from a run's result: column 0 of PSUM rows 0..N-1."""
        return np.asarray(result.psum[:self.N, 0], dtype=np.int32).copy()

    def read_c(self, result):
        """y as a 1 x N array (the :meth:`GemmProgram.read_c` shape)."""
        return self.read_y(result).reshape(1, self.N)


def gemv_decode(config, K, N, *, x=None, B=None, seed=0, slots=5, piece=None, x_in="sbuf"):
    """The decode GEMV y = x B (x 1 x K int8, B K x N int8, y int32), x-stationary, as a
    :class:`GemvProgram`. Kt = ceil(K / n) K tiles; for K tile kt:

    * the weight tile holds x: weight row i = [x[kt n + i], 0, ..., 0] (only column 0 is used;
      k = min(n, K - kt n) rows, the loader zeroes the rest). These Kt x n rows are the first
      rows of SBUF (``x_in`` == "sbuf", the default: in decode x is the previous layer's
      output, already on chip) or are loaded from DRAM first (``x_in`` == "dram": K x n more
      bytes, n / N of B's, not counted in :attr:`GemvProgram.b_bytes`);
    * B is streamed as activations: row j of K tile kt is B[kt n : kt n + n, j] (zero padded),
      so DRAM holds B^T chunked by K tile (row kt N + j, n bytes each, from ``b_addr`` = 0);
    * MATMULs of these N rows accumulate into PSUM rows 0..N-1 (acc for kt > 0): column 0 of
      PSUM row j ends as y[j]; columns 1..n-1 stay 0. y is not stored (a PSUM row is 4n bytes
      per y element: storing it would cost 4n / K of B's DRAM time).

    The B^T stream is cut into **pieces** of at most ``piece`` rows, each within one K tile
    (ceil(N / piece) per K tile), loaded into a ring of ``slots`` SBUF slots after the x tiles
    (tags 1..slots). The command list: LOAD pieces 0..slots-2, WEIGHTS x tile 0; then per
    piece p: [WEIGHTS x tile kt (buffer kt mod 2) if p is the first piece of K tile kt > 0],
    WAIT p, MATMUL p, LOAD piece p + slots - 1 (into the slot MATMUL p - 1 read, which had
    finished streaming when MATMUL p issued); HALT.

    A LOAD holds the sequencer until the DMA takes it, i.e. until the previous transfer's last
    row request is issued, so the LOADs must run far enough ahead to reach the DMA in time
    ((slots - 2) x piece >= about dram_latency + 8) and not so far that they hold up the
    WAIT/MATMUL of pieces already in SBUF (the array lags the data by about one piece). The
    defaults: ``slots`` = 5 and ``piece`` = max(16, ceil((dram_latency + 8) / 3)), doubled
    while the list (about 3 commands a piece) would not fit ``config.commands`` (so 1024 x 256
    at n = 8 with 4096 commands uses pieces of 32 rows).

    Cycles: the DMA streams B^T with no gap, n / dram_bandwidth cycles per row (as long as
    ``dma_queue`` covers the latency: dram_latency x dram_bandwidth / n requests), and the
    array consumes one row per cycle, so the run lasts the DRAM bound (:func:`dram_bound_cycles`
    of :attr:`GemvProgram.b_bytes`) plus fixed costs: the first request's latency
    (``dram_latency`` + 2), the last piece's MATMUL after it lands (``piece`` rows), the array
    latency 2n, and HALT: 77 cycles at n = 8, latency 40, piece 16 (93..123 with pieces of 32).
    The 5% bar therefore holds once B's DRAM time is >= ~20x that, about 1600 cycles: measured
    at n = 8, latency 40, for 256 x 256, 512 x 128 and 1024 x 256 at every bandwidth 1, 2, 4,
    8 (worst 0.94%, 256 x 256 and 512 x 128 at bandwidth 8); a 64 x 64 GEMV at bandwidth 8
    (512 cycles of DRAM) misses it (589 cycles, +15%), 128 x 64 (1024) is at +7.5%. With
    ``x_in`` == "dram" the x tiles (K x n bytes) come first, adding K x n / bandwidth cycles.
    """
    if not isinstance(config, PrefillConfig):
        raise TypeError(f"config must be a PrefillConfig, not {config!r}")
    for name, value in (("K", K), ("N", N)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if not 2 <= slots <= MAX_SLOTS:
        raise ValueError(f"slots must be from 2 to {MAX_SLOTS}, not {slots}")
    if piece is not None and (not isinstance(piece, int) or not 1 <= piece <= _MAX_DMA_ROWS):
        raise ValueError(f"piece must be from 1 to {_MAX_DMA_ROWS}, not {piece!r}")
    if x_in not in ("sbuf", "dram"):
        raise ValueError(f"x_in must be 'sbuf' or 'dram', not {x_in!r}")
    if N > config.psum_rows:
        raise ValueError(f"GEMV {K}x{N} needs {N} PSUM rows for y, the PSUM has "
                         f"{config.psum_rows}")
    n = config.n
    Kt = _ceil(K, n)
    rng = np.random.default_rng(seed)
    x = _operand("x", None if x is None else np.asarray(x).reshape(1, K), (1, K), rng)
    B = _operand("B", B, (K, N), rng)
    expected = (x.astype(np.int64) @ B.astype(np.int64)).astype(np.int32)

    xp = np.zeros(Kt * n, dtype=np.int8)
    xp[:K] = x[0]
    x_rows = np.zeros((Kt * n, n), dtype=np.int8)      # row kt n + i = [x[kt n + i], 0, ...]
    x_rows[:, 0] = xp
    Bp = np.zeros((Kt * n, N), dtype=np.int8)
    Bp[:K] = B
    bt_rows = Bp.reshape(Kt, n, N).transpose(0, 2, 1).reshape(Kt * N, n)   # row kt N + j
    ks = [min(n, K - kt * n) for kt in range(Kt)]

    if piece is None:
        piece = max(16, _ceil(config.dram_latency + 8, 3))
        # fewer, larger pieces when the command list would not fit (3 commands a piece)
        while piece < N and 3 * Kt * _ceil(N, piece) + 2 * Kt + 4 > config.commands:
            piece *= 2
    piece = min(piece, N)
    pieces = [(kt, j, min(piece, N - j)) for kt in range(Kt) for j in range(0, N, piece)]
    P = len(pieces)
    slots = min(slots, P + 1)
    ring = Kt * n                                       # SBUF: x tiles, then the ring
    sbuf_need = ring + slots * piece
    if sbuf_need > config.sbuf_rows:
        raise ValueError(f"GEMV {K}x{N} needs {sbuf_need} SBUF rows (x: {Kt} x {n}, ring: "
                         f"{slots} x {piece}), the SBUF has {config.sbuf_rows}")
    b_addr = 0
    x_addr = b_addr + Kt * N * n
    dram_need = x_addr + (Kt * n * n if x_in == "dram" else 0)
    if dram_need > config.dram_bytes:
        raise ValueError(f"GEMV {K}x{N} needs {dram_need} DRAM bytes, the DRAM has "
                         f"{config.dram_bytes}")
    image = bytearray(dram_need)
    image[b_addr:x_addr] = bt_rows.tobytes()
    if x_in == "dram":
        image[x_addr:dram_need] = x_rows.tobytes()
        sbuf = None
    else:
        sbuf = np.zeros((config.sbuf_rows, n), dtype=np.int8)
        sbuf[:ring] = x_rows

    def load_piece(p):
        kt, j, rows = pieces[p]
        s = p % slots
        return Command(Op.DMA, sub=DmaKind.LOAD, tag=1 + s, addr=b_addr + (kt * N + j) * n,
                       stride=n, a=ring + s * piece, count=rows)

    def weights(kt):
        return Command(Op.WEIGHTS, buffer=kt % 2, a=kt * n, count=ks[kt])

    commands = []
    if x_in == "dram":
        for row in range(0, Kt * n, _MAX_DMA_ROWS):
            commands.append(Command(Op.DMA, sub=DmaKind.LOAD, tag=0, addr=x_addr + row * n,
                                    stride=n, a=row, count=min(_MAX_DMA_ROWS, Kt * n - row)))
    commands.extend(load_piece(p) for p in range(min(slots - 1, P)))
    if x_in == "dram":
        commands.append(Command(Op.WAIT, tag=0))
    commands.append(weights(0))
    for p, (kt, j, rows) in enumerate(pieces):
        if j == 0 and kt > 0:
            commands.append(weights(kt))
        commands.append(Command(Op.WAIT, tag=1 + p % slots))
        commands.append(Command(Op.MATMUL, buffer=kt % 2, a=ring + (p % slots) * piece, b=j,
                                count=rows, acc=int(kt > 0)))
        if p + slots - 1 < P:
            commands.append(load_piece(p + slots - 1))
    commands.append(Command(Op.HALT))
    if len(commands) > config.commands:
        raise ValueError(f"GEMV {K}x{N} needs {len(commands)} commands, the command memory "
                         f"holds {config.commands}")
    return GemvProgram(config=config, K=K, N=N, x=x[0], B=B, expected=expected, dram=bytes(image),
                       sbuf=sbuf, commands=commands, slots=slots, piece=piece, x_in=x_in,
                       b_addr=b_addr, x_addr=x_addr)


def tile_periods(config, M, gap=1):
    """(a, b): the issue-to-issue distances of consecutive MATMULs of M rows in the
    WEIGHTS/MATMUL sequence on alternating buffers, no DMA stalls: a for odd k, b for even k
    (see :func:`gemm_cycles`). Both are M when M >= 3n - 3. ``gap``: the cycle, counted from a
    MATMUL's issue, in which the next WEIGHTS is looked at (1 in the preloaded program; 2 in
    the DMA program, whose WAIT before each WEIGHTS issues in between): then
    a = max(M, n + gap) and b = max(a, M + 3n - 3 - a)."""
    n = config.n
    a = max(M, n + gap)
    return a, max(a, M + 3 * n - 3 - a)


def gemm_matmul_span(config, M, K, N, dma=False):
    """The cycles from the first MATMUL's issue to the last one's: ceil((T - 1) / 2) a +
    floor((T - 1) / 2) b (:func:`tile_periods`, gap 2 for the DMA program, ``dma=True``, whose
    WAITs issue with no stall and whose DMA commands find the DMA ready)."""
    n = config.n
    T = _ceil(K, n) * _ceil(N, n)
    a, b = tile_periods(config, M, 2 if dma else 1)
    return _ceil(T - 1, 2) * a + (T - 1) // 2 * b


def gemm_cycles(config, M, K, N):
    """The exact cycle count of the compute part of the GEMM: the ``preload=True`` program
    (W_0, X_0, W_1, X_1, ..., W_(T-1), X_(T-1), HALT; W_k = WEIGHTS on buffer k mod 2, X_k =
    MATMUL of m = M rows on it), T = ceil(K / n) x ceil(N / n).

    Derivation from the issue rules, w_k / c_k the issue cycles of W_k / X_k:

    * w_0 = 0 (command 0 from cycle 0, nothing busy); X_0 needs W_0's last write (w_0 + n) <= c,
      so c_0 = n.
    * W_k (k >= 1) is looked at from c_(k-1) + 1; the loader is free from w_(k-1) + n + 1 <=
      c_(k-1) + 1; buffer k mod 2 was last read by X_(k-2), whose last row was presented in
      c_(k-2) + m, so it is free when c + 1 >= c_(k-2) + m + 2n - 2:
      w_k = max(c_(k-1) + 1, c_(k-2) + m + 2n - 3) (the second term only for k >= 2).
    * X_k needs the streamer free (c >= c_(k-1) + m) and W_k's last write w_k + n <= c:
      c_k = max(c_(k-1) + m, w_k + n).

    So d_k = c_k - c_(k-1) = max(m, n + 1, [k >= 2] (m + 3n - 3 - d_(k-1))). With a = max(m,
    n + 1) and P = m + 3n - 3: d_1 = a, d_2 = b = max(a, P - a), d_3 = max(a, P - b) = a (if
    b = P - a then P - b = a; else P - a <= a), and so on: d alternates a, b, a, b, ...
    (a = b = m when m >= 3n - 3: one row per cycle with no gap).

    * HALT is looked at from c_(T-1) + 1 and waits for the array: the last row of X_(T-1) is
      presented in c_(T-1) + m and writes PSUM in c_(T-1) + m + 2n, so HALT issues in
      h = c_(T-1) + m + 2n + 1 and the run lasts h + 1 cycles.

    Total: n + ceil((T - 1) / 2) a + floor((T - 1) / 2) b + m + 2n + 2.
    """
    n = config.n
    T = _ceil(K, n) * _ceil(N, n)
    a, b = tile_periods(config, M)
    return n + _ceil(T - 1, 2) * a + (T - 1) // 2 * b + M + 2 * n + 2


def dram_bound_cycles(config, nbytes, row_bytes=None):
    """The fewest cycles the DRAM channel needs for ``nbytes``: ceil(nbytes / dram_bandwidth),
    and, with ``row_bytes``, at least one cycle per row (the channel completes at most one row
    request per cycle)."""
    bound = _ceil(nbytes, config.dram_bandwidth)
    if row_bytes:
        bound = max(bound, _ceil(nbytes, row_bytes))
    return bound

"""Random valid mesh programs for the lockstep tests (a pure function of a seed).

A program is valid when it never traps and always finishes. Every address, length and color is
chosen in range, and fabric traffic is organised so that it cannot deadlock:

* Streams (a producer core sending ``length`` wavelets along a route to a consumer core) are
  grouped into **phases**. Each core runs its phases in order, and in one phase a core is the
  producer or the consumer of at most one stream. By induction over phases every stream's two
  ends eventually run it, and a consumer always drains its stream, so every stream completes
  however long it is and however the two ends are implemented.
* Each stream has its own color, so routes never conflict.

Between phases each core runs random straight-line code, loops, forward branches, calls and
vector instructions over memory. Each end of a stream is, at random, one vector instruction
(``vmov``/``vadd``/``vmul``/``.sum`` reductions on a fabric descriptor, an accumulation into a
memory destination with the stream as operand a or b, saturating ``vreq.acc`` included,
``vreq.pack``/``vlut.pack`` sending packed words, ``vlut`` of the stream with an index offset or
a requantized index, packed or not) or a scalar loop of ``ld``/``send`` or ``recv``/``st``.
Vector instructions over memory accumulate into their destination (``.acc`` without a
reduction) when their operand b allows it (a register or none), with destinations of every
stride, 0 included; most ``vreq.acc`` follow a ``vreq`` into the same destination (the
residual pattern), so that the saturating sums start from int8 words; ``vreq`` and ``vlut``
pack their results (``.pack``) now and then, and ``vlut`` adds an index offset (a small one,
or whatever its register holds) or requantizes its index (``vlut dd, da, db, rs, shift``, rs a
multiplier of random size, tables of up to 256 words). A quarter of the initial data words are
small signed numbers, so that table indices land inside their tables as well as on both sides.

:data:`DEADLOCK` is the opposite, for the error paths: two cores each waiting for the other.
"""

import random
from dataclasses import dataclass

from mesh import MeshConfig, isa
from mesh.builder import MeshBuilder

# Registers: r1..r10 are free for random code; r11 return address; r12 loop counter;
# r13..r15 stream loops (address, count, value).
# Two cores each receiving first on the color the other sends on: no progress, ever.
DEADLOCK = """
.mesh 2x1
.route (0,0) color 0 from RAMP to E
.route (1,0) color 0 from W to RAMP
.route (1,0) color 1 from RAMP to W
.route (0,0) color 1 from E to RAMP
.core a (0,0)
    recv r1, r0, 1
    halt
.core b (1,0)
    recv r1, r0, 0
    halt
"""

FREE = range(1, 11)
LINK, LOOP, STREAM_ADDRESS, STREAM_COUNT, STREAM_VALUE = 11, 12, 13, 14, 15
DATA_WORDS = 64            # random initial data at 0..63
SCRATCH = (64, 200)        # where random code writes
STREAM_AREA = 200          # where stream ends read and write (up to 256)

R_OPS = ["add", "sub", "mul", "mulh", "and", "or", "xor", "sll", "srl", "sra", "slt", "sltu",
         "min", "max"]
I_OPS = ["addi", "andi", "ori", "xori", "slli", "srli", "srai", "slti"]
VECTOR_BINARY = sorted(isa.BINARY_VECTOR)
BRANCHES = ["beq", "bne", "blt", "bge"]


@dataclass
class ProgramCase:
    seed: int
    program: object
    streams: list

    def describe(self):
        cfg = self.program.config
        lines = [f"seed {self.seed}: {cfg}"]
        lines += [f"  stream color {c}: {src} -> {dst}, {n} wavelets, phase {p}"
                  for p, c, src, dst, n in self.streams]
        return "\n".join(lines)


def random_program(seed, config):
    rng = random.Random(seed)
    mb = MeshBuilder(config, f"fuzz{seed}")
    tiles = mb.all_tiles()
    cores = {t: mb.core(*t, f"fuzz{seed}@{t}") for t in tiles}
    for x, y in tiles:
        mb.data(x, y, 0, [rng.getrandbits(32) if rng.random() < 0.75 else rng.randint(-20, 20)
                          for _ in range(DATA_WORDS)])

    streams = _plan_streams(rng, config, mb)
    by_phase = {}
    for stream in streams:
        by_phase.setdefault(stream[0], []).append(stream)
    phases = max(by_phase, default=-1) + 1
    labels = iter(range(1 << 30))

    for tile, core in cores.items():
        _random_code(rng, core, config, labels)
        # At least three sections of random code, streams or not.
        for phase in range(max(phases, 3)):
            for _, color, src, dst, length in by_phase.get(phase, []):
                if tile == src:
                    _produce(rng, core, color, length, labels)
                elif tile == dst:
                    _consume(rng, core, color, length, labels)
            _random_code(rng, core, config, labels)
        core.halt()
    return ProgramCase(seed, mb.build(), streams)


def _plan_streams(rng, config, mb):
    """Streams as (phase, color, source tile, destination tile, length), routes set in ``mb``."""
    if config.tiles < 2:
        return []
    streams = []
    color = 0
    phase = 0
    while color < config.colors and rng.random() < 0.85:
        busy = set()
        for _ in range(rng.randint(1, max(1, config.tiles // 2))):
            if color >= config.colors:
                break
            free = [t for t in mb.all_tiles() if t not in busy]
            if len(free) < 2:
                break
            src, dst = rng.sample(free, 2)
            busy.update((src, dst))
            mb.routes.chain(color, _xy_path(rng, src, dst))
            streams.append((phase, color, src, dst, rng.choice([1, 2, 3, 5, 8, 13, 24])))
            color += 1
        phase += 1
    return streams


def _xy_path(rng, src, dst):
    """A shortest path from src to dst, x first or y first."""
    (x, y), (tx, ty) = src, dst
    path = [(x, y)]
    order = ["x", "y"] if rng.random() < 0.5 else ["y", "x"]
    for axis in order:
        while (x if axis == "x" else y) != (tx if axis == "x" else ty):
            if axis == "x":
                x += 1 if tx > x else -1
            else:
                y += 1 if ty > y else -1
            path.append((x, y))
    return path


def _produce(rng, core, color, length, labels):
    base = STREAM_AREA + rng.randrange(0, 56 - length + 1)
    if 4 * length <= DATA_WORDS and rng.random() < 0.2:
        # Packed results: 4 x length elements, one wavelet per four (at i mod 4 = 3).
        _memory_vector(rng, core, 0, 4 * length, DATA_WORDS)
        core.fabric_out(2, color, length)
        if rng.random() < 0.5:
            core.vreq(2, 0, f"r{_reg(rng, True)}", rng.randrange(64), pack=True)
        else:
            core.vlut(2, 0, *_lookup(rng, core), pack=True)
    elif rng.random() < 0.6:
        core.mem_vector(0, base, length)
        core.fabric_out(2, color, length)
        op = rng.choice(["vmov", "vadd", "vmul", "vxor"])
        if op == "vmov":
            core.vmov(2, 0)
        else:
            core.emit(op, 2, 0, f"r{rng.choice(list(FREE))}")
    else:
        top = f"send{next(labels)}"
        core.li(STREAM_ADDRESS, base)
        core.li(STREAM_COUNT, length)
        core.label(top)
        core.ld(STREAM_VALUE, 0, STREAM_ADDRESS)
        core.send(STREAM_VALUE, 0, color)
        core.addi(STREAM_ADDRESS, STREAM_ADDRESS, 1)
        core.dbnz(STREAM_COUNT, top)


def _consume(rng, core, color, length, labels):
    base = STREAM_AREA + rng.randrange(0, 56 - length + 1)
    kind = rng.random()
    if kind < 0.35:
        core.fabric_in(0, color, length)
        core.mem_vector(2, base, length)
        core.vmov(2, 0)
    elif kind < 0.55:
        core.fabric_in(0, color, length)
        core.mem_vector(1, rng.randrange(0, DATA_WORDS - length + 1), length)
        core.mem_vector(2, base, length)
        core.vadd(2, 0, 1)
    elif kind < 0.7:
        core.fabric_in(0, color, length)
        core.emit("vmov", rng.choice(list(FREE)), 0, reduce=rng.choice(["sum", "max"]),
                  acc=rng.random() < 0.5)
    elif kind < 0.8:
        # Accumulate into the destination: dd[i] += a[i] op b[i], the stream as a or b (then
        # a is a memory vector); the destination may overlap itself (stride 0).
        core.fabric_in(0, color, length)
        dest = STREAM_AREA + rng.randrange(0, 56 - length + 1)
        core.mem_vector(2, dest, length, rng.choice([1, 1, 0]))
        op = rng.choice(["vmov", "vadd", "vsub", "vdot4", "vmax8", "vreq"])
        if op == "vmov":
            core.vmov(2, 0, acc=True)
        elif op == "vreq":          # saturating: dd[i] = sat8(dd[i] + rq(a[i]))
            core.vreq(2, 0, f"r{_reg(rng, True)}", rng.randrange(64), acc=True)
        elif rng.random() < 0.5:
            core.emit(op, 2, 0, f"r{_reg(rng, True)}", acc=True)
        else:
            core.mem_vector(1, rng.randrange(0, DATA_WORDS - length + 1), length)
            core.emit(op, 2, 1, 0, acc=True)
    elif kind < 0.88:
        # Table lookups of the stream, with an index offset; packed when the length allows.
        core.fabric_in(0, color, length)
        lookup = _lookup(rng, core)
        pack = length % 4 == 0 and rng.random() < 0.6
        core.mem_vector(2, base, length // 4 if pack else length)
        core.vlut(2, 0, *lookup, pack=pack)
    else:
        top = f"recv{next(labels)}"
        core.li(STREAM_ADDRESS, base)
        core.li(STREAM_COUNT, length)
        core.label(top)
        core.recv(STREAM_VALUE, 0, color)
        core.st(STREAM_VALUE, 0, STREAM_ADDRESS)
        core.addi(STREAM_ADDRESS, STREAM_ADDRESS, 1)
        core.dbnz(STREAM_COUNT, top)


def _random_code(rng, core, config, labels, depth=0):
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.3:
            _alu(rng, core)
        elif kind < 0.45:
            _memory(rng, core)
        elif kind < 0.7:
            _vector(rng, core)
        elif kind < 0.8 and depth == 0:
            top = f"loop{next(labels)}"
            core.li(LOOP, rng.randint(1, 3))
            core.label(top)
            _random_code(rng, core, config, labels, depth + 1)
            _alu(rng, core)
            core.dbnz(LOOP, top)
        elif kind < 0.9:
            skip = f"skip{next(labels)}"
            core.emit(rng.choice(BRANCHES), _reg(rng, zero=True), _reg(rng, zero=True), skip)
            _alu(rng, core)
            core.label(skip)
        else:
            after = f"after{next(labels)}"
            if rng.random() < 0.5:
                core.jal(LINK, after)
            else:
                core.addi(LINK, 0, after)
                core.jr(LINK)
            _alu(rng, core)
            core.label(after)


def _reg(rng, zero=False):
    return rng.choice(([0] if zero else []) + list(FREE))


def _alu(rng, core):
    kind = rng.random()
    if kind < 0.45:
        core.emit(rng.choice(R_OPS), _reg(rng), _reg(rng, True), _reg(rng, True))
    elif kind < 0.8:
        op = rng.choice(I_OPS)
        zero_extend = isa.BY_NAME[op].zero_extend
        imm = rng.randrange(0, 1 << 18) if zero_extend else rng.randrange(-(1 << 17), 1 << 17)
        core.emit(op, _reg(rng), _reg(rng, True), imm)
    elif kind < 0.88:
        core.clz(_reg(rng), _reg(rng, True))
    elif kind < 0.94:
        core.lui(_reg(rng), rng.randrange(0, 1 << 18))
    else:
        core.tid(_reg(rng), rng.randrange(len(isa.TID_SELECTORS)))


def _memory(rng, core):
    if rng.random() < 0.5:
        core.ld(_reg(rng), rng.randrange(0, SCRATCH[1]), 0)
    else:
        core.st(_reg(rng, True), rng.randrange(*SCRATCH), 0)


def _vector(rng, core):
    """One vector instruction over memory vectors, all in range."""
    op = rng.choice(VECTOR_BINARY + ["vmov", "vreq", "vreq", "vpack", "vlut"])
    n = rng.choice([0, 1, 2, 3, 4, 7, 8, 12])
    if op == "vpack":
        n -= n % 4
    _memory_vector(rng, core, 0, n, DATA_WORDS)
    reduce = None
    if op not in ("vpack", "vlut") and rng.random() < 0.3:
        reduce = rng.choice(["sum", "max"])
    # acc without a reduction: dd[i] += result[i] (needs b not a memory vector).
    acc_dest = (reduce is None and op in isa.REDUCIBLE
                and rng.random() < (0.6 if op == "vreq" else 0.35))
    # .pack (vreq, vlut; not with a reduction or acc): four results to a word, as vpack.
    pack = (op in isa.PACKABLE and reduce is None and not acc_dest and n % 4 == 0
            and rng.random() < 0.4)
    if reduce is None:
        _memory_vector(rng, core, 2, n // 4 if op == "vpack" or pack else n, SCRATCH[1],
                       low=SCRATCH[0])
        dest = 2
    else:
        dest = _reg(rng)
    if op == "vreq":
        shift = rng.randrange(64)
        if acc_dest and rng.random() < 0.7:
            # The residual pattern x = rq(a); x = sat8(x + rq(a')): int8 words in dd, so that
            # the saturating sums land on both sides of -128..127.
            core.vreq(dest, 0, _multiplier(rng, core), rng.randrange(16))
            _memory_vector(rng, core, 0, n, DATA_WORDS)
            shift = rng.randrange(16)
        core.vreq(dest, 0, _multiplier(rng, core) if acc_dest else f"r{_reg(rng, True)}", shift,
                  reduce=reduce, acc=acc_dest or reduce is not None and rng.random() < 0.5,
                  pack=pack)
    elif op == "vlut":
        core.vlut(dest, 0, *_lookup(rng, core), pack=pack)
    elif op in ("vmov", "vpack"):
        core.emit(op, dest, 0, reduce=reduce,
                  acc=acc_dest or reduce is not None and rng.random() < 0.5)
    else:
        if acc_dest or rng.random() < 0.3:
            operand = f"r{_reg(rng, True)}"
        else:
            _memory_vector(rng, core, 1, n, DATA_WORDS)
            operand = 1
        core.emit(op, dest, 0, operand, reduce=reduce,
                  acc=acc_dest or reduce is not None and rng.random() < 0.5)


def _table(rng, core, large=False):
    """Descriptor d1 = a vlut table: 1..16 words inside the initial data, or (``large``) 1..16
    or 100..256 words anywhere in the SRAM (a requantized index is 0..255); returns 1."""
    if large and rng.random() < 0.6:
        length = rng.randint(100, 256)
        core.mem_vector(1, rng.randrange(0, 256 - length + 1), length)
        return 1
    length = rng.randint(1, 16)
    core.mem_vector(1, rng.randrange(0, DATA_WORDS - length + 1), length)
    return 1


def _lookup(rng, core):
    """vlut's operands after da: the table (d1) and the optional index operands: none (r0)
    40% of the time, an index offset rs (a small one, or whatever its register holds) 35%,
    else rs and a shift > 0, the requantized index requantize(a, rs, shift) + 128, rs a
    multiplier of a random size (or whatever its register holds). Returns [1] + operands."""
    kind = rng.random()
    if kind < 0.4:
        return [_table(rng, core)]
    rs = _reg(rng, zero=True)
    if kind < 0.75:
        if rs and kind < 0.65:
            core.li(rs, rng.randint(-20, 20))
        return [_table(rng, core), f"r{rs}"]
    multiplier = _multiplier(rng, core) if rs else "r0"
    shift = rng.choice([rng.randint(1, 12), rng.randint(1, 63)])
    return [_table(rng, core, large=True), multiplier, shift]


def _multiplier(rng, core):
    """A register for a requantize multiplier: most of the time loaded with a random value of
    random size (0 .. 2^17 in magnitude), else whatever it holds. Returns its name."""
    rs = _reg(rng)
    if rng.random() < 0.8:
        core.li(rs, rng.randint(-(1 << rng.randrange(18)), 1 << rng.randrange(18)))
    return f"r{rs}"


def _memory_vector(rng, core, d, n, limit, low=0):
    """Descriptor d = a random memory vector of n elements inside [low, limit)."""
    stride = rng.choice([1, 1, 1, 2, 3, -1, -2, 0])
    span = abs(stride) * (n - 1) if n else 0
    if span >= limit - low:
        stride, span = 1, max(n - 1, 0)
    first = rng.randrange(low, limit - span)
    base = first + span if stride < 0 else first
    core.mem_vector(d, base, n, stride)


SHAPES = [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2), (2, 3), (4, 4)]


def random_config(rng):
    width, height = rng.choice(SHAPES)
    return MeshConfig(width=width, height=height, colors=rng.choice([2, 4, 8]),
                      buffer_depth=rng.choice([1, 2, 3]), sram_words=256, imem_words=512)

"""The program of every core of a mesh decode step (see :mod:`.plan` for the tiling).

One step, all cores in the same phase order (every color has one sender per receiving queue, so
messages meet their receivers in program order):

1. embedding (south row): x = sat8(tok_emb[token] + pos_emb[pos]), unpacked to int32;
2. per layer (a loop over identical per-layer SRAM blocks addressed from r15, or unrolled):
   RMS norm (south row; the sum of squares is a row all-reduce, the east end takes rsqrt by
   clz and table), GEMV type A W_qkv, requantize q, k, v (east column) and send them west along
   each row, append k to the KV cache on the core that owns the position, scores, softmax
   (row all-reduces of the max and of the sum, the east end takes the reciprocals; v goes
   into the cache while the max goes round), P V, the row reduction of o, GEMV type B W_o,
   residual, RMS norm, GEMV type A W1, GELU by table, GEMV type B W2, residual;
3. final RMS norm, GEMV type A W_out, argmax (key = logit x 2^b + (2^b - 1 - index), a max down
   the east column), the token back to every core (UP the east column, WEST along every row),
   the step state updated; loop while steps remain and the token is not END.

Registers: r15 the layer block base and r13 the layer's KV cache base (loop mode), r14 the
layer counter, r12 the return address of the recip / rsqrt subroutines; r1..r11 are scratch
within a phase (nothing lives in a register from one phase to the next).
"""

from mesh import Port, checkerboard_color
from mesh.builder import CoreBuilder
from programs.integer_ops import PROB_SHIFT, RECIP_SHIFT, RSQRT_SHIFT

from .plan import BYPASS, COLORS, LAYER_CONSTS

__all__ = ["CoreGen", "add_routes", "gemv_form"]

ROW = (COLORS["ROW0"], COLORS["ROW1"])
COL = (COLORS["COL0"], COLORS["COL1"])
UP, WEST, GROUP_UP = COLORS["UP"], COLORS["WEST"], COLORS["GROUP_UP"]
RL, RKV, RCOUNT, RLINK = 15, 13, 14, 12
BASES = (0, RL, RKV)        # registers whose bases the descriptor cache may assume
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

assert RECIP_SHIFT == 30 and RSQRT_SHIFT == 30    # the subroutines need no saturation then


UNROLL = 32      # loops over more outputs or input words than this stay loops (code size)


def gemv_form(n_out, kw):
    """The cheaper way for one core to compute n_out dot products of kw packed words: "row"
    (a ``vdot4.sum`` per output: n_out x (kw + 4) cycles unrolled, kw + 6 in a loop) or "acc"
    (per input word, the word loaded into a register and one ``vdot4.acc`` of it with that
    word of every output's row, accumulating into the outputs: kw x (n_out + 5) unrolled,
    n_out + 7 in a loop)."""
    row = n_out * (kw + (4 if n_out <= UNROLL else 6))
    acc = kw * (n_out + (5 if kw <= UNROLL else 7))
    return "acc" if acc <= row else "row"


def add_routes(routes, geo):
    """The routes of every color (see :data:`.plan.COLORS`)."""
    W, H = geo.W, geo.H
    for y in range(H):
        if W > 1:
            routes.row_reduce_chain(y, ROW, toward=Port.E)
            routes.row_multicast(WEST, y, W - 1)
        if geo.split:             # core (split - 1, y) straight to core (W - 1, y)
            routes.chain(BYPASS, [(x, y) for x in range(geo.split - 1, W)])
    for x in range(W):
        if H > 1:
            routes.column_reduce_chain(x, COL, toward=Port.S)
            routes.column_multicast(UP, x, H - 1)
        g = geo.g
        if g > 1:
            for y0 in range(0, H, g):
                last = y0 + g - 1
                routes.set(x, last, GROUP_UP, inputs=Port.RAMP, outputs=Port.N)
                for y in range(y0, last):
                    outs = [Port.RAMP] + ([Port.N] if y > y0 else [])
                    routes.set(x, y, GROUP_UP, inputs=Port.S, outputs=outs)


class Emitter:
    """Descriptor allocation and set-up: a vector operand is given as a spec (a memory vector
    ("mem", reg, imm, length, stride) or a fabric stream ("fin"/"fout", color, length)), and
    :meth:`operands` finds a descriptor already holding it or the one needing the fewest set-up
    instructions (least recently used on ties). What each descriptor holds is known in
    straight-line code and across forward branches (the states meet at the label); a loop head
    forgets everything. Bases relative to r15 are known while r15 does not change; other
    register bases and run-time lengths ("r", k) are never assumed."""

    def __init__(self, core):
        self.c = core
        self._labels = 0
        self._clock = 0
        self.used = [0] * 8
        self.pending = {}          # label -> [states at the branches to it]
        self.forget()

    def forget(self):
        self.desc = [dict() for _ in range(8)]

    def new_label(self, hint="L"):
        self._labels += 1
        return f"{hint}_{self._labels}"

    def loop_label(self, name):
        self.c.label(name)
        self.forget()

    def label(self, name):
        """A forward label: the state is what every path to it agrees on."""
        self.c.label(name)
        for other in self.pending.pop(name, []):
            for d in range(8):
                mine, theirs = self.desc[d], other[d]
                self.desc[d] = {k: v for k, v in mine.items() if theirs.get(k) == v}

    def branch(self, op, ra, rb, target):
        getattr(self.c, op)(ra, rb, target)
        self.pending.setdefault(target, []).append([dict(d) for d in self.desc])

    def r15_changed(self):
        for d in range(8):
            if self.desc[d].get("base", (0,))[0] in (RL, RKV):
                self.desc[d].pop("base")

    def advanced(self, d):
        self.desc[d].pop("base", None)

    @staticmethod
    def _cacheable(spec):
        return not isinstance(spec[-1 if spec[0] != "mem" else 3], tuple) and \
            (spec[0] != "mem" or spec[1] in BASES)

    def _cost(self, d, spec):
        st = self.desc[d]
        if spec[0] == "mem":
            _, reg, imm, length, stride = spec
            cost = int(st.get("kind") != "mem" or reg not in BASES
                       or st.get("base") != (reg, imm))
            cost += int(isinstance(length, tuple) or st.get("len") != length)
            cost += int(st.get("stride") != stride)
        else:
            kind, color, length = spec
            cost = int(st.get("kind") != kind or st.get("color") != color)
            cost += int(isinstance(length, tuple) or st.get("len") != length)
        return cost

    def _setup(self, d, spec):
        st, c = self.desc[d], self.c
        if spec[0] == "mem":
            _, reg, imm, length, stride = spec
            if st.get("kind") != "mem" or reg not in BASES or st.get("base") != (reg, imm):
                c.dmem(d, reg, imm)
                st["kind"] = "mem"
                if reg in BASES:
                    st["base"] = (reg, imm)
                else:
                    st.pop("base", None)
            self._length(d, length)
            if st.get("stride") != stride:
                c.dstride(d, 0, stride)
                st["stride"] = stride
        else:
            kind, color, length = spec
            if st.get("kind") != kind or st.get("color") != color:
                (c.dfin if kind == "fin" else c.dfout)(d, 0, color)
                st["kind"], st["color"] = kind, color
            self._length(d, length)

    def _length(self, d, length):
        st = self.desc[d]
        if isinstance(length, tuple):
            self.c.dlen(d, length[1], 0)
            st.pop("len", None)
        elif st.get("len") != length:
            self.c.dlen(d, 0, length)
            st["len"] = length

    def operands(self, *specs):
        chosen, pinned = {}, set()
        # operands a descriptor already holds keep it; the others then take the cheapest rest
        held = lambda spec: any(self._cost(d, spec) == 0 for d in range(8))
        for spec in sorted(dict.fromkeys(specs), key=lambda spec: not held(spec)):
            free = [d for d in range(8) if d not in pinned]
            best = min(free, key=lambda d: (self._cost(d, spec), self.used[d]))
            self._setup(best, spec)
            chosen[spec] = best
            pinned.add(best)
            self._clock += 1
            self.used[best] = self._clock
        return [chosen[s] for s in specs]


def FI(color, n):
    return ("fin", color, n)


def FO(color, n):
    return ("fout", color, n)


class CoreGen:
    """Builds the :class:`CoreBuilder` of core (x, y).

    ``shifts`` {op: shift immediate} and ``loop`` (one layer body over per-layer blocks, the
    multipliers pre-scaled to a common shift) come from the compiler; ``norm_shifts`` are the
    model's; ``pre_shift`` {"ns1"/"ns2": whether the loop needs a pre-shift}; ``layer`` is the
    layer being generated when unrolled; ``keep``: the traced intermediates are kept (copies of
    the residual's values). ``receive`` (color, token words, header words): the
    program first takes its decode state and the prompt's KV cache from a delivery
    (:mod:`programs.kv_message`'s layout) on that color (:meth:`receive_prelude`)."""

    def __init__(self, geo, core_plan, x, y, *, loop, shifts, norm_shifts, pre_shift=None,
                 receive=None, keep=True):
        self.geo, self.cp = geo, core_plan
        self.i, self.j = x, y
        self.east, self.south = x == geo.W - 1, y == geo.H - 1
        self.loop, self.shifts, self.norm_shifts = loop, shifts, norm_shifts
        self.pre_shift = pre_shift or {"ns1": loop, "ns2": loop}
        self.receive = receive
        self.keep = keep
        self.c = CoreBuilder(f"decode@({x},{y})")
        self.e = Emitter(self.c)
        self.layer = None
        self.marks = []           # (first pc, end pc, phase) for the cycle breakdown
        self._phase = None

    def phase(self, name):
        pc = self.c.pc
        if self._phase is not None and self._phase[0] < pc:
            self.marks.append((self._phase[0], pc, self._phase[1]))
        self._phase = (pc, name)

    # Addresses and operands ------------------------------------------------------------------

    def A(self, name, offset=0):
        """(register, immediate) of SRAM region ``name`` (+ offset)."""
        cp = self.cp
        if name in ("k", "vt"):
            if self.loop:
                return (RKV, cp.kv_offset(name) + offset)
            return (0, cp.addr(name, self.layer) + offset)
        if name in cp.block:
            if self.loop:
                return (RL, cp.block[name].address + offset)
            return (0, cp.addr(name, self.layer) + offset)
        return (0, cp.regions[name].address + offset)

    def M(self, name, length, offset=0, stride=1):
        reg, imm = self.A(name, offset)
        return ("mem", reg, imm, length, stride)

    def ld(self, rd, name, offset=0):
        reg, imm = self.A(name, offset)
        self.c.ld(rd, imm, reg)

    def st(self, rs, name, offset=0):
        reg, imm = self.A(name, offset)
        self.c.st(rs, imm, reg)

    def la(self, rd, name, offset=0):
        reg, imm = self.A(name, offset)
        self.c.addi(rd, reg, imm)

    def const(self, rd, op):
        self.ld(rd, "consts", LAYER_CONSTS.index(op))

    def shift(self, op):
        return self.shifts[op] if self.loop else self.shifts[op][self.layer]

    def V(self, op, dd, da, db=None, *, shift=None, reduce=None, acc=False, pack=False,
          offset=None):
        """Vector instruction ``op`` with operands given as specs (tuples), registers (ints;
        "rN" strings for a scalar operand) or descriptors; ``offset``: vlut's index offset
        register."""
        specs = [x for x in (dd, da, db) if isinstance(x, tuple)]
        index = dict(zip(specs, self.e.operands(*specs)))
        conv = lambda x: index[x] if isinstance(x, tuple) else x
        args = [conv(dd), conv(da)] + ([conv(db)] if db is not None else [])
        if offset is not None:
            args.append(offset)
        if shift is not None:
            args.append(shift)
        getattr(self.c, op)(*args, reduce=reduce, acc=acc, pack=pack)

    def rowc(self, x):
        return checkerboard_color(x, self.j, *ROW)

    def colc(self, y):
        return checkerboard_color(self.i, y, *COL)

    # Building blocks ------------------------------------------------------------------------------

    def row_links(self, split=False):
        """(colors this core receives partial results on, color it sends on) in a reduction
        along the row toward the east core: one chain, or (``split``, for single words: a
        stream would share the links east of the split with the second chain) with a split
        at column m two (0..m-1 and m..W-2), the first one's sum going from core m - 1
        straight to the east core on BYPASS."""
        W, i, m = self.geo.W, self.i, self.geo.split if split else 0
        if self.east:
            return ([self.rowc(i - 1)] if W > 1 else []) + ([BYPASS] if m else []), None
        receives = [self.rowc(i - 1)] if 0 < i != m else []
        return receives, BYPASS if m and i == m - 1 else self.rowc(i)

    def row_allreduce_reg(self, op, east_fn=None, idle_fn=None, first_fn=None):
        """r1 of every core of this row becomes the op (add / max) of r1 over the row;
        ``east_fn`` runs on the east core in between (on r1), ``idle_fn`` on the others while
        they wait (and on the east core after it has sent the result back), ``first_fn`` on
        the east core before it waits for the row (neither may touch r1)."""
        c, W = self.c, self.geo.W
        sop = c.add if op == "add" else c.max
        if self.east and first_fn is not None:
            first_fn()
        receives, send = self.row_links(split=True)
        for color in receives:
            c.recv(2, 0, color)
            sop(1, 1, 2)
        if send is not None:
            c.send(1, 0, send)
        if self.east:
            if east_fn is not None:
                east_fn()
            if W > 1:
                c.send(1, 0, WEST)
            if idle_fn is not None:
                idle_fn()
        else:
            if idle_fn is not None:
                idle_fn()
            c.recv(1, 0, WEST)

    def row_allreduce(self, buf, n, op, east_fn=None, idle_fn=None, first_fn=None):
        """As :meth:`row_allreduce_reg` for ``buf`` (n words in SRAM), word by word."""
        c, W = self.c, self.geo.W
        sop = c.add if op == "add" else c.max
        if self.east and first_fn is not None:
            first_fn()
        receives, send = self.row_links(split=True)
        if W > 1:
            for k in range(n):
                self.ld(1, buf, k)
                for color in receives:
                    c.recv(2, 0, color)
                    sop(1, 1, 2)
                if send is not None:
                    c.send(1, 0, send)
                else:
                    self.st(1, buf, k)
        if self.east:
            if east_fn is not None:
                east_fn()
            if W > 1:
                for k in range(n):
                    self.ld(1, buf, k)
                    c.send(1, 0, WEST)
            if idle_fn is not None:
                idle_fn()
        else:
            if idle_fn is not None:
                idle_fn()
            for k in range(n):
                c.recv(1, 0, WEST)
                self.st(1, buf, k)

    def chain_sum(self, buf, n, out, receives, send):
        """A streaming reduction: ``buf`` (n words) plus what arrives on ``receives`` (one
        chain: at most one color) goes on to ``send``; the last core (send None) stores the
        sum at ``out``."""
        if n == 0 or (not receives and send is None):
            return
        (recv,) = receives or (None,)
        if recv is None:
            self.V("vmov", FO(send, n), self.M(buf, n))
        elif send is not None:
            self.V("vadd", FO(send, n), FI(recv, n), self.M(buf, n))
        else:
            self.V("vadd", self.M(out, n), FI(recv, n), self.M(buf, n))

    def row_reduce(self, buf, n):
        """The sum over the row of ``buf`` (n words), into ``buf`` on the east core."""
        self.chain_sum(buf, n, buf, *self.row_links())

    def gemv_a(self, src, recv_buf, n_out, block, out):
        """Type A: the packed input ``src`` of the south row goes up every column; each core
        computes the partial sums of this row's n_out outputs over its column slice; they are
        summed on their way east; the east core stores them at ``out``."""
        geo = self.geo
        kw = geo.cdw
        x = src if self.south else recv_buf
        if geo.H > 1:
            if self.south:
                self.V("vmov", FO(UP, kw), self.M(x, kw))
            else:
                self.V("vmov", self.M(x, kw), FI(UP, kw))
        receives, send = self.row_links()
        part = "gp" if send is not None else out
        self.partials(n_out, block, x, kw, part)
        self.chain_sum(part, n_out, out, receives, send)

    def gemv_b(self, src, n_out, block, out):
        """Type B: the packed input ``src`` of the east core goes west along the row; partial
        sums of this column's n_out outputs are summed on their way south; the south core
        stores them."""
        geo, j = self.geo, self.j
        kw = {"opk": geo.rdw, "gpk": geo.frw}[src]
        x = src if self.east else "yin"
        if geo.W > 1:
            if self.east:
                self.V("vmov", FO(WEST, kw), self.M(x, kw))
            else:
                self.V("vmov", self.M(x, kw), FI(WEST, kw))
        receives = [self.colc(j - 1)] if j > 0 else []
        send = self.colc(j) if j < geo.H - 1 else None
        part = "gp" if send is not None else out
        self.partials(n_out, block, x, kw, part)
        self.chain_sum(part, n_out, out, receives, send)

    def partials(self, n_out, block, x, kw, dest):
        """dest[o] = sum over the kw words w of dot4(block[o][w], x[w]) for o < n_out, in the
        form :func:`gemv_form` picks: "row" (one vdot4.sum per output) or "acc" (the block
        word-major: per input word w, x[w] into a register and ``vdot4.acc dest, block[w],
        x[w]``, the first without .acc), unrolled up to :data:`UNROLL` outputs or words (a
        loop adds two scalar instructions per output or word)."""
        e, c = self.e, self.c
        if n_out == 0:
            return
        if gemv_form(n_out, kw) == "row":
            dw, dx = e.operands(self.M(block, kw), self.M(x, kw))
            if n_out <= UNROLL:
                for o in range(n_out):
                    c.vdot4(1, dw, dx, reduce="sum")
                    self.st(1, dest, o)
                    if o < n_out - 1:
                        c.dadv(dw, 0, kw)
                e.advanced(dw)
                return
            c.li(3, n_out)
            self.la(2, dest)
            top = e.new_label("dot")
            e.loop_label(top)
            c.vdot4(1, dw, dx, reduce="sum")
            c.st(1, 0, 2)
            c.addi(2, 2, 1)
            c.dadv(dw, 0, kw)
            c.dbnz(3, top)
            e.advanced(dw)
            return
        wspec, acc = self.M(block, n_out), self.M(dest, n_out)
        dw, da = e.operands(wspec, acc)
        if kw <= UNROLL:
            for w in range(kw):
                self.ld(1, x, w)
                c.vdot4(da, dw, "r1", acc=w > 0)
                if w < kw - 1:
                    c.dadv(dw, 0, n_out)
        else:
            self.ld(1, x)
            c.vdot4(da, dw, "r1")
            self.la(2, x, 1)
            c.li(3, kw - 1)
            top = e.new_label("acc")
            e.loop_label(top)
            c.ld(1, 0, 2)
            c.dadv(dw, 0, n_out)
            c.vdot4(da, dw, "r1", acc=True)
            c.addi(2, 2, 1)
            c.dbnz(3, top)
        e.advanced(dw)

    def call(self, name):
        self.c.jal(RLINK, name)          # the subroutines touch no descriptor

    def rmsnorm(self, xbuf, hp, shift, pre=None):
        """South row: hp = rmsnorm(x), packed (``pre``: the layer loop's pre-shift constant,
        applied in the scratch buffer "hs" first)."""
        cd = self.geo.cd
        self.V("vmul", 1, self.M(xbuf, cd), self.M(xbuf, cd), reduce="sum")
        self.row_allreduce_reg("add", lambda: self.call("rsqrt"))
        src = xbuf
        if pre is not None:
            self.const(6, pre)
            self.V("vsll", self.M("hs", cd), self.M(xbuf, cd), "r6")
            src = "hs"
        self.V("vreq", self.M(hp, self.geo.cdw), self.M(src, cd), 1, shift=shift, pack=True)

    def requant(self, src, dst, n, op, src_off=0, dst_off=0, pack=False):
        """dst = rq(src) for the multiplier and shift of ``op`` (packed: n / 4 words)."""
        self.const(5, op)
        self.V("vreq", self.M(dst, n // 4 if pack else n, dst_off), self.M(src, n, src_off), 5,
               shift=self.shift(op), pack=pack)

    def residual(self, acc, op, trace_val, trace_x):
        """South row: xcur = sat8(xcur + rq(acc)), in place (``vreq.acc`` saturates). With
        the intermediates kept, rq(acc) and the new x are also copied to ``trace_val`` and
        ``trace_x``."""
        cd = self.geo.cd
        if self.keep:
            self.requant(acc, trace_val, cd, op)
        self.const(5, op)
        x = self.M("xcur", cd)
        self.V("vreq", x, self.M(acc, cd), 5, shift=self.shift(op), acc=True)
        if self.keep:
            self.V("vmov", self.M(trace_x, cd), x)

    # Phases ------------------------------------------------------------------------------------------

    def derive_state(self):
        """own (this column owns the step's position), nk (slots to attend to), n4 (nk
        rounded up to whole slot words) and nw (slot words) from phase and nloc (r2..r7)."""
        c, e = self.c, self.e
        self.ld(2, "phase")
        c.li(3, self.i)
        c.li(4, 0)
        skip = e.new_label("notown")
        e.branch("bne", 2, 3, skip)
        c.li(4, 1)
        e.label(skip)
        self.st(4, "own")
        self.ld(5, "nloc")
        c.add(5, 5, 4)
        self.st(5, "nk")
        c.addi(6, 5, 3)
        c.srli(7, 6, 2)
        c.slli(6, 7, 2)
        self.st(6, "n4")
        self.st(7, "nw")

    def embedding(self):
        c, geo = self.c, self.geo
        cd, cdw = geo.cd, geo.cdw
        self.ld(1, "token")
        c.li(2, cdw)
        c.mul(1, 1, 2)
        self.ld(3, "pos")
        c.mul(3, 3, 2)
        tok = ("mem", 1, self.cp.addr("tok_emb"), cdw, 1)
        pos = ("mem", 3, self.cp.addr("pos_emb"), cdw, 1)
        self.V("vadd8", self.M("xp", cdw), tok, pos)
        c.li(5, 24)
        x = "x0" if self.keep else "xcur"     # x0: the embedding's trace copy
        for k in range(4):                    # lane k: up to the top byte, then down
            src = "xp"
            if k < 3:
                c.li(4, 24 - 8 * k)
                self.V("vsll", self.M("ut", cdw), self.M("xp", cdw), "r4")
                src = "ut"
            self.V("vsra", self.M(x, cdw, k, stride=4), self.M(src, cdw), "r5")
        if self.keep:
            self.V("vmov", self.M("xcur", cd), self.M("x0", cd))

    def layer_body(self):
        geo, c = self.geo, self.c
        rd, rdw, cd = geo.rd, geo.rdw, geo.cd
        # 1. RMS norm, W_qkv
        if self.south:
            self.phase("norm")
            self.rmsnorm("xcur", "hp1", self.shift("ns1"),
                         pre="ns1" if self.loop and self.pre_shift["ns1"] else None)
        self.phase("gemv")
        self.gemv_a("hp1", "xin", 3 * rd, "wqkv", "qkvacc")
        self.phase("qkv")
        # 2. q and k on the east core, sent west along the row (v follows during the softmax)
        n = 2 * rdw
        if self.east:
            self.requant("qkvacc", "qkvb", rd, "q", pack=True)
            self.requant("qkvacc", "qkvb", rd, "k", src_off=rd, dst_off=rdw, pack=True)
            if geo.W > 1:
                self.V("vmov", FO(WEST, n), self.M("qkvb", n))
        else:
            self.V("vmov", self.M("qkvb", n), FI(WEST, n))
        self.append_k()
        self.phase("attention")
        self.attention()
        # 3. W_o, residual
        self.phase("gemv")
        self.gemv_b("opk", cd, "wo", "aacc")
        if self.south:
            self.phase("elementwise")
            self.residual("aacc", "attn", "a32", "x1")
            self.phase("norm")
            self.rmsnorm("xcur", "hp2", self.shift("ns2"),
                         pre="ns2" if self.loop and self.pre_shift["ns2"] else None)
        # 4. MLP
        self.phase("gemv")
        self.gemv_a("hp2", "xin", geo.fr, "w1", "uacc")
        if self.east:
            self.phase("elementwise")
            fr, gpk = geo.fr, self.M("gpk", geo.frw)
            self.const(7, "gelu")
            table = ("mem", 7, 0, 256, 1)          # entry u + 128 is GELU(u)
            if self.keep:                          # u32: the trace's u
                self.requant("uacc", "u32", fr, "up")
                c.li(6, 128)
                self.V("vlut", gpk, self.M("u32", fr), table, offset="r6", pack=True)
            else:                                  # the lookup requantizes its index
                self.const(6, "up")
                self.V("vlut", gpk, self.M("uacc", fr), table, offset="r6",
                       shift=self.shift("up"), pack=True)
        self.phase("gemv")
        self.gemv_b("gpk", cd, "w2", "facc")
        if self.south:
            self.phase("elementwise")
            self.residual("facc", "down", "f32", "x2")

    def _owner_skip(self):
        skip = self.e.new_label("notowner")
        self.ld(2, "own")                   # r1 may hold a value going round the row
        self.e.branch("beq", 2, 0, skip)
        return skip

    def append_k(self):
        """The core owning this position stores k (a packed row) at its slot."""
        c, rdw = self.c, self.geo.rdw
        skip = self._owner_skip()
        self.ld(6, "nloc")
        c.li(7, rdw)
        c.mul(7, 6, 7)
        if self.loop:
            c.add(7, 7, RKV)
        self.V("vmov", ("mem", 7, self.A("k")[1], rdw, 1), self.M("qkvb", rdw, rdw))
        self.e.label(skip)

    def append_v(self):
        """The owner stores v, one byte per dim into the V cache: word (slot div 4, dim) holds
        the dim of slots 4w..4w+3, one per lane (off the critical path, while the softmax sum
        goes round)."""
        skip = self._owner_skip()
        self.ld(6, "nloc")
        self.store_v(RKV if self.loop else 0, self.A("vt")[1])
        self.e.label(skip)

    def store_v(self, reg, vt):
        """v (qkvb's last rd words, one int32 per dim) into slot r6 of the V cache at
        ``reg`` + ``vt``: its low bytes shifted into the slot's lane and added to the words
        (``vsll.acc``), since a slot is written once into a cache that starts zeroed (positions
        only grow; the message's and the host's images hold zeros past the prompt); clobbers
        r7, r8, r11."""
        c, geo = self.c, self.geo
        rd, rdw = geo.rd, geo.rdw
        c.srli(7, 6, 2)
        c.li(8, rd)
        c.mul(7, 7, 8)
        if reg:
            c.add(7, 7, reg)
        c.andi(8, 6, 3)
        c.slli(8, 8, 3)
        c.li(11, 255)
        tmp = self.M("op", rd)
        self.V("vand", tmp, self.M("qkvb", rd, 2 * rdw), "r11")
        col = ("mem", 7, vt, rd, 1)
        self.V("vsll", col, tmp, "r8", acc=True)     # the slot's lane is still zero

    def attention(self):
        geo, c, e = self.geo, self.c, self.e
        rd, rdw, hl, hd, hw, ml = geo.rd, geo.rdw, geo.hl, geo.hd, geo.hw, geo.ml
        NK = ("r", 3)
        # scores s[hh][slot] = q_hh . k_hh[slot]
        done = e.new_label("noscores")
        self.ld(3, "nk")
        e.branch("beq", 3, 0, done)
        for hh in range(hl):
            dk, dq = e.operands(self.M("k", hw, hh * hw), self.M("qkvb", hw, hh * hw))
            self.ld(3, "nk")
            self.la(2, "s", hh * ml)
            top = e.new_label("score")
            e.loop_label(top)
            c.vdot4(1, dk, dq, reduce="sum")
            c.st(1, 0, 2)
            c.addi(2, 2, 1)
            c.dadv(dk, 0, rdw)
            c.dbnz(3, top)
            e.advanced(dk)
        e.label(done)
        self.ld(3, "nk")
        if geo.g > 1:        # rows sharing a head add their partial scores, then share them
            g, j = geo.g, self.j
            jg = j % g
            sv = self.M("s", NK)
            if jg == 0:
                self.V("vmov", FO(self.colc(j), NK), sv)
            elif jg < g - 1:
                self.V("vadd", FO(self.colc(j), NK), FI(self.colc(j - 1), NK), sv)
            else:
                self.V("vadd", sv, FI(self.colc(j - 1), NK), sv)
            if jg == g - 1:
                self.V("vmov", FO(GROUP_UP, NK), sv)
            else:
                self.V("vmov", sv, FI(GROUP_UP, NK))
        # softmax: max (v, one int32 per dim, goes west while the east core waits for the row)
        self.phase("softmax")

        def send_v():
            self.requant("qkvacc", "qkvb", rd, "v", src_off=2 * rd, dst_off=2 * rdw)
            if geo.W > 1:
                self.V("vmov", FO(WEST, rd), self.M("qkvb", rd, 2 * rdw))

        def receive_v():
            self.V("vmov", self.M("qkvb", rd, 2 * rdw), FI(WEST, rd))
        if hl == 1:
            self.V("vmov", 1, self.M("s", NK), reduce="max")
            self.row_allreduce_reg("max", idle_fn=None if self.east else receive_v,
                                   first_fn=send_v)
            self.st(1, "maxv")
        else:
            for hh in range(hl):
                self.V("vmov", 1, self.M("s", NK, hh * ml), reduce="max")
                self.st(1, "maxv", hh)
            self.row_allreduce("maxv", hl, "max", idle_fn=None if self.east else receive_v,
                               first_fn=send_v)
        # e = exp_table[rq(s - max) + 128] (the lookup requantizes its index), local sums
        self.const(6, "score")
        self.ld(3, "nk")
        t = self.M("t", NK)
        for hh in range(hl):
            self.ld(5, "maxv", hh)
            self.V("vsub", t, self.M("s", NK, hh * ml), "r5")
            ev = self.M("e", NK, hh * geo.ml4)
            self.V("vlut", ev, t, ("mem", 0, self.cp.addr("exp"), 129, 1), offset="r6",
                   shift=self.shift("score"))
            self.V("vmov", 1, ev, reduce="sum")
            if hl > 1:
                self.st(1, "sumv", hh)

        def reciprocals():
            for hh in range(hl):
                if hl > 1:
                    self.ld(1, "sumv", hh)
                self.call("recip")
                if hl > 1:
                    self.st(1, "sumv", hh)
        if hl == 1:
            self.row_allreduce_reg("add", reciprocals, idle_fn=self.append_v)
            c.mov(5, 1)
        else:
            self.row_allreduce("sumv", hl, "add", reciprocals, idle_fn=self.append_v)
        # p = rq(e, r, 23), packed; o_part = sum over slot words w of dot4(V[w], p[w]) (all
        # dims of the head at once, p[w] repeated by a stride-0 operand)
        self.phase("attention")
        N4, NW = ("r", 4), ("r", 8)
        self.ld(4, "n4")
        self.ld(8, "nw")
        for hh in range(hl):
            if hl > 1:
                self.ld(5, "sumv", hh)
            self.V("vreq", self.M("pp", NW), self.M("e", N4, hh * geo.ml4), 5, shift=PROB_SHIFT,
                   pack=True)
            acc, vw, pw = self.M("op", hd, hh * hd), self.M("vt", hd, hh * hd), \
                self.M("pp", hd, stride=0)
            self.V("vdot4", acc, vw, pw)
            dacc, dv, dp, dt = e.operands(acc, vw, pw, self.M("gt", hd))
            done = e.new_label("pvdone")
            c.addi(3, 8, -1)
            e.branch("bge", 0, 3, done)         # nw <= 1
            top = e.new_label("pv")
            e.loop_label(top)
            c.dadv(dv, 0, rd)
            c.dadv(dp, 0, 1)
            c.vdot4(dt, dv, dp)
            c.vadd(dacc, dacc, dt)
            c.dbnz(3, top)
            e.advanced(dv)
            e.advanced(dp)
            e.label(done)
            e.advanced(dv)
            e.advanced(dp)
        self.row_reduce("op", rd)
        if self.east:
            self.requant("op", "opk", rd, "o", pack=True)

    def final(self):
        geo, c, e = self.geo, self.c, self.e
        if self.south:
            self.phase("norm")
            self.rmsnorm("xcur", "hpf", self.norm_shifts[-1])
        self.phase("gemv")
        self.gemv_a("hpf", "xin_f", geo.vn(self.j), "wout", "logits")
        # argmax
        self.phase("argmax")
        if self.east:
            n, b = geo.vn(self.j), geo.key_bits
            if n:
                c.li(4, b)
                keys = self.M("argt", n)
                self.V("vsll", keys, self.M("logits", n), "r4")
                self.V("vadd", 1, keys, self.M("idxc", n), reduce="max")
            else:
                c.li(1, INT32_MIN)
            j, H = self.j, geo.H
            if self.south:            # while the column's keys come down
                self.advance_state()
            if H > 1:
                if j > 0:
                    c.recv(2, 0, self.colc(j - 1))
                    c.max(1, 1, 2)
                if j < H - 1:
                    c.send(1, 0, self.colc(j))
            if self.south:
                mask = (1 << b) - 1
                c.andi(2, 1, mask)
                c.li(3, mask)
                c.sub(1, 3, 2)
        # the token to every core (the others advance the step state while it comes)
        W, H = geo.W, geo.H
        if self.east and self.south:
            if H > 1:
                c.send(1, 0, UP)
            if W > 1:
                c.send(1, 0, WEST)
        elif self.east:
            self.advance_state()
            c.recv(1, 0, UP)
            if W > 1:
                c.send(1, 0, WEST)
        else:
            self.advance_state()
            c.recv(1, 0, WEST)
        self.st(1, "token")
        if self.east and self.south:
            self.ld(2, "outn")
            c.st(1, self.cp.addr("out"), 2)
            c.addi(2, 2, 1)
            self.st(2, "outn")
        # the step state
        self.phase("state")
        self.ld(2, "end")
        e.branch("beq", 1, 2, "finished")
        self.ld(2, "steps")
        c.addi(2, 2, -1)
        self.st(2, "steps")
        c.bne(2, 0, "step")
        e.label("finished")
        c.halt()

    def advance_state(self):
        """The step state the next step starts from, but for the token: the owner's slot
        count, the owning column, the position and what :meth:`derive_state` derives from
        them (r2..r7: it runs while the token is on its way)."""
        c, e = self.c, self.e
        self.ld(2, "own")
        self.ld(3, "nloc")
        c.add(3, 3, 2)
        self.st(3, "nloc")
        self.ld(2, "phase")
        c.addi(2, 2, 1)
        c.li(3, self.geo.W)
        keep = e.new_label("phase")
        e.branch("bne", 2, 3, keep)
        c.li(2, 0)
        e.label(keep)
        self.st(2, "phase")
        self.ld(2, "pos")
        c.addi(2, 2, 1)
        self.st(2, "pos")
        self.derive_state()

    def receive_prelude(self):
        """Take this tile's words of the KV message (:mod:`programs.kv_message`) from the
        delivery on the receive color: every tile of a row sees the row's whole stream (tile 0's
        words first) and keeps its own. From tile 0's first words it learns N (words per tile),
        discards x N of them in all, then stores its token (the low byte of its token words),
        the host's header words (steps, pos, phase, nloc, end; S in r3), K (S slots, straight
        into each layer's K cache) and V (slot by slot: unpacked to one int32 per dim in qkvb,
        then :meth:`store_v`), and discards the words of the tiles east of it. With no steps
        to run, or a token that is the end token, it goes straight to the halt."""
        from programs.kv_message import HEADER_FIELDS
        c, e, geo = self.c, self.e, self.geo
        color, tw, header = self.receive
        rdw = geo.rdw
        # the working buffers (op, qkvb) of layer 0's block
        if self.loop:
            c.li(RL, self.cp.block_base)
        self.layer = 0

        def discard(length):
            if length == 0:
                return
            self.V("vmov", 1, FI(color, length), reduce="sum")

        def lead():                   # a tile's token word in r1, N in r2
            c.recv(1, 0, color)
            discard(tw - 1)
            c.recv(2, 0, color)
        lead()
        own = e.new_label("own")
        c.tid(3, 0)
        e.branch("beq", 3, 0, own)
        c.mul(4, 3, 2)
        c.addi(4, 4, -(tw + 1))
        discard(("r", 4))
        lead()
        e.label(own)
        c.andi(1, 1, 255)
        self.st(1, "token")
        for name in HEADER_FIELDS:
            c.recv(1 if name != "slots" else 3, 0, color)
            if name != "slots":
                self.st(1, name)
        discard(header - tw - 1 - len(HEADER_FIELDS))
        c.li(5, rdw)
        c.mul(4, 3, 5)                              # r4 = S x rdw
        stage, word = self.M("op", rdw), self.M("op", rdw, rdw)
        for layer in range(geo.L):
            self.V("vmov", ("mem", 0, self.cp.addr("k", layer), ("r", 4), 1),
                   FI(color, ("r", 4)))
            c.li(5, 0)                              # r5 = slot
            top = e.new_label("vslot")
            e.loop_label(top)
            self.V("vmov", stage, FI(color, rdw))
            c.li(11, 24)
            for k in range(4):                      # lane k of word w: dim 4 w + k
                c.li(10, 24 - 8 * k)
                self.V("vsll", word, stage, "r10")
                self.V("vsra", self.M("qkvb", rdw, 2 * rdw + k, stride=4), word, "r11")
            c.mov(6, 5)
            self.store_v(0, self.cp.addr("vt", layer))
            c.addi(5, 5, 1)
            c.bne(5, 3, top)
            e.forget()
        c.tid(4, 0)
        c.li(1, geo.W - 1)
        c.sub(4, 1, 4)
        c.mul(4, 4, 2)
        discard(("r", 4))
        self.layer = None
        self.derive_state()
        # nothing to decode: no steps, or the engine's token already ends the answer
        self.ld(1, "steps")
        e.branch("beq", 1, 0, "finished")
        self.ld(1, "token")
        self.ld(2, "end")
        e.branch("beq", 1, 2, "finished")

    # Subroutines: r1 = recip(r1, 30) / rsqrt(r1, 30) as mesh.numerics defines them -----------------

    def subroutines(self):
        if not self.east:
            return
        self.phase("softmax")
        self._normalizing_sub("recip", "recip", rsqrt=False)
        if self.south:
            self.phase("norm")
            self._normalizing_sub("rsqrt", "rsqrt", rsqrt=True)

    def _normalizing_sub(self, name, table, rsqrt):
        c, e = self.c, self.e
        base = self.cp.addr(table) - 128
        pos, small, have, neg = (e.new_label(name + s) for s in ("_pos", "_small", "_m", "_neg"))
        e.loop_label(name)
        c.blt(0, 1, pos)
        c.li(1, INT32_MAX)
        c.jr(RLINK)
        e.loop_label(pos)
        c.clz(2, 1)
        c.li(3, 31)
        c.sub(3, 3, 2)                 # k: a in [2^k, 2^(k+1))
        c.addi(4, 3, -7)
        c.blt(4, 0, small)
        c.srl(5, 1, 4)                 # 128 + m = a >> (k - 7)
        c.jmp(have)
        e.loop_label(small)
        c.sub(4, 0, 4)
        c.sll(5, 1, 4)                 # 128 + m = a << (7 - k)
        e.loop_label(have)
        if rsqrt:
            c.andi(2, 3, 1)
            c.slli(2, 2, 7)
            c.add(5, 5, 2)             # + 128 p
            c.srai(3, 3, 1)            # h = k div 2
        c.ld(5, base, 5)
        c.li(4, 30 - 16)
        c.sub(4, 4, 3)                 # exponent s - 16 - k (or - h)
        c.blt(4, 0, neg)
        c.sll(1, 5, 4)
        c.jr(RLINK)
        e.loop_label(neg)
        c.sub(4, 0, 4)
        c.srl(1, 5, 4)
        c.jr(RLINK)

    # The whole program ------------------------------------------------------------------------

    def build(self):
        c, e, geo = self.c, self.e, self.geo
        if self.receive is not None:
            self.phase("receive")
            self.receive_prelude()
        e.loop_label("step")
        self.phase("embed")          # (the step state is derived: by the host, the prelude
        if self.south:               # or the previous step)
            self.embedding()
        if self.loop:
            c.li(RL, self.cp.block_base)
            c.li(RKV, self.cp.addr("kv"))
            c.li(RCOUNT, geo.L)
            e.loop_label("layer")
            self.layer_body()
            c.addi(RL, RL, self.cp.block_words)
            c.addi(RKV, RKV, self.cp.kv_words)
            e.r15_changed()
            c.dbnz(RCOUNT, "layer")
        else:
            for layer in range(geo.L):
                self.layer = layer
                self.layer_body()
            self.layer = None
        self.final()
        self.subroutines()
        self.phase(None)
        return c

"""The program of every core of a mesh decode step (see :mod:`.plan` for the tiling).

One step, all cores in the same phase order (every color has one sender per receiving queue, so
messages meet their receivers in program order):

1. embedding (south row): x = sat8(tok_emb[token] + pos_emb[pos]), unpacked to int32;
2. per layer (a loop over identical per-layer SRAM blocks addressed from r15, or unrolled):
   RMS norm (south row; the sum of squares is a row all-reduce, the east end takes rsqrt by
   clz and table), GEMV type A W_qkv, requantize q, k, v (east column) and send them west along
   each row, append k, v to the KV cache on the core that owns the position, scores, softmax
   (row all-reduces of the max and of the sum, the east end takes the reciprocals), P V, the
   row reduction of o, GEMV type B W_o, residual, RMS norm, GEMV type A W1, GELU by table,
   GEMV type B W2, residual;
3. final RMS norm, GEMV type A W_out, argmax (key = logit x 2^b + (2^b - 1 - index), a max down
   the east column), the token back to every core (UP the east column, WEST along every row),
   the step state updated; loop while steps remain and the token is not END.

Registers: r15 the layer block base (loop mode), r14 the layer counter, r12 the return address
of the recip / rsqrt subroutines; r1..r11, r13 are scratch within a phase (nothing lives in a
register from one phase to the next).
"""

from mesh import Port, checkerboard_color
from mesh.builder import CoreBuilder
from programs.integer_ops import PROB_SHIFT, RECIP_SHIFT, RSQRT_SHIFT

from .plan import COLORS, LAYER_CONSTS

__all__ = ["CoreGen", "add_routes", "gemv_form"]

ROW = (COLORS["ROW0"], COLORS["ROW1"])
COL = (COLORS["COL0"], COLORS["COL1"])
UP, WEST, GROUP_UP = COLORS["UP"], COLORS["WEST"], COLORS["GROUP_UP"]
RL, RCOUNT, RLINK = 15, 14, 12
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

assert RECIP_SHIFT == 30 and RSQRT_SHIFT == 30    # the subroutines need no saturation then


def gemv_form(n_out, kw):
    """The cheaper way for one core to compute n_out dot products of kw packed words: "row"
    (a vdot4.sum per output: n_out x (kw + 6) cycles) or "col" (a vdot4 and a vadd per input
    word over all outputs: about (2 kw - 1) x n_out + 6 kw)."""
    row = n_out * (kw + 6)
    col = (n_out + 3) + (kw - 1) * (2 * n_out + 7)
    return "col" if col < row else "row"


def add_routes(routes, geo):
    """The routes of every color (see :data:`.plan.COLORS`)."""
    W, H = geo.W, geo.H
    for y in range(H):
        if W > 1:
            routes.row_reduce_chain(y, ROW, toward=Port.E)
            routes.row_multicast(WEST, y, W - 1)
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
    """Descriptor set-up that skips fields already known to hold the wanted value (within
    straight-line code: labels, calls and changes of r15 forget everything)."""

    def __init__(self, core):
        self.c = core
        self.forget()
        self._labels = 0

    def forget(self):
        self.desc = [dict() for _ in range(8)]

    def new_label(self, hint="L"):
        self._labels += 1
        return f"{hint}_{self._labels}"

    def label(self, name):
        self.c.label(name)
        self.forget()

    def _field(self, d, key, value, emit):
        if value is None or self.desc[d].get(key) != value:
            emit()
            if value is None:
                self.desc[d].pop(key, None)
            else:
                self.desc[d][key] = value

    def _length(self, d, length):
        if isinstance(length, tuple):          # ("r", register): a run-time length
            self.c.dlen(d, length[1], 0)
            self.desc[d].pop("len", None)
        else:
            self._field(d, "len", length, lambda: self.c.dlen(d, 0, length))

    def mem(self, d, base, length, stride=1):
        reg, imm = (0, base) if isinstance(base, int) else base
        key = (reg, imm) if reg in (0, RL) else None
        if self.desc[d].get("kind") != "mem" or key is None or self.desc[d].get("base") != key:
            self.c.dmem(d, reg, imm)
            self.desc[d]["kind"] = "mem"
            if key is None:
                self.desc[d].pop("base", None)
            else:
                self.desc[d]["base"] = key
        self._length(d, length)
        self._field(d, "stride", stride, lambda: self.c.dstride(d, 0, stride))

    def fabric(self, d, kind, color, length):
        if self.desc[d].get("kind") != kind or self.desc[d].get("color") != color:
            (self.c.dfin if kind == "fin" else self.c.dfout)(d, 0, color)
            self.desc[d]["kind"], self.desc[d]["color"] = kind, color
        self._length(d, length)

    def fin(self, d, color, length):
        self.fabric(d, "fin", color, length)

    def fout(self, d, color, length):
        self.fabric(d, "fout", color, length)

    def advanced(self, d):
        self.desc[d].pop("base", None)


class CoreGen:
    """Builds the :class:`CoreBuilder` of core (x, y).

    ``shifts`` {op: shift immediate} and ``loop`` (one layer body over per-layer blocks, the
    multipliers pre-scaled to a common shift) come from the compiler; ``norm_shifts`` are the
    model's; ``layer`` is the layer being generated when unrolled."""

    def __init__(self, geo, core_plan, x, y, *, loop, shifts, norm_shifts):
        self.geo, self.cp = geo, core_plan
        self.i, self.j = x, y
        self.east, self.south = x == geo.W - 1, y == geo.H - 1
        self.loop, self.shifts, self.norm_shifts = loop, shifts, norm_shifts
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

    # Addresses ----------------------------------------------------------------------------------

    def A(self, name, offset=0):
        """(register, immediate) of SRAM region ``name`` (+ offset)."""
        cp = self.cp
        if name in cp.block:
            if self.loop:
                return (RL, cp.block[name].address + offset)
            return (0, cp.addr(name, self.layer) + offset)
        return (0, cp.regions[name].address + offset)

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

    def rowc(self, x):
        return checkerboard_color(x, self.j, *ROW)

    def colc(self, y):
        return checkerboard_color(self.i, y, *COL)

    # Building blocks ------------------------------------------------------------------------------

    def row_allreduce(self, buf, n, op, east_fn=None):
        """Every core of this row ends with the element-wise op ("vadd" / "vmax") of ``buf``
        (n words) over the row; ``east_fn`` runs on the east core in between (it may change
        buf). Up to 4 words go word by word through registers (a hop costs a few cycles), more
        as vector streams."""
        e, c, W, i = self.e, self.c, self.geo.W, self.i
        if n > 4:
            return self._row_allreduce_vector(buf, n, op, east_fn)
        sop = c.add if op == "vadd" else c.max
        if W > 1:
            for k in range(n):
                self.ld(1, buf, k)
                if i > 0:
                    c.recv(2, 0, self.rowc(i - 1))
                    sop(1, 1, 2)
                if i < W - 1:
                    c.send(1, 0, self.rowc(i))
                else:
                    self.st(1, buf, k)
        if self.east and east_fn is not None:
            east_fn()
        if W > 1:
            for k in range(n):
                if self.east:
                    self.ld(1, buf, k)
                    c.send(1, 0, WEST)
                else:
                    c.recv(1, 0, WEST)
                    self.st(1, buf, k)

    def _row_allreduce_vector(self, buf, n, op, east_fn):
        e, c, W, i = self.e, self.c, self.geo.W, self.i
        vop = getattr(c, op)
        if W > 1:
            if i == 0:
                e.fout(2, self.rowc(i), n)
                e.mem(0, self.A(buf), n)
                c.vmov(2, 0)
            elif i < W - 1:
                e.fin(1, self.rowc(i - 1), n)
                e.mem(0, self.A(buf), n)
                e.fout(2, self.rowc(i), n)
                vop(2, 1, 0)
            else:
                e.fin(1, self.rowc(i - 1), n)
                e.mem(0, self.A(buf), n)
                e.mem(2, self.A(buf), n)
                vop(2, 1, 0)
        if self.east and east_fn is not None:
            east_fn()
        if W > 1:
            if self.east:
                e.fout(2, WEST, n)
                e.mem(0, self.A(buf), n)
                c.vmov(2, 0)
            else:
                e.fin(0, WEST, n)
                e.mem(2, self.A(buf), n)
                c.vmov(2, 0)

    def chain_sum(self, buf, n, out, recv, send):
        """A streaming reduction: ``buf`` (n words) plus what arrives on ``recv`` goes on to
        ``send``; the last core (send None) stores the sum at ``out``."""
        e, c = self.e, self.c
        if n == 0 or (recv is None and send is None):
            return
        e.mem(0, self.A(buf), n)
        if recv is None:
            e.fout(2, send, n)
            c.vmov(2, 0)
            return
        e.fin(1, recv, n)
        if send is not None:
            e.fout(2, send, n)
        else:
            e.mem(2, self.A(out), n)
        c.vadd(2, 1, 0)

    def row_reduce(self, buf, n, out):
        """The sum over the row of ``buf`` (n words) into ``out`` on the east core."""
        W, i = self.geo.W, self.i
        if W == 1:
            self.e.mem(0, self.A(buf), n)
            self.e.mem(2, self.A(out), n)
            self.c.vmov(2, 0)
            return
        self.chain_sum(buf, n, out, self.rowc(i - 1) if i > 0 else None,
                       self.rowc(i) if i < W - 1 else None)

    def gemv_a(self, src, recv_buf, n_out, block, out):
        """Type A: the packed input ``src`` of the south row goes up every column; each core
        computes the partial sums of this row's n_out outputs over its column slice; they are
        summed on their way east; the east core stores them at ``out``."""
        e, c, geo, i = self.e, self.c, self.geo, self.i
        kw = geo.cdw
        xaddr = self.A(src) if self.south else self.A(recv_buf)
        if geo.H > 1:
            if self.south:
                e.fout(2, UP, kw)
                e.mem(0, xaddr, kw)
            else:
                e.fin(0, UP, kw)
                e.mem(2, xaddr, kw)
            c.vmov(2, 0)
        recv = self.rowc(i - 1) if i > 0 else None
        send = self.rowc(i) if i < geo.W - 1 else None
        self.partials(n_out, block, xaddr, kw, out if recv is None and send is None else
                      (out if send is None else "gp"))
        self.chain_sum("gp" if send is not None else out, n_out, out, recv, send)

    def gemv_b(self, src, n_out, block, out):
        """Type B: the packed input ``src`` of the east core goes west along the row; partial
        sums of this column's n_out outputs are summed on their way south; the south core
        stores them."""
        e, c, geo, j = self.e, self.c, self.geo, self.j
        kw = {"opk": geo.rdw, "gpk": geo.frw}[src]
        xaddr = self.A(src) if self.east else self.A("yin")
        if geo.W > 1:
            if self.east:
                e.fout(2, WEST, kw)
                e.mem(0, xaddr, kw)
            else:
                e.fin(0, WEST, kw)
                e.mem(2, xaddr, kw)
            c.vmov(2, 0)
        recv = self.colc(j - 1) if j > 0 else None
        send = self.colc(j) if j < geo.H - 1 else None
        self.partials(n_out, block, xaddr, kw, out if send is None else "gp")
        self.chain_sum("gp" if send is not None else out, n_out, out, recv, send)

    def partials(self, n_out, block, xaddr, kw, dest):
        """dest[o] = sum over the kw words w of dot4(block[o][w], x[w]) for o < n_out, in the
        form :func:`gemv_form` picks: "row" (one vdot4.sum per output) or "col" (one vdot4 per
        input word over all outputs, x[w] repeated by a stride-0 operand, then vadd)."""
        e, c = self.e, self.c
        if n_out == 0:
            return
        if gemv_form(n_out, kw) == "row":
            e.mem(0, self.A(block), kw)
            e.mem(1, xaddr, kw)
            c.li(3, n_out)
            self.la(2, dest)
            top = e.new_label("dot")
            e.label(top)
            c.vdot4(1, 0, 1, reduce="sum")
            c.st(1, 0, 2)
            c.addi(2, 2, 1)
            c.dadv(0, 0, kw)
            e.advanced(0)
            c.dbnz(3, top)
            return
        e.mem(0, self.A(block), n_out)
        e.mem(1, xaddr, n_out, stride=0)
        e.mem(2, self.A(dest), n_out)
        c.vdot4(2, 0, 1)
        if kw == 1:
            return
        e.mem(3, self.A("gt"), n_out)
        unroll = kw <= 8
        if not unroll:
            c.li(3, kw - 1)
            top = e.new_label("col")
            e.label(top)
        for _ in range(kw - 1 if unroll else 1):
            c.dadv(0, 0, n_out)
            c.dadv(1, 0, 1)
            e.advanced(0)
            e.advanced(1)
            c.vdot4(3, 0, 1)
            c.vadd(2, 2, 3)
        if not unroll:
            c.dbnz(3, top)

    def call(self, name):
        self.c.jal(RLINK, name)
        self.e.forget()

    def rmsnorm(self, xbuf, h32, hp, shift, pre=None):
        """South row: h32 = rmsnorm(x) (int32) and hp (packed)."""
        e, c, cd = self.e, self.c, self.geo.cd
        e.mem(0, self.A(xbuf), cd)
        c.vmul(1, 0, 0, reduce="sum")
        self.st(1, "ss")

        def east_fn():
            self.ld(1, "ss")
            self.call("rsqrt")
            self.st(1, "ss")
        self.row_allreduce("ss", 1, "vadd", east_fn)
        self.ld(5, "ss")
        src = xbuf
        if pre is not None:
            self.const(6, pre)
            e.mem(0, self.A(xbuf), cd)
            e.mem(2, self.A(h32), cd)
            c.vsll(2, 0, "r6")
            src = h32
        e.mem(0, self.A(src), cd)
        e.mem(2, self.A(h32), cd)
        c.vreq(2, 0, 5, shift)
        e.mem(3, self.A(hp), self.geo.cdw)
        c.vpack(3, 2)

    def requant(self, src, dst, n, op, src_off=0, dst_off=0):
        e, c = self.e, self.c
        self.const(5, op)
        e.mem(0, self.A(src, src_off), n)
        e.mem(2, self.A(dst, dst_off), n)
        c.vreq(2, 0, 5, self.shift(op))

    def pack(self, src, dst, n, dst_off=0):
        self.e.mem(2, self.A(src), n)
        self.e.mem(3, self.A(dst, dst_off), n // 4)
        self.c.vpack(3, 2)

    def residual(self, acc, val, xin, xout, op):
        """South row: val = rq(acc); xout = sat8(xin + val)."""
        e, c, cd = self.e, self.c, self.geo.cd
        self.requant(acc, val, cd, op)
        e.mem(0, self.A(xin), cd)
        e.mem(1, self.A(val), cd)
        e.mem(2, self.A(xout), cd)
        c.vadd(2, 0, 1)
        c.li(6, 127)
        c.li(7, -128)
        c.vmin(2, 2, "r6")
        c.vmax(2, 2, "r7")

    # Phases ------------------------------------------------------------------------------------------

    def step_start(self):
        c, e = self.c, self.e
        self.ld(1, "phase")
        c.li(2, self.i)
        c.li(3, 0)
        skip = e.new_label("notown")
        c.bne(1, 2, skip)
        c.li(3, 1)
        e.label(skip)
        self.st(3, "own")
        self.ld(4, "nloc")
        c.add(4, 4, 3)
        self.st(4, "nk")
        c.addi(5, 4, 3)
        c.srli(6, 5, 2)
        c.slli(5, 6, 2)
        self.st(5, "n4")
        self.st(6, "nw")

    def embedding(self):
        c, e, geo = self.c, self.e, self.geo
        cd, cdw = geo.cd, geo.cdw
        self.ld(1, "token")
        c.li(2, cdw)
        c.mul(1, 1, 2)
        self.ld(3, "pos")
        c.mul(3, 3, 2)
        e.mem(0, (1, self.cp.addr("tok_emb")), cdw)
        e.mem(1, (3, self.cp.addr("pos_emb")), cdw)
        e.mem(2, self.A("xp"), cdw)
        c.vadd8(2, 0, 1)
        c.li(5, 24)
        for k in range(4):
            c.li(4, 24 - 8 * k)
            e.mem(0, self.A("xp"), cdw)
            e.mem(2, self.A("ut"), cdw)
            c.vsll(2, 0, "r4")
            e.mem(3, self.A("x0", k), cdw, stride=4)
            c.vsra(3, 2, "r5")
        e.mem(0, self.A("x0"), cd)
        e.mem(2, self.A("xcur"), cd)
        c.vmov(2, 0)

    def layer_body(self):
        geo, c, e = self.geo, self.c, self.e
        rd, rdw, cd = geo.rd, geo.rdw, geo.cd
        loop = self.loop
        # 1. RMS norm, W_qkv
        if self.south:
            self.phase("norm")
            self.rmsnorm("xcur", "h1", "hp1", self.shift("ns1"), pre="ns1" if loop else None)
        self.phase("gemv")
        self.gemv_a("hp1", "xin", 3 * rd, "wqkv", "qkvacc")
        self.phase("qkv")
        # 2. q, k, v on the east core, sent west along the row
        n = 2 * rdw + rd
        if self.east:
            self.requant("qkvacc", "q32", rd, "q")
            self.pack("q32", "qkvb", rd)
            self.requant("qkvacc", "k32", rd, "k", src_off=rd)
            self.pack("k32", "qkvb", rd, dst_off=rdw)
            self.requant("qkvacc", "qkvb", rd, "v", src_off=2 * rd, dst_off=2 * rdw)
            if geo.W > 1:
                e.fout(2, WEST, n)
                e.mem(0, self.A("qkvb"), n)
                c.vmov(2, 0)
        else:
            e.fin(0, WEST, n)
            e.mem(2, self.A("qkvb"), n)
            c.vmov(2, 0)
        self.append_kv()
        self.phase("attention")
        self.attention()
        # 3. W_o, residual
        self.phase("gemv")
        self.gemv_b("opk", cd, "wo", "aacc")
        if self.south:
            self.phase("elementwise")
            self.residual("aacc", "a32", "xcur", "x1", "attn")
            self.phase("norm")
            self.rmsnorm("x1", "h2", "hp2", self.shift("ns2"), pre="ns2" if loop else None)
        # 4. MLP
        self.phase("gemv")
        self.gemv_a("hp2", "xin", geo.fr, "w1", "uacc")
        if self.east:
            self.phase("elementwise")
            fr = geo.fr
            self.requant("uacc", "u32", fr, "up")
            c.li(6, 128)
            e.mem(0, self.A("u32"), fr)
            e.mem(3, self.A("g32"), fr)
            c.vadd(3, 0, "r6")
            e.mem(4, self.A("gelu"), 256)
            c.vlut(3, 3, 4)
            self.pack("g32", "gpk", fr)
        self.phase("gemv")
        self.gemv_b("gpk", cd, "w2", "facc")
        if self.south:
            self.phase("elementwise")
            self.residual("facc", "f32", "x1", "x2", "down")
            e.mem(0, self.A("x2"), cd)
            e.mem(2, self.A("xcur"), cd)
            c.vmov(2, 0)

    def append_kv(self):
        """The core owning this position stores k (a packed row) and v (one byte per dim into
        the transposed cache: lane slot mod 4 of word slot div 4)."""
        geo, c, e = self.geo, self.c, self.e
        rd, rdw = geo.rd, geo.rdw
        skip = e.new_label("noappend")
        self.ld(1, "own")
        c.beq(1, 0, skip)
        self.ld(6, "nloc")
        c.li(7, rdw)
        c.mul(7, 6, 7)
        if self.loop:
            c.add(7, 7, RL)
        e.mem(2, (7, self.A("k")[1]), rdw)
        e.mem(0, self.A("qkvb", rdw), rdw)
        c.vmov(2, 0)
        c.srli(7, 6, 2)
        if self.loop:
            c.add(7, 7, RL)
        c.andi(8, 6, 3)
        c.slli(8, 8, 3)
        c.li(9, 255)
        c.sll(9, 9, 8)
        c.li(10, -1)
        c.xor(9, 9, 10)
        c.li(11, 255)
        e.mem(0, self.A("qkvb", 2 * rdw), rd)
        e.mem(3, self.A("op"), rd)
        c.vand(3, 0, "r11")
        c.vsll(3, 3, "r8")
        e.mem(2, (7, self.A("vt")[1]), rd, stride=geo.vtw)
        c.vand(2, 2, "r9")
        c.vor(2, 2, 3)
        e.label(skip)

    def attention(self):
        geo, c, e = self.geo, self.c, self.e
        rd, rdw, hl, hd, hw, ml = geo.rd, geo.rdw, geo.hl, geo.hd, geo.hw, geo.ml
        NK = ("r", 3)
        # scores s[hh][slot] = q_hh . k_hh[slot]
        done = e.new_label("noscores")
        self.ld(3, "nk")
        c.beq(3, 0, done)
        for hh in range(hl):
            e.mem(0, self.A("k", hh * hw), hw)
            e.mem(1, self.A("qkvb", hh * hw), hw)
            self.ld(3, "nk")
            self.la(2, "s", hh * ml)
            top = e.new_label("score")
            e.label(top)
            c.vdot4(1, 0, 1, reduce="sum")
            c.st(1, 0, 2)
            c.addi(2, 2, 1)
            c.dadv(0, 0, rdw)
            e.advanced(0)
            c.dbnz(3, top)
        e.label(done)
        self.ld(3, "nk")
        if geo.g > 1:        # rows sharing a head add their partial scores, then share them
            g, j = geo.g, self.j
            jg = j % g
            e.mem(0, self.A("s"), NK)
            if jg == 0:
                e.fout(2, self.colc(j), NK)
                c.vmov(2, 0)
            else:
                e.fin(1, self.colc(j - 1), NK)
                if jg < g - 1:
                    e.fout(2, self.colc(j), NK)
                else:
                    e.mem(2, self.A("s"), NK)
                c.vadd(2, 1, 0)
            if jg == g - 1:
                e.fout(2, GROUP_UP, NK)
                e.mem(0, self.A("s"), NK)
                c.vmov(2, 0)
            else:
                e.fin(0, GROUP_UP, NK)
                e.mem(2, self.A("s"), NK)
                c.vmov(2, 0)
        # softmax: max
        self.phase("softmax")
        for hh in range(hl):
            e.mem(0, self.A("s", hh * ml), NK)
            c.vmov(1, 0, reduce="max")
            self.st(1, "maxv", hh)
        self.row_allreduce("maxv", hl, "vmax")
        # e = exp_table[rq(s - max) + 128], local sums
        self.const(6, "score")
        c.li(7, 128)
        self.ld(3, "nk")
        for hh in range(hl):
            self.ld(5, "maxv", hh)
            e.mem(0, self.A("s", hh * ml), NK)
            e.mem(2, self.A("t"), NK)
            c.vsub(2, 0, "r5")
            c.vreq(2, 2, 6, self.shift("score"))
            c.vadd(2, 2, "r7")
            e.mem(3, self.A("e", hh * geo.ml4), NK)
            e.mem(4, self.cp.addr("exp"), 129)
            c.vlut(3, 2, 4)
            c.vmov(1, 3, reduce="sum")
            self.st(1, "sumv", hh)

        def reciprocals():
            for hh in range(hl):
                self.ld(1, "sumv", hh)
                self.call("recip")
                self.st(1, "sumv", hh)
        self.row_allreduce("sumv", hl, "vadd", reciprocals)
        # p = rq(e, r, 23), packed; o_part[dim] = p . v^T[dim]
        self.phase("attention")
        N4, NW = ("r", 4), ("r", 8)
        self.ld(4, "n4")
        self.ld(8, "nw")
        for hh in range(hl):
            self.ld(5, "sumv", hh)
            e.mem(0, self.A("e", hh * geo.ml4), N4)
            e.mem(2, self.A("t"), N4)
            c.vreq(2, 0, 5, PROB_SHIFT)
            e.mem(3, self.A("pp"), NW)
            c.vpack(3, 2)
            e.mem(0, self.A("pp"), NW)
            e.mem(1, self.A("vt", hh * hd * geo.vtw), NW)
            c.li(3, hd)
            self.la(2, "op", hh * hd)
            top = e.new_label("pv")
            e.label(top)
            c.vdot4(1, 0, 1, reduce="sum")
            c.st(1, 0, 2)
            c.addi(2, 2, 1)
            c.dadv(1, 0, geo.vtw)
            e.advanced(1)
            c.dbnz(3, top)
        self.row_reduce("op", rd, "osum")
        if self.east:
            self.requant("osum", "o32", rd, "o")
            self.pack("o32", "opk", rd)

    def final(self):
        geo, c, e = self.geo, self.c, self.e
        if self.south:
            self.phase("norm")
            self.rmsnorm("xcur", "hf", "hpf", self.norm_shifts[-1])
        self.phase("gemv")
        self.gemv_a("hpf", "xin_f", geo.vn(self.j), "wout", "logits")
        # argmax
        self.phase("argmax")
        if self.east:
            n, b = geo.vn(self.j), geo.key_bits
            if n:
                e.mem(0, self.A("logits"), n)
                e.mem(2, self.A("argt"), n)
                c.li(4, b)
                c.vsll(2, 0, "r4")
                e.mem(1, self.A("idxc"), n)
                c.vadd(2, 2, 1)
                c.vmov(1, 2, reduce="max")
            else:
                c.li(1, INT32_MIN)
            j, H = self.j, geo.H
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
        # the token to every core
        W, H = geo.W, geo.H
        if self.east and self.south:
            if H > 1:
                c.send(1, 0, UP)
            if W > 1:
                c.send(1, 0, WEST)
        elif self.east:
            c.recv(1, 0, UP)
            if W > 1:
                c.send(1, 0, WEST)
        else:
            c.recv(1, 0, WEST)
        self.st(1, "token")
        if self.east and self.south:
            self.ld(2, "outn")
            c.st(1, self.cp.addr("out"), 2)
            c.addi(2, 2, 1)
            self.st(2, "outn")
        # the step state
        self.phase("state")
        self.ld(2, "own")
        self.ld(3, "nloc")
        c.add(3, 3, 2)
        self.st(3, "nloc")
        self.ld(2, "phase")
        c.addi(2, 2, 1)
        c.li(3, W)
        keep = e.new_label("phase")
        c.bne(2, 3, keep)
        c.li(2, 0)
        e.label(keep)
        self.st(2, "phase")
        self.ld(2, "pos")
        c.addi(2, 2, 1)
        self.st(2, "pos")
        self.ld(2, "end")
        c.beq(1, 2, "finished")
        self.ld(2, "steps")
        c.addi(2, 2, -1)
        self.st(2, "steps")
        c.bne(2, 0, "step")
        e.label("finished")
        c.halt()

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
        e.label(name)
        c.blt(0, 1, pos)
        c.li(1, INT32_MAX)
        c.jr(RLINK)
        e.label(pos)
        c.clz(2, 1)
        c.li(3, 31)
        c.sub(3, 3, 2)                 # k: a in [2^k, 2^(k+1))
        c.addi(4, 3, -7)
        c.blt(4, 0, small)
        c.srl(5, 1, 4)                 # 128 + m = a >> (k - 7)
        c.jmp(have)
        e.label(small)
        c.sub(4, 0, 4)
        c.sll(5, 1, 4)                 # 128 + m = a << (7 - k)
        e.label(have)
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
        e.label(neg)
        c.sub(4, 0, 4)
        c.srl(1, 5, 4)
        c.jr(RLINK)

    # The whole program ------------------------------------------------------------------------

    def build(self):
        c, e, geo = self.c, self.e, self.geo
        e.label("step")
        self.phase("embed")
        self.step_start()
        if self.south:
            self.embedding()
        if self.loop:
            c.li(RL, self.cp.block_base)
            c.li(RCOUNT, geo.L)
            e.label("layer")
            self.layer_body()
            c.addi(RL, RL, self.cp.block_words)
            e.forget()
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

"""The whole-network accelerator: a sequencer walking the plan's descriptor table.

    stream in (input ints) -> act memory -> [conv | maxpool | gap | shortcut]* -> logits
                                                                 -> argmax -> class

Organisation (one design for every network; the plan sizes it):

- **Descriptor ROM**: one record per step (`plan.Step`), read at the start of the step
  and held on the ROM's read port while the step runs; every geometry number and
  address constant of the step comes from it, so the hardware has no divider and no
  multiplier in its address path (the plan precomputes the increments).
- **PE array** PO x PX of `hw.rtl.pe.ShiftAddPE`: lane (o, j) accumulates output
  channel og*PO+o at output pixel pg*PX+j. The weight word of channel lane o (one read
  of the weight memory per clock, PO table words wide) is broadcast to the PX pixel
  lanes; the activation of pixel lane j (one read of its own port of the activation
  memory) is broadcast to the PO channel lanes. One weight read feeds PX MACs, one
  activation read feeds PO MACs.
- **Loop nest** of a conv / linear step: for og, for pg, for (i, ky, kx): S = C*KH*KW
  clocks per group, no bubbles, `clear & en` starts the next group's sums while the
  finished ones are copied to a shadow register chain.
- **Drain**: the shadow chain shifts one result per clock into the requantization
  pipeline (constants read per channel, the residual read through the auxiliary port,
  the IR's rule with a per-step shift and activation), which writes the code to the
  activation memory, or the logit to the logits registers (and updates the argmax).
  A group's drain (PO*PX clocks) overlaps the next group's compute; if it is longer
  than S the issue stage waits (the stem: S = 27).
- **Misc steps** (maxpool, gap, shortcut) run one element per clock through the
  auxiliary read port; gap's sums go through the same requantization pipeline.
- **Weights**: one memory per weight format (T, max_shift) holding the export's table
  words; the PEs see them converted to the widest format.
- **Debug**: with `step_mode` the sequencer pauses after every step (`paused`,
  `step_idx`); `dbg_addr` -> `dbg_data` (one clock later) reads the activation memory
  while paused or done; `resume` continues.

Interface: `in_valid/in_ready/in_data` (plan.n_in input ints, [C][H][W] order; the run
starts after the last one), `busy`, `done` (until the next input), `klass`,
`out_valid/out_ready/out_data/out_last` (the logits, in order, after the run),
`cycles` (clocks of the last run, from the last input word to the logits; pauses of
step mode not counted), `logit_addr` -> `logit_data` (combinational) reads a logit
after the run (the board bridge uses it).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.rtl.pe import ShiftAddPE, shift_bits

from .plan import Plan

__all__ = ["Accelerator", "descriptor_layout", "descriptor_records"]

OPS = {"conv": 0, "maxpool": 1, "gap": 2, "shortcut": 3}
MODES = {"int": 0, "identity": 1, "levels": 2}
ACTS = {"none": 0, "clip": 1, "thresholds": 2}


def _ubits(v: int) -> int:
    return max(1, int(v).bit_length())


def _sbits(lo: int, hi: int) -> int:
    b = 2
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def descriptor_records(plan: Plan) -> list[dict]:
    """The descriptor table as plain dicts (the ROM's contents)."""
    recs = []
    PO, PX = plan.PO, plan.PX
    for s in plan.steps:
        st = s.stride
        r = dict(
            op=OPS[s.op], to_logits=int(s.to_logits), last=int(s is plan.steps[-1]), stride=st,
            C=s.C, H=s.H, W=s.W, O=s.O, Ho=s.Ho, Wo=s.Wo, KH=s.KH, KW=s.KW,
            HW=s.HW, HoWo=s.HoWo, S=s.S, OG=s.OG, PG=s.PG,
            in_base=s.in_base, out_base=s.out_base, res_base=s.res_base,
            in_mode=MODES[s.in_mode], in_lv=s.in_levels, has_res=int(s.has_res),
            res_mode=MODES[s.res_mode], res_lv=s.res_levels,
            wfmt=s.wfmt, wbase=s.wbase, cbase=s.cbase, shift=s.shift,
            act=ACTS[s.act], act_max=s.act_max, act_tab=s.act_table, src_base=s.src_base,
            k_row=s.W - s.KW + 1,                       # koff step when ky advances
            og_out=PO * s.HoWo,                         # output offset of one channel group
            row_step=st * s.W,                          # maxpool / shortcut: next output row
        )
        if s.op == "conv":
            dpix = PX
            dy, dx = divmod(dpix, s.Wo)
            r.update(dix=dx * st, diy=dy * st, drow=dy * st * s.W + dx * st,
                     wrap_lim=s.Wo * st - s.pad, wrap_ix=s.Wo * st, wrap_row=st * s.W - s.Wo * st)
            for j, (iy0, ix0, row, pix) in enumerate(s.lanes):
                r[f"iy{j}"], r[f"ix{j}"], r[f"row{j}"] = iy0, ix0, row
        else:
            r.update(dix=0, diy=0, drow=0, wrap_lim=0, wrap_ix=0, wrap_row=0)
            for j in range(PX):
                r[f"iy{j}"] = r[f"ix{j}"] = r[f"row{j}"] = 0
        recs.append(r)
    return recs


def descriptor_layout(plan: Plan, recs=None):
    """A StructLayout just wide enough for every record's fields."""
    recs = recs or descriptor_records(plan)
    signed_fields = {"dix", "diy", "drow", "wrap_lim", "wrap_ix", "wrap_row", "k_row"} | \
        {f"{k}{j}" for k in ("iy", "ix", "row") for j in range(plan.PX)}
    fields = {}
    for k in recs[0]:
        vals = [r[k] for r in recs]
        if k in signed_fields:
            fields[k] = signed(_sbits(min(vals + [0]), max(vals + [0])))
        else:
            fields[k] = unsigned(_ubits(max(vals)))
    return data.StructLayout(fields)


class Accelerator(wiring.Component):
    def __init__(self, plan: Plan):
        self.plan = p = plan
        self.recs = descriptor_records(p)
        self.layout = descriptor_layout(p, self.recs)
        self.AW = _ubits(max(1, p.act_words - 1))
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "in_data": In(signed(p.in_bits)),
            "busy": Out(1), "done": Out(1), "klass": Out(range(max(2, p.n_out))),
            "out_valid": Out(1), "out_ready": In(1), "out_data": Out(signed(p.out_bits)),
            "out_last": Out(1),
            "cycles": Out(32),
            "step_mode": In(1), "paused": Out(1), "resume": In(1),
            "step_idx": Out(range(max(2, len(p.steps)))),
            "dbg_addr": In(self.AW), "dbg_data": Out(p.act_bits),
            "logit_addr": In(range(max(2, p.n_out))), "logit_data": Out(signed(p.out_bits)),
        })

    def elaborate(self, platform):
        p = self.plan
        m = Module()
        PO, PX, A, AW = p.PO, p.PX, p.act_bits, self.AW
        VB, ACC = p.value_bits, p.acc_bits
        TU = max(t for t, _ in p.wformats) if p.wformats else 1
        MSU = max(s for _, s in p.wformats) if p.wformats else 0
        SBU = shift_bits(MSU)
        nsteps = len(p.steps)

        # ---------------------------------------------------------------- memories
        drom = Memory(shape=self.layout, depth=max(2, nsteps), init=self.recs)
        m.submodules.drom = drom
        d_rp = drom.read_port()
        d = d_rp.data
        step = Signal(range(max(2, nsteps)))
        m.d.comb += [d_rp.addr.eq(step), self.step_idx.eq(step)]

        act = Memory(shape=unsigned(A), depth=max(2, p.act_words), init=[])
        m.submodules.act = act
        act_wp = act.write_port()
        act_rp = [act.read_port() for _ in range(PX)]
        aux_rp = act.read_port()
        m.d.comb += [aux_rp.addr.eq(self.dbg_addr), self.dbg_data.eq(aux_rp.data)]

        wrps = []
        for f, words in enumerate(p.wmem):
            mem = Memory(shape=unsigned(p.wmem_word_bits[f]), depth=max(2, len(words)), init=words)
            m.submodules[f"wmem{f}"] = mem
            wrps.append(mem.read_port())
        crp = {}
        for k in ("mult", "bias", "rmult"):
            arr = p.consts[k] or [0]
            mem = Memory(shape=signed(p.const_bits[k]), depth=max(2, len(arr)), init=arr)
            m.submodules[f"c_{k}"] = mem
            crp[k] = mem.read_port()
        srcs = p.srcmap or [0]
        sw = _sbits(min(srcs + [-1]), max(srcs + [0]))
        srom = Memory(shape=signed(sw), depth=max(2, len(srcs)), init=srcs)
        m.submodules.srcmap = srom
        src_rp = srom.read_port()

        # decode tables
        lv_w = _ubits(max(max(t) for t in p.level_tables))
        lv_tab = Array([Array([Const(v, lv_w) for v in t]) for t in p.level_tables])
        thr_w = _sbits(0, max(max(t) for t in p.threshold_tables))
        thr_tab = Array([Array([Const(v, signed(thr_w)) for v in t]) for t in p.threshold_tables])

        def decode(word, mode, lv, name):
            v = Signal(signed(VB), name=name)
            with m.Switch(mode):
                with m.Case(MODES["int"]):
                    m.d.comb += v.eq(word.as_signed())
                with m.Case(MODES["levels"]):
                    m.d.comb += v.eq(lv_tab[lv][word[:4]])
                with m.Default():
                    m.d.comb += v.eq(word)
            return v

        # ---------------------------------------------------------------- write bus
        wr_en = Signal()
        wr_addr = Signal(AW)
        wr_data = Signal(A)
        m.d.comb += [act_wp.en.eq(wr_en), act_wp.addr.eq(wr_addr), act_wp.data.eq(wr_data)]

        # ---------------------------------------------------------------- top FSM signals
        cyc = Signal(32)
        m.d.comb += self.cycles.eq(cyc)
        running = Signal()
        with m.If(running):
            m.d.sync += cyc.eq(cyc + 1)

        conv_go = Signal()      # one pulse: start the conv step in the descriptor
        misc_go = Signal()
        conv_idle = Signal()
        misc_idle = Signal()

        # ---------------------------------------------------------------- conv: issue
        og = Signal(range(max(2, max(r["OG"] for r in self.recs) + 1)))
        pg = Signal(range(max(2, max(r["PG"] for r in self.recs) + 1)))
        t = Signal(range(max(2, max(r["S"] for r in self.recs) + 1)))
        kx = Signal(range(max(2, max(r["KW"] for r in self.recs) + 1)))
        ky = Signal(range(max(2, max(r["KH"] for r in self.recs) + 1)))
        chan = Signal(AW + 1)
        koff = Signal(signed(AW + 2))
        wrow = Signal(max(1, max(len(w) for w in p.wmem).bit_length() + 1))
        og_out = Signal(AW + 1)     # og * PO * HoWo
        og_ch = Signal(range(max(2, max(r["OG"] for r in self.recs) * PO + 1)))
        issuing = Signal()
        lanes = []
        for j in range(PX):
            lanes.append(dict(iy=Signal(signed(AW + 2), name=f"iy{j}"), ix=Signal(signed(AW + 2), name=f"ix{j}"),
                              row=Signal(signed(AW + 2), name=f"row{j}"), pix=Signal(AW + 1, name=f"pix{j}")))

        def lanes_reset():
            return [x for j, L in enumerate(lanes) for x in (
                L["iy"].eq(d[f"iy{j}"]), L["ix"].eq(d[f"ix{j}"]), L["row"].eq(d[f"row{j}"]), L["pix"].eq(j))]

        drain_busy = Signal()
        v1, first1, last1 = Signal(), Signal(), Signal()
        v1r, first1r, last1r, last2 = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [v1r.eq(v1), first1r.eq(first1), last1r.eq(last1), last2.eq(last1r)]
        last_step = Signal()
        m.d.comb += last_step.eq(t == d.S - 1)
        stall = Signal()
        m.d.comb += stall.eq(last_step & (drain_busy | last1 | last1r | last2))
        fire = Signal()
        m.d.comb += fire.eq(issuing & ~stall)

        # addresses of this clock's reads
        lane_ok = []
        for j, L in enumerate(lanes):
            iy = L["iy"] + ky
            ix = L["ix"] + kx
            ok = Signal(name=f"ok{j}")
            m.d.comb += ok.eq((iy >= 0) & (iy < d.H) & (ix >= 0) & (ix < d.W) & (L["pix"] < d.HoWo))
            lane_ok.append(ok)
            m.d.comb += act_rp[j].addr.eq(d.in_base + chan + L["row"] + koff)
        for f, rp in enumerate(wrps):
            m.d.comb += rp.addr.eq(wrow + t)

        # pipeline stage 1 (data from the memories) and 2 (accumulators updated)
        ok1 = [Signal(name=f"ok1_{j}") for j in range(PX)]
        grp_pix1 = [Signal(AW + 1, name=f"gpix1_{j}") for j in range(PX)]
        grp_ch1, grp_out1 = Signal.like(og_ch), Signal.like(og_out)
        m.d.sync += [v1.eq(fire), first1.eq(fire & (t == 0)), last1.eq(fire & last_step)]
        with m.If(fire):
            m.d.sync += [o.eq(k) for o, k in zip(ok1, lane_ok)]
            with m.If(last_step):
                m.d.sync += [g.eq(L["pix"]) for g, L in zip(grp_pix1, lanes)]
                m.d.sync += [grp_ch1.eq(og_ch), grp_out1.eq(og_out)]

        with m.If(conv_go):
            m.d.sync += [issuing.eq(1), og.eq(0), pg.eq(0), t.eq(0), kx.eq(0), ky.eq(0), chan.eq(0),
                         koff.eq(0), wrow.eq(d.wbase), og_out.eq(0), og_ch.eq(0)] + lanes_reset()
        with m.Elif(fire):
            with m.If(last_step):
                m.d.sync += [t.eq(0), kx.eq(0), ky.eq(0), chan.eq(0), koff.eq(0)]
                with m.If(pg == d.PG - 1):
                    m.d.sync += [pg.eq(0), og.eq(og + 1), wrow.eq(wrow + d.S), og_out.eq(og_out + d.og_out),
                                 og_ch.eq(og_ch + PO)] + lanes_reset()
                    with m.If(og == d.OG - 1):
                        m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += pg.eq(pg + 1)
                    for L in lanes:
                        nix = L["ix"] + d.dix
                        with m.If(nix >= d.wrap_lim):
                            m.d.sync += [L["ix"].eq(nix - d.wrap_ix), L["iy"].eq(L["iy"] + d.diy + d.stride),
                                         L["row"].eq(L["row"] + d.drow + d.wrap_row)]
                        with m.Else():
                            m.d.sync += [L["ix"].eq(nix), L["iy"].eq(L["iy"] + d.diy),
                                         L["row"].eq(L["row"] + d.drow)]
                        m.d.sync += L["pix"].eq(L["pix"] + PX)
            with m.Else():
                m.d.sync += t.eq(t + 1)
                with m.If(kx == d.KW - 1):
                    m.d.sync += kx.eq(0)
                    with m.If(ky == d.KH - 1):
                        m.d.sync += [ky.eq(0), koff.eq(0), chan.eq(chan + d.HW)]
                    with m.Else():
                        m.d.sync += [ky.eq(ky + 1), koff.eq(koff + d.k_row)]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), koff.eq(koff + 1)]

        # stage 1: decode and accumulate
        values = []
        for j in range(PX):
            raw = decode(act_rp[j].data, d.in_mode, d.in_lv, f"val{j}")
            v = Signal(signed(VB), name=f"value{j}")
            m.d.comb += v.eq(Mux(ok1[j], raw, 0))
            values.append(v)
        TWU = 2 + SBU
        wsel = [Signal(TU * TWU, name=f"w{o}") for o in range(PO)]
        for f, ((T, MS), rp) in enumerate(zip(p.wformats, wrps)):
            sb = shift_bits(MS)
            tw = T * (2 + sb)
            with m.If(d.wfmt == f):
                for o in range(PO):
                    word = rp.data[o * tw:(o + 1) * tw]
                    fields = []
                    for k in range(TU):
                        if k < T:
                            fld = word[k * (2 + sb):(k + 1) * (2 + sb)]
                            fields.append(Cat(fld[:sb], Const(0, SBU - sb), fld[sb], fld[sb + 1]))
                        else:
                            fields.append(Const(0, TWU))
                    m.d.comb += wsel[o].eq(Cat(*fields))
        # decoded values and weights registered (stage 1r): the PEs' inputs come from flip-flops
        values_r = [Signal(signed(VB), name=f"value_r{j}") for j in range(PX)]
        wsel_r = [Signal(TU * TWU, name=f"w_r{o}") for o in range(PO)]
        m.d.sync += [a.eq(b) for a, b in zip(values_r, values)] + [a.eq(b) for a, b in zip(wsel_r, wsel)]
        pes = [[None] * PX for _ in range(PO)]
        for o in range(PO):
            for j in range(PX):
                pe = ShiftAddPE(act_bits=VB, act_signed=True, terms=TU, max_shift=MSU, acc_bits=ACC)
                m.submodules[f"pe_{o}_{j}"] = pe
                m.d.comb += [pe.act.eq(values_r[j]), pe.weight.eq(wsel_r[o]), pe.en.eq(v1r), pe.clear.eq(first1r)]
                pes[o][j] = pe

        # stage 2: the finished group into the shadow chain
        grp_pix2 = [Signal(AW + 1, name=f"gpix2_{j}") for j in range(PX)]
        grp_ch2, grp_out2 = Signal.like(og_ch), Signal.like(og_out)
        with m.If(last1):
            m.d.sync += [a.eq(b) for a, b in zip(grp_pix2, grp_pix1)] + [grp_ch2.eq(grp_ch1), grp_out2.eq(grp_out1)]
        shadow = [Signal(signed(ACC), name=f"sh{k}") for k in range(PO * PX)]  # k = o*PX + j
        spix = [Signal(AW + 1, name=f"spix{j}") for j in range(PX)]
        s_o = Signal(range(max(2, PO + 1)))
        s_j = Signal(range(max(2, PX + 1)))
        s_ch = Signal.like(og_ch)
        s_off = Signal(AW + 1)           # og*PO*HoWo + o*HoWo
        req_valid = Signal()             # into the requant pipeline this clock
        req_acc = Signal(signed(max(ACC, p.acc_bits)))
        req_ch = Signal.like(og_ch)
        req_off = Signal(AW + 1)
        req_src = Signal()               # 1: from the conv drain, 0: from gap
        drain_req_valid = Signal()
        with m.If(last2):
            m.d.sync += [shadow[k].eq(pes[k // PX][k % PX].acc) for k in range(PO * PX)]
            m.d.sync += [spix[j].eq(grp_pix2[j]) for j in range(PX)]
            m.d.sync += [drain_busy.eq(1), s_o.eq(0), s_j.eq(0), s_ch.eq(grp_ch2), s_off.eq(grp_out2)]
        with m.Elif(drain_busy):
            m.d.sync += [shadow[k].eq(shadow[k + 1]) for k in range(PO * PX - 1)]
            m.d.sync += [spix[j].eq(spix[(j + 1) % PX]) for j in range(PX)]
            with m.If(s_j == PX - 1):
                m.d.sync += [s_j.eq(0), s_o.eq(s_o + 1), s_ch.eq(s_ch + 1), s_off.eq(s_off + d.HoWo)]
                with m.If(s_o == PO - 1):
                    m.d.sync += drain_busy.eq(0)
            with m.Else():
                m.d.sync += s_j.eq(s_j + 1)
        m.d.comb += drain_req_valid.eq(drain_busy & (s_ch < d.O) & (spix[0] < d.HoWo))

        # ---------------------------------------------------------------- misc steps
        mc = Signal(range(max(2, max(max(r["C"], r["O"]) for r in self.recs) + 1)))
        moy = Signal(range(max(2, max(r["Ho"] for r in self.recs) + 1)))
        mox = Signal(range(max(2, max(r["Wo"] for r in self.recs) + 1)))
        mky = Signal.like(ky)
        mkx = Signal.like(kx)
        mcb = Signal(AW + 1)          # channel base (c*HW, or the shortcut's src offset)
        mrb = Signal(AW + 1)          # row base (oy*s*W)
        mcc = Signal(AW + 1)          # column (ox*s)
        mkoff = Signal(AW + 1)
        mptr = Signal(AW + 1)         # gap: input pointer / pool, shortcut: output pointer
        mstate = Signal(range(4))     # 0 idle, 1 running, 2 shortcut: fetch src, 3 wait src
        mrd = Signal()                # a read issued this clock
        mfirst, mlast = Signal(), Signal()
        mvalid_src = Signal()
        m1, mfirst1, mlast1, mvalid1 = Signal(), Signal(), Signal(), Signal()
        mout1 = Signal(AW + 1)
        mch1 = Signal.like(mc)
        m.d.comb += misc_idle.eq((mstate == 0) & ~m1)
        maddr = Signal(AW + 1)
        m.d.comb += src_rp.addr.eq(d.src_base + mc)
        srcoff = src_rp.data
        with m.If(d.op == OPS["gap"]):
            m.d.comb += maddr.eq(d.in_base + mptr)
        with m.Else():
            m.d.comb += maddr.eq(d.in_base + mcb + mrb + mcc + mkoff)
        gap_pix = Signal(AW + 1)
        sc_zero = Signal()            # shortcut: this output channel is a zero channel
        m.d.sync += [m1.eq(mrd), mvalid1.eq(mvalid_src)]

        with m.If(misc_go):
            m.d.sync += [mc.eq(0), moy.eq(0), mox.eq(0), mky.eq(0), mkx.eq(0), mcb.eq(0), mrb.eq(0),
                         mcc.eq(0), mkoff.eq(0), mptr.eq(0), gap_pix.eq(0)]
            with m.If(d.op == OPS["shortcut"]):
                m.d.sync += mstate.eq(2)
            with m.Else():
                m.d.sync += mstate.eq(1)
        with m.Elif(mstate == 2):
            m.d.sync += mstate.eq(3)          # srcmap address set, data next clock
        with m.Elif(mstate == 3):
            m.d.sync += [mcb.eq(srcoff), mstate.eq(1)]
        with m.Elif(mstate == 1):
            m.d.comb += mrd.eq(1)
            with m.Switch(d.op):
                with m.Case(OPS["maxpool"]):
                    m.d.comb += [mfirst.eq((mky == 0) & (mkx == 0)),
                                 mlast.eq((mky == d.KH - 1) & (mkx == d.KW - 1)), mvalid_src.eq(1)]
                    with m.If(mkx == d.KW - 1):
                        m.d.sync += mkx.eq(0)
                        with m.If(mky == d.KH - 1):
                            m.d.sync += [mky.eq(0), mkoff.eq(0)]
                            with m.If(mox == d.Wo - 1):
                                m.d.sync += [mox.eq(0), mcc.eq(0)]
                                with m.If(moy == d.Ho - 1):
                                    m.d.sync += [moy.eq(0), mrb.eq(0), mc.eq(mc + 1), mcb.eq(mcb + d.HW)]
                                    with m.If(mc == d.O - 1):
                                        m.d.sync += mstate.eq(0)
                                with m.Else():
                                    m.d.sync += [moy.eq(moy + 1), mrb.eq(mrb + d.row_step)]
                            with m.Else():
                                m.d.sync += [mox.eq(mox + 1), mcc.eq(mcc + d.stride)]
                        with m.Else():
                            m.d.sync += [mky.eq(mky + 1), mkoff.eq(mkoff + d.k_row)]
                    with m.Else():
                        m.d.sync += [mkx.eq(mkx + 1), mkoff.eq(mkoff + 1)]
                with m.Case(OPS["shortcut"]):
                    m.d.comb += [mfirst.eq(1), mlast.eq(1), mvalid_src.eq(~sc_zero)]
                    with m.If(mox == d.Wo - 1):
                        m.d.sync += [mox.eq(0), mcc.eq(0)]
                        with m.If(moy == d.Ho - 1):
                            m.d.sync += [moy.eq(0), mrb.eq(0), mc.eq(mc + 1), mstate.eq(2)]
                            with m.If(mc == d.O - 1):
                                m.d.sync += mstate.eq(0)
                        with m.Else():
                            m.d.sync += [moy.eq(moy + 1), mrb.eq(mrb + d.row_step)]
                    with m.Else():
                        m.d.sync += [mox.eq(mox + 1), mcc.eq(mcc + d.stride)]
                with m.Case(OPS["gap"]):
                    m.d.comb += [mfirst.eq(gap_pix == 0), mlast.eq(gap_pix == d.HW - 1), mvalid_src.eq(1)]
                    m.d.sync += mptr.eq(mptr + 1)
                    with m.If(gap_pix == d.HW - 1):
                        m.d.sync += [gap_pix.eq(0), mc.eq(mc + 1)]
                        with m.If(mc == d.C - 1):
                            m.d.sync += mstate.eq(0)
                    with m.Else():
                        m.d.sync += gap_pix.eq(gap_pix + 1)
        with m.If(mstate == 3):
            m.d.sync += sc_zero.eq(srcoff < 0)

        # misc stage 1: data arrived
        m.d.sync += [mfirst1.eq(mfirst), mlast1.eq(mlast), mch1.eq(mc)]
        mbest = Signal(A)
        msum = Signal(signed(ACC + 1))
        mval = decode(aux_rp.data, d.in_mode, d.in_lv, "mval")
        mout = Signal(AW + 1)          # output pointer (maxpool, shortcut)
        misc_wr = Signal()
        misc_wdata = Signal(A)
        gap_req = Signal()
        gap_acc = Signal(signed(ACC))
        gap_ch = Signal.like(mc)
        with m.If(misc_go):
            m.d.sync += mout.eq(0)
        with m.If(m1):
            with m.Switch(d.op):
                with m.Case(OPS["maxpool"]):
                    cur = Mux(mfirst1 | (aux_rp.data > mbest), aux_rp.data, mbest)
                    m.d.sync += mbest.eq(cur)
                    with m.If(mlast1):
                        m.d.comb += [misc_wr.eq(1), misc_wdata.eq(cur)]
                        m.d.sync += mout.eq(mout + 1)
                with m.Case(OPS["shortcut"]):
                    m.d.comb += [misc_wr.eq(1), misc_wdata.eq(Mux(mvalid1, aux_rp.data, 0))]
                    m.d.sync += mout.eq(mout + 1)
                with m.Case(OPS["gap"]):
                    tot = Mux(mfirst1, mval, msum + mval)
                    m.d.sync += msum.eq(tot)
                    with m.If(mlast1):
                        m.d.comb += [gap_req.eq(1), gap_acc.eq(tot), gap_ch.eq(mch1)]

        # ---------------------------------------------------------------- requant pipeline
        # R0: request (addresses to the constant ROMs and the residual port)
        m.d.comb += [
            req_valid.eq(drain_req_valid | gap_req),
            req_acc.eq(Mux(drain_busy, shadow[0], gap_acc)),
            req_ch.eq(Mux(drain_busy, s_ch, gap_ch)),
            req_off.eq(Mux(drain_busy, s_off + spix[0], gap_ch)),
        ]
        for k, rp in crp.items():
            m.d.comb += rp.addr.eq(d.cbase + req_ch)
        r1_valid = Signal()
        r1_acc = Signal.like(req_acc)
        r1_ch = Signal.like(req_ch)
        r1_off = Signal.like(req_off)
        m.d.sync += [r1_valid.eq(req_valid), r1_acc.eq(req_acc), r1_ch.eq(req_ch), r1_off.eq(req_off)]
        # R1: products (registered), R2: sum and shift (registered), R3: activation rule
        res_v = decode(aux_rp.data, d.res_mode, d.res_lv, "res_value")
        SUMB = max(p.sum_bits, ACC + p.const_bits["mult"], p.const_bits["bias"], VB + p.const_bits["rmult"]) + 3
        pa = Signal(signed(ACC + p.const_bits["mult"]), name="prod_acc")
        pr = Signal(signed(VB + p.const_bits["rmult"]), name="prod_res")
        pb = Signal(signed(p.const_bits["bias"]), name="bias_r")
        ra_valid, ra_off, ra_ch = Signal(), Signal.like(r1_off), Signal.like(r1_ch)
        m.d.sync += [pa.eq(r1_acc * crp["mult"].data), pr.eq(Mux(d.has_res, res_v * crp["rmult"].data, 0)),
                     pb.eq(crp["bias"].data), ra_valid.eq(r1_valid), ra_off.eq(r1_off), ra_ch.eq(r1_ch)]
        ssum = Signal(signed(SUMB))
        m.d.comb += ssum.eq(pa + pb + pr)
        y = Signal(signed(SUMB))
        rb_valid, rb_off, rb_ch = Signal(), Signal.like(r1_off), Signal.like(r1_ch)
        m.d.sync += [y.eq(ssum >> d.shift), rb_valid.eq(ra_valid), rb_off.eq(ra_off), rb_ch.eq(ra_ch)]
        code = Signal(signed(max(p.out_bits, A + 1, 2)))
        with m.Switch(d.act):
            with m.Case(ACTS["none"]):
                m.d.comb += code.eq(y)
            with m.Case(ACTS["clip"]):
                m.d.comb += code.eq(Mux(y < 0, 0, Mux(y > d.act_max, d.act_max, y)))
            with m.Default():
                cnt = 0
                for k in range(p.NT):
                    ge = Signal(name=f"ge{k}")
                    m.d.comb += ge.eq(y >= thr_tab[d.act_tab][k])
                    cnt = cnt + ge
                m.d.comb += code.eq(cnt)
        r2_valid = Signal()
        r2_code = Signal.like(code)
        r2_off = Signal.like(r1_off)
        r2_ch = Signal.like(r1_ch)
        m.d.sync += [r2_valid.eq(rb_valid), r2_code.eq(code), r2_off.eq(rb_off), r2_ch.eq(rb_ch)]
        # R4: write
        logits = Array([Signal(signed(p.out_bits), name=f"logit{k}") for k in range(max(1, p.n_out))])
        best = Signal(signed(p.out_bits))
        m.d.comb += self.logit_data.eq(logits[self.logit_addr])
        klass = Signal.like(self.klass)
        m.d.comb += self.klass.eq(klass)
        req_wr = Signal()
        m.d.comb += req_wr.eq(r2_valid & ~d.to_logits)
        with m.If(r2_valid & d.to_logits):
            m.d.sync += logits[r2_ch].eq(r2_code)
            with m.If((r2_ch == 0) | (r2_code > best)):
                m.d.sync += [best.eq(r2_code), klass.eq(r2_ch)]

        # residual read (R0) / misc reads / debug reads share the auxiliary port
        with m.If(drain_busy):
            m.d.comb += aux_rp.addr.eq(d.res_base + req_off)
        with m.Elif(mstate != 0):
            m.d.comb += aux_rp.addr.eq(maddr)

        # ---------------------------------------------------------------- top FSM
        in_cnt = Signal(range(max(2, p.n_in + 1)))
        out_cnt = Signal(range(max(2, p.n_out + 1)))
        in_base = p.tensor_addr["input"][0]
        wait = Signal(3)
        done = Signal()
        m.d.comb += [self.done.eq(done), conv_idle.eq(~issuing & ~v1 & ~v1r & ~last1 & ~last1r & ~last2 & ~drain_busy &
                                                       ~r1_valid & ~ra_valid & ~rb_valid & ~r2_valid)]
        with m.FSM():
            with m.State("BOOT"):
                # one clock after reset: the state register changes once, so simulators
                # that run `always @*` blocks only on input changes (Icarus) evaluate every
                # output that depends on the state alone (in_ready was X there otherwise)
                m.next = "IDLE"
            with m.State("IDLE"):
                m.d.comb += self.in_ready.eq(1)
                with m.If(self.in_valid):
                    m.d.comb += [wr_en.eq(1), wr_addr.eq(in_base + in_cnt), wr_data.eq(self.in_data)]
                    m.d.sync += [done.eq(0), in_cnt.eq(in_cnt + 1)]
                    with m.If(in_cnt == 0):
                        m.d.sync += cyc.eq(0)
                    with m.If(in_cnt == p.n_in - 1):
                        m.d.sync += [in_cnt.eq(0), step.eq(0), wait.eq(0)]
                        m.next = "LOAD"
            with m.State("LOAD"):          # descriptor read (one clock)
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                m.next = "GO"
            with m.State("GO"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                with m.If(d.op == OPS["conv"]):
                    m.d.comb += conv_go.eq(1)
                with m.Else():
                    m.d.comb += misc_go.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                with m.If(conv_idle & misc_idle & (mstate == 0)):
                    m.d.sync += wait.eq(wait + 1)
                    with m.If(wait == 2):
                        m.d.sync += wait.eq(0)
                        with m.If(self.step_mode):
                            m.next = "PAUSE"
                        with m.Elif(d.last):
                            m.next = "OUT"
                        with m.Else():
                            m.d.sync += step.eq(step + 1)
                            m.next = "LOAD"
            with m.State("PAUSE"):
                m.d.comb += [self.paused.eq(1), self.busy.eq(1)]
                with m.If(self.resume):
                    with m.If(d.last):
                        m.next = "OUT"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "LOAD"
            with m.State("OUT"):
                m.d.comb += [self.out_valid.eq(1), self.out_data.eq(logits[out_cnt]),
                             self.out_last.eq(out_cnt == p.n_out - 1)]
                m.d.sync += done.eq(1)
                with m.If(self.out_ready):
                    m.d.sync += out_cnt.eq(out_cnt + 1)
                    with m.If(out_cnt == p.n_out - 1):
                        m.d.sync += out_cnt.eq(0)
                        m.next = "IDLE"
        # write bus: misc writes and requant writes (never in the same clock as input)
        with m.If(misc_wr):
            m.d.comb += [wr_en.eq(1), wr_addr.eq(d.out_base + mout), wr_data.eq(misc_wdata)]
        with m.Elif(req_wr):
            m.d.comb += [wr_en.eq(1), wr_addr.eq(d.out_base + r2_off), wr_data.eq(r2_code)]
        return m

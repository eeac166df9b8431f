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
  A group's drain (PO clocks, PX results each) overlaps the next group's compute; a
  group's last issue waits until max(PO, 7) clocks have passed since the previous
  group's (`since_last`, GAP), so a group takes max(S, GAP) clocks.
- **Misc steps** (maxpool, gap, shortcut) run one element per clock through the
  auxiliary read port; gap's sums go through the same requantization pipeline.
- **Weights**: one memory per weight format (T, max_shift) holding the export's table
  words; the PEs see them converted to the widest format.
- **Debug**: with `step_mode` the sequencer pauses after every step (`paused`,
  `step_idx`); `dbg_addr` -> `dbg_data` (three clocks later) reads the activation memory
  while paused or done; `resume` continues.

Interface: `in_valid/in_ready/in_data` (plan.n_in input ints, [C][H][W] order; the run
starts after the last one), `busy`, `done` (until the next input), `klass`,
`out_valid/out_ready/out_data/out_last` (the logits, in order, after the run),
`cycles` (clocks of the last run, from the last input word to the logits; pauses of
step mode not counted), `logit_addr` -> `logit_data` (combinational) reads a logit
after the run (the board bridge uses it).
"""
from __future__ import annotations

from contextlib import nullcontext

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.ir import bits_signed, bits_unsigned
from hw.rtl import KEEP_FF
from hw.rtl.pe import ShiftAddDotPE, shift_bits

from .plan import PE_SPLIT, Plan, group_gap, pe_latency

__all__ = ["Accelerator", "dbg_latency", "descriptor_layout", "descriptor_records"]

OPS = {"conv": 0, "maxpool": 1, "gap": 2, "shortcut": 3}
MODES = {"int": 0, "identity": 1, "levels": 2}
ACTS = {"none": 0, "clip": 1, "thresholds": 2}
ENUM_BITS = {"op": 2, "in_mode": 2, "res_mode": 2, "act": 2}


_ubits = bits_unsigned


def _sbits(lo: int, hi: int) -> int:
    return max(2, bits_signed(lo, hi))   # a 1-bit signed field is awkward in Amaranth


def _log2(v: int) -> int:
    return int(v).bit_length() - 1


SIGNED_FIELDS = {"dix", "diy", "drow", "wrap_lim", "wrap_ix", "wrap_row", "k_row", "kx_a", "kx_b", "res_off0"}


def dil_halves(plan: Plan) -> list[int]:
    """W / 2 of every deinterleaved output (the offset of its odd columns' run)."""
    return sorted({s.Wo // 2 for s in plan.steps if s.dil_out})


def descriptor_records(plan: Plan) -> list[dict]:
    """The descriptor table as plain dicts (the ROM's contents)."""
    recs = []
    PO, PI, PX = plan.PO, plan.PI, plan.PX
    halves = dil_halves(plan)
    for s in plan.steps:
        st = s.stride
        r = dict(
            op=OPS[s.op], to_logits=int(s.to_logits), last=int(s is plan.steps[-1]), stride=st,
            C=s.C, H=s.H, W=s.W, O=s.O, Ho=s.Ho, Wo=s.Wo, KH=s.KH, KW=s.KW,
            HW=s.HW, HoWo=s.HoWo, S=s.S, OG=s.OG, PG=s.PG,
            HWp_in=s.HWp_in, HWp_out=s.HWp_out,
            cg_step=PI * s.HWp_in,                      # chan advance per input-channel group
            in_base=s.in_base, out_base=s.out_base, res_base=s.res_base,
            in_mode=MODES[s.in_mode], in_lv=s.in_levels, has_res=int(s.has_res),
            res_mode=MODES[s.res_mode], res_lv=s.res_levels,
            wfmt=s.wfmt, wbase=s.wbase, npass=s.npass, cbase=s.cbase, shift=s.shift,
            act=ACTS[s.act], act_max=s.act_max, act_tab=s.act_table, src_base=s.src_base,
            k_row=s.k_row,                              # koff step when ky advances
            kx_a=s.kx_a, kx_b=s.kx_b,                   # koff step when kx advances (even, odd kx)
            pick=s.pick,                                # lane j's window element: j * pick
            dil_out=int(s.dil_out), wmask=s.Wo - 1 if s.dil_out else 0,
            # residual read (plan.folded_shortcuts): channel o at (o - res_lo) * res_hwp,
            # zero outside [res_lo, res_hi); group pixel p at p + 3 * (p & rmask)
            res_hwp=s.res_hwp, res_off0=-s.res_lo * s.res_hwp, og_res=PO * s.res_hwp,
            res_lo=s.res_lo, res_hi=s.res_hi,
            rmask=((1 << s.HoWo.bit_length()) - 1) ^ (s.Wo - 1) if s.res_fold else 0,
            hsel=halves.index(s.Wo // 2) if s.dil_out else 0,
            og_out=PO * s.HWp_out,                      # output offset of one channel group
            row_step=st * s.W,                          # maxpool / shortcut: next output row
            rowmode=int(s.rowmode), lmask=(1 << s.L) - 1, dpix=s.dpix, dpix_wrap=s.dpix_wrap,
            dix=s.dix, diy=s.diy, drow=s.drow, wrap_lim=s.wrap_lim, wrap_ix=s.wrap_ix,
            wrap_row=s.wrap_row, sl=s.sl, sl_cc=s.sl * s.pick,
        )
        for i in range(1, PI):
            r[f"ioff{i}"] = i * s.HWp_in
        for j in range(PX):
            iy0, ix0, row, pix = s.lanes[j] if s.op == "conv" else (0, 0, 0, 0)
            r[f"iy{j}"], r[f"ix{j}"] = iy0, ix0
            if j == 0:
                r["row0"] = row
        recs.append(r)
    return recs


def descriptor_layout(plan: Plan, recs=None):
    """A StructLayout just wide enough for every record's fields."""
    recs = recs or descriptor_records(plan)
    signed_fields = SIGNED_FIELDS | {"row0"} | {f"{k}{j}" for k in ("iy", "ix") for j in range(plan.PX)}
    fields = {}
    for k in recs[0]:
        vals = [r[k] for r in recs]
        if k in signed_fields:
            fields[k] = signed(_sbits(min(vals + [0]), max(vals + [0])))
        else:
            # the enumerations at their full width: a Switch on them names every case
            fields[k] = unsigned(max(_ubits(max(vals)), ENUM_BITS.get(k, 0)))
    return data.StructLayout(fields)


def _rotate(m, vec, amount, width, left=False, name="rot"):
    """Barrel rotation of a list of `width`-bit elements by a signal: out[L] = vec[(L + r)
    mod n] (right), or vec[(L - r) mod n] (left). One signal per stage (log2(n) muxes)."""
    n = len(vec)
    cur = Signal(n * width, name=f"{name}_in")
    m.d.comb += cur.eq(Cat(*vec))
    for k in range(_log2(n)):
        by = (1 << k) * width
        nxt = Signal(n * width, name=f"{name}_s{k}")
        m.d.comb += nxt.eq(Mux(amount[k], cur.rotate_left(by) if left else cur.rotate_right(by), cur))
        cur = nxt
    return [cur[L * width:(L + 1) * width] for L in range(n)]


class _Word:
    """A read port's stand-in: `data` is a word picked from several block RAMs."""

    def __init__(self, data):
        self.data = data


class _BankedMemory:
    """One copy of the activation memory: NB banks, element a in bank a mod NB at row
    a // NB. `window_read(starts)` issues one read per bank for up to PI windows of PX
    consecutive elements (window i starting at starts[i], which the layout puts i*PX
    banks after starts[0]) or one window of NB elements (one start). The banks' outputs
    go straight into flip-flops (a block RAM's clock-to-out is 5.8 ns on the ECP5), and
    so do the banks' read addresses (the banks spread over the device: the address logic
    and the block RAM are a long route apart), so the rotated elements arrive three
    clocks after the starts (`latency`), four with `out_reg` (the rotated window in
    flip-flops too: the aux copy's consumers add and compare right after it);
    `first_now` is element 0 of the window two clocks after (unregistered: the debug
    port). `write` stores up to PX consecutive elements, its per-bank address, data and
    enable registered (one clock later)."""

    def __init__(self, m, name, nb, px, depth, width, out_reg=False):
        self.nb, self.px, self.lg, self.width, self.name = nb, px, _log2(nb), width, name
        self.out_reg = out_reg
        self.latency = 3 + int(out_reg)
        self.rp, self.wp = [], []
        for b in range(nb):
            # block RAM even when shallow: the budget check counts banks as block RAM, and
            # yosys put digitnet's 156-deep 12x4x8 banks in LUT RAM (1,280 LUTs) without it
            mem = Memory(shape=unsigned(width), depth=max(2, depth), init=[], attrs={"ram_style": "block"})
            m.submodules[f"{name}{b}"] = mem
            self.wp.append(mem.write_port())
            self.rp.append(mem.read_port())
        self.m = m
        self.rot0 = Signal(max(1, self.lg), name=f"{name}_rot0")
        self.rot = Signal(max(1, self.lg), name=f"{name}_rot")
        self.rot2 = Signal(max(1, self.lg), name=f"{name}_rot2")

    def window_read(self, starts):
        m, nb, lg = self.m, self.nb, self.lg
        b0 = starts[0]
        for b in range(nb):
            if len(starts) == 1 or nb == self.px:
                s = starts[0]
            else:
                k = Signal(lg, name=f"k{b}")
                m.d.comb += k.eq(b - b0[:lg])
                s = Array(starts)[k >> _log2(self.px)]
            hi = s >> lg if lg else s
            carry = (s[:lg] > b) if lg else 0
            ra = Signal.like(self.rp[b].addr, name=f"{self.name}_ra{b}")
            m.d.sync += ra.eq(hi + carry)
            m.d.comb += self.rp[b].addr.eq(ra)
        raw = [Signal(self.width, name=f"{self.name}_raw{b}") for b in range(nb)]
        m.d.sync += [r.eq(rp.data) for r, rp in zip(raw, self.rp)]
        if lg:
            m.d.sync += [self.rot0.eq(b0[:lg]), self.rot.eq(self.rot0), self.rot2.eq(self.rot)]
            self.first_now = Array([rp.data for rp in self.rp])[self.rot]
            out = _rotate(m, raw, self.rot2, self.width, name=f"{self.name}_rd")
        else:
            self.first_now = self.rp[0].data
            out = raw
        if not self.out_reg:
            return out
        regs = [Signal(self.width, name=f"{self.name}_win{b}") for b in range(nb)]
        m.d.sync += [r.eq(o) for r, o in zip(regs, out)]
        return regs

    def write(self, en, addr, elems, valid):
        """elems / valid: lists of PX data Values and 1-bit valids (element addr + L)."""
        m, nb, lg = self.m, self.nb, self.lg
        vec = [Cat(e, v) for e, v in zip(elems, valid)] + [Const(0, self.width + 1)] * (nb - len(elems))
        rot = _rotate(m, vec, addr[:lg], self.width + 1, left=True, name=f"{self.name}_wr") if lg else vec
        hi = addr >> lg if lg else addr
        for b in range(nb):
            carry = (addr[:lg] > b) if lg else 0
            wa = Signal.like(self.wp[b].addr, name=f"{self.name}_wa{b}")
            wd = Signal.like(self.wp[b].data, name=f"{self.name}_wd{b}")
            we = Signal(name=f"{self.name}_we{b}")
            m.d.sync += [wa.eq(hi + carry), wd.eq(rot[b][:self.width]), we.eq(en & rot[b][self.width])]
            m.d.comb += [self.wp[b].addr.eq(wa), self.wp[b].data.eq(wd), self.wp[b].en.eq(we)]


def dbg_latency(plan) -> int:
    """Clocks from `dbg_addr` to `dbg_data`: the aux copy's bank address register and its
    read, and the aux start register of a deep pipeline."""
    return 2 + int(plan.deep_pipeline)


class Accelerator(wiring.Component):
    def __init__(self, plan: Plan):
        self.plan = p = plan
        self.recs = descriptor_records(p)
        self.layout = descriptor_layout(p, self.recs)
        self.AW = _ubits(max(1, p.banks * p.bank_depth - 1))
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
            **({"wl_addr": In(range(max(2, len(p.loaded_words)))), "wl_data": In(p.loaded_word_bits),
                "wl_en": In(1), "wl_done": In(1)} if p.weights_loaded else {}),
        })

    def elaborate(self, platform):
        p = self.plan
        m = Module()
        PO, PI, PX, A, AW = p.PO, p.PI, p.PX, p.act_bits, self.AW
        NB = p.banks
        VB, ACC = p.value_bits, p.acc_bits
        TU = max(t for t, _ in p.wformats) if p.wformats else 1
        MSU = max(s for _, s in p.wformats) if p.wformats else 0
        SBU = shift_bits(MSU)
        nsteps = len(p.steps)
        deep = p.deep_pipeline

        def stage(sigs, tag, on=True):
            """`sigs` one clock later (registered copies), or the signals themselves if not `on`."""
            if not on:
                return list(sigs)
            out = [Signal(x.shape(), name=f"{tag}_{k}") for k, x in enumerate(sigs)]
            m.d.sync += [a.eq(b) for a, b in zip(out, sigs)]
            return out
        strides = sorted({s.pick for s in p.steps if s.op == "conv" and s.rowmode} | {1})

        # ---------------------------------------------------------------- memories
        drom = Memory(shape=self.layout, depth=max(2, nsteps), init=self.recs)
        m.submodules.drom = drom
        d_rp = drom.read_port()
        # the descriptor in flip-flops: its fields fan out to the whole sequencer, and the
        # ROM may be block RAM (5.8 ns clock-to-out on the ECP5); LOAD waits two clocks
        d = Signal(self.layout, name="desc")
        m.d.sync += d.eq(d_rp.data)
        step = Signal(range(max(2, nsteps)))
        m.d.comb += [d_rp.addr.eq(step), self.step_idx.eq(step)]

        lane_mem = _BankedMemory(m, "act", NB, PX, p.bank_depth, A, out_reg=deep)  # the PE array's reads
        aux_mem = _BankedMemory(m, "aux", NB, PX, p.bank_depth, A, out_reg=deep)  # residual, misc, debug

        wrps = []
        bank_depths = [p.weight_bank_depth(f) for f in range(len(p.wmem))]
        for f, (words, bd) in enumerate(zip(p.wmem, bank_depths)):
            if p.weights_loaded:
                # written at boot through wl_*: no initial contents, one address for the write
                # and the read port (what yosys maps to iCE40 SPRAM, see hw/synth.py)
                from hw.synth import SPRAM_ATTRS
                mem = Memory(shape=unsigned(p.wmem_word_bits[f]), depth=max(2, len(words)), init=[],
                             attrs=SPRAM_ATTRS)
                m.submodules[f"wmem{f}"] = mem
                wp = mem.write_port()
                rp = mem.read_port()
                waddr = Signal.like(rp.addr, name="wmem_addr")
                m.d.comb += [wp.addr.eq(waddr), rp.addr.eq(waddr), wp.en.eq(self.wl_en), wp.data.eq(self.wl_data),
                             rp.en.eq(~self.wl_en)]
                wrps.append((rp, waddr))
            elif bd:
                # banks one block RAM deep (Plan.weight_bank_depth), the address a clock
                # early. Each bank's word goes into its own flip-flops, zeroed unless the
                # bank is the one addressed (`hit`, registered beside the bank: no select
                # crosses the die), then the words are OR-ed into flip-flops (`rp` is a
                # stand-in whose data is that register, as late as a memory's would be
                # after the usual address)
                waddr = Signal(range(max(2, len(words))), name=f"wmem{f}_addr")
                outs = []
                for b in range(-(-len(words) // bd)):
                    chunk = words[b * bd:(b + 1) * bd]
                    mem = Memory(shape=unsigned(p.wmem_word_bits[f]), depth=max(2, len(chunk)), init=chunk,
                                 attrs={"ram_style": "block"})
                    m.submodules[f"wmem{f}_{b}"] = mem
                    brp = mem.read_port()
                    m.d.comb += brp.addr.eq(waddr[:_log2(bd)])
                    hit = Signal(name=f"wbank{f}_{b}_hit")
                    m.d.sync += hit.eq((waddr >> _log2(bd)) == b)
                    out = Signal.like(brp.data, name=f"wbank{f}_{b}_q")
                    m.d.sync += out.eq(Mux(hit, brp.data, 0))
                    outs.append(out)
                picked = Signal(p.wmem_word_bits[f], name=f"wmem{f}_word")
                word_or = outs[0]
                for out in outs[1:]:
                    word_or = word_or | out
                m.d.sync += picked.eq(word_or)
                wrps.append((_Word(picked), waddr))
            else:
                mem = Memory(shape=unsigned(p.wmem_word_bits[f]), depth=max(2, len(words)), init=words)
                m.submodules[f"wmem{f}"] = mem
                rp = mem.read_port()
                wrps.append((rp, rp.addr))
        banked = any(bank_depths)
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
        # up to PX elements per clock into both copies, element k at wr_addr + k; a
        # deinterleaved output's group goes as two runs: its even lanes at positions
        # 0 .. PX/2-1, its odd lanes W/2 further (`dil_halves`), so the bus has NW positions
        halves = dil_halves(p)
        NW = max([PX] + [h + PX // 2 for h in halves])
        assert NW <= NB
        wr_en = Signal()
        wr_addr = Signal(AW)
        wr_data = [Signal(A, name=f"wr_data{k}") for k in range(NW)]
        wr_valid = [Signal(name=f"wr_valid{k}") for k in range(NW)]
        # deep: registered before the banks' rotation and address logic (the sources' sums
        # are in front of it)
        wr_bus = stage([wr_en, wr_addr] + wr_data + wr_valid, "wr_bus", deep)
        wr_en_r, wr_addr_r = wr_bus[:2]
        wr_data_r, wr_valid_r = wr_bus[2:2 + NW], wr_bus[2 + NW:]
        for mem in (lane_mem, aux_mem):
            mem.write(wr_en_r, wr_addr_r, wr_data_r, wr_valid_r)

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
        def rng(key, extra=1):
            return range(max(2, max(r[key] for r in self.recs) + extra))
        og = Signal(rng("OG"))
        pg = Signal(rng("PG"))
        t = Signal(rng("S"))
        npass = max(r["npass"] for r in self.recs)
        ps = Signal(range(max(2, npass)))   # weight pass (innermost: same activations)
        kx = Signal(rng("KW"))
        ky = Signal(rng("KH"))
        chan = Signal(AW + 1)           # cg * PI * HWp_in
        koff = Signal(signed(AW + 2))
        wrow = Signal(max(1, max(len(w) for w in p.wmem).bit_length() + 1))
        og_out = Signal(AW + 1)         # og * PO * HWp_out
        og_res = Signal(signed(AW + 2))  # (og * PO - res_lo) * res_hwp
        # what only some plans use is not built for the others (the UP5K is nearly full)
        has_fold = any(s.res_fold for s in p.steps)
        kx_alt = any((s.kx_a, s.kx_b) != (1, 1) for s in p.steps if s.op == "conv")
        og_ch = Signal(range(max(2, max(r["OG"] for r in self.recs) * PO + 1)))
        issuing = Signal()
        row0 = Signal(signed(AW + 2))   # lane 0's iy*W + ix
        lanes = []
        for j in range(PX):
            lanes.append(dict(iy=Signal(signed(AW + 2), name=f"iy{j}"), ix=Signal(signed(AW + 2), name=f"ix{j}"),
                              pix=Signal(AW + 1, name=f"pix{j}")))

        def lanes_reset():
            return [row0.eq(d.row0)] + [x for j, L in enumerate(lanes) for x in (
                L["iy"].eq(d[f"iy{j}"]), L["ix"].eq(d[f"ix{j}"]), L["pix"].eq(j))]

        drain_busy = Signal()
        # conv pipeline (clock k after the issue): 1 memories' outputs into flip-flops,
        # 2 window rotated, decoded, registered, 3 PE products registered, 4 accumulators
        # updated, 5 the finished group into the shadow rows (lastc)
        v1, first1, last1 = Signal(), Signal(), Signal()
        v2, first2, last2 = Signal(), Signal(), Signal()
        v3, first3, last3 = Signal(), Signal(), Signal()
        # the PEs take pe_latency clocks from their inputs to the accumulator update:
        # v3 / last3 delayed by that many (v4.., last4..), then lastc
        lastc = Signal()
        # deep: the rotated window in flip-flops (lane_mem out_reg), one clock more
        v1b, first1b, last1b = stage([v1, first1, last1], "v1b", deep)
        m.d.sync += [v2.eq(v1b), first2.eq(first1b), last2.eq(last1b), v3.eq(v2), first3.eq(first2),
                     last3.eq(last2)]
        vpe, lastpe = [v3], [last3]
        for k in range(pe_latency(deep)):
            vk, lk = Signal(name=f"v{4 + k}"), Signal(name=f"last{4 + k}")
            m.d.sync += [vk.eq(vpe[-1]), lk.eq(lastpe[-1])]
            vpe.append(vk)
            lastpe.append(lk)
        m.d.sync += lastc.eq(lastpe[-1])
        last_step = Signal()
        m.d.comb += last_step.eq(t == d.S - 1)
        stall = Signal()
        last0, last00 = Signal(), Signal()   # the issue registered (stages 0r, 0rr, below)
        # A group's last issue reaches lastc a fixed number of clocks later (the pipeline
        # never stalls), and its drain then takes PO clocks: the next group's results may
        # load the shadow rows PO clocks after this group's did. The group's pixel and
        # channel registers (grp_*2) are held from last1 to lastc, so the next group's
        # last1 may not come sooner either. A group's last issue therefore waits until
        # GAP clocks have passed since the previous group's (not for the drain to end:
        # that cost the 2-pass stem, S = 18, 5 clocks a group).
        GAP = group_gap(PO, deep)
        since_last = Signal(range(GAP + 1))
        fire = Signal()
        m.d.comb += stall.eq(last_step & (since_last < GAP))
        m.d.comb += fire.eq(issuing & ~stall)
        with m.If(conv_go):
            m.d.sync += since_last.eq(GAP)
        with m.Elif(fire & last_step):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < GAP):
            m.d.sync += since_last.eq(since_last + 1)

        # this clock's reads: PI windows of PX elements, channel lane i at i*HWp_in
        pixok, lane_ok = [], []
        for j, L in enumerate(lanes):
            iy = L["iy"] + ky
            ix = L["ix"] + kx
            pv = Signal(name=f"pixok{j}")
            m.d.comb += pv.eq(Mux(d.rowmode, (L["ix"] < d.wrap_lim) & d.lmask[j], L["pix"] < d.HoWo))
            ok = Signal(name=f"ok{j}")
            m.d.comb += ok.eq(pv & (iy >= 0) & (iy < d.H) & (ix >= 0) & (ix < d.W))
            pixok.append(pv)
            lane_ok.append(ok)
        wstart = Signal(AW, name="wstart")
        m.d.comb += wstart.eq(d.in_base + chan + row0 + koff)
        starts = [wstart]
        for i in range(1, PI):
            si = Signal(AW, name=f"wstart{i}")
            m.d.comb += si.eq(wstart + d[f"ioff{i}"])
            starts.append(si)
        # stage 0r: the issue (window starts, weight row, lane flags) into flip-flops, so
        # the counters' sums and the banks' address logic are in separate clocks
        fire0, first0 = Signal(), Signal()
        m.d.sync += [fire0.eq(fire), first0.eq(fire & (t == 0)), last0.eq(fire & last_step)]
        starts_r = [Signal(AW, name=f"wstart_r{i}") for i in range(PI)]
        m.d.sync += [a.eq(b) for a, b in zip(starts_r, starts)]
        wrow_r = Signal.like(wrow, name="wrow_r")
        m.d.sync += wrow_r.eq(wrow + t)
        ok0 = [Signal(name=f"ok0_{j}") for j in range(PX)]
        pv0 = [Signal(name=f"pv0_{j}") for j in range(PX)]
        ps0 = Signal.like(ps, name="ps0")
        grp_pix0 = Signal(AW + 1)
        grp_ch0, grp_out0, grp_res0 = Signal.like(og_ch), Signal.like(og_out), Signal.like(og_res)
        m.d.sync += [a.eq(b) for a, b in zip(ok0, lane_ok)] + [a.eq(b) for a, b in zip(pv0, pixok)]
        m.d.sync += [ps0.eq(ps), grp_pix0.eq(lanes[0]["pix"]), grp_ch0.eq(og_ch), grp_out0.eq(og_out),
                     grp_res0.eq(og_res)]
        window = lane_mem.window_read(starts_r)
        # stage 0rr: the banks' addresses in their flip-flops (lane_mem.latency); the weight
        # row waits there too, and the flags with it
        wrow_rr = Signal.like(wrow, name="wrow_rr")
        m.d.sync += wrow_rr.eq(wrow_r)
        wrow_rrr, = stage([wrow_rr], "wrow_rrr", deep)     # deep: the window's register
        for f, (rp, addr) in enumerate(wrps):
            if p.weights_loaded:
                m.d.comb += addr.eq(Mux(self.wl_en, self.wl_addr, wrow_rrr))
            else:
                # banked: the banks' and the pick's flip-flops take the clock the
                # others' w_rr takes, so the address goes a clock early
                m.d.comb += addr.eq(wrow_rr if banked else wrow_rrr)
        fire00, first00 = Signal(), Signal()
        m.d.sync += [fire00.eq(fire0), first00.eq(first0), last00.eq(last0)]
        ok00 = [Signal(name=f"ok00_{j}") for j in range(PX)]
        pv00 = [Signal(name=f"pv00_{j}") for j in range(PX)]
        ps00 = Signal.like(ps, name="ps00")
        grp_pix00 = Signal.like(grp_pix0)
        grp_ch00, grp_out00, grp_res00 = Signal.like(og_ch), Signal.like(og_out), Signal.like(og_res)
        m.d.sync += [a.eq(b) for a, b in zip(ok00, ok0)] + [a.eq(b) for a, b in zip(pv00, pv0)]
        m.d.sync += [ps00.eq(ps0), grp_pix00.eq(grp_pix0), grp_ch00.eq(grp_ch0), grp_out00.eq(grp_out0),
                     grp_res00.eq(grp_res0)]

        # pipeline stage 1 (data from the memories) and 2 (accumulators updated)
        ok1 = [Signal(name=f"ok1_{j}") for j in range(PX)]
        pv1 = [Signal(name=f"pv1_{j}") for j in range(PX)]
        grp_pix1 = Signal(AW + 1)
        grp_ch1, grp_out1, grp_res1 = Signal.like(og_ch), Signal.like(og_out), Signal.like(og_res)
        m.d.sync += [v1.eq(fire00), first1.eq(first00), last1.eq(last00)]
        ps1 = Signal.like(ps)
        ok1b = stage(ok1, "ok1b", deep)
        ok2 = [Signal(name=f"ok2_{j}") for j in range(PX)]
        m.d.sync += [a.eq(b) for a, b in zip(ok2, ok1b)]
        with m.If(fire00):
            m.d.sync += [o.eq(k) for o, k in zip(ok1, ok00)] + [ps1.eq(ps00)]
            with m.If(last00):
                m.d.sync += [a.eq(b) for a, b in zip(pv1, pv00)]
                m.d.sync += [grp_pix1.eq(grp_pix00), grp_ch1.eq(grp_ch00), grp_out1.eq(grp_out00),
                             grp_res1.eq(grp_res00)]

        with m.If(conv_go):
            m.d.sync += [issuing.eq(1), og.eq(0), pg.eq(0), t.eq(0), ps.eq(0), kx.eq(0), ky.eq(0), chan.eq(0),
                         koff.eq(0), wrow.eq(d.wbase), og_out.eq(0), og_ch.eq(0)] + lanes_reset()
            if has_fold:
                m.d.sync += og_res.eq(d.res_off0)
        with m.Elif(fire):
            with m.If(last_step):
                m.d.sync += [t.eq(0), ps.eq(0), kx.eq(0), ky.eq(0), chan.eq(0), koff.eq(0)]
                with m.If(pg == d.PG - 1):
                    if has_fold:
                        m.d.sync += og_res.eq(og_res + d.og_res)
                    m.d.sync += [pg.eq(0), og.eq(og + 1), wrow.eq(wrow + d.S), og_out.eq(og_out + d.og_out),
                                 og_ch.eq(og_ch + PO)] + lanes_reset()
                    with m.If(og == d.OG - 1):
                        m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += pg.eq(pg + 1)
                    wrap0 = Signal()
                    m.d.comb += wrap0.eq(lanes[0]["ix"] + d.dix >= d.wrap_lim)
                    with m.If(wrap0):
                        m.d.sync += row0.eq(row0 + d.drow + d.wrap_row)
                    with m.Else():
                        m.d.sync += row0.eq(row0 + d.drow)
                    for j, L in enumerate(lanes):
                        nix = L["ix"] + d.dix
                        wj = Signal(name=f"wrap{j}")
                        m.d.comb += wj.eq(Mux(d.rowmode, wrap0, nix >= d.wrap_lim))
                        with m.If(wj):
                            m.d.sync += [L["ix"].eq(nix - d.wrap_ix), L["iy"].eq(L["iy"] + d.diy + d.stride)]
                        with m.Else():
                            m.d.sync += [L["ix"].eq(nix), L["iy"].eq(L["iy"] + d.diy)]
                        m.d.sync += L["pix"].eq(L["pix"] + Mux(d.rowmode & wrap0, d.dpix_wrap, d.dpix))
            with m.Else():
                m.d.sync += t.eq(t + 1)
                with m.If(ps != d.npass - 1):
                    m.d.sync += ps.eq(ps + 1)
                with m.Elif(kx == d.KW - 1):
                    m.d.sync += [ps.eq(0), kx.eq(0)]
                    with m.If(ky == d.KH - 1):
                        m.d.sync += [ky.eq(0), koff.eq(0), chan.eq(chan + d.cg_step)]
                    with m.Else():
                        m.d.sync += [ky.eq(ky + 1), koff.eq(koff + d.k_row)]
                with m.Else():
                    m.d.sync += [ps.eq(0), kx.eq(kx + 1),
                                 koff.eq(koff + (Mux(kx[0], d.kx_b, d.kx_a) if kx_alt else 1))]

        # stage 1: pick each lane's element of the window, decode, register
        values = [[None] * PX for _ in range(PI)]
        for i in range(PI):
            for j in range(PX):
                cands = [(s_, window[i * PX + j * s_]) for s_ in strides if j * s_ < PX]
                el = cands[0][1]
                for s_, e in cands[1:]:
                    el = Mux(d.rowmode & (d.pick == s_), e, el)
                raw = decode(el, d.in_mode, d.in_lv, f"val{i}_{j}")
                v = Signal(signed(VB), name=f"value{i}_{j}")
                m.d.comb += v.eq(Mux(ok2[j], raw, 0))
                values[i][j] = v
        TWU = TU * (2 + SBU)
        wsel = [[Signal(TWU, name=f"w{o}_{i}") for i in range(PI)] for o in range(PO)]
        # banked, the picked word is a clock after a memory's data: a format gate would
        # need d.wfmt delayed with it (make_plan makes one format)
        assert not (banked and len(p.wformats) > 1), "banked weights with several formats"
        for f, ((T, MS), (rp, _)) in enumerate(zip(p.wformats, wrps)):
            sb = shift_bits(MS)
            tw = T * (2 + sb)
            # one format (the plan's PE format): the memory's word straight into w_r, no
            # gate in the path that limits the clock (block RAM output across the die)
            with (m.If(d.wfmt == f) if len(p.wformats) > 1 else nullcontext()):
                for o in range(PO):
                    for i in range(PI):
                        word = rp.data[(o * PI + i) * tw:(o * PI + i + 1) * tw]
                        fields = []
                        for k in range(TU):
                            if k < T:
                                fld = word[k * (2 + sb):(k + 1) * (2 + sb)]
                                fields.append(Cat(fld[:sb], Const(0, SBU - sb), fld[sb], fld[sb + 1]))
                            else:
                                fields.append(Const(0, 2 + SBU))
                        m.d.comb += wsel[o][i].eq(Cat(*fields))
        # decoded values and weights registered (stage 1r): the PEs' inputs come from flip-flops
        values_r = [[Signal(signed(VB), name=f"value_r{i}_{j}") for j in range(PX)] for i in range(PI)]
        wsel_r = [[Signal(TWU, name=f"w_r{o}_{i}") for i in range(PI)] for o in range(PO)]
        m.d.sync += [values_r[i][j].eq(values[i][j]) for i in range(PI) for j in range(PX)]
        m.d.sync += [wsel_r[o][i].eq(wsel[o][i]) for o in range(PO) for i in range(PI)]
        # the PEs' weights four clocks after wrow_rr: memory, w_r, w_rr; banked (address
        # from wrow_rr itself), memory, bank flip-flops, pick, w_r
        wsel_rr = wsel_r if banked else [stage(wsel_r[o], f"w_rr{o}") for o in range(PO)]
        ps_r, ps_rr = Signal.like(ps), Signal.like(ps)
        m.d.sync += [ps_r.eq(ps1), ps_rr.eq(ps_r)]
        ps_rrr, = stage([ps_rr], "ps_rrr", deep)
        # the PEs' controls: deep, one copy per row of PEs (v3, first3, ps_rrr each kept
        # as PO flip-flops), then each PE's own input flip-flops; else one broadcast
        ctl = []
        for o in range(PO):
            if deep:
                row = [Signal(1, name=f"en_row{o}", attrs=KEEP_FF, reset_less=True),
                       Signal(1, name=f"clear_row{o}", attrs=KEEP_FF, reset_less=True),
                       Signal.like(ps, name=f"pass_row{o}", attrs=KEEP_FF, reset_less=True)]
                m.d.sync += [row[0].eq(v2), row[1].eq(first2), row[2].eq(ps_rr)]
                ctl.append(row)
            else:
                ctl.append([v3, first3, ps_rrr])
        pes = [[None] * PX for _ in range(PO)]
        for o in range(PO):
            for j in range(PX):
                pe = ShiftAddDotPE(n=PI, value_bits=VB, terms=TU, max_shift=MSU, acc_bits=ACC, passes=npass,
                                   registered=True, split=PE_SPLIT, in_reg=deep)
                assert pe.latency == pe_latency(deep)
                m.submodules[f"pe_{o}_{j}"] = pe
                if npass > 1:
                    m.d.comb += pe.pass_.eq(ctl[o][2])
                m.d.comb += [pe.act[i].eq(values_r[i][j]) for i in range(PI)]
                m.d.comb += [pe.weight[i].eq(wsel_rr[o][i]) for i in range(PI)]
                m.d.comb += [pe.en.eq(ctl[o][0]), pe.clear.eq(ctl[o][1])]
                pes[o][j] = pe

        # stage 2: the finished group into the shadow rows (one row = one output channel)
        grp_pix2 = Signal.like(grp_pix1)
        pv2 = [Signal(name=f"pv2_{j}") for j in range(PX)]
        grp_ch2, grp_out2, grp_res2 = Signal.like(og_ch), Signal.like(og_out), Signal.like(og_res)
        with m.If(last1):
            m.d.sync += [grp_pix2.eq(grp_pix1), grp_ch2.eq(grp_ch1), grp_out2.eq(grp_out1), grp_res2.eq(grp_res1)]
            m.d.sync += [a.eq(b) for a, b in zip(pv2, pv1)]
        shadow = [[Signal(signed(ACC), name=f"sh{o}_{j}") for j in range(PX)] for o in range(PO)]
        spv = [Signal(name=f"spv{j}") for j in range(PX)]
        spix = Signal.like(grp_pix1)
        s_o = Signal(range(max(2, PO + 1)))
        s_ch = Signal.like(og_ch)
        s_off = Signal(AW + 1)           # og*PO*HWp_out + o*HWp_out
        # the group's write offset: its first pixel's word, x0 / 2 in a deinterleaved row
        spix_w = Signal.like(grp_pix1)
        # the residual's: channel offset (o - res_lo) * res_hwp, pixel offset (rmask)
        s_roff = Signal.like(og_res)
        spix_r = Signal(AW + 2)
        with m.If(lastc):
            m.d.sync += [shadow[o][j].eq(pes[o][j].acc) for o in range(PO) for j in range(PX)]
            m.d.sync += [a.eq(b) for a, b in zip(spv, pv2)]
            m.d.sync += [spix.eq(grp_pix2), drain_busy.eq(1), s_o.eq(0), s_ch.eq(grp_ch2), s_off.eq(grp_out2)]
            if halves:
                m.d.sync += spix_w.eq(grp_pix2 - Mux(d.dil_out, (grp_pix2 & d.wmask) >> 1, 0))
            else:
                m.d.sync += spix_w.eq(grp_pix2)
            hi = Signal.like(grp_pix2, name="spix_hi")       # oy * Wo (folded shortcut)
            m.d.comb += hi.eq(grp_pix2 & d.rmask)
            # p + 3 (p & rmask) as shifts and adds: `3 * x` would become a DSP multiplier
            m.d.sync += [s_roff.eq(grp_res2), spix_r.eq(grp_pix2 + (hi << 1) + hi)]
        with m.Elif(drain_busy):
            m.d.sync += [shadow[o][j].eq(shadow[o + 1][j]) for o in range(PO - 1) for j in range(PX)]
            m.d.sync += [s_o.eq(s_o + 1), s_ch.eq(s_ch + 1), s_off.eq(s_off + d.HWp_out),
                         s_roff.eq(s_roff + d.res_hwp)]
            with m.If(s_o == PO - 1):
                m.d.sync += drain_busy.eq(0)
        drain_req_valid = Signal()
        m.d.comb += drain_req_valid.eq(drain_busy & (s_ch < d.O))

        # ---------------------------------------------------------------- misc steps
        mc = Signal(range(max(2, max(max(r["C"], r["O"]) for r in self.recs) + 1)))
        moy = Signal(rng("Ho"))
        mox = Signal(rng("Wo"))
        mky = Signal.like(ky)
        mkx = Signal.like(kx)
        mcb = Signal(AW + 1)          # input channel base (c*HWp_in, or the shortcut's src offset)
        mrb = Signal(AW + 1)          # row base (oy*s*W)
        mcc = Signal(AW + 1)          # column (ox*s)
        mkoff = Signal(AW + 1)
        mob = Signal(AW + 1)          # output channel base (c*HWp_out)
        mopix = Signal(AW + 1)        # output pixel (maxpool, shortcut) / input pixel (gap)
        mstate = Signal(range(4))     # 0 idle, 1 running, 2 shortcut: fetch src, 3 wait src
        mrd = Signal()                # a read issued this clock
        mfirst, mlast = Signal(), Signal()
        mvalid_src = Signal()
        mlv = [Signal(name=f"mlv{j}") for j in range(PX)]     # lanes of this clock's read

        maddr = Signal(AW + 1)
        m.d.comb += src_rp.addr.eq(d.src_base + mc)
        srcoff = src_rp.data
        with m.If(d.op == OPS["gap"]):
            m.d.comb += maddr.eq(d.in_base + mcb + mopix)
        with m.Else():
            m.d.comb += maddr.eq(d.in_base + mcb + mrb + mcc + mkoff)
        sc_zero = Signal()            # shortcut: this output channel is a zero channel
        # the read's flags and output offset travel with it: AUX_LAT clocks from the aux
        # start to the window (stage 2: data there)
        AUX_LAT = int(deep) + aux_mem.latency
        src = [mrd, mvalid_src, mfirst, mlast, mc, Mux(d.op == OPS["gap"], mob, mob + mopix)] + mlv
        mstages = []
        for k in range(AUX_LAT):
            prev = mstages[-1] if mstages else src
            cur = [Signal(x.shape(), name=f"mq{k}_{n}") for n, x in enumerate(prev)]
            m.d.sync += [a.eq(b) for a, b in zip(cur, prev)]
            mstages.append(cur)
        m2, mvalid2, mfirst2, mlast2, mch2, mwa2 = mstages[-1][:6]
        mlv2 = mstages[-1][6:]
        # gap: stage 3 the decoded window (aux_vals_r), stage 4 its lanes' sum (gpart)
        m3, mfirst3, mlast3, mch3, mwa3 = Signal(), Signal(), Signal(), Signal.like(mc), Signal.like(mwa2)
        mlv3 = [Signal(name=f"mlv3_{j}") for j in range(PX)]
        m.d.sync += [m3.eq(m2), mfirst3.eq(mfirst2), mlast3.eq(mlast2), mch3.eq(mch2), mwa3.eq(mwa2)]
        m.d.sync += [a.eq(b) for a, b in zip(mlv3, mlv2)]
        m4, mfirst4, mlast4, mch4, mwa4 = stage([m3, mfirst3, mlast3, mch3, mwa3], "m4", deep)
        in_misc = m3 | m4
        for st in mstages:
            in_misc = in_misc | st[0]
        m.d.comb += misc_idle.eq((mstate == 0) & ~in_misc)

        def next_output_row(channel_end):
            """maxpool / shortcut: the next output row, or the next channel after the last
            row (with `channel_end`'s extra updates); the step ends after the last channel."""
            with m.If(moy == d.Ho - 1):
                m.d.sync += [moy.eq(0), mrb.eq(0), mc.eq(mc + 1), mob.eq(mob + d.HWp_out), mopix.eq(0)]
                m.d.sync += channel_end
                with m.If(mc == d.O - 1):
                    m.d.sync += mstate.eq(0)
            with m.Else():
                m.d.sync += [moy.eq(moy + 1), mrb.eq(mrb + d.row_step)]

        with m.If(misc_go):
            m.d.sync += [mc.eq(0), moy.eq(0), mox.eq(0), mky.eq(0), mkx.eq(0), mcb.eq(0), mrb.eq(0),
                         mcc.eq(0), mkoff.eq(0), mob.eq(0), mopix.eq(0)]
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
                    m.d.comb += mlv[0].eq(1)
                    m.d.comb += [mfirst.eq((mky == 0) & (mkx == 0)),
                                 mlast.eq((mky == d.KH - 1) & (mkx == d.KW - 1)), mvalid_src.eq(1)]
                    with m.If(mkx == d.KW - 1):
                        m.d.sync += mkx.eq(0)
                        with m.If(mky == d.KH - 1):
                            m.d.sync += [mky.eq(0), mkoff.eq(0), mopix.eq(mopix + 1)]
                            with m.If(mox == d.Wo - 1):
                                m.d.sync += [mox.eq(0), mcc.eq(0)]
                                next_output_row([mcb.eq(mcb + d.HWp_in)])
                            with m.Else():
                                m.d.sync += [mox.eq(mox + 1), mcc.eq(mcc + d.stride)]
                        with m.Else():
                            m.d.sync += [mky.eq(mky + 1), mkoff.eq(mkoff + d.k_row)]
                    with m.Else():
                        m.d.sync += [mkx.eq(mkx + 1), mkoff.eq(mkoff + 1)]
                with m.Case(OPS["shortcut"]):
                    # sl output pixels of a row per clock: a stride-s window of the aux copy
                    m.d.comb += [mfirst.eq(1), mlast.eq(1), mvalid_src.eq(~sc_zero)]
                    m.d.comb += [mlv[j].eq((mox + j < d.Wo) & (j < d.sl)) for j in range(PX)]
                    with m.If(mox + d.sl >= d.Wo):
                        m.d.sync += [mox.eq(0), mcc.eq(0), mopix.eq(mopix + d.Wo - mox)]
                        next_output_row([mstate.eq(2)])      # fetch the next channel's source
                    with m.Else():
                        m.d.sync += [mox.eq(mox + d.sl), mcc.eq(mcc + d.sl_cc), mopix.eq(mopix + d.sl)]
                with m.Case(OPS["gap"]):
                    # PX pixels of a channel per clock, summed
                    m.d.comb += [mfirst.eq(mopix == 0), mlast.eq(mopix + PX >= d.HW), mvalid_src.eq(1)]
                    m.d.comb += [mlv[j].eq(mopix + j < d.HW) for j in range(PX)]
                    with m.If(mopix + PX >= d.HW):
                        m.d.sync += [mopix.eq(0), mc.eq(mc + 1), mcb.eq(mcb + d.HWp_in), mob.eq(mob + d.HWp_out)]
                        with m.If(mc == d.C - 1):
                            m.d.sync += mstate.eq(0)
                    with m.Else():
                        m.d.sync += mopix.eq(mopix + PX)
        with m.If(mstate == 3):
            m.d.sync += sc_zero.eq(srcoff < 0)

        mbest = Signal(A)
        msum = Signal(signed(ACC + 1))
        misc_wr = Signal()
        misc_wdata = [Signal(A, name=f"misc_wdata{j}") for j in range(PX)]
        gap_req = Signal()
        gap_acc = Signal(signed(ACC))
        gap_ch = Signal.like(mc)
        gap_off = Signal(AW + 1)

        # ---------------------------------------------------------------- aux reads
        # residual windows (drain), misc reads, debug reads share the aux copy; the start
        # goes into flip-flops first (its sums and the banks' address logic in two clocks)
        aux_start = Signal(AW)
        req_off = Signal(AW + 1)
        with m.If(drain_busy):
            m.d.comb += aux_start.eq(d.res_base + req_off)   # the residual's window
        with m.Elif(mstate != 0):
            m.d.comb += aux_start.eq(maddr)
        with m.Else():
            m.d.comb += aux_start.eq(self.dbg_addr)
        aux_start_r, = stage([aux_start], "aux_start_r", deep)
        aux_data = aux_mem.window_read([aux_start_r])
        m.d.comb += self.dbg_data.eq(aux_mem.first_now)

        # the aux window's elements decoded (residual values of the drain, or gap inputs)
        # and registered: aux_vals_r one clock after aux_data
        is_gap = Signal()
        m.d.comb += is_gap.eq(d.op == OPS["gap"])
        aux_vals = [decode(aux_data[j], Mux(is_gap, d.in_mode, d.res_mode), Mux(is_gap, d.in_lv, d.res_lv),
                           f"aux_value{j}") for j in range(PX)]
        aux_vals_r = [Signal(signed(VB), name=f"aux_value_r{j}") for j in range(PX)]
        m.d.sync += [a.eq(b) for a, b in zip(aux_vals_r, aux_vals)]
        sc_cands = {s_: [aux_data[j * s_] if j * s_ < NB else Const(0, A) for j in range(PX)]
                    for s_ in sorted({s.pick for s in p.steps if s.op == "shortcut"} | {1})}
        with m.If(m2):
            with m.Switch(d.op):
                with m.Case(OPS["maxpool"]):
                    cur = Mux(mfirst2 | (aux_data[0] > mbest), aux_data[0], mbest)
                    m.d.sync += mbest.eq(cur)
                    with m.If(mlast2):
                        m.d.comb += [misc_wr.eq(1), misc_wdata[0].eq(cur)]
                with m.Case(OPS["shortcut"]):
                    m.d.comb += misc_wr.eq(1)
                    for j in range(PX):
                        el = sc_cands[1][j]
                        for s_, c in sc_cands.items():
                            if s_ != 1:
                                el = Mux(d.pick == s_, c[j], el)
                        m.d.comb += misc_wdata[j].eq(Mux(mvalid2, el, 0))
        # gap: stage 3 sums the decoded lanes (deep: registered), stage 4 accumulates
        gsum = Signal(signed(VB + PX.bit_length()))
        m.d.comb += gsum.eq(sum(Mux(mlv3[j], aux_vals_r[j], 0) for j in range(PX)))
        gpart, = stage([gsum], "gpart", deep)
        with m.If(m4 & is_gap):
            tot = Mux(mfirst4, 0, msum) + gpart
            m.d.sync += msum.eq(tot)
            with m.If(mlast4):
                m.d.comb += [gap_req.eq(1), gap_acc.eq(tot), gap_ch.eq(mch4), gap_off.eq(mwa4)]

        # ---------------------------------------------------------------- requant pipeline
        # PX lanes in lockstep: one output channel's PX results per clock
        req_valid = Signal()
        req_acc = [Signal(signed(ACC), name=f"req_acc{j}") for j in range(PX)]
        req_pv = [Signal(name=f"req_pv{j}") for j in range(PX)]
        req_ch = Signal.like(og_ch)
        req_woff = Signal(AW + 1)            # the write's offset (req_off: the residual's)
        req_rz = Signal()                    # this channel's residual is zero (folded shortcut)
        m.d.comb += [
            req_valid.eq(drain_req_valid | gap_req),
            req_ch.eq(Mux(drain_busy, s_ch, gap_ch)),
            req_off.eq(s_roff + spix_r if has_fold else s_off + spix),
            req_rz.eq((s_ch < d.res_lo) | (s_ch >= d.res_hi) if has_fold else 0),
            req_woff.eq(Mux(drain_busy, s_off + spix_w, gap_off)),
        ]
        m.d.comb += [req_acc[j].eq(Mux(drain_busy, shadow[0][j], gap_acc if j == 0 else 0)) for j in range(PX)]
        m.d.comb += [req_pv[j].eq(Mux(drain_busy, spv[j], 1 if j == 0 else 0)) for j in range(PX)]
        # The request (clock t) and what travels with it: accumulators, lane flags, output
        # channel and offset. The residual window is in aux_vals_r at t+AUX_LAT+1, and the
        # accumulators wait for it (the `rq` chain); the constants are read one clock
        # before (deep: two, their ROM's outputs into flip-flops: the multipliers follow
        # and the ROM may be block RAM). Then, one clock each: products; their sum (deep); the shift; the
        # activation rule's comparisons (deep); the code (r2), written on the next clock.
        rq = [req_valid, req_woff, req_ch, req_rz] + req_acc + req_pv
        rq_valids = []
        for k in range(AUX_LAT + 1):
            if k == AUX_LAT - int(deep):
                for rp in crp.values():
                    m.d.comb += rp.addr.eq(d.cbase + rq[2])
            rq = stage(rq, f"rq{k}")
            rq_valids.append(rq[0])
        r1c_valid, r1c_off, r1c_ch, r1c_rz = rq[:4]
        r1c_acc, r1c_pv = rq[4:4 + PX], rq[4 + PX:]
        c_mult, c_rmult, c_bias = stage([crp["mult"].data, crp["rmult"].data, crp["bias"].data], "consts", deep)
        # the flags wait for the products, their sum, the shift, the comparisons, the code
        tail = [r1c_valid, r1c_off, r1c_ch] + r1c_pv
        for k in range(3 + 2 * int(deep)):
            tail = stage(tail, f"rt{k}")
            rq_valids.append(tail[0])
        r2_valid, r2_off, r2_ch = tail[:3]
        r2_pv = tail[3:]
        SUMB = max(p.sum_bits, ACC + p.const_bits["mult"], p.const_bits["bias"], VB + p.const_bits["rmult"]) + 3
        r2_code = []
        for j in range(PX):
            res_v = aux_vals_r[j]
            pa = Signal(signed(ACC + p.const_bits["mult"]), name=f"prod_acc{j}")
            pr = Signal(signed(VB + p.const_bits["rmult"]), name=f"prod_res{j}")
            pb = Signal(signed(p.const_bits["bias"]), name=f"bias_r{j}")
            m.d.sync += [pa.eq(r1c_acc[j] * c_mult), pr.eq(Mux(d.has_res & ~r1c_rz, res_v * c_rmult, 0)),
                         pb.eq(c_bias)]
            ssum_c = Signal(signed(SUMB), name=f"ssum_c{j}")
            m.d.comb += ssum_c.eq(pa + pb + pr)
            ssum, = stage([ssum_c], f"ssum{j}", deep)
            y = Signal(signed(SUMB), name=f"y{j}")
            m.d.sync += y.eq(ssum >> d.shift)
            # the rule's comparisons (deep: registered), then the code
            lo_c, hi_c = Signal(name=f"clip_lo_c{j}"), Signal(name=f"clip_hi_c{j}")
            ges_c = [Signal(name=f"ge_c{j}_{k}") for k in range(p.NT)]
            m.d.comb += [lo_c.eq(y < 0), hi_c.eq(y > d.act_max)]
            m.d.comb += [ge.eq(y >= thr_tab[d.act_tab][k]) for k, ge in enumerate(ges_c)]
            cmp = stage([y, lo_c, hi_c] + ges_c, f"cmp{j}", deep)
            y2, lo, hi, ges = cmp[0], cmp[1], cmp[2], cmp[3:]
            code = Signal(signed(max(p.out_bits, A + 1, 2)), name=f"code{j}")
            with m.Switch(d.act):
                with m.Case(ACTS["none"]):
                    m.d.comb += code.eq(y2)
                with m.Case(ACTS["clip"]):
                    m.d.comb += code.eq(Mux(lo, 0, Mux(hi, d.act_max, y2)))
                with m.Default():
                    cnt = 0
                    for ge in ges:
                        cnt = cnt + ge
                    m.d.comb += code.eq(cnt)
            rc = Signal.like(code, name=f"r2_code{j}")
            m.d.sync += rc.eq(code)
            r2_code.append(rc)
        # R4: write
        logits = Array([Signal(signed(p.out_bits), name=f"logit{k}") for k in range(max(1, p.n_out))])
        best = Signal(signed(p.out_bits))
        m.d.comb += self.logit_data.eq(logits[self.logit_addr])
        klass = Signal.like(self.klass)
        m.d.comb += self.klass.eq(klass)
        req_wr = Signal()
        m.d.comb += req_wr.eq(r2_valid & ~d.to_logits)
        with m.If(r2_valid & d.to_logits):
            m.d.sync += logits[r2_ch].eq(r2_code[0])
            with m.If((r2_ch == 0) | (r2_code[0] > best)):
                m.d.sync += [best.eq(r2_code[0]), klass.eq(r2_ch)]

        # ---------------------------------------------------------------- top FSM
        in_pix = Signal(AW + 1)
        in_cb = Signal(AW + 1)
        in_cnt = Signal(range(max(2, p.n_in + 1)))
        out_cnt = Signal(range(max(2, p.n_out + 1)))
        in_base, in_c, in_hw, in_hwp = p.tensor_layout["input"]
        wait = Signal(3)
        done = Signal()
        m.d.comb += [self.done.eq(done), conv_idle.eq(~issuing & ~fire0 & ~fire00 & ~v1 & ~v1b & ~v2 & ~Cat(*vpe).any() &
                                                       ~lastc & ~drain_busy & ~Cat(*rq_valids).any() & ~wr_en_r)]
        in_wr = Signal()
        with m.FSM():
            with m.State("BOOT"):
                # one clock after reset: the state register changes once, so simulators
                # that run `always @*` blocks only on input changes (Icarus) evaluate every
                # output that depends on the state alone (in_ready was X there otherwise)
                m.next = "IDLE"
            with m.State("IDLE"):
                ready = self.wl_done if p.weights_loaded else 1   # weights loaded first
                m.d.comb += self.in_ready.eq(ready)
                with m.If(self.in_valid & ready):
                    m.d.comb += in_wr.eq(1)
                    m.d.sync += [done.eq(0), in_cnt.eq(in_cnt + 1)]
                    with m.If(in_pix == in_hw - 1):
                        m.d.sync += [in_pix.eq(0), in_cb.eq(in_cb + in_hwp)]
                    with m.Else():
                        m.d.sync += in_pix.eq(in_pix + 1)
                    with m.If(in_cnt == 0):
                        m.d.sync += cyc.eq(0)
                    with m.If(in_cnt == p.n_in - 1):
                        m.d.sync += [in_cnt.eq(0), in_pix.eq(0), in_cb.eq(0), step.eq(0), wait.eq(0)]
                        m.next = "LOAD"
            with m.State("LOAD"):          # descriptor read (one clock), then into `desc`
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                m.next = "LOAD2"
            with m.State("LOAD2"):
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
        # write bus: input, misc writes and requant writes (never in the same clock)
        with m.If(in_wr):
            m.d.comb += [wr_en.eq(1), wr_addr.eq(in_base + in_cb + in_pix), wr_data[0].eq(self.in_data),
                         wr_valid[0].eq(1)]
        with m.Elif(misc_wr):
            m.d.comb += [wr_en.eq(1), wr_addr.eq(d.out_base + mwa2)]
            m.d.comb += [wr_data[j].eq(misc_wdata[j]) for j in range(PX)]
            m.d.comb += [wr_valid[j].eq(mlv2[j]) for j in range(PX)]
        with m.Elif(req_wr):
            m.d.comb += [wr_en.eq(1), wr_addr.eq(d.out_base + r2_off)]
            with m.If(d.dil_out):
                for hi, h in enumerate(halves):
                    with m.If(d.hsel == hi):
                        for k in range(PX // 2):
                            for pos, j in ((k, 2 * k), (h + k, 2 * k + 1)):
                                m.d.comb += [wr_data[pos].eq(r2_code[j]), wr_valid[pos].eq(r2_pv[j])]
            with m.Else():
                m.d.comb += [wr_data[j].eq(r2_code[j]) for j in range(PX)]
                m.d.comb += [wr_valid[j].eq(r2_pv[j]) for j in range(PX)]
        return m


def accel_verilog(plan: Plan) -> str:
    """The accelerator's Verilog (top module `accel`): what the simulators run; its hash
    (`rtl_sha256`) names the RTL a bitstream was built from (design.json), so the bench
    can tell a bitstream of other RTL even when the cycles did not move."""
    from amaranth.back import verilog

    return verilog.convert(Accelerator(plan), name="accel", emit_src=False)


def rtl_sha256(verilog_text: str) -> str:
    import hashlib

    return hashlib.sha256(verilog_text.encode()).hexdigest()

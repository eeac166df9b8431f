"""The layer engine: one conv2d or linear node of the IR as a PE array.

Why this shape: a layer of a pruned 4-bit CNN is small enough that its weight table
fits on-chip, so the engine keeps the whole table in ROMs initialised from the exported
`tables/NAME.mem` file, streams input activations from a buffer, and keeps every PE
busy on every cycle of the run: the loop nest is

    for og in output-channel groups (PO channels each):
      for each output pixel (oy, ox):
        for ig in input-channel groups (PI channels each), ky, kx:   # S steps
          PE[l][b] += value(in[ig*PI+b, oy*s+ky-p, ox*s+kx-p]) * w[og*PO+l, ig*PI+b, ky, kx]

one step per clock, no bubbles between pixels (`clear & en` starts the next sum while
the previous one is read out), so a layer takes OG * Ho * Wo * S cycles plus a
pipeline fill of 4 and the handshake: cycles ~= MACs / (PO * PI) when PO divides the
output channels and PI the input channels.

Pipeline (one stage per clock):
  A  counters -> addresses of the input banks and weight ROMs (synchronous reads)
  B  decode the codes (`levels`), zero for padding; PE[l][b] accumulates
  C  sum the PI accumulators of each lane; read mult/bias/rmult and the residual
  D  requantization unit per lane; write the codes to the output banks

Memories (all Amaranth `lib.memory.Memory`, synchronous read, one word per entry):
  input bank b (b < PI):   channel c = k*PI + b at address k*H*W + y*W + x   (act word)
  weight ROM lane l:       word at og*S + (ig*KH + ky)*KW + kx holds PI table words,
                           sub-word b = weight [og*PO+l, ig*PI+b, ky, kx] (zero beyond
                           the layer's channels)
  residual / output bank l: channel o = k*PO + l at address k*Ho*Wo + pixel
  mult / bias / rmult lane l: entry og = constant of channel og*PO+l
PO and PI are any positive integers; the host ports' channel -> (bank, address) split
is a small constant table (channel % P, channel // P), so no divider is built.

Host interface (testbench, or a top-level with a UART): `in_we/in_chan/in_pix/in_data`
writes one input word; `res_*` the same for the residual tensor; `start` (one cycle)
runs the layer, `busy` is high while it runs, `done` rises when the last output is
written and stays until the next start; `cycles` counts the clocks from start to done;
`out_chan/out_pix` -> `out_data` reads one output word one clock later.
For a linear node the input is the vector as C = I channels of a 1x1 image (pix = 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pe import ShiftAddPE, MultiplierPE, _decode, shift_bits, term_bits, value_width
from .requant import RequantUnit, act_from_node

__all__ = ["LayerSpec", "layer_spec", "LayerEngine", "read_mem", "choose_parallelism", "weight_rom_words"]


def _bits_signed(lo: int, hi: int) -> int:
    b = 1
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def choose_parallelism(out_ch: int, in_ch: int, po_max: int = 16, pi_max: int = 4):
    """(PO, PI): for each, the fewest channel groups ceil(n / p) with p <= max, and the
    smallest p that reaches it (no PE more than needed). 12 channels with a maximum of
    16 give 12 (one group, no idle lane), 23 give 12 (two groups, 96% busy), 45 give 15,
    3 input channels with a maximum of 4 give 3."""
    def pick(n, cap):
        n, cap = max(1, n), max(1, cap)
        groups = -(-n // cap)
        return -(-n // groups)
    return pick(out_ch, po_max), pick(in_ch, pi_max)


def read_mem(path, count: int | None = None) -> list[int]:
    """Words of a `$readmemh` file (one hex word per line, // comments allowed)."""
    words = []
    with open(path) as fh:
        for line in fh:
            line = line.split("//")[0].strip()
            if line:
                words.extend(int(tok, 16) for tok in line.split())
    if count is not None and len(words) != count:
        raise ValueError(f"{path}: {len(words)} words, expected {count}")
    return words


@dataclass
class LayerSpec:
    """Everything the engine needs about one conv2d / linear node (plain numbers)."""

    name: str
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    stride: int
    pad: int
    # input activations
    in_bits: int
    in_signed: bool
    in_levels: list | None
    # weights: one table word per weight, row-major [o][i][ky][kx]; T terms of max_shift
    words: list
    terms: int
    max_shift: int
    weights: list  # the integer weights, same order (multiplier-PE variant)
    weight_bits: int
    acc_bits: int
    # requantization (None: raw accumulator out)
    requant: dict | None
    out_bits: int
    out_signed: bool
    PO: int = 1
    PI: int = 1
    pe: str = "shift"  # "shift" (table words) or "mult" (plain integer weights)

    @property
    def Ho(self):
        return (self.H + 2 * self.pad - self.KH) // self.stride + 1

    @property
    def Wo(self):
        return (self.W + 2 * self.pad - self.KW) // self.stride + 1

    @property
    def OG(self):
        return -(-self.O // self.PO)

    @property
    def IG(self):
        return -(-self.C // self.PI)

    @property
    def steps(self):
        return self.IG * self.KH * self.KW

    @property
    def macs(self):
        return self.O * self.C * self.KH * self.KW * self.Ho * self.Wo

    @property
    def ideal_cycles(self):
        """The MAC bound: MACs / (PO * PI)."""
        return self.macs / (self.PO * self.PI)

    @property
    def run_cycles(self):
        """Clocks of the step loop (what the engine should take, plus a few of fill)."""
        return self.OG * self.Ho * self.Wo * self.steps


def layer_spec(ir, name: str, *, po_max: int = 16, pi_max: int = 4, words=None,
               pe: str = "shift", PO: int | None = None, PI: int | None = None) -> LayerSpec:
    """The LayerSpec of node `name` of an `hw.ir.IR`. `words`: table words to use
    instead of packing the IR's terms array (e.g. `read_mem(tables/NAME.mem)`)."""
    from hw.tables import pack_words

    n = ir.node(name)
    if n["op"] not in ("conv2d", "linear"):
        raise ValueError(f"node {name!r} is a {n['op']}; the engine runs conv2d and linear nodes")
    tin = ir.tensor(n["input"])
    if n["op"] == "conv2d":
        C, H, W = tin["shape"]
        O = n["out_channels"]
        KH, KW = n["kernel"]
        stride, pad = n["stride"], n["padding"]
    else:
        C, H, W = n["in_features"], 1, 1
        O, KH, KW, stride, pad = n["out_features"], 1, 1, 1, 0
    wd = n["weight"]
    warr = np.asarray(ir.array(wd["key"]), dtype=np.int64)
    if words is None:
        words, _ = pack_words(ir.array(wd["terms_key"]), wd["max_shift"])
    words = [int(x) for x in words]
    if len(words) != warr.size:
        raise ValueError(f"{name}: {len(words)} table words for {warr.size} weights")
    if tin["kind"] == "code":
        in_bits, in_signed, in_levels = tin["bits"], False, [int(v) for v in tin["levels"]]
    else:
        in_bits, in_signed, in_levels = tin["bits"], True, None
    rq = n.get("requant")
    out = n["out"]
    req = None
    if rq is not None:
        mult = [int(v) for v in ir.array(rq["mult"])]
        bias = [int(v) for v in ir.array(rq["bias"])]
        req = dict(mult=mult, bias=bias, shift=int(rq["shift"]), act=act_from_node(n),
                   mult_bits=max(int(rq["mult_bits"]), _bits_signed(min(mult), max(mult))),
                   bias_bits=_bits_signed(min(bias + [0]), max(bias + [0])), residual=None)
        if rq.get("residual"):
            r = rq["residual"]
            rt = ir.tensor(r["input"])
            rmult = [int(v) for v in ir.array(r["mult"])]
            req["residual"] = dict(
                input=r["input"], rmult=rmult,
                rmult_bits=_bits_signed(min(rmult + [0]), max(rmult + [0])),
                bits=rt["bits"], signed=rt["kind"] != "code",
                levels=[int(v) for v in rt["levels"]] if rt["kind"] == "code" else None)
        out_bits, out_signed = out["bits"], out["kind"] != "code"
    else:
        out_bits, out_signed = n["acc_bits"], True
    po, pi = choose_parallelism(O, C, po_max, pi_max)
    wmax = int(np.abs(warr).max()) if warr.size else 0
    return LayerSpec(
        name=name, C=C, H=H, W=W, O=O, KH=KH, KW=KW, stride=stride, pad=pad,
        in_bits=in_bits, in_signed=in_signed, in_levels=in_levels,
        words=words, terms=int(wd["terms"]), max_shift=int(wd["max_shift"]),
        weights=[int(v) for v in warr.reshape(-1)], weight_bits=_bits_signed(-wmax, wmax),
        acc_bits=int(n["acc_bits"]), requant=req, out_bits=out_bits, out_signed=out_signed,
        PO=PO or po, PI=PI or pi, pe=pe)


def weight_rom_words(s: LayerSpec, lane: int) -> list[int]:
    """Lane `lane`'s weight ROM: PI sub-words per entry, in (og, ig, ky, kx) order."""
    if s.pe == "shift":
        src, sw = s.words, term_bits(s.max_shift) * s.terms
    else:
        src, sw = s.weights, s.weight_bits
    mask = (1 << sw) - 1
    out = []
    for og in range(s.OG):
        o = og * s.PO + lane
        for ig in range(s.IG):
            for ky in range(s.KH):
                for kx in range(s.KW):
                    word = 0
                    for b in range(s.PI):
                        i = ig * s.PI + b
                        if o < s.O and i < s.C:
                            v = src[((o * s.C + i) * s.KH + ky) * s.KW + kx]
                            word |= (int(v) & mask) << (b * sw)
                    out.append(word)
    return out


class LayerEngine(wiring.Component):
    """A PO x PI PE array computing one conv2d / linear node (see the module docstring).

    `LayerEngine(spec)`, `spec` a `LayerSpec` (from `layer_spec(ir, name)`); all
    geometry, widths and constants are elaboration-time parameters of the layer.
    """

    def __init__(self, spec: LayerSpec):
        s = self.spec = spec
        for p, what in ((s.PO, "PO"), (s.PI, "PI")):
            if p < 1:
                raise ValueError(f"{what} must be >= 1, got {p}")
        sig = {
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
            "in_we": In(1),
            "in_chan": In(range(max(2, s.IG * s.PI))),
            "in_pix": In(range(max(2, s.H * s.W))),
            "in_data": In(s.in_bits),
            "out_chan": In(range(max(2, s.OG * s.PO))),
            "out_pix": In(range(max(2, s.Ho * s.Wo))),
            "out_data": Out(s.out_bits),
        }
        r = s.requant["residual"] if s.requant else None
        if r is not None:
            sig.update({
                "res_we": In(1),
                "res_chan": In(range(max(2, s.OG * s.PO))),
                "res_pix": In(range(max(2, s.Ho * s.Wo))),
                "res_data": In(r["bits"]),
            })
        super().__init__(sig)

    # ------------------------------------------------------------ tables

    def weight_rom_init(self, lane: int) -> list[int]:
        return weight_rom_words(self.spec, lane)

    def elaborate(self, platform):
        s = self.spec
        m = Module()
        HW, HoWo, S = s.H * s.W, s.Ho * s.Wo, s.steps
        vw, vs = value_width(s.in_bits, s.in_signed, s.in_levels)
        vshape = signed(vw) if vs else unsigned(vw)
        sw = term_bits(s.max_shift) * s.terms if s.pe == "shift" else s.weight_bits

        # ---------------- memories
        in_banks = []
        for b in range(s.PI):
            mem = Memory(shape=unsigned(s.in_bits), depth=max(2, s.IG * HW), init=[])
            m.submodules[f"in_bank{b}"] = mem
            in_banks.append((mem.write_port(), mem.read_port()))
        wroms = []
        for l in range(s.PO):
            init = self.weight_rom_init(l)
            mem = Memory(shape=unsigned(sw * s.PI), depth=max(2, len(init)), init=init)
            m.submodules[f"wrom{l}"] = mem
            wroms.append(mem.read_port())
        out_banks = []
        for l in range(s.PO):
            mem = Memory(shape=unsigned(s.out_bits), depth=max(2, s.OG * HoWo), init=[])
            m.submodules[f"out_bank{l}"] = mem
            out_banks.append((mem.write_port(), mem.read_port()))
        rq = s.requant
        res = rq["residual"] if rq else None
        res_banks, consts = [], []
        for l in range(s.PO):
            if res is not None:
                mem = Memory(shape=unsigned(res["bits"]), depth=max(2, s.OG * HoWo), init=[])
                m.submodules[f"res_bank{l}"] = mem
                res_banks.append((mem.write_port(), mem.read_port()))
            if rq is not None:
                ports = {}
                chans = [og * s.PO + l for og in range(s.OG)]
                tables = {"mult": (rq["mult"], rq["mult_bits"]), "bias": (rq["bias"], rq["bias_bits"])}
                if res is not None:
                    tables["rmult"] = (res["rmult"], res["rmult_bits"])
                for key, (arr, bits) in tables.items():
                    init = [arr[o] if o < s.O else 0 for o in chans]
                    mem = Memory(shape=signed(bits), depth=max(2, len(init)), init=init)
                    m.submodules[f"{key}{l}"] = mem
                    ports[key] = mem.read_port()
                consts.append(ports)

        # ---------------- host writes / reads
        def split(chan, P, name):
            """(bank, group) of a host channel number: constant tables, no divider."""
            n = 2 ** len(chan)
            bank = Signal(range(max(2, P)), name=f"{name}_bank")
            group = Signal(range(max(2, -(-n // P))), name=f"{name}_group")
            if P == 1:
                m.d.comb += [bank.eq(0), group.eq(chan)]
            else:
                m.d.comb += [
                    bank.eq(Array([Const(c % P, len(bank)) for c in range(n)])[chan]),
                    group.eq(Array([Const(c // P, len(group)) for c in range(n)])[chan]),
                ]
            return bank, group

        in_bank, in_group = split(self.in_chan, s.PI, "in")
        for b, (wp, _) in enumerate(in_banks):
            m.d.comb += [
                wp.en.eq(self.in_we & (in_bank == b)),
                wp.addr.eq(in_group * HW + self.in_pix),
                wp.data.eq(self.in_data),
            ]
        if res is not None:
            res_bank, res_group = split(self.res_chan, s.PO, "res")
            for l, (wp, _) in enumerate(res_banks):
                m.d.comb += [
                    wp.en.eq(self.res_we & (res_bank == l)),
                    wp.addr.eq(res_group * HoWo + self.res_pix),
                    wp.data.eq(self.res_data),
                ]
        out_bank, out_group = split(self.out_chan, s.PO, "out")
        rd_bank = Signal(range(max(2, s.PO)))
        m.d.sync += rd_bank.eq(out_bank)
        for l, (_, rp) in enumerate(out_banks):
            m.d.comb += rp.addr.eq(out_group * HoWo + self.out_pix)
            with m.If(rd_bank == l):
                m.d.comb += self.out_data.eq(rp.data)

        # ---------------- stage A: the loop counters
        og = Signal(range(max(2, s.OG)))
        oy = Signal(range(max(2, s.Ho)))
        ox = Signal(range(max(2, s.Wo)))
        ig = Signal(range(max(2, s.IG)))
        ky = Signal(range(max(2, s.KH)))
        kx = Signal(range(max(2, s.KW)))
        iy0 = Signal(signed(max(s.H, s.Ho * s.stride + s.KH).bit_length() + 2))
        ix0 = Signal(signed(max(s.W, s.Wo * s.stride + s.KW).bit_length() + 2))
        waddr = Signal(range(max(2, s.OG * S + 1)))
        wbase = Signal(range(max(2, s.OG * S + 1)))
        pix = Signal(range(max(2, HoWo + 1)))
        running = Signal()

        last_kx, last_ky, last_ig = kx == s.KW - 1, ky == s.KH - 1, ig == s.IG - 1
        last_step = last_kx & last_ky & last_ig
        last_ox, last_oy, last_og = ox == s.Wo - 1, oy == s.Ho - 1, og == s.OG - 1
        first_step = (kx == 0) & (ky == 0) & (ig == 0)

        iy = Signal(signed(len(iy0) + 1))
        ix = Signal(signed(len(ix0) + 1))
        pad_a = Signal()
        m.d.comb += [
            iy.eq(iy0 + ky),
            ix.eq(ix0 + kx),
            pad_a.eq((iy < 0) | (iy >= s.H) | (ix < 0) | (ix >= s.W)),
        ]
        in_addr = Signal(range(max(2, s.IG * HW)))
        m.d.comb += in_addr.eq(Mux(pad_a, 0, ig * HW + iy * s.W + ix))
        for _, rp in in_banks:
            m.d.comb += rp.addr.eq(in_addr)
        for rp in wroms:
            m.d.comb += rp.addr.eq(waddr)

        with m.If(running):
            with m.If(~last_kx):
                m.d.sync += [kx.eq(kx + 1), waddr.eq(waddr + 1)]
            with m.Else():
                m.d.sync += kx.eq(0)
                with m.If(~last_ky):
                    m.d.sync += [ky.eq(ky + 1), waddr.eq(waddr + 1)]
                with m.Else():
                    m.d.sync += ky.eq(0)
                    with m.If(~last_ig):
                        m.d.sync += [ig.eq(ig + 1), waddr.eq(waddr + 1)]
                    with m.Else():  # pixel done
                        m.d.sync += [ig.eq(0), pix.eq(pix + 1), waddr.eq(wbase)]
                        with m.If(~last_ox):
                            m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + s.stride)]
                        with m.Else():
                            m.d.sync += [ox.eq(0), ix0.eq(-s.pad)]
                            with m.If(~last_oy):
                                m.d.sync += [oy.eq(oy + 1), iy0.eq(iy0 + s.stride)]
                            with m.Else():  # output-channel group done
                                m.d.sync += [oy.eq(0), iy0.eq(-s.pad), pix.eq(0),
                                             wbase.eq(wbase + S), waddr.eq(wbase + S)]
                                with m.If(~last_og):
                                    m.d.sync += og.eq(og + 1)
                                with m.Else():
                                    m.d.sync += running.eq(0)

        # ---------------- handshake and cycle counter
        drain = Signal(range(8))
        DRAIN = 2  # after the loop ends: stages B, C, D; the last write lands with `done`
        with m.If(self.start & ~self.busy):
            m.d.sync += [
                running.eq(1), self.busy.eq(1), self.done.eq(0), self.cycles.eq(1),
                og.eq(0), oy.eq(0), ox.eq(0), ig.eq(0), ky.eq(0), kx.eq(0),
                iy0.eq(-s.pad), ix0.eq(-s.pad), waddr.eq(0), wbase.eq(0), pix.eq(0),
                drain.eq(DRAIN),
            ]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(~running):
                with m.If(drain == 0):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                with m.Else():
                    m.d.sync += drain.eq(drain - 1)

        # ---------------- stage B: decode, PEs
        valid_b, first_b, last_b, pad_b = Signal(), Signal(), Signal(), Signal()
        og_b = Signal.like(og)
        pix_b = Signal.like(pix)
        m.d.sync += [
            valid_b.eq(running), first_b.eq(first_step), last_b.eq(last_step), pad_b.eq(pad_a),
            og_b.eq(og), pix_b.eq(pix),
        ]
        values = []
        for b, (_, rp) in enumerate(in_banks):
            raw = Signal(vshape if s.in_levels is None else unsigned(s.in_bits), name=f"raw{b}")
            m.d.comb += raw.eq(rp.data)
            dec, _ = _decode(m, raw, s.in_bits, s.in_signed, s.in_levels)
            v = Signal(vshape, name=f"value{b}")
            m.d.comb += v.eq(Mux(pad_b, 0, dec))
            values.append(v)
        accs = []
        for l in range(s.PO):
            lane = []
            for b in range(s.PI):
                if s.pe == "shift":
                    pe = ShiftAddPE(act_bits=vw, act_signed=vs, terms=s.terms,
                                    max_shift=s.max_shift, acc_bits=s.acc_bits)
                else:
                    pe = MultiplierPE(act_bits=vw, act_signed=vs, weight_bits=s.weight_bits,
                                      acc_bits=s.acc_bits)
                m.submodules[f"pe_{l}_{b}"] = pe
                m.d.comb += [
                    pe.act.eq(values[b]),
                    pe.weight.eq(wroms[l].data[b * sw:(b + 1) * sw]),
                    pe.en.eq(valid_b),
                    pe.clear.eq(first_b),
                ]
                lane.append(pe.acc)
            accs.append(lane)

        # ---------------- stage C: lane sums, constants and residual reads
        valid_c = Signal()
        og_c, pix_c = Signal.like(og), Signal.like(pix)
        m.d.sync += [valid_c.eq(valid_b & last_b), og_c.eq(og_b), pix_c.eq(pix_b)]
        valid_d = Signal()
        og_d, pix_d = Signal.like(og), Signal.like(pix)
        m.d.sync += [valid_d.eq(valid_c), og_d.eq(og_c), pix_d.eq(pix_c)]
        sums = []
        for l in range(s.PO):
            total = accs[l][0]
            for a in accs[l][1:]:
                total = total + a
            sd = Signal(signed(s.acc_bits), name=f"sum{l}")
            m.d.sync += sd.eq(total)  # the IR's acc_bits bounds the whole sum
            sums.append(sd)
            if rq is not None:
                for rp in consts[l].values():
                    m.d.comb += rp.addr.eq(og_c)
            if res is not None:
                m.d.comb += res_banks[l][1].addr.eq(og_c * HoWo + pix_c)

        # ---------------- stage D: requantize, write
        for l in range(s.PO):
            wp = out_banks[l][0]
            m.d.comb += [wp.addr.eq(og_d * HoWo + pix_d), wp.en.eq(valid_d)]
            if rq is None:
                m.d.comb += wp.data.eq(sums[l])
                continue
            kw = {}
            if res is not None:
                rvw, rvs = value_width(res["bits"], res["signed"], res["levels"])
                kw = dict(res_bits=rvw, res_signed=rvs, rmult_bits=res["rmult_bits"])
            unit = RequantUnit(acc_bits=s.acc_bits, mult_bits=rq["mult_bits"],
                               bias_bits=rq["bias_bits"], shift=rq["shift"], act=rq["act"],
                               out_bits=s.out_bits, **kw)
            m.submodules[f"requant{l}"] = unit
            m.d.comb += [unit.acc.eq(sums[l]), unit.mult.eq(consts[l]["mult"].data),
                         unit.bias.eq(consts[l]["bias"].data), wp.data.eq(unit.out)]
            if res is not None:
                rraw = Signal(signed(res["bits"]) if res["signed"] else unsigned(res["bits"]),
                              name=f"rraw{l}")
                m.d.comb += rraw.eq(res_banks[l][1].data)
                rval, _ = _decode(m, rraw, res["bits"], res["signed"], res["levels"])
                m.d.comb += [unit.res.eq(rval), unit.rmult.eq(consts[l]["rmult"].data)]
        return m

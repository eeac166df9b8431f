"""Accelerator plan: the descriptor table and the memory plan of a whole IR network.

Pure Python (no Amaranth, no torch). `make_plan(ir, po=..., px=...)` walks the IR's
nodes in order and produces:

- **steps** (the descriptor table the sequencer walks): one `Step` per executed node,
  with its op (`conv` for conv2d and linear, `maxpool`, `gap`, `shortcut`), shapes,
  stride / padding, activation addresses (input, output, residual), the weight
  memory, format and base address, the base of its requant constants, the shift and
  activation rule, decode tables, and the per-pixel-lane start values of the address
  generators. `flatten` is not a step: a `[C, H, W]` tensor and its flattening have the
  same row-major addresses, so flatten aliases its input buffer.
- **memory plan**: one activation address space (element = `act_bits`, the widest
  stored code or input integer) split into equal buffers; every tensor gets a buffer by
  liveness (a buffer is reused once every reader of its tensor has run), which gives
  ping-pong plus the buffer a residual add keeps alive. A tensor [C, H, W] lies channel
  by channel with a channel stride `HWp >= H*W` (`channel_stride`). The address space is
  interleaved over NB = PI*PX banks (element a in bank a mod NB): PX consecutive
  elements of PI channels at offsets i*HWp fall in NB distinct banks because
  HWp = PX (mod NB), so one clock reads the PI x PX activations the PE array needs.
  Weights live in one memory per weight format (terms T, max_shift): word = PO*PI table
  words (lane o*PI + i: output channel og*PO + o, input channel cg*PI + i), one word
  per (output group, input-channel group, ky, kx). Requant constants (mult, bias,
  rmult) are tables indexed by (step base + channel). The PEs add each signed term as a
  ones' complement (`hw.rtl.pe.ShiftAddDotPE`), one short per neg bit of the weights:
  a conv's bias holds those missing ones, `negs[o] * mult[o]` (`neg_correction`). The network output (the logits,
  signed ints) goes to its own small memory.
- **budget check** `check_budget(plan, device)`: maps every memory onto the device's
  RAM blocks (UP5K: weights in SPRAM, the rest in EBR; ECP5: block RAM) and raises
  `DoesNotFit` with a one-line message naming the memory and the numbers.

Pixel groups of a conv: "raster" (stride 1 and W == Wo: PX consecutive output pixels in
raster order read PX consecutive input elements, whatever rows they span) or "row"
(otherwise: L = min(PX // stride, Wo) pixels of one output row, read at stride
`stride` inside a window of PX elements).

Column-deinterleaved tensors: a stride-2 conv in row mode reads every other element of
its window, so only PX / 2 pixel lanes work. A tensor whose readers are all stride-2
convs / shortcuts (and whose writer is a raster conv with PX | W) is therefore stored
with each row's even columns first, then its odd ones (`dil_column`): the pixels a
stride-2 conv's PX lanes need at one kernel tap are then PX consecutive words, and all
PX lanes work. The writer puts a group's even lanes at its row offset x0 / 2 and its odd
lanes W / 2 further (one write, two runs of PX / 2 banks); the reader's kernel-column
offsets alternate (`kx_a`, `kx_b`). ResNet-20 at 12 x 4 x 8: about 3,500 clocks fewer.

Address arithmetic is incremental in hardware (no multipliers); the plan supplies the
constants (e.g. `row_step = stride * W`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.ir import bits_signed
from hw.tables import field_layout, pack_words, unpack_word
from shiftq.errors import UserError

__all__ = ["Step", "Plan", "make_plan", "check_budget", "DEVICES", "DoesNotFit", "memory_blocks",
           "PlanError"]


class PlanError(UserError):
    """The IR uses something this accelerator does not implement."""


class DoesNotFit(UserError):
    """The plan's memories need more RAM than the device has."""




# The PE array's weight format: 2 terms with shifts 0..3 (the APoT W4 and PoT layers as
# they are); wider weights (the 8-bit first and last layers: shifts up to 7) run as
# passes over the same activations, one per 4-shift window. Narrow PEs are what lets
# hundreds of them fit (docs/accelerator.md).
PE_TERMS, PE_MAX_SHIFT = 2, 3
PE_TW = field_layout(PE_MAX_SHIFT, PE_TERMS)["word_bits"]
MAX_PASSES = 4


# the PEs: product register, and the first adder level registered too (`ShiftAddDotPE`
# split): the term logic, the adder tree and the accumulator in three clocks; with a
# deep pipeline the PEs' inputs go through per-PE flip-flops first (`in_reg`)
PE_SPLIT = True


def pe_latency(deep: bool) -> int:
    return 1 + int(PE_SPLIT) + int(deep)


def group_gap(po: int, deep: bool) -> int:
    """Fewest clocks between two pixel groups' last issues (accel.py `since_last`): a
    drain's PO clocks, and the group registers' hold from stage 1 to the shadow load."""
    return max(po, 3 + int(deep) + pe_latency(deep))


@dataclass
class Step:
    """One descriptor: what the sequencer does for one node (plain numbers)."""

    index: int
    name: str
    op: str                   # conv | maxpool | gap | shortcut
    C: int = 1
    H: int = 1
    W: int = 1
    O: int = 1
    Ho: int = 1
    Wo: int = 1
    KH: int = 1
    KW: int = 1
    stride: int = 1
    pad: int = 0
    in_base: int = 0
    out_base: int = 0
    res_base: int = 0
    # decoding of the input / residual words into values
    in_mode: str = "int"      # int (signed act word) | levels | identity
    in_levels: int = 0        # index into plan.level_tables (mode levels)
    has_res: bool = False
    res_mode: str = "identity"
    res_levels: int = 0
    # weights (conv)
    wfmt: int = 0             # weight memory / format index (one format: the PE's)
    npass: int = 1            # weight passes per (input-channel group, ky, kx)
    wbase: int = 0            # word address of output group 0
    OG: int = 1
    PG: int = 1               # pixel groups (ceil(Ho*Wo / PX))
    S: int = 1                # inner steps per group: C*KH*KW
    # requantization
    cbase: int = 0            # address of channel 0 in the mult / bias / rmult tables
    shift: int = 0
    act: str = "none"         # none (logits out) | clip | thresholds
    act_max: int = 0          # clip: largest code
    act_table: int = 0        # thresholds: index into plan.threshold_tables
    to_logits: bool = False   # write to the logits memory (the network output)
    # shortcut: source channel table, output pixels per clock
    src_base: int = 0
    sl: int = 1
    # layout: channel strides of the input / output tensors (residual = output's)
    HWp_in: int = 1
    HWp_out: int = 1
    CG: int = 1               # input-channel groups (ceil(C / PI))
    # pixel groups: raster (PX consecutive raster pixels) or row (L pixels of one row)
    rowmode: bool = False
    L: int = 1                # pixel lanes in use
    dix: int = 0              # lane advance per group (ix, iy, row, pix) and its row wrap
    diy: int = 0
    drow: int = 0
    dpix: int = 0
    wrap_lim: int = 0
    wrap_ix: int = 0
    wrap_row: int = 0
    dpix_wrap: int = 0
    # per pixel lane start values (conv): iy0, ix0, row (= iy0*W + ix0), pix
    lanes: list = field(default_factory=list)
    # column-deinterleaved tensors (`deinterleaved_tensors`): the input is read as one
    # (a stride-2 conv / shortcut: window element j is lane j), the output written as one
    dil_in: bool = False
    dil_out: bool = False
    pick: int = 1             # window element of pixel lane j: j * pick (row mode, shortcut)
    kx_a: int = 1             # koff advance from an even kx to the next, from an odd one
    kx_b: int = 1
    k_row: int = 0            # koff advance from the last kx of a kernel row to the next row
    # residual read (`folded_shortcuts`): output channel o reads channel o - res_lo of the
    # residual tensor (channel stride res_hwp; zero outside [res_lo, res_hi)), output pixel
    # (y, x) reads its word 4 Wo y + x (row 2y of a deinterleaved tensor twice as wide,
    # whose even columns come first)
    res_fold: bool = False
    res_hwp: int = 0
    res_lo: int = 0
    res_hi: int = 0
    # reads / writes of the step (for the report and the test)
    node_out: str = ""
    macs: int = 0

    @property
    def HW(self):
        return self.H * self.W

    @property
    def HoWo(self):
        return self.Ho * self.Wo


@dataclass
class Plan:
    name: str
    PO: int
    PX: int
    PI: int
    steps: list
    act_bits: int             # width of an activation word
    act_buffers: int          # number of buffers
    buf_words: int            # words per buffer
    tensor_addr: dict         # node name (and "input") -> (base address, words)
    tensor_layout: dict       # node name (and "input") -> (base, C, HW, HWp)
    level_tables: list        # decode tables (16 entries each)
    threshold_tables: list    # threshold tables (NT entries each, padded with a huge value)
    NT: int                   # thresholds per table
    wformats: list            # [(terms, max_shift)]
    wmem: list                # per format: list of words (ints), each PO table words
    wmem_word_bits: list      # per format: bits of one memory word (PO * table word bits)
    consts: dict              # mult / bias / rmult: lists
    const_bits: dict          # signed widths
    srcmap: list              # shortcut: input channel offset (src * HW) or -1
    value_bits: int           # signed width of a decoded value
    acc_bits: int             # signed accumulator width (max over steps)
    sum_bits: int             # signed width of the requant sum
    n_in: int
    in_bits: int
    n_out: int
    out_bits: int
    output: str
    input_shape: list
    macs: int
    weights_loaded: bool = False   # weights written at boot (wl_* ports), not initialised
    # registers on the long paths of a big array (activation windows, aux start, write bus,
    # requant sum and comparisons; accel.py): off where flip-flops are scarce (iCE40)
    deep_pipeline: bool = True
    # tensors stored column-deinterleaved: name -> W (`deinterleaved_tensors`)
    deinterleaved: dict = field(default_factory=dict)
    # option-A shortcuts read by their block's conv2 straight from the block input:
    # name -> (its input, first output channel of the copy)
    folded: dict = field(default_factory=dict)

    def weight_bank_depth(self, f: int) -> int:
        """Words per bank of weight format f's memory, or 0 for one memory.

        With the deep pipeline (the ECP5) and weights in ROM, the memory is split into
        banks one block RAM deep (the ECP5 shape that holds the words in fewest blocks,
        e.g. 512 x 36) and every bank's output goes into flip-flops before the bank pick:
        left to yosys, the pick sat between a DP16KD's 5.8 ns clock-to-out and the route
        across the die (session 5's critical path, 16.7 ns). Same block count."""
        if not self.deep_pipeline or self.weights_loaded:
            return 0
        width, depth = self.wmem_word_bits[f], len(self.wmem[f])
        _, configs = DEVICES["ecp5-85f"]["ebr"]
        best = min(configs, key=lambda c: (memory_blocks(width, depth, [c]), -c[1]))
        return best[1] if depth > best[1] else 0

    @property
    def loaded_words(self):
        return self.wmem[0]

    @property
    def loaded_word_bits(self):
        return self.wmem_word_bits[0]

    @property
    def act_words(self):
        return self.act_buffers * self.buf_words

    @property
    def pes(self):
        return self.PO * self.PI * self.PX

    @property
    def banks(self):
        return self.PI * self.PX

    @property
    def bank_depth(self):
        return -(-self.act_words // self.banks)

    def element_addresses(self, name) -> list[int]:
        """Addresses of tensor `name`'s elements in [C][H*W] order (debug reads)."""
        base, C, HW, HWp = self.tensor_layout[name]
        order = self.pixel_order(name)
        return [base + c * HWp + order[p] for c in range(C) for p in range(HW)]

    def pixel_order(self, name) -> list[int]:
        """Word offset of each pixel of one channel of tensor `name`, in raster order: the
        identity, or for a deinterleaved tensor the even columns of a row, then the odd ones."""
        _, _, HW, _ = self.tensor_layout[name]
        W = self.deinterleaved.get(name)
        if not W:
            return list(range(HW))
        return [y * W + dil_column(x, W) for y in range(HW // W) for x in range(W)]

    def memories(self) -> list[dict]:
        """Every memory of the design: name, kind, width, depth, copies."""
        # two copies of the banked activation memory: the PE array's reads, and the
        # residual / pooling / debug reads
        mems = [dict(name="act", kind="act", width=self.act_bits, depth=self.bank_depth,
                     copies=2 * self.banks)]
        for f, words in enumerate(self.wmem):
            mems.append(dict(name=f"weights{f}", kind="weights", width=self.wmem_word_bits[f],
                             depth=len(words), copies=1))
        for k, arr in self.consts.items():
            if arr:
                mems.append(dict(name=k, kind="const", width=self.const_bits[k], depth=len(arr), copies=1))
        mems.append(dict(name="logits", kind="act", width=self.out_bits, depth=self.n_out, copies=1))
        return mems

    def cycle_estimate(self) -> dict:
        """Cycles per step of the sequencer (the RTL's own schedule; see accel.py). A conv
        takes max(S, GAP) clocks a pixel group, then the last group's drain (PO clocks)
        and a fixed 28 (the descriptor load, the pipeline to the shadow rows, the
        requantization and the write, the idle wait), as measured per step on ResNet-20
        at 12 x 4 x 8 (sim/test_accel.py step_cycles: 37 to 40 above the groups)."""
        per = {}
        gap = group_gap(self.PO, self.deep_pipeline)
        for s in self.steps:
            if s.op == "conv":
                per[s.name] = s.OG * s.PG * max(s.S, gap) + self.PO + 28
            elif s.op == "maxpool":
                per[s.name] = s.O * s.HoWo * (s.KH * s.KW + 1) + 4
            elif s.op == "gap":
                per[s.name] = s.C * -(-s.HW // self.PX) + 25
            else:
                per[s.name] = s.O * (s.Ho * -(-s.Wo // s.sl) + 2) + 8
        return per


def _decode_mode(t: dict, level_tables: list) -> tuple[str, int]:
    if t["kind"] == "int":
        return "int", 0
    lv = [int(v) for v in t["levels"]]
    if lv == list(range(len(lv))):
        return "identity", 0
    if len(lv) > 16:
        raise PlanError(f"a code tensor with {len(lv)} non-uniform levels (at most 16 supported)")
    lv = lv + [lv[-1]] * (16 - len(lv))
    if lv not in level_tables:
        level_tables.append(lv)
    return "levels", level_tables.index(lv)


def channel_stride(hw: int, pi: int, px: int) -> int:
    """HWp: the channel stride of a tensor with `hw` pixels per channel. With PI > 1 it is
    the smallest HWp >= hw with HWp = PX (mod PI*PX), so that channel lane i's window
    (offset i*HWp) starts i*PX banks after lane 0's and the PI windows of PX elements
    never share a bank."""
    if pi == 1:
        return hw
    nb = pi * px
    return hw + (px - hw) % nb


def _pow2(v):
    return v >= 1 and v & (v - 1) == 0


def dil_column(x: int, W: int) -> int:
    """Word offset of column x in a deinterleaved row of W (even): even columns first,
    then the odd ones. For any integer e: dil_column(2a + e) = a + dil_column(e)."""
    return x // 2 if x % 2 == 0 else W // 2 + x // 2


def _uses(ir, key) -> dict:
    """{key(tensor): [(node, "input" | "residual")]}: every read of every tensor."""
    uses = {}
    for n in ir.nodes:
        uses.setdefault(key(n["input"]), []).append((n, "input"))
        rq = n.get("requant")
        if rq and rq.get("residual"):
            uses.setdefault(key(rq["residual"]["input"]), []).append((n, "residual"))
    return uses


def deinterleaved_tensors(ir, root, pi: int, px: int) -> dict:
    """{tensor: W} of the tensors to store column-deinterleaved (module docstring): read
    only as the input of stride-2 convs (at least one) and stride-2 shortcuts, written
    by a stride-1 conv keeping its size (raster groups) with W a power of two, a multiple
    of PX, and W / 2 + PX / 2 <= PI * PX (the write's two runs within one turn of the banks)."""
    if px < 2:
        return {}
    uses = _uses(ir, root)
    out = {}
    for n in ir.nodes:
        name = n["name"]
        if n["op"] != "conv2d" or name == ir.graph["output"] or n["stride"] != 1:
            continue
        _, H, W = ir.tensor(root(n["input"]))["shape"]
        if list(n["out"]["shape"][1:]) != [H, W] or not _pow2(W) or W % px or W // 2 + px // 2 > pi * px:
            continue
        us = uses.get(name, [])
        ok = all(k == "input" and u["op"] in ("conv2d", "shortcut") and u["stride"] == 2 for u, k in us)
        if ok and any(u["op"] == "conv2d" for u, _ in us):
            out[name] = W
    return out


def make_plan(ir, *, po: int = 8, pi: int = 1, px: int = 1, words: dict | None = None,
              weights_loaded: bool = False, deep_pipeline: bool = True, deinterleave: bool = True) -> Plan:
    """The plan of `ir` for a PO (output-channel lanes) x PI (input-channel lanes) x PX
    (pixel lanes) PE array.

    `words`: optional {node: table words} (from tables/NAME.mem) used instead of packing
    the IR's terms (so a corrupted table reaches the hardware).
    `weights_loaded`: the weight memory has no initial contents and is written at boot
    through the accelerator's `wl_*` ports (iCE40 SPRAM, boards/flash_loader.py).
    `deep_pipeline`: the extra registers that let a big array close timing on the ECP5
    (a few clocks per step, ~600 flip-flops at 4 x 1 x 1: too many for the UP5K).
    `deinterleave`: store the inputs of stride-2 convs column-deinterleaved where the
    layout allows (module docstring); off: they run at PX / 2 pixel lanes."""

    if po < 1 or px < 1 or pi < 1:
        raise PlanError(f"PO, PI and PX must be >= 1 (got {po}, {pi}, {px})")
    if not (_pow2(pi) and _pow2(px)):
        raise PlanError(f"PI and PX must be powers of two (got {pi}, {px}): the banks are addressed by bits")
    nodes = ir.nodes
    out_name = ir.graph["output"]
    # ---- which tensors are stored, their readers
    alias = {}          # flatten (and a folded shortcut) -> its input
    def root(n):
        while n in alias:
            n = alias[n]
        return n
    for n in nodes:
        if n["op"] == "flatten":
            alias[n["name"]] = n["input"]
    dil = deinterleaved_tensors(ir, root, pi, px) if deinterleave else {}
    folded = folded_shortcuts(ir, root, dil, px) if deinterleave else {}
    for k, (src_t, _) in folded.items():
        alias[k] = src_t            # no tensor of its own: the block input stays alive
    last_use = {}
    for k, n in enumerate(nodes):
        srcs = [n["input"]]
        if n.get("requant") and n["requant"].get("residual"):
            srcs.append(n["requant"]["residual"]["input"])
        for s in srcs:
            last_use[root(s)] = k
    # ---- word sizes and widths
    def chw(t):
        sh = list(t["shape"]) + [1, 1]
        return sh[0], sh[1] * sh[2]
    def words_of(t):
        c, hw = chw(t)
        return c * channel_stride(hw, pi, px)
    stored = ["input"] + [n["name"] for n in nodes if n["op"] != "flatten" and n["name"] != out_name
                          and n["name"] not in folded]
    act_bits = 1
    for name in stored:
        t = ir.tensor(name)
        if t["kind"] == "int" and name != "input":
            raise PlanError(f"node {name!r} outputs raw integers (requant null, an option-B shortcut); "
                            f"the accelerator stores only codes between layers")
        act_bits = max(act_bits, int(t["bits"]))
    buf_words = max(words_of(ir.tensor(n)) for n in stored)
    # ---- buffer allocation by liveness
    buf_of, busy_until = {}, []     # buffer -> index of the last node reading its tensor
    def alloc(name, at):
        for b, until in enumerate(busy_until):
            if until < at:
                busy_until[b] = last_use.get(name, len(nodes))
                return b
        busy_until.append(last_use.get(name, len(nodes)))
        return len(busy_until) - 1
    buf_of["input"] = alloc("input", -1)
    for k, n in enumerate(nodes):
        if n["op"] == "flatten" or n["name"] == out_name or n["name"] in folded:
            continue
        # a node may not overwrite its own inputs: they are busy through step k
        buf_of[n["name"]] = alloc(n["name"], k)
    tensor_addr = {name: (buf_of[name] * buf_words, words_of(ir.tensor(name))) for name in stored}
    tensor_layout = {}
    for name in stored:
        c, hw = chw(ir.tensor(name))
        tensor_layout[name] = (tensor_addr[name][0], c, hw, channel_stride(hw, pi, px))
    for a in alias:
        tensor_addr[a] = tensor_addr[root(a)]
    # ---- weights: one memory per (terms, max_shift) format
    # one weight memory: word = PO*PI PE words (PE_TERMS terms, shifts <= PE_MAX_SHIFT)
    wformats, wmem, wmem_bits = [(PE_TERMS, PE_MAX_SHIFT)], [[]], [po * pi * PE_TW]
    consts = {"mult": [], "bias": [], "rmult": []}
    level_tables, thr_tables, srcmap, steps = [], [], [], []
    NT = 15
    acc_bits, sum_bits, vbits, macs_total = 2, 2, 2, 0
    for k, n in enumerate(nodes):
        op, name = n["op"], n["name"]
        if op == "flatten" or name in folded:
            continue
        tin = ir.tensor(n["input"])
        rin = ir.tensor(root(n["input"]))   # a flatten's input: what the memory holds
        tout = n["out"]
        st = Step(index=len(steps), name=name, op=op, node_out=name)
        st.in_base = tensor_addr[root(n["input"])][0]
        if name != out_name:
            st.out_base = tensor_addr[name][0]
        else:
            st.to_logits = True
        st.in_mode, st.in_levels = _decode_mode(tin, level_tables)
        if tin["kind"] == "code":
            vmax = max(tin["levels"])
            vbits = max(vbits, vmax.bit_length() + 1)
        else:
            vbits = max(vbits, int(tin["bits"]))
        ishape = list(rin["shape"]) + [1, 1]
        st.C, st.H, st.W = ishape[0], ishape[1], ishape[2]
        oshape = list(tout["shape"]) + [1, 1]
        st.O, st.Ho, st.Wo = oshape[0], oshape[1], oshape[2]
        st.HWp_in = channel_stride(st.HW, pi, px)
        st.HWp_out = channel_stride(st.HoWo, pi, px)
        st.dil_in, st.dil_out = root(n["input"]) in dil, name in dil
        if op in ("conv2d", "linear"):
            st.op = "conv"
            if op == "linear":
                # a linear layer on a [C, H, W] tensor (through flatten) is a KH=H x KW=W
                # convolution without padding: same weight order (c, y, x), 1x1 output
                if st.C * st.H * st.W != n["in_features"]:
                    raise PlanError(f"{name}: in_features {n['in_features']} != {st.C}x{st.H}x{st.W}")
                st.KH, st.KW = st.H, st.W
                st.O, st.Ho, st.Wo = n["out_features"], 1, 1
                st.HWp_out = channel_stride(1, pi, px)
            else:
                st.KH, st.KW = n["kernel"]
                st.stride, st.pad = n["stride"], n["padding"]
            if n.get("requant") is None:
                raise PlanError(f"node {name!r} has no requantization (raw accumulator out): not supported")
            wd = n["weight"]
            fmt = (int(wd["terms"]), int(wd["max_shift"]))
            lay = field_layout(fmt[1], fmt[0])
            tw = lay["word_bits"]
            if words is not None and name in words:
                wl = [int(x) for x in words[name]]
            else:
                wl, _ = pack_words(ir.array(wd["terms_key"]), wd["max_shift"])
                wl = [int(x) for x in wl]
            if len(wl) != st.O * st.C * st.KH * st.KW:
                raise PlanError(f"{name}: {len(wl)} table words for {st.O * st.C * st.KH * st.KW} weights")
            # every weight as npass PE words of PE_TERMS terms with shifts <= PE_MAX_SHIFT:
            # pass q holds the terms with shift in [4q, 4q+3] (shift - 4q), its dot product
            # is accumulated << 4q
            st.npass = fmt[1] // (PE_MAX_SHIFT + 1) + 1
            if st.npass > MAX_PASSES:
                raise PlanError(f"{name}: weight shifts up to {fmt[1]} (at most {MAX_PASSES * 4 - 1} supported)")
            split = np.zeros((len(wl), st.npass, PE_TERMS, 2), dtype=np.int64)   # (sign, shift)
            for k_, w in enumerate(wl):
                terms = unpack_word(w & ((1 << tw) - 1), lay)
                for q in range(st.npass):
                    sel = [(sg, sh - 4 * q) for sg, sh in terms if sg and 4 * q <= sh < 4 * q + 4]
                    if len(sel) > PE_TERMS:
                        raise PlanError(f"{name}: a weight has {len(sel)} terms with shifts in "
                                        f"[{4 * q}, {4 * q + 3}] (the PEs take {PE_TERMS})")
                    if sel:
                        split[k_, q, :len(sel)] = sel
            pw = pack_words(split, PE_MAX_SHIFT)[0].reshape(len(wl), st.npass)
            st.OG = -(-st.O // po)
            st.CG = -(-st.C // pi)
            K = st.KH * st.KW
            st.S = st.CG * K * st.npass
            mem = wmem[0]
            st.wbase = len(mem)
            for og in range(st.OG):
                for cg in range(st.CG):
                    for k in range(K):
                        for q in range(st.npass):
                            word = 0
                            for o_ in range(po):
                                for i in range(pi):
                                    o, c = og * po + o_, cg * pi + i
                                    if o < st.O and c < st.C:
                                        word |= pw[(o * st.C + c) * K + k][q] << ((o_ * pi + i) * PE_TW)
                            mem.append(word)
            st.macs = st.O * st.C * K * st.HoWo
            negs = neg_correction(pw, st.O, st.C * K)
            # the PEs' accumulators run short of the IR's by up to max(negs): one more bit
            acc_bits = max(acc_bits, int(n["acc_bits"]) + (1 if max(negs) else 0))
            _pixel_groups(st, px)
        elif op == "maxpool":
            st.KH = st.KW = int(n["kernel"])
            st.stride = int(n["stride"])
        elif op in ("gap", "avgpool"):
            if op == "avgpool":
                raise PlanError(f"node {name!r}: avgpool is not implemented by the accelerator")
            acc_bits = max(acc_bits, int(n["acc_bits"]))
        elif op == "shortcut":
            st.stride = int(n["stride"])
            # sl pixels of a row per clock: a window of (sl-1)*stride+1 <= PI*PX elements
            st.sl = max(1, min(px, (pi * px - 1) // st.stride + 1))
            st.pick = 1 if st.dil_in else st.stride
            st.src_base = len(srcmap)
            srcmap.extend(int(c) * st.HWp_in if c >= 0 else -1 for c in n["src"])
        if not st.k_row:
            st.k_row = st.W - st.KW + 1
        rq = n.get("requant")
        if rq:
            st.cbase = len(consts["mult"])
            consts["mult"].extend(int(v) for v in ir.array(rq["mult"]))
            bias = [int(v) for v in ir.array(rq["bias"])]
            if st.op == "conv":
                # the PEs' missing ones, times the channel's multiplier (module docstring)
                bias = [b + int(c) * int(mu) for b, c, mu in zip(bias, negs, ir.array(rq["mult"]))]
            consts["bias"].extend(bias)
            st.shift = int(rq["shift"])
            sum_bits = max(sum_bits, int(rq["sum_bits"]))
            if rq.get("residual"):
                r = rq["residual"]
                st.has_res = True
                st.res_base = tensor_addr[root(r["input"])][0]
                st.res_mode, st.res_levels = _decode_mode(ir.tensor(r["input"]), level_tables)
                st.res_hwp, st.res_lo, st.res_hi = st.HWp_out, 0, st.O
                if r["input"] in folded:
                    src_t, lo = folded[r["input"]]
                    st.res_fold = True
                    st.res_hwp = channel_stride(int(np.prod(ir.tensor(src_t)["shape"][1:])), pi, px)
                    st.res_lo, st.res_hi = lo, lo + ir.tensor(src_t)["shape"][0]
                consts["rmult"].extend(int(v) for v in ir.array(r["mult"]))
            else:
                consts["rmult"].extend(0 for _ in range(st.O))
            act = rq.get("act")
            if act is None:
                st.act = "none"
            elif act["scheme"] == "uniform":
                st.act, st.act_max = "clip", (1 << int(tout["bits"])) - 1
            else:
                thr = [int(t) for t in act["thresholds"]]
                if len(thr) > NT:
                    raise PlanError(f"node {name!r}: {len(thr)} thresholds (at most {NT} supported)")
                st.act = "thresholds"
                if thr not in thr_tables:
                    thr_tables.append(thr)
                st.act_table = thr_tables.index(thr)
            if st.act == "none" and not st.to_logits:
                raise PlanError(f"node {name!r}: signed integer output that is not the network output")
        if st.to_logits and st.op != "conv":
            raise PlanError(f"the network output {name!r} is a {op}; the accelerator ends with a conv/linear")
        macs_total += st.macs
        steps.append(st)
    # threshold tables padded with a value no y reaches (act off -> never counted)
    tmax = max([t for tb in thr_tables for t in tb] + [1])
    thr_bits = bits_signed(0, tmax + 1)
    thr_tables = [tb + [(1 << (thr_bits - 1)) - 1] * (NT - len(tb)) for tb in thr_tables] or [[1] * NT]
    if not level_tables:
        level_tables = [list(range(16))]
    cb = {k: bits_signed(min(v + [0]), max(v + [0])) for k, v in consts.items()}
    outt = ir.tensor(out_name)
    inp = ir.tensor("input")
    return Plan(weights_loaded=bool(weights_loaded), deep_pipeline=bool(deep_pipeline), deinterleaved=dil,
                folded=folded,
                name=ir.graph["name"], PO=po, PX=px, PI=pi, steps=steps, act_bits=act_bits,
                act_buffers=len(busy_until), buf_words=buf_words, tensor_addr=tensor_addr,
                tensor_layout=tensor_layout,
                level_tables=level_tables, threshold_tables=thr_tables, NT=NT,
                wformats=wformats, wmem=wmem, wmem_word_bits=wmem_bits, consts=consts,
                const_bits=cb, srcmap=srcmap, value_bits=max(vbits, act_bits + 1),
                acc_bits=acc_bits, sum_bits=sum_bits, n_in=int(np.prod(inp["shape"])), in_bits=int(inp["bits"]),
                n_out=int(np.prod(outt["shape"])), out_bits=int(outt["bits"]), output=out_name,
                input_shape=list(inp["shape"]), macs=macs_total)


def neg_correction(pass_words, n_out: int, per_out: int) -> list[int]:
    """Per output channel: what its PE accumulator lacks against the true dot product,
    sum over its pass words (weight-major: `per_out` weights of `npass` words each) of
    the neg bits << 4 * pass (`ShiftAddDotPE` adds every signed term as a ones' complement)."""
    pw = np.asarray(pass_words, dtype=np.int64).reshape(n_out, per_out, -1)
    sb = field_layout(PE_MAX_SHIFT, PE_TERMS)["shift_bits"]
    negs = np.zeros(pw.shape, dtype=np.int64)
    for t in range(PE_TERMS):
        negs += (pw >> (t * (sb + 2) + sb)) & 1
    scale = np.array([1 << (4 * q) for q in range(pw.shape[2])], dtype=np.int64)
    return [int(v) for v in (negs * scale).sum(axis=(1, 2))]


def folded_shortcuts(ir, root, dil: dict, px: int) -> dict:
    """{shortcut: (input, lo)} of the option-A shortcuts that need no step of their own:
    stride 2 over a deinterleaved tensor (row 2y's even columns are then its first W / 2
    words: a raster group of the output is PX consecutive words), the output channels
    lo .. lo + C - 1 a copy of input channels 0 .. C - 1 and the rest zero, read only as
    the residual of one conv whose raster groups lie in one row (Wo a power of two and
    a multiple of PX). The conv reads the residual from the block input (module docstring
    of accel.py): about O * Ho * (Wo / PX + 2) clocks fewer per shortcut."""
    uses = _uses(ir, lambda t: t)
    out = {}
    for n in ir.nodes:
        if n["op"] != "shortcut" or n["stride"] != 2 or root(n["input"]) not in dil:
            continue
        src = [int(v) for v in n["src"]]
        C = ir.tensor(root(n["input"]))["shape"][0]
        lo = next((k for k, v in enumerate(src) if v >= 0), 0)
        if src != [-1] * lo + list(range(C)) + [-1] * (len(src) - lo - C):
            continue
        us = uses.get(n["name"], [])
        if len(us) != 1 or us[0][1] != "residual" or us[0][0]["op"] != "conv2d":
            continue
        r = us[0][0]
        _, Ho, Wo = r["out"]["shape"]
        _, H, W = ir.tensor(root(n["input"]))["shape"]
        if r["stride"] != 1 or list(n["out"]["shape"][1:]) != [Ho, Wo] or [H, W] != [2 * Ho, 2 * Wo] \
                or not _pow2(Wo) or Wo % px:
            continue
        out[n["name"]] = (root(n["input"]), lo)
    return out


def _pixel_groups(st: Step, px: int) -> None:
    """Pixel-group mode and the lane address generators' constants of a conv step."""
    s, p = st.stride, st.pad
    st.rowmode = not (s == 1 and st.W == st.Wo and st.H == st.Ho)
    if not st.rowmode:
        # raster: lane j = pixel pg*PX + j; the input address of lane j is lane 0's + j
        st.L = px
        st.PG = -(-st.HoWo // px)
        dy, dx = divmod(px, st.Wo)
        st.dix, st.diy, st.drow, st.dpix = dx, dy, dy * st.W + dx, px
        st.wrap_lim, st.wrap_ix, st.wrap_row = st.Wo - p, st.Wo, st.W - st.Wo
        st.dpix_wrap = px
        starts = [divmod(j, st.Wo) + (j,) for j in range(px)]
    elif st.dil_in:
        # row, deinterleaved input (stride 2): the L pixels of a group read L consecutive
        # words at every tap; ix / iy (padding tests) stay logical, row0 is the word offset
        def col(kx):
            return dil_column(kx - p, st.W)
        st.L = min(px, st.Wo)
        gr = -(-st.Wo // st.L)
        st.PG = st.Ho * gr
        st.dix, st.diy, st.drow, st.dpix = st.L * s, 0, st.L, st.L
        st.wrap_lim, st.wrap_ix = st.Wo * s - p, gr * st.L * s
        st.wrap_row = s * st.W - gr * st.L
        st.dpix_wrap = st.Wo - (gr - 1) * st.L
        st.pick = 1
        st.kx_a, st.kx_b = col(1) - col(0), col(2) - col(1)
        st.k_row = st.W + col(0) - col(st.KW - 1)
        st.lanes = [(-p, j * s - p, -p * st.W + col(0), j) for j in range(px)]
        return
    else:
        # row: L pixels of one output row at stride s: a window of (L-1)*s+1 <= PX elements
        st.L = max(1, min(px // s, st.Wo)) if s <= px else 1
        st.pick = s
        gr = -(-st.Wo // st.L)                      # groups per output row
        st.PG = st.Ho * gr
        st.dix, st.diy, st.drow, st.dpix = st.L * s, 0, st.L * s, st.L
        st.wrap_lim, st.wrap_ix = st.Wo * s - p, gr * st.L * s
        st.wrap_row = s * st.W - gr * st.L * s
        st.dpix_wrap = st.Wo - (gr - 1) * st.L
        starts = [(0, j, j) for j in range(px)]
    st.lanes = []
    for oy, ox, pix in starts:
        iy0, ix0 = oy * s - p, ox * s - p
        st.lanes.append((iy0, ix0, iy0 * st.W + ix0, pix))


# ---------------------------------------------------------------- device budgets

# RAM blocks: (name, count, [(width, depth) configurations])
DEVICES = {
    "up5k": dict(label="iCE40 UP5K", lut4=5280, dsp=8,
                 ebr=(30, [(16, 256), (8, 512), (4, 1024), (2, 2048)]),
                 spram=(4, [(16, 16384)]), weights_in="spram"),
    "ecp5-85f": dict(label="ECP5 LFE5U-85F", lut4=83640, dsp=156,
                     ebr=(208, [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]),
                     spram=(0, []), weights_in="ebr"),
    "ecp5-25f": dict(label="ECP5 LFE5U-25F", lut4=24288, dsp=28,
                     ebr=(56, [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]),
                     spram=(0, []), weights_in="ebr"),
}
BOARD_DEVICE = {"icebreaker": "up5k", "ulx3s-85f": "ecp5-85f"}


def memory_blocks(width: int, depth: int, configs) -> int:
    """Fewest RAM blocks holding a width x depth memory (one block configuration)."""
    if width <= 0 or depth <= 0:
        return 0
    return min(-(-width // w) * -(-depth // d) for w, d in configs)


def check_budget(plan: Plan, device: str, *, loader: bool = False) -> dict:
    """Map the plan's memories onto `device`'s RAM; raise DoesNotFit (one line) if they
    do not fit. Returns {"memories": [...], "ebr": used, "spram": used, ...}.

    iCE40 SPRAM has no bitstream initialisation: weights placed there must be written at
    boot by a loader (UART or SPI flash), which the RTL does not have yet; without
    `loader=True` such a plan is refused with a line saying so."""
    dev = DEVICES.get(BOARD_DEVICE.get(device, device))
    if dev is None:
        raise UserError(f"unknown device {device!r} (known: {', '.join(list(DEVICES) + list(BOARD_DEVICE))})")
    ebr_n, ebr_cfg = dev["ebr"]
    sp_n, sp_cfg = dev["spram"]
    used = {"ebr": 0, "spram": 0}
    rows = []
    # weights first into their preferred RAM, then the activations (SPRAM if EBR is short)
    mems = sorted(plan.memories(), key=lambda m: m["kind"] != "weights")
    for m in mems:
        want = "ebr"
        if m["kind"] == "weights" and m["width"] * m["depth"] >= 32768:
            want = dev["weights_in"]   # small tables (the 8-bit first / last layers) stay in EBR
        # activations stay in EBR: every bank is read and written in the same clock, and
        # an SPRAM has one port
        cfg, cap = (sp_cfg, sp_n) if want == "spram" else (ebr_cfg, ebr_n)
        n = memory_blocks(m["width"], m["depth"], cfg) * m["copies"]
        used[want] += n
        rows.append(dict(m, ram=want, blocks=n, bits=m["width"] * m["depth"] * m["copies"]))
        if want == "spram" and m["kind"] in ("weights", "const") and not loader and used[want] <= cap:
            raise DoesNotFit(
                f"{plan.name} (PO={plan.PO}, PI={plan.PI}, PX={plan.PX}) on {dev['label']}: memory {m['name']} "
                f"({m['width']} bits x {m['depth']} words) needs SPRAM, which a bitstream cannot "
                f"initialise; the boot-time weight loader is not implemented yet")
        if used[want] > cap:
            raise DoesNotFit(
                f"{plan.name} (PO={plan.PO}, PI={plan.PI}, PX={plan.PX}) does not fit {dev['label']}: memory "
                f"{m['name']} ({m['copies']} x {m['width']} bits x {m['depth']} words) brings "
                f"{want.upper()} to {used[want]} blocks of {cap}")
    return {"device": dev["label"], "memories": rows, "ebr": used["ebr"], "ebr_available": ebr_n,
            "spram": used["spram"], "spram_available": sp_n,
            "total_bits": sum(r["bits"] for r in rows)}

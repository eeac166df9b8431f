"""Processing elements: the shift-add PE and the multiplier PE (its baseline).

Why two PEs with one interface: the point of power-of-two / APoT weights is that a
multiply becomes T shifts and T-1 adds. The benchmark (issue 6) measures whether that
pays off on an FPGA, so both PEs take the same activation, the same enables and keep
the same accumulator; only the weight port differs:

- `ShiftAddPE.weight` is one word of the weight table exactly as docs/ir.md lays it out
  (`T` fields of `TW = 2 + SB` bits, field `t` at bits `[t*TW, (t+1)*TW)`, a field is
  `nz << (SB+1) | neg << SB | shift`, all-zero = unused term);
- `MultiplierPE.weight` is the plain signed integer weight `w = sum_t sign_t 2^shift_t`.

Interface (both PEs), one operation per clock edge:

| clear | en | next acc            |
|-------|----|---------------------|
| 0     | 0  | acc (hold)          |
| 0     | 1  | acc + value * w     |
| 1     | 0  | 0                   |
| 1     | 1  | value * w           |

`clear & en` starts a new sum with its first product, so back-to-back accumulations
need no idle cycle. `value` is the decoded activation: `act` itself (unsigned, or signed
with `act_signed=True`, e.g. the network's int8 input), or `levels[act]` when a decode
table is given (APoT codes; `levels` ascending integers, `levels[0] == 0`).
`acc` is a signed `acc_bits` register; the IR sizes `acc_bits` so that it never
overflows, and the PE simply wraps (two's complement) if it were exceeded.

Each component has a pure-Python model beside it (`pe_product`, `PEModel`) that the
testbenches compare against; `pack_terms` / `unpack_word` are the table encoding.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import KEEP_FF

__all__ = [
    "shift_bits", "term_bits", "pack_terms", "unpack_word", "csd_terms", "pe_product",
    "value_width", "PEModel", "ShiftAddPE", "MultiplierPE", "pe_dot", "neg_bits", "pe_dot_ones",
    "ShiftAddDotPE",
]


# ---------------------------------------------------------------- table encoding (docs/ir.md)

def shift_bits(max_shift: int) -> int:
    """SB = max(1, bitlen(max_shift)): width of a term's shift field."""
    return max(1, int(max_shift).bit_length())


def term_bits(max_shift: int) -> int:
    """TW = 2 + SB: width of one (nz, neg, shift) term field."""
    return 2 + shift_bits(max_shift)


def pack_terms(terms, max_shift: int) -> int:
    """Pack [(sign, shift), ...] (sign in {-1, 0, 1}) into one table word."""
    sb = shift_bits(max_shift)
    tw = sb + 2
    word = 0
    for t, (sign, shift) in enumerate(terms):
        sign, shift = int(sign), int(shift)
        if sign == 0:
            continue
        if not 0 <= shift <= max_shift:
            raise ValueError(f"shift {shift} outside 0..{max_shift}")
        field = (1 << (sb + 1)) | ((1 if sign < 0 else 0) << sb) | shift
        word |= field << (t * tw)
    return word


def unpack_word(word: int, terms: int, max_shift: int):
    """The inverse of `pack_terms`: [(sign, shift)] * terms, (0, 0) for unused."""
    sb = shift_bits(max_shift)
    tw = sb + 2
    out = []
    for t in range(terms):
        f = (int(word) >> (t * tw)) & ((1 << tw) - 1)
        if f >> (sb + 1) & 1:
            out.append((-1 if f >> sb & 1 else 1, f & ((1 << sb) - 1)))
        else:
            out.append((0, 0))
    return out


def csd_terms(w: int):
    """Canonical signed-digit terms of integer `w`, most significant first: [(sign, shift)]."""
    w = int(w)
    digits = []
    k = 0
    while w != 0:
        if w & 1:
            d = 2 - (w & 3)  # +1 if w = 1 mod 4, -1 if w = 3 mod 4
            digits.append((d, k))
            w -= d
        w >>= 1
        k += 1
    return digits[::-1]


def value_width(act_bits: int, act_signed: bool = False, levels=None) -> tuple[int, bool]:
    """(width, signed) of the decoded activation value."""
    if levels is not None:
        return max(1, max(int(v) for v in levels).bit_length()), False
    return act_bits, act_signed


def pe_product(value: int, word: int, terms: int, max_shift: int) -> int:
    """value * w computed the way the shift-add PE does: sum of signed shifts."""
    p = 0
    for sign, shift in unpack_word(word, terms, max_shift):
        if sign:
            if shift > max_shift:
                raise ValueError(f"shift {shift} > max_shift {max_shift}")
            p += sign * (int(value) << shift)
    return p


def pe_dot(values, words, terms: int, max_shift: int) -> int:
    """sum_i values[i] * w_i, each product the shift-add PE's (`ShiftAddDotPE` model)."""
    return sum(pe_product(v, w, terms, max_shift) for v, w in zip(values, words))


def _wrap(x: int, bits: int) -> int:
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


class PEModel:
    """Cycle model of either PE: `step(value, w, en, clear)` returns acc after the edge."""

    def __init__(self, acc_bits: int):
        self.acc_bits = acc_bits
        self.acc = 0

    def step(self, product: int, en: bool, clear: bool) -> int:
        base = 0 if clear else self.acc
        self.acc = _wrap(base + (product if en else 0), self.acc_bits)
        return self.acc


# ---------------------------------------------------------------- hardware

def _decode(m: Module, act: Signal, act_bits: int, act_signed: bool, levels):
    """Decoded activation value (a Value) and its shape."""
    width, sgn = value_width(act_bits, act_signed, levels)
    if levels is None:
        return act, (signed(width) if sgn else unsigned(width))
    levels = [int(v) for v in levels]
    if len(levels) > 2 ** act_bits:
        raise ValueError(f"{len(levels)} levels do not fit a {act_bits}-bit code")
    if levels[0] != 0 or any(b < a for a, b in zip(levels, levels[1:])):
        raise ValueError("levels must be ascending integers starting at 0")
    table = levels + [levels[-1]] * (2 ** act_bits - len(levels))  # unused codes: top level
    value = Signal(width, name="value")
    m.d.comb += value.eq(Array([Const(v, width) for v in table])[act])
    return value, unsigned(width)


class _PEBase(wiring.Component):
    def _check(self, act_bits, acc_bits):
        if act_bits < 1 or acc_bits < 2:
            raise ValueError("act_bits >= 1 and acc_bits >= 2 required")

    def _accumulate(self, m: Module, product):
        with m.If(self.clear):
            m.d.sync += self.acc.eq(Mux(self.en, product, 0))
        with m.Elif(self.en):
            m.d.sync += self.acc.eq(self.acc + product)


class ShiftAddPE(_PEBase):
    """Shift-add PE: acc += sum_t sign_t * (value << shift_t), one product per cycle.

    Parameters (keyword-only, stable; the synthesis bench instantiates these):
      act_bits    width of the `act` port (code width when `levels` is given)
      act_signed  `act` is a two's-complement integer (ignored with `levels`)
      levels      optional decode table (APoT codes): value = levels[act]
      terms       T, number of (sign, shift) terms per weight (1 = PoT, 2 = 4-bit APoT)
      max_shift   largest shift in the table; sets SB = max(1, bitlen(max_shift))
      acc_bits    signed accumulator width

    Ports: act In(act_bits), weight In(T*TW) (a `.mem` table word), en In(1),
    clear In(1), acc Out(signed(acc_bits)) (registered).
    """

    def __init__(self, *, act_bits: int, terms: int, max_shift: int, acc_bits: int,
                 act_signed: bool = False, levels=None):
        self._check(act_bits, acc_bits)
        if terms < 1 or max_shift < 0:
            raise ValueError("terms >= 1 and max_shift >= 0 required")
        self.act_bits, self.act_signed = act_bits, bool(act_signed) and levels is None
        self.levels = None if levels is None else tuple(int(v) for v in levels)
        self.terms, self.max_shift, self.acc_bits = terms, max_shift, acc_bits
        self.sb = shift_bits(max_shift)
        self.tw = self.sb + 2
        self.word_bits = terms * self.tw
        super().__init__({
            "act": In(signed(act_bits) if self.act_signed else unsigned(act_bits)),
            "weight": In(self.word_bits),
            "en": In(1),
            "clear": In(1),
            "acc": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        value, _ = _decode(m, self.act, self.act_bits, self.act_signed, self.levels)
        sb, tw = self.sb, self.tw
        vw, vs = value_width(self.act_bits, self.act_signed, self.levels)
        # one term's magnitude fits vw + max_shift bits, the sum of T terms log2(T) more
        pw = vw + self.max_shift + (self.terms - 1).bit_length() + 1
        product = Signal(signed(pw), name="product")
        parts = []
        for t in range(self.terms):
            field = self.weight[t * tw:(t + 1) * tw]
            shift, neg, nz = field[:sb], field[sb], field[sb + 1]
            mag = Signal(signed(pw), name=f"mag{t}")
            term = Signal(signed(pw), name=f"term{t}")
            m.d.comb += [
                mag.eq(value << shift),
                term.eq(Mux(nz, Mux(neg, -mag, mag), 0)),
            ]
            parts.append(term)
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        m.d.comb += product.eq(total)
        self._accumulate(m, product)
        return m


def neg_bits(words, terms: int, max_shift: int) -> int:
    """How many term fields of the table words have their neg bit set (nz or not)."""
    sb = shift_bits(max_shift)
    tw = sb + 2
    return sum((int(w) >> (t * tw + sb)) & 1 for w in words for t in range(terms))


def pe_dot_ones(values, words, terms: int, max_shift: int) -> int:
    """What `ShiftAddDotPE` adds per clock (before the pass shift): the dot product less
    one for every neg bit in the words (each signed term is a ones' complement)."""
    return pe_dot(values, words, terms, max_shift) - neg_bits(words, terms, max_shift)


def _ones_term(m: Module, value, field, sb: int, width: int, name: str):
    """nz ? (value << shift) XOR -neg : -neg, a signed `width`-bit Value.

    The nz mask sits in the first shift stage and the XOR in the last, so every bit is
    two 4-input functions (`nz & (s0 ? v[i-1] : v[i])`, `(s1 ? x[i-2] : x[i]) ^ neg`):
    two LUT4s per bit on both FPGA families, no adder. A true negation would need one.
    """
    shift, neg, nz = field[:sb], field[sb], field[sb + 1]
    x = Signal(signed(len(value) + 1), name=f"{name}_x0")
    m.d.comb += x.eq(Mux(nz, value, 0))
    for k in range(sb):
        nxt = Signal(signed(len(x) + (1 << k)), name=f"{name}_x{k + 1}")
        m.d.comb += nxt.eq(Mux(shift[k], x << (1 << k), x))
        x = nxt
    term = Signal(signed(width), name=f"{name}_t")
    m.d.comb += term.eq(x ^ neg.replicate(width).as_signed())
    return term


class ShiftAddDotPE(_PEBase):
    """Shift-add dot-product PE: acc += sum_i value_i * w_i - negs over `n` (value, table
    word) pairs per clock; the input-channel lanes of the accelerator's PE array.

    Why a separate PE: PI input channels summed inside the PE cost one adder tree and
    one accumulator instead of PI accumulators, and one activation read per channel
    lane feeds PO PEs. Same timing and `clear`/`en` table as `ShiftAddPE`.

    Why `- negs`: a term's sign is applied as a ones' complement, `(v << s) XOR -neg`,
    which is `-(v << s) - 1` when neg is set. That keeps a term to two LUT levels with no
    adder (`_ones_term`); the missing ones, `negs` = the number of neg bits in the words
    (`neg_bits`), depend on the weights alone, so the accelerator plan adds them back
    through the requantization bias of each output channel. With it, and with the adder
    tree kept as two-input adders (carry chains; yosys would otherwise merge the tree
    into one compressor tree of LUTs), a 4-input, 2-term PE is 292 ECP5 LUT4s instead of
    844 (`yosys_cells`, value_bits 7).

    With `passes` > 1 a `pass_` port shifts the sum left by 4*pass_ before it is
    accumulated: a weight wider than the PE's terms runs as passes of 4-shift windows
    over the same activations (the accelerator's 8-bit first and last layers).

    With `registered` the (shifted) sum and en / clear go through a register first:
    `acc` is updated one clock later than without (a shorter clock period). With `split`
    as well, the first level of the adder tree (pairs of terms) is registered too: one
    clock more, and the term logic and the rest of the tree in separate clocks.
    With `in_reg` every input goes through a flip-flop of this PE's own first (marked
    `hw.rtl.KEEP_FF`, so synthesis keeps one copy per PE): in an array, an activation
    reaches PO PEs and a weight PX PEs, and en / clear every accumulator bit; the copies
    turn one net spread over the die into a short hop to each PE. One clock more.
    `latency` is the number of clocks from the inputs to the accumulator's update.

    Parameters: n (pairs), value_bits (signed decoded activations), terms, max_shift,
    acc_bits, passes, registered, split, in_reg. Ports: act In(n x signed(value_bits)), weight In(n x T*TW table
    words), en In(1), clear In(1), [pass_ In(range(passes))], acc Out(signed(acc_bits)).
    Model: `pe_dot_ones` (times 2**(4*pass_)).
    """

    def __init__(self, *, n: int, value_bits: int, terms: int, max_shift: int, acc_bits: int,
                 passes: int = 1, registered: bool = False, split: bool = False, in_reg: bool = False):
        if split and not (registered and n * terms >= 2):
            raise ValueError("split needs registered and at least two terms")
        self.registered, self.split, self.in_reg = registered, split, in_reg
        self.latency = int(registered) + int(split) + int(in_reg)
        self._check(value_bits, acc_bits)
        self.n, self.value_bits, self.terms, self.max_shift = n, value_bits, terms, max_shift
        self.acc_bits, self.sb, self.passes = acc_bits, shift_bits(max_shift), passes
        tw = 2 + self.sb
        sig = {
            "act": In(data.ArrayLayout(signed(value_bits), n)),
            "weight": In(data.ArrayLayout(unsigned(terms * tw), n)),
            "en": In(1),
            "clear": In(1),
            "acc": Out(signed(acc_bits)),
        }
        if passes > 1:
            sig["pass_"] = In(range(passes))
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        sb, tw = self.sb, 2 + self.sb
        # a ones'-complement term of a signed value_bits value shifted by <= max_shift
        # fits value_bits + max_shift signed bits (module docstring of _ones_term)
        width = self.value_bits + self.max_shift
        act = [self.act[i] for i in range(self.n)]
        weight = [self.weight[i] for i in range(self.n)]
        en, clear = self.en, self.clear
        pass_ = self.pass_ if self.passes > 1 else None
        # with in_reg, this PE's flip-flops (en / clear / pass_ below too) are its own
        keep = dict(attrs=KEEP_FF, reset_less=True) if self.in_reg else {}
        if self.in_reg:
            act_in = [Signal(signed(self.value_bits), name=f"act_in{i}", **keep) for i in range(self.n)]
            weight_in = [Signal(len(weight[i]), name=f"weight_in{i}", **keep) for i in range(self.n)]
            m.d.sync += [a.eq(b) for a, b in zip(act_in + weight_in, act + weight)]
            act, weight = act_in, weight_in
            en_in, clear_in = Signal(name="en_in", **keep), Signal(name="clear_in", **keep)
            m.d.sync += [en_in.eq(en), clear_in.eq(clear)]
            en, clear = en_in, clear_in
            if pass_ is not None:
                pass_in = Signal.like(pass_, name="pass_in", **keep)
                m.d.sync += pass_in.eq(pass_)
                pass_ = pass_in
        parts = [_ones_term(m, act[i], weight[i][t * tw:(t + 1) * tw], sb, width, f"p{i}_{t}")
                 for i in range(self.n) for t in range(self.terms)]
        # balanced tree of two-input adders; `keep` stops yosys's alumacc from merging
        # them into one $macc (a LUT compressor tree, 2.5x the LUTs of the carry chains)
        level = 0
        while len(parts) > 1:
            nxt = []
            for k in range(0, len(parts), 2):
                if k + 1 == len(parts):
                    nxt.append(parts[k])
                    continue
                s = Signal(signed(max(len(parts[k]), len(parts[k + 1])) + 1), name=f"sum{level}_{k // 2}",
                           attrs={"keep": 1})
                m.d.comb += s.eq(parts[k] + parts[k + 1])
                nxt.append(s)
            parts, level = nxt, level + 1
            if level == 1 and self.split:
                regs = [Signal.like(x, name=f"{x.name}_r") for x in parts]
                m.d.sync += [r.eq(x) for r, x in zip(regs, parts)]
                parts = regs
                en_s, clear_s = Signal(name="en_s", **keep), Signal(name="clear_s", **keep)
                m.d.sync += [en_s.eq(en), clear_s.eq(clear)]
                en, clear = en_s, clear_s
                if pass_ is not None:
                    pass_s = Signal.like(pass_, name="pass_s", **keep)
                    m.d.sync += pass_s.eq(pass_)
                    pass_ = pass_s
        dot = parts[0]
        product = dot
        if self.passes > 1:
            product = Signal(signed(len(dot) + 4 * (self.passes - 1)), name="dot_shifted")
            with m.Switch(pass_):
                for q in range(self.passes):
                    with m.Case(q):
                        m.d.comb += product.eq(dot << (4 * q))
        if self.registered:
            prod_r = Signal.like(product, name="product_r")
            en_r, clear_r = Signal(name="en_r", **keep), Signal(name="clear_r", **keep)
            m.d.sync += [prod_r.eq(product), en_r.eq(en), clear_r.eq(clear)]
            with m.If(clear_r):
                m.d.sync += self.acc.eq(Mux(en_r, prod_r, 0))
            with m.Elif(en_r):
                m.d.sync += self.acc.eq(self.acc + prod_r)
            return m
        self._accumulate(m, product)
        return m


class MultiplierPE(_PEBase):
    """Multiplier PE, the baseline: acc += value * weight with a plain signed weight.

    Same parameters, ports and timing as `ShiftAddPE`, except `weight` is
    In(signed(weight_bits)); by default weight_bits = max_shift + 2, which holds every
    integer a T-term table word with that max_shift can encode.
    """

    def __init__(self, *, act_bits: int, acc_bits: int, weight_bits: int | None = None,
                 max_shift: int | None = None, terms: int | None = None,
                 act_signed: bool = False, levels=None):
        self._check(act_bits, acc_bits)
        if weight_bits is None:
            if max_shift is None:
                raise ValueError("give weight_bits or max_shift")
            weight_bits = max_shift + 2
        self.act_bits, self.act_signed = act_bits, bool(act_signed) and levels is None
        self.levels = None if levels is None else tuple(int(v) for v in levels)
        self.weight_bits, self.acc_bits = weight_bits, acc_bits
        super().__init__({
            "act": In(signed(act_bits) if self.act_signed else unsigned(act_bits)),
            "weight": In(signed(weight_bits)),
            "en": In(1),
            "clear": In(1),
            "acc": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        value, _ = _decode(m, self.act, self.act_bits, self.act_signed, self.levels)
        vw, _ = value_width(self.act_bits, self.act_signed, self.levels)
        product = Signal(signed(vw + self.weight_bits + 1), name="product")
        m.d.comb += product.eq(value * self.weight)
        self._accumulate(m, product)
        return m

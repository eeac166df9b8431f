"""The requantization unit, exactly the IR's rule (docs/ir.md, "Requantization").

    s = acc * mult[o] + bias[o]  (+ value(residual) * rmult[o])
    y = s >> shift                       # arithmetic: floor(s / 2^shift)
    out = clip(y, 0, 2^b - 1)            # act "uniform" (fused ReLU)
        | #{k : y >= thresholds[k]}      # act "apot" / any level set (fused ReLU)
        | y                              # act null: signed logits

Why a separate unit: it is the only place the integer graph leaves the accumulator
domain, and it is where rounding and clipping bugs live; testing it alone on the
extremes of every input is cheap, while in the engine a wrong corner would only show up
for rare pixels. The per-channel constants (mult, bias, rmult) are ports, because the
engine streams channels through one unit; `shift`, the activation rule and all widths
are elaboration-time constants of the layer.

The unit is combinational (the engine registers its inputs and its output). Internal
widths are derived here from the port widths so that nothing can overflow; the IR's
`sum_bits` is not trusted for sizing (`requant_ref` is the pure-Python counterpart).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["requant_ref", "RequantUnit", "act_from_node"]


def requant_ref(acc: int, mult: int, bias: int, shift: int, act, out_bits: int,
                res_value: int | None = None, rmult: int | None = None) -> int:
    """The IR's rule on Python ints. `act` is None, ("uniform", b) or ("thresholds", [..])."""
    s = int(acc) * int(mult) + int(bias)
    if res_value is not None:
        s += int(res_value) * int(rmult)
    y = s >> int(shift)  # Python >> on ints is floor division by 2^shift
    if act is None:
        return y
    kind, arg = act
    if kind == "uniform":
        return min(max(y, 0), 2 ** int(arg) - 1)
    return sum(1 for t in arg if y >= t)


def act_from_node(node: dict):
    """The unit's `act` parameter from an IR node: None, ("uniform", b) or ("thresholds", list)."""
    a = node["requant"].get("act")
    if a is None:
        return None
    if a["scheme"] == "uniform":
        return ("uniform", int(node["out"]["bits"]))
    return ("thresholds", [int(t) for t in a["thresholds"]])


class RequantUnit(wiring.Component):
    """Combinational requantization of one accumulator value.

    Parameters (keyword-only):
      acc_bits     signed width of `acc`
      mult_bits    signed width of `mult`
      bias_bits    signed width of `bias`
      shift        the layer's right shift (constant)
      act          None, ("uniform", b) or ("thresholds", [t0, t1, ...]) (ascending, >= 1)
      out_bits     width of `out` (code bits; signed int bits when act is None)
      res_bits     width of the residual value port, or None for no residual
      res_signed   the residual value is a signed int (an option-B shortcut's raw output)
      rmult_bits   signed width of `rmult`

    Ports: acc, mult, bias [, res, rmult] In; out Out (unsigned code, or signed when
    act is None).
    """

    def __init__(self, *, acc_bits: int, mult_bits: int, bias_bits: int, shift: int, act,
                 out_bits: int, res_bits: int | None = None, res_signed: bool = False,
                 rmult_bits: int | None = None):
        if shift < 0:
            raise ValueError("shift must be >= 0")
        if act is not None:
            kind, arg = act
            if kind not in ("uniform", "thresholds"):
                raise ValueError(f"unknown act {kind!r}")
            if kind == "thresholds":
                arg = [int(t) for t in arg]
                if any(b < a for a, b in zip(arg, arg[1:])):
                    raise ValueError("thresholds must be ascending")
                if len(arg).bit_length() > out_bits:
                    raise ValueError(f"{len(arg)} thresholds do not fit a {out_bits}-bit code")
                act = (kind, arg)
        self.acc_bits, self.mult_bits, self.bias_bits = acc_bits, mult_bits, bias_bits
        self.shift, self.act, self.out_bits = int(shift), act, out_bits
        self.res_bits, self.res_signed = res_bits, res_signed
        self.rmult_bits = rmult_bits if res_bits is not None else None
        sig = {
            "acc": In(signed(acc_bits)),
            "mult": In(signed(mult_bits)),
            "bias": In(signed(bias_bits)),
            "out": Out(signed(out_bits) if act is None else unsigned(out_bits)),
        }
        if res_bits is not None:
            if rmult_bits is None:
                raise ValueError("a residual needs rmult_bits")
            sig["res"] = In(signed(res_bits) if res_signed else unsigned(res_bits))
            sig["rmult"] = In(signed(rmult_bits))
        # every term fits; +2 for the two additions
        rterm = 0 if res_bits is None else res_bits + rmult_bits + (0 if res_signed else 1)
        self.sum_bits = max(acc_bits + mult_bits, bias_bits, rterm) + 2
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        s = Signal(signed(self.sum_bits), name="s")
        expr = self.acc * self.mult + self.bias
        if self.res_bits is not None:
            expr = expr + self.res * self.rmult
        m.d.comb += s.eq(expr)
        yw = max(self.sum_bits - self.shift, 2)
        y = Signal(signed(yw), name="y")
        m.d.comb += y.eq(s >> self.shift)
        if self.act is None:
            m.d.comb += self.out.eq(y)
        elif self.act[0] == "uniform":
            top = 2 ** self.act[1] - 1
            m.d.comb += self.out.eq(Mux(y < 0, 0, Mux(y > top, top, y)))
        else:
            count = 0
            for k, t in enumerate(self.act[1]):
                ge = Signal(name=f"ge{k}")
                m.d.comb += ge.eq(y >= t)
                count = count + ge
            m.d.comb += self.out.eq(count)
        return m

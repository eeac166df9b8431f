"""The IR as HLS C++ (Vitis HLS style, ap_int / ap_uint), one function per layer.

Files written into `out_dir` (build/NAME/hls/):

- `parameters.h`: the parallelism knobs (`SHIFTQ_PAR`, one `PAR_<layer>` per conv/linear).
- `net.h`: one typedef per tensor at the IR's exact width, the top-level declaration,
  the layer-trace hook used by the testbench.
- `weights.h`: per conv/linear the constant table of packed (sign, shift) terms (the
  same words as tables/NAME.mem), the requant multipliers, biases, residual multipliers.
- `net.cpp`: value decoders, one function per node, the top-level function `NAME_top`.
- `tb.cpp`: the C-simulation testbench (reads raw int64 files, compares with the golden
  model's outputs, every layer with `--layers`).
- `run_hls.tcl`: a Vitis HLS script (csim + csynth) for users who have the tool.
- `manifest.json`: what the testbench and `shiftq hls-csim` need to know.

Arithmetic follows docs/ir.md exactly: the accumulator is `ap_int<acc_bits>`, built by
adding or subtracting `value << shift` for every term (no multiplier on weights); the
requant sum is `ap_int<sum_bits>`, the multiplier `ap_int<mult_bits>`, the residual
multiplier `ap_int<rmult_bits>`; `y = s >> shift` is an arithmetic shift (floor);
codes are `ap_uint<bits>`, logits `ap_int<bits>`.

The weight tables are plain C integer arrays (the smallest unsigned type holding a
packed word) read into `ap_uint<word_bits>`: ap_types constructors are not constexpr,
so an `ap_uint` array initialiser becomes one constructor call per element at start-up,
which costs g++ minutes for a ResNet's tables. A constant ROM's unused high bits carry
no information; the value read is narrowed to exactly `word_bits`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shiftq.errors import UserError, atomic_path

from ..ir import IR, bits_signed
from ..tables import field_layout, pack_words

SUPPORTED = ("conv2d", "linear", "maxpool", "gap", "avgpool", "shortcut", "flatten")
DEFAULT_PAR = 4
FILES = ("parameters.h", "net.h", "weights.h", "net.cpp", "tb.cpp", "run_hls.tcl", "manifest.json")


# ------------------------------------------------------------------ helpers

def _cuint(maxval: int) -> str:
    """Smallest unsigned C type holding 0..maxval."""
    for bits, name in ((8, "unsigned char"), (16, "unsigned short"), (32, "unsigned int")):
        if maxval < (1 << bits):
            return name
    return "unsigned long long"


def _lit(v: int) -> str:
    v = int(v)
    if -(1 << 31) <= v < (1 << 31):
        return str(v)
    if v == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    return f"{v}LL"


def _rows(values, per_line=24, indent="    ") -> str:
    vals = [str(int(v)) for v in values]
    return ",\n".join(indent + ", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line))


def _dims(shape) -> str:
    return "".join(f"[{int(d)}]" for d in shape)


def _first(shape) -> str:
    return "[0]" * len(shape)


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


class _T:
    """C++ view of one tensor: its storage type, its value type and its decoder."""

    def __init__(self, ir: IR, name: str):
        t = ir.tensor(name)
        self.name = name
        self.shape = [int(d) for d in t["shape"]]
        self.kind = t["kind"]
        self.bits = int(t["bits"])
        if self.kind == "code":
            self.levels = [int(v) for v in t["levels"]]
            self.identity = self.levels == list(range(len(self.levels)))
            vb = max(1, int(t.get("value_bits") or max(self.levels).bit_length()))
            if max(self.levels) >= (1 << vb):
                vb = max(self.levels).bit_length()
            self.value_bits = vb
            self.ctype = f"ap_uint<{self.bits}>"
            self.vtype = f"ap_uint<{vb}>"
            self.signed_value_bits = vb + 1  # as a two's-complement operand
            self.max_value = max(self.levels)
        elif self.kind == "int":
            self.levels, self.identity = None, True
            self.value_bits = self.bits
            self.ctype = f"ap_int<{self.bits}>"
            self.vtype = self.ctype
            self.signed_value_bits = self.bits
            self.max_value = (1 << (self.bits - 1))
        else:
            raise UserError(f"tensor {name!r} has kind {self.kind!r}; the HLS emitter knows 'code' and 'int'")
        self.t = f"t_{_cname(name)}"
        self.v = f"v_{_cname(name)}"
        self.dec = f"val_{_cname(name)}"


def _cname(name: str) -> str:
    return "input" if name == "input" else name


# ------------------------------------------------------------------ checks

def check_supported(ir: IR) -> None:
    """Refuse (one line) any node or feature this emitter does not implement."""
    for n in ir.nodes:
        op = n.get("op")
        if op not in SUPPORTED:
            raise UserError(f"the HLS emitter has no {op!r} layer (node {n.get('name')!r}); "
                            f"it implements {', '.join(SUPPORTED)}")
        if not str(n["name"]).isidentifier():
            raise UserError(f"node name {n['name']!r} is not a C identifier")
        if op == "conv2d":
            for k in ("groups", "dilation"):
                if n.get(k) not in (None, 1, [1, 1]):
                    raise UserError(f"the HLS emitter has no conv2d with {k}={n[k]!r} (node {n['name']!r})")
        rq = n.get("requant")
        if rq and rq.get("act"):
            act = rq["act"]
            if act.get("scheme") != "uniform" and not act.get("thresholds"):
                raise UserError(f"node {n['name']!r}: activation scheme {act.get('scheme')!r} has no "
                                f"thresholds; the HLS emitter cannot requantize it")
        if op in ("gap", "avgpool") and not rq:
            raise UserError(f"node {n['name']!r}: {op} without requant is not in IR v1")


# ------------------------------------------------------------------ generation

class _Gen:
    def __init__(self, ir: IR, par: int):
        self.ir = ir
        self.par = max(1, int(par))
        self.name = _cname(str(ir.graph["name"]).replace("-", "_"))
        if not self.name.isidentifier():
            self.name = "net"
        self.top = f"{self.name}_top"
        self.tensors = {"input": _T(ir, "input")}
        for n in ir.nodes:
            self.tensors[n["name"]] = _T(ir, n["name"])
        self.weights: list[str] = []
        self.funcs: list[str] = []
        self.params: list[str] = []
        self.layer_info: list[dict] = []

    # -- value decoders
    def decoders(self) -> str:
        out = []
        for tn in self.tensors.values():
            out.append(f"// {tn.name}: {tn.kind} {tn.bits} bits, shape {tn.shape}")
            if tn.kind == "code" and not tn.identity:
                table = tn.levels + [0] * ((1 << tn.bits) - len(tn.levels))
                ct = _cuint(max(tn.levels))
                out.append(f"static const {ct} lv_{tn.name}[{len(table)}] = {{{', '.join(map(str, table))}}};")
                out.append(f"static inline {tn.v} {tn.dec}({tn.t} c) {{\n#pragma HLS INLINE\n"
                           f"    return {tn.v}(lv_{tn.name}[c]);\n}}")
            else:
                out.append(f"static inline {tn.v} {tn.dec}({tn.t} c) {{\n#pragma HLS INLINE\n"
                           f"    return {tn.v}(c);\n}}")
        return "\n".join(out)

    # -- requantization (shared by conv2d, linear, gap, avgpool)
    def requant(self, n: dict, acc_bits: int) -> tuple[str, str]:
        """(definition of rq_NAME(acc, o[, r]), the call's residual argument type or '')."""
        ir, name = self.ir, n["name"]
        rq = n["requant"]
        out = self.tensors[name]
        mult = ir.array(rq["mult"]).astype(np.int64)
        bias = ir.array(rq["bias"]).astype(np.int64)
        mb = int(rq.get("mult_bits") or bits_signed(mult.min(), mult.max()))
        bb = bits_signed(min(0, bias.min()), max(0, bias.max()))
        sb = int(rq["sum_bits"])
        sh = int(rq["shift"])
        yb = max(1, sb - sh)
        o = len(mult)
        self.weights.append(f"// {name} requant: s = acc * m + b{' + value(res) * rm' if rq.get('residual') else ''}"
                            f" in ap_int<{sb}>, y = s >> {sh}")
        self.weights.append(f"static const ap_int<{mb}> m_{name}[{o}] = {{{', '.join(_lit(v) for v in mult)}}};")
        self.weights.append(f"static const ap_int<{bb}> b_{name}[{o}] = {{{', '.join(_lit(v) for v in bias)}}};")
        res_arg, res_line = "", ""
        if rq.get("residual"):
            r = rq["residual"]
            rt = self.tensors[r["input"]]
            rm = ir.array(r["mult"]).astype(np.int64)
            rmb = int(r.get("rmult_bits") or bits_signed(rm.min(), rm.max()))
            self.weights.append(f"static const ap_int<{rmb}> rm_{name}[{o}] = {{{', '.join(_lit(v) for v in rm)}}};")
            res_arg = f", {rt.t} r"
            res_line = f"    s += {rt.dec}(r) * rm_{name}[o];\n"
        act = rq.get("act")
        if act is None:
            tail = f"    return {out.t}(y);\n"
            actdoc = "raw (logits)"
        elif act["scheme"] == "uniform":
            mx = (1 << out.bits) - 1
            tail = (f"    if (y < 0) return {out.t}(0);\n"
                    f"    if (y > {mx}) return {out.t}({mx});\n"
                    f"    return {out.t}(y);\n")
            actdoc = f"uniform clip to 0..{mx}"
        else:
            th = [int(v) for v in act["thresholds"]]
            # compare at one width that holds y and every threshold (a comparison with a
            # 64-bit C integer would widen to 65-bit ap_private arithmetic in C simulation)
            tb = max(yb, bits_signed(min(th + [0]), max(th + [0])))
            self.weights.append(f"static const ap_int<{tb}> th_{name}[{len(th)}] = "
                                f"{{{', '.join(_lit(v) for v in th)}}};")
            tail = (f"    const ap_int<{tb}> yt = y;\n    {out.t} c = 0;\n"
                    f"    THRESH: for (int k = 0; k < {len(th)}; k++) {{\n#pragma HLS UNROLL\n"
                    f"        if (yt >= th_{name}[k]) c++;\n    }}\n    return c;\n")
            actdoc = f"{act['scheme']}: code = #thresholds <= y ({len(th)} thresholds)"
        # Every partial result is kept modulo 2^sum_bits: the IR guarantees the final s
        # fits sum_bits, so the wrapped intermediate values give exactly that s.
        fn = (f"// requant of {name}: {actdoc}\n"
              f"static inline {out.t} rq_{name}(ap_int<{acc_bits}> acc, int o{res_arg}) {{\n#pragma HLS INLINE\n"
              f"    ap_int<{sb}> s = acc * m_{name}[o];\n"
              f"    s += b_{name}[o];\n{res_line}"
              f"    const ap_int<{yb}> y = s >> {sh};\n{tail}}}")
        return fn, (self.tensors[rq["residual"]["input"]].t if rq.get("residual") else "")

    # -- shift-add weights
    def weight_table(self, n: dict) -> dict:
        wd = n["weight"]
        terms = self.ir.array(wd["terms_key"])
        t = int(terms.shape[-2])
        max_shift = int(max(int(wd.get("max_shift", 0)), int(terms[..., 1].max()) if terms.size else 0))
        words, lay = pack_words(terms, max_shift)
        o = int(terms.shape[0])
        k = int(terms[0].size // (2 * t)) if o else 0
        ct = _cuint((1 << lay["word_bits"]) - 1)
        name = n["name"]
        self.weights.append(
            f"// {name}: {o} x {k} weights, {t} term(s) each, packed words of {lay['word_bits']} bits\n"
            f"// (term t in bits [t*{lay['term_bits']}, (t+1)*{lay['term_bits']}): nz<<{lay['shift_bits'] + 1} | "
            f"neg<<{lay['shift_bits']} | shift), the words of tables/{name}.mem")
        self.weights.append(f"static const {ct} w_{name}[{o}][{k}] = {{\n{_rows(words)}\n}};")
        return dict(lay, o=o, k=k, terms=t, max_shift=max_shift)

    def shift_add_body(self, name: str, lay: dict, vt: _T, vexpr: str, indent: str) -> str:
        tw, sbits, t = lay["term_bits"], lay["shift_bits"], lay["terms"]
        term_bits = vt.signed_value_bits + lay["max_shift"]
        i = indent
        return (f"{i}const {vt.v} v = {vt.dec}({vexpr});\n"
                f"{i}const ap_uint<{lay['word_bits']}> wd = w_{name}[o][k];\n"
                f"{i}TERMS: for (int t = 0; t < {t}; t++) {{\n#pragma HLS UNROLL\n"
                f"{i}    const ap_uint<{tw}> f = wd >> (t * {tw});\n"
                f"{i}    if (f[{tw - 1}]) {{\n"
                f"{i}        const ap_uint<{sbits}> sh = f;\n"
                f"{i}        const ap_int<{term_bits}> p = ap_int<{term_bits}>(v) << sh;\n"
                f"{i}        if (f[{sbits}]) acc -= p; else acc += p;\n"
                f"{i}    }}\n"
                f"{i}}}\n")

    def conv2d(self, n: dict) -> str:
        name = n["name"]
        it, ot = self.tensors[n["input"]], self.tensors[name]
        ci, h, w = it.shape
        co, ho, wo = ot.shape
        kh, kw = (int(x) for x in n["kernel"])
        s, p = int(n["stride"]), int(n["padding"])
        lay = self.weight_table(n)
        acc = int(n["acc_bits"])
        k = ci * kh * kw
        self.params.append(f"#ifndef PAR_{name}\n#define PAR_{name} SHIFTQ_PAR\n#endif")
        rq_fn, rt = ("", "")
        if n.get("requant"):
            rq_fn, rt = self.requant(n, acc)
        args = f"const {it.t} in{_dims(it.shape)}"
        if rt:
            args += f", const {rt} res{_dims(ot.shape)}"
        args += f", {ot.t} out{_dims(ot.shape)}"
        store = (f"rq_{name}(acc, o{', res[o][y][x]' if rt else ''})" if n.get("requant") else f"{ot.t}(acc)")
        body = self.shift_add_body(name, lay, it, "in[i][iy][ix]", " " * 16)
        fn = (f"{rq_fn}\n"
              f"// conv2d {name}: {ci}x{h}x{w} -> {co}x{ho}x{wo}, kernel {kh}x{kw}, stride {s}, padding {p};\n"
              f"// accumulator ap_int<{acc}>, shift-add over {lay['terms']} term(s) per weight\n"
              f"void layer_{name}({args}) {{\n"
              f"#pragma HLS ARRAY_PARTITION variable=w_{name} cyclic factor=PAR_{name} dim=2\n"
              f"    ROW: for (int y = 0; y < {ho}; y++)\n"
              f"    COL: for (int x = 0; x < {wo}; x++)\n"
              f"    OCH: for (int o = 0; o < {co}; o++) {{\n"
              f"        ap_int<{acc}> acc = 0;\n"
              f"        RED: for (int k = 0; k < {k}; k++) {{\n"
              f"#pragma HLS PIPELINE II=1\n#pragma HLS UNROLL factor=PAR_{name}\n"
              f"            const int i = k / {kh * kw}, ky = (k / {kw}) % {kh}, kx = k % {kw};\n"
              f"            const int iy = y * {s} + ky - {p}, ix = x * {s} + kx - {p};\n"
              f"            if (iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) {{\n"
              f"{body}"
              f"            }}\n"
              f"        }}\n"
              f"        out[o][y][x] = {store};\n"
              f"    }}\n}}")
        self.layer_info.append({"name": name, "op": "conv2d", "acc_bits": acc, "terms": lay["terms"],
                                "word_bits": lay["word_bits"], "weights": lay["o"] * lay["k"]})
        return fn

    def linear(self, n: dict) -> str:
        name = n["name"]
        it, ot = self.tensors[n["input"]], self.tensors[name]
        (fi,) = it.shape
        (fo,) = ot.shape
        lay = self.weight_table(n)
        acc = int(n["acc_bits"])
        self.params.append(f"#ifndef PAR_{name}\n#define PAR_{name} SHIFTQ_PAR\n#endif")
        rq_fn, rt = ("", "")
        if n.get("requant"):
            rq_fn, rt = self.requant(n, acc)
        args = f"const {it.t} in[{fi}]"
        if rt:
            args += f", const {rt} res[{fo}]"
        args += f", {ot.t} out[{fo}]"
        store = (f"rq_{name}(acc, o{', res[o]' if rt else ''})" if n.get("requant") else f"{ot.t}(acc)")
        body = self.shift_add_body(name, lay, it, "in[k]", " " * 12)
        fn = (f"{rq_fn}\n"
              f"// linear {name}: {fi} -> {fo}; accumulator ap_int<{acc}>, shift-add over {lay['terms']} term(s)\n"
              f"void layer_{name}({args}) {{\n"
              f"#pragma HLS ARRAY_PARTITION variable=w_{name} cyclic factor=PAR_{name} dim=2\n"
              f"    OCH: for (int o = 0; o < {fo}; o++) {{\n"
              f"        ap_int<{acc}> acc = 0;\n"
              f"        RED: for (int k = 0; k < {fi}; k++) {{\n"
              f"#pragma HLS PIPELINE II=1\n#pragma HLS UNROLL factor=PAR_{name}\n"
              f"{body}"
              f"        }}\n"
              f"        out[o] = {store};\n"
              f"    }}\n}}")
        self.layer_info.append({"name": name, "op": "linear", "acc_bits": acc, "terms": lay["terms"],
                                "word_bits": lay["word_bits"], "weights": lay["o"] * lay["k"]})
        return fn

    def pool_sum(self, n: dict) -> str:
        name, op = n["name"], n["op"]
        it, ot = self.tensors[n["input"]], self.tensors[name]
        c, h, w = it.shape
        acc = int(n["acc_bits"])
        rq_fn, rt = self.requant(n, acc)
        if op == "gap":
            win = f"{h}x{w} (global)"
            args = f"const {it.t} in{_dims(it.shape)}"
            if rt:
                args += f", const {rt} res[{c}]"
            args += f", {ot.t} out[{c}]"
            fn = (f"{rq_fn}\n// gap {name}: sum of the values of each {win} map, then requant\n"
                  f"void layer_{name}({args}) {{\n"
                  f"    CH: for (int o = 0; o < {c}; o++) {{\n"
                  f"        ap_int<{acc}> acc = 0;\n"
                  f"        SUM: for (int k = 0; k < {h * w}; k++) {{\n#pragma HLS PIPELINE II=1\n"
                  f"            acc += {it.dec}(in[o][k / {w}][k % {w}]);\n"
                  f"        }}\n"
                  f"        out[o] = rq_{name}(acc, o{', res[o]' if rt else ''});\n"
                  f"    }}\n}}")
        else:
            k, s = int(n["kernel"]), int(n["stride"])
            _, ho, wo = ot.shape
            args = f"const {it.t} in{_dims(it.shape)}"
            if rt:
                args += f", const {rt} res{_dims(ot.shape)}"
            args += f", {ot.t} out{_dims(ot.shape)}"
            fn = (f"{rq_fn}\n// avgpool {name}: sum of each {k}x{k} window (stride {s}), then requant\n"
                  f"void layer_{name}({args}) {{\n"
                  f"    CH: for (int o = 0; o < {c}; o++)\n"
                  f"    ROW: for (int y = 0; y < {ho}; y++)\n"
                  f"    COL: for (int x = 0; x < {wo}; x++) {{\n#pragma HLS PIPELINE II=1\n"
                  f"        ap_int<{acc}> acc = 0;\n"
                  f"        WIN: for (int q = 0; q < {k * k}; q++)\n"
                  f"            acc += {it.dec}(in[o][y * {s} + q / {k}][x * {s} + q % {k}]);\n"
                  f"        out[o][y][x] = rq_{name}(acc, o{', res[o][y][x]' if rt else ''});\n"
                  f"    }}\n}}")
        self.layer_info.append({"name": name, "op": op, "acc_bits": acc})
        return fn

    def maxpool(self, n: dict) -> str:
        name = n["name"]
        it, ot = self.tensors[n["input"]], self.tensors[name]
        c, _, _ = it.shape
        _, ho, wo = ot.shape
        k, s = int(n["kernel"]), int(n["stride"])
        self.layer_info.append({"name": name, "op": "maxpool"})
        return (f"// maxpool {name}: maximum code of each {k}x{k} window, stride {s} (levels ascend)\n"
                f"void layer_{name}(const {it.t} in{_dims(it.shape)}, {ot.t} out{_dims(ot.shape)}) {{\n"
                f"    CH: for (int o = 0; o < {c}; o++)\n"
                f"    ROW: for (int y = 0; y < {ho}; y++)\n"
                f"    COL: for (int x = 0; x < {wo}; x++) {{\n#pragma HLS PIPELINE II=1\n"
                f"        {it.t} m = in[o][y * {s}][x * {s}];\n"
                f"        WIN: for (int q = 1; q < {k * k}; q++) {{\n"
                f"            const {it.t} c = in[o][y * {s} + q / {k}][x * {s} + q % {k}];\n"
                f"            if (c > m) m = c;\n"
                f"        }}\n"
                f"        out[o][y][x] = m;\n"
                f"    }}\n}}")

    def shortcut(self, n: dict) -> str:
        name = n["name"]
        it, ot = self.tensors[n["input"]], self.tensors[name]
        co, ho, wo = ot.shape
        s = int(n["stride"])
        src = [int(v) for v in n["src"]]
        self.weights.append(f"// {name}: option-A shortcut channel map (-1: zero channel)\n"
                            f"static const short src_{name}[{co}] = {{{', '.join(map(str, src))}}};")
        self.layer_info.append({"name": name, "op": "shortcut"})
        return (f"// shortcut {name}: subsample by {s}, output channel j = input channel src[j] or code 0\n"
                f"void layer_{name}(const {it.t} in{_dims(it.shape)}, {ot.t} out{_dims(ot.shape)}) {{\n"
                f"    CH: for (int o = 0; o < {co}; o++)\n"
                f"    ROW: for (int y = 0; y < {ho}; y++)\n"
                f"    COL: for (int x = 0; x < {wo}; x++) {{\n#pragma HLS PIPELINE II=1\n"
                f"        const int j = src_{name}[o];\n"
                f"        out[o][y][x] = j < 0 ? {ot.t}(0) : {ot.t}(in[j < 0 ? 0 : j][y * {s}][x * {s}]);\n"
                f"    }}\n}}")

    def flatten(self, n: dict) -> str:
        name = n["name"]
        it, ot = self.tensors[n["input"]], self.tensors[name]
        size = _size(it.shape)
        self.layer_info.append({"name": name, "op": "flatten"})
        flat = "in" + "".join(f"[{_idx(it.shape, d)}]" for d in range(len(it.shape)))
        return (f"// flatten {name}: {it.shape} -> [{size}] in C, H, W order\n"
                f"void layer_{name}(const {it.t} in{_dims(it.shape)}, {ot.t} out[{size}]) {{\n"
                f"    FLAT: for (int k = 0; k < {size}; k++) {{\n#pragma HLS PIPELINE II=1\n"
                f"        out[k] = {ot.t}({flat});\n"
                f"    }}\n}}")

    # -- whole files
    def generate(self) -> dict[str, str]:
        ir = self.ir
        check_supported(ir)
        for n in ir.nodes:
            op = n["op"]
            if op == "conv2d":
                self.funcs.append(self.conv2d(n))
            elif op == "linear":
                self.funcs.append(self.linear(n))
            elif op in ("gap", "avgpool"):
                self.funcs.append(self.pool_sum(n))
            elif op == "maxpool":
                self.funcs.append(self.maxpool(n))
            elif op == "shortcut":
                self.funcs.append(self.shortcut(n))
            elif op == "flatten":
                self.funcs.append(self.flatten(n))
        return {"parameters.h": self.parameters_h(), "net.h": self.net_h(), "weights.h": self.weights_h(),
                "net.cpp": self.net_cpp(), "tb.cpp": self.tb_cpp(), "run_hls.tcl": self.tcl(),
                "manifest.json": json.dumps(self.manifest(), indent=1) + "\n"}

    def parameters_h(self) -> str:
        return ("// shiftq HLS parameters: edit, or pass -DSHIFTQ_PAR=N / -DPAR_<layer>=N.\n"
                "// PAR_<layer>: weights (each T shift-add terms) consumed per cycle in a conv/linear\n"
                "// reduction loop; the reuse factor is ceil(reduction length / PAR).\n"
                "#ifndef SHIFTQ_PARAMETERS_H\n#define SHIFTQ_PARAMETERS_H\n"
                f"#ifndef SHIFTQ_PAR\n#define SHIFTQ_PAR {self.par}\n#endif\n"
                + "\n".join(self.params) + "\n#endif\n")

    def net_h(self) -> str:
        inp = self.tensors["input"]
        out = self.tensors[ir_out(self.ir)]
        typedefs = []
        for tn in self.tensors.values():
            typedefs.append(f"typedef {tn.ctype} {tn.t};  // {tn.kind}, shape {tn.shape}")
            typedefs.append(f"typedef {tn.vtype} {tn.v};")
        return (f"// {self.name}: generated by shiftq from the integer IR (docs/ir.md); do not edit.\n"
                "#ifndef SHIFTQ_NET_H\n#define SHIFTQ_NET_H\n#include <ap_int.h>\n#include \"parameters.h\"\n\n"
                + "\n".join(typedefs) + "\n\n"
                f"#define SHIFTQ_IN_SIZE {_size(inp.shape)}\n#define SHIFTQ_OUT_SIZE {_size(out.shape)}\n"
                f"void {self.top}(const {inp.t} input{_dims(inp.shape)}, {out.t} output{_dims(out.shape)});\n\n"
                "// Layer trace for C simulation: the testbench defines shiftq_trace_value().\n"
                "#if defined(SHIFTQ_TRACE_LAYERS) && !defined(__SYNTHESIS__)\n"
                "extern bool shiftq_trace_on;\n"
                "void shiftq_trace_value(int node, int index, long long value);\n"
                "template <class T> inline void shiftq_trace_arr(int node, const T *p, int n) {\n"
                "    if (!shiftq_trace_on) return;\n"
                "    for (int i = 0; i < n; i++) shiftq_trace_value(node, i, (long long)p[i].to_int64());\n"
                "}\n"
                "#define SHIFTQ_TRACE(node, first, n) shiftq_trace_arr(node, &first, n)\n"
                "#else\n#define SHIFTQ_TRACE(node, first, n)\n#endif\n#endif\n")

    def weights_h(self) -> str:
        return ("// constant tables of the shift-add terms and requant constants; generated, do not edit\n"
                "#ifndef SHIFTQ_WEIGHTS_H\n#define SHIFTQ_WEIGHTS_H\n#include \"net.h\"\n\n"
                + "\n".join(self.weights) + "\n#endif\n")

    def net_cpp(self) -> str:
        ir = self.ir
        inp = self.tensors["input"]
        outname = ir_out(ir)
        out = self.tensors[outname]
        calls = []
        bufs = []
        for idx, n in enumerate(ir.nodes):
            name = n["name"]
            tn = self.tensors[name]
            bufs.append(f"    static {tn.t} b_{name}{_dims(tn.shape)};")
            src = "input" if n["input"] == "input" else f"b_{n['input']}"
            args = [src]
            rq = n.get("requant")
            if rq and rq.get("residual"):
                r = rq["residual"]["input"]
                args.append("input" if r == "input" else f"b_{r}")
            args.append(f"b_{name}")
            calls.append(f"    layer_{name}({', '.join(args)});\n"
                         f"    SHIFTQ_TRACE({idx}, b_{name}{_first(tn.shape)}, {_size(tn.shape)});")
        copy = (f"    OUT: for (int k = 0; k < {_size(out.shape)}; k++) {{\n#pragma HLS PIPELINE II=1\n"
                f"        output{''.join(f'[{_idx(out.shape, d)}]' for d in range(len(out.shape)))} = "
                f"b_{outname}{''.join(f'[{_idx(out.shape, d)}]' for d in range(len(out.shape)))};\n    }}")
        return (f"// {self.name}: one function per IR node, top-level {self.top}(); generated by shiftq.\n"
                "#include \"net.h\"\n#include \"weights.h\"\n\n"
                + self.decoders() + "\n\n" + "\n\n".join(self.funcs) + "\n\n"
                f"// the whole network: input integers (docs/ir.md input quantization) -> output\n"
                f"void {self.top}(const {inp.t} input{_dims(inp.shape)}, {out.t} output{_dims(out.shape)}) {{\n"
                + "\n".join(bufs) + "\n" + "\n".join(calls) + "\n" + copy + "\n}\n")

    def manifest(self) -> dict:
        ir = self.ir
        return {
            "format": "shiftq-hls", "version": 1, "name": self.name, "top": self.top,
            "ir_name": ir.graph["name"], "output": ir_out(ir), "default_par": self.par,
            "input": {"shape": self.tensors["input"].shape, "bits": self.tensors["input"].bits},
            "nodes": [{"name": n["name"], "op": n["op"], "shape": self.tensors[n["name"]].shape,
                       "size": _size(self.tensors[n["name"]].shape)} for n in ir.nodes],
            "layers": self.layer_info,
            "sources": ["net.cpp", "tb.cpp"], "headers": ["net.h", "weights.h", "parameters.h"],
        }

    def tb_cpp(self) -> str:
        ir = self.ir
        inp = self.tensors["input"]
        outname = ir_out(ir)
        out = self.tensors[outname]
        names = [n["name"] for n in ir.nodes]
        sizes = [_size(self.tensors[nm].shape) for nm in names]
        out_idx = names.index(outname)
        in_idx = "".join(f"[{_idx(inp.shape, d)}]" for d in range(len(inp.shape)))
        out_el = "".join(f"[{_idx(out.shape, d)}]" for d in range(len(out.shape)))
        q = (1 << (inp.bits - 1)) - 1
        return TB_TEMPLATE.format(
            top=self.top, n_nodes=len(names), names=", ".join(f'"{nm}"' for nm in names),
            sizes=", ".join(map(str, sizes)), out_idx=out_idx, in_t=inp.t, out_t=out.t,
            in_dims=_dims(inp.shape), out_dims=_dims(out.shape), in_el=in_idx, out_el=out_el,
            qmax=q)

    def tcl(self) -> str:
        return (f"# Vitis HLS: vitis_hls -f run_hls.tcl  (C simulation, then synthesis of {self.top})\n"
                f"open_project -reset {self.name}_prj\nset_top {self.top}\n"
                "add_files net.cpp\nadd_files -tb tb.cpp -cflags \"-DSHIFTQ_TRACE_LAYERS\"\n"
                "add_files -tb csim_data\n"
                "open_solution -reset solution1\nset_part {xc7z020clg400-1}\ncreate_clock -period 10\n"
                "csim_design -argv \"csim_data --layers\"\ncsynth_design\nexit\n")


def _idx(shape, d: int) -> str:
    """Index expression of dimension d of a row-major flat index `k`."""
    inner = _size(shape[d + 1:])
    e = f"k / {inner}" if inner > 1 else "k"
    return f"({e}) % {shape[d]}" if d > 0 else e


def ir_out(ir: IR) -> str:
    return ir.graph["output"]


TB_TEMPLATE = r"""// C-simulation testbench: runs {top}() on the images in DATA_DIR and compares every
// output (every layer with --layers) with the golden model's integers. Generated by shiftq.
//   tb DATA_DIR [--layers] [--limit N]
// DATA_DIR holds raw little-endian int64 files: input.i64 ([N, input size]) and
// NODE.i64 ([N, node size]) for every node; exit 0 when everything compared is equal.
#define SHIFTQ_TRACE_LAYERS 1
#include "net.h"
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static const int N_NODES = {n_nodes};
static const char *NODE_NAMES[N_NODES] = {{{names}}};
static const int NODE_SIZE[N_NODES] = {{{sizes}}};
static const int OUT_NODE = {out_idx};

bool shiftq_trace_on = false;
static std::vector<std::vector<long long> > traced(N_NODES);
void shiftq_trace_value(int node, int index, long long value) {{ traced[node][index] = value; }}

static bool read_i64(const std::string &path, std::vector<long long> &v) {{
    FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    std::fseek(f, 0, SEEK_END);
    long n = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    v.resize(n / 8);
    size_t got = v.empty() ? 0 : std::fread(&v[0], 8, v.size(), f);
    std::fclose(f);
    return got == v.size() && n % 8 == 0;
}}

struct Check {{ long bad = 0; long first_img = -1, first_idx = -1; long long got = 0, want = 0; }};

static void compare(Check &c, long img, const long long *got, const long long *want, int n) {{
    bool bad = false;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {{
            if (!bad && c.first_img < 0) {{ c.first_img = img; c.first_idx = i; c.got = got[i]; c.want = want[i]; }}
            bad = true;
        }}
    if (bad) c.bad++;
}}

int main(int argc, char **argv) {{
    if (argc < 2) {{ std::fprintf(stderr, "usage: %s DATA_DIR [--layers] [--limit N]\n", argv[0]); return 2; }}
    std::string dir = argv[1];
    bool layers = false;
    long limit = -1;
    for (int a = 2; a < argc; a++) {{
        if (!std::strcmp(argv[a], "--layers")) layers = true;
        else if (!std::strcmp(argv[a], "--limit") && a + 1 < argc) limit = std::atol(argv[++a]);
    }}
    std::vector<long long> in;
    if (!read_i64(dir + "/input.i64", in) || in.size() % SHIFTQ_IN_SIZE) {{
        std::printf("error cannot read %s/input.i64 (or its size is not a multiple of %d)\n", dir.c_str(), SHIFTQ_IN_SIZE);
        return 2;
    }}
    long n = in.size() / SHIFTQ_IN_SIZE;
    if (limit >= 0 && limit < n) n = limit;
    std::vector<std::vector<long long> > want(N_NODES);
    for (int k = 0; k < N_NODES; k++) {{
        if (!layers && k != OUT_NODE) continue;
        std::string p = dir + "/" + NODE_NAMES[k] + ".i64";
        if (!read_i64(p, want[k]) || (long)want[k].size() < n * NODE_SIZE[k]) {{
            std::printf("error cannot read %s (or it holds fewer than %ld images)\n", p.c_str(), n);
            return 2;
        }}
        traced[k].assign(NODE_SIZE[k], 0);
    }}
    static {in_t} x{in_dims};
    static {out_t} y{out_dims};
    std::vector<long long> yv(SHIFTQ_OUT_SIZE);
    std::vector<Check> checks(N_NODES);
    shiftq_trace_on = layers;
    double seconds = 0, cpu_seconds = 0;
    for (long img = 0; img < n; img++) {{
        const long long *src = &in[img * SHIFTQ_IN_SIZE];
        for (int k = 0; k < SHIFTQ_IN_SIZE; k++) {{
            if (src[k] < -{qmax}LL || src[k] > {qmax}LL) {{
                std::printf("error input value %lld of image %ld is outside the input width\n", src[k], img);
                return 2;
            }}
            x{in_el} = src[k];
        }}
        auto t0 = std::chrono::steady_clock::now();
        std::clock_t c0 = std::clock();
        {top}(x, y);
        std::clock_t c1 = std::clock();
        auto t1 = std::chrono::steady_clock::now();
        seconds += std::chrono::duration<double>(t1 - t0).count();
        cpu_seconds += double(c1 - c0) / CLOCKS_PER_SEC;
        for (int k = 0; k < SHIFTQ_OUT_SIZE; k++) yv[k] = (long long)y{out_el}.to_int64();
        compare(checks[OUT_NODE], img, &yv[0], &want[OUT_NODE][img * NODE_SIZE[OUT_NODE]], SHIFTQ_OUT_SIZE);
        if (layers)
            for (int k = 0; k < N_NODES; k++)
                if (k != OUT_NODE) compare(checks[k], img, &traced[k][0], &want[k][img * NODE_SIZE[k]], NODE_SIZE[k]);
    }}
    bool pass = true;
    for (int k = 0; k < N_NODES; k++) {{
        if (!layers && k != OUT_NODE) continue;
        const Check &c = checks[k];
        if (c.bad == 0) std::printf("node %s ok %ld\n", NODE_NAMES[k], n);
        else {{
            pass = false;
            std::printf("node %s FAIL %ld %ld %ld %lld %lld\n", NODE_NAMES[k], c.bad, c.first_img, c.first_idx, c.got, c.want);
        }}
    }}
    std::printf("images %ld seconds %.6f cpu_seconds %.6f\n", n, seconds, cpu_seconds);
    std::printf("result %s\n", pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
}}
"""


def generate(ir: IR, par: int = DEFAULT_PAR) -> dict[str, str]:
    """{file name: text} of the HLS sources for `ir`."""
    return _Gen(ir, par).generate()


def emit_hls(ir: IR, out_dir: Path, par: int = DEFAULT_PAR) -> dict:
    """Write the HLS C++ of `ir` into `out_dir` (build/NAME/hls/); returns a summary."""
    out_dir = Path(out_dir)
    gen = _Gen(ir, par)
    files = gen.generate()
    for fname, text in files.items():
        with atomic_path(out_dir / fname) as tmp:
            tmp.write_text(text)
    return {"top": gen.top, "files": sorted(files), "layers": len(gen.layer_info),
            "weights": int(sum(li.get("weights", 0) for li in gen.layer_info)),
            "default_par": gen.par, "csim": "shiftq hls-csim --build <export dir> [--layers]"}

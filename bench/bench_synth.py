"""Shift-add PE vs multiplier PE, synthesised on iCE40 UP5K and ECP5-85F in one run.

For each precision (W4/A4 APoT, W4/A8, W8/A8, and a one-term PoT weight W4 PoT/A4 APoT:
±2^0..2^6, which a multiplier needs 8 signed bits for) and device, three builds of one PE
(`hw/rtl/pe.py`, same ports, same accumulator):

- `shift-add`: `ShiftAddPE`, the weight is a table word of T (sign, shift) terms;
- `mult-LUT`: `MultiplierPE` with DSP inference off (the multiplier in LUTs);
- `mult-DSP`: `MultiplierPE` with DSP inference on (SB_MAC16 / MULT18X18D).

Each PE sits in `hw.synth.RegisteredHarness` (every input from a flip-flop, every output
into one), kept as its own module so its own LUTs / FFs are counted without the harness;
Fmax is nextpnr's for the whole clock domain (flop to flop through the PE), with the clock
constrained above what the PE reaches (iCE40 100 MHz, ECP5 200 MHz) so the placer is
pushed. Fmax depends on the placement seed: the full run places every build with three
seeds and reports the median (and the spread); `quick` uses one seed and only W4/A4.

`run(quick)` returns a dict (rows, shift-add / mult-LUT ratios); a full run also writes
the table and its reading to docs/benchmarks-synthesis.md. `python -m bench.bench_synth
[--quick]` runs it alone.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks-synthesis.md"

APOT_A4 = (0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48)

# acc_bits: the worst case of a 3x3x64 convolution, max|w| * max(value) * 576
CONFIGS = {
    "W4/A4 APoT": dict(act_bits=4, levels=APOT_A4, terms=2, max_shift=3, weight_bits=5, acc_bits=20),
    "W4 PoT (T=1)/A4 APoT": dict(act_bits=4, levels=APOT_A4, terms=1, max_shift=6, weight_bits=8, acc_bits=24),
    "W4/A8": dict(act_bits=8, levels=None, terms=2, max_shift=3, weight_bits=5, acc_bits=22),
    "W8/A8": dict(act_bits=8, levels=None, terms=4, max_shift=7, weight_bits=8, acc_bits=26),
}
DEVICES = {"icebreaker": ("iCE40 UP5K", 100.0), "ulx3s-85f": ("ECP5-85F", 200.0)}
VARIANTS = ("shift-add", "mult-LUT", "mult-DSP")


def _make(variant: str, cfg: dict):
    from hw.rtl.pe import MultiplierPE, ShiftAddPE

    if variant == "shift-add":
        return ShiftAddPE(act_bits=cfg["act_bits"], levels=cfg["levels"], terms=cfg["terms"],
                          max_shift=cfg["max_shift"], acc_bits=cfg["acc_bits"])
    return MultiplierPE(act_bits=cfg["act_bits"], levels=cfg["levels"], weight_bits=cfg["weight_bits"],
                        acc_bits=cfg["acc_bits"])


def _one(job):
    from hw.synth import synthesize_component

    prec, board, variant, seed, root = job
    cfg = CONFIGS[prec]
    clock = DEVICES[board][1]
    out = Path(root) / f"{board}-{prec.replace('/', '').replace(' ', '_')}-{variant}-s{seed}"
    u = synthesize_component(_make(variant, cfg), board, out, clock_mhz=clock, seed=seed,
                             dsp=(variant == "mult-DSP"), quiet=True)
    own = u["dut"]["top.dut"]
    return {"precision": prec, "board": board, "variant": variant, "seed": seed,
            "lut4": own["lut4"], "ff": own["ff"], "carry": own["carry"], "dsp": own["dsp"],
            "fmax_mhz": u["fmax_mhz"], "constraint_mhz": clock,
            "total_lut4": u["resources"]["lut4"]["used"], "wall_s": u["wall_time_s"]["total"]}


def run(quick: bool = False) -> dict:
    t0 = time.time()
    seeds = (1,) if quick else (1, 2, 3)
    precs = ["W4/A4 APoT"] if quick else list(CONFIGS)
    with tempfile.TemporaryDirectory(prefix="shiftq-bench-synth-") as root:
        jobs = [(p, b, v, s, root) for p in precs for b in DEVICES for v in VARIANTS for s in seeds]
        with ThreadPoolExecutor(max_workers=2) as pool:
            raw = list(pool.map(_one, jobs))
    rows = []
    for p in precs:
        for b in DEVICES:
            for v in VARIANTS:
                rs = [r for r in raw if (r["precision"], r["board"], r["variant"]) == (p, b, v)]
                f = [r["fmax_mhz"] for r in rs]
                r0 = rs[0]
                rows.append({"precision": p, "device": DEVICES[b][0], "board": b, "variant": v,
                             "lut4": r0["lut4"], "ff": r0["ff"], "carry": r0["carry"], "dsp": r0["dsp"],
                             "fmax_mhz": round(statistics.median(f), 1),
                             "fmax_min_mhz": round(min(f), 1), "fmax_max_mhz": round(max(f), 1),
                             "seeds": len(f), "constraint_mhz": r0["constraint_mhz"]})
    res = {
        "what": "one PE (activation in, weight in, registered accumulator) per row, IOs registered; "
                "LUT4 / FF / carry / DSP are the PE's own cells (yosys, kept hierarchy); Fmax from nextpnr",
        "quick": quick, "seeds": list(seeds), "rows": rows,
        "wall_s": round(time.time() - t0, 1),
        "table": str(DOC.relative_to(ROOT)),
    }
    res["ratios"] = _ratios(rows)
    if not quick:   # the table and its reading: a docs section of its own (docs/benchmarks.md links it)
        write_doc(res)
    return res


def _ratios(rows):
    """shift-add / mult-LUT LUT4 and Fmax ratios per precision and device."""
    out = {}
    for r in rows:
        if r["variant"] != "shift-add":
            continue
        m = next(x for x in rows if x["variant"] == "mult-LUT" and x["precision"] == r["precision"]
                 and x["board"] == r["board"])
        out[f"{r['precision']} {r['device']}"] = {
            "lut4_shift_over_mult": round(r["lut4"] / max(1, m["lut4"]), 3),
            "fmax_shift_over_mult": round(r["fmax_mhz"] / m["fmax_mhz"], 3)}
    return out


def markdown(res: dict) -> str:
    seeds = len(res["seeds"])
    lines = ["| precision | device | PE | LUT4 | FF | carry | DSP | Fmax MHz"
             + (" (median of %d seeds, range)" % seeds if seeds > 1 else "") + " |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        f = f"{r['fmax_mhz']:.1f}"
        if r["seeds"] > 1:
            f += f" ({r['fmax_min_mhz']:.0f}-{r['fmax_max_mhz']:.0f})"
        lines.append(f"| {r['precision']} | {r['device']} | {r['variant']} | {r['lut4']} | {r['ff']} | "
                     f"{r['carry']} | {r['dsp']} | {f} |")
    return "\n".join(lines) + "\n"


def _row(rows, prec, board, variant):
    return next(r for r in rows if (r["precision"], r["board"], r["variant"]) == (prec, board, variant))


def reading(res: dict) -> str:
    """What the table says, with this run's figures (the prose is fixed, the numbers are not)."""
    rows = res["rows"]
    R = lambda p, b, v: _row(rows, p, b, v)  # noqa: E731
    out = []
    a, m = R("W4/A4 APoT", "icebreaker", "shift-add"), R("W4/A4 APoT", "icebreaker", "mult-LUT")
    a5, m5 = R("W4/A4 APoT", "ulx3s-85f", "shift-add"), R("W4/A4 APoT", "ulx3s-85f", "mult-LUT")
    out.append(
        f"- **W4/A4 APoT, the case shiftq is built for, is a draw, not a win.** On the UP5K the "
        f"reprogrammable 2-term shift-add PE takes {a['lut4']} LUT4 against {m['lut4']} for the "
        f"LUT multiplier and runs at {a['fmax_mhz']:.0f} vs {m['fmax_mhz']:.0f} MHz; on the ECP5 it is "
        f"{a5['lut4']} vs {m5['lut4']} LUT4 (carry chains counted as LUTs) at {a5['fmax_mhz']:.0f} vs "
        f"{m5['fmax_mhz']:.0f} MHz. Why: with the weight arriving as a table word every cycle, each term "
        f"is a barrel shifter (a mux tree over the shift amount), a conditional negation and an adder; "
        f"a 5-bit x 6-bit array multiplier of the same operand costs about as much in 4-input LUTs. "
        f"The APoT activation decode (16-entry table) is in both PEs.")
    if any(r["precision"].startswith("W4 PoT") for r in rows):
        p, pm = R("W4 PoT (T=1)/A4 APoT", "icebreaker", "shift-add"), R("W4 PoT (T=1)/A4 APoT", "icebreaker", "mult-LUT")
        p5, pm5 = R("W4 PoT (T=1)/A4 APoT", "ulx3s-85f", "shift-add"), R("W4 PoT (T=1)/A4 APoT", "ulx3s-85f", "mult-LUT")
        out.append(
            f"- **One term (PoT weights) is where shift-add wins:** {p['lut4']} vs {pm['lut4']} LUT4 on "
            f"the UP5K ({p['fmax_mhz']:.0f} vs {pm['fmax_mhz']:.0f} MHz), {p5['lut4']} vs {pm5['lut4']} on the "
            f"ECP5 ({p5['fmax_mhz']:.0f} vs {pm5['fmax_mhz']:.0f} MHz): a single shifter and no adder, "
            f"against a multiplier that needs 8-bit weights to hold +-2^6.")
    w, wm = R("W8/A8", "icebreaker", "shift-add"), R("W8/A8", "icebreaker", "mult-LUT")
    w5, wm5 = R("W8/A8", "ulx3s-85f", "shift-add"), R("W8/A8", "ulx3s-85f", "mult-LUT")
    out.append(
        f"- **W8/A8 in canonical signed digits (T = 4 terms, shifts 0..7) loses clearly:** "
        f"{w['lut4']} vs {wm['lut4']} LUT4 and {w['fmax_mhz']:.0f} vs {wm['fmax_mhz']:.0f} MHz on the UP5K, "
        f"{w5['lut4']} vs {wm5['lut4']} and {w5['fmax_mhz']:.0f} vs {wm5['fmax_mhz']:.0f} MHz on the ECP5. "
        f"Four 8-bit barrel shifters and a 4-input adder tree are bigger and deeper than one 8x8 "
        f"multiplier. The 8-bit first and last layers should use multiplier (or DSP) PEs; the engine "
        f"has `pe=\"mult\"` for that.")
    d, d5 = R("W4/A4 APoT", "icebreaker", "mult-DSP"), R("W4/A4 APoT", "ulx3s-85f", "mult-DSP")
    out.append(
        f"- **DSP blocks are the smallest by far, and on the UP5K the fastest:** a DSP MAC is "
        f"{d['lut4']} LUT4 at {d['fmax_mhz']:.0f} MHz on the UP5K and {d5['lut4']} LUT4 at "
        f"{d5['fmax_mhz']:.0f} MHz on the ECP5 (there no faster than LUT logic: the route into the "
        f"MULT18 costs; the LUTs are the accumulator's). But the UP5K has 8 DSPs (the layer engine's "
        f"requantisation already uses them) and the ECP5-85F 156: beyond those every PE is LUTs, and "
        f"there the shift-add PE is the smaller one for 1-term weights everywhere and for 2-term W4 "
        f"on the ECP5 ({a5['lut4']} vs {m5['lut4']} LUT4), at a lower Fmax in the 2-term case.")
    out.append(
        "- **What this means for the design:** a shift-add PE pays off when it is designed for it: "
        "one term per weight, or shifts fixed at build time (constant weights wired as shifts cost "
        "no shifter at all, not measured here), narrow activations. A generic table-driven 2-term PE "
        "is about a LUT multiplier, and a 4-term one is worse. Fmax per seed varies by up to ~15 % "
        "(ranges in the table), so differences under that are noise.")
    return "\n".join(out) + "\n"


def write_doc(res: dict) -> None:
    from shiftq.errors import atomic_path

    text = ("# Synthesis benchmark: shift-add PE vs multiplier PE\n\n"
            "Generated by `make bench ONLY=synth` (`bench/bench_synth.py`); do not edit.\n\n"
            + (__doc__ or "").strip() + "\n\n"
            f"Run: {len(res['seeds'])} placement seed(s) per build, {res['wall_s']:.0f} s wall time "
            "(2 builds in parallel, YoWASP tools).\n\n"
            + markdown(res) + "\n## Reading\n\n" + reading(res))
    with atomic_path(DOC) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    import json
    import sys

    quick = "--quick" in sys.argv
    res = run(quick)
    print(markdown(res))
    print(json.dumps(res["ratios"], indent=2))
    print(f"wall time {res['wall_s']} s")
    if not quick:
        print(reading(res))

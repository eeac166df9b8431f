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

`run(quick)` returns a dict (rows + a markdown table); `python -m bench.bench_synth`
prints the table and writes it to docs/benchmarks-synthesis.md.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
        "quick": quick, "seeds": list(seeds), "rows": rows, "configs": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv)
                                                                          for kk, vv in c.items()} for k, c in CONFIGS.items()},
        "wall_s": round(time.time() - t0, 1),
    }
    res["ratios"] = _ratios(rows)
    res["markdown"] = markdown(res)
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


if __name__ == "__main__":
    import json
    import sys

    quick = "--quick" in sys.argv
    res = run(quick)
    print(res["markdown"])
    print(json.dumps(res["ratios"], indent=2))
    print(f"wall time {res['wall_s']} s")
    Path("build").mkdir(exist_ok=True)
    Path("build/bench_synth.json").write_text(json.dumps(res, indent=2) + "\n")

"""Whole-network accelerator: cycles per inference measured in Verilator (one image,
straight through, no step-mode pauses), the MAC bound MACs / PEs and the PE
utilisation, and, where a bitstream was built (`make accel-bitstream`), Fmax, images/s
at Fmax and LUT / RAM / DSP use from its utilization.json. Per model and board
configuration (PO x PX of boards/accel_top.PARALLELISM)."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {("resnet20", "ulx3s-85f"): 1000, ("resnet20", "icebreaker"): 30}


def _synth(model, board):
    f = ROOT / "build" / model / "synth-accel" / board / "utilization.json"
    if not f.exists():
        return None
    u = json.loads(f.read_text())
    out = {"utilization_json": str(f.relative_to(ROOT))}
    res = u.get("resources", u)
    for k in ("lut4", "ff", "bram", "spram", "dsp"):
        v = res.get(k)
        if isinstance(v, dict):
            out[k] = v.get("used")
    out["fmax_mhz"] = u.get("fmax_mhz")
    out["timing_met"] = u.get("timing_met")
    return out


def measure(model, board, sim="verilator"):
    import numpy as np

    from boards.accel_top import PARALLELISM
    from hw.ir import load
    from hw.rtl.accel.check import check_accel, load_words
    from hw.rtl.accel.plan import DoesNotFit, check_budget, make_plan

    d = ROOT / "build" / model
    ir = load(d)
    po, px = PARALLELISM[board]
    plan = make_plan(ir, po=po, px=px, words=load_words(d, ir))
    with np.load(d / "vectors.npz") as z:
        x = z["node:input"][:1]
    rep = check_accel(ir, x, sim, plan=plan, layers=False)
    r = {"PO": po, "PX": px, "pes": plan.pes, "macs": plan.macs, "mac_bound_cycles": round(plan.macs / plan.pes),
         "cycles": rep.get("cycles"), "bit_exact": bool(rep.get("passed"))}
    if isinstance(r["cycles"], int):
        r["pe_utilisation"] = round(plan.macs / (plan.pes * r["cycles"]), 4)
    try:
        b = check_budget(plan, board)
        r["plan_fits"] = True
        r["plan_ebr"], r["plan_spram"] = b["ebr"], b["spram"]
    except DoesNotFit as e:
        r["plan_fits"] = False
        r["plan_error"] = str(e)
        try:
            b = check_budget(plan, board, loader=True)
            r["plan_with_spram_loader"] = {"ebr": b["ebr"], "spram": b["spram"]}
        except DoesNotFit as e2:
            r["plan_with_spram_loader"] = str(e2)
    s = _synth(model, board)
    if s:
        r.update(s)
        if s.get("fmax_mhz") and isinstance(r["cycles"], int):
            r["images_per_s_at_fmax"] = round(s["fmax_mhz"] * 1e6 / r["cycles"], 1)
    tgt = TARGETS.get((model, board))
    if tgt:
        r["target_images_per_s"] = tgt
    return r


def run(quick: bool = False) -> dict:
    out = {}
    models = ["digitnet"] if quick else ["digitnet", "resnet20"]
    for model in models:
        if not (ROOT / "build" / model / "model.json").exists():
            out[model] = {"error": f"no export build/{model}"}
            continue
        for board in ("icebreaker", "ulx3s-85f"):
            out[f"{model}_{board}"] = measure(model, board)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))

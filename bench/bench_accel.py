"""Whole-network accelerator, per model and board (the PE array of
boards.accel_top.PARALLELISM, PO x PI x PX): cycles per inference measured in Verilator
(one image, straight through, no step-mode pauses; hw.rtl.accel.check.check_accel), the
MAC bound MACs / PEs and the PE utilisation; and, where a bitstream was built
(`make bitstream`, build/MODEL/synth-accel/BOARD/utilization.json; the bench never runs
yosys / nextpnr itself), LUT / FF / RAM / DSP use, Fmax, the yosys / nextpnr wall
times, and images/s at Fmax and at the clock the bitstream runs at (= clock / cycles;
the UART's transfer time excluded): the ULX3S's PLL output (design.json `clock_hz`),
else the board's oscillator. A bitstream of other accelerator RTL (design.json
`rtl_sha256`, the Verilog's hash, against the one simulated here; for bitstreams built
before that field, `cycles_estimate` against today's plan) is `synth_stale`: no images/s."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {("resnet20", "ulx3s-85f"): 1000, ("resnet20", "icebreaker"): 30}
BOARDS = ("icebreaker", "ulx3s-85f")


def synth_result(model, board, root=ROOT):
    """Figures of build/MODEL/synth-accel/BOARD/utilization.json (+ design.json), or None."""
    d = Path(root) / "build" / model / "synth-accel" / board
    f = d / "utilization.json"
    if not f.exists():
        return None
    u = json.loads(f.read_text())
    try:
        rel = str(f.relative_to(root))
    except ValueError:
        rel = str(f)
    out = {"utilization_json": rel}
    res = u.get("resources", {})
    for k in ("lut4", "ff", "logic_cells", "bram", "spram", "dsp"):
        v = res.get(k)
        if isinstance(v, dict) and (k != "spram" or v.get("available")):
            out[k] = v.get("used")
    out["fmax_mhz"] = u.get("fmax_mhz")
    clocks = u.get("clocks") or []
    if clocks:
        out["clock_mhz"] = min(c["constraint_mhz"] for c in clocks)
    out["timing_met"] = u.get("timing_met")
    w = u.get("wall_time_s") or {}
    for k in ("yosys", "nextpnr", "total"):
        if k in w:
            out[f"{k}_wall_s"] = w[k]
    meta = d / "design.json"
    if meta.exists():
        design = json.loads(meta.read_text())
        out["built_pe_array"] = [design.get("PO"), design.get("PI", 1), design.get("PX")]
        if design.get("cycles_estimate") is not None:
            out["built_cycles_estimate"] = design["cycles_estimate"]
        if design.get("rtl_sha256"):
            out["built_rtl_sha256"] = design["rtl_sha256"]
        if design.get("clock_hz"):          # the PLL's output where the top has one
            out["clock_mhz"] = round(design["clock_hz"] / 1e6, 4)
            out["pll"] = bool(design.get("pll"))
    return out


def figures(plan, cycles, synth=None, rtl=None) -> dict:
    """The derived figures of one configuration: MAC bound, utilisation, images/s.
    `rtl`: the sha256 of the accelerator Verilog the cycles were measured on."""
    r = {"PO": plan.PO, "PI": plan.PI, "PX": plan.PX, "pes": plan.pes, "weights_loaded": bool(plan.weights_loaded),
         "macs": plan.macs, "mac_bound_cycles": -(-plan.macs // plan.pes), "cycles": cycles}
    if isinstance(cycles, int) and cycles > 0:
        r["pe_utilisation"] = round(plan.macs / (plan.pes * cycles), 4)
    if synth:
        built = synth.get("built_pe_array")
        r.update(synth)
        est = sum(plan.cycle_estimate().values())
        if built is not None and built != [plan.PO, plan.PI, plan.PX]:
            r["synth_stale"] = f"bitstream built for PO x PI x PX = {built}, not this plan"
        elif rtl and synth.get("built_rtl_sha256") not in (None, rtl):
            r["synth_stale"] = (f"bitstream built from other accelerator RTL (Verilog sha256 "
                                f"{synth['built_rtl_sha256'][:12]}, this one {rtl[:12]}): rebuild it")
        elif synth.get("built_cycles_estimate") not in (None, est):
            # the schedule model moved since the build: the bitstream is of an earlier RTL,
            # whose Fmax says nothing about this one's
            r["synth_stale"] = (f"bitstream built from an earlier RTL (its plan estimated "
                                f"{synth['built_cycles_estimate']} cycles, this one {est}): rebuild it")
        elif isinstance(cycles, int) and cycles > 0:
            if synth.get("fmax_mhz"):
                r["images_per_s_at_fmax"] = round(synth["fmax_mhz"] * 1e6 / cycles, 1)
            if synth.get("clock_mhz"):
                r["images_per_s_at_board_clock"] = round(synth["clock_mhz"] * 1e6 / cycles, 1)
    return r


def measure(model, board, sim="verilator"):
    import numpy as np

    from boards.accel_top import board_kwargs
    from hw.ir import load
    from hw.rtl.accel.check import check_accel, load_words
    from hw.rtl.accel.plan import DoesNotFit, check_budget, make_plan

    d = ROOT / "build" / model
    ir = load(d)
    kw = board_kwargs(board)
    plan = make_plan(ir, words=load_words(d, ir), **kw)
    with np.load(d / "vectors.npz") as z:
        x = z["node:input"][:1]
    rep = check_accel(ir, x, sim, plan=plan, layers=False)
    cycles = rep.get("cycles")
    r = figures(plan, cycles if isinstance(cycles, int) else None, synth_result(model, board),
                rtl=rep.get("rtl_sha256"))
    r["rtl_sha256"] = rep.get("rtl_sha256")
    r["plan_kwargs"] = {k: v for k, v in kw.items()}
    r["bit_exact"] = bool(rep.get("passed"))
    if not isinstance(cycles, int):
        r["cycles_raw"] = cycles
    try:
        b = check_budget(plan, board, loader=bool(plan.weights_loaded))
        r["plan_fits"] = True
        r["plan_ebr"], r["plan_spram"] = b["ebr"], b["spram"]
    except DoesNotFit as e:
        r["plan_fits"] = False
        r["plan_error"] = str(e)
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
        for board in BOARDS:
            try:
                out[f"{model}_{board}"] = measure(model, board)
            except Exception as e:  # noqa: BLE001 - one configuration's failure is recorded, the rest still run
                out[f"{model}_{board}"] = {"error": f"{type(e).__name__}: {e}"}
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))

"""Run the accelerator on images in a simulator and compare with hw/golden.py.

`check_accel(ir, x, sim, po=, pi=, px=, layers=, words=)` builds the plan and the design,
computes the golden outputs of every node for the images `x` (input integers
[N, C, H, W]), runs `sim.test_accel` through `sim.runner.run_test` (cached builds) and
returns the report: per image the cycles, class, whether the logits, the class and
every checked step's activations (read element by element through the debug port,
channel by channel: a tensor's channels lie `HWp` words apart, a deinterleaved tensor's
pixels in its stored order) equal the golden model's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hw.golden import run as golden_run

from .accel import accel_verilog, dbg_latency, rtl_sha256
from .plan import make_plan


def load_words(build_dir, ir) -> dict:
    """{node: table words} from an export's tables/NAME.mem (what the hardware is built from)."""
    from hw.rtl.engine import read_mem

    out = {}
    for n in ir.nodes:
        if n["op"] in ("conv2d", "linear"):
            mem = Path(build_dir) / "tables" / f"{n['name']}.mem"
            if mem.exists():
                out[n["name"]] = read_mem(mem, int(np.asarray(ir.array(n["weight"]["key"])).size))
    return out


def accel_case(ir, plan, x, *, layers=True) -> dict:
    """The JSON case of `sim.test_accel` for input integers `x` [N, C, H, W]."""
    env = golden_run(ir, x, return_all=True, quantized=True)
    out = ir.graph["output"]
    steps = []
    for s in plan.steps:
        segs = []
        if s.name in plan.tensor_layout:
            base, C, HW, HWp = plan.tensor_layout[s.name]
            segs = [[base + c * HWp, HW] for c in range(C)]
        steps.append(dict(name=s.name, segments=segs, check=bool(layers) and not s.to_logits))
    images = []
    for k in range(len(x)):
        img = dict(input=[int(v) for v in np.asarray(x[k]).reshape(-1)],
                   logits=[int(v) for v in np.asarray(env[out][k]).reshape(-1)],
                   klass=int(np.asarray(env[out][k]).argmax()))
        if layers:
            img["layers"] = {s["name"]: _stored_order(plan, s["name"], env[s["name"]][k])
                             for s in steps if s["check"]}
        images.append(img)
    budget = sum(plan.cycle_estimate().values())
    case = dict(steps=steps, images=images, in_bits=plan.in_bits, out_bits=plan.out_bits,
                n_out=plan.n_out, cycle_budget=budget, dbg_latency=dbg_latency(plan))
    if plan.weights_loaded:
        case["loaded_words"] = [int(w) for w in plan.loaded_words]
    return case


def _stored_order(plan, name, t) -> list[int]:
    """Tensor `t` [C, H, W] as its channels' words lie in memory (a deinterleaved tensor:
    each row's even columns, then its odd ones)."""
    t = np.asarray(t)
    C = t.shape[0]
    flat = t.reshape(C, -1)
    out = np.empty_like(flat)
    out[:, plan.pixel_order(name)] = flat
    return [int(v) for v in out.reshape(-1)]


def check_accel(ir, x, sim, *, po=4, pi=1, px=1, layers=True, words=None, plan=None, tag=None,
                weights_loaded=False, deep_pipeline=True) -> dict:
    from sim.runner import run_test

    plan = plan or make_plan(ir, po=po, pi=pi, px=px, words=words, weights_loaded=weights_loaded,
                             deep_pipeline=deep_pipeline)
    text = accel_verilog(plan)
    case = accel_case(ir, plan, np.asarray(x), layers=layers)
    rep = run_test(text, "accel", "sim.test_accel", sim, case,
                   tag=tag or f"{ir.graph['name']}-po{plan.PO}-pi{plan.PI}-px{plan.PX}{'-wl' if plan.weights_loaded else ''}{'' if plan.deep_pipeline else '-shallow'}")
    rep.update(PO=plan.PO, PI=plan.PI, PX=plan.PX, macs=plan.macs, pes=plan.pes, mac_bound=plan.macs / plan.pes,
               rtl_sha256=rtl_sha256(text))
    cyc = [r["cycles"] for r in rep.get("results", [])]
    if cyc:
        rep["cycles"] = cyc[0] if len(set(cyc)) == 1 else cyc
        rep["utilisation"] = plan.macs / (plan.pes * max(cyc))
    return rep

"""Emit the Verilog of an exported model: one layer engine per conv2d / linear node.

`emit_rtl(ir, out_dir)` is the exporter's "rtl" backend (hw/backends.py), called by
`shiftq export` with out_dir = build/NAME/rtl; `emit_rtl("build/NAME")` does the same
from an export directory. Each node NAME becomes `rtl/NAME.v` with top module
`engine_NAME`; its weight ROMs are initialised from `tables/NAME.mem` when the export
has it (else from the IR's terms array, which packs to the same words), so the Verilog
holds exactly the table the tables backend wrote. `rtl/manifest.json` lists every
engine with its parallelism, ports' meaning and the MAC bound.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .engine import LayerEngine, layer_spec, read_mem

__all__ = ["emit_rtl"]


def emit_rtl(ir, out_dir=None, *, po_max: int = 16, pi_max: int = 4, layers=None, progress=None) -> dict:
    from hw.ir import IR, load
    from shiftq.errors import atomic_path

    if not isinstance(ir, IR):  # an export directory
        build_dir = Path(ir)
        ir = load(build_dir)
        out_dir = build_dir / "rtl" if out_dir is None else Path(out_dir)
        tables = build_dir / "tables"
    else:  # the exporter's backend call: out_dir is build/NAME/rtl
        out_dir = Path(out_dir)
        tables = out_dir.parent / "tables"
    from amaranth.back import verilog

    summary = {"engines": {}, "po_max": po_max, "pi_max": pi_max}
    for n in ir.nodes:
        if n["op"] not in ("conv2d", "linear"):
            continue
        name = n["name"]
        if layers is not None and name not in layers:
            continue
        count = int(np.asarray(ir.array(n["weight"]["key"])).size)
        mem = tables / f"{name}.mem"
        words = read_mem(mem, count) if mem.exists() else None
        spec = layer_spec(ir, name, po_max=po_max, pi_max=pi_max, words=words)
        top = f"engine_{name}"
        text = verilog.convert(LayerEngine(spec), name=top, emit_src=False)
        with atomic_path(out_dir / f"{name}.v") as tmp:
            tmp.write_text(text)
        summary["engines"][name] = {
            "file": f"{name}.v", "top": top, "op": n["op"], "PO": spec.PO, "PI": spec.PI,
            "pes": spec.PO * spec.PI, "macs": spec.macs, "loop_cycles": spec.run_cycles,
            "mac_bound": spec.ideal_cycles, "weights_from": "tables" if words is not None else "ir",
            "in": [spec.C, spec.H, spec.W], "out": [spec.O, spec.Ho, spec.Wo],
            "residual": (spec.requant or {}).get("residual", {}) and spec.requant["residual"]["input"],
        }
        if progress:
            progress(f"    {name}: {spec.PO}x{spec.PI} PEs, {spec.run_cycles} cycles")
    with atomic_path(out_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary

"""RTL layer engines on the exported digitnet: cycles vs the MAC bound, simulation speed.

For every conv2d / linear node of build/digitnet the layer engine (hw/rtl/engine.py)
is built, run in Verilator on one golden vector and checked word for word against the
golden model (a mismatch is recorded, not hidden). Reported per layer: MACs, the PE
array (PO x PI), cycles from start to done, the MAC bound MACs / (PO x PI) and the
utilisation MACs / (PEs x cycles); and the simulation speed in cycles per second of
wall time while the engine runs (Verilator; Icarus too in the full run).

If build/digitnet is missing it is exported from runs/digitnet/compressed.pt into a
temporary directory (`shiftq export --backends rtl`); without either, the benchmark
records an error telling how to make one.
`python -m bench.bench_rtl [--quick]` runs it alone.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

def _export_dir(tmp: Path) -> tuple[Path, str]:
    d = ROOT / "build" / "digitnet"
    if (d / "model.json").exists() and (d / "vectors.npz").exists():
        return d, "build/digitnet"
    ckpt = ROOT / "runs" / "digitnet" / "compressed.pt"
    if not ckpt.exists():
        raise RuntimeError("no digitnet export (build/digitnet) and no runs/digitnet/compressed.pt: "
                           "run `make export MODEL=digitnet` first")
    out = tmp / "digitnet"
    subprocess.run([sys.executable, "-m", "shiftq.cli", "export", "--ckpt", str(ckpt), "--data", "digits",
                    "--out", str(out), "--backends", "rtl"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return out, f"exported now from {ckpt.relative_to(ROOT)}"


def run(quick: bool = False) -> dict:
    from sim.layers import check_layer, engine_layers, load_export
    from sim.runner import available_simulators

    sims = [s for s in (["verilator"] if quick else ["verilator", "icarus"]) if s in available_simulators()]
    if not sims:
        raise RuntimeError("no simulator installed (make setup)")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="shiftq-bench-rtl-") as tmp:
        build, source = _export_dir(Path(tmp))
        ir, env, words = load_export(build)
        layers, speeds = {}, {s: [] for s in sims}
        for name in engine_layers(ir):
            for s in sims:
                r = check_layer(ir, name, env, s, words=words.get(name))
                if s == sims[0]:
                    layers[name] = {
                        "bit_exact": bool(r.get("passed")), "mismatches": r.get("mismatches"),
                        "macs": r["macs"], "pes": f"{r['PO']}x{r['PI']}", "pe_count": r["pes"],
                        "cycles": r.get("cycles"), "mac_bound": round(r["mac_bound"], 1),
                        "utilisation": round(r["utilisation"], 4) if r.get("utilisation") else None,
                        "build_s": round(r["build_s"], 1),
                    }
                if r.get("cycles") and r.get("run_wall_s"):
                    speeds[s].append((r["cycles"], r["run_wall_s"]))
                    layers[name][f"{s}_cycles_per_s"] = round(r["cycles"] / r["run_wall_s"])
    cyc = sum(v["cycles"] or 0 for v in layers.values())
    macs = sum(v["macs"] for v in layers.values())
    slots = sum(v["pe_count"] * (v["cycles"] or 0) for v in layers.values())
    res = {
        "model": ir.graph["name"], "source": source, "simulators": ",".join(sims),
        "all_bit_exact": all(v["bit_exact"] for v in layers.values()),
        "total_cycles": cyc, "total_mac_bound": round(sum(v["mac_bound"] for v in layers.values()), 1),
        "total_macs": macs, "utilisation": round(macs / slots, 4) if slots else None,
        "layers": layers,
    }
    for s in sims:
        c = sum(a for a, _ in speeds[s])
        w = sum(b for _, b in speeds[s])
        res[f"{s}_cycles_per_s"] = round(c / w) if w else None
    res["duration_s"] = round(time.time() - t0, 1)
    return res


def markdown(res: dict) -> str:
    lines = ["| layer | MACs | PEs | cycles | MAC bound | utilisation | bit-exact |", "|---|---|---|---|---|---|---|"]
    for name, v in res["layers"].items():
        u = f"{100 * v['utilisation']:.1f}%" if v["utilisation"] else "-"
        lines.append(f"| {name} | {v['macs']} | {v['pes']} | {v['cycles']} | {v['mac_bound']:.0f} | {u} | "
                     f"{'yes' if v['bit_exact'] else 'NO'} |")
    lines.append(f"| total | {res['total_macs']} | | {res['total_cycles']} | {res['total_mac_bound']:.0f} | "
                 f"{100 * (res['utilisation'] or 0):.1f}% | {'yes' if res['all_bit_exact'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    r = run(quick="--quick" in sys.argv)
    print(markdown(r))
    print(json.dumps({k: v for k, v in r.items() if k != "layers"}, indent=1))

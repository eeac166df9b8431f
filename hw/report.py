"""The export report: report.json, report.md and PNG plots, from the IR and figures.

Reads only the IR and plain numbers handed in by the exporter (no torch). Nothing
time-dependent goes into these files, so re-exporting a checkpoint is byte-identical.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .ir import IR


def ir_costs(ir: IR) -> list[dict]:
    """Per-layer params, MACs, weight/activation bits, size and BOPs counted on the IR."""
    rows = []
    for n in ir.nodes:
        if n["op"] not in ("conv2d", "linear"):
            continue
        w = ir.array(n["weight"]["key"])
        out = n["out"]["shape"]
        pixels = out[1] * out[2] if n["op"] == "conv2d" else 1
        macs = int(w.size // w.shape[0]) * w.shape[0] * pixels
        abits = ir.tensor(n["input"])["bits"]
        wbits = n["weight"]["bits"]
        rows.append({"layer": n["name"], "op": n["op"], "out_channels": int(w.shape[0]),
                     "in_channels": int(w.shape[1]), "params": int(w.size), "macs": macs,
                     "wscheme": n["weight"]["scheme"], "wbits": wbits, "abits": abits,
                     "terms": n["weight"]["terms"], "acc_bits": n["acc_bits"],
                     "size_bits": int(w.size) * wbits, "bops": macs * wbits * abits,
                     "zeros": int((w == 0).sum())})
    return rows


def plot_weights(ir: IR, path: Path, float_weights: dict | None = None):
    """Per layer: the histogram of the pre-quantization weights (in level units, if the
    exporter passed them) or of the integer weights, with the level set drawn over it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [n for n in ir.nodes if n["op"] in ("conv2d", "linear")]
    cols = min(4, len(layers))
    nrows = -(-len(layers) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.3 * nrows), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, n in zip(axes.flat, layers):
        levels = np.asarray(n["weight"]["levels"])
        src = (float_weights or {}).get(n["name"])
        data = np.asarray(src if src is not None else ir.array(n["weight"]["key"]), dtype=np.float64).reshape(-1)
        lo, hi = levels.min() * 1.15 - 0.5, levels.max() * 1.15 + 0.5
        counts, edges = np.histogram(np.clip(data, lo, hi), bins=80, range=(lo, hi))
        ax.stairs(counts, edges, fill=True, color="#4477aa")  # one artist, not 80 patches
        if len(levels) <= 33:  # a uniform 8-bit grid would hide the histogram
            ax.vlines(levels, 0, max(1, counts.max()), color="#cc3311", lw=0.6, alpha=0.8)
        ax.set_title(f"{n['name']} ({n['weight']['scheme']} {n['weight']['bits']}b)", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.04, top=0.96, wspace=0.25, hspace=0.45)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def plot_terms(tables: dict, path: Path):
    """Histogram of power-of-two terms per weight, per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(tables)
    tmax = max(int(k) for t in tables.values() for k in t["terms_histogram"])
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(names)), 3))
    bottom = np.zeros(len(names))
    for k in range(tmax + 1):
        frac = np.array([tables[nm]["terms_histogram"].get(str(k), 0) / max(1, tables[nm]["count"])
                         for nm in names])
        ax.bar(range(len(names)), frac, bottom=bottom, label=f"{k} terms")
        bottom += frac
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("fraction of weights")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def write_report(out_dir: Path, ir: IR, tables: dict, figures: dict, float_weights=None) -> dict:
    """report.json, report.md, weights.png, terms.png in `out_dir`. `figures` carries the
    exporter's numbers (agreement, accuracies, metrics, dry-run flag, backends)."""
    out_dir = Path(out_dir)
    rows = ir_costs(ir)
    for r in rows:
        t = tables.get(r["layer"], {})
        r["terms_histogram"] = t.get("terms_histogram")
        r["mean_terms"] = t.get("mean_terms")
    rep = {"name": ir.graph["name"], "source": ir.graph.get("source", {}), **figures, "layers": rows,
           "ir_totals": {k: sum(r[k] for r in rows) for k in ("params", "macs", "size_bits", "bops")}}
    (out_dir / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    plot_weights(ir, out_dir / "weights.png", float_weights)
    plot_terms(tables, out_dir / "terms.png")
    (out_dir / "report.md").write_text(_markdown(rep))
    return rep


def _markdown(rep: dict) -> str:
    L = []
    if rep.get("dry_run"):
        L += ["> **HARDWARE DRY RUN: the weights are untrained and the data is synthetic. "
              "Every accuracy figure below is MEANINGLESS.**",
              f"> {rep.get('dry_run_hint', '')}", ""]
    L += [f"# shiftq export: {rep['name']}", ""]
    src = rep.get("source", {})
    L += [f"Checkpoint `{src.get('checkpoint', '?')}` (sha256 `{str(src.get('sha256', ''))[:16]}...`), "
          f"recipe `{src.get('recipe', '?')}`, evaluated on `{rep.get('data', '?')}`.", ""]
    ag = rep.get("agreement")
    if ag:
        L += ["## Golden model vs PyTorch fake-quantized model", "",
              "| images | PyTorch accuracy | golden accuracy | same prediction |",
              "|---:|---:|---:|---:|",
              f"| {ag['images']} | {100 * ag['torch_accuracy']:.2f}% | {100 * ag['golden_accuracy']:.2f}% "
              f"| {100 * ag['same_prediction']:.2f}% |", ""]
        if ag.get("verdict"):
            L += [ag["verdict"], ""]
    m = rep.get("metrics")
    if m:
        L += ["## Cost (seed 001, Eq. 5 and 6)", "",
              "| params | MACs | size (bits) | BOPs | size reduction | BOPs reduction |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {m['params']:,} | {m['macs']:,} | {m['size_bits']:,} | {m['bops']:,} "
              f"| x{m['size_reduction']:.2f} | x{m['bops_reduction']:.2f} |", ""]
    L += ["## Layers", "",
          "| layer | op | out ch | in ch | weights | terms/weight | mean terms | zeros | W bits | A bits | acc bits | MACs |",
          "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rep["layers"]:
        L.append(f"| {r['layer']} | {r['op']} | {r['out_channels']} | {r['in_channels']} | {r['wscheme']} "
                 f"| {r['terms']} | {r['mean_terms']:.2f} | {r['zeros']} | {r['wbits']} | {r['abits']} "
                 f"| {r['acc_bits']} | {r['macs']:,} |")
    L += ["", "![weights](weights.png)", "", "![terms per weight](terms.png)", ""]
    for name, info in (rep.get("backends") or {}).items():
        L += [f"## {name}", "", f"```\n{json.dumps(info, indent=1)}\n```", ""]
    return "\n".join(L)

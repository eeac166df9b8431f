"""Compare the compression methods on digits at matched BOPs: ppq, spq, jptp, djpq, picpq.

    python -m bench.bench_methods [--out runs/bench-methods] [--doc docs/results-methods.md]
    make bench-compress

1. One FP32 digitnet (`shiftq train`, 30 epochs, the recipes' own FP32 settings) that
   every method starts from (`--from`), so wall times are the compression alone.
2. ppq, spq and jptp at their defaults (`--prune 0.3`, W4/A4, edges W8/A8). Their
   BOPs reduction (structural, the same for all three) becomes the `--bops-target` of
   djpq and picpq: matched BOPs.
3. Every run is a `shiftq compress` subprocess; wall time and the CPU time of the
   process are measured here. Each compressed.pt is then exported
   (`shiftq.export.export`, no backends) and the golden-vs-PyTorch agreement recorded:
   mixed per-layer widths go through the hardware path unchanged.
4. Writes `<out>/methods.json`, the table in `--doc` and the plot beside it (PNG,
   accuracy against BOPs reduction, one point per method).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIFTQ = [sys.executable, "-m", "shiftq.cli"]
BASELINES = ("ppq", "spq", "jptp")
LEARNED = ("djpq", "picpq")


def _run(cmd, log):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}; see {log}")
    return wall, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-methods")
    ap.add_argument("--doc", default="docs/results-methods.md")
    ap.add_argument("--methods", default=",".join(BASELINES + LEARNED))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="redo runs whose report exists")
    ap.add_argument("--sweep", default="0.45,0.6",
                    help="extra ppq prune ratios; djpq/picpq run at the BOPs ppq reaches there ('' for none)")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from <out>/methods.json")
    args = ap.parse_args(argv)
    out = (ROOT / args.out).resolve()
    if args.doc_only:
        write_doc(json.loads((out / "methods.json").read_text())["methods"], ROOT / args.doc, out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    methods = [m for m in args.methods.split(",") if m]

    fp32 = out / "fp32" / "checkpoint.pt"
    if not fp32.exists():
        print("training the FP32 digitnet every method starts from", flush=True)
        _run(SHIFTQ + ["train", "--model", "digitnet", "--data", "digits", "--epochs", "30", "--lr", "0.05",
                       "--out", str(out / "fp32"), "--seed", str(args.seed), "--quiet"], out / "fp32.log")

    results = {}
    prev = out / "methods.json"
    if prev.exists() and not args.fresh:
        results = json.loads(prev.read_text()).get("methods", {})

    def one(key, recipe, extra, target=None):
        run_dir = out / key
        if key in results and (run_dir / "report.json").exists() and not args.fresh:
            return results[key]
        if run_dir.exists():
            import shutil
            shutil.rmtree(run_dir)
        cmd = SHIFTQ + ["compress", "--model", "digitnet", "--data", "digits", "--recipe", recipe,
                        "--from", str(fp32), "--out", str(run_dir), "--seed", str(args.seed), "--quiet"] + extra
        print(f"{key}: {' '.join(cmd[2:])}", flush=True)
        wall, cpu = _run(cmd, out / f"{key}.log")
        rep = json.loads((run_dir / "report.json").read_text())
        r = {"recipe": recipe, "fp32_acc": rep["fp32_test_acc"], "acc": rep["compressed_test_acc"],
             "drop": rep["accuracy_drop"], "size_reduction": rep["size_reduction"],
             "bops_reduction": rep["bops_reduction"], "bops": rep["bops"],
             "wall_s": wall, "cpu_s": cpu, "bops_target": target, "args": extra,
             "wbits": {x["layer"]: x["wbits"] for x in rep["layers"]},
             "abits": {x["layer"]: x["abits"] for x in rep["layers"]},
             "kept": {x["layer"]: x["kept"] for x in rep["layers"]}}
        r["agreement"] = _export(run_dir)
        results[key] = r
        prev.write_text(json.dumps({"methods": results}, indent=1) + "\n")
        print(f"  {r['acc']:.2f}% ({r['drop']:+.2f}), BOPs x{r['bops_reduction']:.1f}, "
              f"{r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU", flush=True)
        return r

    target = None
    for m in methods:
        if m in LEARNED:
            if target is None:
                base = next((results[b] for b in BASELINES if b in results), None)
                target = base["bops_reduction"] if base else 120.0
            one(m, m, ["--bops-target", f"{target:.4f}"], target)
        else:
            one(m, m, [])
    # the sweep: ppq at higher prune ratios, the learned methods at ppq's BOPs there
    for p in [float(v) for v in args.sweep.split(",") if v]:
        base = one(f"ppq@{p:g}", "ppq", ["--prune", f"{p:g}"])
        t = base["bops_reduction"]
        for m in (x for x in LEARNED if x in methods):
            one(f"{m}@{p:g}", m, ["--bops-target", f"{t:.4f}"], t)
    write_doc(results, ROOT / args.doc, out)
    return 0


def _export(run_dir: Path) -> dict:
    from shiftq.export import export
    rep = export(str(run_dir / "compressed.pt"), str(run_dir / "export"), data_name="digits",
                 vectors=4, backends=[], progress=lambda *a: None)
    ag = rep["agreement"]
    return {k: ag[k] for k in ("same_prediction", "torch_accuracy", "golden_accuracy", "passed")}


NOTES = """## How the two learned methods work here

- **djpq** (`compress/recipes/djpq.py`): one training phase (15 epochs on digits, Adam)
  on cross-entropy + lambda x relu(BOPs / T(t) - 1) + 1e-3 x KL. BOPs
  (`compress/recipes/bops.py`) is a differentiable function of the VIB gates' expected
  kept channels (`compress/prune/gates.py`) and of the learned bit widths
  (`compress/quant/learned.py`: step and range learned, b = log2(range / step + 1) + 1,
  values on the APoT/PoT level set of the neighbouring widths, interpolated). T(t) moves
  geometrically from the starting BOPs to the target over 60% of the steps (a fixed
  lambda with a hinge on a single target made every gate collapse at once in a first
  trial: x3228 BOPs, 10% accuracy). Then gates with log alpha > 0 are removed
  physically, kept gates folded into batch norm, widths frozen into the per-layer
  qconfig, batch norm re-estimated, 12 epochs of QAT (27 epochs in all, ppq's budget:
  12 pruning + 15 QAT). First conv and last linear stay W8/A8.
- **picpq** (`compress/recipes/picpq.py`): FP = HRank (average rank of each channel's
  feature maps on 512 calibration images), min-max normalised per group; importance
  a_l x FP + b_l (+ 1e-3 x filter norm to break ties); a 6-candidate, 2-generation
  evolutionary search scored by calibration loss after 10 SGD steps; global removal
  of the least important channels while BOPs > target, bit widths
  b_l = 5 - ceil(0.5 / rho_l) recomputed at every removal; then BN + alpha
  calibration and 12 epochs of QAT.
- Both write an ordinary compressed.pt (physically pruned, wrapped with a per-layer
  qconfig), so `shiftq export` lowers them unchanged; the agreement column is that
  export's golden-vs-PyTorch check.
"""


def findings(results: dict) -> list:
    """Sentences computed from the results, so they stay true when the bench is rerun."""
    out = []
    for m in LEARNED:
        if m not in results:
            continue
        r = results[m]
        ok = r["bops_reduction"] >= 100 and r["drop"] <= 1.5 and r["wall_s"] < 600
        out.append(f"- {m}: x{r['bops_reduction']:.1f} BOPs, {r['drop']:.2f} points lost, {r['wall_s']:.0f} s "
                   f"-> issue 9's bar (>= x100, <= 1.5 points, < 10 min) {'met' if ok else 'NOT met'}.")
    for key in ["", "@0.45", "@0.6"]:
        row = {m: results.get(m + key) for m in ("ppq",) + LEARNED}
        if all(row.values()):
            best = max(row, key=lambda m: row[m]["acc"])
            out.append(f"- matched BOPs{(' (ppq p=' + key[1:] + ')') if key else ' (p=0.3)'}: "
                       + ", ".join(f"{m} {row[m]['acc']:.2f}% at x{row[m]['bops_reduction']:.0f}" for m in row)
                       + f"; most accurate: {best}.")
    out.append("- The test set has 360 images: one image is 0.28 points, so differences of one or two "
               "images between methods are within run-to-run noise (one seed per run here).")
    return out


def write_doc(results: dict, doc: Path, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [m for m in BASELINES + LEARNED if m in results]
    sweep = sorted((k for k in results if "@" in k), key=lambda k: (float(k.split("@")[1]), k))
    png = doc.with_suffix(".png")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    fp = next(iter(results.values()))["fp32_acc"]
    for rec in BASELINES + LEARNED:
        pts = sorted((r["bops_reduction"], r["acc"]) for r in results.values() if r["recipe"] == rec)
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=6, lw=1, label=rec)
    ax.axhline(fp, color="gray", ls="--", lw=1, label=f"FP32 {fp:.2f}%")
    ax.axhline(fp - 1.5, color="gray", ls=":", lw=1, label="FP32 - 1.5 points")
    ax.set_xscale("log")
    ax.set_xlabel("BOPs reduction vs dense FP32 (x)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digitnet on digits: accuracy vs BOPs reduction")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    doc.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)

    L = ["# Compression methods compared (digitnet on digits)", "",
         "Produced by `make bench-compress` (`python -m bench.bench_methods`); every figure is measured "
         "in that run. All methods start from one FP32 digitnet (30 epochs); wall time is the "
         "`shiftq compress` process alone (FP32 training excluded), on this 2-core machine, which other "
         "jobs shared (CPU time is the process's own). ppq, spq and jptp prune 30% of every channel "
         "group at W4/A4 (first and last layer W8/A8); djpq and picpq are given that BOPs reduction "
         "as `--bops-target` (matched BOPs) and choose their own per-layer widths and channel counts. "
         "Agreement: golden (integer IR) vs fake-quantized PyTorch, same predictions on the test set "
         "(`shiftq export`).", "",
         "| method | accuracy (%) | drop (points) | size reduction | BOPs reduction | wall time (s) | CPU time (s) | golden agreement |",
         "|---|---|---|---|---|---|---|---|"]
    def row(m):
        r = results[m]
        ag = r.get("agreement") or {}
        agree = f"{100 * ag['same_prediction']:.1f}% {'PASS' if ag.get('passed') else 'FAIL'}" if ag else "-"
        return (f"| {m} | {r['acc']:.2f} | {r['drop']:.2f} | x{r['size_reduction']:.2f} | x{r['bops_reduction']:.2f} "
                f"| {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {agree} |")
    L += [row(m) for m in order]
    if sweep:
        L += ["", "Higher compression: ppq at prune ratio p (`ppq@p`), and djpq / picpq given the BOPs "
              "reduction ppq reaches there as their target (`djpq@p`, `picpq@p`).", "",
              L[-len(order) - 2], L[-len(order) - 1]] + [row(m) for m in sweep]
    L += ["", f"FP32 accuracy: {fp:.2f}%.", "", f"![accuracy vs BOPs reduction]({png.name})", "",
          "## Per-layer widths and kept channels", "",
          "| method | " + " | ".join(next(iter(results.values()))["wbits"]) + " |",
          "|---|" + "---|" * len(next(iter(results.values()))["wbits"])]
    for m in order + sweep:
        r = results[m]
        cells = [f"{r['kept'][k]}ch W{r['wbits'][k]}/A{r['abits'][k]}" for k in r["wbits"]]
        L.append(f"| {m} | " + " | ".join(cells) + " |")
    L += ["", "## Findings (from the figures above)", ""] + findings(results) + ["", NOTES, ""]
    L += ["", f"Raw figures: `{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}/methods.json`; "
          "each run's report.json and export/ under the same directory.", ""]
    doc.write_text("\n".join(L))
    print(f"wrote {doc} and {png}")


if __name__ == "__main__":
    sys.exit(main())

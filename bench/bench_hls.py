"""HLS C simulation speed: images/s of the exported digitnet's C++ (g++, ap_types, one
image per top-level call) against the golden model's images/s (NumPy, batched and one
image at a time), on the same input integers, measured side by side in one run.

Uses build/digitnet when it holds an export (the trained PPQ model), else a dry-run
digitnet export in a temporary directory (same structure: APoT W4/A4, 8-bit edges).
Every simulated image is also checked bit-exact against the golden model."""
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _best_rate(fn, n_images, repeats, clock=time.perf_counter):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return n_images / best


def run(quick: bool = False) -> dict:
    import numpy as np

    from hw import golden
    from hw.hls.csim import compile_tb, run_tb, write_data
    from hw.hls.emit import emit_hls
    from hw.ir import load

    n_images = 64 if quick else 512
    opts = ["-O1"] if quick else ["-O1", "-O2"]
    with tempfile.TemporaryDirectory(prefix="shiftq-bench-hls-") as tmp:
        work = Path(tmp) / "digitnet"
        src = ROOT / "build" / "digitnet"
        if (src / "model.json").exists() and (src / "weights.npz").exists():
            work.mkdir()
            for f in ("model.json", "weights.npz", "vectors.npz"):
                if (src / f).exists():
                    shutil.copy(src / f, work / f)
            origin = "build/digitnet"
        else:
            subprocess.run([sys.executable, "-m", "shiftq.cli", "export", "--dry-run", "digitnet", "--out",
                            str(work), "--backends", "none"], check=True, stdout=subprocess.DEVNULL)
            origin = "dry run (untrained)"
        ir = load(work)
        recipe = (ir.graph.get("source") or {}).get("recipe")
        emit_hls(ir, work / "hls")
        data = work / "hls" / "csim" / "data"
        n = write_data(ir, work / "none", data, random_images=n_images, seed=0)
        x = np.frombuffer((data / "input.i64").read_bytes(), dtype="<i8").reshape(n, *ir.graph["input"]["shape"])
        rows = []
        for opt in opts:
            exe, info = compile_tb(work / "hls", opt=opt, cache_dir=Path(tmp) / "bin")
            r = run_tb(exe, data, layers=False)
            rows.append({"opt": opt, "compile_s": info["compile_seconds"], "images": r["images"],
                         "bit_exact": r["pass"], "csim_images_per_s": round(r["images_per_second"], 1),
                         "csim_cpu_images_per_s": round(r["images_per_cpu_second"], 1),
                         "csim_process_wall_images_per_s": round(r["images"] / r["wall_seconds"], 1)})
        g_batch = _best_rate(lambda: golden.run(ir, x, quantized=True), n, 3)
        k = min(n, 64)
        one = lambda: [golden.run(ir, x[i:i + 1], quantized=True) for i in range(k)]  # noqa: E731
        g_one = _best_rate(one, k, 3)
        g_batch_cpu = _best_rate(lambda: golden.run(ir, x, quantized=True), n, 3, time.process_time)
        g_one_cpu = _best_rate(one, k, 3, time.process_time)
    best = max(r["csim_images_per_s"] for r in rows)
    best_cpu = max(r["csim_cpu_images_per_s"] for r in rows)
    return {
        "what": "digitnet HLS C++ C simulation (g++, hls4ml's ap_types; time inside the top-level calls) vs "
                "the NumPy golden model on the same random input integers",
        "model": f"digitnet, {origin}" + (f", recipe {recipe}" if recipe else ""),
        "images": n, "quick": quick, "csim": rows,
        "golden_images_per_s_batched": round(g_batch, 1),
        "golden_images_per_s_one_by_one": round(g_one, 1),
        "csim_vs_golden_batched": round(best / g_batch, 4),
        "csim_vs_golden_one_by_one": round(best / g_one, 3),
        "cpu_time": {"note": "images per CPU-second (process time), less sensitive to other load on the machine",
                     "csim_best": best_cpu, "golden_batched": round(g_batch_cpu, 1),
                     "golden_one_by_one": round(g_one_cpu, 1),
                     "csim_vs_golden_batched": round(best_cpu / g_batch_cpu, 4),
                     "csim_vs_golden_one_by_one": round(best_cpu / g_one_cpu, 3)},
        "loadavg_1m": round(__import__("os").getloadavg()[0], 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))

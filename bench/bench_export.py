"""Export speed: `shiftq export --dry-run resnet20` wall time (target < 60 s), and the
golden model's images/s against PyTorch FP32 on the same model and batch (target:
golden at least half as fast), measured side by side in one run."""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _best_rates(fns, n_images, repeats):
    """Best images/s of each function, the runs interleaved (a, b, a, b, ...) so that both
    see the same machine load."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return [n_images / b for b in best]


def run(quick: bool = False) -> dict:
    import numpy as np
    import torch

    from compress.models import build_model
    from hw import golden
    from hw.ir import load

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resnet20"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shiftq.cli", "export", "--dry-run", "resnet20", "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        export_s = time.perf_counter() - t
        ir = load(out)
    batch = 32 if quick else 128
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    fp32 = build_model("resnet20").eval()  # the dense FP32 model, as a user would run it
    xt = torch.from_numpy(x)

    def torch_fp32():
        with torch.no_grad():
            fp32(xt)

    repeats = 2 if quick else 5
    threads = torch.get_num_threads()
    torch_ips, golden_ips = _best_rates([torch_fp32, lambda: golden.run(ir, x)], batch, repeats)
    # the same pair on one thread each: a like-for-like figure that a busy second core
    # does not distort (PyTorch's two threads collapse when the other core is loaded)
    golden_threads = golden.THREADS
    try:
        torch.set_num_threads(1)
        golden.THREADS = 1
        torch1, golden1 = _best_rates([torch_fp32, lambda: golden.run(ir, x)], batch, repeats)
    finally:
        torch.set_num_threads(threads)
        golden.THREADS = golden_threads
    return {
        "export_resnet20_dry_run_s": round(export_s, 2),
        "export_target_s": 60,
        "batch": batch,
        "threads": threads,
        "torch_fp32_images_per_s": round(torch_ips, 1),
        "golden_images_per_s": round(golden_ips, 1),
        "golden_over_torch": round(golden_ips / torch_ips, 3),
        "torch_fp32_1thread_images_per_s": round(torch1, 1),
        "golden_1thread_images_per_s": round(golden1, 1),
        "golden_over_torch_1thread": round(golden1 / torch1, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "golden_target_ratio": 0.5,
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run("--quick" in sys.argv), indent=1))

"""Export speed: `shiftq export --dry-run resnet20` wall time (target < 60 s), and the
golden model's images/s against PyTorch FP32 on the same model and batch (target:
golden at least half as fast), measured side by side in one run."""
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _best_rate(fn, n_images, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_images / best


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
    torch_ips = _best_rate(torch_fp32, batch, repeats)
    golden_ips = _best_rate(lambda: golden.run(ir, x), batch, repeats)
    return {
        "export_resnet20_dry_run_s": round(export_s, 2),
        "export_target_s": 60,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "torch_fp32_images_per_s": round(torch_ips, 1),
        "golden_images_per_s": round(golden_ips, 1),
        "golden_over_torch": round(golden_ips / torch_ips, 3),
        "golden_target_ratio": 0.5,
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run("--quick" in sys.argv), indent=1))

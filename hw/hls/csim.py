"""C simulation of the emitted HLS C++ with g++ and hls4ml's ap_types headers.

`csim(build_dir)` writes the test data (raw int64 files from vectors.npz, plus optional
random input images run through the golden model), compiles `hls/net.cpp` + `hls/tb.cpp`
(content-cached: the same sources and flags reuse the binary), runs the testbench and
returns per-node pass/fail. Bit-exact means integer equality on every compared value.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shiftq.errors import UserError

OPT = "-O1"
CXXFLAGS = ["-std=c++14", "-w"]


def ap_types_dir() -> Path:
    """hls4ml's copy of the Xilinx ap_types headers (found without importing hls4ml)."""
    env = os.environ.get("SHIFTQ_AP_TYPES")
    if env:
        p = Path(env)
    else:
        spec = importlib.util.find_spec("hls4ml")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("hls4ml is not installed (its ap_types headers are needed): "
                            "pip install -e '.[dev]', or set SHIFTQ_AP_TYPES to an ap_types directory")
        p = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    if not (p / "ap_int.h").exists():
        raise UserError(f"no ap_int.h under {p}: set SHIFTQ_AP_TYPES to a directory holding the ap_types headers")
    return p


def compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        raise UserError(f"C++ compiler {cxx!r} not found: apt-get install g++ (or set CXX)")
    return cxx


def _hash(hls_dir: Path, flags: list[str]) -> str:
    h = hashlib.sha256()
    for f in ("net.cpp", "tb.cpp", "net.h", "weights.h", "parameters.h"):
        h.update(f.encode())
        h.update((hls_dir / f).read_bytes())
    h.update(" ".join(flags).encode())
    h.update(str(ap_types_dir()).encode())
    return h.hexdigest()[:16]


def compile_tb(hls_dir, opt: str = OPT, defines=("SHIFTQ_TRACE_LAYERS",), cache_dir=None, progress=None) -> tuple[Path, dict]:
    """Compile the testbench of `hls_dir`; returns (binary, info). Reuses a binary built
    from byte-identical sources and flags (in `cache_dir`, else $SHIFTQ_HLS_CACHE, else
    hls_dir/csim/bin)."""
    hls_dir = Path(hls_dir)
    for f in ("net.cpp", "tb.cpp", "net.h", "weights.h", "parameters.h"):
        if not (hls_dir / f).exists():
            raise UserError(f"{hls_dir / f} is missing: re-export (shiftq export) or run hls-csim with --regen")
    cxx = compiler()
    flags = [opt, *CXXFLAGS, *[f"-D{d}" for d in defines], f"-I{hls_dir}", f"-I{ap_types_dir()}"]
    key = _hash(hls_dir, flags + [cxx])
    cache_dir = cache_dir or os.environ.get("SHIFTQ_HLS_CACHE")
    cache = Path(cache_dir) if cache_dir else hls_dir / "csim" / "bin"
    exe = cache / f"tb-{key}"
    if exe.exists():
        return exe, {"cached": True, "compile_seconds": 0.0, "key": key}
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".build-{key}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if progress:
        progress(f"compiling {hls_dir.name}/net.cpp + tb.cpp with {cxx} {opt}")

    def cc(src):
        obj = work / (Path(src).stem + ".o")
        r = subprocess.run([cxx, *flags, "-c", str(hls_dir / src), "-o", str(obj)],
                           capture_output=True, text=True)
        return obj, r

    try:
        with ThreadPoolExecutor(2) as ex:
            results = list(ex.map(cc, ["net.cpp", "tb.cpp"]))
        for (obj, r), src in zip(results, ["net.cpp", "tb.cpp"]):
            if r.returncode != 0:
                first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip()[:200])
                raise UserError(f"g++ failed on {hls_dir / src}: {first.strip()}")
        tmp_exe = work / "tb"
        r = subprocess.run([cxx, *[str(o) for o, _ in results], "-o", str(tmp_exe)], capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"linking the testbench failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else '?'}")
        os.replace(tmp_exe, exe)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return exe, {"cached": False, "compile_seconds": round(time.time() - t0, 2), "key": key}


def write_data(ir, build_dir, data_dir, images: int | None = None, random_images: int = 0, seed: int = 0) -> int:
    """Raw int64 files for the testbench: the export's vectors (first `images` of them)
    and `random_images` random input images (uniform over the input range) with their
    golden outputs. Returns the number of images written."""
    from hw import golden

    build_dir, data_dir = Path(build_dir), Path(data_dir)
    names = [n["name"] for n in ir.nodes]
    parts = []
    vp = build_dir / "vectors.npz"
    if vp.exists():
        with np.load(vp, allow_pickle=False) as z:
            if "node:input" not in z.files:
                raise UserError(f"{vp} has no 'node:input': re-export")
            k = len(z["node:input"]) if images is None else min(images, len(z["node:input"]))
            env = {"input": z["node:input"][:k]}
            missing = [nm for nm in names if f"node:{nm}" not in z.files]
            if missing:
                raise UserError(f"{vp} has no golden vectors for {missing[0]!r}: re-export")
            env.update({nm: z[f"node:{nm}"][:k] for nm in names})
        if k:
            parts.append(env)
    elif not random_images:
        raise UserError(f"{vp} is missing and no --random images were asked for: re-export")
    if random_images:
        q = (1 << (ir.graph["input"]["bits"] - 1)) - 1
        rng = np.random.default_rng(seed)
        x = rng.integers(-q, q + 1, size=(random_images, *ir.graph["input"]["shape"]), dtype=np.int64)
        parts.append(golden.run(ir, x, return_all=True, quantized=True))
    if not parts:
        raise UserError("no images to simulate")
    data_dir.mkdir(parents=True, exist_ok=True)
    for nm in ["input"] + names:
        a = np.concatenate([p[nm].reshape(len(p[nm]), -1) for p in parts]).astype("<i8")
        (data_dir / f"{nm}.i64").write_bytes(a.tobytes())
    return int(sum(len(p["input"]) for p in parts))


def run_tb(exe, data_dir, layers: bool = True, limit: int | None = None, timeout: float = 3600) -> dict:
    cmd = [str(exe), str(data_dir)] + (["--layers"] if layers else []) + (["--limit", str(limit)] if limit else [])
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - t0
    nodes, images, seconds, cpu, result, errors = {}, 0, None, None, None, []
    for ln in r.stdout.splitlines():
        f = ln.split()
        if not f:
            continue
        if f[0] == "node" and f[2] == "ok":
            nodes[f[1]] = {"pass": True, "images": int(f[3])}
        elif f[0] == "node" and f[2] == "FAIL":
            nodes[f[1]] = {"pass": False, "bad_images": int(f[3]), "first_image": int(f[4]),
                           "first_index": int(f[5]), "got": int(f[6]), "want": int(f[7])}
        elif f[0] == "images":
            images, seconds = int(f[1]), float(f[3])
            cpu = float(f[5]) if len(f) > 5 else None
        elif f[0] == "result":
            result = f[1]
        elif f[0] == "error":
            errors.append(ln[6:])
    if errors or r.returncode not in (0, 1) or result is None:
        msg = errors[0] if errors else (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise UserError(f"the C-simulation testbench failed to run: {msg}")
    return {"pass": result == "PASS", "nodes": nodes, "images": images, "top_seconds": seconds,
            "top_cpu_seconds": cpu, "wall_seconds": round(wall, 3),
            "images_per_second": (images / seconds) if seconds else None,
            "images_per_cpu_second": (images / cpu) if cpu else None}


def csim(build_dir, layers: bool = True, images: int | None = None, random_images: int = 0, seed: int = 0,
         regen: bool = False, opt: str = OPT, cache_dir=None, progress=None) -> dict:
    """Emit (if needed), compile, run; the result dict has `pass` and per-node results."""
    from hw.ir import load

    from .emit import emit_hls

    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise UserError(f"{build_dir} is not a directory: run `shiftq export ... --out {build_dir}` first")
    ir = load(build_dir)
    hls_dir = build_dir / "hls"
    if regen or not (hls_dir / "net.cpp").exists():
        if progress:
            progress(f"emitting the HLS C++ into {hls_dir}")
        emit_hls(ir, hls_dir)
    manifest = json.loads((hls_dir / "manifest.json").read_text()) if (hls_dir / "manifest.json").exists() else {}
    want = [n["name"] for n in ir.nodes]
    if manifest and [n["name"] for n in manifest.get("nodes", [])] != want:
        raise UserError(f"{hls_dir} was emitted from a different IR: re-run with --regen")
    data_dir = hls_dir / "csim" / "data"
    n = write_data(ir, build_dir, data_dir, images=images, random_images=random_images, seed=seed)
    exe, info = compile_tb(hls_dir, opt=opt, cache_dir=cache_dir, progress=progress)
    if progress:
        progress(f"running the testbench on {n} images{' (every layer)' if layers else ''}")
    res = run_tb(exe, data_dir, layers=layers)
    res.update(info)
    res["binary"] = str(exe)
    res["model"] = ir.graph["name"]
    return res

"""The exporter's backends: each turns an IR into files under the export directory.

A backend is `emit(ir, out_dir: Path) -> dict` (a summary for the report). They are
looked up by module path so a backend that is not built yet is simply absent, while
an import error inside a backend that exists still fails loudly.
"""
from __future__ import annotations

import importlib
from pathlib import Path

BACKENDS = {
    "rtl": "hw.rtl.export:emit_rtl",
    "hls": "hw.hls.emit:emit_hls",
}


def available() -> dict:
    out = {}
    for name, target in BACKENDS.items():
        mod_name, fn = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and mod_name.startswith(e.name):
                continue
            raise
        out[name] = getattr(mod, fn)
    return out


def run_backends(ir, out_dir: Path, only=None, progress=print, label=None) -> dict:
    """Run the backends into `out_dir`; `label` is the directory name shown to the user."""
    summaries = {}
    for name, emit in available().items():
        if only is not None and name not in only:
            continue
        progress(f"  {name}: emitting into {label or out_dir}/{name}/")
        summaries[name] = emit(ir, Path(out_dir) / name)
    return summaries

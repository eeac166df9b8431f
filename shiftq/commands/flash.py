"""shiftq flash: load a bitstream onto a board: the whole-network accelerator's (`--accel`,
from `make bitstream` / `shiftq synth --accel`; what `make flash` does) or the one-layer
top's (default, from `make layer-bitstream` / `shiftq synth`), and, when the design loads its weights at boot (iCEBreaker: weights in
SPRAM), the weight image into the SPI flash at its offset (docs/boards.md)."""
NAME = "flash"
HELP = ("program a board with build/NAME/synth/BOARD's one-layer bitstream (--accel: the accelerator's "
        "synth-accel/BOARD, plus its weight image) with openFPGALoader, or iceprog for iCE40")


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory, e.g. build/digitnet")
    p.add_argument("--board", required=True, help="icebreaker or ulx3s-85f")
    p.add_argument("--accel", action="store_true",
                   help="the whole-network accelerator's bitstream (build/NAME/synth-accel/BOARD, from "
                        "`make bitstream`) instead of the one-layer one (`make layer-bitstream`)")
    p.add_argument("--tool", choices=("auto", "openfpgaloader", "iceprog"), default="auto",
                   help="programmer (auto: openFPGALoader, else iceprog for iCE40)")
    p.add_argument("--sram", action="store_true",
                   help="load the bitstream into SRAM only (lost at power-off) instead of flash; a weight "
                        "image still goes to the flash")


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


def image_command(tool: str, board, image, offset: int) -> list[str]:
    """Write a data file into the board's SPI flash at byte `offset` (never into SRAM)."""
    if tool == "iceprog":
        return ["iceprog", "-o", f"{offset:#x}", str(image)]
    return ["openFPGALoader", "-b", board.openfpgaloader_board, "-f", "-o", f"{offset:#x}", str(image)]


def weight_image_of(out_dir):
    """(path, offset) of the weight image a bitstream directory's design.json names, or None."""
    import json
    from pathlib import Path

    from shiftq.errors import UserError

    d = Path(out_dir)
    meta = d / "design.json"
    if not meta.exists():
        return None
    design = json.loads(meta.read_text())
    if not design.get("weight_image"):
        return None
    path = d / design["weight_image"]
    if not path.exists():
        raise UserError(f"{meta} names the weight image {path.name}, which is missing: rebuild with "
                        f"`make bitstream`")
    offset = int(design.get("weight_offset", -1))
    if offset < 0:
        raise UserError(f"{meta} names a weight image but no weight_offset")
    return path, offset


def program_commands(tool: str, board, bitstream, sram: bool, weights=None) -> list[list[str]]:
    """Every programmer call, in order: the weight image first (flash, at its offset), then
    the bitstream, so the FPGA's reboot after the last write finds both in place."""
    cmds = []
    if weights is not None:
        image, offset = weights
        cmds.append(image_command(tool, board, image, offset))
    cmds.append(program_command(tool, board, bitstream, sram))
    return cmds


def run(args):
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from shiftq.errors import UserError

    from hw.synth import get_board

    board = get_board(args.board)
    accel = getattr(args, "accel", False)
    out = Path(args.build) / ("synth-accel" if accel else "synth") / board.name
    bit = out / f"top.{board.bitstream}"
    if not bit.exists():
        target = "bitstream" if accel else "layer-bitstream"
        raise UserError(f"no bitstream {bit}: run `make {target} MODEL={Path(args.build).name} BOARD={board.name}` first")
    weights = weight_image_of(out)
    if weights is not None:
        from boards.weight_image import FLASH_BYTES, decode

        decode(weights[0].read_bytes())          # refuse a corrupt image before touching the board
        if board.family != "ice40":
            raise UserError(f"{out / 'design.json'} has a boot-time weight image, which only the iCEBreaker loads")
        if bit.stat().st_size > weights[1] or weights[1] + weights[0].stat().st_size > FLASH_BYTES:
            raise UserError(f"the bitstream ({bit.stat().st_size} bytes) and the weight image at "
                            f"{weights[1]:#x} ({weights[0].stat().st_size} bytes) do not fit the flash side by side")
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
    for cmd in program_commands(tool, board, bit, args.sram, weights):
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
    if weights is not None:
        print(f"wrote the weight image {weights[0]} at flash offset {weights[1]:#x}")
    if accel:
        print(f"flashed {bit} to the {board.name}; run an image with: "
              f"shiftq run --board {board.name} --port PORT --build {args.build} --image IMG.npy")
    else:
        print(f"flashed {bit} to the {board.name}; talk to it with: "
              f".venv/bin/python -m boards.host --port PORT --build {args.build}")
    return 0

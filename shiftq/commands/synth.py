"""shiftq synth: an export + the UART top-level -> bitstream for a board: the whole-network
accelerator (`--accel`, what `make bitstream` builds) or one layer on the issue-5 layer
engine (the default, what `make layer-bitstream` builds)."""
NAME = "synth"
HELP = ("synthesise a board top-level to a bitstream with yosys + nextpnr: the whole-network accelerator "
        "(--accel, into build/NAME/synth-accel/BOARD) or one layer of an export (into build/NAME/synth/BOARD)")


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory, e.g. build/digitnet")
    p.add_argument("--board", required=True, help="icebreaker or ulx3s-85f")
    p.add_argument("--accel", action="store_true",
                   help="the whole-network accelerator (boards/accel_top.py; PE array per board from "
                        "boards.accel_top.PARALLELISM, --po / --pi / --px override it)")
    p.add_argument("--layer", default=None, help="one-layer top: conv/linear node to run (default: the first conv)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    p.add_argument("--po", type=int, default=None,
                   help="output-channel lanes (one layer: the maximum; default per board)")
    p.add_argument("--pi", type=int, default=None,
                   help="input-channel lanes (one layer: the maximum; --accel: a power of two; default per board)")
    p.add_argument("--px", type=int, default=None, help="--accel only: pixel lanes, a power of two (default per board)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="--accel on the ULX3S: clock the design from the ECP5 PLL at this frequency "
                        "(default boards.accel_top.CLOCK_MHZ; 0 = the 25 MHz oscillator)")
    p.add_argument("--pe", choices=("shift", "mult"), default=None,
                   help="one-layer top only: PE kind of the layer engine (default shift)")
    p.add_argument("--system-tools", action="store_true",
                   help="use yosys / nextpnr / icepack / ecppack from PATH where present (default: YoWASP)")


def run(args):
    import sys
    from pathlib import Path

    from shiftq.errors import UserError

    from hw.synth import get_board

    board = get_board(args.board)          # unknown board: one line before any work
    build = Path(args.build)
    accel = getattr(args, "accel", False)
    if accel and args.layer is not None:
        raise UserError("--layer picks the layer of the one-layer top; the accelerator (--accel) runs every layer")
    if accel and args.pe is not None:
        raise UserError("--pe picks the layer engine's PEs; the accelerator (--accel) has shift-add PEs only")
    if not accel and getattr(args, "px", None) is not None:
        raise UserError("--px sets the accelerator's pixel lanes: use it with --accel")
    if not accel and getattr(args, "clock_mhz", None) is not None:
        raise UserError("--clock-mhz sets the accelerator's PLL: use it with --accel")
    if not (build / "model.json").exists():
        raise UserError(f"no export in {build} (model.json missing): run `make export MODEL={build.name}` first")
    tools = "system" if args.system_tools else None
    if accel:
        return _run_accel(args, build, board, tools)
    import json

    from boards.layer import layer_from_build
    from boards.top import BoardTop
    from hw.synth import synthesize

    pe = args.pe or "shift"
    layer = layer_from_build(build, args.layer)
    core = layer.make_core(board.name, po_max=args.po, pi_max=args.pi, pe=pe)
    out = build / "synth" / board.name
    spec = core.spec
    print(f"synth: {layer.name} of {build} ({spec.C}x{spec.H}x{spec.W} -> {spec.O}x{spec.Ho}x{spec.Wo}, "
          f"{spec.PO}x{spec.PI} {pe} PEs) for {board.name} ({board.device}) -> {out}/", flush=True)
    util = synthesize(BoardTop(board.name, core, layer.info), board, out, seed=args.seed, tools=tools)
    design = dict(layer.describe(), board=board.name, PO=spec.PO, PI=spec.PI, pe=pe,
                  bitstream=util["bitstream"], baud=115200, protocol=1, seed=args.seed)
    (out / "design.json").write_text(json.dumps(design, indent=2) + "\n")
    summary = (out / "summary.md").read_text()
    summary += (f"\nLayer `{layer.name}` ({spec.PO}x{spec.PI} {pe} PEs, engine run "
                f"{spec.run_cycles} cycles), design id {design['design_id']}.\n")
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"bitstream: {out / util['bitstream']} ({util['bitstream_bytes']} bytes)")
    if not util["timing_met"]:
        print("WARNING: timing not met (see the table above): the board may compute wrong results",
              file=sys.stderr)
    return 0


def _run_accel(args, build, board, tools):
    import json
    import sys

    from boards.accel_top import build_bitstream

    design = build_bitstream(build, board, seed=args.seed, po=args.po, pi=args.pi, px=args.px,
                             clock_mhz=getattr(args, "clock_mhz", None), tools=tools,
                             log=lambda s: print(f"synth: {s[len('accel: '):] if s.startswith('accel: ') else s}",
                                                 flush=True))
    out = build / "synth-accel" / board.name
    util = json.loads((out / "utilization.json").read_text())
    summary = (out / "summary.md").read_text()
    summary += (f"\nWhole-network accelerator `{design['model']}`: {design['PO']}x{design['PI']}x{design['PX']} "
                f"PEs (PO x PI x PX), ~{design['cycles_estimate']} cycles per image (plan estimate), "
                f"clock {design['clock_hz'] / 1e6:g} MHz{' (PLL)' if design['pll'] else ''}, "
                f"design id {design['design_id']}"
                f"{'; weights loaded at boot from ' + design['weight_image'] if design.get('weight_image') else ''}.\n")
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"bitstream: {out / util['bitstream']} ({util['bitstream_bytes']} bytes)")
    if design.get("weight_image"):
        print(f"weight image: {out / design['weight_image']} ({design['weight_image_bytes']} bytes, flash offset "
              f"{design['weight_offset']:#x}; `make flash` writes both)")
    if not util["timing_met"]:
        print("WARNING: timing not met (see the table above): the board may compute wrong results",
              file=sys.stderr)
    return 0

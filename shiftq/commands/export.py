"""shiftq export: lower a compressed checkpoint to the IR and everything built from it."""
NAME = "export"
HELP = "lower a compressed checkpoint to build/NAME: IR, golden vectors, tables, RTL, HLS, report"


def add_arguments(p):
    p.add_argument("--ckpt", help="compressed checkpoint (runs/NAME/compressed.pt)")
    p.add_argument("--out", required=True, help="export directory, e.g. build/digitnet")
    p.add_argument("--data", help="data set for the golden-vs-PyTorch check (default: the checkpoint's)")
    p.add_argument("--data-dir", help="where the data set lives (CIFAR-10)")
    p.add_argument("--vectors", type=int, default=16, help="test images to save as golden vectors")
    p.add_argument("--eval-limit", type=int, help="compare on at most this many test images")
    p.add_argument("--dry-run", metavar="MODEL",
                   help="no checkpoint: export an untrained, 30%%-pruned, quantized MODEL on synthetic "
                        "data (hardware testing only; accuracy is meaningless)")
    p.add_argument("--prune", type=float, default=0.3, help="prune ratio of a --dry-run model")
    p.add_argument("--quant", default="apot", choices=("apot", "pot", "uniform"),
                   help="weight scheme of a --dry-run model (default apot)")
    p.add_argument("--mult-bits", default="auto",
                   help="requant multiplier width: auto (narrowest of 16, 20, 24 meeting the golden-vs-PyTorch "
                        "agreement contract) or a number from 8 to 31")
    p.add_argument("--backends", help="comma-separated backends to run (default: all available)")
    p.add_argument("--hls4ml", action="store_true",
                   help="also write OUT/hls4ml, an hls4ml project (uniform-activation models), and check "
                        "hls4ml's C simulation against the golden model (docs/hls.md)")


def run(args):
    from shiftq.errors import UserError
    from shiftq.export import export

    if bool(args.ckpt) == bool(args.dry_run):
        raise UserError("give exactly one of --ckpt CHECKPOINT or --dry-run MODEL")
    if args.vectors < 1:
        raise UserError(f"--vectors must be at least 1, got {args.vectors}")
    if args.dry_run:
        from compress.metrics import check_prune_ratio
        from compress.models import MODELS
        if args.dry_run not in MODELS:
            raise UserError(f"unknown model {args.dry_run!r}: choose one of {', '.join(MODELS)}")
        check_prune_ratio(args.prune)
    if args.mult_bits != "auto" and not (args.mult_bits.isdigit() and 8 <= int(args.mult_bits) <= 31):
        raise UserError(f"--mult-bits must be auto or a number from 8 to 31, got {args.mult_bits!r}")
    backends = args.backends.split(",") if args.backends else None
    rep = export(args.ckpt, args.out, data_name=args.data, data_dir=args.data_dir, vectors=args.vectors,
                 eval_limit=args.eval_limit, dry_run_model_name=args.dry_run, prune=args.prune,
                 backends=backends, mult_bits=args.mult_bits,
                 quant=args.quant)
    ag = rep["agreement"]
    m = rep["metrics"]
    if rep.get("dry_run"):
        bar = "!" * 78
        print(f"{bar}\n!! HARDWARE DRY RUN: untrained weights, synthetic data. Accuracy is MEANINGLESS.\n"
              f"!! {rep.get('dry_run_hint')}\n{bar}")
    print(f"golden vs PyTorch on {ag['images']} images: same prediction {100 * ag['same_prediction']:.2f}%, "
          f"accuracy {100 * ag['torch_accuracy']:.2f}% (PyTorch) / {100 * ag['golden_accuracy']:.2f}% (golden)")
    print(f"  {ag['verdict']}")
    print(f"size x{m['size_reduction']:.2f}, BOPs x{m['bops_reduction']:.2f} against dense FP32")
    if getattr(args, "hls4ml", False):
        from hw.hls.hls4ml_project import export_project
        s = export_project(args.out)
        if s["check"]["bit_exact_images"] != s["check"]["images"]:
            return 1
    return 0

"""shiftq compress: prune and quantize a zoo model by one recipe (SPQ, PPQ, JPTP, baselines)."""
NAME = "compress"
HELP = "prune (physically) and quantize a model: recipes ppq, spq, jptp, djpq, picpq, prune-only, quant-only"

RECIPE_NAMES = ("ppq", "spq", "jptp", "djpq", "picpq", "prune-only", "quant-only")

# Defaults per data set. cifar10 follows seed 001 (lr 0.1, x0.9 on a 3-epoch plateau,
# ~200 epochs, QAT 50 epochs at 0.01). digits is shortened to meet the 5-minute budget
# on 2 cores, with a cosine schedule because a plateau schedule never decays in so few
# epochs. synthetic is a dry run: one epoch of everything.
DEFAULTS = {
    "digits": dict(fp_epochs=30, lr=0.05, schedule="cosine", prune_epochs=12, stages=3,
                   epochs={"spq": 30, "ppq": 15, "quant-only": 15, "djpq": 15, "picpq": 12},
                   ft_epochs={"jptp": 3, "djpq": 12},  # djpq: ppq's 27-epoch budget
                   batch_size=64, calib=512),
    "cifar10": dict(fp_epochs=200, lr=0.1, schedule="plateau", prune_epochs=200, stages=2,
                    epochs={"spq": 200, "ppq": 50, "quant-only": 50, "djpq": 100, "picpq": 50},
                    ft_epochs={"jptp": 1, "djpq": 20},
                    batch_size=128, calib=512),
    "synthetic": dict(fp_epochs=1, lr=0.01, schedule="constant", prune_epochs=1, stages=1,
                      epochs={"spq": 1, "ppq": 1, "quant-only": 1, "djpq": 1, "picpq": 1},
                      ft_epochs={"jptp": 1, "djpq": 1},
                      batch_size=16, calib=32),
}
RECIPE_DEFAULTS = {
    "ppq": dict(criterion="gm", quant="apot"),
    "spq": dict(criterion="gm", quant="apot"),
    "jptp": dict(criterion="rbf", quant="pot"),
    "prune-only": dict(criterion="gm", quant="apot"),
    "quant-only": dict(criterion=None, quant="apot", prune=0.0),
    "djpq": dict(criterion=None, quant="apot"),
    "picpq": dict(criterion=None, quant="apot"),
}
# recipe-specific flags: (dest, option)
SPECIFIC = {
    "prune": "--prune", "criterion": "--criterion", "gamma": "--gamma",
    "prune_epochs": "--prune-epochs", "stages": "--stages", "epochs": "--epochs",
    "ft_epochs": "--ft-epochs", "qat_lr": "--qat-lr",
}
# djpq / picpq (issue 9): their own flags, passed to the recipe in Settings.extra
LEARNED = {
    "bops_target": "--bops-target", "pot_bits": "--pot-bits", "lam": "--lam",
    "gate_threshold": "--gate-threshold", "aux_lr": "--aux-lr", "fp": "--fp",
    "population": "--population", "steps": "--steps", "penalty": "--penalty",
    "upper_bits": "--upper-bits", "ft_steps": "--ft-steps",
}
SPECIFIC.update(LEARNED)


def _add_learned_arguments(p):
    g = p.add_argument_group("djpq and picpq")
    g.add_argument("--bops-target", type=float, help="BOPs reduction factor vs dense FP32 to reach (120)")
    g.add_argument("--pot-bits", action="store_true", default=None, help="djpq: widths restricted to {2, 4, 8}")
    g.add_argument("--lam", type=float, help="djpq: initial lambda of the BOPs term (fixed without --bops-target)")
    g.add_argument("--gate-threshold", type=float, help="djpq: log alpha above which a gate is off (0)")
    g.add_argument("--aux-lr", type=float, help="djpq: Adam lr of gates and quantizer steps/ranges (0.01)")
    g.add_argument("--fp", choices=["hrank", "norm"], help="picpq: filter property (hrank)")
    g.add_argument("--population", type=int, help="picpq: candidates per generation (6)")
    g.add_argument("--steps", type=int, help="picpq: generations of the evolutionary search (2)")
    g.add_argument("--ft-steps", type=int, help="picpq: SGD steps of each candidate's fine-tune (10)")
    g.add_argument("--penalty", type=float, help="picpq: b_l = upper - ceil(penalty / rho_l) (0.5)")
    g.add_argument("--upper-bits", type=int, help="picpq: available maximum weight width (5)")


def _learned_extra(args):
    from shiftq.errors import UserError
    extra = {k: getattr(args, k) for k in LEARNED if getattr(args, k, None) is not None}
    if args.recipe in ("djpq", "picpq") and "bops_target" not in extra:
        extra["bops_target"] = 120.0
    for key, low, what in (("bops_target", 1.0, "a reduction factor above 1"), ("population", 1, "at least 1"),
                           ("steps", 0, "at least 0"), ("ft_steps", 1, "at least 1"), ("penalty", 0.0, "at least 0"),
                           ("upper_bits", 2, "at least 2"), ("lam", 0.0, "at least 0"), ("aux_lr", 0.0, "positive")):
        v = extra.get(key)
        if v is not None and (v < low or (key in ("bops_target", "aux_lr") and v == low)):
            raise UserError(f"{LEARNED[key]} must be {what}, got {v}")
    return extra


def add_arguments(p):
    p.add_argument("--model", required=True, help="zoo model (digitnet, resnet20, ...)")
    p.add_argument("--option", choices=["A", "B"], help="ResNet shortcut option (default A)")
    p.add_argument("--data", required=True, help="digits, cifar10 or synthetic")
    p.add_argument("--data-dir", default="data", help="where cifar-10-batches-py/ is (default: data)")
    p.add_argument("--recipe", required=True, help=", ".join(RECIPE_NAMES))
    p.add_argument("--out", required=True, help="run directory: compressed.pt, report.json, phases")
    p.add_argument("--from", dest="from_ckpt", metavar="CKPT",
                   help="trained FP32 checkpoint to start from (default: train one first)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    g = p.add_argument_group("quantization")
    g.add_argument("--quant", choices=["apot", "pot", "uniform"],
                   help="weight scheme (default apot; pot for jptp)")
    g.add_argument("--wbits", type=int, default=4)
    g.add_argument("--abits", type=int, default=4)
    g.add_argument("--edge-bits", type=int, default=8, help="bits of the first conv and last linear")
    g = p.add_argument_group("pruning")
    g.add_argument("--prune", type=float, help="ratio p: every group loses floor(p x C) channels (0.3)")
    g.add_argument("--criterion", choices=["gm", "l1", "rbf", "random"],
                   help="filter criterion (gm; rbf for jptp)")
    g.add_argument("--gamma", type=float, help="RBF kernel width (default: median heuristic)")
    g.add_argument("--stages", type=int, help="ppq/prune-only: incremental pruning stages")
    g.add_argument("--calib", type=int, help="calibration images (512)")
    g = p.add_argument_group("training (defaults depend on --data)")
    g.add_argument("--fp-epochs", type=int, help="FP32 training epochs when there is no --from")
    g.add_argument("--prune-epochs", type=int, help="ppq/prune-only: epochs of the pruning phase")
    g.add_argument("--epochs", type=int, help="spq epochs; ppq/quant-only QAT epochs")
    g.add_argument("--ft-epochs", type=int, help="jptp: fine-tune epochs after quantization")
    g.add_argument("--lr", type=float, help="lr of FP32 training, the pruning phase and spq")
    g.add_argument("--qat-lr", type=float, help="lr of ppq/quant-only QAT and the jptp fine-tune (0.01)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--schedule", choices=["cosine", "step", "plateau", "constant"])
    g.add_argument("--factor", type=float, default=0.9, help="plateau: lr factor")
    g.add_argument("--patience", type=int, default=3, help="plateau: epochs without improvement")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=int, default=0)
    _add_learned_arguments(p)
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: 1 for digits and synthetic, where a loaded "
                        "2-core machine made 2 spinning OMP threads 20x slower; torch's choice otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")


def settings_from_args(args):
    """Check every flag against the recipe and fill defaults: a Settings, or UserError."""
    from compress.data import DATASETS
    from compress.prune.groups import check_ratio
    from compress.recipes import RECIPES
    from compress.recipes.common import Settings
    from shiftq.errors import UserError

    if args.recipe not in RECIPES:
        raise UserError(f"unknown recipe {args.recipe!r}: choose one of {', '.join(RECIPE_NAMES)}")
    if args.data not in DATASETS:
        raise UserError(f"unknown data set {args.data!r}: choose one of {', '.join(DATASETS)}")
    rec = RECIPES[args.recipe]
    for dest, opt in SPECIFIC.items():
        if getattr(args, dest) is not None and dest not in rec.FLAGS:
            raise UserError(f"{opt} does not apply to recipe {args.recipe}")
    if args.from_ckpt and args.fp_epochs is not None:
        raise UserError("--fp-epochs does not apply with --from (the FP32 model is given)")
    d, rd = DEFAULTS[args.data], RECIPE_DEFAULTS[args.recipe]
    criterion = args.criterion or rd["criterion"]
    if args.gamma is not None and criterion != "rbf":
        raise UserError("--gamma applies only to --criterion rbf")
    prune = args.prune if args.prune is not None else rd.get("prune", 0.3)
    prune = check_ratio(prune)
    if args.recipe != "quant-only" and prune == 0:
        raise UserError(f"recipe {args.recipe} prunes: give --prune > 0 (or use quant-only)")

    def pick(v, default):
        return v if v is not None else default

    def positive(name, v, minimum=0):
        if v < minimum:
            raise UserError(f"{name} must be at least {minimum}, got {v}")
        return v

    s = Settings(
        recipe=args.recipe, prune=prune, quant=args.quant or rd["quant"],
        wbits=args.wbits, abits=args.abits, edge_bits=args.edge_bits, criterion=criterion or "gm",
        fp_epochs=positive("--fp-epochs", pick(args.fp_epochs, d["fp_epochs"]), 1),
        epochs=positive("--epochs", pick(args.epochs, d["epochs"].get(args.recipe, 0)), 0),
        prune_epochs=positive("--prune-epochs", pick(args.prune_epochs, d["prune_epochs"]), 0),
        stages=positive("--stages", pick(args.stages, d["stages"]), 1),
        ft_epochs=positive("--ft-epochs", pick(args.ft_epochs, d["ft_epochs"].get(args.recipe, 0)), 0),
        lr=pick(args.lr, d["lr"]), qat_lr=pick(args.qat_lr, 0.01),
        momentum=args.momentum, weight_decay=args.weight_decay,
        schedule=pick(args.schedule, d["schedule"]), factor=args.factor, patience=args.patience,
        calib=positive("--calib", pick(args.calib, d["calib"]), 2), gamma=args.gamma,
        seed=args.seed, quiet=args.quiet, extra=_learned_extra(args))
    for name, lr in (("--lr", s.lr), ("--qat-lr", s.qat_lr)):
        if not lr > 0:
            raise UserError(f"{name} must be positive, got {lr}")
    if args.recipe in ("ppq", "prune-only") and s.stages > max(s.prune_epochs, 1):
        raise UserError(f"--stages {s.stages} needs at least as many --prune-epochs (got {s.prune_epochs})")
    return s


def run(args):
    import json
    import time
    from pathlib import Path

    import torch

    from compress.data import get_data
    from compress.models import build_model
    from compress.prune.groups import build_plan
    from compress.quant.wrap import default_qconfig
    from compress.recipes import RECIPES
    from compress.recipes import common as C
    from shiftq.errors import UserError

    t0 = time.perf_counter()
    s = settings_from_args(args)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    threads = args.threads or (1 if args.data in ("digits", "synthetic") else None)
    if threads:
        torch.set_num_threads(threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")

    def build():
        return build_model(args.model, option=args.option)

    dense = build()                                   # validates the model name and options
    default_qconfig(dense, s.quant, s.wbits, s.abits, s.edge_bits)  # validates bits up front
    build_plan(dense).counts(s.prune)
    if args.from_ckpt:
        from compress.checkpoint import load_checkpoint
        ck = load_checkpoint(args.from_ckpt)
        if ck["model"].get("name") != args.model:
            raise UserError(f"--from {args.from_ckpt} holds a {ck['model'].get('name')} model, not {args.model}")
    torch.manual_seed(s.seed)
    data = get_data(args.data, dense, batch_size=args.batch_size or DEFAULTS[args.data]["batch_size"],
                    data_dir=args.data_dir, seed=s.seed)
    if len(data.train.y) < 2:
        raise UserError("the training set is too small")
    del dense

    r = C.Run(out, data, s, resume=args.resume)
    r.t0 = t0
    fp32 = C.fp32_model(r, args.model, build, args.from_ckpt)
    fp32_acc = r.accuracy(fp32)
    r.log(f"[{s.recipe}] FP32 {args.model} on {args.data}: test accuracy {fp32_acc:.2f}%")
    fp32.train()
    model = RECIPES[s.recipe].compress(r, fp32)
    report = C.finish(r, model, fp32_acc, extra={"command": "compress", "batch_size": data.train.batch_size})
    if not s.quiet:
        print(f"{s.recipe}: FP32 {fp32_acc:.2f}% -> compressed {report['compressed_test_acc']:.2f}% "
              f"({report['accuracy_drop']:+.2f} points lost), size x{report['size_reduction']:.2f}, "
              f"BOPs x{report['bops_reduction']:.2f}, {report['wall_time_s']:.0f}s; wrote {out}/compressed.pt")
    json.dumps(report)
    return 0

"""shiftq train: train a zoo model (FP32, or quantization-aware with --quant)."""
NAME = "train"
HELP = "train a zoo model on a data set, with a checkpoint each epoch and --resume"

# per data set defaults: digits reaches >= 97% in well under a minute on 2 cores
DEFAULTS = {
    "digits": {"epochs": 40, "batch_size": 64, "lr": 0.05},
    "cifar10": {"epochs": 200, "batch_size": 128, "lr": 0.1},
    "synthetic": {"epochs": 2, "batch_size": 16, "lr": 0.01},
}


def add_arguments(p):
    p.add_argument("--model", required=True, help="zoo model (resnet20, digitnet, ...)")
    p.add_argument("--option", choices=["A", "B"], help="ResNet shortcut option (default A)")
    p.add_argument("--data", required=True, help="digits, cifar10 or synthetic")
    p.add_argument("--data-dir", default="data", help="where cifar-10-batches-py/ is (default: data)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 (needs torchvision)")
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, log.csv, report.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--epochs", type=int, help="default: 40 digits, 200 cifar10")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="cosine", help="cosine, step, plateau or constant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    p.add_argument("--quant", help="train quantization-aware: apot, pot or uniform (default: FP32)")
    p.add_argument("--wbits", type=int, default=4)
    p.add_argument("--abits", type=int, default=4)
    p.add_argument("--edge-bits", type=int, default=8, help="bits of the first and last layer")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights")
    p.add_argument("--threads", type=int,
                   help="torch threads (default: 1 for digits, whose 8x8 batches are too small to "
                        "split across cores, else torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")


def run(args):
    import json
    from pathlib import Path

    import torch

    from compress.checkpoint import load_checkpoint, load_model
    from compress.data import DATASETS, get_data
    from compress.models import build_model
    from compress.quant.wrap import default_qconfig, wrap
    from compress.train import CHECKPOINT, REPORT, TrainConfig, fit
    from shiftq.errors import UserError

    # every check before anything is written
    if args.data not in DATASETS:
        raise UserError(f"unknown data set {args.data!r}: choose one of {', '.join(DATASETS)}")
    d = DEFAULTS[args.data]
    cfg = TrainConfig(
        epochs=args.epochs if args.epochs is not None else d["epochs"],
        lr=args.lr if args.lr is not None else d["lr"],
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        seed=args.seed, quiet=args.quiet)
    cfg.check()
    out = Path(args.out)
    if (out / CHECKPOINT).exists() and not args.resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if args.resume and (out / CHECKPOINT).exists():
        load_checkpoint(out / CHECKPOINT)  # a damaged run is reported before any work

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    threads = args.threads or (1 if args.data == "digits" else None)
    if threads:
        # measured on 2 cores: digitnet epochs take ~0.15 s on one thread; two threads
        # only add synchronisation, and under load they made epochs 15x slower
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    if args.init:
        model = load_model(args.init)
        if args.option and model.config["kwargs"].get("option") != args.option:
            raise UserError(f"--init checkpoint has shortcut option {model.config['kwargs'].get('option')}")
    else:
        model = build_model(args.model, option=args.option)
    if model.config["name"] != args.model:
        raise UserError(f"--init checkpoint holds {model.config['name']}, not {args.model}")
    if args.quant and not getattr(model, "qconfig", None):
        wrap(model, default_qconfig(model, args.quant, args.wbits, args.abits, args.edge_bits))
    data = get_data(args.data, model, batch_size=args.batch_size or d["batch_size"],
                    data_dir=args.data_dir, download=args.download, seed=args.seed,
                    augment=not args.no_augment)

    meta = {"command": "train", "model": args.model, "data": args.data, "quant": args.quant,
            "init": args.init, "batch_size": args.batch_size or d["batch_size"]}
    state = fit(model, data, cfg, out_dir=out, resume=args.resume, meta=meta)
    report = json.loads((out / REPORT).read_text())
    if not args.quiet:
        print(f"{report['model']['name']} on {report['data']}: test accuracy {report['final_test_acc']:.2f}% "
              f"(best {report['best_test_acc']:.2f}% at epoch {report['best_epoch']}), "
              f"{state.train_time:.1f}s of training; wrote {out}/")
    return 0

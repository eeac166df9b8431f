"""shiftq golden: run the golden model of an export (no torch involved)."""
NAME = "golden"
HELP = "run the golden (NumPy integer) model of build/NAME on its test vectors or an image file"


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory (build/NAME)")
    p.add_argument("--image", help="a .npy float image [C,H,W] (normalised like the data loader); "
                                   "default: the export's vectors.npz")
    p.add_argument("--json", action="store_true")


def run(args):
    import json
    from pathlib import Path

    import numpy as np

    from hw import golden
    from hw.ir import load
    from shiftq.errors import UserError

    ir = load(args.build)
    from hw.tables import verify_tables
    problems = verify_tables(ir, Path(args.build) / "tables")
    if problems:
        print(f"{len(problems)} weight-table words disagree with the IR; first: {problems[0]}")
        return 1
    shape = tuple(ir.graph["input"]["shape"])
    if args.image:
        try:
            x = np.load(args.image, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read image {args.image}: {e}") from None
        if x.shape == shape:
            x = x[None]
        if x.shape[1:] != shape:
            raise UserError(f"image has shape {x.shape}, the model takes {shape} (or N x {shape})")
        out = golden.run(ir, x)
        res = {"logits": out.tolist(), "class": out.argmax(1).tolist()}
    else:
        vp = Path(args.build) / "vectors.npz"
        if not vp.exists():
            raise UserError(f"{vp} is missing: re-export, or pass --image")
        v = np.load(vp)
        out = golden.run(ir, v["x"])
        same = bool(np.array_equal(out, v["output"]))
        res = {"images": int(len(out)), "class": out.argmax(1).tolist(),
               "labels": v["labels"].tolist(), "matches_recorded_vectors": same}
        if not same:
            print(json.dumps(res) if args.json else "golden output differs from the recorded vectors")
            return 1
    if args.json:
        print(json.dumps(res))
    else:
        print("class:", " ".join(str(c) for c in res["class"]))
        if "matches_recorded_vectors" in res:
            print(f"{res['images']} images, output equals the recorded golden vectors")
    return 0

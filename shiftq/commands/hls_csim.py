"""shiftq hls-csim: compile the exported HLS C++ with g++ and compare it with the golden model."""
NAME = "hls-csim"
HELP = ("C-simulate build/NAME/hls/ (g++ + hls4ml's ap_types, no vendor tool) and compare every "
        "output, or with --layers every layer, with the golden model bit for bit")


def add_arguments(p):
    p.add_argument("--build", required=True, help="export directory (build/NAME)")
    p.add_argument("--layers", action="store_true", help="compare every layer's output, not only the network's")
    p.add_argument("--images", type=int, help="use at most this many of the export's golden vectors")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="also simulate N random input images (golden outputs computed now)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --random images")
    p.add_argument("--regen", action="store_true", help="re-emit hls/ from the IR before compiling")
    p.add_argument("--opt", default="-O1", choices=["-O0", "-O1", "-O2", "-O3"], help="g++ optimisation level")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args):
    import json

    from hw.hls.csim import csim
    from shiftq.errors import UserError

    if args.images is not None and args.images < 0:
        raise UserError(f"--images must be >= 0, got {args.images}")
    if args.random < 0:
        raise UserError(f"--random must be >= 0, got {args.random}")
    res = csim(args.build, layers=args.layers, images=args.images, random_images=args.random, seed=args.seed,
               regen=args.regen, opt=args.opt, progress=None if args.json else print)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for name, r in res["nodes"].items():
            if r["pass"]:
                print(f"  PASS  {name}  ({r['images']} images, bit-exact)")
            else:
                print(f"  FAIL  {name}  {r['bad_images']} image(s) differ; first: image {r['first_image']}, "
                      f"element {r['first_index']}: C++ {r['got']}, golden {r['want']}")
        ips = res["images_per_second"]
        how = "cached binary" if res["cached"] else f"compiled in {res['compile_seconds']:.1f} s"
        speed = f", {ips:.1f} images/s in C simulation" if ips else ""
        scope = "every layer" if args.layers else "network output"
        print(f"{res['model']}: {'PASS' if res['pass'] else 'FAIL'} on {res['images']} images ({scope}){speed}, {how}")
    return 0 if res["pass"] else 1

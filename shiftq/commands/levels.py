"""shiftq levels: print a quantization level set."""
NAME = "levels"
HELP = "print the level set of a quantization scheme (integers over a denominator)"


def add_arguments(p):
    p.add_argument("--scheme", required=True, help="uniform, pot or apot")
    p.add_argument("--bits", type=int, required=True)
    p.add_argument("--signed", action="store_true", help="signed levels (weights)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    import json

    from compress.quant.levels import level_set

    ls = level_set(args.scheme, args.bits, args.signed)
    if args.json:
        print(json.dumps(ls.to_json(), indent=2))
        return 0
    kind = "signed" if ls.signed else "unsigned"
    print(f"{ls.scheme} {ls.bits}-bit {kind}: {len(ls.numerators)} levels, denominator {ls.denominator}, "
          f"at most {ls.max_terms} power-of-two terms")
    print("integers:", " ".join(str(n) for n in ls.numerators))
    print("values:  ", " ".join(f"{v:g}" for v in ls.values))
    return 0

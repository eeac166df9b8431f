"""The integer IR: load, save and validate `model.json` + `weights.npz`.

The IR is plain data (a dict as in docs/ir.md plus a dict of NumPy arrays); this
module only checks it and moves it to and from disk, so every reader (golden model,
tables, RTL, HLS) sees the same validated structure. No torch here.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shiftq.errors import UserError, atomic_path

FORMAT = "shiftq-ir"
VERSION = 1
OPS = ("conv2d", "linear", "maxpool", "gap", "avgpool", "shortcut", "flatten")


@dataclass
class IR:
    """A network as integers: `graph` is model.json's dict, `arrays` weights.npz's."""

    graph: dict
    arrays: dict = field(default_factory=dict)

    @property
    def nodes(self) -> list[dict]:
        return self.graph["nodes"]

    def node(self, name: str) -> dict:
        for n in self.nodes:
            if n["name"] == name:
                return n
        raise KeyError(name)

    def tensor(self, name: str) -> dict:
        """The `out` description of a node (or of the network input)."""
        if name == "input":
            inp = self.graph["input"]
            b = inp["bits"]
            return {"shape": inp["shape"], "kind": "int", "bits": b, "signed": True,
                    "value_bits": b, "scale": inp["scale"]}
        return self.node(name)["out"]

    def array(self, key: str) -> np.ndarray:
        return self.arrays[key]


def bits_signed(lo: int, hi: int) -> int:
    """Fewest two's-complement bits holding every integer in [lo, hi]."""
    lo, hi = int(lo), int(hi)
    b = 1
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def bits_unsigned(hi: int) -> int:
    return max(1, int(hi).bit_length())


def save(ir: IR, out_dir) -> None:
    """Write model.json and weights.npz atomically, byte-identical for identical IRs."""
    out_dir = Path(out_dir)
    validate(ir)
    with atomic_path(out_dir / "weights.npz") as tmp:
        _write_npz(tmp, ir.arrays)
    with atomic_path(out_dir / "model.json") as tmp:
        tmp.write_text(json.dumps(ir.graph, indent=1, sort_keys=False) + "\n")


def _write_npz(path, arrays):
    """np.savez stamps the current time into the zip; write entries with a fixed date."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def load(path) -> IR:
    """Load an IR from a directory (or its model.json); every problem is a UserError."""
    path = Path(path)
    jpath = path / "model.json" if path.is_dir() or not path.suffix else path
    npath = jpath.with_name("weights.npz")
    if not jpath.exists():
        raise UserError(f"no IR at {jpath}: run `shiftq export --ckpt ... --out {jpath.parent}` first")
    try:
        graph = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{jpath} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}): re-export it") from None
    if not isinstance(graph, dict) or graph.get("format") != FORMAT:
        raise UserError(f"{jpath} is not a shiftq IR (format is not {FORMAT!r})")
    if graph.get("version") != VERSION:
        raise UserError(f"{jpath} has IR version {graph.get('version')!r}; this shiftq reads version "
                        f"{VERSION}: re-export it with this shiftq")
    if not npath.exists():
        raise UserError(f"{npath} is missing: the IR needs model.json and weights.npz side by side")
    try:
        with np.load(npath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / numpy raise many types for a corrupt file
        raise UserError(f"{npath} cannot be read ({type(e).__name__}): re-export it") from None
    ir = IR(graph, arrays)
    validate(ir)
    return ir


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- validation

def _fail(msg):
    raise UserError(f"invalid IR: {msg}")


def _need_array(ir, key, shape, where):
    if key not in ir.arrays:
        _fail(f"{where}: array {key!r} is missing from weights.npz (model.json and weights.npz do not match)")
    a = ir.arrays[key]
    if tuple(a.shape) != tuple(shape):
        _fail(f"{where}: array {key!r} has shape {tuple(a.shape)}, model.json says {tuple(shape)} "
              f"(model.json and weights.npz do not match)")
    if not np.issubdtype(a.dtype, np.integer):
        _fail(f"{where}: array {key!r} is {a.dtype}, not integer")
    return a


def validate(ir: IR) -> None:
    """Check the structure and shapes; raises UserError naming the first problem."""
    g = ir.graph
    for k in ("name", "input", "nodes", "output"):
        if k not in g:
            _fail(f"model.json has no {k!r}")
    seen = {"input": ir.tensor("input")}
    for n in g["nodes"]:
        name, op = n.get("name"), n.get("op")
        if op not in OPS:
            _fail(f"node {name!r} has unknown op {op!r} (known: {', '.join(OPS)})")
        if name in seen:
            _fail(f"node name {name!r} is used twice")
        src = n.get("input")
        if src not in seen:
            _fail(f"node {name!r} reads {src!r}, which is not an earlier node")
        inp = seen[src]
        out = n.get("out")
        if not isinstance(out, dict) or "shape" not in out or "kind" not in out:
            _fail(f"node {name!r} has no valid 'out' description")
        if out["kind"] == "code":
            lv = out.get("levels")
            if not lv or lv[0] != 0 or any(b <= a for a, b in zip(lv, lv[1:])):
                _fail(f"node {name!r}: levels must be ascending integers starting at 0")
            if len(lv) > 2 ** out["bits"]:
                _fail(f"node {name!r}: {len(lv)} levels do not fit {out['bits']} bits")
        if op in ("conv2d", "linear"):
            w = n["weight"]
            if op == "conv2d":
                kh, kw = n["kernel"]
                wshape = (n["out_channels"], n["in_channels"], kh, kw)
                if inp["shape"][0] != n["in_channels"]:
                    _fail(f"node {name!r}: input has {inp['shape'][0]} channels, in_channels is {n['in_channels']}")
            else:
                wshape = (n["out_features"], n["in_features"])
                if list(inp["shape"]) != [n["in_features"]]:
                    _fail(f"node {name!r}: input shape {inp['shape']} is not [{n['in_features']}]")
            wa = _need_array(ir, w["key"], wshape, name)
            ta = _need_array(ir, w["terms_key"], wshape + (w["terms"], 2), name)
            recon = (ta[..., 0].astype(np.int64) << ta[..., 1].astype(np.int64)).sum(-1)
            if not np.array_equal(recon, wa):
                _fail(f"node {name!r}: weight terms do not sum to the weights")
        if n.get("requant"):
            rq = n["requant"]
            o = out["shape"][0]
            _need_array(ir, rq["mult"], (o,), name)
            _need_array(ir, rq["bias"], (o,), name)
            if rq.get("residual"):
                r = rq["residual"]
                if r["input"] not in seen:
                    _fail(f"node {name!r}: residual input {r['input']!r} is not an earlier node")
                if list(seen[r["input"]]["shape"]) != list(out["shape"]):
                    _fail(f"node {name!r}: residual shape {seen[r['input']]['shape']} != output {out['shape']}")
                _need_array(ir, r["mult"], (o,), name)
        if op == "shortcut":
            src_map = n["src"]
            if len(src_map) != out["shape"][0] or max(src_map) >= inp["shape"][0]:
                _fail(f"node {name!r}: channel map does not match the shapes")
        seen[name] = out
    if g["output"] not in seen:
        _fail(f"output {g['output']!r} is not a node")

"""Shift-add weight tables: each weight as (sign, shift) terms, packed for $readmemh.

Layout (docs/ir.md, "Weight tables"): one word per weight in the weight array's
row-major order; term t in bits [t*TW, (t+1)*TW) with TW = 2 + SB and a field
nz << (SB+1) | neg << SB | shift. The RTL reads these files directly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shiftq.errors import atomic_path

from .ir import IR


def csd_terms_array(w: np.ndarray, max_terms: int | None = None) -> np.ndarray:
    """Canonical signed-digit terms of every integer in `w`: [..., T, 2] int8 (sign, shift).

    Most significant term first; unused terms are (0, 0). Vectorised over `w`.
    """
    w = np.asarray(w, dtype=np.int64)
    flat = w.reshape(-1).copy()
    digits = []  # list of (sign array, shift) from least significant up
    shift = 0
    while np.any(flat != 0):
        odd = (flat & 1) == 1
        d = np.where(odd, 2 - (flat & 3), 0)
        digits.append((d, shift))
        flat = (flat - d) >> 1
        shift += 1
    count = np.zeros(flat.shape, dtype=np.int64)
    for d, _ in digits:
        count += d != 0
    t = int(count.max()) if count.size else 0
    t = max(t, 1) if max_terms is None else max_terms
    if count.size and int(count.max()) > t:
        raise ValueError(f"a weight needs {int(count.max())} terms, more than {t}")
    out = np.zeros(flat.shape + (t, 2), dtype=np.int8)
    slot = np.zeros(flat.shape, dtype=np.int64)
    # most significant first: walk digits from the top shift down
    idx = np.arange(flat.size)
    for d, s in reversed(digits):
        nz = d != 0
        out[idx[nz], slot[nz], 0] = d[nz]
        out[idx[nz], slot[nz], 1] = s
        slot += nz
    return out.reshape(w.shape + (t, 2))


def field_layout(max_shift: int, terms: int) -> dict:
    sb = max(1, int(max_shift).bit_length())
    tw = 2 + sb
    return {"shift_bits": sb, "term_bits": tw, "terms": terms, "word_bits": tw * terms,
            "hex_digits": -(-(tw * terms) // 4)}


def pack_words(terms: np.ndarray, max_shift: int) -> tuple[np.ndarray, dict]:
    """Pack [..., T, 2] terms into one integer word per weight (flattened row-major)."""
    t = terms.shape[-2]
    lay = field_layout(max_shift, t)
    sb, tw = lay["shift_bits"], lay["term_bits"]
    flat = terms.reshape(-1, t, 2).astype(np.int64)
    sign, shift = flat[..., 0], flat[..., 1]
    fields = np.where(sign != 0, (1 << (sb + 1)) | ((sign < 0).astype(np.int64) << sb) | shift, 0)
    words = np.zeros(flat.shape[0], dtype=object)
    for k in range(t):
        words = words + (fields[:, k].astype(object) << (k * tw))
    return words, lay


def unpack_word(word: int, lay: dict) -> list[tuple[int, int]]:
    """The (sign, shift) terms of one packed word (reference decoder for tests and RTL)."""
    sb, tw = lay["shift_bits"], lay["term_bits"]
    out = []
    for k in range(lay["terms"]):
        f = (word >> (k * tw)) & ((1 << tw) - 1)
        nz, neg, sh = f >> (sb + 1), (f >> sb) & 1, f & ((1 << sb) - 1)
        out.append(((-1 if neg else 1) if nz else 0, sh if nz else 0))
    return out


def layer_table(ir: IR, node: dict) -> tuple[list[str], dict]:
    """(lines of the .mem file, the JSON description with statistics) of one layer."""
    wd = node["weight"]
    w = ir.array(wd["key"])
    terms = ir.array(wd["terms_key"])
    words, lay = pack_words(terms, wd["max_shift"])
    lines = [format(int(x), f"0{lay['hex_digits']}x") for x in words]
    used = (terms[..., 0] != 0).sum(-1).reshape(-1)
    hist = {str(k): int((used == k).sum()) for k in range(terms.shape[-2] + 1)}
    desc = {
        "layer": node["name"], "op": node["op"], "shape": list(w.shape),
        "scheme": wd["scheme"], "bits": wd["bits"], "max_shift": wd["max_shift"], **lay,
        "count": int(w.size), "zeros": int((w == 0).sum()),
        "terms_histogram": hist, "mean_terms": float(used.mean()) if used.size else 0.0,
        "table_bits": int(w.size * lay["word_bits"]),
        "weight_bits": int(w.size * wd["bits"]),
        "mem": f"{node['name']}.mem",
    }
    return lines, desc


def write_tables(ir: IR, out_dir) -> dict:
    """Write tables/NAME.mem and tables/NAME.json for every conv/linear; returns a summary."""
    out_dir = Path(out_dir)
    summary = {}
    for n in ir.nodes:
        if n["op"] not in ("conv2d", "linear"):
            continue
        lines, desc = layer_table(ir, n)
        with atomic_path(out_dir / f"{n['name']}.mem") as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        with atomic_path(out_dir / f"{n['name']}.json") as tmp:
            terms = ir.array(n["weight"]["terms_key"]).reshape(-1, desc["terms"], 2)
            full = dict(desc, terms_list=terms.tolist())
            tmp.write_text(json.dumps(full, separators=(",", ":")) + "\n")
        summary[n["name"]] = desc
    return summary


def verify_tables(ir: IR, tables_dir) -> list[str]:
    """Decode every tables/NAME.mem and compare it with the IR's weights.

    Returns one line per mismatch (empty when every word decodes to its weight), so a
    corrupted or stale table is caught before any hardware reads it.
    """
    from shiftq.errors import UserError

    tables_dir = Path(tables_dir)
    problems = []
    for n in ir.nodes:
        if n["op"] not in ("conv2d", "linear"):
            continue
        path = tables_dir / f"{n['name']}.mem"
        if not path.exists():
            raise UserError(f"{path} is missing: re-export")
        w = ir.array(n["weight"]["key"]).reshape(-1)
        lay = field_layout(n["weight"]["max_shift"], n["weight"]["terms"])
        lines = path.read_text().split()
        if len(lines) != w.size:
            problems.append(f"{n['name']}: {len(lines)} words, the IR has {w.size} weights")
            continue
        for i, (h, want) in enumerate(zip(lines, w.tolist())):
            got = sum(s << sh for s, sh in unpack_word(int(h, 16), lay))
            if got != want:
                problems.append(f"{n['name']}: word {i} ({h}) decodes to {got}, the IR weight is {want}")
    return problems

"""Shift-add weight tables: CSD terms and the packed .mem layout of docs/ir.md."""
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.ir import load
from hw.tables import csd_terms_array, field_layout, pack_words, unpack_word, verify_tables


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 14), 1 << 14), min_size=1, max_size=40))
def test_csd_terms_sum_back_and_are_minimal(ws):
    w = np.array(ws)
    t = csd_terms_array(w)
    assert np.array_equal((t[..., 0].astype(np.int64) << t[..., 1].astype(np.int64)).sum(-1), w)
    for row in t:  # canonical signed digits: no two used terms on adjacent shifts
        shifts = [s for sg, s in row if sg]
        assert all(a - b >= 2 for a, b in zip(shifts, shifts[1:]))
        assert shifts == sorted(shifts, reverse=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-127, 127), min_size=1, max_size=30))
def test_pack_unpack_round_trip(ws):
    w = np.array(ws)
    t = csd_terms_array(w, 4)
    words, lay = pack_words(t, 7)
    assert lay == field_layout(7, 4)
    for word, v in zip(words, ws):
        assert sum(s << sh for s, sh in unpack_word(int(word), lay)) == v


def test_mem_files_decode_to_the_ir_weights(digitnet_export):
    ir = load(digitnet_export)
    for n in ir.nodes:
        if n["op"] not in ("conv2d", "linear"):
            continue
        desc = json.loads((digitnet_export / "tables" / f"{n['name']}.json").read_text())
        lines = (digitnet_export / "tables" / f"{n['name']}.mem").read_text().split()
        w = ir.array(n["weight"]["key"]).reshape(-1)
        assert len(lines) == w.size == desc["count"]
        assert all(len(s) == desc["hex_digits"] for s in lines)
        dec = [sum(s << sh for s, sh in unpack_word(int(h, 16), desc)) for h in lines]
        assert dec == w.tolist()
        assert sum(desc["terms_histogram"].values()) == w.size
        assert desc["zeros"] == int((w == 0).sum())


def test_corrupted_table_entry_is_caught(digitnet_export, tmp_path, run_cli):
    import shutil
    d = tmp_path / "e"
    shutil.copytree(digitnet_export, d)
    ir = load(d)
    assert verify_tables(ir, d / "tables") == []
    mem = d / "tables" / "b1_conv2.mem"
    lines = mem.read_text().split()
    k = next(i for i, h in enumerate(lines) if int(h, 16) != 0)  # a used term: its shift bit 0 matters
    lines[k] = format(int(lines[k], 16) ^ 1, f"0{len(lines[k])}x")
    mem.write_text("\n".join(lines) + "\n")
    problems = verify_tables(ir, d / "tables")
    assert len(problems) == 1 and f"word {k} " in problems[0]
    code, out, _ = run_cli("golden", "--build", d)
    assert code == 1 and "disagree" in out

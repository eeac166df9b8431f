"""`shiftq sim` on an export written here (random IR, real tables/*.mem files).

The corrupted-table case flips one bit of the .mem file on disk, the file the RTL's
weight ROMs are initialised from, and expects FAIL (exit 1) with the mismatch shown.
"""
import numpy as np
import pytest

from hw.ir import save
from hw.tables import write_tables
from sim.layers import random_ir, visible_flip
from sim.runner import missing_reason
from hw.rtl.export import emit_rtl

pytestmark = pytest.mark.skipif(missing_reason("icarus") is not None, reason=str(missing_reason("icarus")))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    ir, env = random_ir(1)
    d = tmp_path_factory.mktemp("export") / "random1"
    save(ir, d)
    write_tables(ir, d / "tables")
    np.savez(d / "vectors.npz", **{"node:input": env["input"]})
    return d


def _flip_bit(mem_path, line_no, bit):
    lines = mem_path.read_text().split()
    w = int(lines[line_no], 16) ^ (1 << bit)
    lines[line_no] = format(w, f"0{len(lines[line_no])}x")
    mem_path.write_text("\n".join(lines) + "\n")


def test_cli_sim_pass_table(run_cli, export_dir):
    code, out, err = run_cli("sim", "--build", export_dir, "--sim", "icarus", "--layers", "c1", "fc",
                             "--po", "4", "--pi", "2")
    assert code == 0, out + err
    rows = [l for l in out.splitlines() if l.startswith(("c1 ", "fc "))]
    assert len(rows) == 2 and all(" PASS " in r for r in rows), out
    assert "PASS: 2/2" in out


def test_cli_sim_catches_flipped_mem_bit(run_cli, export_dir, tmp_path):
    import shutil
    d = tmp_path / "random1"
    shutil.copytree(export_dir, d)
    # a sign bit whose flip the golden model says changes c1's output
    ir, env = random_ir(1)
    idx, bit, changed = visible_flip(ir, env, "c1")
    _flip_bit(d / "tables" / "c1.mem", idx, bit)
    code, out, err = run_cli("sim", "--build", d, "--sim", "icarus", "--layers", "c1", "--po", "4", "--pi", "2")
    assert code == 1, out + err
    assert " FAIL " in out and "golden" in out, out
    row = [l for l in out.splitlines() if l.startswith("c1 ")][0]
    assert row.split()[4] == str(changed), out  # the 'bad' column: exactly the changed words


def test_cli_sim_bad_input(run_cli, tmp_path, export_dir):
    code, out, err = run_cli("sim", "--build", tmp_path / "nothing")
    assert code == 2 and "no export" in err and err.count("\n") == 1
    code, out, err = run_cli("sim", "--build", export_dir, "--layers", "flat")
    assert code == 2 and "not a conv/linear layer" in err
    code, out, err = run_cli("sim", "--build", export_dir, "--po", "0")
    assert code == 2 and "--po" in err


def test_emit_rtl_writes_engines_from_tables(export_dir, tmp_path):
    s = emit_rtl(export_dir, tmp_path / "rtl", po_max=4, pi_max=2, layers=["c2", "fc"])
    assert set(s["engines"]) == {"c2", "fc"}
    for name, e in s["engines"].items():
        text = (tmp_path / "rtl" / e["file"]).read_text()
        assert f"module {e['top']}(" in text
        assert e["weights_from"] == "tables"
    assert (tmp_path / "rtl" / "manifest.json").exists()

"""shiftq export end to end: files, determinism, report, and bad input."""
import json

import numpy as np
import pytest

from compress.checkpoint import save_checkpoint
from compress.models import build_model


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_export_writes_everything(digitnet_export):
    names = set(_files(digitnet_export))
    for f in ("model.json", "weights.npz", "vectors.npz", "report.json", "report.md", "weights.png",
              "terms.png", "tables/stem.mem", "tables/head.json"):
        assert f in names, f
    rep = json.loads((digitnet_export / "report.json").read_text())
    assert rep["dry_run"] is True
    assert "MEANINGLESS" in (digitnet_export / "report.md").read_text()
    assert rep["agreement"]["images"] > 0 and 0 <= rep["agreement"]["same_prediction"] <= 1
    assert rep["ir_totals"]["size_bits"] == rep["metrics"]["size_bits"]
    assert rep["ir_totals"]["bops"] == rep["metrics"]["bops"]


def test_reexport_is_byte_identical(digitnet_export, tmp_path):
    from shiftq.export import export
    export(None, str(tmp_path / "again"), dry_run_model_name="digitnet", vectors=8, backends=[],
           progress=lambda *a: None)
    assert _files(digitnet_export) == _files(tmp_path / "again")


def test_golden_command_replays_vectors(run_cli, digitnet_export):
    code, out, _ = run_cli("golden", "--build", digitnet_export)
    assert code == 0 and "equals the recorded" in out


def test_missing_checkpoint(run_cli, tmp_path):
    code, _, err = run_cli("export", "--ckpt", tmp_path / "nope.pt", "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_corrupt_checkpoint(run_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run_cli("export", "--ckpt", bad, "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_fp32_checkpoint_is_refused(run_cli, tmp_path):
    p = tmp_path / "fp32.pt"
    save_checkpoint(p, build_model("digitnet"), meta={"data": "digits"})
    code, _, err = run_cli("export", "--ckpt", p, "--out", tmp_path / "o")
    assert code == 2 and "compress" in err
    assert not (tmp_path / "o").exists()


def test_ckpt_and_dry_run_are_exclusive(run_cli, tmp_path):
    assert run_cli("export", "--out", tmp_path / "o")[0] == 2
    assert run_cli("export", "--dry-run", "nonet", "--out", tmp_path / "o")[0] == 2


def test_unknown_ir_version(run_cli, digitnet_export, tmp_path):
    import shutil
    d = tmp_path / "e"
    shutil.copytree(digitnet_export, d)
    g = json.loads((d / "model.json").read_text())
    g["version"] = 99
    (d / "model.json").write_text(json.dumps(g))
    code, _, err = run_cli("golden", "--build", d)
    assert code == 2 and "version 99" in err and len(err.strip().splitlines()) == 1


def test_npz_not_matching_json(run_cli, digitnet_export, tmp_path):
    import shutil
    d = tmp_path / "e"
    shutil.copytree(digitnet_export, d)
    with np.load(d / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["b1_conv1.w"] = arrays["b1_conv1.w"][:, :-1]
    np.savez(d / "weights.npz", **arrays)
    code, _, err = run_cli("golden", "--build", d)
    assert code == 2 and "do not match" in err


def test_truncated_npz(run_cli, digitnet_export, tmp_path):
    import shutil
    d = tmp_path / "e"
    shutil.copytree(digitnet_export, d)
    data = (d / "weights.npz").read_bytes()
    (d / "weights.npz").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli("golden", "--build", d)
    assert code == 2 and "weights.npz" in err


def test_failed_export_leaves_previous_output_intact(tmp_path, digitnet_export, monkeypatch):
    """A crash half-way (here: a backend raising) leaves nothing half-written."""
    import shutil

    import hw.backends
    from shiftq.export import export
    out = tmp_path / "digitnet"
    shutil.copytree(digitnet_export, out)
    before = _files(out)

    def boom(ir, out_dir):
        (out_dir / "partial.v").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "partial.v").write_text("module")
        raise RuntimeError("backend crashed")
    monkeypatch.setattr(hw.backends, "available", lambda: {"boom": boom})
    with pytest.raises(RuntimeError):
        export(None, str(out), dry_run_model_name="digitnet", vectors=8, progress=lambda *a: None)
    assert _files(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".digitnet")]


def test_mult_bits_auto_escalates_until_the_contract_holds(tmp_path, monkeypatch):
    import shiftq.export as ex
    monkeypatch.setattr(ex, "AGREE_MIN", 1.01)  # unreachable: every width is tried, the verdict is FAIL
    rep = ex.export(None, str(tmp_path / "e"), dry_run_model_name="digitnet", vectors=2, backends=[],
                    progress=lambda *a: None)
    assert [t["mult_bits"] for t in rep["agreement"]["tried"]] == [16, 20, 24]
    assert rep["agreement"]["verdict"].startswith("FAIL")
    g = json.loads((tmp_path / "e" / "model.json").read_text())
    assert {n["requant"]["mult_bits"] for n in g["nodes"] if n.get("requant")} == {24}


def test_explicit_mult_bits(run_cli, tmp_path):
    code, out, _ = run_cli("export", "--dry-run", "digitnet", "--out", tmp_path / "e", "--mult-bits", "20",
                           "--backends", "none")
    assert code == 0
    g = json.loads((tmp_path / "e" / "model.json").read_text())
    m = np.load(tmp_path / "e" / "weights.npz")
    for n in g["nodes"]:
        if n.get("requant") and n["requant"]["shift"] > 0:
            assert n["requant"]["mult_bits"] == 20
            assert np.abs(m[n["requant"]["mult"]]).max() < 2 ** 19
    assert run_cli("export", "--dry-run", "digitnet", "--out", tmp_path / "f", "--mult-bits", "99")[0] == 2

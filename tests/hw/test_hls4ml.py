"""hls4ml interop: a project for a PoT digitnet, built through hls4ml's Python API, whose
own C simulation (compile() / predict()) is compared with the golden model."""
import json

import numpy as np
import pytest

from hw.hls import hls4ml_project as hp
from hw.ir import IR, load
from shiftq.errors import UserError


@pytest.fixture(scope="session")
def pot_digitnet(tmp_path_factory):
    """A dry-run digitnet with PoT W4 weights and uniform A4 activations (quant="pot")."""
    from shiftq.export import export

    out = tmp_path_factory.mktemp("pot") / "digitnet_pot"
    export(None, str(out), dry_run_model_name="digitnet", quant="pot", vectors=16, backends=[],
           progress=lambda *a: None)
    return out


def test_pot_digitnet_hls4ml_csim_equals_golden(pot_digitnet, run_cli, tmp_path):
    ir = load(pot_digitnet)
    assert {n["weight"]["scheme"] for n in ir.nodes if n.get("weight")} == {"pot", "uniform"}
    x = hp.project_images(pot_digitnet, ir, random_images=16, seed=2)
    s = hp.write(ir, tmp_path / "hls4ml", images=x, opt="-O0")
    c = s["check"]
    # the agreement figure (docs/hls.md): every output integer of every image
    assert c["images"] == 32 and c["outputs_integral"]
    assert c["bit_exact_images"] == 32 and c["max_abs_diff"] == 0, c
    assert (tmp_path / "hls4ml" / "firmware" / "digitnet_hls4ml.cpp").exists()
    assert json.loads((tmp_path / "hls4ml" / "shiftq_hls4ml.json").read_text())["check"] == c
    # PoT layers of this model contain zero weights: hls4ml's exponent type has no zero
    # code, so they are fixed-point integers
    assert s["exponent_layers"] == [] and "b1_conv1" in s["fixed_layers"]


def test_apot_activations_are_refused(digitnet_export, tmp_path):
    ir = load(digitnet_export)
    with pytest.raises(UserError, match="cannot express node 'stem'.*apot"):
        hp.write(ir, tmp_path / "p", images=np.zeros((1, 1, 8, 8), dtype=np.int64))
    assert not (tmp_path / "p").exists()
    with pytest.raises(UserError, match="no hls4ml project"):
        hp.export_project(digitnet_export, progress=lambda *a: None)


@pytest.mark.slow
def test_exponent_type_path_is_bit_exact(pot_digitnet, tmp_path):
    """hls4ml's exponent (power-of-two) weights, reached without QKeras: the PoT layers'
    zero weights are set to +1 (a valid IR of its own, run by the golden model) so every
    weight is a single nonzero power of two; needs the np.product shim under NumPy 2."""
    ir = load(pot_digitnet)
    arrays = dict(ir.arrays)
    for n in ir.nodes:
        if n.get("weight", {}) and n["weight"]["scheme"] == "pot":
            w = arrays[n["weight"]["key"]].copy()
            t = arrays[n["weight"]["terms_key"]].copy()
            zero = w == 0
            w[zero] = 1
            t[zero] = 0
            t[..., 0, 0][zero] = 1
            arrays[n["weight"]["key"]], arrays[n["weight"]["terms_key"]] = w, t
    ir2 = IR(json.loads(json.dumps(ir.graph)), arrays)
    x = hp.project_images(pot_digitnet, ir2, random_images=16, seed=3)
    s = hp.write(ir2, tmp_path / "hls4ml", images=x, opt="-O0")
    assert set(s["exponent_layers"]) == {"b1_conv1", "b1_conv2", "down", "b2_conv1", "b2_conv2"}
    assert s["check"]["bit_exact_images"] == s["check"]["images"] == 32, s["check"]

"""Every recipe end to end through `shiftq compress`: shortened runs on digits that must
really learn, one short epoch of each on ResNet-20 with synthetic data, resume, and
bad inputs (one line, exit 2)."""
import json

import pytest
import torch

from compress.checkpoint import load_model
from compress.data import get_data
from compress.models.walk import layers
from compress.quant.fake import QConv2d, QLinear, QuantAct
from compress.train import evaluate

RECIPES = ["ppq", "spq", "jptp", "prune-only", "quant-only"]
SHORT = {  # a few epochs each: enough to learn digits, far below the real schedules
    "ppq": ["--prune-epochs", "2", "--stages", "2", "--epochs", "2"],
    "spq": ["--epochs", "3"],
    "jptp": ["--ft-epochs", "1"],
    "prune-only": ["--prune-epochs", "2", "--stages", "1"],
    "quant-only": ["--epochs", "1"],
}


@pytest.fixture(scope="module")
def fp32_digits(tmp_path_factory):
    from shiftq.cli import main
    out = tmp_path_factory.mktemp("fp32")
    assert main(["train", "--model", "digitnet", "--data", "digits", "--epochs", "6",
                 "--out", str(out), "--quiet"]) == 0
    return out / "checkpoint.pt"


def _check_compressed(out, model_name, pruned=True):
    report = json.loads((out / "report.json").read_text())
    raw = torch.load(out / "compressed.pt", map_location="cpu", weights_only=True)
    assert raw["kind"] == "compressed"
    model = load_model(out / "compressed.pt")          # one call rebuilds the compressed model
    assert model.config["name"] == model_name
    for path, mod, _ in layers(model):                  # every conv and linear quantized
        assert isinstance(mod, (QConv2d, QLinear)), path
        assert mod.wq.enabled
    assert any(isinstance(m, QuantAct) for m in model.modules())
    dense = {r["layer"]: r["dense"] for r in report["layers"]}
    kept = {r["layer"]: r["kept"] for r in report["layers"]}
    for name, c in model.config["widths"].items():      # physically pruned (or not, quant-only)
        mod = model.get_submodule(f"units.{name}")
        assert mod.out_channels == c == kept[name]
        assert (c == dense[name] - int(0.3 * dense[name])) if pruned else (c == dense[name])
    for k in ("fp32_test_acc", "compressed_test_acc", "params", "size_bits", "bops",
              "size_reduction", "bops_reduction", "wall_time_s", "layers"):
        assert k in report
    assert all(r["wbits"] in (4, 8) and r["abits"] in (4, 8) for r in report["layers"])
    return model, report


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_learns_digits(recipe, fp32_digits, tmp_path, run_cli):
    out = tmp_path / recipe
    code, _, err = run_cli("compress", "--model", "digitnet", "--data", "digits", "--recipe", recipe,
                           "--from", fp32_digits, "--out", out, "--quiet", *SHORT[recipe])
    assert code == 0, err
    model, report = _check_compressed(out, "digitnet", pruned=recipe != "quant-only")
    assert report["fp32_test_acc"] > 80
    assert report["compressed_test_acc"] > 60, report     # chance is 10%
    # the checkpoint reproduces the reported accuracy
    acc = evaluate(model, get_data("digits", model).test)["acc"]
    assert acc == pytest.approx(report["compressed_test_acc"], abs=1e-6)
    if recipe != "quant-only":
        assert report["size_reduction"] > 10 and report["bops_reduction"] > 50
    # `shiftq metrics --ckpt` counts the same figures on the real compressed checkpoint
    code, text, err = run_cli("metrics", "--ckpt", out / "compressed.pt", "--json")
    assert code == 0, err
    met = json.loads(text)
    for k in ("params", "size_bits", "bops", "size_reduction", "bops_reduction"):
        assert met[k] == report[k], k


@pytest.mark.parametrize("recipe", [r if r == "ppq" else pytest.param(r, marks=pytest.mark.slow)
                                    for r in RECIPES])
def test_recipe_one_epoch_resnet20_synthetic(recipe, tmp_path, run_cli):
    out = tmp_path / recipe
    code, _, err = run_cli("compress", "--model", "resnet20", "--data", "synthetic", "--recipe", recipe,
                           "--out", out, "--quiet")
    assert code == 0, err
    _, report = _check_compressed(out, "resnet20", pruned=recipe != "quant-only")
    if recipe != "quant-only":
        assert report["size_reduction"] == pytest.approx(15.78, rel=0.005)
        assert report["bops_reduction"] == pytest.approx(115.6, rel=0.005)
    assert (out / "fp32.pt").exists()


def test_resume_finishes_an_interrupted_run_identically(tmp_path, run_cli):
    out = tmp_path / "spq"
    args = ["compress", "--model", "digitnet", "--data", "synthetic", "--recipe", "spq",
            "--epochs", "2", "--out", out, "--quiet"]
    assert run_cli(*args)[0] == 0
    first = torch.load(out / "compressed.pt", weights_only=True)["state_dict"]
    (out / "compressed.pt").unlink()                     # as if killed before the last product
    code, _, err = run_cli(*args)
    assert code == 2 and "--resume" in err               # refuses to overwrite a run
    assert run_cli(*args, "--resume")[0] == 0
    again = torch.load(out / "compressed.pt", weights_only=True)["state_dict"]
    assert again.keys() == first.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("extra,needle", [
    (["--recipe", "ppq", "--prune", "1.0"], "remove every filter"),
    (["--recipe", "ppq", "--prune", "1.5"], "remove every filter"),
    (["--recipe", "spq", "--stages", "3"], "--stages does not apply to recipe spq"),
    (["--recipe", "jptp", "--epochs", "3"], "--epochs does not apply to recipe jptp"),
    (["--recipe", "quant-only", "--prune", "0.3"], "--prune does not apply to recipe quant-only"),
    (["--recipe", "ppq", "--criterion", "gm", "--gamma", "0.5"], "--gamma applies only"),
    (["--recipe", "nope"], "unknown recipe"),
    (["--recipe", "ppq", "--wbits", "9"], "bits"),
])
def test_bad_input_is_one_line_exit_2(extra, needle, tmp_path, run_cli):
    code, out, err = run_cli("compress", "--model", "digitnet", "--data", "digits", "--out",
                             tmp_path / "r", *extra)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and out == ""
    assert not (tmp_path / "r").exists()


def test_from_checkpoint_of_another_model_is_refused(tmp_path, run_cli):
    from compress.checkpoint import save_checkpoint
    from compress.models import build_model
    ck = save_checkpoint(tmp_path / "r20.pt", build_model("resnet20"))
    code, out, err = run_cli("compress", "--model", "digitnet", "--data", "digits", "--recipe", "ppq",
                             "--from", ck, "--out", tmp_path / "r")
    assert code == 2 and "resnet20" in err and err.count("\n") == 1
    code, _, err = run_cli("compress", "--model", "digitnet", "--data", "digits", "--recipe", "ppq",
                           "--from", ck, "--fp-epochs", "3", "--out", tmp_path / "r")
    assert code == 2 and "--fp-epochs" in err

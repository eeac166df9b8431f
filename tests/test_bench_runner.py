"""The benchmark runner: discovers bench_*.py, merges results, regenerates the summary."""
import json

import pytest

import bench.run as runner


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    d = tmp_path / "bench"
    d.mkdir()
    (d / "bench_alpha.py").write_text('"""Alpha doc."""\ndef run(quick=False):\n    return {"x": 1.5, "quick": quick}\n')
    (d / "bench_broken.py").write_text('def run(quick=False):\n    raise ValueError("boom")\n')
    monkeypatch.setattr(runner, "BENCH", d)
    monkeypatch.setattr(runner, "RESULTS", d / "results.json")
    monkeypatch.setattr(runner, "DOC", tmp_path / "docs" / "benchmarks.md")
    return d


def test_runs_merges_and_renders(bench_dir):
    (bench_dir / "results.json").write_text(json.dumps({"older": {"status": "ok", "result": {"y": 2}}}))
    assert runner.available() == ["alpha", "broken"]
    assert runner.main(["alpha", "--quick"]) == 0
    res = json.loads((bench_dir / "results.json").read_text())
    assert res["alpha"]["result"] == {"x": 1.5, "quick": True}
    assert "older" in res  # other sections kept
    doc = runner.DOC.read_text()
    assert "## alpha" in doc and "Alpha doc." in doc and "| x | 1.5 |" in doc and "## older" in doc


def test_a_failing_benchmark_is_recorded_and_others_run(bench_dir):
    assert runner.main([]) == 0
    res = json.loads((bench_dir / "results.json").read_text())
    assert res["broken"]["status"] == "error" and "boom" in res["broken"]["result"]["error"]
    assert res["alpha"]["status"] == "ok"


def test_unknown_benchmark(bench_dir, capsys):
    assert runner.main(["nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err

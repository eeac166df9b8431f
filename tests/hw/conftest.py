import pytest


@pytest.fixture(scope="session")
def digitnet_export(tmp_path_factory):
    """A dry-run digitnet export (untrained, quantized, pruned): the IR and its files."""
    from shiftq.export import export
    out = tmp_path_factory.mktemp("exp") / "digitnet"
    export(None, str(out), dry_run_model_name="digitnet", vectors=8, backends=[], progress=lambda *a: None)
    return out

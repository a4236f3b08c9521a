"""Round-3 fault audit, #5: a zero-byte mlflow.db: `chexops train` of a trained configuration is not "up to date,
registered": the store does not hold the version the run folder records."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.training import trained_and_registered, trained_params

from chexops import cli as cli_module
from chexops.naming import RunKey

KEY = RunKey("resnet18", "random", 3)


def _raw(root: Path) -> dict:
    return trained_params(root, "r3-store")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A configuration trained to its whole budget at lr 0.001, evaluated and registered as version 1."""
    return trained_and_registered(tmp_path_factory.mktemp("r3store"), "r3-store")


def _train_again(trained: Path, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        cli_module.main(["train", "--family", "resnet18", "--init", "random", "--truncate", "3",
                         "--params", str(trained / "params.yaml"), "--quiet"])
    captured = capsys.readouterr()
    assert info.value.code == 2, captured
    assert "up to date" not in captured.out + captured.err
    assert captured.err.count("\n") == 1 and "--restart" in captured.err
    return captured.err


def test_a_zero_byte_store_does_not_make_a_trained_run_up_to_date(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (trained / "mlflow.db").write_bytes(b"")  # the store emptied after the run was registered
    assert "empty (0 bytes)" in _train_again(trained, capsys)


def test_a_new_empty_store_does_not_make_a_trained_run_up_to_date(trained, capsys, monkeypatch, empty_store):
    import shutil

    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, trained / "mlflow.db")  # replaced by a fresh store
    err = _train_again(trained, capsys)
    assert "version 1" in err and "does not hold it" in err

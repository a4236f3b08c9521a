"""Round-3 fault audit, #8: an unrelocated copy of a project must not promote or predict with the original
folder's artifacts, and relocating a copy whose artifact folder is empty warns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from chexops import cli as cli_module

STUDY = "r3-reloc"
NAME = f"{STUDY}.resnet18.random.full"


@pytest.fixture
def copied_project(tmp_path: Path, empty_store: Path, monkeypatch):
    """The copy: its mlflow.db still records the original project's artifact folder."""
    from mlflow import MlflowClient

    original, copy = tmp_path / "original", tmp_path / "copy"
    (original / "mlartifacts" / STUDY).mkdir(parents=True)
    (original / "mlartifacts" / STUDY / "model.bin").write_bytes(b"weights")
    copy.mkdir()
    shutil.copy(empty_store, copy / "mlflow.db")
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    client.create_experiment(STUDY, artifact_location=(original / "mlartifacts" / STUDY).as_uri())
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=(original / "mlartifacts" / STUDY / "m").as_uri())
    (copy / "params.yaml").write_text(yaml.safe_dump({
        "study": {"name": STUDY}, "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"}}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(copy)
    return copy


def _chexops(capsys, *args: str) -> tuple[int, str]:
    try:
        cli_module.main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_promote_in_an_unrelocated_copy_is_refused_and_names_relocate(copied_project, capsys):
    code, err = _chexops(capsys, "promote", NAME, "1", "--alias", "champion")
    assert code == 2, err
    assert err.count("\n") == 1 and "chexops registry relocate" in err and "original" in err


def test_relocating_a_copy_without_its_artifacts_warns(copied_project, capsys):
    code, err = _chexops(capsys, "registry", "relocate")
    assert code == 0, err
    assert "warning:" in err and "holds no artifacts" in err
    code, err = _chexops(capsys, "promote", NAME, "1", "--alias", "champion")  # relocated: no longer refused
    assert code == 0, err


def test_a_version_whose_files_are_gone_is_blamed_on_the_files_not_the_name(copied_project, capsys):
    from chexops.errors import TrackingError
    from chexops.evaluate.predict_files import load_model

    _chexops(capsys, "registry", "relocate")
    with pytest.raises(TrackingError) as info:
        load_model(f"models:/{NAME}/1", f"sqlite:///{copied_project / 'mlflow.db'}")
    text = str(info.value)
    assert "artifact files are missing" in text and "Check the name" not in text and "\n" not in text

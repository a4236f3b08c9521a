"""Round-3 fault audit, #2: float pixels sent to the served model must not be truncated silently.

What `mlflow models serve` runs for POST /invocations is `scoring_server.invocations` with the model's uint8
signature; MLflow casts the JSON numbers to uint8 before chexops sees them. Python callers are refused already.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chexops import components as plugins
from chexops.errors import DataError
from chexops.models.build import build_model
from chexops.tracking import pyfunc

SIZE = 32


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("r3serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHEXOPS_LOAD_PLUGINS", "")
        plugins.reset()
        run = root / "run"
        model, report = build_model("resnet18", "random", truncate=3, num_classes=14, seed=1)
        (run / "checkpoints").mkdir(parents=True)
        torch.save(model.state_dict(), run / "checkpoints/ckpt-0000001024.pt")
        (run / "manifest.json").write_text(json.dumps({
            "run": "resnet18/random/drop-3", "family": "resnet18", "initializer": "random", "depth": 3,
            "num_classes": 14, "image_size": SIZE, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
            "checkpoints": [{"file": "checkpoints/ckpt-0000001024.pt", "step": 64, "examples": 1024, "epoch": 0,
                             "val_score": 0.7, "metrics": {}}], "report": report.to_dict()}))
        pyfunc.save_ensemble_model(run / "manifest.json", root / "model")
    plugins.reset()
    import mlflow

    return mlflow.pyfunc.load_model(str(root / "model"))


def _floats() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, size=(1, SIZE, SIZE))  # a [0, 1]-normalised image


def test_python_callers_are_refused_float_pixels(saved_model):
    with pytest.raises(DataError, match="floats are refused"):
        saved_model.unwrap_python_model().predict(None, _floats())


def test_float_pixels_over_http_are_refused_not_scored_as_black(saved_model):
    from mlflow.pyfunc import scoring_server

    body = json.dumps({"inputs": _floats().tolist()})
    try:
        response = scoring_server.invocations(body, "application/json", saved_model,
                                              saved_model.metadata.get_input_schema())
        status = response.status
    except Exception:  # noqa: BLE001 - a refusal raised as an MlflowException counts as refused
        status = 400
    assert 400 <= status < 500

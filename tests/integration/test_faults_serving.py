"""Issue 23 #2: the served model never scores float pixels silently. Over HTTP MLflow casts JSON numbers to the
signature's uint8 before the model runs, so an image scaled to [0, 1] arrived as 0s and 1s and was scored as a
black image with HTTP 200; it is now a 400 that says why. Whole pixels 0-255 still serve as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chexops import components as plugins
from chexops.models.build import build_model
from chexops.tracking import pyfunc

SIZE = 32


def make_manifest(root: Path) -> Path:
    """A real run folder: resnet18 cut by 3 blocks, one checkpoint, manifest.json as training writes it."""
    run = root / "runs" / "resnet18__random__drop-3"
    model, report = build_model("resnet18", "random", truncate=3, num_classes=14, seed=1)
    file = "checkpoints/ckpt-0000001024.pt"
    (run / file).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run / file)
    manifest = {"run": "resnet18/random/drop-3", "family": "resnet18", "initializer": "random", "depth": 3,
                "num_classes": 14, "image_size": SIZE, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                "checkpoints": [{"file": file, "step": 64, "examples": 1024, "epoch": 0, "val_score": 0.7,
                                 "metrics": {}}], "report": report.to_dict()}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run / "manifest.json"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHEXOPS_LOAD_PLUGINS", "")
        plugins.reset()
        root = tmp_path_factory.mktemp("serve")
        pyfunc.save_ensemble_model(make_manifest(root), root / "model")
        yield mlflow.pyfunc.load_model(str(root / "model"))
    plugins.reset()


def invoke(model, pixels: list) -> object:
    """What `mlflow models serve` runs for POST /invocations."""
    from mlflow.pyfunc import scoring_server

    body = json.dumps({"inputs": pixels})
    return scoring_server.invocations(body, "application/json", model, model.metadata.get_input_schema())


def test_an_image_scaled_to_0_1_is_refused_with_a_400_not_scored_black(served) -> None:
    from mlflow.exceptions import MlflowException

    unit = np.random.default_rng(0).random((2, 20, 20)).round(3)
    with pytest.raises(MlflowException) as err:
        invoke(served, unit.tolist())
    assert err.value.get_http_status_code() == 400
    body = err.value.serialize_as_json()  # the HTTP response body
    assert "only pixels 0 and 1" in body and "0-255" in body


def test_in_process_a_uint8_batch_of_0s_and_1s_is_refused_too(served) -> None:
    from chexops.errors import DataError

    with pytest.raises(DataError, match="image 1 of the request"):
        served.predict(np.stack([np.full((20, 20), 128, np.uint8), np.ones((20, 20), np.uint8)]))


def test_whole_pixels_and_integer_valued_floats_serve_as_before(served) -> None:
    x = np.random.default_rng(1).integers(0, 256, size=(2, 20, 20), dtype=np.uint8)
    want = served.predict(x).to_numpy()
    for pixels in (x.tolist(), x.astype(float).tolist()):
        response = invoke(served, pixels)
        assert response.status == 200
        got = np.array([[row[k] for k in row] for row in json.loads(response.response)["predictions"]])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_out_of_range_pixels_are_a_400(served) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as err:
        invoke(served, [[[300.0, 0.0], [12.0, 7.0]]])
    assert err.value.get_http_status_code() == 400


def test_an_over_size_request_is_a_400_before_resizing(served, monkeypatch) -> None:
    """Issue 23 #11: a 5000 x 5000 request tied a worker for a minute and ended in a 504."""
    from mlflow.exceptions import MlflowException

    from chexops.data import cache
    from chexops.evaluate import ensemble

    monkeypatch.setattr(cache, "MAX_PIXELS", 30 * 30)  # the limit scaled down with the image
    resized = []
    monkeypatch.setattr(ensemble, "prepare_images", lambda *a: resized.append(a) or None)
    with pytest.raises(MlflowException) as err:
        invoke(served, np.full((1, 40, 40), 128).tolist())
    assert err.value.get_http_status_code() == 400 and "over the limit of 900" in err.value.serialize_as_json()
    assert resized == []

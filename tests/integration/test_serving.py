"""The ensemble: one prediction path for evaluation and the pyfunc, input forms, preprocessing, MLflow schema."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.ensembles import MEAN, SIZE, STD, make_manifest
from PIL import Image

from chexops import components as plugins
from chexops.data.cache import load_image, resize_crop
from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError
from chexops.evaluate import ensemble as serving
from chexops.models.build import build_model
from chexops.tracking import pyfunc


def images(n: int, h: int = SIZE, w: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's plugin isolation
        mp.setenv("CHEXOPS_LOAD_PLUGINS", "")
        plugins.reset()
        yield make_manifest(tmp_path_factory.mktemp("run"))
    plugins.reset()


@pytest.fixture
def manifest(tmp_path: Path, built_run: Path) -> Path:
    """A private copy of the run folder, which a test may break."""
    run = shutil.copytree(built_run.parent, tmp_path / built_run.parent.name)
    return Path(run) / "manifest.json"


@pytest.fixture(scope="module")
def ensemble(built_run: Path) -> serving.Ensemble:
    m = serving.read_manifest(built_run)
    return serving.load_ensemble(m, serving.checkpoint_paths(built_run, m), torch.device("cpu"))


def test_predict_manifest_is_the_mean_of_member_sigmoids(manifest: Path) -> None:
    x = images(5)
    got = serving.predict_manifest(manifest, x, torch.device("cpu"))
    # written out independently: normalise per channel, grey replicated to RGB, sigmoid, mean over members
    t = torch.from_numpy(x).float()[:, None].repeat(1, 3, 1, 1) / 255.0
    t = (t - torch.tensor(MEAN)[None, :, None, None]) / torch.tensor(STD)[None, :, None, None]
    members = []
    for c in json.loads(manifest.read_text())["checkpoints"]:
        model, _ = build_model("resnet18", "random", truncate=3, num_classes=14, seed=99)
        model.load_state_dict(torch.load(manifest.parent / c["file"], weights_only=True))
        with torch.no_grad():
            members.append(torch.sigmoid(model.eval()(t)).numpy())
    assert got.shape == (5, 14) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.mean(members, axis=0), atol=1e-5)
    assert np.abs(members[0] - members[1]).max() > 1e-3  # the two seeds differ, so the mean is a real average


def test_cached_images_pass_unchanged_and_other_sizes_resize_like_the_cache() -> None:
    cached = images(3)
    np.testing.assert_array_equal(serving.prepare_images(cached, SIZE), cached)
    odd = images(2, 40, 50, seed=1)
    expected = np.stack([np.asarray(resize_crop(Image.fromarray(img), SIZE)) for img in odd])
    np.testing.assert_array_equal(serving.prepare_images(odd, SIZE), expected)


def test_every_array_layout_gives_the_same_pixels() -> None:
    grey = images(3, 40, 48, seed=2)
    want = serving.prepare_images(grey, SIZE)
    for layout in (grey[:, None], grey[..., None], np.repeat(grey[..., None], 3, axis=-1),
                   np.repeat(grey[:, None], 3, axis=1), grey.astype(np.int64)):
        np.testing.assert_array_equal(serving.prepare_images(layout, SIZE), want)
    rgb = np.random.default_rng(3).integers(0, 256, size=(2, 40, 48, 3), dtype=np.uint8)
    pil_grey = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in rgb])
    np.testing.assert_array_equal(serving.prepare_images(rgb, SIZE), serving.prepare_images(pil_grey, SIZE))


def test_path_inputs_decode_like_the_cache(tmp_path: Path, ensemble: serving.Ensemble) -> None:
    x = images(70, 40, 48, seed=4)  # more than one CHUNK, so chunk boundaries are exercised
    paths = []
    for i, img in enumerate(x):
        paths.append(str(tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"))
        Image.fromarray(img).save(paths[-1], quality=90)
    decoded = np.stack([load_image(Path(p), SIZE) for p in paths])
    want = serving.predict_images(ensemble, decoded)
    for form in (paths, pd.DataFrame({"path": paths}), np.array(paths, dtype=object)):
        np.testing.assert_allclose(serving.predict_images(ensemble, form), want, atol=1e-6)
    png = list(range(1, 70, 2))  # lossless files: the path and the array of the same image agree
    np.testing.assert_allclose(serving.predict_images(ensemble, [paths[i] for i in png]),
                               serving.predict_images(ensemble, x[png]), atol=1e-6)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, SIZE, SIZE), dtype=np.float32), "floats are refused"),
    (np.full((1, SIZE, SIZE), 300, dtype=np.int64), "outside 0-255"),
    (np.zeros((SIZE, SIZE), dtype=np.uint8), "must be a batch"),
    (np.zeros((1, SIZE, SIZE, 2), dtype=np.uint8), "1 or 3 channels"),
    (pd.DataFrame({"file": ["a.png"]}), "'path' column"),
    (["/nonexistent/x.png"], "/nonexistent/x.png: file not found"),
    ({"path": "a.png"}, "cannot predict on a dict"),
])
def test_bad_inputs_are_refused_with_a_reason(ensemble: serving.Ensemble, bad: object, words: str) -> None:
    with pytest.raises(DataError, match=words.replace("(", r"\(")):
        serving.predict_images(ensemble, bad)


def test_empty_input_gives_an_empty_frame(ensemble: serving.Ensemble) -> None:
    assert serving.predict_images(ensemble, np.zeros((0, SIZE, SIZE), np.uint8)).shape == (0, 14)
    assert serving.predict_images(ensemble, []).shape == (0, 14)


def test_broken_manifests_are_refused(manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    (manifest.parent / data["checkpoints"][1]["file"]).unlink()
    with pytest.raises(DataError, match="ckpt-0000002048.pt.*missing"):
        serving.predict_manifest(manifest, images(1))
    (manifest.parent / data["checkpoints"][1]["file"]).write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="ckpt-0000002048.pt cannot be loaded into resnet18"):
        serving.predict_manifest(manifest, images(1))
    manifest.write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        serving.read_manifest(manifest)
    manifest.write_text(json.dumps({**data, "num_classes": 5}))
    with pytest.raises(DataError, match="num_classes must be 14"):
        serving.read_manifest(manifest)
    with pytest.raises(DataError, match="no ensemble manifest"):
        serving.read_manifest(manifest.parent / "nope.json")


def test_saved_pyfunc_predicts_like_the_manifest_and_serves_json(tmp_path: Path, manifest: Path) -> None:
    import mlflow
    from mlflow.pyfunc import scoring_server

    pyfunc.save_ensemble_model(manifest, tmp_path / "model")
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    spec = model.metadata.get_input_schema().inputs[0]
    assert (spec.type, spec.shape) == (np.dtype(np.uint8), (-1, -1, -1))
    assert model.metadata.get_output_schema().input_names() == list(OBSERVATIONS)
    requirements = (tmp_path / "model" / "requirements.txt").read_text()
    assert all(f"{d}==" in requirements for d in ("chexops", "torch", "timm"))
    x = images(4, 36, 40, seed=5)
    want = serving.predict_manifest(manifest, x)
    got = model.predict(x)
    assert list(got.columns) == list(OBSERVATIONS)
    np.testing.assert_allclose(got.to_numpy(), want, atol=1e-6)
    # what `mlflow models serve` runs for POST /invocations
    body = json.dumps({"inputs": x.tolist()})
    response = scoring_server.invocations(body, "application/json", model, model.metadata.get_input_schema())
    assert response.status == 200
    served = pd.DataFrame(json.loads(response.response)["predictions"])
    np.testing.assert_allclose(served[list(OBSERVATIONS)].to_numpy(), want, atol=1e-6)
    # paths are refused over HTTP: the uint8 signature cannot carry strings (and the server's files stay private)
    paths = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[str(manifest)]]}})
    with pytest.raises(Exception, match="uint8"):
        scoring_server.invocations(paths, "application/json", model, model.metadata.get_input_schema())


def test_serving_imports_and_predicts_without_mlflow(monkeypatch: pytest.MonkeyPatch, manifest: Path) -> None:
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    fresh = {}
    for name, path in (("pyfunc", pyfunc.__file__), ("naming", Path(serving.__file__).parents[1] / "naming.py")):
        spec = importlib.util.spec_from_file_location(f"{name}_without_mlflow", path)
        fresh[name] = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, fresh[name])  # dataclasses look their module up there
        spec.loader.exec_module(fresh[name])
    assert fresh["pyfunc"].EnsembleModel.__bases__ == (object,)
    x = images(2)
    np.testing.assert_allclose(serving.predict_manifest(manifest, x), serving.predict_manifest(manifest, x), atol=1e-6)
    assert fresh["naming"].registered_model_name("s", "a/b/c") == "s.a.b.c"


def test_the_training_core_imports_without_mlflow_optuna_or_dvc() -> None:
    """What the GPU machine has: torch, timm, numpy, scipy, scikit-learn, pluggy, and not mlflow/optuna/dvc."""
    code = ("import sys\n"
            "for m in ('mlflow', 'optuna', 'dvc'): sys.modules[m] = None\n"
            "import chexops.stages.configuration, chexops.train.loop, chexops.evaluate.scoring\n"
            "import chexops.evaluate.ensemble\n"
            "import chexops.tracking.pyfunc\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_prediction_runs_without_tf32_and_restores_the_flags() -> None:
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            return torch.zeros(len(x), 14)

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        probs = serving.Ensemble([Spy()], SIZE, MEAN, STD, torch.device("cpu")).predict(images(3))
        assert seen == [(False, False)]
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    np.testing.assert_array_equal(probs, np.full((3, 14), 0.5, dtype=np.float32))

"""The MLflow pyfunc face of a run's checkpoint ensemble: what the registry stores and `mlflow models serve` runs.

Input contract of the logged model (its signature): a uint8 tensor (N, H, W), grayscale, any H and W; see
chexops.evaluate.ensemble for every input form `predict_images` accepts.

Float convention: pixels are whole numbers 0-255. Over HTTP MLflow casts the JSON numbers to the signature's
uint8 before the model sees them: a fraction is dropped (127.6 -> 127) and a value outside 0-255 is a 400. An image
scaled to [0, 1] would arrive as 0s and 1s and be scored as black, so an image whose every pixel is 0 or 1 is
refused (400) with the reason, never scored. In process, float arrays are refused outright.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError
from chexops.evaluate.ensemble import checkpoint_paths, load_ensemble, predict_frame, read_manifest

try:  # importable without mlflow (the pyfunc base class is then a plain object)
    from mlflow.pyfunc import PythonModel as _PythonModel
except ImportError:  # pragma: no cover - exercised only where mlflow is absent
    _PythonModel = object  # type: ignore[assignment,misc]

MANIFEST_KEY = "manifest"


def checkpoint_key(i: int) -> str:
    """The pyfunc artifact name of the manifest's i-th checkpoint."""
    return f"checkpoint-{i}"


class EnsembleModel(_PythonModel):
    """The MLflow pyfunc face of `Ensemble`. Artifacts: `manifest` and `checkpoint-<i>` in manifest order."""

    def load_context(self, context: Any) -> None:
        manifest = read_manifest(Path(context.artifacts[MANIFEST_KEY]))
        files = [Path(context.artifacts[checkpoint_key(i)]) for i in range(len(manifest["checkpoints"]))]
        self.ensemble = load_ensemble(manifest, files)

    # annotated as the signature's form: MLflow infers no schema from an ndarray hint, so the explicit one holds
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Ensemble probabilities, one column per CheXpert observation (input forms: see the module doc)."""
        refuse_oversize(model_input)
        refuse_unit_range(model_input)
        return predict_frame(self.ensemble, model_input)


def refuse_oversize(model_input: Any) -> None:
    """Refuse a request of more pixels than `chexops predict` decodes from one file (data.cache.MAX_PIXELS), with a
    400 before any image is resized. (MLflow has parsed the JSON by then: a server facing untrusted clients also
    needs a request-size limit in front of it, see the README.)"""
    from chexops.data import cache

    if isinstance(model_input, np.ndarray) and model_input.dtype != object and model_input.size > cache.MAX_PIXELS:
        raise DataError(f"the request holds {model_input.size:,} pixels ({' x '.join(map(str, model_input.shape))}), "
                        f"over the limit of {cache.MAX_PIXELS:,}; send fewer or smaller images (the model resizes "
                        "every image to its training size anyway).")


def refuse_unit_range(model_input: Any) -> None:
    """Refuse a batch with an image whose every pixel is 0 or 1: what a [0, 1]-scaled float image becomes through
    the uint8 schema over HTTP (MLflow truncates before predict runs), which would be scored as a black image."""
    if not (isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8 and model_input.ndim >= 3
            and model_input.size):
        return
    flat = model_input.reshape(len(model_input), -1)
    unit = np.flatnonzero(flat.max(axis=1) <= 1)
    if len(unit):
        raise DataError(f"image {int(unit[0])} of the request (and {len(unit) - 1} more) has only pixels 0 and 1: "
                        "that is what an image scaled to [0, 1] becomes, because the served model takes whole "
                        "pixels 0-255 and drops fractions; send round(pixels * 255) as integers 0-255.")


def model_signature() -> Any:
    """uint8 (N, H, W) grayscale in; the 14 observations' probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
                          outputs=Schema([ColSpec("float", name) for name in OBSERVATIONS]))


def pip_requirements() -> list[str]:
    """Pinned versions of what the model imports; local build labels (+cu130) dropped so pip can resolve them."""
    reqs = []
    for dist in ("chexops", "torch", "torchvision", "timm", "mlflow", "numpy", "pandas", "pillow"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def _model_kwargs(manifest_path: Path, input_example: np.ndarray | None) -> dict[str, Any]:
    """What saving and logging share: the pyfunc, its artifacts (manifest + checkpoints), signature, example."""
    manifest_path = Path(manifest_path).resolve()
    manifest = read_manifest(manifest_path)
    files = checkpoint_paths(manifest_path, manifest)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"checkpoints listed in {manifest_path} are missing: {missing}; retrain the configuration.")
    size = int(manifest["image_size"])
    return {
        # models-from-code: MLflow stores this file, not a CloudPickle of the object (no pickle to go stale)
        "python_model": str(Path(__file__).with_name("ensemble_code.py")),
        "artifacts": {MANIFEST_KEY: str(manifest_path), **{checkpoint_key(i): str(f) for i, f in enumerate(files)}},
        "signature": model_signature(),
        # a small image is a valid example: any H x W is resized, and it keeps the example files small
        "input_example": np.full((1, 16, 16), 128, dtype=np.uint8) if input_example is None else input_example,
        "pip_requirements": pip_requirements(),
        "metadata": {"chexops_run": manifest.get("run"), "family": manifest["family"], "image_size": size,
                     "checkpoints": [c["file"] for c in manifest["checkpoints"]]},
    }


def save_ensemble_model(manifest_path: Path, path: Path, input_example: np.ndarray | None = None) -> None:
    """Write the pyfunc model to the folder `path` (no tracking store needed; `mlflow models serve -m path`)."""
    import mlflow

    mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(manifest_path, input_example))


def log_ensemble_model(
    manifest_path: Path,
    artifact_path: str = "ensemble",
    input_example: np.ndarray | None = None,
    registered_model_name: str | None = None,
    run_id: str | None = None,
) -> Any:
    """Log the run's ensemble as a pyfunc model named `artifact_path` (to `run_id`, else the active run).

    Uses the global MLflow tracking URI (Tracker.log_ensemble sets it for the call). Returns MLflow's ModelInfo;
    `registered_model_version` is set when `registered_model_name` is given.
    """
    import mlflow
    from mlflow.models import Model

    kwargs = _model_kwargs(manifest_path, input_example)
    model_id = None
    if run_id is not None:
        # Model.log files a model under the *active* experiment; created here it lands in the run's own
        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        model_id = client.create_logged_model(run.info.experiment_id, name=artifact_path, source_run_id=run_id,
                                              params=run.data.params).model_id
    if input_example is None:
        # With an example MLflow loads every checkpoint and predicts it to validate serving: the slowest part of
        # registering, and six progress bars. The signature states the input; tests/test_serving.py serves it.
        kwargs.pop("input_example")
    with warnings.catch_warnings():
        # its advice to add an example, repeated on every register, is declined above on purpose
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        return Model.log(artifact_path=None, name=artifact_path, flavor=mlflow.pyfunc, run_id=run_id,
                         model_id=model_id, registered_model_name=registered_model_name, **kwargs)

"""A run's top-K checkpoints as one model: the ensemble the evaluate stage scores and the registry serves.

`predict_manifest` (what the training/evaluate code calls for test predictions) and
`chexops.tracking.pyfunc.EnsembleModel.predict` (the MLflow pyfunc) both run `predict_images` ->
`Ensemble.predict`, so a registry version predicts exactly what was evaluated. At study level, evaluation, the
pyfunc (a DataFrame with `path` and `study` columns) and `chexops predict` all combine views and members with
`Ensemble.combine_exams`: each member's maximum over a study's views, then the members' mean (the lab's
order). No mlflow here: the training core and the device machine import this module without it.

Input contract of the logged model (its signature): a uint8 tensor (N, H, W), grayscale, any H and W. MLflow's
schema enforcement checks rank and dtype of that form, and `mlflow models serve` accepts it as
`{"inputs": [[[0, 12, ...], ...], ...]}` (or `"instances"`). Through `pyfunc.load_model(...)` a caller may also
pass a 1-D object array of file paths, or of single images of any size and layout (MLflow lets such ragged
arrays through unchecked). Strings cannot pass the uint8 schema over HTTP, so a server never opens files a
client names. `EnsembleModel.predict` itself (e.g. via `unwrap_python_model()`) and `predict_images` also take
(N, H, W, 3), (N, 1, H, W), (N, H, W, 1), (N, 3, H, W), a list of paths and a DataFrame with a `path` column.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from chexops.data.cache import load_image, resize_crop
from chexops.data.labels import OBSERVATIONS
from chexops.errors import BadImage, DataError
from chexops.evaluate.inference import predict_probs
from chexops.evaluate.metrics import exam_level
from chexops.models.build import build_model

CHUNK = 64


@dataclass
class Ensemble:
    """The built member networks of one run, and how their input is made."""

    models: list[torch.nn.Module]
    image_size: int
    mean: list[float]
    std: list[float]
    device: torch.device

    def member_probs(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, image_size, image_size) -> (members, N, 14) float32: each member's sigmoid outputs."""
        if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != (self.image_size,) * 2:
            raise DataError(f"the ensemble takes uint8 (N, {self.image_size}, {self.image_size}) images, got "
                            f"{images.dtype} {images.shape}; pass them through prepare_images first.")
        if len(images) == 0:
            return np.zeros((len(self.models), 0, len(OBSERVATIONS)), dtype=np.float32)
        with _exact_fp32():
            return np.stack([predict_probs(m, images, self.device, self.mean, self.std, batch_size=CHUNK)
                             for m in self.models])

    @staticmethod
    def combine(member_probs: np.ndarray) -> np.ndarray:
        """(members, N, 14) -> (N, 14) float32: the ensemble is the mean of its members' probabilities."""
        return np.mean(member_probs, axis=0, dtype=np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, image_size, image_size) -> (N, 14) float32: the mean of the members' sigmoid outputs."""
        return self.combine(self.member_probs(images))

    @staticmethod
    def combine_exams(member_probs: np.ndarray, exam_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(members, N, 14) image outputs -> study ids and (studies, 14) float32, in the lab's order: each member's
        maximum over a study's views first, then the members' mean. (The mean first, then the maximum, differs
        whenever a study has two views.) Evaluation, `chexops predict` and the served model all call this."""
        ids, per_member = Ensemble.member_exams(member_probs, exam_ids)
        return ids, Ensemble.average_exams(per_member)

    @staticmethod
    def average_exams(per_member: np.ndarray) -> np.ndarray:
        """(members, studies, 14) member study maxima -> (studies, 14) float32: the ensemble's study outputs."""
        return np.mean(per_member, axis=0).astype(np.float32)

    @staticmethod
    def member_exams(member_probs: np.ndarray, exam_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(members, N, 14) image outputs -> study ids and (members, studies, 14): each member's maximum over a
        study's views (what `combine_exams` averages, and what scores each checkpoint on its own)."""
        if len(member_probs) == 0:
            raise DataError("an ensemble needs at least one member to predict studies.")
        ids, _ = exam_level(member_probs[0], exam_ids)
        return ids, np.stack([exam_level(p, exam_ids)[1] for p in member_probs])


@contextmanager
def _exact_fp32() -> Iterator[None]:
    """TF32 off while predicting: a process that enabled it for training must still match the served model."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at `path`, checked for what serving needs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no ensemble manifest at {path}; train the configuration first (it writes manifest.json).")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {path} is not valid JSON ({exc}); retrain the configuration.") from None
    missing = [k for k in ("family", "depth", "num_classes", "image_size", "normalization", "checkpoints")
               if k not in manifest]
    if missing:
        raise DataError(f"manifest {path} lacks {missing}; it was not written by chexops training.")
    if not manifest["checkpoints"]:
        raise DataError(f"manifest {path} lists no checkpoints (no validation pass kept one); train longer.")
    if manifest["num_classes"] != len(OBSERVATIONS):
        raise DataError(f"manifest {path} has {manifest['num_classes']} outputs; serving names the "
                        f"{len(OBSERVATIONS)} CheXpert observations, so num_classes must be {len(OBSERVATIONS)}.")
    return manifest


def checkpoint_paths(manifest_path: Path, manifest: dict[str, Any]) -> list[Path]:
    """The checkpoint files, in manifest order, resolved against the manifest's folder."""
    return [Path(manifest_path).parent / c["file"] for c in manifest["checkpoints"]]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_ensemble(manifest: dict[str, Any], files: Sequence[Path], device: torch.device | None = None) -> Ensemble:
    """Build every member as a random-init network of the manifest's shape, then load its weights strictly."""
    device = device or default_device()
    models = []
    for file in files:
        if not Path(file).is_file():
            raise DataError(f"checkpoint {file} listed in the manifest is missing; retrain or restore the run.")
        # "random" gives the structure without reaching for pretrained weights, which serving never needs
        model, _ = build_model(manifest["family"], "random", truncate=int(manifest["depth"]),
                               num_classes=int(manifest["num_classes"]),
                               truncation=manifest.get("strategy"))  # manifests before strategies: drop-last-k
        try:
            model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
            raise DataError(f"checkpoint {file} cannot be loaded into {manifest['family']} truncated by "
                            f"{manifest['depth']}: {exc}") from None
        models.append(model.to(device).eval())
    norm = manifest["normalization"]
    return Ensemble(models, int(manifest["image_size"]), [float(v) for v in norm["mean"]],
                    [float(v) for v in norm["std"]], device)


def predict_manifest(manifest_path: Path, images: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """Ensemble probabilities (N, 14) float32 of the run whose manifest is at `manifest_path`.

    `images` may be anything `prepare_images` takes; cached uint8 (N, S, S) images of the run's size pass
    through unchanged.
    """
    manifest = read_manifest(manifest_path)
    ensemble = load_ensemble(manifest, checkpoint_paths(manifest_path, manifest), device)
    return predict_images(ensemble, images)


def predict_images(ensemble: Ensemble, model_input: Any) -> np.ndarray:
    """Probabilities for arrays or paths, decoded and predicted CHUNK images at a time."""
    out = [ensemble.predict(chunk) for chunk in _chunks(model_input, ensemble.image_size)]
    return np.concatenate(out) if out else np.zeros((0, len(OBSERVATIONS)), dtype=np.float32)


def predict_frame(ensemble: Ensemble, model_input: Any) -> pd.DataFrame:
    """What the served model returns: a row of 14 probabilities per image or, for a DataFrame with `path` and
    `study` columns, a row per study (a leading `study` column) combined by `Ensemble.combine_exams`."""
    if not (isinstance(model_input, pd.DataFrame) and "study" in model_input.columns):
        return pd.DataFrame(predict_images(ensemble, model_input), columns=list(OBSERVATIONS))
    if model_input["study"].isna().any():
        raise DataError("the `study` column has empty entries; give every image its study id (e.g. patient1/study1).")
    chunks = [ensemble.member_probs(chunk) for chunk in _chunks(model_input, ensemble.image_size)]
    members = (np.concatenate(chunks, axis=1) if chunks else
               np.zeros((len(ensemble.models), 0, len(OBSERVATIONS)), dtype=np.float32))
    ids, probs = ensemble.combine_exams(members, model_input["study"].astype(str).tolist())
    frame = pd.DataFrame(probs, columns=list(OBSERVATIONS))
    frame.insert(0, "study", ids)
    return frame


def _chunks(model_input: Any, size: int) -> Iterator[np.ndarray]:
    """Prepared uint8 (n, size, size) chunks, aligned to CHUNK so every input form batches identically."""
    if isinstance(model_input, pd.DataFrame):
        if "path" not in model_input.columns:
            raise DataError(f"a DataFrame input needs a 'path' column of image files; got columns "
                            f"{list(model_input.columns)}. Pass image arrays as a numpy array instead.")
        model_input = model_input["path"].tolist()
    if isinstance(model_input, (list, tuple)) or (isinstance(model_input, np.ndarray) and model_input.ndim == 1):
        items = list(model_input)
        for start in range(0, len(items), CHUNK):
            yield np.stack([_one(item, size) for item in items[start:start + CHUNK]])
        return
    if not isinstance(model_input, np.ndarray):
        raise DataError(f"cannot predict on a {type(model_input).__name__}; pass a numpy image array, a list of "
                        "image paths or a DataFrame with a 'path' column.")
    for start in range(0, len(model_input), CHUNK):
        yield prepare_images(model_input[start:start + CHUNK], size)


def _one(item: Any, size: int) -> np.ndarray:
    """One entry of a 1-D input: a file path, or a single image array in any accepted layout."""
    if isinstance(item, (str, Path)):
        try:
            return load_image(Path(item), size)
        except BadImage as exc:
            raise DataError(f"image {item}: {exc}.") from None
    if isinstance(item, np.ndarray) and item.ndim in (2, 3):
        return prepare_images(item[None], size)[0]
    raise DataError(f"each entry must be an image path or a 2-D/3-D image array, got {type(item).__name__} "
                    f"{getattr(item, 'shape', '')}.")


def prepare_images(images: np.ndarray, size: int) -> np.ndarray:
    """A batch in any accepted layout -> uint8 (N, size, size), preprocessed exactly as the cache does.

    Grayscale (N, H, W) of the right size is returned as is (the cache's resize-crop is the identity there).
    """
    images = _as_uint8(np.asarray(images))
    if images.ndim == 4:
        images = _to_gray(images)
    elif images.ndim != 3:
        raise DataError(f"images must be a batch (N, H, W), (N, H, W, 3) or (N, 1, H, W), got shape {images.shape}.")
    if images.shape[1:] == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(resize_crop(Image.fromarray(img), size))
    return out


def _as_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    # JSON requests without a schema arrive as int64; whole numbers in 0..255 are the same pixels
    if np.issubdtype(images.dtype, np.integer) and (images.size == 0 or (images.min() >= 0 and images.max() <= 255)):
        return images.astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer):
        raise DataError(f"images must be pixels 0-255, got {images.dtype} with values outside 0-255.")
    if np.issubdtype(images.dtype, np.floating):
        raise DataError(f"images must be uint8 pixels 0-255, got {images.dtype}; floats are refused because "
                        "their scale (0-1 or 0-255) would be a guess. Convert them to uint8 first.")
    raise DataError(f"images must be uint8 pixels 0-255, got {images.dtype}.")


def _to_gray(images: np.ndarray) -> np.ndarray:
    """(N, 1, H, W), (N, H, W, 1), (N, H, W, 3) or (N, 3, H, W) -> (N, H, W), RGB weighted as PIL's convert("L")."""
    if images.shape[1] == 1:
        return images[:, 0]
    if images.shape[-1] == 1:
        return images[..., 0]
    if images.shape[-1] != 3 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] != 3:
        raise DataError(f"a 4-D batch must have 1 or 3 channels (first or last), got shape {images.shape}.")
    # the cache decodes colour files with PIL's convert("L"); doing the same keeps serving bit-identical
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("L"))
                     for img in images])

"""What `chexops predict` does: probabilities of a chexops ensemble (any MLflow model URI) for files, folders, CSVs.

Inputs are untrusted. Nothing outside a given folder is read (symlinks that resolve outside it are refused), a
CSV's Path may not escape its dataset folder, and images over chexops.data.cache.MAX_PIXELS are refused from
their header without being decoded (the decoding is serving's own `load_image`, inside the model). Images are
decoded batch by batch through the same pyfunc route `mlflow models serve` uses, never all at once.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError, TrackingError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# A side this short holds no diagnostic detail (radiographs are hundreds of pixels); such a file is predicted, as
# any size is resized to the model's input, but flagged: it is more likely a thumbnail, an icon or a broken export.
MIN_SIDE = 32
_STUDY = re.compile(r"(?:^|/)(patient\d+)/(study\d+)/[^/]+$")


@dataclass
class Inputs:
    """Image files to predict, in order, and how many files a folder held that are not images by name."""

    paths: list[Path] = field(default_factory=list)
    ignored: int = 0


def collect_inputs(inputs: Sequence[str | Path]) -> Inputs:
    """Image files, folders (recursively: *.jpg, *.jpeg, *.png) and CheXpert-format CSVs -> the files to read."""
    found = Inputs()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files, ignored = folder_images(path)
            found.paths += files
            found.ignored += ignored
        elif path.suffix.lower() == ".csv" and path.is_file():
            found.paths += csv_images(path)
        elif path.exists() or path.is_symlink():
            found.paths.append(path)  # named by the user: decoding decides whether it is an image
        else:
            raise DataError(f"input {raw} does not exist; pass image files, folders or CheXpert-format CSVs.")
    return found


def folder_images(folder: Path) -> tuple[list[Path], int]:
    """The image files under `folder`, sorted, and the count of other files; links out of the folder refused."""
    root = folder.resolve()
    files: list[Path] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_unreadable, followlinks=False):
        here = Path(dirpath)
        # a linked folder is not walked: its target, being inside the folder, is walked where it really is
        for name in sorted(dirnames) + sorted(filenames):
            entry = here / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise DataError(f"{entry} is a link to {entry.resolve()}, outside the folder {folder}; chexops "
                                "reads nothing outside a folder it is given. Remove the link or pass the file itself.")
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES):
                files.append(here / name)
            else:
                ignored += 1
    return files, ignored


def _unreadable(exc: OSError) -> None:
    # os.walk would skip an unlistable folder silently, and its images would be missing from the output unnoticed
    raise DataError(f"cannot list {exc.filename}: {exc.strerror}; fix its permissions or leave it out of the input.")


def csv_images(csv_path: Path) -> list[Path]:
    """The image files a CheXpert-format CSV lists, resolved against its dataset folder (the CSV's folder)."""
    from chexops.data.chexpert import read_split_csv, resolve_image

    root = Path(csv_path).absolute().parent  # Path values start with this folder's name, as in CheXpert
    index = read_split_csv(root, Path(csv_path))
    return [resolve_image(root, rel) for rel in index["path"]]


def exam_of(path: Path | str) -> str | None:
    """`patient00001/study1` for `.../patient00001/study1/view1_frontal.jpg`, else None."""
    match = _STUDY.search(Path(path).as_posix())
    return f"{match.group(1)}/{match.group(2)}" if match else None


def load_model(model_uri: str, uri: str | None = None) -> Any:
    """The pyfunc model at `model_uri` (e.g. models:/NAME@champion), read from the store at `uri`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from chexops.tracking.store import global_tracking_uri

    try:
        if uri is None:
            model = mlflow.pyfunc.load_model(model_uri)
        else:
            with global_tracking_uri(uri):
                model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"cannot load model {model_uri} (tracking URI {uri or mlflow.get_tracking_uri()}): "
                            f"{exc}. Check the name and alias with `chexops registry list`.") from None
    schema = model.metadata.get_output_schema()
    if schema is None or schema.input_names() != list(OBSERVATIONS):
        raise DataError(f"model {model_uri} does not output the 14 CheXpert observations (outputs: "
                        f"{schema.input_names() if schema else 'unknown'}); chexops predict needs a chexops ensemble.")
    return model


@dataclass
class Prediction:
    """Probabilities (N, 14) of the files in `paths`, the files skipped with their reasons, and predicted files
    that deserve a second look (e.g. a 1 x 1 image) with what is odd about them."""

    paths: list[Path]
    probs: np.ndarray
    skipped: list[tuple[Path, str]]
    warnings: list[tuple[Path, str]] = field(default_factory=list)


def predict_files(model: Any, paths: Sequence[Path], batch: int = 64, skip_bad: bool = False,
                  progress: bool = True) -> Prediction:
    """Predict `batch` files at a time through the model's path route; a bad file is an error unless `skip_bad`."""
    if batch < 1:
        raise DataError(f"batch must be at least 1, got {batch}.")
    kept: list[Path] = []
    out: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, file=sys.stderr) as bar:
        for chunk in _batches(list(paths), batch):
            for path, probs, reason in _predict_batch(model, chunk, skip_bad):
                if reason is None:
                    kept.append(path)
                    out.append(probs)
                else:
                    skipped.append((path, reason))
            bar.update(len(chunk))
    probs = np.stack(out).astype(np.float32) if out else np.zeros((0, len(OBSERVATIONS)), dtype=np.float32)
    warnings = [(p, note) for p in kept if (note := size_note(p)) is not None]
    return Prediction(kept, probs, skipped, warnings)


def size_note(path: Path) -> str | None:
    """Why an image that decoded is suspect for its size (read from its header), or None."""
    from PIL import Image

    with Image.open(path) as im:  # decoded once already, inside the model; this reads the header only
        w, h = im.size
    if min(w, h) >= MIN_SIDE:
        return None
    return (f"only {w} x {h} pixels, upscaled to the model's input; a radiograph is hundreds of pixels on a side, "
            "so check that this is the image you meant")


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _call(model: Any, paths: Sequence[Path]) -> np.ndarray:
    # a 1-D object array of paths is the pyfunc's path route: serving's load_image decodes (and size-checks) them
    frame = model.predict(np.array([str(p) for p in paths], dtype=object))
    return frame[list(OBSERVATIONS)].to_numpy(dtype=np.float32)


_Result = tuple[Path, np.ndarray | None, str | None]


def _predict_batch(model: Any, paths: list[Path], skip_bad: bool) -> Iterator[_Result]:
    """(path, probabilities, None) per file, or (path, None, reason) for a skipped one."""
    try:
        probs = _call(model, paths)
    except DataError as exc:
        if not skip_bad:
            raise DataError(f"{exc} Remove or fix the file, or pass --skip-bad to skip unreadable files.") from None
    else:
        yield from ((p, row, None) for p, row in zip(paths, probs, strict=True))
        return
    for path in paths:  # the batch held a bad file: find it (and any other) one file at a time
        try:
            yield path, _call(model, [path])[0], None
        except DataError as exc:
            yield path, None, str(exc).removeprefix(f"image {path}: ").rstrip(".")


def write_outputs(out: Path, prediction: Prediction, model: Any) -> tuple[Path | None, int]:
    """`out`: path + 14 probabilities per image; `<stem>_studies.csv`: one row per recognised study, combined as
    evaluation combines them (each member's maximum over the study's views, then the members' mean).

    Returns the studies file (None when no path shows patientN/studyN) and how many studies it holds.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(prediction.probs, columns=list(OBSERVATIONS))
    frame.insert(0, "path", [str(p) for p in prediction.paths])
    frame.to_csv(out, index=False)
    studies = [exam_of(p) for p in prediction.paths]
    known = [i for i, s in enumerate(studies) if s is not None]
    study_path = out.with_name(f"{out.stem}_studies.csv")
    if not known:
        study_path.unlink(missing_ok=True)  # one left by an earlier run would look like this run's
        return None, 0
    # the served model's study route (Ensemble.combine_exams) needs each member's view outputs, which the
    # per-image probabilities above no longer hold: the known images are decoded once more for it
    frame = pd.DataFrame({"path": [str(prediction.paths[i]) for i in known], "study": [studies[i] for i in known]})
    per_exam = model.unwrap_python_model().predict(None, frame)
    per_exam.to_csv(study_path, index=False)
    return study_path, len(per_exam)

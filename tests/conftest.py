"""Shared fixtures of every tier: tests/fixtures/ holds the helpers, and the fixtures registered here are what
test modules use (no test module imports another)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.register_assert_rewrite("fixtures")

from fixtures.images import model_dir  # noqa: E402, F401
from fixtures.predict import registered  # noqa: E402, F401
from fixtures.registry import tracker  # noqa: E402, F401
from fixtures.servers import mlflow_server, postgres  # noqa: E402, F401
from fixtures.study import tiny_study  # noqa: E402, F401
from fixtures.training import prepared  # noqa: E402, F401

from chexops.data.labels import CSV_HEADER, OBSERVATIONS  # noqa: E402

LABEL_CYCLE = ("1.0", "0.0", "-1.0", "")


def _image(path: Path, seed: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path, quality=90)


def build_chexpert(parent: Path, name: str = "CheXpert-v1.0-small", test: bool = True) -> Path:
    """A tiny folder in exact CheXpert format: train patients 1-6, valid 101-103, test 201-203.

    Train: patient p has 1 + p % 2 studies, each with a frontal view; study1 of every third patient also has a
    lateral. Labels cycle through 1.0, 0.0, -1.0 and blank. Images are 40 x 48 noise JPEGs.
    """
    root = parent / name
    seed = 0
    for split, patients in (("train", range(1, 7)), ("valid", range(101, 104))):
        rows = []
        for p in patients:
            for s in range(1, 2 + p % 2 if split == "train" else 2):
                views = ["frontal", "lateral"] if s == 1 and p % 3 == 0 else ["frontal"]
                labels = [LABEL_CYCLE[(p + s + k) % 4] for k in range(len(OBSERVATIONS))]
                for v, view in enumerate(views, start=1):
                    rel = f"{split}/patient{p:05d}/study{s}/view{v}_{view}.jpg"
                    _image(root / rel, seed := seed + 1, (40, 48))
                    ap_pa = "AP" if view == "frontal" else ""
                    rows.append([f"{name}/{rel}", "Female" if p % 2 else "Male", str(50 + p), view.title(), ap_pa,
                                 *labels])
        with open(root / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_HEADER)
            writer.writerows(rows)
    if test:
        rows = []
        for p in range(201, 204):
            views = ["frontal", "lateral"] if p == 201 else ["frontal"]
            for v, view in enumerate(views, start=1):
                _image(root / f"test/patient{p:05d}/study1/view{v}_{view}.jpg", seed := seed + 1, (40, 48))
            rows.append([f"CheXpert-v1.0/test/patient{p:05d}/study1", *[(p + k) % 2 for k in range(len(OBSERVATIONS))]])
        with open(root / "groundtruth.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["Study", *OBSERVATIONS])
            writer.writerows(rows)
    return root


@pytest.fixture
def make_chexpert(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_chexpert(name=..., test=...) -> the dataset folder, under tmp_path."""
    return lambda **kwargs: build_chexpert(tmp_path, **kwargs)


@pytest.fixture(autouse=True)
def builtin_plugins_only(monkeypatch: pytest.MonkeyPatch):
    """Tests see the built-in plugins only, unless a test sets CHEXOPS_LOAD_PLUGINS itself."""
    from chexops import components as plugins

    monkeypatch.setenv("CHEXOPS_LOAD_PLUGINS", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach for the model hub
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised, empty MLflow SQLite store to copy: creating one runs MLflow's migrations (~10 s)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on shared CI cores run several times faster single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

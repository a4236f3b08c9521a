"""The reference models the evidence checks compare runs with: a pixel baseline (logistic regression on
downsampled pixels) and, per pretrained initializer and family, linear probes on frozen pretrained and random
features, all fitted on the training split and scored on the test split exactly as the runs are (study level: a
study's views' maximum). Nothing is chosen: fixed settings, no search.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexops.analysis.results import Study
from chexops.data.labels import OBSERVATIONS, STUDY_TASKS, task_index
from chexops.errors import ChexopsError
from chexops.evaluate.bootstrap import auroc_replicates
from chexops.naming import PRETRAIN_FILE

PIXEL_SIZE = 16  # the pixel baseline's images: PIXEL_SIZE x PIXEL_SIZE area averages
PROBE_TRAIN_IMAGES = 1000  # training images a baseline or probe is fitted on (a seeded subset when more)


@dataclass(frozen=True)
class Reference:
    """Study-level test probabilities of a model that is not a run (the pixel baseline, a probe), in the Study's
    study order, with its AUROC-6."""

    name: str
    probs: np.ndarray
    auroc_6: float
    what: str = ""


@dataclass(frozen=True)
class References:
    """What the analyze stage computed beside the runs: the pixel baseline, and per pretrained initializer and
    family the probe on its features and on random features. Any of them may be absent (then not checked)."""

    baseline: Reference | None = None
    probes: dict[tuple[str, str], tuple[Reference, Reference]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # per (initializer, family) with a pretraining step: its budget and final loss (the pretrain stage's record)
    pretraining: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    train_images: int = 0  # training images the baseline and probes were fitted on


def auroc_6(truth: np.ndarray, probs: np.ndarray) -> float:
    cols = task_index(STUDY_TASKS)
    full = np.arange(truth.shape[0])[None, :]
    return float(np.nanmean(auroc_replicates(truth[:, cols], probs[:, cols], full)[0]))


def pixel_features(images: np.ndarray, size: int = PIXEL_SIZE) -> np.ndarray:
    """uint8 (N, S, S) -> float32 (N, size * size): area averages over a size x size grid, in [0, 1]."""
    n, s = images.shape[0], images.shape[1]
    edges = np.linspace(0, s, size + 1).round().astype(int)
    x = np.asarray(images, dtype=np.float32) / 255.0
    rows = np.stack([x[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], axis=1)
    cells = np.stack([rows[:, :, a:b].mean(axis=2) for a, b in zip(edges[:-1], edges[1:], strict=True)], axis=2)
    return cells.reshape(n, size * size)


def fit_probe(train_x: np.ndarray, targets: np.ndarray, mask: np.ndarray, test_x: np.ndarray,
              test_studies: Sequence[str], study_order: Sequence[str]) -> np.ndarray:
    """Logistic regression (C = 1, standardised inputs: nothing chosen) per study task on the labelled training
    rows (`mask`), applied to the test images; each study scored by its views' maximum, in `study_order`. Tasks
    with one class in training, and the non-study observations, get 0.5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tx, ex = scaler.transform(train_x), scaler.transform(test_x)
    image_probs = np.full((len(test_x), len(OBSERVATIONS)), 0.5)
    for j in task_index(STUDY_TASKS):
        rows = mask[:, j] > 0
        y = targets[rows, j] > 0.5
        if y.all() or not y.any():
            continue
        model = LogisticRegression(C=1.0, max_iter=500).fit(tx[rows], y)
        image_probs[:, j] = model.predict_proba(ex)[:, 1]
    frame = pd.DataFrame(image_probs).assign(study=list(test_studies)).groupby("study").max()
    return frame.loc[list(study_order)].to_numpy(dtype=float)


def _normalization(report: dict[str, Any], pretrained: bool, info: dict[str, Any]) -> tuple[list, list]:
    """As training normalises: the initializer's own statistics, else ImageNet's for pretrained weights, else the
    training cache's."""
    if report.get("init_normalization"):
        return report["init_normalization"]["mean"], report["init_normalization"]["std"]
    if pretrained:
        return report["normalization"]["mean"], report["normalization"]["std"]
    return [float(info["mean"])] * 3, [float(info["std"])] * 3


def frozen_features(family: str, init: str, pretrain_dir: Path, images: Sequence[np.ndarray], seed: int,
                    info: dict[str, Any], weights_dir: str | None = None) -> list[np.ndarray]:
    """Globally pooled features of the untrained head's input for each image array, the backbone frozen."""
    import torch

    from chexops.components.registry import get_registry
    from chexops.data.loader import to_model_input
    from chexops.models.build import build_model

    model, report = build_model(family, init, seed=seed, weights_dir=weights_dir, pretrain_dir=pretrain_dir)
    spec, _ = get_registry().initializer(init)
    mean, std = _normalization(report.to_dict(), spec.pretrained, info)
    model.eval()
    out = []
    with torch.no_grad():
        for arr in images:
            feats = []
            for start in range(0, len(arr), 256):
                x = to_model_input(torch.from_numpy(np.array(arr[start:start + 256]))[:, None], "cpu", mean, std)
                f = model.features(x)
                feats.append((model.pool(f).flatten(1) if f.ndim == 4 else f).numpy())
            out.append(np.concatenate(feats))
    return out


def references(config: Any, study: Study, keys: Sequence[Any], runs_dir: Path) -> References:
    """The pixel baseline and, for each full run of a pretrained initializer, the probe on its family's frozen
    pretrained features against random ones, all fitted on (a seeded subset of) the training split's labelled
    images under the study's label policy and scored on the test split like the runs."""
    from chexops.components.registry import get_registry
    from chexops.data.cache import load_split

    train, test = (load_split(Path(config.data.cache_dir), s) for s in ("train", "test"))
    rng = np.random.default_rng(config.analysis.seed)
    n = len(train.images)
    rows = np.sort(rng.choice(n, PROBE_TRAIN_IMAGES, replace=False)) if n > PROBE_TRAIN_IMAGES else np.arange(n)
    targets, mask = get_registry().label_policy(config.data.label_policy).apply(train.labels[rows])
    train_images = np.asarray(train.images[rows])
    test_studies = test.index["study"].astype(str).tolist()
    if sorted(set(test_studies)) != sorted(study.studies):
        return References(notes=("the prepared test cache holds other studies than the runs' predictions; the "
                                 "pixel baseline and probes were not computed (re-run prepare and the runs)",))

    def probe(train_x: np.ndarray, test_x: np.ndarray, name: str, what: str) -> Reference:
        p = fit_probe(train_x, targets, mask, test_x, test_studies, study.studies)
        return Reference(name, p, auroc_6(study.truth, p), what)

    baseline = probe(pixel_features(train_images), pixel_features(np.asarray(test.images)), "pixel baseline",
                     f"logistic regression on {PIXEL_SIZE}x{PIXEL_SIZE} downsampled pixels")
    probes, pretraining, notes = {}, {}, []
    registry, seed = get_registry(), config.train.seed
    for key in keys:
        spec, _ = registry.initializer(key.initializer)
        if key.depth != 0 or key.fraction != 1.0 or key.seed is not None or not spec.pretrained:
            continue
        both = []
        try:
            for init in (key.initializer, "random"):
                tr, te = frozen_features(key.family, init, key.pretrain_dir(runs_dir), [train_images, test.images],
                                         seed, train.info, config.model.weights_dir)
                both.append(probe(tr, te, f"{key.family}/{init} probe", f"linear probe on frozen {init} features"))
        except ChexopsError as exc:  # e.g. the backbone is not on this machine: said, not crashed on
            notes.append(f"{key.family}/{key.initializer}: linear probe not computed ({exc})")
            continue
        probes[(key.initializer, key.family)] = (both[0], both[1])
        record = key.pretrain_dir(runs_dir) / PRETRAIN_FILE
        if spec.pretrain is not None and record.is_file():
            pretraining[(key.initializer, key.family)] = pretraining_budget(json.loads(record.read_text()))
    return References(baseline, probes, tuple(notes), pretraining, len(rows))


def pretraining_budget(record: dict[str, Any]) -> dict[str, Any]:
    """Images seen, steps and final contrastive loss of a pretraining record, beside the loss of chance (a
    uniform guess among the positive and the queue's negatives: ln(queue + 1))."""
    queue = (record.get("settings") or {}).get("queue")
    return {"examples": record.get("examples"), "steps": record.get("steps"), "final_loss": record.get("final_loss"),
            "chance_loss": float(np.log(queue + 1)) if queue else None, "method": record.get("method")}

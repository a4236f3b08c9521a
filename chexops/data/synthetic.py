"""A synthetic dataset in exactly the CheXpert-v1.0-small on-disk format.

Labels come from a correlated latent model with CheXpert-like prevalences; each image is a phantom
(chexops.data.phantom) whose findings follow its study's labels, uncertain ones drawn weak or ambiguous.
Every random choice is seeded from (seed, patient, study, view), so output is byte-identical for a seed
whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image
from tqdm import tqdm

from chexops.data.labels import CSV_HEADER, OBSERVATIONS
from chexops.data.phantom import render, sample_anatomy
from chexops.data.processes import clean_context
from chexops.errors import ConfigError, DataError
from chexops.naming import TEST_LABELS_FILE

DATASET_DIR = "CheXpert-v1.0-small"
GROUNDTRUTH_HEADER: tuple[str, ...] = ("Study", *OBSERVATIONS)
MIN_PATIENTS = 10
SPLITS = ("train", "valid", "test")
MARKER = ".chexops-synthetic.json"  # beside the dataset: marks it as ours, so a rerun may replace it

_PATHOLOGIES = OBSERVATIONS[1:]  # No Finding is derived from the others
_CHILDREN = ("Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")  # of Lung Opacity
# Per pathology: train positive, train uncertain, train explicit negative, valid/test positive fractions,
# after CheXpert train; valid/test are enriched as the real validation set is. Lung Opacity's are its own
# share; its children lift it to about 47%.
_RATES = {
    "Enlarged Cardiomediastinum": (0.048, 0.055, 0.095, 0.15),
    "Cardiomegaly": (0.12, 0.036, 0.05, 0.25),
    "Lung Opacity": (0.13, 0.024, 0.03, 0.08),
    "Lung Lesion": (0.04, 0.006, 0.005, 0.06),
    "Edema": (0.23, 0.058, 0.094, 0.2),
    "Consolidation": (0.066, 0.124, 0.124, 0.14),
    "Pneumonia": (0.027, 0.084, 0.01, 0.06),
    "Atelectasis": (0.15, 0.15, 0.006, 0.3),
    "Pneumothorax": (0.087, 0.015, 0.25, 0.06),
    "Pleural Effusion": (0.386, 0.052, 0.15, 0.3),
    "Pleural Other": (0.016, 0.012, 0.001, 0.05),
    "Fracture": (0.04, 0.003, 0.011, 0.05),
    "Support Devices": (0.52, 0.005, 0.027, 0.45),
}
# Loadings on four latent factors (cardiac/fluid, acuity, airspace disease, trauma): they make findings
# co-occur as they do clinically, e.g. edema with cardiomegaly and effusion, devices with acute disease.
_LOADINGS = {
    "Enlarged Cardiomediastinum": (0.5, 0.1, 0.0, 0.0),
    "Cardiomegaly": (0.65, 0.1, 0.0, 0.0),
    "Lung Opacity": (0.1, 0.3, 0.55, 0.0),
    "Lung Lesion": (0.0, 0.0, 0.2, 0.0),
    "Edema": (0.6, 0.35, 0.1, 0.0),
    "Consolidation": (0.0, 0.3, 0.6, 0.0),
    "Pneumonia": (0.0, 0.2, 0.65, 0.0),
    "Atelectasis": (0.1, 0.4, 0.3, 0.1),
    "Pneumothorax": (0.0, 0.3, 0.0, 0.45),
    "Pleural Effusion": (0.5, 0.4, 0.1, 0.0),
    "Pleural Other": (0.1, 0.0, 0.1, 0.3),
    "Fracture": (0.0, 0.1, 0.0, 0.6),
    "Support Devices": (0.1, 0.75, 0.0, 0.15),
}
# The factors are mildly anti-correlated (competing explanations): with independent factors, too many
# studies would come out with no finding at all (about 20% against CheXpert's 10%).
_FACTOR_CORR = np.full((4, 4), -0.3) + 1.3 * np.eye(4)
_W = np.array([_LOADINGS[n] for n in _PATHOLOGIES]) @ np.linalg.cholesky(_FACTOR_CORR)
_UNIQUE = np.sqrt(1 - (_W**2).sum(axis=1))
_TAG_PATIENT, _TAG_STUDY, _TAG_ANATOMY, _TAG_VIEW = 1, 2, 3, 4


def _thresholds(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Latent cut-offs (positive above the first, uncertain/ambiguous above the second)."""
    inv = NormalDist().inv_cdf
    pos, unc = [], []
    for name in _PATHOLOGIES:
        p_pos, p_unc, _, p_eval = _RATES[name]
        if split != "train":  # radiologists resolve uncertainty; keep an ambiguous band half as wide
            p_pos, p_unc = p_eval, p_unc / 2
        pos.append(inv(1 - p_pos))
        unc.append(inv(1 - (p_pos + p_unc)))
    return np.array(pos), np.array(unc)


_CUTS = {split: _thresholds(split) for split in SPLITS}
_NEG = np.array([_RATES[n][2] / (1 - _RATES[n][0] - _RATES[n][1]) for n in _PATHOLOGIES])


def sample_exam(rng: np.random.Generator, split: str) -> tuple[list[float | None], np.ndarray]:
    """Labels (1.0, 0.0, -1.0 or None for blank, OBSERVATIONS order) and rendering severities of a study.

    Train labels read like the CheXpert labeller: positives, uncertains, sparse explicit negatives and
    blanks. Valid/test labels are 0/1; an ambiguous finding there is drawn weak and labelled either way.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}.")
    n = len(_PATHOLOGIES)
    z = _W @ rng.standard_normal(_W.shape[1]) + _UNIQUE * rng.standard_normal(n)
    u, full, weak, coin = rng.random(n), rng.uniform(0.55, 1, n), rng.uniform(0.2, 0.45, n), rng.random(n)
    pos_cut, unc_cut = _CUTS[split]
    state = np.where(z > pos_cut, 2, np.where(z > unc_cut, 1, 0))
    opacity = _PATHOLOGIES.index("Lung Opacity")
    if any(state[_PATHOLOGIES.index(c)] == 2 for c in _CHILDREN):
        state[opacity] = 2
    severity = np.where(state == 2, full, 0.0)
    labels: list[float | None]
    if split == "train":  # uncertain: half weak, a quarter clearly present, a quarter absent
        severity = np.where(state == 1, np.select([coin < 0.5, coin < 0.75], [weak, full], 0.0), severity)
        labels = [1.0 if s == 2 else -1.0 if s == 1 else 0.0 if u[i] < _NEG[i] else None
                  for i, s in enumerate(state)]
        no_finding = 1.0 if not state[:-1].any() else None
    else:
        severity = np.where(state == 1, weak, severity)
        labels = [1.0 if s == 2 or (s == 1 and coin[i] < 0.5) else 0.0 for i, s in enumerate(state)]
        no_finding = 1.0 if not any(labels[:-1]) else 0.0
    return [no_finding, *labels], np.concatenate([[0.0], severity])


@dataclass(frozen=True)
class _Image:
    path: str  # relative to the dataset's parent folder, as in the CSVs
    kind: str  # frontal or lateral
    ap_pa: str


@dataclass(frozen=True)
class _Exam:
    split: str
    patient: int
    study: int
    sex: str
    age: int
    labels: tuple[float | None, ...]
    severity: tuple[float, ...]
    images: tuple[_Image, ...]


def _rng(seed: int, tag: int, patient: int, study: int = 0, view: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, tag, patient, study, view])


def patients_per_split(patients: int, holdout: int | None = None) -> dict[str, int]:
    """Patients per split: about 80/10/10, at least two each in valid and test; `holdout` patients each in valid
    and test instead of 10% (a test split large enough to detect small differences)."""
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < MIN_PATIENTS:
        raise ConfigError(f"patients must be an integer of at least {MIN_PATIENTS} (got {patients!r}), "
                          f"so that train, valid and test each get a few; ask for more patients.")
    held = max(2, round(0.1 * patients)) if holdout is None else holdout
    if isinstance(held, bool) or not isinstance(held, int) or held < 2 or patients - 2 * held < 2:
        raise ConfigError(f"holdout must be an integer of at least 2 that leaves 2 training patients of the "
                          f"{patients} (got {holdout!r}); lower it or ask for more patients.")
    return {"train": patients - 2 * held, "valid": held, "test": held}


def sample_exams(patients: int, seed: int = 0, holdout: int | None = None) -> list[_Exam]:
    """Every exam of the dataset with its labels and image paths, in CSV order."""
    studies, pid = [], 0
    for split, count in patients_per_split(patients, holdout).items():
        for _ in range(count):
            pid += 1
            studies.extend(_patient_exams(seed, split, pid))
    return studies


def _patient_exams(seed: int, split: str, pid: int) -> list[_Exam]:
    rng = _rng(seed, _TAG_PATIENT, pid)
    sex = "Male" if rng.random() < 0.59 else "Female"
    age = int(np.clip(round(rng.normal(61, 17)), 18, 90))
    n_studies = int(rng.choice(4, p=(0.45, 0.25, 0.17, 0.13))) + 1 if split == "train" else 1
    out = []
    for sid in range(1, n_studies + 1):
        srng = _rng(seed, _TAG_STUDY, pid, sid)
        labels, severity = sample_exam(srng, split)
        device = labels[-1] == 1.0
        kinds = ["frontal"]
        if split == "train" and srng.random() < 0.05:
            kinds.append("frontal")
        if srng.random() < 0.3:
            kinds.append("lateral")
        ap = "AP" if srng.random() < 0.55 + 0.35 * device else "PA"
        folder = f"{DATASET_DIR}/{split}/patient{pid:05d}/study{sid}"
        images = tuple(_Image(f"{folder}/view{v}_{k}.jpg", k, ap if k == "frontal" else "")
                       for v, k in enumerate(kinds, start=1))
        out.append(_Exam(split, pid, sid, sex, min(90, age + (sid - 1) // 2), tuple(labels),
                          tuple(float(x) for x in severity), images))
    return out


def _render_one(job: tuple) -> None:
    """Render and save one image (a process-pool task; everything it needs is in `job`)."""
    root, seed, study, view, image, size, exposure = job
    rng = _rng(seed, _TAG_VIEW, study.patient, study.study, view)
    anatomy = sample_anatomy(_rng(seed, _TAG_ANATOMY, study.patient))
    # portable films are often cropped narrower than tall, which resize/crop code has to cope with
    width = size if image.kind == "lateral" or rng.random() < 0.5 else round(size * rng.uniform(0.85, 1.0))
    pixels = render(study.severity, rng, size, view=image.kind, width=width, ap=image.ap_pa == "AP",
                    anatomy=anatomy, study_seed=int(_rng(seed, _TAG_STUDY, study.patient, study.study,
                                                         99).integers(2**62)), exposure=exposure)
    path = Path(root) / image.path
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, format="JPEG", quality=90)


def _label(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _write_csvs(root: Path, studies: list[_Exam]) -> None:
    """train.csv and valid.csv (one row per image), groundtruth.csv (one row per test study)."""
    files = {s: open(root / DATASET_DIR / f"{s}.csv", "w", newline="") for s in ("train", "valid")}
    files["test"] = open(root / DATASET_DIR / TEST_LABELS_FILE, "w", newline="")
    with files["train"], files["valid"], files["test"]:
        writers = {s: csv.writer(f, lineterminator="\n") for s, f in files.items()}
        writers["train"].writerow(CSV_HEADER)
        writers["valid"].writerow(CSV_HEADER)
        writers["test"].writerow(GROUNDTRUTH_HEADER)
        for st in studies:
            if st.split == "test":
                folder = st.images[0].path.rsplit("/", 1)[0]
                writers["test"].writerow([folder, *(int(v == 1.0) for v in st.labels)])
                continue
            for im in st.images:
                writers[st.split].writerow([im.path, st.sex, st.age, im.kind.capitalize(), im.ap_pa,
                                            *(_label(v) for v in st.labels)])


@dataclass(frozen=True)
class SynthSummary:
    path: Path
    counts: dict[str, tuple[int, int, int]]  # split -> (patients, studies, images)
    seconds: float

    def line(self) -> str:
        images = sum(c[2] for c in self.counts.values())
        parts = ", ".join(f"{s} {p} patients/{n} studies/{i} images" for s, (p, n, i) in self.counts.items())
        return (f"Wrote {images} images ({parts}) to {self.path} in {self.seconds:.1f} s "
                f"({images / max(self.seconds, 1e-9):.0f} images/s).")


def _check_args(patients: int, seed: int, image_size: int, workers: int | None) -> None:
    patients_per_split(patients)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 32 <= image_size <= 2048:
        raise ConfigError(f"image_size must be an integer from 32 to 2048 pixels, got {image_size!r}; "
                          "CheXpert-small images are 320 px on the short side.")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive integer or None (all CPUs), got {workers!r}.")


def generate(out: str | Path, patients: int, seed: int = 0, image_size: int = 320,
             progress: bool = True, workers: int | None = None, holdout: int | None = None,
             exposure: float = 1.0) -> SynthSummary:
    """Write the dataset (see write_synthetic) and say what was written and how fast."""
    _check_args(patients, seed, image_size, workers)
    patients_per_split(patients, holdout)
    if isinstance(exposure, bool) or not isinstance(exposure, int | float) or not 0 <= exposure <= 1:
        raise ConfigError(f"exposure must be a number from 0 (every image exposed alike) to 1 (as on the wards), "
                          f"got {exposure!r}.")
    out = Path(out)
    final, marker = out / DATASET_DIR, out / MARKER
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file, not a folder; pass a folder path.")
    if final.exists() and not marker.is_file():
        raise DataError(f"{final} already exists and was not written by chexops synth (no {MARKER} beside it); "
                        "move it away or choose another output folder.")
    start = time.perf_counter()
    studies = sample_exams(patients, seed, holdout)
    # build in a hidden sibling and swap it in at the end, so a crash never leaves a half-written dataset
    tmp, old = out / f".{DATASET_DIR}.partial-{os.getpid()}", out / f".{DATASET_DIR}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / DATASET_DIR).mkdir(parents=True)
    try:
        jobs = [(str(tmp), seed, st, v, im, image_size, exposure) for st in studies
                for v, im in enumerate(st.images, start=1)]
        _run(jobs, workers or os.cpu_count() or 1, progress)
        _write_csvs(tmp, studies)
        counts = {s: (len({st.patient for st in studies if st.split == s}), sum(st.split == s for st in studies),
                      sum(len(st.images) for st in studies if st.split == s)) for s in SPLITS}
        params = {"patients": patients, "seed": seed, "image_size": image_size, "holdout": holdout,
                  "exposure": exposure}
        marker.write_text(json.dumps({"generator": "chexops synth", **params, "counts": counts}, indent=2) + "\n")
        if final.exists():
            final.rename(old)
        (tmp / DATASET_DIR).rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return SynthSummary(final, counts, time.perf_counter() - start)


def _run(jobs: list[tuple], workers: int, progress: bool) -> None:
    bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress)
    with bar:
        if workers == 1:
            for job in jobs:
                _render_one(job)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=clean_context([__name__])) as pool:
            for _ in pool.map(_render_one, jobs, chunksize=max(1, min(32, len(jobs) // (8 * workers)))):
                bar.update()


def write_synthetic(out: str | Path, patients: int, seed: int = 0, image_size: int = 320,
                    progress: bool = True, workers: int | None = None, holdout: int | None = None,
                    exposure: float = 1.0) -> Path:
    """Writes out/CheXpert-v1.0-small/... and returns the dataset folder path (out/CheXpert-v1.0-small).

    A dataset that an earlier run wrote there is replaced; any other existing folder of that name is an error.
    """
    return generate(out, patients, seed, image_size, progress, workers, holdout, exposure).path

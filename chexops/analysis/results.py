"""Loading finished runs for the analyses: each run's eval.json and predictions.csv, aligned on one test set.

Pure numpy/pandas over what each run's evaluate stage leaves in `runs/eval/<run>/`. Anything malformed or
misaligned is a DataError naming the file and what to do; anything odd but usable becomes a note the report shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexops.data.labels import OBSERVATIONS, STUDY_TASKS
from chexops.errors import DataError
from chexops.evaluate.bootstrap import Resampling
from chexops.evaluate.metrics import auroc_metrics, headline_key
from chexops.naming import COMPETITION_MEAN, EVAL_FILE, HEADLINE_MEAN, PREDICTIONS_FILE
from chexops.records import read_json

MEASURED = "measured"
_Y = [f"y_{o}" for o in OBSERVATIONS]
_P = [f"p_{o}" for o in OBSERVATIONS]
_EVAL_KEYS = ("run", "family", "group", "initializer", "truncation", "depth", "parameters", "metrics")
MEANS = {"auroc_6": HEADLINE_MEAN, "auroc_5": COMPETITION_MEAN}
# eval.json and predictions.csv come from one evaluate call; a larger gap means they are from different runs.
_CONSISTENCY_TOL = 1e-6


def not_measured(why: str) -> str:
    return f"not measured: {why}"


@dataclass(frozen=True)
class Study:
    """All runs of one study: `runs` (one row per run, indexed by run name) and the aligned test predictions.

    `truth` is (n_studies, 14) in OBSERVATIONS order; `probs[run]` has the same shape and row order;
    `patients[i]` is the patient of studies[i] (the bootstrap resamples a patient's studies together).
    `notes` holds anything odd found while loading that the report should show (never silently dropped).
    """

    name: str
    runs: pd.DataFrame
    studies: tuple[str, ...]
    truth: np.ndarray
    probs: Mapping[str, np.ndarray]
    notes: tuple[str, ...] = field(default=())
    patients: tuple[str, ...] | None = None

    def without_repeats(self) -> Study:
        """The study without its grid.seeds repeats: one run per configuration, what every comparison reads (the
        repeats only set the spread across seeds in the evidence checks)."""
        keep = ~self.runs["seed_repeat"].astype(bool) if "seed_repeat" in self.runs else None
        if keep is None or keep.all():
            return self
        runs = self.runs[keep]
        return replace(self, runs=runs, probs={r: self.probs[r] for r in runs.index})

    def resampling(self, n_resamples: int, seed: int) -> Resampling:
        """The test-set bootstrap every analysis shares: whole patients when a patient has several studies."""
        return Resampling.of(len(self.studies), n_resamples, seed, self.patients)

    @property
    def headline_tasks(self) -> tuple[str, ...]:
        """The study tasks the headline mean covers (all six unless one has a single class in the test truth)."""
        return tuple(t for t in STUDY_TASKS if len(np.unique(self.truth[:, OBSERVATIONS.index(t)])) == 2)

    @property
    def headline(self) -> str:
        """What the AUROC-6 column is: 'mean AUROC over the 6 study tasks', or over fewer, saying which not."""
        missing = [t for t in STUDY_TASKS if t not in self.headline_tasks]
        if not missing:
            return "mean AUROC over the 6 study tasks"
        return (f"mean AUROC over {len(self.headline_tasks)} of the 6 study tasks ({', '.join(missing)} undefined: "
                "one class only in the test studies)")

    @property
    def full(self) -> pd.DataFrame:
        """The untruncated runs trained on all labels (what the paper's analyses compare)."""
        return self.runs[(self.runs["depth"] == 0) & (self.runs["label_fraction"] == 1.0)]

    @property
    def data(self) -> str:
        """What data made the numbers, as the evaluate stage described it ('synthetic ...' for phantoms)."""
        described = sorted({d for d in self.runs.get("data", pd.Series(dtype=str)).astype(str) if d})
        sources = ", ".join(sorted(self.runs["test_source"].astype(str).unique()))
        return "; ".join(described) or f"test source {sources} (runs evaluated before chexops described their data)"

    @property
    def synthetic(self) -> bool:
        return self.data.startswith("synthetic")


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _read_eval(path: Path) -> dict[str, Any]:
    data = read_json(path, "evaluate")  # fields read leniently below: older and hand-made files lack some
    missing = [k for k in _EVAL_KEYS if k not in data]
    if missing:
        raise DataError(f"{path} lacks {missing}; it was not written by the evaluate stage, rerun it.")
    metrics = data["metrics"]
    try:
        keys = {short: headline_key(metrics, "test", mean) for short, mean in MEANS.items()}
    except DataError:
        raise DataError(f"{path} holds no test mean AUROC; it was not written by the evaluate stage, rerun "
                        "it.") from None
    row: dict[str, Any] = {k: data[k] for k in _EVAL_KEYS[:-1]}
    row["depth"], row["parameters"] = int(row["depth"]), int(row["parameters"])
    row.update(
        imagenet_top1=_num(data.get("imagenet_top1")),
        timm_tag=data.get("timm_tag"),
        test_source=data.get("test_source", "unknown"),
        n_test_studies=data.get("n_test_studies"),
        best_single_auroc_6=_num((data.get("best_single") or {}).get("test_mean_auroc")),
        reference_top1=_num(data.get("reference_top1")),
        reference_top1_source=data.get("reference_top1_source") or "",
        bootstrap_unit=(data.get("bootstrap") or {}).get("unit", "study"),
        test_split=json.dumps(data.get("test_split") or {}, sort_keys=True),
        label_fraction=float(data.get("label_fraction", 1.0)),
        initializer_pretrained=bool(data.get("initializer_pretrained", data["initializer"] != "random")),
        initializer_label=data.get("initializer_label") or data["initializer"],
        data=data.get("data") or "",
        mlflow_run_id=data.get("mlflow_run_id"),
        path=str(path.parent),
        train_seed=data.get("train_seed"),
        seed_repeat=bool(data.get("seed_repeat", False)),
        checkpoint_aurocs=tuple(_num(v) for v in data.get("checkpoint_test_mean_auroc") or ()),
        **_training(data.get("training") or {}),
    )
    for short, key in keys.items():
        for suffix in ("", "_ci_low", "_ci_high"):
            row[short + suffix] = _num(metrics.get(key + suffix))
    return row


def _training(t: dict[str, Any]) -> dict[str, Any]:
    """The run's budget (eval.json's `training`, from the train folder's manifest); NaN where not recorded."""
    history = tuple((float(e), _num(v)) for e, v in (t.get("validation_history") or ()))
    return {"examples": _num(t.get("examples")), "epochs": _num(t.get("epochs")),
            "labelled_examples": _num(t.get("labelled_examples")), "evaluations": _num(t.get("evaluations")),
            "ensemble_size": _num(t.get("ensemble_size")), "validation_history": history,
            "kept_examples": tuple(_num(e) for e in t.get("kept_examples") or ())}


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} is missing; run the evaluate stage for this run first.")
    df = pd.read_csv(path, dtype={"study": str})
    missing = [c for c in ["study", *_Y, *_P] if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks columns {missing[:4]}{' ...' if len(missing) > 4 else ''}; expected `study`, then "
            "y_<Observation> and p_<Observation> for the 14 CheXpert observations."
        )
    if "patient" not in df.columns:  # predictions from before patients were recorded: each study its own patient
        df["patient"] = df["study"]
    dup = df["study"][df["study"].duplicated()]
    if not dup.empty:
        raise DataError(f"{path} repeats studies {dup.unique()[:3].tolist()}; predictions must be one row per study.")
    y, p = df[_Y].to_numpy(dtype=float), df[_P].to_numpy(dtype=float)
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError(f"{path}: y_ columns must be 0 or 1 (study-level test truth), found {np.unique(y)[:5]}.")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise DataError(f"{path}: p_ columns must be probabilities in [0, 1] with no missing values.")
    return df.set_index("study")[["patient", *_Y, *_P]]


def _align(frames: Mapping[str, pd.DataFrame]
           ) -> tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray], tuple[str, ...]]:
    """One study order for every run; a different test set or different truth is an error naming both runs."""
    (ref_run, ref), *rest = frames.items()
    order = ref.index
    truth = ref[_Y].to_numpy(dtype=np.int8)
    for run, df in rest:
        if set(df.index) != set(order):
            a, b = order.difference(df.index), df.index.difference(order)
            raise DataError(
                f"runs {ref_run!r} and {run!r} were tested on different studies: {len(a)} only in the first "
                f"(e.g. {a[:3].tolist()}), {len(b)} only in the second (e.g. {b[:3].tolist()}). All runs of a "
                "study must share one test set; re-evaluate them on the same test split."
            )
        bad = (df.loc[order, _Y].to_numpy(dtype=np.int8) != truth).any(axis=1)
        if bad.any():
            raise DataError(
                f"runs {ref_run!r} and {run!r} disagree on the test labels of {int(bad.sum())} studies "
                f"(e.g. {order[bad][:3].tolist()}); they were evaluated against different ground truth."
            )
    patients = tuple(ref.loc[order, "patient"].astype(str))
    return tuple(order), truth, {run: df.loc[order, _P].to_numpy(dtype=float) for run, df in frames.items()}, patients


def _consistency_notes(runs: pd.DataFrame, truth: np.ndarray, probs: Mapping[str, np.ndarray]) -> list[str]:
    notes = []
    for run, p in probs.items():
        recomputed = auroc_metrics(truth, p, STUDY_TASKS).mean_auroc_6
        stated = runs.loc[run, "auroc_6"]
        if recomputed is not None and abs(recomputed - stated) > _CONSISTENCY_TOL:
            notes.append(
                f"{run}: eval.json gives mean AUROC {stated:.4f} but its predictions.csv gives {recomputed:.4f}; "
                "the tables use eval.json, the paired tests use predictions.csv. Re-run its evaluate stage."
            )
    return notes


def load_runs(run_dirs: Iterable[Path], name: str = "study") -> Study:
    """Read eval.json and predictions.csv of each run folder; DataError on anything malformed or misaligned."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise DataError("no run folders given; train and evaluate at least one run before the analysis.")
    rows = [_read_eval(d / EVAL_FILE) for d in dirs]
    runs = pd.DataFrame(rows).set_index("run", drop=False)
    for cols, what in ((["run"], "run name"),
                       (["family", "initializer", "depth", "label_fraction", "train_seed"],
                        "family/initializer/depth/labels/seed")):
        dup = runs[runs.duplicated(cols, keep=False)]
        if not dup.empty:
            raise DataError(
                f"runs in {dup['path'].tolist()} share one {what}; the analysis needs exactly one run per "
                "configuration. Remove the stale folder."
            )
    studies, truth, probs, patients = _align(
        {r["run"]: _read_predictions(Path(r["path"]) / PREDICTIONS_FILE) for r in rows})
    notes = _consistency_notes(runs, truth, probs)
    sources = sorted(runs["test_source"].astype(str).unique())
    if len(sources) > 1:
        notes.append(f"runs name different test sources {sources} although they share the same test studies.")
    return Study(name=name, runs=runs, studies=studies, truth=truth, probs=probs, notes=tuple(notes),
                 patients=patients)

"""The checkpoint ensemble evaluated on the test split: mean of the kept checkpoints' sigmoid probabilities.

Predictions come from `chexops.evaluate.ensemble.Ensemble`, the very object the registered pyfunc model wraps, so a
registry version's predictions are the ensemble's test predictions by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexops.data.labels import OBSERVATIONS, STUDY_TASKS
from chexops.evaluate.bootstrap import bootstrap_ci
from chexops.evaluate.ensemble import checkpoint_paths, load_ensemble, read_manifest
from chexops.evaluate.inference import binary_truth
from chexops.evaluate.metrics import auroc_metrics, exam_level, headline_key
from chexops.naming import HEADLINE_MEAN, MANIFEST_FILE, PREDICTIONS_FILE, RANKING_METRIC, ROC_FILE
from chexops.records import TestScores


def roc_figure(truth: np.ndarray, probs: np.ndarray, title: str, path: Path) -> None:
    """ROC curves of the six study tasks, one panel each, AUROC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(2, 3, figsize=(11, 7), sharex=True, sharey=True)
    for ax, task in zip(axes.flat, STUDY_TASKS, strict=True):
        j = OBSERVATIONS.index(task)
        ax.plot([0, 1], [0, 1], color="0.8", lw=1, ls="--")
        if truth[:, j].min() == truth[:, j].max():
            ax.text(0.5, 0.5, "undefined:\none class only", ha="center", va="center")
        else:
            fpr, tpr, _ = roc_curve(truth[:, j], probs[:, j])
            auc = auroc_metrics(truth[:, [j]], probs[:, [j]], tasks=(task,)).auroc[task]
            ax.plot(fpr, tpr, lw=2, label=f"AUROC {auc:.3f}")
            ax.legend(loc="lower right")
        ax.set_title(task)
    for ax in axes[1]:
        ax.set_xlabel("false positive rate")
    for ax in axes[:, 0]:
        ax.set_ylabel("true positive rate")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def predictions_frame(studies: list[str], truth: np.ndarray, probs: np.ndarray,
                      patients: list[str] | None = None) -> pd.DataFrame:
    """Study-level predictions: `study`, `patient`, `y_<Observation>` (0/1) and `p_<Observation>`."""
    frame = pd.DataFrame({"study": studies})
    if patients is not None:
        frame["patient"] = patients
    for j, obs in enumerate(OBSERVATIONS):
        frame[f"y_{obs}"] = truth[:, j].astype(int)
    for j, obs in enumerate(OBSERVATIONS):
        frame[f"p_{obs}"] = probs[:, j]
    return frame


def score_ensemble(run_dir: Path, out_dir: Path, test_images: np.ndarray, test_index: pd.DataFrame,
                   n_resamples: int, ci: float, seed: int, device: torch.device | None = None) -> TestScores:
    """Test metrics of the ensemble in `run_dir` with bootstrap CIs, plus each single checkpoint's; the
    predictions CSV and ROC figure go to `out_dir`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / MANIFEST_FILE
    manifest = read_manifest(manifest_path)
    ensemble = load_ensemble(manifest, checkpoint_paths(manifest_path, manifest), device)
    each = ensemble.member_probs(test_images)
    exam_ids = test_index["study"].astype(str).tolist()
    studies, truth = exam_level(binary_truth(test_index[list(OBSERVATIONS)].to_numpy(float)), exam_ids)
    truth = truth.astype(np.int8)
    _, per_member = ensemble.member_exams(each, exam_ids)
    exam_probs = ensemble.average_exams(per_member)  # = combine_exams, the members' maxima computed once
    patients = exam_patients(test_index, studies)
    # the cluster bootstrap: a patient's studies are resampled together when a patient has several
    result = bootstrap_ci(truth, exam_probs, n_resamples=n_resamples, ci=ci, seed=seed, tasks=OBSERVATIONS,
                          groups=patients)
    singles = [auroc_metrics(truth, p).mean_auroc_6 for p in per_member]
    predictions_frame(studies, truth, exam_probs, patients).to_csv(out_dir / PREDICTIONS_FILE, index=False)
    roc_figure(truth, exam_probs, f"{manifest['run']}: ensemble of {len(each)} checkpoints, test split",
               out_dir / ROC_FILE)
    best_val = int(np.argmax([c[RANKING_METRIC] for c in manifest["checkpoints"]]))
    metrics = {k: v for k, v in result.to_flat_dict(prefix="test").items() if v is not None}
    headline = headline_key(metrics)
    study_tasks_undefined = list(result.mean_undefined.get(HEADLINE_MEAN, ()))
    return TestScores(
        metrics=metrics,
        n_test_studies=len(studies),
        headline={"metric": headline, "tasks": [t for t in STUDY_TASKS if t not in study_tasks_undefined],
                  "undefined": study_tasks_undefined},
        undefined_tasks=list(result.undefined),
        bootstrap={"resamples": result.n_resamples, "seed": result.seed, "ci": result.ci, "unit": result.unit,
                   "usable_replicates": result.usable_replicates()},
        best_single={"test_mean_auroc": singles[best_val], "checkpoint": manifest["checkpoints"][best_val]["file"],
                     "best_test_mean_auroc_of_any_checkpoint": float(np.nanmax(singles)),
                     "tasks": "as the headline mean"},
        checkpoint_test_mean_auroc=singles,
    )


def exam_patients(index: pd.DataFrame, studies: list[str]) -> list[str]:
    """The patient of each study, in `studies` order (the index has one patient per study)."""
    first = index.drop_duplicates("study")
    owner = pd.Series(first["patient"].astype(str).to_numpy(), index=first["study"].astype(str).to_numpy())
    return owner.loc[studies].tolist()

"""Train / validation / test splits in the index schema.

Validation is always the official valid set. Test is the official test set when its labels are available;
otherwise whole patients are held out of train with a seeded shuffle, so no patient's images straddle splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chexops.data.chexpert import CheXpertFolder
from chexops.data.labels import OBSERVATIONS
from chexops.errors import ConfigError, DataError

_SHOWN = 5


@dataclass
class Splits:
    """The three splits, each an index DataFrame, and where the test split came from."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    test_source: str  # "official" or "holdout:<fraction>:seed<seed>"
    # Studies left out entirely by frontal_only because they have no frontal image, per split; worth logging,
    # since test evaluation is per study.
    dropped_studies: dict[str, int] = field(default_factory=dict)

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("valid", self.valid), ("test", self.test)]


def make_splits(
    folder: CheXpertFolder, frontal_only: bool = True, holdout_fraction: float = 0.1, seed: int = 0
) -> Splits:
    """Build the splits; DataError if a patient is in two of them or a split ends up empty.

    `frontal_only` applies to every split (the paper's models see frontal radiographs only).
    """
    train, valid = folder.train, folder.valid
    if folder.test is not None:
        test, source = folder.test, "official"
    else:
        train, test = holdout_patients(train, holdout_fraction, seed)
        check_exam_level(test)
        source = f"holdout:{holdout_fraction:g}:seed{seed}"
    check_disjoint({"train": train, "valid": valid, "test": test})
    parts, dropped = [], {}
    for name, frame in (("train", train), ("valid", valid), ("test", test)):
        if frontal_only:
            studies = frame["study"].nunique()
            frame = frame[frame["view"] == "frontal"]
            dropped[name] = studies - frame["study"].nunique()
        if frame.empty:
            raise DataError(
                f"the {name} split has no images" + (" with a frontal view" if frontal_only else "")
                + "; check the folder, or set frontal_only to false."
            )
        parts.append(frame.reset_index(drop=True))
    return Splits(parts[0], parts[1], parts[2], source, dropped)


def composition(index: pd.DataFrame) -> dict[str, Any]:
    """What a split holds: images, studies, patients, views, and how many patients have several studies (whose
    studies the bootstrap then resamples together)."""
    per_patient = index.groupby("patient")["study"].nunique()
    views = index["view"].value_counts()
    return {"images": len(index), "studies": int(index["study"].nunique()), "patients": int(len(per_patient)),
            "views": {v: int(views.get(v, 0)) for v in ("frontal", "lateral")},
            "patients_with_several_studies": int((per_patient > 1).sum()),
            "max_studies_per_patient": int(per_patient.max()) if len(per_patient) else 0}


def holdout_patients(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held out): a seeded `fraction` of train's patients, all of their images, as the test split."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be between 0 and 1 (exclusive), got {fraction}.")
    # Sorting first makes the choice depend on the set of patients and the seed, not on the CSV's row order.
    patients = np.sort(train["patient"].unique())
    n_held = int(round(fraction * len(patients)))
    if n_held < 1 or n_held >= len(patients):
        raise DataError(
            f"holding out {fraction:g} of {len(patients)} training patients leaves "
            f"{'no test' if n_held < 1 else 'no training'} patients; provide test labels or change holdout_fraction."
        )
    rng = np.random.default_rng(seed)
    held = set(patients[rng.permutation(len(patients))[:n_held]])
    is_held = train["patient"].isin(held)
    return train[~is_held], train[is_held]


def label_fraction_rows(index: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Rows of the training index whose labels a `fraction` run may use: all images of a seeded choice of
    ceil(fraction x patients) patients. One permutation per seed, so smaller fractions are subsets of larger
    ones (as in MoCo-CXR's label-fraction experiments) and a patient's images are all in or all out."""
    if not 0 < fraction <= 1:
        raise DataError(f"a label fraction must be in (0, 1], got {fraction}.")
    patients = np.sort(index["patient"].astype(str).unique())
    order = np.random.default_rng([seed, len(patients)]).permutation(len(patients))
    chosen = set(patients[order[: max(1, int(np.ceil(fraction * len(patients) - 1e-9)))]])
    return np.flatnonzero(index["patient"].astype(str).isin(chosen).to_numpy())


def check_disjoint(frames: dict[str, pd.DataFrame]) -> None:
    """DataError naming the first few patients found in two splits, with a CSV row for each."""
    names = list(frames)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(frames[a]["patient"].unique(), frames[b]["patient"].unique())
            if len(shared):
                shown = ", ".join(_where(p, frames[a], frames[b]) for p in shared[:_SHOWN])
                more = f" and {len(shared) - _SHOWN} more" if len(shared) > _SHOWN else ""
                raise DataError(
                    f"{len(shared)} patient(s) appear in both {a} and {b}: {shown}{more}. A patient's images "
                    "must all be in one split; remove them from one CSV or use a folder with disjoint patients."
                )


def _where(patient: str, *frames: pd.DataFrame) -> str:
    """'patient00001 (train.csv row 2, valid.csv row 5)': the first row of the patient in each frame."""
    rows = []
    for frame in frames:
        hits = frame.loc[frame["patient"] == patient]
        rows.append(str(hits["source"].iat[0]) if "source" in frame.columns else str(hits["path"].iat[0]))
    return f"{patient} ({', '.join(rows)})"


def check_exam_level(test: pd.DataFrame) -> None:
    """DataError unless every image of a study carries the same labels (test evaluation is per study).

    CheXpert's labels come from the study's report, so this holds for real data; a held-out split that broke
    it would make per-study evaluation ambiguous.
    """
    distinct = test.groupby("study", sort=True)[list(OBSERVATIONS)].nunique(dropna=False).max(axis=1)
    mixed = distinct.index[distinct.to_numpy() > 1]
    if len(mixed):
        shown = ", ".join(mixed[:_SHOWN])
        raise DataError(
            f"{len(mixed)} held-out test studies have images with different labels ({shown}); test labels must be "
            "per study. Fix train.csv so each study's rows agree, or provide official test labels."
        )

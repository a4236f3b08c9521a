"""The CheXpert label space: one definition every module shares."""

from __future__ import annotations

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The 19-column header of train.csv and valid.csv, in order.
CSV_HEADER: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)

# The CheXpert competition tasks, and CheXtransfer's six (the five plus No Finding).
COMPETITION_TASKS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
STUDY_TASKS: tuple[str, ...] = ("No Finding", *COMPETITION_TASKS)

NUM_CLASSES = len(OBSERVATIONS)


def task_index(names: tuple[str, ...]) -> list[int]:
    """Column indices of `names` in OBSERVATIONS."""
    return [OBSERVATIONS.index(n) for n in names]

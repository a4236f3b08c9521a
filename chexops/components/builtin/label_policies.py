"""The built-in uncertain-label policies: u-ignore (default), u-zeros, u-ones, u-mixed.

Every policy turns blank (not mentioned in the report) into a negative that counts in the loss, as the
CheXpert lab's training code does; they differ only in what an uncertain (-1) label becomes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chexops.components.hookspecs import hookimpl
from chexops.components.specs import LabelPolicySpec
from chexops.data.labels import NUM_CLASSES, OBSERVATIONS
from chexops.errors import DataError

if TYPE_CHECKING:  # numpy is imported when a policy runs: every stage loads the plugins, few apply a policy
    import numpy as np

# The tasks where U-Ones beat U-Zeros in the CheXpert paper; popular open code uses U-Zeros for the rest.
MIXED_ONES: tuple[str, ...] = ("Atelectasis", "Edema")

Policy = Callable[["np.ndarray"], tuple["np.ndarray", "np.ndarray"]]


def _checked(labels: np.ndarray) -> np.ndarray:
    """The labels as float64 (N, 14), refusing anything but 1, 0, -1 and NaN."""
    import numpy as np

    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != NUM_CLASSES:
        raise DataError(f"labels must have shape (N, {NUM_CLASSES}), got {arr.shape}; one column per observation.")
    known = np.isnan(arr) | np.isin(arr, (1.0, 0.0, -1.0))
    if not known.all():
        row, col = np.argwhere(~known)[0]
        raise DataError(
            f"label {float(arr[row, col]):g} at row {row}, column {OBSERVATIONS[col]!r} is not 1, 0, -1 or blank (NaN)."
        )
    return arr


def _policy(uncertain_to: list[float] | float | None) -> Policy:
    """A policy mapping -1 to `uncertain_to` (per column allowed), or masking it out when None."""

    def apply(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        arr = _checked(labels)
        uncertain = arr == -1.0
        targets = np.where(np.isnan(arr), 0.0, arr)
        mask = np.ones_like(arr)
        if uncertain_to is None:
            targets[uncertain] = 0.0
            mask[uncertain] = 0.0
        else:
            fill = np.broadcast_to(np.asarray(uncertain_to, dtype=np.float64), arr.shape)
            targets[uncertain] = fill[uncertain]
        return targets.astype(np.float32), mask.astype(np.float32)

    return apply


u_ignore = _policy(None)
u_zeros = _policy(0.0)
u_ones = _policy(1.0)
u_mixed = _policy([1.0 if o in MIXED_ONES else 0.0 for o in OBSERVATIONS])

_BLANK = "Blank (not mentioned) -> target 0, counted in the loss."


@hookimpl
def register_label_policies(register: Callable[[LabelPolicySpec], None]) -> None:
    register(LabelPolicySpec(
        "u-ignore", u_ignore,
        f"Uncertain labels are masked out of the loss (the CheXpert lab's default). {_BLANK}",
    ))
    register(LabelPolicySpec("u-zeros", u_zeros, f"Uncertain -> negative (target 0). {_BLANK}"))
    register(LabelPolicySpec("u-ones", u_ones, f"Uncertain -> positive (target 1). {_BLANK}"))
    register(LabelPolicySpec(
        "u-mixed", u_mixed,
        f"Uncertain -> positive for {' and '.join(MIXED_ONES)}, negative for every other observation. {_BLANK}",
    ))

from __future__ import annotations

import numpy as np
import pytest

from chexops.components.builtin import label_policies
from chexops.components.specs import LabelPolicySpec
from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError

NAN = np.nan
ATEL, EDEMA, CARDIO = (OBSERVATIONS.index(n) for n in ("Atelectasis", "Edema", "Cardiomegaly"))


def _registered() -> dict[str, LabelPolicySpec]:
    specs: list[LabelPolicySpec] = []
    label_policies.register_label_policies(specs.append)
    return {s.name: s for s in specs}


def _labels() -> np.ndarray:
    """Row 0: every observation uncertain; row 1: 1, 0, blank cycling."""
    labels = np.full((2, len(OBSERVATIONS)), -1.0)
    labels[1] = [(1.0, 0.0, NAN)[k % 3] for k in range(len(OBSERVATIONS))]
    return labels


def test_registers_the_four_policies_with_blank_documented():
    specs = _registered()
    assert list(specs) == ["u-ignore", "u-zeros", "u-ones", "u-mixed"]
    for spec in specs.values():
        assert "Blank (not mentioned) -> target 0" in spec.description


@pytest.mark.parametrize("name, uncertain_target, uncertain_mask", [
    ("u-ignore", 0.0, 0.0), ("u-zeros", 0.0, 1.0), ("u-ones", 1.0, 1.0),
])
def test_uniform_policies(name, uncertain_target, uncertain_mask):
    targets, mask = _registered()[name].apply(_labels())
    assert targets.dtype == np.float32 and mask.dtype == np.float32
    np.testing.assert_array_equal(targets[0], np.full(14, uncertain_target))
    np.testing.assert_array_equal(mask[0], np.full(14, uncertain_mask))
    # certain and blank entries are the same under every policy: blank -> 0, counted
    np.testing.assert_array_equal(targets[1], [(1.0, 0.0, 0.0)[k % 3] for k in range(14)])
    np.testing.assert_array_equal(mask[1], np.ones(14))


def test_u_mixed_ones_only_for_atelectasis_and_edema():
    targets, mask = _registered()["u-mixed"].apply(_labels())
    expected = np.zeros(14)
    expected[[ATEL, EDEMA]] = 1.0
    np.testing.assert_array_equal(targets[0], expected)
    assert targets[0, CARDIO] == 0.0
    np.testing.assert_array_equal(mask, np.ones((2, 14)))


def test_input_is_not_modified():
    labels = _labels()
    before = labels.copy()
    _registered()["u-ones"].apply(labels)
    np.testing.assert_array_equal(labels, before)


def test_rejects_unknown_values_and_shapes():
    labels = _labels()
    labels[1, 3] = 2.0
    with pytest.raises(DataError, match=r"label 2 at row 1, column 'Lung Opacity'"):
        label_policies.u_ignore(labels)
    with pytest.raises(DataError, match=r"shape \(N, 14\)"):
        label_policies.u_zeros(np.zeros((3, 5)))

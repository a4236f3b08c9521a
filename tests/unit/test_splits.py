from __future__ import annotations

import pandas as pd
import pytest

from chexops.data.chexpert import read_chexpert
from chexops.data.splits import make_splits
from chexops.errors import ConfigError, DataError


def test_official_splits_frontal_only(make_chexpert):
    splits = make_splits(read_chexpert(make_chexpert()))
    assert splits.test_source == "official"
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (9, 3, 3)
    assert splits.dropped_studies == {"train": 0, "valid": 0, "test": 0}
    for _, frame in splits.items():
        assert set(frame["view"]) == {"frontal"}
        assert list(frame.index) == list(range(len(frame)))


def test_all_views_when_not_frontal_only(make_chexpert):
    splits = make_splits(read_chexpert(make_chexpert()), frontal_only=False)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (11, 4, 4)


def test_holdout_is_patient_grouped_and_seeded(make_chexpert):
    folder = read_chexpert(make_chexpert(test=False))
    a = make_splits(folder, frontal_only=False, holdout_fraction=0.34, seed=3)
    assert a.test_source == "holdout:0.34:seed3"
    assert a.test["patient"].nunique() == 2  # round(0.34 * 6 patients)
    assert set(a.test["patient"]).isdisjoint(a.train["patient"])
    # whole patients: every image of a held-out patient is in test
    held = folder.train[folder.train["patient"].isin(a.test["patient"])]
    assert len(held) == len(a.test)
    assert len(a.train) + len(a.test) == len(folder.train)
    b = make_splits(folder, frontal_only=False, holdout_fraction=0.34, seed=3)
    pd.testing.assert_frame_equal(a.test, b.test)
    picks = {tuple(sorted(make_splits(folder, holdout_fraction=0.34, seed=s).test["patient"].unique()))
             for s in range(8)}
    assert len(picks) > 1, "different seeds should hold out different patients"


def test_holdout_ignores_row_order(make_chexpert):
    folder = read_chexpert(make_chexpert(test=False))
    first = make_splits(folder, holdout_fraction=0.5, seed=1)
    folder.train = folder.train.iloc[::-1].reset_index(drop=True)
    second = make_splits(folder, holdout_fraction=0.5, seed=1)
    assert set(first.test["patient"]) == set(second.test["patient"])


def test_patient_in_two_splits_is_named(make_chexpert):
    root = make_chexpert()
    image = root / "train/patient00101/study1/view1_frontal.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes((root / "valid/patient00101/study1/view1_frontal.jpg").read_bytes())
    row = "CheXpert-v1.0-small/train/patient00101/study1/view1_frontal.jpg,Male,60,Frontal,AP" + ",0.0" * 14
    with open(root / "train.csv", "a") as fh:
        fh.write(row + "\n")
    with pytest.raises(DataError, match=r"1 patient\(s\) appear in both train and valid: "
                                        r"patient00101 \(train\.csv row 13, valid\.csv row 2\)"):
        make_splits(read_chexpert(root))


def test_patient_in_valid_and_test(make_chexpert):
    folder = read_chexpert(make_chexpert())
    folder.test = pd.concat([folder.test, folder.valid.iloc[:1]], ignore_index=True)
    with pytest.raises(DataError, match=r"both valid and test: patient00101"):
        make_splits(folder)


def test_bad_fraction_and_too_few_patients(make_chexpert):
    folder = read_chexpert(make_chexpert(test=False))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        make_splits(folder, holdout_fraction=1.0)
    with pytest.raises(DataError, match="leaves no test patients"):
        make_splits(folder, holdout_fraction=0.01)


def test_holdout_test_labels_must_be_per_study(make_chexpert):
    folder = read_chexpert(make_chexpert(test=False))
    # patient00003/study1 has two views; give its lateral a different Edema label
    lateral = (folder.train["study"] == "patient00003/study1") & (folder.train["view"] == "lateral")
    folder.train.loc[lateral, "Edema"] = 1.0 - folder.train.loc[lateral, "Edema"].fillna(0.0)
    with pytest.raises(DataError, match="patient00003/study1"):
        for seed in range(50):  # some seed holds out patient00003
            make_splits(folder, holdout_fraction=0.5, seed=seed)


def test_lateral_only_study_is_counted_when_dropped(make_chexpert):
    root = make_chexpert()
    (root / "test/patient00202/study1/view1_frontal.jpg").rename(root / "test/patient00202/study1/view1_lateral.jpg")
    splits = make_splits(read_chexpert(root))
    assert splits.dropped_studies["test"] == 1
    assert "patient00202" not in set(splits.test["patient"])
    assert len(make_splits(read_chexpert(root), frontal_only=False).test) == 4

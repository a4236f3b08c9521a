from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexops.data.chexpert import (
    INDEX_COLUMNS,
    read_chexpert,
    read_index,
    resolve_image,
    write_index,
)
from chexops.data.labels import CSV_HEADER, OBSERVATIONS
from chexops.errors import DataError


def set_cell(csv_path: Path, row: int, column: str, value: str) -> None:
    """Change one cell; `row` counted like a spreadsheet (header = row 1)."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows[row - 1][rows[0].index(column)] = value
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def test_reads_counts_and_schema(make_chexpert):
    root = make_chexpert()
    folder = read_chexpert(root)
    assert folder.root == root.resolve()
    assert list(folder.train.columns) == list(INDEX_COLUMNS)
    assert (len(folder.train), len(folder.valid), len(folder.test)) == (11, 4, 4)
    assert folder.test_source == "official"
    assert folder.train["patient"].nunique() == 6
    assert folder.train["study"].nunique() == 9
    assert (folder.train["view"] == "lateral").sum() == 2
    first = folder.train.iloc[0]
    assert first["path"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert first["patient"] == "patient00001"
    assert first["study"] == "patient00001/study1"
    assert (first["view"], first["ap_pa"], first["sex"], first["age"]) == ("frontal", "AP", "Female", 51.0)
    assert first["source"] == "train.csv row 2"


def test_labels_keep_uncertain_and_blank(make_chexpert):
    folder = read_chexpert(make_chexpert())
    labels = folder.train[list(OBSERVATIONS)].to_numpy()
    assert labels.dtype == np.float64
    # patient00001/study1: cycle index (1 + 1 + k) % 4 over (1.0, 0.0, -1.0, blank)
    expected = np.array([[1.0, 0.0, -1.0, np.nan][(2 + k) % 4] for k in range(14)])
    np.testing.assert_array_equal(labels[0], expected)
    assert set(np.unique(labels[~np.isnan(labels)])) == {-1.0, 0.0, 1.0}
    assert np.isnan(labels).sum() > 0


def test_test_labels_expand_to_every_image(make_chexpert):
    folder = read_chexpert(make_chexpert())
    test = folder.test
    two_views = test[test["study"] == "patient00201/study1"]
    assert list(two_views["view"]) == ["frontal", "lateral"]
    assert list(two_views["path"]) == [
        "CheXpert-v1.0-small/test/patient00201/study1/view1_frontal.jpg",
        "CheXpert-v1.0-small/test/patient00201/study1/view2_lateral.jpg",
    ]
    labels = two_views[list(OBSERVATIONS)].to_numpy()
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[0], [(201 + k) % 2 for k in range(14)])
    assert list(test["source"]) == ["groundtruth.csv row 2"] * 2 + ["groundtruth.csv row 3", "groundtruth.csv row 4"]


def test_no_test_labels_means_no_test_split(make_chexpert):
    folder = read_chexpert(make_chexpert(test=False))
    assert folder.test is None and folder.test_source is None


def test_explicit_test_labels_path(make_chexpert, tmp_path):
    root = make_chexpert()
    moved = tmp_path / "elsewhere.csv"
    (root / "groundtruth.csv").rename(moved)
    assert read_chexpert(root).test is None
    assert len(read_chexpert(root, test_labels=moved).test) == 4
    with pytest.raises(DataError, match="missing.csv does not exist"):
        read_chexpert(root, test_labels=tmp_path / "missing.csv")


def test_renamed_folder_is_rerooted(make_chexpert):
    root = make_chexpert()
    renamed = root.rename(root.parent / "my-chexpert")
    folder = read_chexpert(renamed)
    path = folder.train["path"].iat[0]
    assert path == "my-chexpert/train/patient00001/study1/view1_frontal.jpg"
    assert resolve_image(folder.root, path).is_file()


def test_missing_column_names_file_and_column(make_chexpert):
    root = make_chexpert()
    frame = pd.read_csv(root / "valid.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["Edema", "Sex"]).to_csv(root / "valid.csv", index=False)
    with pytest.raises(DataError, match=r"valid\.csv lacks column\(s\) Sex, Edema"):
        read_chexpert(root)


def test_empty_csv(make_chexpert):
    root = make_chexpert()
    (root / "train.csv").write_text("")
    with pytest.raises(DataError, match=r"train\.csv is empty"):
        read_chexpert(root)
    (root / "train.csv").write_text(",".join(CSV_HEADER) + "\n")
    with pytest.raises(DataError, match=r"train\.csv has a header but no rows"):
        read_chexpert(root)


ESCAPES = r"valid\.csv row 3, column 'Path'.*escapes the dataset folder"
BAD_CELLS = {  # file, row, column, value -> what the error must name
    "unknown-label": ("train.csv", 4, "Cardiomegaly", "2.0",
                      r"train\.csv row 4, column 'Cardiomegaly': '2\.0' is not a label"),
    "uncertain-test-label": ("groundtruth.csv", 3, "Edema", "-1",
                             r"groundtruth\.csv row 3, column 'Edema'.*expected 0 or 1"),
    "escape-by-dots": ("valid.csv", 3, "Path", "CheXpert-v1.0-small/../../etc/passwd.jpg", ESCAPES),
    "escape-absolute": ("valid.csv", 3, "Path", "/etc/patient1/study1/view1_frontal.jpg", ESCAPES),
    "escape-inside": ("valid.csv", 3, "Path", "CheXpert-v1.0-small/train/../../x/patient1/study1/view1_frontal.jpg",
                      ESCAPES),
    "malformed-path": ("train.csv", 2, "Path", "CheXpert-v1.0-small/train/patient00001/view1_frontal.jpg",
                       r"train\.csv row 2, column 'Path'.*patientN/studyN/viewN_frontal"),
    "missing-test-study": ("groundtruth.csv", 2, "Study", "CheXpert-v1.0/test/patient09999/study1",
                           r"groundtruth\.csv row 2.*patient09999/study1 does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_CELLS))
def test_a_bad_cell_names_file_row_and_column(make_chexpert, case):
    file, row, column, value, message = BAD_CELLS[case]
    root = make_chexpert()
    set_cell(root / file, row, column, value)
    with pytest.raises(DataError, match=message):
        read_chexpert(root)


def test_resolve_image_refuses_escapes(make_chexpert, tmp_path):
    root = make_chexpert().resolve()
    good = resolve_image(root, "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    assert good == root / "train/patient00001/study1/view1_frontal.jpg"
    for bad in ["CheXpert-v1.0-small/../secret.jpg", "/etc/passwd", "C:/x.jpg"]:
        with pytest.raises(DataError, match="escapes the dataset folder"):
            resolve_image(root, bad)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "train" / "link.jpg")
    with pytest.raises(DataError, match="outside the dataset folder"):
        resolve_image(root, "CheXpert-v1.0-small/train/link.jpg")


def test_missing_folder_and_csv(make_chexpert, tmp_path):
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        read_chexpert(tmp_path / "nope")
    root = make_chexpert()
    (root / "valid.csv").unlink()
    with pytest.raises(DataError, match=r"valid\.csv does not exist"):
        read_chexpert(root)


def test_index_round_trip(make_chexpert, tmp_path):
    folder = read_chexpert(make_chexpert())
    write_index(folder.train, tmp_path / "train.csv")
    back = read_index(tmp_path / "train.csv")
    pd.testing.assert_frame_equal(back, folder.train, check_dtype=False)
    # a lateral's blank AP/PA stays text, not NaN
    assert list(back.loc[back["view"] == "lateral", "ap_pa"]) == ["", ""]


def _big_train_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["1.0", "0.0", "-1.0", ""])[rng.integers(0, 4, size=(rows, len(OBSERVATIONS)))]
    patient = np.arange(rows) // 3 + 1
    study = np.arange(rows) % 3 + 1
    views = np.where(study == 2, "lateral", "frontal")
    lines = [",".join(CSV_HEADER)]
    for i in range(rows):
        lines.append(f"CheXpert-v1.0-small/train/patient{patient[i]:05d}/study{study[i]}/view1_{views[i]}.jpg,"
                     f"Male,{40 + i % 50},{views[i].title()},{'AP' if views[i] == 'frontal' else ''},"
                     + ",".join(labels[i]))
    path.write_text("\n".join(lines) + "\n")


def test_a_full_size_train_csv_reads_whole(tmp_path):
    # how fast is benchmarks/chexpert_csv.py's claim (a timing on a shared machine is not a test)
    from chexops.data.chexpert import read_split_csv

    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    _big_train_csv(root / "train.csv", 223_414)
    train = read_split_csv(root, root / "train.csv")
    assert len(train) == 223_414
    assert train["patient"].nunique() == 223_414 // 3 + 1


def test_data_check_prints_counts(make_chexpert):
    from click.testing import CliRunner

    from chexops.cli.data import data_group

    root = make_chexpert()
    result = CliRunner().invoke(data_group, ["check", str(root), "--decode", "--workers", "0"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "all 19 images present; a labelled test split (test.csv + groundtruth.csv)" in lines[0]
    assert lines[1] == "every image decodes."
    header = lines[3].split()
    assert header == ["split", "images", "frontal", "lateral", "patients", "studies"]
    assert lines[4].split() == ["train", "11", "9", "2", "6", "9"]
    assert lines[5].split() == ["valid", "4", "3", "1", "3", "3"]
    assert lines[6].split() == ["test", "4", "3", "1", "3", "3"]
    # aligned: every row of the table has the same width
    assert len({len(line) for line in lines[3:7]}) == 1
    edema = next(line for line in lines if line.startswith("Edema"))
    col = read_chexpert(root).train["Edema"]
    assert edema.split()[1:] == [str(int((col == v).sum())) for v in (1, 0, -1)] + [str(int(col.isna().sum()))]


def test_data_check_missing_and_corrupt_images(make_chexpert):
    from click.testing import CliRunner

    from chexops.cli.data import data_group

    root = make_chexpert()
    (root / "valid/patient00102/study1/view2_lateral.jpg").unlink()
    result = CliRunner().invoke(data_group, ["check", str(root)])
    assert isinstance(result.exception, DataError)
    assert ("1 of 4 valid images are missing: CheXpert-v1.0-small/valid/patient00102/study1/view2_lateral.jpg "
            "(valid.csv row 4)") in str(result.exception)
    (root / "valid/patient00102/study1/view2_lateral.jpg").write_bytes(b"not a jpeg")
    assert CliRunner().invoke(data_group, ["check", str(root)]).exit_code == 0  # exists: fine without --decode
    result = CliRunner().invoke(data_group, ["check", str(root), "--decode", "--workers", "0"])
    assert isinstance(result.exception, DataError)
    assert "valid.csv row 4): not an image" in str(result.exception)

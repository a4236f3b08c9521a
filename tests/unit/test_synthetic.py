"""The synthetic CheXpert-format dataset: on-disk format, determinism, and images that follow the labels."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from chexops.cli.data import synth_command
from chexops.data.labels import CSV_HEADER, OBSERVATIONS
from chexops.data.phantom import render
from chexops.data.synthetic import sample_exam, sample_exams, write_synthetic
from chexops.errors import ConfigError, DataError

PATIENTS, SIZE, SEED = 20, 64, 3
# Written out here rather than imported, so that the tests check the published format itself.
FOLDER = "CheXpert-v1.0-small"
GT_HEADER = ["Study", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
             "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
             "Pleural Other", "Fracture", "Support Devices"]
IMAGE_PATH = re.compile(rf"^{FOLDER}/(train|valid|test)/patient(\d{{5}})/study(\d+)/view(\d+)_(frontal|lateral)\.jpg$")
LABELS = {"1.0", "0.0", "-1.0", ""}
IDX = {name: i for i, name in enumerate(OBSERVATIONS)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("a"), PATIENTS, seed=SEED, image_size=SIZE,
                           progress=False, workers=2)


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def read_chexpert(folder: Path) -> dict[str, list[dict]]:
    """A minimal independent CheXpert reader: paths resolved against the folder's parent, labels parsed."""
    out: dict[str, list[dict]] = {}
    for split in ("train", "valid"):
        with open(folder / f"{split}.csv", newline="") as f:
            out[split] = [{"image": folder.parent / row["Path"], "frontal": row["Frontal/Lateral"] == "Frontal",
                           "age": int(row["Age"]),
                           "labels": [float(row[n]) if row[n] else None for n in GT_HEADER[1:]]}
                          for row in csv.DictReader(f)]
    with open(folder / "groundtruth.csv", newline="") as f:
        out["test"] = [{"study": folder.parent / row["Study"], "labels": [int(row[n]) for n in GT_HEADER[1:]]}
                       for row in csv.DictReader(f)]
    return out


def test_csv_headers_paths_and_fields(dataset: Path) -> None:
    assert dataset.name == FOLDER
    for split in ("train", "valid"):
        header, rows = read(dataset / f"{split}.csv")
        assert header == list(CSV_HEADER) and len(header) == 19
        assert rows
        for row in rows:
            m = IMAGE_PATH.match(row[0])
            assert m and m.group(1) == split, row[0]
            assert (dataset.parent / row[0]).is_file()
            assert row[1] in {"Male", "Female"} and row[2].isdigit()
            assert row[3] == m.group(5).capitalize()
            assert row[4] in ({"AP", "PA"} if row[3] == "Frontal" else {""})
            assert set(row[5:]) <= LABELS


def test_patients_are_consecutive_and_in_one_split(dataset: Path) -> None:
    ids: dict[str, set[int]] = {}
    for split in ("train", "valid", "test"):
        ids[split] = {int(p.name[7:]) for p in (dataset / split).iterdir()}
        assert len(ids[split]) >= 2
    assert not (ids["train"] & ids["valid"] or ids["train"] & ids["test"] or ids["valid"] & ids["test"])
    assert set().union(*ids.values()) == set(range(1, PATIENTS + 1))
    assert max(ids["train"]) < min(ids["valid"]) and max(ids["valid"]) < min(ids["test"])


def test_label_values_per_split(dataset: Path) -> None:
    _, train = read(dataset / "train.csv")
    _, valid = read(dataset / "valid.csv")
    train_values = {v for row in train for v in row[5:]}
    assert {"-1.0", ""} <= train_values, "train must have uncertain and blank labels"
    assert {v for row in valid for v in row[5:]} == {"0.0", "1.0"}
    for row in train:
        assert row[5] in {"1.0", ""}
        if row[5] == "1.0":  # No Finding excludes every positive or uncertain pathology but devices
            assert set(row[6:-1]) <= {"0.0", ""}


def test_groundtruth_is_study_level(dataset: Path) -> None:
    header, rows = read(dataset / "groundtruth.csv")
    assert header == GT_HEADER
    studies = [r[0] for r in rows]
    on_disk = sorted(f"{FOLDER}/test/{s.parent.name}/{s.name}" for s in (dataset / "test").glob("patient*/study*"))
    assert sorted(studies) == on_disk and len(set(studies)) == len(studies)
    assert len({s.split("/")[2] for s in studies}) == len(studies), "one study per test patient"
    for row in rows:
        assert set(row[1:]) <= {"0", "1"} and len(row) == 15
        assert (dataset.parent / row[0] / "view1_frontal.jpg").is_file()


def test_images_are_grayscale_jpegs_some_not_square(dataset: Path) -> None:
    shapes = set()
    for path in sorted(dataset.rglob("*.jpg")):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert im.height == SIZE and 0.84 * SIZE <= im.width <= SIZE
            if "lateral" in path.name:
                assert im.width == SIZE
            shapes.add(im.size)
    assert len(shapes) > 1, "some frontals should be narrower than tall"


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    other = write_synthetic(tmp_path / "b", PATIENTS, seed=SEED + 1, image_size=SIZE, progress=False, workers=1)
    different = file_hashes(other)
    # a rerun into the same folder replaces the earlier dataset
    again = write_synthetic(tmp_path / "b", PATIENTS, seed=SEED, image_size=SIZE, progress=False, workers=1)
    reference = file_hashes(dataset)
    assert again == other and file_hashes(again) == reference
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".chexops-synthetic.json", FOLDER]
    assert different["train.csv"] != reference["train.csv"]
    shared = set(different) & set(reference)
    assert sum(different[k] != reference[k] for k in shared) > 0.9 * len(shared)


def test_independent_reader_counts(dataset: Path) -> None:
    data = read_chexpert(dataset)
    for split in ("train", "valid"):
        on_disk = sorted((dataset / split).rglob("*.jpg"))
        assert len(data[split]) == len(on_disk)
        assert sorted(r["image"] for r in data[split]) == on_disk
        assert all(18 <= r["age"] <= 90 for r in data[split])
    assert len(data["test"]) == len(list((dataset / "test").iterdir()))
    assert all(r["study"].is_dir() for r in data["test"])
    assert sum(r["frontal"] for r in data["train"]) >= len({r["image"].parent for r in data["train"]})


def test_bad_arguments_and_existing_output(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="patients"):
        write_synthetic(tmp_path, 9, progress=False)
    with pytest.raises(ConfigError, match="image_size"):
        write_synthetic(tmp_path, 20, image_size=8, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        write_synthetic(tmp_path, 20, seed=-1, progress=False)
    foreign = tmp_path / "real" / FOLDER
    foreign.mkdir(parents=True)
    with pytest.raises(DataError, match="not written by chexops synth"):
        write_synthetic(tmp_path / "real", PATIENTS, progress=False)
    foreign.rmdir()
    (tmp_path / "real").rmdir()
    with pytest.raises(ConfigError, match="severity"):
        render([0.0] * 13, np.random.default_rng(0), 32)
    assert not any(tmp_path.iterdir()), "nothing is written when arguments are bad"


def test_label_model_prevalences_and_co_occurrence() -> None:
    studies = [s for s in sample_exams(2000, seed=0) if s.split == "train"]
    lab = np.array([[np.nan if v is None else v for v in s.labels] for s in studies])
    pos = lab == 1
    for name, lo, hi in [("Support Devices", 0.45, 0.6), ("Pleural Effusion", 0.33, 0.44), ("No Finding", 0.05, 0.18),
                         ("Lung Opacity", 0.4, 0.55), ("Cardiomegaly", 0.09, 0.15), ("Pneumonia", 0.01, 0.05)]:
        assert lo < pos[:, IDX[name]].mean() < hi, name
    assert (lab[:, IDX["Atelectasis"]] == -1).mean() > 0.1
    edema, cardio = pos[:, IDX["Edema"]], pos[:, IDX["Cardiomegaly"]]
    assert edema[cardio].mean() > 1.3 * edema.mean(), "edema should co-occur with cardiomegaly"
    children = pos[:, [IDX[n] for n in ("Edema", "Consolidation", "Atelectasis", "Pneumonia", "Lung Lesion")]]
    assert pos[children.any(axis=1), IDX["Lung Opacity"]].all(), "Lung Opacity is the parent of airspace findings"


def test_uncertain_findings_render_weaker_than_positive() -> None:
    rng = np.random.default_rng(0)
    sev = {1.0: [], -1.0: [], 0.0: []}
    for _ in range(2000):
        labels, severity = sample_exam(rng, "train")
        for lab, s in zip(labels[1:], severity[1:], strict=True):
            if lab is not None:
                sev[lab].append(s)
    assert np.mean(sev[0.0]) == 0 and min(sev[1.0]) >= 0.5
    assert 0.2 < np.mean(sev[-1.0]) < np.mean(sev[1.0])


def test_cardiac_region_brighter_with_cardiomegaly() -> None:
    diffs = []
    for i in range(24):  # the same patient and exposure with and without an enlarged heart
        sev = np.zeros(len(OBSERVATIONS))
        normal = render(sev, np.random.default_rng(i), 64).astype(float)
        sev[IDX["Cardiomegaly"]] = 1.0
        big = render(sev, np.random.default_rng(i), 64).astype(float)
        region = (slice(32, 45), slice(40, 52))  # beside the left heart border of a normal heart
        diffs.append(big[region].mean() - normal[region].mean())
    assert np.mean(diffs) > 20 and np.mean(np.array(diffs) > 0) > 0.9


@pytest.fixture(scope="module")
def phantoms() -> tuple[np.ndarray, np.ndarray]:
    """300 frontal phantoms at 32 px with each finding present at random, and which were present."""
    rng = np.random.default_rng(1)
    present = rng.random((300, len(OBSERVATIONS))) < 0.4
    sev = present * rng.uniform(0.55, 1.0, present.shape)
    sev[:, 0] = 0
    x = np.stack([render(s, np.random.default_rng([5, i]), 32) for i, s in enumerate(sev)])
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    return (x - x.mean(0)) / (x.std(0) + 1e-3), present


@pytest.mark.parametrize("task", ["Cardiomegaly", "Pleural Effusion"])
def test_pixels_predict_labels(phantoms: tuple[np.ndarray, np.ndarray], task: str) -> None:
    x, present = phantoms
    y = present[:, IDX[task]]
    model = LogisticRegression(C=0.01, max_iter=1000).fit(x[:200], y[:200])
    auroc = roc_auc_score(y[200:], model.decision_function(x[200:]))
    assert auroc > 0.75, f"{task}: AUROC {auroc:.3f}"


def test_cli_writes_and_summarises(tmp_path: Path) -> None:
    result = CliRunner().invoke(synth_command, [str(tmp_path / "out"), "--patients", "10", "--seed", "1",
                                                "--image-size", "32", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "valid 2 patients" in result.output and "images/s" in result.output
    assert (tmp_path / "out" / FOLDER / "train.csv").is_file()

"""`chexops predict` from a real registered ensemble: equality with the ensemble, input forms, untrusted inputs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fixtures.predict import CHAMPION, NAME, Registered
from fixtures.registry import chexops
from PIL import Image, ImageFile

from chexops.data.cache import load_image
from chexops.data.chexpert import resolve_image
from chexops.data.labels import CSV_HEADER, OBSERVATIONS
from chexops.evaluate import ensemble as serving

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store(registered: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registered:
    """The registry found through MLFLOW_TRACKING_URI, from a folder without params.yaml."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.uri)
    monkeypatch.chdir(tmp_path)
    return registered


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def pixels(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


def probs(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(OBSERVATIONS)].to_numpy()


def test_champion_predictions_for_image_files_equal_the_ensembles_own(
        registered: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"tracking:\n  uri: {registered.uri}\n")  # found without the env var
    arrays = [pixels(i) for i in range(3)] + [pixels(7, 40, 48), pixels(8, 50, 36)]
    files = [str(save(tmp_path / f"img{i}.png", a)) for i, a in enumerate(arrays)]
    code, out, _ = chexops(capsys, "predict", CHAMPION, *files, "--out", "preds.csv", "--quiet")
    assert code == 0 and "wrote 5 images to preds.csv" in out
    got = pd.read_csv(tmp_path / "preds.csv")
    assert list(got.columns) == ["path", *OBSERVATIONS] and got["path"].tolist() == files
    want = serving.predict_manifest(registered.manifest, arrays)  # PNG is lossless: the same pixels
    np.testing.assert_allclose(probs(got), want, atol=1e-6)
    assert np.ptp(want, axis=0).max() > 1e-3  # the images get different answers, so order matters
    assert not (tmp_path / "preds_studies.csv").exists()  # no patientN/studyN in these paths


def test_a_folder_streams_in_batches_and_studies_combine_views_as_evaluation_does(
        store: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    data = tmp_path / "data"
    files = [save(data / "patient00001/study1/view1_frontal.png", pixels(1)),
             save(data / "patient00001/study1/view2_lateral.png", pixels(2, 40, 40)),
             save(data / "patient00002/study1/view1_frontal.jpeg", pixels(3)),
             save(data / "patient00002/study2/view1_frontal.png", pixels(4))]
    (data / "patient00001/notes.txt").write_text("not an image, not an image name: ignored")
    seen: list[int] = []
    real = mlflow.pyfunc.PyFuncModel.predict
    monkeypatch.setattr(mlflow.pyfunc.PyFuncModel, "predict",
                        lambda self, x, *a, **k: (seen.append(len(x)), real(self, x, *a, **k))[1])
    code, out, _ = chexops(capsys, "predict", CHAMPION, str(data), "--out", "out/p.csv", "--batch", "3", "--quiet")
    assert code == 0 and "3 studies to out/p_studies.csv" in out and "ignored 1 files" in out
    assert seen == [3, 1]  # never more than --batch images decoded at a time
    got = pd.read_csv(tmp_path / "out/p.csv")
    assert got["path"].tolist() == [str(f) for f in files]  # sorted walk, paths as given
    want = serving.predict_manifest(store.manifest, [load_image(f, 32) for f in files])
    np.testing.assert_allclose(probs(got), want, atol=1e-6)
    studies = pd.read_csv(tmp_path / "out/p_studies.csv")
    assert studies["study"].tolist() == ["patient00001/study1", "patient00002/study1", "patient00002/study2"]
    # the lab's order, as the evaluate stage: each checkpoint's maximum over the study's views, then their mean
    manifest = serving.read_manifest(store.manifest)
    ensemble = serving.load_ensemble(manifest, serving.checkpoint_paths(store.manifest, manifest))
    members = ensemble.member_probs(np.stack([load_image(f, 32) for f in files]))
    lab = np.stack([members[:, :2].max(axis=1).mean(0), members[:, 2].mean(0), members[:, 3].mean(0)])
    np.testing.assert_allclose(probs(studies), lab, atol=1e-6)
    assert (want[0] != want[1]).any()  # two different views really are combined


def write_chexpert_csv(root: Path, rel_paths: list[str]) -> Path:
    with open(root / "valid.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for rel in rel_paths:
            writer.writerow([rel, "Female", "50", "Frontal", "AP", *(["0.0"] * len(OBSERVATIONS))])
    return root / "valid.csv"


def test_a_chexpert_csv_is_resolved_against_its_dataset_folder(store: Registered, make_chexpert, capsys) -> None:
    root = make_chexpert()
    index = pd.read_csv(root / "valid.csv")
    code, out, _ = chexops(capsys, "predict", CHAMPION, str(root / "valid.csv"), "--out", "v.csv", "--quiet")
    assert code == 0 and f"wrote {len(index)} images" in out
    got = pd.read_csv("v.csv")
    files = [resolve_image(root, rel) for rel in index["Path"]]
    assert got["path"].tolist() == [str(f) for f in files] and all(f.is_file() for f in files)
    np.testing.assert_allclose(probs(got), serving.predict_manifest(store.manifest, [str(f) for f in files]),
                               atol=1e-6)
    assert len(pd.read_csv("v_studies.csv")) == index["Path"].str.extract(r"(patient\d+/study\d+)")[0].nunique()


def test_a_csv_path_escaping_its_dataset_folder_is_refused(store: Registered, make_chexpert, capsys) -> None:
    root = make_chexpert()
    secret = save(root.parent / "outside/patient00009/study1/view1_frontal.jpg", pixels(9))
    write_chexpert_csv(root, [f"{root.name}/../outside/patient00009/study1/view1_frontal.jpg"])
    code, _, err = chexops(capsys, "predict", CHAMPION, str(root / "valid.csv"), "--out", "v.csv", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "escapes the dataset folder" in err
    assert not Path("v.csv").exists() and secret.is_file()
    (root / "valid").mkdir(exist_ok=True)
    os.symlink(secret.parent.parent, root / "valid/patient00009")  # the same escape, by a link this time
    write_chexpert_csv(root, [f"{root.name}/valid/patient00009/study1/view1_frontal.jpg"])
    code, _, err = chexops(capsys, "predict", CHAMPION, str(root / "valid.csv"), "--out", "v.csv", "--quiet")
    assert code == 2 and "outside the dataset folder" in err and not Path("v.csv").exists()


def test_a_non_image_file_is_an_error_unless_skip_bad(store: Registered, tmp_path: Path, capsys) -> None:
    good = save(tmp_path / "in/a_good.png", pixels(1))
    bad = tmp_path / "in/b_bad.png"
    bad.write_text("this is a text file with an image name")
    code, _, err = chexops(capsys, "predict", CHAMPION, str(tmp_path / "in"), "--out", "p.csv", "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert f"image {bad}: not an image file PIL can read" in err and "--skip-bad" in err
    assert not (tmp_path / "p.csv").exists()
    code, out, err = chexops(capsys, "predict", CHAMPION, str(tmp_path / "in"), "--out", "p.csv", "--quiet",
                             "--skip-bad")
    assert code == 0 and err == f"skipped {bad}: not an image file PIL can read\n"
    assert "wrote 1 images" in out and "skipped 1 unreadable files" in out
    got = pd.read_csv(tmp_path / "p.csv")
    assert got["path"].tolist() == [str(good)]
    np.testing.assert_allclose(probs(got), serving.predict_manifest(store.manifest, pixels(1)[None]), atol=1e-6)


def test_an_oversized_image_is_refused_from_its_header_without_decoding(
        store: Registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    save(tmp_path / "in/ok.png", pixels(1))
    Image.new("1", (8000, 8000)).save(tmp_path / "in/big.png")  # 64 MP over the 50 MP limit, a 10 kB file
    decoded: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (decoded.append(self.size), real(self))[1])
    code, _, err = chexops(capsys, "predict", CHAMPION, str(tmp_path / "in"), "--out", "p.csv", "--quiet")
    assert code == 2 and "big.png: 8000 x 8000 pixels is over the 50,000,000-pixel limit; not decoded" in err
    code, out, err = chexops(capsys, "predict", CHAMPION, str(tmp_path / "in"), "--out", "p.csv", "--quiet",
                             "--skip-bad")
    assert code == 0 and "skipped" in err and "big.png" in err and "wrote 1 images" in out
    assert (8000, 8000) not in decoded and (32, 32) in decoded  # the spy does see the images that are decoded


def test_links_out_of_a_given_folder_are_refused(store: Registered, tmp_path: Path, capsys) -> None:
    outside = save(tmp_path / "private/x.png", pixels(5))
    folder = tmp_path / "in"
    save(folder / "ok.png", pixels(1))
    save(folder / "sub/inside.png", pixels(2))
    os.symlink(folder / "sub/inside.png", folder / "alias.png")  # inside the folder: fine
    code, out, _ = chexops(capsys, "predict", CHAMPION, str(folder), "--out", "p.csv", "--quiet")
    assert code == 0 and "wrote 3 images" in out
    for link, target in ((folder / "leak.png", outside), (folder / "sub/leakdir", outside.parent)):
        os.symlink(target, link)
        code, _, err = chexops(capsys, "predict", CHAMPION, str(folder), "--out", "q.csv", "--quiet", "--skip-bad")
        assert code == 2 and err.count("\n") == 1 and f"{link} is a link to {target}," in err
        assert "outside the folder" in err and not (tmp_path / "q.csv").exists()
        link.unlink()


def test_a_model_that_is_not_there_is_a_clear_error(store: Registered, tmp_path: Path, capsys,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "a.png", pixels(1))
    code, _, err = chexops(capsys, "predict", f"models:/{NAME}@nosuchalias", "a.png", "--out", "p.csv", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "cannot load model" in err and "chexops registry list" in err
    code, _, err = chexops(capsys, "predict", CHAMPION, "missing.png", "--out", "p.csv", "--quiet")
    assert code == 2 and "input missing.png does not exist" in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'typo.db'}")
    code, _, err = chexops(capsys, "predict", CHAMPION, "a.png", "--out", "p.csv", "--quiet")
    assert code == 2 and f"no tracking store at {tmp_path / 'typo.db'}" in err
    assert not (tmp_path / "typo.db").exists()  # no empty store was started by the attempt


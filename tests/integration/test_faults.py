"""No silent wrong result: bad input and faults, one table, each run as a user would run it (the CLI, in a child
process), with the exact exit code, one error line without a traceback, and the files and MLflow records left
as they were.

The fast table needs no training; the slow one resumes a run killed mid-training (after two validations, the
way SIGKILL leaves it) from copies whose state, checkpoints or store were damaged. Cases already handled before
are kept in the tables so that none regresses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import build_chexpert
from PIL import Image

from chexops import components as plugins
from chexops.naming import RUN_RECORD_FILE

REPO = Path(__file__).resolve().parents[2]
TRUNCATED = ["--family", "resnet18", "--init", "random", "--truncate", "3"]
PARAMS: dict[str, Any] = {
    "study": {"name": "faults", "seed": 0},
    "data": {"source": "synthetic", "synthetic": {"patients": 60, "seed": 0, "image_size": 48}, "image_size": 32,
             "workers": 1},
    "train": {"max_examples": 192, "eval_every": 64, "top_k": 2, "batch_size": 16, "device": "cpu",
              "eval_batch_size": 64},
    "eval": {"bootstrap": 50},
    "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
    "grid": {"families": ["resnet18"], "initializers": ["random"],
             "truncated": [{"family": "resnet18", "depth": 3, "init": "random"}]},
    "analysis": {"bootstrap": 50},
}


@dataclass
class Result:
    code: int
    out: str
    err: str


def chexops(cwd: Path, *args: str, timeout: float = 600) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"CHEXOPS_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-m", "chexops", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def write_params(root: Path, **sections: dict[str, Any]) -> None:
    params = {k: dict(v) if isinstance(v, dict) else v for k, v in PARAMS.items()}
    for name, values in sections.items():
        params[name] = params.get(name, {}) | values
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its content hash (links by their target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Case:
    """Set up `root`, run `chexops ARGS` there, expect `code` and these words (and none of `forbid`) in the output.

    For an error (code 2) the output is one `Error:` line on stderr. Files under `root` must stay as they were,
    except new ones under `may_create`; `check(root)` looks at anything else (e.g. MLflow records).
    """

    id: str
    setup: Callable[[Path], None]
    args: list[str]
    code: int
    words: list[str]
    forbid: list[str] = field(default_factory=list)
    may_create: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None


def run_case(case: Case, root: Path) -> Result:
    case.setup(root)
    before = snapshot(root)
    started = time.perf_counter()
    result = chexops(root, *case.args)
    print(f"{case.id}: exit {result.code} in {time.perf_counter() - started:.1f} s: {result.err.strip()[:300]}")
    text = result.out + result.err
    assert result.code == case.code, f"{case.id}: exit {result.code}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    if case.code == 2:  # one error line; anything before it may only be a progress bar
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("Error: "), result.err[-3000:]
        assert all("%|" in line for line in lines[:-1]), result.err[-3000:]
    for word in case.words:
        assert word in text, f"{case.id}: {word!r} not in\n{text[-3000:]}"
    for word in case.forbid:
        assert word not in text, f"{case.id}: {word!r} in\n{text[-3000:]}"
    after = snapshot(root)
    changed = [f for f in before if after.get(f) != before[f]]
    created = [f for f in after if f not in before and not f.startswith(case.may_create or ("\0",))]
    assert not changed and not created, f"{case.id}: changed {changed}, created {created}"
    if case.check:
        case.check(root)
    return result


# --- fast: configuration, stores, data folders, promotion, help ---------------------------------------------------

def params(**sections: dict[str, Any]) -> Callable[[Path], None]:
    return lambda root: write_params(root, **sections)


def store(content: bytes | None) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        write_params(root)
        if content is not None:
            (root / "mlflow.db").write_bytes(content)
    return setup


def chexpert(damage: Callable[[Path, Path], None]) -> Callable[[Path], None]:
    """A tiny CheXpert folder at root/ds/CheXpert-v1.0-small, then `damage(folder, root)`."""
    def setup(root: Path) -> None:
        damage(build_chexpert(root / "ds"), root)
    return setup


def first_train_image(folder: Path) -> Path:
    return sorted((folder / "train").rglob("*.jpg"))[0]


def duplicate_under_other_folder(folder: Path, root: Path) -> None:
    lines = (folder / "train.csv").read_text().splitlines()
    first = lines[1]
    (folder / "train.csv").write_text("\n".join([*lines, first.replace("CheXpert-v1.0-small/", "CheXpert-v1.0/", 1)])
                                      + "\n")


def empty_image(folder: Path, root: Path) -> None:
    first_train_image(folder).write_bytes(b"")


def missing_image(folder: Path, root: Path) -> None:
    first_train_image(folder).unlink()


def corrupt_image(folder: Path, root: Path) -> None:
    first_train_image(folder).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def link_outside(folder: Path, root: Path) -> None:
    outside = root / "secret.jpg"
    shutil.copy(first_train_image(folder), outside)
    image = first_train_image(folder)
    image.unlink()
    image.symlink_to(outside)


def link_outside_prepared_with_skip(root: Path) -> None:
    folder = build_chexpert(root / "ds")
    link_outside(folder, root)
    write_params(root, data={"source": "chexpert", "root": str(folder), "on_bad_image": "skip"})


def nothing_created(*names: str) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        assert not [n for n in names if (root / n).exists()]
    return check


FAST = [
    Case("grid-truncated-without-depth",
         params(grid={"truncated": [{"family": "resnet18", "init": "random"}]}), ["train", "--family", "resnet18"],
         2, ["grid.truncated[0] lacks the required key depth", "add it"],
         check=nothing_created("mlflow.db", "runs", "data")),
    Case("lr-infinite", params(train={"lr": float("inf")}), ["train", "--family", "resnet18"],
         2, ["train.lr must be a finite number, got inf"], check=nothing_created("mlflow.db", "runs", "data")),
    Case("lr-nan", params(eval={"ci": float("nan")}), ["train", "--family", "resnet18"],
         2, ["eval.ci must be a finite number"]),
    Case("truncate-too-deep", params(), ["train", "--family", "resnet18", "--truncate", "9"],
         2, ["--truncate is resnet18 at depth 9", "allows dropping 1 to 3"],
         check=nothing_created("mlflow.db", "runs", "data", "mlartifacts")),
    Case("unknown-family", params(), ["train", "--family", "resnet1"], 2, ["resnet1", "Did you mean"],
         check=nothing_created("mlflow.db", "runs", "data")),
    Case("params-missing", params(), ["train", "--family", "resnet18", "--params", "nope.yaml"], 2,
         ["nope.yaml not found"]),
    Case("unknown-params-key", params(train={"lr_rate": 1e-3}), ["train", "--family", "resnet18"], 2,
         ["unknown params key 'train.lr_rate'"]),
    Case("store-zero-bytes-registry-list", store(b""), ["registry", "list"], 2,
         ["mlflow.db is empty (0 bytes)", "restore it from a backup"], forbid=["no registered models"]),
    Case("store-corrupt-registry-list", store(b"definitely not sqlite" * 200), ["registry", "list"], 2,
         ["is not an SQLite database"], forbid=["Start the tracking server"]),
    Case("store-corrupt-promote", store(b"definitely not sqlite" * 200), ["promote", "m", "1"], 2,
         ["is not an SQLite database"], forbid=["Start the tracking server"]),
    Case("store-missing-registry-list", store(None), ["registry", "list"], 2, ["no tracking store at"],
         check=nothing_created("mlflow.db")),
    Case("data-duplicate-under-other-first-folder", chexpert(duplicate_under_other_folder),
         ["data", "check", "ds/CheXpert-v1.0-small"], 2, ["train.csv row 13", "is listed twice"]),
    Case("data-empty-image", chexpert(empty_image), ["data", "check", "ds/CheXpert-v1.0-small"], 2,
         ["1 of 11 train images are empty (0 bytes)"], forbid=["all 2"]),
    Case("data-link-outside", chexpert(link_outside), ["data", "check", "ds/CheXpert-v1.0-small"], 2,
         ["1 of 11 train images lead outside the folder", "even with on_bad_image: skip"],
         forbid=["would leave them out", "prepare with on_bad_image"]),
    Case("data-missing-image", chexpert(missing_image), ["data", "check", "ds/CheXpert-v1.0-small"], 2,
         ["1 of 11 train images are missing"]),
    Case("data-corrupt-image-decode", chexpert(corrupt_image), ["data", "check", "ds/CheXpert-v1.0-small", "--decode",
                                                                "--workers", "1"], 2,
         ["1 train images cannot be decoded", "on_bad_image: skip"]),
    Case("prepare-link-outside-with-skip", link_outside_prepared_with_skip, ["train", *TRUNCATED, "--quiet"], 2,
         ["outside the dataset folder", "does not skip paths leading outside"],
         forbid=["or prepare with on_bad_image='skip'"], may_create=("data/",)),
    Case("help-worker-names-its-env", params(), ["worker", "--help"], 0, ["CHEXOPS_WORKER_STORAGE"]),
    Case("help-train-describes-params", params(), ["train", "--help"], 0, ["The study's settings"]),
]


@pytest.mark.parametrize("case", FAST, ids=[c.id for c in FAST])
def test_fault(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)


def test_atomic_writes_take_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    from chexops.train.checkpoints import atomic_write_json

    old = os.umask(0o027)
    try:
        atomic_write_json({"a": 1}, tmp_path / "manifest.json")
    finally:
        os.umask(old)
    assert oct((tmp_path / "manifest.json").stat().st_mode & 0o777) == "0o640"


# --- fast: promotion against a store (the concurrency itself: test_registry_lock.py) ------------------------------

@pytest.fixture
def registry(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store under tmp_path with version 1 and 2 of the registry fixtures' model, found through params.yaml."""
    from fixtures.registry import add_version, good_probs

    from chexops.tracking.runs import Tracker

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlartifacts"), "study")
    add_version(tracker, good_probs())
    add_version(tracker, good_probs())
    write_params(tmp_path)
    return tmp_path


def test_promote_while_another_promotion_holds_the_lock_is_refused_and_writes_nothing(registry: Path) -> None:
    from fixtures.registry import NAME
    from mlflow import MlflowClient

    from chexops.tracking.registry_lock import LOCK_PREFIX

    client = MlflowClient(f"sqlite:///{registry / 'mlflow.db'}")
    until = (datetime.now(UTC) + timedelta(minutes=5)).isoformat(timespec="seconds")
    client.create_registered_model(LOCK_PREFIX + NAME, tags={"chexops.lock.token": "x", "chexops.lock.expires": until,
                                                             "chexops.lock.by": "bob@head pid 42"})
    case = Case("promote-busy", lambda root: None, ["promote", NAME, "2"], 2,
                ["another process is changing the aliases", "bob@head pid 42", "nothing was changed"])
    run_case(case, registry)
    assert "champion" not in client.get_registered_model(NAME).aliases
    assert not [k for k in client.get_model_version(NAME, "2").tags if k.startswith("chexops.promotion.")]
    listed = run_case(Case("registry-list-hides-locks", lambda root: None, ["registry", "list"], 0, [NAME]), registry)
    assert LOCK_PREFIX not in listed.out


def test_promote_of_an_unknown_model_is_one_line(registry: Path) -> None:
    run_case(Case("promote-unknown", lambda root: None, ["promote", "nope", "1"], 2, ["no registered model 'nope'"]),
             registry)


# --- fast: predict ------------------------------------------------------------------------------------------------

def test_a_1x1_image_is_predicted_with_a_warning(model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    def setup(root: Path) -> None:
        Image.fromarray(np.full((1, 1), 90, np.uint8)).save(root / "dot.png")
        Image.fromarray(np.full((48, 40), 90, np.uint8)).save(root / "fine.png")

    result = run_case(Case("predict-1x1", setup, ["predict", str(model_dir), "dot.png", "fine.png", "--out", "p.csv",
                                                  "--quiet"], 0, ["warning: dot.png: only 1 x 1 pixels",
                                                                  "1 warnings above"], forbid=["fine.png: only"],
                           may_create=("p.csv",)), tmp_path)
    assert result.err.count("warning:") == 1
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 3  # predicted all the same: a warning, not a refusal


# --- slow: a run killed mid-training, resumed from damaged copies -------------------------------------------------

KILL_AT_STEP, SLOW_STEP_S = 10, 0.5


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder whose resnet18/random/drop-3 run was killed at step 10 (two states saved, at 64 and 128
    examples), its MLflow run KILLED; its first process trained slowly (SLOW_STEP_S a step)."""
    from chexops.config import load_config, validate
    from chexops.naming import RunKey
    from chexops.stages import ingest, prepare, train
    from chexops.stages.context import StageContext
    from chexops.train import loop

    root = tmp_path_factory.mktemp("killed")
    write_params(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHEXOPS_LOAD_PLUGINS", "")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        plugins.reset()
        ctx = StageContext(validate(load_config("params.yaml")), RunKey("resnet18", "random", 3), progress=False)
        ingest.run(ctx)
        prepare.run(ctx)
        real_step, calls = loop.Trainer._step, {"n": 0}

        def slow_dying_step(self, batch):
            calls["n"] += 1
            if calls["n"] == KILL_AT_STEP:
                raise KeyboardInterrupt
            time.sleep(SLOW_STEP_S)
            return real_step(self, batch)

        mp.setattr(loop.Trainer, "_step", slow_dying_step)
        with pytest.raises(KeyboardInterrupt):
            train.run(ctx)
    plugins.reset()
    return root


def run_dir(root: Path) -> Path:
    return root / "runs" / "train" / "resnet18__random__drop-3__labels-1.0"


def newest_checkpoint(root: Path) -> Path:
    return sorted((run_dir(root) / "checkpoints").glob("ckpt-*.pt"))[-1]


def mlflow_run(root: Path) -> Any:
    from mlflow import MlflowClient

    run_id = json.loads((run_dir(root) / RUN_RECORD_FILE).read_text())["run_id"]
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(run_id)


def run_left_killed(root: Path) -> None:
    assert mlflow_run(root).info.status == "KILLED"  # not reopened, not marked FINISHED


RESUME = ["train", *TRUNCATED, "--no-register", "--quiet"]
RESTART_HINT = "chexops train --family resnet18 --init random --truncate 3 --restart"
SLOW = [
    Case("state-zero-bytes", lambda r: (run_dir(r) / "state.pt").write_bytes(b""), RESUME, 2,
         ["state.pt is damaged or not chexops's (0 bytes", RESTART_HINT], forbid=["Aborted"], check=run_left_killed),
    Case("state-truncated", lambda r: (run_dir(r) / "state.pt").write_bytes((run_dir(r) / "state.pt").read_bytes()
                                                                              [:5000]),
         RESUME, 2, ["state.pt is damaged or not chexops's (5000 bytes", RESTART_HINT], check=run_left_killed),
    Case("newest-checkpoint-deleted", lambda r: newest_checkpoint(r).unlink(), RESUME, 2,
         ["one of the top-2 the saved state of resnet18/random/drop-3 keeps, is missing",
          RESTART_HINT], check=run_left_killed),
    Case("newest-checkpoint-truncated", lambda r: newest_checkpoint(r).write_bytes(newest_checkpoint(r).read_bytes()
                                                                                   [:1000]),
         RESUME, 2, ["one of the top-2 the saved state of resnet18/random/drop-3 keeps, is damaged", RESTART_HINT],
         check=run_left_killed),
    Case("store-zero-bytes-train", lambda r: (r / "mlflow.db").write_bytes(b""), RESUME, 2,
         ["mlflow.db is empty (0 bytes)", "train with --restart"], forbid=["not found"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=[c.id for c in SLOW])
def test_fault_on_resume(case: Case, killed: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(killed, tmp_path / "study", symlinks=True))
    run_case(case, root)


@pytest.mark.slow
def test_a_resumed_run_reports_the_time_and_speed_of_the_whole_run_and_writes_shareable_files(
        killed: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(killed, tmp_path / "study", symlinks=True))
    # a copied project is refused until its store points at its own artifact folder: the one-line fix it names
    refused = chexops(root, *RESUME)
    assert refused.code != 0 and "chexops registry relocate" in refused.err, refused.err[-2000:]
    relocated = chexops(root, "registry", "relocate")
    assert relocated.code == 0, relocated.err[-2000:]
    before = mlflow_run(root)
    logged = _history(root, before.info.run_id, "train_seconds")
    first = sorted(logged, key=lambda m: (m.step, m.timestamp))
    assert first and first[-1].value >= 4 * SLOW_STEP_S  # the killed process's time, logged at its last state
    old = os.umask(0o022)
    try:
        result = chexops(root, *RESUME)
    finally:
        os.umask(old)
    assert result.code == 0, result.err[-3000:]
    after = mlflow_run(root)
    assert after.info.status == "FINISHED"
    seconds = after.data.metrics["train_seconds"]
    examples = json.loads((run_dir(root) / "train.json").read_text())["examples"]
    assert seconds > first[-1].value  # the whole run, not only the 4 steps after the resume
    assert after.data.metrics["train_examples_per_second"] == pytest.approx(examples / seconds, rel=1e-6)
    files = [run_dir(root) / "state.pt", run_dir(root) / "manifest.json",
             *(run_dir(root) / "checkpoints").glob("ckpt-*.pt")]
    assert len(files) == 4 and {oct(f.stat().st_mode & 0o777) for f in files} == {"0o644"}


def _history(root: Path, run_id: str, key: str) -> list[Any]:
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_metric_history(run_id, key)

"""The files stages hand each other, as typed records: each is written and read here and nowhere else.

    runs/train/<run>/mlflow_run.json   RunRecord       the configuration's MLflow run (every stage reopens it)
    runs/train/<run>/train.json        TrainSummary    what training reached (written by the Trainer alone)
    runs/pretrain/<f>__<i>/pretrain.json PretrainRecord what was pretrained, how, the backbone's sha256
    runs/eval/<run>/eval.json          EvalRecord      the ensemble's test scores and what the model is
    runs/registry/<run>.json           RegistryRecord  the registry version the ensemble became
    data/cache/cache.json              cache_record()  what the prepare stage decoded (read only: data.cache writes)

Torch- and mlflow-free, below the analyses and the stages alike, so both read one definition. The JSON of each
record keeps its field order, so a record written twice from the same inputs is the same bytes (DVC outputs).
"""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from chexops import naming
from chexops.errors import ConfigError, DataError

R = TypeVar("R")


def json_safe(value: Any) -> Any:
    """NaN (an undefined AUROC) as null: bare NaN is not JSON, and strict parsers reject it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if number == number and abs(number) != float("inf") else None
    return value


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A metric as the small metrics files show it: 4 decimals, an undefined one (None or NaN) as null."""
    return None if value is None or value != value else round(float(value), digits)


def _write(path: Path, data: dict[str, Any]) -> Path:
    replace_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False))
    return path


def replace_text(path: Path, text: str) -> None:
    """Write `path` as a new file put in place of the old: a file DVC hard-links to its cache (read-only) is
    replaced, never written through, so the cached copy stays what DVC recorded."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path, stage: str) -> dict[str, Any]:
    """A record file's JSON object; a missing, unparsable or non-object file names the `stage` to (re)run."""
    if not path.is_file():
        raise DataError(f"{path} is missing; run the {stage} stage for this run first.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun the {stage} stage for this run.") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} holds {type(data).__name__}, not an object; rerun the {stage} stage for this run.")
    return data


def _build(cls: type[R], data: dict[str, Any], path: Path, stage: str) -> R:
    """`cls` from the file's fields: a missing required field says which file and what to rerun."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    required = [f.name for f in fields(cls)  # type: ignore[arg-type]
                if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise DataError(f"{path} lacks {missing}; it was not written by the {stage} stage, rerun it.")
    return cls(**{k: v for k, v in data.items() if k in known})


# --- mlflow_run.json -----------------------------------------------------------------------------------------------

def read_run_record(run_dir: Path) -> dict[str, Any]:
    """The configuration's MLflow run id, kept in its train folder so every stage (and a resume) reopens it."""
    path = Path(run_dir) / naming.RUN_RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_run_record(run_dir: Path, **values: Any) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)  # the first record of a run the Trainer has just accepted
    replace_text(Path(run_dir) / naming.RUN_RECORD_FILE, json.dumps(read_run_record(run_dir) | values, indent=2))


def require_run_id(run_dir: Path) -> str:
    run_id = read_run_record(run_dir).get("run_id")
    if not run_id:
        raise DataError(f"{run_dir} holds no trained run ({naming.RUN_RECORD_FILE} is missing): train it first "
                        "(`dvc repro`, or `chexops train`).")
    return run_id


# --- train.json ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSummary:
    """What a finished training reached; deterministic (no timings, no device), so it is a clean DVC output."""

    run: str
    examples: int
    steps: int
    best_val_score: float  # naming.BEST_RANKING_METRIC: the best checkpoint's validation `select_metric`
    select_metric: str

    def write(self, run_dir: Path) -> Path:
        return _write(Path(run_dir) / naming.TRAIN_SUMMARY_FILE, _renamed(asdict(self)))

    @classmethod
    def read(cls, run_dir: Path) -> TrainSummary:
        path = Path(run_dir) / naming.TRAIN_SUMMARY_FILE
        data = read_json(path, "train")
        if naming.BEST_RANKING_METRIC in data:
            data["best_val_score"] = data.pop(naming.BEST_RANKING_METRIC)
        return _build(cls, data, path, "train")


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    return {naming.BEST_RANKING_METRIC if k == "best_val_score" else k: v for k, v in data.items()}


# --- pretrain.json -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PretrainRecord:
    """A pretrain stage's output: a pass-through (`pretraining` says why) or a pretrained backbone, with what
    the initializer's pretraining step reported (`details`: sha256, examples, loss, normalisation, ...)."""

    family: str
    initializer: str
    pretraining: str | None = None  # set only for an initializer without a pretraining step
    method: str | None = None
    label: str | None = None
    mlflow_run_id: str | None = None
    data: str | None = None
    data_hash: str | None = None
    settings: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        return self.pretraining is None

    @property
    def sha256(self) -> str | None:
        return self.details.get("sha256")

    def to_dict(self) -> dict[str, Any]:
        head = {"family": self.family, "initializer": self.initializer}
        if not self.pretrained:
            return head | {"pretraining": self.pretraining}
        body = {"method": self.method, "label": self.label, "mlflow_run_id": self.mlflow_run_id, "data": self.data,
                "data_hash": self.data_hash, "settings": self.settings}
        return head | body | self.details

    def write(self, folder: Path) -> Path:
        return _write(Path(folder) / naming.PRETRAIN_FILE, self.to_dict())

    @classmethod
    def path(cls, folder: Path) -> Path:
        return Path(folder) / naming.PRETRAIN_FILE

    @classmethod
    def read(cls, folder: Path) -> PretrainRecord:
        path = cls.path(folder)
        data = read_json(path, "pretrain")
        named = {f.name for f in fields(cls)} - {"details"}
        record = _build(cls, {k: v for k, v in data.items() if k in named}, path, "pretrain")
        return PretrainRecord(**asdict(record) | {"details": {k: v for k, v in data.items() if k not in named}})

    @classmethod
    def read_if_present(cls, folder: Path) -> PretrainRecord | None:
        return cls.read(folder) if cls.path(folder).is_file() else None


# --- eval.json -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TestScores:
    """What scoring the ensemble on the test split gives: metrics with CIs, the headline mean, the bootstrap."""

    metrics: dict[str, float]
    n_test_studies: int
    headline: dict[str, Any]  # metric (its honest name), tasks, undefined
    undefined_tasks: list[str]
    bootstrap: dict[str, Any]
    best_single: dict[str, Any]
    checkpoint_test_mean_auroc: list[float]
    training: dict[str, Any] = field(default_factory=dict)  # budget and validation history (scoring.training_record)


@dataclass(frozen=True)
class EvalRecord:
    """eval.json: what the model is (configuration, size, initializer, data) and its TestScores."""

    run: str
    family: str
    group: str
    initializer: str
    test_split: dict[str, Any]
    truncation: str
    truncation_strategy: str
    depth: int
    parameters: int
    imagenet_top1: float | None
    timm_tag: str | None
    reference_top1: float | None
    reference_top1_source: str | None
    test_source: str
    data: str
    label_fraction: float
    initializer_pretrained: bool
    initializer_label: str
    mlflow_run_id: str
    metrics: dict[str, float]
    n_test_studies: int
    headline: dict[str, Any]
    undefined_tasks: list[str]
    bootstrap: dict[str, Any]
    best_single: dict[str, Any]
    checkpoint_test_mean_auroc: list[float]
    training: dict[str, Any] = field(default_factory=dict)  # an eval.json from before it was recorded lacks it
    train_seed: int | None = None  # the seed it trained with (None in an eval.json from before it was recorded)
    seed_repeat: bool = False  # a grid.seeds repeat: the analysis uses it for the spread across seeds only

    @property
    def headline_metric(self) -> str:
        """`test_mean_auroc_6`, or `test_mean_auroc_5of6` when a study task was undefined on the test split."""
        return self.headline["metric"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, eval_dir: Path) -> Path:
        return _write(Path(eval_dir) / naming.EVAL_FILE, self.to_dict())

    @classmethod
    def read(cls, eval_dir: Path) -> EvalRecord:
        path = Path(eval_dir) / naming.EVAL_FILE
        return _build(cls, read_json(path, "evaluate"), path, "evaluate")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (checkpoints and caches are hundreds of MB)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def ensemble_sha256(run_dir: Path) -> str:
    """What the ensemble a run folder holds computes: its checkpoints' bytes in manifest order and the input
    normalisation. Two trainings that reach the same weights give the same digest (run ids and timings aside)."""
    manifest = read_json(Path(run_dir) / naming.MANIFEST_FILE, "train")
    digest = hashlib.sha256(json.dumps(manifest.get("normalization"), sort_keys=True).encode())
    for checkpoint in manifest.get("checkpoints", []):
        with open(Path(run_dir) / checkpoint["file"], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --- runs/registry/<run>.json --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegistryRecord:
    registered_model: str
    version: int
    alias: str  # the alias the registration pointed at it ("" when an identical version was reused)
    run_id: str  # the configuration's current run (a version reused for an identical ensemble came from another)

    def write(self, path: Path) -> Path:
        return _write(Path(path), asdict(self))

    @classmethod
    def read_if_present(cls, path: Path) -> RegistryRecord | None:
        path = Path(path)
        return _build(cls, read_json(path, "evaluate"), path, "evaluate") if path.is_file() else None


# --- data/cache/cache.json -----------------------------------------------------------------------------------------

def cache_record(cache_dir: str | Path) -> dict[str, Any] | None:
    """What the prepare stage recorded about `cache_dir`, or None when it never ran."""
    path = naming.cache_file(cache_dir)
    return json.loads(path.read_text()) if path.is_file() else None


def data_hash(cache_dir: str | Path) -> str:
    """The prepared data's content hash (tagged on every run), or 'unprepared'."""
    record = cache_record(cache_dir)
    return record["data_hash"] if record else "unprepared"


def recorded_test_source(cache_dir: str | Path) -> str:
    """Where the prepared test split came from (official labels or a hold-out), as the prepare stage recorded."""
    record = cache_record(cache_dir)
    return record.get("test_source", "unknown") if record else "unknown"


def require_prepared(cache_dir: str | Path, image_size: int, on_bad_image: str) -> dict[str, Any]:
    """The cache record, checked against params.yaml: training on a cache made for other settings is refused."""
    record = cache_record(cache_dir)
    if record is None:
        raise ConfigError(f"no prepared data in {cache_dir}: run `dvc repro prepare` first.")
    for name, asked in (("image_size", image_size), ("on_bad_image", on_bad_image)):
        made = record.get(name)
        if made != asked:
            raise ConfigError(f"{cache_dir} was prepared with data.{name} = {made!r}, but params.yaml "
                              f"asks for {asked!r}: run `dvc repro prepare` to prepare the data again.")
    return record


def read_splits(index_dir: str | Path) -> dict[str, Any]:
    """The ingest stage's splits.json: the dataset root, the test source and each split's composition."""
    return read_json(Path(index_dir) / naming.SPLITS_FILE, "ingest")


def dvc_hash(path: str | Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The hash DVC recorded in dvc.lock for the output `path` (None outside a `dvc repro`-made folder)."""
    import yaml

    if not lock.is_file():
        return None
    for stage_lock in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage_lock.get("outs", []):
            if Path(out.get("path", "")) == Path(path):
                return out.get("md5")
    return None


def dvc_file_hash(folder: str | Path, name: str, lock: Path = Path("dvc.lock"),
                  cache: Path = Path(".dvc/cache/files/md5")) -> str | None:
    """The md5 DVC recorded for the file `name` inside the output folder `folder` (from the folder's `.dir`
    listing in the DVC cache); None when DVC has not recorded it."""
    folder_hash = dvc_hash(folder, lock)
    if not folder_hash or not folder_hash.endswith(".dir"):
        return None
    listing = cache / folder_hash[:2] / folder_hash[2:]
    try:
        entries = json.loads(listing.read_text())
    except (OSError, ValueError):
        return None
    return next((e.get("md5") for e in entries if e.get("relpath") == name), None)

"""Every stage of the study, one function each, all with one signature: `stage(ctx: StageContext) -> dict`.

    ingest -> prepare -> pretrain -> tune -> train -> evaluate -> register -> analyze

`dvc repro` runs them through `pipelines/<stage>.py`; `chexops train` and `chexops worker` run
`run_configuration` (tune's choice -> train -> evaluate -> register) for one configuration. Each stage reads the
files of the stages before it and leaves its own (paths from chexops.naming); those files are deterministic, so
DVC re-runs exactly what changed. Timings and other measurements go to MLflow and the returned summary.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chexops import naming
from chexops.config import Config, grid_runs
from chexops.errors import ConfigError, DataError
from chexops.naming import RunKey


@dataclass
class StageContext:
    """What a stage runs on: the validated params, the configuration (for per-run stages) and how to report."""

    config: Config
    key: RunKey | None = None
    progress: bool = True
    restart: bool = False  # train: start over instead of resuming the run folder
    lr: float | None = None  # train: override the tuned / configured learning rate
    tracker: Any = None  # opened on first use (mlflow is imported only then)

    @property
    def run(self) -> RunKey:
        if self.key is None:
            raise ConfigError("this stage runs per configuration: give --family and --init (and --truncate).")
        return self.key

    @property
    def runs_dir(self) -> Path:
        return Path(self.config.train.runs_dir)

    def open_tracker(self) -> Any:
        if self.tracker is None:
            self.tracker = open_tracker(self.config)
        return self.tracker


Stage = Callable[[StageContext], dict[str, Any]]


# --- data --------------------------------------------------------------------------------------------------------

def dataset_root(config: Config) -> Path:
    """The CheXpert folder this study reads: the generated synthetic one, or `data.root`."""
    if config.data.source == "synthetic":
        return naming.SYNTHETIC_DIR / "CheXpert-v1.0-small"
    root = Path(config.data.root).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data.root is {config.data.root!r}, which does not exist. Set data.root in params.yaml to your "
            "CheXpert-v1.0 or CheXpert-v1.0-small folder (the one holding train.csv), or use data.source: synthetic."
        )
    return root


def ingest(ctx: StageContext) -> dict[str, Any]:
    """Read (or first generate) the dataset, split it, and write `data.index_dir`/{train,valid,test}.csv."""
    from chexops.data.chexpert import read_chexpert, write_index
    from chexops.data.splits import composition, make_splits

    config = ctx.config
    naming.SYNTHETIC_DIR.mkdir(parents=True, exist_ok=True)
    if config.data.source == "synthetic":
        from chexops.data.synthetic import write_synthetic

        s = config.data.synthetic
        write_synthetic(naming.SYNTHETIC_DIR, s.patients, s.seed, s.image_size, progress=ctx.progress,
                        workers=config.data.workers, holdout=s.holdout, exposure=s.exposure)
    else:  # the output folder still exists, so DVC's declared output is there in both modes
        (naming.SYNTHETIC_DIR / "README.txt").write_text("data.source is chexpert: no synthetic data generated.\n")
    root = dataset_root(config)
    folder = read_chexpert(root, Path(config.data.test_labels) if config.data.test_labels else None)
    splits = make_splits(folder, config.data.frontal_only, config.data.holdout_fraction, config.study.seed)
    index_dir = Path(config.data.index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"root": str(root), "source": config.data.source, "test_source": splits.test_source,
                               "frontal_only": config.data.frontal_only}
    for name, frame in splits.items():
        write_index(frame, index_dir / f"{name}.csv")
        summary[name] = composition(frame) | {"dropped_no_frontal": splits.dropped_studies.get(name, 0)}
    (index_dir / naming.SPLITS_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def prepare(ctx: StageContext) -> dict[str, Any]:
    """Decode every split once into `data.cache_dir`; cache.json records what was asked and a content hash."""
    from chexops.data.cache import prepare_split
    from chexops.data.chexpert import read_index

    config = ctx.config
    index_dir, cache_dir = Path(config.data.index_dir), Path(config.data.cache_dir)
    splits_info = json.loads((index_dir / naming.SPLITS_FILE).read_text())
    root = Path(splits_info["root"])
    # cache.json is a DVC output: only what the inputs determine goes in, so the same data gives the same bytes
    record: dict[str, Any] = {"test_source": splits_info["test_source"], "image_size": config.data.image_size,
                              "on_bad_image": config.data.on_bad_image, "splits": {}}
    timings: dict[str, float] = {}
    digest = hashlib.sha256()
    for name in naming.SPLITS:
        index = read_index(index_dir / f"{name}.csv")
        info = prepare_split(index, root, cache_dir, name, config.data.image_size,
                             config.data.on_bad_image, config.data.workers, ctx.progress)
        # what the split lost on the way, and why: evaluation is per study, so a lost study must be reported
        lost = index["study"].nunique() - read_index(info.csv_path)["study"].nunique()
        record["splits"][name] = {"images": info.count, "skipped": len(info.skipped), "studies_unreadable": int(lost),
                                  "studies_no_frontal": splits_info.get(name, {}).get("dropped_no_frontal", 0),
                                  "frontal_only": splits_info.get("frontal_only", True)}
        timings[name] = round(info.images_per_second, 1)
        digest.update(json.dumps(info.sha256, sort_keys=True).encode())
    record["data_hash"] = digest.hexdigest()[:16]
    naming.cache_file(cache_dir).write_text(json.dumps(record, indent=2))
    return record | {"images_per_second": timings}


def cache_record(config: Config) -> dict[str, Any] | None:
    """What the prepare stage recorded about `data.cache_dir`, or None when it never ran."""
    path = naming.cache_file(config.data.cache_dir)
    return json.loads(path.read_text()) if path.is_file() else None


def data_hash(config: Config) -> str:
    """The prepared data's content hash (tagged on every run), or 'unprepared'."""
    record = cache_record(config)
    return record["data_hash"] if record else "unprepared"


def recorded_test_source(config: Config) -> str:
    """Where the prepared test split came from (official labels or a hold-out), as the prepare stage recorded."""
    record = cache_record(config)
    return record.get("test_source", "unknown") if record else "unknown"


def require_prepared(config: Config) -> dict[str, Any]:
    """The cache record, checked against params.yaml: training on a cache made for other settings is refused."""
    record = cache_record(config)
    if record is None:
        raise ConfigError(f"no prepared data in {config.data.cache_dir}: run `dvc repro prepare` first.")
    for field in ("image_size", "on_bad_image"):
        made, asked = record.get(field), getattr(config.data, field)
        if made != asked:
            raise ConfigError(f"{config.data.cache_dir} was prepared with data.{field} = {made!r}, but params.yaml "
                              f"asks for {asked!r}: run `dvc repro prepare` to prepare the data again.")
    return record


# --- one configuration -------------------------------------------------------------------------------------------

def open_tracker(config: Config) -> Any:
    """The study's MLflow experiment, described so the UI explains how its runs are named."""
    from chexops.tracking.runs import Tracker

    tracker = Tracker.open(config.tracking.uri, config.tracking.artifacts, config.experiment)
    note = (f"CheXtransfer study `{config.study.name}`: {len(grid_runs(config))} configurations on "
            f"{describe_data(config)}. Runs are named family/initializer/truncation "
            "(e.g. densenet121/imagenet/drop-1); filter with tags.chexops.group, tags.chexops.initializer, "
            "tags.chexops.truncation; compare test_mean_auroc_6 (95% CI in *_ci_low/_ci_high); "
            f"`{naming.summary_run_name(config.study.name)}` holds the analysis report.")
    note += (f" Open it on the study's columns with `#/experiments/{tracker.experiment_id}/runs?{STUDY_VIEW_QUERY}` "
             "(run, family, initializer, truncation, parameters (M), ImageNet top-1, test AUROC-6 with its CI).")
    set_experiment_tags(tracker, {"mlflow.note.content": note, EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
                                  VIEW_TAG_PREFIX + STUDY_VIEW: json.dumps(study_view_state())})
    return tracker


def set_experiment_tags(tracker: Any, wanted: dict[str, str]) -> None:
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            try:
                tracker.client.set_experiment_tag(tracker.experiment_id, key, value)
            except Exception:  # noqa: BLE001 - a worker starting at the same moment set it first; UI settings only
                pass


# MLflow 3.1-3.x UIs open an experiment without this tag in their GenAI (traces) view; this value opens its runs
# (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT). From the UI with the GenAI / Model training switch
# (3.17) the switch decides, from `?workflowType=machine_learning` in the link or the browser's last choice.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# A runs-page view the UI loads from an experiment tag `mlflow.sharedViewState.<key>` (what its Share button
# writes; plain JSON of the page state): `#/experiments/<id>/runs?viewStateShareKey=<key>`
VIEW_TAG_PREFIX, STUDY_VIEW = "mlflow.sharedViewState.", "chexops-study"
STUDY_VIEW_QUERY = f"workflowType=machine_learning&viewStateShareKey={STUDY_VIEW}"
# the AUROC with its CI as one readable tag ("0.569 [0.400, 0.610]"); the metric itself, for sorting
STUDY_COLUMNS = ("metrics.`test_mean_auroc_6`", "params.`family`", "params.`initializer`", "params.`truncation`",
                 "params.`parameters_M`", "params.`imagenet_top1`", "tags.`chexops.test_auroc_6`")


def study_view_state() -> dict[str, Any]:
    """The saved runs-table view: the study's columns, best test AUROC first. Sorted by a metric the UI lists
    every run flat; in creation order (its default) it nests the configuration runs under the study run."""
    return {"selectedColumns": list(STUDY_COLUMNS), "orderByKey": "metrics.`test_mean_auroc_6`",
            "orderByAsc": False, "searchFilter": "", "viewMaximized": False, "runListHidden": False}


def run_record(run_dir: Path) -> dict[str, Any]:
    """The configuration's MLflow run id, kept in its train folder so every stage (and a resume) reopens it."""
    path = run_dir / naming.RUN_RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_run_record(run_dir: Path, **values: Any) -> None:
    (run_dir / naming.RUN_RECORD_FILE).write_text(json.dumps(run_record(run_dir) | values, indent=2))


def run_params(config: Config, key: RunKey, lr: float, report: dict[str, Any]) -> dict[str, Any]:
    """The params of one configuration's run: what makes it this configuration (family, initializer,
    truncation, label fraction, size, ImageNet top-1) and its training settings; the grid and study-wide
    settings are on the study run. `report` is the built model's BuildReport.to_dict()."""
    t, top1 = config.train, report.get("imagenet_top1")
    return {"family": key.family, "initializer": key.initializer,
            "truncation": naming.truncation_label(key.depth, key.strategy), "label_fraction": key.fraction,
            "parameters_M": round(report["parameters"] / 1e6, 2), "imagenet_top1": "n/a" if top1 is None else top1,
            "lr": lr, "batch_size": t.batch_size, "epochs": t.epochs, "max_examples": t.max_examples,
            "eval_every": t.eval_every, "top_k": t.top_k, "seed": t.seed, "image_size": config.data.image_size,
            "label_policy": config.data.label_policy}


def study_run(config: Config, tracker: Any) -> str:
    """The study's parent run (found by its tag, created by the first stage that needs it). Study-wide settings
    change between `dvc repro`s, so they are its `params.json` artifact (logged by analyze), not params."""
    tags = {"chexops.stage": naming.STUDY_RUN_KIND, "chexops.data": describe_data(config),
            "mlflow.note.content": f"The study `{config.study.name}`: every configuration's run is a child of this "
                                   f"run; the analyze stage logs the report and summary metrics here. Data: "
                                   f"{describe_data(config)}."}
    return tracker.study_run(naming.summary_run_name(config.study.name), config.study.name, tags)


def child_tags(config: Config, tracker: Any) -> dict[str, str]:
    """What makes a run a child of the study run in MLflow (the UI nests it there)."""
    from chexops.tracking.runs import PARENT_TAG

    return {PARENT_TAG: study_run(config, tracker)}


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


def dataset_inputs(config: Config, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    """The prepared splits a stage reads, as MLflow dataset inputs: named by source, size and split; digest the
    DVC hash of the prepared cache (the prepare stage's content hash when DVC has not recorded one)."""
    cache = Path(config.data.cache_dir)
    digest = dvc_hash(cache) or data_hash(config)
    info = json.loads((Path(config.data.index_dir) / naming.SPLITS_FILE).read_text())
    source = "synthetic-chexpert" if config.data.source == "synthetic" else "chexpert"
    return [{"name": f"{source}-{config.data.image_size}px-{split}", "digest": digest, "context": split,
             "source": f"{info['root']} -> {cache / split}.npy",
             "profile": info[split] | {"data": describe_data(config)}} for split in splits]


def describe_data(config: Config) -> str:
    """'synthetic CheXpert-format phantoms, 64 px; test: synthetic patient hold-out (...)': for tags and reports."""
    return naming.data_description(config.data.source, config.data.image_size, recorded_test_source(config))


def test_split_composition(config: Config, index: Any) -> dict[str, Any]:
    """The evaluated test split: where it came from, what it holds, and every study it lost on the way and why."""
    from chexops.data.splits import composition

    recorded = (cache_record(config) or {}).get("splits", {}).get("test", {})
    dropped = []
    if recorded.get("studies_no_frontal"):
        dropped.append({"studies": recorded["studies_no_frontal"],
                        "why": "no frontal image (data.frontal_only is true: the models see frontal views only)"})
    if recorded.get("studies_unreadable"):
        dropped.append({"studies": recorded["studies_unreadable"],
                        "why": "no readable image (data.on_bad_image is skip; the cache lists the files)"})
    return {"source": naming.describe_test_split(config.data.source, recorded_test_source(config)),
            **composition(index), "images_unreadable": int(recorded.get("skipped", 0)), "dropped": dropped}


def composition_text(split: dict[str, Any]) -> str:
    """'60 studies of 30 patients, 60 frontal + 0 lateral images; dropped 2 studies: no frontal image (...)'."""
    v = split["views"]
    text = (f"{split['studies']} studies of {split['patients']} patients, {v['frontal']} frontal + {v['lateral']} "
            f"lateral images")
    lost = "; ".join(f"{d['studies']} studies: {d['why']}" for d in split["dropped"])
    return text + (f"; dropped {lost}" if lost else "; no study dropped")


def pretrain(ctx: StageContext) -> dict[str, Any]:
    """The initializer's pretraining step for one family (e.g. ssl: MoCo v2 on the training images), once per
    (family, initializer) and shared by all its fine-tunes; a pass-through record for initializers without one."""
    from dataclasses import asdict

    from chexops.components.registry import get_registry

    config, key = ctx.config, ctx.run
    registry = get_registry()
    spec, _ = registry.initializer(key.initializer)
    out = key.pretrain_dir(ctx.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"family": key.family, "initializer": key.initializer}
    if spec.pretrain is None:
        record["pretraining"] = f"none: the {key.initializer} initializer has no pretraining step"
        (out / naming.PRETRAIN_FILE).write_text(json.dumps(record, indent=2))
        return record
    require_prepared(config)
    tracker = ctx.open_tracker()
    name = naming.pretrain_run_name(key.family, key.initializer)
    data = describe_data(config)
    tags = {"chexops.stage": "pretrain", "chexops.family": key.family, "chexops.initializer": key.initializer,
            "chexops.data": data, "chexops.data_hash": data_hash(config),
            "mlflow.note.content": f"{spec.label or key.initializer} pretraining of {key.family} on the training "
                                   f"split's images, labels unused; data: {data}."}
    params = {"pretrain": asdict(config.pretrain), "run": {"family": key.family, "initializer": key.initializer},
              "data": {"source": config.data.source, "image_size": config.data.image_size}}
    run_id = tracker.start_run(name, tags | child_tags(config, tracker), params, run_id=run_record(out).get("run_id"))
    _save_run_record(out, run_id=run_id, run=name)

    def log(metrics: dict[str, float], step: int) -> None:
        tracker.log_metrics(run_id, metrics, step)
        tracker.flush(run_id)

    with tracker.run_guard(run_id):
        summary = spec.pretrain(registry.family(key.family), out, {"config": config, "progress": ctx.progress,
                                                                   "log": log})
        tracker.log_metrics(run_id, {"pretrain_seconds": summary["seconds"]}, summary["examples"])
        record |= {"method": summary.get("method"), "label": spec.label, "mlflow_run_id": run_id, "data": data,
                   "data_hash": data_hash(config), "settings": asdict(config.pretrain)} | {
                       k: v for k, v in summary.items() if k != "seconds"}
        (out / naming.PRETRAIN_FILE).write_text(json.dumps(record, indent=2))
        tracker.log_artifact(run_id, out / naming.BACKBONE_FILE, "backbone")
        tracker.log_artifact(run_id, out / naming.PRETRAIN_FILE, "backbone")
    tracker.end_run(run_id)
    # the resumable state (both encoders, the queue, the optimiser) is several backbones' size: done, not kept
    (out / naming.STATE_FILE).unlink(missing_ok=True)
    return record | {"seconds": summary["seconds"]}


def pretrained_current(config: Config, key: RunKey) -> bool:
    """Whether the configuration's pretrain folder holds what the pretrain stage would make now (or nothing
    is needed): same initializer, family, settings and data."""
    from dataclasses import asdict

    from chexops.components.registry import get_registry

    spec, _ = get_registry().initializer(key.initializer)
    path = key.pretrain_dir(config.train.runs_dir) / naming.PRETRAIN_FILE
    if spec.pretrain is None:
        return True
    record = json.loads(path.read_text()) if path.is_file() else {}
    return (record.get("settings") == asdict(config.pretrain) and record.get("data_hash") == data_hash(config)
            and (path.parent / naming.BACKBONE_FILE).is_file())


def ensure_pretrained(ctx: StageContext) -> dict[str, Any] | None:
    """Run the pretrain stage for `chexops train` / `chexops worker` when its output is missing or stale; one
    process at a time per folder (workers of one family's configurations may reach it together)."""
    import fcntl

    if pretrained_current(ctx.config, ctx.run):
        return None
    folder = ctx.run.pretrain_dir(ctx.runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second process waits, then finds the work done
        if pretrained_current(ctx.config, ctx.run):
            return None
        (folder / naming.PRETRAIN_FILE).unlink(missing_ok=True)
        state = folder / naming.STATE_FILE
        if state.is_file() and not (folder / naming.RUN_RECORD_FILE).is_file():
            state.unlink()
        return pretrain(ctx)


def chosen_lr(config: Config, key: RunKey) -> float:
    """The learning rate the train stage uses: the tuned one when a tune file exists, else train.lr."""
    path = key.tune_file(config.train.runs_dir)
    return float(json.loads(path.read_text())["lr"]) if path.is_file() else config.train.lr


def tune(ctx: StageContext) -> dict[str, Any]:
    """Write the learning rate for the configuration to runs/tune/<run>.json (searched, or passed through)."""
    config, key = ctx.config, ctx.run
    out = key.tune_file(ctx.runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not config.tune.enabled:
        record = {"run": key.name, "lr": config.train.lr, "tuned": False}
    else:
        from chexops.train.tune import search_lr

        require_prepared(config)
        record = search_lr(config, key, ctx.open_tracker(), ctx.progress)
    out.write_text(json.dumps(record, indent=2))
    return record


def train(ctx: StageContext) -> dict[str, Any]:
    """Train the configuration, logging to its MLflow run (reopened when a killed run resumes)."""
    from chexops.tracking.runs import run_tags
    from chexops.train.loop import Trainer

    config, key = ctx.config, ctx.run
    require_prepared(config)
    run_dir = key.train_dir(ctx.runs_dir)
    if ctx.restart:
        for stale in (naming.STATE_FILE, naming.MANIFEST_FILE, naming.RUN_RECORD_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    lr = ctx.lr or chosen_lr(config, key)
    trainer = Trainer(config, key, run_dir, lr, config.train.max_examples, None, None, ctx.progress)
    rt, tracker = trainer.runtime, ctx.open_tracker()
    tags = run_tags(trainer.report, str(rt.device), rt.precision, data_hash(config),
                    {"chexops.test_source": naming.describe_test_split(config.data.source,
                                                                           recorded_test_source(config)),
                     "chexops.data": describe_data(config),
                     "chexops.label_fraction": key.fraction,
                     "chexops.select_metric": naming.select_metric_key(config.train.select_metric)})
    tags |= child_tags(config, tracker)
    run_id = tracker.start_run(key.name, tags, run_params(config, key, lr, trainer.report),
                               run_id=run_record(run_dir).get("run_id"))
    _save_run_record(run_dir, run_id=run_id, run=key.name)
    if trainer.resume_examples:
        trainer.seconds_before = tracker.metric_at(run_id, "train_seconds", trainer.resume_examples) or 0.0
    trainer.log = lambda metrics, step: (tracker.log_metrics(run_id, metrics, step), tracker.flush(run_id))
    with tracker.run_guard(run_id):
        tracker.log_datasets(run_id, dataset_inputs(config, ("train", "valid")))
        with tracker.system_metrics(run_id):
            result = trainer.fit()
    # the run's wall-clock duration also spans the later evaluate/register stages; this is training alone, over
    # every process that trained it (a resumed run adds its time to the time logged at the state it resumed from)
    speed = result.examples / result.seconds if result.seconds else None
    tracker.log_metrics(run_id, {"train_seconds": result.seconds} | ({"train_examples_per_second": speed}
                                                                     if speed else {}), result.examples)
    tracker.log_artifact(run_id, run_dir / naming.MANIFEST_FILE)
    tracker.end_run(run_id)
    record = {"run": key.name, "examples": result.examples, "steps": result.steps,
              naming.BEST_RANKING_METRIC: result.best_val,
              "select_metric": naming.select_metric_key(config.train.select_metric)}
    (run_dir / naming.TRAIN_SUMMARY_FILE).write_text(json.dumps(record, indent=2))
    return record | {"run_id": run_id, "seconds": round(result.seconds, 1),
                     "examples_per_second": round(speed, 1) if speed else None,
                     "device": str(rt.device), "precision": rt.precision}


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Ensemble test metrics with CIs -> eval.json, predictions.csv, roc.png, and the same run in MLflow."""
    from chexops.components.registry import get_registry
    from chexops.data.cache import load_split
    from chexops.evaluate.ensemble import read_manifest
    from chexops.evaluate.metrics import headline_text
    from chexops.evaluate.scoring import evaluate_ensemble, write_eval

    config, key = ctx.config, ctx.run
    run_dir, out_dir = key.train_dir(ctx.runs_dir), key.eval_dir(ctx.runs_dir)
    manifest, run_id = read_manifest(run_dir / naming.MANIFEST_FILE), _require_run_id(run_dir)
    test = load_split(Path(config.data.cache_dir), "test")
    e = config.eval
    payload = evaluate_ensemble(run_dir, out_dir, test.images, test.index, e.bootstrap, e.ci, e.seed)
    report = manifest["report"]
    init_spec, _ = get_registry().initializer(key.initializer)
    family = get_registry().family(key.family)
    payload = {"run": key.name, "family": key.family, "group": report["group"], "initializer": key.initializer,
               "test_split": test_split_composition(config, test.index), "truncation": report["truncation"],
               "truncation_strategy": key.strategy, "depth": key.depth, "parameters": report["parameters"],
               "imagenet_top1": report["imagenet_top1"], "timm_tag": report["timm_tag"],
               "reference_top1": family.reference_top1, "reference_top1_source": family.reference_top1_source,
               "test_source": recorded_test_source(config), "data": describe_data(config),
               "label_fraction": key.fraction, "initializer_pretrained": init_spec.pretrained,
               "initializer_label": init_spec.label or key.initializer, "mlflow_run_id": run_id} | payload
    write_eval(out_dir, payload)
    write_run_metrics(key.metrics_file(ctx.runs_dir), payload)
    tracker = ctx.open_tracker()
    tracker.start_run(key.name, {}, {}, run_id=run_id)
    with tracker.run_guard(run_id):
        tracker.log_datasets(run_id, dataset_inputs(config, ("test",)))
        best, headline, boot = payload["best_single"], payload["headline"], payload["bootstrap"]
        metrics = payload["metrics"] | {
            "test_best_single_" + headline["metric"].removeprefix("test_"): best["test_mean_auroc"],
            "test_usable_replicates": boot["usable_replicates"][headline["metric"].removeprefix("test_")]}
        # an undefined AUROC (one class in the test split) is reported in eval.json, not logged as NaN
        tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v}, manifest.get("examples", 0))
        tracker.set_tags(run_id, {"chexops.test_auroc_6": headline_text(payload["metrics"]),
                                  "chexops.undefined_tasks": ", ".join(payload["undefined_tasks"]) or "none",
                                  "chexops.bootstrap_unit": boot["unit"],
                                  "chexops.test_split": composition_text(payload["test_split"])})
        tracker.flush(run_id)
        for name in ("roc.png", "predictions.csv", naming.EVAL_FILE):
            tracker.log_artifact(run_id, out_dir / name)
    tracker.end_run(run_id)
    return payload


def write_run_metrics(path: Path, payload: dict[str, Any]) -> None:
    """A few columns per run for `dvc metrics show` / `dvc exp show`: the test AUROC-6 (or, when a study task
    was undefined, the mean over the tasks that were, under its own name), its CI, the size."""
    m, key = payload["metrics"], payload["headline"]["metric"]
    name = key.removeprefix("test_mean_").replace("auroc_", "test_auroc_")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: _round(m[key]), "ci_low": _round(m[f"{key}_ci_low"]),
                                "ci_high": _round(m[f"{key}_ci_high"]),
                                "params_M": round(payload["parameters"] / 1e6, 2)}, indent=2))


def _round(value: float | None) -> float | None:
    return None if value is None or value != value else round(float(value), 4)


def _require_run_id(run_dir: Path) -> str:
    run_id = run_record(run_dir).get("run_id")
    if not run_id:
        raise DataError(f"{run_dir} holds no trained run ({naming.RUN_RECORD_FILE} is missing): train it first "
                        "(`dvc repro`, or `chexops train`).")
    return run_id


def register(ctx: StageContext) -> dict[str, Any]:
    """Log the ensemble as a pyfunc model, register a new version with alias `candidate`."""
    config, key = ctx.config, ctx.run
    run_dir = key.train_dir(ctx.runs_dir)
    run_id = _require_run_id(run_dir)
    payload = json.loads((key.eval_dir(ctx.runs_dir) / naming.EVAL_FILE).read_text())
    name = naming.registered_model_name(config.experiment, key.name)
    tracker = ctx.open_tracker()
    tracker.start_run(key.name, {}, {}, run_id=run_id)
    with tracker.run_guard(run_id):
        version = tracker.log_ensemble(run_id, run_dir / naming.MANIFEST_FILE, name, version_tags(payload),
                                       model_name=naming.logged_model_name(key.name),
                                       description=model_description(payload, config.eval.ci))
    tracker.end_run(run_id)
    record = {"registered_model": name, "version": int(version), "alias": "candidate", "run_id": run_id}
    path = key.registry_file(ctx.runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return record


def version_tags(payload: dict[str, Any]) -> dict[str, str]:
    """A registry version's tags: the test AUROC-6 with its CI (readable, and as the numbers `registry list`
    reads, under the mean's honest name), what the model is and what data scored it; the per-task metrics stay
    on the run."""
    from chexops.evaluate.metrics import headline_text

    m, key = payload["metrics"], payload["headline"]["metric"]
    return {"test_auroc_6": headline_text(m), "family": payload["family"], "initializer": payload["initializer"],
            "truncation": payload["truncation"], "data": payload["data"]} | {
                k: str(m[k]) for k in (key, f"{key}_ci_low", f"{key}_ci_high") if m.get(k) is not None}


def model_description(payload: dict[str, Any], ci: float) -> str:
    """The registry's description of a configuration's ensemble: what it is, its data, its test AUROC."""
    from chexops.evaluate.metrics import headline_text

    p = payload
    top1 = f", ImageNet top-1 {p['imagenet_top1']}%" if p.get("imagenet_top1") is not None else ""
    return (f"{p['family']} ({p['group']}, {p['parameters'] / 1e6:.2f} M parameters{top1}), {p['initializer']} "
            f"initialization, truncation {p['truncation']}, trained on {p['label_fraction']:.0%} of the labelled "
            f"training split: an ensemble of its top checkpoints by validation AUROC. Data: {p['data']}. "
            f"Test mean AUROC over {len(p['headline']['tasks'])} of the 6 study tasks: {headline_text(p['metrics'])} "
            f"({ci:.0%} bootstrap CI over test {p['bootstrap']['unit']}s). Input: uint8 grayscale images (N, H, W); "
            "output: the 14 CheXpert observations' probabilities.")


def evaluate_and_register(ctx: StageContext) -> dict[str, Any]:
    """evaluate -> register, the DVC stage `evaluate`: one process per configuration pays the imports once."""
    payload = evaluate(ctx)
    return {"run": payload["run"], "metrics": payload["metrics"], "registered": register(ctx)}


def registered(ctx: StageContext) -> dict[str, Any] | None:
    """The registry record of the configuration's current MLflow run, when that run is already registered."""
    path = ctx.run.registry_file(ctx.runs_dir)
    record = json.loads(path.read_text()) if path.is_file() else {}
    run_id = run_record(ctx.run.train_dir(ctx.runs_dir)).get("run_id")
    return record if run_id and record.get("run_id") == run_id else None


def run_configuration(ctx: StageContext, register_model: bool = True) -> dict[str, Any]:
    """train -> evaluate -> register one configuration, as `chexops train` and `chexops worker` run it.

    Training resumes a run folder left by `dvc repro` or a killed run; a configuration whose run is already
    trained to its budget, evaluated and registered is left as it is (a no-op), unless `ctx.restart`.
    """
    require_prepared(ctx.config)  # a run trained on a cache made for other settings is not up to date either
    ensure_pretrained(ctx)
    done = None if ctx.restart else registered(ctx)
    eval_file = ctx.run.eval_dir(ctx.runs_dir) / naming.EVAL_FILE
    if done and eval_file.is_file() and _trained_to_budget(ctx):
        trained = json.loads((ctx.run.train_dir(ctx.runs_dir) / naming.TRAIN_SUMMARY_FILE).read_text())
        return {"run": ctx.run.name, "up_to_date": True, "mlflow_run_id": done["run_id"],
                "registered_version": done["version"], "metrics": json.loads(eval_file.read_text())["metrics"],
                naming.BEST_RANKING_METRIC: trained[naming.BEST_RANKING_METRIC]}
    summary = train(ctx)
    payload = evaluate(ctx)
    result = {"run": ctx.run.name, "up_to_date": False, "mlflow_run_id": summary["run_id"], "train": summary,
              "metrics": payload["metrics"], "best_single": payload["best_single"],
              naming.BEST_RANKING_METRIC: summary[naming.BEST_RANKING_METRIC]}
    if register_model:
        record = registered(ctx) or register(ctx)  # a worker that died after registering already did it
        result["registered_version"] = record["version"]
    return result


def _trained_to_budget(ctx: StageContext) -> bool:
    """Whether the saved state has trained the whole budget under the current settings (no training left)."""
    from chexops.train.loop import saved_state_complete

    return saved_state_complete(ctx.config, ctx.run, ctx.run.train_dir(ctx.runs_dir), chosen_lr(ctx.config, ctx.run))


# --- the study ---------------------------------------------------------------------------------------------------

def analyze(ctx: StageContext) -> dict[str, Any]:
    """The paper's analyses over every run of the grid -> reports/, also logged to the study's summary run."""
    from chexops.analysis.probes import references
    from chexops.analysis.report import write_report
    from chexops.analysis.results import load_runs
    from chexops.analysis.trust import mlflow_tags

    config = ctx.config
    # Only the runs of the current grid: folders left by configurations removed from params.yaml don't count.
    keys = [RunKey(*r) for r in grid_runs(config)]
    study = load_runs([k.eval_dir(ctx.runs_dir) for k in keys], name=config.study.name)
    a = config.analysis
    refs = references(config, study, keys, ctx.runs_dir)  # the pixel baseline and the probes (evidence checks)
    outputs = write_report(study, Path(a.reports_dir), a.bootstrap, a.seed, refs)
    tracker = ctx.open_tracker()
    run_id = study_run(config, tracker)
    tracker.start_run(naming.summary_run_name(config.study.name), {}, {}, run_id=run_id)
    with tracker.run_guard(run_id):
        metrics = json.loads(Path(outputs["metrics"]).read_text())
        summary = study_metrics(metrics)
        tracker.set_tags(run_id, mlflow_tags(metrics.get("trust", {})))
        (Path(a.reports_dir) / naming.SUMMARY_METRICS_FILE).write_text(
            json.dumps({k: _round(v) for k, v in summary.items()}, indent=2))
        tracker.log_metrics(run_id, summary, len(keys))
        tracker.log_dict(run_id, config.to_dict() | {"runs": [k.name for k in keys]}, "params.json")
        for path in outputs.values():
            if Path(path).is_file():
                tracker.log_artifact(run_id, path, "report" if Path(path).suffix != ".png" else "report/figures")
    tracker.end_run(run_id)
    return {"report": str(Path(a.reports_dir) / "study.md"), "runs": len(keys), "summary_run_id": run_id}


def study_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of reports/metrics.json for the study run: Spearman rho and p of each measured
    analysis, the mean pretraining boost with its CI and p, the truncation summary (the mean parameter ratio over
    the truncations without a significant drop, and how many dropped significantly)."""
    out: dict[str, float] = {}
    for name, r in metrics.get("spearman", {}).items():
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        out |= {f"spearman.{key}.rho": r.get("rho"), f"spearman.{key}.p": r.get("p")}
    boost = metrics.get("boost", {})
    out |= {f"boost.{k}": boost.get(k) for k in ("mean", "mean_ci_low", "mean_ci_high", "mean_p")}
    for name, b in metrics.get("boosts", {}).items():  # every comparison (ssl-random too) under its own name
        out |= {f"boost.{name}.{k}": b.get(k) for k in ("mean", "mean_ci_low", "mean_ci_high")}
    t = metrics.get("trust", {})
    out |= {"trust.runs_passing": t.get("runs_passing"), "trust.pixel_baseline": t.get("pixel_baseline_auroc_6")}
    out |= {f"trust.probe.{init}.learned": n for init, n in (t.get("probes_learned") or {}).items()}
    t = metrics.get("truncation", {})
    # short keys: `dvc metrics show` prints one column per key (the median is in metrics.json and study.md)
    out |= {"truncation.mean_ratio": t.get("mean_parameter_ratio_without_significant_drop"),
            "truncation.significant_drops": t.get("n_significant_drops")}
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


STAGES: dict[str, Stage] = {"ingest": ingest, "prepare": prepare, "pretrain": pretrain, "tune": tune,
                            "train": train, "evaluate": evaluate, "register": register,
                            "evaluate_and_register": evaluate_and_register, "analyze": analyze}
PER_CONFIGURATION = frozenset({"pretrain", "tune", "train", "evaluate", "register", "evaluate_and_register"})


def stage(name: str) -> Stage:
    """The stage function called `name`."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}.")
    return STAGES[name]

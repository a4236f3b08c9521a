"""The Tracker: runs, tags, params, buffered metrics, artifacts, the logged ensemble and its registry version.

mlflow is imported inside functions only, so the training core imports this module on machines without it.
All calls go through one MlflowClient bound to the store's URI (no fluent active-run state), so one process
can drive several runs. Every MLflow failure surfaces as a TrackingError saying what to do.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from chexops.errors import TrackingError
from chexops.interrupts import sigterm_interrupts
from chexops.tracking import tags as tag
from chexops.tracking.store import (
    global_tracking_uri,
    link_copies,
    lost_insert_race,
    mlflow_errors,
    open_experiment,
    temporary_env,
)

log = logging.getLogger(__name__)

# MLflow's per-request limits of log_batch (mlflow.utils.validation)
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
CANDIDATE_ALIAS = "candidate"
_STATUSES = ("FINISHED", "FAILED", "KILLED")
INSERT_RACE_ATTEMPTS = 3  # writes that lost a race to insert the same row (see store.lost_insert_race)
LINK_MIN_BYTES = 1 << 20  # logged files from this size on share the source's bytes (see store.link_copies)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}; values str()-ed and cut to MLflow's param length."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def _fit(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 15] + " ...[truncated]"


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True)
class ModelResults:
    """A logged model's evaluation, linked to it: the metrics, at `step`, stamped `timestamp_ms` (the run's own
    logging of the same values, so the run's history keeps one point each), on the dataset (name, digest)."""

    metrics: Mapping[str, float]
    step: int
    timestamp_ms: int
    dataset_name: str | None = None
    dataset_digest: str | None = None
    model_id: str | None = None


class Tracker:
    """One MLflow experiment in one store; runs are addressed by id, never through fluent global state."""

    def __init__(self, client: Any, uri: str, experiment_id: str) -> None:
        self.client, self.uri, self.experiment_id = client, uri, experiment_id
        self._pending: dict[str, list[Any]] = {}
        self._end_times: dict[str, int] = {}  # runs reopened with keep_duration: their recorded end

    @classmethod
    def open(cls, uri: str, artifacts: str, experiment: str) -> Tracker:
        """Open the store (MLFLOW_TRACKING_URI overrides `uri`) and the experiment, creating it if missing."""
        client, uri, experiment_id = open_experiment(uri, artifacts, experiment)
        return cls(client, uri, experiment_id)

    def start_run(self, name: str, tags: dict[str, str], params: Mapping[str, Any], run_id: str | None = None,
                  keep_duration: bool = False) -> str:
        """A new run named `name`, or the existing `run_id` reopened (RUNNING again); returns the run id. With
        `keep_duration`, ending it again restores its recorded end time: evaluating and registering a trained
        run do not stretch its Duration over other stages' time."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        with mlflow_errors(f"start run {name!r}", self.uri):
            if run_id is None:
                run_id = self.client.create_run(self.experiment_id, run_name=name,
                                                tags={k: _fit(v, MAX_TAG_LENGTH) for k, v in tags.items()}).info.run_id
                logged: dict[str, str] = {}
            else:
                logged = self._reopen(run_id, flat, keep_duration)
                self.set_tags(run_id, tags)
            new = [Param(k, v) for k, v in flat.items() if k not in logged]
            for chunk in _chunks(new, PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=chunk)
        return run_id

    def _reopen(self, run_id: str, flat: dict[str, str], keep_duration: bool = False) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise TrackingError(f"run {run_id}, which the run folder records, is not in the tracking store {self.uri} "
                                "(the store was replaced or the run deleted); train the configuration anew with "
                                "`chexops train ... --restart`, or point tracking.uri at the store that holds it."
                                ) from None
        if run.info.experiment_id != self.experiment_id:
            raise TrackingError(f"run {run_id} belongs to experiment {run.info.experiment_id}, not "
                                f"{self.experiment_id}; resume it with the tracking.experiment it was started in.")
        logged = dict(run.data.params)
        changed = {k: (logged[k], v) for k, v in flat.items() if k in logged and logged[k] != v}
        if changed:
            raise TrackingError(f"run {run_id} cannot be resumed with different params {changed} "
                                "(logged, new); train the configuration anew with `chexops train ... --restart` "
                                "(or delete its runs/train folder) to start a new run.")
        if keep_duration and run.info.end_time:
            self._end_times[run_id] = run.info.end_time
        self.client.update_run(run_id, status="RUNNING")
        return logged

    def study_run(self, name: str, study: str, tags: Mapping[str, str]) -> str:
        """The id of the study's parent run (its study-run tag = `study`), created FINISHED when missing.

        Stages run as separate processes in any order (and workers in parallel), so whichever needs it first
        creates it; of two created at once the oldest is kept and the other deleted, so every child names one.
        """
        with mlflow_errors(f"find or create the study run {name!r}", self.uri):
            found = self._study_runs(study)
            if not found:
                run_id = self.client.create_run(self.experiment_id, run_name=name,
                                                tags={tag.STUDY_RUN: study, **tags}).info.run_id
                self.client.set_terminated(run_id, status="FINISHED")
                found = self._study_runs(study)
                for extra in found[1:]:
                    if extra.info.run_id == run_id:
                        self.client.delete_run(run_id)
        return found[0].info.run_id

    def _study_runs(self, study: str) -> list[Any]:
        quoted = study.replace("'", "\\'")
        runs = self.client.search_runs([self.experiment_id], f"tags.`{tag.STUDY_RUN}` = '{quoted}'",
                                       max_results=1000)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def log_datasets(self, run_id: str, datasets: list[Mapping[str, Any]]) -> None:
        """Record the data a run read as MLflow dataset inputs (the UI's Dataset column): each a mapping with
        name, digest, source, context (train / valid / test) and profile (split sizes)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type="local",
                                       source=json.dumps({"uri": d["source"]}), profile=json.dumps(d["profile"])),
                               tags=[InputTag(tag.DATA_CONTEXT, d["context"])]) for d in datasets]
        for attempt in range(INSERT_RACE_ATTEMPTS):
            try:
                with mlflow_errors(f"log the dataset inputs of run {run_id}", self.uri):
                    self.client.log_inputs(run_id, datasets=inputs)
                return
            except TrackingError as exc:  # the write was one transaction, rolled back: writing again is safe
                if attempt == INSERT_RACE_ATTEMPTS - 1 or not lost_insert_race(exc.__cause__):
                    raise
                time.sleep(0.2 * (attempt + 1))

    @contextmanager
    def system_metrics(self, run_id: str) -> Iterator[None]:
        """MLflow's CPU, memory (and GPU) metrics of this process while the block runs, when psutil is there."""
        try:
            import psutil  # noqa: F401 - MLflow's monitor needs it
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            yield
            return
        monitor = SystemMetricsMonitor(run_id, sampling_interval=5, samples_before_logging=1,
                                       resume_logging=True, tracking_uri=self.uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None,
                    model: ModelResults | None = None) -> None:
        """Buffer metrics at `step` (examples seen), stamped `timestamp_ms` (default now); `flush` sends them.
        With `model`, they are also that logged model's metrics, on its dataset (MLflow links them by model_id)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        linked = {} if model is None else {"model_id": model.model_id, "dataset_name": model.dataset_name,
                                           "dataset_digest": model.dataset_digest}
        try:
            batch = [Metric(key, float(value), now, int(step), **linked) for key, value in metrics.items()]
        except (TypeError, ValueError) as exc:
            raise TrackingError(f"metrics must be numbers at an integer step, got {dict(metrics)!r} at step "
                                f"{step!r}: {exc}") from None
        self._pending.setdefault(run_id, []).extend(batch)

    def flush(self, run_id: str | None = None) -> None:
        """Send buffered metrics of `run_id` (None: every run) in as few log_batch calls as MLflow allows."""
        for rid in [run_id] if run_id is not None else list(self._pending):
            pending = self._pending.get(rid, [])
            with mlflow_errors(f"log metrics of run {rid}", self.uri):
                while pending:
                    self.client.log_batch(rid, metrics=pending[:METRICS_PER_BATCH])
                    del pending[:METRICS_PER_BATCH]  # only once sent: a failed flush can be retried
            self._pending.pop(rid, None)

    def metric_at(self, run_id: str, key: str, step: int) -> float | None:
        """The last value of metric `key` logged at `step` (None when there is none)."""
        with mlflow_errors(f"read metric {key!r} of run {run_id}", self.uri):
            history = self.client.get_metric_history(run_id, key)
        at = [m for m in history if m.step == step]
        return max(at, key=lambda m: m.timestamp).value if at else None

    def pending(self, run_id: str) -> int:
        """How many metric values wait for the next flush."""
        return len(self._pending.get(run_id, []))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _fit(str(v), MAX_TAG_LENGTH)) for k, v in tags.items()]
        with mlflow_errors(f"set tags on run {run_id}", self.uri):
            for chunk in _chunks(items, PARAMS_PER_BATCH):
                self.client.log_batch(run_id, tags=chunk)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts (under `artifact_path` if given)."""
        if not Path(path).exists():
            raise TrackingError(f"cannot log artifact {path}: it does not exist.")
        with mlflow_errors(f"log artifact {path} to run {run_id}", self.uri):
            if Path(path).is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path)
            sources = [p for p in Path(path).rglob("*")] if Path(path).is_dir() else [Path(path)]
            # only big files are worth a link (checkpoints, backbones); a link keeps the logged bytes read-only
            link_copies(self.client.get_run(run_id).info.artifact_uri,
                        [p for p in sources if p.is_file() and p.stat().st_size >= LINK_MIN_BYTES])

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        """`data` as a JSON or YAML artifact (by the file's extension)."""
        with mlflow_errors(f"log {artifact_file} to run {run_id}", self.uri):
            self.client.log_dict(run_id, dict(data), artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure saved as `artifact_file` (e.g. `figures/roc.png`)."""
        with mlflow_errors(f"log {artifact_file} to run {run_id}", self.uri):
            self.client.log_figure(run_id, figure, artifact_file)

    def end_run(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush, record `error` as the `error` tag (cut to fit), and mark the run ended with `status`."""
        if status not in _STATUSES:
            raise TrackingError(f"run status must be one of {_STATUSES}, got {status!r}.")
        try:
            self.flush(run_id)
        finally:  # a run that failed must still be marked so, even if its last metrics could not be sent
            with mlflow_errors(f"end run {run_id}", self.uri):
                if error is not None:
                    self.client.set_tag(run_id, tag.ERROR, _fit(error, MAX_TAG_LENGTH))
                end = self._end_times.pop(run_id, None)
                end = end if status == "FINISHED" else None  # a failed evaluation ends now
                self.client.set_terminated(run_id, status=status, end_time=end)

    @contextmanager
    def run_guard(self, run_id: str) -> Iterator[None]:
        """On an exception inside the block: mark the run FAILED (KILLED for Ctrl-C or SIGTERM, as `dvc exp`'s
        queue, a scheduler or `kill` stop a process) with the error, re-raise. A killed run never stays RUNNING."""
        with sigterm_interrupts():
            try:
                yield
            except Exception as exc:
                self._end_quietly(run_id, "FAILED", f"{type(exc).__name__}: {exc}")
                raise
            except KeyboardInterrupt as exc:
                self._end_quietly(run_id, "KILLED", f"KeyboardInterrupt{f' ({exc})' if str(exc) else ''}")
                raise

    def _end_quietly(self, run_id: str, status: str, error: str) -> None:
        try:
            self.end_run(run_id, status, error)
        except Exception as exc:  # the original error matters more than a failure to record it
            log.warning(f"could not mark MLflow run {run_id} {status}: {exc}")

    def version_with_tag(self, registered_name: str, key: str, value: str) -> int | None:
        """The newest version of `registered_name` tagged `key` = `value` (None: none, or no such model)."""
        from chexops.tracking.registry import versions_of

        with mlflow_errors(f"search the versions of {registered_name!r}", self.uri):
            found = [v for v in versions_of(self.client, registered_name) if v.tags.get(key) == value]
        return int(found[-1].version) if found else None

    def log_ensemble(self, run_id: str, manifest_path: Path, registered_name: str, tags: Mapping[str, Any],
                     input_example: np.ndarray | None = None, model_name: str = "ensemble",
                     description: str | None = None, results: ModelResults | None = None,
                     alias: str = CANDIDATE_ALIAS) -> int:
        """Log the run's ensemble as its model `model_name`, register a new version of `registered_name`, point
        `alias` at it, tag it (logged model and version) with `tags`, describe both with
        `description`, and link `results` (its test metrics) to the logged model; returns the version number."""
        from chexops.evaluate.ensemble import checkpoint_paths, read_manifest
        from chexops.tracking.pyfunc import log_ensemble_model

        self.flush(run_id)
        with mlflow_errors(f"log and register the ensemble of run {run_id} as {registered_name!r}", self.uri):
            # artifact copies print a progress bar per file; in a log (not a terminal) they are noise
            quiet = {} if _interactive() else {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
            with global_tracking_uri(self.uri), temporary_env(quiet), _stderr_to_log():
                info = log_ensemble_model(Path(manifest_path), model_name, input_example,
                                          registered_model_name=registered_name, run_id=run_id)
            version = str(info.registered_model_version)
            # the logged model's checkpoints are the run folder's files: linked, not a second copy
            link_copies(self.client.get_logged_model(info.model_id).artifact_location,
                        checkpoint_paths(Path(manifest_path), read_manifest(Path(manifest_path))))
            self._describe_logged_model(run_id, info.model_id, tags, description, results)
            self.client.set_registered_model_alias(registered_name, alias, version)
            for key, value in tags.items():
                self.client.set_model_version_tag(registered_name, version, key,
                                                  _fit(str(value), MAX_TAG_LENGTH))
            if description:
                self.client.update_model_version(registered_name, version, description=description)
                self.client.update_registered_model(registered_name, description=description)
        return int(version)


    def _describe_logged_model(self, run_id: str, model_id: str, tags: Mapping[str, Any], description: str | None,
                               results: ModelResults | None) -> None:
        """The Models tab's view of a logged model: its tags, description and the metrics it is ranked by."""
        model_tags = {k: _fit(str(v), MAX_TAG_LENGTH) for k, v in tags.items()}
        if description:
            model_tags[tag.NOTE] = _fit(description, MAX_TAG_LENGTH)
        if model_tags:
            self.client.set_logged_model_tags(model_id, model_tags)
        if results is not None:
            self.log_metrics(run_id, results.metrics, results.step, results.timestamp_ms,
                             replace(results, model_id=model_id))
            self.flush(run_id)


@contextmanager
def _stderr_to_log() -> Iterator[None]:
    """What MLflow prints to stderr while registering ("Successfully registered model ...", "Created version
    ...") goes to this module's log (DEBUG) instead: a stage's console keeps its one summary line."""
    import io
    from contextlib import redirect_stderr

    buffer = io.StringIO()
    try:
        with redirect_stderr(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug(line)


def _interactive() -> bool:
    return sys.stderr.isatty()

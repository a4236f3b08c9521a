"""`chexops worker`: take configurations of the study grid from a shared Optuna study until none is left.

Any number of workers (machines, GPUs of one machine, or several per GPU) run the same command against one RDB
storage (PostgreSQL; SQLite on one machine). Each configuration of `grid_keys(params.yaml)` is trained once:

- The grid is one WAITING trial per configuration, enqueued by whichever worker creates the study (creating a
  study is atomic: the others get DuplicatedStudyError and wait for the grid to appear). Optuna's GridSampler
  is not used: its documentation says that in distributed optimisation workers "will occasionally suggest the
  same parameter configuration", and a duplicate here is a whole training run, two writers in one run folder.
- A worker claims a trial by moving it WAITING -> RUNNING with `storage.set_trial_state_values`, the same call
  `Study.ask()` uses to pop enqueued trials: RDBStorage reads the row FOR UPDATE and refuses unless it is still
  WAITING, so exactly one worker wins. `ask()` itself is not used because on an empty queue it creates a new
  trial. SQLite has no row locks, so there claims are serialised with a lock file beside the database.
- A claimed trial beats a heartbeat. A worker that dies stops beating; after the grace period the next
  `fail_stale_trials` by any worker fails it, and RetryHeartbeatStaleTrialCallback enqueues a copy (same
  configuration) that the next free worker claims. It resumes from the dead worker's state in the shared runs
  folder and reopens its MLflow run (the run id is kept in the run folder), so each configuration ends with one
  FINISHED run. Ctrl-C / SIGTERM hand the configuration back at once the same way.
- The trial's value is the test mean AUROC of the ensemble; user attrs carry the run name, MLflow run id,
  registered version, worker and the examples the run resumed from. A worker exits when no trial is WAITING or
  RUNNING: the grid is done (or, for configurations that raised, failed with their error recorded).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexops.config import Config, grid_keys
from chexops.errors import ConfigError, TrainingStopped, WorkerError
from chexops.evaluate.metrics import headline_key, headline_text
from chexops.naming import BEST_RANKING_METRIC, RunKey
from chexops.scaleout import slurm
from chexops.stages.configuration import run_configuration
from chexops.stages.context import StageContext, require_prepared, verify_components
from chexops.stages.experiment import open_tracker
from chexops.train import interrupt

log = logging.getLogger(__name__)

RUN_PARAM = "run"
GRID_ATTR = "chexops.grid"  # the study's configurations, set once they are all enqueued
GRID_WAIT_S = 120  # how long a worker waits for the creating worker to enqueue the grid


@dataclass
class WorkerReport:
    completed: list[str] = field(default_factory=list)  # configurations this worker finished
    failed: list[str] = field(default_factory=list)  # configurations that raised here (error in the trial)
    grid_failed: list[str] = field(default_factory=list)  # configurations of the grid without a COMPLETE trial
    stopped: str = ""  # why this worker stopped early on request (SIGUSR1: time limit, preemption), else ""
    pending: bool = False  # after a stop: whether the grid still has configurations waiting or running


@dataclass
class Grid:
    """The shared study and what the worker needs to drive it through the storage's public calls."""

    study: Any
    storage: Any
    study_id: int
    retry: Any  # the RetryHeartbeatStaleTrialCallback the storage calls for stale trials
    url: str


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Heartbeats and the retry callback are marked experimental by Optuna; the warning says nothing new here."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        return make_url(url).render_as_string(hide_password=True)
    return url


def open_storage(url: str, heartbeat: int, grace: int | None, retry: Any) -> Any:
    """An RDBStorage with heartbeats; `retry` re-enqueues a stale trial's configuration."""
    from optuna.storages import RDBStorage

    if (url.startswith("sqlite") and ":memory:" in url) or url in ("sqlite://", "sqlite:///"):
        raise ConfigError("--storage is an in-memory SQLite database, which no other worker can see; use a file "
                          "(sqlite:///runs/grid.db) or a PostgreSQL URL (postgresql+psycopg2://user@host/db).")
    from sqlalchemy.exc import IntegrityError

    with _quiet_experimental():
        try:
            for attempt in range(3):
                try:
                    return RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                      heartbeat_stale_trial_callback=retry,
                                      engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
                except IntegrityError:
                    # workers started together on an empty database race to CREATE its tables (PostgreSQL:
                    # duplicate pg_type row); the loser finds them made on its next try
                    if attempt == 2:
                        raise
                    time.sleep(1.0 + attempt)
        except Exception as exc:  # driver, network and authentication errors all mean the same to the user
            raise WorkerError(f"cannot open the Optuna storage {_redact(url)}: {type(exc).__name__}: {exc}. Check "
                              "that the database server is up and the URL (driver, user, host, port, database) "
                              "is right; for PostgreSQL install psycopg2-binary.") from exc


@contextlib.contextmanager
def serialised_claims(url: str) -> Iterator[None]:
    """Serialise claims and stale-trial checks on SQLite (no row locks); PostgreSQL/MySQL lock rows themselves."""
    if not url.startswith("sqlite"):
        yield
        return
    from sqlalchemy.engine import make_url

    path = Path(make_url(url).database or "optuna.db").absolute().with_suffix(".claim.lock")
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_grid(url: str, study_name: str, keys: list[RunKey], heartbeat: int, grace: int | None = None,
              max_retry: int = 3, wait_s: float = GRID_WAIT_S) -> Grid:
    """The study holding the grid: created and filled here if it does not exist yet, else checked against it."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with _quiet_experimental():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    storage = open_storage(url, heartbeat, grace, retry)
    study = _create_or_load(storage, study_name, [k.name for k in keys], wait_s)
    return Grid(study, storage, storage.get_study_id_from_name(study_name), retry, url)


def _create_or_load(storage: Any, study_name: str, names: list[str], wait_s: float) -> Any:
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage)
    else:
        for name in names:  # the creator alone enqueues: no other worker can race it to a duplicate
            study.enqueue_trial({RUN_PARAM: name}, user_attrs={RUN_PARAM: name})
        study.set_user_attr(GRID_ATTR, names)
        return study
    deadline = time.monotonic() + wait_s
    while GRID_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise WorkerError(f"study {study_name!r} exists but its grid was never fully enqueued (the worker that "
                              f"created it died within seconds?). Delete it (`optuna delete-study --study-name "
                              f"{study_name} --storage URL`) or use another --study name, and start the workers again.")
        time.sleep(1.0)
    if study.user_attrs[GRID_ATTR] != names:
        raise WorkerError(f"study {study_name!r} holds the grid {study.user_attrs[GRID_ATTR]}, but this worker's "
                          f"params.yaml gives {names}. Give every worker the same params.yaml, or use a new --study "
                          "name for a new grid.")
    return study


def claim(grid: Grid) -> int | None:
    """Move one WAITING trial to RUNNING for this worker; its trial id, or None when none is waiting."""
    import optuna
    from optuna.trial import TrialState

    storage = grid.storage
    for trial in storage.get_all_trials(grid.study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(grid.study_id, trial.number)
        # beat before claiming: a worker that dies right after winning still leaves a trial that goes stale
        storage.record_heartbeat(trial_id)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished by another worker between our read and our claim
    return None


def open_trial(grid: Grid, trial_id: int, names: list[str]) -> tuple[Any, str]:
    """A claimed trial as an optuna.Trial, and the name of the configuration it was enqueued (or retried) with."""
    import optuna

    # the study reads through a cache of its own, which must have seen the claimed trial before it writes to it
    grid.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    trial = optuna.Trial(grid.study, trial_id)
    return trial, trial.suggest_categorical(RUN_PARAM, names)


def grid_pending(grid: Grid) -> bool:
    """Whether any configuration still waits or runs somewhere (a running one may yet come back for retry)."""
    from optuna.trial import TrialState

    states = (TrialState.WAITING, TrialState.RUNNING)
    return bool(grid.storage.get_all_trials(grid.study_id, deepcopy=False, states=states))


class Heartbeat:
    """Records the trial's heartbeat every `interval` seconds in a daemon thread while the block runs."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="chexops-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # a blip in the database must not kill the training; grace covers it
                log.warning(f"heartbeat of trial {self.trial_id} failed: {exc}")

    def __enter__(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def resumed_from(run_dir: Path, key: RunKey) -> int:
    """Examples a run folder's saved state has already trained (0 when it starts fresh)."""
    from chexops.train.checkpoints import read_state

    state = read_state(run_dir, key)  # a damaged state is the trial's one-line error, not a traceback
    return 0 if state is None else int(state["progress"]["examples"])


def _run_claimed(grid: Grid, trial_id: int, keys: dict[str, RunKey], config: Config, tracker: Any,
                 options: dict[str, Any]) -> tuple[str, bool]:
    """Run the configuration of a claimed trial and tell the study; its name and whether it completed."""
    import optuna

    study = grid.study
    with Heartbeat(grid.storage, trial_id, options["heartbeat"]):
        trial, name = open_trial(grid, trial_id, list(keys))
        key = keys[name]
        start = resumed_from(key.train_dir(config.train.runs_dir), key)
        trial.set_user_attr(RUN_PARAM, name)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("slurm_job", slurm.job_id() or "")
        trial.set_user_attr("resumed_from_examples", start)
        log.info(f"[worker] trial {trial.number}: {name}" + (f" (resuming at {start} examples)" if start else ""))
        try:
            ctx = StageContext(config, key, progress=options["progress"], tracker=tracker)
            outcome = run_configuration(ctx, register_model=options["register"])
        except TrainingStopped as stop:
            _give_back(grid, trial_id, name, str(stop))  # state saved: back to the queue as is, no retry spent
            raise
        except KeyboardInterrupt:
            _hand_back(grid, trial_id)
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            _tell(study, trial, state=optuna.trial.TrialState.FAIL)
            log.error(f"[worker] {name} failed: {type(exc).__name__}: {exc}")
            return name, False
        key_6 = headline_key(outcome["metrics"])
        result = {"mlflow_run_id": outcome["mlflow_run_id"], key_6: outcome["metrics"][key_6]}
        if "registered_version" in outcome:
            result["registered_version"] = outcome["registered_version"]
        for attr, value in result.items():
            trial.set_user_attr(attr, value)
        # the trial's value is the validation score the checkpoints were ranked by: the test set chooses nothing
        _tell(study, trial, values=outcome[BEST_RANKING_METRIC])
        log.info(f"[worker] {name}: test mean AUROC {headline_text(outcome['metrics'])}")
        return name, True


def _tell(study: Any, trial: Any, **kwargs: Any) -> None:
    import optuna

    try:
        study.tell(trial, **kwargs)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning(f"[worker] trial {trial.number} was declared dead by another worker (no heartbeat for the grace "
                   "period) and handed to another; this result is not recorded. Raise --grace.")


def _hand_back(grid: Grid, trial_id: int) -> None:
    """Fail an interrupted trial now and enqueue its retry, instead of waiting for it to go stale."""
    from optuna.trial import TrialState

    with contextlib.suppress(Exception), serialised_claims(grid.url), _quiet_experimental():
        if grid.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            grid.retry(grid.study, grid.storage.get_trial(trial_id))
            log.warning(f"[worker] interrupted: configuration of trial {trial_id} handed back for retry.")


def _give_back(grid: Grid, trial_id: int, name: str, why: str) -> None:
    """Put a trial stopped on request back to WAITING (same trial, same configuration) for the next claim: a
    preemption is not a failure and spends none of --max-retry. Its saved state makes the next claim resume."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    with serialised_claims(grid.url), _quiet_experimental():
        attrs = grid.storage.get_trial(trial_id).user_attrs
        grid.storage.set_trial_user_attr(trial_id, "stops", int(attrs.get("stops", 0)) + 1)
        with contextlib.suppress(UpdateFinishedTrialError):  # failed as stale meanwhile: its retry is queued
            grid.storage.set_trial_state_values(trial_id, state=TrialState.WAITING)
    log.warning(f"[worker] {why}; {name} handed back to the grid.")


def run_worker(config: Config, storage_url: str, study_name: str, heartbeat: int = 30, grace: int | None = None,
               max_retry: int = 3, register: bool = True, progress: bool = True) -> WorkerReport:
    """Claim and run configurations of the grid until none waits or runs; see the module docstring."""
    import optuna

    keys = {key.name: key for key in grid_keys(config)}
    require_prepared(config)  # workers share the cache and must never prepare it at once
    verify_components(config, list(keys.values()))  # a plugin mistake stops the worker before it claims anything
    grid = open_grid(storage_url, study_name, list(keys.values()), heartbeat, grace, max_retry)
    tracker = _open_shared_tracker(config)
    options = {"heartbeat": heartbeat, "register": register, "progress": progress}
    report = WorkerReport()
    while True:
        if interrupt.stop_requested():  # a stop that came between two configurations: claim nothing more
            return _stopped(report, grid)
        with serialised_claims(storage_url), _quiet_experimental():
            optuna.storages.fail_stale_trials(grid.study)
            trial_id = claim(grid)
        if trial_id is None:
            if not grid_pending(grid):
                break
            time.sleep(min(heartbeat, 5))  # others are still running: one of them may die and need a retry
            continue
        try:
            name, done = _run_claimed(grid, trial_id, keys, config, tracker, options)
        except TrainingStopped:
            return _stopped(report, grid)
        (report.completed if done else report.failed).append(name)
    complete = {t.params.get(RUN_PARAM) for t in grid.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    report.grid_failed = [name for name in keys if name not in complete]
    return report


def _stopped(report: WorkerReport, grid: Grid) -> WorkerReport:
    report.stopped, report.pending = interrupt.stop_reason() or "stop requested", grid_pending(grid)
    return report


def _open_shared_tracker(config: Config, attempts: int = 5) -> Any:
    """open_tracker, retried: workers starting together race to create and tag the experiment, and the server's
    SQL store can refuse the loser with a duplicate key; a moment later the experiment is simply there."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            return open_tracker(config)
        except MlflowException as exc:
            if attempt == attempts:
                raise WorkerError(f"cannot open the MLflow experiment {config.experiment!r}: {exc}") from exc
            time.sleep(attempt)

"""Opening a study's tracking store: the URI (params.yaml or MLFLOW_TRACKING_URI), its checks (a missing folder, an
emptied SQLite file, a dead server fail in seconds with what to do), the experiment, and MLflow errors as
TrackingErrors. mlflow is imported inside functions only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chexops.errors import ConfigError, TrackingError
from chexops.naming import PARAMS_FILE

PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")


@contextmanager
def temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def mlflow_errors(action: str, uri: str) -> Iterator[None]:
    """MLflow and I/O failures -> TrackingError naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"MLflow could not {action} (tracking URI {uri}): {exc}") from exc
    except Exception as exc:
        # a database error MLflow lets through (e.g. sqlite3.IntegrityError or "database is locked" when two
        # processes write one SQLite store): the store's failure, said in one line, not a chexops bug
        if type(exc).__module__.split(".")[0] not in ("sqlalchemy", "sqlite3", "psycopg2"):
            raise
        raise TrackingError(f"MLflow could not {action} (tracking URI {uri}): {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}. Run the command again.") from exc


def lost_insert_race(exc: BaseException | None) -> bool:
    """Whether a store refused a write because another process inserted the same row first (MLflow turns the
    database's unique-key violation into a BAD_REQUEST, which its client does not retry). Writing again then finds
    the row and reuses it: e.g. two workers logging the same dataset input at once."""
    text = f"{type(exc).__name__}: {exc}".lower() if exc is not None else ""
    return any(s in text for s in ("duplicate key value", "unique constraint", "integrityerror"))


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide URI at `uri` for a call that only reads it (Model.log), then restore it."""
    import mlflow

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    effective_before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # unset, so a later MLFLOW_TRACKING_URI still counts, as it did before
        if env_before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
        if mlflow.get_tracking_uri() != effective_before:
            mlflow.set_tracking_uri(effective_before)
            if env_before is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)


def resolve_uri(uri: str) -> str:
    """MLFLOW_TRACKING_URI wins over `uri`; a relative sqlite path is anchored to the current directory now."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and path != ":memory:" and not os.path.isabs(path):
            uri = f"sqlite:///{os.path.abspath(path)}{sep}{query}"
    return uri


def _check_sqlite(uri: str) -> None:
    """MLflow would create a missing folder silently; a typo in the URI must not start a new store elsewhere."""
    path = Path(uri[len("sqlite:///"):].partition("?")[0])
    if str(path) in ("", ":memory:"):
        return
    if not path.parent.is_dir():
        raise TrackingError(f"cannot open tracking store {uri}: folder {path.parent} does not exist. Create it, "
                            "or set tracking.uri in params.yaml (or MLFLOW_TRACKING_URI) to a store in an existing "
                            "folder, e.g. sqlite:///mlflow.db.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TrackingError(f"cannot open tracking store {uri}: {path} is not writable by this user. Fix its "
                            "permissions or point tracking.uri / MLFLOW_TRACKING_URI elsewhere.")
    check_sqlite_file(uri)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_sqlite_file(uri: str) -> None:
    """An existing SQLite store file must be a database: SQLite would take an empty file for a new, empty store,
    and MLflow then silently re-creates it, losing the record of every run that pointed into it."""
    path = Path(uri[len("sqlite:///"):].partition("?")[0])
    if str(path) in ("", ":memory:") or not path.is_file():
        return
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        return
    what = "is empty (0 bytes)" if not head else "is not an SQLite database"
    raise TrackingError(f"tracking store {path} {what}, so it holds none of the study's runs and models; restore it "
                        "from a backup, or delete it to start a new store (then train with --restart, since the "
                        "run folders name runs of the lost store).")


def open_hint(uri: str) -> str:
    """What to do when the store at `uri` cannot be opened: a server may be down, a file cannot be."""
    if uri.startswith("sqlite:"):
        return ("The file is damaged or not an MLflow store: restore it from a backup, or point tracking.uri in "
                "params.yaml / MLFLOW_TRACKING_URI at the study's store.")
    return "Start the tracking server or fix tracking.uri in params.yaml / MLFLOW_TRACKING_URI."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def tracking_uri(params_path: str | Path = PARAMS_FILE, required: bool = True) -> str | None:
    """The store to use: MLFLOW_TRACKING_URI, else params.yaml's tracking.uri (relative sqlite anchored here).

    Without either, None when not `required` (MLflow's own default then applies), else a ConfigError.
    """
    from chexops.config import load_config

    path = Path(params_path)
    if path.is_file():
        return resolve_uri(load_config(path).tracking.uri)  # resolve_uri lets MLFLOW_TRACKING_URI win
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return resolve_uri(os.environ["MLFLOW_TRACKING_URI"])
    if not required:
        return None
    raise ConfigError(f"{path} not found and MLFLOW_TRACKING_URI is not set, so there is no tracking store to "
                      "read; run from the repository root, pass --params PATH, or set MLFLOW_TRACKING_URI.")


def open_client(uri: str) -> Any:
    """An MlflowClient on an existing store; a missing sqlite file or an unreachable server fails in seconds."""
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].partition("?")[0]
        # MLflow would silently create an empty store; reading a registry from a mistyped path must not
        if path != ":memory:" and not Path(path).is_file():
            raise TrackingError(f"no tracking store at {path} (tracking URI {uri}); run the study first, or point "
                                "tracking.uri in params.yaml / MLFLOW_TRACKING_URI at the store that holds it.")
        check_sqlite_file(uri)  # reading must never turn an emptied store into a new one
    try:
        with temporary_env(PROBE_ENV):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)
    except Exception as exc:  # any failure here means the store cannot be used at all
        detail = (str(exc).strip().splitlines() or ["no detail"])[0]
        raise TrackingError(f"cannot open tracking store {uri}: {type(exc).__name__}: {detail}. "
                            f"{open_hint(uri)}") from exc
    return client


def open_experiment(uri: str, artifacts: str, experiment: str) -> tuple[Any, str, str]:
    """(client, resolved URI, experiment id): the store opened (MLFLOW_TRACKING_URI overrides `uri`) and the
    experiment, created when missing; a moved project's store is refused (its artifact paths are absolute)."""
    from mlflow import MlflowClient

    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///"):
        _check_sqlite(uri)
    local = uri.partition(":")[0] not in _REMOTE_SCHEMES
    try:
        # a dead server must fail in seconds, not after MLflow's default minutes of retries
        with temporary_env(PROBE_ENV):
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
    except Exception as exc:  # any failure here means the store cannot be used at all
        raise TrackingError(f"cannot open tracking store {uri}: {type(exc).__name__}: "
                            f"{_first_line(exc)}. {open_hint(uri)}") from exc
    if found is not None and found.lifecycle_stage == "deleted":
        raise TrackingError(f"experiment {experiment!r} in {uri} is deleted. Restore it with `mlflow "
                            f"experiments restore --experiment-id {found.experiment_id}`, purge it with "
                            "`mlflow gc`, or set tracking.experiment to another name.")
    from chexops.tracking.relocate import expected_location

    # local stores keep artifacts beside the database; a server decides for itself where they go
    location = expected_location(artifacts, experiment) if local else None
    if found is None:
        found = _create_experiment(client, uri, experiment, location)
    elif location and found.artifact_location.startswith("file:") and found.artifact_location != location:
        # MLflow records absolute paths: a copied or moved project would read and write the old folder
        raise TrackingError(f"experiment {experiment!r} in {uri} keeps its artifacts in "
                            f"{found.artifact_location}, not in this project's {location} (the project was "
                            "copied or moved, or tracking.artifacts changed). Run `chexops registry relocate` "
                            "to point the store here (copy the artifact folder first if it is not here).")
    return client, uri, found.experiment_id


def _create_experiment(client: Any, uri: str, name: str, location: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # else a parallel stage created it first: fine
            raise TrackingError(f"cannot create experiment {name!r} in {uri}: {exc}") from exc
    return client.get_experiment_by_name(name)


def link_copies(artifact_uri: str, sources: Iterable[Path]) -> int:
    """Make each file under the local artifact folder `artifact_uri` that is a byte-for-byte copy of one of
    `sources` a hard link to it instead (MLflow's local store copies what it logs): the registry's checkpoints and
    a run's logged files are then the run folder's bytes (and, with DVC's hardlink cache, the DVC cache's) stored
    once. Other stores, other filesystems and differing files are left as they are; returns the bytes saved."""
    import filecmp
    from urllib.parse import unquote, urlparse

    if not artifact_uri.startswith("file:"):
        return 0
    root = Path(unquote(urlparse(artifact_uri).path))
    by_size: dict[int, list[Path]] = {}
    for source in sources:
        if Path(source).is_file():
            by_size.setdefault(Path(source).stat().st_size, []).append(Path(source))
    saved = 0
    for copy in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        size = copy.stat().st_size
        for source in by_size.get(size, []):
            if os.path.samefile(copy, source):
                break
            if filecmp.cmp(copy, source, shallow=False):
                link = copy.with_name(f".{copy.name}.link")
                try:
                    os.link(source, link)
                    os.replace(link, copy)  # the copy's name now names the source's bytes
                    saved += size
                except OSError:  # another filesystem, or links refused: the copy stays
                    link.unlink(missing_ok=True)
                break
    return saved

"""A lock on one registered model, held by whoever changes its aliases, that works on every MLflow store.

Why this design: two `chexops promote` of one model, started together, would each read the alias holder, each
compare against it and each move the alias and rewrite the history tag; MLflow's alias and tag writes are upserts
(last writer wins), so the alias could end on one version, the history on another, and a version could take the
alias without being compared with the version it displaced. The lock must hold across processes and machines,
for a SQLite file and for an `mlflow server` whose database chexops never sees, so it is built from the one
atomic operation both offer through MlflowClient: creating a registered model fails with RESOURCE_ALREADY_EXISTS
when the name is taken (a primary-key insert, in one database transaction, on SQLite and PostgreSQL alike).

- Acquire: create the registered model `_chexops.lock.<model>`, tagged with a fresh token, who holds it and when
  its lease expires. Exactly one of any number of racing creators succeeds; the others are refused at once with
  a LockBusyError naming the holder (a promotion that waited would decide against a holder it never saw).
- Release: delete it. Deleting is by name, not by token, so a deleter must be sure the name still denotes *its*
  instance. Hence a second unique name per instance, `_chexops.release.<model>.<token>`: whoever creates it (the
  holder releasing, or a contender breaking an expired lease) alone may delete instance <token>, re-reads the
  lock, deletes it only if it still carries <token>, then deletes the marker. Two parties can never delete one
  instance, and no one deletes an instance they did not mean: a new instance has a new token.
- A holder killed mid-promotion leaves its lock; once its lease (LEASE_S) has expired, the next promotion breaks
  it as above. The holder checks its lease before each write, so it cannot write after its lock could be broken;
  a promotion takes seconds, the lease minutes, so clocks need only agree to within minutes.

The lock models exist only while a promotion runs (or until the next one after a crash); `chexops registry list`
leaves them out.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chexops.errors import LockBusyError, TrackingError

LOCK_PREFIX = "_chexops.lock."
RELEASE_PREFIX = "_chexops.release."
LEASE_S = 600.0
_TOKEN, _BY, _EXPIRES = "chexops.lock.token", "chexops.lock.by", "chexops.lock.expires"


def is_lock_model(name: str) -> bool:
    """Whether a registered model is one of these locks (hidden from listings)."""
    return name.startswith((LOCK_PREFIX, RELEASE_PREFIX))


@dataclass
class Lease:
    """A held lock: its token, and the monotonic time after which it may be broken by others."""

    model: str
    token: str
    deadline: float

    def check(self, action: str) -> None:
        """Refuse to `action` once the lease could have been broken (a write now might race another holder)."""
        if time.monotonic() > self.deadline:
            raise TrackingError(f"the lock on {self.model!r} expired after {LEASE_S:.0f} s before this process could "
                                f"{action}; nothing more was written. Run the command again.")


@contextmanager
def model_lock(client: Any, name: str, lease_s: float | None = None) -> Iterator[Lease]:
    """Hold the lock on registered model `name` for the block (lease: LEASE_S); LockBusyError when another
    process holds it."""
    lease = _acquire(client, name, LEASE_S if lease_s is None else lease_s)
    try:
        yield lease
    finally:
        _delete_instance(client, name, lease.token)


def _acquire(client: Any, name: str, lease_s: float) -> Lease:
    token = uuid.uuid4().hex
    start = time.monotonic()
    expires = datetime.fromtimestamp(time.time() + lease_s, UTC).isoformat(timespec="seconds")
    tags = {_TOKEN: token, _BY: _who(), _EXPIRES: expires}
    for attempt in range(2):  # the second try follows breaking an expired lock
        if _create(client, LOCK_PREFIX + name, tags, f"chexops: changing the aliases of {name}; removed when done."):
            return Lease(name, token, start + lease_s * 0.9)
        held = _read(client, LOCK_PREFIX + name)
        if held is None:  # released between our create and our read: it is free again
            continue
        expired = _expired(held.tags.get(_EXPIRES))
        if attempt == 0 and expired and held.tags.get(_TOKEN):
            _delete_instance(client, name, held.tags[_TOKEN])
            continue
        raise LockBusyError(
            f"another process is changing the aliases of {name!r} ({held.tags.get(_BY, 'unknown')}, lock held "
            f"until {held.tags.get(_EXPIRES, 'unknown')}); nothing was changed. Run the command again when it has "
            "finished: `chexops registry list` shows what it decided.")
    raise LockBusyError(f"the lock on {name!r} changed hands while this process tried to take it; nothing was "
                        "changed. Run the command again.")


def _delete_instance(client: Any, name: str, token: str) -> None:
    """Delete lock instance `token` of `name` if it is still there, as the one holder of its release marker."""
    marker = f"{RELEASE_PREFIX}{name}.{token}"
    if not _create(client, marker, {_BY: _who()}, f"chexops: releasing the lock on {name}."):
        return  # someone else is deleting this very instance
    try:
        held = _read(client, LOCK_PREFIX + name)
        if held is not None and held.tags.get(_TOKEN) == token:
            _call(client.delete_registered_model, f"release the lock on {name!r}", LOCK_PREFIX + name)
    finally:
        _call(client.delete_registered_model, f"remove the release marker of {name!r}", marker)


def _create(client: Any, lock: str, tags: dict[str, str], description: str) -> bool:
    """Create the registered model `lock`; False when the name is taken."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(lock, tags=tags, description=description)
        return True
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":
            return False
        raise TrackingError(f"MLflow could not create the lock {lock!r} (tracking URI {client.tracking_uri}): "
                            f"{exc}") from exc
    except Exception as exc:  # a database error under MLflow (e.g. SQLite busy): one line, not a raw traceback
        raise TrackingError(f"MLflow could not create the lock {lock!r} (tracking URI {client.tracking_uri}): "
                            f"{type(exc).__name__}: {exc}. Run the command again.") from exc


def _read(client: Any, lock: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise TrackingError(f"MLflow could not read the lock {lock!r} (tracking URI {client.tracking_uri}): "
                            f"{exc}") from exc


def _call(method: Any, action: str, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        method(lock)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"MLflow could not {action}: {exc}. If it stays, delete the registered model "
                                f"{lock!r} by hand once no promotion runs.") from exc


def _expired(text: str | None) -> bool:
    try:
        return datetime.fromisoformat(text or "").timestamp() < time.time()
    except ValueError:  # an unreadable lease is as good as none: it can never be released otherwise
        return True


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"

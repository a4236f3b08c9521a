"""Promotions racing for one alias: one winner, the others refused in one line, history equal to the alias's.

Eight processes (spawned, each with its own MLflow client) wait at a barrier and then run `chexops promote` on
eight versions of one model at once, against a SQLite store and against the `mlflow server` on PostgreSQL of the
scale-out test. Every version scores the same test studies identically, so whoever comes after the winner is not
significantly better: whatever the timing, exactly one promotion may move the alias.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixtures.registry import NAME, check_one_winner, race, register_versions

from chexops.errors import LockBusyError
from chexops.tracking import registry_lock
from chexops.tracking.registry import promotions
from chexops.tracking.store import open_client


def test_eight_promotions_at_once_on_sqlite_have_one_winner(tmp_path: Path, empty_store: Path, monkeypatch) -> None:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = register_versions(uri, tmp_path, monkeypatch)
    check_one_winner(uri, race(uri, versions))


# --- the lock's own protocol -------------------------------------------------------------------------------------

@pytest.fixture
def client(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    register_versions(uri, tmp_path, monkeypatch, n=2)
    return open_client(uri)


def plant_lock(client, expires: datetime, token: str = "t0ken") -> None:
    """A lock as a promotion on another machine holds it (or left it when it was killed)."""
    client.create_registered_model(registry_lock.LOCK_PREFIX + NAME, tags={
        "chexops.lock.token": token, "chexops.lock.by": "ann@elsewhere pid 7",
        "chexops.lock.expires": expires.isoformat(timespec="seconds")})


def test_a_held_lock_refuses_with_its_holder_and_changes_nothing(client) -> None:
    from chexops.tracking import promotion

    plant_lock(client, datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(LockBusyError, match="ann@elsewhere pid 7") as info:
        promotion.promote(client, NAME, 1)
    assert "nothing was changed" in str(info.value)
    model = client.get_registered_model(NAME)
    assert "champion" not in model.aliases and not any(k.startswith("chexops.alias_history") for k in model.tags)
    assert promotions(client.get_model_version(NAME, "1").tags) == []
    with pytest.raises(LockBusyError):
        promotion.rollback(client, NAME)


def test_an_expired_lock_left_by_a_killed_promotion_is_broken_and_released(client) -> None:
    from chexops.tracking import promotion

    plant_lock(client, datetime.now(UTC) - timedelta(seconds=1))
    assert promotion.promote(client, NAME, 2).decision == "promoted"
    assert [m.name for m in client.search_registered_models()] == [NAME]


def test_a_lock_is_deleted_only_by_the_holder_of_its_instance(client) -> None:
    held = registry_lock.LOCK_PREFIX + NAME
    with registry_lock.model_lock(client, NAME) as lease:
        # a contender that read an older instance (token "old") and thinks it expired must not delete this one
        registry_lock._delete_instance(client, NAME, "old")  # noqa: SLF001 - the protocol step under test
        assert client.get_registered_model(held).tags["chexops.lock.token"] == lease.token
        # nor may two parties release one instance: the release marker is taken
        client.create_registered_model(f"{registry_lock.RELEASE_PREFIX}{NAME}.{lease.token}")
        registry_lock._delete_instance(client, NAME, lease.token)  # noqa: SLF001
        assert client.get_registered_model(held).tags["chexops.lock.token"] == lease.token
        client.delete_registered_model(f"{registry_lock.RELEASE_PREFIX}{NAME}.{lease.token}")
    assert [m.name for m in client.search_registered_models()] == [NAME]


def test_a_holder_past_its_lease_writes_nothing(client, monkeypatch) -> None:
    from chexops.errors import TrackingError
    from chexops.tracking import promotion

    monkeypatch.setattr(registry_lock, "LEASE_S", -1.0)
    with pytest.raises(TrackingError, match="expired"):
        promotion.promote(client, NAME, 1)
    assert "champion" not in client.get_registered_model(NAME).aliases
    assert [m.name for m in client.search_registered_models()] == [NAME]

"""Round-3 fault audit, #3: two promotions of one version to two aliases at once keep both records."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from chexops.tracking import promotion
from chexops.tracking.registry import promotions

NAME = "study.resnet18.random.full"


@pytest.fixture
def client(tmp_path: Path, empty_store: Path):
    from mlflow import MlflowClient

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=str(tmp_path / "model"))
    return client


def test_a_promotion_that_waited_for_the_lock_does_not_overwrite_the_record_written_meanwhile(client, monkeypatch):
    """Process A reads the version, then B promotes it to another alias under the lock, then A takes the lock:
    A's record must be #2, not a second #1 that overwrites B's."""
    real_lock, raced = promotion.model_lock, []

    @contextmanager
    def lock_after_a_rival(client_, name, *args, **kwargs):
        if not raced:
            raced.append(True)
            promotion.promote(client_, name, 1, "beta", user="rival")  # B, complete, while A waits
        with real_lock(client_, name, *args, **kwargs) as lease:
            yield lease

    monkeypatch.setattr(promotion, "model_lock", lock_after_a_rival)
    decision = promotion.promote(client, NAME, 1, "champion", user="me")
    records = promotions(client.get_model_version(NAME, "1").tags)
    assert [(r["n"], r["alias"], r["by"]) for r in records] == [(1, "beta", "rival"), (2, "champion", "me")]
    assert decision.record == 2
    assert client.get_registered_model(NAME).aliases == {"beta": 1, "champion": 1}

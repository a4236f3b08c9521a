"""Concurrent promotions against an MLflow server (PostgreSQL backend): one winner."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.registry import check_one_winner, race, register_versions


@pytest.mark.slow
def test_eight_promotions_at_once_on_an_mlflow_server_have_one_winner(mlflow_server, tmp_path: Path,  # noqa: F811
                                                                      monkeypatch) -> None:
    versions = register_versions(mlflow_server, tmp_path, monkeypatch)
    check_one_winner(mlflow_server, race(mlflow_server, versions))

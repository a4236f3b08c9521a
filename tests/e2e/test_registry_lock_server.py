"""Concurrent promotions against an MLflow server (PostgreSQL backend): one winner."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
from fixtures.registry import NAME, add_version, good_probs

from chexops.tracking.registry import describe_models, promotions
from chexops.tracking.runs import Tracker
from chexops.tracking.store import open_client

RACERS = 8


def _promote_at_barrier(uri: str, version: int, barrier, results) -> None:
    """One racer: everything imported and the store opened first, then the CLI's promote at the barrier."""
    import os

    from chexops import cli
    from chexops.tracking.store import open_client

    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["CHEXOPS_LOAD_PLUGINS"] = ""
    open_client(uri)
    err = io.StringIO()
    barrier.wait(timeout=120)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(["promote", NAME, str(version), "--alias", "champion"])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
            code, err = 99, io.StringIO(f"{type(exc).__name__}: {exc}")
    results.put((version, code, err.getvalue()))


def race(uri: str, versions: list[int]) -> dict[int, tuple[int, str]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(versions)), ctx.Queue()
    procs = [ctx.Process(target=_promote_at_barrier, args=(uri, v, barrier, results)) for v in versions]
    for p in procs:
        p.start()
    got = dict((v, (code, err)) for v, code, err in (results.get(timeout=300) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    return got


def check_one_winner(uri: str, got: dict[int, tuple[int, str]]) -> None:
    winners = [v for v, (code, _) in got.items() if code == 0]
    print("exit codes:", sorted(code for code, _ in got.values()))
    assert len(winners) == 1, got
    for v, (code, err) in got.items():
        if v == winners[0]:
            continue
        # refused: busy (exit 2) or compared with the winner and not better (exit 1); one line, no traceback
        assert code in (1, 2) and err.count("\n") == 1 and "Traceback" not in err, (v, code, err)
        assert ("another process is changing the aliases" in err) if code == 2 else ("not significantly better" in err)
    client = open_client(uri)
    model = client.get_registered_model(NAME)
    assert int(model.aliases["champion"]) == winners[0]
    assert json.loads(model.tags["chexops.alias_history.champion"]) == winners
    decisions = [(int(v.version), r["decision"]) for v in client.search_model_versions(f"name = '{NAME}'")
                 for r in promotions(v.tags)]
    assert sorted(d for d in decisions if d[1] == "promoted") == [(winners[0], "promoted")]
    assert all(d == "refused" for _, d in decisions if _ != winners[0])
    # no lock or release marker is left, and listing the registry shows the model alone
    assert [m.name for m in client.search_registered_models()] == [NAME]
    assert [m["name"] for m in describe_models(client)] == [NAME]


def register_versions(uri: str, root: Path, monkeypatch: pytest.MonkeyPatch, n: int = RACERS) -> list[int]:
    monkeypatch.chdir(root)
    tracker = Tracker.open(uri, str(root / "mlartifacts"), "study")
    return [add_version(tracker, good_probs()) for _ in range(n)]


@pytest.fixture
def client(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    register_versions(uri, tmp_path, monkeypatch, n=2)
    return open_client(uri)


@pytest.mark.slow
def test_eight_promotions_at_once_on_an_mlflow_server_have_one_winner(mlflow_server, tmp_path: Path,  # noqa: F811
                                                                      monkeypatch) -> None:
    versions = register_versions(mlflow_server, tmp_path, monkeypatch)
    check_one_winner(mlflow_server, race(mlflow_server, versions))

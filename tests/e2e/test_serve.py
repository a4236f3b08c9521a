"""A real `mlflow models serve` of `models:/NAME@champion` answers like the pyfunc loaded in this process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fixtures.predict import CHAMPION, Registered

from chexops.data.labels import OBSERVATIONS
from chexops.tracking.store import global_tracking_uri

PING_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(registered: Registered, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """The documented command, on 127.0.0.1 and a free port; the whole process group is ended afterwards."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered.uri, "CHEXOPS_LOAD_PLUGINS": "",
           # the server starts `uvicorn` by name: it must be this interpreter's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "wb")  # closed in the finally below
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(url, proc, tmp_path / "serve.log")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started: mlflow and its uvicorn
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def wait_for_ping(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + PING_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no answer from {url}/ping within {PING_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_the_served_champion_answers_like_the_pyfunc(registered: Registered, server: str) -> None:  # noqa: F811
    x = np.random.default_rng(0).integers(0, 256, size=(2, 40, 48), dtype=np.uint8)  # resized by the model
    request = urllib.request.Request(f"{server}/invocations", data=json.dumps({"inputs": x.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        served = json.loads(response.read())["predictions"]
    assert len(served) == 2 and all(list(row) == list(OBSERVATIONS) for row in served)
    with global_tracking_uri(registered.uri):
        want = mlflow.pyfunc.load_model(CHAMPION).predict(x)
    np.testing.assert_allclose([[row[o] for o in OBSERVATIONS] for row in served], want.to_numpy(), atol=1e-5)
    assert np.ptp(want.to_numpy(), axis=0).max() > 1e-4  # two images with two answers: rows cannot be swapped

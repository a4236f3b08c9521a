"""The tiny study the slow end-to-end tests share: the working tree copied to a temporary folder, a small
params.yaml, and `dvc repro` run there once per test session.

Test modules load this with `pytest_plugins = ["e2e_helpers"]`, so the session fixture `tiny_study` is one
fixture (one pipeline run) for every module that asks for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STUDY = "chextransfer-e2e"
FULL_RUNS = ("resnet18/random/full", "mobilenetv3/random/full")
TRUNCATED_RUNS = ("resnet18/random/drop-3",)
RUN_NAMES = FULL_RUNS + TRUNCATED_RUNS
SUMMARY_RUN = f"{STUDY}/summary"
MAX_EXAMPLES = 200
REPRO_TIMEOUT_S = 1500

# Merged over the repository's params.yaml: everything the demo has, only smaller.
TINY_PARAMS: dict[str, Any] = {
    "study": {"name": STUDY, "seed": 0},
    "data": {"source": "synthetic", "synthetic": {"patients": 60, "holdout": None, "seed": 0, "image_size": 48},
             "image_size": 32},
    "train": {"max_examples": MAX_EXAMPLES, "eval_every": 64, "top_k": 2, "batch_size": 16, "device": "cpu",
              "eval_batch_size": 64},
    "eval": {"bootstrap": 200},
    "tune": {"enabled": False},
    "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts", "experiment": None},
    "grid": {"families": ["resnet18", "mobilenetv3"], "initializers": ["random"],
             "truncated": {"resnet18-random-drop-3": {"family": "resnet18", "depth": 3, "init": "random"}}},
    "analysis": {"bootstrap": 200, "seed": 0},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        # grid.truncated names the truncated runs: the merged-in ones replace the base's, never add to them
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict) and key != "truncated"
        out[key] = _merge(out[key], value) if both_maps else value
    return out


def worktree_files(repo: Path) -> list[str]:
    """Tracked files plus untracked files git does not ignore (work not yet committed), that exist."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True, timeout=60).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (repo / f).is_file()})


def copy_worktree(repo: Path, dest: Path) -> None:
    for rel in worktree_files(repo):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)


def pipeline_env(root: Path) -> dict[str, str]:
    """The stages' environment: this interpreter's `python` first on PATH, the copy's chexops imported, the
    store from params.yaml (no MLFLOW_* overrides), built-in plugins only, nothing fetched from the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(root)
    env.update({"CHEXOPS_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
                "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid"})
    return env


@dataclass
class Result:
    returncode: int
    output: str  # stdout and stderr interleaved
    seconds: float


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600, check: bool = True) -> Result:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    result = Result(proc.returncode, proc.stdout, time.perf_counter() - start)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode} in {cwd}:\n{proc.stdout[-6000:]}")
    return result


@dataclass
class Study:
    """The tiny study after its first `dvc repro`."""

    root: Path
    env: dict[str, str]
    stages: list[str]  # every stage dvc.yaml expands to, for this params.yaml
    first_repro: Result

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def dvc(self, *args: str, timeout: float = 600, check: bool = True) -> Result:
        return run([sys.executable, "-m", "dvc", *args], self.root, self.env, timeout, check)

    def params(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict[str, Any]) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def build_study(root: Path, params: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Study:
    """The tiny study in `root`; `params` are merged over TINY_PARAMS, `env` over the stages' environment."""
    copy_worktree(REPO, root)
    merged = _merge(_merge(yaml.safe_load((root / "params.yaml").read_text()), TINY_PARAMS), params or {})
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    env = pipeline_env(root) | (env or {})
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tiny study"]):
        run(["git", *cmd], root, env)
    stages = run([sys.executable, "-m", "dvc", "stage", "list", "--all", "--name-only"], root, env).output.split()
    first = run([sys.executable, "-m", "dvc", "repro"], root, env, timeout=REPRO_TIMEOUT_S)
    return Study(root, env, stages, first)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """The tiny study, run once per session; tests may change its params.yaml, never its MLflow runs."""
    study = build_study(tmp_path_factory.mktemp("e2e") / "repo")
    print(f"\ntiny study: first dvc repro took {study.first_repro.seconds:.0f} s in {study.root}")
    return study

"""What a training run records about what made it: the code (git commit, chexops version), the network and its
weights, the data's hash, the device and precision, as the tags every configuration run carries."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from chexops.naming import DEFAULT_STRATEGY
from chexops.tracking import tags as tag


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD of the repository at `cwd` (default: here), "-dirty" if files differ from it; "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=30,
                             check=True).stdout.strip()
        # dvc.lock is rewritten by `dvc repro` itself between stages: it says nothing about the code that ran
        status = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)dvc.lock"], cwd=cwd,
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if status.strip() else sha


def chexops_version() -> str:
    try:
        return metadata.version("chexops")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_tags(report: Mapping[str, Any], device: str, precision: str, data_hash: str,
             extra: Mapping[str, Any] | None = None, cwd: str | Path | None = None) -> dict[str, str]:
    """The tags every training run carries; `report` is BuildReport.to_dict(). Names are stable: queries use them."""
    commit = git_commit(cwd)
    tags = {
        tag.GIT_COMMIT: commit,
        tag.DATA_HASH: data_hash,
        tag.TIMM_TAG: str(report["timm_tag"]),
        tag.PLUGIN: str(report["plugin"]),
        tag.PLUGIN_VERSION: str(report["plugin_version"]),
        tag.DEVICE: device,
        tag.PRECISION: precision,
        tag.VERSION: chexops_version(),
        tag.FAMILY: str(report["family"]),
        tag.GROUP: str(report["group"]),
        tag.INITIALIZER: str(report["initializer"]),
        tag.TRUNCATION: str(report["truncation"]),
        tag.TRUNCATION_STRATEGY: str(report.get("truncation_strategy", DEFAULT_STRATEGY)),
        # the UI's Source column: the stage script or command that ran it
        tag.SOURCE_NAME: Path(sys.argv[0]).name or "chexops", tag.SOURCE_TYPE: "LOCAL",
        tag.NOTE: (f"{report['family']} ({report['group']}), {report['initializer']} init, "
                   f"{report['truncation']}; {device} {precision}; data {data_hash[:12]}; "
                   f"code {commit[:12]}{' (dirty)' if commit.endswith('-dirty') else ''}"),
    }
    if re.fullmatch(r"[0-9a-f]{40}", commit):  # MLflow's own tag (the UI links it) only takes a clean commit
        tags[tag.SOURCE_COMMIT] = commit
    if report.get("weights_source"):
        tags[tag.WEIGHTS_SOURCE] = str(report["weights_source"])
    tags.update({k: str(v) for k, v in (report.get("init_tags") or {}).items()})
    for key, value in (extra or {}).items():
        tags[key if key.startswith(("chexops.", "mlflow.")) else f"chexops.{key}"] = str(value)
    return tags

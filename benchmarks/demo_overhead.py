"""Where the default `dvc repro` spends its time: Python imports vs the work itself, per stage, in one run.

Copies a checkout (tracked and untracked-but-not-ignored files) to a temporary folder, and runs its `dvc repro`
from scratch with every stage's `python` started as `python -X importtime` (a wrapper first on PATH; DVC itself
is not profiled). Each stage's wall time is the time between DVC announcing it and announcing the next; its
import time is the sum of the top-level entries of `-X importtime` (lazy imports inside functions included).

    python benchmarks/demo_overhead.py                 # this checkout, its params.yaml (the synthetic demo)
    python benchmarks/demo_overhead.py --repo ../other --json out.json

The figures describe this machine under its load at the time: the script prints the load average with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGE = re.compile(r"^Running stage '([^']+)'")
IMPORT = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")  # top level: the name starts right after "| "


def copy_checkout(repo: Path, dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in (f for f in listed if f and (repo / f).is_file()):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)


def profiling_python(bin_dir: Path) -> None:
    """A `python` that is this interpreter with -X importtime, for the stage commands DVC runs."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -X importtime "$@"\n')
    wrapper.chmod(0o755)


def run_repro(root: Path, bin_dir: Path) -> tuple[float, list[tuple[float, str]]]:
    """`dvc repro` in `root`; its output lines, each with the seconds since the start at which it arrived."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env |= {"PATH": os.pathsep.join([str(bin_dir), env.get("PATH", "")]), "PYTHONPATH": str(root),
            "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
            "PYTHONUNBUFFERED": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark"]):
        subprocess.run(["git", *cmd], cwd=root, env=env, check=True, capture_output=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    total = time.perf_counter() - start
    if proc.wait():
        tail = "\n".join(line for _, line in lines if not line.startswith("import time:"))[-4000:]
        raise SystemExit(f"dvc repro failed with exit code {proc.returncode}:\n{tail}")
    return total, lines


def per_stage(total: float, lines: list[tuple[float, str]]) -> list[dict]:
    stages: list[dict] = []
    for at, line in lines:
        if m := STAGE.match(line):
            if stages:
                stages[-1]["seconds"] = at - stages[-1]["started"]
            stages.append({"stage": m.group(1), "started": at, "imports": 0.0, "processes": 0})
        elif (m := IMPORT.match(line)) and stages:
            stages[-1]["imports"] += int(m.group(1)) / 1e6
            if m.group(2).strip() == "encodings":  # every interpreter imports it first: one per process
                stages[-1]["processes"] += 1
    if stages:
        stages[-1]["seconds"] = total - stages[-1]["started"]
    return stages


def kind(stage: str) -> str:
    return stage.split("@")[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--json", type=Path, help="also write the per-stage figures here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="chexops-demo-overhead-") as tmp:
        root = Path(tmp) / "repo"
        copy_checkout(args.repo.resolve(), root)
        profiling_python(Path(tmp) / "bin")
        load_before = os.getloadavg()
        total, lines = run_repro(root, Path(tmp) / "bin")
        load_after = os.getloadavg()
    stages = per_stage(total, lines)
    imports = sum(s["imports"] for s in stages)
    print(f"dvc repro of {args.repo.resolve()} (its params.yaml), {len(stages)} stages, {os.cpu_count()} cores, "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (other users' work included)")
    groups: dict[str, dict] = {}
    for s in stages:
        g = groups.setdefault(kind(s["stage"]), {"count": 0, "seconds": 0.0, "imports": 0.0})
        g["count"] += 1
        g["seconds"] += s["seconds"]
        g["imports"] += s["imports"]
    print(f"{'stage':<20}{'count':>6}{'wall s':>9}{'imports s':>11}{'per stage s':>13}")
    for name, g in groups.items():
        print(f"{name:<20}{g['count']:>6}{g['seconds']:>9.1f}{g['imports']:>11.1f}{g['seconds'] / g['count']:>13.2f}")
    print(f"total: {total:.1f} s wall, {imports:.1f} s in imports ({100 * imports / total:.0f}%), "
          f"{total - imports:.1f} s the rest (training, evaluation, DVC's own work)")
    if args.json:
        args.json.write_text(json.dumps({"total_seconds": total, "import_seconds": imports, "stages": stages,
                                         "load_before": load_before, "load_after": load_after}, indent=2))


if __name__ == "__main__":
    main()

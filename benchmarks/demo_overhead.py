"""Where the default `dvc repro` spends its time: Python imports vs the work itself, per stage, in one run.

Copies a checkout (tracked and untracked-but-not-ignored files) to a temporary folder, and runs its `dvc repro`
from scratch with every stage's `python` started as `python -X importtime` (a wrapper first on PATH; DVC itself
is not profiled). Each stage's wall time is the time between DVC announcing it and announcing the next; its
import time is the sum of the top-level entries of `-X importtime` (lazy imports inside functions included).

    python benchmarks/demo_overhead.py                 # this checkout, its params.yaml (the synthetic demo)
    python benchmarks/demo_overhead.py --repo ../other --json out.json --log repro.log
    python benchmarks/demo_overhead.py --from-log repro.log   # the figures of a run's log, finished or not

--log keeps DVC's output, each line stamped with the seconds since the start, as it arrives; --from-log reads
such a log back, so a run stopped early (a busy machine) still gives the stages it finished, and the totals are
then extrapolated per kind of stage to every stage of the pipeline (`dvc stage list`), and marked so.

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


def run_repro(root: Path, bin_dir: Path, log: Path | None) -> tuple[float, list[tuple[float, str]]]:
    """`dvc repro` in `root`; its output lines, each with the seconds since the start at which it arrived."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env |= {"PATH": os.pathsep.join([str(bin_dir), env.get("PATH", "")]), "PYTHONPATH": str(root),
            "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
            "PYTHONUNBUFFERED": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark"]):
        subprocess.run(["git", *cmd], cwd=root, env=env, check=True, capture_output=True)
    stages = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--all", "--name-only"], cwd=root,
                            env=env, check=True, capture_output=True, text=True).stdout.split()
    out = open(log, "w") if log else None  # noqa: SIM115 - closed below
    if out:
        out.write(f"# stages {' '.join(stages)}\n")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
        if out:
            out.write(f"{lines[-1][0]:.3f} {lines[-1][1]}\n")
            out.flush()
    total = time.perf_counter() - start
    if out:
        out.write(f"# done {total:.3f}\n")
        out.close()
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


def read_log(path: Path) -> tuple[float | None, float, list[tuple[float, str]], list[str]]:
    """(total seconds if the run finished, seconds of the last line, the lines, every stage of the pipeline)."""
    lines, stages, total = [], [], None
    for raw in path.read_text().splitlines():
        if raw.startswith("# stages "):
            stages = raw[len("# stages "):].split()
        elif raw.startswith("# done "):
            total = float(raw[len("# done "):])
        elif raw:
            at, _, line = raw.partition(" ")
            lines.append((float(at), line))
    return total, lines[-1][0] if lines else 0.0, lines, stages


def report(stages: list[dict], total: float, finished: bool, every_stage: list[str], where: str) -> dict:
    """Print the figures per kind of stage; a run that did not finish is extrapolated to every stage."""
    done = stages if finished else stages[:-1]  # the last one of an unfinished run was cut off
    groups: dict[str, dict] = {}
    for s in done:
        g = groups.setdefault(kind(s["stage"]), {"count": 0, "seconds": 0.0, "imports": 0.0})
        g["count"] += 1
        g["seconds"] += s["seconds"]
        g["imports"] += s["imports"]
    print(where)
    print(f"{'stage':<20}{'ran':>5}{'of':>5}{'wall s':>9}{'imports s':>11}{'per stage s':>13}{'imports/stage s':>17}")
    counts = {k: sum(kind(s) == k for s in every_stage) for k in dict.fromkeys(map(kind, every_stage))}
    estimate_total = estimate_imports = 0.0
    for name, g in groups.items():
        each, imports = g["seconds"] / g["count"], g["imports"] / g["count"]
        of = counts.get(name, g["count"])
        estimate_total += each * of
        estimate_imports += imports * of
        print(f"{name:<20}{g['count']:>5}{of:>5}{g['seconds']:>9.1f}{g['imports']:>11.1f}{each:>13.2f}{imports:>17.2f}")
    missing = [k for k in counts if k not in groups]
    imports = sum(g["imports"] for g in groups.values())
    if finished:
        print(f"total: {total:.1f} s wall, {imports:.1f} s in imports ({100 * imports / total:.0f}%), "
              f"{total - imports:.1f} s the rest (training, evaluation, DVC's own work)")
    else:
        print(f"NOT FINISHED: {len(done)} of {len(every_stage)} stages ran in {total:.1f} s. Extrapolated from the "
              f"stages that ran, per kind, to all {len(every_stage)}: about {estimate_total:.0f} s wall, "
              f"{estimate_imports:.0f} s in imports ({100 * estimate_imports / estimate_total:.0f}%)"
              + (f"; no figure for {', '.join(missing)} (none ran)" if missing else ""))
    return {"finished": finished, "total_seconds": total, "import_seconds": imports, "stages": done,
            "extrapolated_total_seconds": None if finished else estimate_total,
            "extrapolated_import_seconds": None if finished else estimate_imports, "never_ran": missing}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--json", type=Path, help="also write the per-stage figures here")
    p.add_argument("--log", type=Path, help="keep DVC's output here, time-stamped, as it arrives")
    p.add_argument("--from-log", type=Path, help="report on the log of an earlier run instead of running")
    args = p.parse_args()
    if args.from_log:
        total, last, lines, every_stage = read_log(args.from_log)
        finished, total = total is not None, total if total is not None else last
        where = f"dvc repro logged in {args.from_log}"
    else:
        with tempfile.TemporaryDirectory(prefix="chexops-demo-overhead-") as tmp:
            root = Path(tmp) / "repo"
            copy_checkout(args.repo.resolve(), root)
            profiling_python(Path(tmp) / "bin")
            load_before = os.getloadavg()
            total, lines = run_repro(root, Path(tmp) / "bin", args.log)
            load_after = os.getloadavg()
        every_stage, finished = [], True
        where = (f"dvc repro of {args.repo.resolve()} (its params.yaml), {os.cpu_count()} cores, load average "
                 f"before {load_before[0]:.2f}, after {load_after[0]:.2f} (other users' work included)")
    stages = per_stage(total, lines)
    result = report(stages, total, finished, every_stage or [s["stage"] for s in stages], where)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

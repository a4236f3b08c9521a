"""DVC stage analyze: the paper's analyses over every run of the grid -> reports/ (tables, figures, study.md),
also logged to the study's summary run in MLflow."""

from pathlib import Path

from _common import config_and_key, main, parser

from chexops.analysis import load_runs
from chexops.config import grid_runs
from chexops.report import write_report
from chexops.runs import RunKey
from chexops.study import open_tracker


def run() -> None:
    args = parser(__doc__).parse_args()
    config, _ = config_and_key(args)
    # Only the runs of the current grid: folders left by configurations removed from params.yaml don't count.
    keys = [RunKey(*r) for r in grid_runs(config)]
    dirs = [k.eval_dir(config.train.runs_dir) for k in keys]
    study = load_runs(dirs, name=config.study.name)
    a = config.analysis
    outputs = write_report(study, Path(a.reports_dir), a.bootstrap, a.seed)
    tracker = open_tracker(config)
    run_id = tracker.start_run(f"{config.study.name}/summary", {"chexops.stage": "analyze"},
                               {"analysis": vars(a), "runs": [k.name for k in keys]})
    with tracker.run_guard(run_id):
        for path in outputs.values():
            if Path(path).is_file():
                tracker.log_artifact(run_id, path, "report" if Path(path).suffix != ".png" else "report/figures")
    tracker.end_run(run_id)
    print(f"report: {Path(a.reports_dir) / 'study.md'} ({len(dirs)} runs)")


main(run)

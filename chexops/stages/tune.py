"""Stage tune: the learning rate of one configuration -> runs/tune/<run>.json (Optuna's search on validation when
tune.enabled, train.lr passed through otherwise)."""

from __future__ import annotations

import json
from typing import Any

from chexops.config import Config
from chexops.naming import RunKey
from chexops.stages.context import StageContext, require_prepared
from chexops.stages.experiment import tracker_of


def chosen_lr(config: Config, key: RunKey) -> float:
    """The learning rate the train stage uses: the tuned one when a tune file exists, else train.lr."""
    path = key.tune_file(config.train.runs_dir)
    return float(json.loads(path.read_text())["lr"]) if path.is_file() else config.train.lr


def run(ctx: StageContext) -> dict[str, Any]:
    """Write the learning rate for the configuration to runs/tune/<run>.json (searched, or passed through)."""
    config, key = ctx.config, ctx.run
    out = key.tune_file(ctx.runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not config.tune.enabled:
        record = {"run": key.name, "lr": config.train.lr, "tuned": False}
    else:
        from chexops.train.tune import search_lr

        require_prepared(config)
        record = search_lr(config, key, tracker_of(ctx), ctx.progress)
    out.write_text(json.dumps(record, indent=2))
    return record

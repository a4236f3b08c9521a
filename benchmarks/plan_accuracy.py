"""How close `chexops plan`'s estimate comes to real runs on this machine: two tiny configurations, each model
measured right before its run (a shared machine's load drifts), the ratio measured / estimated reported.

    python benchmarks/plan_accuracy.py            # prints the ratio; the plan is useful within about 0.5x-2x

Not a test: a timing ratio depends on the machine and its load (the test suite checks what the plan computes).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from chexops.config import config_from_dict
from chexops.naming import RunKey
from chexops.scaleout import plan
from chexops.scaleout.profile import Profile
from chexops.stages import ingest, prepare
from chexops.stages.context import StageContext
from chexops.train.loop import train_run

KEYS = [RunKey("resnet18", "random", 3), RunKey("mobilenetv3", "random", 0)]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chexops-plan-") as tmp:
        root = Path(tmp)
        os.chdir(root)
        config = config_from_dict({
            "study": {"name": "bench"},
            "data": {"source": "synthetic", "synthetic": {"patients": 60, "seed": 1, "image_size": 48},
                     "image_size": 32, "index_dir": "index", "cache_dir": "cache", "workers": 1},
            "train": {"batch_size": 8, "epochs": 2, "eval_every": 64, "top_k": 3, "lr": 1e-3, "runs_dir": "runs"},
            "grid": {"families": ["resnet18", "mobilenetv3"], "initializers": ["random"]}})
        ingest.run(StageContext(config, progress=False))
        prepare.run(StageContext(config, progress=False))
        profile, measured = Profile("cpu", "fp32", "off", 32, 8, 256), 0.0
        for key in KEYS:
            timing = plan.measure_model(config, key.family, key.depth, key.strategy, steps=8, warmup=2)
            profile.timings[timing.model] = timing
            start = time.perf_counter()
            train_run(config, key, progress=False)  # builds, trains and validates: the plan's parts but the test
            measured += time.perf_counter() - start
        estimate = plan.plan(config, profile, plan.image_counts(config))
        expected = sum(r["total"] - r["test"] for r in estimate["configurations"])
    print(f"measured {measured:.1f} s, estimated {expected:.1f} s: ratio {measured / expected:.2f} "
          "(the plan's aim: within 0.5x-2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

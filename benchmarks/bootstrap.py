"""Time the vectorised AUROC bootstrap against a loop of sklearn roc_auc_score calls on the same resamples.

    python benchmarks/bootstrap.py [--resamples 1000 --tasks 6 --studies 5000 --seed 0]

Synthetic test-set-like data (scores rounded to 3 decimals, so ties occur); both paths score identical
resample indices, and the script fails if any replicate differs by more than 1e-12.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from chexops.evaluate.bootstrap import auroc_replicates, bootstrap_indices


def synthetic(studies: int, tasks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.1, 0.4, tasks)
    y = (rng.random((studies, tasks)) < prevalence).astype(np.int8)
    logits = rng.normal(size=(studies, tasks)) + 1.5 * y
    return y, np.round(1.0 / (1.0 + np.exp(-logits)), 3)


def sklearn_loop(y: np.ndarray, s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.full((idx.shape[0], y.shape[1]), np.nan)
    for b, rows in enumerate(idx):
        for k in range(y.shape[1]):
            yy = y[rows, k]
            if 0 < yy.sum() < yy.size:  # sklearn raises on one class; the vectorised path gives NaN
                out[b, k] = roc_auc_score(yy, s[rows, k])
    return out


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--studies", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    y, s = synthetic(args.studies, args.tasks, args.seed)
    idx = bootstrap_indices(args.studies, args.resamples, args.seed)

    t0 = time.perf_counter()
    fast = auroc_replicates(y, s, idx)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = sklearn_loop(y, s, idx)
    t_slow = time.perf_counter() - t0

    same_nan = np.array_equal(np.isnan(fast), np.isnan(slow))
    max_diff = float(np.nanmax(np.abs(fast - slow)))
    print(f"{args.resamples} resamples x {args.tasks} tasks x {args.studies} studies")
    print(f"vectorised : {t_fast:8.3f} s")
    print(f"sklearn loop: {t_slow:8.3f} s")
    print(f"speed ratio : {t_slow / t_fast:8.1f}x")
    print(f"max |diff|  : {max_diff:.3e}   NaN patterns equal: {same_nan}")
    if not same_nan or max_diff > 1e-12:
        raise SystemExit("vectorised replicates differ from sklearn")
    return t_slow / t_fast


if __name__ == "__main__":
    main()

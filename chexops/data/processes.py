"""Worker processes for the data stages, started clean instead of forked from the stage.

By the time a stage decodes or renders, its process has threads (tqdm's monitor, MLflow's, torch's). A forked
worker inherits every lock those threads held at that instant and waits forever on the first it needs: CI saw
`dvc repro prepare` hang for 10 minutes on a ForkPoolWorker. forkserver forks each worker from a small server
process that has no such threads (spawn where the platform has no forkserver). Workers import the main module,
so a script that starts them keeps its work under `if __name__ == "__main__":` (pipelines/*.py do).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext


def clean_context(preload: list[str]) -> BaseContext:
    """A multiprocessing context whose workers do not share the caller's locks; `preload` are the modules the
    workers run, imported once in the forkserver instead of once per worker."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)  # no effect once the server runs, which then has them already
    return context

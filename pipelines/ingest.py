"""DVC stage ingest: the CheXpert folder (real, or generated synthetic) -> data/index/{train,valid,test}.csv."""

from _common import run_stage

from chexops.stages.ingest import run

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(run, __doc__, per_configuration=False)

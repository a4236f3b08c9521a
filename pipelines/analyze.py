"""DVC stage analyze: the paper's analyses over every run of the grid -> reports/, and the study's summary run."""

from _common import run_stage

from chexops.stages.analyze import run

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(run, __doc__, per_configuration=False)

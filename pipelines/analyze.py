"""DVC stage analyze: the paper's analyses over every run of the grid -> reports/, and the study's summary run."""

from _common import run_stage

from chexops.stages.analyze import run

run_stage(run, __doc__, per_configuration=False)

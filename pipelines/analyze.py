"""DVC stage analyze: the paper's analyses over every run of the grid -> reports/, and the study's summary run."""

from _common import run_stage

run_stage("analyze", __doc__)

"""DVC stage ingest: the CheXpert folder (real, or generated synthetic) -> data/index/{train,valid,test}.csv."""

from _common import run_stage

run_stage("ingest", __doc__)

"""DVC stage pretrain: one (family, initializer) -> runs/pretrain/<family>__<init>/ (the backbone its fine-tunes
start from, e.g. ssl: MoCo v2 on the training images; a pass-through record for initializers without one)."""

from _common import run_stage

from chexops.stages.pretrain import run

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(run, __doc__, per_configuration=True)

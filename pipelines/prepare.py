"""DVC stage prepare: decode every image once into data/cache/<split>.npy (uint8, memory-mapped when read)."""

from _common import run_stage

from chexops.stages.prepare import run

if __name__ == "__main__":  # not when a worker process imports this script (chexops.data.processes)
    run_stage(run, __doc__, per_configuration=False)

"""DVC stage prepare: decode every image once into data/cache/<split>.npy (uint8, memory-mapped when read)."""

from _common import run_stage

from chexops.stages.prepare import run

run_stage(run, __doc__, per_configuration=False)

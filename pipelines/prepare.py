"""DVC stage prepare: decode every image once into data/cache/<split>.npy (uint8, memory-mapped when read)."""

from _common import run_stage

run_stage("prepare", __doc__)

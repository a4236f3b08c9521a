"""Several workers per device: how many, and starting them (`chexops worker --per-device N|auto`).

At the paper's batch of 16 one small-model run leaves a big GPU mostly idle (kernel launches bound it), so several
configurations trained at once finish the grid sooner. How many is a measurement, not a guess: `auto` reads a
`chexops plan --pack K --save FILE` profile of the device and packs K when the measured gain is worth it and K
copies of the grid's largest model fit in the device's memory; on a CPU the processes would only share the same
cores, so `auto` is 1 there.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from chexops.errors import ConfigError
from chexops.scaleout.profile import MIN_GAIN, Profile

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.9  # of the device's memory the packed workers may plan to use (the rest: CUDA contexts, caches)


def per_device_from_profile(pack: int, gain: float | None, peak_memory_mb: float | None,
                            device_memory_mb: float) -> int:
    """Workers per device from a plan profile: its K when the gain measured with K workers is worth it, capped
    by how many copies of the largest model's measured peak memory fit on the device."""
    if pack <= 1 or gain is None or gain < MIN_GAIN:
        return 1
    if peak_memory_mb:
        pack = min(pack, max(1, int(device_memory_mb * MEMORY_SHARE // peak_memory_mb)))
    return pack


def resolve_per_device(value: str, profile_path: str | None, device: str) -> int:
    """`--per-device` as a number: N as given, or `auto` from the device and the plan profile."""
    if value != "auto":
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise ConfigError(f"--per-device must be a positive number or auto, got {value!r}.")
        return number
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return 1  # processes on one CPU share its cores: nothing to gain
    if not profile_path:
        raise ConfigError("--per-device auto on a GPU needs a measurement of this device: run `chexops plan --pack 3 "
                          "--save plan.json` here once, then `chexops worker --per-device auto --profile plan.json`.")

    profile = Profile.read(profile_path)
    peak = max((t.peak_memory_mb or 0.0 for t in profile.timings.values()), default=0.0)
    memory = torch.cuda.get_device_properties(0).total_memory / 2**20
    chosen = per_device_from_profile(profile.pack, profile.packing_gain, peak or None, memory)
    log.info(f"[worker] {chosen} per device: measured packing gain {profile.packing_gain} with {profile.pack} "
             f"({profile.packing_model}), largest model's peak memory {peak:.0f} MiB of {memory:.0f} MiB")
    return chosen


def visible_devices() -> list[str | None]:
    """The CUDA devices the workers spread over, as CUDA_VISIBLE_DEVICES entries ([None]: no GPU, or one)."""
    import torch

    count = torch.cuda.device_count()
    if count <= 1:
        return [None]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in listed.split(",")] if listed else [str(i) for i in range(count)]
    return names[:count]


def start_workers(argv: list[str], per_device: int, log_dir: Path | None) -> int:
    """Run `chexops worker` with `argv` (its options but --per-device) `per_device` times on each visible device;
    wait for all of them. Returns the worst exit code. Each writes to its own log when `log_dir` is given."""
    procs = []
    for device in visible_devices():
        for k in range(per_device):
            env = dict(os.environ)
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = device
            name = f"worker-{device or 0}-{k}"
            out = open(log_dir / f"{name}.log", "w") if log_dir else None  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen([sys.executable, "-m", "chexops", "worker", *argv], env=env, stdout=out,
                                           stderr=subprocess.STDOUT if out else None), out))
    codes = []
    try:
        for proc, _ in procs:
            codes.append(proc.wait())
    except KeyboardInterrupt:  # hand every configuration back: each worker does that on SIGTERM
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            codes.append(proc.wait())
    finally:
        for _, out in procs:
            if out:
                out.close()
    return max(codes, default=0)

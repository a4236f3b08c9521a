"""How long the study's grid takes on this device: a few measured steps per model, scaled to the grid's budget.

Each distinct model of the grid (family, truncation depth, strategy) is built once and timed on synthetic uint8
batches of the study's image size and batch size, through the training step the runs use (same runtime, same
`train.compile`): seconds per training example, seconds per validation / test example at `train.eval_batch_size`,
and the one-off cost of building it and of its first steps (compilation, cuDNN's autotuning). The initializer and
the label fraction change what a run learns, not how fast it steps, so one measurement serves them all.

A configuration's time is then: set-up + its examples (`train.epochs` over its labelled images, capped by
`train.max_examples`) x the training rate + each validation pass (counted as the loop schedules them): the
validation split and the state and checkpoint it saves + the test split once per ensemble checkpoint. A
pretraining step (`ssl`'s MoCo v2, once per family) is timed by two short real pretrainings and scaled to
`pretrain.examples`. The bootstrap and MLflow logging are not in the estimate; the plan says so where it prints.

Packed: `pack` processes share the device; their combined rate over one process's rate is the packing gain,
measured by running `pack` copies of the grid's slowest model's step at once, and applied to every
configuration.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chexops.config import Config, grid_keys, grid_runs
from chexops.errors import ConfigError
from chexops.naming import STATE_FILE, RunKey
from chexops.scaleout.profile import MIN_GAIN, ModelTiming, PretrainTiming, Profile, model_name


@dataclass(frozen=True)
class ImageCounts:
    train: int
    valid: int
    test: int


def image_counts(config: Config, given: str | None = None) -> ImageCounts:
    """Images per split: `given` as TRAIN,VALID,TEST, else what the prepare stage recorded for `data.cache_dir`."""
    if given:
        try:
            train, valid, test = (int(v) for v in given.split(","))
        except ValueError as exc:
            raise ConfigError(f"--images must be TRAIN,VALID,TEST image counts, e.g. 191027,202,518; got {given!r}."
                              ) from exc
        return ImageCounts(train, valid, test)
    from chexops.naming import cache_file

    path = cache_file(config.data.cache_dir)
    if not path.is_file():
        raise ConfigError(f"no prepared data in {config.data.cache_dir} to count the splits' images: run "
                          "`dvc repro prepare`, or give the counts with --images TRAIN,VALID,TEST.")
    splits = json.loads(path.read_text())["splits"]
    return ImageCounts(*(int(splits[s]["images"]) for s in ("train", "valid", "test")))


def schedule(labelled: int, budget: int, batch: int, eval_every: int, epochs: int) -> tuple[int, int]:
    """(examples trained, validation passes) of a run, as chexops.train.loop schedules them: it stops after the
    batch that reaches the budget, and validates after the batch that reaches the next multiple of `eval_every`
    examples, at each epoch's end, and at the end of the budget."""
    batches = -(-labelled // batch)
    count, examples, next_eval, epoch, b = 0, 0, eval_every, 0, 0
    while True:
        # batches until the next evaluation, jumped over at once (the paper's grid has ~36k steps per run)
        jump = max(1, min(-(-(next_eval - examples) // batch), -(-(budget - examples) // batch), batches - b))
        b += jump
        examples = epoch * labelled + labelled if b == batches else examples + jump * batch
        count += 1
        while next_eval <= examples:
            next_eval += eval_every
        if b == batches:
            epoch, b = epoch + 1, 0
        if examples >= budget or epoch >= epochs:
            return examples, count


def configuration_seconds(config: Config, key: RunKey, timing: ModelTiming, sizes: ImageCounts) -> dict[str, float]:
    """The estimated seconds of one configuration, by part."""
    t = config.train
    labelled = max(1, round(sizes.train * key.fraction))
    budget = t.epochs * labelled
    budget = min(budget, t.max_examples) if t.max_examples else budget
    examples, passes = schedule(labelled, budget, t.batch_size, t.eval_every, t.epochs)
    parts = {"setup": timing.setup_s, "train": examples * timing.train_s_per_example,
             "validation": passes * (sizes.valid * timing.eval_s_per_example + timing.save_s),
             "test": min(t.top_k, passes) * sizes.test * timing.eval_s_per_example}
    return parts | {"total": sum(parts.values()), "examples": float(examples), "validations": float(passes)}


def grid_models(config: Config) -> list[tuple[str, int, str]]:
    """The distinct models (family, depth, strategy) of the grid, in grid order."""
    return list(dict.fromkeys((f, d, s) for f, _, d, _, s in grid_runs(config)))


def plan(config: Config, profile: Profile, sizes: ImageCounts) -> dict[str, Any]:
    """Per configuration and in total: expected seconds, sequential and packed."""
    rows, missing = [], []
    for key in grid_keys(config):  # grid.seeds repeats train the same model again: each counted
        timing = profile.timings.get(model_name(key.family, key.depth, key.strategy))
        if timing is None:
            missing.append(model_name(key.family, key.depth, key.strategy))
            continue
        rows.append({"run": key.name, "model": timing.model} | configuration_seconds(config, key, timing, sizes))
    for family, initializer in grid_pretraining(config):
        pretraining = profile.pretraining.get(f"{family}/{initializer}")
        if pretraining is None:
            missing.append(f"{family}/{initializer} pretraining")
            continue
        seconds = pretraining.fixed_s + config.pretrain.examples * pretraining.s_per_example
        rows.append({"run": f"{family}/{initializer}/pretrain", "model": family, "setup": pretraining.fixed_s,
                     "train": seconds - pretraining.fixed_s, "validation": 0.0, "test": 0.0, "total": seconds,
                     "examples": float(config.pretrain.examples), "validations": 0.0})
    if missing:
        raise ConfigError(f"the profile has no measurement of {', '.join(sorted(set(missing)))}: measure them with "
                          "`chexops plan --save FILE` (on the device the profile describes).")
    sequential = sum(r["total"] for r in rows)
    gain = profile.packing_gain or 1.0
    disk = disk_bytes(config, profile, sizes)
    return {"device": profile.device, "precision": profile.precision, "compile": profile.compile,
            "image_size": profile.image_size, "batch_size": profile.batch_size,
            "images": asdict(sizes), "configurations": rows, "sequential_seconds": sequential,
            "pack": profile.pack, "packing_gain": profile.packing_gain, "packing_model": profile.packing_model,
            "packed_seconds": sequential / gain if profile.packing_gain else None,
            "disk": disk, "not_included": ["bootstrap CIs and MLflow logging"]}


def disk_bytes(config: Config, profile: Profile, sizes: ImageCounts) -> dict[str, Any]:
    """What the grid leaves on disk, each byte once (DVC's cache and MLflow's artifacts link the run folders'
    files): the image cache, each configuration's top-K checkpoints, each pretrained backbone (about its full
    model's checkpoint); plus, while training, one resumable state (model and optimiser) per running process."""
    image_cache = (sizes.train + sizes.valid + sizes.test) * config.data.image_size ** 2
    checkpoints, unknown = 0, []
    for key in grid_keys(config):
        timing = profile.timings.get(model_name(key.family, key.depth, key.strategy))
        if timing is None or timing.checkpoint_bytes is None:
            unknown.append(key.name)
            continue
        checkpoints += config.train.top_k * timing.checkpoint_bytes
    full = {t.family: t.checkpoint_bytes or 0 for t in profile.timings.values() if t.depth == 0}
    backbones = sum(full.get(family, 0) for family, _ in grid_pretraining(config))
    states = [t.state_bytes for t in profile.timings.values() if t.state_bytes]
    return {"image_cache": image_cache, "checkpoints": checkpoints, "backbones": backbones,
            "total": image_cache + checkpoints + backbones,
            "while_training": max(states, default=0) * max(profile.pack, 1), "not_measured": unknown}


def grid_pretraining(config: Config) -> list[tuple[str, str]]:
    """The (family, initializer) pairs of the grid whose initializer has a pretraining step (ssl's MoCo)."""
    from chexops.components.registry import get_registry

    registry = get_registry()
    pairs = dict.fromkeys((f, i) for f, i, *_ in grid_runs(config))
    return [(f, i) for f, i in pairs if registry.initializer(i)[0].pretrain is not None]


# --- measuring ---------------------------------------------------------------------------------------------------

def measure_model(config: Config, family: str, depth: int, strategy: str, steps: int = 10, warmup: int = 3
                  ) -> ModelTiming:
    """Time one model's training step and inference on this device under the study's settings."""
    import numpy as np
    import timm  # noqa: F401 - imported here, so its seconds are not counted as the first model's set-up
    import torch

    from chexops.data.loader import BatchLoader, on_device_ahead
    from chexops.evaluate.inference import predict_probs
    from chexops.models.build import build_model
    from chexops.train import compile as step_compile
    from chexops.train.checkpoints import atomic_save
    from chexops.train.runtime import select_runtime
    from chexops.train.step import train_step

    t = config.train
    rt = select_runtime(t.device, t.precision)
    size = config.data.image_size
    rng = np.random.default_rng(0)
    n = t.batch_size * (steps + warmup)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    targets = (rng.random((n, config.model.num_classes)) < 0.3).astype(np.float32)
    mean, std = [0.5] * 3, [0.25] * 3
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    start = time.perf_counter()
    model, _ = build_model(family, "random", depth, config.model.num_classes, seed=t.seed, truncation=strategy)
    model = model.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.contiguous_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    mode = step_compile.resolve(t.compile, family, rt.device.type)
    net = step_compile.compile_model(model, mode)
    loader = BatchLoader(images, targets, np.ones_like(targets), t.batch_size, shuffle=False)
    batches = on_device_ahead(loader.batches(0), rt.device)

    def run(count: int) -> float:
        began = time.perf_counter()
        loss = torch.zeros((), device=rt.device)
        for _ in range(count):
            step_compile.step_begins(mode)
            loss += train_step(net, optimizer, rt, next(batches), mean, std)
        float(loss)  # one sync, at the end
        return time.perf_counter() - began

    run(warmup)
    steady = run(steps) / steps
    setup = (time.perf_counter() - start) - steps * steady - warmup * steady
    eval_images = images[:max(t.eval_batch_size, t.batch_size)]
    predict_probs(model, eval_images, rt.device, mean, std, t.eval_batch_size, autocast=rt.precision == "bf16",
                  channels_last=rt.channels_last)  # warm: the inference kernels are other kernels
    began = time.perf_counter()
    predict_probs(model, eval_images, rt.device, mean, std, t.eval_batch_size, autocast=rt.precision == "bf16",
                  channels_last=rt.channels_last)
    eval_s = (time.perf_counter() - began) / len(eval_images)
    peak = torch.cuda.max_memory_allocated(rt.device) / 2**20 if rt.device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="chexops-plan-") as tmp:
        began = time.perf_counter()
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp) / STATE_FILE)
        atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(tmp) / "checkpoint.pt")
        save_s = time.perf_counter() - began
        sizes = ((Path(tmp) / "checkpoint.pt").stat().st_size, (Path(tmp) / STATE_FILE).stat().st_size)
    return ModelTiming(family, depth, strategy, steady / t.batch_size, eval_s, max(setup, 0.0), save_s, peak,
                       *sizes)


def measure(config: Config, steps: int = 10, warmup: int = 3, pack: int = 1,
            progress: Any = None) -> Profile:
    """Measure every distinct model of the grid (and, with `pack` > 1, the packing gain) on this device."""
    from chexops.train import compile as step_compile
    from chexops.train.runtime import select_runtime

    t = config.train
    rt = select_runtime(t.device, t.precision)
    profile = Profile(str(rt.device), rt.precision, t.compile, config.data.image_size, t.batch_size,
                      t.eval_batch_size, pack=pack)
    for family, depth, strategy in grid_models(config):
        step_compile.resolve(t.compile, family, rt.device.type)  # a mode the device cannot run fails here, early
        timing = measure_model(config, family, depth, strategy, steps, warmup)
        profile.timings[timing.model] = timing
        if progress:
            progress(timing)
    for family, initializer in grid_pretraining(config):
        pretraining = measure_pretraining(config, family, initializer)
        profile.pretraining[f"{family}/{initializer}"] = pretraining
        if progress:
            progress(pretraining)
    if pack > 1:
        longest = max(profile.timings.values(), key=lambda m: m.train_s_per_example)
        profile.packing_gain = packing_gain(config, longest, pack, steps, warmup)
        profile.packing_model = longest.model
    return profile


def measure_pretraining(config: Config, family: str, initializer: str, batches: tuple[int, int] = (2, 6)
                        ) -> PretrainTiming:
    """Time the pretraining step of `initializer` for `family` (only ssl's MoCo v2 is built in): two short runs
    of the real pretraining on synthetic images, whose difference is the per-example cost and whose rest is
    the fixed part. Initializers from plugins pretrain their own way and are not measured here."""
    import numpy as np

    from chexops.config import with_overrides
    from chexops.data.cache import CachedSplit
    from chexops.train.pretrain import Pretrainer

    if initializer != "ssl":
        raise ConfigError(f"chexops plan cannot time the pretraining of the {initializer!r} initializer (a plugin's): "
                          "remove it from grid.initializers for the plan, or time its pretrain stage by hand.")
    p = config.pretrain
    size = config.data.image_size
    images = np.random.default_rng(0).integers(0, 256, size=(p.batch_size * max(batches), size, size), dtype=np.uint8)
    split = CachedSplit(images, None, None, {"mean": 0.5, "std": 0.25, "sha256": "plan"})  # type: ignore[arg-type]
    seconds = []
    for count in (1, *batches):  # an untimed first run takes the process's one-off costs (thread pools, kernels)
        budget = count * p.batch_size
        short = with_overrides(config, "pretrain", examples=budget, save_every=budget)
        with tempfile.TemporaryDirectory(prefix="chexops-plan-") as tmp:
            began = time.perf_counter()
            Pretrainer(short, family, Path(tmp), progress_bar=False, train=split).fit()
            seconds.append(time.perf_counter() - began)
    seconds = seconds[1:]
    per_example = (seconds[1] - seconds[0]) / ((batches[1] - batches[0]) * p.batch_size)
    if per_example <= 0:  # the longer run was not slower (a noisy machine): its whole time, an upper bound
        per_example = seconds[1] / (batches[1] * p.batch_size)
    return PretrainTiming(family, initializer, per_example, max(seconds[0] - batches[0] * p.batch_size * per_example,
                                                                0.0))


def packing_gain(config: Config, timing: ModelTiming, pack: int, steps: int, warmup: int) -> float:
    """Combined training rate of `pack` processes stepping the same model at once over one process's rate."""
    import multiprocessing as mp
    import os

    ctx = mp.get_context("spawn")  # CUDA cannot be forked; spawn also gives each copy its own interpreter
    args = (config, timing.family, timing.depth, timing.strategy, steps * 3, warmup)
    cores = os.cpu_count() or 1
    with ctx.Pool(1) as pool:
        alone = pool.apply(_rate, (*args, cores))
    with ctx.Pool(pack) as pool:  # packed processes share the CPU's cores, as packed workers would
        together = pool.starmap(_rate, [(*args, max(1, cores // pack))] * pack)
    return sum(together) / alone


def _rate(config: Config, family: str, depth: int, strategy: str, steps: int, warmup: int, threads: int) -> float:
    """Training examples per second of one model (run in a child process by packing_gain)."""
    import torch

    torch.set_num_threads(threads)
    return 1.0 / measure_model(config, family, depth, strategy, steps, warmup).train_s_per_example


def describe(result: dict[str, Any]) -> str:
    """The plan as text: a line per configuration, then the totals."""
    lines = [f"Expected time of the grid on {result['device']} ({result['precision']}, compile "
             f"{result['compile']}, {result['image_size']} px, batch {result['batch_size']}; images train "
             f"{result['images']['train']}, valid {result['images']['valid']}, test {result['images']['test']}):"]
    for r in result["configurations"]:
        lines.append(f"  {r['run']:<40} {_duration(r['total']):>10}  ({int(r['examples'])} examples, "
                     f"{int(r['validations'])} validations)")
    lines.append(f"sequential: {_duration(result['sequential_seconds'])} for {len(result['configurations'])} "
                 "configurations")
    if result["packed_seconds"] is not None:
        advice = "" if result["packing_gain"] >= MIN_GAIN else "; no gain here: run one worker per device"
        lines.append(f"packed ({result['pack']} per device, measured gain {result['packing_gain']:.2f}x on "
                     f"{result['packing_model']}): {_duration(result['packed_seconds'])}{advice}")
    else:
        lines.append("packed: not measured (measure with `chexops plan --pack K`, K processes per device)")
    d = result.get("disk")
    if d:
        unmeasured = f" (not measured: {', '.join(d['not_measured'])}: re-measure)" if d["not_measured"] else ""
        lines.append(f"disk: {_size(d['total'])} kept (image cache {_size(d['image_cache'])}, checkpoints "
                     f"{_size(d['checkpoints'])}, backbones {_size(d['backbones'])}; each stored once), "
                     f"+{_size(d['while_training'])} while training{unmeasured}")
    lines.append(f"not included: {'; '.join(result['not_included'])}")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


"""`chexops plan`: the grid's expected time on this device (or on a measured one), per configuration and in total."""

from __future__ import annotations

import json

import click

from chexops.naming import PARAMS_FILE


@click.command("plan")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, exists=True),
              help="Plan from this saved measurement (`chexops plan --save FILE` on the device it describes) "
                   "instead of measuring here.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False),
              help="Write what was measured here, for --profile on another machine or later.")
@click.option("--images", help="TRAIN,VALID,TEST image counts [default: what `dvc repro prepare` recorded].")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1),
              help="Timed training steps per model (after --warmup untimed ones).")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--pack", default=1, show_default=True, type=click.IntRange(min=1),
              help="Also measure K processes sharing the device (the packing gain for `chexops worker "
                   "--per-device K`).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON, for scripts.")
def plan_command(params_path: str, profile_path: str | None, save_path: str | None, images: str | None, steps: int,
                 warmup: int, pack: int, as_json: bool) -> None:
    """Expected time of the study's grid: each distinct model timed for a few steps on this device, scaled to
    the grid's budget; sequential, and packed several per device."""
    from chexops.config import load_config, validate
    from chexops.scaleout.plan import describe, image_counts, measure, plan
    from chexops.scaleout.profile import PretrainTiming, Profile

    config = validate(load_config(params_path))
    sizes = image_counts(config, images)
    if profile_path:
        profile = Profile.read(profile_path)
    else:
        def progress(timing) -> None:  # noqa: ANN001 - a ModelTiming or a PretrainTiming
            if as_json:
                return
            if isinstance(timing, PretrainTiming):
                click.echo(f"measured {timing.family}/{timing.initializer} pretraining: "
                           f"{1 / timing.s_per_example:.1f} img/s", err=True)
            else:
                click.echo(f"measured {timing.model}: {1 / timing.train_s_per_example:.1f} training img/s, "
                           f"{1 / timing.eval_s_per_example:.1f} inference img/s", err=True)

        profile = measure(config, steps, warmup, pack, progress)
    if save_path:
        with open(save_path, "w") as fh:
            fh.write(profile.to_json())
    result = plan(config, profile, sizes)
    click.echo(json.dumps(result, indent=2) if as_json else describe(result))

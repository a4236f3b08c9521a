"""`chexops predict`: the command; what it does is chexops.evaluate.predict_files."""

from __future__ import annotations

from pathlib import Path

import click

from chexops.naming import PARAMS_FILE


@click.command("predict")
@click.argument("model_uri")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV to write: path + 14 probabilities.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1), help="Images decoded at a time.")
@click.option("--skip-bad", is_flag=True, help="Skip (and report) files that are not readable images.")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="params.yaml whose tracking.uri resolves models:/ URIs (MLFLOW_TRACKING_URI overrides it).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict_command(model_uri: str, inputs: tuple[str, ...], out: str, batch: int, skip_bad: bool,
                    params_path: str, quiet: bool) -> None:
    """Predict the 14 observations for INPUTS (image files, folders, CheXpert CSVs) with MODEL_URI.

    MODEL_URI is any MLflow model URI of a chexops ensemble, e.g. models:/NAME@champion. When paths show
    patientN/studyN folders, a second CSV <out stem>_studies.csv holds one row per study, combined as the evaluate
    stage does (each checkpoint's maximum over the study's views, then their mean).
    """
    from chexops.errors import DataError
    from chexops.evaluate.predict_files import collect_inputs, load_model, predict_files, write_outputs
    from chexops.tracking.store import open_client, tracking_uri

    found = collect_inputs(inputs)
    if not found.paths:
        raise DataError(f"no image files (*.jpg, *.jpeg, *.png) in {', '.join(inputs)}; nothing to predict.")
    uri = tracking_uri(params_path, required=False)
    if uri is not None and model_uri.startswith(("models:/", "runs:/")):
        open_client(uri)  # a missing store is an error here, not a new empty one MLflow would create
    model = load_model(model_uri, uri)
    prediction = predict_files(model, found.paths, batch, skip_bad, progress=not quiet)
    for path, reason in prediction.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    for path, note in prediction.warnings:
        click.echo(f"warning: {path}: {note}", err=True)
    if not prediction.paths:
        raise DataError(f"none of the {len(found.paths)} files could be read as an image; nothing was written.")
    studies, n_studies = write_outputs(Path(out), prediction, model)
    note = f"; ignored {found.ignored} files without an image suffix" if found.ignored else ""
    click.echo(f"wrote {len(prediction.paths)} images to {out}"
               + (f" and {n_studies} studies to {studies}" if studies else "")
               + (f"; skipped {len(prediction.skipped)} unreadable files" if prediction.skipped else "")
               + (f"; {len(prediction.warnings)} warnings above" if prediction.warnings else "") + note)

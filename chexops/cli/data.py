"""`chexops data ...`: look at a CheXpert folder before spending hours on it.

Errors are ChexopsErrors left to propagate; the main CLI turns them into one line and exit code 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@click.group("data")
def data_group() -> None:
    """Inspect and validate CheXpert data folders."""


@data_group.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--test-labels", type=click.Path(path_type=Path), default=None,
              help="Study-level test labels CSV (default: DIRECTORY/groundtruth.csv when present).")
@click.option("--decode", is_flag=True, help="Also decode every image to find corrupt JPEGs (slow).")
@click.option("--workers", type=int, default=None, help="Processes for --decode (default: all CPUs).")
def check(directory: Path, test_labels: Path | None, decode: bool, workers: int | None) -> None:
    """Validate the CheXpert folder DIRECTORY and print counts per split and per observation."""
    from chexops.data.cache import find_bad_images, is_outside
    from chexops.data.chexpert import describe_rows, read_chexpert
    from chexops.data.synthetic import MARKER

    folder = read_chexpert(directory, test_labels)
    splits = [("train", folder.train), ("valid", folder.valid)]
    if folder.test is not None:
        splits.append(("test", folder.test))
    for name, frame in splits:
        for problem, rows in unusable_images(folder.root, frame).items():
            raise DataError(f"{len(rows)} of {len(frame)} {name} images {problem}: {describe_rows(frame, rows)}. "
                            + _REMEDY[problem])
    if decode:
        for name, frame in splits:
            bad = find_bad_images(frame, folder.root, workers=workers)
            if bad:
                shown = "; ".join(f"{b['path']} ({b['source']}): {b['reason']}" for b in bad[:5])
                raise DataError(f"{len(bad)} {name} images cannot be decoded: {shown}. Replace them"
                                + ("." if any(is_outside(b["reason"]) for b in bad) else
                                   ", or prepare with on_bad_image: skip to leave them out."))
    test_note = ("a labelled test split (test.csv + groundtruth.csv)" if folder.test is not None
                 else "no test labels (test = patient hold-out)")
    marker = folder.root.parent / MARKER
    if marker.is_file():  # made by `chexops synth`: say so, so its counts are never read as CheXpert's
        made = json.loads(marker.read_text())
        test_note += (f". These are synthetic CheXpert-format phantoms ({made.get('patients')} patients, "
                      f"{made.get('image_size')} px, seed {made.get('seed')}), not radiographs")
    click.echo(f"{folder.root}: all {sum(len(f) for _, f in splits)} images present; {test_note}.")
    if decode:
        click.echo("every image decodes.")
    click.echo("")
    click.echo(split_table(splits))
    for name, frame in splits:
        click.echo("")
        click.echo(f"{name} labels")
        click.echo(label_table(frame))


_MISSING, _EMPTY, _OUTSIDE = "are missing", "are empty (0 bytes)", "lead outside the folder (links)"
_REMEDY = {
    _MISSING: "Restore them or remove their CSV rows.",
    _EMPTY: "Restore them or remove their CSV rows; on_bad_image: skip would leave them out of training.",
    _OUTSIDE: "chexops reads nothing outside the dataset folder, even with on_bad_image: skip; replace each link "
              "with the file or remove its CSV row.",
}


def unusable_images(root: Path, index: pd.DataFrame) -> dict[str, np.ndarray]:
    """Positions of index rows whose file is missing, empty, or reached through a link out of `root`, by problem
    (only problems that occur). A stat per file and a link lookup per path component; no image is read."""
    import numpy as np

    # Paths were validated by read_chexpert (no '..', not absolute); the first component is the folder's name.
    rest = index["path"].str.split("/", n=1).str[1]
    base, real_root = str(root) + os.sep, os.path.realpath(root) + os.sep
    problems = np.zeros(len(rest), dtype=np.int8)  # 0 fine, then the position in _REMEDY
    for i, r in enumerate(rest):
        path = base + r
        try:
            size = os.stat(path).st_size
        except OSError:
            problems[i] = 1
            continue
        if not os.path.realpath(path).startswith(real_root):
            problems[i] = 3
        elif size == 0 or not os.path.isfile(path):
            problems[i] = 2 if size == 0 else 1
    return {problem: np.flatnonzero(problems == code) for code, problem in enumerate(_REMEDY, start=1)
            if (problems == code).any()}


def split_table(splits: list[tuple[str, pd.DataFrame]]) -> str:
    header = ["split", "images", "frontal", "lateral", "patients", "studies"]
    rows = [
        [name, len(f), int((f["view"] == "frontal").sum()), int((f["view"] == "lateral").sum()),
         f["patient"].nunique(), f["study"].nunique()]
        for name, f in splits
    ]
    return format_table(header, rows)


def label_table(index: pd.DataFrame) -> str:
    """Per observation: positive, negative, uncertain and blank counts."""
    import numpy as np

    rows = []
    for obs in OBSERVATIONS:
        values = index[obs].to_numpy(dtype=np.float64)
        rows.append([obs, int((values == 1).sum()), int((values == 0).sum()), int((values == -1).sum()),
                     int(np.isnan(values).sum())])
    return format_table(["observation", "positive", "negative", "uncertain", "blank"], rows)


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, numbers right-aligned."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        lines.append("  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]))
    return "\n".join(lines)


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--patients", type=int, required=True, help="Number of patients (at least 10), ~80/10/10 split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical dataset.")
@click.option("--image-size", type=int, default=320, show_default=True, help="Image height in pixels.")
@click.option("--workers", type=int, default=None, help="Worker processes [default: all CPUs].")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def synth_command(out: Path, patients: int, seed: int, image_size: int, workers: int | None,
                  progress: bool) -> None:
    """Write a synthetic CheXpert-format dataset (OUT/CheXpert-v1.0-small) of chest X-ray phantoms."""
    from chexops.data.synthetic import generate

    click.echo(generate(out, patients, seed, image_size, progress, workers).line())

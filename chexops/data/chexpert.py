"""Reading a real CheXpert folder into chexops' one index schema.

A CheXpert folder is `<parent>/CheXpert-v1.0[-small]/{train.csv,valid.csv,train/,valid/}`; the CSVs' Path
column starts with the folder's own name, so paths are relative to the folder's parent. Test labels come as a
separate study-level `groundtruth.csv` whose images are found by listing each study folder.

Everything here is vectorised pandas: train.csv has 223,414 rows and must read in seconds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexops.data.labels import CSV_HEADER, OBSERVATIONS
from chexops.errors import DataError
from chexops.naming import TEST_LABELS_FILE

# The index schema every split uses; `source` says where a row came from ("train.csv row 17") for messages.
META_COLUMNS: tuple[str, ...] = ("path", "patient", "study", "view", "ap_pa", "sex", "age")
INDEX_COLUMNS: tuple[str, ...] = (*META_COLUMNS, *OBSERVATIONS, "source")

TEST_HEADER: tuple[str, ...] = ("Study", *OBSERVATIONS)
LABEL_VALUES = (1.0, 0.0, -1.0)

# `<dataset>/<anything>/patientN/studyN/viewN_frontal.jpg`; the first component is the dataset folder's name.
_PATH_RE = (
    r"^(?P<top>[^/]+)/(?P<mid>(?:[^/]+/)*?)(?P<patient>patient\d+)/(?P<study>study\d+)/"
    r"(?P<file>view\d+_(?P<view>frontal|lateral)\.jpg)$"
)
_STUDY_RE = r"^(?P<top>[^/]+)/(?P<mid>(?:[^/]+/)*?)(?P<patient>patient\d+)/(?P<study>study\d+)/?$"
_VIEW_FILE = re.compile(r"^view\d+_(frontal|lateral)\.jpg$")
_MAX_LISTED = 5


@dataclass
class CheXpertFolder:
    """A validated CheXpert folder: one index DataFrame per split (test is None without test labels)."""

    root: Path
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame | None
    test_source: str | None  # "official" when test labels were read, else None


def read_chexpert(dataset_dir: str | os.PathLike[str], test_labels: Path | None = None) -> CheXpertFolder:
    """Read and validate `dataset_dir` (the CheXpert-v1.0[-small] folder itself).

    `test_labels` defaults to `<dataset_dir>/groundtruth.csv`; when that is absent there is no official test set.
    Raises DataError naming the file, the row (header = row 1) and the column of the first problem found.
    """
    root = Path(dataset_dir).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"CheXpert folder {dataset_dir} does not exist or is not a folder; pass the CheXpert-v1.0 or "
            "CheXpert-v1.0-small folder itself (the one holding train.csv and valid.csv)."
        )
    train = read_split_csv(root, root / "train.csv")
    valid = read_split_csv(root, root / "valid.csv")
    if test_labels is None:
        default = root / TEST_LABELS_FILE
        labels_path = default if default.is_file() else None
    else:
        labels_path = Path(test_labels).expanduser()
        if not labels_path.is_file():
            raise DataError(f"test labels file {test_labels} does not exist; check the --test-labels path.")
    test = read_test_labels(root, labels_path) if labels_path is not None else None
    return CheXpertFolder(root, train, valid, test, "official" if test is not None else None)


def resolve_image(root: Path, rel_path: str) -> Path:
    """The file a Path-column string names, inside `root`; DataError if it would escape the folder.

    `rel_path` is relative to root's parent and starts with the dataset folder's name; any first component is
    accepted and re-rooted onto `root`, so a renamed folder still works.
    """
    parts = rel_path.replace("\\", "/").split("/")
    if rel_path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel_path) or ".." in parts:
        raise DataError(f"image path {rel_path!r} escapes the dataset folder {root}; paths must stay inside it.")
    if len(parts) < 2 or not parts[-1]:
        raise DataError(f"image path {rel_path!r} should look like <dataset folder>/.../viewN_frontal.jpg.")
    candidate = root.joinpath(*parts[1:])
    real_root = root.resolve()
    if not candidate.resolve().is_relative_to(real_root):
        raise DataError(
            f"image path {rel_path!r} resolves to {candidate.resolve()}, outside the dataset folder {real_root} "
            "(a symlink?); chexops reads nothing outside the dataset folder."
        )
    return candidate


def read_split_csv(root: Path, csv_path: Path) -> pd.DataFrame:
    """Read train.csv or valid.csv into the index schema, validating every row."""
    name = csv_path.name
    raw = _read_csv_text(csv_path, CSV_HEADER)
    paths = raw["Path"].str.replace("\\", "/", regex=False)
    _check_escapes(paths, name)
    parts = _extract(paths, _PATH_RE)
    _fail_rows(parts["patient"].isna(), raw["Path"], name, "Path",
               "does not look like .../patientN/studyN/viewN_frontal.jpg (or _lateral.jpg)")
    out = pd.DataFrame(index=raw.index)
    # Re-root onto the folder's actual name so `path` is always relative to root's parent.
    out["path"] = root.name + "/" + parts["mid"] + parts["patient"] + "/" + parts["study"] + "/" + parts["file"]
    # after re-rooting: rows naming one file under two different first folders are the same image twice
    _fail_rows(out["path"].duplicated(), raw["Path"], name, "Path",
               f"is listed twice (an earlier row names the same file once the first folder is read as {root.name}); "
               "remove one of the rows")
    out["patient"] = parts["patient"]
    out["study"] = parts["patient"] + "/" + parts["study"]
    out["view"] = _views(raw["Frontal/Lateral"], parts["view"], name)
    out["ap_pa"] = raw["AP/PA"].str.strip()
    out["sex"] = raw["Sex"].str.strip()
    out["age"] = _numbers(raw["Age"], name, "Age")
    for obs in OBSERVATIONS:
        out[obs] = _labels(raw[obs], name, obs, allow_uncertain=True, allow_blank=True)
    out["source"] = _sources(name, len(raw))
    return out.reset_index(drop=True)


def read_test_labels(root: Path, labels_path: Path) -> pd.DataFrame:
    """Read the study-level test labels and expand them to one index row per image in each study folder."""
    name = labels_path.name
    raw = _read_csv_text(labels_path, TEST_HEADER)
    studies = raw["Study"].str.replace("\\", "/", regex=False).str.rstrip("/")
    _check_escapes(studies, name, column="Study")
    parts = _extract(studies, _STUDY_RE)
    _fail_rows(parts["patient"].isna(), raw["Study"], name, "Study", "does not look like .../patientN/studyN")
    exam_ids = parts["patient"] + "/" + parts["study"]
    _fail_rows(exam_ids.duplicated(), raw["Study"], name, "Study", "is listed twice")
    labels = {obs: _labels(raw[obs], name, obs, allow_uncertain=False, allow_blank=False) for obs in OBSERVATIONS}
    rows: list[dict[str, object]] = []
    for i in range(len(raw)):
        rel_study = parts.at[i, "mid"] + parts.at[i, "patient"] + "/" + parts.at[i, "study"]
        for file_name, view in _list_study(root, rel_study, name, i):
            row: dict[str, object] = {
                "path": f"{root.name}/{rel_study}/{file_name}", "patient": parts.at[i, "patient"],
                "study": exam_ids.iat[i], "view": view, "ap_pa": "", "sex": "", "age": np.nan,
            }
            row.update({obs: labels[obs].iat[i] for obs in OBSERVATIONS})
            row["source"] = f"{name} row {i + 2}"
            rows.append(row)
    return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))


def write_index(index: pd.DataFrame, path: Path) -> None:
    """Write an index DataFrame as CSV (the format read_index reads back, byte-stable across runs)."""
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"index to write to {path} lacks columns {missing}; build it with read_chexpert.")
    index.loc[:, list(INDEX_COLUMNS)].to_csv(path, index=False, float_format="%g", lineterminator="\n")


def read_index(path: Path) -> pd.DataFrame:
    """Read an index CSV written by write_index."""
    if not Path(path).is_file():
        raise DataError(f"index file {path} does not exist; run the ingest stage first.")
    raw = _read_csv_text(Path(path), INDEX_COLUMNS)
    out = raw.loc[:, list(INDEX_COLUMNS)].copy()
    out["age"] = _numbers(raw["age"], Path(path).name, "age")
    for obs in OBSERVATIONS:
        out[obs] = _labels(raw[obs], Path(path).name, obs, allow_uncertain=True, allow_blank=True)
    return out


def _read_csv_text(csv_path: Path, header: tuple[str, ...]) -> pd.DataFrame:
    """All cells as text ('' for blank); DataError for a missing, empty or column-less file."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path} does not exist; is this a CheXpert folder (train.csv, valid.csv, train/)?")
    try:
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path} is empty; it needs the header row and one row per image.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path} is not a readable CSV: {exc}") from None
    missing = [c for c in header if c not in raw.columns]
    if missing:
        raise DataError(
            f"{csv_path} lacks column(s) {', '.join(missing)}; the header must hold: {','.join(header)}."
        )
    if raw.empty:
        raise DataError(f"{csv_path} has a header but no rows; it needs one row per image.")
    return raw


def _extract(text: pd.Series, pattern: str) -> pd.DataFrame:
    """Named regex groups as text columns (NaN where no match); pyarrow's RE2 does it in C, 5x pandas' speed."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return text.str.extract(pattern)
    found = pc.extract_regex(pa.array(text.to_numpy(dtype=object), type=pa.string()), pattern)
    names = re.compile(pattern).groupindex
    return pd.DataFrame(
        {n: pd.Series(pc.struct_field(found, n).to_pandas(), index=text.index, dtype="str") for n in names}
    )


def _check_escapes(paths: pd.Series, name: str, column: str = "Path") -> None:
    escapes = (
        paths.str.startswith("/") | paths.str.match(r"^[A-Za-z]:") | paths.str.contains(r"(?:^|/)\.\.(?:/|$)")
    )
    _fail_rows(escapes, paths, name, column, "escapes the dataset folder (absolute or '..'); paths must stay inside")


def _fail_rows(bad: pd.Series, values: pd.Series, name: str, column: str, problem: str) -> None:
    """Raise DataError for the first rows where `bad` holds; rows counted like a spreadsheet (header = 1)."""
    bad = bad.fillna(False).to_numpy(dtype=bool)
    if not bad.any():
        return
    positions = np.flatnonzero(bad)
    first = int(positions[0])
    more = f" ({len(positions) - 1} more rows like it)" if len(positions) > 1 else ""
    raise DataError(f"{name} row {first + 2}, column {column!r}: {values.iat[first]!r} {problem}{more}.")


def _labels(col: pd.Series, name: str, column: str, allow_uncertain: bool, allow_blank: bool) -> pd.Series:
    """Text cells -> float 1/0/-1, NaN for blank; anything else is a DataError with file, row and column."""
    allowed = (1.0, 0.0, -1.0) if allow_uncertain else (1.0, 0.0)
    values, known = _parse_floats(col)
    ok = known & (np.isin(values, allowed) | (allow_blank & np.isnan(values)))
    expected = "1.0, 0.0, -1.0 or blank" if allow_uncertain else "0 or 1"
    _fail_rows(pd.Series(~ok), col, name, column, f"is not a label; expected {expected}")
    return pd.Series(values, index=col.index, dtype="float64")


def _numbers(col: pd.Series, name: str, column: str) -> pd.Series:
    values, known = _parse_floats(col)
    _fail_rows(pd.Series(~known), col, name, column, "is not a number")
    return pd.Series(values, index=col.index, dtype="float64")


def _parse_floats(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, parsed): floats with NaN for blank cells, and False where a non-blank cell is not a number.

    A label column holds a handful of distinct strings, so each distinct one is parsed once.
    """
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    parsed = np.empty(len(uniques), dtype=np.float64)
    known = np.ones(len(uniques), dtype=bool)
    for i, text in enumerate(uniques):
        text = str(text).strip()
        try:
            parsed[i] = float(text) if text else np.nan
            known[i] = text.lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")
        except ValueError:
            parsed[i], known[i] = np.nan, False
    return parsed[codes], known[codes]


def _views(column: pd.Series, from_file: pd.Series, name: str) -> pd.Series:
    """The Frontal/Lateral column, lower-cased; the file name decides where the column is blank."""
    view = column.str.strip().str.lower()
    view = view.where(view != "", from_file)
    _fail_rows(~view.isin(["frontal", "lateral"]), column, name, "Frontal/Lateral", "is not Frontal or Lateral")
    return view


def _sources(name: str, n: int) -> pd.Series:
    return f"{name} row " + pd.Series(np.arange(2, n + 2)).astype(str)


def _list_study(root: Path, rel_study: str, name: str, i: int) -> list[tuple[str, str]]:
    """(file name, view) of every viewN_*.jpg in one test study folder, in name order."""
    folder = root / rel_study
    where = f"{name} row {i + 2}, column 'Study'"
    if not folder.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{where}: study folder {folder} resolves outside the dataset folder {root}.")
    if not folder.is_dir():
        raise DataError(
            f"{where}: study folder {folder} does not exist; put the test images under {root / 'test'} "
            "or pass the test-labels file that belongs to this folder."
        )
    found = []
    for entry in sorted(os.listdir(folder)):
        match = _VIEW_FILE.match(entry)
        if match:
            found.append((entry, match.group(1)))
    if not found:
        raise DataError(f"{where}: study folder {folder} holds no viewN_frontal.jpg / viewN_lateral.jpg images.")
    return found


def describe_rows(index: pd.DataFrame, rows: np.ndarray | list[int]) -> str:
    """'path (train.csv row 17), ...' for the first few `rows` of an index, for error messages."""
    shown = []
    for r in list(rows)[:_MAX_LISTED]:
        where = index["source"].iat[r] if "source" in index.columns else f"index row {r}"
        shown.append(f"{index['path'].iat[r]} ({where})")
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return ", ".join(shown) + more

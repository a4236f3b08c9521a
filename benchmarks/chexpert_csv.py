"""Reading a full-size CheXpert train.csv (223,414 rows): chexops' reader against pandas' plain read_csv of the
same file, as a ratio (the reader also parses paths into patient / exam / view and checks every field).

    python benchmarks/chexpert_csv.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from chexops.data.chexpert import read_split_csv
from chexops.data.labels import CSV_HEADER, OBSERVATIONS

ROWS = 223_414


def write_csv(path: Path, rows: int) -> None:
    labels = np.random.default_rng(0).choice(["1.0", "0.0", "-1.0", ""], size=(rows, len(OBSERVATIONS)))
    lines = [",".join(CSV_HEADER)]
    for i in range(rows):
        patient, exam = i // 3 + 1, i % 3 + 1
        view = "lateral" if exam == 2 else "frontal"
        lines.append(f"CheXpert-v1.0-small/train/patient{patient:05d}/study{exam}/view1_{view}.jpg,Male,{40 + i % 50},"
                     f"{view.title()},{'AP' if view == 'frontal' else ''}," + ",".join(labels[i]))
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "CheXpert-v1.0-small"
        root.mkdir()
        write_csv(root / "train.csv", ROWS)
        start = time.perf_counter()
        pd.read_csv(root / "train.csv")
        plain = time.perf_counter() - start
        start = time.perf_counter()
        read_split_csv(root, root / "train.csv")
        chexops_s = time.perf_counter() - start
    print(f"{ROWS:,} rows: pandas.read_csv {plain:.2f} s, chexops read_split_csv {chexops_s:.2f} s "
          f"({chexops_s / plain:.1f}x the plain read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

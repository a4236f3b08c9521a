"""Round-3 fault audit, #10 (disk full): `chexops predict --out` and any command that meets a full disk (synth,
train) end in one line and exit 2, and predict leaves no 0-byte CSV."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest

from chexops import cli as cli_module
from chexops.data.labels import OBSERVATIONS
from chexops.errors import DataError
from chexops.evaluate.predict_files import Prediction, write_outputs


def _full_disk_to_csv(self, path, *args, **kwargs):
    with open(path, "w") as fh:  # what a full disk does: the file is created, then the write fails
        fh.write("")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_predict_on_a_full_disk_is_one_error_and_leaves_no_empty_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _full_disk_to_csv)
    prediction = Prediction([Path("a.png")], np.full((1, len(OBSERVATIONS)), 0.5, dtype=np.float32), [])
    out = tmp_path / "out.csv"
    with pytest.raises(DataError) as info:
        write_outputs(out, prediction, model=None)
    assert "\n" not in str(info.value) and "No space left" in str(info.value) and str(out) in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _run_cli(monkeypatch, capsys, exc: BaseException) -> tuple[int, str]:
    @click.command("r3-fails")
    def fails() -> None:
        raise exc

    monkeypatch.setattr(cli_module, "_load_commands", lambda: cli_module.cli.add_command(fails))
    try:
        with pytest.raises(SystemExit) as info:
            cli_module.main(["r3-fails"])
    finally:
        cli_module.cli.commands.pop("r3-fails", None)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_command_meeting_a_full_or_read_only_disk_ends_in_one_line(monkeypatch, capsys, code):
    """What `chexops synth` (writing thousands of images) or `chexops train` (a checkpoint) raise there."""
    rc, err = _run_cli(monkeypatch, capsys, OSError(code, os.strerror(code), "data/synthetic/x.png"))
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("Error: ") and "data/synthetic/x.png" in err, err
    assert "Traceback" not in err


def test_other_os_errors_still_show_their_traceback(monkeypatch, capsys):
    with pytest.raises(OSError):
        _run_cli(monkeypatch, capsys, OSError(errno.EBADF, "bad file descriptor"))

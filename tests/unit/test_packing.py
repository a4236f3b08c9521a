"""Several workers per device: the number chosen from a plan profile, and the processes started."""

from __future__ import annotations

import subprocess

import pytest

from chexops.errors import ConfigError
from chexops.scaleout import packing
from chexops.scaleout.profile import ModelTiming, Profile


def test_per_device_packs_only_a_measured_gain_that_fits_in_memory():
    assert packing.per_device_from_profile(4, 2.5, 10_000, 140_000) == 4
    assert packing.per_device_from_profile(4, 2.5, 50_000, 140_000) == 2  # 2 x 50 GB fit in 90% of 140 GB
    assert packing.per_device_from_profile(4, 2.5, 200_000, 140_000) == 1
    assert packing.per_device_from_profile(4, 1.05, 10_000, 140_000) == 1  # within noise: not worth it
    assert packing.per_device_from_profile(4, None, 10_000, 140_000) == 1  # not measured
    assert packing.per_device_from_profile(1, 3.0, 10_000, 140_000) == 1


def test_per_device_option_values(tmp_path):
    assert packing.resolve_per_device("3", None, "cpu") == 3
    assert packing.resolve_per_device("auto", None, "cpu") == 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="positive number or auto"):
            packing.resolve_per_device(bad, None, "cpu")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU path")
def test_auto_on_a_gpu_without_a_profile_says_how_to_measure(tmp_path):
    with pytest.raises(ConfigError, match="chexops plan --pack 3"):
        packing.resolve_per_device("auto", None, "cuda")


def test_start_workers_runs_each_with_its_own_log(tmp_path, monkeypatch):
    started = []

    class FakeProcess:
        def __init__(self, cmd, env, stdout, stderr):
            started.append((cmd, env.get("CUDA_VISIBLE_DEVICES"), stdout.name))
            self.code = len(started) - 1  # the second worker fails

        def wait(self):
            return self.code

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(packing, "visible_devices", lambda: ["2", "5"])
    code = packing.start_workers(["--study", "s", "--quiet"], 2, tmp_path)
    assert code == 3  # the worst exit code
    assert [s[1] for s in started] == ["2", "2", "5", "5"]
    assert all(cmd[-5:] == ["chexops", "worker", "--study", "s", "--quiet"] for cmd, _, _ in started)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"worker-{d}-{k}.log" for d in (2, 5) for k in (0, 1)]


def test_profile_peak_memory_drives_auto(tmp_path, monkeypatch):
    import torch

    timing = ModelTiming("resnet18", 0, "drop-last-k", 1e-3, 1e-4, 0.5, 0.1, 60_000.0)
    path = tmp_path / "plan.json"
    path.write_text(Profile("cuda:0", "bf16", "off", 320, 16, 256, {timing.model: timing}, pack=3,
                            packing_gain=2.0, packing_model=timing.model).to_json())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: type("Props", (), {"total_memory": 140_000 * 2**20})())
    assert packing.resolve_per_device("auto", str(path), "auto") == 2  # 3 measured, 2 fit


def test_worker_command_refuses_a_bad_per_device(tmp_path, capsys):
    from chexops.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("study: {name: s}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--study", "s", "--params", str(params),
              "--per-device", "none"])
    assert exit_info.value.code == 2
    assert "--per-device must be a positive number or auto, got 'none'" in capsys.readouterr().err

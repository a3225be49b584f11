"""ptycho-train's checkpoints through the real command: --resume continues a run in its own
directory, a resumed run refuses changed settings, SIGINT stops after the current step with the
bundle of the last completed epoch (exit 130).

Run once (marked crossbackend), under torch: what these test is the command's own code (resume
settings, signal handling, exit codes), the same on every backend, and each costs real training
subprocesses (~60-90 s a backend). The checkpoint/resume semantics themselves (bit-exact resumed
training, NaN handling, a signal between steps, foreign checkpoints) are tested per backend
in-process by tests/model/test_checkpoint.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import command, error_lines, run_cli

ARGS = ("--N", "64", "--n_filters_scale", "1", "--n_groups", "32", "--batch_size", "8",
        "--early_stopping_patience", "9", "--seed", "3")


pytestmark = pytest.mark.crossbackend


def _backend() -> str:
    return "torch"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    from ptycho_k3.data import save_npz
    from ptycho_k3.data.simulate import simulate_scan

    path = tmp_path_factory.mktemp("resume") / "train.npz"
    save_npz(path, simulate_scan("lines", 64, 40, 1e6, seed=2, n_test_images=1))
    return path


def _params(run_dir: Path) -> dict:
    with zipfile.ZipFile(run_dir / "wts.h5.zip") as zf:
        return json.loads(zf.read("params.json"))


def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())["history"]


def test_resume_continues_the_run_in_its_directory(tmp_path, train_file):
    run = tmp_path / "run"
    first = run_cli("ptycho-train", "--train_data_file", str(train_file), *ARGS, "--nepochs",
                    "1", "--output_dir", str(run), "--quiet", keras_backend=_backend())
    assert first.returncode == 0, first.stderr
    assert (run / "checkpoint.zip").is_file() and len(_history(run)["loss"]) == 1
    resumed = run_cli("ptycho-train", "--resume", str(run), "--nepochs", "2", "--quiet",
                      keras_backend=_backend())
    assert resumed.returncode == 0, resumed.stderr
    assert _params(run)["epochs_run"] == 2
    history = _history(run)
    assert len(history["loss"]) == 2 and len(history["learning_rate"]) == 2
    assert "resuming from" in (run / "train.log").read_text()
    assert "nepochs: 2" in (run / "config.yaml").read_text()

    changed = run_cli("ptycho-train", "--resume", str(run), "--batch_size", "16",
                      keras_backend=_backend())
    assert changed.returncode == 2
    assert error_lines(changed.stderr) == [
        f"ptycho-train: error: --resume {run} continues with the settings of "
        f"{run / 'config.yaml'}; --batch_size cannot change them (only --nepochs can)"]
    missing = run_cli("ptycho-train", "--resume", str(tmp_path / "nowhere"),
                      keras_backend=_backend())
    assert missing.returncode == 2 and "no config.yaml there" in missing.stderr


def test_sigint_writes_the_last_completed_epoch_and_exits_130(tmp_path, train_file):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(KERAS_BACKEND=_backend(), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [*command("ptycho-train"), "--train_data_file", str(train_file), *ARGS, "--nepochs",
         "500", "--output_dir", str(run), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoint.zip").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("ptycho-train: failed: stopped by SIGINT "
                                                   "during epoch "), err
    assert f"continue with: ptycho-train --resume {run}" in lines[0]
    epochs = _params(run)["epochs_run"]
    assert epochs >= 1 and f"wrote the bundle of epoch {epochs} " in lines[0]
    from ptycho_k3.checkpoint import read_checkpoint

    ckpt = read_checkpoint(run / "checkpoint.zip")
    assert ckpt.epoch == epochs and np.all(np.isfinite(ckpt.weights[0]))
    assert len(_history(run)["loss"]) == epochs

"""Fixtures of the command-line tests (helpers live in ``cli_helpers``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_cli


@pytest.fixture(scope="session")
def tiny_scans(tmp_path_factory) -> tuple[Path, Path]:
    """Simulated ``train.npz`` / ``test.npz``: N 64, 64 positions on a 128-px lines object.

    Made with ``ptycho-simulate`` in a subprocess, so this fixture imports no Keras here.
    """
    out = tmp_path_factory.mktemp("tiny_scans")
    proc = run_cli("ptycho-simulate", "--N", "64", "--n_images", "64", "--object_size", "128",
                   "--seed", "1", "--output_dir", str(out), "--no-progress",
                   keras_backend=os.environ.get("KERAS_BACKEND"))
    assert proc.returncode == 0, proc.stderr
    return out / "train.npz", out / "test.npz"

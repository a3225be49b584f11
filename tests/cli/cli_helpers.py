"""Helpers for the command-line tests: tiny scan files and running the real entry points.

Subprocess runs use the installed console scripts (``ptycho-train`` ...) next to the test
interpreter, exactly as users type them; without an installed script they fall back to
``python -m ptycho_k3.cli.<module>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

_MODULES = {
    "ptycho-train": "train",
    "ptycho_train": "train",
    "ptycho-infer": "infer",
    "ptycho_inference": "infer",
    "ptycho-evaluate": "evaluate",
    "ptycho-simulate": "simulate",
    "ptycho-reconstruct": "reconstruct",
}


def command(name: str) -> list[str]:
    """argv prefix of a console script (or its ``python -m`` fallback)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", f"ptycho_k3.cli.{_MODULES[name]}"]


def run_cli(name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            keras_backend: str | None = None, timeout: float = 600) \
        -> subprocess.CompletedProcess:
    """Run a console script; ``keras_backend`` sets KERAS_BACKEND (None: unset it)."""
    full = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    full.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if keras_backend is not None:
        full["KERAS_BACKEND"] = keras_backend
    full.update(env or {})
    return subprocess.run([*command(name), *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=timeout, check=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def write_scan(path: Path, m: int = 8, n: int = 64, **overrides) -> Path:
    """A minimal valid scan NPZ written with NumPy only (no simulation, no Keras).

    ``overrides`` replace or (value None) drop keys.
    """
    rng = np.random.default_rng(0)
    arrays = {
        "xcoords": rng.uniform(40, 60, m),
        "ycoords": rng.uniform(40, 60, m),
        "diff3d": rng.uniform(0, 1, (m, n, n)).astype(np.float32),
        "probeGuess": np.ones((n, n), np.complex64),
    }
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    np.savez(path, **arrays)
    return path


def fake_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path

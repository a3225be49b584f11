"""CLI cold start: a fresh ``ptycho-infer`` process to its first output.

Two timings, each a new process, median of repeats: ``ptycho-infer --help`` (argument parsing,
no framework import; one untimed run first) and a real inference of a 64-pattern scan with a
saved (untrained) bundle, timed to the first line on stdout (the ``wrote ...`` report, printed
once every output is on disk): framework import, bundle load, model build, predict, stitch,
PNG/NPZ writing. The full mode runs one untimed inference first to warm the disk cache; the
quick mode relies on the earlier workers for that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import Record, median
from benchmarks.plan import Settings
from benchmarks.workload import simulated_scan, untrained_models


def _command() -> list[str]:
    script = Path(sys.executable).with_name("ptycho-infer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ptycho_k3.cli.infer"]


def time_to_first_line(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """``(seconds to the first stdout line, seconds to exit)`` of ``cmd``; raises on failure."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    first = proc.stdout.readline()
    t_first = time.perf_counter() - t0
    rest, err = proc.communicate()
    t_exit = time.perf_counter() - t0
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {err[-2000:]}")
    return t_first, t_exit


def run(settings: Settings, backend: str) -> list[Record]:
    """Cold-start records for ``--help`` and a tiny real inference."""
    from ptycho_k3 import physics
    from ptycho_k3.bundle import save_bundle
    from ptycho_k3.data import save_npz

    env = {**os.environ, "KERAS_BACKEND": backend}
    reps = settings.cli_repeats
    cmd = _command()
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-cli-") as tmp:
        tmp_path = Path(tmp)
        scan = simulated_scan(64, 64)
        scan = replace(scan, object=None, patches=None)
        npz = save_npz(tmp_path / "scan.npz", scan)
        models = untrained_models(64, 1, probe=scan.probe)
        bundle = save_bundle(tmp_path / "model", models,
                             {"input_scale": physics.intensity_scale(1e9, 64)})
        warm = 0 if settings.quick else 1  # quick: earlier workers already warmed the disk cache
        help_times = [time_to_first_line(cmd + ["--help"], env) for _ in range(reps + 1)][1:]
        infer_cmd = cmd + ["--model_path", str(bundle), "--test_data", str(npz), "--backend",
                           backend, "--output_dir", str(tmp_path / "out")]
        infer_times = [time_to_first_line(infer_cmd, env) for _ in range(reps + warm)][warm:]
    cfg = {"command": Path(cmd[0]).name if len(cmd) == 1 else "python -m ptycho_k3.cli.infer",
           "repeats": reps, "warmup_runs": {"help": 1, "infer": warm}}
    return [
        Record(backend, "CLI --help cold start", median([t for t, _ in help_times]), "s", cfg),
        Record(backend, "CLI cold start to first output (64-pattern inference)",
               median([t for t, _ in infer_times]), "s",
               {**cfg, "patterns": 64, "what": "process start to the first 'wrote ...' line"}),
    ]

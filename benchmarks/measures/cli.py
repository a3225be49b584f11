"""CLI cold start and end to end: fresh ``ptycho-infer`` processes, as a user runs them.

Timings, each a new process in the commands' own environment (the worker's, with only
``KERAS_BACKEND`` set), median of repeats:

- ``ptycho-infer --help`` (argument parsing, no framework import; one untimed run first);
- a real inference of a 64-pattern scan with a saved (untrained) bundle, timed to the first line
  on stdout (the ``wrote ...`` report, printed once every output is on disk);
- the same on scans of ``cli_patterns`` patterns (543, the size of the original's measured
  scan, and 1,000), timed from process start to exit (the last file written), with its
  breakdown: framework import (a separate ``import keras`` process with the same start-up),
  bundle load and model build and the predict seconds (both from the command's own log lines),
  and the rest (reading and grouping the scan, stitching, NPZ/PNG writing).

The full mode runs one untimed inference first to warm the disk cache; the quick mode relies on
the earlier workers for that.
"""

from __future__ import annotations

import os
import re
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


_LOADED = re.compile(r"loaded .* in ([0-9.]+) s;")
_RECON = re.compile(r"reconstructed \d+ groups in ([0-9.]+) s "
                    r"\(predict ([0-9.]+) s, stitch ([0-9.]+) s\)")


def import_seconds(backend: str, env: dict[str, str]) -> float:
    """Seconds for a fresh process to start like a command and import Keras on ``backend``."""
    code = ("from ptycho_k3.backend import activate, skip_unused_frameworks\n"
            f"skip_unused_frameworks(activate({backend!r}))\n"
            "import keras, ptycho_k3.infer, ptycho_k3.bundle\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def end_to_end(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds of ``cmd`` (start to exit) and the load/predict/stitch seconds it logs."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    loaded, recon = _LOADED.search(proc.stderr), _RECON.search(proc.stderr)
    if loaded is None or recon is None:
        raise RuntimeError(f"{' '.join(cmd)}: no timing lines in its log: {proc.stderr[-2000:]}")
    return {"wall": wall, "load": float(loaded.group(1)), "reconstruct": float(recon.group(1)),
            "predict": float(recon.group(2)), "stitch": float(recon.group(3))}


def run(settings: Settings, backend: str) -> list[Record]:
    """Cold-start records for ``--help``, a tiny real inference and the ``cli_patterns`` ones."""
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

        e2e = {}
        for n_big in settings.cli_patterns:
            big = replace(simulated_scan(64, n_big, test=True), object=None, patches=None)
            big_npz = save_npz(tmp_path / f"big{n_big}.npz", big)
            big_cmd = cmd + ["--model_path", str(bundle), "--test_data", str(big_npz),
                             "--backend", backend, "--output_dir", str(tmp_path / f"out{n_big}")]
            e2e[n_big] = [end_to_end(big_cmd, env) for _ in range(reps)]
        imports = [import_seconds(backend, env) for _ in range(reps)]
    cfg = {"command": Path(cmd[0]).name if len(cmd) == 1 else "python -m ptycho_k3.cli.infer",
           "repeats": reps, "warmup_runs": {"help": 1, "infer": warm}}
    out = [
        Record(backend, "CLI --help cold start", median([t for t, _ in help_times]), "s", cfg),
        Record(backend, "CLI cold start to first output (64-pattern inference)",
               median([t for t, _ in infer_times]), "s",
               {**cfg, "patterns": 64, "what": "process start to the first 'wrote ...' line"}),
    ]
    for n_big, runs in e2e.items():
        parts = {k: median([r[k] for r in runs]) for k in runs[0]}
        parts["import"] = median(imports)
        parts["other"] = max(0.0, parts["wall"] - parts["import"] - parts["load"]
                             - parts["predict"])
        e2e_cfg = {**cfg, "patterns": n_big, "gridsize": 1, "bundle": "untrained N64",
                   "what": "process start to exit (last file written)",
                   "breakdown_s": {k: round(v, 2) for k, v in parts.items()},
                   "samples_s": [round(r["wall"], 2) for r in runs]}
        out.append(Record(backend, f"CLI ptycho-infer end to end ({n_big} patterns)",
                          parts["wall"], "s", e2e_cfg))
        for key, label in (("import", "framework import"), ("load", "bundle load + build"),
                           ("predict", "predict"), ("other", "read, group, stitch, write")):
            out.append(Record(backend, f"CLI ptycho-infer ({n_big}) {label}", parts[key], "s",
                              e2e_cfg))
    return out

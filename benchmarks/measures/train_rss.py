"""Training memory against scan size: peak RSS and working memory of a fixed training budget.

Issue "Scale": training must not hold every pattern of a beamline scan (10^4 - 10^6). Each case
(scan size n, gridsize) runs in a **fresh subprocess** (``python -m
benchmarks.measures.train_rss --file F --gridsize G --steps S --out J``) so that no case
inherits another's heap: it reads
the scan with :func:`ptycho_k3.data.load_scan` (an uncompressed NPZ: frames memory-mapped,
checked in chunks) and runs :func:`ptycho_k3.train.train` for a fixed number of steps whatever
n is: ``steps / 2`` steps of batch 16 for 2 epochs, i.e. ``n_groups`` chosen so that the
training part of the seeded 5 % validation split is ``8 * steps`` groups, drawn from the whole
scan (seeds anywhere in it). The work is the same at every n; only the scan grows.

Scans: synthesised with NumPy, not simulated (64k simulated patterns take too long on 2 cores):
``n`` random float32 amplitude frames of 64 x 64 (uniform in [0, 1), written chunk by chunk
straight into an uncompressed NPZ member, 16 KiB a pattern: 1 GiB at 64k), positions on a
raster of 4 px steps with +-1 px jitter (neighbours close enough to group at gridsize 2), the
default probe and ``nphotons`` 1e9. The same file serves both gridsizes.

Memory, per case:

- **peak RSS**: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end (the kernel's
  high-water mark of the resident set: anonymous + file-backed + shared pages).
- **working memory**: the peak of ``RssAnon + RssShmem`` = ``VmRSS - RssFile`` (Linux
  ``/proc/self/status``): resident memory that is not a page of a mapped file. File-backed pages
  (the memory-mapped scan, but also the framework's shared libraries) are clean copies of a file
  the kernel can drop at any time and shares with the page cache; what the process itself
  allocated is the rest. It cannot be read "at the peak" after the fact, so a sampler thread
  reads ``/proc/self/status`` every :data:`SAMPLE_S` seconds during loading and training and
  keeps the largest value (a spike shorter than the interval can be missed; ``peak RSS`` has no
  such gap and bounds it from above). ``file-backed at peak`` is ``RssFile`` at the sample where
  ``VmRSS`` was largest.

Targets (issue "Scale"): working memory within +10 % from the smallest to the largest scan, and
peak RSS below 1.5 GiB at 64k patterns, on every backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Record
from benchmarks.plan import Settings

ROOT = Path(__file__).resolve().parents[2]
N = 64
BATCH = 16
EPOCHS = 2
GRIDSIZES = (1, 2)
#: Seconds between two reads of ``/proc/self/status`` by the sampler thread.
SAMPLE_S = 0.005
#: Targets of the issue.
WORKING_GROWTH_MAX = 1.10
PEAK_RSS_MAX_MIB = 1.5 * 1024


# --------------------------------------------------------------------------------------------
# the scan file


def n_groups_for(train_groups: int, validation_fraction: float = 0.05) -> int:
    """The smallest ``n_groups`` whose seeded split (``ptycho_k3.train.split_groups``) leaves
    exactly ``train_groups`` for training."""
    n = train_groups + 1
    while n - min(max(1, round(n * validation_fraction)), n - 1) != train_groups:
        n += 1
    return n


def write_scan(path: Path, n_patterns: int, seed: int = 0, chunk: int = 4096) -> Path:
    """An uncompressed project NPZ of ``n_patterns`` random 64 x 64 amplitude frames (module
    docstring), written member by member; the frames chunk by chunk (never all in memory)."""
    from ptycho_k3 import physics

    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(n_patterns))
    i = np.arange(n_patterns)
    x = 40.0 + 4.0 * (i % side) + rng.uniform(-1, 1, n_patterns)
    y = 40.0 + 4.0 * (i // side) + rng.uniform(-1, 1, n_patterns)
    small = {
        "xcoords": x, "ycoords": y,
        "probeGuess": np.asarray(physics.default_probe(N), np.complex64),
        "_metadata": np.array(json.dumps({"nphotons": 1e9, "synthetic": "random amplitudes"})),
    }
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (n_patterns, N, N)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in small.items():
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)
        with zf.open("diff3d.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for lo in range(0, n_patterns, chunk):
                k = min(chunk, n_patterns - lo)
                fh.write(rng.random((k, N, N), dtype=np.float32).tobytes())
    return path


# --------------------------------------------------------------------------------------------
# one case (the child process)


def _status_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0])
    return out


class Sampler:
    """Reads ``/proc/self/status`` every ``interval`` s in a thread; keeps the largest working
    memory (``RssAnon + RssShmem``) and the sample with the largest ``VmRSS``."""

    def __init__(self, interval: float = SAMPLE_S):
        self.interval = interval
        self.max_working_kib = 0
        self.max_rss: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        s = _status_kib()
        working = s.get("RssAnon", 0) + s.get("RssShmem", 0)
        self.max_working_kib = max(self.max_working_kib, working)
        if s.get("VmRSS", 0) >= self.max_rss.get("VmRSS", -1):
            self.max_rss = s
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def run_case(path: Path, gridsize: int, steps: int) -> dict[str, Any]:
    """Load ``path`` and train ``steps`` steps at ``gridsize``; memory and times (module
    docstring). Runs in the calling process: call it in a fresh one."""
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.data import load_scan
    from ptycho_k3.data.lazy import is_lazy
    from ptycho_k3.train import train

    per_epoch = steps // EPOCHS
    n_groups = n_groups_for(per_epoch * BATCH)
    config = TrainingConfig(model=ModelConfig(N=N, gridsize=gridsize), nepochs=EPOCHS,
                            n_groups=n_groups, batch_size=BATCH, seed=0, nphotons=1e9)
    base = _status_kib()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        scan = load_scan(path)
        t1 = time.perf_counter()
        after_load = _status_kib()
        result = train(config, scan, verbose=0)
        t2 = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "patterns": scan.n_positions, "gridsize": gridsize, "steps": steps,
        "epochs_run": result.epochs_run, "n_groups": n_groups,
        "train_groups": int(len(result.train_indices)), "batch_size": BATCH,
        "frames_lazy": is_lazy(scan.diffraction),
        "frames_read": scan.reading.get("frames_read", "in memory"),
        "file_mib": path.stat().st_size / 2**20,
        "peak_rss_mib": peak_kib / 1024,
        "working_mib": sampler.max_working_kib / 1024,
        "file_backed_at_peak_mib": sampler.max_rss.get("RssFile", 0) / 1024,
        "rss_at_peak_sample_mib": sampler.max_rss.get("VmRSS", 0) / 1024,
        "rss_before_load_mib": base["VmRSS"] / 1024,
        "working_before_load_mib": (base.get("RssAnon", 0) + base.get("RssShmem", 0)) / 1024,
        "working_after_load_mib": (after_load.get("RssAnon", 0)
                                   + after_load.get("RssShmem", 0)) / 1024,
        "samples": sampler.samples,
        "seconds_load": t1 - t0, "seconds_train": t2 - t1,
    }


def _child(path: Path, gridsize: int, steps: int, timeout: float) -> dict[str, Any]:
    """:func:`run_case` in a fresh Python process under the same backend."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="ptycho-rss-") as tmp:
        out = Path(tmp) / "case.json"
        cmd = [sys.executable, "-m", "benchmarks.measures.train_rss", "--file", str(path),
               "--gridsize", str(gridsize), "--steps", str(steps), "--out", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"train_rss case n-file {path.name} gs{gridsize} exited "
                               f"{proc.returncode}:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------
# the measure (the worker process)


def run(settings: Settings, backend: str, *, sizes: tuple[int, ...] | None = None,
        gridsizes: tuple[int, ...] = GRIDSIZES, timeout: float = 3600.0) -> list[Record]:
    """Every (size, gridsize) case in its own process, then the growth per gridsize."""
    sizes = tuple(sizes or settings.train_rss_patterns)
    steps = settings.train_rss_steps
    out: list[Record] = []
    cases: dict[tuple[int, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ptycho-rss-scan-") as tmp:
        for size in sizes:
            path = write_scan(Path(tmp) / f"scan_{size}.npz", size, seed=size)
            for gs in gridsizes:
                case = _child(path, gs, steps, timeout)
                cases[(size, gs)] = case
                cfg = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in case.items()}
                cfg["method"] = ("fresh process per case; peak RSS = ru_maxrss; working memory = "
                                 f"max sampled RssAnon+RssShmem every {SAMPLE_S * 1000:.0f} ms")
                label = f"train_rss gs{gs}"
                out += [
                    Record(backend, f"{label} peak RSS @{size}", case["peak_rss_mib"], "MiB", cfg),
                    Record(backend, f"{label} working memory @{size}", case["working_mib"], "MiB",
                           cfg),
                    Record(backend, f"{label} file-backed at peak @{size}",
                           case["file_backed_at_peak_mib"], "MiB", cfg),
                    Record(backend, f"{label} train seconds @{size}", case["seconds_train"], "s",
                           cfg),
                ]
            path.unlink()
    for gs in gridsizes:
        first, last = cases[(sizes[0], gs)], cases[(sizes[-1], gs)]
        summary = {"from": sizes[0], "to": sizes[-1], "steps": steps}
        growth = last["working_mib"] / first["working_mib"]
        out += [
            Record(backend, f"train_rss gs{gs} working memory growth (largest/smallest)", growth,
                   "x", {**summary, "target": f"<= {WORKING_GROWTH_MAX}",
                         "met": growth <= WORKING_GROWTH_MAX}),
            Record(backend, f"train_rss gs{gs} peak RSS at the largest scan", last["peak_rss_mib"],
                   "MiB", {**summary, "target": f"< {PEAK_RSS_MAX_MIB:.0f} MiB at 64k",
                           "met": last["peak_rss_mib"] < PEAK_RSS_MAX_MIB}),
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    """One case (child process): ``--file F --gridsize G --steps S --out JSON``; or, with
    ``--sizes``, the whole measure under ``$KERAS_BACKEND`` printed as a table (for a quick
    look without the harness)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path)
    ap.add_argument("--gridsize", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", help="run the measure for these sizes")
    ap.add_argument("--gridsizes", type=int, nargs="+", default=list(GRIDSIZES))
    args = ap.parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND")
    if backend is None:
        print("train_rss: set KERAS_BACKEND", file=sys.stderr)
        return 2
    if args.sizes:
        from dataclasses import replace

        from benchmarks.plan import settings

        s = replace(settings(False), train_rss_steps=args.steps)
        for r in run(s, backend, sizes=tuple(args.sizes), gridsizes=tuple(args.gridsizes)):
            print(f"{r.measure:<55} {r.value:10.2f} {r.unit}")
        return 0
    if args.file is None or args.out is None:
        ap.error("--file and --out are required for one case")
    from ptycho_k3.backend import activate, skip_unused_frameworks

    skip_unused_frameworks(activate(backend))  # start like ptycho-train: one framework
    result = run_case(args.file, args.gridsize, args.steps)
    result["backend"] = backend
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

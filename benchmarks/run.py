"""Run every benchmark measure under every backend and write the results.

Usage (from the repository root): ``python -m benchmarks.run [--quick] [--backends ...]
[--measures ...] [--keep-going]``; ``BENCH_QUICK=1`` also selects the quick mode. Each
(measure, backend) runs in its own worker process with ``KERAS_BACKEND`` set, backends
interleaved inside each measure. Writes ``benchmarks/results/latest.json``, ``latest.md``,
``throughput.png`` and ``scaling.png``. A failing worker stops the run with its stderr and a
non-zero exit (``--keep-going`` runs the rest first and still exits non-zero).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import load_average, machine_info
from benchmarks.plan import BACKENDS, MEASURES, jobs
from benchmarks.report import markdown, plot_scaling, plot_throughput

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BUSY_LOAD = 0.5  # load average per core above which the machine counts as shared/busy


class WorkerFailed(RuntimeError):
    """A worker exited non-zero or wrote no records."""


def run_worker(measure: str, backend: str, quick: bool, timeout: float) -> list[dict[str, Any]]:
    """Run one worker process and return its records."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-") as tmp:
        out = Path(tmp) / "records.json"
        cmd = [sys.executable, "-m", "benchmarks.worker", measure, "--out", str(out)]
        if quick:
            cmd.append("--quick")
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise WorkerFailed(f"{measure} [{backend}] timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0 or not out.exists():
            raise WorkerFailed(f"{measure} [{backend}] exited {proc.returncode}:\n"
                               f"{proc.stderr[-4000:]}")
        records = json.loads(out.read_text())
    if not records:
        raise WorkerFailed(f"{measure} [{backend}] wrote no records")
    return records


def derived(records: list[dict[str, Any]], backends: tuple[str, ...]) -> list[dict[str, Any]]:
    """Ratios across measures: achieved GFLOP/s as a share of the best measured f32 peak."""
    peaks = [r["value"] for r in records if r["measure"] == "peak matmul float32 GFLOP/s"
             and r["value"]]
    if not peaks:
        return []
    peak = max(peaks)
    out = []
    for b in backends:
        for measure, label in (("forward GFLOP/s", "forward"),
                               ("train N64_gs1 fwd+bwd GFLOP/s", "train N64_gs1 fwd+bwd")):
            src = next((r for r in records if r["backend"] == b and r["measure"] == measure), None)
            if src and src["value"]:
                out.append({**src, "measure": f"{label} % of machine f32 peak",
                            "value": 100.0 * src["value"] / peak, "unit": "%",
                            "config": {**src["config"], "machine_f32_peak_gflops": round(peak, 1)}})
    return out


def header(quick: bool, started: dt.datetime, seconds: float, loads: list[float]) -> str:
    """The markdown preamble: mode, commit, machine, load."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    m = machine_info()
    cores = m["cores"] or 1
    busy = max(loads, default=0.0) > BUSY_LOAD * cores
    lines = [
        f"# ptycho-k3 benchmarks ({'quick' if quick else 'full'} mode)",
        "",
        f"- run: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min, commit {commit}",
        f"- machine: {m['cpu']}, {cores} cores, {m['mem_gib']} GiB, AVX-512 {m['avx512f']}, "
        f"AVX-512 BF16 {m['avx512_bf16']}, TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}",
        f"- load average before the workers: min {min(loads, default=0):.1f}, "
        f"max {max(loads, default=0):.1f} on {cores} cores",
        "- medians of repeats after a warm-up; every record's config in latest.json says how it "
        "was measured (quick mode extrapolates seconds/epoch from single steps)",
    ]
    if busy:
        lines.append("- **shared machine**: other work was running (load average above "
                     f"{BUSY_LOAD} per core); absolute timings are pessimistic and noisy, "
                     "compare backends within this run only")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    ap.add_argument("--keep-going", action="store_true")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per worker")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    backends = tuple(args.backends)
    timeout = args.timeout or (600.0 if args.quick else 7200.0)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    loads: list[float] = []
    todo = jobs(backends, tuple(args.measures))
    print(f"benchmarks ({'quick' if args.quick else 'full'}): {len(todo)} workers "
          f"({', '.join(args.measures)}) x ({', '.join(backends)})", flush=True)
    for i, (measure, backend) in enumerate(todo, 1):
        loads.append(load_average())
        t = time.perf_counter()
        try:
            got = run_worker(measure, backend, args.quick, timeout)
        except WorkerFailed as exc:
            print(f"FAILED {exc}", file=sys.stderr, flush=True)
            failures.append(str(exc).splitlines()[0])
            if not args.keep_going:
                return 1
            continue
        records += got
        print(f"[{i}/{len(todo)}] {measure:<16} {backend:<10} {time.perf_counter() - t:6.1f} s "
              f"(load {loads[-1]:.1f})", flush=True)
    records += derived(records, backends)
    records.sort(key=lambda r: (args.measures.index(r["config"].get("measure_group",
                                                                     args.measures[-1]))))
    seconds = time.perf_counter() - t0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latest.json").write_text(json.dumps(records, indent=1, default=float) + "\n")
    table = markdown(records, backends, header(args.quick, started, seconds, loads))
    (args.out_dir / "latest.md").write_text(table)
    plot_throughput(records, backends, args.out_dir / "throughput.png")
    plot_scaling(records, backends, args.out_dir / "scaling.png")
    print(table)
    print(f"wrote {args.out_dir}/latest.json, latest.md, throughput.png, scaling.png "
          f"in {seconds / 60:.1f} min")
    if failures:
        print("FAILED workers:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

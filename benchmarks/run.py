"""Run every benchmark measure under every backend and write the results.

Usage (from the repository root): ``python -m benchmarks.run [--quick] [--backends ...]
[--measures ...] [--keep-going]``; ``BENCH_QUICK=1`` also selects the quick mode. Each
(measure, backend) runs in its own worker process with ``KERAS_BACKEND`` set, backends
interleaved inside each measure. Writes ``benchmarks/results/latest.json``, ``latest.md``,
``throughput.png`` and ``scaling.png``; the ``refine`` measure (and its pty-chi peer worker)
writes ``refine_latest.json``, ``refine_latest.md`` and ``refine_convergence.png`` instead, so
``--measures refine`` alone leaves ``latest.*`` untouched. A failing worker stops the run with its
stderr and a non-zero exit (``--keep-going`` runs the rest first and still exits non-zero).
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

from benchmarks.common import machine_info, other_work
from benchmarks.plan import BACKENDS, MEASURES, PEER_MEASURE, REFINE_GROUPS, jobs
from benchmarks.report import (
    fastest_backend,
    markdown,
    peer_note,
    plot_refine,
    plot_scaling,
    plot_throughput,
    refine_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BUSY_SHARE = 0.25  # CPU share busy with other work above which the machine counts as shared


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


def source_commit() -> str:
    """``git rev-parse --short HEAD``, ``+dirty`` with uncommitted changes to tracked files.

    Taken before any worker runs: the run's own outputs (``latest.*``) are tracked files."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, check=True).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(quick: bool, started: dt.datetime, seconds: float, commit: str,
           work_seen: list[dict[str, float]], title: str = "ptycho-k3 benchmarks",
           how: str = "- medians of repeats after a warm-up; every record's config in latest.json "
                      "says how it was measured (quick mode extrapolates seconds/epoch from "
                      "single steps)") -> str:
    """The markdown preamble: mode, commit, machine, and the other work seen between workers."""
    m = machine_info()
    cores = m["cores"] or 1
    busy = [o["busy"] for o in work_seen]
    steal = [o["steal"] for o in work_seen]
    lines = [
        f"# {title} ({'quick' if quick else 'full'} mode)",
        "",
        f"- run: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min, commit {commit}",
        f"- machine: {m['cpu']}, {cores} cores, {m['mem_gib']} GiB, AVX-512 {m['avx512f']}, "
        f"AVX-512 BF16 {m['avx512_bf16']}, TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}",
    ]
    if work_seen:
        lines.append(f"- other work, 1 s before each worker with none of ours running: CPU busy "
                     f"{100 * min(busy):.0f}-{100 * max(busy):.0f} % of {cores} cores, "
                     f"stolen by the host {100 * min(steal):.1f}-{100 * max(steal):.1f} %")
    lines.append(how)
    if busy and max(busy) > BUSY_SHARE:
        lines.append(f"- **shared machine**: other work took over {100 * BUSY_SHARE:.0f} % of "
                     "the CPU before some workers; absolute timings are pessimistic and noisy, "
                     "compare backends within this run only")
    return "\n".join(lines)


def write_refine(records: list[dict[str, Any]], backends: tuple[str, ...], out_dir: Path,
                 head: str) -> None:
    """``refine_latest.json``, ``refine_latest.md`` and ``refine_convergence.png``."""
    plotted = fastest_backend(records, backends)
    notes = [
        f"- plot `refine_convergence.png`: our curves from **{plotted}**, the backend with the "
        "most pattern-updates/s in this run" if plotted else "- plot: no backend of ours ran",
        f"- {peer_note(records)}",
        "- speed: realistic LCLS probe/object scan, N 64, 1000 positions, 1e9 photons; "
        "`RefineConfig()` defaults (batch 128, Poisson); iterations/s = median over repeats of "
        "(K-1)/(t_K - t_1), the compiling first iteration left out (its extra time is the "
        "`first-iteration overhead` row); pattern-updates/s = positions x iterations/s",
        "- convergence: iterations and wall seconds (scoring excluded; our first iteration's "
        "compilation included) to the first iteration at the threshold, scored with "
        "`Scoring(object, positions, M=20)` every iteration; empty/n/a = not reached within the "
        "budget (see `@N it` rows); PINN-start seconds include the PINN inference, not its "
        "training",
    ]
    (out_dir / "refine_latest.json").write_text(json.dumps(records, indent=1, default=float)
                                                + "\n")
    table = refine_markdown(records, backends, head + "\n" + "\n".join(notes))
    (out_dir / "refine_latest.md").write_text(table)
    plot_refine(records, plotted, out_dir / "refine_convergence.png")
    print(table)
    print(f"wrote {out_dir}/refine_latest.json, refine_latest.md, refine_convergence.png")


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
    work_seen: list[dict[str, float]] = []  # other work before each worker
    commit = source_commit()
    todo = jobs(backends, tuple(args.measures))
    print(f"benchmarks ({'quick' if args.quick else 'full'}): {len(todo)} workers "
          f"({', '.join(args.measures)}) x ({', '.join(backends)})", flush=True)
    for i, (measure, backend) in enumerate(todo, 1):
        seen = other_work()
        if seen is not None:
            work_seen.append(seen)
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
        busy = f" (other work {100 * seen['busy']:.0f} % busy)" if seen else ""
        print(f"[{i}/{len(todo)}] {measure:<16} {backend:<10} {time.perf_counter() - t:6.1f} s"
              f"{busy}", flush=True)
    records += derived(records, backends)

    def group(r: dict[str, Any]) -> str:
        g = r["config"].get("measure_group", args.measures[-1])
        return "refine" if g == PEER_MEASURE else g

    records.sort(key=lambda r: args.measures.index(group(r)))
    seconds = time.perf_counter() - t0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    refine = [r for r in records if r["config"].get("measure_group") in REFINE_GROUPS]
    others = [r for r in records if r["config"].get("measure_group") not in REFINE_GROUPS]
    if any(m != "refine" for m in args.measures):
        (args.out_dir / "latest.json").write_text(json.dumps(others, indent=1, default=float)
                                                  + "\n")
        table = markdown(others, backends, header(args.quick, started, seconds, commit, work_seen))
        (args.out_dir / "latest.md").write_text(table)
        plot_throughput(others, backends, args.out_dir / "throughput.png")
        plots = ["throughput.png"]
        if "scaling" in args.measures:  # else the plot would be empty
            plot_scaling(others, backends, args.out_dir / "scaling.png")
            plots.append("scaling.png")
        print(table)
        print(f"wrote {args.out_dir}/latest.json, latest.md, {', '.join(plots)}")
    if "refine" in args.measures:
        write_refine(refine, backends, args.out_dir,
                     header(args.quick, started, seconds, commit, work_seen,
                            "ptycho-k3 refinement benchmark",
                            "- every record's config in refine_latest.json says how it was "
                            "measured (settings, scan fingerprint, pty-chi options); the "
                            "`history` records hold the curves"))
    print(f"done in {seconds / 60:.1f} min")
    if failures:
        print("FAILED workers:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

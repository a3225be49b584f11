"""One benchmark measure under one backend, in its own process.

Usage: ``KERAS_BACKEND=jax python -m benchmarks.worker MEASURE [--quick] --out FILE``.
Writes a JSON list of records to FILE; any failure exits non-zero with the traceback on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.common import Record, load_average, machine_info
from benchmarks.plan import WORKER_MEASURES, settings


def measure(name: str, quick: bool, backend: str) -> list[Record]:
    """Dispatch ``name`` to its measure module."""
    s = settings(quick)
    if name.startswith("train_") and name != "train_rss":
        from benchmarks.measures import train

        return train.run(s, backend, name.removeprefix("train_"))
    from importlib import import_module

    return import_module(f"benchmarks.measures.{name}").run(s, backend)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("measure", choices=WORKER_MEASURES)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND")
    if backend is None:
        print("worker: set KERAS_BACKEND", file=sys.stderr)
        return 2
    from ptycho_k3.backend import activate, skip_unused_frameworks

    # Start like a command (ptycho-train, ptycho-infer): the backend's defaults (XLA flags for
    # jax), one framework a process, the others not imported.
    skip_unused_frameworks(activate(backend))
    from benchmarks.workload import backend_name, framework_threads, framework_version

    if backend_name() != backend:
        raise RuntimeError(f"keras runs {backend_name()}, expected {backend}")
    load_start = load_average()
    t0 = time.perf_counter()
    records = measure(args.measure, args.quick, backend)
    machine = {**machine_info(), "framework": framework_version(), "threads": framework_threads(),
               "load_avg_start": round(load_start, 2), "load_avg_end": round(load_average(), 2)}
    for r in records:
        r.machine = machine
        r.config = {"measure_group": args.measure, "quick": args.quick, **r.config}
    args.out.write_text(json.dumps([r.to_dict() for r in records], default=float))
    print(f"{args.measure} [{backend}] {len(records)} records in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

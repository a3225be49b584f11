"""Stitching throughput: patterns per second of ``ptycho_k3.stitch.stitch_patches``.

Usage: ``.venv/bin/python benchmarks/bench_stitch.py [--n 10000] [--N 64] [--M 20] [--repeat 3]``.
Prints one JSON line. Positions are random fractional points on a square scan (worst case: every
crop needs the full bilinear footprint).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ptycho_k3.stitch import stitch_patches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--M", type=int, default=20)
    ap.add_argument("--side", type=float, default=400.0, help="scan field side in pixels")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.n, args.N, args.N)
    patches = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    positions = rng.uniform(0.0, args.side, size=(args.n, 2))
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = stitch_patches(patches, positions, args.M)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(
        json.dumps(
            {
                "n": args.n,
                "N": args.N,
                "M": args.M,
                "canvas": list(res.obj.shape),
                "best_s": round(best, 4),
                "patterns_per_s": round(args.n / best),
            }
        )
    )


if __name__ == "__main__":
    main()

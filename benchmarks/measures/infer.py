"""Inference speed: patterns/s of prediction alone, stitching alone and both, gs 1 and 2.

``ptycho_k3.infer.reconstruct`` (streaming, ``keep_patches=False``, batch 32) on a random scan;
it reports the time spent predicting and stitching; "both" is the wall time of the whole call
(grouping included). Patterns/s counts diffraction patterns consumed (groups x gridsize^2).
A synthetic stitching benchmark (the former ``bench_stitch.py``: 10 000 random complex patches
at random fractional positions, ``stitch_patches``) isolates the NumPy stitcher.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import Record, median, peak_rss_mib
from benchmarks.plan import Settings
from benchmarks.workload import random_scan, untrained_models

BATCH = 32


def stitch_only(n_patches: int = 10_000, n: int = 64, m: int = 20, side: float = 400.0,
                repeats: int = 3) -> list[float]:
    """Wall times of ``stitch_patches`` on random patches (the former bench_stitch.py)."""
    from ptycho_k3.stitch import stitch_patches

    rng = np.random.default_rng(0)
    shape = (n_patches, n, n)
    patches = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    positions = rng.uniform(0.0, side, size=(n_patches, 2))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        stitch_patches(patches, positions, m)
        times.append(time.perf_counter() - t0)
    return times


def _one_gridsize(settings: Settings, backend: str, gs: int) -> list[Record]:
    from ptycho_k3 import physics
    from ptycho_k3.infer import reconstruct

    n = 64
    scan = random_scan(n, settings.infer_patterns, seed=gs)
    models = untrained_models(n, gs, probe=scan.probe)
    s = physics.intensity_scale(1e9, n)
    reconstruct(models, scan, input_scale=s, batch_size=BATCH, n_groups=2 * BATCH,
                keep_patches=False)  # warm-up: compiles the predict function
    pred, stitch, both = [], [], []
    for _ in range(settings.infer_repeats):
        t0 = time.perf_counter()
        rec = reconstruct(models, scan, input_scale=s, batch_size=BATCH, keep_patches=False)
        both.append(time.perf_counter() - t0)
        pred.append(rec.seconds_predict)
        stitch.append(rec.seconds_stitch)
    patterns = rec.grouped.n_groups * gs * gs
    cfg = {"N": n, "gridsize": gs, "batch_size": BATCH, "patterns": patterns,
           "groups": rec.grouped.n_groups, "repeats": settings.infer_repeats,
           "data": "random diffraction, untrained model"}
    tag = f"infer gs{gs}"
    return [
        Record(backend, f"{tag} predict patterns/s", patterns / median(pred), "patterns/s", cfg),
        Record(backend, f"{tag} stitch patterns/s", patterns / median(stitch), "patterns/s", cfg),
        Record(backend, f"{tag} predict+stitch patterns/s", patterns / median(both), "patterns/s",
               {**cfg, "what": "wall time of reconstruct() incl. grouping"}),
        Record(backend, f"{tag} stitch share", 100.0 * median(stitch) / median(both), "%", cfg),
    ]


def run(settings: Settings, backend: str) -> list[Record]:
    """Records for gridsize 1 and 2, the synthetic stitcher and the peak RSS."""
    out = _one_gridsize(settings, backend, 1) + _one_gridsize(settings, backend, 2)
    n_patches = 2000 if settings.quick else 10_000
    times = stitch_only(n_patches=n_patches, repeats=settings.infer_repeats)
    out.append(Record(backend, "stitch_patches alone patterns/s", n_patches / median(times),
                      "patterns/s", {"patches": n_patches, "N": 64, "M": 20,
                                     "what": "NumPy stitch_patches on random complex patches"}))
    out.append(Record(backend, "infer peak RSS", peak_rss_mib(), "MiB",
                      {"what": "VmHWM of the inference worker", "patterns": settings.infer_patterns}))
    return out

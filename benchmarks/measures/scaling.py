"""Inference scaling: wall time and peak RSS of ``reconstruct`` at growing scan sizes.

One process runs the sizes in increasing order; before each, the peak RSS is reset to the
current RSS (``/proc/self/clear_refs``) so each size gets its own peak. The input scan (random
diffraction, float32 ``(n, 64, 64)``, 16 KiB a pattern) is resident, as in the CLI; the records
give the peak in total, above the RSS held before the call (scan included), and without the
input (peak minus the scan's bytes): the last is what "flat memory" is judged on, since the scan
itself is the user's data. Gridsize 2 (4 patterns a group), so 64k patterns take minutes, not an
hour, on 2 cores; the stitched canvas still grows with the scan's area (``density``).
"""

from __future__ import annotations

import gc
import time

from benchmarks.common import Record, current_rss_mib, peak_rss_mib, reset_peak_rss
from benchmarks.plan import Settings
from benchmarks.workload import random_scan, untrained_models

BATCH = 32


def run(settings: Settings, backend: str) -> list[Record]:
    """Time, peak RSS and working memory per size, plus growth summaries."""
    from ptycho_k3 import physics
    from ptycho_k3.infer import reconstruct

    n, gs = 64, 2
    models = untrained_models(n, gs)
    s = physics.intensity_scale(1e9, n)
    warm = random_scan(n, BATCH * 2, seed=99)
    reconstruct(models, warm, input_scale=s, batch_size=BATCH, keep_patches=False)
    out: list[Record] = []
    points = []
    for size in settings.scaling_patterns:
        scan = random_scan(n, size, seed=size)
        gc.collect()
        before = current_rss_mib()
        can_reset = reset_peak_rss()
        t0 = time.perf_counter()
        rec = reconstruct(models, scan, input_scale=s, batch_size=BATCH, keep_patches=False)
        seconds = time.perf_counter() - t0
        peak = peak_rss_mib()
        input_mib = scan.diffraction.nbytes / 2**20
        cfg = {"patterns": size, "N": n, "gridsize": gs, "batch_size": BATCH,
               "input_diffraction_mib": round(input_mib, 1), "rss_before_mib": round(before, 1),
               "peak_reset": can_reset, "canvas": list(rec.stitched.obj.shape),
               "keep_patches": False}
        out += [
            Record(backend, f"scaling time @{size}", seconds, "s", cfg),
            Record(backend, f"scaling peak RSS @{size}", peak, "MiB", cfg),
            Record(backend, f"scaling peak above input @{size}", peak - before, "MiB",
                   {**cfg, "what": "peak RSS during reconstruct minus RSS before it (scan resident)"}),
            Record(backend, f"scaling peak RSS without input @{size}", peak - input_mib, "MiB",
                   {**cfg, "what": "peak RSS minus the bytes of the input diffraction"}),
        ]
        points.append((size, seconds, peak, peak - before, peak - input_mib))
        del scan, rec
    (n0, t_0, p0, w0, q0), (n1, t_1, p1, w1, q1) = points[0], points[-1]
    summary = {"from": n0, "to": n1}
    out += [
        Record(backend, "scaling time/pattern ratio (largest/smallest)", (t_1 / n1) / (t_0 / n0), "x",
               {**summary, "what": "1.0 = linear time"}),
        Record(backend, "scaling peak RSS growth (largest/smallest)", p1 / p0, "x",
               {**summary, "what": "total, input scan included"}),
        Record(backend, "scaling peak RSS without input growth (largest/smallest)", q1 / q0, "x",
               {**summary, "what": "1.0 = flat memory; the issue's target is <= 1.1"}),
        Record(backend, "scaling extra MiB per 1k patterns", 1000.0 * (w1 - w0) / (n1 - n0),
               "MiB/1k", {**summary, "what": "slope of the working memory above the resident scan; "
                          "input itself is 15.6 MiB per 1k"}),
    ]
    return out

"""Reconstruction quality at a fixed training budget (same budget for every backend).

Train on a simulated ``lines`` object with phase (N = 64, gridsize 1, 1e9 photons, batch 16,
``quality_groups`` groups, ``quality_epochs`` epochs), reconstruct the test half (a different
object, same probe and geometry) and score it with ``ptycho_k3.metrics.evaluate`` (M = 20).
"""

from __future__ import annotations

import time

from benchmarks.common import Record, peak_rss_mib
from benchmarks.plan import Settings


def run(settings: Settings, backend: str) -> list[Record]:
    """Amplitude/phase SSIM and FRC50, training wall time and peak RSS."""
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.data import simulate_train_test
    from ptycho_k3.infer import reconstruct
    from ptycho_k3.metrics import evaluate
    from ptycho_k3.train import train

    n = 64
    train_scan, test_scan = simulate_train_test(
        "lines", n, n_images=settings.quality_groups, nphotons=1e9, seed=7, phase=True,
        n_test_images=settings.quality_test_patterns)
    cfg_train = TrainingConfig(model=ModelConfig(N=n, gridsize=1), batch_size=16,
                               nepochs=settings.quality_epochs, n_groups=settings.quality_groups,
                               seed=0)
    t0 = time.perf_counter()
    result = train(cfg_train, train_scan, verbose=0)
    train_s = time.perf_counter() - t0
    rec = reconstruct(result.models, test_scan, input_scale=result.input_scale, batch_size=32,
                      keep_patches=False)
    metrics = evaluate(rec.stitched, test_scan.object, positions=rec.centres, M=20)
    cfg = {"object": "lines with phase", "N": n, "gridsize": 1, "nphotons": 1e9,
           "train_groups": settings.quality_groups, "epochs": settings.quality_epochs,
           "batch_size": 16, "test_patterns": settings.quality_test_patterns,
           "final_loss": result.history["loss"][-1], "epochs_run": result.epochs_run}
    out = []
    for part in ("amplitude", "phase"):
        for key, label in (("ssim", "SSIM"), ("frc50", "FRC50")):
            value = metrics[part].get(key)
            out.append(Record(backend, f"quality {part} {label}", value,
                              "" if key == "ssim" else "cycles/image", cfg))
    out.append(Record(backend, "quality training wall time", train_s, "s", cfg))
    out.append(Record(backend, "quality worker peak RSS", peak_rss_mib(), "MiB", cfg))
    return out

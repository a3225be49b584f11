"""Reconstruction quality at a fixed training budget, in float32 and in mixed bfloat16.

Train on a simulated ``lines`` object with phase (N = 64, gridsize 1, 1e9 photons, batch 16,
``quality_groups`` groups, ``quality_epochs`` epochs), reconstruct the test half (a different
object, same probe and geometry) and score it with ``ptycho_k3.metrics.evaluate`` (M = 20).

Mixed precision, two questions (issue 15):

- *Inference*: the float32-trained bundle, saved and loaded again with ``precision=
  "mixed_bfloat16"`` (what ``ptycho-infer --precision mixed_bfloat16`` does), reconstructs the
  same test half. Reported: the predict-time speed-up (median of ``infer_repeats`` timed calls
  after one untimed call each, which compiles) and the SSIM change against the float32 run.
- *Training*: the same budget trained with ``ModelConfig(precision="mixed_bfloat16")`` from the
  same seed; its SSIM and training wall time against float32's.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from benchmarks.common import Record, median, peak_rss_mib
from benchmarks.plan import Settings

BATCH = 32


def _timed_reconstruct(models: Any, scan: Any, input_scale: float,
                       repeats: int) -> tuple[Any, float]:
    """The reconstruction and the median predict seconds of ``repeats`` calls after a warm-up."""
    from ptycho_k3.infer import reconstruct

    rec = reconstruct(models, scan, input_scale=input_scale, batch_size=BATCH, keep_patches=False)
    times = []
    for _ in range(repeats):
        rec = reconstruct(models, scan, input_scale=input_scale, batch_size=BATCH,
                          keep_patches=False)
        times.append(rec.seconds_predict)
    return rec, (median(times) if times else float("nan"))


def _train(settings: Settings, scan: Any, precision: str) -> tuple[Any, float]:
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.train import train

    cfg = TrainingConfig(model=ModelConfig(N=64, gridsize=1, precision=precision), batch_size=16,
                         nepochs=settings.quality_epochs, n_groups=settings.quality_groups,
                         seed=0)
    t0 = time.perf_counter()
    result = train(cfg, scan, verbose=0)
    return result, time.perf_counter() - t0


def run(settings: Settings, backend: str) -> list[Record]:
    """SSIM/FRC50 and training time in float32; bf16 inference and training against them."""
    from ptycho_k3.bundle import load_bundle, save_bundle
    from ptycho_k3.data import simulate_train_test
    from ptycho_k3.metrics import evaluate

    n = 64
    train_scan, test_scan = simulate_train_test(
        "lines", n, n_images=settings.quality_groups, nphotons=1e9, seed=7, phase=True,
        n_test_images=settings.quality_test_patterns)

    def score(rec: Any) -> dict[str, Any]:
        return evaluate(rec.stitched, test_scan.object, positions=rec.centres, M=20)

    result, train_s = _train(settings, train_scan, "float32")
    reps = settings.infer_repeats
    rec, predict_f32 = _timed_reconstruct(result.models, test_scan, result.input_scale, reps)
    metrics = score(rec)
    cfg = {"object": "lines with phase", "N": n, "gridsize": 1, "nphotons": 1e9,
           "train_groups": settings.quality_groups, "epochs": settings.quality_epochs,
           "batch_size": 16, "test_patterns": settings.quality_test_patterns,
           "final_loss": result.history["loss"][-1], "epochs_run": result.epochs_run}
    out = []
    for part in ("amplitude", "phase"):
        for key, label in (("ssim", "SSIM"), ("frc50", "FRC50")):
            out.append(Record(backend, f"quality {part} {label}", metrics[part].get(key),
                              "" if key == "ssim" else "cycles/image", cfg))
    out.append(Record(backend, "quality training wall time", train_s, "s", cfg))

    # bf16 inference on the same (float32-trained) bundle, as ptycho-infer --precision loads it
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-quality-") as tmp:
        path = save_bundle(tmp, result.models, {"input_scale": result.input_scale})
        bf16 = load_bundle(path, precision="mixed_bfloat16")
        rec16, predict_bf16 = _timed_reconstruct(bf16.models, test_scan, bf16.input_scale, reps)
    m16 = score(rec16)
    icfg = {**cfg, "batch": BATCH, "repeats": reps, "predict_s_float32": round(predict_f32, 3),
            "predict_s_bf16": round(predict_bf16, 3),
            "what": "float32 bundle loaded with precision=mixed_bfloat16, same test scan"}
    out.append(Record(backend, "bf16 inference speed-up (predict)", predict_f32 / predict_bf16,
                      "x", icfg))
    for part in ("amplitude", "phase"):
        out.append(Record(backend, f"bf16 inference {part} SSIM change",
                          m16[part]["ssim"] - metrics[part]["ssim"], "", icfg))

    # bf16 training, same budget and seed
    result16, train16_s = _train(settings, train_scan, "mixed_bfloat16")
    rec_t16, _ = _timed_reconstruct(result16.models, test_scan, result16.input_scale, 0)
    mt16 = score(rec_t16)
    tcfg = {**cfg, "final_loss": result16.history["loss"][-1], "epochs_run": result16.epochs_run,
            "float32_training_s": round(train_s, 1)}
    out.append(Record(backend, "bf16 training wall time / float32", train16_s / train_s, "x",
                      {**tcfg, "bf16_training_s": round(train16_s, 1)}))
    for part in ("amplitude", "phase"):
        out.append(Record(backend, f"bf16 training {part} SSIM", mt16[part]["ssim"], "", tcfg))
        out.append(Record(backend, f"bf16 training {part} SSIM change",
                          mt16[part]["ssim"] - metrics[part]["ssim"], "", tcfg))
    out.append(Record(backend, "quality worker peak RSS", peak_rss_mib(), "MiB", cfg))
    return out

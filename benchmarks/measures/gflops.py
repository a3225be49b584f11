"""Achieved GFLOP/s of the forward pass against the machine's measured matmul peak.

Peak: a square ``keras.ops.matmul`` (float32, and bfloat16 when the CPU has AVX-512 BF16 or
AMX) on the backend under test, fastest of the repeats after a warm-up: ``2 n^3 / t``. Forward: the
inference model on a batch of 32 groups (N = 64, gridsize 1), FLOPs from
:mod:`benchmarks.flops`. The forward+backward figure comes from the training measure.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Record, cpu_flags, median, repeat_timed
from benchmarks.flops import model_flops
from benchmarks.plan import Settings
from benchmarks.workload import sync, untrained_models

MATMUL_N = 2048
FORWARD_BATCH = 32


def matmul_gflops(dtype: str, n: int, repeats: int) -> tuple[float, list[float]]:
    """Best (peak) GFLOP/s of an ``n x n`` matmul in ``dtype`` with the active backend.

    The fastest repeat, not the median: a peak is what the machine can do, and on a shared
    machine the median understates it (then achieved/peak can exceed 100 %)."""
    import keras

    rng = np.random.default_rng(0)
    a = keras.ops.cast(keras.ops.convert_to_tensor(rng.standard_normal((n, n), np.float32)), dtype)
    b = keras.ops.cast(keras.ops.convert_to_tensor(rng.standard_normal((n, n), np.float32)), dtype)
    times = repeat_timed(lambda: sync(keras.ops.matmul(a, b)), repeats)
    return 2.0 * n**3 / min(times) / 1e9, times


def run(settings: Settings, backend: str) -> list[Record]:
    """Peak float32 (and bf16) matmul, and the achieved forward GFLOP/s."""
    reps = settings.gflops_repeats
    out = []
    f32, t32 = matmul_gflops("float32", MATMUL_N, reps)
    out.append(Record(backend, "peak matmul float32 GFLOP/s", f32, "GFLOP/s",
                      {"n": MATMUL_N, "samples_s": [round(t, 4) for t in t32]}))
    flags = cpu_flags()
    if {"avx512_bf16", "amx_bf16"} & flags:
        try:
            bf16, tb = matmul_gflops("bfloat16", MATMUL_N, reps)
            out.append(Record(backend, "peak matmul bfloat16 GFLOP/s", bf16, "GFLOP/s",
                              {"n": MATMUL_N, "samples_s": [round(t, 4) for t in tb]}))
        except Exception as exc:  # a backend without a bf16 CPU matmul: say so, keep going
            out.append(Record(backend, "peak matmul bfloat16 GFLOP/s", None, "GFLOP/s",
                              {"n": MATMUL_N, "error": f"{type(exc).__name__}: {exc}"[:200]}))
    models = untrained_models(64, 1)
    rng = np.random.default_rng(0)
    x = rng.random((FORWARD_BATCH, 64, 64, 1), dtype=np.float32)
    off = np.zeros((FORWARD_BATCH, 1, 2, 1), np.float32)
    times = repeat_timed(lambda: models.inference.predict_on_batch((x, off)), reps)
    flops = model_flops(models)
    fwd = flops.inference * FORWARD_BATCH / median(times) / 1e9
    cfg = {"N": 64, "gridsize": 1, "batch": FORWARD_BATCH,
           "gflop_per_group": round(flops.inference / 1e9, 4),
           "conv_gflop_per_group": round(flops.conv / 1e9, 4),
           "samples_s": [round(t, 4) for t in times],
           "what": "inference model predict_on_batch (incl. host transfer)"}
    out.append(Record(backend, "forward GFLOP/s", fwd, "GFLOP/s", cfg))
    out.append(Record(backend, "forward % of own f32 peak", 100.0 * fwd / f32, "%", cfg))
    return out

"""Training speed: seconds per epoch, groups/s, achieved GFLOP/s and peak RSS per shape.

Step mode (quick): one warm-up ``train_on_batch`` (compiles), then ``steps`` timed steps; the
epoch time is the median step times the steps of a 512-group epoch (486 training groups after the
5 % validation split, so 31 steps of 16), validation excluded. Epoch mode (full): real epochs of
``ptycho_k3.train.train`` on 512 groups, the first (compiling) epoch dropped, median of the rest.
"""

from __future__ import annotations

import math
import time

from benchmarks.common import Record, median, peak_rss_mib
from benchmarks.flops import model_flops
from benchmarks.plan import TRAIN_SHAPES, Settings
from benchmarks.workload import simulated_scan, sync


def _train_steps_per_epoch(groups: int, batch: int, validation_fraction: float = 0.05) -> int:
    n_val = max(1, round(groups * validation_fraction))
    return math.ceil((groups - n_val) / batch)


def _step_times(n: int, gs: int, batch: int, steps: int,
                precision: str = "float32") -> tuple[list[float], object]:
    import keras

    from ptycho_k3 import physics
    from ptycho_k3.config import ModelConfig
    from ptycho_k3.data import group_scan
    from ptycho_k3.model import build_model
    from ptycho_k3.seeding import set_random_seed
    from ptycho_k3.train import model_inputs

    scan = simulated_scan(n, max(256, batch * (steps + 1) * gs * gs))
    grouped = group_scan(scan, gs, n_groups=batch * (steps + 1), neighbor_count=4, seed=0)
    s = physics.intensity_scale(1e9, n)
    x, off = model_inputs(grouped, s)
    set_random_seed(0)
    models = build_model(ModelConfig(N=n, gridsize=gs, precision=precision), probe=grouped.probe,
                         intensity_scale=s)
    models.training.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    times = []
    for i in range(steps + 1):
        sl = slice(i * batch, (i + 1) * batch)
        t0 = time.perf_counter()
        out = models.training.train_on_batch((x[sl], off[sl]), {"amplitude": x[sl]})
        sync(out)
        if i:  # step 0 compiles
            times.append(time.perf_counter() - t0)
    return times, models


def _epoch_times(n: int, gs: int, batch: int, groups: int, epochs: int,
                 precision: str = "float32") -> tuple[list[float], object]:
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.train import train

    scan = simulated_scan(n, groups * gs * gs if gs > 1 else groups)
    cfg = TrainingConfig(model=ModelConfig(N=n, gridsize=gs, precision=precision),
                         batch_size=batch, nepochs=epochs,
                         n_groups=groups, early_stopping_patience=epochs + 1, seed=0)
    result = train(cfg, scan, verbose=0)
    return result.epoch_seconds[1:], result.models


def _checkpoint_write(models, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of one checkpoint write of ``models.training`` and its size (MiB)."""
    import tempfile
    from pathlib import Path

    from ptycho_k3.checkpoint import write_checkpoint

    if not models.training.optimizer.built:
        models.training.optimizer.build(models.training.trainable_variables)
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        path = Path(tmp) / "checkpoint.zip"
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            write_checkpoint(path, models.training, {"epoch": 1, "history": {}})
            times.append(time.perf_counter() - t0)
        return median(times), path.stat().st_size / 2**20


def run(settings: Settings, backend: str, shape: str) -> list[Record]:
    """Records of one training shape (``N64_gs1``, ``N64_gs2`` or ``N128_gs1``)."""
    index = [name for name, *_ in TRAIN_SHAPES].index(shape)
    _, n, gs, batch, precision = TRAIN_SHAPES[index]
    groups = settings.train_groups
    steps_epoch = _train_steps_per_epoch(groups, batch)
    cfg = {"N": n, "gridsize": gs, "batch_size": batch, "groups_per_epoch": groups,
           "precision": precision}
    if settings.train_epochs:
        epochs, models = _epoch_times(n, gs, batch, groups, settings.train_epochs, precision)
        s_epoch = median(epochs)
        step = s_epoch / steps_epoch  # includes validation and data pipeline, see README
        cfg.update(method=f"ptycho_k3.train.train, {settings.train_epochs} epochs, first dropped, "
                   "median; includes validation", samples_s=[round(t, 3) for t in epochs])
    else:
        steps, models = _step_times(n, gs, batch, settings.train_steps[index], precision)
        step = median(steps)
        s_epoch = step * steps_epoch
        cfg.update(method=f"train_on_batch: 1 warm-up + {len(steps)} timed steps, median step x "
                   f"{steps_epoch} steps/epoch (extrapolated, validation excluded)",
                   samples_s=[round(t, 3) for t in steps])
    flops = model_flops(models)
    train_groups = groups - max(1, round(groups * 0.05))
    gflops = flops.training_step * batch / step / 1e9
    rss = peak_rss_mib()
    tag = f"train {shape}"
    ckpt_s, ckpt_mib = _checkpoint_write(models)
    return [
        Record(backend, f"{tag} checkpoint write s/epoch", ckpt_s, "s",
               {**cfg, "method": "ptycho_k3.checkpoint.write_checkpoint of the trained model "
                "(weights + Adam state, atomic zip), median of 3; ptycho-train writes one per "
                "epoch", "checkpoint_mib": round(ckpt_mib, 2)}),
        Record(backend, f"{tag} s/epoch", s_epoch, "s", cfg),
        Record(backend, f"{tag} groups/s", train_groups / s_epoch, "groups/s", cfg),
        Record(backend, f"{tag} fwd+bwd GFLOP/s", gflops, "GFLOP/s",
               {**cfg, "gflop_per_group_step": round(flops.training_step / 1e9, 3),
                "estimate": "3 x forward; convs exact, physics tail estimated"}),
        Record(backend, f"{tag} peak RSS", rss, "MiB", {**cfg, "what": "VmHWM of the worker"}),
    ]

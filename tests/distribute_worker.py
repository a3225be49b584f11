"""One training and inference run for tests/test_distribute.py, in a process of its own.

Usage: ``python tests/distribute_worker.py MODE OUT.npz [SCAN.npz]`` with ``KERAS_BACKEND=jax``,
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` and, for several processes,
``KERAS_DISTRIBUTION_*`` set by the caller. Joins the processes first (before JAX computes
anything), simulates a small scan (and saves it to SCAN.npz when given), trains a tiny PINN for
:data:`EPOCHS` epochs with ``distribute=MODE``, reconstructs :data:`N_INFER` groups, and writes
the loss curves (per epoch and per step), the final weights and the predicted patches to
OUT.npz.
"""

from __future__ import annotations

import sys
import time

import numpy as np

#: 40 groups, 8 held out for validation -> 32 training groups = 4 steps of 8 an epoch: every
#: batch (training and validation) splits evenly over 1, 2 and 4 devices and over 2 processes,
#: so no run cuts a batch and all see the same groups.
N_IMAGES, N_GROUPS, N_VAL, BATCH, EPOCHS, LEARNING_RATE = 96, 40, 8, 8, 2, 1e-3
STEPS = (N_GROUPS - N_VAL) // BATCH  # an epoch
#: Groups reconstructed at inference in batches of 6: with 4 devices every batch is padded (to 8),
#: the last one (3 groups) too.
N_INFER, INFER_BATCH = 15, 6


def training_config(mode: str):
    """The run's :class:`~ptycho_k3.config.TrainingConfig` (the CLI test gives the same flags)."""
    from ptycho_k3.config import ModelConfig, TrainingConfig

    return TrainingConfig(model=ModelConfig(n_filters_scale=1), nepochs=EPOCHS,
                          n_groups=N_GROUPS, batch_size=BATCH,
                          validation_fraction=N_VAL / N_GROUPS, seed=1,
                          learning_rate=LEARNING_RATE, nphotons=1e9, distribute=mode)


def main(mode: str, out: str, scan_path: str | None = None) -> int:
    from ptycho_k3.backend import activate, skip_unused_frameworks

    skip_unused_frameworks(activate("jax"))  # as a command starts: no TensorFlow import
    from ptycho_k3 import distribute

    t0 = time.perf_counter()
    plan = distribute.setup(mode)  # before any JAX computation (joins the processes)
    from ptycho_k3.data import simulate_scan
    from ptycho_k3.infer import reconstruct
    from ptycho_k3.train import train

    scan = simulate_scan("lines", 64, n_images=N_IMAGES, nphotons=1e9, seed=3, object_size=160)
    if scan_path:
        from ptycho_k3.data.npz import save_npz

        save_npz(scan_path, scan)
    import keras

    steps: list[float] = []  # the loss after every step (Keras' running mean of the epoch)
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(float(logs["loss"])))
    result = train(training_config(mode), scan, verbose=0, callbacks=[record])
    weights = [np.asarray(w) for w in result.models.training.get_weights()]
    rec = reconstruct(result.models, scan, input_scale=result.input_scale, n_groups=N_INFER,
                      batch_size=INFER_BATCH, distribute_mode=mode)
    np.savez(out, loss=np.asarray(result.history["loss"]), step_loss=np.asarray(steps),
             val_loss=np.asarray(result.history["val_loss"]), patches=rec.patches,
             n_devices=plan.n_devices, n_processes=plan.n_processes,
             process_index=plan.process_index, seconds=time.perf_counter() - t0,
             **{f"w{i:02d}": w for i, w in enumerate(weights)})
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

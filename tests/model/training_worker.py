"""Train one model under one backend from shared NumPy weights and data (training parity).

Usage: ``KERAS_BACKEND=<name> python tests/model/training_worker.py job.npz result.npz``.

``job.npz`` holds ``configs`` (a JSON list of :class:`TrainingConfig` dicts, same architecture)
and ``mode``:

* ``init``: simulate a small scan of the LCLS fixture object under its probe and save it as
  ``scan.npz`` beside ``result.npz``; build the model once and write its freshly initialised
  weights (``w/<variable path>``) to ``result.npz``. Only one backend runs this; the others load
  its files, so no backend's random numbers ever have to agree with another's.
* ``train``: run :func:`ptycho_k3.train.train` itself on ``scan.npz`` — grouping, the seeded
  NumPy batch order and validation split, Adam at ``config.learning_rate`` on the model's own
  loss inside ``model.fit``, the learning-rate and stopping callbacks — with a callback that
  replaces the freshly built model's weights by ``w/<path>`` when training begins. Writes:

  - ``step_loss``: the ``loss`` Keras logs after every optimiser step (the batch-size weighted
    mean of the epoch so far) and ``step_epoch``, the epoch of each step;
  - ``batches``: the group indices of every training batch, in the order ``fit`` fetched them
    (``-1`` padded), so a test sees the data each backend really trained on;
  - ``hist/<key>``: the per-epoch history (``loss``, ``val_loss``, ``learning_rate``, ...);
  - ``w/<path>``: every weight after the last step;
  - ``init/<path>``: the weights the model was built with under this backend's own seeded
    initialisers (``config.seed``), before they were replaced — to compare their distributions.

  With several configurations, each is trained in turn and its keys are prefixed ``run<i>/``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lcls_probe_object.npz"
SCAN_POSITIONS = 512  # dense enough that gridsize-2 neighbours fit the group canvas


def weights_by_path(model) -> dict[str, np.ndarray]:
    from keras import ops

    out = {v.path: np.array(ops.convert_to_numpy(v)) for v in model.weights}
    if len(out) != len(model.weights):
        raise RuntimeError("variable paths are not unique")
    return out


def set_weights_by_path(model, weights: dict[str, np.ndarray]) -> None:
    paths = {v.path for v in model.weights}
    if paths != set(weights):
        raise RuntimeError(f"weights differ by path: missing {sorted(paths - set(weights))}, "
                           f"extra {sorted(set(weights) - paths)}")
    for v in model.weights:
        v.assign(weights[v.path])


def init(cfg, out_dir: Path) -> dict[str, np.ndarray]:
    from ptycho_k3 import physics
    from ptycho_k3.data import random_positions, save_npz, simulate_dataset
    from ptycho_k3.model import build_model
    from ptycho_k3.seeding import set_random_seed

    with np.load(FIXTURE) as f:
        probe, obj = f["probe"], f["object"]
    rng = np.random.default_rng(20240611)
    x, y = random_positions(SCAN_POSITIONS, obj.shape, probe.shape[0], rng)
    scan = simulate_dataset(obj, probe, x, y, cfg.nphotons, rng)
    save_npz(out_dir / "scan.npz", replace(scan, patches=None))
    s = physics.intensity_scale(cfg.nphotons, cfg.model.N)
    set_random_seed(12345)
    models = build_model(cfg.model, probe=probe, intensity_scale=s, loss=cfg.loss)
    return {f"w/{k}": v for k, v in weights_by_path(models.training).items()}


def run_training(cfg, weights: dict[str, np.ndarray], scan_path: Path) -> dict[str, np.ndarray]:
    import keras

    from ptycho_k3 import train as train_module
    from ptycho_k3.data import load_npz

    fetched: list[np.ndarray] = []
    training = [False]  # TensorFlow reads two batches before training to learn their shapes

    class RecordedBatches(train_module.GroupBatches):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            if training[0] and self.seed is not None:  # training batches (validation: no seed)
                fetched.append(np.sort(self._order[i * self.batch_size : (i + 1) * self.batch_size]))
            return x, y

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.loss, self.epoch, self.size = [], [], []
            self._epoch = 0

        def on_train_begin(self, logs=None):
            self.own_init = weights_by_path(self.model)
            set_weights_by_path(self.model, weights)
            training[0] = True

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.loss.append(float(logs["loss"]))
            self.epoch.append(self._epoch)

    record = Record()
    original = train_module.GroupBatches
    train_module.GroupBatches = RecordedBatches
    try:
        res = train_module.train(cfg, load_npz(scan_path), verbose=0, callbacks=[record])
    finally:
        train_module.GroupBatches = original
    width = max(len(b) for b in fetched)
    batches = np.full((len(fetched), width), -1, np.int64)
    for row, b in zip(batches, fetched, strict=True):
        row[: len(b)] = b
    out = {"step_loss": np.array(record.loss), "step_epoch": np.array(record.epoch),
           "batches": batches, "train_indices": res.train_indices}
    out.update({f"hist/{k}": np.array(v, np.float64) for k, v in res.history.items()})
    out.update({f"w/{k}": v for k, v in weights_by_path(res.models.training).items()})
    out.update({f"init/{k}": v for k, v in record.own_init.items()})
    return out


def main(src: str, dst: str) -> None:
    import keras

    from ptycho_k3.config import TrainingConfig

    with np.load(src) as f:
        job = {k: f[k] for k in f.files}
    configs = [TrainingConfig.from_dict(c) for c in json.loads(str(job["configs"]))]
    out_dir = Path(dst).parent
    if str(job["mode"]) == "init":
        result = init(configs[0], out_dir)
    else:
        weights = {k[2:]: v for k, v in job.items() if k.startswith("w/")}
        result = {}
        for i, cfg in enumerate(configs):
            run = run_training(cfg, weights, out_dir / "scan.npz")
            result.update({f"run{i}/{k}": v for k, v in run.items()})
    result["backend"] = np.array(keras.backend.backend())
    np.savez(dst, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

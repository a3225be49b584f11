"""Training: group the scan, build the model, ``model.fit`` with Keras callbacks.

One code path for every backend: the loss lives in :meth:`PtychoModel.compute_loss` (keras.ops),
data comes from a :class:`keras.utils.PyDataset` that hands over one batch at a time, and every
random choice (grouping, validation split, shuffles, weight initialisation) derives from
``config.seed``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ptycho_k3 import distribute, physics
from ptycho_k3.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointLog,
    Restorer,
    SignalStop,
    StopOnSignal,
    read_checkpoint,
    restore_model,
)
from ptycho_k3.config import TrainingConfig
from ptycho_k3.data import DataError, GroupedData, ScanData, group_scan
from ptycho_k3.data.grouping import named_error
from ptycho_k3.errors import RunFailure
from ptycho_k3.model import ModelPair, build_model
from ptycho_k3.seeding import set_random_seed

log = logging.getLogger(__name__)


class TrainingError(RunFailure):
    """Training could not produce a usable model (e.g. the loss became NaN). ``result`` holds
    the last good epoch's model when there was one."""

    def __init__(self, message: str, result: TrainResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        models: the trained training/inference model pair.
        history: per-epoch lists: ``loss``, ``val_loss``, each loss term and its ``val_`` twin,
            ``learning_rate``.
        grouped: the training groups (normalised diffraction, offsets, labels).
        input_scale: ``s = sqrt(nphotons) / (N/2)`` that multiplies normalised data at the input.
        nphotons: photons per pattern used for ``input_scale``.
        norm_factor: the normalisation factor applied to the training diffraction.
        epochs_run: epochs actually run (early stopping may end sooner).
        seconds_per_epoch: mean wall time of an epoch (excluding the first, which compiles).
        epoch_seconds: wall time of every epoch, the first included.
        train_indices, val_indices: group indices of the two parts of the split.
        stopped_by: the signal's name when a signal ended training (the models are then the
            last completed epoch's), else None.
        checkpoint_seconds: wall time of every checkpoint written.
    """

    models: ModelPair
    history: dict[str, list[float]]
    grouped: GroupedData
    input_scale: float
    nphotons: float
    norm_factor: float
    epochs_run: int
    seconds_per_epoch: float
    epoch_seconds: list[float]
    train_indices: np.ndarray
    val_indices: np.ndarray
    stopped_by: str | None = None
    checkpoint_seconds: list[float] = field(default_factory=list)


def model_inputs(grouped: GroupedData, input_scale: float, groups: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(s * X (b, N, N, C) float32, relative offsets (b, 1, 2, C) float32)`` of the groups
    ``groups`` (int ``(b,)``; default all ``B``).

    The diffraction of exactly those groups is gathered from ``grouped.diffraction`` (a
    :class:`~ptycho_k3.data.GroupedDiffraction` reads them from the scan on demand) and
    multiplied by ``input_scale`` in float32: one batch costs one batch of memory, and the
    values equal those of the whole array scaled at once, element for element.
    """
    sel = slice(None) if groups is None else np.asarray(groups)
    x = np.multiply(grouped.diffraction[sel], np.float32(input_scale), dtype=np.float32)
    return x, grouped.coords_relative[sel].astype(np.float32)


def label_targets(grouped: GroupedData) -> dict[str, np.ndarray]:
    """Amplitude and phase labels ``(B, N, N, C)`` from the ground-truth patches."""
    if grouped.patches is None:
        raise DataError(
            "this loss needs ground-truth patches, but the dataset has neither 'Y' nor "
            "'objectGuess'"
        )
    return {
        "label_amp": np.abs(grouped.patches).astype(np.float32),
        "label_phase": np.angle(grouped.patches).astype(np.float32),
    }


class GroupFeed:
    """The model's inputs and targets of the groups asked for, gathered per batch.

    ``feed[idx]`` (int ``(b,)``) is ``((s X, offsets), targets)`` of those groups: the
    diffraction is gathered and scaled by :func:`model_inputs` (from the scan, when grouped
    lazily); the PINN's ``amplitude`` target is the same array as the input (one gather); the
    ``valid`` mask (docs/conventions.md §22) is gathered for the same groups. Labels
    (``label_amp``, ``label_phase``: supervised or real-space terms) are held whole, built once
    from the grouped ground truth (:func:`label_targets`).

    Args:
        grouped: the groups (lazy or not).
        input_scale: ``s``.
        amplitude: give the ``amplitude`` target (PINN).
        labels: the label arrays ``(B, N, N, C)`` by target name (may be empty).
    """

    def __init__(self, grouped: GroupedData, input_scale: float, *, amplitude: bool,
                 labels: dict[str, np.ndarray] | None = None):
        self.grouped = grouped
        self.input_scale = float(input_scale)
        self.amplitude = amplitude
        self.labels = dict(labels or {})

    def __len__(self) -> int:
        return self.grouped.n_groups

    def __getitem__(self, idx: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray],
                                                     dict[str, np.ndarray]]:
        idx = np.asarray(idx)
        x, offsets = model_inputs(self.grouped, self.input_scale, idx)
        targets: dict[str, np.ndarray] = {}
        if self.amplitude:
            targets["amplitude"] = x
            valid = self.grouped.valid
            if valid is not None:
                targets["valid"] = valid[idx]
            elif hasattr(self.grouped.diffraction, "valid_groups"):
                v = self.grouped.diffraction.valid_groups(idx)
                if v is not None:
                    targets["valid"] = v  # invalid detector pixels leave the loss
        targets.update({k: v[idx] for k, v in self.labels.items()})
        return (x, offsets), targets


class GroupBatches(keras.utils.PyDataset):
    """Batches of groups; with ``seed`` the order of epoch ``e`` is a permutation drawn from
    ``(seed, e)`` alone, so a resumed run (:mod:`ptycho_k3.checkpoint`) sees the same batches
    as one that never stopped.

    Only the current batch is gathered (from the scan, for lazily grouped data) and converted
    to backend tensors, so neither host nor device memory grows with the dataset. ``source`` is
    a :class:`GroupFeed` (``source[idx] -> (inputs, targets)``); the older form
    ``(inputs, targets)`` with arrays indexed by group is accepted too. Inputs are
    ``(s X, offsets)``; targets a dict (see :class:`PtychoModel`).
    ``shards``: under ``--distribute`` a batch is this process's part of the global batch, the
    last one cut to a multiple of the devices (:class:`ptycho_k3.distribute.ShardPlan`).
    """

    def __init__(self, inputs: GroupFeed | tuple[np.ndarray, ...],
                 targets: dict[str, np.ndarray] | None, indices: np.ndarray, batch_size: int,
                 seed: int | None, epoch: int = 0,
                 shards: distribute.ShardPlan = distribute.NO_DISTRIBUTION):
        super().__init__()
        self.shards = shards
        self.inputs, self.targets = inputs, targets
        self.indices = np.array(indices)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if self.seed is None:
            return self.indices
        return np.random.default_rng([self.seed, 0xBA7C, self.epoch]).permutation(self.indices)

    def __len__(self) -> int:
        return self.shards.n_batches(len(self.indices), self.batch_size)

    def __getitem__(self, i: int):
        idx = self.shards.local_batch(self._order, i, self.batch_size)
        if isinstance(self.inputs, GroupFeed):
            return self.inputs[idx]
        x = tuple(a[idx] for a in self.inputs)
        y = {k: v[idx] for k, v in (self.targets or {}).items()}
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._new_order()


class _EpochRecorder(keras.callbacks.Callback):
    """Records the learning rate and the wall time of every epoch."""

    def __init__(self):
        super().__init__()
        self.learning_rates: list[float] = []
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)
        lr = self.model.optimizer.learning_rate
        self.learning_rates.append(float(keras.ops.convert_to_numpy(lr)))


def split_groups(n_groups: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random hold-out: ``(train_indices, val_indices)``, sorted, at least one each."""
    if n_groups < 2:
        raise DataError(
            f"only {n_groups} group(s) could be formed: training needs at least 2 (one held out "
            "for validation)"
        )
    n_val = min(max(1, round(n_groups * fraction)), n_groups - 1)
    order = np.random.default_rng([seed, 0x5EED]).permutation(n_groups)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Training data checked against a configuration and grouped (:func:`prepare`).

    Attributes:
        config: the configuration it was prepared for.
        grouped: the training groups (normalised diffraction, offsets, labels when needed).
        input_scale: ``s = sqrt(nphotons) / (N/2)``.
        train_indices, val_indices: group indices of the seeded validation split.
    """

    config: TrainingConfig
    grouped: GroupedData
    input_scale: float
    train_indices: np.ndarray
    val_indices: np.ndarray


def prepare(config: TrainingConfig, train_data: ScanData) -> PreparedData:
    """Check ``train_data`` against ``config``, group it and split off the validation groups.

    Everything in a training run that depends on the data and can fail on it happens here,
    before a model is built; nothing is written. Call it first to refuse bad input before
    creating any output, then pass the result to :func:`train` (``prepared=``).

    Raises:
        DataError: the data does not fit the configuration (N, labels, too few positions for
            the grouping, zero energy, fewer than 2 groups); the message names the file.
        ConfigError: an unsupported configuration.
    """
    mcfg = config.model
    spec = config.loss  # resolves (model_type, weights): an unsupported pair fails here
    if train_data.n != mcfg.N:
        raise DataError(
            f"{train_data.source or 'training data'}: diffraction patterns are "
            f"{train_data.n}x{train_data.n} but the model is configured for N={mcfg.N}"
        )
    if spec.needs_labels and train_data.patches is None and train_data.object is None:
        raise DataError(
            f"{train_data.source or 'training data'}: {spec.model_type} training with terms "
            f"{', '.join(spec.metric_names)} needs labels: key 'Y' or 'objectGuess'"
        )
    grouped = group_scan(
        train_data, mcfg.gridsize, n_groups=config.n_groups, neighbor_count=config.neighbor_count,
        seed=config.seed, sequential=config.sequential_sampling,
        enable_oversampling=config.enable_oversampling,
        neighbor_pool_size=config.neighbor_pool_size, n_subsample=config.n_subsample,
        subsample_seed=config.subsample_seed, with_patches=spec.needs_labels,
        canvas_size=mcfg.canvas_size, lazy=True,  # batches are gathered when trained on
    )
    try:
        tr_idx, va_idx = split_groups(grouped.n_groups, config.validation_fraction, config.seed)
    except DataError as exc:
        raise named_error(exc, train_data.source) from None
    return PreparedData(config=config, grouped=grouped,
                        input_scale=physics.intensity_scale(config.nphotons, mcfg.N),
                        train_indices=tr_idx, val_indices=va_idx)


def train(config: TrainingConfig, train_data: ScanData, *, test_data: ScanData | None = None,
          verbose: int = 1, callbacks=(), prepared: PreparedData | None = None,
          checkpoint_path: Path | None = None, resume: Checkpoint | None = None,
          stop: SignalStop | None = None, checkpoint_extra: dict | None = None) -> TrainResult:
    """Train a PtychoPINN (or supervised) model on ``train_data``.

    ``test_data`` is accepted for the CLI's convenience but not used for fitting (validation is a
    seeded random ``validation_fraction`` of the training groups). ``prepared`` is the result of
    :func:`prepare` for the same ``config`` and data (default: prepared here).

    Checkpoints (:mod:`ptycho_k3.checkpoint`): with ``checkpoint_path`` one is written after
    every completed epoch (``checkpoint_extra`` recorded in it); ``resume`` continues from one
    (weights, optimiser, schedule, history; the run ends at ``config.nepochs`` epochs in all);
    ``stop`` ends training after the current step when a signal arrives, and the model is then
    put back to the last completed epoch (:attr:`TrainResult.stopped_by`).

    Raises:
        DataError: unusable data (checked before any model is built).
        TrainingError: the loss became NaN/inf; the message names the epoch, and the last good
            epoch's weights stay in the checkpoint (and in ``TrainingError.result``).
    """
    del test_data
    if prepared is None:
        prepared = prepare(config, train_data)
    elif prepared.config != config:
        raise ValueError("train: 'prepared' was made for a different configuration")
    mcfg, spec = config.model, config.loss
    grouped, input_scale = prepared.grouped, prepared.input_scale
    tr_idx, va_idx = prepared.train_indices, prepared.val_indices
    # Batches are gathered from the (lazily grouped) scan one at a time; labels stay whole.
    feed = GroupFeed(grouped, input_scale, amplitude=spec.model_type == "pinn",
                     labels=label_targets(grouped) if spec.needs_labels else None)

    plan = distribute.setup(config.distribute)  # --distribute: devices, processes, the scope
    plan.check_batch_size(config.batch_size)
    plan.check_groups(len(va_idx), "validation")
    set_random_seed(config.seed)
    with plan.scope():  # variables (model and optimizer) replicated on every device
        models = build_model(mcfg, probe=grouped.probe, intensity_scale=input_scale, loss=spec)
        models.training.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate))
    first_epoch = 0 if resume is None else resume.epoch
    previous = {} if resume is None else resume.state.get("history", {})
    train_batches = GroupBatches(feed, None, tr_idx, config.batch_size, config.seed,
                                 epoch=first_epoch, shards=plan)
    val_batches = GroupBatches(feed, None, va_idx, config.batch_size, None, shards=plan)
    recorder = _EpochRecorder()
    schedule = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.lr_factor,
                                          patience=config.lr_patience, min_lr=config.min_lr),
        keras.callbacks.EarlyStopping(monitor="loss", patience=config.early_stopping_patience),
    ]
    keras_history = keras.callbacks.History()

    def history_so_far() -> dict[str, list[float]]:
        return _history(previous, keras_history.history, recorder)

    ckpt_log = CheckpointLog(last_epoch=first_epoch)
    cbs = [keras_history, *schedule]
    if resume is not None:
        cbs.append(Restorer(resume, schedule))
    cbs += [keras.callbacks.TerminateOnNaN(), recorder, *callbacks]
    if stop is not None:
        cbs.append(StopOnSignal(stop))
    if checkpoint_path is not None:
        cbs.append(Checkpointer(checkpoint_path, schedule, history_so_far,
                                dict(checkpoint_extra or {}), stop=stop, log=ckpt_log))
    if first_epoch < config.nepochs:
        # shuffle=False: GroupBatches shuffles, by (seed, epoch); Keras's own batch shuffle
        # draws from a global generator that a resumed process cannot put back.
        with plan.scope():
            models.training.fit(train_batches, validation_data=val_batches,
                                epochs=config.nepochs, initial_epoch=first_epoch, callbacks=cbs,
                                verbose=verbose, shuffle=False)
    elif resume is not None:  # nothing left to train: the checkpoint is the result
        restore_model(models.training, resume)
    history = history_so_far()
    losses = history.get("loss", [])
    stopped_by = stop.name if stop is not None and stop.signum is not None else None
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    if stopped_by or not finite:
        # The weights are mid-epoch (or NaN): go back to the last completed good epoch.
        good = _last_good(checkpoint_path, ckpt_log, resume)
        if good is not None:
            restore_model(models.training, good)
            history = good.state.get("history", {})
        elif not finite:
            history = {}
    secs = recorder.seconds[1:] or recorder.seconds
    result = TrainResult(
        models=models, history=history, grouped=grouped, input_scale=input_scale,
        nphotons=float(config.nphotons), norm_factor=float(grouped.norm_factor),
        epochs_run=len(history.get("loss", [])),
        seconds_per_epoch=float(np.mean(secs)) if secs else 0.0,
        epoch_seconds=list(recorder.seconds), train_indices=tr_idx, val_indices=va_idx,
        stopped_by=stopped_by, checkpoint_seconds=list(ckpt_log.seconds),
    )
    if not finite:
        bad = len(losses)
        kept = (f"the weights of epoch {result.epochs_run} (the last good one) are kept"
                if result.epochs_run else "no epoch completed with a finite loss")
        raise TrainingError(
            f"training loss became NaN/inf in epoch {bad}; {kept}; try a lower "
            "--learning_rate, check that the diffraction is amplitude (not intensity), or "
            "change --seed", result=result if result.epochs_run else None)
    return result


def _history(previous: dict[str, list[float]], current: dict[str, list[Any]],
             recorder: _EpochRecorder) -> dict[str, list[float]]:
    """The run's history: the resumed part, then this run's epochs (floats)."""
    out = {k: list(v) for k, v in previous.items()}
    for key, values in current.items():
        if key == "learning_rate":
            continue  # recorded below, one value per epoch
        out.setdefault(key, []).extend(float(v) for v in values)
    out.setdefault("learning_rate", []).extend(recorder.learning_rates)
    return out


def _last_good(path: Path | None, log: CheckpointLog, resume: Checkpoint | None
               ) -> Checkpoint | None:
    """The checkpoint of the last completed finite epoch (written by this run or resumed)."""
    if path is not None and log.last_epoch > 0 and path.exists():
        return read_checkpoint(path)
    return resume

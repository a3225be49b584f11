"""Checkpoints and resume (ptycho_k3.checkpoint): a run interrupted after epoch k and resumed
ends with the weights of a run that never stopped; a NaN loss keeps the last good epoch; a
signal ends training after the current step with the last completed epoch's weights."""

from __future__ import annotations

import os
import signal

import keras
import numpy as np
import pytest

from ptycho_k3.checkpoint import CheckpointError, SignalStop, read_checkpoint
from ptycho_k3.config import ModelConfig, TrainingConfig
from ptycho_k3.train import TrainingError, train

#: Resumed vs uninterrupted final weights, max |diff| / max |w| per array. Every backend runs the
#: same float32 ops in the same order on this CPU, so the runs agree bit for bit here; the bound
#: leaves room for a backend whose CPU kernels reduce in a thread-dependent order (one Adam step
#: of lr 1e-3 changes a weight by ~1e-3 relative, 1e-6 is three orders below it).
RESUME_RTOL = 1e-6


@pytest.fixture(scope="module")
def scan():
    from ptycho_k3.data.simulate import simulate_scan

    return simulate_scan("lines", 64, 48, 1e6, seed=3, n_test_images=1)


def _config(tmp_path, nepochs: int) -> TrainingConfig:
    return TrainingConfig(model=ModelConfig(N=64, n_filters_scale=1, hidden_activation="swish"),
                          nepochs=nepochs, batch_size=8, n_groups=40, seed=5,
                          output_dir=str(tmp_path), early_stopping_patience=5)


def _max_rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-30))
               for x, y in zip(a, b, strict=True))


def test_interrupted_and_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, scan):
    whole = train(_config(tmp_path / "a", 3), scan, verbose=0,
                  checkpoint_path=tmp_path / "a.zip")
    part = train(_config(tmp_path / "b", 1), scan, verbose=0,
                 checkpoint_path=tmp_path / "b.zip")
    ckpt = read_checkpoint(tmp_path / "b.zip")
    assert ckpt.epoch == 1 and part.epochs_run == 1
    resumed = train(_config(tmp_path / "b", 3), scan, verbose=0, resume=ckpt,
                    checkpoint_path=tmp_path / "b.zip")
    assert resumed.epochs_run == 3 and read_checkpoint(tmp_path / "b.zip").epoch == 3
    diff = _max_rel(whole.models.training.get_weights(), resumed.models.training.get_weights())
    print(f"\nresumed vs uninterrupted weights ({keras.backend.backend()}): {diff:.2e}")
    assert diff <= RESUME_RTOL
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-5)
    assert len(resumed.history["learning_rate"]) == 3


def test_nan_loss_keeps_the_last_good_epoch(tmp_path, scan):
    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                w = self.model.trainable_variables[0]
                w.assign(np.full(w.shape, np.nan, dtype="float32"))

    path = tmp_path / "ckpt.zip"
    with pytest.raises(TrainingError, match="NaN/inf in epoch 2; the weights of epoch 1") as err:
        train(_config(tmp_path, 3), scan, verbose=0, checkpoint_path=path,
              callbacks=[Poison()])
    kept = err.value.result
    assert kept is not None and kept.epochs_run == 1
    assert all(np.all(np.isfinite(w)) for w in kept.models.training.get_weights())
    assert read_checkpoint(path).epoch == 1


def test_a_signal_stops_after_the_step_with_the_last_completed_epoch(tmp_path, scan):
    stop = SignalStop()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if getattr(self, "epoch", 0) == 1 and batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    path = tmp_path / "ckpt.zip"
    with stop.installed():
        result = train(_config(tmp_path, 3), scan, verbose=0, checkpoint_path=path, stop=stop,
                       callbacks=[Interrupt()])
    assert result.stopped_by == "SIGTERM" and stop.exit_status == 143
    assert result.epochs_run == 1 and read_checkpoint(path).epoch == 1
    np.testing.assert_array_equal(result.models.training.get_weights()[0],
                                  read_checkpoint(path).weights[0])
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_foreign_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.zip")
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        read_checkpoint(tmp_path / "x.zip")

"""Training checkpoints, resume, and stopping on a signal.

After every completed epoch :class:`Checkpointer` writes ``<output_dir>/checkpoint.zip``
atomically (a temporary name in the same directory, then a rename), so a run killed at any
moment (even ``kill -9``) leaves the last completed epoch loadable. Members:

    state.json      format, epoch (completed epochs), history so far, the learning-rate
                    schedule (ReduceLROnPlateau) and early-stopping states, the reading
                    options, the backend that wrote it
    weights.npz     the training model's weights, in ``model.get_weights()`` order
    optimizer.npz   the optimiser's variables (Adam moments, iteration count, learning rate)

Resuming restores all of it before the first resumed epoch; the shuffle order of epoch ``e`` is
a function of ``(seed, e)`` (:class:`ptycho_k3.train.GroupBatches`), so a run interrupted after
epoch k and resumed takes the same steps as one that was never interrupted.

:class:`SignalStop` turns SIGINT / SIGTERM into "stop after the current step": the partial
epoch is abandoned (not checkpointed) and the workflow writes the bundle of the last completed
epoch. Arrays are stored with ``allow_pickle=False``; nothing in a checkpoint is unpickled.
"""

from __future__ import annotations

import io
import json
import math
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ptycho_k3.atomic import atomic_path
from ptycho_k3.errors import CheckpointError

__all__ = ["CheckpointError", "Checkpoint", "Checkpointer", "SignalStop", "read_checkpoint"]

CHECKPOINT_NAME = "checkpoint.zip"
FORMAT_NAME = "ptycho-k3-checkpoint"
FORMAT_VERSION = 1
#: Exit status of a run stopped by a signal (128 + the signal number, as shells report it).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Checkpoint:
    """A checkpoint read back (:func:`read_checkpoint`).

    Attributes:
        path: the zip.
        epoch: completed epochs (the resumed run starts at this 0-based epoch index).
        state: the parsed ``state.json``.
        weights: the training model's weights in ``get_weights()`` order.
        optimizer: the optimiser's variables in ``optimizer.variables`` order.
    """

    path: Path
    epoch: int
    state: dict[str, Any]
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]


def _npz_bytes(arrays: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i:04d}": np.asarray(a) for i, a in enumerate(arrays)})
    return buf.getvalue()


def _npz_arrays(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return [z[k] for k in sorted(z.files)]


def write_checkpoint(path: Path, model: keras.Model, state: dict[str, Any]) -> Path:
    """Write ``model``'s weights and optimiser state with ``state`` to ``path`` atomically."""
    weights = [np.asarray(w) for w in model.get_weights()]
    opt = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **state}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("state.json", json.dumps(full, allow_nan=True))
        zf.writestr("weights.npz", _npz_bytes(weights))
        zf.writestr("optimizer.npz", _npz_bytes(opt))
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint`.

    Raises:
        CheckpointError: missing, not a zip, a foreign or newer format, missing members.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (a run writes one after its first epoch)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = {"state.json", "weights.npz", "optimizer.npz"} - names
            if missing:
                raise CheckpointError(f"{path}: not a ptycho-k3 checkpoint (missing "
                                      f"{', '.join(sorted(missing))})")
            state = json.loads(zf.read("state.json"))
            weights = _npz_arrays(zf.read("weights.npz"))
            opt = _npz_arrays(zf.read("optimizer.npz"))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if state.get("format") != FORMAT_NAME or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {state.get('format')!r} version "
                              f"{state.get('format_version')!r}; expected {FORMAT_NAME!r} "
                              f"version {FORMAT_VERSION}")
    return Checkpoint(path=path, epoch=int(state["epoch"]), state=state, weights=weights,
                      optimizer=opt)


# Callback states that decide what later epochs do (restored on resume).
_SCHEDULE_FIELDS = {
    keras.callbacks.ReduceLROnPlateau: ("best", "wait", "cooldown_counter"),
    keras.callbacks.EarlyStopping: ("best", "wait", "stopped_epoch", "best_epoch"),
}


def _callback_states(callbacks: list[Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for cb in callbacks:
        for kind, names in _SCHEDULE_FIELDS.items():
            if isinstance(cb, kind):
                out[kind.__name__] = {n: _plain(getattr(cb, n)) for n in names}
    return out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, int | str):
        return value
    return float(value)


@dataclass
class SignalStop:
    """SIGINT / SIGTERM -> stop after the current step (see :meth:`installed`)."""

    signum: int | None = None

    @property
    def exit_status(self) -> int:
        return SIGNAL_EXIT.get(self.signum, 128 + int(self.signum or 0))

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @contextmanager
    def installed(self) -> Iterator[SignalStop]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only; elsewhere a no-op).
        A second signal of either kind restores the default handler's behaviour at once."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in SIGNAL_EXIT}

        def handler(signum, frame):
            if self.signum is not None:  # asked twice: stop now
                signal.signal(signum, previous[signum])
                raise KeyboardInterrupt
            self.signum = signum

        for s in SIGNAL_EXIT:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class StopOnSignal(keras.callbacks.Callback):
    """Ends ``fit`` after the step during which a signal arrived."""

    def __init__(self, stop: SignalStop):
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch, logs=None):
        if self.stop.signum is not None:
            self.model.stop_training = True


@dataclass
class CheckpointLog:
    """What :class:`Checkpointer` did: the last epoch written and the seconds each write took."""

    last_epoch: int = 0
    seconds: list[float] = field(default_factory=list)


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint after every completed, finite epoch (placed last among the
    callbacks, so the schedule states it records are those after the epoch).

    Args:
        path: the checkpoint zip.
        schedule: the callbacks whose state is recorded (ReduceLROnPlateau, EarlyStopping).
        history: ``epoch logs -> the full history so far`` (the resumed part included).
        extra: JSON-ready values recorded as they are (reading options, backend, seed).
        stop: the run's :class:`SignalStop` (an interrupted epoch is not checkpointed).
    """

    def __init__(self, path: Path, schedule: list[Any], history: Any, extra: dict[str, Any],
                 stop: SignalStop | None = None, log: CheckpointLog | None = None):
        super().__init__()
        self.path, self.schedule, self.history = path, schedule, history
        self.extra, self.stop = extra, stop
        self.log = log if log is not None else CheckpointLog()

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.stop is not None and self.stop.signum is not None:
            return  # a partial epoch
        if loss is None or not math.isfinite(float(loss)):
            return  # the last good checkpoint stays
        t0 = time.perf_counter()
        write_checkpoint(self.path, self.model, {
            "epoch": epoch + 1, "history": self.history(), "schedule":
            _callback_states(self.schedule), **self.extra})
        self.log.last_epoch = epoch + 1
        self.log.seconds.append(time.perf_counter() - t0)


class Restorer(keras.callbacks.Callback):
    """Puts a checkpoint's weights, optimiser and schedule states back at the start of ``fit``
    (after the schedule callbacks reset themselves in their ``on_train_begin``: place it after
    them)."""

    def __init__(self, checkpoint: Checkpoint, schedule: list[Any]):
        super().__init__()
        self.checkpoint, self.schedule = checkpoint, schedule

    def on_train_begin(self, logs=None):
        restore_model(self.model, self.checkpoint)
        states = self.checkpoint.state.get("schedule", {})
        for cb in self.schedule:
            for name, value in states.get(type(cb).__name__, {}).items():
                setattr(cb, name, value)


def restore_model(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Set ``model``'s weights and (built) optimiser variables from ``checkpoint``."""
    current = model.get_weights()
    if len(current) != len(checkpoint.weights) or any(
            a.shape != b.shape for a, b in zip(current, checkpoint.weights, strict=True)):
        raise CheckpointError(f"{checkpoint.path}: its weights do not fit this model (another "
                              "configuration wrote it)")
    model.set_weights(checkpoint.weights)
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    if len(opt.variables) != len(checkpoint.optimizer):
        raise CheckpointError(f"{checkpoint.path}: {len(checkpoint.optimizer)} optimiser "
                              f"variables, this model's optimiser has {len(opt.variables)}")
    for var, value in zip(opt.variables, checkpoint.optimizer, strict=True):
        var.assign(value)

"""The training workflow of ``ptycho-train``: resolved settings -> every output file.

Order (the README's promise): settings, the training and test scans, the grouping,
normalisation and validation split are all checked before ``output_dir``, ``train.log`` or
``config.yaml`` exist; then training, with a checkpoint after every epoch
(:mod:`ptycho_k3.checkpoint`), the bundle, the history, and with ``do_stitching`` the inference
outputs of the test scan. Keras is imported after the input checks.

Once training has started the directory stays usable whatever happens: ``config.yaml`` and the
checkpoint are written atomically; SIGINT / SIGTERM end training after the current step and
write the bundle of the last completed epoch (exit 130 / 143); a NaN loss keeps the last good
epoch's bundle (exit 3); ``--resume DIR`` continues from DIR's checkpoint and writes there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ptycho_k3.config import ConfigError, InferenceConfig, TrainingConfig
from ptycho_k3.config_io import Merged, load_yaml, merge_training, nphotons_message
from ptycho_k3.errors import RunFailure

CHECKPOINT_NAME = "checkpoint.zip"
#: Settings a resumed run may change (every other one is the checkpointed run's).
RESUMABLE = ("nepochs",)


class Stopped(RunFailure):
    """Training ended by a signal; ``exit_status`` is 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def _resume_settings(directory: str, explicit: dict[str, Any], config_path: str | None,
                     reading: Any) -> tuple[dict[str, Any], str, Any]:
    """The flags, config file and reading options of a resumed run, and its checkpoint.

    Raises:
        ConfigError: DIR has no config.yaml, or a flag other than ``--nepochs`` is given.
        CheckpointError: DIR has no readable checkpoint.
    """
    from ptycho_k3.checkpoint import read_checkpoint
    from ptycho_k3.data.measured import MeasuredOptions

    root = Path(directory)
    config_file = root / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"--resume {directory}: no config.yaml there (give the --output_dir "
                          "of an earlier ptycho-train run)")
    fixed = sorted(k for k in explicit if k not in RESUMABLE)
    if config_path or fixed or reading != MeasuredOptions():
        given = ["--config"] if config_path else []
        given += [f"--{k}" for k in fixed] + ([] if reading == MeasuredOptions() else
                                              ["reading flags"])
        raise ConfigError(f"--resume {directory} continues with the settings of "
                          f"{config_file}; {', '.join(given)} cannot change them (only "
                          f"{', '.join('--' + k for k in RESUMABLE)} can)")
    checkpoint = read_checkpoint(root / CHECKPOINT_NAME)
    stored = MeasuredOptions(**checkpoint.state.get("reading_options", {}))
    return {**explicit, "output_dir": str(root)}, str(config_file), (checkpoint, stored)


def _check_resumable(checkpoint: Any, cfg: TrainingConfig, backend: str,
                     log: logging.Logger) -> None:
    """The checkpoint was written for this configuration (but for nepochs and output_dir)."""
    from ptycho_k3.checkpoint import CheckpointError

    mine = {k: v for k, v in cfg.to_dict().items() if k not in ("nepochs", "output_dir")}
    theirs = {k: v for k, v in checkpoint.state.get("config", {}).items()
              if k not in ("nepochs", "output_dir")}
    if mine != theirs:
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckpointError(f"{checkpoint.path}: written for another configuration "
                              f"(differs in {', '.join(changed)})")
    if checkpoint.epoch >= cfg.nepochs:
        log.warning("%s holds %d epochs and --nepochs is %d: nothing left to train; the "
                    "outputs are rewritten from it", checkpoint.path, checkpoint.epoch,
                    cfg.nepochs)
    if checkpoint.state.get("backend") not in (None, backend):
        log.warning("%s was written under %s, resumed under %s: the run continues, but not "
                    "bit for bit as it would have", checkpoint.path,
                    checkpoint.state.get("backend"), backend)




def merge(explicit: dict[str, Any], config_path: str | None,
          metadata_nphotons: float | None = None) -> Merged:
    """Flags (``explicit``) > the ``--config`` YAML > the file's nphotons > defaults."""
    yaml_map = load_yaml(config_path) if config_path else None
    return merge_training(explicit, yaml_map, metadata_nphotons=metadata_nphotons,
                          yaml_source=str(config_path))


def _check_n(scan: Any, path: str, config: TrainingConfig) -> None:
    from ptycho_k3.data import DataError

    if scan.n != config.model.N:
        raise DataError(f"{path}: diffraction patterns are {scan.n}x{scan.n} but --N is "
                        f"{config.model.N}")


def run_training(explicit: dict[str, Any], config_path: str | None, reading: Any, *,
                 backend: str, log: logging.Logger, verbosity: int, progress: bool,
                 resume: str | None = None) -> list[Path]:
    """Train as ``ptycho-train`` does and return the written paths.

    Args:
        explicit: the settings the user gave on the command line (config field names, model
            fields flat, ``do_stitching``, ``n_images`` and legacy names).
        config_path: the ``--config`` YAML, or None.
        reading: the :class:`~ptycho_k3.data.MeasuredOptions` of both scans.
        backend: the active backend (recorded in config.yaml and history.json).
        log: the command's logger.
        verbosity: Keras ``verbose`` of the fit (0, 1 or 2).
        progress: progress bar of the stitching.
        resume: an earlier run's ``--output_dir``: continue from its checkpoint, with its
            settings (only ``--nepochs`` may change), writing into it.

    Raises:
        ConfigError, DataError, CheckpointError: bad settings, data or checkpoint, before
            anything is written.
        Stopped: SIGINT / SIGTERM ended training (the last completed epoch's bundle written).
        TrainingError: a NaN/inf loss (the last good epoch's bundle written when there is one).
    """
    from ptycho_k3.data import load_scan

    checkpoint = None
    if resume is not None:
        explicit, config_path, (checkpoint, reading) = _resume_settings(
            resume, explicit, config_path, reading)
    first = merge(explicit, config_path)  # validates flags and YAML (a bad --N fails here)
    if not first.config.train_data_file:
        raise ConfigError("--train_data_file is required (or train_data_file in --config)")
    from ptycho_k3 import distribute

    distribute.validate(first.config.distribute, backend)  # e.g. data_parallel needs jax
    train_scan = load_scan(first.config.train_data_file, reading)
    merged = merge(explicit, config_path, metadata_nphotons=train_scan.nphotons)
    cfg = merged.config
    _check_n(train_scan, cfg.train_data_file, cfg)
    test_scan = load_scan(cfg.test_data_file, reading) if cfg.test_data_file else None
    if test_scan is not None:
        _check_n(test_scan, cfg.test_data_file, cfg)
    do_stitching = bool(merged.run.get("do_stitching", False))
    if do_stitching and test_scan is None:
        raise ConfigError("--do_stitching needs --test_data_file")
    if checkpoint is not None:
        _check_resumable(checkpoint, cfg, backend, log)

    import keras

    from ptycho_k3 import __version__
    from ptycho_k3.checkpoint import SignalStop
    from ptycho_k3.train import TrainingError, prepare, train

    log.info("ptycho-k3 %s, keras %s, backend %s", __version__, keras.__version__, backend)
    log.info("%s", nphotons_message(merged, train_scan.nphotons))
    log.debug("settings not at their default: %s",
              {k: v for k, v in merged.sources.items() if v != "default"})
    # Processes join (KERAS_DISTRIBUTION_*) before JAX computes anything; a batch that does not
    # split over the devices is refused before any output exists.
    plan = distribute.setup(cfg.distribute)
    plan.check_batch_size(cfg.batch_size)
    # The data checks of the run (grouping, normalisation, validation split; the test scan's
    # grouping) pass before the output directory, train.log or config.yaml exist.
    prepared = prepare(cfg, train_scan)
    plan.check_groups(len(prepared.val_indices), "validation")
    stitching = InferenceConfig(n_groups=cfg.n_groups, seed=cfg.seed,
                                neighbor_count=cfg.neighbor_count, distribute=cfg.distribute)
    test_groups = None
    if do_stitching:
        from ptycho_k3.infer import group_for_inference

        test_groups = group_for_inference(test_scan, cfg.model.gridsize,
                                          n_groups=stitching.n_groups, seed=stitching.seed,
                                          neighbor_count=stitching.neighbor_count,
                                          canvas_size=cfg.model.canvas_size)

    from ptycho_k3.config_io import save_config_yaml
    from ptycho_k3.logs import add_log_file

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "train.log")
    if checkpoint is not None:
        log.info("resuming from %s after epoch %d", checkpoint.path, checkpoint.epoch)
    save_config_yaml(out_dir / "config.yaml", cfg, {"do_stitching": do_stitching},
                     header=f"effective ptycho-train config (backend {backend}); "
                            "reload with --config")

    stop = SignalStop()
    t0 = time.perf_counter()
    try:
        with stop.installed():
            result = train(cfg, train_scan, test_data=test_scan, verbose=verbosity,
                           prepared=prepared, checkpoint_path=out_dir / CHECKPOINT_NAME,
                           resume=checkpoint, stop=stop,
                           checkpoint_extra={"reading_options": reading.to_dict(),
                                             "backend": backend, "config": cfg.to_dict()})
    except TrainingError as exc:
        if exc.result is None:
            raise
        seconds = time.perf_counter() - t0
        written = _save_training(out_dir, cfg, exc.result, train_scan, merged, reading,
                                 backend, seconds)
        raise TrainingError(f"{exc}; wrote the bundle of epoch {exc.result.epochs_run} to "
                            f"{written[0]}", result=exc.result) from None
    seconds = time.perf_counter() - t0
    if result.stopped_by is not None:
        return _stopped(out_dir, cfg, result, train_scan, merged, reading, backend, seconds,
                        stop, log)
    log.info("trained %d epochs in %.1f s (%.2f s/epoch), final loss %.5g",
             result.epochs_run, seconds, result.seconds_per_epoch, result.history["loss"][-1])
    written = _save_training(out_dir, cfg, result, train_scan, merged, reading, backend,
                             seconds)
    written.append(out_dir / CHECKPOINT_NAME)
    if do_stitching:
        from ptycho_k3.workflows.infer import reconstruct_and_save

        summary = reconstruct_and_save(out_dir, result.models, test_scan,
                                       input_scale=result.input_scale, config=stitching, log=log,
                                       progress=progress, grouped=test_groups)
        written += summary["written"]
    written.append(out_dir / "train.log")
    return written


def _save_training(out_dir: Path, cfg: TrainingConfig, result: Any, train_scan: Any,
                   merged: Merged, reading: Any, backend: str, seconds: float) -> list[Path]:
    """The bundle, history (+ loss curve), config.yaml and the subsample record of ``result``."""
    from ptycho_k3 import outputs
    from ptycho_k3.bundle import save_bundle, training_params

    params = training_params(cfg, result, train_scan,
                             nphotons_source=merged.sources.get("nphotons"),
                             reading_options=reading.to_dict())
    written = [save_bundle(out_dir, result.models, params)]
    ckpt = result.checkpoint_seconds
    written += outputs.save_history(out_dir, result.history, {
        "backend": backend, "seconds_total": seconds,
        "seconds_per_epoch": result.seconds_per_epoch,
        "seconds_per_checkpoint": float(sum(ckpt) / len(ckpt)) if ckpt else None})
    written.append(out_dir / "config.yaml")
    if result.grouped.subsample_indices is not None:  # the original wrote these into ./tmp
        written.append(outputs.save_json(out_dir / "subsample_indices.json", {
            "n_subsample": cfg.n_subsample, "subsample_seed": cfg.subsample_seed,
            "indices": [int(i) for i in result.grouped.subsample_indices]}))
    return written


def _stopped(out_dir: Path, cfg: TrainingConfig, result: Any, train_scan: Any, merged: Merged,
             reading: Any, backend: str, seconds: float, stop: Any, log: logging.Logger
             ) -> list[Path]:
    """After a signal: the last completed epoch's outputs, then :class:`Stopped`."""
    epoch = result.epochs_run
    if epoch == 0:
        raise Stopped(f"stopped by {result.stopped_by} during epoch 1: no epoch completed, "
                      "nothing kept", stop.exit_status)
    written = _save_training(out_dir, cfg, result, train_scan, merged, reading, backend,
                             seconds)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    raise Stopped(f"stopped by {result.stopped_by} during epoch {epoch + 1}; wrote the bundle "
                  f"of epoch {epoch} to {written[0]}; continue with: ptycho-train --resume "
                  f"{out_dir}", stop.exit_status)

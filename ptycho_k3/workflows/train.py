"""The training workflow of ``ptycho-train``: resolved settings -> every output file.

Order (the README's promise): settings, the training and test scans, the grouping,
normalisation and validation split are all checked before ``output_dir``, ``train.log`` or
``config.yaml`` exist; then training, the bundle, the history, and with ``do_stitching`` the
inference outputs of the test scan. Keras is imported after the input checks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ptycho_k3.config import ConfigError, InferenceConfig, TrainingConfig
from ptycho_k3.config_io import Merged, load_yaml, merge_training, nphotons_message


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
                 backend: str, log: logging.Logger, verbosity: int, progress: bool
                 ) -> list[Path]:
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

    Raises:
        ConfigError, DataError: bad settings or data, before anything is written.
    """
    from ptycho_k3.data import load_scan

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

    import keras

    from ptycho_k3 import __version__
    from ptycho_k3.train import prepare, train

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
    save_config_yaml(out_dir / "config.yaml", cfg, {"do_stitching": do_stitching},
                     header=f"effective ptycho-train config (backend {backend}); "
                            "reload with --config")

    t0 = time.perf_counter()
    result = train(cfg, train_scan, test_data=test_scan, verbose=verbosity, prepared=prepared)
    seconds = time.perf_counter() - t0
    log.info("trained %d epochs in %.1f s (%.2f s/epoch), final loss %.5g",
             result.epochs_run, seconds, result.seconds_per_epoch, result.history["loss"][-1])

    from ptycho_k3 import outputs
    from ptycho_k3.bundle import save_bundle, training_params

    params = training_params(cfg, result, train_scan,
                             nphotons_source=merged.sources.get("nphotons"),
                             reading_options=reading.to_dict())
    written = [save_bundle(out_dir, result.models, params)]
    written += outputs.save_history(out_dir, result.history, {
        "backend": backend, "seconds_total": seconds,
        "seconds_per_epoch": result.seconds_per_epoch})
    written.append(out_dir / "config.yaml")
    if result.grouped.subsample_indices is not None:  # the original wrote these into ./tmp
        written.append(outputs.save_json(out_dir / "subsample_indices.json", {
            "n_subsample": cfg.n_subsample, "subsample_seed": cfg.subsample_seed,
            "indices": [int(i) for i in result.grouped.subsample_indices]}))
    if do_stitching:
        from ptycho_k3.workflows.infer import reconstruct_and_save

        summary = reconstruct_and_save(out_dir, result.models, test_scan,
                                       input_scale=result.input_scale, config=stitching, log=log,
                                       progress=progress, grouped=test_groups)
        written += summary["written"]
    written.append(out_dir / "train.log")
    return written

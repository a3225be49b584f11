"""``ptycho-train`` (alias ``ptycho_train``): train PtychoPINN on a scan NPZ.

Examples::

    ptycho-train --train_data_file train.npz --test_data_file test.npz --nepochs 50
    KERAS_BACKEND=torch ptycho-train --config run.yaml --N 64 --n_groups 512 --do_stitching
    ptycho-train --config training_outputs/config.yaml --nepochs 5   # rerun, flags win

Flags use the original's underscore names; every one also has a hyphenated alias. Precedence:
explicit flag > ``--config`` YAML (flat keys or a nested ``model:`` block) > the training file's
``_metadata`` (nphotons only) > default. Writes under ``--output_dir``: ``wts.h5.zip``,
``history.json``, ``loss_curve.png``, ``config.yaml`` (reloadable with ``--config``),
``train.log``, and with ``--do_stitching`` and a test file the inference outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    UsageError,
    add_bool,
    add_common,
    add_flag,
    add_legacy_ignored,
    add_log_file,
    integer,
    number,
    optional_int,
    optional_number,
    positive_int,
    progress_verbosity,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.cli._data import FIELDS as DATA_FIELDS
from ptycho_k3.cli._data import add_data_flags, measured_options
from ptycho_k3.config import (
    AMP_ACTIVATIONS,
    DEFAULT_NPHOTONS,
    HIDDEN_ACTIVATIONS,
    MODEL_TYPES,
    PRECISIONS,
)
from ptycho_k3.config_io import (
    LEGACY_IGNORED,
    UNSET,
    Merged,
    explicit_values,
    load_yaml,
    merge_training,
    nphotons_message,
    save_config_yaml,
)

PROG = "ptycho-train"
#: Namespace entries that are not configuration values.
# The reading flags (cli/_data.py) are options of the command, not of the training config.
_NOT_CONFIG = {"config", "quiet", "verbose", "console_level", "backend", *DATA_FIELDS}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Train PtychoPINN (one Keras 3 model; TensorFlow, PyTorch or JAX). "
                    "Boolean flags take true/false/yes/no/1/0, or --flag / --no-flag.",
    )
    add_flag(p, "config", default=None, metavar="YAML",
             help="YAML config (flat keys or nested model:); explicit flags win over it")
    add_bool(p, "do_stitching",
             help="after training, reconstruct --test_data_file and write the inference outputs")
    add_common(p)

    m = p.add_argument_group("model")
    add_flag(m, "N", type=integer, default=UNSET, help="patch size: 64, 128 or 256 (default 64)")
    add_flag(m, "gridsize", type=positive_int, default=UNSET, help="group side (default 1)")
    add_flag(m, "n_filters_scale", type=positive_int, default=UNSET,
             help="filter multiplier (default 2)")
    add_flag(m, "model_type", choices=MODEL_TYPES, default=UNSET, help="pinn or supervised")
    add_flag(m, "architecture", default=UNSET, help="cnn (the only architecture)")
    add_flag(m, "amp_activation", choices=AMP_ACTIVATIONS, default=UNSET,
             help="amplitude activation (default sigmoid)")
    add_flag(m, "hidden_activation", choices=HIDDEN_ACTIVATIONS, default=UNSET,
             help="activation of the hidden convolutions (default relu, as the original)")
    add_flag(m, "precision", choices=PRECISIONS, default=UNSET,
             help="float32 (default) or mixed_bfloat16: the conv stack in bfloat16, the physics "
                  "and the loss in float32")
    add_bool(m, "object_big", help="per-group canvas of C patches (default true)")
    add_bool(m, "probe_big", help="border decoder branch (default true)")
    add_bool(m, "probe_mask", help="multiply the exit wave by the N/4 disc (default false)")
    add_bool(m, "pad_object", help="decode only the central N/2 square (default true)")
    add_flag(m, "probe_scale", type=number, default=UNSET,
             help="probe normalisation divisor (default 4.0)")
    add_flag(m, "gaussian_smoothing_sigma", type=number, default=UNSET,
             help="exit-wave smoothing sigma (default 0)")
    add_bool(m, "probe_trainable", help="train the probe (default false)")
    add_bool(m, "intensity_scale_trainable", help="train log_scale (default true)")
    add_flag(m, "offset", type=integer, default=UNSET, help=argparse.SUPPRESS)
    add_flag(m, "max_position_jitter", type=integer, default=UNSET, help=argparse.SUPPRESS)
    add_flag(m, "default_probe_scale", type=number, default=UNSET, help=argparse.SUPPRESS)

    add_data_flags(p, UNSET)
    t = p.add_argument_group("training")
    add_flag(t, "train_data_file", default=UNSET, metavar="NPZ", help="training scan (required)")
    add_flag(t, "test_data_file", default=UNSET, metavar="NPZ",
             help="test scan (for --do_stitching)")
    add_flag(t, "output_dir", default=UNSET, help="output directory (default training_outputs)")
    add_flag(t, "batch_size", type=positive_int, default=UNSET, help="batch size (default 16)")
    add_flag(t, "nepochs", type=positive_int, default=UNSET, help="epochs (default 50)")
    add_flag(t, "learning_rate", type=number, default=UNSET, help="Adam learning rate (1e-3)")
    for name, default in (("nll_weight", "1 for pinn"), ("mae_weight", "0 for pinn")):
        add_flag(t, name, type=optional_number, default=UNSET,
                 help=f"loss weight (default {default}; none = the model type's default)")
    for name, default in (("realspace_weight", 0.0), ("realspace_mae_weight", 0.0),
                          ("tv_weight", 0.0), ("amp_label_weight", 1.0),
                          ("phase_label_weight", 1.0)):
        add_flag(t, name, type=number, default=UNSET, help=f"loss weight (default {default})")
    add_flag(t, "nphotons", type=number, default=UNSET,
             help=f"photons per pattern (default: the file's _metadata, else {DEFAULT_NPHOTONS:g})")
    add_flag(t, "n_groups", type=optional_int, default=UNSET,
             help="number of groups (default 512)")
    add_flag(t, "n_images", type=optional_int, default=UNSET,
             help="deprecated alias of --n_groups")
    add_flag(t, "n_subsample", type=optional_int, default=UNSET,
             help="raw patterns to subsample before grouping (default all)")
    add_flag(t, "subsample_seed", type=optional_seed, default=UNSET,
             help="seed of the subsample (default: derived from --seed)")
    add_flag(t, "neighbor_count", type=positive_int, default=UNSET, help="K neighbours (4)")
    add_bool(t, "enable_oversampling", help="allow K-choose-C groups (default false)")
    add_flag(t, "neighbor_pool_size", type=optional_int, default=UNSET,
             help="pool for oversampling (default K)")
    add_bool(t, "sequential_sampling", help="first-n seeds instead of random (default false)")
    add_flag(t, "validation_fraction", type=number, default=UNSET,
             help="random hold-out for validation (default 0.05)")
    add_flag(t, "early_stopping_patience", type=positive_int, default=UNSET,
             help="epochs without improvement before stopping (default 3)")
    add_flag(t, "lr_patience", type=positive_int, default=UNSET,
             help="ReduceLROnPlateau patience (default 2)")
    add_flag(t, "lr_factor", type=number, default=UNSET, help="ReduceLROnPlateau factor (0.5)")
    add_flag(t, "min_lr", type=number, default=UNSET, help="ReduceLROnPlateau floor (1e-4)")
    add_flag(t, "seed", type=integer, default=UNSET,
             help="one seed for every random choice (default 0)")
    add_legacy_ignored(p, [k for k in LEGACY_IGNORED if k != "torch_inference_batch_size"])
    return p


def optional_seed(text: str) -> int | None:
    value = optional_number(text)
    return None if value is None else int(value)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _explicit_config(args: argparse.Namespace) -> dict[str, Any]:
    explicit = {k: v for k, v in explicit_values(args).items() if k not in _NOT_CONFIG}
    # "none" for a setting without a None value means "the default".
    for key in ("n_groups",):
        if explicit.get(key, UNSET) is None:
            del explicit[key]
    return explicit


def merge(args: argparse.Namespace, metadata_nphotons: float | None = None) -> Merged:
    yaml_map = load_yaml(args.config) if args.config else None
    return merge_training(_explicit_config(args), yaml_map, metadata_nphotons=metadata_nphotons,
                          yaml_source=str(args.config))


def run(args: argparse.Namespace) -> int:

    quiet_frameworks()
    log = setup_logging(PROG, args)
    backend = select_backend(args.backend)

    # Everything that can fail on bad input happens before the output directory exists.
    first = merge(args)  # validates flags and YAML (a bad --N fails here)
    cfg = first.config
    if not cfg.train_data_file:
        raise UsageError("--train_data_file is required (or train_data_file in --config)")
    from ptycho_k3.data import DataError, load_scan

    reading = measured_options(explicit_values(args))
    train_scan = load_scan(cfg.train_data_file, reading)
    merged = merge(args, metadata_nphotons=train_scan.nphotons)
    cfg = merged.config
    if train_scan.n != cfg.model.N:
        raise DataError(f"{cfg.train_data_file}: diffraction patterns are {train_scan.n}x"
                        f"{train_scan.n} but --N is {cfg.model.N}")
    test_scan = load_scan(cfg.test_data_file, reading) if cfg.test_data_file else None
    if test_scan is not None and test_scan.n != cfg.model.N:
        raise DataError(f"{cfg.test_data_file}: diffraction patterns are {test_scan.n}x"
                        f"{test_scan.n} but --N is {cfg.model.N}")
    do_stitching = bool(merged.run.get("do_stitching", False))
    if do_stitching and test_scan is None:
        raise UsageError("--do_stitching needs --test_data_file")

    import keras

    from ptycho_k3 import __version__
    from ptycho_k3.train import prepare, train

    log.info("ptycho-k3 %s, keras %s, backend %s", __version__, keras.__version__, backend)
    log.info("%s", nphotons_message(merged, train_scan.nphotons))
    non_default = {k: v for k, v in merged.sources.items() if v != "default"}
    log.debug("settings not at their default: %s", non_default)
    # The data checks of the run (grouping, normalisation, validation split; the test scan's
    # grouping) pass before the output directory, train.log or config.yaml exist.
    prepared = prepare(cfg, train_scan)
    test_groups = None
    if do_stitching:
        from ptycho_k3.infer import group_for_inference

        test_groups = group_for_inference(test_scan, cfg.model.gridsize, n_groups=cfg.n_groups,
                                          seed=cfg.seed, neighbor_count=cfg.neighbor_count,
                                          canvas_size=cfg.model.canvas_size)

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "train.log")  # with the lines logged so far
    save_config_yaml(out_dir / "config.yaml", cfg, {"do_stitching": do_stitching},
                     header=f"effective ptycho-train config (backend {backend}); "
                            "reload with --config")

    t0 = time.perf_counter()
    result = train(cfg, train_scan, test_data=test_scan, verbose=progress_verbosity(args),
                   prepared=prepared)
    seconds = time.perf_counter() - t0
    log.info("trained %d epochs in %.1f s (%.2f s/epoch), final loss %.5g",
             result.epochs_run, seconds, result.seconds_per_epoch, result.history["loss"][-1])

    from ptycho_k3 import outputs
    from ptycho_k3.bundle import save_bundle

    params = {
        "training": cfg.to_dict(),
        "input_scale": float(result.input_scale),
        "nphotons": float(result.nphotons),
        "nphotons_source": merged.sources.get("nphotons"),
        "norm_factor": float(result.norm_factor),
        "seed": cfg.seed,
        "epochs_run": int(result.epochs_run),
        "data": {
            "train_data_file": str(cfg.train_data_file),
            "n_positions": int(train_scan.n_positions),
            "n_groups": int(result.grouped.n_groups),
            "N": int(train_scan.n),
            "gridsize": int(cfg.model.gridsize),
            "norm_factor": float(result.norm_factor),
            "metadata_nphotons": train_scan.nphotons,
            "reading": train_scan.reading,
            "reading_options": reading.to_dict(),
        },
    }
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
        from ptycho_k3.config import InferenceConfig
        from ptycho_k3.workflows.infer import reconstruct_and_save

        stitching = InferenceConfig(n_groups=cfg.n_groups, seed=cfg.seed,
                                    neighbor_count=cfg.neighbor_count)
        summary = reconstruct_and_save(out_dir, result.models, test_scan,
                                       input_scale=result.input_scale, config=stitching, log=log,
                                       progress=not args.quiet and sys.stderr.isatty(),
                                       grouped=test_groups)
        written += summary["written"]
    written.append(out_dir / "train.log")
    if not args.quiet:
        for path in written:
            print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

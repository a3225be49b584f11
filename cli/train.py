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
from collections.abc import Sequence
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    add_bool,
    add_common,
    add_flag,
    add_legacy_ignored,
    optional_int,
    progress_verbosity,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.cli._data import FIELDS as DATA_FIELDS
from ptycho_k3.cli._data import add_data_flags, measured_options
from ptycho_k3.cli._fields import add_fields, described_fields
from ptycho_k3.config import ModelConfig, TrainingConfig
from ptycho_k3.config_io import LEGACY_IGNORED, UNSET, Merged, explicit_values
from ptycho_k3.workflows.train import merge as merge_settings
from ptycho_k3.workflows.train import run_training

PROG = "ptycho-train"
#: Namespace entries that are not configuration values.
# The reading flags (cli/_data.py) are options of the command, not of the training config.
_NOT_CONFIG = {"config", "quiet", "verbose", "console_level", "backend", "resume",
               *DATA_FIELDS}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Train PtychoPINN (one Keras 3 model; TensorFlow, PyTorch or JAX). "
                    "Boolean flags take true/false/yes/no/1/0, or --flag / --no-flag.",
    )
    add_flag(p, "config", default=None, metavar="YAML",
             help="YAML config (flat keys or nested model:); explicit flags win over it")
    add_flag(p, "resume", default=None, metavar="DIR",
             help="continue the run whose --output_dir is DIR from its last checkpoint (its "
                  "settings; only --nepochs may change), writing into DIR")
    add_bool(p, "do_stitching",
             help="after training, reconstruct --test_data_file and write the inference outputs")
    add_common(p)
    add_fields(p.add_argument_group("model"), ModelConfig, default=UNSET)
    add_data_flags(p, UNSET)
    t = p.add_argument_group("training")
    add_fields(t, TrainingConfig, default=UNSET)
    add_flag(t, "n_images", type=optional_int, default=UNSET,
             help="deprecated alias of --n_groups")
    add_legacy_ignored(p, [k for k in LEGACY_IGNORED if k != "torch_inference_batch_size"])
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _explicit_config(args: argparse.Namespace) -> dict[str, Any]:
    explicit = {k: v for k, v in explicit_values(args).items() if k not in _NOT_CONFIG}
    # "none" for a setting without a None value means "the default".
    for field in described_fields(TrainingConfig):
        if field.metadata["none_is_default"] and explicit.get(field.name, UNSET) is None:
            del explicit[field.name]
    return explicit


def merge(args: argparse.Namespace, metadata_nphotons: float | None = None) -> Merged:
    """The training settings of parsed arguments (flag > --config YAML > metadata > default)."""
    return merge_settings(_explicit_config(args), args.config, metadata_nphotons)


def run(args: argparse.Namespace) -> int:
    quiet_frameworks()
    log = setup_logging(PROG, args)
    backend = select_backend(args.backend)
    written = run_training(_explicit_config(args), args.config,
                           measured_options(explicit_values(args)), backend=backend, log=log,
                           verbosity=progress_verbosity(args),
                           progress=not args.quiet and sys.stderr.isatty(),
                           resume=args.resume)
    if not args.quiet:
        for path in written:
            print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The refinement flags, shared by ``ptycho-infer`` and ``ptycho-reconstruct``.

``--refine_iterations`` (ptycho-infer) and ``--iterations`` (ptycho-reconstruct) are the same
setting; every other flag has one spelling in both commands. Nothing here imports Keras.
"""

from __future__ import annotations

import argparse
from typing import Any

from ptycho_k3.cli._common import (
    UsageError,
    add_bool,
    add_flag,
    positive_int,
    positive_number,
)
from ptycho_k3.config import REFINE_LOSSES, ConfigError, RefineConfig
from ptycho_k3.config_io import UNSET

_DEFAULT = RefineConfig()

#: option name -> RefineConfig field (the option's default is the field's default).
FIELDS = {
    "refine_batch": "batch",
    "refine_loss": "loss",
    "refine_step": "object_step",
    "refine_alpha": "alpha",
    "refine_probe": "refine_probe",
    "refine_probe_start": "probe_start",
    "refine_probe_step": "probe_step",
    "refine_positions": "refine_positions",
    "refine_position_start": "position_start",
    "refine_position_step": "position_step",
    "refine_max_shift": "max_position_shift",
}

#: Defaults of the options (a ``--config`` YAML may set any of them).
DEFAULTS: dict[str, Any] = {name: getattr(_DEFAULT, field) for name, field in FIELDS.items()}
DEFAULTS["compare_flat"] = False


def non_negative_int(text: str) -> int:
    from ptycho_k3.cli._common import integer

    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def add_refine_flags(parser: argparse.ArgumentParser, iterations: str, help_iterations: str
                     ) -> None:
    """Add ``--<iterations>`` and the shared refinement flags to ``parser``."""
    group = parser.add_argument_group("iterative refinement (same physics as the network)")
    add_flag(group, iterations, type=non_negative_int, default=UNSET, help=help_iterations)
    add_flag(group, "refine_batch", type=positive_int, default=UNSET,
             help=f"scan positions per update (default {_DEFAULT.batch})")
    add_flag(group, "refine_loss", choices=REFINE_LOSSES, default=UNSET,
             help="poisson (counts, the default) or amplitude least squares")
    add_flag(group, "refine_step", type=positive_number, default=UNSET,
             help=f"object step, 1 = one ePIE-sized step (default {_DEFAULT.object_step})")
    add_flag(group, "refine_alpha", type=positive_number, default=UNSET,
             help=f"rPIE regularisation in (0, 1] (default {_DEFAULT.alpha})")
    add_bool(group, "refine_probe", help="also refine the probe (its power is kept)")
    add_flag(group, "refine_probe_start", type=non_negative_int, default=UNSET,
             help=f"iteration after which the probe is refined (default {_DEFAULT.probe_start})")
    add_flag(group, "refine_probe_step", type=positive_number, default=UNSET,
             help=f"probe step (default {_DEFAULT.probe_step})")
    add_bool(group, "refine_positions", help="also correct the scan positions")
    add_flag(group, "refine_position_start", type=non_negative_int, default=UNSET,
             help="iteration after which positions are corrected "
                  f"(default {_DEFAULT.position_start})")
    add_flag(group, "refine_position_step", type=positive_number, default=UNSET,
             help=f"position step (default {_DEFAULT.position_step})")
    add_flag(group, "refine_max_shift", type=positive_number, default=UNSET,
             help="largest correction of one position per iteration, pixels "
                  f"(default {_DEFAULT.max_position_shift})")


def refine_config(options: dict[str, Any], iterations: int, seed: int) -> RefineConfig:
    """The validated :class:`RefineConfig` of resolved options; a bad value is a UsageError."""
    values = {field: options[name] for name, field in FIELDS.items()}
    try:
        return RefineConfig(iterations=int(iterations), seed=int(seed), **values)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None

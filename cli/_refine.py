"""The refinement flags, shared by ``ptycho-infer`` and ``ptycho-reconstruct``, built from
:class:`~ptycho_k3.config.RefineConfig`.

``--refine_iterations`` (ptycho-infer) and ``--iterations`` (ptycho-reconstruct) are the same
setting; every other flag has one spelling in both commands. Nothing here imports Keras.
"""

from __future__ import annotations

import argparse
from typing import Any

from ptycho_k3.cli._common import UsageError
from ptycho_k3.cli._fields import add_fields, field_defaults
from ptycho_k3.config import ConfigError, RefineConfig
from ptycho_k3.config_io import UNSET

#: RefineConfig field -> option name (``iterations`` is named by each command).
FLAGS = {
    "batch": "refine_batch",
    "loss": "refine_loss",
    "object_step": "refine_step",
    "alpha": "refine_alpha",
    "probe_start": "refine_probe_start",
    "probe_step": "refine_probe_step",
    "position_start": "refine_position_start",
    "position_step": "refine_position_step",
    "max_position_shift": "refine_max_shift",
}
#: option name -> RefineConfig field.
FIELDS = {FLAGS.get(name, name): name for name in field_defaults(RefineConfig, skip=["iterations"])}
#: Defaults of the options (a ``--config`` YAML may set any of them).
DEFAULTS: dict[str, Any] = field_defaults(RefineConfig, FLAGS, skip=["iterations"])


def add_refine_flags(parser: argparse.ArgumentParser, iterations: str, help_iterations: str
                     ) -> None:
    """Add ``--<iterations>`` and the shared refinement flags to ``parser``."""
    group = parser.add_argument_group("iterative refinement (same physics as the network)")
    add_fields(group, RefineConfig, names=["iterations"], flags={"iterations": iterations},
               default=UNSET, help_overrides={"iterations": help_iterations})
    add_fields(group, RefineConfig, skip=["iterations"], flags=FLAGS, default=UNSET)


def refine_config(options: dict[str, Any], iterations: int, seed: int) -> RefineConfig:
    """The validated :class:`RefineConfig` of resolved options; a bad value is a UsageError."""
    values = {field: options[name] for name, field in FIELDS.items()}
    try:
        return RefineConfig(iterations=int(iterations), seed=int(seed), **values)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None

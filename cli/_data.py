"""The measured-data flags, shared by ``ptycho-train``, ``ptycho-infer`` and ``ptycho-reconstruct``
(docs/conventions.md §22), built from :class:`~ptycho_k3.data.measured.MeasuredOptions`. Nothing
here imports Keras."""

from __future__ import annotations

import argparse
from typing import Any

from ptycho_k3.cli._common import UsageError
from ptycho_k3.cli._fields import add_fields, field_defaults
from ptycho_k3.data.measured import MeasuredOptions

#: MeasuredOptions field -> option name where they differ.
FLAGS = {"format": "data_format"}
#: option name -> MeasuredOptions field.
FIELDS = {FLAGS.get(name, name): name for name in field_defaults(MeasuredOptions)}
DEFAULTS: dict[str, Any] = field_defaults(MeasuredOptions, FLAGS)


def add_data_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """Add the reading flags (each defaulting to ``default``, e.g. UNSET) to ``parser``."""
    g = parser.add_argument_group("reading measured data (docs/conventions.md §22)")
    add_fields(g, MeasuredOptions, flags=FLAGS, default=default)


def measured_options(values: dict[str, Any]) -> MeasuredOptions:
    """The validated :class:`MeasuredOptions` of resolved option values (missing = default)."""
    kwargs = {field: values.get(name, DEFAULTS[name]) for name, field in FIELDS.items()}
    try:
        return MeasuredOptions(**kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

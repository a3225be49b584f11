"""The measured-data flags, shared by ``ptycho-train``, ``ptycho-infer`` and ``ptycho-reconstruct``
(docs/conventions.md §22). Nothing here imports Keras."""

from __future__ import annotations

import argparse
from typing import Any

from ptycho_k3.cli._common import UsageError, add_flag, positive_int, positive_number
from ptycho_k3.data.measured import DC_LAYOUTS, FORMATS, KINDS, POSITION_UNITS, MeasuredOptions

#: option name -> MeasuredOptions field.
FIELDS = {
    "data_format": "format",
    "diffraction_kind": "diffraction_kind",
    "dc": "dc",
    "saturation": "saturation",
    "detector_crop": "detector_crop",
    "detector_bin": "detector_bin",
    "positions_unit": "positions_unit",
    "object_pixel_size": "object_pixel_size",
}
_DEFAULT = MeasuredOptions()
DEFAULTS: dict[str, Any] = {name: getattr(_DEFAULT, field) for name, field in FIELDS.items()}


def add_data_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """Add the reading flags (each defaulting to ``default``, e.g. UNSET) to ``parser``."""
    g = parser.add_argument_group("reading measured data (docs/conventions.md §22)")
    add_flag(g, "data_format", choices=FORMATS, default=default,
             help="file format: auto (from the content, the default), npz, tike, cxi, ptychodus")
    add_flag(g, "diffraction_kind", choices=KINDS, default=default,
             help="the frames hold counts (intensities) or amplitudes (sqrt of counts); default: "
                  "the file's _metadata, else amplitude for the project NPZ, counts otherwise")
    add_flag(g, "dc", choices=DC_LAYOUTS, default=default,
             help="where the zero frequency is: centre, corner (unshifted FFT) or auto (from "
                  "the mean pattern); default: the file's _metadata, else the format's")
    add_flag(g, "saturation", type=positive_number, default=default,
             help="pixels at or above this value (file units) are invalid")
    add_flag(g, "detector_crop", type=positive_int, default=default,
             help="centre-crop detector frames to this side N (the object pixel grows)")
    add_flag(g, "detector_bin", type=positive_int, default=default,
             help="sum KxK detector pixels (counts; the probe is cropped to the smaller field)")
    add_flag(g, "positions_unit", choices=POSITION_UNITS, default=default,
             help="scan positions in object pixels or metres (needs a pixel size)")
    add_flag(g, "object_pixel_size", type=positive_number, default=default,
             help="object pixel size in metres, for positions in metres")


def measured_options(values: dict[str, Any]) -> MeasuredOptions:
    """The validated :class:`MeasuredOptions` of resolved option values (missing = default)."""
    kwargs = {field: values.get(name, DEFAULTS[name]) for name, field in FIELDS.items()}
    try:
        return MeasuredOptions(**kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

"""Scan data: NPZ contract, frames read on demand (:mod:`.lazy`), grouping, normalisation,
simulation, ptychodus interop.

Importing this package does not import Keras; functions that need the physics core
(ground-truth patch cutting, simulation) import it when called. Simulation and ptychodus names are
loaded lazily on first access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ptycho_k3.config import SUPPORTED_N

from .errors import DataError
from .grouping import GroupedData, GroupedDiffraction, group_indices, group_scan, subsample_indices
from .measured import MeasuredOptions
from .normalize import intensity_scale, normalization_factor, normalize_diffraction
from .npz import ScanData, load_npz, metadata_nphotons, save_npz

_LAZY = {
    "cut_patches": "patches",
    "make_object": "objects",
    "set_phase": "objects",
    "OBJECT_KINDS": "objects",
    "simulate_scan": "simulate",
    "simulate_dataset": "simulate",
    "simulate_train_test": "simulate",
    "simulate_from_scan": "simulate",
    "random_positions": "simulate",
    "raster_positions": "simulate",
    "load_scan": "readers",
    "detect_format": "readers",
    "PtychodusProduct": "ptychodus",
    "save_ptychodus_product": "ptychodus",
    "load_ptychodus_product": "ptychodus",
}

__all__ = [
    "SUPPORTED_N",
    "DataError",
    "GroupedData",
    "GroupedDiffraction",
    "MeasuredOptions",
    "ScanData",
    "group_indices",
    "group_scan",
    "intensity_scale",
    "load_npz",
    "metadata_nphotons",
    "normalization_factor",
    "normalize_diffraction",
    "save_npz",
    "subsample_indices",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ptycho_k3.data' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)

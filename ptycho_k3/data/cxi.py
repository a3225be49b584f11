"""Reader for CXI files (Coherent X-ray Imaging HDF5 layout; docs/conventions.md §22).

Datasets read (``entry_1/`` prefix):

=============================================  ==================================================
``data_1/data``                                 frames ``(M, H, W)``, photon counts (required;
                                                ``instrument_1/detector_1/data`` also accepted)
``sample_1/geometry_1/translation``             ``(M, 3)`` or ``(M, 2)`` positions in metres,
                                                columns x (horizontal), y (vertical) [, z]
``instrument_1/detector_1/distance``            sample-detector distance, metres
``instrument_1/detector_1/x_pixel_size``        detector pixel, metres (``y_pixel_size`` must
                                                match when present)
``instrument_1/detector_1/mask``                optional ``(H, W)``; nonzero = BAD pixel (the CXI
                                                convention), inverted to the valid-pixel mask
``instrument_1/source_1/energy``                photon energy, joules
``instrument_1/source_1/illumination``          optional probe ``(H, W)`` (or ``(modes, H, W)``,
                                                first mode), on the object grid
=============================================  ==================================================

The zero frequency is taken to be near the frame centre (``--dc auto`` decides otherwise). The
object pixel is ``lambda z / (N dp)`` with ``lambda = h c / E``. Nothing here imports Keras.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import DataError
from .lazy import open_hdf5
from .measured import HC_JM, RawScan

_DATA_KEYS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
DISTANCE = "entry_1/instrument_1/detector_1/distance"
X_PIXEL = "entry_1/instrument_1/detector_1/x_pixel_size"
Y_PIXEL = "entry_1/instrument_1/detector_1/y_pixel_size"
MASK = "entry_1/instrument_1/detector_1/mask"
ENERGY = "entry_1/instrument_1/source_1/energy"
ILLUMINATION = "entry_1/instrument_1/source_1/illumination"


def _scalar(f: Any, key: str, name: str, what: str) -> float:
    if key not in f:
        raise DataError(f"{name}: missing dataset '{key}' ({what})")
    value = np.asarray(f[key][()], dtype=np.float64).reshape(-1)
    if value.size != 1 or not (np.isfinite(value[0]) and value[0] > 0):
        raise DataError(f"{name}: dataset '{key}' is {value.tolist()[:4]}; expected one number "
                        f"> 0 ({what})")
    return float(value[0])


def read_cxi(f: Any, name: str, path: str | os.PathLike | None = None) -> RawScan:
    """A :class:`RawScan` from an open h5py file in the CXI layout; errors name the dataset.

    With ``path`` (the file ``f`` was opened from) the frames are read on demand
    (:class:`~ptycho_k3.data.lazy.HDF5Frames`, which opens the file again); without it (an
    in-memory file, e.g. decompressed ``.bz2``) they are read whole.
    """
    data_key = next((k for k in _DATA_KEYS if k in f), None)
    if data_key is None:
        raise DataError(f"{name}: missing dataset '{_DATA_KEYS[0]}': the diffraction frames "
                        "(M, H, W)")
    ds = f[data_key]
    if ds.ndim != 3 or ds.dtype.kind not in "iuf":
        raise DataError(f"{name}: dataset '{data_key}' has shape {ds.shape} and dtype "
                        f"{ds.dtype}; expected real frames (M, H, W)")
    data = open_hdf5(path, data_key) if path is not None else np.asarray(ds[()])
    m, h, w = data.shape
    if TRANSLATION not in f:
        raise DataError(f"{name}: missing dataset '{TRANSLATION}': scan positions (M, 3) in "
                        "metres")
    tr = np.asarray(f[TRANSLATION][()], dtype=np.float64)
    if tr.ndim != 2 or tr.shape[1] not in (2, 3) or tr.shape[0] != m:
        raise DataError(f"{name}: dataset '{TRANSLATION}' has shape {tr.shape}; expected "
                        f"({m}, 3) or ({m}, 2): one [x, y(, z)] per frame of '{data_key}'")
    distance = _scalar(f, DISTANCE, name, "sample-detector distance in metres")
    pixel = _scalar(f, X_PIXEL, name, "detector pixel size in metres")
    if Y_PIXEL in f:
        y_pixel = _scalar(f, Y_PIXEL, name, "detector pixel size in metres")
        if not np.isclose(y_pixel, pixel, rtol=1e-6):
            raise DataError(f"{name}: '{Y_PIXEL}' = {y_pixel} differs from '{X_PIXEL}' = "
                            f"{pixel}; only square detector pixels are supported")
    energy = _scalar(f, ENERGY, name, "photon energy in joules")
    mask = None
    if MASK in f:
        bad = np.asarray(f[MASK][()])
        if bad.shape != (h, w):
            raise DataError(f"{name}: dataset '{MASK}' has shape {bad.shape}; expected ({h}, "
                            f"{w}) like the frames of '{data_key}' (nonzero = bad pixel)")
        mask = bad == 0  # CXI marks BAD pixels; the project's masks mark valid ones
    probe = None
    if ILLUMINATION in f:
        probe = np.asarray(f[ILLUMINATION][()])
        if probe.ndim == 3:
            probe = probe[0]
    return RawScan(
        source=name, data=data, data_key=data_key, positions=tr[:, :2].copy(),
        positions_key=TRANSLATION, mask=mask, mask_key=MASK, probe=probe,
        probe_key=ILLUMINATION, kind="counts", dc="centre", positions_unit="metres",
        geometry=(HC_JM / energy, distance, pixel), format="cxi",
    )

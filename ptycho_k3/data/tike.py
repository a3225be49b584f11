"""Reader for tike-style NPZ files: ``data``, ``scan``, ``probe`` (docs/conventions.md §22).

Layout (the tike package's test data): ``data`` ``(1, M, H, W)`` or ``(M, H, W)`` photon counts
with the zero frequency at the array corners (an unshifted FFT); ``scan`` ``(1, M, 2)`` or
``(M, 2)`` positions in object pixels, column 0 = row (vertical), column 1 = column
(horizontal), any sign; ``probe`` with leading singleton view/mode axes ``(..., H, W)``. The
first probe mode is kept when there are several. Nothing here imports Keras.
"""

from __future__ import annotations

import logging
import os
import zipfile
from typing import Any

import numpy as np

from .errors import DataError
from .lazy import open_npz_member
from .measured import RawScan

log = logging.getLogger(__name__)


def _squeeze_leading(a: np.ndarray, rank: int) -> np.ndarray:
    """Drop leading axes of length 1 until ``a`` has ``rank`` axes."""
    while a.ndim > rank and a.shape[0] == 1:
        a = a[0]
    return a


def read_tike(archive: Any, name: str, path: str | os.PathLike | None = None) -> RawScan:
    """A :class:`RawScan` from an open NPZ ``archive`` with tike's keys; errors name ``name``.

    With ``path`` (the file ``archive`` was opened from) frames stored uncompressed are
    memory-mapped and read on demand (:func:`~ptycho_k3.data.lazy.open_npz_member`); otherwise
    they are read whole.
    """
    keys = set(archive.files)
    for key in ("data", "scan"):
        if key not in keys:
            raise DataError(f"{name}: missing key '{key}' of a tike-style NPZ (data, scan, probe)")
    mapped = None
    if path is not None:
        try:
            mapped = open_npz_member(path, "data")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            mapped = None  # the whole read below names the problem
    if mapped is not None:
        data = mapped
        while data.ndim > 3 and data.shape[0] == 1:
            data = data.with_view(lambda v: v[0])
    else:
        data = _squeeze_leading(np.asarray(archive["data"]), 3)
    if data.ndim != 3 or data.dtype.kind not in "iuf":
        raise DataError(f"{name}: key 'data' has shape {data.shape} and dtype {data.dtype}; "
                        "expected real frames (1, M, H, W) or (M, H, W)")
    scan = _squeeze_leading(np.asarray(archive["scan"]), 2)
    if scan.ndim != 2 or scan.shape[-1] != 2 or scan.dtype.kind not in "iuf":
        raise DataError(f"{name}: key 'scan' has shape {scan.shape}; expected (1, M, 2) or "
                        "(M, 2) positions [row, column] in object pixels")
    if scan.shape[0] != data.shape[0]:
        raise DataError(f"{name}: key 'scan' has {scan.shape[0]} positions but 'data' has "
                        f"{data.shape[0]} frames")
    probe = None
    if "probe" in keys:
        probe = np.asarray(archive["probe"])
        if probe.ndim >= 3 and int(np.prod(probe.shape[:-2])) > 1:
            log.warning("%s: 'probe' has %d modes; the first is used", name,
                        int(np.prod(probe.shape[:-2])))
        probe = probe.reshape(-1, *probe.shape[-2:])[0] if probe.ndim >= 2 else probe
        if probe.ndim != 2:
            raise DataError(f"{name}: key 'probe' has shape {probe.shape}; expected (..., H, W)")
    mask = np.asarray(archive["mask"]) if "mask" in keys else None
    positions = np.stack([scan[:, 1], scan[:, 0]], axis=1).astype(np.float64)  # [x, y]
    return RawScan(
        source=name, data=data, data_key="data", positions=positions, positions_key="scan",
        mask=mask, probe=probe, probe_key="probe", kind="counts", dc="corner",
        positions_unit="pixels", format="tike",
    )


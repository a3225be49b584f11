"""ptychodus product HDF5 import/export (docs/conventions.md §16), with h5py.

Positions are stored in metres (``pixels * object pixel size``) and converted back to object
pixels on reading. An optional ``raw_data/`` block carries the diffraction amplitudes (gzip) and
the pixel coordinates, so a product written here can be turned back into a :class:`ScanData`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.atomic import atomic_path, json_default

from .errors import DataError
from .measured import RawScan
from .npz import ScanData

OBJECT_PIXEL_M = 5e-8
PROBE_PIXEL_M = 1.25e-7
_ROOT_ATTRS = {
    "detector_object_distance_m": 1.0,
    "probe_energy_eV": 10000.0,
    "probe_photon_count": 0.0,
    "exposure_time_s": 0.0,
    "mass_attenuation_m2_kg": 0.0,
    "tomography_angle_deg": 0.0,
}


@dataclass(frozen=True, eq=False)
class PtychodusProduct:
    """Contents of a ptychodus product file.

    Attributes:
        xcoords, ycoords: float64 ``(M,)`` positions in object pixels (from metres).
        scan_index: int64 ``(M,)`` (``probe_position_indexes``).
        probe: complex64 ``(N, N)``; object: complex64 ``(H, W)``.
        object_pixel_m, probe_pixel_m: pixel sizes in metres (width; height assumed equal).
        object_center_m: ``(x, y)`` of the object centre in metres.
        attrs: root attributes (name, comments, energies, ...).
        diffraction: float32 ``(M, N, N)`` from ``raw_data/`` or None.
        loss_values: float64 loss history (may be empty).
        mask: valid-pixel mask from ``raw_data/mask`` (nonzero = valid) or None.
    """

    xcoords: np.ndarray
    ycoords: np.ndarray
    scan_index: np.ndarray
    probe: np.ndarray
    object: np.ndarray
    object_pixel_m: float
    probe_pixel_m: float
    object_center_m: tuple[float, float]
    attrs: dict[str, Any] = field(default_factory=dict)
    diffraction: np.ndarray | None = None
    loss_values: np.ndarray | None = None
    mask: np.ndarray | None = None

    def to_scan_data(self) -> ScanData:
        """A ScanData; needs the ``raw_data/diffraction`` block."""
        from .measured import prepare

        return prepare(self.raw_scan("ptychodus product"))

    def raw_scan(self, name: str) -> RawScan:
        """The product as a :class:`RawScan` (amplitudes, DC centred, positions in pixels)."""
        if self.diffraction is None:
            raise DataError(f"{name}: ptychodus product has no 'raw_data/diffraction'; it cannot "
                            "be used as a training/inference scan (write it with include_raw=True)")
        return RawScan(
            source=name, data=self.diffraction, data_key="raw_data/diffraction",
            positions=np.stack([self.xcoords, self.ycoords], axis=1),
            positions_key="probe_position_x_m", mask=self.mask, mask_key="raw_data/mask",
            probe=self.probe, probe_key="probe", kind="amplitude", dc="centre",
            positions_unit="pixels", object_pixel_m=self.object_pixel_m, object=self.object,
            scan_index=self.scan_index,
            format="ptychodus",
            metadata={"ptychodus": {k: _plain(v) for k, v in self.attrs.items()}})


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def save_ptychodus_product(path: str | os.PathLike, data: ScanData, *, name: str = "ptycho-k3",
                           comments: str = "", object_pixel_m: float = OBJECT_PIXEL_M,
                           probe_pixel_m: float = PROBE_PIXEL_M, include_raw: bool = True,
                           loss_values: np.ndarray | None = None) -> Path:
    """Write ``data`` as a ptychodus product HDF5 file (atomically).

    The object is ``data.object`` (a zero object of size ``N`` is written when there is none);
    positions become ``probe_position_{x,y}_m = pixels * object_pixel_m``.
    """
    import h5py

    out = Path(path)
    obj = data.object if data.object is not None else np.zeros((data.n, data.n), np.complex64)
    h, w = obj.shape
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["name"] = name
            f.attrs["comments"] = comments
            for key, value in _ROOT_ATTRS.items():
                f.attrs[key] = value
            nph = data.nphotons
            if nph is not None:
                f.attrs["probe_photon_count"] = float(nph)
            f.create_dataset("probe_position_indexes", data=np.asarray(data.scan_index, np.int64))
            f.create_dataset("probe_position_x_m", data=data.xcoords * object_pixel_m)
            f.create_dataset("probe_position_y_m", data=data.ycoords * object_pixel_m)
            probe = f.create_dataset("probe", data=np.asarray(data.probe, np.complex64))
            probe.attrs["pixel_width_m"] = probe_pixel_m
            probe.attrs["pixel_height_m"] = probe_pixel_m
            o = f.create_dataset("object", data=np.asarray(obj, np.complex64))
            # Pixel (0, 0) of the object is at the origin of the position frame.
            o.attrs["center_x_m"] = (w / 2.0) * object_pixel_m
            o.attrs["center_y_m"] = (h / 2.0) * object_pixel_m
            o.attrs["pixel_width_m"] = object_pixel_m
            o.attrs["pixel_height_m"] = object_pixel_m
            f.create_dataset("object_layer_spacing_m", data=np.zeros(0, np.float64))
            losses = np.zeros(0) if loss_values is None else np.asarray(loss_values, np.float64)
            f.create_dataset("loss_values", data=losses)
            f.create_dataset("loss_epochs", data=np.arange(losses.size, dtype=np.int64))
            if include_raw:
                f.attrs["bundle_version"] = "1.0"
                f.attrs["contains_raw_data"] = 1
                raw = f.create_group("raw_data")
                d = raw.create_dataset("diffraction", data=data.diffraction, compression="gzip")
                d.attrs["axis_canonical"] = "M,N,N"
                d.attrs["original_axis_order"] = "M,N,N"
                raw.create_dataset("xcoords", data=data.xcoords)
                raw.create_dataset("ycoords", data=data.ycoords)
                raw.create_dataset("scan_index", data=np.asarray(data.scan_index, np.int64))
                if data.valid is not None:
                    raw.create_dataset("mask", data=np.asarray(data.valid, np.uint8))
                raw["probeGuess"] = f["probe"]  # hard links, no copies
                raw["objectGuess"] = f["object"]
                raw.attrs["metadata"] = json.dumps(data.metadata, default=json_default)
    return out


def load_ptychodus_product(path: str | os.PathLike) -> PtychodusProduct:
    """Read a ptychodus product HDF5 file (positions converted from metres to object pixels).

    Raises:
        DataError: missing/unreadable file or a missing dataset (message names the file and key).
    """
    import h5py

    p = Path(path)
    name = str(p)
    if not p.is_file():
        raise DataError(f"{name}: file not found")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"{name}: not a readable HDF5 file ({exc})") from None
    with f:
        def need(key: str) -> Any:
            if key not in f:
                raise DataError(f"{name}: missing dataset '{key}' of a ptychodus product")
            return f[key]

        obj_ds = need("object")
        px = float(obj_ds.attrs.get("pixel_width_m", OBJECT_PIXEL_M))
        if not px > 0:
            raise DataError(f"{name}: 'object' attribute pixel_width_m must be > 0, got {px}")
        x = np.asarray(need("probe_position_x_m")[()], np.float64) / px
        y = np.asarray(need("probe_position_y_m")[()], np.float64) / px
        if "probe_position_indexes" in f:
            idx = np.asarray(f["probe_position_indexes"][()], np.int64)
        else:
            idx = np.zeros(x.shape, np.int64)
        probe_ds = need("probe")
        probe = np.asarray(probe_ds[()]).astype(np.complex64)
        if probe.ndim == 3:  # (modes, N, N): keep the first mode
            probe = probe[0]
        obj = np.asarray(obj_ds[()]).astype(np.complex64)
        if obj.ndim == 3:  # (layers, H, W)
            obj = obj[0]
        diff = None
        if "raw_data" in f and "diffraction" in f["raw_data"]:
            diff = np.asarray(f["raw_data/diffraction"][()], np.float32)
        mask = np.asarray(f["raw_data/mask"][()]) if "raw_data/mask" in f else None
        losses = np.asarray(f["loss_values"][()], np.float64) if "loss_values" in f else None
        return PtychodusProduct(
            xcoords=x, ycoords=y, scan_index=idx, probe=probe, object=obj,
            object_pixel_m=px,
            probe_pixel_m=float(probe_ds.attrs.get("pixel_width_m", PROBE_PIXEL_M)),
            object_center_m=(float(obj_ds.attrs.get("center_x_m", 0.0)),
                             float(obj_ds.attrs.get("center_y_m", 0.0))),
            attrs={k: _plain(v) for k, v in f.attrs.items()},
            diffraction=diff, loss_values=losses, mask=mask,
        )

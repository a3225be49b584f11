"""ptychodus product HDF5 import/export (docs/conventions.md §16), with h5py.

Positions are stored in metres and converted to object pixels on reading with ptychodus's
centred-pixel geometry plus our patch reference (§16): ``x = (x_m - center_x_m) / pixel_m + W/2``
where ``W`` is the width of the product's object array, so ``objectGuess[y, x]`` pairs with the
position ``(x, y)`` as everywhere else (§3). An optional ``raw_data/`` block (written here, not
by ptychodus) carries diffraction amplitudes and the pixel coordinates. A product written by
ptychodus holds no diffraction: its patterns are in the *diffraction file* ptychodus writes next
to it (``diffraction.h5``: ``patterns`` counts ``(M, H, W)``, ``indexes``, ``bad_pixels`` bool
``(H, W)`` with True = bad), paired with the positions by index.
"""

from __future__ import annotations

import json
import math
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
#: The diffraction file ptychodus keeps beside ``product.h5`` in a workflow directory.
DIFFRACTION_FILE = "diffraction.h5"
# ptychodus 1.7's names (it still reads the older ``probe_energy_eV``).
_ROOT_ATTRS = {
    "detector_object_distance_m": 1.0,
    "photon_energy_eV": 10000.0,
    "probe_photon_count": 0.0,
    "exposure_time_s": 0.0,
    "mass_attenuation_m2_per_kg": 0.0,
    "tomography_angle_deg": 0.0,
    "focus_object_distance_m": 0.0,
    "tilt_angle_deg": 0.0,
    "far_field": True,
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
        diffraction: ``(M, N, N)`` frames, row ``i`` measured at position ``i``: float32
            amplitudes from ``raw_data/``, or counts from a ptychodus diffraction file; or None.
        loss_values: float64 loss history (may be empty).
        mask: valid-pixel mask (nonzero = valid): ``raw_data/mask``, or the diffraction file's
            ``bad_pixels`` inverted; or None.
        diffraction_kind: ``amplitude`` (``raw_data``) or ``counts`` (a diffraction file).
        diffraction_source: where the frames came from (``raw_data/diffraction`` or
            ``<file>:patterns``).
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
    diffraction_kind: str = "amplitude"
    diffraction_source: str = "raw_data/diffraction"

    def to_scan_data(self) -> ScanData:
        """A ScanData; needs the ``raw_data/diffraction`` block."""
        from .measured import prepare

        return prepare(self.raw_scan("ptychodus product"))

    def raw_scan(self, name: str) -> RawScan:
        """The product as a :class:`RawScan` (amplitudes, DC centred, positions in pixels).

        The product's object is the scan's ground truth (``objectGuess``) unless it is uniform:
        ptychodus's initial guess, not a known object, so no metrics are computed against it.
        """
        if self.diffraction is None:
            raise DataError(f"{name}: ptychodus product has no 'raw_data/diffraction' and no "
                            f"ptychodus diffraction file ({DIFFRACTION_FILE} with 'patterns', "
                            "'indexes', 'bad_pixels') beside it; it cannot be used as a scan")
        return RawScan(
            source=name, data=self.diffraction, data_key=self.diffraction_source,
            positions=np.stack([self.xcoords, self.ycoords], axis=1),
            positions_key="probe_position_x_m", mask=self.mask,
            mask_key="raw_data/mask" if self.diffraction_source.startswith("raw_data")
            else "bad_pixels",
            probe=self.probe, probe_key="probe", kind=self.diffraction_kind, dc="centre",
            positions_unit="pixels", object_pixel_m=self.object_pixel_m,
            object=None if is_uniform(self.object) else self.object,
            scan_index=self.scan_index,
            format="ptychodus",
            metadata={"ptychodus": {k: _plain(v) for k, v in self.attrs.items()}})


def _open_hdf5(path: Path, not_found: str) -> Any:
    """``h5py.File(path, "r")``; DataError ``not_found`` when absent, or naming the file when
    it is not HDF5."""
    import h5py

    if not path.is_file():
        raise DataError(not_found)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None


def positions_to_pixels(x_m: np.ndarray, y_m: np.ndarray, centre_m: tuple[float, float],
                        pixel_m: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """ptychodus positions (metres) -> ptycho-k3 object pixels ``(x, y)`` (docs/conventions.md
    §16): ``x = (x_m - centre_x) / pixel_m + W / 2`` for an object array of ``shape (H, W)``
    centred at ``centre_m`` (y likewise): ptychodus's centred-pixel geometry plus our N/2 patch
    reference, half a pixel from ptychodus's own object-pixel coordinates."""
    h, w = shape
    x = (np.asarray(x_m, np.float64) - centre_m[0]) / pixel_m + w / 2.0
    y = (np.asarray(y_m, np.float64) - centre_m[1]) / pixel_m + h / 2.0
    return x, y


def is_uniform(obj: np.ndarray | None) -> bool:
    """True for a missing or empty object or one whose pixels are all equal (ptychodus's
    initial guess: no ground truth)."""
    if obj is None or obj.size == 0:
        return True
    flat = np.asarray(obj).reshape(-1)
    return bool(np.all(flat == flat[0]))


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


def load_ptychodus_product(path: str | os.PathLike,
                           diffraction: str | os.PathLike | None = None) -> PtychodusProduct:
    """Read a ptychodus product HDF5 file (positions converted from metres to object pixels).

    Args:
        path: the product file (ptychodus's ``product.h5``, or one written here).
        diffraction: ptychodus's diffraction file for the frames; default: the product's own
            ``raw_data/`` block, else ``diffraction.h5`` in the product's directory when it
            exists (a ptychodus workflow directory).

    Positions: ``x = (probe_position_x_m - center_x_m) / pixel_width_m + W / 2`` (``W`` the
    object array's width; y likewise), docs/conventions.md §16. A product written here with
    ``raw_data/xcoords`` keeps those pixel coordinates as written.

    Raises:
        DataError: missing/unreadable file, a missing dataset or attribute, a probe or object
            of an unexpected rank, positions without a pattern of the same index (the message
            names the file and key).
    """
    p = Path(path)
    name = str(p)
    with _open_hdf5(p, f"{name}: file not found") as f:
        def need(key: str) -> Any:
            if key not in f:
                raise DataError(f"{name}: missing dataset '{key}' of a ptychodus product")
            return f[key]

        obj_ds = need("object")
        obj = _first_plane(np.asarray(obj_ds[()]), name, "object", "(layers, H, W) or (H, W)")
        px = float(obj_ds.attrs.get("pixel_width_m", OBJECT_PIXEL_M))
        py = float(obj_ds.attrs.get("pixel_height_m", px))
        if not (px > 0 and py > 0):
            raise DataError(f"{name}: 'object' attributes pixel_width_m/pixel_height_m must be "
                            f"> 0 (metres), got {px}, {py}")
        if not math.isclose(px, py, rel_tol=1e-6):
            raise DataError(f"{name}: 'object' pixels are {px} x {py} m; ptycho-k3 needs square "
                            "object pixels")
        h, w = obj.shape
        centre = (float(obj_ds.attrs.get("center_x_m", w / 2.0 * px)),
                  float(obj_ds.attrs.get("center_y_m", h / 2.0 * py)))
        x_m = np.asarray(need("probe_position_x_m")[()], np.float64)
        y_m = np.asarray(need("probe_position_y_m")[()], np.float64)
        if x_m.shape != y_m.shape or x_m.ndim != 1:
            raise DataError(f"{name}: 'probe_position_x_m' {x_m.shape} and 'probe_position_y_m' "
                            f"{y_m.shape} must be 1-D of the same length")
        if "raw_data/xcoords" in f and "raw_data/ycoords" in f:  # written here: pixels as given
            x = np.asarray(f["raw_data/xcoords"][()], np.float64)
            y = np.asarray(f["raw_data/ycoords"][()], np.float64)
        else:
            x, y = positions_to_pixels(x_m, y_m, centre, px, (h, w))
        if "probe_position_indexes" in f:
            idx = np.asarray(f["probe_position_indexes"][()], np.int64)
        else:
            idx = np.arange(x.size, dtype=np.int64)
        probe_ds = need("probe")
        probe = _first_plane(np.asarray(probe_ds[()]), name, "probe",
                             "(OPR, modes, N, N), (modes, N, N) or (N, N)")
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        losses = np.asarray(f["loss_values"][()], np.float64) if "loss_values" in f else None
        common = dict(
            xcoords=x, ycoords=y, scan_index=idx, probe=probe.astype(np.complex64),
            object=obj.astype(np.complex64), object_pixel_m=px,
            probe_pixel_m=float(probe_ds.attrs.get("pixel_width_m", px)),
            object_center_m=centre, attrs=attrs, loss_values=losses)
        if diffraction is None and "raw_data" in f and "diffraction" in f["raw_data"]:
            mask = np.asarray(f["raw_data/mask"][()]) if "raw_data/mask" in f else None
            return PtychodusProduct(
                **common, diffraction=np.asarray(f["raw_data/diffraction"][()], np.float32),
                mask=mask)
    diff_path = Path(diffraction) if diffraction is not None else p.parent / DIFFRACTION_FILE
    if diffraction is None and (not diff_path.is_file() or diff_path.resolve() == p.resolve()):
        return PtychodusProduct(**common)
    frames, valid = read_diffraction_file(diff_path, idx, name)
    return PtychodusProduct(**common, diffraction=frames, mask=valid, diffraction_kind="counts",
                            diffraction_source=f"{diff_path}:patterns")


def load_product_object(path: str | os.PathLike) -> np.ndarray:
    """Only the object of a ptychodus product: its first layer ``(H, W)`` as stored (no frames
    read). DataError when the file is missing, not HDF5 or has no ``object``."""
    name = str(path)
    with _open_hdf5(Path(path), f"{name}: file not found") as f:
        if "object" not in f:
            raise DataError(f"{name}: missing dataset 'object' of a ptychodus product")
        return _first_plane(np.asarray(f["object"][()]), name, "object",
                            "(layers, H, W) or (H, W)")


def _first_plane(a: np.ndarray, name: str, key: str, expected: str) -> np.ndarray:
    """The first ``(H, W)`` plane of a 2-, 3- or 4-D complex array (first layer / mode)."""
    if a.ndim < 2 or a.ndim > 4 or (key == "object" and a.ndim == 4):
        raise DataError(f"{name}: '{key}' has shape {a.shape}; expected {expected}")
    while a.ndim > 2:
        a = a[0]
    return a


def read_diffraction_file(path: str | os.PathLike, indexes: np.ndarray, product: str
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The frames of ptychodus's diffraction file for the positions ``indexes``.

    Args:
        path: ``diffraction.h5`` as ptychodus writes it: ``patterns`` ``(P, H, W)`` counts,
            ``indexes`` ``(P,)`` int, ``bad_pixels`` bool ``(H, W)`` (True = bad).
        indexes: int64 ``(M,)`` the product's ``probe_position_indexes``.
        product: the product's name, for messages.

    Returns:
        ``(frames, valid)``: frames ``(M, H, W)`` as stored, row ``i`` the pattern whose index
        is ``indexes[i]``; valid bool ``(H, W)`` = not a bad pixel.

    Raises:
        DataError: unreadable file, missing dataset, a position index without a pattern or with
            several, a bad-pixel mask of another shape.
    """
    dname = str(path)
    with _open_hdf5(Path(path), f"{product}: diffraction file {dname} not found") as f:
        for key in ("patterns", "indexes"):
            if key not in f:
                raise DataError(f"{dname}: missing dataset '{key}' of a ptychodus diffraction "
                                "file (patterns, indexes, bad_pixels)")
        patterns = f["patterns"]
        if patterns.ndim != 3:
            raise DataError(f"{dname}: 'patterns' has shape {patterns.shape}; expected (P, H, W)")
        pattern_index = np.asarray(f["indexes"][()], np.int64)
        if pattern_index.shape != (patterns.shape[0],):
            raise DataError(f"{dname}: 'indexes' has shape {pattern_index.shape}; expected "
                            f"({patterns.shape[0]},) like 'patterns'")
        order = np.argsort(pattern_index, kind="stable")
        sorted_index = pattern_index[order]
        if np.any(np.diff(sorted_index) == 0):
            raise DataError(f"{dname}: 'indexes' repeats a pattern index")
        where = np.searchsorted(sorted_index, indexes)
        found = (where < sorted_index.size) & (
            sorted_index[np.minimum(where, sorted_index.size - 1)] == indexes)
        if not np.all(found):
            missing = indexes[~found]
            raise DataError(f"{product}: {missing.size} probe position index(es) (first "
                            f"{int(missing[0])}) have no pattern in {dname} 'indexes'")
        rows = order[where]
        frames = np.asarray(patterns[()])[rows]
        h, w = frames.shape[1:]
        valid = np.ones((h, w), bool)
        if "bad_pixels" in f:
            bad = np.asarray(f["bad_pixels"][()])
            if bad.shape != (h, w):
                raise DataError(f"{dname}: 'bad_pixels' has shape {bad.shape}; expected ({h}, "
                                f"{w}) like the patterns")
            valid = ~bad.astype(bool)
    return frames, valid

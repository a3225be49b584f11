"""Conversions between ptychodus's data types and ptycho-k3's conventions (NumPy only).

ptychodus (docs/conventions.md §16): positions ``x_m, y_m`` in metres; an object array ``(H, W)``
whose pixel ``k`` (column) sits at ``center_x_m + (k - (W - 1) / 2) * pixel_width_m``; a probe
position is where probe pixel ``((N - 1) / 2, (N - 1) / 2)`` lands; bad pixels bool ``(H, W)``
with True = bad; patterns are detector counts with the zero frequency at the centre.

ptycho-k3 (§3): positions in object pixels, ``objectGuess[y, x]`` at position ``(x, y)``, and
patch pixel ``(N/2, N/2)`` shows the object at the position. Same object array index, positions
half a pixel apart: ``x = (x_m - center_x_m) / pixel_width_m + W / 2`` (y likewise).
A stitched object with origin ``(x0, y0)`` (its pixel ``[r, c]`` is input pixel
``[y0 + r, x0 + c]``) goes back with centre
``center_x_m + (x0 + (w_out - W) / 2) * pixel_width_m`` (y likewise) and the input's pixel size,
so it overlays the input object exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ObjectFrame:
    """A ptychodus object's geometry: array size and where it is, in metres.

    Attributes:
        width_px, height_px: the object array's ``W``, ``H``.
        pixel_m: square object pixel side in metres.
        center_x_m, center_y_m: the array's centre in metres (ptychodus's ``ObjectCenter``).
    """

    width_px: int
    height_px: int
    pixel_m: float
    center_x_m: float
    center_y_m: float

    @classmethod
    def of(cls, obj: Any) -> ObjectFrame:
        """From a ``ptychodus.api.object.Object`` (square pixels required, ValueError else)."""
        g = obj.get_geometry()
        if not math.isclose(g.pixel_width_m, g.pixel_height_m, rel_tol=1e-6):
            raise ValueError(f"ptycho-k3 needs square object pixels; the product's are "
                             f"{g.pixel_width_m} x {g.pixel_height_m} m")
        if not g.pixel_width_m > 0:
            raise ValueError(f"object pixel size must be > 0 m, got {g.pixel_width_m}")
        return cls(int(g.width_px), int(g.height_px), float(g.pixel_width_m),
                   float(g.center_x_m), float(g.center_y_m))

    def to_pixels(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 ``(M,)`` positions in metres -> ptycho-k3 object pixels ``(x, y)``
        (:func:`ptycho_k3.data.ptychodus.positions_to_pixels`)."""
        from ptycho_k3.data.ptychodus import positions_to_pixels

        return positions_to_pixels(x_m, y_m, (self.center_x_m, self.center_y_m), self.pixel_m,
                                   (self.height_px, self.width_px))

    def stitched_center(self, x0: float, y0: float, width_px: int, height_px: int
                        ) -> tuple[float, float]:
        """Centre in metres of a ``(height_px, width_px)`` stitched object whose pixel [0, 0] is
        this frame's pixel ``(x0, y0)`` (ptycho-k3's ``x0``/``y0``)."""
        cx = self.center_x_m + (x0 + (width_px - self.width_px) / 2.0) * self.pixel_m
        cy = self.center_y_m + (y0 + (height_px - self.height_px) / 2.0) * self.pixel_m
        return cx, cy


def to_ptychodus_object(obj: np.ndarray, x0: float, y0: float, frame: ObjectFrame) -> Any:
    """A single-layer ptychodus ``Object`` for ptycho-k3's stitched ``obj`` (complex
    ``(h, w)``) whose pixel ``[0, 0]`` is pixel ``(x0, y0)`` (column, row; object pixels, may be
    fractional) of the input object ``frame``; same pixel size (metres) as the input, centre in
    metres from :meth:`ObjectFrame.stitched_center`. ValueError for a non-complex or non-2-D
    array."""
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.object import Object, ObjectCenter

    a = np.asarray(obj)
    if a.ndim != 2 or not np.iscomplexobj(a):
        raise ValueError(f"stitched object must be complex (h, w), got {a.dtype} {a.shape}")
    cx, cy = frame.stitched_center(x0, y0, a.shape[1], a.shape[0])
    return Object(array=a.astype(np.complex64)[np.newaxis], layer_spacing_m=[],
                  pixel_geometry=PixelGeometry(width_m=frame.pixel_m, height_m=frame.pixel_m),
                  center=ObjectCenter(x_m=cx, y_m=cy))


def scan_arrays(reconstruct_input: Any, *, with_object: bool = False) -> dict[str, np.ndarray]:
    """A ptychodus ``ReconstructInput`` as the arrays of a project NPZ (docs/conventions.md §13)
    that keeps the raw counts: ``diff3d`` the patterns ``(M, H, W)`` as measured, ``mask`` uint8
    ``(H, W)`` (1 = valid = not a bad pixel), ``xcoords``/``ycoords`` float64 object pixels,
    ``scan_index``, ``probeGuess`` complex64 ``(N, N)`` (first mode, first OPR weight), and
    ``_metadata`` (``diffraction_kind`` counts, ``dc`` centre, ``object_pixel_m``) so that
    reading it applies the same steps as reading ptychodus's files (§22). ``objectGuess`` (the
    product's first object layer) only with ``with_object`` (labels for supervised training).
    """
    product = reconstruct_input.product
    frame = ObjectFrame.of(product.object_)
    positions = product.probe_positions
    x, y = frame.to_pixels(positions.get_coordinates_x_m(), positions.get_coordinates_y_m())
    patterns = np.asarray(reconstruct_input.diffraction_patterns)
    if patterns.ndim != 3 or patterns.shape[0] != x.size:
        raise ValueError(f"diffraction patterns {patterns.shape} do not match {x.size} positions")
    bad = reconstruct_input.bad_pixels
    valid = np.ones(patterns.shape[1:], np.uint8) if bad is None else \
        (~np.asarray(bad, bool)).astype(np.uint8)
    probe = np.asarray(product.probes.get_probe_no_opr().get_array())
    while probe.ndim > 2:  # (modes, N, N): the first mode
        probe = probe[0]
    if probe.shape != patterns.shape[1:]:
        raise ValueError(f"product {product.metadata.name!r}: probe is {probe.shape}, expected "
                         f"{patterns.shape[1:]} like the diffraction patterns (ptycho-k3 needs "
                         "the probe on the detector's N x N grid)")
    probe_pixel = float(product.probes.get_pixel_geometry().width_m)
    if not math.isclose(probe_pixel, frame.pixel_m, rel_tol=1e-6):
        raise ValueError(f"probe pixel {probe_pixel} m differs from the object pixel "
                         f"{frame.pixel_m} m; ptycho-k3 needs the probe on the object grid")
    meta = {"diffraction_kind": "counts", "dc": "centre", "object_pixel_m": frame.pixel_m,
            "source": "ptychodus", "product": str(product.metadata.name)}
    out = {"xcoords": x, "ycoords": y, "diff3d": patterns, "mask": valid,
           "scan_index": np.asarray(positions.get_indexes(), np.int64),
           "probeGuess": probe.astype(np.complex64), "_metadata": np.array(json.dumps(meta))}
    if with_object:
        out["objectGuess"] = np.asarray(product.object_.get_layer(0)).astype(np.complex64)
    return out


def write_scan(path: str | os.PathLike, reconstruct_input: Any, *, with_object: bool = False
               ) -> Path:
    """:func:`scan_arrays` written as an uncompressed NPZ (atomically); returns the path."""
    from ptycho_k3.atomic import atomic_path

    out = Path(path)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **scan_arrays(reconstruct_input, with_object=with_object))
    return out

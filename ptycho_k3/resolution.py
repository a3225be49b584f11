"""Resolution without ground truth: Fourier ring correlation of two reconstructions.

Two reconstructions of the same object from disjoint halves of a scan (``--halves``), or any two
reconstructions in the same scan frame, are compared ring by ring in Fourier space
(docs/conventions.md §18, "FRC between two reconstructions"):

1. **Common region** (:func:`common_region`): both objects are placed in the scan frame by
   their origins ``x0``, ``y0`` (scan coordinates of pixel ``[0, 0]``). They must sit on the same
   pixel grid: origins that differ by a non-integer number of pixels raise ``ValueError``. The
   compared region is the overlap of the two canvases, restricted to the bounding box of the
   scanned centres (``xcoords``/``ycoords``) of each file — the part of the field that both
   scanned.
2. **Phase ramp** (optional, on by default): a global phase factor never matters
   (``|<F1 F2*>|`` ignores it), but a linear phase ramp difference — an ambiguity of ptychography,
   not resolution — shifts one spectrum against the other and would decorrelate every ring.
   The plane ``a x + b y + c`` through the wrapped phase of ``B conj(A)`` is removed from ``B``.
3. **Square crop and window**: centre-crop to a square of side ``L`` (the smaller side), then a
   separable 2-D Hann window (``hanning(L)`` per axis) so the edges of the region do not add
   a perfectly correlated cross of leakage to every ring.
4. **Curve**: :func:`ptycho_k3.metrics.ring_correlation` on complex images; rings ``0 … L // 2``
   are kept (ring ``L/2`` is the Nyquist frequency; the corner rings are incomplete).
5. **Thresholds**: constant 0.5 and 1/7, and the half-bit curve of van Heel & Schatz (2005),
   ``T(k) = (0.2071 + 1.9102 / sqrt(n_k)) / (1.2071 + 0.9102 / sqrt(n_k))`` with ``n_k`` the
   number of pixels in ring ``k``. The crossing is the first ring ``k >= 1`` where the curve
   drops below the threshold, linearly interpolated (:func:`ptycho_k3.metrics.frc_threshold` on
   ``curve - T``); ring 0 (the mean) is not searched.

**Units.** Ring ``k`` is the spatial frequency ``k / L`` cycles per pixel. The resolution is the
**full period** at the crossing, ``L / k_c`` pixels (so the finest measurable value is 2 px at
Nyquist), times the object pixel size when it is known. A curve that never crosses up to Nyquist
reports no resolution (``reached`` false): the limit is then the sampling, not the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho_k3.metrics.align import _wrapped_plane
from ptycho_k3.metrics.fourier_ring import _square_crop, frc_threshold, ring_correlation
from ptycho_k3.metrics.pixel import _as_image
from ptycho_k3.metrics.scoring import json_safe

__all__ = [
    "CRITERIA",
    "PairFRC",
    "common_region",
    "crossing_ring",
    "frc_between",
    "half_bit_threshold",
    "hann_window",
    "resolution_report",
]

#: Criteria reported: name -> constant threshold, or None for the half-bit curve.
CRITERIA: dict[str, float | None] = {"frc50": 0.5, "frc1over7": 1.0 / 7.0, "half_bit": None}

#: Origins closer than this to a whole number of pixels count as on the same grid.
GRID_TOL = 1e-6
#: Smallest square side (pixels) an FRC is computed on.
MIN_SIDE = 8

#: How the resolution is defined (written into frc.json).
CONVENTION = ("ring k = spatial frequency k / L cycles per pixel (L = side of the square); "
              "resolution = full period L / k_c at the interpolated crossing ring k_c")


def half_bit_threshold(n_k: Any) -> np.ndarray:
    """Half-bit threshold per ring (van Heel & Schatz 2005).

    Args:
        n_k: pixels per ring, any shape (``>= 1``).

    Returns:
        float64 of the same shape: ``(0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``;
        1 for ``n = 1``, tending to ``0.2071 / 1.2071 = 0.1716`` for large ``n``.
    """
    root = np.sqrt(np.asarray(n_k, dtype=np.float64))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def hann_window(shape: tuple[int, int]) -> np.ndarray:
    """Separable 2-D Hann window, float64 ``shape``: ``outer(hanning(H), hanning(W))``."""
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def crossing_ring(curve: Any, threshold: float | np.ndarray) -> float:
    """First ring ``k >= 1`` where ``curve`` drops below ``threshold``, interpolated.

    Args:
        curve: float ``(K,)`` FRC per ring.
        threshold: a constant, or float ``(K,)`` per ring (the half-bit curve).

    Returns:
        The crossing ring in ``[1, K - 1]``; ``1`` if ring 1 is already below; ``K`` if the curve
        never drops below; NaN if it is all NaN. Ring 0 is never searched (the threshold-curve
        crossing is :func:`ptycho_k3.metrics.frc_threshold` of ``curve - threshold`` at 0).
    """
    c = np.asarray(curve, dtype=np.float64)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), c.shape)
    if c.size < 2:
        return float("nan")
    return 1.0 + frc_threshold(c[1:] - t[1:], 0.0)


def _grid_offset(origin_a: Sequence[float], origin_b: Sequence[float]) -> tuple[int, int]:
    """Whole-pixel offset ``(dx, dy)`` of B's origin from A's; ValueError if not whole."""
    d = np.asarray(origin_b, dtype=np.float64) - np.asarray(origin_a, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"origins must be finite; got {tuple(origin_a)} and {tuple(origin_b)}")
    whole = np.rint(d)
    if np.any(np.abs(d - whole) > GRID_TOL):
        raise ValueError(
            f"the two reconstructions are not on the same pixel grid: their origins (x0, y0) "
            f"differ by ({d[0]:g}, {d[1]:g}) px, not a whole number of pixels")
    return int(whole[0]), int(whole[1])


def _scanned_box(positions: Any, origin: Sequence[float]) -> tuple[int, int, int, int]:
    """Pixels of a canvas with ``origin`` inside the bounding box of ``positions`` [x, y]."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if pos.shape[0] == 0 or not np.all(np.isfinite(pos)):
        raise ValueError("scan centres must be a non-empty finite (n, 2) [x, y] array")
    lo = np.ceil(pos.min(axis=0) - np.asarray(origin) - GRID_TOL).astype(int)
    hi = np.floor(pos.max(axis=0) - np.asarray(origin) + GRID_TOL).astype(int) + 1
    return int(lo[1]), int(hi[1]), int(lo[0]), int(hi[0])


def common_region(
    shape_a: tuple[int, int],
    origin_a: Sequence[float],
    shape_b: tuple[int, int],
    origin_b: Sequence[float],
    centres: Sequence[Any | None] = (),
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The region both reconstructions cover and both scans scanned, in A's pixels.

    Args:
        shape_a, shape_b: ``(H, W)`` of the two canvases.
        origin_a, origin_b: ``(x0, y0)`` scan coordinates of each canvas's pixel ``[0, 0]``.
        centres: scanned centres ``(n, 2)`` [x, y] in scan coordinates, one array per file
            (None entries are skipped); the region is cut to the bounding box of each.

    Returns:
        ``((r0, r1, c0, c1), (dx, dy))``: the half-open region in A's pixel indices, and B's
        whole-pixel offset, so A pixel ``[r, c]`` pairs with B pixel ``[r - dy, c - dx]``.

    Raises:
        ValueError: origins not on the same grid, or no common region.
    """
    dx, dy = _grid_offset(origin_a, origin_b)
    boxes = [(0, shape_a[0], 0, shape_a[1]), (dy, dy + shape_b[0], dx, dx + shape_b[1])]
    boxes += [_scanned_box(c, origin_a) for c in centres if c is not None]
    r0, r1 = max(b[0] for b in boxes), min(b[1] for b in boxes)
    c0, c1 = max(b[2] for b in boxes), min(b[3] for b in boxes)
    if r1 <= r0 or c1 <= c0:
        raise ValueError("the two reconstructions have no scanned region in common")
    return (r0, r1, c0, c1), (dx, dy)


@dataclass(frozen=True)
class PairFRC:
    """FRC of two reconstructions (:func:`frc_between`).

    Attributes:
        curve: float64 ``(L // 2 + 1,)`` FRC per ring ``0 … L/2`` (NaN where a ring has no power).
        n_k: int64 ``(L // 2 + 1,)`` pixels per ring.
        side: ``L``, side of the compared square (pixels).
        region: ``(r0, r1, c0, c1)`` the common region in A's pixels (before the square crop).
        square: ``(r0, r1, c0, c1)`` the compared square in A's pixels.
        origin: ``(x0, y0)`` of A: pixel ``[r, c]`` is scan position ``(x0 + c, y0 + r)``.
        ramp: ``(a, b)`` phase slopes (rad per pixel along x, y) removed from B, or None when the
            ramp was left in.
    """

    curve: np.ndarray
    n_k: np.ndarray
    side: int
    region: tuple[int, int, int, int]
    square: tuple[int, int, int, int]
    origin: tuple[float, float]
    ramp: tuple[float, float] | None

    @property
    def half_bit(self) -> np.ndarray:
        """float64 ``(L // 2 + 1,)`` half-bit threshold per ring."""
        return half_bit_threshold(self.n_k)

    @property
    def frequency(self) -> np.ndarray:
        """float64 ``(L // 2 + 1,)`` spatial frequency of each ring, cycles per pixel."""
        return np.arange(self.curve.size, dtype=np.float64) / self.side

    def crossings(self) -> dict[str, float]:
        """Crossing ring per criterion of :data:`CRITERIA` (see :func:`crossing_ring`)."""
        return {name: crossing_ring(self.curve, self.half_bit if thr is None else thr)
                for name, thr in CRITERIA.items()}


def frc_between(
    obj_a: Any,
    obj_b: Any,
    *,
    origin_a: Sequence[float] = (0.0, 0.0),
    origin_b: Sequence[float] = (0.0, 0.0),
    centres_a: Any = None,
    centres_b: Any = None,
    remove_ramp: bool = True,
) -> PairFRC:
    """FRC between two complex reconstructions in the same scan frame (module docstring).

    Args:
        obj_a, obj_b: complex (or real) ``(H, W)`` objects; shapes may differ.
        origin_a, origin_b: ``(x0, y0)`` of each (scan coordinates of pixel ``[0, 0]``, object
            pixels); they must differ by whole pixels.
        centres_a, centres_b: scanned centres ``(n, 2)`` [x, y] of each file, or None (then the
            whole canvas overlap is used).
        remove_ramp: remove the linear phase ramp difference from B first.

    Returns:
        :class:`PairFRC`.

    Raises:
        ValueError: non-finite or non-2-D input, origins off the common grid, no common region,
            or a square smaller than :data:`MIN_SIDE` pixels.
    """
    a = _as_image(obj_a, "reconstruction A").astype(np.complex128)
    b = _as_image(obj_b, "reconstruction B").astype(np.complex128)
    (r0, r1, c0, c1), (dx, dy) = common_region(a.shape, origin_a, b.shape, origin_b,
                                               (centres_a, centres_b))
    a = a[r0:r1, c0:c1]
    b = b[r0 - dy:r1 - dy, c0 - dx:c1 - dx]
    ramp = None
    if remove_ramp:
        plane = _wrapped_plane(b * np.conj(a))
        b = b * np.exp(-1j * plane)
        ramp = (float(plane[0, 1] - plane[0, 0]) if plane.shape[1] > 1 else 0.0,
                float(plane[1, 0] - plane[0, 0]) if plane.shape[0] > 1 else 0.0)
    a, b = _square_crop(a), _square_crop(b)
    side = a.shape[0]
    if side < MIN_SIDE:
        raise ValueError(f"the common region {r1 - r0}x{c1 - c0} px is too small for an FRC "
                         f"(needs a {MIN_SIDE}x{MIN_SIDE} square)")
    window = hann_window(a.shape)
    curve, n_k = ring_correlation(a * window, b * window)
    keep = side // 2 + 1
    q0, p0 = r0 + (r1 - r0 - side) // 2, c0 + (c1 - c0 - side) // 2
    return PairFRC(curve=curve[:keep], n_k=n_k[:keep], side=side, region=(r0, r1, c0, c1),
                   square=(q0, q0 + side, p0, p0 + side),
                   origin=(float(origin_a[0]), float(origin_a[1])), ramp=ramp)


def _crossing_record(ring: float, result: PairFRC, pixel_nm: float | None) -> dict[str, Any]:
    """One criterion's crossing in rings, cycles per pixel, pixels and (if known) nm."""
    last = result.curve.size - 1
    reached = math.isfinite(ring) and ring <= last
    rec: dict[str, Any] = {"reached": bool(reached), "ring": ring if reached else None,
                           "frequency_per_px": None, "resolution_px": None}
    if pixel_nm is not None:
        rec["frequency_per_nm"] = None
        rec["resolution_nm"] = None
    if not reached:
        rec["note"] = ("undefined (no power)" if not math.isfinite(ring) else
                       f"above the threshold up to Nyquist (ring {last}): finer than 2 px, "
                       "limited by the sampling")
        return rec
    rec["frequency_per_px"] = ring / result.side
    rec["resolution_px"] = result.side / ring
    if pixel_nm is not None:
        rec["frequency_per_nm"] = ring / (result.side * pixel_nm)
        rec["resolution_nm"] = result.side / ring * pixel_nm
    return rec


def resolution_report(result: PairFRC, pixel_size_m: float | None = None) -> dict[str, Any]:
    """JSON-safe summary of a :class:`PairFRC` (what ``frc.json`` holds, less the inputs).

    Returns:
        ``{"thresholds": {frc50, frc1over7, half_bit: {reached, ring, frequency_per_px,
        resolution_px[, frequency_per_nm, resolution_nm][, note]}}, "curve": [...],
        "n_k": [...], "half_bit": [...], "ring": [...], "frequency_per_px": [...],
        ["frequency_per_nm": [...],] "side": L, "region": [...], "square": [...],
        "origin": [x0, y0], "phase_ramp_removed": [a, b] | None, "pixel_size_m": float | None,
        "conventions": {...}}``. NaN curve values become None.
    """
    pixel_nm = None if pixel_size_m is None else float(pixel_size_m) * 1e9
    out: dict[str, Any] = {
        "thresholds": {name: _crossing_record(ring, result, pixel_nm)
                       for name, ring in result.crossings().items()},
        "side": result.side,
        "ring": np.arange(result.curve.size),
        "curve": result.curve,
        "n_k": result.n_k,
        "half_bit": result.half_bit,
        "frequency_per_px": result.frequency,
    }
    if pixel_nm is not None:
        out["frequency_per_nm"] = result.frequency / pixel_nm
    out.update({
        "region": list(result.region),
        "square": list(result.square),
        "origin": list(result.origin),
        "phase_ramp_removed": None if result.ramp is None else list(result.ramp),
        "pixel_size_m": pixel_size_m,
        "conventions": {
            "resolution": CONVENTION,
            "region": "overlap of both canvases within the bounding box of each file's scanned "
                      "centres; region and square are [row0, row1, col0, col1) pixels of the "
                      "reconstruction (A), origin its scan coordinates of pixel [0, 0]",
            "window": "2-D Hann on the central square",
            "phase_ramp": "plane through the wrapped phase of B conj(A) removed from B (slopes "
                          "in rad/px along x, y)" if result.ramp is not None else "not removed",
            "thresholds": "0.5, 1/7 and half-bit T(k) = (0.2071 + 1.9102/sqrt(n_k)) / "
                          "(1.2071 + 0.9102/sqrt(n_k)); first crossing at ring >= 1, "
                          "linearly interpolated",
        },
    })
    return json_safe(out)

"""What a refinement works on, in NumPy: measured counts, valid pixels, the canvas, a start.

Units: intensities are counts. A scan stores amplitudes ``A`` (sqrt(counts) up to a scale ``s``),
so counts are ``k = (s * A)^2`` with ``s`` = the simulator's ``s_sim`` when the metadata has it,
else ``sqrt(nphotons / mean sum A^2)`` from ``nphotons``, else 1 (the amplitudes are then taken
as sqrt(counts) themselves). The model's intensities are ``s^2 * |FFT(P * O)|^2 / N^2`` with the
scan's probe ``P``, so an object in the simulator's units predicts the measured counts.

The canvas is the object array the solver updates: its pixel ``[r, c]`` is scan position
``(x0 + c, y0 + r)`` (integer origin, the frame of ``reconstruct``'s stitched object), large enough
for every position's ``(N+1) x (N+1)`` window plus a margin for position corrections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptycho_k3.data import DataError, ScanData


@dataclass(frozen=True)
class Measurements:
    """Counts and valid pixels of a scan.

    Attributes:
        counts: float32 ``(M, N, N)`` counts, DC at ``(N/2, N/2)``; 0 where invalid.
        valid: float32 ``(M, N, N)`` 1 where a pixel counts, 0 where it is masked or was NaN.
        scale: ``s`` (amplitude units -> sqrt(counts)), float.
    """

    counts: np.ndarray
    valid: np.ndarray
    scale: float


def amplitude_scale(scan: ScanData) -> float:
    """``s`` that turns the scan's stored amplitudes into sqrt(counts) (module docstring)."""
    s_sim = scan.metadata.get("s_sim")
    try:
        s = float(s_sim)
        if s > 0 and math.isfinite(s):
            return s
    except (TypeError, ValueError):
        pass
    nphotons = scan.nphotons
    if nphotons is not None:
        # Reads the whole stack (a lazy scan too): the refinement holds every pattern anyway.
        energy = float(np.nanmean(np.nansum(np.square(scan.diffraction, dtype=np.float64),
                                            axis=(-2, -1))))
        if energy > 0:
            return math.sqrt(nphotons / energy)
    return 1.0


def measurements(scan: ScanData, mask: np.ndarray | None = None) -> Measurements:
    """Counts and valid pixels of ``scan``; pixels invalid in ``scan.valid``, NaN pixels and
    ``mask == 0`` pixels are invalid.

    Args:
        scan: the scan (amplitudes ``(M, N, N)``).
        mask: optional valid-pixel mask, ``(N, N)`` or ``(M, N, N)``, nonzero = valid.

    Raises:
        DataError: a mask of the wrong shape, or a pattern with no valid pixel.
    """
    where = scan.source or "scan"
    # The refinement works on every pattern at once: a scan read on demand
    # (ptycho_k3.data.lazy) is read whole here, and its valid mask below too.
    amp = np.asarray(scan.diffraction, dtype=np.float32)
    m, n = amp.shape[0], amp.shape[-1]
    valid = np.isfinite(amp)
    if scan.valid is not None:  # the reader's mask (docs/conventions.md §22)
        valid &= np.broadcast_to(np.asarray(scan.valid), amp.shape)
    if mask is not None:
        mk = np.asarray(mask)
        if mk.shape not in ((n, n), (m, n, n)):
            raise DataError(f"{where}: mask has shape {mk.shape}; expected ({n}, {n}) or "
                            f"({m}, {n}, {n}) (nonzero = valid pixel)")
        valid &= np.broadcast_to(mk != 0, amp.shape)
    empty = np.flatnonzero(~valid.reshape(m, -1).any(axis=1))
    if empty.size:
        raise DataError(f"{where}: pattern {int(empty[0])} (and {empty.size - 1} more) has no "
                        "valid pixel; remove it from the scan or fix the mask")
    s = amplitude_scale(scan)
    counts = np.where(valid, np.square(np.nan_to_num(amp) * np.float32(s)), 0.0)
    return Measurements(counts=counts.astype(np.float32), valid=valid.astype(np.float32),
                        scale=float(s))


@dataclass(frozen=True)
class Canvas:
    """Geometry of the refinement canvas: origin ``(x0, y0)`` in scan coordinates and shape."""

    x0: int
    y0: int
    height: int
    width: int

    def to_canvas(self, positions: np.ndarray) -> np.ndarray:
        """Scan-coordinate ``[x, y]`` -> canvas pixels (float64 ``(M, 2)``)."""
        return np.asarray(positions, np.float64) - np.array([self.x0, self.y0], np.float64)

    def upper_position(self, n: int) -> tuple[float, float]:
        """Largest ``[x, y]`` whose ``(n+1)``-window (``floor(x) + n/2`` its last column) lies
        inside the canvas; the smallest is ``n/2``."""
        return (self.width - n // 2 - 1e-3, self.height - n // 2 - 1e-3)

    def clamp(self, canvas_positions: np.ndarray, n: int) -> np.ndarray:
        """Canvas positions kept where every ``(n+1)``-window lies inside the canvas."""
        return np.clip(canvas_positions, n // 2, np.array(self.upper_position(n)))


def canvas_for(positions: np.ndarray, n: int, margin: int = 2) -> Canvas:
    """The smallest canvas holding every position's window with ``margin`` spare pixels a side."""
    pos = np.asarray(positions, np.float64)
    lo = np.floor(pos.min(axis=0)).astype(np.int64) - n // 2 - margin
    hi = np.floor(pos.max(axis=0)).astype(np.int64) + n // 2 + 1 + margin
    return Canvas(x0=int(lo[0]), y0=int(lo[1]), height=int(hi[1] - lo[1] + 1),
                  width=int(hi[0] - lo[0] + 1))


def place(obj: np.ndarray, x0: float, y0: float, canvas: Canvas,
          covered: np.ndarray | None = None) -> np.ndarray:
    """``obj`` (origin ``x0, y0``) copied into a complex64 canvas; the rest gets a neutral value.

    The neutral value is the mean of the covered pixels rescaled to their median modulus, so an
    uncovered pixel neither darkens the start nor adds a phase step. ``covered`` (bool, obj's
    shape) marks the pixels that hold data (default: nonzero pixels).
    """
    o = np.asarray(obj, np.complex64)
    cov = (o != 0) if covered is None else np.asarray(covered, bool)
    if not cov.any():
        raise DataError("the start object has no covered pixel")
    mean = complex(o[cov].mean())
    median = float(np.median(np.abs(o[cov])))
    neutral = (mean / abs(mean) * median) if abs(mean) > 0 else median
    out = np.full((canvas.height, canvas.width), neutral, np.complex64)
    if x0 != int(x0) or y0 != int(y0):
        raise ValueError(f"the start object's origin ({x0}, {y0}) is not a whole pixel; place it "
                         "on the integer frame first (ptycho_k3.stitch.stitch_patches, not the "
                         "legacy layout)")
    dx, dy = int(x0) - canvas.x0, int(y0) - canvas.y0
    r0, c0 = max(0, dy), max(0, dx)
    r1, c1 = min(canvas.height, dy + o.shape[0]), min(canvas.width, dx + o.shape[1])
    if r1 > r0 and c1 > c0:
        src = o[r0 - dy:r1 - dy, c0 - dx:c1 - dx]
        keep = cov[r0 - dy:r1 - dy, c0 - dx:c1 - dx]
        region = out[r0:r1, c0:c1]
        region[keep] = src[keep]
    return out


def illumination(probe: np.ndarray, positions: np.ndarray, canvas: Canvas) -> np.ndarray:
    """``sum_j |P|^2`` placed at each position (nearest pixel), float32 ``(H, W)``.

    For pictures and coverage only (the solver's own illumination is exact and bilinear).
    """
    p2 = np.abs(np.asarray(probe)) ** 2
    n = p2.shape[-1]
    out = np.zeros((canvas.height, canvas.width), np.float64)
    corners = np.round(canvas.to_canvas(positions)).astype(np.int64) - n // 2
    for cx, cy in corners:
        r0, c0 = max(cy, 0), max(cx, 0)
        r1, c1 = min(cy + n, canvas.height), min(cx + n, canvas.width)
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] += p2[r0 - cy:r1 - cy, c0 - cx:c1 - cx]
    return out.astype(np.float32)

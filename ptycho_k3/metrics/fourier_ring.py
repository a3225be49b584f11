"""Fourier ring correlation (docs/conventions.md §18, FRC): the curve, its threshold crossings
and the ring correlation that :mod:`ptycho_k3.resolution` builds on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .pixel import _as_image, _real_pair

__all__ = ["FRCResult", "frc", "frc_curve", "frc_threshold", "ring_correlation"]


# ----------------------------------------------------------------------------------------------
# FRC


@dataclass(frozen=True)
class FRCResult:
    """Fourier ring correlation of a prediction against a target.

    Attributes:
        curve: float64 ``(K,)``: FRC per ring index ``k`` (cycles per image side); NaN where a
            ring has no power (all NaN when the target is identically zero).
        frc50: first crossing below 0.5, linearly interpolated (ring units); 0 if ring 0 is
            already below, ``K`` if never below; NaN when the target is identically zero.
        frc1over7: the same for the 1/7 threshold.
    """

    curve: np.ndarray
    frc50: float
    frc1over7: float


def _square_crop(img: np.ndarray) -> np.ndarray:
    """Centre-crop to a square of the smaller side (``start = (size - n) // 2`` per axis)."""
    n = min(img.shape)
    r0 = (img.shape[0] - n) // 2
    c0 = (img.shape[1] - n) // 2
    return img[r0 : r0 + n, c0 : c0 + n]


def frc_curve(target: Any, pred: Any) -> np.ndarray:
    """FRC curve per docs/conventions.md §18 (FRC).

    Non-square images are centre-cropped to a square of side ``n``; ``F = fftshift(fft2(img))``
    without window; ring index ``round(sqrt(r^2 + c^2))`` with ``r, c`` measured from index
    ``n // 2`` (rings run into the corners);
    ``FRC_k = |<F1 F2*>_k| / sqrt(|<|F1|^2>_k <|F2|^2>_k|)`` with ring means ``<.>_k``.

    Returns:
        float64 ``(K,)`` with ``K = max ring index + 1``; NaN where a ring has zero power.
    """
    t, p = _real_pair(target, pred)
    curve, _ = ring_correlation(_square_crop(t), _square_crop(p))
    return curve


def ring_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ring correlation of two square images (real or complex), as in :func:`frc_curve`.

    ``F = fftshift(fft2(img))``; ring index ``round(sqrt(r^2 + c^2))`` with ``r, c`` measured
    from index ``n // 2`` (rings run into the corners);
    ``FRC_k = |<F1 F2*>_k| / sqrt(|<|F1|^2>_k <|F2|^2>_k|)``. A global phase factor on either
    image does not change it.

    Args:
        a, b: ``(n, n)`` arrays of equal shape (no window, no crop applied here).

    Returns:
        ``(curve, n_k)``: float64 ``(K,)`` FRC per ring (NaN where a ring has zero power) and
        int64 ``(K,)`` pixels per ring, ``K = max ring index + 1``.
    """
    n = a.shape[0]
    f1 = np.fft.fftshift(np.fft.fft2(a))
    f2 = np.fft.fftshift(np.fft.fft2(b))
    idx = np.arange(n) - n // 2
    ring = np.rint(np.hypot(idx[:, None], idx[None, :])).astype(np.int64).ravel()
    counts = np.bincount(ring)
    cross = f1 * np.conj(f2)
    num_re = np.bincount(ring, cross.real.ravel()) / counts
    num_im = np.bincount(ring, cross.imag.ravel()) / counts
    p1 = np.bincount(ring, (np.abs(f1) ** 2).ravel()) / counts
    p2 = np.bincount(ring, (np.abs(f2) ** 2).ravel()) / counts
    denom = np.sqrt(np.abs(p1 * p2))
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = np.hypot(num_re, num_im) / denom
    curve[denom == 0] = np.nan
    return curve, counts


def frc_threshold(curve: np.ndarray, threshold: float) -> float:
    """First ring where ``curve`` drops below ``threshold``, linearly interpolated.

    Between rings ``k - 1`` and ``k``: ``k - 1 + (c[k-1] - thr) / (c[k-1] - c[k])``. Returns 0 if
    ring 0 is already below, ``len(curve)`` if it never drops below, NaN if the curve is all NaN.
    NaN entries never count as "below".
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.size == 0 or np.all(np.isnan(c)):
        return float("nan")
    below = np.flatnonzero(c < threshold)
    if below.size == 0:
        return float(c.size)
    k = int(below[0])
    if k == 0:
        return 0.0
    prev = c[k - 1]
    if np.isnan(prev):
        return float(k)
    return float(k - 1 + (prev - threshold) / (prev - c[k]))


def frc(target: Any, pred: Any, *, sigma: float = 0.0) -> FRCResult:
    """FRC curve, optionally Gaussian-smoothed (``sigma`` in rings), with FRC50 and FRC 1/7.

    NaN thresholds (and an all-NaN curve) when the target is identically zero.
    """
    t = _as_image(target, "target", allow_complex=False)
    curve = frc_curve(t, pred)
    if not np.any(t):
        curve = np.full_like(curve, np.nan)
    elif sigma > 0:
        finite = np.nan_to_num(curve, nan=0.0)
        curve = ndimage.gaussian_filter1d(finite, sigma)
    return FRCResult(curve, frc_threshold(curve, 0.5), frc_threshold(curve, 1.0 / 7.0))

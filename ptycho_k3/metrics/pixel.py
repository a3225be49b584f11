"""Pixel metrics of two real images: MAE, MSE, PSNR, SSIM and the original's MS-SSIM
(docs/conventions.md §18), and the input checks every metrics module shares.

All images are 2-D; ``(H, W, 1)`` and ``(1, H, W, 1)`` are accepted and squeezed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "MS_SSIM_WEIGHTS",
    "mae",
    "ms_ssim_legacy",
    "mse",
    "psnr",
    "psnr_legacy255",
    "ssim",
]

#: Per-level weights of the original MS-SSIM (Wang et al. 2003 values).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: OpenCV's ``DBL_EPSILON`` guard in ``cv2.PSNR`` (identical images give 361.2 dB at peak 255).
_DBL_EPSILON = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------
# input validation


def _as_image(a: Any, name: str, *, allow_complex: bool = True) -> np.ndarray:
    """Squeeze ``(H, W, 1)`` / ``(1, H, W, 1)`` to ``(H, W)``; check non-empty, numeric, finite."""
    arr = np.asarray(a)
    if arr.ndim == 4 and arr.shape[0] == 1 and arr.shape[-1] == 1:
        arr = arr[0, ..., 0]
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image (H, W); got shape {np.shape(a)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number) or (np.iscomplexobj(arr) and not allow_complex):
        raise ValueError(f"{name} has unsupported dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return arr


def _same_shape(a: np.ndarray, b: np.ndarray, names: str = "images") -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} differ in shape: {a.shape} vs {b.shape}")


def _real_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_image(pred, "prediction", allow_complex=False).astype(np.float64)
    t = _as_image(target, "target", allow_complex=False).astype(np.float64)
    _same_shape(p, t, "prediction and target")
    return p, t


# ----------------------------------------------------------------------------------------------
# pixel metrics


def mae(pred: Any, target: Any) -> float:
    """Mean absolute error ``mean |pred - target|`` of two real images of equal shape."""
    p, t = _real_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def mse(pred: Any, target: Any) -> float:
    """Mean squared error ``mean (pred - target)^2`` of two real images of equal shape."""
    p, t = _real_pair(pred, target)
    return float(np.mean((p - t) ** 2))


def psnr(pred: Any, target: Any, data_range: float) -> float:
    """Standard PSNR in dB: ``10 log10(data_range^2 / MSE)``.

    Returns ``inf`` for identical images and ``nan`` when ``data_range <= 0`` (undefined peak).
    """
    err = mse(pred, target)
    if not data_range > 0:
        return float("nan")
    if err == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / err))


def psnr_legacy255(pred: Any, target: Any) -> float:
    """The original's PSNR: OpenCV ``cv2.PSNR`` with its default peak 255, whatever the data range.

    ``20 log10(255 / (RMSE + DBL_EPSILON))``; finite for identical images (361.2 dB). Only for
    comparison with the original's published numbers; use :func:`psnr` otherwise.
    """
    rmse = math.sqrt(mse(pred, target))
    return float(20.0 * np.log10(255.0 / (rmse + _DBL_EPSILON)))


# ----------------------------------------------------------------------------------------------
# SSIM


def ssim(
    x: Any,
    y: Any,
    data_range: float,
    *,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean SSIM with scikit-image's defaults (``structural_similarity`` on 2-D float images).

    Local statistics over a ``win_size x win_size`` uniform window
    (``scipy.ndimage.uniform_filter``, reflecting borders), variances/covariance with the sample
    normalisation ``n / (n - 1)``,
    ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; the SSIM map is averaged after cropping
    ``(win_size - 1) / 2`` pixels from each border. Symmetric in ``x`` and ``y``.

    Args:
        x, y: real images of equal shape, each side ``>= win_size``.
        data_range: ``R``, the dynamic range of the images (must be > 0, else NaN is returned).
        win_size: odd window side.

    Returns:
        Mean SSIM in [-1, 1]; NaN if ``data_range <= 0``.
    """
    a, b = _real_pair(x, y)
    if win_size % 2 != 1 or win_size < 3:
        raise ValueError(f"win_size must be odd and >= 3; got {win_size}")
    if min(a.shape) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}; got {a.shape}")
    if not data_range > 0:
        return float("nan")
    npix = win_size * win_size
    cov_norm = npix / (npix - 1.0)

    def mean_filter(img: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(img, size=win_size)

    ux, uy = mean_filter(a), mean_filter(b)
    vx = cov_norm * (mean_filter(a * a) - ux * ux)
    vy = cov_norm * (mean_filter(b * b) - uy * uy)
    vxy = cov_norm * (mean_filter(a * b) - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(smap[pad:-pad, pad:-pad].mean(dtype=np.float64))


def ms_ssim_legacy(
    x: Any,
    y: Any,
    *,
    sigma: float = 0.0,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> float:
    """The original PtychoPINN's multi-scale SSIM (NON-standard; not comparable with MS-SSIM).

    Both images are optionally Gaussian-blurred (``sigma`` px; the original blurs amplitudes with
    1.0 and leaves phases unblurred); ``R`` = the larger of the two images' ranges. Level ``l``
    (at most ``len(weights)``) computes the *full* SSIM (:func:`ssim`) of the current images and
    multiplies ``SSIM_l ** weights[l]`` into the result (weights are not renormalised when fewer
    levels fit); then both images are decimated ``[::2, ::2]`` without low-pass. Levels stop once
    the smaller side drops below 7. A negative SSIM is clamped to 1e-4; a NaN SSIM returns 0.

    Returns:
        The product, in (0, 1]; NaN if even the first level does not fit (side < 7) or ``R`` is 0.
    """
    a, b = _real_pair(x, y)
    if sigma > 0:
        a = ndimage.gaussian_filter(a, sigma)
        b = ndimage.gaussian_filter(b, sigma)
    data_range = max(float(np.ptp(a)), float(np.ptp(b)))
    if min(a.shape) < 7 or not data_range > 0:
        return float("nan")
    value = 1.0
    for w in weights:
        if min(a.shape) < 7:
            break
        s = ssim(a, b, data_range)
        if math.isnan(s):
            return 0.0
        value *= max(s, 1e-4) ** w
        a, b = a[::2, ::2], b[::2, ::2]
    return float(value)


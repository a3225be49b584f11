"""Evaluation of a reconstructed object against ground truth (NumPy/SciPy, no Keras).

Implements ``docs/conventions.md`` §18 with the ptycho-k3 decisions:

* **Alignment** (:func:`align_for_evaluation`): the stitched canvas is placed in the object frame by
  geometry (its origin ``x0``, ``y0``), both images are cropped to ``bbox(scan positions) ± M/2``
  (clipped to the object), then a *bounded* registration: the integer shift ``|dy|, |dx| <= 3`` that
  maximises the normalised cross-correlation (NCC) of the amplitudes, then a sub-pixel correction
  (NCC maximised over cubic-spline shifts) accepted only if ``<= 1`` px per axis, then a 2-px crop.
  Shift sign: ``shift = (dy, dx)`` is applied to the *reconstruction* with the project's
  convention (content moves by ``+shift``), i.e. ``aligned[y, x] = rec[y - dy, x - dx]``; if
  ``rec = translate(gt, t)`` the registration reports ``shift ≈ -t``.
* **Scoring** (:func:`score`): 2-px trim (legacy ``offset // 2``); amplitude mean-scaling
  (``amp_pred *= mean(amp_gt) / mean(amp_pred)``, amplitude only); phase alignment, by default a
  least-squares plane ``a x + b y + c`` fitted to the *wrapped phase difference*
  ``angle(rec * conj(gt))`` and removed from the reconstruction only (see
  :data:`PHASE_PLANE_METHODS`);
  MAE, MSE, standard PSNR (peak = data range of the ground-truth amplitude; ``2 pi`` for phase),
  ``psnr_legacy255`` (OpenCV's peak-255 value), SSIM (scikit-image defaults), the original's
  non-standard MS-SSIM as ``ms_ssim_legacy``, and the FRC curve with ``frc50`` / ``frc1over7``.
* :func:`evaluate` chains both and returns a JSON-safe dict (non-finite numbers become ``None``,
  with a note saying why); a uniform ground-truth phase makes the phase metrics "not applicable"
  instead of failing.

All images are 2-D; ``(H, W, 1)`` and ``(1, H, W, 1)`` are accepted and squeezed. Coordinates are
``[x (column), y (row)]`` in object pixels; image indices are ``[row, column]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, optimize

__all__ = [
    "Alignment",
    "FRCResult",
    "MS_SSIM_WEIGHTS",
    "PHASE_PLANE_METHODS",
    "align_for_evaluation",
    "align_phase",
    "evaluate",
    "fit_plane",
    "frc",
    "frc_curve",
    "frc_threshold",
    "json_safe",
    "mae",
    "ms_ssim_legacy",
    "mse",
    "place_in_object_frame",
    "psnr",
    "psnr_legacy255",
    "register",
    "ring_correlation",
    "scan_region",
    "score",
    "ssim",
]

#: Per-level weights of the original MS-SSIM (Wang et al. 2003 values).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

#: Phase alignment variants accepted by :func:`align_phase` / :func:`score`.
#:
#: * ``"difference"`` (default): fit one plane to the wrapped difference ``angle(rec conj(gt))`` and
#:   remove it from the reconstruction; the ground truth is untouched. This removes exactly the
#:   ptychographic ambiguities (global phase, linear ramp) without re-shaping the reference, is
#:   insensitive to phase wraps in the images themselves, and cannot hide a ramp that the ground
#:   truth really has (fitting each image separately can).
#: * ``"plane"``: the original's choice, a plane fitted separately to each image's ``angle()`` and
#:   subtracted from that image.
#: * ``"mean"``: the original's alternative, each image minus its own mean phase.
#: * ``"none"``: raw ``angle()`` of both.
PHASE_PLANE_METHODS: tuple[str, ...] = ("difference", "plane", "mean", "none")

#: A ground-truth phase whose range is below this (radians) is treated as uniform.
UNIFORM_PHASE_TOL = 1e-6
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


# ----------------------------------------------------------------------------------------------
# phase


def fit_plane(img: Any, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares plane ``a x + b y + c`` through a real image (x = column, y = row index).

    Args:
        img: real ``(H, W)``.
        weights: optional non-negative ``(H, W)`` weights.

    Returns:
        float64 ``(H, W)``: the fitted plane evaluated on the pixel grid.
    """
    z = _as_image(img, "image", allow_complex=False).astype(np.float64)
    h, w = z.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # Centred coordinates keep the normal equations well conditioned for large images.
    xx -= (w - 1) / 2.0
    yy -= (h - 1) / 2.0
    design = np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)], axis=1)
    rhs = z.ravel()
    if weights is not None:
        sw = np.sqrt(np.asarray(weights, dtype=np.float64).ravel())
        design, rhs = design * sw[:, None], rhs * sw
    coef, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    return (coef[0] * xx + coef[1] * yy + coef[2]).reshape(h, w)


def _wrap(phase: np.ndarray) -> np.ndarray:
    """Wrap to [-pi, pi)."""
    return np.angle(np.exp(1j * phase))


def align_phase(
    rec: np.ndarray, gt: np.ndarray, method: str = "difference"
) -> tuple[np.ndarray, np.ndarray]:
    """Phase images of ``rec`` and ``gt`` after removing the ambiguity per ``method``.

    Args:
        rec, gt: complex ``(H, W)`` of equal shape.
        method: one of :data:`PHASE_PLANE_METHODS`.

    Returns:
        ``(phi_rec, phi_gt)`` float64 radians. For ``"difference"``, ``phi_gt = angle(gt)`` and
        ``phi_rec = phi_gt + wrap(angle(rec conj(gt)) - plane)``, so ``phi_rec - phi_gt`` is the
        wrapped residual in [-pi, pi) (no spurious 2 pi errors).
    """
    if method not in PHASE_PLANE_METHODS:
        raise ValueError(f"phase method must be one of {PHASE_PLANE_METHODS}; got {method!r}")
    phi_r, phi_g = np.angle(rec).astype(np.float64), np.angle(gt).astype(np.float64)
    if method == "none":
        return phi_r, phi_g
    if method == "mean":
        return phi_r - phi_r.mean(), phi_g - phi_g.mean()
    if method == "plane":
        return phi_r - fit_plane(phi_r), phi_g - fit_plane(phi_g)
    # "difference": remove the circular mean first so a global offset near pi does not wrap, then
    # fit the plane and refit once on the re-wrapped residual (unwrapping around the plane).
    cross = rec.astype(np.complex128) * np.conj(gt.astype(np.complex128))
    plane = _wrapped_plane(cross)
    residual = _wrap(np.angle(cross) - plane)
    # Snap least-squares round-off on an exact match, so identical images score MSE 0 exactly.
    residual[np.abs(residual) < 1e-12] = 0.0
    return phi_g + residual, phi_g


def _wrapped_plane(cross: np.ndarray) -> np.ndarray:
    """Plane ``a x + b y + c`` through the phase of ``cross`` that survives phase wrapping.

    The slopes start from the circular mean of neighbour phase differences (a ramp of any
    steepness below pi per pixel), the offset from the circular mean after removing them; a
    least-squares fit to the re-wrapped residual then refines all three.
    """
    h, w = cross.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = float(np.angle(np.sum(cross[:, 1:] * np.conj(cross[:, :-1])))) if w > 1 else 0.0
    b = float(np.angle(np.sum(cross[1:, :] * np.conj(cross[:-1, :])))) if h > 1 else 0.0
    plane = a * xx + b * yy
    plane += float(np.angle(np.sum(cross * np.exp(-1j * plane))))
    for _ in range(2):
        plane = plane + fit_plane(_wrap(np.angle(cross) - plane))
    return plane


# ----------------------------------------------------------------------------------------------
# alignment


def scan_region(positions: Any, M: int, object_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The original's evaluation window: ``bbox(positions) ± M/2``, clipped to the object.

    Rows ``[floor(min y) - M//2, floor(max y) + M//2)``, columns likewise (``int()`` in the
    original, for non-negative positions).

    Args:
        positions: ``(n, 2)`` [x, y] (or ``(n, 1, 2, 1)``) in object pixels.
        M: the stitching crop side.
        object_shape: ``(H, W)`` of the ground truth.

    Returns:
        ``(r0, r1, c0, c1)`` half-open, in object pixels.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 4:
        pos = pos[:, 0, :, 0]
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise ValueError(f"positions must have shape (n, 2) [x, y]; got {np.shape(positions)}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or infinity")
    half = int(M) // 2
    lo = np.floor(pos.min(axis=0)).astype(int) - half
    hi = np.floor(pos.max(axis=0)).astype(int) + half
    h, w = object_shape
    r0, r1 = max(0, int(lo[1])), min(h, int(hi[1]))
    c0, c1 = max(0, int(lo[0])), min(w, int(hi[0]))
    if r1 <= r0 or c1 <= c0:
        raise ValueError("the scan region does not overlap the ground-truth object")
    return r0, r1, c0, c1


def place_in_object_frame(
    canvas: np.ndarray, x0: int, y0: int, region: tuple[int, int, int, int]
) -> np.ndarray:
    """Sample a canvas whose pixel ``[0, 0]`` is scan position ``(x0, y0)`` on an object window.

    Args:
        canvas: ``(h, w)`` image; pixel ``[r, c]`` represents object pixel ``[y0 + r, x0 + c]``.
        x0, y0: integer origin.
        region: ``(r0, r1, c0, c1)`` half-open window in object pixels.

    Returns:
        ``(r1 - r0, c1 - c0)`` array; 0 where the canvas does not reach.
    """
    if float(x0) != int(x0) or float(y0) != int(y0):
        raise ValueError(
            f"the canvas origin must be integral to place it in the object frame; got "
            f"x0={x0}, y0={y0} (use ptycho_k3.stitch.stitch_patches, not the legacy layout)"
        )
    x0, y0 = int(x0), int(y0)
    r0, r1, c0, c1 = region
    out = np.zeros((r1 - r0, c1 - c0), dtype=canvas.dtype)
    h, w = canvas.shape
    rr0, rr1 = max(r0, y0), min(r1, y0 + h)
    cc0, cc1 = max(c0, x0), min(c1, x0 + w)
    if rr1 > rr0 and cc1 > cc0:
        out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = canvas[rr0 - y0 : rr1 - y0, cc0 - x0 : cc1 - x0]
    return out


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation (Pearson) of two equally shaped real arrays; NaN if flat.

    With ``mask`` (bool, same shape) only the pixels where it is true count.
    """
    if mask is not None:
        if not mask.any():
            return float("nan")
        a, b = a[mask], b[mask]
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    if denom == 0:
        return float("nan")
    return float(np.sum(a * b)) / denom


def _registration_image(img: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Amplitude, or the phase when the reference amplitude is flat (phase-only objects)."""
    if np.ptp(np.abs(reference)) > 1e-12 * max(1.0, float(np.abs(reference).max())):
        return np.abs(img).astype(np.float64)
    return np.angle(img).astype(np.float64)


@dataclass(frozen=True)
class Registration:
    """Outcome of :func:`register` (shift applied to the reconstruction, content moves by +shift).

    Attributes:
        integer: ``(dy, dx)`` integer part, ``|dy|, |dx| <= max_shift``.
        subpixel: ``(dy, dx)`` sub-pixel correction found (applied only if ``subpixel_accepted``).
        subpixel_accepted: whether ``max(|subpixel|) <= max_subpixel``.
        at_bound: the best integer shift lies on the search bound (the true shift may be larger).
        ncc: NCC at the chosen integer shift (NaN if undefined).
    """

    integer: tuple[int, int]
    subpixel: tuple[float, float]
    subpixel_accepted: bool
    at_bound: bool
    ncc: float

    @property
    def total(self) -> tuple[float, float]:
        sy, sx = self.subpixel if self.subpixel_accepted else (0.0, 0.0)
        return (self.integer[0] + sy, self.integer[1] + sx)


def _overlap(
    rec: np.ndarray, gt: np.ndarray, dy: int, dx: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Pairs ``gt[y, x]`` with ``rec[y - dy, x - dx]`` on their overlap; returns its gt origin."""
    h, w = gt.shape
    r0, r1 = max(dy, 0), min(h, h + dy)
    c0, c1 = max(dx, 0), min(w, w + dx)
    return rec[r0 - dy : r1 - dy, c0 - dx : c1 - dx], gt[r0:r1, c0:c1], (r0, c0)


def _spline_shift(img: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Cubic-spline shift with content moving by +shift (``scipy.ndimage.shift`` convention)."""
    if np.iscomplexobj(img):
        return _spline_shift(img.real, shift) + 1j * _spline_shift(img.imag, shift)
    return ndimage.shift(np.asarray(img, dtype=np.float64), shift, order=3, mode="nearest")


def register(
    rec: np.ndarray,
    gt: np.ndarray,
    *,
    max_shift: int = 3,
    max_subpixel: float = 1.0,
    valid: np.ndarray | None = None,
) -> Registration:
    """Bounded registration of a reconstruction onto the ground truth (docs/conventions.md §18).

    1. Integer search: for every ``(dy, dx)`` with ``|dy|, |dx| <= max_shift`` compute the NCC of
       the amplitudes of ``gt[m:-m, m:-m]`` and the same window of ``rec`` shifted by ``(dy, dx)``
       (``m = max_shift``, so every candidate is scored on the same pixels); keep the best (ties go
       to the smaller shift).
    2. Sub-pixel: maximise the NCC over a cubic-spline shift ``t`` of the integer-aligned
       reconstruction, searched within ``±2 max_subpixel``; accepted only if
       ``max(|t|) <= max_subpixel``.

    Amplitude is used unless the ground-truth amplitude is flat, then the phase.

    Args:
        rec, gt: complex (or real) ``(H, W)`` of equal shape, ``H, W > 2 max_shift + 4``.
        valid: optional bool ``(H, W)``: pixels of ``rec`` that hold data (e.g. covered by the
            stitching); the NCC ignores the others, so gaps in the scan do not bias the shift.

    Returns:
        :class:`Registration`.
    """
    _same_shape(rec, gt, "reconstruction and ground truth")
    m = int(max_shift)
    if m < 0:
        raise ValueError(f"max_shift must be >= 0; got {max_shift}")
    h, w = gt.shape
    if min(h, w) <= 2 * m + 4:
        raise ValueError(
            f"images of shape {gt.shape} are too small for a registration with max_shift={m}"
        )
    a_r, a_g = _registration_image(rec, gt), _registration_image(gt, gt)
    window = a_g[m : h - m, m : w - m]
    ok = np.ones(gt.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    _same_shape(ok, gt, "valid mask and ground truth")
    candidates = sorted(
        ((dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)),
        key=lambda s: (s[0] ** 2 + s[1] ** 2, s),
    )
    best, best_ncc = (0, 0), -math.inf
    for dy, dx in candidates:
        sl = (slice(m - dy, h - m - dy), slice(m - dx, w - m - dx))
        c = _ncc(window, a_r[sl], ok[sl])
        if c > best_ncc:  # NaN never wins; strict '>' keeps the smaller shift on ties
            best, best_ncc = (dy, dx), c
    if best_ncc == -math.inf:
        return Registration((0, 0), (0.0, 0.0), False, False, float("nan"))
    at_bound = m > 0 and max(abs(best[0]), abs(best[1])) == m
    r_pair, g_pair, _ = _overlap(a_r, a_g, *best)
    ok_pair, _, _ = _overlap(ok, ok, *best)
    sub = _subpixel(r_pair, g_pair, 2.0 * max_subpixel, ok_pair)
    accepted = max(abs(sub[0]), abs(sub[1])) <= max_subpixel
    return Registration(best, sub, accepted, at_bound, best_ncc)


def _subpixel(rec: np.ndarray, gt: np.ndarray, bound: float, valid: np.ndarray) -> tuple[float, float]:
    """Shift ``t`` (``|t| <= bound`` per axis) maximising NCC(gt, spline_shift(rec, t))."""
    b = int(math.ceil(bound)) + 1
    if bound <= 0 or min(gt.shape) <= 2 * b + 2:
        return (0.0, 0.0)
    target = gt[b:-b, b:-b]
    # Spline shifts smear gaps by up to ~bound + 2 px: only trust pixels that far from any gap.
    mask = ndimage.binary_erosion(valid, iterations=b + 1, border_value=1)[b:-b, b:-b]

    def cost(t: np.ndarray) -> float:
        c = _ncc(target, _spline_shift(rec, (float(t[0]), float(t[1])))[b:-b, b:-b], mask)
        return 1.0 if math.isnan(c) else -c

    res = optimize.minimize(
        cost,
        x0=np.zeros(2),
        method="Powell",
        bounds=[(-bound, bound), (-bound, bound)],
        options={"xtol": 1e-4, "ftol": 1e-12},
    )
    # Round to the optimiser's resolution: a "shift" of 1e-6 px is noise, and not applying it keeps
    # identical images exactly identical (MAE 0, PSNR inf).
    return (round(float(res.x[0]), 3) + 0.0, round(float(res.x[1]), 3) + 0.0)


@dataclass(frozen=True)
class Alignment:
    """A reconstruction and ground truth on the same pixels, ready for :func:`score`.

    Attributes:
        rec, gt: complex128 ``(h, w)`` of equal shape.
        region: ``(r0, r1, c0, c1)`` half-open object-frame window that ``gt`` was cut from.
        registration: :class:`Registration` or ``None`` if registration was off.
        notes: human-readable remarks (e.g. a shift at the search bound).
        uncovered_fraction: share of the scored pixels that no crop covered (they score as 0).
    """

    rec: np.ndarray
    gt: np.ndarray
    region: tuple[int, int, int, int]
    registration: Registration | None
    notes: list[str] = field(default_factory=list)
    uncovered_fraction: float = 0.0


def align_for_evaluation(
    reconstruction: Any,
    ground_truth: Any,
    *,
    x0: int | None = None,
    y0: int | None = None,
    positions: Any = None,
    M: int | None = None,
    register_images: bool = True,
    max_shift: int = 3,
    max_subpixel: float = 1.0,
    border: int = 2,
) -> Alignment:
    """Put a stitched reconstruction and the ground-truth object on common pixels
    (docs/conventions.md §18).

    Args:
        reconstruction: a :class:`ptycho_k3.stitch.StitchResult` (its ``x0``, ``y0``, ``M`` and
            coverage are used), or a complex ``(h, w)`` canvas whose pixel ``[0, 0]`` is scan
            position ``(x0, y0)`` (default ``(0, 0)``: already in the object frame).
        ground_truth: complex ``(H, W)`` object in scan coordinates (``objectGuess``).
        x0, y0: integer origin of a plain-array reconstruction (override a StitchResult's).
        positions: ``(n, 2)`` scan positions [x, y]; the window is ``bbox ± M/2`` clipped to the
            object. Without positions the window is the covered part of a StitchResult, or the
            whole canvas ∩ object for a plain array. Registration ignores uncovered pixels
            (weight 0 of a StitchResult; exact zeros of a plain array).
        M: stitching crop side for the window (default: the StitchResult's, else 20).
        register_images: run :func:`register`; if ``False`` no shift and no border crop.
        max_shift, max_subpixel: registration bounds (px).
        border: pixels cropped from every side after registration.

    Returns:
        :class:`Alignment`.
    """
    gt = _as_image(ground_truth, "ground_truth")
    weight = None
    if hasattr(reconstruction, "obj") and hasattr(reconstruction, "x0"):
        canvas = _as_image(reconstruction.obj, "reconstruction")
        weight = np.asarray(reconstruction.weight)
        x0 = reconstruction.x0 if x0 is None else x0
        y0 = reconstruction.y0 if y0 is None else y0
        M = reconstruction.M if M is None else M
    else:
        canvas = _as_image(reconstruction, "reconstruction")
        if x0 is None and y0 is None and positions is None and canvas.shape != gt.shape:
            raise ValueError(
                f"reconstruction {canvas.shape} and ground truth {gt.shape} differ in shape; pass "
                "x0/y0 (or a StitchResult) to place the reconstruction in the object frame"
            )
    x0 = 0 if x0 is None else x0
    y0 = 0 if y0 is None else y0
    M = 20 if M is None else int(M)
    if positions is not None:
        region = scan_region(positions, M, gt.shape)
    else:
        region = _canvas_region(canvas.shape, weight, x0, y0, gt.shape)
    r0, r1, c0, c1 = region
    rec = place_in_object_frame(canvas, x0, y0, region).astype(np.complex128)
    # Stitching leaves uncovered pixels exactly 0; without a weight map that is the best guess.
    covered = canvas != 0 if weight is None else weight > 0
    valid = place_in_object_frame(covered, x0, y0, region)
    ref = gt[r0:r1, c0:c1].astype(np.complex128)
    notes: list[str] = []
    if not register_images:
        return Alignment(rec, ref, region, None, notes, float(1.0 - valid.mean()))
    reg = register(rec, ref, max_shift=max_shift, max_subpixel=max_subpixel, valid=valid)
    if reg.at_bound:
        notes.append(
            f"integer shift {reg.integer} is at the search bound {max_shift} px: the true offset "
            "may be larger (check the placement)"
        )
    if not reg.subpixel_accepted and reg.subpixel != (0.0, 0.0):
        notes.append(f"sub-pixel correction {reg.subpixel} exceeds {max_subpixel} px: not applied")
    rec_s, ref_s, (gr0, gc0) = _overlap(rec, ref, *reg.integer)
    valid_s, _, _ = _overlap(valid, valid, *reg.integer)
    if reg.subpixel_accepted and reg.subpixel != (0.0, 0.0):
        rec_s = _spline_shift(rec_s, reg.subpixel)
    b = int(border)
    if b > 0:
        if min(rec_s.shape) <= 2 * b:
            raise ValueError(f"aligned region {rec_s.shape} is too small for a {b}-px border crop")
        rec_s, ref_s, valid_s = rec_s[b:-b, b:-b], ref_s[b:-b, b:-b], valid_s[b:-b, b:-b]
    h, w = ref_s.shape
    final = (r0 + gr0 + b, r0 + gr0 + b + h, c0 + gc0 + b, c0 + gc0 + b + w)
    return Alignment(rec_s, ref_s, final, reg, notes, float(1.0 - valid_s.mean()))


def _canvas_region(
    canvas_shape: tuple[int, int],
    weight: np.ndarray | None,
    x0: float,
    y0: float,
    object_shape: tuple[int, int],
) -> tuple[int, int, int, int]:
    """Covered bounding box of a canvas (all of it without a weight map), in object pixels."""
    if weight is not None and np.any(weight > 0):
        rows = np.flatnonzero(np.any(weight > 0, axis=1))
        cols = np.flatnonzero(np.any(weight > 0, axis=0))
        lo_r, hi_r, lo_c, hi_c = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    else:
        lo_r, hi_r, lo_c, hi_c = 0, canvas_shape[0], 0, canvas_shape[1]
    r0, r1 = max(0, int(y0) + int(lo_r)), min(object_shape[0], int(y0) + int(hi_r))
    c0, c1 = max(0, int(x0) + int(lo_c)), min(object_shape[1], int(x0) + int(hi_c))
    if r1 <= r0 or c1 <= c0:
        raise ValueError("the reconstruction does not overlap the ground-truth object")
    return r0, r1, c0, c1


# ----------------------------------------------------------------------------------------------
# scoring


def _channel_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    psnr_range: float,
    ssim_pred: np.ndarray,
    ssim_target: np.ndarray,
    ssim_range: float,
    ms_pred: np.ndarray,
    ms_target: np.ndarray,
    ms_sigma: float,
    frc_sigma: float,
) -> dict[str, Any]:
    """All metrics of one channel (amplitude or phase) as plain floats (may be inf / NaN)."""
    small = min(pred.shape) < 7
    fr = frc(target, pred, sigma=frc_sigma)
    return {
        "applicable": True,
        "reason": None,
        "mae": mae(pred, target),
        "mse": mse(pred, target),
        "psnr": psnr(pred, target, psnr_range),
        "psnr_legacy255": psnr_legacy255(pred, target),
        "ssim": float("nan") if small else ssim(ssim_pred, ssim_target, ssim_range),
        "ms_ssim_legacy": ms_ssim_legacy(ms_pred, ms_target, sigma=ms_sigma),
        "frc50": fr.frc50,
        "frc1over7": fr.frc1over7,
        "frc": [float(v) for v in fr.curve],
    }


_METRIC_KEYS = (
    "mae", "mse", "psnr", "psnr_legacy255", "ssim", "ms_ssim_legacy", "frc50", "frc1over7", "frc",
)  # fmt: skip


def _not_applicable(reason: str) -> dict[str, Any]:
    out: dict[str, Any] = {"applicable": False, "reason": reason}
    out.update({k: None for k in _METRIC_KEYS})
    return out


def score(
    rec: Any,
    gt: Any,
    *,
    trim: int = 2,
    phase_method: str = "difference",
    scale_amplitude: bool = True,
    ms_ssim_sigma: float = 1.0,
    frc_sigma: float = 0.0,
) -> dict[str, Any]:
    """Score an aligned reconstruction against the ground truth (docs/conventions.md §18).

    Args:
        rec, gt: complex ``(H, W)`` of equal shape (already aligned).
        trim: pixels removed from every border first (legacy ``offset // 2`` = 2).
        phase_method: one of :data:`PHASE_PLANE_METHODS` (default ``"difference"``).
        scale_amplitude: multiply the predicted amplitude by ``mean(amp_gt) / mean(amp_pred)``.
        ms_ssim_sigma: Gaussian blur of the amplitudes before ``ms_ssim_legacy``.
        frc_sigma: Gaussian smoothing of the FRC curves (rings); 0 = none.

    Returns:
        ``{"amplitude": {...}, "phase": {...}, "amplitude_scale": s, "shape": [h, w]}`` where each
        channel dict has ``applicable``, ``reason`` and the keys ``mae, mse, psnr,
        psnr_legacy255, ssim, ms_ssim_legacy, frc50, frc1over7, frc`` (floats, possibly inf/NaN;
        see :func:`json_safe`). PSNR peaks: data range of the trimmed ground-truth amplitude, and
        ``2 pi`` for phase. SSIM: amplitude with ``R = range(gt amp)``; phase on
        ``(phi + pi) / (2 pi)`` with ``R = 1``.
    """
    r = _as_image(rec, "reconstruction").astype(np.complex128)
    g = _as_image(gt, "ground_truth").astype(np.complex128)
    _same_shape(r, g, "reconstruction and ground truth")
    t = int(trim)
    if t < 0:
        raise ValueError(f"trim must be >= 0; got {trim}")
    if t > 0:
        if min(r.shape) <= 2 * t:
            raise ValueError(f"images of shape {r.shape} are too small for a {t}-px trim")
        r, g = r[t:-t, t:-t], g[t:-t, t:-t]
    amp_g, amp_r = np.abs(g), np.abs(r)
    scale = 1.0
    notes: list[str] = []
    if scale_amplitude:
        mean_r = float(amp_r.mean())
        if mean_r > 0:
            scale = float(amp_g.mean()) / mean_r
        else:
            notes.append("predicted amplitude is identically zero: not rescaled")
    amp_r = amp_r * scale
    if not np.any(amp_g):
        amplitude = _not_applicable("ground-truth amplitude is identically zero")
    else:
        amp_range = float(np.ptp(amp_g))
        amplitude = _channel_metrics(
            amp_r, amp_g,
            psnr_range=amp_range,
            ssim_pred=amp_r, ssim_target=amp_g, ssim_range=amp_range,
            ms_pred=amp_r, ms_target=amp_g, ms_sigma=ms_ssim_sigma,
            frc_sigma=frc_sigma,
        )  # fmt: skip
        if amp_range == 0:
            amplitude["reason"] = "ground-truth amplitude is uniform: PSNR and SSIM undefined"
    phi_r, phi_g = align_phase(r, g, phase_method)
    if np.ptp(phi_g) < UNIFORM_PHASE_TOL:
        phase = _not_applicable(
            f"ground-truth phase is uniform (range < {UNIFORM_PHASE_TOL:g} rad"
            + (" after plane removal" if phase_method != "difference" else "")
            + "): phase metrics are not defined"
        )
    else:
        map_r, map_g = (phi_r + np.pi) / (2 * np.pi), (phi_g + np.pi) / (2 * np.pi)
        phase = _channel_metrics(
            phi_r, phi_g,
            psnr_range=2 * np.pi,
            ssim_pred=map_r, ssim_target=map_g, ssim_range=1.0,
            ms_pred=map_r, ms_target=map_g, ms_sigma=0.0,
            frc_sigma=frc_sigma,
        )  # fmt: skip
    return {
        "amplitude": amplitude,
        "phase": phase,
        "amplitude_scale": scale,
        "shape": [int(r.shape[0]), int(r.shape[1])],
        "notes": notes,
    }


def json_safe(obj: Any) -> Any:
    """Recursively convert to JSON-safe Python types.

    NumPy scalars/arrays become floats/lists, tuples become lists, and non-finite floats
    (NaN, ±inf) become ``None``.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _explain_non_finite(channel: dict[str, Any]) -> list[str]:
    """Notes for metrics that will read ``None`` in JSON, so a null is never unexplained."""
    notes = []
    for key in ("mae", "mse", "psnr", "psnr_legacy255", "ssim", "ms_ssim_legacy", "frc50",
                "frc1over7"):  # fmt: skip
        v = channel.get(key)
        if isinstance(v, float) and not math.isfinite(v):
            if key == "psnr" and v == math.inf:
                notes.append("psnr: images identical (MSE = 0), PSNR is +infinity")
            else:
                notes.append(f"{key}: undefined for these images")
    return notes


def evaluate(
    reconstruction: Any,
    ground_truth: Any,
    *,
    positions: Any = None,
    M: int | None = None,
    x0: int | None = None,
    y0: int | None = None,
    register_images: bool = True,
    max_shift: int = 3,
    max_subpixel: float = 1.0,
    border: int = 2,
    trim: int = 2,
    phase_method: str = "difference",
    scale_amplitude: bool = True,
    ms_ssim_sigma: float = 1.0,
    frc_sigma: float = 0.0,
) -> dict[str, Any]:
    """Align (:func:`align_for_evaluation`) and score (:func:`score`) a reconstruction.

    Args:
        reconstruction: a :class:`ptycho_k3.stitch.StitchResult`, or a complex image (placed with
            ``x0``/``y0``; an image of the ground truth's shape without them is taken as already in
            the object frame).
        ground_truth: complex ``(H, W)`` object in scan coordinates.
        Other arguments: see :func:`align_for_evaluation` and :func:`score`.

    Returns:
        A JSON-serialisable dict (``json.dumps(..., allow_nan=False)`` works)::

            {"amplitude": {applicable, reason, mae, mse, psnr, psnr_legacy255, ssim,
                           ms_ssim_legacy, frc50, frc1over7, frc: [...], notes: [...]},
             "phase": {... the same ...},
             "alignment": {region: [r0, r1, c0, c1], shape: [h, w], registered,
                           shift_integer: [dy, dx], shift_subpixel: [dy, dx],
                           subpixel_accepted, at_search_bound, ncc, shift_total: [dy, dx],
                           uncovered_fraction},
             "amplitude_scale": s,
             "conventions": {...},
             "notes": [...]}

        Non-finite numbers are ``None`` and each has a note. Phase metrics are
        ``applicable: false`` with a ``reason`` when the ground-truth phase is uniform.
    """
    al = align_for_evaluation(
        reconstruction, ground_truth,
        x0=x0, y0=y0, positions=positions, M=M,
        register_images=register_images, max_shift=max_shift, max_subpixel=max_subpixel,
        border=border,
    )  # fmt: skip
    scores = score(
        al.rec, al.gt,
        trim=trim, phase_method=phase_method, scale_amplitude=scale_amplitude,
        ms_ssim_sigma=ms_ssim_sigma, frc_sigma=frc_sigma,
    )  # fmt: skip
    for name in ("amplitude", "phase"):
        scores[name]["notes"] = _explain_non_finite(scores[name])
    reg = al.registration
    alignment = {
        "region": list(al.region),
        "shape": scores["shape"],
        "registered": reg is not None,
        "shift_integer": list(reg.integer) if reg else [0, 0],
        "shift_subpixel": list(reg.subpixel) if reg else [0.0, 0.0],
        "subpixel_accepted": bool(reg.subpixel_accepted) if reg else False,
        "at_search_bound": bool(reg.at_bound) if reg else False,
        "ncc": reg.ncc if reg else float("nan"),
        "shift_total": list(reg.total) if reg else [0.0, 0.0],
        "uncovered_fraction": al.uncovered_fraction,
    }
    conventions = {
        "region": "bbox(scan positions) +/- M/2 clipped to the object, in object pixels "
        "[row0, row1, col0, col1) of the scored ground truth before the trim",
        "shift_sign": "applied to the reconstruction, content moves by +shift [dy, dx]",
        "registration": f"integer |shift| <= {max_shift} px maximising amplitude NCC, sub-pixel "
        f"(cubic spline) accepted if <= {max_subpixel} px, then {border}-px crop",
        "trim": trim,
        "amplitude_scaling": "mean" if scale_amplitude else "none",
        "phase_alignment": phase_method,
        "psnr": "standard: 10 log10(R^2 / MSE), R = range of GT amplitude; 2 pi for phase",
        "psnr_legacy255": "OpenCV cv2.PSNR default peak 255 (the original's value)",
        "ssim": "scikit-image defaults: 7x7 uniform window, K1 0.01, K2 0.03, sample covariance; "
        "phase mapped (phi + pi) / 2 pi with data_range 1",
        "ms_ssim_legacy": f"the original's non-standard MS-SSIM (amplitude blurred sigma "
        f"{ms_ssim_sigma}); not comparable with standard MS-SSIM",
        "frc": f"ring index units (cycles per image side), threshold crossings interpolated; "
        f"smoothing sigma {frc_sigma}",
    }
    out = {
        "amplitude": scores["amplitude"],
        "phase": scores["phase"],
        "alignment": alignment,
        "amplitude_scale": scores["amplitude_scale"],
        "conventions": conventions,
        "notes": al.notes + scores["notes"],
    }
    return json_safe(out)

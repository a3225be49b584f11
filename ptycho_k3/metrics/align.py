"""Alignment of a reconstruction with the ground truth (docs/conventions.md §18).

* **Placement**: the stitched canvas is placed in the object frame by geometry (its origin
  ``x0``, ``y0``), both images are cropped to ``bbox(scan positions) ± M/2`` (clipped to the
  object).
* **Registration** (:func:`register`): the integer shift ``|dy|, |dx| <= 3`` that maximises the
  normalised cross-correlation (NCC) of the amplitudes, then a sub-pixel correction (NCC
  maximised over cubic-spline shifts) accepted only if ``<= 1`` px per axis, then a 2-px crop.
  Shift sign: ``shift = (dy, dx)`` is applied to the *reconstruction* with the project's
  convention (content moves by ``+shift``), i.e. ``aligned[y, x] = rec[y - dy, x - dx]``; if
  ``rec = translate(gt, t)`` the registration reports ``shift ≈ -t``.
* **Phase** (:func:`align_phase`): the ambiguity removed per
  :data:`~ptycho_k3.config.PHASE_PLANE_METHODS`.

Coordinates are ``[x (column), y (row)]`` in object pixels; image indices are ``[row, column]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from ptycho_k3.config import DEFAULT_M, PHASE_PLANE_METHODS, EvaluationConfig

from .pixel import _as_image, _same_shape

__all__ = [
    "Alignment",
    "Registration",
    "align_for_evaluation",
    "align_phase",
    "fit_plane",
    "place_in_object_frame",
    "register",
    "scan_region",
]


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
    rec: np.ndarray, gt: np.ndarray, method: str = EvaluationConfig.phase_method
) -> tuple[np.ndarray, np.ndarray]:
    """Phase images of ``rec`` and ``gt`` after removing the ambiguity per ``method``.

    Args:
        rec, gt: complex ``(H, W)`` of equal shape.
        method: one of :data:`~ptycho_k3.config.PHASE_PLANE_METHODS`.

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
    max_shift: int = EvaluationConfig.max_shift,
    max_subpixel: float = EvaluationConfig.max_subpixel,
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
    M: int | None = EvaluationConfig.M,
    register_images: bool = EvaluationConfig.register_images,
    max_shift: int = EvaluationConfig.max_shift,
    max_subpixel: float = EvaluationConfig.max_subpixel,
    border: int = EvaluationConfig.border,
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
        M: stitching crop side for the window (default: the StitchResult's, else
            :data:`~ptycho_k3.config.DEFAULT_M`).
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
    M = DEFAULT_M if M is None else int(M)
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


"""Scoring of an aligned reconstruction (:func:`score`) and the whole evaluation
(:func:`evaluate` = :func:`~ptycho_k3.metrics.align.align_for_evaluation` then :func:`score`),
docs/conventions.md §18.

* **Scoring**: 2-px trim (legacy ``offset // 2``); amplitude mean-scaling
  (``amp_pred *= mean(amp_gt) / mean(amp_pred)``, amplitude only); phase alignment, by default a
  least-squares plane ``a x + b y + c`` fitted to the *wrapped phase difference*
  ``angle(rec * conj(gt))`` and removed from the reconstruction only (see
  :data:`~ptycho_k3.config.PHASE_PLANE_METHODS`);
  MAE, MSE, standard PSNR (peak = data range of the ground-truth amplitude; ``2 pi`` for phase),
  ``psnr_legacy255`` (OpenCV's peak-255 value), SSIM (scikit-image defaults), the original's
  non-standard MS-SSIM as ``ms_ssim_legacy``, and the FRC curve with ``frc50`` / ``frc1over7``.
* :func:`evaluate` returns a JSON-safe dict (non-finite numbers become ``None``, with a note
  saying why); a uniform ground-truth phase makes the phase metrics "not applicable" instead of
  failing. Its options are one :class:`~ptycho_k3.config.EvaluationConfig`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ptycho_k3.config import EvaluationConfig

from .align import align_for_evaluation, align_phase
from .fourier_ring import frc
from .pixel import _as_image, _same_shape, mae, ms_ssim_legacy, mse, psnr, psnr_legacy255, ssim

__all__ = ["UNIFORM_PHASE_TOL", "evaluate", "json_safe", "score"]

#: A ground-truth phase whose range is below this (radians) is treated as uniform.
UNIFORM_PHASE_TOL = 1e-6


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
    trim: int = EvaluationConfig.trim,
    phase_method: str = EvaluationConfig.phase_method,
    scale_amplitude: bool = EvaluationConfig.scale_amplitude,
    ms_ssim_sigma: float = EvaluationConfig.ms_ssim_sigma,
    frc_sigma: float = EvaluationConfig.frc_sigma,
) -> dict[str, Any]:
    """Score an aligned reconstruction against the ground truth (docs/conventions.md §18).

    Args:
        rec, gt: complex ``(H, W)`` of equal shape (already aligned).
        trim: pixels removed from every border first (legacy ``offset // 2`` = 2).
        phase_method: one of :data:`~ptycho_k3.config.PHASE_PLANE_METHODS` (default
            ``"difference"``).
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
    config: EvaluationConfig | None = None,
    positions: Any = None,
    x0: int | None = None,
    y0: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Align (:func:`align_for_evaluation`) and score (:func:`score`) a reconstruction.

    Args:
        reconstruction: a :class:`ptycho_k3.stitch.StitchResult`, or a complex image (placed with
            ``x0``/``y0``; an image of the ground truth's shape without them is taken as already in
            the object frame).
        ground_truth: complex ``(H, W)`` object in scan coordinates.
        config: the alignment and scoring options (default :class:`EvaluationConfig` ()).
        positions, x0, y0: the scan positions and the canvas origin, see
            :func:`align_for_evaluation`.
        **options: :class:`EvaluationConfig` fields overriding ``config``'s (e.g. ``M=20``,
            ``register_images=False``); validated the same way.

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

    Raises:
        TypeError: an option that is not an :class:`EvaluationConfig` field.
        ValueError: invalid options (:class:`~ptycho_k3.config.ConfigError`) or images.
    """
    cfg = config if config is not None else EvaluationConfig()
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(EvaluationConfig)})
    if unknown:
        raise TypeError(f"evaluate() got unknown option(s): {', '.join(unknown)}")
    if options:
        cfg = dataclasses.replace(cfg, **options)
    al = align_for_evaluation(
        reconstruction, ground_truth,
        x0=x0, y0=y0, positions=positions, M=cfg.M,
        register_images=cfg.register_images, max_shift=cfg.max_shift,
        max_subpixel=cfg.max_subpixel, border=cfg.border,
    )  # fmt: skip
    scores = score(
        al.rec, al.gt,
        trim=cfg.trim, phase_method=cfg.phase_method, scale_amplitude=cfg.scale_amplitude,
        ms_ssim_sigma=cfg.ms_ssim_sigma, frc_sigma=cfg.frc_sigma,
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
        "registration": f"integer |shift| <= {cfg.max_shift} px maximising amplitude NCC, "
        f"sub-pixel (cubic spline) accepted if <= {cfg.max_subpixel} px, then {cfg.border}-px crop",
        "trim": cfg.trim,
        "amplitude_scaling": "mean" if cfg.scale_amplitude else "none",
        "phase_alignment": cfg.phase_method,
        "psnr": "standard: 10 log10(R^2 / MSE), R = range of GT amplitude; 2 pi for phase",
        "psnr_legacy255": "OpenCV cv2.PSNR default peak 255 (the original's value)",
        "ssim": "scikit-image defaults: 7x7 uniform window, K1 0.01, K2 0.03, sample covariance; "
        "phase mapped (phi + pi) / 2 pi with data_range 1",
        "ms_ssim_legacy": f"the original's non-standard MS-SSIM (amplitude blurred sigma "
        f"{cfg.ms_ssim_sigma}); not comparable with standard MS-SSIM",
        "frc": f"ring index units (cycles per image side), threshold crossings interpolated; "
        f"smoothing sigma {cfg.frc_sigma}",
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

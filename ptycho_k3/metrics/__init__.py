"""Evaluation of a reconstructed object against ground truth (NumPy/SciPy, no Keras).

Implements ``docs/conventions.md`` §18, one subject per module:

* :mod:`~ptycho_k3.metrics.pixel`: MAE, MSE, PSNR (standard and the original's peak-255 value),
  SSIM (scikit-image defaults) and the original's non-standard MS-SSIM; the shared input checks.
* :mod:`~ptycho_k3.metrics.fourier_ring`: the Fourier ring correlation and its threshold crossings.
* :mod:`~ptycho_k3.metrics.align`: placement in the object frame, bounded registration and the
  phase alignment (:func:`align_for_evaluation`, :func:`register`, :func:`align_phase`).
* :mod:`~ptycho_k3.metrics.scoring`: :func:`score` of aligned images and :func:`evaluate`, which
  chains alignment and scoring under one :class:`~ptycho_k3.config.EvaluationConfig` and returns
  a JSON-safe dict.

All images are 2-D; ``(H, W, 1)`` and ``(1, H, W, 1)`` are accepted and squeezed. Coordinates are
``[x (column), y (row)]`` in object pixels; image indices are ``[row, column]``.
"""

from ptycho_k3.config import PHASE_PLANE_METHODS, EvaluationConfig

from .align import (
    Alignment,
    Registration,
    align_for_evaluation,
    align_phase,
    fit_plane,
    place_in_object_frame,
    register,
    scan_region,
)
from .fourier_ring import FRCResult, frc, frc_curve, frc_threshold, ring_correlation
from .pixel import MS_SSIM_WEIGHTS, mae, ms_ssim_legacy, mse, psnr, psnr_legacy255, ssim
from .scoring import UNIFORM_PHASE_TOL, evaluate, json_safe, score

__all__ = [
    "Alignment",
    "EvaluationConfig",
    "FRCResult",
    "MS_SSIM_WEIGHTS",
    "PHASE_PLANE_METHODS",
    "Registration",
    "UNIFORM_PHASE_TOL",
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

"""Dataset normalisation to mean energy (N/2)^2 per pattern (physics.md §9)."""

from __future__ import annotations

import math

import numpy as np

from .errors import DataError


def mean_pattern_energy(amplitudes: np.ndarray, chunk: int = 1024) -> float:
    """``mean over patterns of sum_{h,w} X^2`` for ``(..., N, N)``, squared in float64.

    Works through ``chunk`` patterns at a time, so the float64 squares never exist for the whole
    stack at once (uint16 counts cannot overflow either).
    """
    x = np.asarray(amplitudes)
    flat = x.reshape(-1, x.shape[-2], x.shape[-1])
    if flat.shape[0] == 0:
        return 0.0
    total = 0.0
    for lo in range(0, flat.shape[0], chunk):
        total += float(np.sum(np.square(flat[lo : lo + chunk], dtype=np.float64)))
    return total / flat.shape[0]


def normalization_factor(amplitudes: np.ndarray) -> float:
    """``sqrt((N/2)^2 / mean_patterns sum_{h,w} X^2)`` for amplitudes ``(..., N, N)``.

    Squares in float64 so uint16 counts cannot overflow. Mirrors
    ``ptycho_k3.physics.normalization_factor`` (NumPy only, so no Keras import is needed here).
    """
    x = np.asarray(amplitudes)
    n = x.shape[-1]
    energy = mean_pattern_energy(x)
    if not (energy > 0 and math.isfinite(energy)):
        raise DataError("the diffraction data has zero (or non-finite) total energy; "
                        "cannot normalise")
    return math.sqrt((n / 2.0) ** 2 / energy)


def normalize_diffraction(
    amplitudes: np.ndarray, factor: float | None = None
) -> tuple[np.ndarray, float]:
    """Scale diffraction amplitudes so that the mean energy per pattern is ``(N/2)^2``.

    Args:
        amplitudes: real amplitudes ``(..., N, N)`` (any real dtype). The last two axes are the
            pattern; all leading axes count as patterns (e.g. ``(B, C, N, N)``). For the channel
            layout ``(B, N, N, C)`` transpose first or pass ``factor`` explicitly.
        factor: use this factor instead of computing it (e.g. to apply the training set's factor).

    Returns:
        ``(X * factor)`` as float32 and the factor (a Python float).
    """
    if factor is None:
        factor = normalization_factor(amplitudes)
    # One float32 result, no float64 copy of the whole stack (it would be 2x the data).
    x = np.multiply(np.asarray(amplitudes), np.float32(factor), dtype=np.float32)
    return x, float(factor)


def intensity_scale(nphotons: float, n: int) -> float:
    """Closed-form intensity scale ``s = sqrt(nphotons) / (n / 2)`` (amplitude -> sqrt(counts)).

    Same formula as ``ptycho_k3.physics.intensity_scale``; 988.21177 for 1e9 photons at N = 64.
    """
    if not (isinstance(nphotons, (int, float)) and nphotons > 0 and math.isfinite(nphotons)):
        raise ValueError(f"intensity_scale: nphotons must be a finite number > 0, got {nphotons!r}")
    if n <= 0:
        raise ValueError(f"intensity_scale: n must be > 0, got {n}")
    return math.sqrt(nphotons) / (n / 2.0)

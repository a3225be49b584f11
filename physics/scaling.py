"""Intensity scale and dataset normalisation (physics.md §9).

These run once at set-up on NumPy arrays (they are not part of the graph), so they return Python
floats computed in float64.
"""

from __future__ import annotations

import math

import numpy as np


def intensity_scale(nphotons: float, n: int) -> float:
    """Closed-form scale ``s = sqrt(nphotons) / (n / 2)`` (amplitude units -> sqrt(counts)).

    With data normalised to mean energy ``(n/2)^2`` per pattern, ``mean sum (s X)^2 = nphotons``.
    988.21177 for nphotons 1e9 and n = 64.
    """
    if not (nphotons > 0 and math.isfinite(nphotons)):
        raise ValueError(f"intensity_scale: nphotons must be a finite number > 0, got {nphotons}")
    if n <= 0:
        raise ValueError(f"intensity_scale: n must be > 0, got {n}")
    return math.sqrt(nphotons) / (n / 2.0)


def normalization_factor(amplitudes) -> float:
    """Factor that brings diffraction amplitudes to mean energy ``(N/2)^2`` per pattern.

    Args:
        amplitudes: array ``(..., N, N)`` of amplitudes (any real dtype; uint16 counts are fine
            since the square is taken in float64).

    Returns:
        ``sqrt((N/2)^2 / mean over patterns of sum_{h,w} X^2)`` as a float.
    """
    x = np.asarray(amplitudes)
    n = x.shape[-1]
    energy = np.mean(np.sum(np.square(x, dtype=np.float64), axis=(-2, -1)))
    if not energy > 0:
        raise ValueError("normalization_factor: the diffraction data has zero total energy")
    return math.sqrt((n / 2.0) ** 2 / energy)


def simulation_intensity_scale(exit_waves, nphotons: float) -> float:
    """Dataset-derived scale ``sqrt(nphotons / mean_b sum |Psi_b|^2)`` (simulation only).

    Args:
        exit_waves: complex array ``(B, N, N)`` of illuminated patches ``P * O``.
        nphotons: expected photon count per pattern.
    """
    psi = np.asarray(exit_waves)
    energy = np.mean(np.sum(np.abs(psi).astype(np.float64) ** 2, axis=(-2, -1)))
    if not energy > 0:
        raise ValueError("simulation_intensity_scale: the exit waves have zero energy")
    return math.sqrt(nphotons / energy)

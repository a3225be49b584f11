"""Intensity scale and dataset normalisation (docs/conventions.md §9).

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


def pattern_energies(amplitudes, rows=None, chunk: int = 1024) -> np.ndarray:
    """``sum_{h,w} X^2`` per pattern of ``(..., N, N)`` amplitudes, float64 ``(P,)``.

    Args:
        amplitudes: real amplitudes; all leading axes count as patterns (any real dtype: uint16
            counts cannot overflow since the squares are float64). A 3-D array-like that is not
            an array (a stack read on demand) is only indexed by rows, a chunk at a time.
        rows: optional indices of the (flattened) patterns to measure, in that order.
        chunk: patterns squared at a time, so float64 squares never exist for the whole stack.
    """
    # A stack of patterns that is read on demand (rows indexed, any 3-D array-like with a
    # ``shape``) is read chunk by chunk, never converted whole.
    is_stack = len(getattr(amplitudes, "shape", ())) == 3 and hasattr(amplitudes, "__getitem__")
    x = amplitudes if is_stack else np.asarray(amplitudes)
    flat = x if is_stack else x.reshape(-1, x.shape[-2], x.shape[-1])
    picks = None if rows is None else np.asarray(rows).reshape(-1)
    count = flat.shape[0] if picks is None else picks.shape[0]
    out = np.empty(count, dtype=np.float64)
    for lo in range(0, count, chunk):
        block = flat[lo : lo + chunk] if picks is None else flat[picks[lo : lo + chunk]]
        out[lo : lo + chunk] = np.sum(np.square(block, dtype=np.float64), axis=(1, 2))
    return out


def mean_pattern_energy(amplitudes, chunk: int = 1024) -> float:
    """``mean over patterns of sum_{h,w} X^2`` for ``(..., N, N)`` (float64, chunked; 0 if empty)."""
    energies = pattern_energies(amplitudes, chunk=chunk)
    return float(energies.mean()) if energies.size else 0.0


def factor_for_energy(energy: float, n: int) -> float:
    """``sqrt((n/2)^2 / energy)``: the factor bringing mean pattern energy ``energy`` to ``(n/2)^2``.

    Raises:
        ValueError: ``energy`` is zero, negative or not finite.
    """
    if not (energy > 0 and math.isfinite(energy)):
        raise ValueError("normalization_factor: the diffraction data has zero (or non-finite) "
                         "total energy")
    return math.sqrt((n / 2.0) ** 2 / energy)


def normalization_factor(amplitudes) -> float:
    """Factor that brings diffraction amplitudes to mean energy ``(N/2)^2`` per pattern.

    Args:
        amplitudes: array ``(..., N, N)`` of amplitudes (any real dtype; uint16 counts are fine
            since the square is taken in float64).

    Returns:
        ``sqrt((N/2)^2 / mean over patterns of sum_{h,w} X^2)`` as a float.
    """
    return factor_for_energy(mean_pattern_energy(amplitudes), np.shape(amplitudes)[-1])


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

"""Dataset normalisation to mean energy (N/2)^2 per pattern (docs/conventions.md §9)."""

from __future__ import annotations

import numpy as np

from ptycho_k3.physics import scaling
from ptycho_k3.physics.scaling import intensity_scale

from .errors import DataError

__all__ = [
    "intensity_scale", "normalization_factor", "normalize_diffraction", "rows_normalization_factor",
]


def normalization_factor(amplitudes: np.ndarray) -> float:
    """``sqrt((N/2)^2 / mean_patterns sum_{h,w} X^2)`` for amplitudes ``(..., N, N)``.

    :func:`ptycho_k3.physics.scaling.normalization_factor` (float64 squares, chunked), with a
    :class:`DataError` for data that cannot be normalised.
    """
    return _factor(scaling.mean_pattern_energy(amplitudes), np.shape(amplitudes)[-1])


def rows_normalization_factor(amplitudes: np.ndarray, rows: np.ndarray) -> float:
    """The factor of :func:`normalization_factor` for the patterns ``amplitudes[rows]``.

    ``rows`` may be any integer array (e.g. group members ``(B, C)``; repeats count as often as
    they occur), and the gathered stack is never built: energies are taken once per distinct row.
    """
    used, inverse = np.unique(np.asarray(rows).reshape(-1), return_inverse=True)
    if used.size == 0:
        raise DataError("no diffraction patterns selected; cannot normalise")
    energies = scaling.pattern_energies(amplitudes, rows=used)
    return _factor(float(energies[inverse].mean()), np.shape(amplitudes)[-1])


def _factor(energy: float, n: int) -> float:
    """:func:`ptycho_k3.physics.scaling.factor_for_energy` with a :class:`DataError`."""
    try:
        return scaling.factor_for_energy(energy, n)
    except ValueError as exc:
        raise DataError("the diffraction data has zero (or non-finite) total energy; "
                        "cannot normalise") from exc


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

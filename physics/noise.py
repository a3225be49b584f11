"""Poisson observation of far-field amplitudes (simulation only, NumPy side)."""

from __future__ import annotations

import numpy as np


def poisson_amplitudes(amplitude, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy amplitudes ``sqrt(Poisson((scale * A)^2)) / scale`` as float32.

    Args:
        amplitude: clean far-field amplitudes (any shape, >= 0), in the units that ``scale``
            converts to sqrt(counts).
        scale: intensity scale (amplitude units -> sqrt(counts)), > 0.
        rng: the caller's seeded generator; no global random state is touched.
    """
    if not scale > 0:
        raise ValueError(f"poisson_amplitudes: scale must be > 0, got {scale}")
    lam = np.square(np.asarray(amplitude, dtype=np.float64) * scale)
    counts = rng.poisson(lam)
    return (np.sqrt(counts) / scale).astype(np.float32)

"""Hypothesis strategies for the cross-backend properties: what breaks backends.

Inputs are drawn from a seeded NumPy generator whose seed is part of the example, alongside the
shape and the *kind* of values (ordinary, near zero, large, with exact zeros), so a failure shrinks
to the smallest shape, the simplest kind and a small seed. Offsets and positions come in kinds too:
integer, fractional, negative, beyond the canvas.
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

#: Examples per physics/layer property here: 3/5 of the profile's (30 of the default 50, 300 of
#: ``thorough``'s 500). Each example runs on all three backends, and the per-backend tests already
#: check every one of these functions against NumPy references at the profile's full count.
XB_SETTINGS = settings(max_examples=max(1, settings.default.max_examples * 3 // 5))

seeds = st.integers(0, 2**32 - 1)
batch = st.sampled_from([1, 2, 5])
#: magnitudes that stay finite in float32 through squares and FFT sums (|x|^2 * N^2 < 3e38)
magnitude = st.sampled_from([1.0, 1e-6, 1e3])
zeros = st.sampled_from([0.0, 0.5, 1.0])
offset_kind = st.sampled_from(["fractional", "integer", "negative", "beyond"])


def real(rng: np.random.Generator, shape, scale: float = 1.0, zero_fraction: float = 0.0
         ) -> np.ndarray:
    x = rng.uniform(-1.0, 1.0, shape) * scale
    if zero_fraction:
        x = np.where(rng.random(shape) < zero_fraction, 0.0, x)
    return x.astype(np.float32)


def positive(rng: np.random.Generator, shape, scale: float = 1.0, zero_fraction: float = 0.0
             ) -> np.ndarray:
    return np.abs(real(rng, shape, scale, zero_fraction))


def offsets(rng: np.random.Generator, shape, kind: str, reach: float) -> np.ndarray:
    """``[dx, dy]`` offsets of a kind: fractional in (-reach, reach), integer, negative only,
    or partly beyond ``reach`` (content shifted out of the canvas)."""
    if kind == "integer":
        x = rng.integers(-int(reach), int(reach) + 1, shape).astype(np.float64)
    elif kind == "negative":
        x = -rng.uniform(0.05, reach, shape)
    elif kind == "beyond":
        x = rng.uniform(-3 * reach - 2, 3 * reach + 2, shape)
    else:
        x = rng.uniform(-reach, reach, shape)
    return x.astype(np.float32)

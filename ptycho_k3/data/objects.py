"""Synthetic test objects (docs/conventions.md §15): lines, grf, points, diagonals.

Each generator returns a real, non-negative amplitude ``(size, size)`` float64 drawn from the
caller's ``numpy.random.Generator``; :func:`make_object` adds the phase. NumPy/SciPy only.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from ptycho_k3.config import OBJECT_KINDS


def _draw_segments(canvas: np.ndarray, r0, c0, r1, c1) -> None:
    """Set to 1 the pixels of straight segments (r0, c0) -> (r1, c1), all segments at once."""
    r0, c0, r1, c1 = (np.asarray(v, dtype=np.float64) for v in (r0, c0, r1, c1))
    steps = np.maximum(np.abs(r1 - r0), np.abs(c1 - c0)).astype(np.int64) + 1
    length = int(steps.max())
    t = np.arange(length)[None, :] / np.maximum(steps - 1, 1)[:, None]
    t = np.minimum(t, 1.0)  # shorter segments repeat their end point
    rows = np.rint(r0[:, None] + t * (r1 - r0)[:, None]).astype(np.int64)
    cols = np.rint(c0[:, None] + t * (c1 - c0)[:, None]).astype(np.int64)
    h, w = canvas.shape
    ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    canvas[rows[ok], cols[ok]] = 1.0


def lines_amplitude(size: int, rng: np.random.Generator, n_lines: int = 400) -> np.ndarray:
    """400 random segments on a 2*size canvas, blurred gf(1) + 2 gf(5) + 5 gf(10), centre crop."""
    big = 2 * size
    canvas = np.zeros((big, big), dtype=np.float64)
    ends = (big * rng.random((n_lines, 4))).astype(np.int64)
    _draw_segments(canvas, ends[:, 0], ends[:, 1], ends[:, 2], ends[:, 3])
    img = (gaussian_filter(canvas, 1) + 2 * gaussian_filter(canvas, 5)
           + 5 * gaussian_filter(canvas, 10))
    s0 = big // 2 - size // 2
    return img[s0 : s0 + size, s0 : s0 + size]


def grf_amplitude(size: int, rng: np.random.Generator, power: float = 0.4) -> np.ndarray:
    """Gaussian random field with power spectrum k^-power by FFT filtering of white noise.

    Built on a (size/2)^2 grid, rescaled to [0, 1], linearly resampled to size^2 and smoothed with
    sigma 1 (the original used ``powerbox``; this needs no extra dependency).
    """
    half = max(size // 2, 2)
    noise = rng.standard_normal((half, half))
    k = np.hypot(np.fft.fftfreq(half)[:, None], np.fft.fftfreq(half)[None, :])
    filt = np.zeros_like(k)
    filt[k > 0] = k[k > 0] ** (-power / 2.0)  # amplitude filter = sqrt(power spectrum)
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * filt))
    lo, hi = field.min(), field.max()
    field = (field - lo) / (hi - lo) if hi > lo else np.zeros_like(field)
    img = zoom(field, size / half, order=1)[:size, :size]
    if img.shape != (size, size):  # zoom rounding: pad by edge values
        img = np.pad(img, ((0, size - img.shape[0]), (0, size - img.shape[1])), mode="edge")
    return gaussian_filter(img, 1)


def points_amplitude(size: int, rng: np.random.Generator) -> np.ndarray:
    """0.1*size^2 random unit points (with replacement), gf(1), plus 5 gf(10) of that."""
    img = np.zeros((size, size), dtype=np.float64)
    count = int(0.1 * size * size)
    idx = rng.integers(0, size, size=(count, 2))
    np.add.at(img, (idx[:, 0], idx[:, 1]), 1.0)
    img = gaussian_filter(img, 1)
    return img + 5 * gaussian_filter(img, 10)


def diagonals_amplitude(size: int, rng: np.random.Generator, n_lines: int = 40) -> np.ndarray:
    """40 vertical, 40 horizontal and 40 pairs of +-45 degree lines; gf(0.75) + 5 gf(7.5) of it."""
    img = np.zeros((size, size), dtype=np.float64)
    img[:, rng.integers(0, size, n_lines)] = 1.0
    img[rng.integers(0, size, n_lines), :] = 1.0
    r = np.arange(size)
    for off in rng.integers(-size + 1, size, n_lines):
        c = r + off
        ok = (c >= 0) & (c < size)
        img[r[ok], c[ok]] = 1.0  # +45 degrees
        img[r[ok], size - 1 - c[ok]] = 1.0  # -45 degrees
    img = gaussian_filter(img, 0.75)
    return img + 5 * gaussian_filter(img, 7.5)


_GENERATORS = {
    "lines": lines_amplitude,
    "grf": grf_amplitude,
    "points": points_amplitude,
    "diagonals": diagonals_amplitude,
}


def set_phase(amplitude: np.ndarray) -> np.ndarray:
    """Complex object with the original's ``set_phi`` phase (docs/conventions.md §15), complex64.

    ``phi = pi * tanh((A - max A / 2) / (3 * mean A))``, max and mean over the given array.
    """
    a = np.asarray(amplitude, dtype=np.float64)
    mean = a.mean()
    if not mean > 0:
        return a.astype(np.complex64)
    phi = np.pi * np.tanh((a - a.max() / 2.0) / (3.0 * mean))
    return (a * np.exp(1j * phi)).astype(np.complex64)


def make_object(kind: str, size: int, rng: np.random.Generator, phase: bool = True) -> np.ndarray:
    """A ``size x size`` complex64 test object of the given kind.

    Args:
        kind: one of :data:`OBJECT_KINDS`.
        size: side in object pixels.
        rng: the caller's seeded generator.
        phase: non-uniform phase by the set_phi formula (default); False gives zero phase.
    """
    if kind not in _GENERATORS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {OBJECT_KINDS}")
    if size < 8:
        raise ValueError(f"object size must be >= 8 pixels, got {size}")
    amp = _GENERATORS[kind](int(size), rng)
    return set_phase(amp) if phase else amp.astype(np.complex64)

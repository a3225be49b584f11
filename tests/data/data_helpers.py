"""Small synthetic scans for the data tests (NumPy only)."""

from __future__ import annotations

import numpy as np

from ptycho_k3.data import ScanData


def small_scan(m: int = 40, n: int = 64, seed: int = 0, with_object: bool = True,
               size: int = 160) -> ScanData:
    rng = np.random.default_rng(seed)
    obj = None
    if with_object:
        obj = (1 + rng.random((size, size)) + 1j * rng.random((size, size))).astype(np.complex64)
    x = rng.uniform(n / 2, size - n / 2, m)
    y = rng.uniform(n / 2, size - n / 2, m)
    diff = rng.random((m, n, n)).astype(np.float32)
    probe = (rng.random((n, n)) + 1j * rng.random((n, n))).astype(np.complex64)
    return ScanData(xcoords=x, ycoords=y, diffraction=diff, probe=probe, object=obj,
                    metadata={"nphotons": 1e6})


def npz_arrays(m: int = 6, n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A minimal valid NPZ content (dict of arrays)."""
    rng = np.random.default_rng(seed)
    return {
        "xcoords": rng.uniform(0, 100, m),
        "ycoords": rng.uniform(0, 100, m),
        "diff3d": rng.random((m, n, n)).astype(np.float32),
        "probeGuess": (rng.random((n, n)) + 1j * rng.random((n, n))).astype(np.complex64),
    }


def centred_counts(m: int, n: int, seed: int = 0) -> np.ndarray:
    """float64 ``(m, n, n)`` integer photon counts: a bright centre (zero frequency at
    ``(n/2, n/2)``) over a weak background, Poisson-distributed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    mean = 2 + 800 * np.exp(-(xx**2 + yy**2) / (2 * (n / 16) ** 2))
    return rng.poisson(mean * rng.uniform(0.7, 1.3, (m, 1, 1))).astype(np.float64)


def gaussian_probe(n: int, sigma: float) -> np.ndarray:
    """complex64 ``(n, n)`` band-limited probe centred at ``(n/2, n/2)`` with a phase curvature."""
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    r2 = xx**2 + yy**2
    return (np.exp(-r2 / (2 * sigma**2)) * np.exp(1j * r2 / (8 * sigma**2))).astype(np.complex64)

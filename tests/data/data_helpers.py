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

"""Small scans for the refinement tests (simulated with the project's own simulator)."""

from __future__ import annotations

import numpy as np

from ptycho_k3.data import ScanData


def raster_scan(n_side: int = 8, size: int = 128, seed: int = 0, nphotons: float = 1e9
                ) -> ScanData:
    """A ``lines`` object with phase, the default disc probe, an ``n_side^2`` raster (N 64)."""
    from ptycho_k3 import physics
    from ptycho_k3.data import make_object, raster_positions, simulate_dataset

    rng = np.random.default_rng(seed)
    obj = make_object("lines", size, rng)
    probe = np.asarray(physics.default_probe(64)).astype(np.complex64)
    x, y = raster_positions(n_side * n_side, (size, size), 64)
    return simulate_dataset(obj, probe, x, y, nphotons, rng)


def tiny_problem(n: int = 16, m: int = 5, size: int = 30, seed: int = 0, scale: float = 3.0
                 ) -> tuple[ScanData, np.ndarray]:
    """Random complex object and probe, random positions, counts of a *different* object (so
    the loss and its gradient are far from zero); returns the scan and the start object."""
    rng = np.random.default_rng(seed)

    def rc(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    x = rng.uniform(n / 2 + 2, size - n / 2 - 3, m)
    y = rng.uniform(n / 2 + 2, size - n / 2 - 3, m)
    counts = rng.poisson(4.0, (m, n, n)).astype(np.float32)
    scan = ScanData(xcoords=x, ycoords=y, diffraction=np.sqrt(counts) / np.float32(scale),
                    probe=rc((n, n)), metadata={"s_sim": scale})
    return scan, rc((size, size))

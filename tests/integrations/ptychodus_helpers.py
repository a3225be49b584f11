"""ptychodus workflow directories made with ptychodus's own writers (for the integration tests).

A directory holds what ``ptychodus -b train|reconstruct -i DIR`` reads: ``diffraction.h5``
(``save_diffraction_data``), ``product.h5`` (``save_product``) and ``settings.ini``.
:func:`simulate_counts` makes a small consistent scan with NumPy only (no Keras import).
"""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np

#: 2^-24 m (59.6 nm): pixels <-> metres is exact in binary floating point at this size.
PIXEL_M = 2.0**-24


def simulate_counts(m: int, *, n: int = 64, size: int = 128, photons: float = 1e5,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                            np.ndarray]:
    """A scan simulated on the project's forward model, in NumPy (tests/reference.py).

    ``m`` random positions (object pixels, §3) on a ``size`` square ``lines`` object, a Gaussian
    probe (sigma ``n/8`` px, weak quadratic phase), Poisson counts with ``photons`` per pattern
    on average. Returns ``(xcoords, ycoords, counts (m, n, n) float64, probe complex64 (n, n),
    object complex64 (size, size))``.
    """
    from ptycho_k3.data.objects import make_object

    from reference import scan_intensities

    rng = np.random.default_rng(seed)
    obj = make_object("lines", size, rng)
    r2 = ((np.arange(n) - n / 2)[:, None] ** 2 + (np.arange(n) - n / 2)[None, :] ** 2)
    probe = (np.exp(-r2 / (2 * (n / 8) ** 2)) * np.exp(1j * 0.002 * r2)).astype(np.complex64)
    x = rng.uniform(n / 2 + 2, size - n / 2 - 2, m)
    y = rng.uniform(n / 2 + 2, size - n / 2 - 2, m)
    intensity = scan_intensities(obj, probe, np.stack([x, y], 1))
    counts = rng.poisson(intensity * (photons / intensity.sum((1, 2)).mean())).astype(np.float64)
    return x, y, counts, probe, obj


def write_workflow(directory: Path, xcoords: np.ndarray, ycoords: np.ndarray,
                   counts: np.ndarray, probe: np.ndarray, *, object_shape: tuple[int, int],
                   pixel_m: float = PIXEL_M, centre_m: tuple[float, float] = (0.0, 0.0),
                   bad_pixels: np.ndarray | None = None,
                   settings: dict[str, dict[str, str]] | None = None) -> Path:
    """Write a workflow directory for a scan given in ptycho-k3 pixels (x column, y row).

    Positions become ``x_m = (x - W/2) * pixel_m + centre_m[0]`` (docs/conventions.md §16),
    the product's object is a flat ``object_shape`` array (ptychodus's usual initial guess),
    ``counts`` ``(M, N, N)`` go to ``diffraction.h5`` with indexes ``0..M-1``.
    """
    from ptychodus.api.assemble import AssembledDiffractionData
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.io import save_diffraction_data, save_product
    from ptychodus.api.object import Object, ObjectCenter
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
    from ptychodus.api.product import Product, ProductMetadata

    directory.mkdir(parents=True, exist_ok=True)
    m, n, _ = counts.shape
    h, w = object_shape
    bad = np.zeros((n, n), bool) if bad_pixels is None else bad_pixels
    save_diffraction_data(directory / "diffraction.h5", AssembledDiffractionData(
        np.arange(m), np.asarray(counts, np.float32), PixelGeometry(75e-6, 75e-6), bad))
    x_m = (np.asarray(xcoords) - w / 2.0) * pixel_m + centre_m[0]
    y_m = (np.asarray(ycoords) - h / 2.0) * pixel_m + centre_m[1]
    pixels = PixelGeometry(width_m=pixel_m, height_m=pixel_m)
    product = Product(
        metadata=ProductMetadata(name="simulated", comments="", detector_distance_m=1.0,
                                 photon_energy_eV=10000.0, probe_photon_count=0.0,
                                 exposure_time_s=0.0, mass_attenuation_m2_per_kg=0.0,
                                 tomography_angle_deg=0.0),
        probe_positions=ProbePositionSequence(
            [ProbePosition(i, float(a), float(b))
             for i, (a, b) in enumerate(zip(x_m, y_m, strict=True))]),
        probes=ProbeSequence(array=np.asarray(probe, np.complex64), opr_weights=None,
                             pixel_geometry=pixels),
        object_=Object(array=np.ones((h, w), np.complex64), pixel_geometry=pixels,
                       center=ObjectCenter(*centre_m)),
        losses=[])
    save_product(directory / "product.h5", product)
    if settings:
        cp = configparser.ConfigParser(interpolation=None)
        cp.optionxform = str  # ptychodus's keys are CamelCase
        cp.read_dict(settings)
        with open(directory / "settings.ini", "w") as fh:
            cp.write(fh)
    return directory

"""ptychodus workflow directories made with ptychodus's own writers (for the integration tests).

A directory holds what ``ptychodus -b train|reconstruct -i DIR`` reads: ``diffraction.h5``
(``save_diffraction_data``), ``product.h5`` (``save_product``) and ``settings.ini``.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np

#: 2^-24 m (59.6 nm): pixels <-> metres is exact in binary floating point at this size.
PIXEL_M = 2.0**-24


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

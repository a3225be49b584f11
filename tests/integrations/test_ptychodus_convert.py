"""ptycho-k3 <-> ptychodus conversions, files written by ptychodus itself, and the library in
ptychodus's ModelCore (no training; each test well under a second but the ModelCore one, ~4 s:
importing ptychodus's model and its plugins)."""

from __future__ import annotations

import numpy as np
import pytest

ptychodus = pytest.importorskip("ptychodus", reason="needs the ptychodus extra")

from ptycho_k3.data import DataError, load_scan  # noqa: E402

from ptychodus_helpers import PIXEL_M, write_workflow  # noqa: E402

N = 64


def _scan(m: int = 12, size: int = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(N / 2, size - N / 2, m)
    y = rng.uniform(N / 2, size - N / 2 - 10, m)
    counts = rng.poisson(50.0, (m, N, N)).astype(np.float64)
    probe = (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64)
    return x, y, counts, probe, (size - 10, size)  # object (H, W) not square


def _input(directory):
    """The ReconstructInput ptychodus builds from a workflow directory."""
    from ptychodus.api.io import load_diffraction_data, load_product
    from ptychodus.api.reconstruct import prepare_reconstruct_input

    return prepare_reconstruct_input(load_diffraction_data(directory / "diffraction.h5"),
                                     load_product(directory / "product.h5"))


def test_positions_follow_ptychodus_geometry_plus_half_a_pixel(tmp_path):
    """Our x is ptychodus's object-pixel x + 0.5 (its probe centre is pixel (N-1)/2, ours N/2),
    and the window ptychodus cuts for a position is the one §3 cuts (same object indices)."""
    from ptycho_k3.integrations.ptychodus.convert import ObjectFrame, scan_arrays

    x, y, counts, probe, shape = _scan()
    ri = _input(write_workflow(tmp_path, x, y, counts, probe, object_shape=shape,
                               centre_m=(3e-6, -1.25e-6)))
    arrays = scan_arrays(ri)
    # Tolerance 1e-9 px: metres -> pixels with a centre that is not a multiple of the pixel.
    np.testing.assert_allclose(arrays["xcoords"], x, atol=1e-9)
    np.testing.assert_allclose(arrays["ycoords"], y, atol=1e-9)
    g = ri.product.object_.get_geometry()
    px = g.map_probe_positions_to_object_x_px(ri.product.probe_positions)
    np.testing.assert_allclose(arrays["xcoords"], px + 0.5, atol=1e-9)
    frame = ObjectFrame.of(ri.product.object_)
    assert frame.pixel_m == PIXEL_M and (frame.width_px, frame.height_px) == shape[::-1]
    # A position whose window starts on a whole pixel: ptychodus's slice = ours.
    bounds = ri.product.probes.get_geometry().resolve_patch_bounds(40 + (N - 1) / 2, 0.0)
    ours_x = 40 + (N - 1) / 2 + 0.5
    assert bounds.x_slice.start == ours_x - N / 2 and bounds.dx == 0.0


def test_bad_pixels_become_invalid_and_counts_amplitudes(tmp_path):
    from ptycho_k3.integrations.ptychodus.convert import scan_arrays

    x, y, counts, probe, shape = _scan()
    bad = np.zeros((N, N), bool)
    bad[3, 5] = bad[40, 41] = True
    d = write_workflow(tmp_path, x, y, counts, probe, object_shape=shape, bad_pixels=bad)
    arrays = scan_arrays(_input(d))
    np.testing.assert_array_equal(arrays["mask"], ~bad)  # ours: nonzero = valid
    np.testing.assert_array_equal(arrays["diff3d"], counts)
    # The product read by our reader (the --test_data path) agrees with the conversion.
    scan = load_scan(d / "product.h5")
    np.testing.assert_array_equal(scan.valid, ~bad)
    amp = np.sqrt(counts).astype(np.float32)
    amp[:, bad] = 0
    np.testing.assert_allclose(scan.diffraction[:], amp, rtol=1e-6)  # float32 sqrt
    np.testing.assert_allclose(scan.xcoords, arrays["xcoords"], rtol=0, atol=0)


def test_a_probe_off_the_detector_grid_is_refused(tmp_path):
    from ptycho_k3.integrations.ptychodus.convert import scan_arrays

    x, y, counts, probe, shape = _scan()
    ri = _input(write_workflow(tmp_path, x, y, counts, probe[:32, :32], object_shape=shape))
    with pytest.raises(ValueError, match=r"'simulated': probe is \(32, 32\), expected "
                                         r"\(64, 64\) like the diffraction patterns"):
        scan_arrays(ri)


def test_stitched_object_overlays_the_input_exactly(tmp_path):
    """A crop of the input object at (x0, y0), converted back, is where the input is: ptychodus's
    own resampling onto the input geometry returns the input pixels (exact at a whole shift)."""
    from ptychodus.api.object import Object, resample_object

    from ptycho_k3.integrations.ptychodus.convert import ObjectFrame, to_ptychodus_object

    x, y, counts, probe, shape = _scan()
    ri = _input(write_workflow(tmp_path, x, y, counts, probe, object_shape=shape,
                               centre_m=(3e-6, -1.25e-6)))
    rng = np.random.default_rng(1)
    truth = (rng.random(shape) + 1j * rng.random(shape)).astype(np.complex64)
    x0, y0, h, w = 17, 9, 71, 90
    out = to_ptychodus_object(truth[y0:y0 + h, x0:x0 + w], x0, y0, ObjectFrame.of(ri.product.object_))
    g_in = ri.product.object_.get_geometry()
    inside = Object(array=truth, pixel_geometry=g_in.get_pixel_geometry(), center=g_in.get_center())
    back = resample_object(out, inside.get_geometry())
    # Interior only (the resampler's edge pixels mix in its fill value); 1e-5: float32 weights.
    np.testing.assert_allclose(back.get_array()[0][y0 + 1:y0 + h - 1, x0 + 1:x0 + w - 1],
                               truth[y0 + 1:y0 + h - 1, x0 + 1:x0 + w - 1], atol=1e-5)


def test_product_written_by_ptychodus_reads_and_clear_errors(tmp_path):
    x, y, counts, probe, shape = _scan()
    d = write_workflow(tmp_path / "wf", x, y, counts, probe, object_shape=shape)
    scan = load_scan(d / "product.h5")
    assert scan.n_positions == x.size and scan.n == N
    assert scan.object is None  # ptychodus's flat initial guess is no ground truth
    import h5py

    known = np.exp(1j * np.linspace(0, 2, shape[0] * shape[1])).reshape(shape)
    with h5py.File(d / "product.h5", "r+") as f:  # a product holding a known object
        f["object"][...] = known.astype(np.complex64).reshape(f["object"].shape)
    np.testing.assert_array_equal(load_scan(d / "product.h5").object, known.astype(np.complex64))
    np.testing.assert_allclose(scan.xcoords, x, atol=1e-9)
    with pytest.raises(DataError, match="ptychodus diffraction file.*product.h5"):
        load_scan(d / "diffraction.h5")
    (d / "diffraction.h5").rename(d / "elsewhere.h5")
    with pytest.raises(DataError, match="no 'raw_data/diffraction' and no ptychodus diffraction"):
        load_scan(d / "product.h5")
    from ptycho_k3.data.ptychodus import load_ptychodus_product

    prod = load_ptychodus_product(d / "product.h5", diffraction=d / "elsewhere.h5")
    assert prod.diffraction.shape == counts.shape and prod.diffraction_kind == "counts"
    with pytest.raises(DataError, match="have no pattern"):
        load_ptychodus_product(d / "product.h5", diffraction=_short(d, counts))


def _short(d, counts):
    from ptychodus.api.assemble import AssembledDiffractionData
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.io import save_diffraction_data

    path = d / "short.h5"
    save_diffraction_data(path, AssembledDiffractionData(
        np.arange(3), counts[:3].astype(np.float32), PixelGeometry(75e-6, 75e-6),
        np.zeros(counts.shape[1:], bool)))
    return path


def test_model_core_lists_the_ptycho_k3_algorithms(tmp_path, monkeypatch):
    import ptychodus.model.core as core
    from ptychodus.model import ModelCore
    from ptychodus.model.processing.core import ProcessingCore

    from ptycho_k3.integrations.ptychodus.launcher import install

    monkeypatch.setattr(core, "ProcessingCore", ProcessingCore)  # undone after the test
    # ptychodus probes pty-chi's devices in a Python subprocess (~4 s); not ours to test.
    monkeypatch.setattr("ptychodus.model.ptychi.device.probe_devices_via_subprocess", lambda: [])
    monkeypatch.setenv("HOME", str(tmp_path))
    install()
    model = ModelCore()
    names = set(model.processing_core.processing_api.available_reconstructors())
    assert {"ptycho-k3_pinn", "ptycho-k3_supervised", "ptycho-k3_pinn-refined",
            "ptycho-k3_iterative"} <= names
    api = model.processing_core.processing_api
    api.set_reconstructor_if_provided("ptycho-k3_PINN")
    assert api.is_reconstructor_trainable() and api.get_model_file_extension() == ".zip"
    api.set_reconstructor_if_provided("ptycho-k3_Iterative")
    assert not api.is_reconstructor_trainable()

"""Measured-data readers (docs/conventions.md §22): CXI, tike NPZ, project NPZ, ptychodus product.

Every file is written here, small (a few 64 x 64 or 128 x 128 frames), with h5py / NumPy. The
tests check each reader's geometry against the formulas it implements (object pixel
``h c / E * z / (N dp)``, positions in metres / pixel, tike's corner layout = ``np.fft.fftshift``),
the detector options (kind, DC, saturation, crop, bin), the round trips and that every malformed
file is a :class:`DataError` naming the file and the dataset/key, also through ``ptycho-reconstruct``
(exit 2, one line on stderr, nothing written).
"""

from __future__ import annotations

import bz2
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from data_helpers import centred_counts, gaussian_probe

from ptycho_k3.data import DataError, MeasuredOptions, detect_format, load_npz, load_scan, save_npz
from ptycho_k3.data.cxi import ENERGY, ILLUMINATION, MASK, TRANSLATION
from ptycho_k3.data.measured import HC_JM
from ptycho_k3.data.ptychodus import save_ptychodus_product

CXI_DATA = "entry_1/data_1/data"
DISTANCE = "entry_1/instrument_1/detector_1/distance"
X_PIXEL = "entry_1/instrument_1/detector_1/x_pixel_size"
EV = 1.602176634e-19
ENERGY_J, DISTANCE_M, DET_PIXEL_M = 8000 * EV, 2.0, 75e-6


def write_cxi(path: Path, frames: np.ndarray, translation: np.ndarray, *,
              bad: np.ndarray | None = None, illumination: np.ndarray | None = None,
              drop: tuple[str, ...] = (), replace: dict[str, Any] | None = None) -> Path:
    """A CXI file: frames, translation (metres), distance, square pixels, energy (J), optional
    mask (nonzero = BAD) and illumination; ``drop`` leaves datasets out, ``replace`` overrides."""
    items: dict[str, Any] = {
        CXI_DATA: frames, TRANSLATION: translation, DISTANCE: DISTANCE_M, X_PIXEL: DET_PIXEL_M,
        "entry_1/instrument_1/detector_1/y_pixel_size": DET_PIXEL_M, ENERGY: ENERGY_J,
    }
    if bad is not None:
        items[MASK] = bad
    if illumination is not None:
        items[ILLUMINATION] = illumination
    items.update(replace or {})
    with h5py.File(path, "w") as f:
        for key, value in items.items():
            if key not in drop:
                f[key] = value
    return path


def tike_arrays(m: int = 5, n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """tike layout: ``data`` (1, M, H, W) counts with the zero frequency at the corners,
    ``scan`` (1, M, 2) [row, column] of any sign, ``probe`` (1, 1, 1, H, W)."""
    rng = np.random.default_rng(seed)
    data = np.fft.ifftshift(centred_counts(m, n, seed), axes=(-2, -1)).astype(np.float32)
    return {"data": data[None], "scan": rng.uniform(-30, 30, (1, m, 2)),
            "probe": gaussian_probe(n, 6)[None, None, None]}


def project_arrays(m: int = 5, n: int = 64, seed: int = 0, **metadata: Any) -> dict[str, Any]:
    """A project NPZ of counts (``_metadata`` says so) with positions in metres."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {
        "xcoords": rng.uniform(-2e-6, 2e-6, m), "ycoords": rng.uniform(-2e-6, 2e-6, m),
        "diff3d": centred_counts(m, n, seed).astype(np.float32),
        "probeGuess": gaussian_probe(n, 6),
        "_metadata": np.array(json.dumps({"diffraction_kind": "counts",
                                          "positions_unit": "metres", **metadata})),
    }
    return arrays


def save(path: Path, arrays: dict[str, Any]) -> Path:
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------------------------
# CXI


def test_cxi_mask_geometry_and_positions(tmp_path: Path) -> None:
    """CXI: the mask marks BAD pixels (inverted to ``valid``), the object pixel is
    ``h c / E * z / (N dp)``, translations in metres become pixels (sign kept), counts become
    amplitudes ``sqrt(counts)``, and without illumination the probe comes from the data with
    ``sum |P|^2`` = the mean counts per pattern."""
    m, n = 5, 64
    counts = centred_counts(m, n).astype(np.uint32)
    rng = np.random.default_rng(1)
    tr = np.stack([rng.uniform(-1e-6, 1e-6, m), rng.uniform(-1e-6, 1e-6, m), np.zeros(m)], 1)
    bad = np.zeros((n, n), np.uint8)
    bad[3, 4] = bad[40, 41] = 1
    scan = load_scan(write_cxi(tmp_path / "s.cxi", counts, tr, bad=bad))

    pixel = HC_JM / ENERGY_J * DISTANCE_M / (n * DET_PIXEL_M)
    assert pixel == pytest.approx(6.4575e-8, rel=1e-4)  # 8 keV, 2 m, 75 um, N 64
    assert scan.metadata["object_pixel_m"] == pytest.approx(pixel, rel=1e-12)
    np.testing.assert_allclose(scan.xcoords, tr[:, 0] / pixel, rtol=1e-12)
    np.testing.assert_allclose(scan.ycoords, tr[:, 1] / pixel, rtol=1e-12)
    assert scan.xcoords.min() < 0 and scan.ycoords.min() < 0
    np.testing.assert_array_equal(scan.valid, bad == 0)
    np.testing.assert_array_equal(scan.diffraction, np.sqrt(np.where(bad == 0, counts, 0),
                                                            dtype=np.float32))
    r = scan.reading
    assert (r["format"], r["diffraction_kind"], r["dc"], r["positions_unit"]) == \
        ("cxi", "counts", "centre", "metres")
    assert r["invalid_pixels"]["masked"] == 2 * m and r["probe"].startswith("from data")
    mean_counts = np.mean(np.sum(np.where(bad == 0, counts, 0), axis=(1, 2)))
    assert scan.nphotons == pytest.approx(mean_counts, rel=1e-6)
    assert np.sum(np.abs(scan.probe.astype(np.complex128)) ** 2) == pytest.approx(mean_counts,
                                                                                  rel=1e-4)


def test_cxi_illumination_is_scaled_to_the_counts(tmp_path: Path) -> None:
    """A CXI illumination (modes, H, W) gives its first mode, scaled so that a unit object
    predicts the mean counts per pattern (docs/conventions.md §8)."""
    m, n = 4, 64
    counts = centred_counts(m, n)
    probe = gaussian_probe(n, 5)
    modes = np.stack([probe * 3, probe.conj()])
    scan = load_scan(write_cxi(tmp_path / "s.cxi", counts, np.zeros((m, 3)), illumination=modes))
    gain = scan.reading["probe_power_gain"]
    np.testing.assert_allclose(scan.probe, probe * 3 * gain, rtol=1e-5, atol=1e-6)
    assert np.sum(np.abs(scan.probe.astype(np.complex128)) ** 2) == pytest.approx(
        np.mean(counts.sum(axis=(1, 2))), rel=1e-5)


@pytest.mark.parametrize(("option", "n_out", "det_pixel"), [
    ({"detector_crop": 64}, 64, DET_PIXEL_M),  # same pixels, fewer: lambda z / (64 dp)
    ({"detector_bin": 2}, 64, 2 * DET_PIXEL_M),  # 2x larger pixels: lambda z / (64 * 2 dp)
])
def test_cxi_crop_and_bin_object_pixel(tmp_path: Path, option: dict[str, int], n_out: int,
                                       det_pixel: float) -> None:
    """The CXI object pixel after a crop / bin of 128 x 128 frames follows the detector that the
    prepared frames describe: ``lambda z / (N_out dp_out)``."""
    m = 3
    tr = np.array([[1e-6, -2e-6, 0.0], [0.0, 0.0, 0.0], [-3e-6, 5e-7, 0.0]])
    scan = load_scan(write_cxi(tmp_path / "s.cxi", centred_counts(m, 128), tr),
                     MeasuredOptions(**option))
    pixel = HC_JM / ENERGY_J * DISTANCE_M / (n_out * det_pixel)
    assert scan.n == n_out and scan.metadata["object_pixel_m"] == pytest.approx(pixel)
    np.testing.assert_allclose(scan.xcoords, tr[:, 0] / pixel, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# tike


def test_tike_layout(tmp_path: Path) -> None:
    """tike NPZ: leading singleton axes dropped, zero frequency moved from the corners to the
    centre exactly as ``np.fft.fftshift``, ``scan`` [row, column] -> x = column, y = row with
    negative positions kept, the probe's first mode scaled to the counts."""
    a = tike_arrays()
    path = save(tmp_path / "t.npz", a)
    assert detect_format(path) == "tike"
    scan = load_scan(path)
    counts = np.fft.fftshift(a["data"][0], axes=(-2, -1))
    np.testing.assert_array_equal(scan.diffraction, np.sqrt(counts))
    np.testing.assert_array_equal(scan.xcoords, a["scan"][0, :, 1])
    np.testing.assert_array_equal(scan.ycoords, a["scan"][0, :, 0])
    assert scan.xcoords.min() < 0 and scan.ycoords.min() < 0
    gain = scan.reading["probe_power_gain"]
    np.testing.assert_allclose(scan.probe, a["probe"][0, 0, 0] * gain, rtol=1e-6, atol=1e-7)
    assert (scan.reading["format"], scan.reading["dc"], scan.reading["diffraction_kind"]) == \
        ("tike", "corner", "counts")
    assert scan.valid is None


def test_tike_several_probe_modes_warn_and_keep_the_first(tmp_path: Path, caplog) -> None:
    """Several probe modes: a warning, and the first mode is used."""
    a = tike_arrays()
    p = a["probe"][0, 0, 0]
    a["probe"] = np.stack([p, 2 * p, 3 * p])[None, None]
    with caplog.at_level(logging.WARNING, logger="ptycho_k3"):
        scan = load_scan(save(tmp_path / "t.npz", a))
    assert "3 modes; the first is used" in caplog.text
    g = scan.reading["probe_power_gain"]
    np.testing.assert_allclose(scan.probe, p * g, rtol=1e-6, atol=1e-7)


def test_tike_bz2_reads_like_the_plain_file(tmp_path: Path) -> None:
    """A ``.bz2``-compressed tike file is detected and read like the plain one."""
    a = tike_arrays()
    buf = io.BytesIO()
    np.savez(buf, **a)
    packed = tmp_path / "t.npz.bz2"
    packed.write_bytes(bz2.compress(buf.getvalue()))
    plain = load_scan(save(tmp_path / "t.npz", a))
    assert detect_format(packed) == "tike"
    scan = load_scan(packed)
    assert scan.source == str(packed)
    for field in ("diffraction", "probe", "xcoords", "ycoords"):
        np.testing.assert_array_equal(getattr(scan, field), getattr(plain, field))
    (tmp_path / "x.bz2").write_bytes(b"not bzip2 at all")
    with pytest.raises(DataError, match="x.bz2: not a readable bzip2 file"):
        load_scan(tmp_path / "x.bz2")


# --------------------------------------------------------------------------------------------
# project NPZ: positions, DC, kind, saturation


def test_project_npz_positions_in_metres_and_pixels(tmp_path: Path) -> None:
    """Positions in metres are divided by the object pixel: ``--object_pixel_size`` wins over
    ``_metadata`` ``object_pixel_m``; without either it is an error naming the key; in pixels
    (the default) they are kept."""
    a = project_arrays(object_pixel_m=5e-8)
    scan = load_scan(save(tmp_path / "m.npz", a))
    np.testing.assert_allclose(scan.xcoords, a["xcoords"] / 5e-8, rtol=1e-12)
    np.testing.assert_allclose(scan.ycoords_start, a["ycoords"] / 5e-8, rtol=1e-12)
    assert scan.reading["positions_unit_from"] == "_metadata"
    scan = load_scan(tmp_path / "m.npz", MeasuredOptions(object_pixel_size=1e-7))
    np.testing.assert_allclose(scan.xcoords, a["xcoords"] / 1e-7, rtol=1e-12)
    assert scan.metadata["object_pixel_m"] == 1e-7

    a = project_arrays()  # metres, but no pixel size
    with pytest.raises(DataError, match=r"u\.npz: 'xcoords' is in metres .*--object_pixel_size"):
        load_scan(save(tmp_path / "u.npz", a))
    pixels = dict(a, xcoords=a["xcoords"] * 1e7, ycoords=a["ycoords"] * 1e7)
    scan = load_scan(save(tmp_path / "p.npz", pixels), MeasuredOptions(positions_unit="pixels"))
    np.testing.assert_array_equal(scan.xcoords, pixels["xcoords"])
    assert scan.reading["positions_unit_from"] == "option"


def test_dc_corner_centre_and_auto(tmp_path: Path, caplog) -> None:
    """``--dc corner`` on corner frames gives the centred frames; ``auto`` finds the layout of
    either file (and logs it); ``centre`` leaves frames as they are."""
    a = project_arrays(object_pixel_m=5e-8)
    centred = save(tmp_path / "c.npz", a)
    corner = save(tmp_path / "k.npz", dict(a, diff3d=np.fft.ifftshift(a["diff3d"], axes=(1, 2))))
    ref = load_scan(centred, MeasuredOptions(dc="centre")).diffraction
    np.testing.assert_array_equal(load_scan(corner, MeasuredOptions(dc="corner")).diffraction, ref)
    with caplog.at_level(logging.INFO, logger="ptycho_k3"):
        auto_k = load_scan(corner, MeasuredOptions(dc="auto"))
        auto_c = load_scan(centred, MeasuredOptions(dc="auto"))
    assert (auto_k.reading["dc"], auto_c.reading["dc"]) == ("corner", "centre")
    assert auto_k.reading["dc_from"] == "auto"
    assert "k.npz: zero frequency decided from the mean pattern: corner" in caplog.text
    np.testing.assert_array_equal(auto_k.diffraction, ref)
    np.testing.assert_array_equal(auto_c.diffraction, ref)
    wrong = load_scan(corner, MeasuredOptions(dc="centre")).diffraction
    assert not np.array_equal(wrong, ref)


def test_counts_versus_amplitude(tmp_path: Path, caplog) -> None:
    """The same scan stored as counts and as amplitudes gives the same amplitudes
    ``sqrt(counts)``; reading counts as amplitudes (integers > 1) or amplitudes as counts
    (non-integers) warns, naming the file and the flag; the right kind does not warn."""
    a = project_arrays(object_pixel_m=5e-8)
    counts = a["diff3d"] + 50  # integers, few of them perfect squares
    amp = np.sqrt(counts)
    c_path = save(tmp_path / "counts.npz", dict(a, diff3d=counts))
    a_path = save(tmp_path / "amp.npz", dict(a, diff3d=amp))
    with caplog.at_level(logging.WARNING, logger="ptycho_k3"):
        from_counts = load_scan(c_path, MeasuredOptions(diffraction_kind="counts"))
        from_amp = load_scan(a_path, MeasuredOptions(diffraction_kind="amplitude"))
    np.testing.assert_allclose(from_counts.diffraction, amp, rtol=1e-6)
    np.testing.assert_array_equal(from_amp.diffraction, amp)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    int_path = save(tmp_path / "int.npz", a)
    with caplog.at_level(logging.WARNING, logger="ptycho_k3"):
        load_scan(int_path, MeasuredOptions(diffraction_kind="amplitude"))
    assert "int.npz: 'diff3d' is read as amplitude (option)" in caplog.text
    assert "like photon counts; pass --diffraction_kind counts" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptycho_k3"):
        scan = load_scan(a_path, MeasuredOptions(diffraction_kind="counts"))
    assert "amp.npz: 'diff3d' is read as counts (option)" in caplog.text
    assert "like amplitudes; pass --diffraction_kind amplitude" in caplog.text
    assert scan.reading["kind_warning"] == "values look like amplitude"


def test_saturation(tmp_path: Path) -> None:
    """Values at or above ``--saturation`` (file units) are invalid: stored 0, counted, and the
    other values untouched."""
    a = project_arrays(object_pixel_m=5e-8)
    level = 400.0
    scan = load_scan(save(tmp_path / "s.npz", a), MeasuredOptions(saturation=level))
    hot = a["diff3d"] >= level
    assert 0 < hot.sum() < hot.size // 10
    np.testing.assert_array_equal(scan.valid, ~hot)
    assert scan.reading["invalid_pixels"]["saturated"] == int(hot.sum())
    np.testing.assert_array_equal(scan.diffraction, np.sqrt(np.where(hot, 0, a["diff3d"])))


# --------------------------------------------------------------------------------------------
# detector crop / bin


def test_detector_crop(tmp_path: Path) -> None:
    """``--detector_crop 64`` of 128 x 128 frames: the central 64 x 64 counts (and mask), positions
    in pixels scaled by N/H = 1/2, the probe resampled over the same field of view (a
    band-limited probe: its samples at every other pixel, centre on centre)."""
    m, h, n = 4, 128, 64
    counts = centred_counts(m, h)
    probe = gaussian_probe(h, 8)
    mask = np.ones((h, h), np.uint8)
    mask[h // 2 + 3, h // 2 - 5] = 0  # kept by the crop
    mask[2, 2] = 0  # cropped away
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-40, 40, m), rng.uniform(-40, 40, m)
    path = save(tmp_path / "c.npz", {
        "xcoords": x, "ycoords": y, "diff3d": counts, "probeGuess": probe, "mask": mask,
        "_metadata": np.array(json.dumps({"diffraction_kind": "counts"}))})
    scan = load_scan(path, MeasuredOptions(detector_crop=n))
    assert scan.n == n and scan.reading["detector_crop"] == n
    sl = slice(h // 2 - n // 2, h // 2 + n // 2)
    np.testing.assert_array_equal(scan.valid, mask[sl, sl] != 0)
    diff = np.asarray(scan.diffraction)  # read on demand: all of it
    np.testing.assert_allclose(diff ** 2, np.where(mask[sl, sl], counts[:, sl, sl], 0), rtol=1e-6)
    np.testing.assert_allclose(scan.xcoords, x * n / h, rtol=1e-12)
    np.testing.assert_allclose(scan.ycoords, y * n / h, rtol=1e-12)
    p = scan.probe / scan.probe[n // 2, n // 2]
    np.testing.assert_allclose(p, probe[::2, ::2] / probe[h // 2, h // 2], atol=1e-4)
    # counts: the probe's power is the mean counts per pattern of the cropped frames
    assert np.sum(np.abs(scan.probe.astype(np.complex128)) ** 2) == pytest.approx(
        np.mean(np.sum(diff.astype(np.float64) ** 2, axis=(1, 2))), rel=1e-5)
    with pytest.raises(DataError, match=r"c\.npz: 'diff3d' frames are 128x128; cannot crop"):
        load_scan(path, MeasuredOptions(detector_crop=256))


def test_detector_crop_keeps_a_consistent_probe_consistent(tmp_path: Path) -> None:
    """Amplitudes and a probe that agree under docs/conventions.md §8 (``|FFT(P)|^2 / N^2`` = the
    counts of a flat object) still agree after ``--detector_crop``: the resampled probe predicts
    the cropped frames pixel for pixel (no probe gain is applied to amplitudes)."""
    h, n = 128, 64
    probe = gaussian_probe(h, 8).astype(np.complex128) * 30
    counts = np.abs(np.fft.fftshift(np.fft.fft2(probe))) ** 2 / h**2
    path = save(tmp_path / "a.npz", {
        "xcoords": np.zeros(2), "ycoords": np.zeros(2),
        "diff3d": np.repeat(np.sqrt(counts)[None], 2, axis=0).astype(np.float32),
        "probeGuess": probe.astype(np.complex64)})
    for option in (MeasuredOptions(), MeasuredOptions(detector_crop=n)):
        scan = load_scan(path, option)
        pred = np.abs(np.fft.fftshift(np.fft.fft2(scan.probe.astype(np.complex128)))) ** 2
        pred /= scan.n ** 2
        measured = scan.diffraction[0].astype(np.float64) ** 2
        np.testing.assert_allclose(pred, measured, rtol=1e-3, atol=1e-6 * measured.max())


def test_detector_bin(tmp_path: Path) -> None:
    """``--detector_bin 2``: counts summed over 2 x 2 blocks (amplitudes are squared first), a
    block with one invalid pixel invalid, positions unchanged, the probe cropped to the central
    N x N (same object pixel, smaller field of view) and the kept energy recorded."""
    m, h, n = 4, 128, 64
    counts = centred_counts(m, h)
    probe = gaussian_probe(h, 20)
    mask = np.ones((h, h), np.uint8)
    mask[10, 11] = 0
    x, y = np.array([-5.0, 0.0, 7.5, 3.0]), np.array([1.0, -2.0, 0.0, 4.0])
    binned = counts.reshape(m, n, 2, n, 2).sum(axis=(2, 4))
    for kind, values in (("counts", counts), ("amplitude", np.sqrt(counts))):
        path = save(tmp_path / f"{kind}.npz", {
            "xcoords": x, "ycoords": y, "diff3d": values, "probeGuess": probe, "mask": mask,
            "_metadata": np.array(json.dumps({"diffraction_kind": kind}))})
        scan = load_scan(path, MeasuredOptions(detector_bin=2))
        assert scan.n == n and scan.reading["detector_bin"] == 2
        expected_valid = np.ones((n, n), bool)
        expected_valid[5, 5] = False
        np.testing.assert_array_equal(scan.valid, expected_valid)
        np.testing.assert_allclose(np.asarray(scan.diffraction) ** 2,
                                   np.where(expected_valid, binned, 0), rtol=1e-5)
        np.testing.assert_array_equal(scan.xcoords, x)
        np.testing.assert_array_equal(scan.ycoords, y)
        core = probe[h // 2 - n // 2: h // 2 + n // 2, h // 2 - n // 2: h // 2 + n // 2]
        scale = scan.probe[n // 2, n // 2] / core[n // 2, n // 2]
        np.testing.assert_allclose(scan.probe, core * scale, rtol=1e-5, atol=1e-6)
        kept = np.sum(np.abs(core) ** 2) / np.sum(np.abs(probe) ** 2)
        assert scan.reading["probe_energy_kept_by_bin"] == pytest.approx(kept, rel=1e-5)
    with pytest.raises(DataError, match="needs sides that are multiples of it"):
        load_scan(path, MeasuredOptions(detector_bin=3))


# --------------------------------------------------------------------------------------------
# round trips


def test_round_trip_through_save_npz(tmp_path: Path) -> None:
    """A prepared measured scan (CXI counts, bad-pixel mask, a NaN pixel, metres) saved with
    ``save_npz`` and read back with ``load_npz`` gives the same arrays, ``mask`` included, and
    the same metadata: nothing is converted twice (kind, DC, unit are not written back)."""
    m, n = 4, 64
    counts = centred_counts(m, n)
    counts[2, 30, 31] = np.nan
    bad = np.zeros((n, n), np.uint8)
    bad[0, :] = 1
    tr = np.array([[1e-6, 2e-6, 0], [-1e-6, 0, 0], [0, -3e-6, 0], [2e-7, 2e-7, 0]])
    scan = load_scan(write_cxi(tmp_path / "s.cxi", counts, tr, bad=bad), MeasuredOptions(dc="auto"))
    assert scan.valid.shape == (m, n, n) and np.count_nonzero(~np.asarray(scan.valid)) == m * n + 1
    path = save_npz(tmp_path / "out.npz", scan)
    with np.load(path, allow_pickle=False) as z:
        assert z["mask"].dtype == np.uint8 and z["mask"].shape == (m, n, n)
    back = load_npz(path)
    for field in ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "diffraction", "probe",
                  "valid", "scan_index"):
        np.testing.assert_array_equal(getattr(back, field), getattr(scan, field), err_msg=field)
    assert back.metadata == scan.metadata
    assert back.reading["diffraction_kind"] == "amplitude" and back.reading["dc"] == "centre"

    # A project NPZ whose _metadata says counts, corner, metres and a saturation level: the
    # prepared scan must not carry those directives into the file it is saved to.
    a = project_arrays(object_pixel_m=5e-8, dc="corner", saturation=500)
    a["diff3d"] = np.fft.ifftshift(a["diff3d"], axes=(1, 2))
    scan = load_scan(save(tmp_path / "p.npz", a))
    assert scan.valid is not None and scan.reading["dc_from"] == "_metadata"
    back = load_npz(save_npz(tmp_path / "p_out.npz", scan))
    for field in ("xcoords", "ycoords", "diffraction", "probe", "valid"):
        np.testing.assert_array_equal(getattr(back, field), getattr(scan, field), err_msg=field)
    assert back.metadata == scan.metadata and back.metadata["object_pixel_m"] == 5e-8


def test_ptychodus_product_with_mask_round_trip(tmp_path: Path) -> None:
    """A scan with a detector mask written as a ptychodus product (``raw_data/mask``) reads back
    through ``load_scan`` with the same diffraction, mask, probe and positions."""
    a = project_arrays(object_pixel_m=5e-8)
    a["mask"] = np.ones((64, 64), np.uint8)
    a["mask"][30:34, 10] = 0
    scan = load_scan(save(tmp_path / "s.npz", a))
    product = save_ptychodus_product(tmp_path / "p.h5", scan)
    with h5py.File(product, "r") as f:
        np.testing.assert_array_equal(f["raw_data/mask"][()], a["mask"])
    assert detect_format(product) == "ptychodus"
    back = load_scan(product)
    assert back.reading["format"] == "ptychodus"
    np.testing.assert_array_equal(back.valid, scan.valid)
    np.testing.assert_array_equal(back.diffraction, scan.diffraction)
    np.testing.assert_array_equal(back.probe, scan.probe)
    np.testing.assert_allclose(back.xcoords, scan.xcoords, rtol=1e-12)
    np.testing.assert_allclose(back.ycoords, scan.ycoords, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# malformed files


def _cxi_good(path: Path, **kw: Any) -> Path:
    frames = kw.pop("frames", centred_counts(3, 64))
    return write_cxi(path, frames, np.zeros((frames.shape[0], 3)), **kw)


def _changed(arrays: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``arrays`` with ``changes`` applied (a None value drops the key)."""
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return arrays


def _tike_good(path: Path, **changes: Any) -> Path:
    return save(path, _changed(tike_arrays(m=3), changes))


def _npz_good(path: Path, **changes: Any) -> Path:
    return save(path, _changed(project_arrays(m=3, object_pixel_m=5e-8), changes))


def _ptychodus_good(path: Path, drop: str | None = None, **changes: Any) -> Path:
    scan = load_scan(_npz_good(path.with_suffix(".src.npz")))
    product = save_ptychodus_product(path, scan)
    with h5py.File(product, "a") as f:
        if drop is not None:
            del f[drop]
        for key, value in changes.items():
            if key in f:
                del f[key]
            f[key] = value
    return product


def _all_nan_frame(n: int = 64) -> np.ndarray:
    frames = centred_counts(3, n)
    frames[1] = np.nan
    return frames


#: case -> (writer(path), the file name, what the message must name)
MALFORMED = {
    "cxi_missing_data": (lambda p: _cxi_good(p, drop=(CXI_DATA,)), "bad.cxi", CXI_DATA),
    "cxi_missing_energy": (lambda p: _cxi_good(p, drop=(ENERGY,)), "bad.cxi", ENERGY),
    "cxi_wrong_rank": (lambda p: _cxi_good(p, frames=centred_counts(3, 64)[0]), "bad.cxi",
                       CXI_DATA),
    "cxi_mask_shape": (lambda p: _cxi_good(p, bad=np.zeros((32, 32))), "bad.cxi", MASK),
    "cxi_no_valid_pixel": (lambda p: _cxi_good(p, frames=_all_nan_frame()), "bad.cxi",
                           f"'{CXI_DATA}' pattern 1 has no valid pixel"),
    "cxi_all_masked": (lambda p: _cxi_good(p, bad=np.ones((64, 64))), "bad.cxi",
                       "pattern 0 (and 2 more) has no valid pixel"),
    "cxi_probe_size": (lambda p: _cxi_good(p, illumination=gaussian_probe(32, 4)), "bad.cxi",
                       f"'{ILLUMINATION}' has shape (32, 32); expected (64, 64)"),
    "cxi_translation_rows": (lambda p: _cxi_good(p, replace={TRANSLATION: np.zeros((2, 3))}),
                             "bad.cxi", TRANSLATION),
    "tike_missing_scan": (lambda p: _tike_good(p, scan=None), "bad.npz", "missing key 'scan'"),
    "tike_wrong_rank": (lambda p: _tike_good(p, data=np.ones((64, 64), np.float32)), "bad.npz",
                        "key 'data' has shape (64, 64)"),
    "tike_mask_shape": (lambda p: _tike_good(p, mask=np.ones((3, 3))), "bad.npz",
                        "'mask' has shape (3, 3)"),
    "tike_no_valid_pixel": (lambda p: _tike_good(p, data=_all_nan_frame()[None]), "bad.npz",
                            "'data' pattern 1 has no valid pixel"),
    "tike_probe_size": (lambda p: _tike_good(p, probe=gaussian_probe(32, 4)), "bad.npz",
                        "'probe' has shape (32, 32); expected (64, 64)"),
    "npz_missing_xcoords": (lambda p: _npz_good(p, xcoords=None), "bad.npz",
                            "missing key 'xcoords'"),
    "npz_missing_diff3d": (lambda p: _npz_good(p, diff3d=None), "bad.npz",
                           "missing key 'diff3d'"),
    "npz_wrong_rank": (lambda p: _npz_good(p, diff3d=np.ones((3, 64), np.float32)), "bad.npz",
                       "key 'diff3d' has shape (3, 64)"),
    "npz_mask_shape": (lambda p: _npz_good(p, mask=np.ones((64, 63))), "bad.npz",
                       "'mask' has shape (64, 63)"),
    "npz_no_valid_pixel": (lambda p: _npz_good(p, diff3d=_all_nan_frame().astype(np.float32)),
                           "bad.npz", "'diff3d' pattern 1 has no valid pixel"),
    "npz_probe_size": (lambda p: _npz_good(p, probeGuess=gaussian_probe(32, 4)), "bad.npz",
                       "key 'probeGuess' has shape (32, 32)"),
    "npz_bad_metadata_kind": (lambda p: _npz_good(p, _metadata=np.array(
        json.dumps({"diffraction_kind": "photons"}))), "bad.npz", "'_metadata' has "
        "diffraction_kind='photons'"),
    "npz_bad_metadata_saturation": (lambda p: _npz_good(p, _metadata=np.array(
        json.dumps({"saturation": "high"}))), "bad.npz", "'_metadata' has saturation='high'"),
    "ptychodus_missing_probe": (lambda p: _ptychodus_good(p, drop="probe"), "bad.h5",
                                "missing dataset 'probe'"),
    "ptychodus_wrong_rank": (lambda p: _ptychodus_good(p, **{"raw_data/diffraction":
                                                            np.ones((3, 64), np.float32)}),
                             "bad.h5", "'raw_data/diffraction' has shape (3, 64)"),
    "ptychodus_mask_shape": (lambda p: _ptychodus_good(p, **{"raw_data/mask": np.ones((8, 8))}),
                             "bad.h5", "'raw_data/mask' has shape (8, 8)"),
    "ptychodus_no_valid_pixel": (lambda p: _ptychodus_good(p, **{
        "raw_data/diffraction": _all_nan_frame().astype(np.float32)}), "bad.h5",
        "'raw_data/diffraction' pattern 1 has no valid pixel"),
    "ptychodus_probe_size": (lambda p: _ptychodus_good(p, probe=gaussian_probe(32, 4)), "bad.h5",
                             "'probe' has shape (32, 32); expected (64, 64)"),
    "hdf5_unknown_layout": (lambda p: _plain_hdf5(p), "bad.h5", "groups ['images']: neither CXI"),
    "npz_truncated": (lambda p: _truncate(_npz_good(p)), "bad.npz", "not a readable NPZ file"),
}


def _plain_hdf5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4))
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_a_data_error_naming_file_and_key(tmp_path: Path, case: str) -> None:
    """Every malformed file is a DataError whose message starts with the file and names the
    dataset/key that is wrong (format detected from the content)."""
    make, name, expected = MALFORMED[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError) as info:
        load_scan(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


@pytest.mark.parametrize("case", ["cxi_missing_data", "cxi_no_valid_pixel", "cxi_probe_size",
                                  "tike_missing_scan", "tike_mask_shape", "npz_no_valid_pixel",
                                  "npz_mask_shape", "ptychodus_wrong_rank", "npz_truncated"])
def test_malformed_file_through_reconstruct_exits_2(tmp_path: Path, case: str, capsys,
                                                    monkeypatch) -> None:
    """``ptycho-reconstruct --test_data BAD``: exit 2, one line on stderr naming the file and the
    key, no traceback, the output directory never created."""
    from ptycho_k3.cli import reconstruct as reconstruct_cli

    make, name, expected = MALFORMED[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = inputs / name
    make(bad)
    out = tmp_path / "out"
    monkeypatch.chdir(inputs)
    rc = reconstruct_cli.main(["--test_data", str(bad), "--iterations", "1",
                               "--output_dir", str(out)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ptycho-reconstruct: error: {bad}: ") and expected in lines[0]
    assert not out.exists()


def test_malformed_cxi_as_typed(tmp_path: Path) -> None:
    """The same through the installed console script in a subprocess (one case)."""
    bad = MALFORMED["cxi_mask_shape"][0](tmp_path / "bad.cxi")
    out = tmp_path / "out"
    script = Path(sys.executable).parent / "ptycho-reconstruct"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "ptycho_k3.cli.reconstruct"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([*argv, "--test_data", str(bad), "--iterations", "1", "--output_dir",
                           str(out)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"{bad}: dataset '{MASK}' has shape (32, 32)" in lines[0]
    assert not out.exists()

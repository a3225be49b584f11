"""FRC between two reconstructions (ptycho_k3.resolution): self-consistency without ground
truth. NumPy only, no Keras."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from ptycho_k3 import resolution as rs


def _smooth_object(n: int = 128, seed: int = 0) -> np.ndarray:
    """A complex object with band-limited amplitude (0.5 … 1) and phase (about ±1 rad)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((2, n, n)), (0, 2.5, 2.5))
    field /= field.std(axis=(1, 2), keepdims=True)
    amp = 0.75 + 0.08 * field[0]
    return amp * np.exp(0.4j * field[1])


def _noisy(obj: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``obj`` plus circular complex white noise of standard deviation ``sigma`` per pixel."""
    noise = rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape)
    return obj + sigma * noise / math.sqrt(2)


def test_image_with_itself_is_one_everywhere():
    obj = _smooth_object()
    res = rs.frc_between(obj, obj)
    assert res.side == 128 and res.curve.shape == res.n_k.shape == (65,)
    np.testing.assert_allclose(res.curve, 1.0, atol=1e-9)
    report = rs.resolution_report(res)
    for name in rs.CRITERIA:
        t = report["thresholds"][name]
        assert t["reached"] is False and t["resolution_px"] is None and "Nyquist" in t["note"]


def test_resolution_worsens_as_noise_grows():
    """Two independent noise realisations of one object: more noise, coarser resolution."""
    obj = _smooth_object()
    rng = np.random.default_rng(1)
    res_px = {name: [] for name in rs.CRITERIA}
    for sigma in (0.003, 0.03, 0.3):
        report = rs.resolution_report(
            rs.frc_between(_noisy(obj, sigma, rng), _noisy(obj, sigma, rng)))
        for name in rs.CRITERIA:
            t = report["thresholds"][name]
            assert t["reached"], (sigma, name, t)
            assert 2.0 < t["resolution_px"] < 128.0
            assert t["resolution_px"] == pytest.approx(128 / t["ring"])
            res_px[name].append(t["resolution_px"])
    for name, values in res_px.items():
        assert values[0] < values[1] < values[2], (name, values)
    # Criteria order at one noise level: 0.5 is the strictest, 1/7 the most lenient (the half-bit
    # curve lies between them at these ring sizes).
    assert res_px["frc50"][1] > res_px["half_bit"][1] > res_px["frc1over7"][1]


def test_half_bit_threshold_known_values():
    t = rs.half_bit_threshold([1, 4, 100, 1e16])
    # (0.2071 + 1.9102/sqrt(n)) / (1.2071 + 0.9102/sqrt(n)), worked by hand
    np.testing.assert_allclose(t, [1.0, 1.1622 / 1.6622, 0.39812 / 1.29812, 0.2071 / 1.2071],
                               rtol=1e-5)
    obj = _smooth_object(64)
    res = rs.frc_between(obj, obj)
    np.testing.assert_allclose(res.half_bit, rs.half_bit_threshold(res.n_k))
    # rings 0 … k hold the lattice points of a disc of radius k + 1/2
    assert res.n_k[0] == 1 and res.n_k[1] == 8
    assert res.n_k[:32].sum() == pytest.approx(np.pi * 31.5**2, rel=0.01)


def test_global_phase_factor_does_not_matter():
    obj = _smooth_object()
    rng = np.random.default_rng(2)
    a, b = _noisy(obj, 0.1, rng), _noisy(obj, 0.1, rng)
    for remove_ramp in (False, True):
        base = rs.frc_between(a, b, remove_ramp=remove_ramp)
        turned = rs.frc_between(a, b * np.exp(2.9j), remove_ramp=remove_ramp)
        np.testing.assert_allclose(turned.curve, base.curve, atol=1e-9)
        assert turned.crossings() == pytest.approx(base.crossings())


def test_phase_ramp_difference_is_removed():
    """A linear phase ramp between the two (an ambiguity, not resolution) is taken out."""
    obj = _smooth_object()
    rng = np.random.default_rng(3)
    a, b = _noisy(obj, 0.1, rng), _noisy(obj, 0.1, rng)
    yy, xx = np.mgrid[0:128, 0:128]
    ramped = b * np.exp(1j * (0.25 * xx - 0.15 * yy + 1.0))
    plain = rs.frc_between(a, b).crossings()["half_bit"]
    removed = rs.frc_between(a, ramped)
    assert removed.ramp == pytest.approx((0.25, -0.15), abs=2e-3)
    assert removed.crossings()["half_bit"] == pytest.approx(plain, rel=0.02)
    kept = rs.frc_between(a, ramped, remove_ramp=False).crossings()["half_bit"]
    assert kept < 0.5 * plain


def test_common_region_origins_and_scanned_box():
    obj = _smooth_object(120)
    # A holds rows 10:100, cols 5:110 of the object frame; B rows 0:80, cols 20:120.
    a, b = obj[10:100, 5:110], obj[0:80, 20:120]
    res = rs.frc_between(a, b, origin_a=(5, 10), origin_b=(20.0, 0.0))
    assert res.region == (0, 70, 15, 105)  # object rows 10:80, cols 20:110 in A's pixels
    np.testing.assert_allclose(res.curve, 1.0, atol=1e-9)
    # scanned centres cut the region to their bounding box ([x, y] scan coordinates)
    centres_a = np.array([[30.5, 20.0], [90.0, 60.2]])
    centres_b = np.array([[25.0, 25.0], [95.0, 70.0]])
    region, offset = rs.common_region(a.shape, (5, 10), b.shape, (20, 0), (centres_a, centres_b))
    assert offset == (15, -10)
    assert region == (15, 51, 26, 86)  # y 25..60, x 31..90 inclusive
    with pytest.raises(ValueError, match="same pixel grid"):
        rs.frc_between(a, b, origin_a=(5, 10), origin_b=(20.5, 0.0))
    with pytest.raises(ValueError, match="no scanned region in common"):
        rs.frc_between(a, b, origin_a=(0, 0), origin_b=(500, 0))
    with pytest.raises(ValueError, match="too small"):
        rs.frc_between(a, b, origin_a=(5, 10), origin_b=(20, 0),
                       centres_a=np.array([[30.0, 30.0], [33.0, 60.0]]))


def test_crossing_ring_rules():
    assert rs.crossing_ring([1.0, 1.0, 0.8, 0.4, 0.1], 0.5) == pytest.approx(2.75)
    assert rs.crossing_ring([1.0, 0.2, 0.9], 0.5) == 1.0  # ring 1 already below
    assert rs.crossing_ring([1.0, 0.9, 0.8], 0.5) == 3.0  # never: the curve length
    assert rs.crossing_ring([0.1, 0.9, 0.8], 0.5) == 3.0  # ring 0 is not searched
    assert math.isnan(rs.crossing_ring([np.nan, np.nan, np.nan], 0.5))
    # against a per-ring threshold: first k >= 1 with curve < T, interpolated on curve - T
    assert rs.crossing_ring([1.0, 0.9, 0.5], [1.0, 0.7, 0.6]) == pytest.approx(1 + 0.2 / 0.3)


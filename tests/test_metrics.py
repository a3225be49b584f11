"""Tests of ``ptycho_k3.metrics`` (NumPy/SciPy only; identical under every KERAS_BACKEND).

Tolerances: SSIM vs scikit-image 1e-6 (float64, same algorithm); known integer shifts exactly;
known sub-pixel shifts within 0.1 px; an added phase ramp removed to 1e-6 rad.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage
from skimage.metrics import structural_similarity

from ptycho_k3 import metrics as mt
from ptycho_k3.stitch import stitch_patches

from reference import translate

METRIC_KEYS = {
    "mae", "mse", "psnr", "psnr_legacy255", "ssim", "ms_ssim_legacy", "frc50", "frc1over7", "frc",
}  # fmt: skip


def smooth_field(rng: np.random.Generator, shape, sigma: float = 2.5) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f / np.abs(f).max()


def smooth_object(seed: int = 0, shape=(100, 110)) -> np.ndarray:
    """Complex object with smooth amplitude in [0.6, 1.4] and smooth phase in [-1.5, 1.5] rad."""
    rng = np.random.default_rng(seed)
    return (1.0 + 0.4 * smooth_field(rng, shape)) * np.exp(1j * 1.5 * smooth_field(rng, shape))


def roll_content(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moves by +(dy, dx) (``out[y, x] = img[y - dy, x - dx]``), edges wrap."""
    return np.roll(img, (dy, dx), axis=(0, 1))


# ---------------------------------------------------------------------------------------------
# known answers


def test_identical_images_known_answers():
    gt = smooth_object()
    d = mt.evaluate(gt, gt)
    json.dumps(d, allow_nan=False)  # strictly JSON-serialisable
    for name in ("amplitude", "phase"):
        ch = d[name]
        assert ch["applicable"] is True
        assert METRIC_KEYS <= set(ch)
        assert ch["mae"] == 0.0 and ch["mse"] == 0.0, (name, ch["mae"])
        assert ch["ssim"] == pytest.approx(1.0, abs=1e-12)
        assert ch["ms_ssim_legacy"] == pytest.approx(1.0, abs=1e-12)
        assert np.allclose(ch["frc"], 1.0, atol=1e-9)
        assert ch["frc50"] == len(ch["frc"]) and ch["frc1over7"] == len(ch["frc"])
        # PSNR is +inf: None in JSON, with a note saying why.
        assert ch["psnr"] is None
        assert any("identical" in note for note in ch["notes"])
        assert ch["psnr_legacy255"] == pytest.approx(361.20, abs=0.01)  # OpenCV's value
    assert d["alignment"]["shift_integer"] == [0, 0]
    assert d["alignment"]["shift_total"] == [0.0, 0.0]
    assert d["amplitude_scale"] == pytest.approx(1.0)


def test_pixel_metrics_known_values():
    a = np.zeros((4, 5))
    b = np.full((4, 5), 0.5)
    assert mt.mae(b, a) == 0.5
    assert mt.mse(b, a) == 0.25
    assert mt.psnr(b, a, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.25))
    assert mt.psnr(a, a, data_range=1.0) == math.inf
    assert math.isnan(mt.psnr(b, a, data_range=0.0))
    assert mt.psnr_legacy255(b, a) == pytest.approx(20 * math.log10(255 / 0.5))


@given(
    h=st.integers(7, 40),
    w=st.integers(7, 40),
    seed=st.integers(0, 2**16),
    noise=st.floats(0.0, 2.0),
    data_range=st.floats(0.1, 10.0),
)
def test_ssim_equals_scikit_image(h, w, seed, noise, data_range):
    rng = np.random.default_rng(seed)
    x = rng.random((h, w))
    y = x + noise * rng.standard_normal((h, w))
    want = structural_similarity(x, y, data_range=data_range)
    assert mt.ssim(x, y, data_range) == pytest.approx(want, abs=1e-6)
    assert mt.ssim(y, x, data_range) == pytest.approx(want, abs=1e-6)


def test_ms_ssim_legacy_behaviour():
    gt = np.abs(smooth_object(1, (80, 80)))
    noisy = gt + 0.05 * np.random.default_rng(0).standard_normal(gt.shape)
    assert mt.ms_ssim_legacy(gt, gt, sigma=1.0) == pytest.approx(1.0)
    val = mt.ms_ssim_legacy(gt, noisy, sigma=1.0)
    assert 0.0 < val < 1.0
    # Blurring hides noise, so the (non-standard) value rises with sigma.
    assert mt.ms_ssim_legacy(gt, noisy, sigma=2.0) > mt.ms_ssim_legacy(gt, noisy, sigma=0.0)
    # One level only: the product is the SSIM raised to the first weight (no renormalisation).
    small_a, small_b = gt[:10, :10], noisy[:10, :10]
    r = max(np.ptp(small_a), np.ptp(small_b))
    assert mt.ms_ssim_legacy(small_a, small_b) == pytest.approx(
        max(mt.ssim(small_a, small_b, r), 1e-4) ** mt.MS_SSIM_WEIGHTS[0]
    )
    assert math.isnan(mt.ms_ssim_legacy(gt[:6, :6], gt[:6, :6]))


def test_frc_threshold_interpolation():
    assert mt.frc_threshold(np.array([1.0, 0.8, 0.4, 0.1]), 0.5) == pytest.approx(1.75)
    assert mt.frc_threshold(np.array([0.3, 0.8]), 0.5) == 0.0
    assert mt.frc_threshold(np.array([1.0, 0.9, 0.6]), 0.5) == 3.0
    assert math.isnan(mt.frc_threshold(np.array([np.nan, np.nan]), 0.5))


def test_frc_known_cases():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 52))  # non-square: cropped to 40 x 40
    res = mt.frc(a, a)
    assert len(res.curve) == int(round(math.hypot(20, 20))) + 1
    assert np.allclose(res.curve, 1.0)
    assert res.frc50 == len(res.curve)
    # Independent noise: correlation far below 1/7 beyond the lowest rings.
    b = rng.standard_normal((40, 52))
    indep = mt.frc(a, b)
    assert indep.frc50 < 3 and np.nanmean(indep.curve[5:]) < 0.3
    # Identically zero target: NaN, not a crash.
    zero = mt.frc(np.zeros((16, 16)), a[:16, :16])
    assert math.isnan(zero.frc50) and math.isnan(zero.frc1over7)
    assert np.all(np.isnan(zero.curve))


# ---------------------------------------------------------------------------------------------
# registration


@pytest.mark.parametrize("shift", [(2, -1), (-3, 3), (0, 1), (1, 0)])
def test_known_integer_shift_recovered(shift):
    gt = smooth_object(2)
    rec = roll_content(gt, *shift)
    reg = mt.register(rec, gt)
    assert reg.integer == (-shift[0], -shift[1])
    assert reg.subpixel == (0.0, 0.0)
    assert not reg.at_bound or max(map(abs, shift)) == 3
    d = mt.evaluate(rec, gt)
    assert d["alignment"]["shift_integer"] == [-shift[0], -shift[1]]
    assert d["amplitude"]["mae"] == pytest.approx(0.0, abs=1e-12)
    assert d["phase"]["ssim"] == pytest.approx(1.0)


def test_shift_beyond_bound_not_accepted():
    gt = smooth_object(3)
    rec = roll_content(gt, 5, 0)
    reg = mt.register(rec, gt, max_shift=3)
    assert max(abs(reg.integer[0]), abs(reg.integer[1])) <= 3
    assert reg.at_bound
    assert not reg.subpixel_accepted  # the remaining 2 px exceed the 1 px sub-pixel bound
    assert max(abs(v) for v in reg.total) <= 3
    d = mt.evaluate(rec, gt)
    assert d["alignment"]["at_search_bound"] is True
    assert any("search bound" in n for n in d["notes"])


@pytest.mark.parametrize("t", [(0.3, -0.4), (-0.45, 0.2), (2.3, -1.6)])
def test_known_subpixel_shift_recovered(t):
    gt = smooth_object(4)
    # Our bilinear translation convention, content moves by +t: registration must report -t.
    rec = translate(gt[None], np.array([[t[1], t[0]]]))[0]
    reg = mt.register(rec, gt)
    assert reg.subpixel_accepted
    assert reg.total == pytest.approx((-t[0], -t[1]), abs=0.1)


def test_registration_shift_is_applied_to_reconstruction():
    gt = smooth_object(5)
    rec = ndimage.shift(gt.real, (0.4, -0.3), order=3) + 1j * ndimage.shift(
        gt.imag, (0.4, -0.3), order=3
    )
    aligned = mt.align_for_evaluation(rec, gt)
    raw = mt.score(rec[2:-2, 2:-2], gt[2:-2, 2:-2])
    fixed = mt.score(aligned.rec, aligned.gt)
    assert fixed["amplitude"]["mae"] < 0.2 * raw["amplitude"]["mae"]
    assert fixed["phase"]["ssim"] > raw["phase"]["ssim"]


# ---------------------------------------------------------------------------------------------
# phase handling


def test_fit_plane_recovers_plane():
    yy, xx = np.mgrid[0:30, 0:40].astype(np.float64)
    plane = 0.05 * xx - 0.02 * yy + 0.7
    np.testing.assert_allclose(mt.fit_plane(plane), plane, atol=1e-10)


@pytest.mark.parametrize("method", ["difference", "plane"])
def test_plane_removal_removes_added_ramp(method):
    gt = smooth_object(6)
    h, w = gt.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # A steep ramp that wraps several times, plus a global offset near pi.
    rec = gt * np.exp(1j * (0.15 * xx - 0.08 * yy + 3.0))
    d = mt.evaluate(rec, gt, register_images=False, phase_method=method)
    assert d["conventions"]["phase_alignment"] == method
    if method == "difference":
        assert d["phase"]["mae"] == pytest.approx(0.0, abs=1e-6)
        assert d["phase"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    else:
        # Per-image planes fitted on wrapped angle(): the wrap breaks the fit (documented trap).
        assert d["phase"]["mae"] > 0.1
    assert d["amplitude"]["mae"] == pytest.approx(0.0, abs=1e-9)


def test_uniform_ground_truth_phase_is_not_applicable():
    rng = np.random.default_rng(7)
    amp = 1.0 + 0.4 * smooth_field(rng, (60, 70))
    gt = amp.astype(np.complex64)  # phase identically 0 (e.g. the lines data set)
    rec = (amp * 0.9 + 0.02 * rng.standard_normal(amp.shape)) * np.exp(0.1j)
    for method in mt.PHASE_PLANE_METHODS:
        d = mt.evaluate(rec, gt, phase_method=method)
        json.dumps(d, allow_nan=False)
        assert d["phase"]["applicable"] is False
        assert "uniform" in d["phase"]["reason"]
        assert all(d["phase"][k] is None for k in METRIC_KEYS)
        assert d["amplitude"]["applicable"] is True
        assert 0.5 < d["amplitude"]["ssim"] <= 1.0


def test_amplitude_mean_scaling_only_scales_amplitude():
    gt = smooth_object(8)
    d = mt.evaluate(2.0 * gt, gt, register_images=False)
    assert d["amplitude_scale"] == pytest.approx(0.5)
    assert d["amplitude"]["mae"] == pytest.approx(0.0, abs=1e-12)
    assert d["phase"]["mae"] == pytest.approx(0.0, abs=1e-12)
    unscaled = mt.evaluate(2.0 * gt, gt, register_images=False, scale_amplitude=False)
    assert unscaled["amplitude"]["mae"] == pytest.approx(np.mean(np.abs(gt[2:-2, 2:-2])))


# ---------------------------------------------------------------------------------------------
# placement and end to end


def test_evaluate_stitch_result_in_object_frame():
    rng = np.random.default_rng(9)
    obj = smooth_object(9, (140, 150)).astype(np.complex64)
    m = 20
    # A jittered integer grid, 8 px step: only the corners of the scan region stay uncovered.
    grid = np.stack(np.meshgrid(np.arange(30, 111, 8), np.arange(30, 111, 8)), -1).reshape(-1, 2)
    positions = (grid + rng.integers(-2, 3, size=grid.shape)).astype(np.float64)
    patches = np.stack([obj[y - 16 : y + 16, x - 16 : x + 16] for x, y in positions.astype(int)])
    res = stitch_patches(patches, positions, m)
    d = mt.evaluate(res, obj, positions=positions)
    lo = positions.min(axis=0).astype(int) - m // 2
    hi = positions.max(axis=0).astype(int) + m // 2
    r0, r1, c0, c1 = d["alignment"]["region"]
    border = 2
    assert (r0, r1, c0, c1) == (lo[1] + border, hi[1] - border, lo[0] + border, hi[0] - border)
    assert d["alignment"]["shift_total"] == [0.0, 0.0]
    assert d["amplitude"]["ssim"] > 0.999 and d["phase"]["ssim"] > 0.999
    assert d["amplitude"]["mae"] < 1e-3
    assert 0.0 <= d["alignment"]["uncovered_fraction"] < 0.05
    # A canvas placed one pixel off is detected and corrected by the registration.
    d_off = mt.evaluate(res.obj, obj, x0=res.x0 + 1, y0=res.y0, positions=positions)
    assert d_off["alignment"]["shift_integer"] == [0, -1]
    assert d_off["amplitude"]["ssim"] > 0.999


def test_registration_ignores_uncovered_pixels():
    """Gaps in the scan (zeros in the canvas) must not pull the registration off."""
    gt = smooth_object(11, (90, 90))
    rec = roll_content(gt, 1, -2).copy()
    valid = np.ones(gt.shape, dtype=bool)
    valid[20:35, 10:60] = False
    valid[50:70, 40:55] = False
    rec[~valid] = 0
    assert mt.register(rec, gt, valid=valid).integer == (-1, 2)


def test_scan_region_clips_to_object():
    assert mt.scan_region(np.array([[5.2, 3.0], [40.7, 20.9]]), 20, (25, 100)) == (0, 25, 0, 50)


@pytest.mark.parametrize(
    "rec, gt",
    [
        (np.ones((10, 10), complex), np.ones((12, 10), complex)),  # shape mismatch
        (np.ones((0, 10), complex), np.ones((0, 10), complex)),  # empty
        (np.full((20, 20), np.nan, complex), np.ones((20, 20), complex)),  # non-finite
        (np.ones((20, 20), complex), np.full((20, 20), np.inf, complex)),  # non-finite GT
        (np.ones((2, 20, 20), complex), np.ones((20, 20), complex)),  # not 2-D
    ],
)
def test_invalid_inputs_raise_value_error(rec, gt):
    with pytest.raises(ValueError):
        mt.evaluate(rec, gt)


def test_unknown_phase_method_rejected():
    gt = smooth_object(10, (30, 30))
    with pytest.raises(ValueError, match="phase method"):
        mt.evaluate(gt, gt, phase_method="unwrap")


def test_post_processing_modules_do_not_import_keras():
    import subprocess
    import sys

    code = (
        "import sys, ptycho_k3.stitch, ptycho_k3.metrics; "
        "bad = [m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluation_config_holds_the_options():
    from ptycho_k3.config import ConfigError

    gt = smooth_object(11, (40, 44))
    rec = roll_content(gt, 1, 0)
    cfg = mt.EvaluationConfig(register_images=False, phase_method="plane", trim=3)
    by_config = mt.evaluate(rec, gt, config=cfg)
    assert by_config == mt.evaluate(rec, gt, register_images=False, phase_method="plane", trim=3)
    assert by_config["conventions"]["trim"] == 3 and not by_config["alignment"]["registered"]
    # keywords override the config's fields (validated the same way)
    assert mt.evaluate(rec, gt, config=cfg, trim=2) == mt.evaluate(
        rec, gt, register_images=False, phase_method="plane")
    with pytest.raises(TypeError, match="unknown option"):
        mt.evaluate(rec, gt, max_shfit=2)
    for bad in ({"trim": -1}, {"max_shift": 1.5}, {"border": -2}, {"ms_ssim_sigma": math.nan},
                {"M": 0}, {"register_images": "no"}, {"phase_method": "unwrap"}):
        with pytest.raises(ConfigError):
            mt.EvaluationConfig(**bad)
    with pytest.raises(ConfigError, match="trim must be >= 0"):
        mt.evaluate(rec, gt, trim=-1)
    assert mt.EvaluationConfig.from_dict(cfg.to_dict()) == cfg

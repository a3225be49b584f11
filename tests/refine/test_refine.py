"""The refinement engine under the current backend: gradients, convergence, masks, options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ptycho_k3.config import ConfigError, RefineConfig
from ptycho_k3.data import DataError
from ptycho_k3.refine import canvas_for, measurements, place, refine
from ptycho_k3.refine.engine import Engine, batch_loss
from ptycho_k3.refine.workflow import Scoring

import reference as ref
from backend_utils import tensor, value_and_grad
from refine_helpers import raster_scan, tiny_problem


@pytest.fixture(scope="module")
def scan():
    return raster_scan()


@pytest.mark.parametrize("loss", ["poisson", "amplitude"])
def test_loss_and_object_gradient_match_the_numpy_forward_model(loss):
    scan, obj = tiny_problem()
    n = scan.n
    meas = measurements(scan)
    canvas = canvas_for(scan.positions, n)
    start = place(obj, 0, 0, canvas)  # the random object placed in the solver's frame
    pos = canvas.to_canvas(scan.positions)
    engine = Engine(meas, canvas, n, RefineConfig(loss=loss))
    p = scan.probe

    def numpy_loss(o: np.ndarray) -> float:
        intensity = ref.scan_intensities(o, p, pos, meas.scale)
        if loss == "poisson":
            return float(np.sum(ref.poisson_deviance(intensity, meas.counts)))
        return float(np.sum((np.sqrt(intensity) - np.sqrt(meas.counts)) ** 2))

    def keras_loss(o_re, o_im):
        from keras import ops

        per_pixel, _, _ = batch_loss(
            engine.spec, (o_re, o_im), tensor(p.real), tensor(p.imag), tensor(pos), tensor(meas.counts),
            engine.valid)
        return ops.sum(per_pixel)

    value, (g_re, g_im) = value_and_grad(keras_loss, [start.real, start.imag])
    base = numpy_loss(start.astype(np.complex128))
    # float32 sum of ~1e3 terms of O(10): ~1e-6 relative, 1e-4 is generous
    np.testing.assert_allclose(value, base, rtol=1e-4)
    rng = np.random.default_rng(1)
    h = 1e-4
    lit = np.argwhere(covered_pixels(n, pos, start.shape))
    for r, c in lit[rng.choice(len(lit), 12, replace=False)]:
        for part, grad in ((1.0, g_re), (1j, g_im)):
            plus, minus = start.astype(np.complex128), start.astype(np.complex128)
            plus[r, c] += part * h
            minus[r, c] -= part * h
            fd = (numpy_loss(plus) - numpy_loss(minus)) / (2 * h)
            # float32 forward and backward against a float64 central difference
            assert abs(grad[r, c] - fd) <= 2e-3 * max(abs(fd), 1.0), (r, c, part, grad[r, c], fd)


def covered_pixels(n, pos, shape):
    """bool mask of the canvas pixels some position's window reads."""
    out = np.zeros(shape, bool)
    for x, y in np.floor(pos).astype(int):
        out[y - n // 2:y + n // 2 + 1, x - n // 2:x + n // 2 + 1] = True
    return out


def test_flat_start_converges_to_the_ground_truth(scan):
    sc = Scoring(scan.object, scan.positions, 20)
    result = refine(scan, None, RefineConfig(iterations=12, batch=16), monitor=sc.monitor(1))
    h = result.history
    assert h["loss"][-1] < 1e-2 * h["loss"][0]
    # SSIM is invariant to the global phase (scored after phase alignment, metrics.py)
    assert h["amplitude_ssim"][-1] > 0.95 and h["phase_ssim"][-1] > 0.95
    assert h["amplitude_ssim"][0] < 0.8  # the flat start is far from it
    assert result.obj.shape == (result.illumination.shape)
    assert np.all(np.isfinite(result.obj))


def test_masked_pixels_change_nothing(scan):
    rng = np.random.default_rng(5)
    mask = rng.random((scan.n, scan.n)) > 0.1
    cfg = RefineConfig(iterations=2, batch=32)
    base = refine(scan, None, cfg, mask=mask)
    corrupted = scan.diffraction.copy()
    corrupted[:, ~mask] = 1e3  # huge values where the mask says invalid
    corrupted[3, ~mask] = np.nan
    again = refine(dataclasses.replace(scan, diffraction=corrupted), None, cfg, mask=mask)
    np.testing.assert_array_equal(again.obj, base.obj)
    assert again.history["loss"] == base.history["loss"]
    # ...and the same corruption without the mask does change the result (the test can fail)
    unmasked = dataclasses.replace(scan, diffraction=np.where(np.isnan(corrupted), 0, corrupted))
    assert not np.allclose(refine(unmasked, None, cfg).obj, base.obj)


def test_nan_pixels_are_invalid_and_empty_patterns_are_refused(scan):
    diff = scan.diffraction.copy()
    diff[0, :5, :5] = np.nan
    meas = measurements(dataclasses.replace(scan, diffraction=diff))
    assert meas.valid[0, :5, :5].sum() == 0 and meas.valid[1].all()
    assert np.all(np.isfinite(meas.counts))
    diff[2] = np.nan
    with pytest.raises(DataError, match="pattern 2 .*no valid pixel"):
        measurements(dataclasses.replace(scan, diffraction=diff))
    with pytest.raises(DataError, match=r"mask has shape \(3, 3\)"):
        measurements(scan, mask=np.ones((3, 3)))


def test_probe_refinement_keeps_the_power_and_fixes_a_blurred_probe(scan):
    from scipy.ndimage import gaussian_filter

    wrong = gaussian_filter(np.abs(scan.probe), 1.5).astype(np.complex64)
    cfg = dict(iterations=16, batch=16, probe_start=4)
    fixed = refine(scan, None, RefineConfig(**cfg), probe=wrong)
    learnt = refine(scan, None, RefineConfig(refine_probe=True, **cfg), probe=wrong)
    power = np.sum(np.abs(wrong) ** 2)
    np.testing.assert_allclose(np.sum(np.abs(learnt.probe) ** 2), power, rtol=1e-4)
    np.testing.assert_array_equal(fixed.probe, wrong)
    assert learnt.history["loss"][-1] < 0.5 * fixed.history["loss"][-1]


def test_position_correction_reduces_position_errors(scan):
    rng = np.random.default_rng(2)
    error = rng.normal(0, 0.8, (scan.n_positions, 2))
    off = dataclasses.replace(scan, xcoords=scan.xcoords + error[:, 0],
                              ycoords=scan.ycoords + error[:, 1])
    result = refine(off, None, RefineConfig(iterations=25, batch=16, refine_positions=True,
                                            position_start=5))
    before = error - error.mean(axis=0)
    after = result.positions - scan.positions
    after -= after.mean(axis=0)  # a common shift is not observable
    rms = lambda d: float(np.sqrt(np.mean(np.sum(d * d, axis=1))))  # noqa: E731
    assert rms(after) < 0.5 * rms(before)
    np.testing.assert_array_equal(result.initial_positions, off.positions)


def test_start_object_is_placed_in_scan_coordinates(scan):
    from ptycho_k3.stitch import StitchResult

    gt = scan.object
    st = StitchResult(obj=gt[20:100, 30:110], weight=np.ones((80, 80), np.float32), x0=30, y0=20,
                      M=20)
    result = refine(scan, st, RefineConfig(iterations=0))
    r0, c0 = 20 - result.y0, 30 - result.x0
    window = result.obj[r0:r0 + 80, c0:c0 + 80]
    ratio = window / gt[20:100, 30:110]
    # one global factor (photon-count matching) and nothing else
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)
    # the whole truth as the start explains the counts to Poisson noise (deviance ~0.5 / pixel)
    whole = StitchResult(obj=gt, weight=np.ones(gt.shape, np.float32), x0=0, y0=0, M=20)
    assert refine(scan, whole, RefineConfig(iterations=0)).history["loss"][0] < 1.0


@pytest.mark.parametrize("bad", [dict(iterations=-1), dict(batch=0), dict(loss="l2"),
                                 dict(alpha=0.0), dict(alpha=1.5), dict(object_step=float("nan")),
                                 dict(max_position_shift=0), dict(iterations=True)])
def test_bad_refine_options_are_rejected(bad):
    with pytest.raises(ConfigError, match="refine"):
        RefineConfig(**bad)


def test_config_round_trip():
    cfg = RefineConfig(iterations=7, refine_probe=True, loss="amplitude")
    assert RefineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown refine setting"):
        RefineConfig.from_dict({"iterations": 1, "steps": 2})

"""Tests of ``ptycho_k3.stitch`` (NumPy only; identical under every KERAS_BACKEND).

Tolerances:
* golden canvases of the original (float32 TF): ``atol = 2e-5 * max|expected|``;
* scatter-add vs the naive translate-and-sum reference (float64): ``1e-9`` absolute;
* integer positions, and a linear object inside one crop: exact up to complex64 rounding (``1e-5``);
* a smooth object (Gaussian-filtered, sigma 4 px, amplitude ~1) sampled at fractional positions:
  interpolation error only, mean ``<= 0.01`` and max ``<= 0.05`` in fully covered pixels
  (measured mean ~4e-3, max 0.034, the max where crop edges contribute one-sided weights).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from ptycho_k3.stitch import (
    StitchResult,
    common_region,
    crop_central,
    splat_crops,
    stitch_patches,
    stitch_patches_legacy,
)

from reference import translate


def random_object(rng: np.random.Generator, shape: tuple[int, int], sigma: float = 0.0):
    """Complex object, amplitude ~1; smooth when ``sigma > 0``."""
    re, im = rng.standard_normal(shape), rng.standard_normal(shape)
    if sigma > 0:
        re, im = ndimage.gaussian_filter(re, sigma), ndimage.gaussian_filter(im, sigma)
        re, im = re / np.abs(re).max(), im / np.abs(im).max()
    return (1.0 + 0.3 * re) * np.exp(1j * im)


def cut_patches(obj: np.ndarray, positions: np.ndarray, n_side: int) -> np.ndarray:
    """Ground-truth patches: patch for (x, y) samples obj at (x - N/2 + j, y - N/2 + i), bilinear."""
    out = []
    for x, y in positions:
        # Move object content by -(x - N/2, y - N/2) so that (x - N/2, y - N/2) lands at (0, 0).
        shifted = translate(obj[None], np.array([[-(x - n_side / 2), -(y - n_side / 2)]]))[0]
        out.append(shifted[:n_side, :n_side])
    return np.stack(out)


def naive_stitch(crops: np.ndarray, dest: np.ndarray, shape: tuple[int, int]):
    """Translate-and-sum reference: each crop at [0:m, 0:m] of a zero canvas, shifted by dest."""
    n, m, _ = crops.shape
    total = np.zeros(shape, dtype=np.complex128)
    count = np.zeros(shape, dtype=np.float64)
    for p in range(n):
        canvas = np.zeros((2,) + tuple(shape), dtype=np.complex128)
        canvas[0, :m, :m] = crops[p]
        canvas[1, :m, :m] = 1.0
        moved = translate(canvas, np.repeat(dest[p : p + 1], 2, axis=0))
        total += moved[0]
        count += moved[1].real
    return total, count


# ---------------------------------------------------------------------------------------------
# golden: the original's canvases


@pytest.mark.parametrize("m", [20, 64])
def test_legacy_layout_reproduces_original_canvas(oracle, m):
    _, fout = oracle
    res = stitch_patches_legacy(fout["sim_patches"], fout["global_offsets"], m)
    want = fout[f"canvas_M{m}"]
    assert res.obj.shape == want.shape
    assert res.obj.dtype == np.complex64
    err = np.max(np.abs(res.obj - want))
    assert err <= 2e-5 * np.max(np.abs(want)), err
    # Its origin: the mean scan position sits at pixel (S/2, S/2).
    mean = fout["global_offsets"][:, 0, :, 0].mean(axis=0)
    assert res.x0 == pytest.approx(mean[0] - want.shape[1] / 2)
    assert res.y0 == pytest.approx(mean[1] - want.shape[0] / 2)


def test_ptycho_k3_layout_matches_legacy_when_mean_is_integral(oracle):
    """Same crops, same bilinear weights: the two layouts differ only by where the canvas starts."""
    _, fout = oracle
    patches, pos = fout["sim_patches"], fout["global_offsets"][:, 0, :, 0]
    pos = pos - pos.mean(axis=0) + np.array([100.0, 120.0])  # mean integral -> origins integral
    legacy = stitch_patches_legacy(patches, pos, 20)
    ours = stitch_patches(patches, pos, 20)
    dx, dy = round(ours.x0 - legacy.x0), round(ours.y0 - legacy.y0)
    assert ours.x0 - legacy.x0 == pytest.approx(dx, abs=1e-9)
    assert ours.y0 - legacy.y0 == pytest.approx(dy, abs=1e-9)
    h, w = ours.obj.shape
    np.testing.assert_allclose(ours.obj, legacy.obj[dy : dy + h, dx : dx + w], atol=1e-5)


def test_stitched_oracle_matches_big_object(oracle):
    fin, fout = oracle
    # The first 4 scan positions are integral: their crops are copied exactly.
    res = stitch_patches(fout["sim_patches"][:4], fin["scan_xy"][:4], 20)
    rec, gt, (r0, c0) = common_region(res, fin["big_object"])
    assert (r0, c0) == (res.y0, res.x0)
    covered = res.weight > 0
    np.testing.assert_allclose(rec[covered], gt[covered], atol=1e-5)
    # All 24 positions: interpolation error only (an experimental, high-contrast object).
    res = stitch_patches(fout["sim_patches"], fin["scan_xy"], 20)
    rec, gt, (r0, c0) = common_region(res, fin["big_object"])
    weight = res.weight[r0 - res.y0 :, c0 - res.x0 :][: rec.shape[0], : rec.shape[1]]
    assert np.median(np.abs(rec - gt)[weight > 0.999]) < 0.05


# ---------------------------------------------------------------------------------------------
# exactness and equivalence


@given(
    n=st.integers(1, 6),
    m=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    spread=st.floats(0.0, 15.0),
)
def test_splat_equals_naive_translate_and_sum(n, m, seed, spread):
    rng = np.random.default_rng(seed)
    crops = rng.standard_normal((n, m, m)) + 1j * rng.standard_normal((n, m, m))
    shape = (m + int(spread) + 4, m + int(spread) + 6)
    # Include positions partly off the canvas (negative and past the far edge).
    dest = rng.uniform(-2.0, spread + 3.0, size=(n, 2))
    total, count = splat_crops(crops, dest, shape)
    want_total, want_count = naive_stitch(crops, dest, shape)
    np.testing.assert_allclose(total, want_total, atol=1e-9)
    np.testing.assert_allclose(count, want_count, atol=1e-9)


@given(seed=st.integers(0, 2**16), m=st.sampled_from([4, 8, 10]))
def test_stitch_patches_equals_naive_normalised_sum(seed, m):
    rng = np.random.default_rng(seed)
    n_side = 16
    positions = rng.uniform(20.0, 40.0, size=(5, 2))
    patches = rng.standard_normal((5, n_side, n_side)) + 1j * rng.standard_normal((5, n_side, n_side))
    res = stitch_patches(patches, positions, m)
    dest = positions - m // 2 - np.array([res.x0, res.y0])
    total, count = naive_stitch(crop_central(patches, m), dest, res.obj.shape)
    np.testing.assert_allclose(res.obj, total / (count + 1e-9), atol=1e-5)
    np.testing.assert_allclose(res.weight, count, atol=1e-6)
    # Canvas just big enough: first/last rows and columns all receive weight.
    assert res.weight[0].any() and res.weight[-1].any()
    assert res.weight[:, 0].any() and res.weight[:, -1].any()


def test_scattered_chunk_on_a_large_canvas_equals_naive():
    # Crops far apart on a big canvas take the distinct-pixel path (span >> splat entries);
    # random scan order makes every batch look like this.
    rng = np.random.default_rng(7)
    crops = rng.standard_normal((6, 5, 5)) + 1j * rng.standard_normal((6, 5, 5))
    dest = np.array([[1.5, 2.25], [180.0, 3.0], [90.7, 150.2], [3.0, 185.5], [181.2, 182.9],
                     [92.0, 151.0]])
    shape = (192, 190)
    total, count = splat_crops(crops, dest, shape)
    want_total, want_count = naive_stitch(crops, dest, shape)
    np.testing.assert_allclose(total, want_total, atol=1e-9)
    np.testing.assert_allclose(count, want_count, atol=1e-9)


def test_chunking_does_not_change_result():
    rng = np.random.default_rng(3)
    patches = rng.standard_normal((37, 12, 12)) + 1j * rng.standard_normal((37, 12, 12))
    positions = rng.uniform(0, 30, size=(37, 2))
    whole = stitch_patches(patches, positions, 8)
    chunked = stitch_patches(patches, positions, 8, chunk=5)
    np.testing.assert_allclose(chunked.obj, whole.obj, atol=1e-6)
    np.testing.assert_allclose(chunked.weight, whole.weight, atol=1e-6)


def test_integer_positions_reproduce_object_exactly():
    rng = np.random.default_rng(0)
    obj = random_object(rng, (120, 130)).astype(np.complex64)
    n_side, m = 32, 12
    positions = rng.integers(20, 100, size=(60, 2)).astype(np.float64)
    patches = np.stack(
        [obj[y - n_side // 2 : y + n_side // 2, x - n_side // 2 : x + n_side // 2]
         for x, y in positions.astype(int)]
    )  # fmt: skip
    res = stitch_patches(patches[..., None], positions, m)  # (n, N, N, 1) accepted
    assert isinstance(res, StitchResult)
    assert res.x0 == int(positions[:, 0].min()) - m // 2
    assert res.y0 == int(positions[:, 1].min()) - m // 2
    covered = res.weight > 0
    assert covered.mean() > 0.5
    rows, cols = np.nonzero(covered)
    np.testing.assert_allclose(res.obj[rows, cols], obj[rows + res.y0, cols + res.x0], rtol=0, atol=1e-5)
    # Uncovered pixels are exactly zero.
    assert np.all(res.obj[~covered] == 0)


def test_x0_y0_mapping_single_patch():
    """Patch pixel (N/2, N/2) is scan position (x, y): it lands on stitched [y - y0, x - x0]."""
    n_side, m = 16, 6
    patch = np.zeros((1, n_side, n_side), dtype=np.complex64)
    patch[0, n_side // 2, n_side // 2] = 5 + 2j
    for x, y in [(37.0, 12.0), (0.0, 0.0), (-4.0, 9.0)]:
        res = stitch_patches(patch, np.array([[x, y]]), m)
        r, c = np.unravel_index(np.argmax(np.abs(res.obj)), res.obj.shape)
        assert (res.y0 + r, res.x0 + c) == (y, x)
        assert res.obj[r, c] == pytest.approx(5 + 2j)
        assert res.obj.shape == (m, m)
    # A fractional position: the marked pixel is spread between floor and floor + 1.
    res = stitch_patches(patch, np.array([[10.25, 20.0]]), m)
    raw = res.obj * res.weight  # un-normalised splat
    c = int(np.floor(10.25)) - res.x0
    r = 20 - res.y0
    assert abs(raw[r, c]) == pytest.approx(0.75 * abs(5 + 2j), rel=1e-5)
    assert abs(raw[r, c + 1]) == pytest.approx(0.25 * abs(5 + 2j), rel=1e-5)


@pytest.mark.parametrize("x, y", [(40.25, 30.5), (41.9, 33.1), (44.0, 35.75)])
def test_linear_object_exact_at_fractional_position(x, y):
    """Bilinear sampling, then the normalised bilinear splat, is exact on a linear field.

    (Inside one crop each pixel receives two samples per axis whose weighted mean position is the
    pixel itself; the outer ring of the footprint receives only one and is excluded.)
    """
    yy, xx = np.mgrid[0:90, 0:100].astype(np.float64)
    obj = (1.0 + 0.01 * xx - 0.004 * yy) + 1j * (0.02 * yy + 0.003 * xx)
    positions = np.array([[x, y]])
    res = stitch_patches(cut_patches(obj, positions, 32), positions, 16)
    rec, gt, _ = common_region(res, obj)
    assert res.obj.shape == rec.shape  # fully inside the object
    np.testing.assert_allclose(rec[1:-1, 1:-1], gt[1:-1, 1:-1], atol=1e-5)


def test_smooth_object_fractional_positions_interpolation_error_only():
    rng = np.random.default_rng(2)
    obj = random_object(rng, (140, 140), sigma=4.0)
    positions = rng.uniform(35.0, 105.0, size=(150, 2))
    patches = cut_patches(obj, positions, 32)
    res = stitch_patches(patches, positions, 20)
    rec, gt, (r0, c0) = common_region(res, obj)
    weight = res.weight[r0 - res.y0 :, c0 - res.x0 :][: rec.shape[0], : rec.shape[1]]
    inner = weight >= 1.0
    assert inner.mean() > 0.5
    err = np.abs(rec - gt)[inner]
    # Bilinear error, largest where a crop edge contributes one-sided weight.
    assert err.mean() <= 0.01, err.mean()
    assert err.max() <= 0.05, err.max()


# ---------------------------------------------------------------------------------------------
# helpers and validation


def test_common_region_crops_both_to_overlap():
    rng = np.random.default_rng(4)
    obj = random_object(rng, (50, 60))
    positions = np.array([[5.0, 5.0], [55.0, 45.0]])  # crops reach past the object edges
    patches = np.zeros((2, 16, 16), dtype=np.complex64)
    res = stitch_patches(patches, positions, 16)
    assert res.x0 < 0 and res.y0 < 0
    rec, gt, (r0, c0) = common_region(res, obj)
    assert rec.shape == gt.shape
    assert (r0, c0) == (0, 0)
    assert gt.shape == (min(50, res.y0 + res.obj.shape[0]), min(60, res.x0 + res.obj.shape[1]))


@pytest.mark.parametrize(
    "patches, positions, m",
    [
        (np.zeros((3, 8, 9)), np.zeros((3, 2)), 4),  # not square
        (np.zeros((0, 8, 8)), np.zeros((0, 2)), 4),  # empty
        (np.zeros((3, 8, 8)), np.zeros((2, 2)), 4),  # count mismatch
        (np.zeros((3, 8, 8)), np.full((3, 2), np.nan), 4),  # non-finite
        (np.zeros((3, 8, 8)), np.zeros((3, 2)), 9),  # M > N
        (np.zeros((3, 8, 8)), np.zeros((3, 2)), 0),  # M < 1
    ],
)
def test_invalid_inputs_raise_value_error(patches, positions, m):
    with pytest.raises(ValueError):
        stitch_patches(patches, positions, m)


def test_legacy_layout_needs_even_m():
    with pytest.raises(ValueError, match="even"):
        stitch_patches_legacy(np.zeros((2, 8, 8)), np.zeros((2, 2)), 5)

"""Grouping into C = gridsize^2 neighbours, normalisation, ground-truth patches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from data_helpers import small_scan
from scipy.spatial import cKDTree

from ptycho_k3.data import (
    GroupedDiffraction,
    ScanData,
    group_indices,
    group_scan,
    intensity_scale,
    normalize_diffraction,
    subsample_indices,
)


def grid_points(side=8, step=4.0):
    gy, gx = np.meshgrid(np.arange(side) * step, np.arange(side) * step, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def test_doc_example_offsets():
    x = np.array([10.0, 14, 10, 14])
    y = np.array([20.0, 20, 24, 24])
    s = ScanData(xcoords=x, ycoords=y, diffraction=np.ones((4, 64, 64), np.float32),
                 probe=np.ones((64, 64), np.complex64))
    g = group_scan(s, 1, n_groups=4)
    assert g.group_centres.shape == (4, 1, 2, 1)
    # a gridsize-1 group is centred on its member: relative offsets are zero
    assert np.all(g.coords_relative == 0)
    g = group_scan(s, 2, n_groups=1, neighbor_count=4, enable_oversampling=True)
    idx = g.nn_indices[0]
    np.testing.assert_allclose(g.centres()[0], [12, 22])
    np.testing.assert_allclose(g.coords_relative[0, 0, 0], -(x[idx] - 12))
    np.testing.assert_allclose(g.coords_relative[0, 0, 1], -(y[idx] - 22))


@pytest.mark.parametrize("gridsize,k", [(2, 4), (2, 7), (3, 12)])
def test_members_among_k_nearest_and_offsets_sum_to_zero(gridsize, k):
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 100, (200, 2))
    idx = group_indices(pts, gridsize, n_groups=60, neighbor_count=k, seed=5)
    c = gridsize * gridsize
    assert idx.shape == (60, c)
    assert all(len(set(row)) == c for row in idx)  # without replacement
    _, knn = cKDTree(pts).query(pts, k=k + 1)
    # every member lies among the K nearest neighbours of some seed; with K = C = 4 the group is
    # exactly a seed's 4 nearest neighbours (seed excluded)
    neighbour_sets = [set(row[1:]) for row in knn]
    for row in idx:
        assert any(set(row) <= s for s in neighbour_sets)
    s = ScanData(xcoords=pts[:, 0], ycoords=pts[:, 1],
                 diffraction=np.ones((200, 64, 64), np.float32),
                 probe=np.ones((64, 64), np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = group_scan(s, gridsize, n_groups=60, neighbor_count=k, seed=5)
    np.testing.assert_allclose(g.coords_relative.sum(axis=-1), 0, atol=1e-9)
    np.testing.assert_array_equal(g.nn_indices, idx)
    pairs = g.relative_offsets_pairs()
    assert pairs.shape == (60, c, 2) and pairs.dtype == np.float32
    np.testing.assert_allclose(pairs[:, :, 0], g.coords_relative[:, 0, 0], atol=1e-5)


def test_k_equals_c_gives_the_four_nearest_excluding_seed():
    pts = np.random.default_rng(0).uniform(0, 50, (30, 2))
    idx = group_indices(pts, 2, n_groups=30, neighbor_count=4, seed=0)
    _, knn = cKDTree(pts).query(pts, k=5)
    for seed_row, row in zip(knn, idx, strict=True):
        assert set(row) == set(seed_row[1:]) and seed_row[0] not in row


def test_seed_determinism():
    pts = np.random.default_rng(1).uniform(0, 100, (300, 2))
    a = group_indices(pts, 2, n_groups=100, neighbor_count=7, seed=11)
    b = group_indices(pts, 2, n_groups=100, neighbor_count=7, seed=11)
    c = group_indices(pts, 2, n_groups=100, neighbor_count=7, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    group_indices(pts, 2, n_groups=100, seed=3)
    after = np.random.get_state()[1]  # noqa: NPY002
    np.testing.assert_array_equal(after, state)  # the global RNG is untouched


def test_sequential_and_gridsize_one():
    pts = grid_points()
    idx = group_indices(pts, 1, n_groups=10, sequential=True)
    np.testing.assert_array_equal(idx[:, 0], np.arange(10))
    idx = group_indices(pts, 1, n_groups=1000)
    np.testing.assert_array_equal(idx[:, 0], np.arange(64))


def test_errors_and_oversampling():
    pts = grid_points(side=4)  # 16 points
    with pytest.raises(ValueError, match="neighbor_count"):
        group_indices(pts, 2, neighbor_count=3)
    with pytest.raises(ValueError, match="enable_oversampling"):
        group_indices(pts, 2, n_groups=50)
    with pytest.raises(ValueError, match="neighbor_pool_size"):
        group_indices(pts, 2, n_groups=50, enable_oversampling=True, neighbor_pool_size=3)
    with pytest.raises(ValueError, match="only 3"):
        group_indices(pts[:3], 2)
    idx = group_indices(pts, 2, n_groups=50, neighbor_count=6, enable_oversampling=True, seed=1)
    assert idx.shape == (50, 4)
    assert all(len(set(r)) == 4 for r in idx)


def test_subsample_and_file_rows():
    s = small_scan(m=50)
    rows = subsample_indices(50, 20, seed=4)
    assert len(rows) == 20 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, subsample_indices(50, 20, seed=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = group_scan(s, 1, n_groups=10, n_subsample=20, subsample_seed=4, with_patches=False)
    np.testing.assert_array_equal(g.subsample_indices, rows)
    assert set(g.nn_indices.ravel()) <= set(rows)
    np.testing.assert_allclose(g.coords_nn[:, 0, 0, 0], s.xcoords[g.nn_indices[:, 0]])


def test_normalisation_invariant():
    rng = np.random.default_rng(0)
    raw = (rng.random((7, 64, 64)) * 300).astype(np.uint16)
    x, factor = normalize_diffraction(raw)
    assert x.dtype == np.float32
    energy = np.mean(np.sum(x.astype(np.float64) ** 2, axis=(-2, -1)))
    assert energy == pytest.approx(32**2, rel=1e-5)
    s = small_scan(m=30)
    with pytest.warns(UserWarning, match="margin"):  # sparse random scan
        g = group_scan(s, 2, n_groups=10, with_patches=False)
    e = np.mean(np.sum(g.diffraction.astype(np.float64) ** 2, axis=(1, 2)))
    assert e == pytest.approx(1024, rel=1e-5)
    np.testing.assert_allclose(g.diffraction[..., 0],
                               s.diffraction[g.nn_indices[:, 0]] * g.norm_factor, rtol=1e-6)
    assert intensity_scale(1e9, 64) == pytest.approx(988.21177, rel=1e-7)


def test_lazy_grouped_diffraction_equals_the_built_array():
    s = small_scan(m=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = group_scan(s, 2, n_groups=12, seed=3, with_patches=False)
        lazy = group_scan(s, 2, n_groups=12, seed=3, with_patches=False, lazy=True)
    d = lazy.diffraction
    assert isinstance(d, GroupedDiffraction) and not isinstance(eager.diffraction, GroupedDiffraction)
    assert d.shape == eager.diffraction.shape == (12, 64, 64, 4) and len(d) == 12
    assert lazy.norm_factor == eager.norm_factor
    # An independent statement of what a group is: its members' patterns, channels last, times
    # the normalisation factor (one float32 multiply: rtol 1e-6). The eager array is built by
    # the same code as the lazy one, so it is compared too but cannot be the only reference.
    expected = (np.moveaxis(s.diffraction[eager.nn_indices], 1, -1).astype(np.float64)
                * lazy.norm_factor)
    for key in (slice(None), slice(3, 7), slice(10, 40), 5, np.array([9, 0, 9, 2])):
        got = d[key]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected[key], rtol=1e-6)
        np.testing.assert_array_equal(got, eager.diffraction[key])
    np.testing.assert_allclose(np.asarray(d), expected, rtol=1e-6)
    assert np.array_equal(lazy.nn_indices, eager.nn_indices)
    with pytest.raises(ValueError, match="built on request"):
        np.asarray(d, copy=False)
    with pytest.raises(TypeError, match="first axis"):
        d[0, 1]
    # the factor is the whole grouped set's: repeated members count as often as they occur
    stack = s.diffraction[eager.nn_indices].astype(np.float64)
    expected = np.sqrt(32.0**2 / np.mean(np.sum(stack**2, axis=(-2, -1))))
    assert eager.norm_factor == pytest.approx(expected, rel=1e-12)


def test_margin_warning():
    pts = grid_points(side=5, step=20.0)
    s = ScanData(xcoords=pts[:, 0], ycoords=pts[:, 1],
                 diffraction=np.ones((25, 64, 64), np.float32),
                 probe=np.ones((64, 64), np.complex64))
    with pytest.warns(UserWarning, match="margin"):
        group_scan(s, 2, n_groups=5)


def square_scan(side: float) -> ScanData:
    """Four positions on a square: at gridsize 2 every group is the square, |relative| = side/2."""
    x = 100.0 + np.array([0.0, side, 0.0, side])
    y = 100.0 + np.array([0.0, 0.0, side, side])
    return ScanData(xcoords=x, ycoords=y, diffraction=np.ones((4, 64, 64), np.float32),
                    probe=np.ones((64, 64), np.complex64))


def test_margin_warning_follows_the_configured_canvas():
    """With --offset / --max_position_jitter set, the warning's margin is the model's canvas
    margin (ModelConfig.canvas_size), not the one of the default offset and jitter."""
    from ptycho_k3 import physics
    from ptycho_k3.config import ModelConfig

    cfg = ModelConfig(N=64, gridsize=2, offset=8, max_position_jitter=20)
    margin = physics.canvas_margin(cfg.N, cfg.canvas_size)
    default = physics.canvas_margin(cfg.N, physics.canvas_size(cfg.N, cfg.gridsize))
    assert (cfg.canvas_size, margin, default) == (92, 14, 7)
    inside = square_scan(24.0)  # offsets reach 12 px: outside the default canvas, inside P = 92
    with pytest.warns(UserWarning, match=f"only has a {default} px margin"):
        group_scan(inside, 2, n_groups=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group_scan(inside, 2, n_groups=4, canvas_size=cfg.canvas_size)
    with pytest.warns(UserWarning, match=rf"side {cfg.canvas_size}\) only has a {margin} px margin"):
        group_scan(square_scan(40.0), 2, n_groups=4, canvas_size=cfg.canvas_size)


def test_training_groups_with_the_model_canvas():
    """ptycho_k3.train.prepare passes the model's canvas to the grouping (its margin warning)."""
    from ptycho_k3 import physics
    from ptycho_k3.config import ModelConfig, TrainingConfig
    from ptycho_k3.train import prepare

    model = ModelConfig(N=64, gridsize=2, offset=8, max_position_jitter=20)
    config = TrainingConfig(model=model, n_groups=4)
    margin = physics.canvas_margin(model.N, model.canvas_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(config, square_scan(24.0))
    with pytest.warns(UserWarning, match=f"only has a {margin} px margin"):
        prepare(config, square_scan(40.0))


def test_patches_at_true_positions_gs2():
    """Ground truth of member c is centred on that member's own position (not its reflection)."""
    size, n = 160, 64
    yy, xx = np.mgrid[0:size, 0:size]
    obj = (xx + 1j * yy).astype(np.complex64)  # value encodes its own position
    rng = np.random.default_rng(2)
    x = np.round(rng.uniform(50, 110, 40))
    y = np.round(rng.uniform(50, 110, 40)) + 0.5  # fractional rows: bilinear
    s = ScanData(xcoords=x, ycoords=y, diffraction=np.ones((40, n, n), np.float32),
                 probe=np.ones((n, n), np.complex64), object=obj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = group_scan(s, 2, n_groups=12, neighbor_count=6, seed=0)
    centre = g.patches[:, n // 2, n // 2, :]  # (B, C)
    np.testing.assert_allclose(centre.real, g.coords_nn[:, 0, 0], atol=1e-3)
    np.testing.assert_allclose(centre.imag, g.coords_nn[:, 0, 1], atol=1e-3)


def test_patches_from_y_key():
    s = small_scan(m=20)
    pat = (np.arange(20)[:, None, None] * np.ones((1, 64, 64))).astype(np.complex64)
    s2 = ScanData(xcoords=s.xcoords, ycoords=s.ycoords, diffraction=s.diffraction,
                  probe=s.probe, patches=pat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = group_scan(s2, 2, n_groups=5)
    np.testing.assert_array_equal(g.patches[:, 0, 0, :].real, g.nn_indices)


def test_grouping_errors_are_data_or_config_errors_naming_the_file():
    """A scan the grouping cannot serve is bad data (exit 2 in the commands), named by file;
    settings that cannot group any scan are configuration errors."""
    from dataclasses import replace

    from ptycho_k3.config import ConfigError
    from ptycho_k3.data import DataError

    pts = grid_points(side=4)
    with pytest.raises(ConfigError, match="neighbor_count"):
        group_indices(pts, 2, neighbor_count=3)
    with pytest.raises(ConfigError, match="neighbor_pool_size >= C=4"):
        group_indices(pts, 2, n_groups=50, enable_oversampling=True, neighbor_pool_size=3)
    with pytest.raises(ConfigError, match="n_subsample"):
        subsample_indices(10, 0, seed=0)
    scan = replace(small_scan(m=3), source="scan.npz")
    with pytest.raises(DataError, match=r"^scan\.npz: gridsize 2 needs groups of 4 positions; "
                                        r"the scan has only 3$"):
        group_scan(scan, 2)
    five = replace(small_scan(m=5), source="five.npz")
    with pytest.raises(DataError, match=r"^five\.npz: n_groups=512 exceeds the 5 scan "
                                        r"positions.*--enable_oversampling"):
        group_scan(five, 2)
    zero = replace(five, diffraction=np.zeros_like(five.diffraction))
    with pytest.raises(DataError, match=r"^five\.npz: the diffraction data has zero"):
        group_scan(zero, 1)
    with pytest.raises(DataError, match=r"^gridsize 2 needs"):  # no file: no prefix
        group_scan(replace(scan, source=None), 2)

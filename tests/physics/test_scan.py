"""The full-scan forward model: extraction at scan positions, far-field intensity, deviance."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ptycho_k3 import physics

import reference as ref
from backend_utils import complex_np, split, tensor, to_numpy, value_and_grad


def random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def positions_inside(rng, b, n, h, w, integer=False):
    """Positions whose (n+1)-windows lie inside an (h, w) canvas."""
    lo, hi_x, hi_y = n // 2, w - n // 2 - 1.001, h - n // 2 - 1.001
    pos = np.stack([rng.uniform(lo, hi_x, b), rng.uniform(lo, hi_y, b)], axis=1)
    return np.floor(pos) if integer else pos


# Few shapes (JAX compiles each); values and positions vary.
shapes = st.tuples(st.sampled_from([1, 5]), st.sampled_from([4, 8]), st.sampled_from([0, 3, 11]),
                   st.sampled_from([0, 6]))


@given(shape=shapes, seed=st.integers(0, 2**31 - 1), integer=st.booleans())
def test_extract_at_matches_reference(shape, seed, integer):
    b, n, extra_h, extra_w = shape
    h, w = n + 2 + extra_h, n + 2 + extra_w  # non-square canvases too
    rng = np.random.default_rng(seed)
    canvas = random_complex(rng, (h, w))
    pos = positions_inside(rng, b, n, h, w, integer).astype(np.float32)
    got = complex_np(physics.extract_at(*split(canvas), tensor(pos), n))
    # float32 bilinear taps of O(1) values: ~1e-6; 1e-5 absolute leaves room for the lerp form.
    np.testing.assert_allclose(got, ref.extract_at(canvas, pos, n), atol=1e-5)


def test_extract_at_equals_the_simulators_patches():
    """The refinement's extraction and the simulator's ground-truth patches are one sampling."""
    from ptycho_k3.data import cut_patches

    rng = np.random.default_rng(3)
    obj = random_complex(rng, (90, 100))
    pos = positions_inside(rng, 7, 64, 90, 100)
    got = complex_np(physics.extract_at(*split(obj), tensor(pos.astype(np.float32)), 64))
    want = cut_patches(obj, pos[:, 0], pos[:, 1], 64)
    # Positions differ by float32 rounding of ~1e-5 px at x ~ 60: ~1e-5 of a unit-size value.
    np.testing.assert_allclose(got, want, atol=5e-5)


def test_extract_at_position_gradient_is_the_finite_difference():
    rng = np.random.default_rng(4)
    canvas = rng.standard_normal((20, 22)).astype(np.float32)
    pos = np.array([[10.3, 9.6], [11.7, 10.2]], np.float32)
    weights = rng.standard_normal((2, 8, 8))

    def weighted(c, p):
        from keras import ops

        return ops.sum(physics.extract_real_at(c, p, 8) * tensor(weights))

    _, (_, g_pos) = value_and_grad(weighted, [canvas, pos])

    def numpy_value(p):
        return float(np.sum(ref.extract_at(canvas.astype(np.float64), p, 8) * weights))

    h = 1e-3  # stays inside one bilinear cell (fractional parts 0.2 - 0.7)
    for b in range(2):
        for a in range(2):
            plus, minus = pos.astype(np.float64), pos.astype(np.float64)
            plus[b, a] += h
            minus[b, a] -= h
            fd = (numpy_value(plus) - numpy_value(minus)) / (2 * h)
            np.testing.assert_allclose(g_pos[b, a], fd, rtol=1e-4, atol=1e-4)


@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([8, 16]))
def test_far_field_intensity_is_the_squared_amplitude(seed, n):
    rng = np.random.default_rng(seed)
    psi = random_complex(rng, (3, n, n))
    got = to_numpy(physics.far_field_intensity(*split(psi)))
    want = ref.diffract(psi) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())
    # Parseval: the 1/N^2 makes the total intensity the exit wave's energy
    np.testing.assert_allclose(got.sum(axis=(1, 2)), (np.abs(psi) ** 2).sum(axis=(1, 2)),
                               rtol=1e-5)


@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.5, 1e3))
def test_scan_intensities_match_the_numpy_forward_model(seed, scale):
    rng = np.random.default_rng(seed)
    obj = random_complex(rng, (30, 33))
    probe = random_complex(rng, (16, 16))
    pos = positions_inside(rng, 4, 16, 30, 33).astype(np.float32)
    got = to_numpy(physics.scan_intensities(*split(obj), *split(probe), tensor(pos), scale))
    want = ref.scan_intensities(obj, probe, pos, scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


@given(seed=st.integers(0, 2**31 - 1), level=st.sampled_from([1e-3, 1.0, 1e4]))
def test_poisson_deviance(seed, level):
    rng = np.random.default_rng(seed)
    k = rng.poisson(level, (4, 8, 8)).astype(np.float32)
    lam = (rng.uniform(0, 2 * level, (4, 8, 8)) + 1e-6).astype(np.float32)
    dev = to_numpy(physics.poisson_deviance(tensor(lam), tensor(k)))
    want = ref.poisson_deviance(lam, k)
    np.testing.assert_allclose(dev, want, rtol=1e-4, atol=1e-4 * max(level, 1.0))
    assert np.all(dev >= -1e-4 * max(level, 1.0))  # >= 0 up to float32 rounding
    # zero at a perfect fit, whatever the counts (including 0)
    np.testing.assert_allclose(to_numpy(physics.poisson_deviance(tensor(k), tensor(k))), 0.0,
                               atol=1e-3 * max(level, 1.0))
    # same gradient as the NLL (they differ by a function of the data alone)
    _, (g_dev,) = value_and_grad(lambda x: physics.mean_poisson_deviance(x, tensor(k)), [lam])
    _, (g_nll,) = value_and_grad(lambda x: physics.mean_poisson_nll(x, tensor(k)), [lam])
    np.testing.assert_allclose(g_dev, g_nll, rtol=1e-4, atol=1e-9)

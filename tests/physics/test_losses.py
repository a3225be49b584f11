"""Losses: references, reductions, epsilon safety, gradients at the optimum."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ptycho_k3 import physics

import reference as ref
from backend_utils import split, tensor, to_numpy, value_and_grad


@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([1, 7, 50]), level=st.floats(1e-3, 1e6))
def test_poisson_nll_matches_reference(seed, size, level):
    rng = np.random.default_rng(seed)
    pred = (rng.uniform(0.01, 2.0, size) * level).astype(np.float32)
    obs = rng.poisson(pred).astype(np.float32)
    got = to_numpy(physics.poisson_nll(tensor(pred), tensor(obs)))
    want = ref.poisson_nll(pred, obs)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * (1 + level * np.log1p(level)))
    mean = float(to_numpy(physics.mean_poisson_nll(tensor(pred), tensor(obs))))
    assert np.isclose(mean, want.mean(), rtol=1e-5, atol=1e-5 * (1 + abs(want).max()))


def test_poisson_nll_is_finite_at_zero_prediction():
    got = to_numpy(physics.poisson_nll(tensor([0.0, 0.0]), tensor([0.0, 3.0])))
    assert np.all(np.isfinite(got))
    assert got[0] == 0.0 and got[1] > 0


@given(seed=st.integers(0, 2**31 - 1))
def test_poisson_nll_gradient_is_zero_where_prediction_equals_observation(seed):
    rng = np.random.default_rng(seed)
    k = rng.uniform(0.5, 1e4, (3, 4)).astype(np.float32)

    def f(lam):
        return physics.mean_poisson_nll(lam, tensor(k))

    _, (g,) = value_and_grad(f, [k.copy()])
    # dL/dlam = (1 - k / (lam + eps)) / size: a relative float32 residual at lam = k.
    assert np.max(np.abs(g)) < 1e-6
    _, (g2,) = value_and_grad(f, [(2 * k).astype(np.float32)])
    np.testing.assert_allclose(g2, 0.5 / k.size, rtol=1e-5)


def test_amplitude_mae_is_a_mean_over_all_elements():
    a = np.zeros((2, 3, 4), np.float32)
    b = np.ones((2, 3, 4), np.float32)
    b[0, 0, 0] = 25.0
    got = float(to_numpy(physics.amplitude_mae(tensor(a), tensor(b))))
    assert np.isclose(got, (23 + 25) / 24)


def test_total_variation_of_ramp_and_constant():
    const = np.full((1, 5, 5), 1.5 - 2j, np.complex64)
    assert float(to_numpy(physics.total_variation(*split(const)))) == 0.0
    ramp = np.tile(np.arange(6, dtype=np.float32), (4, 1))[None]  # d/dx = 1, d/dy = 0
    zero = np.zeros_like(ramp)
    assert np.isclose(float(to_numpy(physics.total_variation(tensor(ramp), tensor(zero)))), 1.0)
    assert np.isclose(float(to_numpy(physics.total_variation(tensor(zero), tensor(ramp)))), 1.0)


def test_realspace_mae():
    p = np.array([[1 + 1j, 2 - 1j]], np.complex64)
    t = np.array([[0 + 1j, 2 + 1j]], np.complex64)
    got = float(to_numpy(physics.realspace_mae(*split(p), *split(t))))
    assert np.isclose(got, (1 + 0 + 0 + 2) / 2)

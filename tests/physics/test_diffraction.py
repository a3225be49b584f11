"""diffract / illuminate / smooth: references and invariants (Parseval, DC at centre)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops

from ptycho_k3 import physics

import reference as ref
from backend_utils import complex_np, split, tensor, to_numpy, value_and_grad


def random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@given(
    b=st.sampled_from([1, 3]),
    n=st.sampled_from([2, 8, 32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_numpy_and_parseval(b, n, seed):
    rng = np.random.default_rng(seed)
    psi = random_complex(rng, (b, n, n))
    amp = to_numpy(physics.diffract(*split(psi)))
    want = ref.diffract(psi)
    np.testing.assert_allclose(amp, want, atol=2e-6 * n * np.abs(psi).max() + 1e-6)
    ratio = np.sum(amp.astype(np.float64) ** 2) / np.sum(np.abs(psi).astype(np.float64) ** 2)
    assert abs(ratio - 1) < 1e-5


@pytest.mark.parametrize("n", [64, 128, 256])
def test_dc_at_centre_and_unit_pixel(n):
    ones = np.ones((1, n, n), np.complex64)
    amp = to_numpy(physics.diffract(*split(ones)))[0]
    assert np.unravel_index(np.argmax(amp), amp.shape) == (n // 2, n // 2)
    assert amp[n // 2, n // 2] == pytest.approx(n, rel=1e-6)
    amp[n // 2, n // 2] = 0
    assert np.max(amp) < 1e-3
    pixel = np.zeros((1, n, n), np.complex64)
    pixel[0, 5, 9] = 1
    np.testing.assert_allclose(to_numpy(physics.diffract(*split(pixel))), 1 / n, rtol=1e-5)


def test_gradient_is_finite_at_dark_pixels():
    """A zero exit wave has |F| = 0 everywhere: the sqrt floor keeps gradients finite."""
    z = np.zeros((1, 8, 8), np.float32)

    def f(re, im):
        return ops.sum(physics.diffract(re, im))

    _, grads = value_and_grad(f, [z, z])
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_gradient_matches_analytic_form():
    """d sum(w * A) / d re for A = |F psi| / N: compare with the NumPy chain rule."""
    rng = np.random.default_rng(0)
    n = 8
    psi = random_complex(rng, (1, n, n))
    w = rng.standard_normal((1, n, n)).astype(np.float32)

    def f(re, im):
        return ops.sum(physics.diffract(re, im) * tensor(w))

    _, (g_re, g_im) = value_and_grad(f, [psi.real.copy(), psi.imag.copy()])
    big_f = np.fft.fft2(psi.astype(np.complex128))
    amp = np.abs(big_f)
    # d(|F|/N)/dF* = F / (2 N |F|); unshift the weights, pull back through the (unnormalised) DFT.
    w_unshifted = np.fft.ifftshift(w, axes=(-2, -1))
    back = np.fft.ifft2(w_unshifted * big_f / (n * amp)) * n * n
    np.testing.assert_allclose(g_re, back.real, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_im, back.imag, rtol=1e-4, atol=1e-5)


def test_illuminate_is_complex_product_then_smooth_then_mask():
    rng = np.random.default_rng(1)
    obj = random_complex(rng, (2, 8, 8))
    probe = random_complex(rng, (8, 8))
    mask = (rng.uniform(size=(8, 8)) > 0.5).astype(np.float32)
    got = complex_np(
        physics.illuminate(*split(obj), *split(probe), smoothing_sigma=0.8, mask=tensor(mask))
    )
    want = ref.smooth(obj * probe, 0.8) * mask
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = complex_np(physics.illuminate(*split(obj), *split(probe)))
    np.testing.assert_allclose(plain, obj * probe, atol=1e-5)


@given(sigma=st.floats(0.2, 5.0), seed=st.integers(0, 1000))
def test_smoothing_matches_reference_and_preserves_constants(sigma, seed):
    rng = np.random.default_rng(seed)
    x = random_complex(rng, (1, 7, 9))
    got = complex_np(physics.smooth(*split(x), sigma))
    np.testing.assert_allclose(got, ref.smooth(x, sigma), atol=1e-5)
    const = np.full((1, 5, 5), 2.0 - 1.0j, np.complex64)
    np.testing.assert_allclose(complex_np(physics.smooth(*split(const), sigma)), const, rtol=1e-5)


def test_smoothing_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        physics.smooth(tensor(np.zeros((1, 4, 4))), tensor(np.zeros((1, 4, 4))), 0.0)

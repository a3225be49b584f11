"""translate: NumPy reference, integer-roll equivalence, composition, gradients, shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops

from ptycho_k3 import physics

import reference as ref
from backend_utils import complex_np, split, tensor, to_numpy, value_and_grad

# float32 bilinear sums of O(1) values: a few ulps of the largest input.
ATOL = 1e-5


def random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@given(
    # A few shapes only: JAX compiles each new shape, and the values are what vary here.
    b=st.sampled_from([1, 3]),
    h=st.sampled_from([2, 7, 16]),
    w=st.sampled_from([3, 16]),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.0, 25.0),
)
def test_matches_numpy_reference(b, h, w, seed, scale):
    rng = np.random.default_rng(seed)
    img = random_complex(rng, (b, h, w))
    offsets = (rng.uniform(-1, 1, (b, 2)) * scale).astype(np.float32)
    got = complex_np(physics.translate(*split(img), tensor(offsets)))
    want = ref.translate(img, offsets)
    np.testing.assert_allclose(got, want, atol=ATOL * max(1.0, np.abs(img).max()))


@given(dx=st.integers(-9, 9), dy=st.integers(-9, 9), seed=st.integers(0, 1000))
def test_integer_shift_is_zero_filled_roll(dx, dy, seed):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((1, 12, 15)).astype(np.float32)
    want = np.roll(img, (dy, dx), axis=(1, 2))
    if dy > 0:
        want[:, :dy] = 0
    elif dy < 0:
        want[:, dy:] = 0
    if dx > 0:
        want[:, :, :dx] = 0
    elif dx < 0:
        want[:, :, dx:] = 0
    got = to_numpy(physics.translate_real(tensor(img), tensor([[dx, dy]])))
    np.testing.assert_array_equal(got, want)


def test_half_pixel_is_mean_with_left_neighbour():
    img = np.arange(30, dtype=np.float32).reshape(1, 5, 6) ** 1.5
    got = to_numpy(physics.translate_real(tensor(img), tensor([[0.5, 0.0]])))
    np.testing.assert_allclose(got[0, :, 1:], 0.5 * (img[0, :, 1:] + img[0, :, :-1]), rtol=1e-6)
    # Column 0 reads x = -0.5: half its weight falls outside and is not renormalised.
    np.testing.assert_allclose(got[0, :, 0], 0.5 * img[0, :, 0], rtol=1e-6)


@given(
    tx=st.integers(-6, 6),
    ty=st.integers(-6, 6),
    seed=st.integers(0, 1000),
)
def test_integer_shift_then_inverse_is_identity_inside_support(tx, ty, seed):
    rng = np.random.default_rng(seed)
    img = random_complex(rng, (2, 16, 16))
    t = tensor([[tx, ty], [-ty, tx]])
    re, im = physics.translate(*split(img), t)
    back = complex_np(physics.translate(re, im, -t))
    for k, (ax, ay) in enumerate(([tx, ty], [-ty, tx])):
        rows = slice(max(0, -ay), 16 - max(0, ay))
        cols = slice(max(0, -ax), 16 - max(0, ax))
        np.testing.assert_allclose(back[k, rows, cols], img[k, rows, cols], atol=1e-6)


@given(f=st.floats(0.01, 0.99), seed=st.integers(0, 1000))
def test_fractional_shift_then_inverse_is_the_bilinear_blur(f, seed):
    """Shift by +f then -f is the symmetric 3-tap filter [f(1-f), (1-f)^2 + f^2, f(1-f)]."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((1, 1, 20)).astype(np.float32)
    t = tensor([[f, 0.0]])
    back = to_numpy(physics.translate_real(physics.translate_real(tensor(img), t), -t))[0, 0]
    a, c = f * (1 - f), (1 - f) ** 2 + f**2
    want = a * img[0, 0, :-2] + c * img[0, 0, 1:-1] + a * img[0, 0, 2:]
    np.testing.assert_allclose(back[1:-1], want, atol=1e-5)


def test_gradient_wrt_image_is_adjoint_shift():
    """d<w, T(x)>/dx = T^T(w); for integer t the adjoint is the shift by -t (zero filled)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 11)).astype(np.float32)
    wts = rng.standard_normal((2, 9, 11)).astype(np.float32)
    offs = np.array([[2.0, -1.0], [-3.0, 4.0]], np.float32)

    def f(img):
        return ops.sum(physics.translate_real(img, tensor(offs)) * tensor(wts))

    _, (g,) = value_and_grad(f, [x])
    want = ref.translate(wts, -offs)
    np.testing.assert_allclose(g, want, atol=1e-5)


def test_gradient_wrt_offsets_matches_finite_difference():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 12, 12)).astype(np.float32)
    wts = rng.standard_normal((1, 12, 12)).astype(np.float32)
    t0 = np.array([[0.3, -1.6]], np.float32)  # away from integer kinks

    def f(t):
        return ops.sum(physics.translate_real(tensor(x), t) * tensor(wts))

    _, (g,) = value_and_grad(f, [t0])
    h = 1e-2  # the function is piecewise linear in t: a central difference inside a piece is exact
    for k in range(2):
        dt = np.zeros_like(t0)
        dt[0, k] = h
        fp = np.sum(ref.translate(x, t0 + dt) * wts)
        fm = np.sum(ref.translate(x, t0 - dt) * wts)
        np.testing.assert_allclose(g[0, k], (fp - fm) / (2 * h), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bad", [(3, 2), (2, 3), (2,)])
def test_mismatched_offsets_are_rejected(bad):
    img = tensor(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="offsets"):
        physics.translate(img, img, tensor(np.zeros(bad)))


def test_non_3d_images_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        physics.translate_real(tensor(np.zeros((4, 4))), tensor(np.zeros((1, 2))))

"""extract_patches / reassemble_patches: references, adjointness, round trips, per-group canvases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho_k3 import physics

import reference as ref
from backend_utils import complex_np, split, tensor, to_numpy


def random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# A few shapes only: JAX compiles each new shape, and the values are what vary here.
group_shapes = st.tuples(
    st.sampled_from([1, 3]),  # G
    st.sampled_from([1, 4]),  # C
    st.sampled_from([4, 8]),  # n
    st.sampled_from([0, 3, 6]),  # P - n
)


@given(shape=group_shapes, seed=st.integers(0, 2**31 - 1), reach=st.floats(0, 6))
def test_extract_matches_reference(shape, seed, reach):
    g, c, n, extra = shape
    p = n + extra
    rng = np.random.default_rng(seed)
    canvas = random_complex(rng, (g, p, p))
    offsets = rng.uniform(-reach, reach, (g, c, 2)).astype(np.float32)
    got = complex_np(physics.extract_patches(*split(canvas), tensor(offsets), n))
    np.testing.assert_allclose(got, ref.extract_patches(canvas, offsets, n), atol=2e-5)


@given(
    shape=group_shapes,
    seed=st.integers(0, 2**31 - 1),
    reach=st.floats(0, 6),
    normalize=st.booleans(),
)
def test_reassemble_matches_reference(shape, seed, reach, normalize):
    g, c, n, extra = shape
    p = n + extra
    rng = np.random.default_rng(seed)
    patches = random_complex(rng, (g, c, n, n))
    offsets = rng.uniform(-reach, reach, (g, c, 2)).astype(np.float32)
    support = (rng.uniform(size=(n, n)) > 0.3).astype(np.float32)
    got = complex_np(
        physics.reassemble_patches(
            *split(patches), tensor(offsets), p, support=tensor(support), normalize=normalize
        )
    )
    want = ref.reassemble_patches(patches, offsets, p, support=support, normalize=normalize)
    # Normalised values are sums divided by counts >= eps = 1e-3: scale the tolerance with 1/eps
    # only where the count is tiny; comparing relative to the reference's magnitude covers both.
    np.testing.assert_allclose(got, want, atol=3e-5 * max(1.0, np.abs(want).max()))


@given(shape=group_shapes, seed=st.integers(0, 2**31 - 1))
def test_reassembly_is_the_adjoint_of_extraction(shape, seed):
    """<E(x), p> == <x, R(p)> for the real inner product, fractional offsets included."""
    g, c, n, extra = shape
    p = n + extra
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((g, p, p)).astype(np.float32)
    pt = rng.standard_normal((g, c, n, n)).astype(np.float32)
    offsets = rng.uniform(-4, 4, (g, c, 2)).astype(np.float32)
    zeros_x, zeros_p = np.zeros_like(x), np.zeros_like(pt)
    ex = to_numpy(physics.extract_patches(tensor(x), tensor(zeros_x), tensor(offsets), n)[0])
    rp = to_numpy(
        physics.reassemble_patches(
            tensor(pt), tensor(zeros_p), tensor(offsets), p, normalize=False
        )[0]
    )
    lhs, rhs = float(np.sum(ex * pt, dtype=np.float64)), float(np.sum(x * rp, dtype=np.float64))
    assert abs(lhs - rhs) <= 1e-4 * (1.0 + abs(lhs))


@given(
    g=st.sampled_from([1, 3]),
    c=st.sampled_from([1, 4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_extract_after_normalised_reassembly_returns_patches(g, c, seed):
    """Patches cut from one canvas at integer offsets come back unchanged after a round trip."""
    n, p = 8, 16
    rng = np.random.default_rng(seed)
    canvas = random_complex(rng, (g, p, p))
    margin = physics.canvas_margin(n, p)
    offsets = rng.integers(-margin, margin + 1, (g, c, 2)).astype(np.float32)
    patches = physics.extract_patches(*split(canvas), tensor(offsets), n)
    rebuilt = physics.reassemble_patches(*patches, tensor(offsets), p, eps=1e-7)
    again = complex_np(physics.extract_patches(*rebuilt, tensor(offsets), n))
    np.testing.assert_allclose(again, complex_np(patches), atol=1e-5)


def test_one_canvas_per_group_at_large_batch():
    """B*C = 64 (batch 16, gridsize 2): 16 canvases, each the reassembly of its own group only."""
    g, c, n, p = 16, 4, 8, 14
    rng = np.random.default_rng(0)
    patches = random_complex(rng, (g, c, n, n))
    offsets = rng.uniform(-3, 3, (g, c, 2)).astype(np.float32)
    out = complex_np(physics.reassemble_patches(*split(patches), tensor(offsets), p))
    assert out.shape == (g, p, p)
    for k in (0, 7, 15):
        alone = complex_np(
            physics.reassemble_patches(*split(patches[k : k + 1]), tensor(offsets[k : k + 1]), p)
        )
        np.testing.assert_allclose(out[k], alone[0], atol=1e-5)


def test_normalisation_divides_by_overlap_count():
    """Two identical patches at the same place average to the patch, not twice it."""
    n, p = 6, 10
    patch = np.full((1, 2, n, n), 3.0 + 1.0j, np.complex64)
    offsets = np.zeros((1, 2, 2), np.float32)
    out = complex_np(physics.reassemble_patches(*split(patch), tensor(offsets), p, eps=1e-6))
    inner = out[0, 2:8, 2:8]
    np.testing.assert_allclose(inner, 3.0 + 1.0j, rtol=1e-5)
    assert np.all(out[0, :2] == 0) and np.all(out[0, :, 8:] == 0)


@pytest.mark.parametrize("n", [64, 128, 256])
def test_shapes_for_supported_patch_sizes(n):
    p = physics.canvas_size(n, 2)
    canvas = np.zeros((2, p, p), np.complex64)
    offsets = np.zeros((2, 4, 2), np.float32)
    re, im = physics.extract_patches(*split(canvas), tensor(offsets), n)
    assert tuple(re.shape) == (2, 4, n, n) and tuple(im.shape) == (2, 4, n, n)
    back = physics.reassemble_patches(re, im, tensor(offsets), p)
    assert tuple(back[0].shape) == (2, p, p)


def test_canvas_sizes_match_reference_table():
    assert physics.canvas_size(64, 1) == 74
    assert physics.canvas_size(64, 2) == 78
    assert physics.canvas_size(128, 1) == 138
    assert physics.canvas_size(256, 2) == 270
    assert physics.canvas_margin(64, 78) == 7


def test_crop_and_pad_are_inverse():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 6)).astype(np.float32)
    padded = to_numpy(physics.pad_centre(tensor(x), 11))
    np.testing.assert_array_equal(padded, ref.pad_centre(x, 11))
    np.testing.assert_array_equal(to_numpy(physics.centre_crop(tensor(padded), 6)), x)


def test_bad_shapes_are_rejected():
    z = tensor(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"\(G, C, 2\)"):
        physics.reassemble_patches(z, z, tensor(np.zeros((2, 4, 2))), 6)
    with pytest.raises(ValueError, match="support"):
        physics.reassemble_patches(z, z, tensor(np.zeros((2, 3, 2))), 6, support=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(G, P, P\)"):
        physics.extract_patches(z, z, tensor(np.zeros((2, 3, 2))), 4)

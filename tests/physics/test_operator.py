"""PtychoOperator: the adjoint of its linear part, and equality with the physics functions.

Adjointness is checked as ``<A x, y> = <x, A^H y>`` with the complex inner product
``<u, v> = sum u conj(v)``, for random complex objects ``x`` and exit waves ``y``, integer and
fractional positions (repeated ones included), probes with zero pixels, with and without the
exit-wave smoothing and mask, in both frames of extraction.

Tolerance: both sides are float64 sums of float32 outputs, and every output element carries a
few float32 roundings (two bilinear lerps or two resampling matmuls, the complex product, two
3-tap smoothing passes), so the sides may differ by a small multiple of 6e-8 times the
Cauchy-Schwarz scale ``|A x| |y| + |x| |A^H y|``; we allow 1e-6 of that scale (observed:
below 1e-8). A wrong adjoint of any one stage (no conjugate, the smoothing itself instead of its
transpose, swapped bilinear weights) misses by more than 1e-3 of it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho_k3 import physics

from backend_utils import complex_np, split, tensor, to_numpy, value_and_grad

ADJOINT_RTOL = 1e-6


def random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def probe_with_zeros(rng, n, zeros):
    """Random complex ``(n, n)`` probe with a fraction ``zeros`` of its pixels exactly 0."""
    probe = random_complex(rng, (n, n))
    probe[rng.random((n, n)) < zeros] = 0
    return probe


def scan_positions(rng, b, n, h, w, integer):
    """Positions whose ``(n+1)``-windows lie inside ``(h, w)``; the last repeats the first."""
    lo, hi_x, hi_y = n // 2, w - n // 2 - 1.001, h - n // 2 - 1.001
    pos = np.stack([rng.uniform(lo, hi_x, b), rng.uniform(lo, hi_y, b)], axis=1)
    if integer:
        pos = np.floor(pos)
    if b > 1:
        pos[-1] = pos[0]  # two patches on one window: the scatter must add, not overwrite
    return pos.astype(np.float32)


def group_offsets(rng, g, c, n, ph, pw, integer):
    """Offsets ``(g, c, 2)`` up to 2 px past the canvas margin (zero-filled reads included)."""
    reach_x, reach_y = (pw - n) // 2 + 2, (ph - n) // 2 + 2
    off = np.stack([rng.uniform(-reach_x, reach_x, (g, c)), rng.uniform(-reach_y, reach_y, (g, c))],
                   axis=-1)
    return (np.round(off) if integer else off).astype(np.float32)


def inner(u, v) -> complex:
    return complex(np.sum(u.astype(np.complex128) * np.conj(v.astype(np.complex128))))


def assert_adjoint(op, x, y, probe, positions, shape):
    ax = complex_np(op.forward(*split(x), *split(probe), tensor(positions)))
    ahy = complex_np(op.adjoint(*split(y), *split(probe), tensor(positions), shape))
    assert ax.shape == y.shape and ahy.shape == x.shape
    lhs, rhs = inner(ax, y), inner(x, ahy)
    scale = (np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(x) * np.linalg.norm(ahy))
    assert abs(lhs - rhs) <= ADJOINT_RTOL * scale, (lhs, rhs, scale)


# Few shapes (JAX compiles each); values, positions, probe zeros and options are drawn.
exit_wave_options = st.tuples(
    st.sampled_from([0.0, 0.6, 1.5]),  # smoothing sigma
    st.booleans(),  # mask
    st.sampled_from([0.0, 0.3]),  # fraction of probe pixels that are 0
)


# (B, n, extra rows, extra columns): one pattern; a repeated position; a small patch on a wide canvas
scan_shapes = st.sampled_from([(1, 8, 0, 0), (5, 8, 3, 6), (4, 4, 11, 0)])
# (G, C, n, P - n, Pw - Ph): canvas = patch; rectangular; patch small against the canvas
group_shapes = st.sampled_from([(1, 1, 8, 0, 0), (3, 4, 8, 3, 5), (2, 4, 4, 10, 0)])


@given(shape=scan_shapes, options=exit_wave_options, integer=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_scan_frame_adjoint(shape, options, integer, seed):
    b, n, extra_h, extra_w = shape
    sigma, mask, zeros = options
    h, w = n + 2 + extra_h, n + 2 + extra_w
    rng = np.random.default_rng(seed)
    op = physics.PtychoOperator(n, "scan", smoothing_sigma=sigma, use_mask=mask)
    assert_adjoint(op, random_complex(rng, (h, w)), random_complex(rng, (b, n, n)),
                   probe_with_zeros(rng, n, zeros), scan_positions(rng, b, n, h, w, integer),
                   (h, w))


@given(shape=group_shapes, options=exit_wave_options, integer=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_groups_frame_adjoint(shape, options, integer, seed):
    g, c, n, extra, wider = shape
    sigma, mask, zeros = options
    ph, pw = n + extra, n + extra + wider  # rectangular canvases too
    rng = np.random.default_rng(seed)
    op = physics.PtychoOperator(n, "groups", smoothing_sigma=sigma, use_mask=mask)
    assert_adjoint(op, random_complex(rng, (g, ph, pw)), random_complex(rng, (g, c, n, n)),
                   probe_with_zeros(rng, n, zeros), group_offsets(rng, g, c, n, ph, pw, integer),
                   (ph, pw))


def test_scan_placement_is_the_autodiff_transpose_of_extraction():
    """The explicit scatter equals what autodiff makes of the gather (the refinement's I_b)."""
    rng = np.random.default_rng(4)
    canvas = random_complex(rng, (20, 22))
    pos = scan_positions(rng, 4, 8, 20, 22, integer=False)
    w = random_complex(rng, (4, 8, 8))
    w_re, w_im = split(w)

    def weighted(c_re, c_im):
        from keras import ops

        p_re, p_im = physics.extract_at(c_re, c_im, tensor(pos), 8)
        return ops.sum(p_re * w_re) + ops.sum(p_im * w_im)

    _, (g_re, g_im) = value_and_grad(weighted, [canvas.real, canvas.imag])
    placed = complex_np(physics.place_at(w_re, w_im, tensor(pos), (20, 22)))
    # sums of at most 4 * 4 taps of O(1) values
    np.testing.assert_allclose(placed, g_re + 1j * g_im, atol=1e-5)


@pytest.mark.parametrize("sigma, mask", [(0.0, False), (0.7, True)])
def test_forward_is_the_composition_of_the_physics_functions(sigma, mask):
    """Same functions, same order: equal to the last bit, in both frames."""
    rng = np.random.default_rng(7)
    n, s = 8, 37.5
    probe = probe_with_zeros(rng, n, 0.2)
    mask_t = tensor(physics.probe_mask(n)) if mask else None

    def composed(patches):
        return physics.illuminate(*patches, *split(probe), smoothing_sigma=sigma, mask=mask_t)

    op = physics.PtychoOperator(n, "scan", smoothing_sigma=sigma, use_mask=mask)
    obj = random_complex(rng, (19, 23))
    pos = tensor(scan_positions(rng, 3, n, 19, 23, integer=False))
    waves = composed(physics.extract_at(*split(obj), pos, n))
    np.testing.assert_array_equal(complex_np(op.forward(*split(obj), *split(probe), pos)),
                                  complex_np(waves))
    np.testing.assert_array_equal(
        to_numpy(op.intensities(*split(obj), *split(probe), pos, s)),
        to_numpy(physics.far_field_intensity(*waves) * (s * s)))
    np.testing.assert_array_equal(to_numpy(op.amplitudes(*split(obj), *split(probe), pos)),
                                  to_numpy(physics.diffract(*waves)))
    if not sigma and not mask:  # the refinement's entry points are the plain scan frame
        np.testing.assert_array_equal(
            to_numpy(physics.scan_intensities(*split(obj), *split(probe), pos, s)),
            to_numpy(op.intensities(*split(obj), *split(probe), pos, s)))

    op = physics.PtychoOperator(n, "groups", smoothing_sigma=sigma, use_mask=mask)
    canvases = random_complex(rng, (2, 14, 14))
    offsets = tensor(group_offsets(rng, 2, 4, n, 14, 14, integer=False))
    waves = composed(physics.extract_patches(*split(canvases), offsets, n))
    np.testing.assert_array_equal(complex_np(op.forward(*split(canvases), *split(probe), offsets)),
                                  complex_np(waves))
    np.testing.assert_array_equal(to_numpy(op.amplitude(*waves)),
                                  to_numpy(physics.diffract(*waves)))
    patches = random_complex(rng, (2, 4, n, n))
    np.testing.assert_array_equal(
        complex_np(op.extract_adjoint(*split(patches), offsets, (14, 14))),
        complex_np(physics.reassemble_patches(*split(patches), offsets, 14, normalize=False)))


def test_model_physics_layers_are_the_groups_frame():
    from ptycho_k3.layers import FarField, PatchExtraction, ProbeIllumination

    rng = np.random.default_rng(8)
    n = 8
    probe = probe_with_zeros(rng, n, 0.2)
    op = physics.PtychoOperator(n, "groups", smoothing_sigma=0.5, use_mask=True)
    canvases = random_complex(rng, (2, 14, 14))
    offsets = tensor(group_offsets(rng, 2, 4, n, 14, 14, integer=False))
    patches = PatchExtraction(n)([*split(canvases), offsets])
    waves = ProbeIllumination(n, smoothing_sigma=0.5, use_mask=True, initial_probe=probe)(patches)
    amp = to_numpy(FarField()(waves))
    want = op.forward(*split(canvases), *split(probe), offsets)
    np.testing.assert_array_equal(complex_np(waves), complex_np(want))
    np.testing.assert_array_equal(amp, np.transpose(to_numpy(op.amplitude(*want)), (0, 2, 3, 1)))


def test_rejects_bad_settings():
    for kwargs in ({"n": 0}, {"n": 8, "frame": "grid"}, {"n": 8, "smoothing_sigma": -1.0}):
        with pytest.raises(ValueError):
            physics.PtychoOperator(**kwargs)
    op = physics.PtychoOperator(8, "groups")
    z = tensor(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scan"):
        op.intensities_and_patches((z, z), z, z, tensor(np.zeros((1, 2))))
    assert op == physics.PtychoOperator(8, "groups") and hash(op) == hash(
        physics.PtychoOperator(8, "groups"))

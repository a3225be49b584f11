"""Every backend-dependent ``ptycho_k3.physics`` function: values and gradients agree on all
three backends for hypothesis-generated inputs.

Not here: the NumPy-only set-up functions (``default_probe``, ``normalize_probe``,
``probe_mask``, ``intensity_scale``, ``pattern_energies``, ``normalization_factor``,
``simulation_intensity_scale``, ``poisson_amplitudes``, ``canvas_size``, ``canvas_margin``): they
never touch a Keras backend, so there is nothing to disagree (their own tests cover them).

Tolerances, relative to the largest magnitude of each array (``xb_compare``):
- layouts, crops and pads move values: exact (0).
- bilinear translation / extraction / reassembly: each output is a sum of at most 4 (2-D) taps,
  possibly inside a matmul that adds exact zeros: float32 rounding of a few ulp, ~1e-7 relative;
  gradients sum over up to ``C * n`` terms: ``RTOL_SUM`` = 1e-5.
- FFT-based (diffract, far-field intensity): an N x N FFT accumulates ~``eps log2(N^2)`` ~1e-6
  of the largest value; squares keep that relative error: 1e-5. The modulus ``sqrt`` magnifies
  the absolute error of a dark pixel (I ~ 0) to ``sqrt(eps * max I)``, ~3e-4 of the largest
  amplitude: ``RTOL_SQRT`` = 1e-3 for diffract's values and gradients.
- losses: element-wise ~1e-7; means of up to ~1e5 elements, summed in different orders:
  ``RTOL_SUM``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xb_compare import agree
from xb_strategies import (
    XB_SETTINGS,
    batch,
    magnitude,
    offset_kind,
    offsets,
    positive,
    real,
    seeds,
    zeros,
)

pytestmark = pytest.mark.crossbackend

RTOL_EXACT = 0.0
RTOL_SUM = 1e-5
RTOL_SQRT = 1e-3


def check(pool, prop: str, fn: str, args, *, diff=(), static=None, rtol=RTOL_SUM,
          grad_rtol=None, seed: int = 0, floor: float = 1e-30) -> None:
    """Run ``physics.<fn>`` on all backends, compare values and (``diff``) gradients."""
    req = {"op": "physics", "fn": fn, "args": list(args), "static": static or {}}
    if diff:
        req.update(weight_seed=seed, diff=tuple(diff))
    res = pool.call(req)
    agree(f"{fn} values", {b: r["values"] for b, r in res.items()}, rtol, floor=floor)
    if diff:
        agree(f"{fn} gradients", {b: r["grads"] for b, r in res.items()},
              rtol if grad_rtol is None else grad_rtol, floor=floor)


# -- layouts (exact) -------------------------------------------------------------------------

@XB_SETTINGS
@given(seed=seeds, b=batch, n=st.sampled_from([4, 64, 128]), gs=st.integers(1, 3))
def test_layouts(pool, seed, b, n, gs):
    rng = np.random.default_rng(seed)
    c = gs * gs
    chan = real(rng, (b, n, n, c))
    for fn in ("channels_to_groups", "channels_to_flat"):
        check(pool, fn, fn, [chan], rtol=RTOL_EXACT)
    check(pool, "groups_to_channels", "groups_to_channels", [real(rng, (b, c, n, n))],
          rtol=RTOL_EXACT)
    check(pool, "flat_to_channels", "flat_to_channels", [real(rng, (b * c, n, n, 1))],
          static={"c": c}, rtol=RTOL_EXACT)
    check(pool, "offsets_to_pairs", "offsets_to_pairs", [real(rng, (b, 1, 2, c), 5.0)],
          rtol=RTOL_EXACT)
    check(pool, "pairs_to_offsets", "pairs_to_offsets", [real(rng, (b, c, 2), 5.0)],
          rtol=RTOL_EXACT)


@XB_SETTINGS
@given(seed=seeds, b=batch, n=st.sampled_from([4, 8, 64]), extra=st.sampled_from([0, 1, 6]))
def test_crop_and_pad(pool, seed, b, n, extra):
    rng = np.random.default_rng(seed)
    check(pool, "centre_crop", "centre_crop", [real(rng, (b, n + extra, n + extra))],
          static={"n": n}, rtol=RTOL_EXACT, diff=(0,), seed=seed)
    check(pool, "pad_centre", "pad_centre", [real(rng, (b, n, n))], static={"size": n + extra},
          rtol=RTOL_EXACT, diff=(0,), seed=seed)


# -- translation, extraction, reassembly ------------------------------------------------------

@XB_SETTINGS
@given(seed=seeds, b=batch, hw=st.sampled_from([(8, 8), (12, 10), (64, 64), (128, 128)]),
       kind=offset_kind, scale=magnitude)
def test_translate(pool, seed, b, hw, kind, scale):
    rng = np.random.default_rng(seed)
    h, w = hw
    re, im = real(rng, (b, h, w), scale), real(rng, (b, h, w), scale)
    off = offsets(rng, (b, 2), kind, reach=min(h, w) / 3)
    check(pool, "translate", "translate", [re, im, off], diff=(0, 1, 2), seed=seed)
    check(pool, "translate_real", "translate_real", [re, off], diff=(0, 1), seed=seed)


@XB_SETTINGS
@given(seed=seeds, kind=offset_kind, out_len=st.sampled_from([1, 8, 64]),
       src=st.sampled_from([8, 70]), start=st.integers(0, 3),
       shape=st.sampled_from([(), (3,), (2, 4)]))
def test_shift_weights(pool, seed, kind, out_len, src, start, shape):
    rng = np.random.default_rng(seed)
    off = offsets(rng, shape, kind, reach=5.0)
    check(pool, "shift_weights", "shift_weights", [off],
          static={"out_len": out_len, "src_len": src, "start": start}, diff=(0,), seed=seed)


groups = st.tuples(st.sampled_from([1, 3]), st.integers(1, 3), st.sampled_from([8, 64]),
                   st.sampled_from([0, 4, 14]))


@XB_SETTINGS
@given(seed=seeds, shape=groups, kind=offset_kind, scale=magnitude)
def test_extract_patches(pool, seed, shape, kind, scale):
    g, gs, n, extra = shape
    rng = np.random.default_rng(seed)
    p = n + extra
    re, im = real(rng, (g, p, p), scale), real(rng, (g, p, p), scale)
    off = offsets(rng, (g, gs * gs, 2), kind, reach=extra / 2 + 1)
    check(pool, "extract_patches", "extract_patches", [re, im, off], static={"n": n},
          diff=(0, 1, 2), seed=seed)


@XB_SETTINGS
@given(seed=seeds, shape=groups, kind=offset_kind, normalize=st.booleans(),
       holes=st.sampled_from([0.0, 0.3]))
def test_reassemble_patches(pool, seed, shape, kind, normalize, holes):
    g, gs, n, extra = shape
    rng = np.random.default_rng(seed)
    c = gs * gs
    re, im = real(rng, (g, c, n, n)), real(rng, (g, c, n, n))
    off = offsets(rng, (g, c, 2), kind, reach=extra / 2 + 1)
    support = (rng.random((n, n)) >= holes).astype(np.float32)
    # Normalised canvases divide by counts >= eps = 1e-3: relative to the largest value the
    # division keeps the sum's rounding, but a pixel reached by a sliver of weight is a
    # ratio of two tiny sums; compare against a 1e-3 floor of the scale.
    check(pool, "reassemble_patches", "reassemble_patches", [re, im, off, support],
          static={"size": n + extra, "normalize": normalize}, diff=(0, 1, 2), seed=seed,
          rtol=1e-4 if normalize else RTOL_SUM)


# -- full-scan extraction ---------------------------------------------------------------------

scan_shapes = st.tuples(batch, st.sampled_from([8, 64]), st.sampled_from([0, 5, 30]),
                        st.sampled_from([0, 9]))


def _positions(rng, b, n, h, w, integer):
    pos = np.stack([rng.uniform(n // 2, w - n // 2 - 1.001, b),
                    rng.uniform(n // 2, h - n // 2 - 1.001, b)], axis=1)
    return (np.floor(pos) if integer else pos).astype(np.float32)


@XB_SETTINGS
@given(seed=seeds, shape=scan_shapes, integer=st.booleans(), scale=magnitude)
def test_extract_at(pool, seed, shape, integer, scale):
    b, n, extra_h, extra_w = shape
    h, w = n + 2 + extra_h, n + 2 + extra_w
    rng = np.random.default_rng(seed)
    re, im = real(rng, (h, w), scale), real(rng, (h, w), scale)
    pos = _positions(rng, b, n, h, w, integer)
    check(pool, "extract_at", "extract_at", [re, im, pos], static={"n": n}, diff=(0, 1, 2),
          seed=seed)
    check(pool, "extract_real_at", "extract_real_at", [re, pos], static={"n": n}, diff=(0, 1),
          seed=seed)
    check(pool, "extract_many_at", "extract_many_at", [re, im, re * 2, pos], static={"n": n},
          diff=(0, 1, 2, 3), seed=seed)
    check(pool, "window_indices", "window_indices", [pos], static={"n": n, "width": w},
          rtol=RTOL_EXACT)


@XB_SETTINGS
@given(seed=seeds, shape=scan_shapes, scale=st.sampled_from([1.0, 30.0]),
       probe_zeros=zeros)
def test_scan_forward(pool, seed, shape, scale, probe_zeros):
    b, n, extra_h, extra_w = shape
    h, w = n + 2 + extra_h, n + 2 + extra_w
    rng = np.random.default_rng(seed)
    o_re, o_im = real(rng, (h, w)), real(rng, (h, w))
    p_re, p_im = real(rng, (n, n), 1.0, probe_zeros), real(rng, (n, n), 1.0, probe_zeros)
    pos = _positions(rng, b, n, h, w, integer=False)
    check(pool, "scan_forward", "scan_forward", [o_re, o_im, o_re * 0, p_re, p_im, pos],
          static={"scale": scale}, diff=(0, 1, 3, 4, 5), seed=seed)
    check(pool, "scan_intensities", "scan_intensities", [o_re, o_im, p_re, p_im, pos],
          static={"scale": scale}, diff=(0, 1, 2, 3, 4), seed=seed)


# -- illumination and diffraction -------------------------------------------------------------

fields = st.tuples(batch, st.sampled_from([4, 8, 64, 128]))


@XB_SETTINGS
@given(seed=seeds, shape=fields, scale=magnitude, probe_zeros=zeros,
       sigma=st.sampled_from([0.0, 0.7, 2.0]), masked=st.booleans())
def test_illuminate(pool, seed, shape, scale, probe_zeros, sigma, masked):
    b, n = shape
    rng = np.random.default_rng(seed)
    o = [real(rng, (b, n, n), scale) for _ in range(2)]
    p = [real(rng, (n, n), 1.0, probe_zeros) for _ in range(2)]
    args = [*o, *p]
    static = {"smoothing_sigma": sigma}
    if masked:
        args.append((rng.random((n, n)) > 0.5).astype(np.float32))
    check(pool, "illuminate", "illuminate", args, static=static, diff=(0, 1, 2, 3), seed=seed)
    check(pool, "complex_multiply", "complex_multiply", args[:4], diff=(0, 1, 2, 3), seed=seed)
    if sigma:
        check(pool, "smooth", "smooth", o, static={"sigma": sigma}, diff=(0, 1), seed=seed)


@XB_SETTINGS
@given(seed=seeds, shape=fields, scale=magnitude, zero_fraction=zeros)
def test_diffraction(pool, seed, shape, scale, zero_fraction):
    b, n = shape
    rng = np.random.default_rng(seed)
    re, im = real(rng, (b, n, n), scale, zero_fraction), real(rng, (b, n, n), scale, zero_fraction)
    check(pool, "far_field_intensity", "far_field_intensity", [re, im], diff=(0, 1), seed=seed)
    check(pool, "diffract", "diffract", [re, im], diff=(0, 1), seed=seed, rtol=RTOL_SQRT)
    check(pool, "fftshift2", "fftshift2", [re], rtol=RTOL_EXACT)


# -- losses -------------------------------------------------------------------------------------

@XB_SETTINGS
@given(seed=seeds, shape=st.sampled_from([(1, 4, 4), (3, 16, 16), (2, 64, 64, 4)]),
       level=st.sampled_from([1e-6, 1.0, 1e4]), dark=zeros)
def test_poisson_losses(pool, seed, shape, level, dark):
    rng = np.random.default_rng(seed)
    lam = positive(rng, shape, level, dark)  # predictions at exactly 0 too (log edge)
    k = np.floor(positive(rng, shape, level, dark))
    for fn in ("poisson_nll", "mean_poisson_nll", "poisson_deviance", "mean_poisson_deviance"):
        check(pool, fn, fn, [lam, k], diff=(0,), seed=seed)


@XB_SETTINGS
@given(seed=seeds, shape=st.sampled_from([(1, 4, 4), (3, 16, 16), (2, 64, 64)]),
       scale=magnitude, ties=zeros)
def test_real_losses(pool, seed, shape, scale, ties):
    rng = np.random.default_rng(seed)
    # exact zeros / equal neighbours / equal prediction and target: the kinks of the L1 terms
    a, b = real(rng, shape, scale, ties), real(rng, shape, scale, ties)
    check(pool, "absolute", "absolute", [a], diff=(0,), seed=seed)
    c, d = real(rng, shape, scale), real(rng, shape, scale)
    check(pool, "amplitude_mae", "amplitude_mae", [np.abs(a), np.abs(b)], diff=(0, 1), seed=seed)
    check(pool, "total_variation", "total_variation", [a, b], diff=(0, 1), seed=seed)
    check(pool, "realspace_mae", "realspace_mae", [a, b, c, d], diff=(0, 1, 2, 3), seed=seed)


# canvas_size / canvas_margin are integer arithmetic in Python: one example documents it
@settings(max_examples=1)
@given(n=st.just(64))
def test_integer_geometry_needs_no_backend(n):
    from ptycho_k3 import physics

    assert physics.canvas_size(n, 2) == 78 and physics.canvas_margin(n, 78) == 7

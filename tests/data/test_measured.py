"""``ptycho_k3.data.measured``: the steps of :func:`prepare` and the invalid-pixel contract.

The property tests guard docs/conventions.md §22: the value a detector wrote at an invalid pixel
(masked by the file, or NaN / inf / negative / saturated) reaches nothing downstream: not the
prepared :class:`ScanData`, not the grouped network input or its normalisation factor, not the
PINN loss terms, not the refinement's counts. Changing a valid pixel does change the loss, so
the comparison can fail.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from data_helpers import centred_counts, gaussian_probe
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_k3.data import DataError, group_scan
from ptycho_k3.data.measured import (
    MeasuredOptions,
    RawScan,
    bin_frames,
    decide_dc,
    fourier_resample,
    looks_like,
    neutral_fill,
    prepare,
    probe_from_data,
    valid_pixels,
)

# --------------------------------------------------------------------------------------------
# the steps


@pytest.mark.parametrize("kwargs", [
    {"diffraction_kind": "photons"}, {"dc": "middle"}, {"positions_unit": "mm"},
    {"format": "tiff"}, {"saturation": 0}, {"saturation": math.inf}, {"detector_crop": 0},
    {"detector_bin": 1.5}, {"object_pixel_size": -1e-8}, {"object_pixel_size": math.nan},
])
def test_options_are_validated(kwargs: dict[str, Any]) -> None:
    """A bad option is a ValueError naming it (the CLI turns it into a usage error)."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MeasuredOptions(**kwargs)


def _raw(data: np.ndarray, **kw: Any) -> RawScan:
    m = data.shape[0]
    return RawScan(source="f.npz", data=data, data_key="diff3d",
                   positions=np.zeros((m, 2)), positions_key="xcoords", **kw)


def test_valid_pixels_counts_every_reason() -> None:
    """Mask (nonzero = valid), NaN/inf, negative and saturated pixels are invalid, each reason
    counted on its own (+inf is non-finite and saturated); a mask of the wrong shape or dtype is
    a DataError naming the file and key."""
    data = np.full((2, 4, 4), 5.0)
    data[0, 0, 0], data[0, 0, 1], data[1, 3, 3], data[1, 2, 2] = np.nan, np.inf, -1.0, 9.0
    mask = np.ones((4, 4))
    mask[1, 1] = 0
    valid, why = valid_pixels(_raw(data, mask=mask), saturation=9.0)
    assert why == {"masked": 2, "non_finite": 2, "negative": 1, "saturated": 2}
    expected = np.ones((2, 4, 4), bool)
    expected[:, 1, 1] = False
    expected[0, 0, :2] = expected[1, 3, 3] = expected[1, 2, 2] = False
    np.testing.assert_array_equal(valid, expected)
    with pytest.raises(DataError, match=r"f\.npz: 'mask' has shape \(3, 4\)"):
        valid_pixels(_raw(data, mask=np.ones((3, 4))), None)
    with pytest.raises(DataError, match=r"f\.npz: 'mask' has dtype <U1"):
        valid_pixels(_raw(data, mask=np.full((4, 4), "x")), None)


def test_looks_like() -> None:
    """Integers above 1 look like counts, mostly non-integers like amplitudes, 0/1 or a mix
    cannot be told; only valid pixels are looked at."""
    counts = np.array([[[0.0, 3.0], [7.0, 1.0]]])
    every = np.ones(counts.shape, bool)
    assert looks_like(counts, every) == "counts"
    assert looks_like(np.sqrt(counts + 0.5), every) == "amplitude"
    assert looks_like(np.array([[[0.0, 1.0], [1.0, 0.0]]]), every) is None
    mixed = np.array([[[0.5, 3.0], [7.0, 1.0]]])
    assert looks_like(mixed, every) is None
    assert looks_like(mixed, mixed != 0.5) == "counts"
    assert looks_like(counts, np.zeros(counts.shape, bool)) is None


def test_decide_dc() -> None:
    """The layout whose central quarter holds more of the mean pattern."""
    centred = centred_counts(1, 64)[0]
    assert decide_dc(centred) == "centre"
    assert decide_dc(np.fft.ifftshift(centred)) == "corner"


def test_neutral_fill() -> None:
    """A pixel invalid in some patterns shows the mean of its valid values; a pixel never valid
    the mean of the valid pixels on its ring around the centre; all valid -> None."""
    rng = np.random.default_rng(0)
    amp = rng.uniform(1, 2, (3, 64, 64)).astype(np.float32)
    assert neutral_fill(amp, None) is None
    valid = np.ones(amp.shape, bool)
    valid[0, 10, 12] = False
    valid[:, 32, 40] = False  # never valid: ring of radius 8
    fill = neutral_fill(np.where(valid, amp, 0), valid)
    assert fill[10, 12] == pytest.approx(amp[1:, 10, 12].mean(), rel=1e-6)
    yy, xx = np.mgrid[0:64, 0:64] - 32
    ring = (np.rint(np.hypot(xx, yy)) == 8) & valid.all(axis=0)
    per_pixel = amp.mean(axis=0)
    assert fill[32, 40] == pytest.approx(per_pixel[ring].mean(), rel=1e-5)
    np.testing.assert_allclose(fill[valid.all(axis=0)], per_pixel[valid.all(axis=0)], rtol=1e-6)

    # a central beam stop covers whole rings (radius 0-2): they take the innermost valid ring's
    # value, not 0 (a dark hole where the pattern is brightest)
    counts = centred_counts(3, 64)
    stop = np.ones((64, 64), bool)
    stop[(np.rint(np.hypot(xx, yy)) <= 2)] = False
    amp = np.sqrt(counts) * stop
    fill = neutral_fill(amp, stop)
    ring3 = (np.rint(np.hypot(xx, yy)) == 3)
    assert fill[32, 32] == pytest.approx(amp.mean(axis=0)[ring3].mean(), rel=1e-5)
    assert fill[32, 32] > 0.5 * np.sqrt(counts[:, 32, 32]).mean()
    np.testing.assert_array_equal(fill[~stop], fill[32, 32])


def test_bin_and_resample_and_probe_from_data() -> None:
    """``bin_frames`` sums blocks; ``fourier_resample`` keeps the far field ``|FFT(P)|^2 / N^2``
    at every kept detector pixel (so a band-limited probe keeps its power) and gives the image's
    samples at every other pixel; ``probe_from_data`` has ``sum |P|^2`` = the mean pattern's
    total."""
    a = np.arange(2 * 4 * 6, dtype=np.float64).reshape(2, 4, 6)
    np.testing.assert_array_equal(bin_frames(a, 2)[1, 1, 2],
                                  a[1, 2:4, 4:6].sum())
    p = gaussian_probe(128, 10)
    half = fourier_resample(p, 64)

    def far_field(q: np.ndarray) -> np.ndarray:
        n = q.shape[-1]
        return np.abs(np.fft.fftshift(np.fft.fft2(q.astype(np.complex128)))) ** 2 / n**2

    np.testing.assert_allclose(far_field(half), far_field(p)[32:96, 32:96], rtol=1e-4,
                               atol=1e-6 * far_field(p).max())
    assert np.sum(np.abs(half) ** 2) == pytest.approx(np.sum(np.abs(p) ** 2), rel=1e-5)
    np.testing.assert_allclose(half, 2 * p[::2, ::2], atol=1e-4)
    mean = centred_counts(4, 64).mean(axis=0)
    probe = probe_from_data(mean)
    assert probe.dtype == np.complex64 and probe.shape == (64, 64)
    assert np.sum(np.abs(probe.astype(np.complex128)) ** 2) == pytest.approx(mean.sum(), rel=1e-5)


def test_metadata_value_outside_the_choices_is_an_error() -> None:
    """A ``_metadata`` reading directive with an unknown value names the file and the key."""
    raw = _raw(centred_counts(2, 64), metadata={"dc": "middle"})
    with pytest.raises(DataError, match=r"f\.npz: '_metadata' has dc='middle'"):
        prepare(raw)


def test_a_rejected_file_logs_nothing(caplog) -> None:
    """Decisions are logged only once the file is accepted: a file rejected late (frames that
    cannot be cropped) leaves the error as the only report (the commands print one line)."""
    data = centred_counts(2, 64)
    data[0, 0, 0] = np.nan  # would log "1 invalid detector pixels"
    raw = _raw(data, metadata={"diffraction_kind": "amplitude"})  # would warn: looks like counts
    with caplog.at_level(logging.DEBUG, logger="ptycho_k3"), \
            pytest.raises(DataError, match="cannot crop to 128x128"):
        prepare(raw, MeasuredOptions(detector_crop=128))
    assert [r for r in caplog.records if r.name.startswith("ptycho_k3")] == []
    with caplog.at_level(logging.INFO, logger="ptycho_k3"):
        prepare(raw)
    assert "1 invalid detector pixels (non_finite 1)" in caplog.text
    assert "like photon counts" in caplog.text


# --------------------------------------------------------------------------------------------
# invalid pixels reach nothing downstream

M = 6
#: saturation level per kind, in file units (the frames stay below it)
SATURATION = {"counts": 5000.0, "amplitude": 100.0}
#: a 3 x 2 raster, 4 pixels apart (dense enough for gridsize-2 groups)
POSITIONS = np.array([[40.0 + 4 * (i % 3), 40.0 + 4 * (i // 3)] for i in range(M)])


def _invalid_values(kind: str) -> st.SearchStrategy[float]:
    """Values that are invalid by themselves: NaN, +-inf, negative, saturated."""
    return st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(-1e6, -0.125, width=32),
        st.floats(SATURATION[kind], 1e9, width=32),
    )


@st.composite
def invalid_pixel_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Raw frames with one invalid pixel whose value differs between ``a`` and ``b``, plus ``c``:
    ``a`` with one VALID pixel changed, and the reading options."""
    kind = draw(st.sampled_from(["counts", "amplitude"]))
    dc = draw(st.sampled_from(["centre", "corner"]))
    reduce = draw(st.sampled_from([None, "crop", "bin"]))
    how = draw(st.sampled_from(["mask", "mask_per_pattern", "value"]))
    h = 64 if reduce is None else 128
    pattern = draw(st.integers(0, M - 1))
    row, col = draw(st.integers(0, h - 1)), draw(st.integers(0, h - 1))
    if how == "value":
        old, new = draw(_invalid_values(kind)), draw(_invalid_values(kind))
    else:  # masked: any value at all, also NaN or negative
        old = draw(st.floats(0, SATURATION[kind] / 2, width=32))
        new = draw(st.floats(width=32))
    counts = centred_counts(M, h, seed=draw(st.integers(0, 2**16)))
    frames = (counts if kind == "counts" else np.sqrt(counts)).astype(np.float32)

    def raw_index(r: int, c: int) -> tuple[int, int]:
        """The raw pixel that is pixel (r, c) of the centred frame."""
        return ((r - h // 2) % h, (c - h // 2) % h) if dc == "corner" else (r, c)

    mask = None
    if how == "mask":
        mask = np.ones((h, h), np.uint8)
        mask[row, col] = 0
    elif how == "mask_per_pattern":
        mask = np.ones((M, h, h), bool)
        mask[pattern, row, col] = False
    # a valid pixel near the centre (inside any crop), away from the invalid one's 2x2 block
    centred_rc = (np.array([row, col]) + (h // 2 if dc == "corner" else 0)) % h
    vr, vc = h // 2 + 1, h // 2 + 2
    if np.max(np.abs(centred_rc - [vr, vc])) <= 4:
        vr, vc = h // 2 - 6, h // 2 - 5
    frames = np.fft.ifftshift(frames, axes=(-2, -1)) if dc == "corner" else frames
    a, b = frames.copy(), frames.copy()
    a[pattern, row, col], b[pattern, row, col] = old, new
    c = a.copy()
    rv, cv = raw_index(vr, vc)
    c[0, rv, cv] = 0.9 * SATURATION[kind]  # bright, still below the saturation level
    options = MeasuredOptions(diffraction_kind=kind, dc=dc, saturation=SATURATION[kind],
                              detector_crop=64 if reduce == "crop" else None,
                              detector_bin=2 if reduce == "bin" else None)
    probe = gaussian_probe(h, 6) if draw(st.booleans()) else None
    return {"a": a, "b": b, "c": c, "mask": mask, "probe": probe, "options": options}


def _prepare(case: dict[str, Any], frames: str):
    raw = RawScan(source="scan.npz", data=case[frames], data_key="diff3d",
                  positions=POSITIONS.copy(), positions_key="xcoords", mask=case["mask"],
                  probe=case["probe"])
    return prepare(raw, case["options"])


@given(invalid_pixel_cases())
def test_invalid_pixel_value_reaches_no_array(case: dict[str, Any]) -> None:
    """(a) the prepared ScanData, (b) the grouped network input (gridsize 2) and its
    normalisation factor and (d) the refinement's counts do not depend on an invalid pixel's
    value; a changed valid pixel changes the prepared diffraction and the factor."""
    from ptycho_k3.refine import measurements

    sa, sb, sc = (_prepare(case, k) for k in "abc")
    for field in ("diffraction", "valid", "probe", "xcoords", "ycoords"):
        np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field), err_msg=field)
    assert sa.metadata == sb.metadata
    assert np.all(np.isfinite(sa.diffraction)) and np.all(sa.diffraction >= 0)

    ga, gb, gc = (group_scan(s, 2, n_groups=M, seed=0) for s in (sa, sb, sc))
    np.testing.assert_array_equal(np.asarray(ga.diffraction), np.asarray(gb.diffraction))
    assert ga.norm_factor == gb.norm_factor
    if sa.valid is None:
        assert ga.valid is None and gb.valid is None
    else:
        np.testing.assert_array_equal(ga.valid, gb.valid)
        # invalid pixels show the neutral fill (made from valid values only) times the factor
        fill = neutral_fill(sa.diffraction, sa.valid) * np.float32(ga.norm_factor)
        shown = np.broadcast_to(fill[None, :, :, None], ga.valid.shape)
        np.testing.assert_array_equal(np.asarray(ga.diffraction)[ga.valid == 0],
                                      shown[ga.valid == 0])
    assert gc.norm_factor != ga.norm_factor
    assert not np.array_equal(sc.diffraction, sa.diffraction)

    ma, mb = measurements(sa), measurements(sb)
    np.testing.assert_array_equal(ma.counts, mb.counts)
    np.testing.assert_array_equal(ma.valid, mb.valid)
    assert ma.scale == mb.scale


@functools.lru_cache(maxsize=1)
def _tiny_pinn() -> Any:
    """A PINN (N 64, gridsize 1, n_filters_scale 1) with both diffraction terms weighted."""
    from ptycho_k3.config import ModelConfig, resolve_loss
    from ptycho_k3.model import build_model

    return build_model(ModelConfig(N=64, n_filters_scale=1),
                       loss=resolve_loss("pinn", nll_weight=1.0, mae_weight=1.0))


def _loss(scan) -> tuple[dict[str, float], float]:
    """The unweighted terms and the total loss of one batch of every pattern, built like
    ``ptycho_k3.train.train`` builds it (inputs ``s X``, target amplitude = the input, valid)."""
    from keras import ops

    from ptycho_k3 import physics
    from ptycho_k3.train import model_inputs

    model = _tiny_pinn().training
    grouped = group_scan(scan, 1, n_groups=M, seed=0)
    inputs = model_inputs(grouped, physics.intensity_scale(1e9, 64))
    x = tuple(ops.convert_to_tensor(a) for a in inputs)  # tensors, as Keras hands them to the loss
    targets = {"amplitude": x[0]}
    if grouped.valid is not None:
        targets["valid"] = ops.convert_to_tensor(grouped.valid)
    y_pred = model(x, training=False)
    terms = {k: float(ops.convert_to_numpy(v)) for k, v in model.loss_terms(targets, y_pred).items()}
    total = float(ops.convert_to_numpy(model.compute_loss(x=x, y=targets, y_pred=y_pred)))
    return terms, total


@settings(max_examples=10)
@given(invalid_pixel_cases())
def test_invalid_pixel_value_reaches_no_loss_term(case: dict[str, Any]) -> None:
    """(c) The PINN's ``nll`` and ``mae`` terms (and the total) on a batch built like training
    builds it do not depend on an invalid pixel's value; changing a valid pixel changes them."""
    sa, sb, sc = (_prepare(case, k) for k in "abc")
    (ta, la), (tb, lb), (tc, lc) = _loss(sa), _loss(sb), _loss(sc)
    assert set(ta) == {"nll", "mae"} and all(math.isfinite(v) for v in ta.values())
    for name in ta:
        assert tb[name] == pytest.approx(ta[name], rel=1e-6, abs=0), name
    assert lb == pytest.approx(la, rel=1e-6, abs=0)
    assert abs(lc - la) > 1e-5 * abs(la), (la, lc)
    assert abs(tc["nll"] - ta["nll"]) > 1e-5 * abs(ta["nll"]), (ta, tc)


def test_a_valid_pixel_mask_is_what_the_loss_uses() -> None:
    """Without the ``valid`` target the same batch's loss does depend on the value shown at an
    invalid pixel: the mask in the loss is what makes the property above hold."""
    counts = centred_counts(M, 64).astype(np.float32)
    mask = np.ones((64, 64), np.uint8)
    mask[30:34, 30:34] = 0  # a beam stop on the bright centre
    raw = RawScan(source="scan.npz", data=counts, data_key="diff3d", positions=POSITIONS.copy(),
                  positions_key="xcoords", mask=mask, kind="counts")
    scan = prepare(raw)
    _, masked = _loss(scan)
    _, unmasked = _loss(replace(scan, valid=None))
    assert abs(masked - unmasked) > 1e-4 * abs(masked)

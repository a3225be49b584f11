"""load_npz / save_npz: variants, rejections, round trip, fuzzing."""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import pytest
from data_helpers import npz_arrays, small_scan
from hypothesis import given
from hypothesis import strategies as st

from ptycho_k3.data import DataError, ScanData, load_npz, save_npz


def write(tmp_path, arrays, name="scan.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_minimal_file_defaults(tmp_path):
    a = npz_arrays()
    d = load_npz(write(tmp_path, a))
    assert d.n == 64 and d.n_positions == 6
    assert d.diffraction.dtype == np.float32 and d.probe.dtype == np.complex64
    assert d.xcoords.dtype == np.float64
    np.testing.assert_array_equal(d.xcoords_start, a["xcoords"])
    np.testing.assert_array_equal(d.ycoords_start, a["ycoords"])
    np.testing.assert_array_equal(d.scan_index, np.zeros(6, np.int64))
    assert d.object is None and d.patches is None and d.metadata == {} and d.nphotons is None
    assert d.source == str(tmp_path / "scan.npz")


def test_diffraction_alias_and_preference(tmp_path):
    a = npz_arrays()
    a["diffraction"] = a.pop("diff3d")
    d = load_npz(write(tmp_path, a))
    np.testing.assert_array_equal(d.diffraction, a["diffraction"])
    a["diff3d"] = a["diffraction"] * 2
    d = load_npz(write(tmp_path, a, "both.npz"))
    np.testing.assert_array_equal(d.diffraction, a["diff3d"])  # diff3d wins


def test_layout_variants(tmp_path):
    a = npz_arrays()
    ref = a["diff3d"]
    a["diff3d"] = ref[..., None]
    np.testing.assert_array_equal(load_npz(write(tmp_path, a, "a.npz")).diffraction, ref)
    a["diff3d"] = np.transpose(ref, (1, 2, 0))
    np.testing.assert_array_equal(load_npz(write(tmp_path, a, "b.npz")).diffraction, ref)


def test_uint16_counts_are_exact_float32(tmp_path):
    a = npz_arrays()
    a["diff3d"] = np.full((6, 64, 64), 65535, np.uint16)
    d = load_npz(write(tmp_path, a))
    assert d.diffraction.dtype == np.float32
    assert float(np.asarray(d.diffraction).max()) == 65535.0


def test_optional_keys(tmp_path):
    a = npz_arrays()
    rng = np.random.default_rng(1)
    a["objectGuess"] = (rng.random((90, 100)) + 0j).astype(np.complex64)
    a["xcoords_start"] = a["xcoords"] + 1
    a["scan_index"] = np.arange(6)
    a["ground_truth_patches"] = np.ones((6, 64, 64), np.complex64)
    a["_metadata"] = np.array(json.dumps({"physics_parameters": {"nphotons": 1e5}}))
    d = load_npz(write(tmp_path, a))
    assert d.object.shape == (90, 100)
    np.testing.assert_array_equal(d.xcoords_start, a["xcoords"] + 1)
    np.testing.assert_array_equal(d.scan_index, np.arange(6))
    assert d.patches.shape == (6, 64, 64) and d.nphotons == 1e5
    a["Y"] = np.full((6, 64, 64, 1), 2 + 1j, np.complex64)
    d = load_npz(write(tmp_path, a, "y.npz"))
    assert d.patches[0, 0, 0] == 2 + 1j  # Y preferred over ground_truth_patches


def test_y_with_other_length_is_ignored(tmp_path):
    a = npz_arrays()
    a["Y"] = np.ones((5, 64, 64), np.complex64)
    with pytest.warns(UserWarning, match="'Y'"):
        d = load_npz(write(tmp_path, a))
    assert d.patches is None


def test_legacy_pickled_metadata(tmp_path):
    a = npz_arrays()
    meta = np.empty((), dtype=object)
    meta[()] = json.dumps({"nphotons": 1e7})
    a["_metadata"] = meta
    d = load_npz(write(tmp_path, a))
    assert d.nphotons == 1e7


def test_round_trip_and_plain_metadata(tmp_path):
    s = small_scan(m=12)
    path = save_npz(tmp_path / "out" / "rt.npz", s)
    d = load_npz(path)
    for field in ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "diffraction",
                  "probe", "object", "scan_index"):
        np.testing.assert_array_equal(getattr(d, field), getattr(s, field))
    assert d.metadata == {"nphotons": 1e6}
    with np.load(path, allow_pickle=False) as raw:  # no pickles anywhere
        assert {"diff3d", "xcoords", "ycoords", "xcoords_start", "ycoords_start", "scan_index",
                "probeGuess", "objectGuess", "_metadata"} <= set(raw.files)
        assert raw["probeGuess"].dtype == np.complex64
        assert raw["_metadata"].dtype.kind == "U"
    assert not [f for f in os.listdir(path.parent) if f.endswith(".tmp")]  # atomic: no leftovers


def test_select_subset():
    s = small_scan(m=10)
    sub = s.select([1, 3])
    assert sub.n_positions == 2 and sub.xcoords[1] == s.xcoords[3]


def _reject(tmp_path, arrays, pattern, name="bad.npz"):
    path = write(tmp_path, arrays, name)
    with pytest.raises(DataError, match=pattern) as info:
        load_npz(path)
    assert name in str(info.value)
    return str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_npz(tmp_path / "nope.npz")


def test_not_an_npz_and_truncated(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="not a readable NPZ"):
        load_npz(tmp_path / "text.npz")
    good = write(tmp_path, npz_arrays(), "good.npz")
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="trunc.npz"):
        load_npz(tmp_path / "trunc.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single .npy"):
        load_npz(tmp_path / "single.npy")


@pytest.mark.parametrize("key", ["xcoords", "ycoords", "diff3d"])
def test_missing_key(tmp_path, key):
    a = npz_arrays()
    del a[key]
    _reject(tmp_path, a, f"missing key '{key}'")


def test_missing_probe_is_made_from_the_data(tmp_path, caplog):
    """No ``probeGuess``: a probe from the mean pattern (docs/conventions.md §22), logged at
    INFO and recorded, with ``sum |P|^2`` = the mean counts per pattern (amplitudes squared)."""
    a = npz_arrays()
    del a["probeGuess"]
    with caplog.at_level(logging.INFO, logger="ptycho_k3"):
        d = load_npz(write(tmp_path, a))
    assert "no probe in the file" in caplog.text and "scan.npz" in caplog.text
    assert d.probe.shape == (64, 64) and d.probe.dtype == np.complex64
    assert np.all(np.isfinite(d.probe)) and d.reading["probe"].startswith("from data")
    mean_counts = np.mean(np.sum(a["diff3d"].astype(np.float64) ** 2, axis=(1, 2)))
    assert np.sum(np.abs(d.probe.astype(np.complex128)) ** 2) == pytest.approx(mean_counts,
                                                                                 rel=1e-4)


def test_length_mismatch(tmp_path):
    a = npz_arrays()
    a["ycoords"] = a["ycoords"][:5]
    _reject(tmp_path, a, re.escape("'ycoords' has 5 entries; expected 6"))
    a = npz_arrays()
    a["diff3d"] = a["diff3d"][:5]
    _reject(tmp_path, a, re.escape("expected (M, N, N) = (6, N, N)"))


def test_non_finite(tmp_path):
    """Non-finite positions are an error; non-finite diffraction pixels are invalid pixels
    (stored as 0, recorded), and a pattern with nothing else is an error naming file and key."""
    a = npz_arrays()
    a["xcoords"][2] = np.nan
    _reject(tmp_path, a, "'xcoords' contains 1 non-finite")
    a = npz_arrays()
    a["diff3d"][0, 0, 0] = np.inf
    a["diff3d"][4, 7, 9] = np.nan
    d = load_npz(write(tmp_path, a))
    valid, diff = np.asarray(d.valid), np.asarray(d.diffraction)  # read on demand: all of it
    assert d.valid.shape == (6, 64, 64) and np.count_nonzero(~valid) == 2
    assert not d.valid[0, 0, 0] and not d.valid[4, 7, 9]
    assert d.diffraction[0, 0, 0] == 0 and d.diffraction[4, 7, 9] == 0
    assert d.reading["invalid_pixels"]["non_finite"] == 2
    np.testing.assert_array_equal(diff[valid], a["diff3d"][valid])
    a["diff3d"][5] = np.nan
    _reject(tmp_path, a, "'diff3d' pattern 5 has no valid pixel")


def test_negative_and_complex_diffraction(tmp_path):
    """A negative value is an invalid pixel; a pattern of only negatives and complex
    diffraction are errors."""
    a = npz_arrays()
    a["diff3d"][0, 1, 1] = -1
    d = load_npz(write(tmp_path, a))
    assert not d.valid[0, 1, 1] and np.count_nonzero(~np.asarray(d.valid)) == 1
    assert d.diffraction[0, 1, 1] == 0
    assert d.reading["invalid_pixels"]["negative"] == 1
    a["diff3d"][2] = -0.5
    _reject(tmp_path, a, "'diff3d' pattern 2 has no valid pixel")
    a = npz_arrays()
    a["diff3d"] = a["diff3d"].astype(np.complex64)
    _reject(tmp_path, a, "'diff3d' is complex")


def test_probe_shape_and_bad_n(tmp_path):
    a = npz_arrays()
    a["probeGuess"] = a["probeGuess"][:32, :32]
    _reject(tmp_path, a, re.escape("'probeGuess' has shape (32, 32); expected (N, N) = (64, 64)"))
    a = npz_arrays(n=32)  # frames and probe agree, but N = 32 is not supported
    _reject(tmp_path, a, "'diff3d' frames are 32x32 after crop/bin; N must be one of")
    del a["probeGuess"]
    _reject(tmp_path, a, "N must be one of")


def test_empty_dataset(tmp_path):
    a = npz_arrays()
    a["xcoords"] = np.zeros(0)
    a["ycoords"] = np.zeros(0)
    a["diff3d"] = np.zeros((0, 64, 64), np.float32)
    _reject(tmp_path, a, "empty dataset")


def test_wrong_dtype_and_object_arrays(tmp_path):
    a = npz_arrays()
    a["xcoords"] = np.array(["a"] * 6)
    _reject(tmp_path, a, "'xcoords' has dtype")
    a = npz_arrays()
    a["probeGuess"] = np.array([{"x": 1}], dtype=object)
    _reject(tmp_path, a, "'probeGuess' holds Python objects")


# --- fuzzing ------------------------------------------------------------------------------

_KEYS = ["xcoords", "ycoords", "diff3d", "diffraction", "probeGuess", "objectGuess",
         "xcoords_start", "scan_index", "Y", "ground_truth_patches", "_metadata", "other"]
_DTYPES = [np.float32, np.float64, np.int16, np.uint16, np.complex64, np.bool_, "U3"]


@st.composite
def npz_contents(draw):
    m = draw(st.integers(0, 3))
    n = draw(st.sampled_from([2, 64]))
    base = npz_arrays(m=max(m, 1), n=64)
    arrays = {}
    for key in draw(st.lists(st.sampled_from(_KEYS), unique=True, max_size=8)):
        kind = draw(st.integers(0, 3))
        if kind == 0 and key in base:
            arrays[key] = base[key]
            continue
        shape = draw(st.sampled_from([(), (m,), (m, n, n), (n, n), (n, n, m), (m, n, n, 1)]))
        dtype = draw(st.sampled_from(_DTYPES))
        value = draw(st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 1e39]))
        try:
            with np.errstate(all="ignore"):
                arr = np.full(shape, value).astype(dtype)
        except (ValueError, OverflowError):
            arr = np.zeros(shape, dtype=dtype)
        arrays[key] = arr
    return arrays


@given(npz_contents())
def test_fuzz_load_npz_loads_or_raises_data_error(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("fuzz") / "f.npz"
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    try:
        d = load_npz(path)
    except DataError as exc:
        assert "f.npz" in str(exc)
        return
    assert isinstance(d, ScanData)
    assert d.diffraction.shape == (d.n_positions, d.n, d.n) and d.n in (64, 128, 256)
    assert np.all(np.isfinite(d.diffraction)) and np.all(d.diffraction >= 0)
    assert d.probe.shape == (d.n, d.n)


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("bytes") / "b.npz"
    path.write_bytes(blob)
    with pytest.raises(DataError):
        load_npz(path)


def test_import_and_load_without_keras(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, npz_arrays())
    code = ("import sys, ptycho_k3.data as d; d.load_npz(sys.argv[1]); "
            "assert 'keras' not in sys.modules, 'keras imported'")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

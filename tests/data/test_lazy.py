"""Frames read on demand (``ptycho_k3.data.lazy``) and the streaming reading path.

NumPy and h5py only, so the same under every backend: a memory-mapped ``.npy``, an NPZ member
stored without compression at a nonzero offset, the compressed fallback (read whole, one INFO
line), HDF5 datasets; indexing equals ``np.load``'s; ``select`` stays lazy; ``load_scan`` of a
stored NPZ returns lazy frames equal to the eager (in-memory) reading, with and without every
per-frame conversion (docs/conventions.md §22); the chunked validation never holds the stack.
"""

from __future__ import annotations

import json
import logging
import pickle
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from data_helpers import centred_counts, gaussian_probe, small_scan

from ptycho_k3.data import MeasuredOptions, group_scan, lazy, load_npz, load_scan, save_npz
from ptycho_k3.data.lazy import ConvertedFrames, HDF5Frames, LazyFrames, MappedFrames, RowView
from ptycho_k3.data.measured import RawScan, neutral_fill, prepare

RNG = np.random.default_rng(7)
FRAMES = RNG.random((37, 8, 6)).astype(np.float32)

#: Keys every stack must answer like the array it stands for.
KEYS: list[Any] = [
    0, 36, -1, -37, np.int64(5),
    slice(None), slice(3, 9), slice(9, 3), slice(None, None, 4), slice(30, 2, -3),
    slice(-5, None), slice(0, 100),
    np.array([4, 1, 4, 36, 0]), np.array([[2, 3], [35, 2]]), [3, 1], np.array([], np.int64),
    np.arange(37) % 2 == 0, (slice(2, 5), 3), (np.array([6, 1]), slice(1, 4), 2), (7, 1),
]


def _npz(path: Path, compress: bool = False, **arrays: np.ndarray) -> Path:
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def _stacks(tmp_path: Path) -> dict[str, LazyFrames]:
    """The same frames through every backing store."""
    np.save(tmp_path / "f.npy", FRAMES)
    npz = _npz(tmp_path / "f.npz", first=np.arange(1000.0), diff3d=FRAMES,
               fortran=np.asfortranarray(FRAMES))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("d", data=FRAMES, chunks=(4, 8, 6), compression="gzip")
    return {
        "npy": lazy.open_npy(tmp_path / "f.npy"),
        "npz": lazy.open_npz_member(npz, "diff3d"),
        "npz_fortran": lazy.open_npz_member(npz, "fortran"),
        "hdf5": lazy.open_hdf5(tmp_path / "f.h5", "d"),
        "view": lazy.open_npy(tmp_path / "f.npy").take(np.arange(37)),
        "converted": ConvertedFrames(lazy.open_npy(tmp_path / "f.npy"),
                                     lambda block, rows: block.copy(), FRAMES.shape, np.float32),
    }


@pytest.mark.parametrize("store", ["npy", "npz", "npz_fortran", "hdf5", "view", "converted"])
def test_indexing_equals_the_array(tmp_path: Path, store: str) -> None:
    """ints, slices (any step), sorted/unsorted/repeated/empty/2-D index arrays, boolean rows
    and ``(rows, rest...)`` give what the same key gives on ``np.load``'s array, as plain
    arrays that own their memory."""
    a = _stacks(tmp_path)[store]
    assert a.shape == FRAMES.shape and a.dtype == np.float32 and a.ndim == 3 and len(a) == 37
    assert a.nbytes == FRAMES.nbytes
    for key in KEYS:
        got, want = a[key], FRAMES[key]
        assert type(got) is np.ndarray, key
        np.testing.assert_array_equal(got, want, err_msg=repr(key))
        assert got.shape == want.shape, key
    np.testing.assert_array_equal(np.asarray(a), FRAMES)
    np.testing.assert_array_equal(np.asarray(a, dtype=np.float64), FRAMES.astype(np.float64))
    for bad in (37, -38, np.array([0, 37]), np.array([1.5])):
        with pytest.raises(IndexError):
            a[bad]


def test_npz_member_is_mapped_at_its_offset(tmp_path: Path) -> None:
    """A stored member after another member (nonzero offset), in ``.npy`` format 1.0 and 2.0,
    is memory-mapped; reads do not change the file."""
    path = _npz(tmp_path / "s.npz", xcoords=np.arange(5000.0), diff3d=FRAMES)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("diff3d.npy")
    assert info.compress_type == zipfile.ZIP_STORED and info.header_offset > 40000
    a = lazy.open_npz_member(path, "diff3d")
    assert isinstance(a, MappedFrames) and isinstance(a._array, np.memmap)
    np.testing.assert_array_equal(a[[5, 2]], FRAMES[[5, 2]])
    # a .npy 2.0 header (written by numpy for very long headers) inside a stored member
    with zipfile.ZipFile(tmp_path / "v2.npz", "w", zipfile.ZIP_STORED) as zf, \
            zf.open("diff3d.npy", "w") as fh:
        np.lib.format.write_array(fh, FRAMES, version=(2, 0))
    b = lazy.open_npz_member(tmp_path / "v2.npz", "diff3d")
    np.testing.assert_array_equal(b[[36, 0]], FRAMES[[36, 0]])
    with pytest.raises(KeyError):
        lazy.open_npz_member(path, "missing")


def test_compressed_object_and_truncated_members(tmp_path: Path) -> None:
    """A compressed member or an object array cannot be mapped (None: the caller reads it);
    a member shorter than its header says is an error, not a map past its end."""
    path = _npz(tmp_path / "c.npz", compress=True, diff3d=FRAMES)
    assert lazy.open_npz_member(path, "diff3d") is None and lazy.is_compressed(path, "diff3d")
    np.savez(tmp_path / "o.npz", diff3d=np.array([{"a": 1}], dtype=object))
    assert lazy.open_npz_member(tmp_path / "o.npz", "diff3d") is None
    full = _npz(tmp_path / "t.npz", diff3d=FRAMES).read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises((ValueError, zipfile.BadZipFile, OSError)):
        lazy.open_npz_member(cut, "diff3d")


def test_compressed_npz_is_read_whole_with_one_info_line(tmp_path: Path, caplog) -> None:
    """``load_npz`` of a compressed file reads the frames into memory and says once how to
    write the file so that it streams; the values equal the uncompressed file's."""
    arrays = _project(m=12, counts=False)
    stored = load_npz(_npz(tmp_path / "s.npz", **arrays))
    with caplog.at_level(logging.INFO, logger="ptycho_k3"):
        packed = load_npz(_npz(tmp_path / "c.npz", compress=True, **arrays))
    assert isinstance(stored.diffraction, LazyFrames)
    assert type(packed.diffraction) is np.ndarray and type(packed.patches) is np.ndarray
    lines = [r.getMessage() for r in caplog.records if "compressed" in r.getMessage()]
    assert len(lines) == 1 and "'diff3d'" in lines[0] and "'Y'" in lines[0]
    assert "uncompressed" in lines[0]
    np.testing.assert_array_equal(np.asarray(stored.diffraction), packed.diffraction)
    np.testing.assert_array_equal(np.asarray(stored.patches), packed.patches)


def test_save_npz_writes_uncompressed_by_default(tmp_path: Path) -> None:
    """ptycho-simulate's files (``save_npz`` without ``compress``) stream."""
    path = save_npz(tmp_path / "s.npz", small_scan(m=6))
    assert not lazy.is_compressed(path, "diff3d")
    assert lazy.is_compressed(save_npz(tmp_path / "c.npz", small_scan(m=6), compress=True),
                              "diff3d")


def test_hdf5_reads_sorted_unique_and_pickles(tmp_path: Path) -> None:
    """h5py wants increasing, distinct indices: any index array is read sorted and put back;
    a pickled copy reopens the file."""
    a = _stacks(tmp_path)["hdf5"]
    assert isinstance(a, HDF5Frames)
    idx = np.array([30, 2, 2, 17, 0, 36])
    np.testing.assert_array_equal(a[idx], FRAMES[idx])
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(b[idx[::-1]], FRAMES[idx[::-1]])
    a.close()
    np.testing.assert_array_equal(a[3:5], FRAMES[3:5])  # reopened on demand


def test_views_compose_and_read_nothing(tmp_path: Path) -> None:
    """A view of a view maps straight to the base; nothing is read until indexed."""
    base = _stacks(tmp_path)["npz"]
    v = base.take(np.array([5, 3, 9, 20])).take(np.array([3, 0, -1]))
    assert isinstance(v, RowView) and v.base is base
    np.testing.assert_array_equal(v.rows, [20, 5, 20])
    np.testing.assert_array_equal(v[:], FRAMES[[20, 5, 20]])
    np.testing.assert_array_equal(base.take(np.arange(37) < 3)[:], FRAMES[:3])
    with pytest.raises(IndexError):
        base.take(np.array([37]))


def test_memory_map_pages_are_released(tmp_path: Path, monkeypatch) -> None:
    """A strided view (Fortran order) is read through the map: past ``RELEASE_BYTES`` read, its
    pages are handed back; reads go on unchanged."""
    monkeypatch.setattr(lazy, "RELEASE_BYTES", FRAMES[0].nbytes * 3)
    a = _stacks(tmp_path)["npz_fortran"]
    assert not a._pread
    calls = []
    real = a.release
    monkeypatch.setattr(a, "release", lambda: (calls.append(1), real()))
    for i in range(10):
        np.testing.assert_array_equal(a[i], FRAMES[i])
    assert len(calls) == 3
    np.testing.assert_array_equal(a[[9, 1]], FRAMES[[9, 1]])


def _rss_file_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def test_contiguous_rows_are_read_from_the_file_not_the_map(tmp_path: Path) -> None:
    """C-layout rows (also after squeezing a trailing axis or taking a leading index) are read
    with ``preadv``: scattered rows of a 32 MiB member add (almost) nothing file-backed to the
    resident set, where reading them through the map would map the pages around each row."""
    big = np.random.default_rng(1).random((2048, 64, 64), dtype=np.float32)
    path = _npz(tmp_path / "big.npz", first=np.arange(10.0), diff3d=big, tike=big[None],
                squeeze=big[..., None])
    a = lazy.open_npz_member(path, "diff3d")
    tike = lazy.open_npz_member(path, "tike").with_view(lambda v: v[0])
    squeeze = lazy.open_npz_member(path, "squeeze").with_view(lambda v: v[..., 0])
    assert a._pread and tike._pread and squeeze._pread
    rows = np.arange(5, 2048, 8)[::-1]
    before = _rss_file_kib()
    for stack in (a, tike, squeeze):
        np.testing.assert_array_equal(stack[rows], big[rows])
        np.testing.assert_array_equal(stack[100:103], big[100:103])
    after = _rss_file_kib()
    if before is not None and after is not None:
        assert after - before < 8 * 1024, (before, after)


# --------------------------------------------------------------------------------------------
# the reading path


def _project(m: int = 40, n: int = 64, *, counts: bool, seed: int = 0, **metadata: Any
             ) -> dict[str, Any]:
    """A project NPZ: positions on a jittered raster, counts or amplitudes, a probe, patches."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(m)))
    x = 40 + 5.0 * (np.arange(m) % side) + rng.uniform(-1, 1, m)
    y = 40 + 5.0 * (np.arange(m) // side) + rng.uniform(-1, 1, m)
    frames = centred_counts(m, n, seed)
    md = {"diffraction_kind": "counts"} if counts else {}
    md.update(metadata)
    patches = (rng.random((m, n, n)) + 1j * rng.random((m, n, n))).astype(np.complex64)
    return {"xcoords": x, "ycoords": y,
            "diff3d": (frames if counts else np.sqrt(frames)).astype(np.float32),
            "probeGuess": gaussian_probe(n, 6), "Y": patches,
            "_metadata": np.array(json.dumps(md))}


def _same_scan(a: Any, b: Any) -> None:
    for name in ("xcoords", "ycoords", "probe", "scan_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(np.asarray(a.diffraction), np.asarray(b.diffraction))
    assert (a.valid is None) == (b.valid is None)
    if a.valid is not None:
        np.testing.assert_array_equal(np.asarray(a.valid), np.asarray(b.valid))
    assert a.metadata == b.metadata
    ra = {k: v for k, v in a.reading.items() if k != "frames_read"}
    rb = {k: v for k, v in b.reading.items() if k != "frames_read"}
    assert ra == rb


def _eager(path: Path, options: MeasuredOptions | None = None) -> Any:
    """The same file read with every array in memory (the reading before streaming)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    md = json.loads(str(arrays.get("_metadata", "{}")))
    raw = RawScan(source=str(path), data=arrays["diff3d"], data_key="diff3d",
                  positions=np.stack([arrays["xcoords"], arrays["ycoords"]], axis=1),
                  positions_key="xcoords", mask=arrays.get("mask"),
                  probe=arrays.get("probeGuess"), probe_key="probeGuess",
                  positions_start=np.stack([arrays["xcoords"], arrays["ycoords"]], axis=1),
                  metadata=md)
    return prepare(raw, options)


def test_load_scan_of_a_stored_npz_is_lazy_and_equals_the_eager_read(tmp_path: Path) -> None:
    """Float32 amplitudes, centred, every pixel valid: the frames as stored, mapped (no
    conversion); ground-truth patches mapped too; values equal the in-memory reading."""
    path = _npz(tmp_path / "a.npz", **_project(counts=False))
    scan = load_scan(path)
    assert isinstance(scan.diffraction, MappedFrames) and scan.valid is None
    assert isinstance(scan.patches, MappedFrames)
    assert scan.reading["frames_read"] == "on demand"
    _same_scan(scan, _eager(path))
    with np.load(path) as z:
        np.testing.assert_array_equal(np.asarray(scan.patches), z["Y"])


MASK_KINDS = ["none", "detector", "per_pattern"]


@pytest.mark.parametrize("counts,dc,reduce,mask", [
    (True, "centre", None, "none"),
    (False, "corner", None, "detector"),
    (True, "corner", "crop", "per_pattern"),
    (False, "centre", "bin", "per_pattern"),
    (True, "auto", "bin", "detector"),
    (False, "centre", None, "per_pattern"),
])
def test_every_conversion_is_applied_per_batch_as_eagerly(tmp_path: Path, counts: bool, dc: str,
                                                          reduce: str | None, mask: str) -> None:
    """Counts -> sqrt, float64 -> float32, corner -> centre (also decided 'auto'), crop, bin,
    NaN / negative / saturated / masked pixels -> 0 with a per-pattern or detector mask: the
    lazy scan (converted per batch read) equals the in-memory reading, for any rows read."""
    h = 128 if reduce else 64
    arrays = _project(m=24, n=h, counts=counts, seed=3, saturation=4000 if counts else 60)
    frames = arrays["diff3d"].astype(np.float64)
    frames[2, 5, 7], frames[9, 60, 61], frames[11, 3, 3] = np.nan, -2.0, 1e9
    if dc == "corner":
        frames = np.fft.ifftshift(frames, axes=(-2, -1))
    arrays["diff3d"] = frames
    if dc != "centre":
        arrays["_metadata"] = np.array(json.dumps({**json.loads(str(arrays["_metadata"])),
                                                   "dc": dc}))
    if mask == "detector":
        arrays["mask"] = np.ones((h, h), np.uint8)
        arrays["mask"][h // 2 + 1, h // 2 - 3] = 0
    elif mask == "per_pattern":
        arrays["mask"] = np.ones((24, h, h), np.uint8)
        arrays["mask"][4, h // 2, h // 2 + 2] = 0
    del arrays["Y"]
    options = MeasuredOptions(detector_crop=64 if reduce == "crop" else None,
                              detector_bin=2 if reduce == "bin" else None)
    path = _npz(tmp_path / "m.npz", **arrays)
    scan, eager = load_scan(path, options), _eager(path, options)
    assert isinstance(scan.diffraction, ConvertedFrames)
    assert scan.reading["frames_read"] == "on demand, converted per batch"
    assert type(eager.diffraction) is np.ndarray
    _same_scan(scan, eager)
    if mask == "per_pattern":
        assert isinstance(scan.valid, ConvertedFrames)
    rows = np.array([23, 2, 9, 2, 0])
    np.testing.assert_array_equal(scan.diffraction[rows], eager.diffraction[rows])
    if scan.valid is not None and scan.valid.ndim == 3:
        np.testing.assert_array_equal(scan.valid[rows], eager.valid[rows])
    # grouping reads only the groups (and the neutral fill's chunked pass): same as eager
    ga = group_scan(scan, 2, n_groups=10, seed=1, with_patches=False, lazy=True)
    gb = group_scan(eager, 2, n_groups=10, seed=1, with_patches=False)
    assert ga.norm_factor == gb.norm_factor
    np.testing.assert_array_equal(np.asarray(ga.diffraction), gb.diffraction)
    if gb.valid is not None:
        np.testing.assert_array_equal(ga.diffraction.valid_groups(slice(None)), gb.valid)
        np.testing.assert_array_equal(ga.diffraction.valid_groups(3), gb.valid[3])
        np.testing.assert_array_equal(neutral_fill(scan.diffraction, scan.valid),
                                      neutral_fill(eager.diffraction, eager.valid))
    else:
        assert ga.diffraction.valid_groups(slice(None)) is None


def test_select_stays_lazy(tmp_path: Path) -> None:
    """Subsampling maps rows (diffraction, patches, a per-pattern mask): nothing is read, and
    the values are the selected rows."""
    arrays = _project(m=30, counts=False)
    arrays["mask"] = np.ones((30, 64, 64), np.uint8)
    arrays["mask"][7, 1, 1] = 0
    path = _npz(tmp_path / "s.npz", **arrays)
    scan = load_scan(path)
    idx = np.array([29, 7, 3, 11])
    sub = scan.select(idx)
    for name in ("diffraction", "patches", "valid"):
        assert isinstance(getattr(sub, name), RowView), name
    eager = _eager(path)
    np.testing.assert_array_equal(sub.diffraction[:], eager.diffraction[idx])
    np.testing.assert_array_equal(sub.valid[:], eager.valid[idx])
    np.testing.assert_array_equal(sub.patches[:], arrays["Y"][idx])
    np.testing.assert_array_equal(sub.valid_rows(np.array([[1, 0]])), eager.valid[idx][[[1, 0]]])
    twice = sub.select(np.array([1, 1, 0]))
    assert twice.diffraction.base is scan.diffraction  # a view of the converted stack
    np.testing.assert_array_equal(twice.diffraction[:], eager.diffraction[idx[[1, 1, 0]]])
    # subsampled grouping (n_subsample) goes through select: still lazy, same groups
    ga = group_scan(scan, 1, n_groups=8, n_subsample=12, seed=4, lazy=True)
    gb = group_scan(eager, 1, n_groups=8, n_subsample=12, seed=4, with_patches=False)
    np.testing.assert_array_equal(np.asarray(ga.diffraction), gb.diffraction)
    assert isinstance(ga.diffraction.source, RowView)


def test_hdf5_cxi_frames_are_read_on_demand(tmp_path: Path) -> None:
    """A CXI file's frames stay in the file (counts -> sqrt per batch read)."""
    m, n = 6, 64
    counts = centred_counts(m, n)
    with h5py.File(tmp_path / "s.cxi", "w") as f:
        f.create_dataset("entry_1/data_1/data", data=counts, chunks=(2, n, n), compression="gzip")
        f["entry_1/sample_1/geometry_1/translation"] = np.zeros((m, 3)) + \
            np.arange(m)[:, None] * 1e-7
        f["entry_1/instrument_1/detector_1/distance"] = 2.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/source_1/energy"] = 8000 * 1.602176634e-19
    scan = load_scan(tmp_path / "s.cxi")
    assert isinstance(scan.diffraction, ConvertedFrames)
    assert isinstance(scan.diffraction.base, HDF5Frames)
    np.testing.assert_array_equal(scan.diffraction[[4, 1]],
                                  np.sqrt(counts[[4, 1]]).astype(np.float32))


def test_validation_reads_in_chunks(tmp_path: Path, monkeypatch) -> None:
    """Loading a stored NPZ never holds the stack: with 256 KiB chunks, the NumPy memory traced
    while checking 48 MiB of frames (NaN, negatives, counts) stays a few chunks plus the 64
    frames the kind is guessed from (the eager reading needs the whole stack at least)."""
    monkeypatch.setattr(lazy, "CHUNK_BYTES", 256 * 2**10)
    arrays = _project(m=3072, counts=True)
    del arrays["Y"]
    arrays["diff3d"][3, 0, 0] = np.nan
    path = _npz(tmp_path / "big.npz", **arrays)
    stack = arrays["diff3d"].nbytes
    del arrays
    tracemalloc.start()
    try:
        scan = load_scan(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(scan.diffraction, ConvertedFrames)
    assert peak < stack / 4, (peak, stack)

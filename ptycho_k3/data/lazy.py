"""Frame stacks read on demand: ``.npy`` files, uncompressed NPZ members, HDF5 datasets.

A beamline scan holds 10^4 - 10^6 diffraction patterns; reading all of them at load time makes
memory grow with the scan. The classes here stand for a read-only array ``(M, ...)`` (frames
``(M, H, W)``, masks, ground-truth patches) and read only the rows that are indexed:

- :class:`MappedFrames` over a NumPy memory map: a ``.npy`` file (:func:`open_npy`) or an NPZ
  member stored without compression (:func:`open_npz_member`; ``np.load`` cannot map an NPZ
  member, so the member's data offset is found from the zip local file header and the ``.npy``
  header, and the bytes after it are mapped). A compressed member cannot be mapped: it is read
  whole (one INFO line says so and how to write the file uncompressed).
- :class:`HDF5Frames` over an HDF5 dataset (h5py; any chunking or filter).
- :class:`RowView`: the rows ``rows`` of another stack (what ``ScanData.select`` returns for a
  lazy stack): an index map, not a copy.
- :class:`ConvertedFrames`: a function applied to each block of rows when it is read (the
  per-frame conversions of :func:`ptycho_k3.data.measured.prepare`).

Every stack supports ``shape``, ``dtype``, ``ndim``, ``len``, ``a[i]``, ``a[start:stop:step]``,
``a[index_array]`` (any shape, sorted or not, repeats allowed; the result has
``index.shape + shape[1:]``), ``a[rows, ...rest]`` (``rest`` applied to the rows read) and
``np.asarray(a)`` (an explicit read of everything, in chunks into one array); every result is a
plain ``numpy.ndarray`` that owns its memory. There is no arithmetic: code that wants the whole
stack has to say so.

Pages of a memory map that were read stay in the process's resident set (file-backed, so the
kernel can drop them, but they count in RSS), and the kernel maps more than the bytes touched
(the page-cache folio around them: ~260 KiB for a 16 KiB row, measured): read through the map,
a few thousand scattered rows of a 1 GiB file would make all of it resident. So a
:class:`MappedFrames` whose rows are contiguous in the file (the usual C layout) reads them with
``os.preadv`` into the result (the map gives shape, dtype and offsets; no page of it is
touched); a strided view (transposed legacy layout, Fortran order) is read through the map and
its pages handed back (``madvise(MADV_DONTNEED)``) every :data:`RELEASE_BYTES` read. NumPy and
h5py only; nothing here imports Keras.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Bytes of frames handled at a time by the chunked passes (validation, statistics, full reads):
#: 1024 frames of 64 x 64 float32.
CHUNK_BYTES = 16 * 2**20
#: A memory map's pages are released after this many bytes were read through it.
RELEASE_BYTES = 64 * 2**20

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"


def chunk_rows(shape: tuple[int, ...], itemsize: int, budget: int | None = None) -> int:
    """Rows of a stack of ``shape`` handled at a time: ``budget`` bytes' worth (default
    :data:`CHUNK_BYTES`), at least 1.

    At 256 rows or more the count is a multiple of 256, so chunked sums that work in blocks of
    256 rows (``measured._PatternMean``) meet the same blocks whatever the chunk size.
    """
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * int(itemsize))
    rows = max(1, (CHUNK_BYTES if budget is None else budget) // row_bytes)
    return rows // 256 * 256 if rows >= 256 else rows


def iter_chunks(a: Any, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, a[start:start + rows])`` over the first axis of an array or a lazy stack.

    ``rows`` defaults to :func:`chunk_rows` (16 MiB a chunk). Each block is a NumPy array; for a
    lazy stack it is read when yielded and nothing else is kept.
    """
    m = int(a.shape[0])
    step = rows or chunk_rows(tuple(a.shape), np.dtype(a.dtype).itemsize)
    for lo in range(0, m, step):
        yield lo, np.asarray(a[lo : lo + step])


def is_lazy(a: Any) -> bool:
    """True for a stack of this module (read on demand), False for an in-memory array."""
    return isinstance(a, LazyFrames)


def take_rows(a: Any, rows: np.ndarray) -> Any:
    """The rows ``rows`` of ``a``: a :class:`RowView` of a lazy stack (no read), else
    ``a[rows]`` (a copy)."""
    if isinstance(a, LazyFrames):
        return a.take(rows)
    return a[np.asarray(rows, dtype=np.int64)]


class LazyFrames:
    """A read-only ``shape`` stack whose rows (first axis) are read when indexed.

    Subclasses implement :meth:`_read` (rows given as a 1-D int64 array of valid, non-negative
    indices, any order, repeats allowed) and may override :meth:`_read_slice` (a contiguous
    run). See the module docstring for the indexing supported.

    Attributes:
        shape: the stack's shape ``(M, ...)``.
        dtype: the dtype of every array read.
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes the whole stack would take in memory (nothing of it is held)."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"

    # -- indexing ---------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            key, rest = key[0], key[1:]
            if key is Ellipsis:
                raise IndexError(f"{type(self).__name__}: the first index must select rows "
                                 "(an int, a slice or an integer array), not '...'")
        out = self._rows(key)
        if rest:
            lead = (slice(None),) * (out.ndim - (self.ndim - 1))
            out = np.ascontiguousarray(out[(*lead, *rest)])
        return out

    def _rows(self, key: Any) -> np.ndarray:
        m = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -m <= i < m:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {m}")
            i %= m
            return self._read_slice(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(m)
            if step == 1:
                return self._read_slice(start, max(start, stop))
            return self._read(np.arange(start, stop, step, dtype=np.int64))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (m,):
                raise IndexError(f"boolean index of shape {idx.shape}; expected ({m},)")
            idx = np.flatnonzero(idx)
        if idx.dtype.kind not in "iu":
            raise IndexError(f"{type(self).__name__} rows must be integers, got dtype {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64, copy=False)
        if flat.size and (flat.min() < -m or flat.max() >= m):
            raise IndexError(f"index out of bounds for axis 0 with size {m}")
        flat = np.where(flat < 0, flat + m, flat)
        return self._read(flat).reshape(*idx.shape, *self.shape[1:])

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (int64 ``(k,)``, valid, any order) as a new array ``(k, ...)``."""
        raise NotImplementedError

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop - 1`` as a new array."""
        return self._read(np.arange(start, stop, dtype=np.int64))

    # -- whole-stack helpers ----------------------------------------------------------------

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError(f"{type(self).__name__} holds no array to share; it reads on request")
        out = np.empty(self.shape, dtype=self.dtype)
        for lo, block in iter_chunks(self):
            out[lo : lo + block.shape[0]] = block
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, rows: np.ndarray) -> RowView:
        """The rows ``rows`` (1-D integers) as a lazy :class:`RowView` (nothing is read)."""
        return RowView(self, rows)

    def release(self) -> None:
        """Hand back memory-mapped pages read so far (they stay in the OS page cache)."""


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


class MappedFrames(LazyFrames):
    """Rows of a NumPy memory map (or a view of one) read into new arrays on request.

    The map says where every row is. When each row is one contiguous run of bytes in the file
    (the ``.npy`` C layout, also after squeezing a trailing axis of 1 or taking a leading index)
    and the file's path and the byte offset of element 0 are known, rows are read from the file
    with ``os.preadv`` straight into the result (runs of consecutive rows in one call) instead of
    through the map: touching a 16 KiB row through a map makes the kernel map the surrounding
    page-cache folio as well (about 260 KiB a row measured on Linux 6.18), so a few thousand
    scattered rows would put the whole file into the resident set. Other views (a transposed
    legacy layout, Fortran order) are read through the map, whose pages are released every
    :data:`RELEASE_BYTES` read.

    Args:
        array: the ``np.memmap`` (or any view of it: a squeezed axis, a transposed legacy layout).
        source: file name, for messages.
        path: the mapped file (default ``array.filename`` of a ``np.memmap``).
        offset: byte offset in the file of ``array``'s first element (default ``array.offset``
            of a ``np.memmap``).
    """

    def __init__(self, array: np.ndarray, source: str = "", *,
                 path: str | os.PathLike | None = None, offset: int | None = None):
        self._array = array
        self._mmap = getattr(array, "_mmap", None)
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.source = source
        self._since_release = 0
        self._path = str(path) if path is not None else getattr(array, "filename", None)
        self._offset = offset if offset is not None else getattr(array, "offset", None)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._file: Any = None
        self._pread = (self._path is not None and self._offset is not None
                       and hasattr(os, "preadv") and len(self.shape) >= 1 and self.shape[0] > 0
                       and array.strides[0] == self._row_bytes
                       and (array.ndim == 1 or array[0].flags.c_contiguous))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        if np.all(rows[1:] - rows[:-1] == 1):  # a run: one contiguous read
            return self._read_slice(int(rows[0]), int(rows[-1]) + 1)
        if self._pread:
            out = np.empty((rows.size, *self.shape[1:]), self.dtype)
            flat = out.reshape(-1).view(np.uint8)
            cuts = np.flatnonzero(rows[1:] - rows[:-1] != 1) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, rows.size], strict=True):
                self._pread_into(flat[lo * self._row_bytes : hi * self._row_bytes], int(rows[lo]))
            return out
        out = np.asarray(self._array[rows]).view(np.ndarray)  # fancy indexing copies
        return self._account(out)

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        if self._pread:
            out = np.empty((stop - start, *self.shape[1:]), self.dtype)
            if out.size:
                self._pread_into(out.reshape(-1).view(np.uint8), start)
            return out
        out = np.array(self._array[start:stop], copy=True, subok=False)
        return self._account(out)

    def _pread_into(self, buf: np.ndarray, row: int) -> None:
        """Fill the byte buffer ``buf`` from the file, starting at row ``row``."""
        if self._file is None:
            self._file = open(self._path, "rb")  # noqa: SIM115 (kept open, closed with self)
        view = memoryview(buf)
        pos, where = 0, self._offset + row * self._row_bytes
        while pos < len(view):
            got = os.preadv(self._file.fileno(), [view[pos:]], where + pos)
            if got <= 0:
                raise OSError(f"{self._path}: file ends inside the array (truncated?)")
            pos += got

    def _account(self, out: np.ndarray) -> np.ndarray:
        self._since_release += out.nbytes
        if self._since_release >= RELEASE_BYTES:  # read at call time (tests lower it)
            self.release()
        return out

    def release(self) -> None:
        self._since_release = 0
        if self._mmap is not None and hasattr(self._mmap, "madvise"):
            try:
                self._mmap.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # a closed or unusual mapping: keep the pages
                pass

    def with_view(self, fn: Callable[[np.ndarray], np.ndarray]) -> MappedFrames:
        """The same map seen through ``fn`` (a NumPy view: a squeezed or permuted axis, a
        leading index); nothing is read."""
        view = fn(self._array)
        offset = None
        if self._offset is not None and view.size:
            offset = self._offset + _address(view) - _address(self._array)
        out = MappedFrames(view, self.source, path=self._path, offset=offset)
        out._mmap = self._mmap
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}


class HDF5Frames(LazyFrames):
    """Rows of an HDF5 dataset, read with h5py on request.

    The file is opened on first use and kept open (h5py reads chunked and compressed datasets
    block by block); a pickled copy reopens it. h5py wants increasing, distinct indices, so an
    index array is read sorted and unique and put back in the asked order.

    Args:
        path: the HDF5 file.
        key: the dataset's path inside it.
    """

    def __init__(self, path: str | os.PathLike, key: str):
        self.path = str(path)
        self.key = key
        self._file: Any = None
        ds = self._dataset()
        self.shape = tuple(int(s) for s in ds.shape)
        self.dtype = np.dtype(ds.dtype)

    def _dataset(self) -> Any:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file[self.key]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        used, inverse = np.unique(rows, return_inverse=True)
        if used.size == int(used[-1] - used[0]) + 1:  # a run of rows: one hyperslab
            block = self._read_slice(int(used[0]), int(used[-1]) + 1)
        else:
            block = np.asarray(self._dataset()[used])
        return block if used.size == rows.size and np.array_equal(used, rows) \
            else block[inverse.reshape(-1)]

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._dataset()[start:stop])

    def close(self) -> None:
        """Close the file (it is reopened on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}


class RowView(LazyFrames):
    """The rows ``rows`` of ``base`` (an index map: reading row ``i`` reads ``base[rows[i]]``).

    Args:
        base: a lazy stack (a view of a view maps straight to the first base).
        rows: int ``(k,)`` rows of ``base``.
    """

    def __init__(self, base: LazyFrames, rows: np.ndarray):
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.reshape(-1).astype(np.int64, copy=False)
        m = len(base)
        if rows.size and (rows.min() < -m or rows.max() >= m):
            raise IndexError(f"row index out of bounds for a stack of {m} rows")
        rows = np.where(rows < 0, rows + m, rows)
        if isinstance(base, RowView):
            base, rows = base.base, base.rows[rows]
        self.base = base
        self.rows = rows
        self.shape = (int(rows.size), *base.shape[1:])
        self.dtype = base.dtype

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return self.base._read(self.rows[rows])

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        return self.base._read(self.rows[start:stop])

    def release(self) -> None:
        self.base.release()


class ConvertedFrames(LazyFrames):
    """``fn(base[rows], rows)`` for the rows read: a conversion applied block by block.

    Args:
        base: the stack read (a lazy stack or an array).
        fn: ``fn(block, rows) -> array (len(rows), *shape[1:])`` of dtype ``dtype``; ``rows``
            are the rows of ``base`` the block holds (int64 ``(k,)``), for per-row side data
            such as a per-pattern mask. It must work on any block of rows alike (the result of a
            row may not depend on the other rows read with it).
        shape: the converted stack's shape (first axis = ``len(base)``).
        dtype: the dtype ``fn`` returns.
    """

    def __init__(self, base: Any, fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 shape: tuple[int, ...], dtype: Any):
        if int(shape[0]) != len(base):
            raise ValueError(f"ConvertedFrames: shape {shape} does not have the base's "
                             f"{len(base)} rows")
        self.base = base
        self.fn = fn
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return self._check(self.fn(np.asarray(self.base[rows]), rows), rows.size)

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop, dtype=np.int64)
        return self._check(self.fn(np.asarray(self.base[start:stop]), rows), rows.size)

    def _check(self, out: np.ndarray, k: int) -> np.ndarray:
        out = np.asarray(out)
        if out.shape != (k, *self.shape[1:]) or out.dtype != self.dtype:
            raise ValueError(f"ConvertedFrames: the conversion returned {out.shape} {out.dtype}, "
                             f"expected {(k, *self.shape[1:])} {self.dtype}")
        return out

    def release(self) -> None:
        if isinstance(self.base, LazyFrames):
            self.base.release()


# --------------------------------------------------------------------------------------------
# opening files


def open_npy(path: str | os.PathLike) -> MappedFrames:
    """A ``.npy`` file as a :class:`MappedFrames` (``np.load(mmap_mode="r")``).

    Raises:
        ValueError: the file holds Python objects or is not a readable ``.npy`` file.
        OSError: the file cannot be opened.
    """
    a = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(a, np.memmap):  # a 0-size array is not mapped
        raise ValueError(f"{path}: an empty array cannot be memory-mapped")
    return MappedFrames(a, str(path))


def npz_member_info(path: str | os.PathLike, key: str) -> zipfile.ZipInfo:
    """The zip entry of the member ``key`` (``key.npy``) of an NPZ file.

    Raises:
        KeyError: no such member. zipfile.BadZipFile, OSError: not a readable zip file.
    """
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo(key if key.endswith(".npy") else f"{key}.npy")


def _member_array_offset(path: str | os.PathLike, info: zipfile.ZipInfo
                         ) -> tuple[int, int, tuple[int, ...], bool, np.dtype]:
    """``(offset of the member's data, offset of its array bytes, shape, fortran_order,
    dtype)`` of a stored member, from its zip local file header and its ``.npy`` header."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise ValueError(f"truncated zip local header of member {info.filename!r}")
        fields = _LOCAL_HEADER.unpack(head)
        if fields[0] != _LOCAL_SIGNATURE:
            raise ValueError(f"bad zip local header signature of member {info.filename!r}")
        name_len, extra_len = fields[-2], fields[-1]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version} in member "
                             f"{info.filename!r}")
        offset = fh.tell()
    return start, offset, tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def open_npz_member(path: str | os.PathLike, key: str) -> MappedFrames | None:
    """The NPZ member ``key`` memory-mapped, or None when it cannot be mapped.

    Only a member stored without compression (``ZIP_STORED``: ``numpy.savez``, ptycho-simulate
    by default) holding a plain numeric array can be mapped: its bytes are found from the zip
    local file header and the ``.npy`` header and mapped with ``np.memmap``. None for a
    compressed member (:func:`is_compressed` tells), an object (pickled) array or an empty one:
    the caller reads those whole.

    Raises:
        KeyError: no such member. ValueError, OSError, zipfile.BadZipFile: a damaged file (a
        header that does not parse, array bytes beyond the member's end).
    """
    info = npz_member_info(path, key)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed/encrypted
        return None
    start, offset, shape, fortran, dtype = _member_array_offset(path, info)
    if dtype.hasobject or dtype.fields is not None:
        return None
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return None
    nbytes = count * dtype.itemsize
    if nbytes > info.file_size - (offset - start) or offset + nbytes > Path(path).stat().st_size:
        raise ValueError(f"member {info.filename!r} is shorter than its array "
                         f"{shape} {dtype}; truncated file?")
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                   order="F" if fortran else "C")
    return MappedFrames(mm, str(path))


def is_compressed(path: str | os.PathLike, key: str) -> bool:
    """True when the NPZ member ``key`` is stored compressed (it cannot be memory-mapped)."""
    return npz_member_info(path, key).compress_type != zipfile.ZIP_STORED


def log_compressed(path: str | os.PathLike, keys: list[str], nbytes: int) -> None:
    """The one INFO line for an NPZ whose large members are compressed (read whole)."""
    log.info("%s: %s stored compressed, so %s read whole into memory (%.0f MiB) instead of on "
             "demand; write the file uncompressed (numpy.savez, or ptycho-simulate without "
             "--compress) to stream it", path, ", ".join(f"'{k}'" for k in keys),
             "it is" if len(keys) == 1 else "they are", nbytes / 2**20)


def open_hdf5(path: str | os.PathLike, key: str) -> HDF5Frames:
    """The HDF5 dataset ``key`` of ``path`` as an :class:`HDF5Frames`.

    Raises:
        OSError: not a readable HDF5 file. KeyError: no such dataset.
    """
    return HDF5Frames(path, key)

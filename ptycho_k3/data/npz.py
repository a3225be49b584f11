"""Reading and writing scan NPZ files (docs/conventions.md §13), with one clear error per broken rule.

Units and conventions: coordinates are object pixels, x = column, y = row; diffraction is the
far-field **amplitude** (sqrt(counts) up to a scale), DC at ``(N/2, N/2)``; the probe is on the
object pixel grid. Nothing here imports Keras.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.atomic import atomic_write, json_default

from .errors import DataError
from .lazy import LazyFrames, MappedFrames, iter_chunks, log_compressed, open_npz_member, take_rows
from .measured import MeasuredOptions, RawScan, prepare

_DIFFRACTION_KEYS = ("diff3d", "diffraction")
_PATCH_KEYS = ("Y", "ground_truth_patches")


@dataclass(frozen=True, eq=False)
class ScanData:
    """One ptychographic scan as loaded from (or written to) an NPZ file.

    Attributes:
        xcoords, ycoords: float64 ``(M,)`` scan positions in object pixels (x column, y row).
        xcoords_start, ycoords_start: float64 ``(M,)``; default to ``xcoords``/``ycoords``.
        diffraction: float32 ``(M, N, N)`` amplitudes, DC at ``(N/2, N/2)``, as stored (no scaling):
            an array, or a :class:`~ptycho_k3.data.lazy.LazyFrames` read on demand (a scan read
            from an uncompressed NPZ or an HDF5 file, docs/conventions.md §22). Index it
            (``diffraction[rows]``, ``diffraction[lo:hi]``) to get arrays; ``np.asarray`` reads
            all of it.
        probe: complex64 ``(N, N)`` probe (raw, not normalised).
        object: complex64 ``(H, W)`` ground-truth object or None.
        patches: complex64 ``(M, N, N)`` ground-truth patches (``Y`` or ``ground_truth_patches``)
            or None; an array or a lazy stack like ``diffraction``.
        scan_index: int64 ``(M,)`` (zeros when absent).
        valid: bool valid-pixel mask ``(N, N)`` (one detector mask) or ``(M, N, N)`` (an array or
            a lazy stack), True = the pixel counts; None = every pixel is valid.
            ``diffraction`` is 0 where invalid (docs/conventions.md §22).
        metadata: dict parsed from ``_metadata`` (empty when absent).
        source: the file it came from, or None.
        reading: how the file was read (format, kind, DC layout, invalid pixels, crop/bin, probe
            source; docs/conventions.md §22), recorded in the outputs; not written back.
    """

    xcoords: np.ndarray
    ycoords: np.ndarray
    diffraction: np.ndarray
    probe: np.ndarray
    xcoords_start: np.ndarray | None = None
    ycoords_start: np.ndarray | None = None
    object: np.ndarray | None = None
    patches: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    valid: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    reading: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Fill the documented defaults so every instance has complete arrays.
        m = len(self.xcoords)
        if self.xcoords_start is None:
            object.__setattr__(self, "xcoords_start", np.array(self.xcoords, dtype=np.float64))
        if self.ycoords_start is None:
            object.__setattr__(self, "ycoords_start", np.array(self.ycoords, dtype=np.float64))
        if self.scan_index is None:
            object.__setattr__(self, "scan_index", np.zeros(m, dtype=np.int64))

    @property
    def n(self) -> int:
        """Patch / detector side N in pixels."""
        return int(self.diffraction.shape[-1])

    @property
    def n_positions(self) -> int:
        """Number of scan positions M."""
        return int(self.diffraction.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """float64 ``(M, 2)`` of ``[x, y]``."""
        return np.stack([self.xcoords, self.ycoords], axis=1)

    @property
    def nphotons(self) -> float | None:
        """``nphotons`` from the metadata (top level or under ``physics_parameters``), or None."""
        return metadata_nphotons(self.metadata)

    def select(self, indices: np.ndarray) -> ScanData:
        """A new ScanData holding only the rows ``indices`` (object and probe are shared).

        Lazy stacks (diffraction, patches, a per-pattern mask) stay lazy: the result maps its
        rows to the file's (:class:`~ptycho_k3.data.lazy.RowView`), nothing is read.
        """
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            xcoords=self.xcoords[idx],
            ycoords=self.ycoords[idx],
            xcoords_start=self.xcoords_start[idx],
            ycoords_start=self.ycoords_start[idx],
            diffraction=take_rows(self.diffraction, idx),
            patches=None if self.patches is None else take_rows(self.patches, idx),
            scan_index=self.scan_index[idx],
            valid=self.valid if self.valid is None or self.valid.ndim == 2
            else take_rows(self.valid, idx),
        )

    def valid_rows(self, rows: np.ndarray) -> np.ndarray | None:
        """bool ``rows.shape + (N, N)`` valid pixels of the patterns ``rows``, or None."""
        if self.valid is None:
            return None
        rows = np.asarray(rows)
        if self.valid.ndim == 2:
            return np.broadcast_to(self.valid, (*rows.shape, *self.valid.shape))
        return np.asarray(self.valid[rows])


def metadata_nphotons(metadata: dict[str, Any]) -> float | None:
    """``nphotons`` at the top level of ``metadata`` or under ``physics_parameters``; else None."""
    candidates = [metadata.get("nphotons")]
    phys = metadata.get("physics_parameters")
    if isinstance(phys, dict):
        candidates.append(phys.get("nphotons"))
    for value in candidates:
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if v > 0 and math.isfinite(v):
            return v
    return None


# --------------------------------------------------------------------------------------------
# reading


class _Reader:
    """Reads and checks the arrays of one NPZ file; every error names the file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        try:
            archive = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{self.name}: file not found") from None
        except IsADirectoryError:
            raise DataError(f"{self.name}: is a directory, expected an .npz file") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{self.name}: not a readable NPZ file ({_short(exc)})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{self.name}: holds a single .npy array, expected an NPZ archive of "
                            "named arrays (xcoords, ycoords, diff3d, probeGuess, ...)")
        self.archive = archive
        self.keys = set(archive.files)
        #: ``(key, bytes)`` of the large members read whole because they are compressed.
        self.compressed: list[tuple[str, int]] = []

    def close(self) -> None:
        self.archive.close()

    def fail(self, key: str, what: str) -> DataError:
        return DataError(f"{self.name}: key '{key}' {what}")

    def raw(self, key: str) -> np.ndarray:
        try:
            return np.asarray(self.archive[key])
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise self.fail(key, "holds Python objects (pickled); expected a numeric array") \
                    from None
            raise self.fail(key, f"cannot be read ({_short(exc)})") from None
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as exc:
            raise self.fail(key, f"cannot be read; truncated or corrupt file? ({_short(exc)})") \
                from None

    def numeric(self, key: str, *, complex_ok: bool) -> np.ndarray:
        a = self.raw(key)
        kinds = "biufc" if complex_ok else "biuf"
        if a.dtype.kind == "c" and not complex_ok:
            raise self.fail(key, f"is complex ({a.dtype}); expected real values")
        if a.dtype.kind not in kinds or a.dtype.kind == "b" or a.dtype.fields is not None:
            expected = "a real or complex numeric array" if complex_ok else "a real numeric array"
            raise self.fail(key, f"has dtype {a.dtype}; expected {expected}")
        return a

    def stack(self, key: str, *, complex_ok: bool) -> np.ndarray | MappedFrames:
        """The member ``key`` memory-mapped when it is stored uncompressed (nothing read), else
        read whole like :meth:`numeric` (a compressed member is noted in ``compressed``); the
        same dtype checks either way."""
        try:
            mapped = open_npz_member(self.path, key)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            mapped = None  # a damaged member: the whole read below names the problem
        if mapped is None:
            a = self.numeric(key, complex_ok=complex_ok)
            if a.ndim >= 3 and _is_compressed(self.archive, key):
                self.compressed.append((key, a.nbytes))
            return a
        kinds = "biufc" if complex_ok else "biuf"
        if mapped.dtype.kind == "c" and not complex_ok:
            raise self.fail(key, f"is complex ({mapped.dtype}); expected real values")
        if mapped.dtype.kind not in kinds or mapped.dtype.kind == "b":
            expected = "a real or complex numeric array" if complex_ok else "a real numeric array"
            raise self.fail(key, f"has dtype {mapped.dtype}; expected {expected}")
        return mapped

    def finite(self, key: str, a: np.ndarray) -> None:
        if a.dtype.kind in "fc" and a.size and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise self.fail(key, f"contains {bad} non-finite value(s) (NaN or inf)")

    def coords(self, key: str, m: int | None) -> np.ndarray:
        a = self.numeric(key, complex_ok=False)
        if a.ndim != 1:
            want = f"({m},)" if m is not None else "(M,)"
            raise self.fail(key, f"has shape {a.shape}; expected {want} (one value per scan)")
        if m is not None and a.shape[0] != m:
            raise self.fail(key, f"has {a.shape[0]} entries; expected {m} (one per scan position, "
                                 "like xcoords)")
        out = a.astype(np.float64)
        self.finite(key, out)
        return out


def _is_compressed(archive: np.lib.npyio.NpzFile, key: str) -> bool:
    try:
        return archive.zip.getinfo(f"{key}.npy").compress_type != zipfile.ZIP_STORED
    except (KeyError, AttributeError):
        return False


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _read_diffraction(r: _Reader, m: int) -> tuple[np.ndarray | MappedFrames, str]:
    key = next((k for k in _DIFFRACTION_KEYS if k in r.keys), None)
    if key is None:
        raise DataError(f"{r.name}: missing key 'diff3d' (or its alias 'diffraction'): the "
                        f"diffraction amplitudes (M, N, N) = ({m}, N, N)")
    a = r.stack(key, complex_ok=False)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a.with_view(lambda v: v[..., 0]) if isinstance(a, MappedFrames) else a[..., 0]
    if a.ndim != 3:
        raise r.fail(key, f"has shape {a.shape}; expected (M, N, N) = ({m}, N, N), "
                          f"(M, N, N, 1) or legacy (N, N, M)")
    # The first axis is checked first, as the original loader does.
    if a.shape[0] == m and a.shape[1] == a.shape[2]:
        pass
    elif a.shape[2] == m and a.shape[0] == a.shape[1]:
        if isinstance(a, MappedFrames):  # a strided view of the map: rows read on demand
            a = a.with_view(lambda v: np.transpose(v, (2, 0, 1)))
        else:
            a = np.transpose(a, (2, 0, 1))
    else:
        raise r.fail(key, f"has shape {a.shape}; expected (M, N, N) = ({m}, N, N) or legacy "
                          f"(N, N, M) with M = {m} scan positions (length of xcoords)")
    if not isinstance(a, LazyFrames) and a.dtype.kind == "f" and a.dtype.itemsize > 4:
        with np.errstate(over="ignore"):
            a = a.astype(np.float32)  # beyond float32 range becomes inf: an invalid pixel
    # NaN, inf and negative values are invalid pixels (measured.prepare), not errors; a mapped
    # stack is converted (float64 -> float32 included) per block by measured.prepare.
    return a, key


def _read_complex_image(r: _Reader, key: str, shape: tuple[int, ...] | None, what: str) \
        -> np.ndarray:
    a = r.numeric(key, complex_ok=True)
    if shape is not None and a.shape != shape:
        raise r.fail(key, f"has shape {a.shape}; expected {what} = {shape}")
    out = a.astype(np.complex64)
    r.finite(key, out)
    return out


def _read_patches(r: _Reader, m: int, n: int) -> np.ndarray | LazyFrames | None:
    for key in _PATCH_KEYS:
        if key not in r.keys:
            continue
        a = r.stack(key, complex_ok=True)
        if a.ndim >= 1 and a.shape[0] != m:
            # docs/conventions.md §13: Y with a different first axis is ignored, as in the original.
            warnings.warn(f"{r.name}: key '{key}' has {a.shape[0]} patches but there are {m} scan "
                          "positions; ignoring it", stacklevel=3)
            continue
        if a.ndim == 4 and a.shape[-1] == 1:
            a = a.with_view(lambda v: v[..., 0]) if isinstance(a, MappedFrames) else a[..., 0]
        if a.shape != (m, n, n):
            raise r.fail(key, f"has shape {a.shape}; expected (M, N, N) = ({m}, {n}, {n})")
        if isinstance(a, LazyFrames):
            # Checked in chunks, converted per read; the patches stay in the file.
            bad = 0
            for _, block in iter_chunks(a):
                b = block.astype(np.complex64)
                bad += int(b.size - np.count_nonzero(np.isfinite(b)))
            a.release()
            if bad:
                raise r.fail(key, f"contains {bad} non-finite value(s) (NaN or inf)")
            if a.dtype != np.complex64:
                from .lazy import ConvertedFrames

                a = ConvertedFrames(a, lambda block, rows: block.astype(np.complex64),
                                    a.shape, np.complex64)
            return a
        out = a.astype(np.complex64)
        r.finite(key, out)
        return out
    return None


def _read_metadata(r: _Reader) -> dict[str, Any]:
    if "_metadata" not in r.keys:
        return {}
    try:
        value = r.archive["_metadata"]
    except ValueError:
        # Legacy files store a pickled 0-d object array. Unpickle that one key only.
        value = _legacy_metadata(r)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise r.fail("_metadata", f"cannot be read ({_short(exc)})") from None
    value = np.asarray(value)
    if value.shape == () and value.dtype.kind in "USO":
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    warnings.warn(f"{r.name}: key '_metadata' is not a JSON object string; ignoring it",
                  stacklevel=3)
    return {}


def _legacy_metadata(r: _Reader) -> Any:
    try:
        with np.load(r.path, allow_pickle=True) as legacy:
            return legacy["_metadata"]
    except Exception as exc:  # unpickling can raise anything; metadata is optional
        warnings.warn(f"{r.name}: legacy key '_metadata' cannot be unpickled ({_short(exc)}); "
                      "ignoring it", stacklevel=4)
        return None


def load_npz(path: str | os.PathLike, options: MeasuredOptions | None = None) -> ScanData:
    """Load a scan NPZ (docs/conventions.md §13, §22) and check it.

    Accepts ``diff3d`` or ``diffraction``; layouts (M, N, N), (M, N, N, 1) and legacy (N, N, M);
    float or integer values, amplitudes by default (``_metadata`` ``diffraction_kind`` or
    ``options`` may say counts); an optional valid-pixel ``mask`` ((N, N) or (M, N, N), nonzero =
    valid); NaN, inf and negative values mark invalid pixels; missing
    ``xcoords_start``/``ycoords_start`` (default to the plain coordinates); a missing
    ``probeGuess`` (one is made from the data, and logged); ``_metadata`` as a JSON string (or
    the legacy pickled 0-d array, the only key ever unpickled). ``Y`` is preferred over
    ``ground_truth_patches``; either is ignored (with a warning) when its first axis is not M.

    Streaming (docs/conventions.md §22): the diffraction, the ground-truth patches and a
    per-pattern mask are memory-mapped when stored uncompressed (``numpy.savez``,
    ptycho-simulate's default) and read on demand; checks that need every frame or patch read
    them in chunks, and every conversion is applied per batch read
    (:func:`~ptycho_k3.data.measured.prepare`). Compressed members cannot be mapped: they are
    read whole, and one INFO line says so.

    Raises:
        DataError: missing/unreadable file, missing key, wrong shape or length, non-finite
        coordinates, complex diffraction, probe not (N, N), N not in {64, 128, 256} (after any
        crop/bin), no positions, a pattern without a valid pixel.
    """
    p = Path(path)
    r = _Reader(p)
    try:
        for key in ("xcoords", "ycoords"):
            if key not in r.keys:
                raise DataError(f"{r.name}: missing key '{key}': scan positions (M,) in object "
                                f"pixels; the file has {sorted(r.keys)}")
        x = r.coords("xcoords", None)
        m = x.shape[0]
        if m == 0:
            raise DataError(f"{r.name}: empty dataset: 'xcoords' has no scan positions")
        y = r.coords("ycoords", m)
        diff, diff_key = _read_diffraction(r, m)
        n = diff.shape[-1]
        probe = None
        if "probeGuess" in r.keys:
            probe = _read_complex_image(r, "probeGuess", (n, n), "(N, N)")
        mask = None
        if "mask" in r.keys:
            mask = r.stack("mask", complex_ok=False)
            if isinstance(mask, LazyFrames) and mask.ndim != 3:
                mask = np.asarray(mask)  # one detector mask: small
        obj = None
        if "objectGuess" in r.keys:
            obj = _read_complex_image(r, "objectGuess", None, "(H, W)")
            if obj.ndim != 2 or min(obj.shape) < 1:
                raise r.fail("objectGuess", f"has shape {obj.shape}; expected a 2-D object (H, W)")
        xs = r.coords("xcoords_start", m) if "xcoords_start" in r.keys else x
        ys = r.coords("ycoords_start", m) if "ycoords_start" in r.keys else y
        scan_index = None
        if "scan_index" in r.keys:
            si = r.coords("scan_index", m)
            if not np.all(si == np.round(si)):
                raise r.fail("scan_index", "has non-integer values; expected integers (M,)")
            scan_index = si.astype(np.int64)
        metadata = _read_metadata(r)
        raw = RawScan(
            source=r.name, data=diff, data_key=diff_key, positions=np.stack([x, y], axis=1),
            positions_key="xcoords", mask=mask, mask_key="mask", probe=probe,
            probe_key="probeGuess", kind="amplitude", dc="centre", positions_unit="pixels",
            positions_start=np.stack([xs, ys], axis=1), object=obj, scan_index=scan_index,
            metadata=metadata,
        )
        scan = prepare(raw, options)
        patches = _read_patches(r, m, scan.n)
    finally:
        r.close()
    if r.compressed:
        log_compressed(r.name, [k for k, _ in r.compressed], sum(b for _, b in r.compressed))
    return replace(scan, patches=patches)


# --------------------------------------------------------------------------------------------
# writing


def save_npz(path: str | os.PathLike, data: ScanData, *, compress: bool = False,
             patches_key: str = "ground_truth_patches") -> Path:
    """Write ``data`` as an NPZ the original PtychoPINN can read; atomically.

    Keys: ``diff3d`` (float32 amplitude (M, N, N)), ``xcoords``/``ycoords`` and
    ``xcoords_start``/``ycoords_start`` (float64), ``scan_index`` (int64), ``probeGuess``
    (complex64), ``objectGuess`` (complex64) if any, ground-truth patches under ``patches_key``
    (``ground_truth_patches`` or ``Y``) if any, and ``_metadata`` as a plain JSON unicode string
    (loads with ``allow_pickle=False``). The file is written to a temporary file in the same
    directory and renamed over ``path``, so readers never see a partial file.
    """
    if patches_key not in _PATCH_KEYS:
        raise ValueError(f"save_npz: patches_key must be one of {_PATCH_KEYS}, got {patches_key!r}")
    out = Path(path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")  # numpy would append it anyway
    arrays: dict[str, np.ndarray] = {
        # A lazy scan is read whole here: numpy.savez writes arrays.
        "diff3d": np.asarray(data.diffraction, dtype=np.float32),
        "xcoords": np.asarray(data.xcoords, dtype=np.float64),
        "ycoords": np.asarray(data.ycoords, dtype=np.float64),
        "xcoords_start": np.asarray(data.xcoords_start, dtype=np.float64),
        "ycoords_start": np.asarray(data.ycoords_start, dtype=np.float64),
        "scan_index": np.asarray(data.scan_index, dtype=np.int64),
        "probeGuess": np.asarray(data.probe, dtype=np.complex64),
    }
    if data.object is not None:
        arrays["objectGuess"] = np.asarray(data.object, dtype=np.complex64)
    if data.patches is not None:
        arrays[patches_key] = np.asarray(data.patches, dtype=np.complex64)
    if data.valid is not None:
        arrays["mask"] = np.asarray(data.valid, dtype=np.uint8)
    arrays["_metadata"] = np.array(json.dumps(data.metadata, default=json_default))
    writer = np.savez_compressed if compress else np.savez
    atomic_write(out, lambda fh: writer(fh, **arrays))
    return out



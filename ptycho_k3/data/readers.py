"""``load_scan``: any supported scan file to a :class:`ScanData` (docs/conventions.md §22).

Formats: the project NPZ (``diff3d``/``diffraction``, ``xcoords``, ...), tike-style NPZ
(``data``, ``scan``, ``probe``), CXI HDF5 (``entry_1/...``) and the ptychodus product HDF5
(``probe``, ``object``, ``raw_data/``). ``format="auto"`` decides from the file's content (zip or
HDF5 signature, then its keys); ``.bz2`` files are decompressed in memory first. Every reader
ends in :func:`~ptycho_k3.data.measured.prepare`, so masks, counts, DC layout, crop/bin and
positions are handled once. Frames are read on demand where the file allows it (an uncompressed
NPZ member, an HDF5 dataset; not a ``.bz2`` file, which is decompressed in memory): see
:mod:`ptycho_k3.data.lazy` and docs/conventions.md §22. Nothing here imports Keras.
"""

from __future__ import annotations

import bz2
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError
from .measured import FORMATS, MeasuredOptions, prepare
from .npz import ScanData, load_npz

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Any one of a layout's own keys decides the format, so a file missing a required key is read by
# that format's reader, whose error names the missing key.
_NPZ_KEYS = {"diff3d", "diffraction", "xcoords", "ycoords", "probeGuess"}
_TIKE_KEYS = {"data", "scan"}
_PTYCHODUS_KEYS = {"probe", "object", "probe_position_x_m", "probe_position_y_m", "raw_data"}


def _open_bytes(path: Path) -> tuple[bytes | None, str]:
    """The decompressed bytes of a ``.bz2`` file (else None) and the file's display name."""
    name = str(path)
    if not path.exists():
        raise DataError(f"{name}: file not found")
    if path.is_dir():
        raise DataError(f"{name}: is a directory, expected a scan file")
    if path.suffix != ".bz2":
        return None, name
    try:
        with bz2.open(path, "rb") as fh:
            return fh.read(), name
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{name}: not a readable bzip2 file ({exc})") from None


def detect_format(path: str | os.PathLike) -> str:
    """``npz``, ``tike``, ``cxi`` or ``ptychodus`` from the file's content.

    Raises:
        DataError: a file that is none of them (the message lists what was found).
    """
    p = Path(path)
    return _detect(p, *_open_bytes(p))


def _detect(p: Path, blob: bytes | None, name: str) -> str:
    """:func:`detect_format` of a file already opened by :func:`_open_bytes`."""
    head = blob[:8] if blob is not None else p.open("rb").read(8)
    if head.startswith(b"PK"):
        try:
            with np.load(io.BytesIO(blob) if blob is not None else p, allow_pickle=False) as z:
                keys = set(z.files)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{name}: not a readable NPZ file ({exc})") from None
        if keys & _NPZ_KEYS:
            return "npz"
        if keys & _TIKE_KEYS:
            return "tike"
        raise DataError(f"{name}: an NPZ with keys {sorted(keys)}: neither the project layout "
                        "(diff3d, xcoords, ycoords, probeGuess) nor tike's (data, scan, probe)")
    if head == _HDF5_SIGNATURE:
        import h5py

        try:
            with h5py.File(io.BytesIO(blob) if blob is not None else p, "r") as f:
                keys = set(f.keys())
        except OSError as exc:
            raise DataError(f"{name}: not a readable HDF5 file ({exc})") from None
        if "entry_1" in keys:
            return "cxi"
        if keys & _PTYCHODUS_KEYS:
            return "ptychodus"
        if {"patterns", "indexes"} <= keys:
            raise DataError(f"{name}: a ptychodus diffraction file (patterns, indexes, "
                            "bad_pixels) holds no positions or probe; pass the ptychodus product "
                            "(product.h5) in the same directory, which reads it")
        raise DataError(f"{name}: an HDF5 file with groups {sorted(keys)}: neither CXI "
                        "(entry_1/...) nor a ptychodus product (probe, object, raw_data)")
    if head[:6] == b"\x93NUMPY":
        raise DataError(f"{name}: holds a single .npy array, expected an NPZ archive of named "
                        "arrays (xcoords, ycoords, diff3d, probeGuess, ...)")
    raise DataError(f"{name}: unknown file type (not NPZ, not HDF5); supported formats: "
                    f"{', '.join(FORMATS[1:])}")


def load_scan(path: str | os.PathLike, options: MeasuredOptions | None = None,
              format: str | None = None) -> ScanData:
    """Read a scan file of any supported format and prepare it (module docstring).

    Args:
        path: the file (``.npz``, ``.cxi``/``.h5``/``.hdf5``, optionally ``.bz2``-compressed).
        options: measured-data options (kind, DC, saturation, crop/bin, units).
        format: overrides ``options.format`` (``auto`` decides from the content).

    Raises:
        DataError: unreadable or malformed file; the message names the file and the key.
    """
    opts = options or MeasuredOptions()
    fmt = format or opts.format
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; expected one of {FORMATS}")
    p = Path(path)
    blob, name = _open_bytes(p)  # a .bz2 file is decompressed once, for detection and reading
    if fmt == "auto":
        fmt = _detect(p, blob, name)
    source = io.BytesIO(blob) if blob is not None else p
    if fmt == "npz":
        if blob is not None:
            raise DataError(f"{name}: decompress the project NPZ first (bunzip2); only "
                            "tike-style NPZ and HDF5 files are read compressed")
        return load_npz(p, opts)
    if fmt == "ptychodus":
        from .ptychodus import load_ptychodus_product

        if blob is not None:
            raise DataError(f"{name}: decompress the ptychodus product first (bunzip2)")

        return prepare(load_ptychodus_product(p).raw_scan(name), opts)
    if fmt == "tike":
        from .tike import read_tike

        try:
            with np.load(source, allow_pickle=False) as z:
                return prepare(read_tike(z, name, path=p if blob is None else None), opts)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{name}: not a readable NPZ file ({exc})") from None
    import h5py

    from .cxi import read_cxi

    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise DataError(f"{name}: not a readable HDF5 file ({exc})") from None
    with f:
        raw = read_cxi(f, name, path=p if blob is None else None)
    return prepare(raw, opts)

"""From what a detector wrote to a :class:`ScanData` (docs/conventions.md §22).

Every reader (project NPZ, tike NPZ, CXI, ptychodus product) hands a :class:`RawScan` to
:func:`prepare`, which applies the same steps in the same order:

1. valid pixels: the file's mask (nonzero = valid), NaN/inf, negative values and, with a
   saturation level, values at or above it are invalid (each count is logged and recorded);
2. kind: ``counts`` (intensities) or ``amplitude`` (sqrt of counts, up to a scale), from the
   option, the file's ``_metadata`` or the format's default; a warning when the numbers look like
   the other kind (integers > 1 read as amplitude; mostly non-integer values read as counts);
3. zero-frequency layout: ``corner`` frames (an unshifted FFT) are ``fftshift``-ed so the zero
   frequency sits at ``(N/2, N/2)``; ``auto`` picks whichever layout puts more of the mean
   pattern's intensity near the centre, and logs it;
4. detector reduction: ``detector_crop`` keeps the central ``N x N`` (the object pixel grows by
   ``H / N``: positions in pixels scale by ``N / H`` and the probe is resampled by a Fourier crop);
   ``detector_bin`` sums ``K x K`` blocks of counts (the object pixel is unchanged and the field of
   view shrinks by ``K``: the probe is cropped to the central ``N x N``); a binned pixel is valid
   only when all its ``K^2`` pixels are;
5. amplitude ``sqrt(counts)`` (or the amplitude as given), 0 at invalid pixels;
6. positions to object pixels (metres divided by the object pixel size, which CXI files give
   through wavelength, distance and detector pixel: ``lambda z / (N dp)``);
7. no probe in the file: one from the data, ``IFFT(sqrt(mean counts))`` inside a disc support,
   scaled so that ``sum |P|^2`` = the mean counts per pattern (logged as such).

Steps 1 and 3-5 work frame by frame (:class:`_Conversion`): the statistics they need are taken
in one chunked pass over the frames (two with ``dc`` ``auto``), and frames read on demand
(:mod:`ptycho_k3.data.lazy`) are converted per batch read instead of all at once
(docs/conventions.md §22, streaming).

The record of every decision is ``ScanData.reading``. Nothing here imports Keras.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ptycho_k3.config import SUPPORTED_N, option

from .errors import DataError
from .lazy import ConvertedFrames, LazyFrames, chunk_rows, is_lazy, iter_chunks

log = logging.getLogger(__name__)

KINDS = ("counts", "amplitude")
DC_LAYOUTS = ("auto", "centre", "corner")
POSITION_UNITS = ("pixels", "metres")
FORMATS = ("auto", "npz", "tike", "cxi", "ptychodus")
#: h c in J m: wavelength = HC / energy.
HC_JM = 1.98644586e-25


@dataclass(frozen=True)
class MeasuredOptions:
    """How to read measured data; ``None`` = the file's ``_metadata``, else the format's default.

    Attributes:
        diffraction_kind: ``counts`` or ``amplitude``.
        dc: ``auto``, ``centre`` or ``corner`` (where the zero frequency is in the frames).
        saturation: pixels with a value >= this (in the file's units) are invalid.
        detector_crop: centre-crop the frames to this side.
        detector_bin: sum ``K x K`` pixel blocks (after any crop).
        positions_unit: ``pixels`` or ``metres``.
        object_pixel_size: object pixel size in metres (needed for positions in metres unless the
            file gives the geometry).
        format: ``auto`` (from the file), ``npz``, ``tike``, ``cxi`` or ``ptychodus``.
    """

    diffraction_kind: str | None = option(
        None, "the frames hold counts (intensities) or amplitudes (sqrt of counts)",
        choices=KINDS, default_text="the file's _metadata, else amplitude for the project NPZ, "
                                    "counts otherwise")
    dc: str | None = option(None, "where the zero frequency is: centre, corner (unshifted FFT) "
                            "or auto (from the mean pattern)", choices=DC_LAYOUTS,
                            default_text="the file's _metadata, else the format's")
    saturation: float | None = option(None, "pixels at or above this value (file units) are "
                                      "invalid")
    detector_crop: int | None = option(None, "centre-crop detector frames to this side N (the "
                                       "object pixel grows)", minimum=1)
    detector_bin: int | None = option(None, "sum KxK detector pixels (counts; the probe is "
                                      "cropped to the smaller field)", minimum=1)
    positions_unit: str | None = option(None, "scan positions in object pixels or metres (needs "
                                        "a pixel size)", choices=POSITION_UNITS)
    object_pixel_size: float | None = option(None, "object pixel size in metres, for positions "
                                             "in metres")
    format: str = option("auto", "file format: auto (from the content), npz, tike, cxi, "
                         "ptychodus", choices=FORMATS)

    def __post_init__(self) -> None:
        for name, allowed in (("diffraction_kind", KINDS), ("dc", DC_LAYOUTS),
                              ("positions_unit", POSITION_UNITS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.saturation is not None and not (self.saturation > 0
                                                and math.isfinite(self.saturation)):
            raise ValueError(f"saturation must be a finite number > 0, got {self.saturation}")
        for name in ("detector_crop", "detector_bin"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        if self.object_pixel_size is not None and not (self.object_pixel_size > 0
                                                       and math.isfinite(self.object_pixel_size)):
            raise ValueError(f"object_pixel_size must be a finite number > 0 (metres), got "
                             f"{self.object_pixel_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RawScan:
    """A scan as a reader found it, before :func:`prepare` (shapes use the raw frame ``H x W``).

    Attributes:
        source: the file name (every error message starts with it).
        data: ``(M, H, W)`` real frames as stored (any real dtype; NaN/negatives allowed): an
            array, or a :class:`~ptycho_k3.data.lazy.LazyFrames` read on demand (then the
            prepared scan's frames stay on demand).
        data_key: the dataset/key the frames came from.
        positions: float64 ``(M, 2)`` ``[x, y]`` (x = column, y = row) in ``positions_unit``.
        positions_key: where the positions came from.
        mask: valid-pixel mask ``(H, W)`` or ``(M, H, W)`` (nonzero = valid; the stack may be
            lazy) or None.
        probe: complex ``(H, W)`` on the object grid of the raw frames, or None.
        kind, dc, positions_unit: the file's (or format's) values; options override them.
        object_pixel_m: the object pixel size the file states (metres) or None.
        geometry: ``(wavelength_m, distance_m, detector_pixel_m)`` when the file gives them.
        positions_start: float64 ``(M, 2)`` start positions (same unit) or None.
        object, patches, scan_index: passed through (project NPZ only).
        metadata: the file's metadata dict.
        format: the reader's name (recorded).
    """

    source: str
    data: np.ndarray
    data_key: str
    positions: np.ndarray
    positions_key: str
    mask: np.ndarray | None = None
    mask_key: str = "mask"
    probe: np.ndarray | None = None
    probe_key: str = "probe"
    kind: str = "amplitude"
    dc: str = "centre"
    positions_unit: str = "pixels"
    object_pixel_m: float | None = None
    geometry: tuple[float, float, float] | None = None
    positions_start: np.ndarray | None = None
    object: np.ndarray | None = None
    patches: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = "npz"


def _fail(raw: RawScan, key: str, what: str) -> DataError:
    return DataError(f"{raw.source}: '{key}' {what}")


def _choice(option: Any, metadata: dict[str, Any], key: str, default: Any,
            allowed: tuple[str, ...], raw: RawScan) -> tuple[Any, str]:
    """The value of one setting and where it came from: option > ``_metadata`` > format."""
    if option is not None:
        return option, "option"
    value = metadata.get(key)
    if value is not None:
        if value not in allowed:
            raise _fail(raw, "_metadata", f"has {key}={value!r}; expected one of {allowed}")
        return value, "_metadata"
    return default, "format default"


# --------------------------------------------------------------------------------------------
# the steps


def _checked_mask(raw: RawScan) -> Any:
    """The file's mask as the conversion uses it: None, bool ``(H, W)`` (nonzero = valid), or
    the ``(M, H, W)`` stack as stored (an array or a lazy stack; compared with 0 per block).

    Raises:
        DataError: a mask of the wrong shape or dtype.
    """
    if raw.mask is None:
        return None
    m, h, w = raw.data.shape
    mk = raw.mask if is_lazy(raw.mask) else np.asarray(raw.mask)
    if tuple(mk.shape) not in ((h, w), (m, h, w)):
        raise _fail(raw, raw.mask_key, f"has shape {tuple(mk.shape)}; expected ({h}, {w}) or "
                                       f"({m}, {h}, {w}) like the frames in '{raw.data_key}'")
    if np.dtype(mk.dtype).kind not in "biuf":
        raise _fail(raw, raw.mask_key, f"has dtype {mk.dtype}; expected a numeric or boolean "
                                       "mask (nonzero = valid)")
    return np.asarray(mk) != 0 if mk.ndim == 2 else mk


def _as_float32(block: np.ndarray) -> np.ndarray:
    """Floats wider than float32 as float32 (beyond its range: inf, an invalid pixel); other
    dtypes as they are (integers become float32 after masking, exactly up to 2^24)."""
    if block.dtype.kind == "f" and block.dtype.itemsize > 4:
        with np.errstate(over="ignore"):
            return block.astype(np.float32)
    return block


def _block_validity(x: np.ndarray, mask: np.ndarray | None, saturation: float | None
                    ) -> tuple[np.ndarray, dict[str, int]]:
    """bool valid pixels of the frames ``x`` ``(k, H, W)`` and the count of each reason.

    ``mask``: bool ``(H, W)`` or ``(k, H, W)`` (True = valid) or None.
    """
    valid = np.ones(x.shape, dtype=bool)
    counts: dict[str, int] = {}
    if mask is not None:
        mk = np.broadcast_to(mask, x.shape)
        counts["masked"] = int(np.count_nonzero(~mk))
        valid &= mk
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        counts["non_finite"] = int(np.count_nonzero(~finite))
        valid &= finite
    with np.errstate(invalid="ignore"):
        negative = x < 0
        counts["negative"] = int(np.count_nonzero(negative))
        valid &= ~negative
        if saturation is not None:
            saturated = x >= saturation
            counts["saturated"] = int(np.count_nonzero(saturated))
            valid &= ~saturated
    return valid, counts


def _add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def _mask_rows(mask: Any, rows: np.ndarray) -> np.ndarray | None:
    """The mask of the raw rows ``rows``: the 2-D mask itself, or bool rows of a stack."""
    if mask is None or mask.ndim == 2:
        return mask
    return np.asarray(mask[rows]) != 0


def valid_pixels(raw: RawScan, saturation: float | None) -> tuple[np.ndarray, dict[str, int]]:
    """bool ``(M, H, W)`` valid pixels and the count of each reason for invalidity.

    Frames are read in chunks; floats wider than float32 are judged as float32 (what is stored).
    """
    mask = _checked_mask(raw)
    valid = np.empty(raw.data.shape, dtype=bool)
    counts: dict[str, int] = {}
    for lo, block in iter_chunks(raw.data):
        rows = np.arange(lo, lo + block.shape[0], dtype=np.int64)
        v, why = _block_validity(_as_float32(block), _mask_rows(mask, rows), saturation)
        valid[lo : lo + block.shape[0]] = v
        _add_counts(counts, why)
    return valid, counts


def looks_like(data: np.ndarray, valid: np.ndarray) -> str | None:
    """``counts`` when the valid values are integers with some > 1, ``amplitude`` when most are
    not integers, else None (cannot tell). Looks at up to 64 frames."""
    sample = np.asarray(data[:64])[np.asarray(valid[:64])].astype(np.float64)
    if sample.size == 0:
        return None
    integer = np.mod(sample, 1.0) == 0
    if integer.all() and sample.max() > 1:
        return "counts"
    if np.mean(integer) < 0.5:
        return "amplitude"
    return None


def decide_dc(mean_pattern: np.ndarray) -> str:
    """``centre`` or ``corner``: the layout whose central quarter holds more of the mean pattern."""
    h, w = mean_pattern.shape
    r, c = h // 4, w // 4
    centre = float(np.sum(mean_pattern[h // 2 - r : h // 2 + r, w // 2 - c : w // 2 + c]))
    shifted = np.fft.fftshift(mean_pattern)
    corner = float(np.sum(shifted[h // 2 - r : h // 2 + r, w // 2 - c : w // 2 + c]))
    return "corner" if corner > centre else "centre"


class _PatternMean:
    """Accumulates the per-pixel mean of valid values, 256 patterns at a time (float64 sums),
    so any split of the stack into blocks of a multiple of 256 gives the same sums."""

    def __init__(self, shape: tuple[int, int]):
        self.total = np.zeros(shape, np.float64)
        self.n = np.zeros(shape, np.float64)

    def add(self, values: np.ndarray, valid: np.ndarray) -> None:
        """``values`` ``(k, H, W)``; ``valid`` bool ``(k, H, W)`` or ``(H, W)``."""
        for lo in range(0, values.shape[0], 256):
            x = values[lo : lo + 256]
            v = valid[lo : lo + 256] if valid.ndim == 3 else np.broadcast_to(valid, x.shape)
            self.total += np.where(v, x, 0.0).sum(axis=0)
            self.n += v.sum(axis=0)

    def mean(self) -> np.ndarray:
        """float64 ``(H, W)``: the mean of the valid values per pixel (0 where never valid)."""
        return np.divide(self.total, self.n, out=np.zeros_like(self.total), where=self.n > 0)


def _pass_rows(shape: tuple[int, ...]) -> int:
    """Rows per chunk of a pass over frames of ``shape`` (float32 working copies)."""
    return chunk_rows(tuple(int(s) for s in shape), 4)


def _mean_pattern(counts: Any, valid: Any) -> np.ndarray:
    """float64 ``(H, W)`` mean of the valid values per pixel (0 where never valid).

    ``counts`` ``(M, H, W)`` and ``valid`` (``(H, W)`` or ``(M, H, W)``) may be arrays or lazy
    stacks; they are read in chunks."""
    acc = _PatternMean(tuple(counts.shape[1:]))
    for lo, block in iter_chunks(counts, _pass_rows(counts.shape)):
        v = valid if valid.ndim == 2 else np.asarray(valid[lo : lo + block.shape[0]])
        acc.add(block, v)
    return acc.mean()


def neutral_fill(amplitudes: Any, valid: Any) -> np.ndarray | None:
    """float32 ``(N, N)`` values shown to the network at invalid pixels, or None if all valid.

    The mean amplitude of the pixel over the patterns where it is valid; for a pixel never valid
    (a beam stop, a module gap) the mean of the valid pixels at the same distance from the
    centre (rounded to whole pixels); a distance with no valid pixel at all (the rings under a
    central beam stop) takes the value interpolated between the nearest distances that have
    one (the innermost one's value inside it). A masked pixel then looks like a typical pattern
    instead of a dark hole. ``amplitudes`` ``(M, N, N)`` and ``valid`` (``(N, N)`` or
    ``(M, N, N)``) may be lazy stacks (read in chunks).
    """
    if valid is None:
        return None
    n = amplitudes.shape[-1]
    acc = _PatternMean(tuple(amplitudes.shape[1:]))
    for lo, block in iter_chunks(amplitudes, _pass_rows(amplitudes.shape)):
        acc.add(block, valid if valid.ndim == 2 else np.asarray(valid[lo : lo + block.shape[0]]))
    mean = acc.mean()
    seen = acc.n > 0
    if not seen.all():
        yy, xx = np.mgrid[0:n, 0:n] - n / 2
        ring = np.rint(np.hypot(xx, yy)).astype(np.int64)
        sums = np.bincount(ring[seen], weights=mean[seen], minlength=ring.max() + 1)
        nums = np.bincount(ring[seen], minlength=ring.max() + 1)
        have = nums > 0
        radii = np.arange(sums.size)
        ring_mean = np.interp(radii, radii[have], sums[have] / nums[have])
        mean = np.where(seen, mean, ring_mean[ring])
    return mean.astype(np.float32)


def centre_crop(a: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` of the last two axes, keeping pixel ``(H/2, W/2)`` at
    ``(size/2, size/2)``."""
    h, w = a.shape[-2:]
    r0, c0 = h // 2 - size // 2, w // 2 - size // 2
    return a[..., r0 : r0 + size, c0 : c0 + size]


def bin_frames(a: np.ndarray, k: int) -> np.ndarray:
    """Sum ``k x k`` blocks over the last two axes (their sides must be multiples of ``k``)."""
    h, w = a.shape[-2:]
    return a.reshape(*a.shape[:-2], h // k, k, w // k, k).sum(axis=(-3, -1))


def fourier_resample(probe: np.ndarray, size: int) -> np.ndarray:
    """Resample a complex image to ``size x size`` pixels over the same field of view by cropping
    (or zero-padding) its centred spectrum, scaled so that its far field at every kept detector
    pixel is unchanged (``|FFT(P)|^2 / N^2``, docs/conventions.md §8): a probe consistent with
    the frames stays consistent with the cropped frames (its power is that inside the crop)."""
    n = probe.shape[-1]
    spec = np.fft.fftshift(np.fft.fft2(probe))
    if size <= n:
        spec = centre_crop(spec, size)
    else:
        pad = np.zeros((size, size), complex)
        r0 = size // 2 - n // 2
        pad[r0 : r0 + n, r0 : r0 + n] = spec
        spec = pad
    out = np.fft.ifft2(np.fft.ifftshift(spec)) * (size / n)
    return out.astype(np.complex64)


def probe_from_data(mean_counts: np.ndarray) -> np.ndarray:
    """A first probe from the mean pattern (DC at the centre): ``IFFT(sqrt(mean))`` with a flat
    spectral phase, limited to a disc of radius ``N/4``, scaled to ``sum |P|^2 = sum mean``.

    Under the far-field convention of docs/conventions.md §8 (``|FFT(P O)|^2 / N^2``) a flat
    object then predicts the mean pattern's total counts.
    """
    n = mean_counts.shape[-1]
    amp = np.sqrt(np.maximum(mean_counts, 0.0))
    field_ = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amp)))
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    field_ = field_ * (xx ** 2 + yy ** 2 <= (n / 4) ** 2)
    power = float(np.sum(np.abs(field_) ** 2))
    target = float(np.sum(mean_counts))
    if power > 0 and target > 0:
        field_ *= math.sqrt(target / power)
    return field_.astype(np.complex64)


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Conversion:
    """Steps 1 and 3-5 of the module docstring for any block of raw frames.

    Every step works frame by frame, so the same function serves a chunked pass over the whole
    stack and a lazy stack converted batch by batch (:class:`~ptycho_k3.data.lazy.ConvertedFrames`);
    a frame comes out the same whichever rows are read with it.

    Attributes:
        mask: None, bool ``(H, W)`` (True = valid) or the file's ``(M, H, W)`` mask stack.
        saturation: values at or above it are invalid (file units), or None.
        shift: the frames are ``fftshift``-ed (zero frequency in the corner).
        crop: centre-crop side, or None. binning: ``K``, or None.
        counts: the frames hold counts (else amplitudes).
    """

    mask: Any
    saturation: float | None
    shift: bool
    crop: int | None
    binning: int | None
    counts: bool

    @property
    def as_counts(self) -> bool:
        """True when the converted frames (before the square root) are counts."""
        return self.counts or self.binning is not None

    def counts_of(self, frames: np.ndarray) -> np.ndarray:
        """The counts of converted frames (amplitudes are squared)."""
        return frames if self.as_counts else np.square(frames)

    def frames(self, block: np.ndarray, rows: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int], np.ndarray]:
        """``(frames, valid, raw_valid, reasons, raw)`` of the raw ``block`` ``(k, H, W)``
        holding the rows ``rows``.

        ``frames``: float32 ``(k, N, N)`` in their own kind (counts after binning), 0 where
        invalid; ``valid``: bool ``(k, N, N)``; ``raw_valid``: bool ``(k, H, W)`` before the
        shift and reduction; ``reasons``: counts of invalid raw pixels per reason; ``raw``: the
        block as judged (floats as float32). The frames stay in their own kind through shift and
        crop (a clean amplitude file comes back bit for bit); binning sums counts, so
        amplitudes are squared first. float32 holds integer counts exactly up to 2^24.
        """
        x = _as_float32(block)
        valid, why = _block_validity(x, _mask_rows(self.mask, rows), self.saturation)
        raw_valid = valid
        frames = np.where(valid, x, 0).astype(np.float32, copy=False)
        if self.shift:
            frames = np.fft.fftshift(frames, axes=(-2, -1))
            valid = np.fft.fftshift(valid, axes=(-2, -1))
        if self.crop is not None:
            frames, valid = centre_crop(frames, self.crop), centre_crop(valid, self.crop)
        if self.binning is not None:
            k = self.binning
            frames = bin_frames(frames if self.counts else np.square(frames), k)
            valid = bin_frames(valid.astype(np.int32), k) == k * k
            frames = np.where(valid, frames, 0.0)
        return frames, valid, raw_valid, why, x

    def amplitude(self, block: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 ``(k, N, N)`` stored amplitudes of the raw ``block`` (0 at invalid pixels)."""
        frames = self.frames(block, rows)[0]
        return np.ascontiguousarray(np.sqrt(frames) if self.as_counts else frames,
                                    dtype=np.float32)

    def valid(self, block: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """bool ``(k, N, N)`` valid pixels of the raw ``block``."""
        return np.ascontiguousarray(self.frames(block, rows)[1])

    def changes(self, dtype: np.dtype) -> bool:
        """Whether frames of ``dtype`` with every pixel valid come out changed."""
        return (np.dtype(dtype) != np.float32 or self.as_counts or self.shift
                or self.crop is not None)


@dataclass
class _FrameStats:
    """What one chunked pass over the frames finds (:func:`_scan_frames`)."""

    reasons: dict[str, int] = field(default_factory=dict)
    n_invalid: int = 0
    raw_empty: list[int] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)
    all_valid: bool = True
    per_pattern: bool = False
    first_valid: np.ndarray | None = None
    sums: np.ndarray | None = None
    mean: _PatternMean | None = None


def _scan_frames(data: Any, conv: _Conversion, n: int, *, sums: bool, mean: bool,
                 out: np.ndarray | None, valid_out: np.ndarray | None) -> _FrameStats:
    """One pass over ``data`` in chunks (16 MiB of float32 frames each): the invalid-pixel
    counts, the patterns without a valid pixel (before and after the reduction), whether the
    valid pixels are the same in every pattern, the counts per pattern (``sums``, float32
    ``(M,)``) and the mean counts pattern (``mean``); with ``out``/``valid_out`` also the
    converted amplitudes and valid pixels of every pattern (an in-memory scan)."""
    m = data.shape[0]
    st = _FrameStats(sums=np.empty(m, np.float32) if sums else None,
                     mean=_PatternMean((n, n)) if mean else None)
    for lo, block in iter_chunks(data, _pass_rows(data.shape)):
        k = block.shape[0]
        rows = np.arange(lo, lo + k, dtype=np.int64)
        frames, valid, raw_valid, why, _ = conv.frames(block, rows)
        _add_counts(st.reasons, why)
        st.n_invalid += int(raw_valid.size - np.count_nonzero(raw_valid))
        st.raw_empty += (lo + np.flatnonzero(~raw_valid.reshape(k, -1).any(axis=1))).tolist()
        st.empty += (lo + np.flatnonzero(~valid.reshape(k, -1).any(axis=1))).tolist()
        if st.first_valid is None:
            st.first_valid = np.array(valid[0])
        st.all_valid = st.all_valid and bool(valid.all())
        st.per_pattern = st.per_pattern or not bool(np.all(valid == st.first_valid))
        if sums or mean:
            counts = conv.counts_of(frames)
            if st.sums is not None:
                st.sums[lo : lo + k] = np.sum(counts, axis=(-2, -1))
            if st.mean is not None:
                st.mean.add(counts, valid)
        if out is not None:
            out[lo : lo + k] = np.sqrt(frames) if conv.as_counts else frames
        if valid_out is not None:
            valid_out[lo : lo + k] = valid
    if isinstance(data, LazyFrames):
        data.release()
    return st


def prepare(raw: RawScan, options: MeasuredOptions | None = None):
    """Apply the steps of the module docstring; returns a :class:`ScanData`.

    The frames are read in chunks (16 MiB of float32 frames at a time) for the statistics the
    steps need (invalid pixels, patterns without a valid pixel, counts per pattern, mean
    pattern). Frames in memory are converted in the same pass into one array. Frames read on
    demand (``raw.data`` a :class:`~ptycho_k3.data.lazy.LazyFrames`: an uncompressed NPZ
    member, an HDF5 dataset) stay on demand: every step is per frame, so the result's
    ``diffraction`` (and a per-pattern ``valid``) is a
    :class:`~ptycho_k3.data.lazy.ConvertedFrames` that applies them to each batch it reads
    (mask, NaN/negative/saturation -> 0, float64 -> float32, counts -> sqrt, corner -> centre,
    crop, bin), or the file's frames themselves when nothing changes them (float32 amplitudes,
    centred, every pixel valid). Nothing is read whole.

    Raises:
        DataError: a mask of the wrong shape, a pattern with no valid pixel, frames that cannot
        be cropped/binned to a supported N, a probe of the wrong size, positions in metres
        without a pixel size. Each message names the file and the key.
    """
    from .npz import ScanData

    opts = options or MeasuredOptions()
    md = raw.metadata
    # Log records are held until every check has passed: a rejected file reports one line, the
    # error (the commands' contract, cli/_common.py), not the decisions made before it.
    notes: list[tuple[int, str, tuple[Any, ...]]] = []

    def note(level: int, msg: str, *args: Any) -> None:
        notes.append((level, msg, args))
    data = raw.data
    if data.ndim != 3:
        raise _fail(raw, raw.data_key, f"has shape {data.shape}; expected (M, H, W) frames")
    m, h, w = data.shape
    if raw.positions.shape != (m, 2):
        raise _fail(raw, raw.positions_key, f"has {raw.positions.shape[0]} positions; expected "
                                            f"{m} (one per frame in '{raw.data_key}')")
    kind, kind_from = _choice(opts.diffraction_kind, md, "diffraction_kind", raw.kind, KINDS, raw)
    dc, dc_from = _choice(opts.dc, md, "dc", raw.dc, DC_LAYOUTS, raw)
    unit, unit_from = _choice(opts.positions_unit, md, "positions_unit", raw.positions_unit,
                              POSITION_UNITS, raw)
    saturation = opts.saturation
    if saturation is None and md.get("saturation") is not None:
        saturation = _float(md["saturation"])
        if saturation is None:
            raise _fail(raw, "_metadata", f"has saturation={md['saturation']!r}; expected a "
                                          "finite number > 0 (file units)")
    saturation = None if saturation is None else float(saturation)
    record: dict[str, Any] = {"format": raw.format, "frame_shape": [h, w],
                              "diffraction_kind": kind, "diffraction_kind_from": kind_from}
    mask = _checked_mask(raw)

    # The geometry (crop, bin, N, probe size) needs no frame: it is checked before any is read.
    probe = None if raw.probe is None else np.asarray(raw.probe)
    if probe is not None and probe.shape != (h, w):
        raise _fail(raw, raw.probe_key, f"has shape {probe.shape}; expected ({h}, {w}) like the "
                                        f"frames in '{raw.data_key}'")
    pos_scale = 1.0  # object pixels of the prepared scan per object pixel of the raw frames
    side_h, side_w = h, w
    crop = binning = None
    if opts.detector_crop is not None:
        crop = int(opts.detector_crop)
        if crop > min(h, w):
            raise _fail(raw, raw.data_key, f"frames are {h}x{w}; cannot crop to {crop}x{crop}")
        if h != w:
            raise _fail(raw, raw.data_key, f"frames are {h}x{w}; --detector_crop needs square "
                                           "frames (the object pixel would differ per axis)")
        pos_scale = crop / h
        side_h = side_w = crop
    if opts.detector_bin is not None and opts.detector_bin > 1:
        binning = int(opts.detector_bin)
        if side_h % binning or side_w % binning:
            raise _fail(raw, raw.data_key, f"frames are {side_h}x{side_w}; --detector_bin "
                                           f"{binning} needs sides that are multiples of it")
        side_h, side_w = side_h // binning, side_w // binning
    if side_h != side_w or side_h not in SUPPORTED_N:
        raise _fail(raw, raw.data_key, f"frames are {side_h}x{side_w} after crop/bin; N must be "
                                       f"one of {SUPPORTED_N} (use --detector_crop or "
                                       "--detector_bin)")
    n = side_h

    # The kind is guessed from the first 64 frames (read once more by the pass below).
    first = np.asarray(data[: min(m, 64)])
    plain = _Conversion(mask, saturation, False, None, None, kind == "counts")
    _, _, first_valid, _, first_raw = plain.frames(first, np.arange(first.shape[0]))
    guess = looks_like(first_raw, first_valid)
    del first, first_raw, first_valid
    if dc == "auto":  # a first pass for the mean pattern as stored
        pre = _scan_frames(data, plain, h, sums=False, mean=True, out=None, valid_out=None)
        if not pre.raw_empty:
            dc = decide_dc(pre.mean.mean())
            dc_from = "auto"
    conv = _Conversion(mask, saturation, dc == "corner", crop, binning, kind == "counts")
    lazy = isinstance(data, LazyFrames)
    out = valid_out = None
    if not lazy:
        out = np.empty((m, n, n), np.float32)
        valid_out = np.empty((m, n, n), bool)
    # Counts are needed only for the photon count of a counts file and for a probe made from the
    # data; an amplitude file with a probe (the common case) is not squared a second time.
    stats = _scan_frames(data, conv, n, sums=kind == "counts" or probe is None,
                         mean=probe is None, out=out, valid_out=valid_out)

    record["invalid_pixels"] = {"total": stats.n_invalid, **stats.reasons}
    if stats.n_invalid:
        note(logging.INFO, "%s: %d invalid detector pixels (%s)", raw.source, stats.n_invalid,
             ", ".join(f"{k} {v}" for k, v in stats.reasons.items() if v))
    if stats.raw_empty:
        more = f" (and {len(stats.raw_empty) - 1} more)" if len(stats.raw_empty) > 1 else ""
        raise _fail(raw, raw.data_key, f"pattern {stats.raw_empty[0]}{more} has no valid pixel "
                                       "(mask, NaN, negative or saturated); remove it or fix the "
                                       "mask")
    if guess is not None and guess != kind:
        hint = ("integers above 1, like photon counts" if guess == "counts"
                else "mostly non-integer, like amplitudes")
        note(logging.WARNING, "%s: '%s' is read as %s (%s) but its values are %s; pass "
             "--diffraction_kind %s if that is what they are", raw.source, raw.data_key,
             kind, kind_from, hint, guess)
        record["kind_warning"] = f"values look like {guess}"
    if dc_from == "auto":
        note(logging.INFO, "%s: zero frequency decided from the mean pattern: %s", raw.source, dc)
    record.update(dc=dc, dc_from=dc_from)
    if crop is not None:
        if probe is not None:
            probe = fourier_resample(probe, crop)
        record["detector_crop"] = crop
    if binning is not None:
        if probe is not None:
            kept = centre_crop(probe, n)
            frac = float(np.sum(np.abs(kept) ** 2) / max(np.sum(np.abs(probe) ** 2), 1e-30))
            record["probe_energy_kept_by_bin"] = frac
            note(logging.INFO, "%s: binning %d keeps the central %dx%d of the probe (%.1f%% of "
                 "its energy)", raw.source, binning, n, n, 100 * frac)
            probe = kept
        record["detector_bin"] = binning
    if stats.empty:
        raise _fail(raw, raw.data_key, f"pattern {stats.empty[0]} has no valid pixel after "
                                       "crop/bin")
    mean_counts = None
    if stats.sums is not None:
        mean_counts = float(np.mean(stats.sums))
    if kind == "counts":
        record["mean_counts_per_pattern"] = mean_counts

    # positions: a stated pixel size is that of the raw frames' object grid; a crop to N makes
    # the object pixel H/N times larger (binning leaves it unchanged).
    pixel_m = opts.object_pixel_size or raw.object_pixel_m or _float(md.get("object_pixel_m"))
    pixel_m = pixel_m / pos_scale if pixel_m else None
    if raw.geometry is not None and not opts.object_pixel_size:
        wavelength, distance, det_px = raw.geometry
        pixel_m = wavelength * distance / (n * det_px * record.get("detector_bin", 1))
    pos = np.asarray(raw.positions, np.float64)
    start = None if raw.positions_start is None else np.asarray(raw.positions_start, np.float64)
    if unit == "metres":
        if not pixel_m:
            raise _fail(raw, raw.positions_key, "is in metres but the object pixel size is "
                                                "unknown; pass --object_pixel_size (metres)")
        pos = pos / pixel_m
        start = None if start is None else start / pixel_m
    else:
        pos = pos * pos_scale
        start = None if start is None else start * pos_scale
    if not np.all(np.isfinite(pos)):
        raise _fail(raw, raw.positions_key, "contains non-finite values")
    record.update(positions_unit=unit, positions_unit_from=unit_from,
                  object_pixel_m=pixel_m or None)

    if probe is None:
        probe = probe_from_data(stats.mean.mean())
        record["probe"] = "from data (IFFT of sqrt(mean pattern), disc support N/4)"
        note(logging.INFO, "%s: no probe in the file; initial probe from the mean pattern",
             raw.source)
    else:
        record["probe"] = f"from '{raw.probe_key}'"
        power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
        if kind == "counts" and power > 0 and mean_counts:
            # With counts the probe's power is known: a unit-transmission object must predict
            # the mean counts per pattern (docs/conventions.md §8), whatever scale the file used.
            gain = math.sqrt(mean_counts / power)
            probe = probe * gain
            record["probe_power_gain"] = gain
    probe = np.asarray(probe, np.complex64)
    if not np.all(np.isfinite(probe)):
        raise _fail(raw, raw.probe_key, "contains non-finite values")

    for level, msg, args in notes:
        log.log(level, msg, *args)
    # The reading directives describe the file, not the prepared arrays (amplitudes, DC centred,
    # positions in pixels, invalid pixels in ``valid``); kept, they would be applied a second
    # time when the scan is saved (save_npz) and read back. ``reading`` records them.
    metadata = {k: v for k, v in md.items()
                if k not in ("diffraction_kind", "dc", "positions_unit", "saturation")}
    if kind == "counts":
        # The amplitudes are sqrt(counts) exactly, so the photons per pattern are the mean
        # counts (what the intensity scale needs, docs/conventions.md §9), whatever else is said.
        metadata["nphotons"] = mean_counts
    if pixel_m:
        metadata["object_pixel_m"] = pixel_m
    if out is not None:  # in memory: converted in the pass
        diffraction: Any = out
        mask_out = None
        if not stats.all_valid:
            mask_out = valid_out if stats.per_pattern else np.array(valid_out[0])
    else:  # on demand: converted per batch read (or the frames as stored)
        diffraction = data
        if not stats.all_valid or conv.changes(data.dtype):
            diffraction = ConvertedFrames(data, conv.amplitude, (m, n, n), np.float32)
        mask_out = None
        if not stats.all_valid:
            mask_out = (ConvertedFrames(data, conv.valid, (m, n, n), bool) if stats.per_pattern
                        else stats.first_valid)
        record["frames_read"] = "on demand" if diffraction is data else \
            "on demand, converted per batch"
    return ScanData(
        xcoords=pos[:, 0].copy(), ycoords=pos[:, 1].copy(), diffraction=diffraction, probe=probe,
        xcoords_start=None if start is None else start[:, 0].copy(),
        ycoords_start=None if start is None else start[:, 1].copy(),
        object=raw.object, patches=raw.patches, scan_index=raw.scan_index, valid=mask_out,
        metadata=metadata, source=raw.source, reading=record,
    )


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and math.isfinite(v) else None

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
        data: ``(M, H, W)`` real frames as stored (any real dtype; NaN/negatives allowed).
        data_key: the dataset/key the frames came from.
        positions: float64 ``(M, 2)`` ``[x, y]`` (x = column, y = row) in ``positions_unit``.
        positions_key: where the positions came from.
        mask: valid-pixel mask ``(H, W)`` or ``(M, H, W)`` (nonzero = valid) or None.
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


def valid_pixels(raw: RawScan, saturation: float | None) -> tuple[np.ndarray, dict[str, int]]:
    """bool ``(M, H, W)`` valid pixels and the count of each reason for invalidity."""
    data = raw.data
    m, h, w = data.shape
    valid = np.ones(data.shape, dtype=bool)
    counts: dict[str, int] = {}
    if raw.mask is not None:
        mk = np.asarray(raw.mask)
        if mk.shape not in ((h, w), (m, h, w)):
            raise _fail(raw, raw.mask_key, f"has shape {mk.shape}; expected ({h}, {w}) or "
                                           f"({m}, {h}, {w}) like the frames in '{raw.data_key}'")
        if mk.dtype.kind not in "biuf":
            raise _fail(raw, raw.mask_key, f"has dtype {mk.dtype}; expected a numeric or boolean "
                                           "mask (nonzero = valid)")
        mk = np.broadcast_to(mk != 0, data.shape)
        counts["masked"] = int(np.count_nonzero(~mk))
        valid &= mk
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        counts["non_finite"] = int(np.count_nonzero(~finite))
        valid &= finite
    with np.errstate(invalid="ignore"):
        negative = data < 0
        counts["negative"] = int(np.count_nonzero(negative))
        valid &= ~negative
        if saturation is not None:
            saturated = data >= saturation
            counts["saturated"] = int(np.count_nonzero(saturated))
            valid &= ~saturated
    return valid, counts


def looks_like(data: np.ndarray, valid: np.ndarray) -> str | None:
    """``counts`` when the valid values are integers with some > 1, ``amplitude`` when most are
    not integers, else None (cannot tell). Looks at up to 64 frames."""
    sample = data[:64][valid[:64]].astype(np.float64)
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


def _mean_pattern(counts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float64 ``(H, W)`` mean of the valid values per pixel (0 where never valid)."""
    total = np.zeros(counts.shape[1:], np.float64)
    n = np.zeros(counts.shape[1:], np.float64)
    for lo in range(0, counts.shape[0], 256):
        v = valid[lo : lo + 256]
        total += np.where(v, counts[lo : lo + 256], 0.0).sum(axis=0)
        n += v.sum(axis=0)
    return np.divide(total, n, out=np.zeros_like(total), where=n > 0)


def neutral_fill(amplitudes: np.ndarray, valid: np.ndarray | None) -> np.ndarray | None:
    """float32 ``(N, N)`` values shown to the network at invalid pixels, or None if all valid.

    The mean amplitude of the pixel over the patterns where it is valid; for a pixel never valid
    (a beam stop, a module gap) the mean of the valid pixels at the same distance from the
    centre (rounded to whole pixels); a distance with no valid pixel at all (the rings under a
    central beam stop) takes the value interpolated between the nearest distances that have
    one (the innermost one's value inside it). A masked pixel then looks like a typical pattern
    instead of a dark hole.
    """
    if valid is None:
        return None
    n = amplitudes.shape[-1]
    v = np.broadcast_to(valid, amplitudes.shape)
    mean = _mean_pattern(amplitudes, v)
    seen = v.any(axis=0)
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


def prepare(raw: RawScan, options: MeasuredOptions | None = None):
    """Apply the steps of the module docstring; returns a :class:`ScanData`.

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
    record: dict[str, Any] = {"format": raw.format, "frame_shape": [h, w],
                              "diffraction_kind": kind, "diffraction_kind_from": kind_from}

    valid, why = valid_pixels(raw, None if saturation is None else float(saturation))
    n_invalid = int(valid.size - np.count_nonzero(valid))
    record["invalid_pixels"] = {"total": n_invalid, **why}
    if n_invalid:
        note(logging.INFO, "%s: %d invalid detector pixels (%s)", raw.source, n_invalid,
             ", ".join(f"{k} {v}" for k, v in why.items() if v))
    empty = np.flatnonzero(~valid.reshape(m, -1).any(axis=1))
    if empty.size:
        more = f" (and {empty.size - 1} more)" if empty.size > 1 else ""
        raise _fail(raw, raw.data_key, f"pattern {int(empty[0])}{more} has no valid pixel (mask, "
                                       "NaN, negative or saturated); remove it or fix the mask")

    guess = looks_like(data, valid)
    if guess is not None and guess != kind:
        hint = ("integers above 1, like photon counts" if guess == "counts"
                else "mostly non-integer, like amplitudes")
        note(logging.WARNING, "%s: '%s' is read as %s (%s) but its values are %s; pass "
             "--diffraction_kind %s if that is what they are", raw.source, raw.data_key,
             kind, kind_from, hint, guess)
        record["kind_warning"] = f"values look like {guess}"

    # The frames stay in their own kind through shift and crop (a clean amplitude file comes
    # back bit for bit); binning sums counts, so amplitudes are squared first. float32 holds
    # integer counts exactly up to 2^24 per pixel.
    frames = np.where(valid, data, 0).astype(np.float32, copy=False)
    as_counts = kind == "counts"

    def counts_of(f: np.ndarray) -> np.ndarray:
        return f if as_counts else np.square(f)

    if dc == "auto":
        dc = decide_dc(_mean_pattern(counts_of(frames), valid))
        dc_from = "auto"
        note(logging.INFO, "%s: zero frequency decided from the mean pattern: %s", raw.source, dc)
    record.update(dc=dc, dc_from=dc_from)
    if dc == "corner":
        frames = np.fft.fftshift(frames, axes=(-2, -1))
        valid = np.fft.fftshift(valid, axes=(-2, -1))

    probe = None if raw.probe is None else np.asarray(raw.probe)
    if probe is not None and probe.shape != (h, w):
        raise _fail(raw, raw.probe_key, f"has shape {probe.shape}; expected ({h}, {w}) like the "
                                        f"frames in '{raw.data_key}'")
    pos_scale = 1.0  # object pixels of the prepared scan per object pixel of the raw frames
    side_h, side_w = h, w
    if opts.detector_crop is not None:
        size = int(opts.detector_crop)
        if size > min(h, w):
            raise _fail(raw, raw.data_key, f"frames are {h}x{w}; cannot crop to {size}x{size}")
        if h != w:
            raise _fail(raw, raw.data_key, f"frames are {h}x{w}; --detector_crop needs square "
                                           "frames (the object pixel would differ per axis)")
        frames, valid = centre_crop(frames, size), centre_crop(valid, size)
        pos_scale = size / h
        if probe is not None:
            probe = fourier_resample(probe, size)
        side_h = side_w = size
        record["detector_crop"] = size
    if opts.detector_bin is not None and opts.detector_bin > 1:
        k = int(opts.detector_bin)
        if side_h % k or side_w % k:
            raise _fail(raw, raw.data_key, f"frames are {side_h}x{side_w}; --detector_bin {k} "
                                           "needs sides that are multiples of it")
        frames, as_counts = bin_frames(counts_of(frames), k), True
        valid = bin_frames(valid.astype(np.int32), k) == k * k
        frames = np.where(valid, frames, 0.0)
        side_h, side_w = side_h // k, side_w // k
        if probe is not None:
            kept = centre_crop(probe, side_h)
            frac = float(np.sum(np.abs(kept) ** 2) / max(np.sum(np.abs(probe) ** 2), 1e-30))
            record["probe_energy_kept_by_bin"] = frac
            note(logging.INFO, "%s: binning %d keeps the central %dx%d of the probe (%.1f%% of "
                 "its energy)", raw.source, k, side_h, side_w, 100 * frac)
            probe = kept
        record["detector_bin"] = k
    if side_h != side_w or side_h not in SUPPORTED_N:
        raise _fail(raw, raw.data_key, f"frames are {side_h}x{side_w} after crop/bin; N must be "
                                       f"one of {SUPPORTED_N} (use --detector_crop or "
                                       "--detector_bin)")
    n = side_h
    empty = np.flatnonzero(~valid.reshape(m, -1).any(axis=1))
    if empty.size:
        raise _fail(raw, raw.data_key, f"pattern {int(empty[0])} has no valid pixel after "
                                       "crop/bin")
    diffraction = np.ascontiguousarray(np.sqrt(frames) if as_counts else frames, dtype=np.float32)
    # Counts are needed only for the photon count of a counts file and for a probe made from the
    # data; an amplitude file with a probe (the common case) is not squared a second time.
    counts = mean_counts = None
    if kind == "counts" or probe is None:
        counts = counts_of(frames)
        mean_counts = float(np.mean(np.sum(counts, axis=(-2, -1))))
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
        probe = probe_from_data(_mean_pattern(counts, valid))
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
    all_valid = bool(valid.all())
    mask_out = None
    if not all_valid:
        per_pattern = not np.all(valid == valid[:1])
        mask_out = valid if per_pattern else valid[0]
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

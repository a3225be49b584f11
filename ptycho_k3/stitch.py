"""Position-based stitching of predicted patches into one object image (NumPy, no Keras).

Conventions (``docs/conventions.md`` §3, §17):

* Positions are ``[x, y]`` = ``[column, row]`` in object pixels, float64.
* Patch ``p`` (``N x N``) is centred on its position: patch pixel ``(N/2, N/2)`` shows the object at
  scan position ``(x_p, y_p)``; patch pixel ``(i, j)`` shows scan position
  ``(x_p - N/2 + j, y_p - N/2 + i)``.
* Only the central ``M x M`` crop (rows/columns ``N/2 - M//2 .. N/2 - M//2 + M - 1``) is kept.
* Placement uses the project's single translation convention: content moves by ``+t`` with bilinear
  interpolation and zero fill per corner sample, ``out[y, x] = img[y - ty, x - tx]``. A
  translation of a crop by ``t`` is the same as *splatting* every crop pixel ``k`` onto
  ``floor(k + t)`` and ``floor(k + t) + 1`` with weights ``1 - f`` and ``f`` (``f = frac(k + t)``).
  Because a crop has one translation for all its pixels, the splat of one crop is the crop
  convolved with a 2 x 2 kernel and dropped at an integer corner; all crops are then accumulated
  with ``np.bincount``. This equals translate-and-sum on a zero-padded canvas exactly (up to float
  rounding), at a fraction of its cost.
* The image is ``sum / (count + 1e-9)`` where ``count`` is the same placement of all-ones crops;
  uncovered pixels are 0.

Two canvas layouts are offered:

* :func:`stitch_patches` (ptycho-k3): integer origin ``(x0, y0)``; stitched pixel ``[r, c]`` is scan
  position ``(x0 + c, y0 + r)``, so ``objectGuess[y, x]`` lines up with ``obj[y - y0, x - x0]``.
  The canvas is just large enough to hold every crop.
* :func:`stitch_patches_legacy`: the original PtychoPINN layout, ``S = M + 2 * pad`` with the mean
  scan position at pixel ``(S/2, S/2)`` (fractional origin).

Memory is the canvas plus one chunk of patches (``chunk`` patches at a time), independent of ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptycho_k3.config import DEFAULT_M

__all__ = [
    "StitchResult",
    "StreamingStitcher",
    "common_region",
    "crop_central",
    "splat_crops",
    "stitch_patches",
    "stitch_patches_legacy",
]

#: Added to the count map before dividing, as the original does (uncovered pixels stay exactly 0).
COUNT_EPS = 1e-9


@dataclass(frozen=True)
class StitchResult:
    """A stitched object and where it sits in scan coordinates.

    Attributes:
        obj: complex64 ``(H, W)``: overlap-normalised object; 0 where no crop landed.
        weight: float32 ``(H, W)``: the count map (sum of bilinear weights of all crops, >= 0).
        x0, y0: scan coordinates (object pixels) of pixel ``[0, 0]``; pixel ``[r, c]`` represents
            scan position ``(x0 + c, y0 + r)``. Integers for :func:`stitch_patches`; floats for
            the legacy layout.
        M: side of the central crop that was kept from each patch.
    """

    obj: np.ndarray
    weight: np.ndarray
    x0: float
    y0: float
    M: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.obj.shape  # type: ignore[return-value]

    @property
    def covered(self) -> np.ndarray:
        """bool ``(H, W)``: pixels that received any weight."""
        return self.weight > 0


def _as_patch_stack(patches: np.ndarray) -> np.ndarray:
    """Validate patches: ``(n, N, N)`` or ``(n, N, N, 1)``, real or complex -> ``(n, N, N)``."""
    p = np.asarray(patches)
    if p.ndim == 4 and p.shape[-1] == 1:
        p = p[..., 0]
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise ValueError(f"patches must have shape (n, N, N) or (n, N, N, 1); got {np.shape(patches)}")
    if p.shape[0] == 0:
        raise ValueError("patches is empty (n = 0): nothing to stitch")
    if not (np.issubdtype(p.dtype, np.number)):
        raise ValueError(f"patches must be numeric; got dtype {p.dtype}")
    return p


def _as_positions(positions: np.ndarray, n: int) -> np.ndarray:
    """Validate positions ``(n, 2)`` or the legacy ``(n, 1, 2, 1)`` -> float64 ``(n, 2)`` [x, y]."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 4 and pos.shape[1] == 1 and pos.shape[2] == 2 and pos.shape[3] == 1:
        pos = pos[:, 0, :, 0]
    if pos.shape != (n, 2):
        raise ValueError(
            f"positions must have shape ({n}, 2) ([x, y] per patch) or ({n}, 1, 2, 1); "
            f"got {np.shape(positions)}"
        )
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or infinity")
    return pos


def _check_m(m: int, n_side: int) -> int:
    if int(m) != m or not 1 <= m <= n_side:
        raise ValueError(f"M must be an integer in [1, N={n_side}]; got {m}")
    return int(m)


def crop_central(patches: np.ndarray, M: int) -> np.ndarray:
    """Central ``M x M`` of each patch: rows/cols ``N/2 - M//2 .. N/2 - M//2 + M - 1``.

    Args:
        patches: ``(n, N, N)`` (or ``(n, N, N, 1)``), any numeric dtype.
        M: crop side, ``1 <= M <= N``.

    Returns:
        A view ``(n, M, M)``; crop pixel ``(M//2, M//2)`` is patch pixel ``(N/2, N/2)``.
    """
    p = _as_patch_stack(patches)
    n_side = p.shape[1]
    m = _check_m(M, n_side)
    s = n_side // 2 - m // 2
    return p[:, s : s + m, s : s + m]


def _chunk_size(m: int, target_elements: int = 1 << 21) -> int:
    """Crops per chunk so that one chunk's splat indices hold about ``target_elements`` entries."""
    return max(1, target_elements // ((m + 1) * (m + 1)))


def splat_crops(
    crops: np.ndarray,
    dest: np.ndarray,
    shape: tuple[int, int],
    *,
    chunk: int | None = None,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear scatter-add of crops onto a canvas, with their count map.

    Crop ``p`` is translated so that its pixel ``(0, 0)`` lands on the (fractional) canvas position
    ``(dest[p, 1], dest[p, 0])`` (row, column); i.e. crop pixel ``(i, j)`` is splatted at row
    ``dest[p, 1] + i``, column ``dest[p, 0] + j`` with bilinear weights, and samples falling outside
    the canvas are dropped (zero fill per corner, no renormalisation).

    Args:
        crops: ``(n, m, m)`` real or complex.
        dest: float64 ``(n, 2)``: ``[x, y]`` canvas position of each crop's pixel ``(0, 0)``.
        shape: canvas ``(H, W)``.
        chunk: crops per chunk (memory bound); default keeps about 2M splat entries per chunk.
        out: optional flat float64 accumulators ``(sum_re, sum_im, count)`` of ``H * W`` each,
            added to in place (streaming use: one canvas, many calls).

    Returns:
        ``(sum, count)``: complex128 ``(H, W)`` sum of splatted crops and float64 ``(H, W)`` sum of
        splatted all-ones crops (including whatever ``out`` held before).
    """
    n, m, _ = crops.shape
    h, w = int(shape[0]), int(shape[1])
    size = h * w
    if out is None:
        out = tuple(np.zeros(size, dtype=np.float64) for _ in range(3))
    total_re, total_im, count = out
    is_complex = np.iscomplexobj(crops)
    step = chunk or _chunk_size(m)
    # Offsets of the (m+1) x (m+1) footprint relative to its top-left corner.
    ii = np.arange(m + 1)
    for lo in range(0, n, step):
        c = crops[lo : lo + step]
        d = dest[lo : lo + step]
        base = np.floor(d)
        fx = (d[:, 0] - base[:, 0])[:, None, None]
        fy = (d[:, 1] - base[:, 1])[:, None, None]
        bx = base[:, 0].astype(np.int64)
        by = base[:, 1].astype(np.int64)
        # Canvas rows/columns of each crop's (m+1) x (m+1) footprint.
        rows = by[:, None] + ii[None, :]  # (b, m+1)
        cols = bx[:, None] + ii[None, :]
        flat = (rows[:, :, None] * w + cols[:, None, :]).ravel()
        inside = rows.min() >= 0 and rows.max() < h and cols.min() >= 0 and cols.max() < w
        # Common case: every footprint inside the canvas, no masking (faster). Otherwise samples
        # outside are dropped: zero fill per corner sample, no renormalisation.
        keep = (
            None
            if inside
            else (
                ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
            ).ravel()
        )
        idx = flat if keep is None else flat[keep]
        if idx.size == 0:
            continue
        # The cost per chunk must not grow with the canvas: accumulate over the span of flat
        # indices the chunk touches (compact for raster-ordered scans), or, when the chunk is
        # scattered over a large canvas (random order), over its distinct pixels only.
        lo_i, hi_i = int(idx.min()), int(idx.max()) + 1
        target = slice(lo_i, hi_i)
        if hi_i - lo_i > 4 * idx.size:
            target, idx = np.unique(idx, return_inverse=True)
            lo_i, hi_i = 0, target.size
        else:
            idx = idx - lo_i
        terms = [(count, _ones_footprint(m, fx, fy))]
        if is_complex:
            terms += [
                (total_re, _footprint(c.real, fx, fy)),
                (total_im, _footprint(c.imag, fx, fy)),
            ]
        else:
            terms += [(total_re, _footprint(c, fx, fy))]
        for acc, weights in terms:
            wts = weights.ravel() if keep is None else weights.ravel()[keep]
            acc[target] += np.bincount(idx, wts, minlength=hi_i - lo_i)
    total = (total_re + 1j * total_im).reshape(h, w)
    return total, count.reshape(h, w)


def _footprint(c: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Real ``(b, m, m)`` -> ``(b, m+1, m+1)``: each crop convolved with its 2x2 bilinear kernel."""
    c = np.asarray(c, dtype=np.float64)
    b, m, _ = c.shape
    # Along columns first: (1 - fx) at j, fx at j + 1.
    horiz = np.zeros((b, m, m + 1), dtype=np.float64)
    horiz[:, :, :m] = c * (1.0 - fx)
    horiz[:, :, 1:] += c * fx
    out = np.zeros((b, m + 1, m + 1), dtype=np.float64)
    out[:, :m, :] = horiz * (1.0 - fy)
    out[:, 1:, :] += horiz * fy
    return out


def _ones_footprint(m: int, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """The footprint of an all-ones crop, as an outer product of the two 1-D splats (cheaper)."""
    b = fx.shape[0]
    wx = np.zeros((b, m + 1), dtype=np.float64)
    wx[:, :m] = 1.0 - fx[:, 0]
    wx[:, 1:] += fx[:, 0]
    wy = np.zeros((b, m + 1), dtype=np.float64)
    wy[:, :m] = 1.0 - fy[:, 0]
    wy[:, 1:] += fy[:, 0]
    return wy[:, :, None] * wx[:, None, :]


def _normalise(re: np.ndarray, im: np.ndarray, count: np.ndarray) -> np.ndarray:
    """complex64 ``(re + i im) / (count + eps)``, written straight into the result (no complex128
    canvas-sized temporaries); computed in the sums' precision."""
    denom = count + count.dtype.type(COUNT_EPS)
    obj = np.empty(count.shape, dtype=np.complex64)
    np.divide(re, denom, out=obj.real)
    np.divide(im, denom, out=obj.imag)
    return obj


def stitch_patches(
    patches: np.ndarray,
    positions: np.ndarray,
    M: int = DEFAULT_M,
    *,
    chunk: int | None = None,
) -> StitchResult:
    """Stitch predicted patches into one object placed in scan coordinates (ptycho-k3 layout).

    Args:
        patches: ``(n, N, N)`` or ``(n, N, N, 1)``, complex (or real). Patch ``p`` is centred on
            ``positions[p]``: patch pixel ``(N/2, N/2)`` represents scan position ``positions[p]``.
        positions: float ``(n, 2)`` group centres ``[x, y]`` in object pixels (the legacy
            ``(n, 1, 2, 1)`` ``global_offsets`` layout is accepted too).
        M: side of the central crop kept from every patch (default 20), ``1 <= M <= N``.
        chunk: patches processed at once (memory bound); default keeps ~2M splat entries per chunk.

    Returns:
        :class:`StitchResult` with integer ``x0 = floor(min x) - M//2``, ``y0`` likewise, and a
        canvas ``H x W`` just large enough for every crop: crop pixel ``(i, j)`` of patch ``p``
        lands at row ``y_p - M//2 + i - y0`` and column ``x_p - M//2 + j - x0`` (bilinear), so
        ``objectGuess[y, x]`` corresponds to ``obj[y - y0, x - x0]``. Integer positions place
        crops exactly (no interpolation).
    """
    p = _as_patch_stack(patches)
    pos = _as_positions(positions, p.shape[0])
    stitcher = StreamingStitcher(pos, p.shape[1], M)
    stitcher.add(p, pos, chunk=chunk)
    return stitcher.result()


class StreamingStitcher:
    """:func:`stitch_patches` fed one batch at a time: memory is the canvas, not the scan.

    The canvas geometry comes from all group centres up front (known before prediction);
    :meth:`add` splats each batch as it is predicted and :meth:`result` normalises once. The
    result equals :func:`stitch_patches` on the concatenated batches.
    """

    def __init__(self, positions: np.ndarray, n_side: int, M: int = DEFAULT_M):
        pos = _as_positions(positions, np.shape(positions)[0])
        if pos.shape[0] == 0:
            raise ValueError("positions is empty (n = 0): nothing to stitch")
        self.m = _check_m(M, n_side)
        half = self.m // 2
        lo = np.floor(pos.min(axis=0)).astype(np.int64) - half  # [x0, y0]
        hi = np.ceil(pos.max(axis=0)).astype(np.int64) + (self.m - half)
        self.x0, self.y0 = int(lo[0]), int(lo[1])
        self.width, self.height = int(hi[0] - lo[0]), int(hi[1] - lo[1])
        # One spare row/column takes the zero-weight far neighbour of integer positions (see
        # stitch_patches), so the fast unmasked splat applies; it is cut off in result().
        self._shape = (self.height + 1, self.width + 1)
        size = self._shape[0] * self._shape[1]
        # float32 sums: the canvas is the one thing that grows with the scan's area, and a pixel
        # sums only a few dozen bilinear terms (relative error ~1e-7, below complex64 output).
        self._acc = tuple(np.zeros(size, dtype=np.float32) for _ in range(3))

    def add(self, patches: np.ndarray, positions: np.ndarray, *, chunk: int | None = None) -> None:
        """Splat the central crops of ``patches`` ``(b, N, N)`` centred on ``positions`` ``(b, 2)``."""
        p = _as_patch_stack(patches)
        pos = _as_positions(positions, p.shape[0])
        dest = pos - self.m // 2 - np.array([self.x0, self.y0], dtype=np.float64)
        splat_crops(crop_central(p, self.m), dest, self._shape, chunk=chunk, out=self._acc)

    def result(self) -> StitchResult:
        h, w = self._shape
        re, im, count = (a.reshape(h, w)[: self.height, : self.width] for a in self._acc)
        return StitchResult(obj=_normalise(re, im, count), weight=np.ascontiguousarray(count),
                            x0=self.x0, y0=self.y0, M=self.m)


def legacy_canvas_geometry(positions: np.ndarray, M: int) -> tuple[int, int, np.ndarray]:
    """The original's canvas geometry (docs/conventions.md §17).

    Args:
        positions: float64 ``(n, 2)`` [x, y].
        M: crop side.

    Returns:
        ``(pad, S, mean)``: ``pad = ceil(max |position - mean|)`` rounded up to even,
        ``S = M + 2 pad``, and the mean position ``[x̄, ȳ]``.
    """
    mean = positions.mean(axis=0)
    pad = int(math.ceil(float(np.max(np.abs(positions - mean)))))
    pad += pad % 2
    return pad, M + 2 * pad, mean


def stitch_patches_legacy(
    patches: np.ndarray,
    positions: np.ndarray,
    M: int = DEFAULT_M,
    *,
    chunk: int | None = None,
) -> StitchResult:
    """Stitch with the original PtychoPINN canvas layout (``reassemble_position``).

    The mean of all positions is subtracted; ``pad = ceil(max |adjusted|)`` rounded up to even;
    each ``M x M`` crop is zero-padded by ``pad`` to ``S = M + 2 pad`` and translated by
    ``+adjusted offset``; the sum is divided by the count map (+1e-9). Hence
    ``canvas[S/2 + y - ȳ, S/2 + x - x̄] = obj[y, x]``.

    Args:
        patches: ``(n, N, N)`` or ``(n, N, N, 1)`` complex.
        positions: ``(n, 2)`` [x, y] or legacy ``(n, 1, 2, 1)`` group centres.
        M: crop side (even, as in the original).
        chunk: patches per chunk.

    Returns:
        :class:`StitchResult` of shape ``(S, S)`` with fractional origin ``x0 = x̄ - S/2``,
        ``y0 = ȳ - S/2``.
    """
    p = _as_patch_stack(patches)
    pos = _as_positions(positions, p.shape[0])
    crops = crop_central(p, M)
    m = crops.shape[1]
    if m % 2:
        raise ValueError(f"the legacy layout needs an even M; got {m}")
    pad, size, mean = legacy_canvas_geometry(pos, m)
    # Crop pixel (0, 0) sits at (pad, pad) of the padded crop, then moves by +(position - mean).
    dest = pad + (pos - mean[None, :])
    total, count = splat_crops(crops, dest, (size, size), chunk=chunk)
    return StitchResult(
        obj=_normalise(total.real, total.imag, count),
        weight=count.astype(np.float32),
        x0=float(mean[0] - size / 2),
        y0=float(mean[1] - size / 2),
        M=m,
    )


def common_region(
    result: StitchResult, ground_truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Crop a stitched result and the ground-truth object to the region both cover.

    Args:
        result: from :func:`stitch_patches` (integer ``x0``, ``y0``).
        ground_truth: ``(H, W)`` (or ``(H, W, 1)``) object in scan coordinates (``objectGuess``).

    Returns:
        ``(rec, gt, (row0, col0))``: equally shaped crops of ``result.obj`` and ``ground_truth``,
        and the object-frame index of their pixel ``[0, 0]``.

    Raises:
        ValueError: if the origin is not integral or the two do not overlap.
    """
    gt = np.asarray(ground_truth)
    if gt.ndim == 3 and gt.shape[-1] == 1:
        gt = gt[..., 0]
    if gt.ndim != 2:
        raise ValueError(f"ground_truth must be 2-D (H, W); got shape {np.shape(ground_truth)}")
    if float(result.x0) != int(result.x0) or float(result.y0) != int(result.y0):
        raise ValueError("common_region needs an integer origin (use stitch_patches, not legacy)")
    x0, y0 = int(result.x0), int(result.y0)
    h, w = result.obj.shape
    r0, r1 = max(0, y0), min(gt.shape[0], y0 + h)
    c0, c1 = max(0, x0), min(gt.shape[1], x0 + w)
    if r1 <= r0 or c1 <= c0:
        raise ValueError("the stitched object and the ground truth do not overlap")
    rec = result.obj[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    return rec, gt[r0:r1, c0:c1], (r0, c0)

"""Grouping scan positions into ``C = gridsize^2`` nearest neighbours (docs/conventions.md §14).

"Sample then group": draw seed positions, then for each seed pick ``C`` of its ``K`` nearest
neighbours (the seed itself excluded). Every random choice comes from one
``numpy.random.Generator`` built from ``seed``; global NumPy state is never touched.

Layouts (docs/conventions.md §2): channel format ``(B, N, N, C)``; offsets ``(B, 1, 2, C)`` with axis 2 =
``[x, y]``; group centres ``(B, 1, 2, 1)``. Relative offsets are ``-(coord_c - centre)``: they point
from a member towards its group centre and sum to zero per group.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptycho_k3.config import group_size

from .errors import DataError
from .measured import neutral_fill
from .normalize import rows_normalization_factor
from .npz import ScanData

log = logging.getLogger(__name__)


class GroupedDiffraction:
    """Grouped, normalised diffraction gathered from the scan on demand.

    Stands for the float32 ``(B, N, N, C)`` array ``source[rows] * factor`` (members moved to the
    channel axis) without holding it: indexing the first axis (an int, a slice or an integer
    array) gathers and scales only those groups; ``np.asarray`` builds the whole array. Inference
    uses it so that memory beyond the scan itself does not grow with the number of groups.

    Args:
        source: raw amplitudes ``(M, N, N)`` (any real dtype; not copied): an array or a lazy
            stack (:mod:`ptycho_k3.data.lazy`), read only for the groups asked for.
        rows: int ``(B, C)`` rows of ``source`` per group.
        factor: the normalisation factor multiplied in.
        valid: the scan's valid-pixel mask (``ScanData.valid``: ``(N, N)``, ``(M, N, N)`` or
            None); invalid pixels show the scan's neutral value
            (:func:`~ptycho_k3.data.measured.neutral_fill`) times ``factor`` instead of the
            stored 0.
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, source: np.ndarray, rows: np.ndarray, factor: float,
                 valid: np.ndarray | None = None):
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)
        self.factor = float(factor)
        self.valid = valid
        self.fill = None if valid is None else neutral_fill(source, valid) * np.float32(factor)
        n = source.shape[-1]
        self.shape = (self.rows.shape[0], n, n, self.rows.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("GroupedDiffraction indexes groups only (first axis); "
                            "use np.asarray(...) for other indexing")
        picked = self.rows[key]
        if picked.ndim == 1:  # a single group
            return self._gather(picked[None])[0]
        return self._gather(picked)

    def valid_groups(self, key: Any) -> np.ndarray | None:
        """float32 ``(b, N, N, C)`` 1 where a pixel of the groups ``key`` counts, 0 where it is
        invalid (``GroupedData.valid`` of those groups), or None when every pixel is valid."""
        if self.valid is None:
            return None
        picked = np.atleast_2d(self.rows[key])
        n = self.shape[1]
        out = np.empty((picked.shape[0], n, n, picked.shape[1]), dtype=np.float32)
        for c in range(picked.shape[1]):
            v = self.valid if self.valid.ndim == 2 else np.asarray(self.valid[picked[:, c]])
            out[..., c] = np.broadcast_to(v, out[..., c].shape)
        return out[0] if np.ndim(self.rows[key]) == 1 else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError("GroupedDiffraction has no array to share: it is built on request")
        out = self._gather(self.rows)
        return out if dtype is None else out.astype(dtype, copy=False)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        n = self.shape[1]
        out = np.empty((rows.shape[0], n, n, rows.shape[1]), dtype=np.float32)
        for c in range(rows.shape[1]):  # one member at a time: no (B, C, N, N) temporary
            np.multiply(self.source[rows[:, c]], np.float32(self.factor), out=out[..., c],
                        casting="unsafe")
            if self.valid is not None:
                v = self.valid if self.valid.ndim == 2 else self.valid[rows[:, c]]
                np.copyto(out[..., c], self.fill, where=~np.broadcast_to(v, out[..., c].shape))
        return out


@dataclass(frozen=True, eq=False)
class GroupedData:
    """Groups of ``C`` neighbouring scan positions, ready for the model.

    Attributes:
        diffraction: float32 ``(B, N, N, C)`` amplitudes normalised to mean energy ``(N/2)^2``
            per pattern over the whole grouped set (docs/conventions.md §9); a
            :class:`GroupedDiffraction` (gathered per batch) when grouped with ``lazy=True``.
        norm_factor: the factor that was multiplied into the raw amplitudes.
        coords_nn: float64 ``(B, 1, 2, C)`` member positions ``[x, y]`` (object pixels).
        group_centres: float64 ``(B, 1, 2, 1)`` group centres (mean of the members).
        coords_relative: float64 ``(B, 1, 2, C)`` ``= -(coords_nn - group_centres)``, the
            members' offsets from their centre (negated, the original's sign).
        nn_indices: int64 ``(B, C)`` rows of the scan (of the file, also after subsampling).
        patches: complex64 ``(B, N, N, C)`` ground truth at the TRUE member positions, or None.
        object: complex64 ``(H, W)`` or None. probe: complex64 ``(N, N)`` (raw).
        gridsize: gs. subsample_indices: rows kept by ``n_subsample`` (sorted) or None.
        metadata: the scan's metadata dict.
        valid: float32 ``(B, N, N, C)`` 1 where a detector pixel counts, 0 where it is invalid
            (docs/conventions.md §22); None when every pixel is valid or when grouped lazily
            (then :meth:`GroupedDiffraction.valid_groups` gives it per batch).
    """

    diffraction: np.ndarray | GroupedDiffraction
    norm_factor: float
    coords_nn: np.ndarray
    group_centres: np.ndarray
    coords_relative: np.ndarray
    nn_indices: np.ndarray
    patches: np.ndarray | None
    object: np.ndarray | None
    probe: np.ndarray
    gridsize: int
    subsample_indices: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    valid: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.diffraction.shape[1])

    @property
    def n_groups(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def group_size(self) -> int:
        return int(self.diffraction.shape[-1])

    def relative_offsets_pairs(self) -> np.ndarray:
        """float32 ``(B, C, 2)`` relative offsets ``[dx, dy]`` per member (physics' layout)."""
        return np.ascontiguousarray(
            np.transpose(self.coords_relative[:, 0], (0, 2, 1)), dtype=np.float32)

    def centres(self) -> np.ndarray:
        """float64 ``(B, 2)`` group centres ``[x, y]``."""
        return self.group_centres[:, 0, :, 0]


def subsample_indices(m: int, n_subsample: int, seed: int) -> np.ndarray:
    """Sorted random rows ``(min(n_subsample, m),)`` drawn without replacement (own generator)."""
    if n_subsample <= 0:
        from ptycho_k3.config import ConfigError

        raise ConfigError(f"n_subsample must be > 0, got {n_subsample}")
    if n_subsample >= m:
        return np.arange(m, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(m, size=n_subsample, replace=False)).astype(np.int64)


def _neighbours(points: np.ndarray, seeds: np.ndarray, k: int) -> np.ndarray:
    """``(S, k')`` indices of each seed's nearest neighbours, the first hit (itself) dropped.

    ``k' = min(k, M - 1)``: a KD-tree query for more points than exist pads with index M.
    """
    from scipy.spatial import cKDTree  # here: gridsize 1 never needs it (~0.2 s of a command's start)

    m = points.shape[0]
    kq = min(k + 1, m)
    _, idx = cKDTree(points).query(points[seeds], k=kq)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(seeds), kq)
    return idx[:, 1:]


def _choose_members(nbrs: np.ndarray, seeds: np.ndarray, c: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Pick ``c`` members per row of ``nbrs`` at random, in random order (vectorised)."""
    if nbrs.shape[1] < c:
        # docs/conventions.md §14: too few neighbours -> prepend the seed.
        nbrs = np.concatenate([seeds[:, None], nbrs], axis=1)
    s, k = nbrs.shape
    if k >= c:
        order = np.argsort(rng.random((s, k)), axis=1)[:, :c]
    else:  # still too few: with replacement
        order = rng.integers(0, k, size=(s, c))
    return np.take_along_axis(nbrs, order, axis=1)


def _oversampled_groups(points: np.ndarray, n_groups: int, c: int, pool: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Oversampling (docs/conventions.md §14): C-combinations of each seed's ``pool``
    neighbours, then a random draw."""
    m = points.shape[0]
    per_seed = math.comb(pool, c)
    n_seeds = min(2 * math.ceil(n_groups / per_seed), m)
    seeds = rng.choice(m, size=n_seeds, replace=False)
    nbrs = _neighbours(points, seeds, pool)
    if nbrs.shape[1] < pool:
        raise DataError(f"neighbor_pool_size {pool} needs at least {pool + 1} scan positions, "
                        f"the scan has {m}")
    combos = np.array(list(itertools.combinations(range(pool), c)), dtype=np.int64)
    candidates = nbrs[:, combos].reshape(-1, c)[: 2 * n_groups]
    replace_ = candidates.shape[0] < n_groups
    pick = rng.choice(candidates.shape[0], size=n_groups, replace=replace_)
    return candidates[pick]


def group_indices(points: np.ndarray, gridsize: int, n_groups: int = 512,
                  neighbor_count: int = 4, seed: int = 0, sequential: bool = False,
                  enable_oversampling: bool = False,
                  neighbor_pool_size: int | None = None) -> np.ndarray:
    """Member rows ``(B, C)`` for positions ``points`` ``(M, 2)`` ([x, y]); see
    docs/conventions.md §14.

    Raises:
        ConfigError: settings that cannot group anything (gridsize, n_groups, K or the
            oversampling pool below their minimum).
        DataError: settings that the scan cannot satisfy (fewer positions than C, more groups
            than positions without oversampling, a pool larger than the scan).
    """
    from ptycho_k3.config import ConfigError

    c = group_size(gridsize)
    m = points.shape[0]
    k = int(neighbor_count)
    if gridsize < 1:
        raise ConfigError(f"gridsize must be >= 1, got {gridsize}")
    if n_groups < 1:
        raise ConfigError(f"n_groups must be >= 1, got {n_groups}")
    if c > 1 and k < c:
        raise ConfigError(f"neighbor_count K={k} must be >= C=gridsize^2={c}")
    if m < c:
        raise DataError(f"gridsize {gridsize} needs groups of {c} positions; "
                        f"the scan has only {m}")
    rng = np.random.default_rng(seed)
    if c > 1 and n_groups > m:
        pool = k if neighbor_pool_size is None else int(neighbor_pool_size)
        if not enable_oversampling:
            raise DataError(
                f"n_groups={n_groups} exceeds the {m} scan positions at gridsize {gridsize}; "
                "lower n_groups, or set enable_oversampling (--enable_oversampling) to draw "
                "extra neighbour combinations (neighbor_pool_size >= C)")
        if pool < c:
            raise ConfigError(f"oversampling needs neighbor_pool_size >= C={c}, got {pool}")
        return _oversampled_groups(points, n_groups, c, pool, rng)
    b = min(n_groups, m)
    if sequential:
        seeds = np.arange(b, dtype=np.int64)
    elif b == m:
        seeds = np.arange(m, dtype=np.int64)
    else:
        seeds = rng.choice(m, size=b, replace=False).astype(np.int64)
    if c == 1:
        return seeds[:, None]
    return _choose_members(_neighbours(points, seeds, k), seeds, c, rng)


def named_error(exc: DataError, source: str | None) -> DataError:
    """``exc`` with its message prefixed by ``source`` (the file), unless it already names it."""
    text = str(exc)
    if not source or text.startswith(f"{source}:"):
        return exc
    return DataError(f"{source}: {text}")


def _group_coords(x: np.ndarray, y: np.ndarray, idx: np.ndarray):
    nn = np.stack([x[idx], y[idx]], axis=1)[:, None]  # (B, 1, 2, C)
    centre = nn.mean(axis=-1, keepdims=True)
    return nn, centre, -(nn - centre)


def _warn_margin(relative: np.ndarray, n: int, gridsize: int, canvas_size: int | None) -> None:
    from ptycho_k3 import physics

    size = physics.canvas_size(n, gridsize) if canvas_size is None else int(canvas_size)
    margin = physics.canvas_margin(n, size)
    worst = float(np.max(np.abs(relative))) if relative.size else 0.0
    if worst > margin:
        frac = float(np.mean(np.max(np.abs(relative), axis=(1, 2)) > margin))
        warnings.warn(
            f"relative offsets reach {worst:.1f} px but the group canvas (N={n}, gridsize "
            f"{gridsize}, side {size}) only has a {margin} px margin; {100 * frac:.1f}% of groups "
            "have members partly outside the canvas (zero filled). Scan positions are sparse for "
            "this gridsize.",
            stacklevel=3)


def group_scan(data: ScanData, gridsize: int, n_groups: int = 512, neighbor_count: int = 4,
               seed: int = 0, sequential: bool = False, enable_oversampling: bool = False,
               neighbor_pool_size: int | None = None, n_subsample: int | None = None,
               subsample_seed: int | None = None, norm_factor: float | None = None,
               with_patches: bool = True, lazy: bool = False,
               canvas_size: int | None = None) -> GroupedData:
    """Group a scan into ``C = gridsize^2`` neighbours and normalise its diffraction.

    Args:
        data: the scan.
        gridsize: gs; groups have ``C = gs^2`` members.
        n_groups: number of groups B requested (``min(n_groups, M)`` without oversampling).
        neighbor_count: K nearest neighbours (seed excluded) that members are drawn from.
        seed: seed of the private generator for seeds and member choice.
        sequential: use the first ``n_groups`` positions as seeds instead of a random draw.
        enable_oversampling: allow ``n_groups > M`` at gs > 1 (docs/conventions.md §14).
        neighbor_pool_size: neighbours per seed for oversampling (default K).
        n_subsample: first keep a random subset of this many positions (sorted), drawn with
            ``subsample_seed`` (default ``seed``); recorded in ``subsample_indices``.
        norm_factor: apply this normalisation factor instead of computing one.
        with_patches: also build ground-truth patches (from ``Y`` if present, else cut from the
            object at the true member positions).
        lazy: keep ``diffraction`` as a :class:`GroupedDiffraction` that gathers groups when
            indexed, instead of building the ``(B, N, N, C)`` array (memory flat in B).
        canvas_size: the model's per-group canvas side P (:attr:`ModelConfig.canvas_size
            <ptycho_k3.config.ModelConfig.canvas_size>`, which follows its ``offset`` and
            ``max_position_jitter``), for the margin warning; default
            ``physics.canvas_size(N, gridsize)`` with the legacy offset and jitter.

    Returns:
        GroupedData. Warns when relative offsets exceed the canvas margin (docs/conventions.md §4).

    Raises:
        DataError: the scan cannot be grouped so (too few positions) or normalised (zero
            energy); the message starts with ``data.source`` when there is one.
        ConfigError: settings that cannot group any scan (see :func:`group_indices`).
    """
    rows = None
    scan = data
    if n_subsample is not None:
        rows = subsample_indices(data.n_positions, n_subsample,
                                 seed if subsample_seed is None else subsample_seed)
        scan = data.select(rows)
    points = np.stack([scan.xcoords, scan.ycoords], axis=1)
    try:
        local = group_indices(points, gridsize, n_groups, neighbor_count, seed, sequential,
                              enable_oversampling, neighbor_pool_size)
        # Invalid pixels are stored as 0, so they add nothing to the energies of the factor.
        factor = (rows_normalization_factor(scan.diffraction, local) if norm_factor is None
                  else float(norm_factor))
    except DataError as exc:
        raise named_error(exc, data.source) from None
    c = local.shape[1]
    n = scan.n
    diff = GroupedDiffraction(scan.diffraction, local, factor, scan.valid)
    valid = None
    if not lazy:
        diff = np.asarray(diff)
        if scan.valid is not None:
            valid = np.ascontiguousarray(
                np.moveaxis(scan.valid_rows(local), 1, -1), dtype=np.float32)
    nn, centre, rel = _group_coords(scan.xcoords, scan.ycoords, local)
    if c > 1:
        _warn_margin(rel, n, gridsize, canvas_size)
    patches = None
    if with_patches:
        patches = _group_patches(scan, local)
    file_rows = local if rows is None else rows[local]
    log.info("grouped %d positions%s into %d groups of %d (gridsize %d, K %d, seed %d); "
             "normalisation factor %.6g", scan.n_positions,
             "" if rows is None else f" (subsampled from {data.n_positions})", local.shape[0], c,
             gridsize, neighbor_count, seed, factor)
    return GroupedData(
        diffraction=diff, norm_factor=factor, coords_nn=nn, group_centres=centre,
        coords_relative=rel, nn_indices=file_rows.astype(np.int64), patches=patches,
        object=scan.object, probe=scan.probe, gridsize=gridsize, subsample_indices=rows,
        metadata=dict(scan.metadata), valid=valid,
    )


def _group_patches(scan: ScanData, local: np.ndarray) -> np.ndarray | None:
    """Ground truth ``(B, N, N, C)``: ``Y`` rows, or the object cut at the TRUE positions."""
    if scan.patches is not None:
        per_row = scan.patches
        return np.ascontiguousarray(np.transpose(per_row[local], (0, 2, 3, 1)))
    if scan.object is None:
        return None
    from .patches import cut_patches

    used, inverse = np.unique(local, return_inverse=True)
    cut = cut_patches(scan.object, scan.xcoords[used], scan.ycoords[used], scan.n)
    grouped = cut[inverse.reshape(local.shape)]
    return np.ascontiguousarray(np.transpose(grouped, (0, 2, 3, 1)))

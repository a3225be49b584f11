"""Inference: group a scan, predict in batches, stitch while predicting.

Beyond the scan itself (whose frames are read on demand where the file allows it,
docs/conventions.md §22), memory is one batch plus the stitched canvas and per-group
coordinates: each batch is gathered from the scan and normalised
(:class:`ptycho_k3.data.GroupedDiffraction`), scaled, predicted, splatted onto the canvas
(:class:`ptycho_k3.stitch.StreamingStitcher`) and, unless ``keep_patches``, dropped.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ptycho_k3 import distribute
from ptycho_k3.config import DEFAULT_M, group_size
from ptycho_k3.data import DataError, GroupedData, GroupedDiffraction, ScanData, group_scan
from ptycho_k3.stitch import StitchResult, StreamingStitcher

if TYPE_CHECKING:  # importing the model would import Keras; grouping needs none
    from ptycho_k3.model import ModelPair


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`.

    Attributes:
        patches: complex64 ``(B, N, N)`` trimmed objects, each centred on its group centre, or
            None when ``keep_patches`` is false.
        centres: float64 ``(B, 2)`` group centres ``[x, y]`` (object pixels).
        stitched: the stitched object with its origin ``x0``, ``y0`` in scan coordinates.
        grouped: the groups that were reconstructed.
        seconds_predict, seconds_stitch: wall time spent in the network and in stitching.
    """

    patches: np.ndarray | None
    centres: np.ndarray
    stitched: StitchResult
    grouped: GroupedData
    seconds_predict: float
    seconds_stitch: float


def inference_group_count(n_positions: int, gridsize: int, n_groups: int | None) -> int:
    """Groups to reconstruct: all positions (gs 1) or ``positions // gs^2`` (gs > 1), capped by
    ``n_groups`` when given, never below 1 (the original's rule, docs/conventions.md §14)."""
    available = max(1, n_positions // group_size(gridsize))
    return available if n_groups is None else max(1, min(int(n_groups), available))


def group_for_inference(data: ScanData, gridsize: int, *, n_groups: int | None = None,
                        seed: int = 0, neighbor_count: int = 4,
                        canvas_size: int | None = None) -> GroupedData:
    """The groups :func:`reconstruct` predicts, gathered lazily (no Keras, nothing written).

    Call it before creating any output to refuse a scan that cannot be grouped at the bundle's
    ``gridsize`` (fewer than ``gridsize^2`` positions) or normalised (zero energy), then pass
    the result to :func:`reconstruct` (``grouped=``). ``canvas_size``: the model's per-group
    canvas side (``ModelConfig.canvas_size``) for the margin warning of
    :func:`~ptycho_k3.data.group_scan`.

    Raises:
        DataError: the scan cannot be grouped or normalised; the message names the file.
    """
    b = inference_group_count(data.n_positions, gridsize, n_groups)
    k = max(neighbor_count, group_size(gridsize))
    return group_scan(data, gridsize, n_groups=b, neighbor_count=k, seed=seed,
                      with_patches=False, lazy=True, canvas_size=canvas_size)


def _progress(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\rinference [{'#' * filled}{'.' * (width - filled)}] {done}/{total} groups")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def predict_objects(models: ModelPair, x: np.ndarray | GroupedDiffraction, offsets: np.ndarray,
                    start: int, stop: int, input_scale: float = 1.0,
                    predict: distribute.Predictor | None = None,
                    pad_to: int | None = None) -> np.ndarray:
    """Trimmed objects of groups ``[start, stop)`` as complex64 ``(b, N, N)``.

    ``x`` is normalised diffraction ``(B, N, N, C)`` (an array or gathered on demand); it is
    multiplied by ``input_scale`` one batch at a time, so no scaled copy of the scan is made.
    ``predict``: the batch's forward pass (default ``models.inference.predict_on_batch``; under
    ``--distribute`` :meth:`ptycho_k3.distribute.ShardPlan.predictor`). ``pad_to``: a batch
    shorter than this is padded to that length by repeating its last row
    (:func:`ptycho_k3.distribute.pad_rows`; the padding's outputs are dropped), so the network
    sees one batch shape only.
    """
    xb = np.multiply(x[start:stop], np.float32(input_scale), dtype=np.float32)
    ob = offsets[start:stop]
    rows = len(xb)
    if pad_to is not None:
        xb, ob = distribute.pad_rows(xb, pad_to), distribute.pad_rows(ob, pad_to)
    out = (predict or models.inference.predict_on_batch)((xb, ob))
    out = np.asarray(out)[:rows]
    return (out[..., 0] + 1j * out[..., 1]).astype(np.complex64)


def _fixed_batch_shape(total: int, batch_size: int) -> int | None:
    """The row count every batch is padded to, or None to predict the last batch as it is.

    JAX compiles the forward pass once per input shape and TensorFlow retraces it, so a shorter
    last batch costs a second compilation (~1 s on 2 cores, more than predicting the padding
    rows); PyTorch runs eagerly and gains nothing from padding.
    """
    import keras

    if total <= batch_size or keras.backend.backend() == "torch":
        return None
    return batch_size


def reconstruct(models: ModelPair, data: ScanData, *, input_scale: float,
                n_groups: int | None = None, batch_size: int = 32, seed: int = 0,
                M: int = DEFAULT_M, neighbor_count: int = 4, progress: bool = False,
                keep_patches: bool = True, grouped: GroupedData | None = None,
                distribute_mode: str = "none") -> Reconstruction:
    """Reconstruct the object of ``data`` with a trained model.

    Args:
        models: the trained model pair (its config fixes N and gridsize).
        data: the scan; its diffraction is normalised to mean energy (N/2)^2 like training data.
        input_scale: the ``s`` the model was trained with (bundle ``params.json``).
        n_groups: cap on the number of groups (default: all positions, see
            :func:`inference_group_count`).
        batch_size: groups per forward pass.
        seed: seeds the grouping (member choice at gridsize > 1).
        M: central crop kept from each patch when stitching.
        neighbor_count: K for grouping at gridsize > 1.
        progress: draw a progress bar on stderr.
        keep_patches: also return every predicted patch (memory grows with the scan).
        grouped: the groups of ``data`` from :func:`group_for_inference` (default: grouped
            here with ``n_groups``, ``seed`` and ``neighbor_count``).
        distribute_mode: ``none`` or ``data_parallel``: each batch sharded over every device
            (:mod:`ptycho_k3.distribute`; jax only).
    """
    cfg = models.config
    if data.n != cfg.N:
        raise DataError(
            f"{data.source or 'test data'}: diffraction patterns are {data.n}x{data.n} but the "
            f"model was trained for N={cfg.N}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if grouped is None:
        grouped = group_for_inference(data, cfg.gridsize, n_groups=n_groups, seed=seed,
                                      neighbor_count=neighbor_count, canvas_size=cfg.canvas_size)
    elif grouped.gridsize != cfg.gridsize or grouped.n != cfg.N:
        raise ValueError(f"reconstruct: groups of gridsize {grouped.gridsize} (N={grouped.n}) "
                         f"given to a model of gridsize {cfg.gridsize} (N={cfg.N})")
    offsets = grouped.coords_relative.astype(np.float32)
    centres = grouped.centres()
    stitcher = StreamingStitcher(centres, cfg.N, M)
    predict = distribute.setup(distribute_mode).predictor(models.inference)
    total = grouped.n_groups
    pad_to = _fixed_batch_shape(total, batch_size)
    kept = []
    t_pred = t_stitch = 0.0
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        t0 = time.perf_counter()
        obj = predict_objects(models, grouped.diffraction, offsets, start, stop, input_scale,
                              predict, pad_to)
        t1 = time.perf_counter()
        stitcher.add(obj, centres[start:stop])
        t_stitch += time.perf_counter() - t1
        t_pred += t1 - t0
        if keep_patches:
            kept.append(obj)
        if progress:
            _progress(stop, total)
    t1 = time.perf_counter()
    stitched = stitcher.result()
    t_stitch += time.perf_counter() - t1
    return Reconstruction(
        patches=np.concatenate(kept) if keep_patches else None,
        centres=centres, stitched=stitched, grouped=grouped,
        seconds_predict=t_pred, seconds_stitch=t_stitch,
    )

"""``refine``: the iterative solve of a whole scan, from a flat start or a given object."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ptycho_k3.config import RefineConfig
from ptycho_k3.data import DataError, ScanData

from .engine import Engine, RefineResult, _Progress, batches
from .problem import Canvas, canvas_for, illumination, measurements, place

#: Spare canvas pixels beyond the windows, per side (room for position corrections).
_MARGIN = 2


def _start_canvas(canvas: Canvas, init_object: Any, x0: float | None, y0: float | None,
                  covered: np.ndarray | None) -> np.ndarray:
    if init_object is None:
        return np.ones((canvas.height, canvas.width), np.complex64)
    if hasattr(init_object, "obj"):  # a StitchResult: its own origin and coverage
        return place(init_object.obj, init_object.x0, init_object.y0, canvas,
                     covered=init_object.weight > 0 if covered is None else covered)
    if x0 is None or y0 is None:
        raise ValueError("refine: an init_object array needs its origin x0, y0 (scan "
                         "coordinates of its pixel [0, 0])")
    return place(init_object, x0, y0, canvas, covered=covered)


def refine(scan: ScanData, init_object: Any = None, config: RefineConfig | None = None, *,
           x0: float | None = None, y0: float | None = None, covered: np.ndarray | None = None,
           mask: np.ndarray | None = None, probe: np.ndarray | None = None,
           monitor: Callable[[np.ndarray, int, int], dict[str, float]] | None = None,
           progress: bool = False) -> RefineResult:
    """Reconstruct (or polish) the object of ``scan`` by minibatch gradient steps.

    Args:
        scan: the measured scan (amplitudes, positions, probe).
        init_object: ``None`` for a flat start; a :class:`~ptycho_k3.stitch.StitchResult` (e.g.
            ``reconstruct(...).stitched``, the PINN's object); or a complex ``(h, w)`` array with
            its origin ``x0``, ``y0``. Pixels it does not cover start at a neutral value. The
            start is rescaled by one factor so its predicted counts match the measured total.
        config: :class:`~ptycho_k3.config.RefineConfig` (iterations, batch, steps, ...).
        covered: bool mask of the start array's pixels that hold data (default nonzero).
        mask: valid detector pixels, ``(N, N)`` or ``(M, N, N)``, nonzero = valid (NaN pixels
            of the scan are invalid too); invalid pixels never contribute.
        probe: complex ``(N, N)`` probe to use instead of the scan's.
        monitor: called as ``monitor(obj, x0, y0)`` after every iteration (and for the start);
            the numbers it returns are recorded in the history (its time is not counted).
        progress: a progress bar on stderr.

    Returns:
        :class:`~ptycho_k3.refine.RefineResult`, the object in scan coordinates.
    """
    from keras import ops

    cfg = config or RefineConfig()
    n = scan.n
    p = np.asarray(scan.probe if probe is None else probe, np.complex64)
    if p.shape != (n, n):
        raise DataError(f"{scan.source or 'scan'}: probe has shape {p.shape}; the refinement "
                        f"needs ({n}, {n}) like the diffraction patterns")
    meas = measurements(scan, mask)
    positions0 = scan.positions
    margin = _MARGIN + (int(math.ceil(cfg.max_position_shift * cfg.iterations))
                        if cfg.refine_positions else 0)
    margin = min(margin, _MARGIN + n // 2)
    canvas = canvas_for(positions0, n, margin)
    start = _start_canvas(canvas, init_object, x0, y0, covered)

    engine = Engine(meas, canvas, n, cfg)
    pos = ops.convert_to_tensor(canvas.clamp(canvas.to_canvas(positions0), n).astype(np.float32))
    p_re = ops.convert_to_tensor(np.ascontiguousarray(p.real))
    p_im = ops.convert_to_tensor(np.ascontiguousarray(p.imag))
    fixed = [ops.convert_to_tensor(b) for b in batches(scan.n_positions, cfg.batch, None)]
    evaluate = engine.evaluate()

    def total(o_re, o_im, p_re, p_im, pos):
        sums = np.zeros(3)
        for idx in fixed:
            out = evaluate(o_re, o_im, p_re, p_im, pos, idx, engine.counts, engine.valid)
            sums += [float(ops.convert_to_numpy(v)) for v in out]
        return sums

    o_re = ops.convert_to_tensor(np.ascontiguousarray(start.real))
    o_im = ops.convert_to_tensor(np.ascontiguousarray(start.imag))
    # One global factor so the start predicts the measured number of photons.
    _, predicted, measured = total(o_re, o_im, p_re, p_im, pos)
    factor = math.sqrt(measured / predicted) if predicted > 0 else 1.0
    o_re, o_im = o_re * factor, o_im * factor
    loss0 = total(o_re, o_im, p_re, p_im, pos)[0] / engine.n_valid

    def as_object(o_re, o_im) -> np.ndarray:
        return (np.asarray(ops.convert_to_numpy(o_re))
                + 1j * np.asarray(ops.convert_to_numpy(o_im))).astype(np.complex64)

    history: dict[str, list[Any]] = {"iteration": [0], "loss": [loss0], "seconds": [0.0]}

    def record(values: dict[str, float] | None) -> None:
        for key, value in (values or {}).items():
            history.setdefault(key, []).append(float(value))

    if monitor is not None:
        record(monitor(as_object(o_re, o_im), canvas.x0, canvas.y0))
    rng = np.random.default_rng(cfg.seed)
    bar = _Progress(cfg.iterations, progress)
    elapsed = 0.0
    for it in range(1, cfg.iterations + 1):
        t0 = time.perf_counter()
        step = engine.step(cfg.refine_probe and it > cfg.probe_start,
                           cfg.refine_positions and it > cfg.position_start)
        loss_sum = None
        for idx in batches(scan.n_positions, cfg.batch, rng):
            o_re, o_im, p_re, p_im, pos, loss = step(
                o_re, o_im, p_re, p_im, pos, ops.convert_to_tensor(idx), engine.counts,
                engine.valid, engine.zero)
            loss_sum = loss if loss_sum is None else loss_sum + loss
        loss_it = float(ops.convert_to_numpy(loss_sum)) / engine.n_valid
        elapsed += time.perf_counter() - t0
        if not math.isfinite(loss_it):
            raise FloatingPointError(f"refinement diverged at iteration {it} (loss {loss_it}); "
                                     "try a smaller --refine_step")
        history["iteration"].append(it)
        history["loss"].append(loss_it)
        history["seconds"].append(elapsed)
        if monitor is not None:
            record(monitor(as_object(o_re, o_im), canvas.x0, canvas.y0))
        bar.update(it, loss_it)

    corrected = np.asarray(ops.convert_to_numpy(pos), np.float64) + [canvas.x0, canvas.y0]
    probe_out = (np.asarray(ops.convert_to_numpy(p_re))
                 + 1j * np.asarray(ops.convert_to_numpy(p_im))).astype(np.complex64)
    return RefineResult(obj=as_object(o_re, o_im), x0=canvas.x0, y0=canvas.y0, probe=probe_out,
                        positions=corrected, initial_positions=np.asarray(positions0, np.float64),
                        history=history, scale=meas.scale,
                        illumination=illumination(probe_out, corrected, canvas))

"""One refinement run as the commands do it: solve, score, write every output.

Shared by ``ptycho-infer --refine_iterations N`` (PINN start) and ``ptycho-reconstruct`` (flat
or PINN start), so both write the same files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3 import outputs
from ptycho_k3.config import DEFAULT_M, RefineConfig
from ptycho_k3.data import ScanData

from . import report
from .engine import RefineResult
from .solve import refine

#: At most this many SSIM evaluations per run (the metric costs ~0.1 s on a demo scan).
MAX_SCORED_ITERATIONS = 100


@dataclass
class Scoring:
    """Where a refined object is scored: the ground truth and the PINN's region (positions, M)."""

    ground_truth: np.ndarray
    positions: np.ndarray
    M: int

    def metrics(self, obj: Any, x0: int = 0, y0: int = 0) -> dict[str, Any]:
        """:func:`ptycho_k3.metrics.evaluate` of a StitchResult, or of a complex array with its
        origin, over the PINN's region."""
        from ptycho_k3.metrics import evaluate
        from ptycho_k3.stitch import StitchResult

        if not hasattr(obj, "obj"):
            obj = StitchResult(obj=obj, weight=np.ones(obj.shape, np.float32), x0=x0, y0=y0,
                               M=self.M)
        return evaluate(obj, self.ground_truth, positions=self.positions, M=self.M)

    def monitor(self, every: int):
        calls = {"n": 0}

        def ssim(obj: np.ndarray, x0: int, y0: int) -> dict[str, float]:
            i = calls["n"]
            calls["n"] += 1
            if i % every:
                return {}
            m = self.metrics(obj, x0, y0)
            return {"scored_iteration": i,
                    "amplitude_ssim": _number(m["amplitude"].get("ssim")),
                    "phase_ssim": _number(m["phase"].get("ssim"))}

        return ssim


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _history(result: RefineResult) -> dict[str, list]:
    """The history with SSIM lists aligned to their own iterations."""
    h = dict(result.history)
    if "scored_iteration" in h:
        h["ssim_iteration"] = [int(i) for i in h.pop("scored_iteration")]
    return h


def solve(scan: ScanData, config: RefineConfig, start: Any, scoring: Scoring | None,
          progress: bool) -> RefineResult:
    every = max(1, -(-config.iterations // MAX_SCORED_ITERATIONS))
    monitor = scoring.monitor(every) if scoring is not None else None
    return refine(scan, start, config, monitor=monitor, progress=progress)


def run_refinement(out_dir: Path, scan: ScanData, config: RefineConfig, *, start: Any = None,
                   start_label: str = "flat start", compare_flat: bool = False,
                   scoring: Scoring | None = None, seconds_before: float = 0.0,
                   log: logging.Logger, progress: bool = False,
                   phase_vmin: float | None = None, phase_vmax: float | None = None
                   ) -> dict[str, Any]:
    """Refine ``scan`` from ``start`` (a StitchResult, or None = flat) and write the outputs.

    Writes under ``out_dir``: ``reconstruction.npz`` (the refined object, its probe, corrected
    positions when asked, ``pixel_size_m`` when the scan's metadata has ``object_pixel_m``),
    ``reconstructed_amplitude.png`` / ``reconstructed_phase.png``
    (cropped to the illuminated region), ``refinement_history.json``, ``convergence.png``,
    ``refined_probe.png`` / ``position_corrections.png`` when those were refined and, with a
    ground truth, ``metrics.json`` and ``comparison_plot.png`` (start, refined, reference).

    Args:
        compare_flat: with a PINN ``start``, also solve from a flat start for the same
            iterations and draw both curves.
        scoring: ground truth and region to score against (None: no metrics).
        seconds_before: time already spent producing ``start`` (PINN inference), recorded.

    Returns:
        ``{"written": [paths], "metrics": dict | None, "result": RefineResult,
        "seconds": float}``.
    """
    t0 = time.perf_counter()
    result = solve(scan, config, start, scoring, progress)
    seconds = time.perf_counter() - t0
    runs = {start_label: _history(result)}
    log.info("refined %d iterations (%s) in %.2f s: loss %.4g -> %.4g per valid pixel",
             config.iterations, start_label, seconds, result.history["loss"][0],
             result.history["loss"][-1])
    if compare_flat and start is not None:
        flat = solve(scan, config, None, scoring, progress)
        runs["flat start"] = _history(flat)
        log.info("flat start for comparison: loss %.4g -> %.4g", flat.history["loss"][0],
                 flat.history["loss"][-1])
    written: list[Path] = []
    extra = {"probe": result.probe, **outputs.pixel_size_extra(scan.metadata)}
    if config.refine_positions:
        extra["positions"] = result.positions
        extra["initial_positions"] = result.initial_positions
    region = scoring.positions if scoring is not None else scan.positions
    m_region = scoring.M if scoring is not None else DEFAULT_M
    written.append(outputs.save_reconstruction_npz(
        out_dir / "reconstruction.npz", result.obj, result.x0, result.y0, region[:, 0],
        region[:, 1], m_region, extra=extra))
    rows, cols = report.lit_box(result.lit())
    shown = result.obj[rows, cols]
    written += outputs.save_reconstruction_pngs(out_dir, shown, phase_vmin=phase_vmin,
                                                phase_vmax=phase_vmax)
    written.append(report.save_convergence_plot(out_dir / "convergence.png", runs))
    if config.refine_probe:
        written.append(report.save_probe_png(out_dir / "refined_probe.png", result.probe,
                                             "Refined probe"))
    if config.refine_positions:
        written.append(report.save_position_arrows(out_dir / "position_corrections.png",
                                                   result.initial_positions, result.positions))
    metrics = None
    if scoring is not None:
        try:
            metrics = scoring.metrics(result.obj, result.x0, result.y0)
            if start is not None:
                metrics["start"] = scoring.metrics(start)
        except ValueError as exc:
            log.warning("metrics not computed: %s", exc)
            metrics = None
        if metrics is not None:
            written.append(outputs.save_json(out_dir / "metrics.json", metrics))
        columns = [] if start is None else [
            (start_label.replace(" start", ""), start.obj, start.x0, start.y0)]
        columns.append(("Refined", shown, result.x0 + cols.start, result.y0 + rows.start))
        written.append(outputs.save_comparison_columns(
            out_dir / "comparison_plot.png", columns, scoring.ground_truth,
            phase_vmin=phase_vmin, phase_vmax=phase_vmax))
    written.append(report.save_refinement_history(
        out_dir / "refinement_history.json", runs,
        {"config": config.to_dict(), "seconds_refine": seconds,
         "seconds_start": seconds_before, "scale": result.scale,
         "loss": "poisson deviance per valid pixel" if config.loss == "poisson"
         else "squared amplitude error per valid pixel (sqrt(counts) units)"}))
    return {"written": written, "metrics": metrics, "result": result, "seconds": seconds,
            "runs": runs}

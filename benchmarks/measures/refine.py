"""Iterative refinement (``ptycho_k3.refine``): speed, and convergence from a flat and a PINN start.

Two scans, both N = 64 at 1e9 photons with Poisson noise, rebuilt in every worker from fixed
seeds (:func:`demo_scan`, :func:`fixture_scan`; each record's config carries a fingerprint so the
workers' scans can be compared):

- ``demo``: the test half of ``simulate_train_test("lines", 64, n_images=1024, nphotons=1e9,
  seed=0)``, the scan ``make demo`` reconstructs (1024 positions, 224 x 224 object);
- ``lcls``: the LCLS probe and object of ``tests/fixtures/lcls_probe_object.npz`` (64 x 64 probe,
  227 x 226 object), ``refine_positions`` uniform random positions (seed 0).

Measured, per backend:

1. speed on ``lcls``: ``refine`` with the default ``RefineConfig`` (batch 128, Poisson loss, object
   only) for ``refine_speed_iterations`` iterations, no monitor. Iteration 1 compiles the step and
   is left out: rate = (K - 1) / (seconds[K] - seconds[1]) iterations/s, median of
   ``refine_speed_repeats`` repeats (each a fresh ``refine`` call, after the convergence runs that
   warm the process). pattern-updates/s = positions x iterations/s;
2. convergence from a flat start on ``demo`` and ``lcls`` (``refine_iterations`` iterations, every
   iteration scored by :class:`ptycho_k3.refine.workflow.Scoring` with M = 20): the first
   iteration, and its wall seconds (``history["seconds"]``: the step's compilation in iteration 1
   included, scoring excluded), at which amplitude SSIM reaches 0.8 / 0.9 and phase SSIM 0.95 /
   0.98, and the SSIMs after the budget;
3. the same on ``demo`` from the PINN start: a PtychoPINN trained on the demo's training half
   (``refine_pinn_groups`` groups, ``refine_pinn_epochs`` epochs, batch 16, seed 0; full mode:
   ``make demo``'s 512 groups for 5 of its 10 epochs), ``reconstruct`` of the test half, then
   ``refine`` from its stitched object. Its seconds to a threshold include the PINN inference
   (training excluded).

The pty-chi peer runs in :mod:`benchmarks.measures.refine_peer` on the same scans and thresholds.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Record, peak_rss_mib
from benchmarks.plan import Settings

ROOT = Path(__file__).resolve().parents[2]
#: The realistic probe and object (LCLS experimental reconstruction).
FIXTURE = ROOT / "tests" / "fixtures" / "lcls_probe_object.npz"
N = 64
NPHOTONS = 1e9
#: Scoring: the central M x M of each position, as the PINN's stitched region.
SCORE_M = 20
#: (part, SSIM threshold) pairs the convergence is timed to.
THRESHOLDS: tuple[tuple[str, float], ...] = (
    ("amplitude", 0.8), ("amplitude", 0.9), ("phase", 0.95), ("phase", 0.98))
#: Iterations every engine's SSIM is also reported at (besides the end of its budget): the
#: first pass, and our full-mode budget.
CHECKPOINTS = (1, 10, 50)

Scan = Any  # ptycho_k3.data.ScanData (kept lazy: importing ptycho_k3.data imports Keras)


def demo_scan() -> Scan:
    """The ``make demo`` test scan: ``lines`` object with phase, 1024 positions, seed 0."""
    return demo_scans()[1]


def demo_scans() -> tuple[Scan, Scan]:
    """``(train, test)`` of the ``make demo`` simulation (the PINN trains on ``train``)."""
    from ptycho_k3.data import simulate_train_test

    return simulate_train_test("lines", N, n_images=1024, nphotons=NPHOTONS, seed=0)


def fixture_scan(n_positions: int, seed: int = 0) -> Scan:
    """The LCLS probe and object at ``n_positions`` uniform random positions (object pixels,
    N/2 from the edges), simulated at 1e9 photons with Poisson noise."""
    from ptycho_k3.data import random_positions, simulate_dataset

    with np.load(FIXTURE) as f:
        probe, obj = f["probe"], f["object"]
    rng = np.random.default_rng(seed)
    x, y = random_positions(n_positions, obj.shape, N, rng)
    return simulate_dataset(obj, probe, x, y, NPHOTONS, rng,
                            metadata={"simulation": {"from": FIXTURE.name, "seed": seed}})


def fingerprint(scan: Scan) -> dict[str, Any]:
    """Numbers that identify a scan across workers: positions, photon total, ``s_sim``."""
    s = float(scan.metadata["s_sim"])
    counts = np.square(scan.diffraction.astype(np.float64) * s)
    return {"positions": scan.n_positions, "N": scan.n, "object_shape": list(scan.object.shape),
            "counts_total": float(counts.sum()), "s_sim": s,
            "positions_sum": float(scan.positions.sum())}


def scoring(scan: Scan) -> Any:
    """The :class:`~ptycho_k3.refine.workflow.Scoring` every engine is scored with."""
    from ptycho_k3.refine.workflow import Scoring

    return Scoring(scan.object, scan.positions, SCORE_M)


def crossing(history: dict[str, list[float]], part: str, threshold: float
             ) -> tuple[int | None, float | None]:
    """First scored iteration whose ``{part}_ssim`` reaches ``threshold``, and its ``seconds``.

    ``history`` has per-entry lists ``iteration``, ``seconds`` (wall, s) and ``{part}_ssim``
    (entry 0 = the start). Returns ``(None, None)`` when the budget never reaches it.
    """
    for it, sec, value in zip(history["iteration"], history["seconds"], history[f"{part}_ssim"],
                              strict=True):
        if value is not None and math.isfinite(value) and value >= threshold:
            return int(it), float(sec)
    return None, None


def at_iteration(history: dict[str, list[float]], key: str, iteration: int) -> float | None:
    """``history[key]`` at ``iteration`` (None when the run is shorter)."""
    its = history["iteration"]
    return float(history[key][its.index(iteration)]) if iteration in its else None


def convergence_records(column: str, label: str, history: dict[str, list[float]],
                        config: dict[str, Any], *, seconds_offset: float = 0.0,
                        offset_note: str = "") -> list[Record]:
    """Records of one scored run: iterations and seconds to each threshold, SSIM at the common
    checkpoint and at the end of the budget, and the whole history (for the plot).

    Args:
        column: the table column (a backend, or a pty-chi algorithm).
        label: ``"{scan} {start}"``, e.g. ``"demo flat"``, the row prefix.
        history: ``iteration``, ``seconds`` (wall s since the start, scoring excluded), ``loss``,
            ``amplitude_ssim``, ``phase_ssim``.
        seconds_offset: seconds spent before iteration 0 (PINN inference), added to every time.
        offset_note: how the offset is named in the row (e.g. ``" (incl. inference)"``).
    """
    out = []
    budget = history["iteration"][-1]
    for part, thr in THRESHOLDS:
        it, sec = crossing(history, part, thr)
        cfg = {**config, "threshold": thr, "reached": it is not None, "budget": budget}
        out.append(Record(column, f"refine {label}: iterations to {part} SSIM {thr}", it, "it",
                          cfg))
        out.append(Record(column, f"refine {label}: seconds to {part} SSIM {thr}{offset_note}",
                          None if sec is None else sec + seconds_offset, "s", cfg))
    checkpoints = sorted({*(k for k in CHECKPOINTS if k <= budget), budget})
    for k in checkpoints:
        for part in ("amplitude", "phase"):
            out.append(Record(column, f"refine {label}: {part} SSIM @{k} it",
                              at_iteration(history, f"{part}_ssim", k), "", config))
    out.append(Record(column, f"refine {label}: wall seconds of the budget{offset_note}",
                      history["seconds"][-1] + seconds_offset, "s", config))
    out.append(Record(column, f"refine {label}: history", budget, "it",
                      {**config, "seconds_offset": seconds_offset, "history": history}))
    return out


def final_records(column: str, label: str, scan: Scan, obj: np.ndarray, x0: int, y0: int,
                  config: dict[str, Any]) -> list[Record]:
    """The final object scored without registration too, and the registration shift (px).

    ``Scoring`` (hence every threshold row) registers the reconstruction to the ground truth
    (integer + sub-pixel shift maximising amplitude NCC) before the SSIM. A reconstruction whose
    positions are right should need ~0 px; where the registration moves it anyway the SSIM can
    drop, so both numbers are reported.
    """
    from ptycho_k3.metrics import evaluate
    from ptycho_k3.stitch import StitchResult

    stitched = StitchResult(obj=obj, weight=np.ones(obj.shape, np.float32), x0=x0, y0=y0,
                            M=SCORE_M)
    reg = evaluate(stitched, scan.object, positions=scan.positions, M=SCORE_M)
    raw = evaluate(stitched, scan.object, positions=scan.positions, M=SCORE_M,
                   register_images=False)
    shift = [float(v) for v in reg["alignment"]["shift_total"]]
    cfg = {**config, "registration_shift_px": shift,
           "registered_ssim": [reg["amplitude"].get("ssim"), reg["phase"].get("ssim")]}
    return [
        Record(column, f"refine {label}: amplitude SSIM at the budget, no registration",
               raw["amplitude"].get("ssim"), "", cfg),
        Record(column, f"refine {label}: phase SSIM at the budget, no registration",
               raw["phase"].get("ssim"), "", cfg),
        Record(column, f"refine {label}: registration shift at the budget",
               float(math.hypot(*shift)), "px", cfg),
    ]


def speed_rate(seconds: Sequence[float]) -> float:
    """Iterations/s of one run from its cumulative ``seconds`` (entry 0 = 0, entry i = after
    iteration i), leaving out iteration 1 (compilation)."""
    k = len(seconds) - 1
    if k < 2:
        raise ValueError("a speed run needs at least 2 iterations")
    return (k - 1) / (seconds[k] - seconds[1])


def speed_records(column: str, positions: int, runs: Sequence[Sequence[float]],
                  config: dict[str, Any]) -> list[Record]:
    """iterations/s, pattern-updates/s (median over runs) and the first-iteration overhead (s)."""
    rates = [speed_rate(s) for s in runs]
    rate = statistics.median(rates)
    overhead = statistics.median([s[1] - 1.0 / r for s, r in zip(runs, rates, strict=True)])
    cfg = {**config, "repeats": len(runs), "iterations_per_repeat": len(runs[0]) - 1,
           "rates": [round(r, 3) for r in rates],
           "method": "median over repeats of (K-1) / (seconds[K] - seconds[1]); iteration 1 "
                     "(compilation) left out"}
    return [
        Record(column, "refine speed iterations/s", rate, "it/s", cfg),
        Record(column, "refine speed pattern-updates/s", rate * positions, "patterns/s", cfg),
        Record(column, "refine speed first-iteration overhead", overhead, "s",
               {**cfg, "method": "seconds[1] minus one steady iteration (compilation, setup)"}),
    ]


_T0 = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr (the harness shows a worker's stderr when it fails)."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def _ours(scan: Scan, start: Any, iterations: int, monitor: Callable | None) -> Any:
    from ptycho_k3.refine import RefineConfig, refine

    return refine(scan, start, RefineConfig(iterations=iterations), monitor=monitor)


def _scored_history(result: Any) -> dict[str, list[float]]:
    h = result.history
    out = {k: [float(v) for v in h[k]]
           for k in ("seconds", "loss", "amplitude_ssim", "phase_ssim")}
    return {"iteration": [int(i) for i in h["iteration"]], **out}


def run(settings: Settings, backend: str) -> list[Record]:
    """Speed and convergence of ``ptycho_k3.refine`` under ``backend`` (module docstring)."""
    from ptycho_k3.config import ModelConfig, RefineConfig, TrainingConfig
    from ptycho_k3.infer import reconstruct
    from ptycho_k3.train import train

    defaults = RefineConfig()
    base = {"engine": "ptycho_k3.refine", "batch": defaults.batch, "loss": defaults.loss,
            "object_step": defaults.object_step, "alpha": defaults.alpha,
            "probe": "known (the simulation's)", "positions": "known", "score_M": SCORE_M}
    lcls = fixture_scan(settings.refine_positions)
    train_scan, demo = demo_scans()
    scans = {"lcls": lcls, "demo": demo}
    out: list[Record] = []
    log("scans simulated")

    # 2. flat start, scored every iteration (also warms the process up for the speed runs)
    for name in ("lcls", "demo"):
        scan = scans[name]
        cfg = {**base, "scan": name, "start": "flat", "scan_fingerprint": fingerprint(scan)}
        result = _ours(scan, None, settings.refine_iterations, scoring(scan).monitor(1))
        out += convergence_records(backend, f"{name} flat", _scored_history(result), cfg)
        out += final_records(backend, f"{name} flat", scan, result.obj, result.x0, result.y0, cfg)
        log(f"{name} flat: {settings.refine_iterations} iterations in "
            f"{result.history['seconds'][-1]:.1f} s, SSIM {result.history['amplitude_ssim'][-1]:.3f}"
            f" / {result.history['phase_ssim'][-1]:.3f}")

    # 1. speed on lcls, no monitor
    runs = [_ours(lcls, None, settings.refine_speed_iterations, None).history["seconds"]
            for _ in range(settings.refine_speed_repeats)]
    out += speed_records(backend, lcls.n_positions, runs,
                         {**base, "scan": "lcls", "scan_fingerprint": fingerprint(lcls)})
    log(f"speed: {out[-3].value:.2f} it/s")

    # 3. PINN start on demo
    t0 = time.perf_counter()
    trained = train(TrainingConfig(model=ModelConfig(N=N, gridsize=1), batch_size=16,
                                   nepochs=settings.refine_pinn_epochs,
                                   n_groups=settings.refine_pinn_groups, seed=0),
                    train_scan, verbose=0)
    train_s = time.perf_counter() - t0
    log(f"PINN trained in {train_s:.1f} s")
    t0 = time.perf_counter()
    rec = reconstruct(trained.models, demo, input_scale=trained.input_scale, batch_size=32,
                      keep_patches=False)
    infer_s = time.perf_counter() - t0
    log(f"PINN inference {infer_s:.1f} s")
    score = scoring(demo)
    start_metrics = score.metrics(rec.stitched)
    cfg = {**base, "scan": "demo", "start": "PINN", "scan_fingerprint": fingerprint(demo),
           "pinn_groups": settings.refine_pinn_groups, "pinn_epochs": settings.refine_pinn_epochs,
           "pinn_batch_size": 16, "pinn_train_seconds": train_s, "pinn_inference_seconds": infer_s}
    out.append(Record(backend, "refine demo PINN: training wall time (not counted)", train_s,
                      "s", cfg))
    out.append(Record(backend, "refine demo PINN: inference wall time", infer_s, "s", cfg))
    for part in ("amplitude", "phase"):
        out.append(Record(backend, f"refine demo PINN: {part} SSIM of the PINN start",
                          start_metrics[part].get("ssim"), "", cfg))
    result = _ours(demo, rec.stitched, settings.refine_iterations, score.monitor(1))
    out += convergence_records(backend, "demo PINN", _scored_history(result), cfg,
                               seconds_offset=infer_s, offset_note=" (incl. inference)")
    out += final_records(backend, "demo PINN", demo, result.obj, result.x0, result.y0, cfg)
    log(f"PINN start refined: SSIM {result.history['amplitude_ssim'][-1]:.3f} / "
        f"{result.history['phase_ssim'][-1]:.3f}")
    out.append(Record(backend, "refine worker peak RSS", peak_rss_mib(), "MiB", base))
    return out

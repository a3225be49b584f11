"""The inference workflow: a loaded model pair and a scan -> every output file of
``ptycho-infer`` (also ``ptycho-train --do_stitching``), with the refinement after the PINN when
asked. Options are an :class:`~ptycho_k3.config.InferenceConfig`; reading options are the
scan's (already applied). Keras is imported by the functions that need it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_k3.config import InferenceConfig, InferenceJob
from ptycho_k3.workflows.halves import HALVES, run_scan, scan_parts


def load_scan(path: str, n_subsample: int | None, seed: int, reading: Any,
              log: logging.Logger) -> Any:
    """Read the scan (any format, docs/conventions.md §22, with the reading options
    ``reading``), optionally subsampling raw patterns (no Keras needed)."""
    from ptycho_k3.data import load_scan as read_scan
    from ptycho_k3.data import subsample_indices

    scan = read_scan(path, reading)
    if n_subsample is not None and n_subsample < scan.n_positions:
        idx = subsample_indices(scan.n_positions, n_subsample, seed)
        log.info("subsampled %d of %d patterns (seed %d)", len(idx), scan.n_positions, seed)
        scan = scan.select(idx)
    return scan


def check_compatible(scan: Any, params: dict[str, Any], where: str,
                     gridsize: int | None = None) -> None:
    """Raise DataError/ConfigError when the scan or options cannot go through the bundle."""
    from ptycho_k3.config import ConfigError
    from ptycho_k3.data import DataError

    n = int(params["model"]["N"])
    if scan.n != n:
        raise DataError(f"{scan.source or 'test data'}: diffraction patterns are "
                        f"{scan.n}x{scan.n} but the bundle {where} was trained for N={n}")
    gs = int(params["model"].get("gridsize", 1))
    if gridsize is not None and gridsize != gs:
        raise ConfigError(f"--gridsize {gridsize} does not match the bundle's gridsize {gs}")


def run_inference(job: InferenceJob, config: InferenceConfig, reading: Any, *, backend: str,
                  log: logging.Logger, progress: bool) -> list[Path]:
    """Everything ``ptycho-infer`` does; returns the written paths.

    Every check that needs no Keras (the bundle's manifest, the scan, its compatibility with
    the bundle, the halves, the refinement's measurements, the grouping) passes before the
    bundle is loaded or ``job.output_dir`` exists.
    """
    from ptycho_k3 import distribute
    from ptycho_k3.bundle import inspect_bundle

    distribute.validate(config.distribute, backend)  # e.g. data_parallel needs jax
    info = inspect_bundle(job.model_path)
    seed = job.subsample_seed if job.subsample_seed is not None else config.seed
    scan = load_scan(job.test_data, job.n_subsample, seed, reading, log)
    check_compatible(scan, info.params, str(info.path), job.gridsize)
    parts = scan_parts(scan, job.halves)  # --halves: fewer than 2 positions is refused here
    if config.refines:
        from ptycho_k3.refine import measurements

        measurements(scan)  # a pattern with no valid pixel is refused before any output
    groups = pinn_groups(parts, info.params, config)

    from ptycho_k3.bundle import load_bundle
    from ptycho_k3.logs import add_log_file
    from ptycho_k3.outputs import save_reading

    # Processes join before JAX computes anything; a batch that does not split is refused.
    distribute.setup(config.distribute).check_batch_size(config.batch_size)
    t0 = time.perf_counter()
    bundle = load_bundle(info.path, precision=config.precision)
    seconds = time.perf_counter() - t0
    out_dir = Path(job.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "inference.log")
    log.info("loaded %s (written by %s) under %s in %.1f s; network in %s", info.path,
             info.manifest.get("backend"), backend, seconds, bundle.models.config.precision)
    log.debug("settings: %s; %s; %s", job, config, reading)
    written = [save_reading(out_dir, scan, reading.to_dict())]

    def one(where: Path, part: Any) -> list[Path]:
        return reconstruct_and_save(where, bundle.models, part, input_scale=bundle.input_scale,
                                    config=config, log=log, progress=progress,
                                    grouped=groups[id(part)])["written"]

    return written + run_scan(out_dir, scan, one, log, halves=job.halves, parts=parts)


def pinn_groups(parts: Sequence[Any], params: dict[str, Any], config: InferenceConfig
                ) -> dict[int, Any]:
    """The network's groups of every part (``id(part)`` -> GroupedData), made before any
    output exists: a scan with fewer positions than the bundle's gridsize^2, or with zero
    energy, is a DataError naming the file (no Keras needed)."""
    from ptycho_k3.config import ModelConfig
    from ptycho_k3.data import DataError
    from ptycho_k3.infer import group_for_inference

    gridsize = int(params["model"].get("gridsize", 1))
    try:  # the model's canvas side, for the margin warning (a bad config fails at loading)
        canvas = ModelConfig.from_dict(params["model"]).canvas_size
    except (ValueError, TypeError):
        canvas = None
    groups = {}
    for i, part in enumerate(parts):
        try:
            groups[id(part)] = group_for_inference(
                part, gridsize, n_groups=config.n_groups, seed=config.seed,
                neighbor_count=config.neighbor_count, canvas_size=canvas)
        except DataError as exc:
            if len(parts) == 1:
                raise
            raise DataError(f"{exc} (in {HALVES[i]} of --halves: {part.n_positions} positions)"
                            ) from None
    return groups


def reconstruct_and_save(
    out_dir: Path,
    models: Any,
    scan: Any,
    *,
    input_scale: float,
    config: InferenceConfig,
    log: logging.Logger,
    progress: bool,
    grouped: Any = None,
) -> dict[str, Any]:
    """Reconstruct ``scan`` and write every inference output under ``out_dir``.

    ``grouped`` is the scan's grouping from :func:`ptycho_k3.infer.group_for_inference` when
    the caller checked it already (default: grouped here).

    Returns:
        A summary: written paths, timings, metrics (or None).
    """
    from ptycho_k3 import outputs
    from ptycho_k3.infer import reconstruct

    t0 = time.perf_counter()
    rec = reconstruct(models, scan, input_scale=input_scale, n_groups=config.n_groups,
                      batch_size=config.batch_size, seed=config.seed, M=config.M,
                      neighbor_count=config.neighbor_count, progress=progress,
                      keep_patches=config.debug_dump is not None, grouped=grouped,
                      distribute_mode=config.distribute)
    st = rec.stitched
    log.info("reconstructed %d groups in %.2f s (predict %.2f s, stitch %.2f s); object %dx%d",
             len(rec.centres), time.perf_counter() - t0, rec.seconds_predict,
             rec.seconds_stitch, *st.obj.shape)
    seconds_pinn = time.perf_counter() - t0
    if config.refines:
        return _refine_and_save(out_dir, rec, scan, config=config, log=log, progress=progress,
                                seconds_pinn=seconds_pinn)
    written = outputs.save_reconstruction_pngs(out_dir, st.obj, phase_vmin=config.phase_vmin,
                                               phase_vmax=config.phase_vmax)
    written.append(outputs.save_reconstruction_npz(
        out_dir / "reconstruction.npz", st.obj, st.x0, st.y0, rec.centres[:, 0],
        rec.centres[:, 1], st.M, extra=outputs.pixel_size_extra(scan.metadata)))
    metrics = None
    if scan.object is not None:
        from ptycho_k3.metrics import evaluate

        try:
            metrics = evaluate(st, scan.object, positions=rec.centres, M=st.M)
        except ValueError as exc:  # e.g. no overlap with the ground truth: report, go on
            log.warning("metrics not computed: %s", exc)
        if metrics is not None:
            written.append(outputs.save_json(out_dir / "metrics.json", metrics))
            log.info("metrics: %s", metrics_line(metrics))
        written.append(outputs.save_comparison_plot(
            out_dir / "comparison_plot.png", st.obj, scan.object, st.x0, st.y0,
            phase_vmin=config.phase_vmin, phase_vmax=config.phase_vmax))
    elif config.comparison_plot:
        log.warning("--comparison_plot: the test NPZ has no objectGuess; no comparison written")
    if config.debug_dump is not None:
        dump = Path(config.debug_dump) if config.debug_dump else out_dir / "debug_dump"
        written += outputs.save_debug_dump(dump, rec.patches, rec.centres, st.obj, st.x0, st.y0,
                                           st.M)
    return {"written": written, "metrics": metrics, "n_groups": len(rec.centres),
            "seconds_predict": rec.seconds_predict, "seconds_stitch": rec.seconds_stitch}


def _refine_and_save(out_dir: Path, rec: Any, scan: Any, *, config: InferenceConfig,
                     log: logging.Logger, progress: bool, seconds_pinn: float) -> dict[str, Any]:
    """PINN object -> refinement -> the refined outputs (the PINN's own object is kept as
    ``pinn_reconstruction.npz``)."""
    from ptycho_k3 import outputs
    from ptycho_k3.refine.workflow import Scoring, run_refinement

    st = rec.stitched
    written = [outputs.save_reconstruction_npz(
        out_dir / "pinn_reconstruction.npz", st.obj, st.x0, st.y0, rec.centres[:, 0],
        rec.centres[:, 1], st.M, extra=outputs.pixel_size_extra(scan.metadata))]
    scoring = None if scan.object is None else Scoring(scan.object, rec.centres, st.M)
    summary = run_refinement(
        out_dir, scan, config.refine, start=st, start_label="PINN start",
        compare_flat=config.compare_flat, scoring=scoring, seconds_before=seconds_pinn,
        log=log, progress=progress, phase_vmin=config.phase_vmin,
        phase_vmax=config.phase_vmax)
    metrics = summary["metrics"]
    if metrics is not None:
        log.info("PINN:    %s", metrics_line(metrics["start"]))
        log.info("refined: %s", metrics_line(metrics))
    return {"written": written + summary["written"], "metrics": metrics,
            "n_groups": len(rec.centres), "seconds_predict": rec.seconds_predict,
            "seconds_stitch": rec.seconds_stitch, "seconds_refine": summary["seconds"]}


def metrics_line(metrics: dict[str, Any]) -> str:
    """One log line: MAE, PSNR and SSIM of amplitude and phase (or why not applicable)."""
    parts = []
    for part in ("amplitude", "phase"):
        m = metrics.get(part) or {}
        if not m.get("applicable", True):
            parts.append(f"{part}: n/a ({m.get('reason')})")
            continue
        fields = [f"{k}={m[k]:.4g}" for k in ("mae", "psnr", "ssim") if
                  isinstance(m.get(k), int | float)]
        parts.append(f"{part}: {' '.join(fields)}")
    return "; ".join(parts)

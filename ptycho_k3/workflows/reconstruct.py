"""The iterative reconstruction workflow of ``ptycho-reconstruct``: a flat start, or the PINN's
object from a bundle, refined by :mod:`ptycho_k3.refine` on the forward model the network is
trained with. Keras is imported after every input check.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ptycho_k3.config import InferenceConfig, ReconstructionJob
from ptycho_k3.workflows.halves import run_scan, scan_parts
from ptycho_k3.workflows.infer import check_compatible, load_scan, metrics_line, pinn_groups


def run_reconstruction(job: ReconstructionJob, config: InferenceConfig, reading: Any, *,
                       backend: str, log: logging.Logger, progress: bool) -> list[Path]:
    """Everything ``ptycho-reconstruct`` does; returns the written paths.

    ``config.refine`` is the solver; ``config``'s grouping and stitching options serve the PINN
    start, its phase limits the pictures. The bundle (``--init pinn``), the scan, its
    measurements, the halves and the PINN's grouping (or, from a flat start, the scan's energy)
    are checked before ``job.output_dir`` exists.
    """
    if job.init == "flat" and config.compare_flat:
        log.warning("--compare_flat has no effect with --init flat")
    if job.init == "flat" and config.distribute != "none":
        log.warning("--distribute has no effect with --init flat (it shards the PINN start)")
    info = None
    if job.init == "pinn":
        from ptycho_k3 import distribute
        from ptycho_k3.bundle import inspect_bundle

        distribute.validate(config.distribute, backend)  # e.g. data_parallel needs jax
        info = inspect_bundle(job.model_path)
    scan = load_scan(job.test_data, job.n_subsample, config.seed, reading, log)
    if info is not None:
        check_compatible(scan, info.params, str(info.path))
    from ptycho_k3.refine import measurements

    measurements(scan)  # a pattern with no valid pixel is refused before any output
    parts = scan_parts(scan, job.halves)  # --halves: fewer than 2 positions is refused here
    groups = {} if info is None else pinn_groups(parts, info.params, config)
    if info is None:  # a flat start refuses diffraction without energy
        from ptycho_k3.data import DataError, normalization_factor
        from ptycho_k3.data.grouping import named_error

        try:
            normalization_factor(scan.diffraction)
        except DataError as exc:
            raise named_error(exc, scan.source) from None
    else:  # processes join before JAX computes anything; a batch that does not split is refused
        distribute.setup(config.distribute).check_batch_size(config.batch_size)

    from ptycho_k3.logs import add_log_file
    from ptycho_k3.outputs import save_reading

    out_dir = Path(job.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "reconstruct.log")
    written = [save_reading(out_dir, scan, reading.to_dict())]
    bundle = None
    if info is not None:
        from ptycho_k3.bundle import load_bundle

        bundle = load_bundle(info.path, precision=config.precision)
        log.info("loaded %s (written by %s) under %s", info.path, info.manifest.get("backend"),
                 backend)

    def one(where: Path, part: Any) -> list[Path]:
        return _reconstruct_one(where, part, config, bundle, log, progress=progress,
                                grouped=groups.get(id(part)))

    return written + run_scan(out_dir, scan, one, log, halves=job.halves, parts=parts)


def _reconstruct_one(out_dir: Path, scan: Any, config: InferenceConfig, bundle: Any,
                     log: logging.Logger, progress: bool, grouped: Any = None) -> list[Path]:
    """Flat or PINN start -> refinement -> every output under ``out_dir``; the written paths.
    ``grouped``: the PINN's groups of ``scan`` (:func:`pinn_groups`)."""
    from ptycho_k3.refine.workflow import Scoring, run_refinement

    start, seconds_start, written = None, 0.0, []
    positions = scan.positions
    if bundle is not None:
        start, positions, seconds_start, written = _pinn_start(bundle, scan, config, log,
                                                               out_dir, grouped)
    scoring = None if scan.object is None else Scoring(scan.object, positions, config.M)
    summary = run_refinement(
        out_dir, scan, config.refine, start=start,
        start_label="PINN start" if start is not None else "flat start",
        compare_flat=config.compare_flat and start is not None, scoring=scoring,
        seconds_before=seconds_start, log=log, progress=progress,
        phase_vmin=config.phase_vmin, phase_vmax=config.phase_vmax)
    if summary["metrics"] is not None:
        log.info("metrics: %s", metrics_line(summary["metrics"]))
    return written + summary["written"]


def _pinn_start(bundle: Any, scan: Any, config: InferenceConfig, log: logging.Logger,
                out_dir: Path, grouped: Any = None) -> tuple[Any, Any, float, list[Path]]:
    """Reconstruct with the PINN and keep its object as pinn_reconstruction.npz."""
    from ptycho_k3 import outputs
    from ptycho_k3.infer import reconstruct

    t0 = time.perf_counter()
    rec = reconstruct(bundle.models, scan, input_scale=bundle.input_scale,
                      batch_size=config.batch_size, seed=config.seed, M=config.M,
                      neighbor_count=config.neighbor_count, keep_patches=False, grouped=grouped,
                      distribute_mode=config.distribute)
    seconds = time.perf_counter() - t0
    st = rec.stitched
    log.info("PINN start: %d groups in %.2f s", len(rec.centres), seconds)
    path = outputs.save_reconstruction_npz(out_dir / "pinn_reconstruction.npz", st.obj, st.x0,
                                           st.y0, rec.centres[:, 0], rec.centres[:, 1], st.M,
                                           extra=outputs.pixel_size_extra(scan.metadata))
    return st, rec.centres, seconds, [path]

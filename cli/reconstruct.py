"""``ptycho-reconstruct``: iterative reconstruction of a scan, from a flat start or the PINN's.

Examples::

    ptycho-reconstruct --test_data test.npz --iterations 50 --output_dir recon
    ptycho-reconstruct --test_data test.npz --iterations 50 --init pinn --model_path run \\
        --compare_flat --backend jax

The same engine as ``ptycho-infer --refine_iterations`` (:mod:`ptycho_k3.refine`) on the same
forward model the network is trained with; ``--iterations`` here is ``--refine_iterations``
there, and the other ``--refine_*`` flags are shared. A flat start needs no network. Writes the
refinement outputs of :func:`ptycho_k3.refine.workflow.run_refinement` and ``reconstruct.log``
under ``--output_dir``. Everything is checked before Keras is imported or a file is written.
With ``--halves`` the scan is split into two disjoint halves (alternate positions), each is
reconstructed into ``half_1/`` and ``half_2/``, and their Fourier ring correlation is written to
``frc.json`` and ``frc.png`` (:mod:`ptycho_k3.workflows.halves`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    UsageError,
    add_common,
    add_flag,
    add_log_file,
    optional_number,
    positive_int,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.cli._data import DEFAULTS as DATA_DEFAULTS
from ptycho_k3.cli._data import add_data_flags, measured_options
from ptycho_k3.cli._refine import DEFAULTS as REFINE_DEFAULTS
from ptycho_k3.cli._refine import add_refine_flags, non_negative_int, refine_config
from ptycho_k3.cli.infer import add_bool, check_compatible, inference_config, load_scan, print_written
from ptycho_k3.config import DEFAULT_M
from ptycho_k3.config_io import UNSET, explicit_values, load_yaml
from ptycho_k3.workflows.halves import run_scan, scan_parts
from ptycho_k3.workflows.infer import pinn_groups

PROG = "ptycho-reconstruct"
INITS = ("flat", "pinn")

DEFAULTS: dict[str, Any] = {
    "test_data": None,
    "output_dir": "reconstruction_outputs",
    "iterations": 50,
    "init": "flat",
    "model_path": None,
    "n_subsample": None,
    "batch_size": 32,
    "M": DEFAULT_M,
    "seed": 45,
    "neighbor_count": 4,
    "phase_vmin": None,
    "phase_vmax": None,
    "halves": False,
    **REFINE_DEFAULTS,
    **DATA_DEFAULTS,
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Reconstruct a scan iteratively on ptycho-k3's forward "
               "model, from a flat start or from a trained PINN's reconstruction.")
    add_flag(p, "test_data", default=UNSET, metavar="NPZ", help="scan to reconstruct")
    add_flag(p, "config", default=None, metavar="YAML", help="YAML with any of these options")
    add_flag(p, "output_dir", default=UNSET,
             help="output directory (default reconstruction_outputs)")
    add_flag(p, "init", choices=INITS, default=UNSET,
             help="start from a flat object (default) or the PINN's (needs --model_path)")
    add_flag(p, "model_path", default=UNSET, metavar="PATH",
             help="training output directory or wts.h5.zip (for --init pinn)")
    add_flag(p, "n_subsample", type=positive_int, default=UNSET,
             help="subsample this many patterns first (default all)")
    add_flag(p, "batch_size", type=positive_int, default=UNSET,
             help="groups per PINN forward pass (--init pinn; default 32)")
    add_flag(p, "M", type=positive_int, default=UNSET,
             help="central crop of PINN patches when stitching, and the scored region's "
                  f"margin (default {DEFAULT_M})")
    add_flag(p, "seed", type=non_negative_int, default=UNSET,
             help="seed of subsampling, grouping and the refinement's batch order (default 45)")
    add_flag(p, "neighbor_count", type=positive_int, default=UNSET,
             help="K nearest neighbours for grouping at gridsize > 1 (default 4)")
    add_flag(p, "phase_vmin", type=optional_number, default=UNSET,
             help="lower colour limit of phase images (rad)")
    add_flag(p, "phase_vmax", type=optional_number, default=UNSET,
             help="upper colour limit of phase images (rad)")
    add_data_flags(p, UNSET)
    add_refine_flags(p, "iterations", "iterations of the solver (default 50)")
    add_bool(p, "compare_flat",
             help="with --init pinn, also solve from a flat start and draw both curves")
    add_bool(p, "halves",
             help="reconstruct two disjoint halves of the scan (alternate positions) into "
                  "half_1/ and half_2/ and write their FRC resolution to frc.json / frc.png")
    add_common(p)
    return p


def resolve_options(args: argparse.Namespace, log: logging.Logger) -> dict[str, Any]:
    """Options after the precedence explicit flag > YAML > default, validated."""
    yaml_map = load_yaml(args.config) if args.config else {}
    unknown = sorted(set(yaml_map) - set(DEFAULTS) - {"refine_iterations"})
    if unknown:
        log.warning("%s: unknown setting(s) ignored: %s", args.config, ", ".join(unknown))
    if "refine_iterations" in yaml_map and "iterations" not in yaml_map:
        yaml_map["iterations"] = yaml_map["refine_iterations"]
    options = dict(DEFAULTS)
    for layer in (yaml_map, explicit_values(args)):
        options.update({k: v for k, v in layer.items() if k in options})
    if options["test_data"] in (None, ""):
        raise UsageError("--test_data is required")
    if options["init"] not in INITS:
        raise UsageError(f"init must be one of {INITS}, got {options['init']!r}")
    if options["init"] == "pinn" and options["model_path"] in (None, ""):
        raise UsageError("--init pinn needs --model_path (a training output directory)")
    if options["init"] == "flat" and options["compare_flat"]:
        log.warning("--compare_flat has no effect with --init flat")
    options["refine"] = refine_config(options, options["iterations"], options["seed"])
    measured_options(options)  # a bad reading option is a usage error before any work
    return options


def run(args: argparse.Namespace) -> int:
    quiet_frameworks()
    log = setup_logging(PROG, args)
    backend = select_backend(args.backend)
    options = resolve_options(args, log)
    info = None
    if options["init"] == "pinn":
        from ptycho_k3.bundle import inspect_bundle

        info = inspect_bundle(options["model_path"])
    scan = load_scan(options["test_data"], options["n_subsample"], int(options["seed"]), log,
                     options)
    if info is not None:
        check_compatible(scan, info.params, str(info.path))
    from ptycho_k3.refine import measurements

    measurements(scan)  # a pattern with no valid pixel is refused before any output
    # --halves: fewer than 2 positions is refused before any output.
    parts = scan_parts(scan, bool(options["halves"]))
    # --init pinn: so is a scan that cannot be grouped at the bundle's gridsize or normalised;
    # a flat start refuses diffraction without energy (nothing to reconstruct).
    groups = {} if info is None else pinn_groups(parts, info.params, inference_config(options))
    if info is None:
        from ptycho_k3.data import DataError, normalization_factor
        from ptycho_k3.data.grouping import named_error

        try:
            normalization_factor(scan.diffraction)
        except DataError as exc:
            raise named_error(exc, scan.source) from None

    out_dir = Path(options["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "reconstruct.log")
    from ptycho_k3.outputs import save_reading

    written = [save_reading(out_dir, scan, measured_options(options).to_dict())]

    def one(where: Path, part: Any) -> list[Path]:
        return _reconstruct_one(where, part, options, info, log, backend,
                                progress=not args.quiet and sys.stderr.isatty(),
                                grouped=groups.get(id(part)))

    written += run_scan(out_dir, scan, one, log, halves=bool(options["halves"]), parts=parts)
    print_written(written, args.quiet)
    return 0


def _reconstruct_one(out_dir: Path, scan: Any, options: dict[str, Any], info: Any,
                     log: logging.Logger, backend: str, progress: bool,
                     grouped: Any = None) -> list[Path]:
    """Flat or PINN start -> refinement -> every output under ``out_dir``; the written paths.
    ``grouped``: the PINN's groups of ``scan`` (:func:`ptycho_k3.workflows.infer.pinn_groups`)."""
    from ptycho_k3.refine.workflow import Scoring, run_refinement

    start, seconds_start, written = None, 0.0, []
    positions = scan.positions
    if info is not None:
        start, positions, seconds_start, written = _pinn_start(info, scan, options, log, out_dir,
                                                               backend, grouped)
    scoring = None if scan.object is None else Scoring(scan.object, positions, options["M"])
    summary = run_refinement(
        out_dir, scan, options["refine"], start=start,
        start_label="PINN start" if start is not None else "flat start",
        compare_flat=bool(options["compare_flat"]) and start is not None, scoring=scoring,
        seconds_before=seconds_start, log=log, progress=progress,
        phase_vmin=options["phase_vmin"], phase_vmax=options["phase_vmax"])
    if summary["metrics"] is not None:
        from ptycho_k3.workflows.infer import metrics_line

        log.info("metrics: %s", metrics_line(summary["metrics"]))
    return written + summary["written"]


def _pinn_start(info: Any, scan: Any, options: dict[str, Any], log: logging.Logger,
                out_dir: Path, backend: str, grouped: Any = None
                ) -> tuple[Any, Any, float, list[Path]]:
    """Load the bundle, reconstruct with the PINN, keep its object as pinn_reconstruction.npz."""
    from ptycho_k3 import outputs
    from ptycho_k3.bundle import load_bundle
    from ptycho_k3.infer import reconstruct

    t0 = time.perf_counter()
    bundle = load_bundle(info.path)
    log.info("loaded %s (written by %s) under %s", info.path, info.manifest.get("backend"),
             backend)
    rec = reconstruct(bundle.models, scan, input_scale=bundle.input_scale,
                      batch_size=options["batch_size"], seed=int(options["seed"]),
                      M=options["M"], neighbor_count=options["neighbor_count"],
                      keep_patches=False, grouped=grouped)
    seconds = time.perf_counter() - t0
    st = rec.stitched
    log.info("PINN start: %d groups in %.2f s (bundle load included)", len(rec.centres), seconds)
    path = outputs.save_reconstruction_npz(out_dir / "pinn_reconstruction.npz", st.obj, st.x0,
                                           st.y0, rec.centres[:, 0], rec.centres[:, 1], st.M,
                                           extra=outputs.pixel_size_extra(scan.metadata))
    return st, rec.centres, seconds, [path]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

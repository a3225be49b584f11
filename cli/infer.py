"""``ptycho-infer`` (alias ``ptycho_inference``): reconstruct a scan with a trained bundle.

Examples::

    ptycho-infer --model_path training_outputs --test_data test.npz --output_dir recon
    ptycho-infer --backend tensorflow --model_path run/wts.h5.zip --test_data test.npz

Writes under ``--output_dir``: ``reconstructed_amplitude.png``, ``reconstructed_phase.png``,
``reconstruction.npz``, ``inference.log`` and, when the test NPZ has ``objectGuess``,
``metrics.json`` and ``comparison_plot.png``. Any backend reads a bundle written by any other.

With ``--refine_iterations N`` the PINN's stitched object is refined for N iterations on the same
forward model (:mod:`ptycho_k3.refine`): the files above then hold the refined object, the PINN's
is kept as ``pinn_reconstruction.npz``, and ``refinement_history.json`` and ``convergence.png``
are added (``refined_probe.png`` / ``position_corrections.png`` with ``--refine_probe`` /
``--refine_positions``).
With ``--halves`` the scan is split into two disjoint halves (alternate positions), each is
reconstructed as above into ``half_1/`` and ``half_2/``, and their Fourier ring correlation is
written to ``frc.json`` and ``frc.png`` (:mod:`ptycho_k3.workflows.halves`).
Arguments are parsed and the bundle and data checked before Keras is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    UsageError,
    add_bool,
    add_common,
    add_flag,
    add_legacy_ignored,
    add_log_file,
    number,
    optional_int,
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
from ptycho_k3.cli._refine import add_refine_flags, refine_config
from ptycho_k3.config import DEFAULT_M, ConfigError, InferenceConfig
from ptycho_k3.config_io import UNSET, explicit_values, ignored_settings, load_yaml
from ptycho_k3.workflows.halves import run_scan, scan_parts
from ptycho_k3.workflows.infer import pinn_groups, reconstruct_and_save

PROG = "ptycho-infer"

#: Inference options and their defaults (a ``--config`` YAML may set any of them).
DEFAULTS: dict[str, Any] = {
    "model_path": None,
    "test_data": None,
    "output_dir": "inference_outputs",
    "n_groups": None,
    "n_subsample": None,
    "subsample_seed": None,
    "batch_size": 32,
    "M": DEFAULT_M,
    "seed": 45,
    "neighbor_count": 4,
    "phase_vmin": None,
    "phase_vmax": None,
    "comparison_plot": False,
    "debug": False,
    "debug_dump": None,
    "refine_iterations": 0,
    "halves": False,
    **REFINE_DEFAULTS,
    **DATA_DEFAULTS,
}
_LEGACY = ("torch_accelerator", "torch_num_workers", "torch_inference_batch_size")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Reconstruct the object of a scan NPZ with a trained ptycho-k3 bundle and "
                    "write pictures, reconstruction.npz and (with a ground truth) metrics.json.",
    )
    add_flag(p, "model_path", default=UNSET, metavar="PATH",
             help="training output directory holding wts.h5.zip, or the zip itself")
    add_flag(p, "test_data", default=UNSET, metavar="NPZ", help="scan to reconstruct")
    add_flag(p, "config", default=None, metavar="YAML",
             help="YAML with inference options (model settings come from the bundle)")
    add_flag(p, "output_dir", default=UNSET,
             help="output directory (default inference_outputs)")
    add_flag(p, "n_groups", type=optional_int, default=UNSET,
             help="number of groups to reconstruct (default all)")
    add_flag(p, "n_images", type=optional_int, default=UNSET,
             help="deprecated alias of --n_groups")
    add_flag(p, "n_subsample", type=optional_int, default=UNSET,
             help="subsample this many raw patterns first (default all)")
    add_flag(p, "subsample_seed", type=optional_number, default=UNSET,
             help="seed of the subsample (default --seed)")
    add_flag(p, "batch_size", type=positive_int, default=UNSET,
             help="groups per forward pass (default 32)")
    add_flag(p, "M", type=positive_int, default=UNSET,
             help=f"central crop of each patch kept when stitching (default {DEFAULT_M})")
    add_flag(p, "seed", type=positive_int_or_zero, default=UNSET,
             help="seed of grouping and subsampling (default 45, the original's)")
    add_flag(p, "neighbor_count", type=positive_int, default=UNSET,
             help="K nearest neighbours for grouping at gridsize > 1 (default 4)")
    add_flag(p, "gridsize", type=positive_int, default=UNSET,
             help="must match the bundle's gridsize if given (the bundle decides)")
    add_flag(p, "phase_vmin", type=optional_number, default=UNSET,
             help="lower colour limit of phase images (rad)")
    add_flag(p, "phase_vmax", type=optional_number, default=UNSET,
             help="upper colour limit of phase images (rad)")
    add_bool(p, "comparison_plot",
             help="comparison_plot.png (written anyway when the NPZ has objectGuess)")
    add_bool(p, "debug", help="debug logging (same as --console-level DEBUG)")
    add_flag(p, "debug_dump", nargs="?", const="", default=UNSET, metavar="DIR",
             help="write patch grid / offsets / stats / canvas files (default "
                  "<output_dir>/debug_dump)")
    add_data_flags(p, UNSET)
    add_refine_flags(p, "refine_iterations",
                     "iterations of refinement started from the PINN's object (default 0 = none)")
    add_bool(p, "compare_flat",
             help="with refinement, also solve from a flat start and draw both curves")
    add_bool(p, "halves",
             help="reconstruct two disjoint halves of the scan (alternate positions) into "
                  "half_1/ and half_2/ and write their FRC resolution to frc.json / frc.png")
    add_common(p)
    add_legacy_ignored(p, _LEGACY)
    return p


def positive_int_or_zero(text: str) -> int:
    value = int(number(text))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def resolve_options(args: argparse.Namespace, log: logging.Logger) -> dict[str, Any]:
    """Options after the precedence explicit flag > YAML > default."""
    explicit = explicit_values(args)
    for message in ignored_settings(explicit, "command line"):
        log.warning("%s", message)
    yaml_map = load_yaml(args.config) if args.config else {}
    if "model" in yaml_map:
        log.warning("%s: the model: block is ignored at inference (model settings come from "
                    "the bundle)", args.config)
        yaml_map = {k: v for k, v in yaml_map.items() if k != "model"}
    for layer, where in ((yaml_map, str(args.config)), (explicit, "--n_images")):
        if "n_images" in layer:
            value = layer.pop("n_images")
            if "n_groups" in layer:
                log.warning("%s: n_images is deprecated and ignored (n_groups is set)", where)
            else:
                log.warning("%s: n_images is deprecated; use n_groups", where)
                layer["n_groups"] = value
    unknown = sorted(set(yaml_map) - set(DEFAULTS) - {"gridsize"})
    if unknown:
        log.warning("%s: unknown setting(s) ignored: %s", args.config, ", ".join(unknown))
    options = dict(DEFAULTS)
    options["gridsize"] = None
    for layer in (yaml_map, explicit):
        options.update({k: v for k, v in layer.items() if k in options})
    if args.debug_dump is not UNSET:
        options["debug_dump"] = args.debug_dump
    for key in ("model_path", "test_data"):
        if options[key] in (None, ""):
            raise UsageError(f"--{key} is required")
    options["refine"] = refine_config(options, options["refine_iterations"], options["seed"])
    measured_options(options)  # a bad reading option is a usage error before any work
    inference_config(options)  # so is a bad inference option
    return options


def inference_config(options: dict[str, Any]) -> InferenceConfig:
    """The validated :class:`InferenceConfig` of resolved options; a bad value is a UsageError."""
    names = {f.name for f in dataclasses.fields(InferenceConfig)}
    values = {k: v for k, v in options.items() if k in names}
    try:
        return InferenceConfig(**values)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def load_scan(path: str, n_subsample: int | None, seed: int, log: logging.Logger,
              options: dict[str, Any] | None = None) -> Any:
    """Load the test scan (any format, docs/conventions.md §22), optionally subsampling raw
    patterns (no Keras needed); ``options`` holds the reading flags."""
    from ptycho_k3.data import load_scan as read_scan
    from ptycho_k3.data import subsample_indices

    scan = read_scan(path, measured_options(options or {}))
    if n_subsample is not None and n_subsample < scan.n_positions:
        idx = subsample_indices(scan.n_positions, n_subsample, seed)
        log.info("subsampled %d of %d patterns (seed %d)", len(idx), scan.n_positions, seed)
        scan = scan.select(idx)
    return scan


def check_compatible(scan: Any, params: dict[str, Any], where: str,
                     gridsize: int | None = None) -> None:
    """Raise DataError/UsageError when the scan or options cannot go through the bundle."""
    from ptycho_k3.data import DataError

    n = int(params["model"]["N"])
    if scan.n != n:
        raise DataError(f"{scan.source or 'test data'}: diffraction patterns are "
                        f"{scan.n}x{scan.n} but the bundle {where} was trained for N={n}")
    gs = int(params["model"].get("gridsize", 1))
    if gridsize is not None and gridsize != gs:
        raise UsageError(f"--gridsize {gridsize} does not match the bundle's gridsize {gs}")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from ptycho_k3.bundle import inspect_bundle

    quiet_frameworks()
    log = setup_logging(PROG, args)
    if args.debug is True:
        logging.getLogger("ptycho_k3").handlers[0].setLevel(logging.DEBUG)
    backend = select_backend(args.backend)
    options = resolve_options(args, log)
    # Everything that can be checked without Keras is checked before any output exists.
    info = inspect_bundle(options["model_path"])
    scan = load_scan(options["test_data"], options["n_subsample"],
                     int(options["subsample_seed"] if options["subsample_seed"] is not None
                         else options["seed"]), log, options)
    check_compatible(scan, info.params, str(info.path), options["gridsize"])
    # --halves: fewer than 2 positions is refused before any output.
    parts = scan_parts(scan, bool(options["halves"]))
    if options["refine"].iterations > 0:
        from ptycho_k3.refine import measurements

        measurements(scan)  # a pattern with no valid pixel is refused before any output
    # So is a scan that cannot be grouped at the bundle's gridsize or normalised.
    config = inference_config(options)
    groups = pinn_groups(parts, info.params, config)

    from ptycho_k3.bundle import load_bundle

    t0 = time.perf_counter()
    bundle = load_bundle(info.path)
    seconds = time.perf_counter() - t0
    out_dir = Path(options["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "inference.log")
    log.info("loaded %s (written by %s) under %s in %.1f s", info.path,
             info.manifest.get("backend"), backend, seconds)
    log.debug("options: %s", json.dumps(options, default=str))
    from ptycho_k3.outputs import save_reading

    written = [save_reading(out_dir, scan, measured_options(options).to_dict())]

    def one(where: Path, part: Any) -> list[Path]:
        return reconstruct_and_save(
            where, bundle.models, part, input_scale=bundle.input_scale, config=config,
            log=log, progress=not args.quiet and sys.stderr.isatty(),
            grouped=groups[id(part)])["written"]

    written += run_scan(out_dir, scan, one, log, halves=bool(options["halves"]), parts=parts)
    print_written(written, args.quiet)
    return 0


def print_written(paths: Sequence[Path], quiet: bool) -> None:
    """The one stdout report: where the outputs are."""
    if quiet:
        return
    for path in paths:
        print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

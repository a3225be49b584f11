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
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    add_bool,
    add_common,
    add_flag,
    add_legacy_ignored,
    optional_int,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.cli._data import DEFAULTS as DATA_DEFAULTS
from ptycho_k3.cli._data import add_data_flags, measured_options
from ptycho_k3.cli._fields import add_fields, config_from, described_fields, field_defaults, help_text
from ptycho_k3.cli._refine import DEFAULTS as REFINE_DEFAULTS
from ptycho_k3.cli._refine import add_refine_flags, refine_config
from ptycho_k3.config import InferenceConfig, InferenceJob
from ptycho_k3.config_io import UNSET, explicit_values, ignored_settings, load_yaml
from ptycho_k3.workflows.infer import run_inference

PROG = "ptycho-infer"

#: Inference options and their defaults (a ``--config`` YAML may set any of them).
DEFAULTS: dict[str, Any] = {
    **field_defaults(InferenceJob),
    **field_defaults(InferenceConfig),
    "refine_iterations": 0,
    "debug": False,
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
    add_fields(p, InferenceJob, names=["model_path", "test_data"], default=UNSET)
    add_flag(p, "config", default=None, metavar="YAML",
             help="YAML with inference options (model settings come from the bundle)")
    add_fields(p, InferenceJob, skip=["model_path", "test_data"], default=UNSET)
    add_fields(p, InferenceConfig, skip=["debug_dump"], default=UNSET)
    add_flag(p, "n_images", type=optional_int, default=UNSET,
             help="deprecated alias of --n_groups")
    add_bool(p, "debug", help="debug logging (same as --console-level DEBUG)")
    dump, = described_fields(InferenceConfig, names=["debug_dump"])
    add_flag(p, "debug_dump", nargs="?", const="", default=UNSET, metavar="DIR",
             help=help_text(dump))
    add_data_flags(p, UNSET)
    add_refine_flags(p, "refine_iterations",
                     "iterations of refinement started from the PINN's object (default 0 = none)")
    add_common(p)
    add_legacy_ignored(p, _LEGACY)
    return p


def resolve_options(args: argparse.Namespace, log: logging.Logger) -> dict[str, Any]:
    """Options after the precedence explicit flag > YAML > default, validated."""
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
    unknown = sorted(set(yaml_map) - set(DEFAULTS))
    if unknown:
        log.warning("%s: unknown setting(s) ignored: %s", args.config, ", ".join(unknown))
    options = dict(DEFAULTS)
    for layer in (yaml_map, explicit):
        options.update({k: v for k, v in layer.items() if k in options})
    options["refine"] = refine_config(options, options["refine_iterations"], options["seed"])
    # Every bad value is a usage error before any work.
    for cls in (InferenceJob, InferenceConfig):
        config_from(cls, options)
    measured_options(options)
    return options


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> int:
    quiet_frameworks()
    log = setup_logging(PROG, args)
    if args.debug is True:
        logging.getLogger("ptycho_k3").handlers[0].setLevel(logging.DEBUG)
    backend = select_backend(args.backend)
    options = resolve_options(args, log)
    written = run_inference(config_from(InferenceJob, options),
                            config_from(InferenceConfig, options), measured_options(options),
                            backend=backend, log=log,
                            progress=not args.quiet and sys.stderr.isatty())
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

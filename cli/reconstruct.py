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
from collections.abc import Sequence
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    add_common,
    add_flag,
    quiet_frameworks,
    run_main,
    select_backend,
    setup_logging,
)
from ptycho_k3.cli._data import DEFAULTS as DATA_DEFAULTS
from ptycho_k3.cli._data import add_data_flags, measured_options
from ptycho_k3.cli._fields import add_fields, config_from, field_defaults
from ptycho_k3.cli._refine import DEFAULTS as REFINE_DEFAULTS
from ptycho_k3.cli._refine import add_refine_flags, refine_config
from ptycho_k3.cli.infer import print_written
from ptycho_k3.config import InferenceConfig, ReconstructionJob
from ptycho_k3.config_io import UNSET, explicit_values, load_yaml
from ptycho_k3.workflows.reconstruct import run_reconstruction

PROG = "ptycho-reconstruct"
#: The InferenceConfig options of this command (the PINN start's grouping and stitching, the
#: pictures, the flat comparison); n_groups is always "one per position" here.
_INFERENCE = ("batch_size", "M", "seed", "neighbor_count", "phase_vmin", "phase_vmax",
              "compare_flat", "precision", "distribute")
ITERATIONS = 50

DEFAULTS: dict[str, Any] = {
    **field_defaults(ReconstructionJob),
    **{k: v for k, v in field_defaults(InferenceConfig).items() if k in _INFERENCE},
    "iterations": ITERATIONS,
    **REFINE_DEFAULTS,
    **DATA_DEFAULTS,
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Reconstruct a scan iteratively on ptycho-k3's forward "
               "model, from a flat start or from a trained PINN's reconstruction.")
    add_fields(p, ReconstructionJob, names=["test_data"], default=UNSET)
    add_flag(p, "config", default=None, metavar="YAML", help="YAML with any of these options")
    add_fields(p, ReconstructionJob, skip=["test_data"], default=UNSET)
    add_fields(p, InferenceConfig, names=_INFERENCE, default=UNSET, help_overrides={
        "batch_size": "groups per PINN forward pass (--init pinn; default 32)",
        "M": "central crop of PINN patches when stitching, and the scored region's margin "
             "(default 20)",
        "seed": "seed of subsampling, grouping and the refinement's batch order (default 45)",
        "compare_flat": "with --init pinn, also solve from a flat start and draw both curves",
        "distribute": "data_parallel: shard the PINN start's batches over every device of every "
                      "process (--init pinn; jax only; default none)"})
    add_data_flags(p, UNSET)
    add_refine_flags(p, "iterations", f"iterations of the solver (default {ITERATIONS})")
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
    options["refine"] = refine_config(options, options["iterations"], options["seed"])
    for cls in (ReconstructionJob, InferenceConfig):  # every bad value is a usage error here
        config_from(cls, options)
    measured_options(options)
    return options


def run(args: argparse.Namespace) -> int:
    quiet_frameworks()
    log = setup_logging(PROG, args)
    backend = select_backend(args.backend)
    options = resolve_options(args, log)
    written = run_reconstruction(config_from(ReconstructionJob, options),
                                 config_from(InferenceConfig, options), measured_options(options),
                                 backend=backend, log=log,
                                 progress=not args.quiet and sys.stderr.isatty())
    print_written(written, args.quiet)
    return 0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

"""``ptycho-evaluate``: score a ``reconstruction.npz`` against a ground-truth NPZ -> metrics.json,
or against a second reconstruction (Fourier ring correlation) -> frc.json + frc.png.

Examples::

    ptycho-evaluate --reconstruction recon/reconstruction.npz --ground_truth test.npz \\
        --output recon/metrics.json
    ptycho-evaluate --reconstruction recon/half_1/reconstruction.npz \\
        --reference recon/half_2/reconstruction.npz --pixel_size 1e-8

The ground truth is ``objectGuess`` of a scan NPZ (or ``object`` / ``objectGuess`` of any NPZ),
in scan coordinates; the reconstruction's ``x0``/``y0`` place it (docs/conventions.md §17-§18).
Phase metrics are reported as not applicable when the ground-truth phase is uniform.

With ``--reference`` (measured data, no ground truth) the two reconstructions are compared by
FRC on the region both scanned (:mod:`ptycho_k3.resolution`): 0.5, 1/7 and half-bit crossings,
resolution as a full period in pixels and, when the object pixel size is known (``--pixel_size``,
else a ``pixel_size_m`` key of the reconstruction), in nanometres. Needs no Keras.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_k3.cli._common import (
    Parser,
    UsageError,
    add_bool,
    add_flag,
    positive_number,
    run_main,
    setup_logging,
)
from ptycho_k3.cli._fields import add_fields, config_from
from ptycho_k3.config import EvaluationConfig
from ptycho_k3.workflows.evaluate import frc_files, frc_summary, load_ground_truth, load_reconstruction

PROG = "ptycho-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Score a reconstruction against the ground-truth object "
                                      "(MAE, MSE, PSNR, SSIM, MS-SSIM, FRC) into metrics.json, "
                                      "or against a second reconstruction (--reference: FRC "
                                      "resolution) into frc.json and frc.png.")
    add_flag(p, "reconstruction", required=True, metavar="NPZ",
             help="reconstruction.npz written by ptycho-infer / ptycho-train --do_stitching")
    add_flag(p, "ground_truth", default=None, metavar="NPZ",
             help="NPZ with objectGuess (e.g. the test scan) in scan coordinates")
    add_flag(p, "reference", default=None, metavar="NPZ",
             help="a second reconstruction.npz of the same scan frame (e.g. the other half of "
                  "--halves): FRC resolution instead of ground-truth metrics")
    add_flag(p, "output", default=None, metavar="JSON",
             help="metrics file (default: metrics.json, or frc.json with --reference, next to "
                  "the reconstruction); the FRC picture goes beside it as .png")
    add_flag(p, "pixel_size", type=positive_number, default=None, metavar="METRES",
             help="object pixel size for --reference (default: the reconstruction's "
                  "pixel_size_m when it has one)")
    add_bool(p, "remove_ramp", default=True,
             help="with --reference, remove the linear phase ramp difference first (default "
                  "true)")
    add_fields(p, EvaluationConfig, names=["M", "max_shift", "trim", "ms_ssim_sigma"])
    p.add_argument("--no-register", dest="register", action="store_false",
                   help="score without sub-pixel registration")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stdout")
    p.add_argument("--verbose", "-v", action="store_true", help="traceback on errors")
    p.set_defaults(console_level=None)
    return p


def _run_reference(args: argparse.Namespace, log: Any) -> int:
    target = Path(args.output) if args.output else \
        Path(args.reconstruction).with_name("frc.json")
    report, written = frc_files(args.reconstruction, args.reference, target,
                                pixel_size_m=args.pixel_size,
                                remove_ramp=args.remove_ramp is not False)
    log.debug("wrote %s", ", ".join(map(str, written)))
    if not args.quiet:
        print(f"{frc_summary(report)}; wrote {written[0]} and {written[1].name}")
    return 0


def run(args: argparse.Namespace) -> int:
    log = setup_logging(PROG, args)
    if args.reference is not None:
        return _run_reference(args, log)
    rec = load_reconstruction(args.reconstruction)
    gt = load_ground_truth(args.ground_truth)
    from ptycho_k3 import outputs
    from ptycho_k3.data import DataError
    from ptycho_k3.metrics import evaluate

    x0, y0 = rec["x0"], rec["y0"]
    if x0 != int(x0) or y0 != int(y0):
        raise DataError(f"{args.reconstruction}: x0/y0 must be whole pixels, got {x0}, {y0}")
    config = config_from(EvaluationConfig, {**vars(args), "M": args.M or rec["M"],
                                            "register_images": args.register})
    try:
        metrics = evaluate(rec["object"], gt, config=config, x0=int(x0), y0=int(y0),
                           positions=rec["positions"])
    except ValueError as exc:
        raise DataError(f"cannot score {args.reconstruction} against {args.ground_truth}: "
                        f"{exc}") from None
    metrics["inputs"] = {"reconstruction": str(args.reconstruction),
                         "ground_truth": str(args.ground_truth)}
    target = Path(args.output) if args.output else \
        Path(args.reconstruction).with_name("metrics.json")
    outputs.save_json(target, metrics)
    log.debug("wrote %s", target)
    if not args.quiet:
        summary = {part: {k: metrics[part].get(k) for k in ("applicable", "mae", "psnr", "ssim")}
                   for part in ("amplitude", "phase")}
        print(json.dumps(summary))
        print(f"wrote {target}")
    return 0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if (args.ground_truth is None) == (args.reference is None):
        raise UsageError("give exactly one of --ground_truth NPZ (metrics against a known object) "
                         "or --reference NPZ (FRC against a second reconstruction)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

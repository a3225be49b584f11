"""``ptycho-evaluate``: score a ``reconstruction.npz`` against a ground-truth NPZ -> metrics.json.

Example::

    ptycho-evaluate --reconstruction recon/reconstruction.npz --ground_truth test.npz \\
        --output recon/metrics.json

The ground truth is ``objectGuess`` of a scan NPZ (or ``object`` / ``objectGuess`` of any NPZ),
in scan coordinates; the reconstruction's ``x0``/``y0`` place it (docs/conventions.md §17-§18).
Phase metrics are reported as not applicable when the ground-truth phase is uniform. Needs no
Keras.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.cli._common import (
    Parser,
    add_flag,
    number,
    positive_int,
    run_main,
    setup_logging,
)

PROG = "ptycho-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Score a reconstruction against the ground-truth object "
                                      "(MAE, MSE, PSNR, SSIM, MS-SSIM, FRC) into metrics.json.")
    add_flag(p, "reconstruction", required=True, metavar="NPZ",
             help="reconstruction.npz written by ptycho-infer / ptycho-train --do_stitching")
    add_flag(p, "ground_truth", required=True, metavar="NPZ",
             help="NPZ with objectGuess (e.g. the test scan) in scan coordinates")
    add_flag(p, "output", default=None, metavar="JSON",
             help="metrics file (default: metrics.json next to the reconstruction)")
    add_flag(p, "M", type=positive_int, default=None,
             help="stitching crop for the scored window (default: the reconstruction's)")
    add_flag(p, "max_shift", type=positive_int, default=3, help="registration bound (px)")
    add_flag(p, "trim", type=int, default=2, help="pixels trimmed from each side before scoring")
    add_flag(p, "ms_ssim_sigma", type=number, default=1.0,
             help="amplitude blur of the legacy MS-SSIM")
    p.add_argument("--no-register", dest="register", action="store_false",
                   help="score without sub-pixel registration")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stdout")
    p.add_argument("--verbose", "-v", action="store_true", help="traceback on errors")
    p.set_defaults(console_level=None)
    return p


def _read_npz(path: str, what: str) -> dict[str, np.ndarray]:
    from ptycho_k3.data import DataError

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{what} {path} is not a readable NPZ ({exc})") from None


def load_reconstruction(path: str) -> dict[str, Any]:
    """``object`` complex (H, W), ``x0``, ``y0``, positions (n, 2) or None, ``M`` or None."""
    from ptycho_k3.data import DataError

    z = _read_npz(path, "reconstruction")
    if "object" not in z:
        raise DataError(f"{path}: no 'object' array (expected a ptycho-k3 reconstruction.npz)")
    obj = np.asarray(z["object"])
    if obj.ndim != 2 or not np.all(np.isfinite(obj)):
        raise DataError(f"{path}: 'object' must be a finite 2-D array, got shape {obj.shape}")
    positions = None
    if "xcoords" in z and "ycoords" in z:
        positions = np.stack([np.ravel(z["xcoords"]), np.ravel(z["ycoords"])], axis=1)
    return {
        "object": obj.astype(np.complex64),
        "x0": float(z["x0"]) if "x0" in z else 0.0,
        "y0": float(z["y0"]) if "y0" in z else 0.0,
        "positions": positions,
        "M": int(z["M"]) if "M" in z else None,
    }


def load_ground_truth(path: str) -> np.ndarray:
    """The complex ground-truth object of an NPZ (``objectGuess`` or ``object``)."""
    from ptycho_k3.data import DataError

    z = _read_npz(path, "ground truth")
    for key in ("objectGuess", "object"):
        if key in z:
            gt = np.asarray(z[key])
            if gt.ndim != 2 or not np.all(np.isfinite(gt)):
                raise DataError(f"{path}: {key!r} must be a finite 2-D array")
            return gt.astype(np.complex64)
    raise DataError(f"{path}: no ground truth ('objectGuess' or 'object')")


def run(args: argparse.Namespace) -> int:
    log = setup_logging(PROG, args)
    rec = load_reconstruction(args.reconstruction)
    gt = load_ground_truth(args.ground_truth)
    from ptycho_k3 import outputs
    from ptycho_k3.data import DataError
    from ptycho_k3.metrics import evaluate

    x0, y0 = rec["x0"], rec["y0"]
    if x0 != int(x0) or y0 != int(y0):
        raise DataError(f"{args.reconstruction}: x0/y0 must be whole pixels, got {x0}, {y0}")
    try:
        metrics = evaluate(rec["object"], gt, x0=int(x0), y0=int(y0), positions=rec["positions"],
                           M=args.M or rec["M"], register_images=args.register,
                           max_shift=args.max_shift, trim=args.trim,
                           ms_ssim_sigma=args.ms_ssim_sigma)
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
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    return run_main(PROG, run, parse, argv)


if __name__ == "__main__":
    sys.exit(main())

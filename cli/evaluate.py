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
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.cli._common import (
    Parser,
    UsageError,
    add_bool,
    add_flag,
    number,
    positive_int,
    positive_number,
    run_main,
    setup_logging,
)
from ptycho_k3.config import EvaluationConfig

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
    add_flag(p, "M", type=positive_int, default=None,
             help="stitching crop for the scored window (default: the reconstruction's)")
    add_flag(p, "max_shift", type=positive_int, default=EvaluationConfig.max_shift,
             help=f"registration bound (px; default {EvaluationConfig.max_shift})")
    add_flag(p, "trim", type=int, default=EvaluationConfig.trim,
             help=f"pixels trimmed from each side before scoring (default {EvaluationConfig.trim})")
    add_flag(p, "ms_ssim_sigma", type=number, default=EvaluationConfig.ms_ssim_sigma,
             help=f"amplitude blur of the legacy MS-SSIM (default {EvaluationConfig.ms_ssim_sigma})")
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


def _scalar(z: dict[str, np.ndarray], key: str, path: str, default: float | None) \
        -> float | None:
    """A finite real scalar ``z[key]`` (``default`` when absent); DataError naming the key."""
    from ptycho_k3.data import DataError

    if key not in z:
        return default
    value = np.asarray(z[key])
    if value.size != 1 or not np.issubdtype(value.dtype, np.number) or \
            np.iscomplexobj(value) or not np.isfinite(value).all():
        raise DataError(f"{path}: {key!r} must be a finite real scalar")
    return float(value.reshape(()))


def load_reconstruction(path: str) -> dict[str, Any]:
    """``object`` complex (H, W), ``x0``, ``y0``, positions (n, 2) or None, ``M`` or None,
    ``pixel_size_m`` (metres) or None."""
    from ptycho_k3.data import DataError

    z = _read_npz(path, "reconstruction")
    if "object" not in z:
        raise DataError(f"{path}: no 'object' array (expected a ptycho-k3 reconstruction.npz)")
    obj = np.asarray(z["object"])
    if obj.ndim != 2 or not np.issubdtype(obj.dtype, np.number) or not np.all(np.isfinite(obj)):
        raise DataError(f"{path}: 'object' must be a finite 2-D array, got shape {obj.shape}")
    positions = None
    if "xcoords" in z and "ycoords" in z:
        xs, ys = np.ravel(z["xcoords"]), np.ravel(z["ycoords"])
        if xs.size != ys.size or xs.size == 0 or not (np.isfinite(xs).all()
                                                       and np.isfinite(ys).all()):
            raise DataError(f"{path}: 'xcoords' and 'ycoords' must be finite, non-empty and of "
                            f"equal length (got {xs.size} and {ys.size})")
        positions = np.stack([xs, ys], axis=1).astype(np.float64)
    pixel = _scalar(z, "pixel_size_m", path, None)
    if pixel is not None and not pixel > 0:
        raise DataError(f"{path}: 'pixel_size_m' must be > 0 (metres), got {pixel:g}")
    m = _scalar(z, "M", path, None)
    missing = [key for key in ("x0", "y0") if key not in z]
    if missing:  # without its origin the object cannot be placed in scan coordinates
        raise DataError(f"{path}: no {' or '.join(repr(k) for k in missing)} (the object's "
                        "origin in scan coordinates; expected a ptycho-k3 reconstruction.npz)")
    return {
        "object": obj.astype(np.complex64),
        "x0": _scalar(z, "x0", path, None),
        "y0": _scalar(z, "y0", path, None),
        "positions": positions,
        "M": None if m is None else int(m),
        "pixel_size_m": pixel,
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


def frc_files(path_a: str | Path, path_b: str | Path, target: str | Path, *,
              pixel_size_m: float | None = None, remove_ramp: bool = True,
              extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Path]]:
    """FRC of two reconstruction NPZ files -> ``target`` (JSON) and the same name with ``.png``.

    Both files are read and compared before anything is written (a bad file or an impossible
    comparison raises DataError naming the file and key). The pixel size is ``pixel_size_m``,
    else the ``pixel_size_m`` of A, else of B, else unknown (no nanometres).

    Returns:
        ``(report, [json path, png path])``; the report is what the JSON holds
        (:func:`ptycho_k3.resolution.resolution_report` plus ``inputs`` and ``extra``).
    """
    from ptycho_k3 import outputs
    from ptycho_k3.data import DataError
    from ptycho_k3.resolution import frc_between, resolution_report

    rec_a, rec_b = load_reconstruction(str(path_a)), load_reconstruction(str(path_b))
    source = "flag"
    if pixel_size_m is None:
        source = "reconstruction" if rec_a["pixel_size_m"] is not None else \
            "reference" if rec_b["pixel_size_m"] is not None else None
        pixel_size_m = rec_a["pixel_size_m"] if rec_a["pixel_size_m"] is not None else \
            rec_b["pixel_size_m"]
    try:
        result = frc_between(rec_a["object"], rec_b["object"],
                             origin_a=(rec_a["x0"], rec_a["y0"]),
                             origin_b=(rec_b["x0"], rec_b["y0"]),
                             centres_a=rec_a["positions"], centres_b=rec_b["positions"],
                             remove_ramp=remove_ramp)
    except ValueError as exc:
        raise DataError(f"cannot compare {path_a} with {path_b}: {exc}") from None
    report = resolution_report(result, pixel_size_m)
    report["pixel_size_source"] = source
    report["inputs"] = {"reconstruction": str(path_a), "reference": str(path_b)}
    report.update(extra or {})
    target = Path(target)
    written = [outputs.save_json(target, report),
               outputs.save_frc_plot(target.with_suffix(".png"), report)]
    return report, written


def frc_summary(report: dict[str, Any]) -> str:
    """One line: the resolution per criterion (px, and nm when known)."""
    parts = []
    for name, label in (("half_bit", "half-bit"), ("frc1over7", "1/7"), ("frc50", "0.5")):
        t = report["thresholds"][name]
        if not t["reached"]:
            parts.append(f"{label} not reached")
            continue
        nm = f" ({t['resolution_nm']:.3g} nm)" if t.get("resolution_nm") is not None else ""
        parts.append(f"{label} {t['resolution_px']:.3g} px{nm}")
    return f"FRC resolution (full period, {report['side']} px square): " + ", ".join(parts)


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
    config = EvaluationConfig(M=args.M or rec["M"], register_images=args.register,
                              max_shift=args.max_shift, trim=args.trim,
                              ms_ssim_sigma=args.ms_ssim_sigma)
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

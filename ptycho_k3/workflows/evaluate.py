"""Reading reconstructions and ground truths for scoring, and the FRC between two reconstruction
files (``ptycho-evaluate``, ``--halves``). No Keras."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np


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

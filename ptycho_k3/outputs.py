"""Files the commands write: pictures, ``reconstruction.npz``, JSON, the loss curve.

Every writer is atomic: it writes a temporary file in the target directory and renames it over
the final name, so an interrupted run never leaves a half-written file under the final name.
Pictures use Matplotlib's object API with the Agg canvas (no pyplot global state, no display).
Nothing here imports Keras.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.atomic import atomic_write, json_default


def _finite_or_none(obj: Any) -> Any:
    """Replace NaN/inf floats by None, recursively (strict JSON has no NaN)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    return obj


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (NaN/inf become null)."""
    text = json.dumps(_finite_or_none(obj), indent=2, allow_nan=False, default=json_default)
    return atomic_write(path, lambda fh: fh.write(text + "\n"), "w")


def save_reading(out_dir: str | os.PathLike, scan: Any, options: dict[str, Any]) -> Path:
    """``data_reading.json``: how the scan file was read (docs/conventions.md §22)."""
    return save_json(Path(out_dir) / "data_reading.json",
                     {"file": scan.source, "options": options, "reading": scan.reading})


def _save_figure(path: str | os.PathLike, fig: Any, dpi: int = 100) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def save_image_png(path: str | os.PathLike, image: np.ndarray, *, title: str, cmap: str,
                   vmin: float | None = None, vmax: float | None = None) -> Path:
    """One real ``(H, W)`` image, 8x8 in with a colour bar (the original's picture layout)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8))
    ax = fig.add_subplot()
    im = ax.imshow(np.asarray(image, np.float32), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save_figure(path, fig)


def save_reconstruction_pngs(out_dir: str | os.PathLike, obj: np.ndarray, *,
                             phase_vmin: float | None = None,
                             phase_vmax: float | None = None) -> list[Path]:
    """``reconstructed_amplitude.png`` (gray) and ``reconstructed_phase.png`` (viridis).

    Args:
        obj: complex ``(H, W)`` stitched object.
        phase_vmin, phase_vmax: colour limits of the phase image in radians (None = auto).
    """
    out = Path(out_dir)
    return [
        save_image_png(out / "reconstructed_amplitude.png", np.abs(obj),
                       title="Reconstructed amplitude", cmap="gray"),
        save_image_png(out / "reconstructed_phase.png", np.angle(obj),
                       title="Reconstructed phase (rad)", cmap="viridis",
                       vmin=phase_vmin, vmax=phase_vmax),
    ]


def save_reconstruction_npz(path: str | os.PathLike, obj: np.ndarray, x0: float, y0: float,
                            xcoords: np.ndarray, ycoords: np.ndarray, M: int,
                            extra: dict[str, np.ndarray] | None = None) -> Path:
    """``reconstruction.npz``: the stitched object and where it sits.

    Keys: ``object`` complex64 ``(H, W)``; ``x0``, ``y0`` float64 scalars, scan coordinates of
    pixel ``[0, 0]`` (pixel ``[r, c]`` is scan position ``(x0 + c, y0 + r)``); ``amplitude``,
    ``phase`` float32 ``(H, W)``; ``xcoords``, ``ycoords`` float64 ``(B,)`` centres of the
    reconstructed groups (object pixels); ``M`` the central crop side used for stitching (and
    for the scored region); plus ``extra`` arrays (a refinement adds ``probe`` complex64
    ``(N, N)`` and, when it corrected them, ``positions`` / ``initial_positions`` float64
    ``(M, 2)`` ``[x, y]``). No object arrays, so ``np.load(..., allow_pickle=False)`` reads it.
    """
    obj = np.asarray(obj, np.complex64)
    arrays = {
        "object": obj,
        "x0": np.float64(x0),
        "y0": np.float64(y0),
        "amplitude": np.abs(obj).astype(np.float32),
        "phase": np.angle(obj).astype(np.float32),
        "xcoords": np.asarray(xcoords, np.float64),
        "ycoords": np.asarray(ycoords, np.float64),
        "M": np.int64(M),
    }
    arrays.update(extra or {})
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def save_history(out_dir: str | os.PathLike, history: dict[str, Sequence[float]],
                 extra: dict[str, Any] | None = None) -> list[Path]:
    """``history.json`` (per-epoch lists, plus ``extra``) and ``loss_curve.png``."""
    out = Path(out_dir)
    data = {"epochs": len(history.get("loss", [])), **(extra or {}),
            "history": {k: [float(v) for v in vals] for k, vals in history.items()}}
    paths = [save_json(out / "history.json", data)]
    paths.append(save_loss_curve(out / "loss_curve.png", history))
    return paths


def save_loss_curve(path: str | os.PathLike, history: dict[str, Sequence[float]]) -> Path:
    """Training and validation loss per epoch (log scale when every value is positive)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    plotted: list[float] = []
    for key, style in (("loss", "-o"), ("val_loss", "--s")):
        values = [float(v) for v in history.get(key, [])]
        if values:
            ax.plot(range(1, len(values) + 1), values, style, label=key, markersize=3)
            plotted += values
    finite = [v for v in plotted if math.isfinite(v)]
    if finite and min(finite) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    if plotted:
        ax.legend()
    ax.grid(True, alpha=0.3)
    return _save_figure(path, fig)


def ground_truth_window(gt: np.ndarray, shape: tuple[int, int], x0: float, y0: float) \
        -> np.ndarray:
    """The part of ``gt`` under a reconstruction of ``shape`` placed at ``(x0, y0)``.

    Pixels outside ``gt`` are NaN (complex), so the window always has ``shape``.
    """
    h, w = shape
    out = np.full((h, w), np.nan + 1j * np.nan, np.complex64)
    r0, c0 = int(round(y0)), int(round(x0))
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + h, gt.shape[0]), min(c0 + w, gt.shape[1])
    if re > rs and ce > cs:
        out[rs - r0:re - r0, cs - c0:ce - c0] = gt[rs:re, cs:ce]
    return out


def save_comparison_plot(path: str | os.PathLike, obj: np.ndarray, gt: np.ndarray,
                         x0: float, y0: float, *, phase_vmin: float | None = None,
                         phase_vmax: float | None = None) -> Path:
    """2x2 picture: reconstructed phase, reference phase, reconstructed and reference amplitude.

    The reference is the ground truth under the reconstruction (same pixels, same frame); a
    uniform reference phase is drawn as it is (no crop, no crash).
    """
    return save_comparison_columns(path, [("PINN", obj, x0, y0)], gt, phase_vmin=phase_vmin,
                                   phase_vmax=phase_vmax)


def save_comparison_columns(path: str | os.PathLike,
                            columns: Sequence[tuple[str, np.ndarray, float, float]],
                            gt: np.ndarray, *, phase_vmin: float | None = None,
                            phase_vmax: float | None = None) -> Path:
    """Phase (top row) and amplitude (bottom row) of reconstructions beside the ground truth.

    Args:
        columns: ``(label, obj, x0, y0)`` per reconstruction. Every column is drawn in the frame
            of the first (its shape and origin), so all panels show the same pixels.
        gt: complex ground truth in scan coordinates (origin 0).
    """
    from matplotlib.figure import Figure

    label0, obj0, fx0, fy0 = columns[0]
    shape = np.asarray(obj0).shape
    panels = [(label, ground_truth_window(np.asarray(obj), shape, fx0 - x0, fy0 - y0))
              for label, obj, x0, y0 in columns]
    panels.append(("Reference", ground_truth_window(np.asarray(gt), shape, fx0, fy0)))
    k = len(panels)
    fig = Figure(figsize=(5 * k, 10), layout="constrained")
    axes = np.asarray(fig.subplots(2, k)).reshape(2, k)
    for j, (label, img) in enumerate(panels):
        for i, (values, what, cmap, lo, hi) in enumerate((
                (np.angle(img), "phase (rad)", "viridis", phase_vmin, phase_vmax),
                (np.abs(img), "amplitude", "gray", None, None))):
            im = axes[i, j].imshow(values, cmap=cmap, vmin=lo, vmax=hi)
            axes[i, j].set_title(f"{label} {what}")
            fig.colorbar(im, ax=axes[i, j], fraction=0.046, pad=0.04)
    return _save_figure(path, fig, dpi=150)


def save_debug_dump(out_dir: str | os.PathLike, patches: np.ndarray | None, centres: np.ndarray,
                    obj: np.ndarray, x0: float, y0: float, M: int) -> list[Path]:
    """The original's ``--debug_dump`` files: patch grid, offsets, stats, canvas geometry."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    paths = []
    if patches is not None and len(patches):
        k = min(16, len(patches))
        side = int(math.ceil(math.sqrt(k)))
        fig = Figure(figsize=(2 * side, 2 * side))
        axes = np.atleast_1d(fig.subplots(side, side)).ravel()
        for i, ax in enumerate(axes):
            ax.axis("off")
            if i < k:
                ax.imshow(np.abs(patches[i]), cmap="gray")
                ax.set_title(str(i), fontsize=8)
        paths.append(_save_figure(out / "pred_patches_amp_grid.png", fig))
    paths.append(save_json(out / "offsets.json", {
        "centres_xy": np.asarray(centres, np.float64).tolist(),
        "min_xy": np.asarray(centres).min(axis=0).tolist(),
        "max_xy": np.asarray(centres).max(axis=0).tolist(),
    }))
    amp = np.abs(obj)
    paths.append(save_json(out / "stats.json", {
        "amplitude": {"min": float(amp.min()), "max": float(amp.max()),
                      "mean": float(amp.mean())},
        "phase": {"min": float(np.angle(obj).min()), "max": float(np.angle(obj).max())},
        "n_patches": int(len(centres)),
    }))
    paths.append(save_json(out / "canvas.json", {
        "shape": list(obj.shape), "x0": float(x0), "y0": float(y0), "M": int(M)}))
    return paths


def save_frc_plot(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    """The FRC curve with the 0.5, 1/7 and half-bit thresholds and their crossings.

    Args:
        report: :func:`ptycho_k3.resolution.resolution_report` (``curve``, ``half_bit``,
            ``frequency_per_px`` and, when the pixel size is known, ``frequency_per_nm``;
            ``thresholds``). The x axis is in cycles per nm when known, else per pixel.
    """
    from matplotlib.figure import Figure

    in_nm = report.get("frequency_per_nm") is not None
    freq = np.asarray(report["frequency_per_nm" if in_nm else "frequency_per_px"], np.float64)
    curve = np.asarray([np.nan if v is None else v for v in report["curve"]], np.float64)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ax.plot(freq, curve, "-", color="C0", label="FRC")
    ax.plot(freq, report["half_bit"], "--", color="C3", label="half-bit")
    ax.axhline(0.5, color="C2", ls=":", label="0.5")
    ax.axhline(1.0 / 7.0, color="C1", ls="-.", label="1/7")
    unit = "nm" if in_nm else "px"
    titles = []
    for name, label, colour in (("half_bit", "half-bit", "C3"), ("frc1over7", "1/7", "C1"),
                                ("frc50", "0.5", "C2")):
        t = report["thresholds"][name]
        if t["reached"]:
            ax.axvline(t[f"frequency_per_{unit}"], color=colour, lw=0.8, alpha=0.6)
            titles.append(f"{label} {t[f'resolution_{unit}']:.3g} {unit}")
        else:
            titles.append(f"{label} not reached")
    ax.set_xlabel(f"spatial frequency (1/{unit})")
    ax.set_ylabel("Fourier ring correlation")
    ax.set_ylim(min(-0.05, float(np.nanmin(curve, initial=0.0))), 1.05)
    ax.set_xlim(0, float(freq[-1]) if freq.size > 1 else 1.0)
    ax.set_title("Resolution (full period): " + ", ".join(titles), fontsize=10)
    ax.legend(loc="upper right")
    ax.grid(True, alpha=0.3)
    return _save_figure(path, fig)


def pixel_size_extra(metadata: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """``{"pixel_size_m": float64 scalar}`` for ``reconstruction.npz`` when the scan's metadata
    knows its object pixel size (``object_pixel_m``, metres, finite and > 0); else ``{}``."""
    try:
        value = float((metadata or {}).get("object_pixel_m"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return {}
    return {"pixel_size_m": np.float64(value)} if 0 < value < math.inf else {}

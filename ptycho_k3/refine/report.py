"""Pictures and files of a refinement: convergence, probe, position corrections, history.

NumPy and Matplotlib only (no Keras); every file is written atomically through
:mod:`ptycho_k3.outputs`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.outputs import _save_figure, save_json


def save_convergence_plot(path: str | os.PathLike, runs: Mapping[str, Mapping[str, list]]) -> Path:
    """Loss per iteration (log scale) and, where recorded, amplitude / phase SSIM per iteration.

    ``runs`` maps a label (``"PINN start"``, ``"flat start"``) to a refinement history.
    """
    from matplotlib.figure import Figure

    with_ssim = any("amplitude_ssim" in h for h in runs.values())
    fig = Figure(figsize=(12 if with_ssim else 6.5, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if with_ssim else 1)
    ax_loss = axes[0] if with_ssim else axes
    for label, h in runs.items():
        loss = np.asarray(h["loss"], float)
        ax_loss.plot(h["iteration"], np.where(loss > 0, loss, np.nan), "-o", markersize=2,
                     label=label)
        if with_ssim and "amplitude_ssim" in h:
            line, = axes[1].plot(h["iteration"], h["amplitude_ssim"], "-", label=f"{label} amp")
            axes[1].plot(h["iteration"], h["phase_ssim"], "--", color=line.get_color(),
                         label=f"{label} phase")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss per valid pixel")
    ax_loss.set_title("Refinement loss")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend()
    if with_ssim:
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("SSIM against the ground truth")
        axes[1].set_ylim(0, 1.02)
        axes[1].set_title("Quality")
        axes[1].grid(True, alpha=0.3)
        axes[1].legend()
    return _save_figure(path, fig)


def save_probe_png(path: str | os.PathLike, probe: np.ndarray, title: str = "Probe") -> Path:
    """Amplitude and phase of a complex ``(N, N)`` probe side by side."""
    from matplotlib.figure import Figure

    p = np.asarray(probe)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, what, cmap in ((axes[0], np.abs(p), "amplitude", "gray"),
                                   (axes[1], np.angle(p), "phase (rad)", "twilight")):
        im = ax.imshow(values, cmap=cmap)
        ax.set_title(f"{title} {what}")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save_figure(path, fig)


def save_position_arrows(path: str | os.PathLike, initial: np.ndarray,
                         corrected: np.ndarray) -> Path:
    """Scan positions with an arrow to each corrected position (arrows drawn 10x longer)."""
    from matplotlib.figure import Figure

    a, b = np.asarray(initial, float), np.asarray(corrected, float)
    d = b - a
    fig = Figure(figsize=(7, 7), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(a[:, 0], a[:, 1], ".", markersize=2, color="0.6")
    ax.quiver(a[:, 0], a[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=0.1,
              color="C3", width=0.002)
    rms = float(np.sqrt(np.mean(np.sum(d * d, axis=1)))) if len(d) else 0.0
    ax.set_title(f"Position corrections x10 (rms {rms:.3f} px, max "
                 f"{float(np.max(np.hypot(d[:, 0], d[:, 1]))) if len(d) else 0:.3f} px)")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.invert_yaxis()
    ax.set_aspect("equal")
    return _save_figure(path, fig)


def save_refinement_history(path: str | os.PathLike, runs: Mapping[str, Mapping[str, list]],
                            extra: Mapping[str, Any] | None = None) -> Path:
    """``refinement_history.json``: per run (label) the per-iteration lists, plus ``extra``."""
    return save_json(path, {**(extra or {}), "runs": {k: dict(v) for k, v in runs.items()}})


def lit_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of the True pixels of ``mask`` (the whole array when there are none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

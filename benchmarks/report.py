"""Turn records into ``latest.md`` (measures x backends) and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # counts (iterations) stay whole
    v = float(value)
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _size_key(measure: str) -> tuple[str, int]:
    m = re.search(r"@(\d+)$", measure)  # "scaling time @1000" -> ("scaling time ", 1000)
    return (measure[: m.start()], int(m.group(1))) if m else (measure, 0)


def markdown(records: Sequence[dict[str, Any]], backends: Sequence[str], header: str) -> str:
    """A markdown table: one row per measure (in first-seen order), one column per backend."""
    rows: dict[str, dict[str, Any]] = {}
    units: dict[str, str] = {}
    for r in records:
        rows.setdefault(r["measure"], {})[r["backend"]] = r["value"]
        units[r["measure"]] = r["unit"]
    lines = [header, "", "| measure | unit | " + " | ".join(backends) + " |",
             "|---|---|" + "---:|" * len(backends)]
    for measure, values in rows.items():
        cells = [_fmt(values.get(b)) if b in values else "" for b in backends]
        lines.append(f"| {measure} | {units[measure]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _values(records, measure: str, backends: Sequence[str]) -> list[float]:
    found = {r["backend"]: r["value"] for r in records if r["measure"] == measure}
    return [float(found.get(b) or 0.0) for b in backends]


def plot_throughput(records, backends: Sequence[str], path: Path) -> None:
    """Grouped bar chart: training groups/s and inference patterns/s per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [
        ("training (groups/s)", [m for m in dict.fromkeys(r["measure"] for r in records)
                                 if m.startswith("train ") and m.endswith("groups/s")]),
        ("inference (patterns/s)", [m for m in dict.fromkeys(r["measure"] for r in records)
                                    if m.startswith("infer ") and m.endswith("patterns/s")
                                    and not m.endswith(" stitch patterns/s")]),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (title, measures) in zip(axes, panels, strict=True):
        x = np.arange(len(measures))
        width = 0.8 / max(len(backends), 1)
        for i, b in enumerate(backends):
            heights = [_values(records, m, [b])[0] for m in measures]
            ax.bar(x + (i - (len(backends) - 1) / 2) * width, heights, width, label=b)
        ax.set_xticks(x)
        ax.set_xticklabels([m.replace(" groups/s", "").replace(" patterns/s", "").replace(" ", "\n", 2)
                            for m in measures], fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(records, backends: Sequence[str], path: Path) -> None:
    """Inference wall time and peak RSS against scan size, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, prefix, ylabel in ((axes[0], "scaling time", "wall time (s)"),
                               (axes[1], "scaling peak RSS", "peak RSS (MiB)")):
        for b in backends:
            pts = sorted((_size_key(r["measure"])[1], r["value"]) for r in records
                         if r["backend"] == b and _size_key(r["measure"])[0] == prefix + " ")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=b)
        ax.set_xscale("log")
        if prefix == "scaling time":
            ax.set_yscale("log")
        ax.set_xlabel("diffraction patterns")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0].set_title("inference time (linear = slope 1)")
    axes[1].set_title("inference peak RSS (flat = constant)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- refine measure (refine_latest.md, refine_convergence.png) -------------------------------

#: Rows that carry data for the plot or the header, not a number for the table.
_REFINE_HIDDEN = (": history", "refine peer status")
#: Table columns of the pty-chi peer, in order.
PEER_COLUMNS = ("pty-chi LSQML", "pty-chi ePIE")


def refine_columns(records: Sequence[dict[str, Any]], backends: Sequence[str]) -> list[str]:
    """Our backends, then the pty-chi algorithms that produced records."""
    present = {r["backend"] for r in records}
    return [*backends, *(c for c in PEER_COLUMNS if c in present)]


def fastest_backend(records: Sequence[dict[str, Any]], backends: Sequence[str]) -> str | None:
    """The backend with the highest ``refine speed pattern-updates/s`` (None without any)."""
    rates = {r["backend"]: r["value"] for r in records
             if r["measure"] == "refine speed pattern-updates/s" and r["backend"] in backends
             and r["value"]}
    return max(rates, key=rates.get) if rates else None


def peer_note(records: Sequence[dict[str, Any]]) -> str:
    """What happened to the pty-chi peer (ran, skipped and why, or not run)."""
    status = next((r for r in records if r["measure"] == "refine peer status"), None)
    if status is None:
        return "pty-chi: not run in this benchmark run"
    cfg = status["config"]
    if cfg.get("skipped"):
        return f"pty-chi: **skipped** — {cfg.get('note')}"
    return f"pty-chi: {cfg.get('note')}"


def refine_markdown(records: Sequence[dict[str, Any]], backends: Sequence[str],
                    header: str) -> str:
    """The refine table: rows = measures (histories and status left out), columns = our backends
    then pty-chi LSQML / ePIE."""
    shown = [r for r in records if not any(r["measure"].endswith(h) for h in _REFINE_HIDDEN)]
    return markdown(shown, refine_columns(records, backends), header)


def _history(records, column: str, label: str) -> tuple[dict[str, list[float]], float] | None:
    r = next((r for r in records if r["backend"] == column
              and r["measure"] == f"refine {label}: history"), None)
    if r is None:
        return None
    return r["config"]["history"], float(r["config"].get("seconds_offset", 0.0))


def plot_refine(records: Sequence[dict[str, Any]], backend: str | None, path: Path) -> None:
    """Amplitude SSIM, phase SSIM and loss (relative to iteration 1) against iteration and wall
    seconds: rows demo and lcls scans; curves our flat start, our PINN start (demo; its seconds
    start at the PINN inference time), pty-chi LSQML and ePIE. SSIM thresholds dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves = []  # (scan, legend label, column, record label, style)
    for scan in ("demo", "lcls"):
        if backend is not None:
            curves.append((scan, f"ptycho-k3 flat ({backend})", backend, f"{scan} flat", "C0-"))
            curves.append((scan, f"ptycho-k3 PINN start ({backend})", backend, f"{scan} PINN",
                           "C1-"))
        curves.append((scan, "pty-chi LSQML (flat)", "pty-chi LSQML", f"{scan} flat", "C2--"))
        curves.append((scan, "pty-chi ePIE (flat)", "pty-chi ePIE", f"{scan} flat", "C3--"))
    panels = (("amplitude_ssim", "amplitude SSIM", (0.8, 0.9)),
              ("phase_ssim", "phase SSIM", (0.95, 0.98)),
              ("loss", "loss / loss at iteration 1", ()))
    fig, axes = plt.subplots(4, 3, figsize=(15, 15))
    for row, (scan, xkey) in enumerate([(s, x) for s in ("demo", "lcls")
                                        for x in ("iteration", "seconds")]):
        for col, (key, ylabel, thresholds) in enumerate(panels):
            ax = axes[row, col]
            for cscan, legend, column, label, style in curves:
                found = _history(records, column, label) if cscan == scan else None
                if found is None:
                    continue
                h, offset = found
                x = np.asarray(h[xkey], float) + (offset if xkey == "seconds" else 0.0)
                y = np.asarray(h[key], float)
                if key == "loss":
                    if len(y) < 2 or not np.isfinite(y[1]) or y[1] == 0:
                        continue
                    x, y = x[1:], y[1:] / y[1]
                ax.plot(x, y, style, label=legend, lw=1.4)
            for t in thresholds:
                ax.axhline(t, color="0.5", ls=":", lw=0.8)
            if key == "loss":
                ax.set_yscale("log")
            else:
                ax.set_ylim(max(0.0, ax.get_ylim()[0]), 1.0)
            if xkey == "seconds":
                ax.set_xscale("symlog", linthresh=1.0)
                ax.set_xlim(left=0.0)
            ax.set_xlabel("iteration" if xkey == "iteration" else "wall seconds")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{scan} scan: {ylabel} vs {xkey}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle("Refinement convergence: ptycho-k3 (" + (backend or "no backend")
                 + ") vs pty-chi; each engine's own loss (ours: Poisson deviance, pty-chi: "
                   "its displayed MSE of sqrt)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Turn records into ``latest.md`` (measures x backends) and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
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

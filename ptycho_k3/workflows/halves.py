"""``--halves`` of ``ptycho-infer`` and ``ptycho-reconstruct``: two independent reconstructions
from disjoint halves of the scan and their Fourier ring correlation (docs/conventions.md §18).

**Split rule.** Positions are taken in file order (after any ``--n_subsample``) and alternate:
rows 0, 2, 4, … form half 1, rows 1, 3, 5, … half 2. In a raster or spiral scan in acquisition
order neighbours alternate, so each half covers the whole field at half the density (a split by
area would leave each half's reconstruction blind where the other scanned), and slow drifts of
the instrument affect both halves alike. For positions stored in random order the rule is
equivalent to a random split. The rule is deterministic: the same file always gives the same
halves.

Each half runs the command's normal pipeline into ``<output_dir>/half_1`` and ``half_2`` (every
output, refinement included when requested); the two ``reconstruction.npz`` are then compared
into ``<output_dir>/frc.json`` and ``frc.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Sub-directories of the two halves.
HALVES = ("half_1", "half_2")

#: The split rule, as recorded in frc.json.
RULE = "alternate positions in file order: even rows -> half_1, odd rows -> half_2"


def split_halves(scan: Any) -> tuple[Any, Any]:
    """The two halves of a ScanData (rows ``0::2`` and ``1::2``; see the module docstring).

    Raises:
        DataError: fewer than 2 positions.
    """
    from ptycho_k3.data import DataError

    n = int(scan.n_positions)
    if n < 2:
        raise DataError(f"{scan.source or 'the scan'}: --halves needs at least 2 scan positions, "
                        f"got {n}")
    rows = np.arange(n)
    return scan.select(rows[0::2]), scan.select(rows[1::2])


def run_halves(out_dir: Path, scan: Any, run_one: Callable[[Path, Any], list[Path]],
               log: logging.Logger, parts: Sequence[Any] | None = None) -> list[Path]:
    """Run ``run_one(directory, half_scan)`` on each half, then their FRC.

    Args:
        out_dir: the command's output directory.
        scan: the whole scan (ScanData).
        run_one: the command's pipeline on one scan into one directory; returns written paths
            (it must write ``reconstruction.npz`` there).
        parts: ``split_halves(scan)`` when the caller already split (and checked) the halves;
            ``run_one`` then receives these very objects.

    Returns:
        Every written path: both halves' outputs, then ``frc.json`` and ``frc.png``.
    """
    from ptycho_k3.workflows.evaluate import frc_files, frc_summary

    written: list[Path] = []
    parts = split_halves(scan) if parts is None else tuple(parts)
    for name, part in zip(HALVES, parts, strict=True):
        log.info("%s: %d of %d positions (%s)", name, part.n_positions, scan.n_positions, RULE)
        where = Path(out_dir) / name
        where.mkdir(parents=True, exist_ok=True)
        written += run_one(where, part)
    report, paths = frc_files(
        Path(out_dir) / HALVES[0] / "reconstruction.npz",
        Path(out_dir) / HALVES[1] / "reconstruction.npz", Path(out_dir) / "frc.json",
        extra={"halves": {"rule": RULE, "n_positions": [int(p.n_positions) for p in parts]}})
    log.info("%s", frc_summary(report))
    return written + paths


def run_scan(out_dir: Path, scan: Any, run_one: Callable[[Path, Any], list[Path]],
             log: logging.Logger, *, halves: bool, parts: Sequence[Any] | None = None
             ) -> list[Path]:
    """``run_one(out_dir, scan)``, or with ``halves`` :func:`run_halves` (on ``parts`` when
    given); the written paths."""
    if halves:
        return run_halves(out_dir, scan, run_one, log, parts)
    return run_one(Path(out_dir), scan)


def scan_parts(scan: Any, halves: bool) -> tuple[Any, ...]:
    """What :func:`run_scan` reconstructs: the two halves, or the whole scan."""
    return split_halves(scan) if halves else (scan,)

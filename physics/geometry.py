"""Per-group canvas geometry (integer arithmetic, no Keras): the canvas side ``P`` and the margin
a member's relative offset may reach (docs/conventions.md §4).

NumPy- and Keras-free, so the data loader and the configuration can size and check canvases
without importing a framework; :mod:`~ptycho_k3.physics.patches` builds on it.
"""

from __future__ import annotations


def centre_start(size: int, n: int) -> int:
    """Index in a length-``size`` axis of the first pixel of its centred length-``n`` window."""
    return size // 2 - n // 2


def canvas_size(n: int, gridsize: int, offset: int = 4, max_position_jitter: int = 10) -> int:
    """Per-group canvas side ``P = n + (gridsize - 1) * offset + max_position_jitter`` (pixels).

    ``offset`` and ``max_position_jitter`` are the legacy keys (4 and 10): P = 74 / 78 for N = 64 and
    gridsize 1 / 2, 138 for N = 128 and gridsize 1.
    """
    if n <= 0 or gridsize <= 0 or offset < 0 or max_position_jitter < 0:
        raise ValueError(
            f"canvas_size: need n > 0, gridsize > 0, offset >= 0, max_position_jitter >= 0; got "
            f"n={n}, gridsize={gridsize}, offset={offset}, max_position_jitter={max_position_jitter}"
        )
    return n + (gridsize - 1) * offset + max_position_jitter


def canvas_margin(n: int, size: int) -> int:
    """Largest |relative offset| (pixels, per axis) that keeps a patch wholly inside the canvas."""
    return centre_start(size, n)

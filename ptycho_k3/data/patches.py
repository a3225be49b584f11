"""Ground-truth patches cut from a full object at scan positions (docs/conventions.md §3).

The patch for position ``(x, y)`` is ``obj[y - N/2 : y + N/2, x - N/2 : x + N/2]``, so
``patch[N/2, N/2] = obj[y, x]``; fractional positions are sampled bilinearly, pixels outside the
object read as zero. The sub-pixel part uses ``ptycho_k3.physics.translate`` (content moves by
+offset), the same operator the model uses, so there is one translation convention everywhere.
"""

from __future__ import annotations

import numpy as np


def _integer_windows(obj: np.ndarray, ix: np.ndarray, iy: np.ndarray, side: int, lo: int) \
        -> np.ndarray:
    """``obj[iy - lo : iy - lo + side, ix - lo : ix - lo + side]`` zero padded: (B, side, side)."""
    h, w = obj.shape
    r0 = iy - lo
    c0 = ix - lo
    pad_top = int(max(0, -r0.min()))
    pad_left = int(max(0, -c0.min()))
    pad_bottom = int(max(0, (r0 + side).max() - h))
    pad_right = int(max(0, (c0 + side).max() - w))
    padded = np.pad(obj, ((pad_top, pad_bottom), (pad_left, pad_right)))
    ar = np.arange(side)
    rows = (r0 + pad_top)[:, None] + ar[None, :]
    cols = (c0 + pad_left)[:, None] + ar[None, :]
    return padded[rows[:, :, None], cols[:, None, :]]


def cut_patches(obj: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, n: int,
                chunk: int = 512) -> np.ndarray:
    """Cut ``n x n`` patches of ``obj`` centred on the scan positions.

    Args:
        obj: complex (or real) object ``(H, W)``.
        xcoords, ycoords: positions ``(M,)`` in object pixels (x column, y row), may be fractional.
        n: patch side (even).
        chunk: patches translated per call of the backend (bounds memory).

    Returns:
        complex64 ``(M, n, n)`` with ``patch[n/2, n/2] = obj(y, x)`` (bilinear), zero outside.
    """
    from keras import ops

    from ptycho_k3 import physics

    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    m = x.shape[0]
    out = np.empty((m, n, n), dtype=np.complex64)
    if m == 0:
        return out
    o = np.asarray(obj).astype(np.complex64)
    ix = np.floor(x).astype(np.int64)
    iy = np.floor(y).astype(np.int64)
    fx = (x - ix).astype(np.float32)
    fy = (y - iy).astype(np.float32)
    side = n + 2
    # Window pixel n/2 + 1 is obj[iy, ix]; the patch must read window position n/2 + 1 + f at
    # its pixel n/2 (after a centre crop that starts at 1), i.e. a shift of -f.
    lo = n // 2 + 1
    exact = (fx == 0) & (fy == 0)
    for start in range(0, m, chunk):
        sl = slice(start, min(start + chunk, m))
        win = _integer_windows(o, ix[sl], iy[sl], side, lo)
        if np.all(exact[sl]):
            out[sl] = win[:, 1:-1, 1:-1]
            continue
        shifts = np.stack([-fx[sl], -fy[sl]], axis=1)
        re, im = physics.translate(
            ops.convert_to_tensor(np.ascontiguousarray(win.real)),
            ops.convert_to_tensor(np.ascontiguousarray(win.imag)),
            ops.convert_to_tensor(shifts),
        )
        re = ops.convert_to_numpy(re)[:, 1:-1, 1:-1]
        im = ops.convert_to_numpy(im)[:, 1:-1, 1:-1]
        out[sl] = re + 1j * im
    return out

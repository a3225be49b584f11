"""Sampling of one object canvas at many scan positions, and its adjoint.

This is the extraction of the full-scan forward model that the iterative refinement
(:mod:`ptycho_k3.refine`) differentiates; the composition itself is
:class:`~ptycho_k3.physics.operator.PtychoOperator` with ``frame="scan"``:

    patch_j = extract_at(O, r_j)            bilinear window of the canvas at position r_j
    psi_j   = P * patch_j                   (``diffraction.illuminate``)
    I_j     = s^2 * fftshift(|FFT2 psi_j|^2) / N^2     (``diffraction.far_field_intensity``)

Geometry (docs/conventions.md §21): positions are ``[x, y]`` = [column, row] in canvas pixels and
mark the patch reference pixel, so ``patch[N/2, N/2] = O(y, x)``; patch pixel ``(i, j)`` shows
canvas point ``(y - N/2 + i, x - N/2 + j)``. This is the same sampling as
:func:`~ptycho_k3.physics.patches.extract_patches` (content moves by +offset, bilinear) and as the
simulator's ground-truth patches, written here as a gather of the ``(N+1) x (N+1)`` window and
four weighted taps instead of two resampling matrices, because a full scan's canvas is far larger
than one group's and the matrices would cost ``O(N * H * W)`` per patch.
"""

from __future__ import annotations

from keras import ops


def window_indices(positions, n: int, width: int):
    """Flat canvas indices of each position's ``(n+1) x (n+1)`` window and its sub-pixel part.

    Args:
        positions: float32 ``(B, 2)`` ``[x, y]`` in canvas pixels.
        n: patch side.
        width: canvas width W (the flat index is ``row * W + column``).

    Returns:
        ``(idx, fx, fy)``: int32 ``(B, n+1, n+1)`` flat indices of rows ``floor(y) - n/2 + i`` and
        columns ``floor(x) - n/2 + j``; float32 ``(B, 1, 1)`` fractional parts in ``[0, 1)``. The
        fractional parts carry the gradient with respect to the positions; the integer parts
        have none.
    """
    positions = ops.cast(positions, "float32")
    corner = ops.floor(positions)
    frac = positions - ops.stop_gradient(corner)
    start = ops.cast(corner, "int32") - n // 2
    ar = ops.arange(n + 1, dtype="int32")
    rows = start[:, 1:2] + ar[None, :]  # (B, n+1)
    cols = start[:, 0:1] + ar[None, :]
    idx = rows[:, :, None] * width + cols[:, None, :]
    fx = ops.reshape(frac[:, 0], (-1, 1, 1))
    fy = ops.reshape(frac[:, 1], (-1, 1, 1))
    return idx, fx, fy


def _bilinear(window, fx, fy):
    """Separable bilinear taps of ``(B, n+1, n+1)`` windows -> ``(B, n, n)``."""
    across = window[..., :-1] + fx * (window[..., 1:] - window[..., :-1])
    return across[..., :-1, :] + fy * (across[..., 1:, :] - across[..., :-1, :])


def extract_many_at(canvases, positions, n: int) -> tuple:
    """:func:`extract_at` of several float32 ``(H, W)`` canvases at the same positions.

    The window indices are computed once; each canvas is one 1-D gather (measured faster than one
    gather of a stacked canvas on TensorFlow and JAX, equal on torch). Returns a tuple of
    ``(B, n, n)`` patches, one per canvas; the gradient of each is one scatter-add.
    """
    h, w = int(canvases[0].shape[-2]), int(canvases[0].shape[-1])
    idx, fx, fy = window_indices(positions, n, w)
    return tuple(_bilinear(ops.take(ops.reshape(c, (h * w,)), idx), fx, fy) for c in canvases)


def extract_at(re, im, positions, n: int):
    """Cut ``n x n`` patches from one canvas at scan positions, bilinearly.

    Args:
        re, im: float32 canvas ``(H, W)``.
        positions: float32 ``(B, 2)`` ``[x, y]`` canvas pixels; every window
            ``[floor(y) - n/2, floor(y) + n/2]`` x ``[floor(x) - n/2, floor(x) + n/2]`` must lie
            inside the canvas (the caller keeps positions there; this function does not check,
            since it runs inside compiled steps).
        n: patch side (even).

    Returns:
        ``(re, im)`` float32 ``(B, n, n)`` with ``patch[n/2, n/2] = canvas(y, x)``. Linear in the
        canvas (its adjoint is the autodiff transpose, a scatter-add) and differentiable in the
        positions (piecewise linear, like any bilinear sampler).
    """
    return extract_many_at((re, im), positions, n)


def extract_real_at(canvas, positions, n: int):
    """Real-valued :func:`extract_at` of a float32 ``(H, W)`` canvas: ``(B, n, n)``."""
    return extract_many_at((canvas,), positions, n)[0]


def _bilinear_adjoint(patch, fx, fy):
    """Transpose of :func:`_bilinear`: ``(B, n, n)`` patches -> ``(B, n+1, n+1)`` windows."""
    rows = ops.pad((1.0 - fy) * patch, [(0, 0), (0, 1), (0, 0)]) + ops.pad(
        fy * patch, [(0, 0), (1, 0), (0, 0)])
    return ops.pad((1.0 - fx) * rows, [(0, 0), (0, 0), (0, 1)]) + ops.pad(
        fx * rows, [(0, 0), (0, 0), (1, 0)])


def place_many_at(patches, positions, shape) -> tuple:
    """Adjoint of :func:`extract_many_at`: scatter-add ``(B, n, n)`` patches onto ``(H, W)``.

    Each patch is spread over its position's ``(n+1) x (n+1)`` window with the transposed
    bilinear taps and the windows are summed, so ``<extract(O), p> = <O, place(p)>`` for any
    canvas ``O`` and patches ``p`` (the explicit form of the autodiff transpose of the gather).
    Same precondition on the positions as :func:`extract_at`. Returns a tuple of float32
    ``(H, W)`` canvases, one per patch stack.
    """
    h, w = int(shape[0]), int(shape[1])
    n = int(patches[0].shape[-1])
    idx, fx, fy = window_indices(positions, n, w)
    flat = ops.reshape(idx, (-1, 1))

    def one(p):
        window = _bilinear_adjoint(ops.cast(p, "float32"), fx, fy)
        return ops.reshape(ops.scatter(flat, ops.reshape(window, (-1,)), (h * w,)), (h, w))

    return tuple(one(p) for p in patches)


def place_at(re, im, positions, shape):
    """Adjoint of :func:`extract_at` for one complex canvas: ``(re, im)`` float32 ``(H, W)``."""
    return place_many_at((re, im), positions, shape)

"""Patch extraction from, and overlap reassembly onto, one object canvas per group.

Geometry (docs/conventions.md §3-§5): canvas pixel ``(P // 2, P // 2)`` represents the group
centre; patch pixel ``(n // 2, n // 2)`` is the patch reference pixel. Member ``c`` of a group has
the relative offset ``offset_c = [dx, dy]`` (x = column, y = row, pixels), which points from the
member towards the group centre.

- extraction: ``patch_c = centre_crop_n(translate(canvas, +offset_c))``;
- reassembly: ``canvas = sum_c translate(pad_centre_P(patch_c), -offset_c)``.

Both use the same 1-D bilinear matrices (:func:`~ptycho_k3.physics.translation.shift_weights`), so
reassembly is the exact adjoint of extraction: ``<E(x), p> = <x, R(p)>`` for any canvas ``x`` and
patches ``p``. Reassembly is always one canvas **per group**, whatever the batch size.
"""

from __future__ import annotations

from keras import ops

from .geometry import centre_start
from .translation import shift_weights


def centre_crop(x, n: int):
    """Centre ``n x n`` crop of the last two axes of ``x`` (``(..., H, W)`` with H, W >= n)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h < n or w < n:
        raise ValueError(f"centre_crop: cannot crop {n}x{n} from {h}x{w}")
    r0, c0 = centre_start(h, n), centre_start(w, n)
    return x[..., r0 : r0 + n, c0 : c0 + n]


def pad_centre(x, size: int):
    """Zero-pad the last two axes of ``x`` (``(..., n, n)``) to ``size x size``, centred.

    Inverse of :func:`centre_crop`: pixel ``(n // 2, n // 2)`` lands on ``(size // 2, size // 2)``.
    """
    n_h, n_w = int(x.shape[-2]), int(x.shape[-1])
    if n_h > size or n_w > size:
        raise ValueError(f"pad_centre: cannot pad {n_h}x{n_w} to {size}x{size}")
    r0, c0 = centre_start(size, n_h), centre_start(size, n_w)
    lead = [(0, 0)] * (len(x.shape) - 2)
    return ops.pad(x, lead + [(r0, size - n_h - r0), (c0, size - n_w - c0)])


def _check_group_offsets(offsets, g, c, name: str) -> None:
    shape = tuple(offsets.shape)
    want = (g, c, 2)
    ok = len(shape) == 3 and shape[-1] == 2
    if ok:
        for got, exp in zip(shape[:2], want[:2], strict=True):
            if got is not None and exp is not None and got != exp:
                ok = False
    if not ok:
        raise ValueError(
            f"{name}: offsets must be (G, C, 2) = {want} ([dx, dy] per member), got {shape}"
        )


def _member_matrices(offsets, n: int, size_h: int, size_w: int):
    """Row and column resampling matrices ``(G, C, n, size)`` for extraction at ``offsets``."""
    a_y = shift_weights(offsets[..., 1], n, size_h, centre_start(size_h, n))
    a_x = shift_weights(offsets[..., 0], n, size_w, centre_start(size_w, n))
    return a_y, a_x


def extract_patches(re, im, offsets, n: int):
    """Cut ``C`` patches per group from the group canvases.

    Args:
        re, im: float32 canvases ``(G, P, P)`` (rectangular ``(G, Ph, Pw)`` also works).
        offsets: float32 ``(G, C, 2)``, relative offsets ``[dx, dy]`` in pixels.
        n: patch side in pixels.

    Returns:
        ``(re, im)`` pair of float32 ``(G, C, n, n)``:
        ``patch_c = centre_crop_n(translate(canvas, +offset_c))``. Canvas pixels outside
        ``[0, P)`` read as zero.
    """
    if len(re.shape) != 3:
        raise ValueError(f"extract_patches: canvases must be (G, P, P), got {tuple(re.shape)}")
    _check_group_offsets(offsets, re.shape[0], offsets.shape[1], "extract_patches")
    a_y, a_x = _member_matrices(offsets, n, int(re.shape[-2]), int(re.shape[-1]))
    a_x_t = ops.transpose(a_x, (0, 1, 3, 2))

    def one(x):
        return ops.matmul(ops.matmul(a_y, ops.expand_dims(x, 1)), a_x_t)

    return one(re), one(im)


def _sum_placed(a_y, a_x, patches):
    """``sum_c a_y[c]^T @ patches[c] @ a_x[c]`` as one matmul per group: ``(G, Ph, Pw)``."""
    c, n, size_h = int(a_y.shape[1]), int(a_y.shape[2]), int(a_y.shape[3])
    size_w = int(a_x.shape[-1])
    rows = ops.matmul(ops.transpose(a_y, (0, 1, 3, 2)), patches)  # (G, C, Ph, n)
    # Fold the member axis into the contraction so the (G, C, Ph, Pw) stack never exists.
    rows = ops.reshape(ops.transpose(rows, (0, 2, 1, 3)), (-1, size_h, c * n))
    cols = ops.reshape(a_x, (-1, c * n, size_w))
    return ops.matmul(rows, cols)


def reassemble_patches(re, im, offsets, size: int, support=None, normalize: bool = True,
                       eps: float = 1e-3):
    """Place each group's ``C`` patches on its own ``size x size`` canvas and sum them.

    Args:
        re, im: float32 patches ``(G, C, n, n)``.
        offsets: float32 ``(G, C, 2)``, relative offsets ``[dx, dy]`` in pixels (the same ones
            used for extraction; no re-centring is done).
        size: canvas side ``P`` in pixels.
        support: optional ``(n, n)`` float mask of the region each patch really fills (default all
            ones); only used when ``normalize``.
        normalize: divide by the overlap count (the same placement applied to ``support``) + eps.
        eps: added to the count so uncovered pixels stay finite (they are 0 / eps = 0).

    Returns:
        ``(re, im)`` pair of float32 ``(G, size, size)``: ``sum_c translate(pad(patch_c), -offset_c)``
        (divided by ``count + eps`` when ``normalize``). One canvas per group, always.
    """
    if len(re.shape) != 4:
        raise ValueError(f"reassemble_patches: patches must be (G, C, n, n), got {tuple(re.shape)}")
    n = int(re.shape[-1])
    _check_group_offsets(offsets, re.shape[0], re.shape[1], "reassemble_patches")
    a_y, a_x = _member_matrices(offsets, n, size, size)
    out_re = _sum_placed(a_y, a_x, re)
    out_im = _sum_placed(a_y, a_x, im)
    if not normalize:
        return out_re, out_im
    if support is None:
        support = ops.ones((n, n), dtype="float32")
    support = ops.cast(ops.convert_to_tensor(support), "float32")
    if tuple(support.shape) != (n, n):
        raise ValueError(
            f"reassemble_patches: support must be ({n}, {n}), got {tuple(support.shape)}"
        )
    count = _sum_placed(a_y, a_x, ops.zeros_like(re) + support)
    denom = count + eps
    return out_re / denom, out_im / denom

"""Bilinear sub-pixel translation written as two small matrix products.

Convention (docs/conventions.md §3): ``translate(img, (tx, ty))`` returns
``out[y, x] = img[y - ty, x - tx]``, so content moves by **+t**. x is the column (last axis), y the
row (second-to-last axis). Samples are taken bilinearly from the integer neighbours ``floor(s)``
and ``floor(s) + 1``; a neighbour outside the image contributes nothing and the remaining weights
are not renormalised (zero fill per corner).

The operator is separable, and a 1-D bilinear resampling onto a grid is a matrix whose row ``i``
holds the "hat" weights ``max(0, 1 - |k - s_i|)`` over source pixels ``k``. Writing the shift as
``A_y @ img @ A_x^T`` gives, in one mechanism:

- exact per-corner zero fill (source indices outside the image simply have no column),
- derivatives with respect to the image *and* the offsets on every backend,
- extraction and reassembly that are exact adjoints of each other (same matrices, transposed),
- dense BLAS work instead of gathers, which all three backends run fast on CPU and GPU.

The matrices are ``(..., L_out, L_src)``; for the patch sizes here (N <= 256, canvases a little
larger) they are small.
"""

from __future__ import annotations

from keras import ops

from .kinks import absolute


def shift_weights(offset, out_len: int, src_len: int, start: int = 0):
    """1-D bilinear resampling matrix for a shift by ``offset`` pixels.

    Output pixel ``i`` (``0 <= i < out_len``) reads source position ``s_i = start + i - offset``.

    Args:
        offset: float32 tensor of any shape ``S`` (pixels; content moves by +offset).
        out_len: number of output pixels.
        src_len: number of source pixels.
        start: index of the source pixel that output pixel 0 would read for a zero offset
            (a centre crop of ``n`` from ``P`` uses ``start = P // 2 - n // 2``).

    Returns:
        float32 tensor ``S + (out_len, src_len)`` with ``W[..., i, k] = max(0, 1 - |k - s_i|)``.
    """
    offset = ops.cast(offset, "float32")
    # (k - start - i) is an exact integer in float32; adding the offset last keeps the rounding
    # error of the weights at eps * |offset| instead of eps * (image size).
    k = ops.arange(src_len, dtype="float32")
    i = ops.arange(out_len, dtype="float32") + float(start)
    grid = k[None, :] - i[:, None]
    # The kinks of the hat (at integer offsets, a common case) get derivative 0 on every
    # backend through ``absolute`` and ``relu`` (kinks.py).
    dist = absolute(grid + ops.expand_dims(ops.expand_dims(offset, -1), -1))
    return ops.relu(1.0 - dist)


def _check_offsets(offsets, batch_shape, name: str) -> None:
    """Require offsets of shape ``batch_shape + (2,)`` where both are known statically."""
    oshape = tuple(offsets.shape)
    if len(oshape) != len(batch_shape) + 1 or oshape[-1] != 2:
        raise ValueError(
            f"{name}: offsets must have shape {tuple(batch_shape) + (2,)} ([dx, dy] per image), "
            f"got {oshape}"
        )
    for got, want in zip(oshape[:-1], batch_shape, strict=True):
        if got is not None and want is not None and got != want:
            raise ValueError(
                f"{name}: offsets shape {oshape} does not match the images' batch shape "
                f"{tuple(batch_shape)}; translations are never broadcast silently"
            )


def _translation_matrices(images, offsets, name: str):
    if len(images.shape) != 3:
        raise ValueError(f"{name}: images must be (B, H, W), got shape {tuple(images.shape)}")
    _check_offsets(offsets, tuple(images.shape[:1]), name)
    h, w = int(images.shape[-2]), int(images.shape[-1])
    a_y = shift_weights(offsets[:, 1], h, h)  # (B, H, H)
    a_x_t = ops.transpose(shift_weights(offsets[:, 0], w, w), (0, 2, 1))  # (B, W, W)
    return a_y, a_x_t


def translate(re, im, offsets):
    """Shift complex images by sub-pixel offsets, content moving by +offset.

    Args:
        re, im: float32 tensors ``(B, H, W)``, the real and imaginary parts.
        offsets: float32 ``(B, 2)``, ``[dx, dy]`` = [x (column), y (row)] shift in pixels.

    Returns:
        ``(re, im)`` pair of ``(B, H, W)`` float32: ``out[b, y, x] = img[b, y - dy_b, x - dx_b]``,
        bilinear, zero fill outside the image. Differentiable in the images and the offsets.
    """
    a_y, a_x_t = _translation_matrices(re, offsets, "translate")
    return (
        ops.matmul(ops.matmul(a_y, re), a_x_t),
        ops.matmul(ops.matmul(a_y, im), a_x_t),
    )


def translate_real(img, offsets):
    """Real-valued :func:`translate`: ``img`` float32 ``(B, H, W)``, offsets ``(B, 2)`` [dx, dy]."""
    a_y, a_x_t = _translation_matrices(img, offsets, "translate_real")
    return ops.matmul(ops.matmul(a_y, img), a_x_t)

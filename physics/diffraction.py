"""Illumination and far-field diffraction of exit waves.

Conventions (docs/conventions.md §7-§8): the exit wave is ``Psi = P * O`` (complex product, pixel
by pixel);
the far-field amplitude is ``A = sqrt(fftshift(|FFT2(Psi)|^2) / N^2)`` over the last two axes, with
the unnormalised DFT, no zero padding and DC at pixel ``(N // 2, N // 2)``. Dividing by ``N^2``
makes it Parseval-exact: ``sum A^2 = sum |Psi|^2``. Units: if ``Psi`` is in sqrt(counts) per object
pixel, ``A`` is in sqrt(counts) per detector pixel.
"""

from __future__ import annotations

import math

from keras import ops

# Below this |F|^2 the amplitude is pinned at sqrt(_SQRT_FLOOR) ~ 1e-15 with zero gradient, so a
# dark detector pixel cannot produce the infinite derivative of sqrt at 0.
_SQRT_FLOOR = 1e-30


def fftshift2(x):
    """Move the zero frequency of the last two axes to ``(H // 2, W // 2)`` (numpy fftshift)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return ops.roll(ops.roll(x, h // 2, axis=-2), w // 2, axis=-1)


def complex_multiply(a_re, a_im, b_re, b_im):
    """``(a_re + i a_im) * (b_re + i b_im)`` as a (re, im) pair; broadcasting as in ``keras.ops``."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def smoothing_kernel_1d(sigma: float) -> list[float]:
    """3-tap weights for x in {-1, 0, 1}: softmax of ``-x^2 / (2 sigma^2)`` (sums to 1)."""
    if sigma <= 0:
        raise ValueError(f"smoothing sigma must be > 0, got {sigma}")
    w = [math.exp(-(x * x) / (2.0 * sigma * sigma)) for x in (-1, 0, 1)]
    total = sum(w)
    return [v / total for v in w]


def _smooth_axis(x, weights: list[float], axis: int):
    n = int(x.shape[axis])
    # Reflect padding without repeating the edge (numpy/TF 'reflect'): [x1, x0, x1, ..., x_{n-2}].
    prev = ops.concatenate(
        [ops.take(x, [1], axis=axis), ops.take(x, list(range(n - 1)), axis=axis)], axis=axis
    )
    nxt = ops.concatenate(
        [ops.take(x, list(range(1, n)), axis=axis), ops.take(x, [n - 2], axis=axis)], axis=axis
    )
    return weights[0] * prev + weights[1] * x + weights[2] * nxt


def smooth(re, im, sigma: float):
    """Separable 3x3 Gaussian-like smoothing of the last two axes, reflect padding.

    The kernel is the outer product of :func:`smoothing_kernel_1d` with itself (the original's
    ``gaussian_smoothing_sigma`` applied to the exit wave). Returns a (re, im) pair, same shapes.
    """
    k = smoothing_kernel_1d(sigma)

    def one(x):
        return _smooth_axis(_smooth_axis(x, k, -2), k, -1)

    return one(re), one(im)


def illuminate(obj_re, obj_im, probe_re, probe_im, smoothing_sigma: float = 0.0, mask=None):
    """Exit wave ``Psi = P * O``, then optional smoothing, then optional mask (in that order).

    Args:
        obj_re, obj_im: float32 object patches ``(..., N, N)``.
        probe_re, probe_im: float32 probe ``(N, N)`` (broadcast over the leading axes).
        smoothing_sigma: 0 disables; else :func:`smooth` is applied to ``Psi``.
        mask: optional float ``(N, N)`` multiplied into ``Psi`` last.

    Returns:
        ``(re, im)`` float32 ``(..., N, N)``.
    """
    re, im = complex_multiply(obj_re, obj_im, probe_re, probe_im)
    if smoothing_sigma:
        re, im = smooth(re, im, smoothing_sigma)
    if mask is not None:
        re, im = re * mask, im * mask
    return re, im


def far_field_intensity(re, im):
    """Far-field intensity ``fftshift(|FFT2 psi|^2) / N^2`` of ``(..., N, N)`` exit waves.

    The square of :func:`diffract` without its square-root floor (Parseval:
    ``sum I = sum |psi|^2``); DC at ``(N/2, N/2)``. float32.
    """
    h, w = int(re.shape[-2]), int(re.shape[-1])
    f_re, f_im = ops.fft2((ops.cast(re, "float32"), ops.cast(im, "float32")))
    return fftshift2((f_re * f_re + f_im * f_im) / float(h * w))


def diffract(re, im):
    """Far-field amplitude of exit waves.

    Args:
        re, im: float32 exit waves ``(..., N, N)``.

    Returns:
        float32 ``(..., N, N)``: ``fftshift(|FFT2(re + i im)|) / N`` over the last two axes
        (``N^2`` = H * W for a rectangular field), DC at ``(H // 2, W // 2)``; ``sum A^2`` equals
        ``sum |Psi|^2``. Differentiable everywhere (a zero modulus gets zero gradient).
    """
    return ops.sqrt(ops.maximum(far_field_intensity(re, im), _SQRT_FLOOR))

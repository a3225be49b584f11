"""Plain NumPy (float64) restatements of the physics conventions, used as test oracles.

These are written differently from ``physics`` on purpose (explicit floor/gather bilinear
interpolation instead of resampling matrices), so an agreement is evidence, not tautology.
"""

from __future__ import annotations

import numpy as np


def translate(img: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``out[b, y, x] = img[b, y - dy, x - dx]``, bilinear, zero fill per corner sample."""
    img = np.asarray(img)
    b, h, w = img.shape
    out = np.zeros(img.shape, dtype=np.result_type(img.dtype, np.float64))
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for i in range(b):
        dx, dy = float(offsets[i][0]), float(offsets[i][1])
        sy, sx = ys - dy, xs - dx
        y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
        fy, fx = sy - y0, sx - x0
        for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
            for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                vy = (yy >= 0) & (yy < h)
                vx = (xx >= 0) & (xx < w)
                vals = img[i][np.clip(yy, 0, h - 1)][:, np.clip(xx, 0, w - 1)]
                weight = (wy * vy)[:, None] * (wx * vx)[None, :]
                out[i] += weight * vals
    return out


def centre_crop(x: np.ndarray, n: int) -> np.ndarray:
    h, w = x.shape[-2:]
    r0, c0 = h // 2 - n // 2, w // 2 - n // 2
    return x[..., r0 : r0 + n, c0 : c0 + n]


def pad_centre(x: np.ndarray, size: int) -> np.ndarray:
    n = x.shape[-1]
    r0 = size // 2 - n // 2
    out = np.zeros(x.shape[:-2] + (size, size), dtype=x.dtype)
    out[..., r0 : r0 + n, r0 : r0 + n] = x
    return out


def extract_patches(canvas: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """canvas (G, P, P), offsets (G, C, 2) -> (G, C, n, n)."""
    g, c = offsets.shape[:2]
    out = []
    for gi in range(g):
        stack = np.repeat(canvas[gi][None], c, axis=0)
        out.append(centre_crop(translate(stack, offsets[gi]), n))
    return np.stack(out)


def reassemble_patches(patches, offsets, size, support=None, normalize=True, eps=1e-3):
    """patches (G, C, n, n), offsets (G, C, 2) -> (G, size, size), per group."""
    g, c, n, _ = patches.shape
    num = np.stack(
        [translate(pad_centre(patches[gi], size), -offsets[gi]).sum(0) for gi in range(g)]
    )
    if not normalize:
        return num
    sup = np.ones((n, n)) if support is None else np.asarray(support, dtype=np.float64)
    stack = np.broadcast_to(sup, (c, n, n))
    count = np.stack(
        [translate(pad_centre(stack, size), -offsets[gi]).sum(0) for gi in range(g)]
    )
    return num / (count + eps)


def diffract(psi: np.ndarray) -> np.ndarray:
    """``fftshift(|FFT2 psi|) / N`` over the last two axes."""
    n2 = psi.shape[-1] * psi.shape[-2]
    f = np.fft.fft2(np.asarray(psi, dtype=np.complex128))
    return np.fft.fftshift(np.abs(f), axes=(-2, -1)) / np.sqrt(n2)


def poisson_nll(pred, obs, eps=1e-12):
    pred = np.asarray(pred, np.float64)
    return pred - np.asarray(obs, np.float64) * np.log(pred + eps)


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """3x3 softmax-Gaussian kernel, numpy 'reflect' padding, over the last two axes."""
    t = np.array([-1.0, 0.0, 1.0])
    w = np.exp(-(t**2) / (2 * sigma**2))
    w /= w.sum()
    k = np.outer(w, w)
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    xp = np.pad(x, pad, mode="reflect")
    h, wd = x.shape[-2:]
    out = np.zeros(x.shape, dtype=np.result_type(x.dtype, np.float64))
    for i in range(3):
        for j in range(3):
            out += k[i, j] * xp[..., i : i + h, j : j + wd]
    return out


def extract_at(canvas: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """canvas (H, W), positions (B, 2) [x, y] -> (B, n, n); patch pixel (i, j) samples the
    canvas at (y - n/2 + i, x - n/2 + j), bilinear, by explicit loops over the four taps."""
    canvas = np.asarray(canvas)
    out = np.zeros((len(positions), n, n), dtype=np.result_type(canvas.dtype, np.float64))
    grid = np.arange(n, dtype=np.float64) - n // 2
    for b, (x, y) in enumerate(np.asarray(positions, np.float64)):
        sy, sx = y + grid, x + grid
        y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
        fy, fx = sy - y0, sx - x0
        for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
            for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                out[b] += wy[:, None] * wx[None, :] * canvas[yy][:, xx]
    return out


def scan_intensities(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
                     scale: float = 1.0) -> np.ndarray:
    """s^2 |fftshift(FFT2(P * extract_at(O)))|^2 / N^2, float64."""
    return (scale * diffract(probe[None] * extract_at(obj, positions, probe.shape[-1]))) ** 2


def poisson_deviance(pred, obs, eps=1e-12):
    pred, obs = np.asarray(pred, np.float64), np.asarray(obs, np.float64)
    return pred - obs - obs * np.log((pred + eps) / (obs + eps))

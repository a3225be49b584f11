"""Probe construction and normalisation (docs/conventions.md §6). Set-up time, NumPy in and out.

All discs here are centred on the array's geometric centre ``((N - 1) / 2, (N - 1) / 2)``, half a
pixel before the patch reference pixel ``N / 2``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def probe_mask(n: int) -> np.ndarray:
    """Hard disc ``r < n // 4`` on pixel-centre coordinates ``i - n/2 + 0.5``; float32 ``(n, n)``.

    812 / 3228 / 12892 pixels for n = 64 / 128 / 256.
    """
    c = np.arange(n, dtype=np.float64) - n / 2.0 + 0.5
    r = np.hypot(c[:, None], c[None, :])
    return (r < n // 4).astype(np.float32)


def default_probe(n: int, default_probe_scale: float = 0.7) -> np.ndarray:
    """The original's idealised disc probe, real valued (zero phase), float64 ``(n, n)``.

    A symmetric Gaussian window of length ``n`` and std ``n / (default_probe_scale * pi^2)``
    (9.264 px at n = 64), scaled to max 1; its outer product thresholded at 0.5 gives a binary disc
    (376 px at n = 64); that disc is blurred with ``gaussian_filter(sigma=1)`` (reflect) and
    1e-9 is added everywhere. Max 1 + 1e-9, min 1e-9.
    """
    std = n / (default_probe_scale * np.pi**2)
    k = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    window = np.exp(-0.5 * (k / std) ** 2)
    window /= window.max()
    disc = (np.outer(window, window) > 0.5).astype(np.float64)
    return gaussian_filter(disc, sigma=1.0) + 1e-9


def normalize_probe(probe, probe_scale: float = 4.0, mask=None) -> np.ndarray:
    """``P / (probe_scale * mean over all N^2 pixels of |P| * mask)`` as complex64 ``(N, N)``.

    ``mask`` defaults to :func:`probe_mask` (the original uses it here whatever ``probe_mask``
    says). The default probe at N = 64 gives max |P| 2.7234 and sum |P|^2 2505.1 for scale 4.
    """
    p = np.asarray(probe)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"normalize_probe: probe must be (N, N), got shape {p.shape}")
    if not probe_scale > 0:
        raise ValueError(f"normalize_probe: probe_scale must be > 0, got {probe_scale}")
    m = probe_mask(p.shape[0]) if mask is None else np.asarray(mask, dtype=np.float64)
    denom = probe_scale * np.mean(np.abs(p).astype(np.float64) * m)
    if not denom > 0:
        raise ValueError("normalize_probe: the probe is zero inside the mask")
    return (p.astype(np.complex128) / denom).astype(np.complex64)

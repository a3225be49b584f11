"""Conversions between the original's tensor layouts (docs/conventions.md §2).

- channel: ``(B, N, N, C)``, channel c = member c of a group (channels-last);
- groups:  ``(B, C, N, N)``, images in the last two axes, as ``physics`` functions take them;
- flat:    ``(B * C, N, N, 1)``, flat index ``b * C + c``;
- offsets: channel format ``(B, 1, 2, C)`` (axis 2 = [x, y]) <-> pairs ``(B, C, 2)``.
"""

from __future__ import annotations

from keras import ops


def channels_to_groups(x):
    """``(B, N, N, C)`` -> ``(B, C, N, N)``."""
    return ops.transpose(x, (0, 3, 1, 2))


def groups_to_channels(x):
    """``(B, C, N, N)`` -> ``(B, N, N, C)``."""
    return ops.transpose(x, (0, 2, 3, 1))


def channels_to_flat(x):
    """``(B, N, N, C)`` -> ``(B * C, N, N, 1)`` with flat index ``b * C + c``."""
    n_h, n_w = int(x.shape[1]), int(x.shape[2])
    return ops.reshape(channels_to_groups(x), (-1, n_h, n_w, 1))


def flat_to_channels(x, c: int):
    """``(B * C, N, N, 1)`` -> ``(B, N, N, C)``, the exact inverse of :func:`channels_to_flat`."""
    n_h, n_w = int(x.shape[1]), int(x.shape[2])
    return groups_to_channels(ops.reshape(x, (-1, c, n_h, n_w)))


def offsets_to_pairs(offsets):
    """Channel-format offsets ``(B, 1, 2, C)`` -> ``(B, C, 2)`` rows of ``[dx, dy]``."""
    return ops.transpose(offsets[:, 0, :, :], (0, 2, 1))


def pairs_to_offsets(pairs):
    """``(B, C, 2)`` rows of ``[dx, dy]`` -> channel-format ``(B, 1, 2, C)``."""
    return ops.expand_dims(ops.transpose(pairs, (0, 2, 1)), 1)

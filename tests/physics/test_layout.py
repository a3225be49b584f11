"""Layout conversions are exact inverses and follow the original's index rules."""

from __future__ import annotations

import numpy as np

from ptycho_k3 import physics

from backend_utils import tensor, to_numpy


def test_channel_flat_round_trip_and_index_rule():
    b, n, c = 3, 4, 4
    x = np.arange(b * n * n * c, dtype=np.float32).reshape(b, n, n, c)
    flat = to_numpy(physics.channels_to_flat(tensor(x)))
    assert flat.shape == (b * c, n, n, 1)
    np.testing.assert_array_equal(flat[2 * c + 3, :, :, 0], x[2, :, :, 3])  # flat = b*C + c
    back = to_numpy(physics.flat_to_channels(tensor(flat), c))
    np.testing.assert_array_equal(back, x)
    groups = to_numpy(physics.channels_to_groups(tensor(x)))
    np.testing.assert_array_equal(groups[1, 2], x[1, :, :, 2])
    np.testing.assert_array_equal(to_numpy(physics.groups_to_channels(tensor(groups))), x)


def test_offset_layouts():
    off = np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 1, 2, 4)
    pairs = to_numpy(physics.offsets_to_pairs(tensor(off)))
    assert pairs.shape == (2, 4, 2)
    np.testing.assert_array_equal(pairs[1, 3], [off[1, 0, 0, 3], off[1, 0, 1, 3]])  # [x, y]
    np.testing.assert_array_equal(to_numpy(physics.pairs_to_offsets(tensor(pairs))), off)

"""The benchmark's FLOP count (benchmarks/flops.py) does not depend on the conv data layout.

The model is channels-first under PyTorch and channels-last elsewhere; a count that read every
layer as channels-last once made the torch forward look twice as slow as it was.
"""

from __future__ import annotations

import keras
import pytest

from benchmarks.flops import conv_flops


def _model(fmt: str, h: int, w: int, cin: int, cout: int) -> keras.Model:
    shape = (cin, h, w) if fmt == "channels_first" else (h, w, cin)
    x = keras.Input(shape)
    y = keras.layers.Conv2D(cout, 3, padding="same", data_format=fmt)(x)
    y = keras.layers.Conv2D(5, (3, 1), padding="valid", data_format=fmt)(y)
    return keras.Model(x, y)


@pytest.mark.parametrize(("h", "w", "cin", "cout"), [(16, 8, 3, 7), (12, 12, 1, 4)])
def test_conv_flops_same_in_both_layouts(h, w, cin, cout):
    # layer 1: 2*9*cin*cout*h*w (same padding); layer 2: 2*3*cout*5*(h-2)*w (valid, 3x1 kernel)
    expected = 2.0 * 9 * cin * cout * h * w + 2.0 * 3 * cout * 5 * (h - 2) * w
    for fmt in ("channels_first", "channels_last"):
        assert conv_flops(_model(fmt, h, w, cin, cout)) == expected, fmt

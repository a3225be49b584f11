"""Masks of the region the decoder writes: centre square versus border ring."""

from __future__ import annotations

import keras
import numpy as np


def decoded_support(n: int, probe_big: bool, pad_object: bool) -> np.ndarray:
    """float32 ``(n, n)``: 1 where the decoder can write a non-zero object value.

    With ``pad_object`` and without ``probe_big`` that is the central ``n/2 x n/2`` square
    (rows/columns ``n/4 .. 3n/4 - 1``); with ``probe_big`` (border branch) or without
    ``pad_object`` (full-patch decoder) it is the whole patch. The object canvas divides by the
    overlap count of exactly this region, so nothing the decoder writes is amplified.
    """
    if probe_big or not pad_object:
        return np.ones((n, n), np.float32)
    mask = np.zeros((n, n), np.float32)
    mask[n // 4 : n // 4 + n // 2, n // 4 : n // 4 + n // 2] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="ptycho_k3")
class BorderMask(keras.layers.Layer):
    """Zero the central ``n/2 x n/2`` square of ``(B, n, n, ch)`` (or channels_first) features."""

    def __init__(self, n: int, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)
        self.data_format = data_format
        ring = 1.0 - decoded_support(self.n, probe_big=False, pad_object=True)
        self._mask = ring[None] if data_format == "channels_first" else ring[:, :, None]

    def call(self, x):
        return x * keras.ops.convert_to_tensor(self._mask, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "n": self.n, "data_format": self.data_format}

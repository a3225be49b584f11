"""The phase head's activation."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ptycho_k3")
class PiTanh(keras.layers.Layer):
    """``pi * tanh(x)``: bounds the decoded phase to (-pi, pi)."""

    def call(self, x):
        return math.pi * ops.tanh(x)

    def compute_output_shape(self, input_shape):
        return input_shape

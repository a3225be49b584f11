"""Encoder, decoders and decoder heads (docs/conventions.md §12), from standard Keras layers.

Tensors are ``(B, H, W, ch)`` with ``data_format='channels_last'`` and ``(B, ch, H, W)`` with
``'channels_first'`` (used under PyTorch, whose CPU convolutions are native NCHW: channels-last
there costs two full-tensor copies per convolution). Kernels have the same shape either way, so
weights move between backends unchanged. Filter counts are multiplied by
``n_filters_scale`` (nfs). For N = 64 the ladders are encoder 32-64-128, decoder 64-32; each
doubling of N adds one level at the front of both, keeping an 8 x 8 bottleneck and an
N/2 x N/2 decoder output with 32 nfs channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keras import layers

from ptycho_k3.layers import BorderMask, Conv2D, PiTanh, SliceChannels

BORDER_CHANNELS = 4  # the decoder's last 4 channels feed the probe_big border branch


def _levels(n: int) -> int:
    return int(math.log2(n // 8))


def encoder_filters(n: int, nfs: int) -> list[int]:
    """N=64: 32, 64, 128; N=128: 16, ..., 128; N=256: 8, ..., 128 (times nfs)."""
    return [nfs * (128 >> k) for k in reversed(range(_levels(n)))]


def decoder_filters(n: int, nfs: int) -> list[int]:
    """N=64: 64, 32; N=128: 128, 64, 32; N=256: 256, 128, 64, 32 (times nfs)."""
    return [nfs * (32 << k) for k in reversed(range(_levels(n) - 1))]


def border_filters(n: int, nfs: int) -> int:
    """Filters of the extra up-block reaching N x N: ``nfs * 2048 / N``."""
    return nfs * 2048 // n


@dataclass(frozen=True)
class ConvStyle:
    """How every hidden convolution is built.

    Attributes:
        act: activation of the hidden convolutions.
        dtype: the layers' dtype policy (``None`` = float32; ``"mixed_bfloat16"`` computes in
            bfloat16 with float32 weights).
        fmt: ``"channels_last"`` or ``"channels_first"``.
        kernel_init: kernel initializer; ``"zeros"`` when the weights will be overwritten (a
            bundle being loaded): random initializers compile one XLA program per kernel shape
            under JAX, ~4.5 s of a bundle load on 2 cores, for values thrown away.
    """

    act: str = "relu"
    dtype: str | None = None
    fmt: str = "channels_last"
    kernel_init: str = "glorot_uniform"


def _conv(filters: int, name: str, activation: str | None, style: ConvStyle) -> Conv2D:
    return Conv2D(filters, 3, padding="same", activation=activation, name=name,
                         dtype=style.dtype, data_format=style.fmt,
                         kernel_initializer=style.kernel_init)


def encoder(x, n: int, nfs: int, style: ConvStyle = ConvStyle()):
    """Conv-act, Conv-act, MaxPool per block: ``(B, N, N, C)`` -> ``(B, 8, 8, 128 nfs)``."""
    for i, f in enumerate(encoder_filters(n, nfs)):
        x = _conv(f, f"enc{i}_conv0", style.act, style)(x)
        x = _conv(f, f"enc{i}_conv1", style.act, style)(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool", dtype=style.dtype,
                                data_format=style.fmt)(x)
    return x


def _up_block(x, filters: int, prefix: str, style: ConvStyle):
    x = _conv(filters, f"{prefix}_conv0", style.act, style)(x)
    x = _conv(filters, f"{prefix}_conv1", style.act, style)(x)
    return layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_up", dtype=style.dtype,
                               data_format=style.fmt)(x)


def _head_activation(kind: str, name: str) -> layers.Layer:
    # Heads run in float32 whatever the precision: bounded outputs feed the physics directly.
    return PiTanh(name=name) if kind == "phase" else layers.Activation(kind, name=name)


def decoder(z, n: int, nfs: int, nout: int, activation: str, pad_object: bool, probe_big: bool,
            prefix: str, style: ConvStyle = ConvStyle()):
    """One decoder with its head: ``(B, 8, 8, 128 nfs)`` -> ``(B, N, N, nout)``.

    ``activation`` is ``amp_activation`` for the amplitude decoder and ``"phase"`` (pi tanh) for
    the phase decoder; ``style`` how the convolutions are built. With ``pad_object`` the centre
    path decodes the central N/2 square and is zero-padded by N/4; ``probe_big`` adds the border
    path (swish, masked to the ring outside the centre square). Without ``pad_object`` one more
    up-block decodes the full N x N patch.
    """
    x = z
    for i, f in enumerate(decoder_filters(n, nfs)):
        x = _up_block(x, f, f"{prefix}{i}", style)
    if not pad_object:
        y = _up_block(x, border_filters(n, nfs), f"{prefix}_full", style)
        y = _conv(nout, f"{prefix}_full_out", None, style)(y)
        return _head_activation(activation, f"{prefix}_act")(y)
    channels = int(x.shape[1 if style.fmt == "channels_first" else -1])
    centre = SliceChannels(0, channels - BORDER_CHANNELS, data_format=style.fmt,
                           name=f"{prefix}_centre_in", dtype=style.dtype)(x)
    centre = _conv(nout, f"{prefix}_centre_out", None, style)(centre)
    centre = _head_activation(activation, f"{prefix}_act")(centre)
    centre = layers.ZeroPadding2D(n // 4, data_format=style.fmt,
                                  name=f"{prefix}_centre_pad")(centre)
    if not probe_big:
        return centre
    border = SliceChannels(channels - BORDER_CHANNELS, channels, data_format=style.fmt,
                           name=f"{prefix}_border_in", dtype=style.dtype)(x)
    border = _up_block(border, border_filters(n, nfs), f"{prefix}_border", style)
    border = _conv(nout, f"{prefix}_border_out", None, style)(border)
    border = layers.Activation("swish", name=f"{prefix}_border_act")(border)
    border = BorderMask(n, data_format=style.fmt, name=f"{prefix}_border_mask")(border)
    return layers.Add(name=f"{prefix}_out")([centre, border])

"""``build_model``: the training and inference models of one configuration, sharing weights."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from ptycho_k3 import allocator, physics
from ptycho_k3.config import DEFAULT_NPHOTONS, LossSpec, ModelConfig, resolve_loss
from ptycho_k3.layers import (
    FarField,
    IntensityScale,
    ObjectCanvas,
    PatchExtraction,
    PolarToComplex,
    ProbeIllumination,
    TrimObject,
    decoded_support,
)

from .networks import ConvStyle, decoder, encoder
from .ptycho_model import PtychoModel


def conv_data_format() -> str:
    """``channels_first`` under PyTorch (native NCHW convolutions), else ``channels_last``.

    A per-backend layout choice only: conv kernels have the same shape in both formats, so
    weights (and bundles) are identical across backends.
    """
    return "channels_first" if keras.backend.backend() == "torch" else "channels_last"


@dataclass
class ModelPair:
    """The training model (``autoencoder``) and the inference model (``diffraction_to_obj``).

    Both take ``[input (B, N, N, C) = s * X, input_positions (B, 1, 2, C)]`` and share every
    weight. ``inference`` returns the trimmed object ``(B, N, N, 2)`` [re, im].
    """

    config: ModelConfig
    training: PtychoModel
    inference: keras.Model

    @property
    def scale_layer(self) -> IntensityScale:
        return self.training.get_layer("intensity_scale")

    @property
    def intensity_scale(self) -> float:
        """Current ``exp(log_scale)``."""
        return float(np.exp(keras.ops.convert_to_numpy(self.scale_layer.log_scale)))

    def probe(self) -> np.ndarray | None:
        """The model's (normalised) probe as complex64, or None for a supervised model."""
        try:
            return self.training.get_layer("probe").probe()
        except ValueError:
            return None


def build_model(
    config: ModelConfig,
    probe: np.ndarray | None = None,
    intensity_scale: float | None = None,
    loss: LossSpec | None = None,
    *,
    random_init: bool = True,
) -> ModelPair:
    """Build the PtychoPINN (or supervised) models for ``config``.

    Args:
        config: architecture settings (validated).
        probe: complex ``(N, N)`` probe before normalisation (default: the disc probe); it is
            normalised with ``config.probe_scale`` (docs/conventions.md §6) and held as real weights.
        intensity_scale: initial ``s`` (default ``physics.intensity_scale(DEFAULT_NPHOTONS, N)``).
        loss: the resolved loss (default: ``resolve_loss(config.model_type)``).
        random_init: False when every weight is about to be overwritten (loading a bundle):
            conv kernels start at zero instead of drawing random values (see
            :class:`~ptycho_k3.model.networks.ConvStyle`).
    """
    allocator.tune()  # library callers that never went through backend.activate
    n, c, cp = config.N, config.group_size, config.object_channels
    nfs = config.n_filters_scale
    if loss is None:
        loss = resolve_loss(config.model_type)
    if loss.model_type != config.model_type:
        raise ValueError(
            f"loss resolved for {loss.model_type!r} but the model is {config.model_type!r}"
        )
    s = (physics.intensity_scale(DEFAULT_NPHOTONS, n) if intensity_scale is None
         else float(intensity_scale))

    x_in = keras.Input((n, n, c), name="input")
    pos_in = keras.Input((1, 2, c), name="input_positions")
    scaler = IntensityScale(s, trainable=config.intensity_scale_trainable, name="intensity_scale")
    act = config.hidden_activation
    # The conv stack may run in bfloat16; every physics layer is pinned to float32.
    net_dtype = None if config.precision == "float32" else config.precision
    fmt = conv_data_format()
    x = scaler(x_in, inverse=True)
    if fmt == "channels_first":
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)
    style = ConvStyle(act, net_dtype, fmt, "glorot_uniform" if random_init else "zeros")
    z = encoder(x, n, nfs, style)
    amp = decoder(z, n, nfs, cp, config.amp_activation, config.pad_object, config.probe_big, "amp",
                  style)
    phase = decoder(z, n, nfs, cp, "phase", config.pad_object, config.probe_big, "phase", style)
    obj = PolarToComplex(data_format=fmt, name="polar")([amp, phase])
    if fmt == "channels_first":  # the decoded-patch outputs are channels-last, like the labels
        amp = layers.Permute((2, 3, 1), name="amp_channels_last")(amp)
        phase = layers.Permute((2, 3, 1), name="phase_channels_last")(phase)
    offsets = layers.Permute((2, 1), name="offsets")(layers.Reshape((2, c))(pos_in))
    canvas = ObjectCanvas(
        n, config.canvas_size, object_big=config.object_big, probe_big=config.probe_big,
        pad_object=config.pad_object, name="object_canvas",
    )([*obj, offsets])
    trimmed = TrimObject(n, name="trimmed_obj")(canvas)
    outputs = {"trimmed_obj": trimmed, "amplitude": amp, "phase": phase}

    if config.model_type == "pinn":
        p = physics.default_probe(n) if probe is None else np.asarray(probe)
        if p.shape != (n, n):
            raise ValueError(f"build_model: probe must be ({n}, {n}) for N={n}, got {p.shape}")
        p_model = physics.normalize_probe(p, config.probe_scale)
        energy = float(np.sum(np.abs(p_model) ** 2))
        if energy < (n / 2) ** 2:
            warnings.warn(
                f"normalised probe energy {energy:.1f} < (N/2)^2 = {(n / 2) ** 2:.0f}: a bounded "
                f"amplitude activation may not reach the data scale (probe_scale "
                f"{config.probe_scale}; docs/legacy.md §9)",
                stacklevel=2,
            )
        patches = PatchExtraction(n, name="patch_extraction")([*canvas, offsets])
        illum = ProbeIllumination(
            n, smoothing_sigma=config.gaussian_smoothing_sigma, use_mask=config.probe_mask,
            initial_probe=p_model, trainable=config.probe_trainable, name="probe",
        )(patches)
        pred_amp = FarField(name="far_field")(illum)
        pred_amp_scaled = scaler(pred_amp)
        outputs["pred_amp_scaled"] = pred_amp_scaled
        outputs["pred_intensity"] = layers.Multiply(name="pred_intensity")(
            [pred_amp_scaled, pred_amp_scaled]
        )

    support = decoded_support(n, config.probe_big, config.pad_object)
    training = PtychoModel(
        inputs=[x_in, pos_in], outputs=outputs, loss_spec=loss, support=support, name="autoencoder"
    )
    inference = keras.Model(inputs=[x_in, pos_in], outputs=trimmed, name="diffraction_to_obj")
    return ModelPair(config=config, training=training, inference=inference)

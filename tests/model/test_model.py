"""The Keras model on the current backend: architecture, per-group canvases, weights, layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ptycho_k3 import layers as pl
from ptycho_k3.config import ModelConfig, TrainingConfig
from ptycho_k3.model import build_model

from backend_utils import to_numpy


def conv_params(models) -> int:
    return sum(
        int(np.prod(w.shape))
        for layer in models.training.layers
        if isinstance(layer, keras.layers.Conv2D)
        for w in layer.weights
    )


# docs/conventions.md §12: four counts taken from the original network, the rest from per-layer
# arithmetic.
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 2_331_772),
        ({"probe_big": False}, 2_252_026),
        ({"pad_object": False}, 2_399_810),
        ({"gridsize": 2}, 2_340_208),
        ({"gridsize": 2, "object_big": False}, 2_333_500),
        ({"N": 128}, 4_661_212),
    ],
)
def test_parameter_counts_match_the_reference(kwargs, expected):
    assert conv_params(build_model(ModelConfig(**kwargs))) == expected


def random_inputs(rng, b, n, c, reach=3.0):
    x = rng.gamma(2.0, 0.25, (b, n, n, c)).astype(np.float32) * 988.0
    pos = rng.uniform(-reach, reach, (b, 1, 2, c)).astype(np.float32)
    return x, pos


def test_outputs_and_shapes():
    cfg = ModelConfig(gridsize=2, n_filters_scale=1)
    models = build_model(cfg)
    x, pos = random_inputs(np.random.default_rng(0), 3, 64, 4)
    out = models.training((x, pos))
    assert set(out) == {"trimmed_obj", "amplitude", "phase", "pred_amp_scaled", "pred_intensity"}
    assert tuple(out["trimmed_obj"].shape) == (3, 64, 64, 2)
    assert tuple(out["pred_intensity"].shape) == (3, 64, 64, 4)
    amp = to_numpy(out["pred_amp_scaled"])
    np.testing.assert_allclose(to_numpy(out["pred_intensity"]), amp**2, rtol=1e-5)
    phase = to_numpy(out["phase"])
    inner = phase[:, 16:48, 16:48]  # the centre path is pi*tanh-bounded
    assert np.all(np.abs(inner) <= np.pi)
    inf = to_numpy(models.inference((x, pos)))
    np.testing.assert_allclose(inf, to_numpy(out["trimmed_obj"]), rtol=1e-5, atol=1e-6)


def test_batch_of_16_at_gridsize_2_keeps_16_canvases():
    """The original merged every group of a batch once B*C >= 64; here each group is its own."""
    models = build_model(ModelConfig(gridsize=2, n_filters_scale=1))
    x, pos = random_inputs(np.random.default_rng(1), 16, 64, 4)
    obj = to_numpy(models.inference((x, pos)))
    assert obj.shape == (16, 64, 64, 2)
    for k in (0, 9, 15):
        alone = to_numpy(models.inference((x[k : k + 1], pos[k : k + 1])))
        np.testing.assert_allclose(obj[k], alone[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(obj[0], obj[1])


def test_no_border_amplification():
    """With probe_big the border branch is normalised by its own coverage, not x1000."""
    models = build_model(ModelConfig(n_filters_scale=1))
    x, pos = random_inputs(np.random.default_rng(2), 2, 64, 1, reach=0.0)
    out = models.training((x, pos))
    amp = to_numpy(out["amplitude"])[..., 0]
    obj = to_numpy(out["trimmed_obj"])
    mag = np.hypot(obj[..., 0], obj[..., 1])
    # gs 1, zero offset: canvas = patch / (1 + eps) everywhere the decoder writes
    np.testing.assert_allclose(mag, np.abs(amp) / 1.001, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("probe_trainable", "scale_trainable"), [(False, True), (True, False)])
def test_probe_and_scale_are_weights_trainable_as_configured(probe_trainable, scale_trainable):
    cfg = ModelConfig(n_filters_scale=1, probe_trainable=probe_trainable,
                      intensity_scale_trainable=scale_trainable)
    models = build_model(cfg, intensity_scale=500.0)
    trainable = {w.path for w in models.training.trainable_weights}
    everything = {w.path for w in models.training.weights}
    assert {"probe/probe_re", "probe/probe_im", "intensity_scale/log_scale"} <= everything
    assert ("probe/probe_re" in trainable) == probe_trainable
    assert ("intensity_scale/log_scale" in trainable) == scale_trainable
    assert abs(models.intensity_scale - 500.0) < 1e-3
    # two models in one process do not share a scale (the original's process-wide singleton)
    other = build_model(cfg, intensity_scale=2.0)
    assert abs(models.intensity_scale - 500.0) < 1e-3 and abs(other.intensity_scale - 2.0) < 1e-6


def test_probe_is_normalised_from_the_raw_probe():
    from ptycho_k3 import physics

    raw = physics.default_probe(64) * 7.0
    models = build_model(ModelConfig(n_filters_scale=1, probe_scale=4.0), probe=raw)
    np.testing.assert_allclose(models.probe(), physics.normalize_probe(raw, 4.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(64, 64\)"):
        build_model(ModelConfig(n_filters_scale=1), probe=np.ones((32, 32)))


def test_supervised_model_has_no_physics_tail():
    cfg = TrainingConfig(model=ModelConfig(model_type="supervised", n_filters_scale=1))
    models = build_model(cfg.model, loss=cfg.loss)
    x, pos = random_inputs(np.random.default_rng(3), 2, 64, 1)
    out = models.training((x, pos))
    assert set(out) == {"trimmed_obj", "amplitude", "phase"}
    assert models.probe() is None


@pytest.mark.parametrize(
    "layer",
    [
        pl.IntensityScale(123.0),
        pl.ProbeIllumination(8, smoothing_sigma=0.5, use_mask=True),
        pl.ObjectCanvas(8, 12, object_big=True, probe_big=False, pad_object=True),
        pl.PatchExtraction(8),
        pl.FarField(),
        pl.PolarToComplex(),
        pl.TrimObject(8),
        pl.BorderMask(8),
        pl.PiTanh(),
        pl.SliceChannels(1, 3),
        pl.SliceChannels(1, 3, data_format="channels_first"),
        pl.BorderMask(8, data_format="channels_first"),
        pl.PolarToComplex(data_format="channels_first"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_are_registered_and_round_trip_their_config(layer):
    cfg = layer.get_config()
    name = keras.saving.get_registered_name(type(layer))
    assert name.startswith("ptycho_k3>")
    assert keras.saving.get_registered_object(name) is type(layer)
    clone = type(layer).from_config(cfg)
    assert clone.get_config() == cfg
    blob = keras.saving.serialize_keras_object(layer)
    again = keras.saving.deserialize_keras_object(blob)
    assert type(again) is type(layer) and again.get_config() == cfg


def test_decoded_support_regions():
    assert pl.decoded_support(8, probe_big=True, pad_object=True).sum() == 64
    assert pl.decoded_support(8, probe_big=False, pad_object=False).sum() == 64
    centre = pl.decoded_support(8, probe_big=False, pad_object=True)
    assert centre.sum() == 16 and centre[2:6, 2:6].all()


def test_mixed_bfloat16_runs_convs_in_bf16_and_physics_in_float32():
    f32 = build_model(ModelConfig(gridsize=2, n_filters_scale=1))
    bf16 = build_model(ModelConfig(gridsize=2, n_filters_scale=1, precision="mixed_bfloat16"))
    bf16.training.set_weights(f32.training.get_weights())  # float32 weights in both
    assert bf16.training.get_layer("enc0_conv0").compute_dtype == "bfloat16"
    for name in ("probe", "far_field", "object_canvas", "intensity_scale", "amp_act"):
        assert bf16.training.get_layer(name).compute_dtype == "float32", name
    x, pos = random_inputs(np.random.default_rng(4), 2, 64, 4)
    a = {k: to_numpy(v) for k, v in f32.training((x, pos)).items()}
    b = {k: to_numpy(v) for k, v in bf16.training((x, pos)).items()}
    # bfloat16 rounds to 8 significant bits: unit roundoff u = 2^-9 ~ 2e-3 per rounding. The
    # conv stack rounds L ~ 12 times between input and heads (6 encoder, 6 decoder convs), so
    # relative errors reach sqrt(L) u ~ 7e-3 if the roundings are independent and L u ~ 2.3e-2
    # if they all add up. The float32 physics outputs and the amplitude head average many
    # roundings (bound 1e-2; measured <= 8e-4 on the three backends); the phase head's small
    # logits take the full linear worst case (bound 2 L u = 4.7e-2; measured <= 2.1e-2).
    bounds = {"phase": 2 * 12 * 2.0**-9}
    for k in a:
        assert b[k].dtype == np.float32, k
        err = np.max(np.abs(a[k] - b[k])) / np.max(np.abs(a[k]))
        assert err < bounds.get(k, 1e-2), (k, err)


def test_channels_first_layers_match_channels_last():
    """Under torch the conv stack runs NCHW; the layout-aware layers must agree with NHWC."""
    from keras import ops

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
    xt = np.transpose(x, (0, 3, 1, 2))
    last = to_numpy(pl.SliceChannels(1, 4)(ops.convert_to_tensor(x)))
    first = to_numpy(pl.SliceChannels(1, 4, data_format="channels_first")(ops.convert_to_tensor(xt)))
    np.testing.assert_array_equal(np.transpose(first, (0, 2, 3, 1)), last)
    last = to_numpy(pl.BorderMask(8)(ops.convert_to_tensor(x)))
    first = to_numpy(pl.BorderMask(8, data_format="channels_first")(ops.convert_to_tensor(xt)))
    np.testing.assert_array_equal(np.transpose(first, (0, 2, 3, 1)), last)
    amp, ph = x[..., :2], x[..., 2:4]
    a = [to_numpy(t) for t in pl.PolarToComplex()([ops.convert_to_tensor(amp),
                                                    ops.convert_to_tensor(ph)])]
    b = [to_numpy(t) for t in pl.PolarToComplex(data_format="channels_first")(
        [ops.convert_to_tensor(np.transpose(amp, (0, 3, 1, 2))),
         ops.convert_to_tensor(np.transpose(ph, (0, 3, 1, 2)))])]
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6)

"""ptycho_k3.layers.Conv2D: the same results as keras.layers.Conv2D, with or without its PyTorch
inference fusion (bias inside the convolution, ReLU in place).

Tolerance: both paths run the same float32 oneDNN convolution; adding the bias inside it instead
of afterwards changes one rounding per output (|diff| <= 1e-6 relative to the output scale);
under mixed bfloat16 the outputs are bfloat16 (8 bits of mantissa), so the bound is 1e-2.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ptycho_k3.layers import Conv2D


def _pair(activation, use_bias, dtype, fmt):
    kw = dict(filters=5, kernel_size=3, padding="same", activation=activation, use_bias=use_bias,
              data_format=fmt, dtype=dtype)
    ours, ref = Conv2D(**kw), keras.layers.Conv2D(**kw)
    shape = (2, 3, 8, 6) if fmt == "channels_first" else (2, 8, 6, 3)
    ours.build(shape)
    ref.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(w.shape).astype("float32") for w in ref.weights]
    ours.set_weights(weights)
    ref.set_weights(weights)
    return ours, ref, rng.standard_normal(shape).astype("float32")


def _fmt():
    return "channels_first" if keras.backend.backend() == "torch" else "channels_last"


@pytest.mark.parametrize("activation", ["relu", None, "swish"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize(("dtype", "tol"), [("float32", 1e-6), ("mixed_bfloat16", 1e-2)])
def test_same_outputs_as_keras_conv2d(activation, use_bias, dtype, tol):
    ours, ref, x = _pair(activation, use_bias, dtype, _fmt())
    # predict_on_batch-like: no gradient recorded (the fused path under torch)
    got = keras.ops.convert_to_numpy(keras.ops.cast(_no_grad(ours, x), "float32"))
    want = keras.ops.convert_to_numpy(keras.ops.cast(ref(x), "float32"))
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)
    if activation == "relu":
        assert got.min() >= 0.0


def _no_grad(layer, x):
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            return layer(x)
    return layer(x)


def test_the_fused_path_is_what_runs_under_torch_without_gradients(monkeypatch):
    """The comparison above would pass just as well if the fused branch never ran: here every
    convolution is seen, and Keras's own ``call`` is made to fail."""
    if keras.backend.backend() != "torch":
        pytest.skip("the fusion exists under torch only (see test_fusion_applies_only_where_...)")
    import torch
    import torch.nn.functional as F

    ours, _, x = _pair("relu", True, "float32", "channels_first")
    real, with_bias = F.conv2d, []

    def spy(inputs, weight, bias=None, *args, **kwargs):
        with_bias.append(bias is not None)
        return real(inputs, weight, bias, *args, **kwargs)

    def keras_call(*args, **kwargs):
        raise AssertionError("keras.layers.Conv2D.call ran instead of the fused path")

    monkeypatch.setattr(F, "conv2d", spy)
    monkeypatch.setattr(keras.layers.Conv2D, "call", keras_call)
    with torch.no_grad():
        ours(torch.as_tensor(x))
    assert with_bias == [True]  # one convolution, the bias inside it
    with pytest.raises(AssertionError, match="instead of the fused path"):
        ours(torch.as_tensor(x))  # gradients recorded: Keras's call (patched to fail here)


def test_fusion_applies_only_where_it_is_exact():
    ours, _, _ = _pair("relu", True, "float32", _fmt())
    assert ours._fusable() == (keras.backend.backend() == "torch")
    strided = Conv2D(4, 3, strides=2, padding="same", data_format=_fmt())
    valid = Conv2D(4, 3, padding="valid", data_format=_fmt())
    assert not strided._fusable() and not valid._fusable()


def test_with_gradients_recorded_it_is_keras_conv2d():
    """While training (gradients recorded: the default outside predict) the layer runs Keras's
    own ``call``: the same values as ``keras.layers.Conv2D``."""
    ours, ref, x = _pair("relu", True, "float32", _fmt())
    out_ours, out_ref = ours(x), ref(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out_ours),
                               keras.ops.convert_to_numpy(out_ref), rtol=0, atol=1e-6)


def test_config_round_trip():
    layer = Conv2D(7, 3, padding="same", activation="relu", name="c")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is Conv2D
    assert clone.get_config() == layer.get_config()

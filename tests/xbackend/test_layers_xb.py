"""Every ``ptycho_k3.layers`` layer, rebuilt from its ``get_config`` under each backend with the
same NumPy weights: outputs and gradients (inputs and trainable weights) agree.

Tolerances as in ``test_physics_xb``: ``RTOL_SUM`` (1e-5) for bilinear sums and FFT
intensities, 1e-3 where a modulus ``sqrt`` meets dark pixels (FarField), 1e-4 where overlap
normalisation divides by small counts (ObjectCanvas), exact for masks and slices.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xb_compare import agree
from xb_strategies import (
    XB_SETTINGS,
    batch,
    magnitude,
    offset_kind,
    offsets,
    positive,
    real,
    seeds,
    zeros,
)

pytestmark = pytest.mark.crossbackend

RTOL_SUM = 1e-5


def check_layer(pool, cls: str, config: dict, args, *, seed: int, rtol: float = RTOL_SUM,
                list_input: bool = False, layer_weights=None, call_kwargs=None) -> None:
    req = {"op": "layer", "cls": cls, "config": {"name": cls.lower(), **config},
           "args": list(args), "list_input": list_input, "layer_weights": layer_weights,
           "call_kwargs": call_kwargs or {}}
    req["weight_seed"] = seed
    res = pool.call(req)
    agree(f"{cls} outputs", {b: r["values"] for b, r in res.items()}, rtol)
    agree(f"{cls} gradients", {b: r["grads"] for b, r in res.items()}, rtol)


@XB_SETTINGS
@given(seed=seeds, b=batch, n=st.sampled_from([8, 64]), c=st.sampled_from([1, 4]),
       fmt=st.sampled_from(["channels_last", "channels_first"]))
def test_border_mask(pool, seed, b, n, c, fmt):
    rng = np.random.default_rng(seed)
    shape = (b, n, n, c) if fmt == "channels_last" else (b, c, n, n)
    check_layer(pool, "BorderMask", {"n": n, "data_format": fmt}, [real(rng, shape)], seed=seed,
                rtol=0.0)


@XB_SETTINGS
@given(seed=seeds, b=batch, n=st.sampled_from([8, 64, 128]), c=st.sampled_from([1, 4]),
       scale=magnitude, dark=zeros)
def test_far_field(pool, seed, b, n, c, scale, dark):
    rng = np.random.default_rng(seed)
    args = [real(rng, (b, c, n, n), scale, dark), real(rng, (b, c, n, n), scale, dark)]
    check_layer(pool, "FarField", {}, args, seed=seed, rtol=1e-3, list_input=True)


@XB_SETTINGS
@given(seed=seeds, b=batch, s=st.sampled_from([1.0, 988.2, 1e-3]), inverse=st.booleans())
def test_intensity_scale(pool, seed, b, s, inverse):
    rng = np.random.default_rng(seed)
    log_scale = np.float32(np.log(s) + rng.uniform(-0.5, 0.5))
    check_layer(pool, "IntensityScale", {"initial_scale": s}, [positive(rng, (b, 8, 8, 2), 10.0)],
                seed=seed, layer_weights=[np.array(log_scale)], call_kwargs={"inverse": inverse})


@XB_SETTINGS
@given(seed=seeds, b=batch, gs=st.integers(1, 3), n=st.sampled_from([8, 64]),
       extra=st.sampled_from([4, 10]), kind=offset_kind, big=st.booleans(),
       probe_big=st.booleans(), pad=st.booleans())
def test_object_canvas(pool, seed, b, gs, n, extra, kind, big, probe_big, pad):
    rng = np.random.default_rng(seed)
    c = gs * gs if big else 1
    args = [real(rng, (b, c, n, n)), real(rng, (b, c, n, n)),
            offsets(rng, (b, c, 2), kind, extra / 2)]
    config = {"n": n, "size": n + extra, "object_big": big, "probe_big": probe_big,
              "pad_object": pad}
    check_layer(pool, "ObjectCanvas", config, args, seed=seed, rtol=1e-4, list_input=True)


@XB_SETTINGS
@given(seed=seeds, b=batch, gs=st.integers(1, 3), n=st.sampled_from([8, 64]),
       extra=st.sampled_from([0, 6, 14]), kind=offset_kind, scale=magnitude)
def test_patch_extraction(pool, seed, b, gs, n, extra, kind, scale):
    rng = np.random.default_rng(seed)
    p = n + extra
    args = [real(rng, (b, p, p), scale), real(rng, (b, p, p), scale),
            offsets(rng, (b, gs * gs, 2), kind, extra / 2 + 1)]
    check_layer(pool, "PatchExtraction", {"n": n}, args, seed=seed, list_input=True)


@XB_SETTINGS
@given(seed=seeds, b=batch, scale=st.sampled_from([1.0, 10.0, 1e-4]))
def test_pi_tanh(pool, seed, b, scale):
    rng = np.random.default_rng(seed)
    check_layer(pool, "PiTanh", {}, [real(rng, (b, 8, 8, 2), scale)], seed=seed)


@XB_SETTINGS
@given(seed=seeds, b=batch, n=st.sampled_from([8, 64]), c=st.sampled_from([1, 4]),
       fmt=st.sampled_from(["channels_last", "channels_first"]), dark=zeros)
def test_polar_to_complex(pool, seed, b, n, c, fmt, dark):
    rng = np.random.default_rng(seed)
    shape = (b, n, n, c) if fmt == "channels_last" else (b, c, n, n)
    args = [positive(rng, shape, 1.0, dark), real(rng, shape, np.pi)]
    check_layer(pool, "PolarToComplex", {"data_format": fmt}, args, seed=seed, list_input=True)


@XB_SETTINGS
@given(seed=seeds, b=batch, c=st.sampled_from([1, 4]), n=st.sampled_from([8, 64, 128]),
       sigma=st.sampled_from([0.0, 0.8]), mask=st.booleans(), trainable=st.booleans(),
       probe_zeros=zeros)
def test_probe_illumination(pool, seed, b, c, n, sigma, mask, trainable, probe_zeros):
    rng = np.random.default_rng(seed)
    probe = [real(rng, (n, n), 2.0, probe_zeros), real(rng, (n, n), 2.0, probe_zeros)]
    config = {"n": n, "smoothing_sigma": sigma, "use_mask": mask, "trainable": trainable}
    check_layer(pool, "ProbeIllumination", config,
                [real(rng, (b, c, n, n)), real(rng, (b, c, n, n))], seed=seed, list_input=True,
                layer_weights=probe)


@XB_SETTINGS
@given(seed=seeds, b=batch, c=st.integers(2, 9), fmt=st.sampled_from(["channels_last",
                                                                       "channels_first"]),
       data=st.data())
def test_slice_channels(pool, seed, b, c, fmt, data):
    start = data.draw(st.integers(0, c - 1))
    stop = data.draw(st.integers(start + 1, c))
    rng = np.random.default_rng(seed)
    shape = (b, 8, 8, c) if fmt == "channels_last" else (b, c, 8, 8)
    check_layer(pool, "SliceChannels", {"start": start, "stop": stop, "data_format": fmt},
                [real(rng, shape)], seed=seed, rtol=0.0)


@XB_SETTINGS
@given(seed=seeds, b=batch, n=st.sampled_from([8, 64]), extra=st.sampled_from([0, 1, 14]))
def test_trim_object(pool, seed, b, n, extra):
    rng = np.random.default_rng(seed)
    p = n + extra
    check_layer(pool, "TrimObject", {"n": n}, [real(rng, (b, p, p)), real(rng, (b, p, p))],
                seed=seed, rtol=0.0, list_input=True)

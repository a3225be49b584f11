"""A long-lived worker: one Keras backend, requests in, NumPy results out, over a pipe.

Started once per pytest run per backend by :mod:`xb_client` (``KERAS_BACKEND`` set in its
environment). Frames are a 8-byte little-endian length and a pickle, both ways, over the
worker's own stdin / the original stdout (anything a library prints goes to stderr). Pickle is
safe here: both ends are this test suite.

A request is a dict with ``op`` (one of :data:`HANDLERS`) and the op's fields; the reply is
``{"backend": keras backend name, "result": {...}}`` or ``{"backend": ..., "error": text}``.
Gradients are of the scalar ``sum_k sum(output_k * weights_k)`` with weights the parent sends,
so every backend's gradient is the same linear functional.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import tempfile
import traceback
from typing import Any

import numpy as np

_MODELS: dict[str, Any] = {}


def _np(x) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x))


def _t(a):
    from keras import ops

    return ops.convert_to_tensor(np.asarray(a))


def _tuple(out) -> tuple:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _physics_fn(name: str, static: dict[str, Any]):
    from ptycho_k3 import physics

    if name == "extract_many_at":
        return lambda *xs: physics.extract_many_at(xs[:-1], xs[-1], **static)
    if name == "scan_forward":
        # canvases..., probe_re, probe_im, positions
        return lambda *xs: physics.scan_forward(xs[:-3], *xs[-3:], **static)
    if name == "reassemble_patches":  # re, im, offsets, support
        return lambda *xs: physics.reassemble_patches(*xs[:3], support=xs[3], **static)
    if name == "illuminate":  # obj re, im, probe re, im [, mask]
        return lambda *xs: physics.illuminate(*xs[:4], mask=xs[4] if len(xs) > 4 else None,
                                              **static)
    fn = getattr(physics, name)
    return lambda *xs: fn(*xs, **static)


def _functional(fn, args, weight_seed, diff):
    """Values of fn(*args), and gradients of sum(out_k * w_k) w.r.t. args[i], i in diff, with
    w_k standard normal from NumPy's generator seeded with ``weight_seed`` (the same numbers on
    every backend, and no round trip to learn the output shapes)."""
    from keras import ops

    from ptycho_k3 import autodiff

    tensors = [_t(a) for a in args]
    outs = _tuple(fn(*tensors))
    result = {"values": [_np(o) for o in outs]}
    if weight_seed is not None and diff:
        rng = np.random.default_rng(weight_seed)
        wts = [_t(rng.standard_normal(v.shape).astype(np.float32)) for v in result["values"]]

        def scalar(*xs):
            full = list(tensors)
            for i, x in zip(diff, xs, strict=True):
                full[i] = x
            total = 0.0
            for o, w in zip(_tuple(fn(*full)), wts, strict=True):
                total = total + ops.sum(ops.cast(o, "float32") * w)
            return total, None

        (_, _), grads = autodiff.value_and_grad(scalar, range(len(diff)))(
            *[tensors[i] for i in diff])
        result["grads"] = [_np(g) for g in grads]
    return result


def op_physics(req):
    fn = _physics_fn(req["fn"], req.get("static", {}))
    return _functional(fn, req["args"], req.get("weight_seed"), req.get("diff", ()))


def op_layer(req):
    """Build a layer from its config, load shared weights, call it; gradients w.r.t. the
    inputs and (through ``stateless_call``) the trainable weights."""
    from keras import ops

    from ptycho_k3 import autodiff
    from ptycho_k3 import layers as L

    layer = getattr(L, req["cls"]).from_config(req["config"])
    inputs = [_t(a) for a in req["args"]]
    call_kwargs = req.get("call_kwargs", {})
    packed = inputs if req.get("list_input") else inputs[0]
    layer(packed, **call_kwargs)  # builds the weights
    if req.get("layer_weights") is not None:
        layer.set_weights(req["layer_weights"])
    result = {"values": [_np(o) for o in _tuple(layer(packed, **call_kwargs))],
              "layer_weights": [_np(w) for w in layer.weights]}
    if req.get("weight_seed") is None:
        return result
    rng = np.random.default_rng(req["weight_seed"])
    wts = [_t(rng.standard_normal(v.shape).astype(np.float32)) for v in result["values"]]
    n_in = len(inputs)
    ntv = [v.value for v in layer.non_trainable_weights]

    def scalar(*xs):
        ins, tv = list(xs[:n_in]), list(xs[n_in:])
        out, _ = layer.stateless_call(tv, ntv, ins if req.get("list_input") else ins[0],
                                      **call_kwargs)
        total = 0.0
        for o, w in zip(_tuple(out), wts, strict=True):
            total = total + ops.sum(o * w)
        return total, None

    tv = [v.value for v in layer.trainable_weights]
    (_, _), grads = autodiff.value_and_grad(scalar, range(n_in + len(tv)))(*inputs, *tv)
    result["grads"] = [_np(g) for g in grads]
    return result


def _model(cfg: dict[str, Any], scale: float, probe):
    import keras

    from ptycho_k3.config import TrainingConfig
    from ptycho_k3.model import build_model

    key = json.dumps(cfg, sort_keys=True) + repr(scale)
    if key not in _MODELS:
        tcfg = TrainingConfig.from_dict(cfg)
        # a fixed initial draw: the TensorFlow worker's weights are the ones every backend loads,
        # so a run in CI compares the same numbers as a run here (hypothesis is derandomised)
        keras.utils.set_random_seed(0)
        _MODELS[key] = build_model(tcfg.model, probe=probe, intensity_scale=scale, loss=tcfg.loss)
    return _MODELS[key]


def op_model(req):
    """Training model on shared weights: outputs, loss terms, loss, gradients (weights)."""

    from ptycho_k3 import autodiff

    models = _model(req["config"], req["scale"], req.get("probe"))
    model = models.training
    if req.get("model_weights") is not None:
        model.set_weights(req["model_weights"])
    x = (_t(req["x"]), _t(req["pos"]))
    out = model(x, training=False)
    result = {"outputs": {k: _np(v) for k, v in out.items()},
              "model_weights": [_np(w) for w in model.weights]}
    targets = req.get("targets")
    if targets is None:
        return result
    y = {k: _t(v) for k, v in targets.items()}
    ntv = [v.value for v in model.non_trainable_weights]

    def loss_of(*tv):
        y_pred, _ = model.stateless_call(list(tv), ntv, x, training=True)
        terms = model.loss_terms(y, y_pred)
        total = 0.0
        for name, w in model.loss_spec.terms:
            total = total + w * terms[name]
        return total, terms

    tv = [v.value for v in model.trainable_weights]
    (loss, terms), grads = autodiff.value_and_grad(loss_of, range(len(tv)))(*tv)
    result.update(loss=_np(loss), terms={k: _np(v) for k, v in terms.items()},
                  grads={v.path: _np(g) for v, g in zip(model.trainable_weights, grads,
                                                          strict=True)})
    return result


def op_bundle_save(req):
    from ptycho_k3.bundle import save_bundle

    models = _model(req["config"], req["scale"], req.get("probe"))
    models.training.set_weights(req["model_weights"])
    save_bundle(req["dir"], models, {"input_scale": req["scale"]})
    return {"dir": req["dir"]}


def op_bundle_predict(req):
    from ptycho_k3.bundle import load_bundle

    bundle = load_bundle(req["dir"])
    out = bundle.models.inference.predict_on_batch((np.asarray(req["x"]), np.asarray(req["pos"])))
    return {"values": [_np(out)], "manifest_backend": bundle.manifest.get("backend")}


def op_reconstruct(req):
    """Shared-weights model -> ``ptycho_k3.infer.reconstruct`` (predict + stitch) of a scan."""
    from ptycho_k3.data import ScanData
    from ptycho_k3.infer import reconstruct

    models = _model(req["config"], req["scale"], req.get("probe"))
    models.training.set_weights(req["model_weights"])
    s = req["scan"]
    scan = ScanData(xcoords=s["x"], ycoords=s["y"], diffraction=s["diffraction"],
                    probe=s["probe"])
    rec = reconstruct(models, scan, input_scale=req["scale"], batch_size=req["batch_size"],
                      seed=req["seed"], M=req["M"], keep_patches=False)
    st = rec.stitched
    return {"values": [st.obj, st.weight], "origin": (st.x0, st.y0)}


def op_refine(req):
    from ptycho_k3.config import RefineConfig
    from ptycho_k3.data import ScanData
    from ptycho_k3.refine import refine

    s = req["scan"]
    scan = ScanData(xcoords=s["x"], ycoords=s["y"], diffraction=s["diffraction"],
                    probe=s["probe"], metadata={"s_sim": s["scale"]})
    r = refine(scan, req["start"], RefineConfig.from_dict(req["config"]), x0=0, y0=0,
               mask=req.get("mask"))
    return {"values": [r.obj, r.probe, r.positions], "loss": np.asarray(r.history["loss"])}


HANDLERS = {"physics": op_physics, "layer": op_layer, "model": op_model,
            "bundle_save": op_bundle_save, "bundle_predict": op_bundle_predict,
            "reconstruct": op_reconstruct, "refine": op_refine}


def _read(stream) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(size))


def _write(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def main() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints must not corrupt frames
    inp = sys.stdin.buffer
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        # TensorFlow's CPU kernels may split a reduction differently from run to run (the
        # reference backend once gave a conv-kernel gradient 1e-2 away from its own value in
        # another run, where torch and JAX agreed with each other to the last digit): a
        # property must compare one fixed value per backend, so its ops are made deterministic.
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    tempfile.tempdir = os.environ.get("XB_TMP") or None
    while True:
        req = _read(inp)
        if req is None or req.get("op") == "exit":
            return
        try:
            reply = {"backend": backend, "result": HANDLERS[req["op"]](req)}
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the example
            reply = {"backend": backend, "error": traceback.format_exc()}
        _write(out, reply)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()

"""Run one model configuration on shared NumPy weights and inputs under one backend.

Usage: ``KERAS_BACKEND=<name> python tests/model/model_worker.py inputs.npz outputs.npz``.
If ``inputs.npz`` has no weights yet (``n_weights`` = 0) the worker writes its freshly
initialised weights (and its predicted amplitudes, from which the test makes targets) to
``outputs.npz`` so the other backends can load exactly those.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def grads_of(model, loss_fn, x):
    """Loss and gradients w.r.t. the trainable weights, per backend (tests only)."""
    import keras

    name = keras.backend.backend()
    tw = model.trainable_weights
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(model(x, training=True))
        return float(loss), [g.numpy() for g in tape.gradient(loss, tw)]
    if name == "torch":
        loss = loss_fn(model(x, training=True))
        loss.backward()
        return float(loss.detach()), [v.value.grad.detach().cpu().numpy() for v in tw]
    import jax

    ntv = [v.value for v in model.non_trainable_weights]

    def f(tvals):
        out, _ = model.stateless_call(tvals, ntv, x, training=True)
        return loss_fn(out)

    loss, grads = jax.value_and_grad(f)([v.value for v in tw])
    return float(loss), [np.asarray(g) for g in grads]


def main(src: str, dst: str) -> None:
    import keras
    from keras import ops

    from ptycho_k3.config import TrainingConfig
    from ptycho_k3.model import build_model

    with np.load(src) as f:
        inp = {k: f[k] for k in f.files}
    tcfg = TrainingConfig.from_dict(json.loads(str(inp["config"])))
    models = build_model(tcfg.model, intensity_scale=float(inp["scale"]), loss=tcfg.loss)
    model = models.training
    x = (inp["x"], inp["pos"])
    if int(inp["n_weights"]) == 0:
        pred = ops.convert_to_numpy(model(x)["pred_amp_scaled"])
        np.savez(dst, **{f"w{i}": ops.convert_to_numpy(w) for i, w in enumerate(model.weights)},
                 n_weights=len(model.weights), pred_amp_scaled=pred)
        return
    model.set_weights([inp[f"w{i}"] for i in range(int(inp["n_weights"]))])
    out = model(x, training=False)
    result = {f"out/{k}": ops.convert_to_numpy(v) for k, v in out.items()}
    targets = {k[2:]: inp[k] for k in inp if k.startswith("y/")}

    def loss_fn(y_pred):
        terms = model.loss_terms(targets, y_pred)
        return sum(w * terms[n] for n, w in model.loss_spec.terms)

    loss, grads = grads_of(model, loss_fn, x)
    result["loss"] = np.array(loss)
    for v, g in zip(model.trainable_weights, grads, strict=True):
        result[f"grad/{v.path}"] = g
    result["backend"] = np.array(keras.backend.backend())
    np.savez(dst, **result)


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    main(sys.argv[1], sys.argv[2])

"""Run the physics functions on shared NumPy inputs under one backend; save values and gradients.

Usage: ``KERAS_BACKEND=<name> python tests/crossbackend_worker.py inputs.npz outputs.npz``.
Every scalar used for a gradient is ``sum(output * fixed random weights)``, so gradients are
compared through the same linear functional on every backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from ptycho_k3 import physics  # noqa: E402

from backend_utils import backend, tensor, to_numpy, value_and_grad  # noqa: E402


def run(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def record(name, fn, args):
        """Store fn's outputs and the gradients of sum(outputs * weights) w.r.t. all args."""
        results = fn(*[tensor(a) for a in args])
        results = results if isinstance(results, tuple) else (results,)
        for k, r in enumerate(results):
            out[f"{name}/value{k}"] = to_numpy(r)

        def scalar(*xs):
            rs = fn(*xs)
            rs = rs if isinstance(rs, tuple) else (rs,)
            total = 0.0
            for k, r in enumerate(rs):
                total = total + ops.sum(r * tensor(inp[f"w_{name}{k}"]))
            return total

        _, grads = value_and_grad(scalar, args)
        for k, g in enumerate(grads):
            out[f"{name}/grad{k}"] = g

    record("translate", physics.translate, [inp["img_re"], inp["img_im"], inp["img_off"]])
    record(
        "extract_patches",
        lambda re, im, off: physics.extract_patches(re, im, off, 8),
        [inp["canvas_re"], inp["canvas_im"], inp["group_off"]],
    )
    record(
        "reassemble_patches",
        lambda re, im, off: physics.reassemble_patches(re, im, off, 14, support=inp["support"]),
        [inp["patch_re"], inp["patch_im"], inp["group_off"]],
    )
    record("diffract", physics.diffract, [inp["psi_re"], inp["psi_im"]])
    record(
        "illuminate",
        lambda a, b, c, d: physics.illuminate(a, b, c, d, smoothing_sigma=0.7),
        [inp["psi_re"], inp["psi_im"], inp["probe_re"], inp["probe_im"]],
    )
    record("poisson_nll", physics.mean_poisson_nll, [inp["lam"], inp["k"]])
    record("amplitude_mae", physics.amplitude_mae, [inp["lam"], inp["k"]])
    record("total_variation", physics.total_variation, [inp["psi_re"], inp["psi_im"]])
    out["backend"] = np.array(backend())
    return out


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Shared inputs (float32) and the fixed weights of every gradient functional."""
    rng = np.random.default_rng(seed)

    def f32(*shape, lo=-1.0, hi=1.0):
        return rng.uniform(lo, hi, shape).astype(np.float32)

    inp = {
        "img_re": f32(3, 12, 10), "img_im": f32(3, 12, 10),
        # fractional offsets away from integers, where bilinear weights have kinks
        "img_off": (rng.integers(-4, 5, (3, 2)) + rng.uniform(0.1, 0.9, (3, 2))).astype(np.float32),
        "canvas_re": f32(2, 14, 14), "canvas_im": f32(2, 14, 14),
        "group_off": (rng.integers(-3, 3, (2, 4, 2)) + rng.uniform(0.1, 0.9, (2, 4, 2))).astype(
            np.float32
        ),
        "patch_re": f32(2, 4, 8, 8), "patch_im": f32(2, 4, 8, 8),
        "support": (rng.uniform(size=(8, 8)) > 0.2).astype(np.float32),
        "psi_re": f32(3, 16, 16), "psi_im": f32(3, 16, 16),
        "probe_re": f32(16, 16), "probe_im": f32(16, 16),
        "lam": f32(4, 16, 16, lo=1.0, hi=1e3), "k": f32(4, 16, 16, lo=0.0, hi=1e3),
    }
    shapes = {
        "translate": [(3, 12, 10)] * 2, "extract_patches": [(2, 4, 8, 8)] * 2,
        "reassemble_patches": [(2, 14, 14)] * 2, "diffract": [(3, 16, 16)],
        "illuminate": [(3, 16, 16)] * 2, "poisson_nll": [()], "amplitude_mae": [()],
        "total_variation": [()],
    }
    for name, shs in shapes.items():
        for k, sh in enumerate(shs):
            inp[f"w_{name}{k}"] = rng.standard_normal(sh).astype(np.float32)
    return inp


if __name__ == "__main__":
    with np.load(sys.argv[1]) as f:
        inputs = {k: f[k] for k in f.files}
    np.savez(sys.argv[2], **run(inputs))

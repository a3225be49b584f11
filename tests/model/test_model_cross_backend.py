"""Same NumPy weights and inputs -> same model outputs, loss and gradients on all backends.

Weights are initialised once (TensorFlow) and loaded by every backend; seeds never have to agree.
The gradient test uses ``hidden_activation='swish'``: with ReLU, float32 rounding differences of
~1e-7 flip a handful of the millions of pre-activations that sit near zero, which changes
gradients legitimately. Tolerances (relative to the largest magnitude of each array):
outputs 1e-4 (a dozen float32 conv layers and an FFT, each ~1e-6, compounding; measured ~2e-6),
gradients 1e-3 (the same chain run backwards through the Poisson NLL, whose terms are ~1e6 and
cancel in the mean; measured ~6e-5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho_k3.config import ModelConfig, TrainingConfig

from xb_report import add_summary_line

HERE = Path(__file__).resolve().parent
WORKER = HERE / "model_worker.py"
BACKENDS = ("tensorflow", "torch", "jax")

pytestmark = pytest.mark.crossbackend


def run_worker(backend: str, src: Path, dst: Path) -> subprocess.Popen:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               TF_ENABLE_ONEDNN_OPTS="0")
    return subprocess.Popen([sys.executable, str(WORKER), str(src), str(dst)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, backend: str) -> None:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{backend} worker failed:\n{err[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model_xb")
    cfg = TrainingConfig(
        model=ModelConfig(N=64, gridsize=2, n_filters_scale=1, hidden_activation="swish",
                          probe_trainable=True, gaussian_smoothing_sigma=0.8),
        mae_weight=0.3,
    )
    scale = 988.2117688026185
    rng = np.random.default_rng(0)
    b, n, c = 4, 64, 4
    amp = rng.gamma(2.0, 0.25, (b, n, n, c)).astype(np.float32)  # ~ normalised diffraction
    amp *= np.sqrt(1024 / np.mean(np.sum(amp**2, axis=(1, 2))))
    inputs = {
        "x": (amp * scale).astype(np.float32),
        "pos": rng.uniform(-3, 3, (b, 1, 2, c)).astype(np.float32),
    }
    base = {"config": json.dumps(cfg.to_dict()), "scale": scale}
    np.savez(tmp / "init.npz", n_weights=0, **base, **inputs)
    finish(run_worker("tensorflow", tmp / "init.npz", tmp / "weights.npz"), "init")
    with np.load(tmp / "weights.npz") as f:
        weights = {k: f[k] for k in f.files}
    # Targets near the model's own prediction: where the data is bright but an untrained model
    # is dark, lambda is below float32 FFT rounding and k*log(lambda) (and 1 - k/lambda) is
    # rounding noise, different on every backend. Near lambda = k the NLL is well conditioned.
    pred = weights.pop("pred_amp_scaled")
    inputs["y/amplitude"] = (pred * rng.uniform(0.9, 1.1, pred.shape)).astype(np.float32)
    np.savez(tmp / "in.npz", **base, **weights, **inputs)
    procs = {bk: run_worker(bk, tmp / "in.npz", tmp / f"{bk}.npz") for bk in BACKENDS}
    out = {}
    for bk, p in procs.items():
        finish(p, bk)
        with np.load(tmp / f"{bk}.npz") as f:
            out[bk] = {k: f[k] for k in f.files}
    return out


def _rel(a, b) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b))) / max(float(np.max(np.abs(b))), 1e-30)


def test_outputs_agree(runs):
    ref = runs["tensorflow"]
    keys = [k for k in ref if k.startswith("out/")]
    assert {"out/trimmed_obj", "out/pred_intensity", "out/pred_amp_scaled"} <= set(keys)
    worst = 0.0
    for bk in BACKENDS[1:]:
        for k in keys:
            err = _rel(runs[bk][k], ref[k])
            worst = max(worst, err)
            assert err < 1e-4, f"{k}: {bk} vs tensorflow relative error {err:.2e}"
    add_summary_line(f"{'model outputs':>20s}: worst relative difference {worst:.2e}")


def test_loss_and_gradients_agree(runs):
    ref = runs["tensorflow"]
    grads = [k for k in ref if k.startswith("grad/")]
    assert len(grads) > 30  # every conv kernel and bias, the probe pair and log_scale
    assert any("probe" in k for k in grads) and any("log_scale" in k for k in grads)
    worst = 0.0
    for bk in BACKENDS[1:]:
        lr = abs(float(runs[bk]["loss"]) - float(ref["loss"])) / abs(float(ref["loss"]))
        assert lr < 1e-5, f"loss {bk} vs tensorflow: relative {lr:.2e}"
        for k in grads:
            assert np.any(ref[k] != 0), f"{k} has an all-zero gradient"
            err = _rel(runs[bk][k], ref[k])
            worst = max(worst, err)
            assert err < 1e-3, f"{k}: {bk} vs tensorflow relative error {err:.2e}"
    add_summary_line(f"{'model gradients':>20s}: worst relative difference {worst:.2e}")

"""The same NumPy inputs through every physics function under TensorFlow, PyTorch and JAX.

Each backend runs in its own subprocess (Keras fixes its backend at import). Values and gradients
must agree to ``RTOL * max|reference|`` per output: float32 FFTs and bilinear matmuls accumulate
rounding of ~1e-6 relative; 1e-5 leaves room for different summation orders, no more.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xb_report import add_summary_line

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "torch", "jax")
RTOL = 1e-5

pytestmark = pytest.mark.crossbackend


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    sys.path.insert(0, str(HERE))
    from crossbackend_worker import make_inputs

    tmp = tmp_path_factory.mktemp("xb")
    np.savez(tmp / "in.npz", **make_inputs())
    procs = {}
    for b in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=b, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
        procs[b] = subprocess.Popen(
            [sys.executable, str(HERE / "crossbackend_worker.py"), str(tmp / "in.npz"),
             str(tmp / f"{b}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    out = {}
    for b, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"worker for {b} failed:\n{err[-3000:]}"
        with np.load(tmp / f"{b}.npz") as f:
            out[b] = {k: f[k] for k in f.files}
            assert str(out[b]["backend"]) == b
    return out


def test_all_backends_agree(results):
    ref = results["tensorflow"]
    keys = sorted(k for k in ref if k != "backend")
    assert len(keys) >= 20
    worst: dict[str, float] = {}
    failures = []
    for key in keys:
        scale = max(float(np.max(np.abs(ref[key]))), 1e-12)
        for b in BACKENDS[1:]:
            got = results[b][key]
            assert got.shape == ref[key].shape, (key, b)
            err = float(np.max(np.abs(got.astype(np.float64) - ref[key]))) / scale
            fn = key.split("/")[0]
            worst[fn] = max(worst.get(fn, 0.0), err)
            if not err <= RTOL:
                failures.append(f"{key} {b} vs tensorflow: relative error {err:.2e}")
    for fn, err in sorted(worst.items()):
        add_summary_line(f"{fn:>20s}: worst relative difference (values and gradients) {err:.2e}")
    assert not failures, "\n".join(failures)

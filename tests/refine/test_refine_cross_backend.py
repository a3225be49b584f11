"""The same refinement (scan, start, options, seed) under TensorFlow, PyTorch and JAX.

Each backend runs in its own subprocess on shared NumPy inputs. Tolerance: after K updates the
float32 rounding of each step (FFT, gather/scatter sums in different orders, ~1e-6 relative)
is carried and mixed by the following steps; with 4 iterations of 4 batches (16 updates, probe
and positions refined too) the objects agree to ~5e-6 of their largest modulus (measured, see
the printed summary), so 1e-4 is the bound: 20x margin, while a different update rule
(a sign, a missing preconditioner, a different batch order) changes the object at the 1e-1 level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xb_report import add_summary_line

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "torch", "jax")
RTOL = 1e-4

pytestmark = pytest.mark.crossbackend


def _inputs(path: Path) -> None:
    from refine_helpers import raster_scan

    scan = raster_scan(n_side=6, size=112, seed=4)
    rng = np.random.default_rng(0)
    # the solver's start: the truth, blurred by noise, in scan coordinates (origin 0)
    start = scan.object * (1 + 0.3 * rng.standard_normal(scan.object.shape))
    cfg = {"iterations": 4, "batch": 9, "refine_probe": True, "probe_start": 1,
           "refine_positions": True, "position_start": 2, "seed": 3}
    np.savez(path, x=scan.xcoords + rng.normal(0, 0.3, scan.n_positions), y=scan.ycoords,
             diffraction=scan.diffraction, probe=scan.probe, s_sim=scan.metadata["s_sim"],
             start=start.astype(np.complex64), config=json.dumps(cfg))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    sys.path.insert(0, str(HERE))
    tmp = tmp_path_factory.mktemp("xb_refine")
    _inputs(tmp / "in.npz")
    procs = {}
    for b in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=b, TF_CPP_MIN_LOG_LEVEL="2")
        procs[b] = subprocess.Popen(
            [sys.executable, str(HERE / "refine_worker.py"), str(tmp / "in.npz"),
             str(tmp / f"{b}.npz")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
    out = {}
    for b, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"refine worker for {b} failed:\n{err[-3000:]}"
        with np.load(tmp / f"{b}.npz") as f:
            out[b] = {k: f[k] for k in f.files}
        assert str(out[b]["backend"]) == b  # each worker really ran its own backend
    return out


def test_refinement_agrees_across_backends(results):
    ref = results["tensorflow"]
    assert ref["loss"][-1] < 0.5 * ref["loss"][0]  # it did refine
    worst = {}
    for key in ("object", "probe", "positions", "loss"):
        scale = float(np.max(np.abs(ref[key])))
        for b in BACKENDS[1:]:
            err = float(np.max(np.abs(results[b][key] - ref[key]))) / scale
            worst[key] = max(worst.get(key, 0.0), err)
    for key, err in worst.items():
        add_summary_line(f"refine {key:>9s}: worst relative difference across backends {err:.2e}")
    assert all(err <= RTOL for err in worst.values()), worst

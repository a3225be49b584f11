"""``ptychodus -b train`` / ``-b reconstruct`` through ``ptycho-k3-ptychodus`` on a small
simulated scan: PINN under each backend against ``ptycho-infer`` on the same files and bundle,
Iterative and PINN-Refined end to end.

Cost (2 cores, shared with other work): the previous layout took 160-170 s (13 processes: two
trainings, ptycho-simulate, every ptychodus run a process of its own, ptychodus's pty-chi device
probe in each); this one 66 s in pytest (71 s wall, 90 CPU-s), measured with
``-m crossbackend --durations=0``. Processes: 1 training child, 5 reconstruction children
(PINN x 3 backends, Iterative, PINN-Refined), 3 ``ptycho-infer`` references.

- Data: 16 patterns, N 64, 128 px object, simulated with NumPy (tests/reference.py), one bad
  pixel; one training through ptychodus (torch, 1 epoch, BatchSize 8, ``--n_filters_scale 1``)
  while this process's own ``KERAS_BACKEND`` is jax: the bundle's manifest must say torch (the
  child takes the backend from ``[PtychoK3] Backend``).
- ptychodus runs in this process through the launcher's ``main`` (what the console script
  ``ptycho-k3-ptychodus`` calls, checked in test_ptychodus_reconstructors.py); its children
  (``ptycho-train``, ``ptycho-infer``, ``ptycho-reconstruct``) are processes. The three
  ``ptycho-infer`` references run concurrently with them.
- Supervised without ground truth is refused before any child starts: tested without ptychodus
  processes in test_ptychodus_reconstructors.py.
- The bundle ptychodus trains is written by ``ptycho-train`` itself (the child runs
  ``python -m ptycho_k3.cli.train``), so loading it in ptychodus under tensorflow and jax and in
  ``ptycho-infer`` covers both directions: a ptycho-train bundle in ptychodus, a ptychodus-trained
  bundle in ptycho-k3.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="needs the ptychodus extra")

from ptychodus_helpers import simulate_counts, write_workflow  # noqa: E402

pytestmark = pytest.mark.crossbackend
BIN = Path(sys.executable).parent
BACKENDS = ("tensorflow", "torch", "jax")
M = 16  # patterns: two training steps of BatchSize 8
ITERATIONS = 4  # Iterative / PINN-Refined
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def _settings(directory: Path, algorithm: str, backend: str, **extra: str) -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # ptychodus's keys are CamelCase
    cp.read_dict({"Processing": {"Algorithm": algorithm},
                  "PtychoK3": {"Backend": backend, "NumEpochs": "1", "BatchSize": "8",
                               "TrainArguments": "--n_filters_scale 1", **extra}})
    with open(directory / "settings.ini", "w") as fh:
        cp.write(fh)


def _start(name: str, *args: str, backend: str) -> subprocess.Popen:
    env = dict(os.environ, KERAS_BACKEND=backend, **ENV)
    return subprocess.Popen([str(BIN / name), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _wait(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{out[-4000:]}"


@pytest.fixture(scope="module")
def ptychodus_here(tmp_path_factory):
    """``run(*args, env_backend) -> exit status``: ``ptycho-k3-ptychodus`` in this process, its
    own ``KERAS_BACKEND`` set to ``env_backend``; HOME in a temporary directory, ptychodus's
    ProcessingCore restored afterwards, and ptychodus's pty-chi device probe (a Python
    subprocess per start, ~4 s here, for a library these tests do not use) answered empty."""
    import ptychodus.model.core as core
    import ptychodus.model.ptychi.device as ptychi_device

    from ptycho_k3.integrations.ptychodus import launcher

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core, "ProcessingCore", core.ProcessingCore)
        mp.setattr(ptychi_device, "probe_devices_via_subprocess", lambda: [])
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        for key, value in ENV.items():
            mp.setenv(key, value)

        def run(*args: str, env_backend: str = "jax") -> int:
            mp.setenv("KERAS_BACKEND", env_backend)
            return launcher.main(list(args))

        yield run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ptychodus_here):
    """Every ptychodus run of this module (module docstring); the three ``ptycho-infer``
    references run concurrently with the ptychodus runs that use the bundle. Returns
    ``(root, workflow directory)``; outputs under ``root/out_<name>`` and ``root/infer_<b>``."""
    root = tmp_path_factory.mktemp("ptychodus_batch")
    x, y, counts, probe, obj = simulate_counts(M, seed=0)
    bad = np.zeros(counts.shape[1:], bool)
    bad[5, 7] = True
    wf = write_workflow(root / "in", x, y, counts, probe, object_shape=obj.shape,
                        centre_m=(3e-6, -2e-6), bad_pixels=bad)
    _settings(wf, "ptycho-k3_PINN", "torch")
    # This process's KERAS_BACKEND is jax: the child must take torch from the settings.
    assert ptychodus_here("-b", "train", "-i", str(wf), "-o", str(root / "trained"),
                          env_backend="jax") == 0
    (wf / "model.zip").write_bytes((root / "trained" / "wts.h5.zip").read_bytes())
    refs = [_start("ptycho-infer", "--model_path", str(wf / "model.zip"), "--test_data",
                   str(wf / "product.h5"), "--output_dir", str(root / f"infer_{b}"), "-q",
                   backend=b) for b in BACKENDS]
    try:
        for b in BACKENDS:
            _settings(wf, "ptycho-k3_PINN", b)
            assert ptychodus_here("-b", "reconstruct", "-i", str(wf), "-o",
                                  str(root / f"out_{b}")) == 0, b
        for algorithm in ("Iterative", "PINN-Refined"):
            _settings(wf, f"ptycho-k3_{algorithm}", "torch", Iterations=str(ITERATIONS),
                      RefineIterations=str(ITERATIONS))
            assert ptychodus_here("-b", "reconstruct", "-i", str(wf), "-o",
                                  str(root / f"out_{algorithm}")) == 0, algorithm
    finally:
        for proc in refs:
            _wait(proc)
    return root, wf


def _check_geometry(got, g_in, x0: float, y0: float) -> None:
    """Same pixel size as the input; output pixel [0, 0] is input pixel (x0, y0) (§16)."""
    g = got.get_geometry()
    assert g.pixel_width_m == g_in.pixel_width_m and g.pixel_height_m == g_in.pixel_height_m
    h, w = got.get_array().shape[-2:]
    # 1e-3 px: metres from pixel arithmetic in float64.
    assert g.center_x_m == pytest.approx(
        g_in.center_x_m + (x0 + (w - 1) / 2 - (g_in.width_px - 1) / 2) * g_in.pixel_width_m,
        rel=0, abs=1e-3 * g_in.pixel_width_m)
    assert g.center_y_m == pytest.approx(
        g_in.center_y_m + (y0 + (h - 1) / 2 - (g_in.height_px - 1) / 2) * g_in.pixel_width_m,
        rel=0, abs=1e-3 * g_in.pixel_width_m)


def test_training_takes_the_backend_from_the_settings(runs):
    root, _ = runs
    with zipfile.ZipFile(root / "trained" / "wts.h5.zip") as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["backend"] == "torch"  # the launcher itself ran with KERAS_BACKEND=jax
    history = json.loads((root / "trained" / "history.json").read_text())["history"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


def test_pinn_matches_ptycho_infer_under_each_backend(runs):
    from ptychodus.api.io import load_product

    root, wf = runs
    g_in = load_product(wf / "product.h5").object_.get_geometry()
    for b in BACKENDS:
        got = load_product(root / f"out_{b}" / "product.000000.h5").object_
        with np.load(root / f"infer_{b}" / "reconstruction.npz") as z:
            ref, x0, y0 = z["object"], float(z["x0"]), float(z["y0"])
        a = got.get_array()[0]
        assert a.shape == ref.shape, b
        # Same command, inputs and bundle in two processes: equal up to float32 reduction order
        # (observed 0); 1e-5 of the largest amplitude.
        np.testing.assert_allclose(a, ref, atol=1e-5 * np.abs(ref).max(), err_msg=b)
        _check_geometry(got, g_in, x0, y0)


@pytest.mark.parametrize("algorithm", ["Iterative", "PINN-Refined"])
def test_iterative_and_refined_write_a_sane_product(runs, algorithm):
    """Flat start (Iterative) or the PINN's object (PINN-Refined), ITERATIONS under torch:
    the product holds a finite object inside the input frame and the per-iteration losses, and
    the data misfit went down."""
    from ptychodus.api.io import load_product

    root, wf = runs
    out = root / f"out_{algorithm}"
    got = load_product(out / "product.000000.h5")
    g_in = load_product(wf / "product.h5").object_.get_geometry()
    a = got.object_.get_array()[0]
    assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
    g = got.object_.get_geometry()
    assert g.pixel_width_m == g_in.pixel_width_m
    assert 64 <= a.shape[0] <= g_in.height_px and 64 <= a.shape[1] <= g_in.width_px
    # Whole object inside the input's frame: centre within half the size difference.
    for c, c_in, n, n_in in ((g.center_x_m, g_in.center_x_m, a.shape[1], g_in.width_px),
                             (g.center_y_m, g_in.center_y_m, a.shape[0], g_in.height_px)):
        assert abs(c - c_in) <= ((n_in - n) / 2 + 1e-6) * g_in.pixel_width_m
    losses = [v.value for v in got.losses]
    assert len(losses) >= ITERATIONS and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]

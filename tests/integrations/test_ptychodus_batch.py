"""``ptychodus -b train`` and ``-b reconstruct`` through ``ptycho-k3-ptychodus`` on a small
simulated scan, under each backend, against ``ptycho-infer`` on the same files and bundle.

One cross-backend test (~2.5 min on 2 cores): simulate (64 patterns, N 64); train once through
ptychodus (torch, 1 epoch) and once with ``ptycho-train`` (torch); reconstruct through ptychodus
under tensorflow and jax with the ``ptycho-train`` bundle and under torch with ptychodus's own,
and run ``ptycho-infer`` on ``product.h5`` (+ ``diffraction.h5``) with the same bundle and backend.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="needs the ptychodus extra")

from ptychodus_helpers import write_workflow  # noqa: E402

pytestmark = pytest.mark.crossbackend
BIN = Path(sys.executable).parent


def _run(name: str, *args: str, backend: str = "torch") -> None:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               TF_ENABLE_ONEDNN_OPTS="0")
    r = subprocess.run([str(BIN / name), *args], capture_output=True, text=True, env=env,
                       timeout=600, check=False)
    assert r.returncode == 0, f"{name} {args}: exit {r.returncode}\n{r.stdout[-3000:]}\n" \
                              f"{r.stderr[-3000:]}"


def _settings(directory: Path, algorithm: str, backend: str) -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_dict({"Processing": {"Algorithm": algorithm},
                  "PtychoK3": {"Backend": backend, "NumEpochs": "1",
                               "TrainArguments": "--n_filters_scale 1"}})
    with open(directory / "settings.ini", "w") as fh:
        cp.write(fh)


def test_batch_train_and_reconstruct_match_ptycho_infer(tmp_path):
    from ptychodus.api.io import load_product

    _run("ptycho-simulate", "--object", "lines", "--N", "64", "--n_images", "64", "--nphotons",
         "1e9", "--seed", "0", "--output_dir", str(tmp_path / "sim"), "-q")
    with np.load(tmp_path / "sim" / "train.npz") as z:
        x, y, amp, probe = z["xcoords"], z["ycoords"], z["diff3d"], z["probeGuess"]
        shape = z["objectGuess"].shape
    counts = np.round(amp.astype(np.float64) ** 2 * (1e5 / np.mean(np.sum(amp**2, (1, 2)))))
    bad = np.zeros(counts.shape[1:], bool)
    bad[5, 7] = True
    wf = write_workflow(tmp_path / "in", x, y, counts, probe, object_shape=shape,
                        centre_m=(3e-6, -2e-6), bad_pixels=bad)
    # ptychodus -b train -> its bundle; ptycho-train on the simulated NPZ -> the other one.
    _settings(wf, "ptycho-k3_PINN", "torch")
    _run("ptycho-k3-ptychodus", "-b", "train", "-i", str(wf), "-o", str(tmp_path / "trained"))
    _run("ptycho-train", "--train_data_file", str(tmp_path / "sim" / "train.npz"), "--nepochs",
         "1", "--n_filters_scale", "1", "--output_dir", str(tmp_path / "k3"), "-q")
    bundles = {"torch": tmp_path / "trained" / "wts.h5.zip",
               "tensorflow": tmp_path / "k3" / "wts.h5.zip", "jax": tmp_path / "k3" / "wts.h5.zip"}
    g_in = load_product(wf / "product.h5").object_.get_geometry()
    for backend, bundle in bundles.items():
        (wf / "model.zip").write_bytes(bundle.read_bytes())
        _settings(wf, "ptycho-k3_PINN", backend)
        out = tmp_path / f"out_{backend}"
        _run("ptycho-k3-ptychodus", "-b", "reconstruct", "-i", str(wf), "-o", str(out))
        _run("ptycho-infer", "--model_path", str(bundle), "--test_data", str(wf / "product.h5"),
             "--output_dir", str(tmp_path / f"infer_{backend}"), "-q", backend=backend)
        got = load_product(out / "product.000000.h5").object_
        with np.load(tmp_path / f"infer_{backend}" / "reconstruction.npz") as z:
            ref, x0, y0 = z["object"], float(z["x0"]), float(z["y0"])
        a = got.get_array()[0]
        assert a.shape == ref.shape, backend
        # Same command, inputs and bundle in two processes: equal up to float32 reduction order
        # (observed 0); 1e-5 of the largest amplitude.
        np.testing.assert_allclose(a, ref, atol=1e-5 * np.abs(ref).max(), err_msg=backend)
        g = got.get_geometry()
        assert g.pixel_width_m == g_in.pixel_width_m
        # Pixel [0, 0] of the output is input pixel (x0, y0): centred-pixel geometry (§16).
        h, w = ref.shape
        assert g.center_x_m == pytest.approx(
            g_in.center_x_m + (x0 + (w - 1) / 2 - (g_in.width_px - 1) / 2) * g_in.pixel_width_m,
            rel=0, abs=1e-3 * g_in.pixel_width_m)
        assert g.center_y_m == pytest.approx(
            g_in.center_y_m + (y0 + (h - 1) / 2 - (g_in.height_px - 1) / 2) * g_in.pixel_width_m,
            rel=0, abs=1e-3 * g_in.pixel_width_m)

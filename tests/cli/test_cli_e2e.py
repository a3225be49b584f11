"""End to end: train, reconstruct and score with the real entry points on a tiny simulated scan.

- ``test_infer_evaluate_current_backend`` runs ptycho-infer / ptycho-evaluate ``main()``
  in-process under the suite's backend (``make test`` runs it once per backend): every output
  file, its keys and dtypes, nothing in the working directory.
- ``test_cross_backend_matrix`` (``crossbackend``, runs once): ptycho-train under each backend
  (every training output checked, config.yaml reloadable) and ptycho-infer under the other two,
  console scripts in subprocesses exactly as users type them (``KERAS_BACKEND=torch ptycho-train ...``,
  ``ptycho-infer --backend tensorflow ...``). A bundle trained under each backend reconstructs
  under the other two with the same object as its writer's own reconstruction.

Tolerance of the cross-backend comparison: max |object_b - object_a| <= 1e-4 * max |object_a|.
The weights are bit-identical (float32 HDF5), so differences come only from float32 convolution,
FFT and reduction orders of the three frameworks (measured ~1e-7 .. 1e-6 relative, see the
printed table); 1e-4 leaves two orders of margin while still catching a wrong probe, scale or
weight mapping (those change the object at the 1e-1 level).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from xb_report import add_summary_line

TRAIN_ARGS = ("--N", "64", "--n_filters_scale", "1", "--n_groups", "64", "--nepochs", "1",
              "--batch_size", "16")
BACKENDS = ("tensorflow", "torch", "jax")
REL_TOL = 1e-4
BF16_TOL = 0.1


def _current_backend() -> str:
    from ptycho_k3.backend import resolve_backend

    return resolve_backend(None)


def _object(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z["object"]


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _check_training_outputs(run_dir: Path, backend: str, train: Path) -> None:
    from ptycho_k3.config_io import load_yaml, merge_training

    assert sorted(p.name for p in run_dir.iterdir()) == sorted([
        "wts.h5.zip", "history.json", "loss_curve.png", "config.yaml", "train.log",
        "checkpoint.zip", "reconstructed_amplitude.png", "reconstructed_phase.png", "reconstruction.npz",
        "metrics.json", "comparison_plot.png"])
    history = json.loads((run_dir / "history.json").read_text())
    assert history["epochs"] == 1 and history["backend"] == backend
    for key in ("loss", "val_loss", "nll", "val_nll", "learning_rate"):
        assert len(history["history"][key]) == 1 and np.isfinite(history["history"][key][0])
    log = (run_dir / "train.log").read_text()
    assert "nphotons = 1e+09 from the training file's _metadata" in log
    reloaded = merge_training({}, load_yaml(run_dir / "config.yaml")).config
    assert (reloaded.model.N, reloaded.model.n_filters_scale, reloaded.nepochs) == (64, 1, 1)
    assert reloaded.nphotons == 1e9 and reloaded.train_data_file == str(train)
    params = json.loads(_zip_member(run_dir / "wts.h5.zip", "params.json"))
    assert params["input_scale"] == pytest.approx(np.sqrt(1e9) / 32)
    assert params["nphotons_source"] == "metadata" and params["data"]["n_positions"] == 64


def test_infer_evaluate_current_backend(tmp_path, tiny_scans, monkeypatch):
    """ptycho-infer and ptycho-evaluate ``main()`` in-process under the suite's backend.

    The bundle is an untrained model saved with :func:`save_bundle` (training through the CLI
    is covered per backend by the cross-backend test); inference does not care.
    """
    from ptycho_k3 import physics
    from ptycho_k3.bundle import save_bundle
    from ptycho_k3.cli import evaluate as evaluate_cli
    from ptycho_k3.cli import infer as infer_cli
    from ptycho_k3.config import ModelConfig
    from ptycho_k3.data import load_npz
    from ptycho_k3.model import build_model

    backend = _current_backend()
    _, test = tiny_scans
    s = physics.intensity_scale(1e9, 64)
    models = build_model(ModelConfig(N=64, n_filters_scale=1), probe=load_npz(test).probe,
                         intensity_scale=s)
    run_dir = tmp_path / "run"
    save_bundle(run_dir, models, {"input_scale": s})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "recon"
    rc = infer_cli.main(["--model_path", str(run_dir / "wts.h5.zip"), "--test_data", str(test),
                         "--output_dir", str(out), "--batch_size", "8", "--debug_dump",
                         "--backend", backend, "--quiet"])
    assert rc == 0
    assert {"reconstructed_amplitude.png", "reconstructed_phase.png", "reconstruction.npz",
            "metrics.json", "comparison_plot.png", "inference.log", "data_reading.json",
            "debug_dump"} == {p.name for p in out.iterdir()}
    assert json.loads((out / "data_reading.json").read_text())["reading"]["format"] == "npz"
    assert {p.name for p in (out / "debug_dump").iterdir()} == {
        "pred_patches_amp_grid.png", "offsets.json", "stats.json", "canvas.json"}
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["object"].ndim == 2
        assert np.all(np.isfinite(z["object"])) and np.abs(z["object"]).max() > 0
        np.testing.assert_allclose(z["amplitude"], np.abs(z["object"]), rtol=1e-6)
        np.testing.assert_allclose(z["phase"], np.angle(z["object"]), atol=1e-6)
        assert z["xcoords"].shape == z["ycoords"].shape == (64,)
        assert float(z["x0"]) == int(z["x0"]) and int(z["M"]) == 20
        obj_a = z["object"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["amplitude"]["applicable"] and metrics["phase"]["applicable"]
    assert f"under {backend}" in (out / "inference.log").read_text()

    # The same bundle through the directory path and --n_groups 24 of the 64 positions: the
    # same as reconstructing a scan of just those 24 patterns (gridsize 1: a group is a pattern;
    # normalisation is over the patterns used), and not the full run again.
    out2 = tmp_path / "recon2"
    rc = infer_cli.main(["--model_path", str(run_dir), "--test_data", str(test),
                         "--output_dir", str(out2), "--n_groups", "24", "--quiet"])
    assert rc == 0
    from ptycho_k3.infer import reconstruct

    scan = load_npz(test)
    with np.load(out2 / "reconstruction.npz", allow_pickle=False) as z:
        sub_xy = np.stack([z["xcoords"], z["ycoords"]], axis=1)
        obj_sub, origin = z["object"], (float(z["x0"]), float(z["y0"]))
    rows = [int(np.flatnonzero(np.all(scan.positions == xy, axis=1))[0]) for xy in sub_xy]
    assert len(set(rows)) == 24  # 24 distinct patterns of the scan
    alone = reconstruct(models, scan.select(np.array(rows)), input_scale=s).stitched
    assert (alone.x0, alone.y0) == origin
    assert _rel_diff(alone.obj, obj_sub) <= REL_TOL
    assert obj_sub.shape != obj_a.shape or _rel_diff(obj_a, obj_sub) > 1e-3  # not the full run

    # --precision mixed_bfloat16 runs the float32 bundle's network in bfloat16 (8-bit mantissa,
    # ~4e-3 relative per op, a few % after ~20 layers): the object moves by more than float32
    # noise and less than BF16_TOL; the physics and stitching stay float32.
    out3 = tmp_path / "recon_bf16"
    rc = infer_cli.main(["--model_path", str(run_dir), "--test_data", str(test),
                         "--output_dir", str(out3), "--precision", "mixed_bfloat16", "--quiet"])
    assert rc == 0
    assert "network in mixed_bfloat16" in (out3 / "inference.log").read_text()
    assert "network in float32" in (out / "inference.log").read_text()
    bf16 = _object(out3 / "reconstruction.npz")
    assert bf16.dtype == np.complex64
    assert 1e-4 < _rel_diff(obj_a, bf16) <= BF16_TOL

    rc = evaluate_cli.main(["--reconstruction", str(out / "reconstruction.npz"),
                            "--ground_truth", str(test), "--output", str(tmp_path / "m.json"),
                            "--quiet"])
    assert rc == 0
    rescored = json.loads((tmp_path / "m.json").read_text())
    assert rescored["amplitude"]["mae"] == pytest.approx(metrics["amplitude"]["mae"], rel=1e-6)
    assert list(cwd.iterdir()) == []


def test_uniform_phase_ground_truth_does_not_crash(tmp_path, tiny_scans):
    """The original crashed with "No non-uniform region found"; here phase is n/a."""
    from ptycho_k3.cli import evaluate as evaluate_cli

    _, test = tiny_scans
    with np.load(test, allow_pickle=False) as z:
        gt = np.abs(z["objectGuess"]).astype(np.complex64)  # phase exactly 0
    gt_path = tmp_path / "gt.npz"
    np.savez(gt_path, objectGuess=gt)
    rec = tmp_path / "rec.npz"
    np.savez(rec, object=gt[20:100, 20:100] * np.exp(0.1j), x0=20.0, y0=20.0,
             xcoords=np.array([40.0, 80.0]), ycoords=np.array([40.0, 80.0]), M=np.int64(20))
    rc = evaluate_cli.main(["--reconstruction", str(rec), "--ground_truth", str(gt_path),
                            "--quiet"])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["phase"]["applicable"] is False and metrics["phase"]["reason"]
    assert metrics["amplitude"]["applicable"] is True
    assert metrics["amplitude"]["mae"] < 1e-3


@pytest.mark.crossbackend
def test_cross_backend_matrix(tmp_path, tiny_scans):
    train, test = tiny_scans
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # How each writer is invoked: the ways users type it.
    how = {
        "tensorflow": ("ptycho-train", ("--backend", "tensorflow"), None),
        "torch": ("ptycho-train", (), "torch"),  # KERAS_BACKEND=torch ptycho-train ...
        "jax": ("ptycho_train", ("--backend", "jax"), "torch"),  # --backend beats the env
    }
    runs = {}
    for writer, (script, extra, env_backend) in how.items():
        run_dir = tmp_path / f"train_{writer}"
        proc = run_cli(script, "--train_data_file", str(train), "--test_data_file", str(test),
                       *TRAIN_ARGS, "--output_dir", str(run_dir), "--do_stitching", *extra,
                       keras_backend=env_backend, cwd=cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        manifest = json.loads(_zip_member(run_dir / "wts.h5.zip", "manifest.json"))
        assert manifest["backend"] == writer
        _check_training_outputs(run_dir, writer, train)
        if writer == "jax":
            assert "backend jax from --backend overrides KERAS_BACKEND=torch" in proc.stderr
        runs[writer] = run_dir

    table = []
    for writer, run_dir in runs.items():
        reference = _object(run_dir / "reconstruction.npz")
        for reader in BACKENDS:
            if reader == writer:
                continue
            out = tmp_path / f"infer_{writer}_by_{reader}"
            if reader == "tensorflow":  # ptycho-infer --backend tensorflow ..., env says jax
                proc = run_cli("ptycho-infer", "--backend", "tensorflow", "--model_path",
                               str(run_dir), "--test_data", str(test), "--output_dir", str(out),
                               keras_backend="jax", cwd=cwd)
            else:
                proc = run_cli("ptycho_inference", "--model_path", str(run_dir / "wts.h5.zip"),
                               "--test_data", str(test), "--output_dir", str(out),
                               keras_backend=reader, cwd=cwd)
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert f"written by {writer}) under {reader}" in proc.stderr
            rel = _rel_diff(reference, _object(out / "reconstruction.npz"))
            table.append((writer, reader, rel))
            assert rel <= REL_TOL, f"{writer} -> {reader}: relative difference {rel:.2e}"
    print("\ncross-backend reconstruction agreement (max|diff| / max|object|):")
    for writer, reader, rel in table:
        print(f"  trained {writer:10s} reconstructed {reader:10s} {rel:.2e}")
        add_summary_line(f"CLI bundle trained under {writer} reconstructed under {reader}: "
                         f"max|diff|/max|obj| = {rel:.2e} (tol {REL_TOL:.0e})")
    assert len(table) == 6
    assert list(cwd.iterdir()) == []


def _zip_member(path: Path, member: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return zf.read(member)

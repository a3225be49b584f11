"""ptycho-reconstruct and ptycho-infer --refine_iterations end to end, in-process, under the
suite's backend: every output file, its keys, and that both commands run the same engine."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_scans):
    """An untrained model saved as a bundle (inference and refinement do not care)."""
    from ptycho_k3 import physics
    from ptycho_k3.bundle import save_bundle
    from ptycho_k3.config import ModelConfig
    from ptycho_k3.data import load_npz
    from ptycho_k3.model import build_model

    _, test = tiny_scans
    s = physics.intensity_scale(1e9, 64)
    models = build_model(ModelConfig(N=64, n_filters_scale=1), probe=load_npz(test).probe,
                         intensity_scale=s)
    run_dir = tmp_path_factory.mktemp("bundle")
    save_bundle(run_dir, models, {"input_scale": s})
    return run_dir


def _history(path):
    return json.loads((path / "refinement_history.json").read_text())


def test_reconstruct_flat(tmp_path, tiny_scans, monkeypatch):
    from ptycho_k3.cli import reconstruct as cli

    _, test = tiny_scans
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "flat"
    assert cli.main(["--test_data", str(test), "--iterations", "4", "--refine_batch", "16",
                     "--output_dir", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} == {
        "reconstruction.npz", "reconstructed_amplitude.png", "reconstructed_phase.png",
        "convergence.png", "metrics.json", "comparison_plot.png", "refinement_history.json",
        "reconstruct.log", "data_reading.json"}
    reading = json.loads((out / "data_reading.json").read_text())
    assert reading["file"] == str(test) and reading["options"]["format"] == "auto"
    assert reading["reading"]["format"] == "npz" and reading["reading"]["probe"] == \
        "from 'probeGuess'" and reading["reading"]["invalid_pixels"]["total"] == 0
    h = _history(out)
    run = h["runs"]["flat start"]
    assert run["iteration"] == [0, 1, 2, 3, 4] and len(run["loss"]) == 5
    assert run["loss"][-1] < 0.2 * run["loss"][0]
    assert len(run["amplitude_ssim"]) == 5 and run["amplitude_ssim"][-1] > run["amplitude_ssim"][0]
    assert h["config"]["iterations"] == 4 and h["config"]["batch"] == 16
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["object"].dtype == np.complex64 and z["probe"].shape == (64, 64)
        assert "positions" not in z  # only when positions were corrected
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["amplitude"]["ssim"] == pytest.approx(run["amplitude_ssim"][-1], abs=1e-6)


def test_infer_refine_and_reconstruct_pinn_agree(tmp_path, tiny_scans, bundle, monkeypatch):
    from ptycho_k3.cli import infer as infer_cli
    from ptycho_k3.cli import reconstruct as reconstruct_cli

    _, test = tiny_scans
    monkeypatch.chdir(tmp_path)
    flags = ["--refine_batch", "16", "--refine_probe", "--refine_probe_start", "1",
             "--refine_positions", "--refine_position_start", "1", "--quiet"]
    out = tmp_path / "infer"
    assert infer_cli.main(["--model_path", str(bundle), "--test_data", str(test),
                           "--output_dir", str(out), "--refine_iterations", "3",
                           "--compare_flat", *flags]) == 0
    assert {"pinn_reconstruction.npz", "reconstruction.npz", "refined_probe.png",
            "position_corrections.png", "convergence.png", "refinement_history.json",
            "metrics.json", "comparison_plot.png", "inference.log", "data_reading.json",
            "reconstructed_amplitude.png", "reconstructed_phase.png"} == {
        p.name for p in out.iterdir()}
    h = _history(out)
    assert set(h["runs"]) == {"PINN start", "flat start"}
    assert h["seconds_start"] > 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["positions"].shape == z["initial_positions"].shape == (64, 2)
        moved = np.abs(z["positions"] - z["initial_positions"]).max()
        assert 0 < moved <= 3 * 0.5 + 1e-6  # clamped to max_position_shift per iteration
        refined, probe = z["object"], z["probe"]
    with np.load(test) as t:
        start_power = np.sum(np.abs(t["probeGuess"]) ** 2)
    np.testing.assert_allclose(np.sum(np.abs(probe) ** 2), start_power, rtol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "start" in metrics and metrics["start"]["amplitude"]["applicable"]

    # --iterations there is --refine_iterations here: the same engine, the same result
    out2 = tmp_path / "recon"
    assert reconstruct_cli.main(["--test_data", str(test), "--init", "pinn", "--model_path",
                                 str(bundle), "--iterations", "3", "--output_dir", str(out2),
                                 *flags]) == 0
    with np.load(out2 / "reconstruction.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["object"], refined, rtol=0,
                                   atol=1e-5 * np.abs(refined).max())
    assert _history(out2)["runs"]["PINN start"]["loss"] == pytest.approx(
        h["runs"]["PINN start"]["loss"], rel=1e-5)

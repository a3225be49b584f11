"""FRC without ground truth from the command line: ``ptycho-evaluate --reference`` and
``--halves`` of ptycho-reconstruct / ptycho-infer, in-process under the suite's backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_lines
from scipy import ndimage
from test_cli_refine import bundle  # noqa: F401 - the module fixture: an untrained bundle

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEYS = ("reached", "ring", "frequency_per_px", "resolution_px")


def _object(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((2, n, n)), (0, 2.0, 2.0))
    field /= field.std(axis=(1, 2), keepdims=True)
    return (0.8 + 0.1 * field[0]) * np.exp(0.5j * field[1])


def _pair(tmp_path: Path, **extra_a) -> tuple[Path, Path]:
    """Two noisy reconstructions of one object on the same grid, different origins/canvases."""
    from ptycho_k3.outputs import save_reconstruction_npz

    obj = _object(100, 0)
    rng = np.random.default_rng(1)
    noisy = [obj + 0.1 * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))
             for _ in range(2)]
    xs = np.r_[30.0, 70.0, rng.uniform(30, 70, 14)]
    ys = np.r_[30.0, 70.0, rng.uniform(30, 70, 14)]
    a = save_reconstruction_npz(tmp_path / "a" / "reconstruction.npz", noisy[0][5:95, 2:98],
                                2.0, 5.0, xs, ys, 20, extra=extra_a)
    b = save_reconstruction_npz(tmp_path / "b" / "reconstruction.npz", noisy[1][0:90, 10:100],
                                10.0, 0.0, xs + 0.5, ys - 0.5, 20)
    return a, b


def test_evaluate_reference_end_to_end(tmp_path, capsys):
    from ptycho_k3.cli import evaluate as cli

    a, b = _pair(tmp_path, pixel_size_m=np.float64(1e-8))
    assert cli.main(["--reconstruction", str(a), "--reference", str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("FRC resolution (full period") and " nm)" in out[0]
    report = json.loads((a.parent / "frc.json").read_text())
    assert (a.parent / "frc.png").read_bytes()[:8] == PNG_MAGIC
    assert report["pixel_size_m"] == 1e-8 and report["pixel_size_source"] == "reconstruction"
    assert report["inputs"] == {"reconstruction": str(a), "reference": str(b)}
    side = report["side"]
    # scanned in both: x 31..70 (B's centres start at 30.5), y 30..69 (B's end at 69.5)
    assert side == 40 and report["square"] == [25, 65, 29, 69]
    assert report["origin"] == [2.0, 5.0]
    assert len(report["curve"]) == len(report["n_k"]) == len(report["half_bit"]) == side // 2 + 1
    assert report["frequency_per_nm"][1] == pytest.approx(1 / (side * 10.0))
    for name in ("frc50", "frc1over7", "half_bit"):
        t = report["thresholds"][name]
        assert set(KEYS) <= set(t) and t["reached"]
        assert t["resolution_px"] == pytest.approx(side / t["ring"])
        assert t["resolution_nm"] == pytest.approx(10.0 * t["resolution_px"])
    # the flag beats the file, and --output moves both files
    target = tmp_path / "x" / "res.json"
    assert cli.main(["--reconstruction", str(a), "--reference", str(b), "--pixel_size", "2e-9",
                     "--output", str(target), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    flagged = json.loads(target.read_text())
    assert flagged["pixel_size_source"] == "flag" and target.with_suffix(".png").exists()
    hb, hb_flag = report["thresholds"]["half_bit"], flagged["thresholds"]["half_bit"]
    assert hb_flag["resolution_px"] == pytest.approx(hb["resolution_px"])
    assert hb_flag["resolution_nm"] == pytest.approx(0.2 * hb["resolution_nm"])


@pytest.mark.parametrize("case", ["no_object", "bad_pixel_size", "off_grid", "both", "neither",
                                  "not_npz"])
def test_evaluate_reference_bad_input(tmp_path, capsys, case):
    from ptycho_k3.cli import evaluate as cli

    a, b = _pair(tmp_path)
    target = tmp_path / "frc.json"
    args = ["--reconstruction", str(a), "--reference", str(b), "--output", str(target)]
    expected = None
    if case == "no_object":
        with np.load(b) as z:
            np.savez(b, **{k: z[k] for k in z.files if k != "object"})
        expected = f"{b}: no 'object' array"
    elif case == "bad_pixel_size":
        with np.load(a) as z:
            np.savez(a, **{k: z[k] for k in z.files}, pixel_size_m=np.float64(-1.0))
        expected = f"{a}: 'pixel_size_m' must be > 0"
    elif case == "off_grid":
        with np.load(b) as z:
            np.savez(b, **{k: z[k] for k in z.files if k != "x0"}, x0=np.float64(10.25))
        expected = "not on the same pixel grid"
    elif case == "both":
        args += ["--ground_truth", str(b)]
        expected = "give exactly one of --ground_truth"
    elif case == "neither":
        args = ["--reconstruction", str(a), "--output", str(target)]
        expected = "give exactly one of --ground_truth"
    else:
        b.write_bytes(b"not an npz")
        expected = f"{b} is not a readable NPZ"
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("ptycho-evaluate: error: "), lines
    assert expected in lines[0]
    assert captured.out == ""
    assert not target.exists() and not target.with_suffix(".png").exists()


def _measured_like(src: Path, dst: Path, pixel_m: float) -> Path:
    """A copy of a simulated scan as measured data come: no ground truth (``objectGuess``,
    patches), and a ``_metadata`` that states the object pixel size."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in ("objectGuess", "Y",
                                                         "ground_truth_patches")}
    meta = json.loads(str(arrays.get("_metadata", "{}")))
    meta["object_pixel_m"] = pixel_m
    arrays["_metadata"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)
    return dst


def _check_halves(out: Path, n_total: int, pixel_m: float) -> dict:
    for half in ("half_1", "half_2"):
        with np.load(out / half / "reconstruction.npz", allow_pickle=False) as z:
            assert z["object"].dtype == np.complex64
            assert float(z["pixel_size_m"]) == pytest.approx(pixel_m)
        assert (out / half / "reconstructed_phase.png").exists()
    report = json.loads((out / "frc.json").read_text())
    assert report["halves"]["n_positions"] == [n_total // 2, n_total // 2]
    assert report["halves"]["rule"].startswith("alternate positions")
    assert report["pixel_size_m"] == pytest.approx(pixel_m)
    assert (out / "frc.png").read_bytes()[:8] == PNG_MAGIC
    return report


def test_reconstruct_halves(tmp_path, tiny_scans, monkeypatch, capsys):
    from ptycho_k3.cli import reconstruct as cli

    monkeypatch.chdir(tmp_path)
    test = _measured_like(tiny_scans[1], tmp_path / "test.npz", 1e-8)
    out = tmp_path / "out"
    assert cli.main(["--test_data", str(test), "--halves", "--iterations", "3",
                     "--output_dir", str(out)]) == 0
    for half in ("half_1", "half_2"):
        names = {p.name for p in (out / half).iterdir()}
        assert {"reconstruction.npz", "reconstructed_amplitude.png", "convergence.png",
                "refinement_history.json"} <= names
        assert "metrics.json" not in names  # no ground truth
        history = json.loads((out / half / "refinement_history.json").read_text())
        assert history["config"]["iterations"] == 3
    report = _check_halves(out, 64, 1e-8)
    hb = report["thresholds"]["half_bit"]
    # noise-free simulation (1e9 photons): the halves agree to a few pixels
    assert hb["reached"] is False or 2.0 <= hb["resolution_px"] < 10.0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'frc.json'}" in printed and f"wrote {out / 'half_2'}" in printed


def test_infer_halves_with_refinement(tmp_path, tiny_scans, bundle, monkeypatch):  # noqa: F811
    from ptycho_k3.cli import infer as cli

    monkeypatch.chdir(tmp_path)
    test = _measured_like(tiny_scans[1], tmp_path / "test.npz", 2e-8)
    out = tmp_path / "out"
    assert cli.main(["--model_path", str(bundle), "--test_data", str(test), "--halves",
                     "--refine_iterations", "2", "--output_dir", str(out), "--quiet"]) == 0
    for half in ("half_1", "half_2"):
        names = {p.name for p in (out / half).iterdir()}
        assert {"pinn_reconstruction.npz", "reconstruction.npz",
                "refinement_history.json"} <= names
        with np.load(out / half / "pinn_reconstruction.npz", allow_pickle=False) as z:
            assert float(z["pixel_size_m"]) == pytest.approx(2e-8)
    _check_halves(out, 64, 2e-8)


def test_halves_need_two_positions(tmp_path, tiny_scans, capsys):
    from ptycho_k3.cli import reconstruct as cli

    out = tmp_path / "out"
    assert cli.main(["--test_data", str(tiny_scans[1]), "--halves", "--n_subsample", "1",
                     "--output_dir", str(out), "--quiet"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--halves needs at least 2 scan positions, got 1" in lines[0]
    assert not out.exists()

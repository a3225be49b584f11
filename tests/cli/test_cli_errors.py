"""Bad input -> exit status 2, exactly one line on stderr, no traceback, nothing written.

Each case runs the installed console script in a subprocess with an empty working directory and
an output directory that must not be created. These runs fail before Keras is imported, so they
take well under a second each.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_lines, fake_zip, run_cli, write_scan


def _valid_manifest(version: int = 1) -> bytes:
    return json.dumps({"format": "ptycho-k3-bundle", "format_version": version,
                       "models": ["autoencoder", "diffraction_to_obj"]}).encode()


def _full_members(version: int = 1) -> dict[str, bytes]:
    return {
        "manifest.json": _valid_manifest(version),
        "params.json": json.dumps({"model": {"N": 64}, "input_scale": 1.0}).encode(),
        "autoencoder/model.weights.h5": b"\0" * 4096,
        "diffraction_to_obj/model.weights.h5": b"\0" * 4096,
    }


def _make_inputs(tmp: Path, case: str) -> list[str]:
    """Files for ``case``; returns the argv after the script name (output dir added later)."""
    good = write_scan(tmp / "good.npz")
    if case == "missing_key":  # (a missing probeGuess is made from the data, §22)
        return ["ptycho-train", "--train_data_file", str(write_scan(tmp / "x.npz", ycoords=None))]
    if case == "nan":  # a NaN pixel is an invalid pixel; a pattern of only NaN is an error
        diff = np.ones((8, 64, 64), np.float32)
        diff[3] = np.nan
        return ["ptycho-train", "--train_data_file", str(write_scan(tmp / "x.npz", diff3d=diff))]
    if case == "n63":
        return ["ptycho-train", "--train_data_file", str(good), "--N", "63"]
    if case == "n_mismatch":
        return ["ptycho-train", "--train_data_file", str(good), "--N", "128"]
    if case == "unknown_backend":
        return ["ptycho-train", "--train_data_file", str(good), "--backend", "theano"]
    if case == "bad_bool":
        return ["ptycho-train", "--train_data_file", str(good), "--object_big", "maybe"]
    if case == "unknown_flag":
        return ["ptycho-train", "--train_data_file", str(good), "--bogus_flag", "1"]
    if case == "no_train_file":
        return ["ptycho-train", "--nepochs", "1"]
    if case == "missing_file":
        return ["ptycho-train", "--train_data_file", str(tmp / "nope.npz")]
    if case == "bad_yaml":
        (tmp / "c.yaml").write_text("N: [64\n")
        return ["ptycho-train", "--train_data_file", str(good), "--config", str(tmp / "c.yaml")]
    recon = ["ptycho-reconstruct", "--test_data", str(good)]
    if case == "refine_negative_iterations":
        return ["ptycho-infer", "--model_path", str(tmp), "--test_data", str(good),
                "--refine_iterations", "-1"]
    if case == "refine_bad_batch":
        return [*recon, "--refine_batch", "0"]
    if case == "refine_bad_alpha":
        return [*recon, "--refine_alpha", "2"]
    if case == "refine_bad_loss":
        return [*recon, "--refine_loss", "l2"]
    if case == "reconstruct_no_data":
        return ["ptycho-reconstruct", "--iterations", "3"]
    if case == "reconstruct_pinn_without_model":
        return [*recon, "--init", "pinn"]
    if case == "refine_no_diffraction":
        return ["ptycho-reconstruct", "--test_data",
                str(write_scan(tmp / "x.npz", diff3d=None)), "--iterations", "3"]
    bundle_dir = tmp / "model"
    bundle_dir.mkdir()
    zp = bundle_dir / "wts.h5.zip"
    if case == "corrupt_bundle":
        zp.write_bytes(os.urandom(2048))
    elif case == "truncated_bundle":
        fake_zip(zp, _full_members())
        data = zp.read_bytes()
        zp.write_bytes(data[: len(data) // 2])
    elif case == "legacy_tf_bundle":
        fake_zip(zp, {"manifest.dill": pickle.dumps({"models": ["autoencoder"], "version": "1.0"}),
                      "autoencoder/model.keras": b"PK", "autoencoder/custom_objects.dill": b"x",
                      "autoencoder/params.dill": b"x"})
    elif case == "legacy_torch_bundle":
        fake_zip(zp, {"manifest.dill": pickle.dumps({"version": "2.0-pytorch"}),
                      "diffraction_to_obj/model.pth": b"x"})
    elif case == "foreign_zip":
        fake_zip(zp, {"readme.txt": b"hello"})
    elif case == "future_bundle":
        fake_zip(zp, _full_members(version=99))
    elif case == "incomplete_bundle":
        members = _full_members()
        del members["diffraction_to_obj/model.weights.h5"]
        fake_zip(zp, members)
    elif case == "no_bundle_dir":
        zp = tmp / "empty_dir"
        zp.mkdir()
    else:  # pragma: no cover
        raise AssertionError(case)
    return ["ptycho-infer", "--model_path", str(zp), "--test_data", str(good)]


CASES = {
    "missing_key": "x.npz: missing key 'ycoords'",
    "nan": "x.npz: 'diff3d' pattern 3 has no valid pixel",
    "n63": "N must be one of",
    "n_mismatch": "64x64",
    "unknown_backend": "tensorflow, pytorch, torch, jax",
    "bad_bool": "true/false",
    "unknown_flag": "unrecognized arguments",
    "no_train_file": "--train_data_file is required",
    "missing_file": "nope.npz",
    "bad_yaml": "invalid YAML",
    "corrupt_bundle": "not a zip",
    "truncated_bundle": "zip",
    "legacy_tf_bundle": "legacy PtychoPINN TensorFlow bundle",
    "legacy_torch_bundle": "legacy PtychoPINN PyTorch bundle",
    "foreign_zip": "not a ptycho-k3 bundle",
    "future_bundle": "format version 99",
    "incomplete_bundle": "missing diffraction_to_obj/model.weights.h5",
    "no_bundle_dir": "holds no wts.h5.zip",
    "refine_negative_iterations": "expected an integer >= 0, got '-1'",
    "refine_bad_batch": "expected a positive integer, got '0'",
    "refine_bad_alpha": "refine alpha must be in (0, 1]",
    "refine_bad_loss": "invalid choice: 'l2'",
    "reconstruct_no_data": "--test_data is required",
    "reconstruct_pinn_without_model": "--init pinn needs --model_path",
    "refine_no_diffraction": "missing key 'diff3d'",
}


def _check(case, rc, stderr, script, out, cwd, inputs, before):
    lines = error_lines(stderr)
    assert rc == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{script}: error: ")
    assert CASES[case] in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not out.exists(), "a failed run must not create its output directory"
    assert list(cwd.iterdir()) == [], "nothing may be written in the working directory"
    assert sorted(p.name for p in inputs.rglob("*")) == before


def _dirs(tmp_path):
    inputs, cwd = tmp_path / "inputs", tmp_path / "cwd"
    inputs.mkdir()
    cwd.mkdir()
    return inputs, cwd, tmp_path / "out"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case, capsys,
                                                            monkeypatch):
    """Every case through the commands' ``main()`` in-process (fails before Keras loads)."""
    from ptycho_k3.cli import infer as infer_cli
    from ptycho_k3.cli import reconstruct as reconstruct_cli
    from ptycho_k3.cli import train as train_cli

    inputs, cwd, out = _dirs(tmp_path)
    script, *args = _make_inputs(inputs, case)
    before = sorted(p.name for p in inputs.rglob("*"))
    monkeypatch.chdir(cwd)
    main = {"ptycho-train": train_cli.main, "ptycho-infer": infer_cli.main,
            "ptycho-reconstruct": reconstruct_cli.main}[script]
    rc = main([*args, "--output_dir", str(out)])
    _check(case, rc, capsys.readouterr().err, script, out, cwd, inputs, before)


@pytest.mark.parametrize("case", ["n63", "unknown_backend", "legacy_tf_bundle", "nan",
                                  "refine_negative_iterations", "refine_no_diffraction"])
def test_bad_input_as_typed(tmp_path, case):
    """The same through the installed console scripts in a subprocess."""
    inputs, cwd, out = _dirs(tmp_path)
    script, *args = _make_inputs(inputs, case)
    before = sorted(p.name for p in inputs.rglob("*"))
    proc = run_cli(script, *args, "--output_dir", str(out), cwd=cwd)
    _check(case, proc.returncode, proc.stderr, script, out, cwd, inputs, before)


def test_verbose_shows_the_traceback(tmp_path):
    good = write_scan(tmp_path / "good.npz")
    proc = run_cli("ptycho-train", "--train_data_file", str(good), "--N", "63", "--verbose",
                   "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ptycho-train: error: N must be")


def test_keras_backend_env_unknown_is_named(tmp_path):
    good = write_scan(tmp_path / "good.npz")
    proc = run_cli("ptycho_train", "--train_data_file", str(good),
                   "--output_dir", str(tmp_path / "out"), env={"KERAS_BACKEND": "mxnet"})
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "ptycho-train: error: unknown backend 'mxnet' (from KERAS_BACKEND); choose one of "
        "tensorflow, pytorch, torch, jax"
    ]


def test_evaluate_bad_inputs(tmp_path):
    rec = tmp_path / "rec.npz"
    np.savez(rec, object=np.ones((10, 10), np.complex64), x0=0.0, y0=0.0)
    no_gt = write_scan(tmp_path / "scan.npz")
    proc = run_cli("ptycho-evaluate", "--reconstruction", str(rec), "--ground_truth", str(no_gt),
                   "--output", str(tmp_path / "m.json"))
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        f"ptycho-evaluate: error: {no_gt}: no ground truth ('objectGuess' or 'object')"]
    assert not (tmp_path / "m.json").exists()
    buf = io.BytesIO(b"not an npz")
    (tmp_path / "bad.npz").write_bytes(buf.getvalue())
    proc = run_cli("ptycho-evaluate", "--reconstruction", str(tmp_path / "bad.npz"),
                   "--ground_truth", str(no_gt))
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1


def test_legacy_bundle_is_never_unpickled(tmp_path):
    """A manifest.dill whose unpickling would run code is refused without running it."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bundle = tmp_path / "wts.h5.zip"
    fake_zip(bundle, {"manifest.dill": pickle.dumps(Exploit()),
                      "autoencoder/model.keras": b"x", "autoencoder/custom_objects.dill": b"x"})
    with zipfile.ZipFile(bundle) as zf:
        assert "manifest.dill" in zf.namelist()
    proc = run_cli("ptycho-infer", "--model_path", str(bundle),
                   "--test_data", str(write_scan(tmp_path / "t.npz")),
                   "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "legacy PtychoPINN" in proc.stderr
    assert not marker.exists()

"""Bad input -> exit status 2, exactly one line on stderr, no traceback, nothing written.

Each case runs a command with an empty working directory and an output directory that must not
be created. Most fail before Keras is imported and take well under a second each; the training
data cases (grouping, normalisation, validation split: ``ptycho_k3.train.prepare``) import Keras
but build no model.
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


def _full_members(version: int = 1, gridsize: int = 1) -> dict[str, bytes]:
    return {
        "manifest.json": _valid_manifest(version),
        "params.json": json.dumps({"model": {"N": 64, "gridsize": gridsize},
                                   "input_scale": 1.0}).encode(),
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
    if case == "label_terms_object_small":  # one decoded patch against four labels
        return ["ptycho-train", "--train_data_file", str(good), "--gridsize", "2",
                "--no-object_big", "--realspace_weight", "1", "--realspace_mae_weight", "1"]
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
    zero = np.zeros((8, 64, 64), np.float32)
    if case == "reconstruct_zero_energy":
        return ["ptycho-reconstruct", "--test_data", str(write_scan(tmp / "zero.npz", diff3d=zero)),
                "--iterations", "3"]
    # Data that the bundle's gridsize cannot group, or that has no energy to normalise: refused
    # after the bundle's params are read, before the weights load or the output exists.
    scan_file = {"gs2_three_positions": write_scan(tmp / "p3.npz", m=3),
                 "gs2_halves_of_five": write_scan(tmp / "p5.npz", m=5),
                 "gs2_reconstruct_pinn": write_scan(tmp / "p3.npz", m=3),
                 "infer_zero_energy": write_scan(tmp / "zero.npz", diff3d=zero)}.get(case)
    if scan_file is not None:
        model = tmp / "model"
        model.mkdir()
        fake_zip(model / "wts.h5.zip", _full_members(gridsize=1 if "zero" in case else 2))
        if case == "gs2_reconstruct_pinn":
            return ["ptycho-reconstruct", "--test_data", str(scan_file), "--init", "pinn",
                    "--model_path", str(model), "--iterations", "1"]
        extra = ["--halves"] if case == "gs2_halves_of_five" else []
        return ["ptycho-infer", "--model_path", str(model), "--test_data", str(scan_file), *extra]
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
    "label_terms_object_small": "object_big false and gridsize 2 decodes one patch per group",
    "reconstruct_zero_energy": "zero.npz: the diffraction data has zero",
    "gs2_three_positions": "p3.npz: gridsize 2 needs groups of 4 positions; the scan has only 3",
    "gs2_halves_of_five": "p5.npz: gridsize 2 needs groups of 4 positions; the scan has only 3 "
                          "(in half_1 of --halves: 3 positions)",
    "gs2_reconstruct_pinn": "p3.npz: gridsize 2 needs groups of 4",
    "infer_zero_energy": "zero.npz: the diffraction data has zero",
}


def _train_inputs(tmp: Path, case: str) -> list[str]:
    """Training data that only the run's own checks refuse (grouping, normalisation, the
    validation split); ``--quiet`` keeps the INFO lines logged on the way off stderr."""
    near = {"xcoords": np.array([40.0, 42, 40, 42, 41]),  # close: no canvas-margin warning
            "ycoords": np.array([40.0, 40, 42, 42, 41])}
    args = {
        "train_gs2_five_positions": [str(write_scan(tmp / "p5.npz", m=5)), "--gridsize", "2"],
        "train_one_position": [str(write_scan(tmp / "p1.npz", m=1))],
        "train_zero_energy": [str(write_scan(tmp / "zero.npz",
                                             diff3d=np.zeros((8, 64, 64), np.float32)))],
        "train_stitching_test_too_small": [
            str(write_scan(tmp / "p5.npz", m=5, **near)), "--gridsize", "2", "--n_groups", "2",
            "--do_stitching", "--test_data_file", str(write_scan(tmp / "p3.npz", m=3))],
    }[case]
    return ["ptycho-train", "--quiet", "--nepochs", "1", "--train_data_file", *args]


TRAIN_CASES = {
    "train_gs2_five_positions": "p5.npz: n_groups=512 exceeds the 5 scan positions at "
                                "gridsize 2; lower n_groups, or set enable_oversampling",
    "train_one_position": "p1.npz: only 1 group(s) could be formed",
    "train_zero_energy": "zero.npz: the diffraction data has zero",
    "train_stitching_test_too_small": "p3.npz: gridsize 2 needs groups of 4 positions",
}


def _check(case, rc, stderr, script, out, cwd, inputs, before):
    lines = error_lines(stderr)
    assert rc == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{script}: error: ")
    assert {**CASES, **TRAIN_CASES}[case] in lines[0], lines[0]
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


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_training_data_exits_2_before_any_output(tmp_path, case, capsys, monkeypatch):
    """Data refused by grouping, normalisation or the validation split: the training run
    checks it (``ptycho_k3.train.prepare``) before the output directory, ``train.log`` or
    ``config.yaml`` exist. In-process; Keras is imported, no model is built."""
    from ptycho_k3.cli import train as train_cli

    inputs, cwd, out = _dirs(tmp_path)
    script, *args = _train_inputs(inputs, case)
    before = sorted(p.name for p in inputs.rglob("*"))
    monkeypatch.chdir(cwd)
    rc = train_cli.main([*args, "--output_dir", str(out)])
    _check(case, rc, capsys.readouterr().err, script, out, cwd, inputs, before)


@pytest.mark.parametrize("case", ["train_zero_energy", "infer_zero_energy"])
def test_existing_output_dir_is_left_as_it_was(tmp_path, case, capsys, monkeypatch):
    """A failed run writes nothing into an output directory that already exists (no log file,
    no config.yaml)."""
    from ptycho_k3.cli import infer as infer_cli
    from ptycho_k3.cli import train as train_cli

    inputs, cwd, out = _dirs(tmp_path)
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    make = _train_inputs if case.startswith("train") else _make_inputs
    script, *args = make(inputs, case)
    monkeypatch.chdir(cwd)
    main = {"ptycho-train": train_cli.main, "ptycho-infer": infer_cli.main}[script]
    rc = main([*args, "--output_dir", str(out)])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1 and "zero.npz: the diffraction data has zero" in lines[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("case", ["n63", "unknown_backend", "legacy_tf_bundle", "nan",
                                  "refine_negative_iterations", "refine_no_diffraction",
                                  "gs2_three_positions", "train_gs2_five_positions"])
def test_bad_input_as_typed(tmp_path, case):
    """The same through the installed console scripts in a subprocess."""
    inputs, cwd, out = _dirs(tmp_path)
    make = _train_inputs if case in TRAIN_CASES else _make_inputs
    script, *args = make(inputs, case)
    before = sorted(p.name for p in inputs.rglob("*"))
    proc = run_cli(script, *args, "--output_dir", str(out), cwd=cwd,
                   keras_backend=os.environ.get("KERAS_BACKEND"))
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


@pytest.mark.parametrize(("origin", "message"), [
    ({}, "no 'x0' or 'y0' (the object's origin in scan coordinates"),
    ({"x0": 0.0}, "no 'y0' (the object's origin"),
    ({"x0": "a", "y0": 0.0}, "'x0' must be a finite real scalar"),
    ({"x0": 0.0, "y0": np.nan}, "'y0' must be a finite real scalar"),
    ({"x0": np.zeros(2), "y0": 0.0}, "'x0' must be a finite real scalar"),
])
@pytest.mark.parametrize("against", ["ground_truth", "reference"])
def test_evaluate_reconstruction_without_a_usable_origin(tmp_path, capsys, origin, message,
                                                         against):
    """x0/y0 place the object in scan coordinates: missing or not a number is bad data."""
    from ptycho_k3.cli import evaluate as evaluate_cli

    rec = tmp_path / "rec.npz"
    np.savez(rec, object=np.ones((40, 40), np.complex64), **origin)
    other = tmp_path / "other.npz"
    if against == "ground_truth":
        np.savez(other, objectGuess=np.ones((60, 60), np.complex64))
    else:
        np.savez(other, object=np.ones((40, 40), np.complex64), x0=0.0, y0=0.0)
    out = tmp_path / "out" / "m.json"
    rc = evaluate_cli.main(["--reconstruction", str(rec), f"--{against}", str(other),
                            "--output", str(out)])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"ptycho-evaluate: error: {rec}: ") and message in lines[0]
    assert not out.parent.exists()


def test_log_file_starts_with_the_lines_of_the_checks(tmp_path):
    """The checks log before the log file exists (a run refused there writes nothing); the
    log file, once created, starts with those lines."""
    import argparse
    import logging
    import warnings

    from ptycho_k3.cli._common import add_log_file, close_log_files, setup_logging

    saved = {name: list(logging.getLogger(name).handlers) for name in ("ptycho_k3", "py.warnings")}
    try:
        log = setup_logging("ptycho-test", argparse.Namespace(console_level="WARNING",
                                                              verbose=False, quiet=True))
        log.info("checked before the file")
        warnings.warn("a warning before the file", UserWarning, stacklevel=1)
        add_log_file(tmp_path / "out" / "run.log")
        log.info("after the file")
        close_log_files()
    finally:
        logging.captureWarnings(False)
        for name, handlers in saved.items():
            logging.getLogger(name).handlers = handlers
    text = (tmp_path / "out" / "run.log").read_text()
    first, warned, after = (text.index(t) for t in (
        "checked before the file", "a warning before the file", "after the file"))
    assert first < warned < after
    assert text.count("checked before the file") == 1


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

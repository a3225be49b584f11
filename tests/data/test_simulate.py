"""Simulation: objects, reproducibility, Parseval, phase, patches, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import npz_arrays

from ptycho_k3.data import load_npz, save_npz
from ptycho_k3.data.objects import OBJECT_KINDS, make_object
from ptycho_k3.data.simulate import (
    raster_positions,
    simulate_dataset,
    simulate_from_scan,
    simulate_train_test,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", OBJECT_KINDS)
def test_objects_deterministic_with_nonuniform_phase(kind):
    a = make_object(kind, 64, np.random.default_rng(0))
    b = make_object(kind, 64, np.random.default_rng(0))
    c = make_object(kind, 64, np.random.default_rng(1))
    assert a.shape == (64, 64) and a.dtype == np.complex64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
    assert np.ptp(np.angle(a)) > 0.1  # non-uniform phase on by default
    flat = make_object(kind, 64, np.random.default_rng(0), phase=False)
    assert np.all(flat.imag == 0)
    np.testing.assert_allclose(np.abs(a), flat.real, rtol=1e-5, atol=1e-6)


def test_train_test_reproducible_and_distinct():
    kw = dict(n_test_images=8, object_size=100, chunk=16)
    tr1, te1 = simulate_train_test("lines", 64, 24, 1e6, seed=3, **kw)
    tr2, te2 = simulate_train_test("lines", 64, 24, 1e6, seed=3, **kw)
    tr3, _ = simulate_train_test("lines", 64, 24, 1e6, seed=4, **kw)
    np.testing.assert_array_equal(tr1.diffraction, tr2.diffraction)
    np.testing.assert_array_equal(te1.diffraction, te2.diffraction)
    assert not np.array_equal(tr1.diffraction, tr3.diffraction)
    assert not np.array_equal(tr1.object, te1.object)  # two different objects
    np.testing.assert_array_equal(tr1.probe, te1.probe)  # same probe
    np.testing.assert_array_equal(tr1.xcoords[:8], te1.xcoords)  # same geometry
    assert tr1.n_positions == 24 and te1.n_positions == 8
    assert tr1.nphotons == 1e6 and tr1.metadata["simulation"]["object"] == "lines"
    # positions keep every patch inside the object (default buffer N/2)
    assert tr1.xcoords.min() >= 32 and tr1.xcoords.max() <= 100 - 32


def test_parseval_and_photon_count():
    """Noise-free limit: sum A^2 = sum |P O|^2, and s_sim^2 * energy = nphotons on average."""
    rng = np.random.default_rng(0)
    obj = make_object("grf", 96, rng)
    from ptycho_k3 import physics

    probe = physics.default_probe(64).astype(np.complex64)
    x, y = raster_positions(9, (96, 96), 64)
    d = simulate_dataset(obj, probe, x, y, 1e12, np.random.default_rng(1), chunk=4)
    psi = d.patches * probe
    e_psi = np.sum(np.abs(psi.astype(np.complex128)) ** 2, axis=(1, 2))
    e_amp = np.sum(d.diffraction.astype(np.float64) ** 2, axis=(1, 2))
    np.testing.assert_allclose(e_amp, e_psi, rtol=1e-4)  # Parseval (Poisson noise ~1e-6)
    s = d.metadata["s_sim"]
    assert np.mean(e_amp) * s**2 == pytest.approx(1e12, rel=1e-4)
    # DC at (N/2, N/2)
    assert np.all(d.diffraction[:, 32, 32] == d.diffraction.max(axis=(1, 2)))


def test_poisson_counts_are_integers():
    rng = np.random.default_rng(0)
    obj = make_object("points", 80, rng)
    probe = np.ones((64, 64), np.complex64)
    d = simulate_dataset(obj, probe, np.array([40.0, 41.5]), np.array([40.0, 39.25]), 1e4,
                         np.random.default_rng(2))
    counts = (d.diffraction.astype(np.float64) * d.metadata["s_sim"]) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-2)
    assert d.patches[0, 32, 32] == pytest.approx(obj[40, 40], rel=1e-5)


def test_simulate_from_scan(tmp_path):
    tr, _ = simulate_train_test("diagonals", 64, 10, 1e6, seed=0, n_test_images=1,
                                object_size=90)
    path = save_npz(tmp_path / "scan.npz", tr)
    scan = load_npz(path)
    sim = simulate_from_scan(scan, nphotons=1e5, seed=7)
    np.testing.assert_array_equal(sim.xcoords, scan.xcoords)
    np.testing.assert_array_equal(sim.object, scan.object)
    assert sim.nphotons == 1e5 and not np.array_equal(sim.diffraction, scan.diffraction)
    back = load_npz(save_npz(tmp_path / "sim.npz", sim))
    np.testing.assert_array_equal(back.patches, sim.patches)


def _cli(*args, env_backend=True):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, "-m", "ptycho_k3.cli.simulate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_cli_writes_train_and_test(tmp_path):
    out = tmp_path / "data"
    r = _cli("--object", "points", "--N", "64", "--n-images", "12", "--n_test_images", "5",
             "--nphotons", "1e6", "--seed", "0", "--object_size", "96", "--output_dir", str(out),
             "--no-progress")
    assert r.returncode == 0, r.stderr
    train, test = load_npz(out / "train.npz"), load_npz(out / "test.npz")
    assert train.n_positions == 12 and test.n_positions == 5
    assert train.nphotons == 1e6 and train.object is not None and train.patches is not None
    assert not np.array_equal(train.object, test.object)
    r = _cli("--from", str(out / "test.npz"), "--output", str(tmp_path / "re.npz"),
             "--nphotons", "1e4")
    assert r.returncode == 0, r.stderr
    assert load_npz(tmp_path / "re.npz").nphotons == 1e4


def test_cli_errors_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    a = npz_arrays()
    del a["diff3d"]
    np.savez(bad, **a)
    no_probe = tmp_path / "no_probe.npz"
    a = npz_arrays()
    del a["probeGuess"]  # readers make a probe from the data; a simulation must not use one
    np.savez(no_probe, **a)
    for args, expected in [
        (("--from", str(no_probe)), "missing key 'probeGuess'"),
        (("--probe", str(no_probe)), "missing key 'probeGuess'"),
        (("--N", "32"), "--N"),
        (("--from", str(bad)), "missing key 'diff3d'"),
        (("--from", str(tmp_path / "none.npz")), "file not found"),
        (("--backend", "mxnet"), "--backend"),
        (("--nphotons", "-5"), "nphotons"),
    ]:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in r.stderr


def test_cli_help_documents_options():
    r = _cli("--help")
    assert r.returncode == 0
    for opt in ("--object", "--N", "--n_images", "--nphotons", "--seed", "--output_dir",
                "--from", "--backend", "--phase", "--positions", "--probe"):
        assert opt in r.stdout

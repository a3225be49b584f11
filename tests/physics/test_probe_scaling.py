"""Probe construction/normalisation, intensity scale, dataset normalisation, Poisson noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho_k3 import physics


@pytest.mark.parametrize(("n", "pixels"), [(64, 812), (128, 3228), (256, 12892)])
def test_probe_mask_pixel_counts(n, pixels):
    m = physics.probe_mask(n)
    assert m.shape == (n, n) and m.dtype == np.float32
    assert int(m.sum()) == pixels
    np.testing.assert_array_equal(m, m[::-1, ::-1])  # centred on the geometric centre


def test_default_probe_numbers():
    p = physics.default_probe(64)
    assert np.isrealobj(p)
    assert math.isclose(p.max(), 1 + 1e-9, rel_tol=1e-12)
    assert math.isclose(p.min(), 1e-9, rel_tol=1e-6)
    assert abs(p.sum() - 376.0) < 0.01
    assert int((p > 0.5).sum()) == 376


@pytest.mark.parametrize(
    ("n", "scale", "pmax", "energy"),
    [(64, 4.0, 2.7234, 2505.1), (64, 10.0, 1.0894, 400.8), (128, 4.0, 2.7307, 10614.0)],
)
def test_normalised_default_probe(n, scale, pmax, energy):
    p = physics.normalize_probe(physics.default_probe(n), scale)
    assert p.dtype == np.complex64
    assert abs(np.abs(p).max() - pmax) < 1e-4
    assert abs(np.sum(np.abs(p) ** 2) - energy) / energy < 1e-4


def test_normalize_probe_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, N\)"):
        physics.normalize_probe(np.ones((4, 5)))
    with pytest.raises(ValueError, match="zero"):
        physics.normalize_probe(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="probe_scale"):
        physics.normalize_probe(np.ones((8, 8)), probe_scale=0)


def test_intensity_scale_reference_values():
    assert math.isclose(physics.intensity_scale(1e9, 64), 988.21177, rel_tol=1e-7)
    assert math.isclose(physics.intensity_scale(1e9, 128), 494.10588, rel_tol=1e-7)
    assert math.isclose(physics.intensity_scale(1e9, 256), 247.05294, rel_tol=1e-7)
    assert math.isclose(math.log(physics.intensity_scale(1e9, 64)), 6.895897, rel_tol=1e-6)
    with pytest.raises(ValueError, match="nphotons"):
        physics.intensity_scale(0, 64)


@given(seed=st.integers(0, 2**31 - 1), level=st.floats(1e-3, 1e3))
def test_normalisation_gives_mean_energy_quarter_n_squared(seed, level):
    rng = np.random.default_rng(seed)
    x = (rng.uniform(size=(5, 16, 16)) * level).astype(np.float32)
    f = physics.normalization_factor(x)
    energy = np.mean(np.sum((x.astype(np.float64) * f) ** 2, axis=(1, 2)))
    assert math.isclose(energy, 64.0, rel_tol=1e-9)
    s = physics.intensity_scale(1e9, 16)
    assert math.isclose(np.mean(np.sum((x * f * s) ** 2, axis=(1, 2))), 1e9, rel_tol=1e-5)


def test_normalisation_squares_uint16_in_float64():
    x = np.full((2, 8, 8), 60000, np.uint16)  # 60000^2 overflows uint16 and float32 sums lose bits
    f = physics.normalization_factor(x)
    assert math.isclose(f, math.sqrt(16.0 / (64 * 60000.0**2)), rel_tol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        physics.normalization_factor(np.zeros((2, 4, 4)))


def test_pattern_energies_per_row_and_for_chosen_rows():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(7, 8, 8)).astype(np.float32)
    expected = np.sum(x.astype(np.float64) ** 2, axis=(1, 2))
    np.testing.assert_allclose(physics.pattern_energies(x, chunk=3), expected, rtol=1e-12)
    rows = np.array([6, 0, 6, 2])
    np.testing.assert_allclose(physics.pattern_energies(x, rows=rows, chunk=3), expected[rows],
                               rtol=1e-12)
    assert physics.mean_pattern_energy(x[:0]) == 0.0
    assert physics.factor_for_energy(4.0, 8) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zero"):
        physics.factor_for_energy(float("nan"), 8)


def test_simulation_scale_and_poisson_statistics():
    rng = np.random.default_rng(0)
    psi = (rng.standard_normal((50, 16, 16)) + 1j * rng.standard_normal((50, 16, 16))).astype(
        np.complex64
    )
    s = physics.simulation_intensity_scale(psi, 1e6)
    mean_counts = np.mean(np.sum(np.abs(s * psi.astype(np.complex128)) ** 2, axis=(1, 2)))
    assert math.isclose(mean_counts, 1e6, rel_tol=1e-9)
    amp = np.abs(psi)
    a = physics.poisson_amplitudes(amp, s, np.random.default_rng(1))
    b = physics.poisson_amplitudes(amp, s, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)  # reproducible from the caller's generator
    assert a.dtype == np.float32
    counts = np.round((a.astype(np.float64) * s) ** 2)
    lam = (amp.astype(np.float64) * s) ** 2
    # Poisson: mean(counts - lam) ~ 0 within a few standard errors of the total.
    z = np.sum(counts - lam) / math.sqrt(np.sum(lam))
    assert abs(z) < 5
    with pytest.raises(ValueError, match="scale"):
        physics.poisson_amplitudes(amp, 0.0, rng)

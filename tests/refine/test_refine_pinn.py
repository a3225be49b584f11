"""PINN start against flat start, with the suite's briefly trained PINN (current backend)."""

from __future__ import annotations

from ptycho_k3.config import RefineConfig


def test_pinn_start_never_starts_above_the_flat_start(tiny_trained_pinn):
    from ptycho_k3.refine import refine

    rec, scan = tiny_trained_pinn
    cfg = RefineConfig(iterations=2, batch=64)
    pinn = refine(scan, rec.stitched, cfg).history["loss"]
    flat = refine(scan, None, cfg).history["loss"]
    # Both starts are rescaled to the measured photon count before the first step, so the
    # comparison is of structure, not of scale. (Measured: 2-4x lower on the demo's scan.)
    assert pinn[0] < flat[0]
    assert pinn[-1] < pinn[0]

"""Iterative refinement of a whole scan on the physics core's forward model.

``refine(scan, init_object, config)`` starts from the PINN's stitched object (or flat) and takes
minibatch gradient steps on the object (and optionally the probe and the positions); see
:mod:`ptycho_k3.refine.engine` for the update and :mod:`ptycho_k3.refine.problem` for units.
Importing this package does not import Keras.
"""

from __future__ import annotations

from ptycho_k3.config import RefineConfig

from .engine import RefineResult
from .problem import Canvas, Measurements, amplitude_scale, canvas_for, measurements, place
from .solve import refine

__all__ = ["Canvas", "Measurements", "RefineConfig", "RefineResult", "amplitude_scale",
           "canvas_for", "measurements", "place", "refine"]

"""Backend-neutral ptychographic forward model and PINN losses (pure ``keras.ops`` functions).

Complex fields are ``(re, im)`` pairs of float32 tensors; images live in the last two axes;
offsets are ``[dx, dy]`` = [x (column), y (row)] in pixels and move content by ``+offset``.
Set-up helpers (probe, scaling, noise) take and return NumPy.
"""

from .diffraction import complex_multiply, diffract, fftshift2, illuminate, smooth
from .layout import (
    channels_to_flat,
    channels_to_groups,
    flat_to_channels,
    groups_to_channels,
    offsets_to_pairs,
    pairs_to_offsets,
)
from .losses import (
    amplitude_mae,
    mean_poisson_nll,
    poisson_nll,
    realspace_mae,
    total_variation,
)
from .noise import poisson_amplitudes
from .patches import (
    canvas_margin,
    canvas_size,
    centre_crop,
    extract_patches,
    pad_centre,
    reassemble_patches,
)
from .probe import default_probe, normalize_probe, probe_mask
from .scaling import intensity_scale, normalization_factor, simulation_intensity_scale
from .translation import shift_weights, translate, translate_real

__all__ = [
    "amplitude_mae",
    "canvas_margin",
    "canvas_size",
    "centre_crop",
    "channels_to_flat",
    "channels_to_groups",
    "complex_multiply",
    "default_probe",
    "diffract",
    "extract_patches",
    "fftshift2",
    "flat_to_channels",
    "groups_to_channels",
    "illuminate",
    "intensity_scale",
    "mean_poisson_nll",
    "normalization_factor",
    "normalize_probe",
    "offsets_to_pairs",
    "pad_centre",
    "pairs_to_offsets",
    "poisson_amplitudes",
    "poisson_nll",
    "probe_mask",
    "realspace_mae",
    "reassemble_patches",
    "shift_weights",
    "simulation_intensity_scale",
    "smooth",
    "total_variation",
    "translate",
    "translate_real",
]

"""Backend-neutral ptychographic forward model and PINN losses (pure ``keras.ops`` functions).

Complex fields are ``(re, im)`` pairs of float32 tensors; images live in the last two axes;
offsets are ``[dx, dy]`` = [x (column), y (row)] in pixels and move content by ``+offset``.
Set-up helpers (probe, scaling, noise) take and return NumPy. The forward model is composed in
one place, ``PtychoOperator`` (``operator``): extraction, illumination and far field, with the
adjoint of its linear part.

Names are loaded on first use, so the NumPy-only submodules (``scaling``, ``noise``, ``probe``,
``geometry``) can be imported without importing Keras (the data loader relies on that).
"""

from importlib import import_module
from typing import Any

_SUBMODULE = {
    "complex_multiply": "diffraction",
    "diffract": "diffraction",
    "fftshift2": "diffraction",
    "far_field_intensity": "diffraction",
    "illuminate": "diffraction",
    "smooth": "diffraction",
    "channels_to_flat": "layout",
    "channels_to_groups": "layout",
    "flat_to_channels": "layout",
    "groups_to_channels": "layout",
    "offsets_to_pairs": "layout",
    "pairs_to_offsets": "layout",
    "absolute": "kinks",
    "amplitude_mae": "losses",
    "mean_poisson_deviance": "losses",
    "mean_poisson_nll": "losses",
    "poisson_deviance": "losses",
    "poisson_nll": "losses",
    "realspace_mae": "losses",
    "total_variation": "losses",
    "poisson_amplitudes": "noise",
    "canvas_margin": "geometry",
    "canvas_size": "geometry",
    "centre_crop": "patches",
    "extract_patches": "patches",
    "pad_centre": "patches",
    "reassemble_patches": "patches",
    "default_probe": "probe",
    "normalize_probe": "probe",
    "probe_mask": "probe",
    "intensity_scale": "scaling",
    "mean_pattern_energy": "scaling",
    "pattern_energies": "scaling",
    "factor_for_energy": "scaling",
    "normalization_factor": "scaling",
    "simulation_intensity_scale": "scaling",
    "PtychoOperator": "operator",
    "scan_forward": "operator",
    "scan_intensities": "operator",
    "smooth_adjoint": "operator",
    "extract_at": "scan",
    "extract_real_at": "scan",
    "extract_many_at": "scan",
    "place_at": "scan",
    "place_many_at": "scan",
    "window_indices": "scan",
    "shift_weights": "translation",
    "translate": "translation",
    "translate_real": "translation",
}

__all__ = sorted(_SUBMODULE)


def __getattr__(name: str) -> Any:
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'ptycho_k3.physics' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

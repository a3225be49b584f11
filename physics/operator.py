"""The ptychographic forward operator, composed once (docs/conventions.md §21).

For a fixed probe ``P`` the map from the object to the exit waves is linear::

    A x = M . S(P . E x)        E  extraction at the scan positions (bilinear, §3, §5, §21)
                                P  pixel-wise product with the probe (§7)
                                S  optional 3 x 3 smoothing of the exit wave, M optional mask (§7)
    A^H y = E^H (conj(P) . S^T(M . y))

and the measurement is the far field of the exit waves, ``|F A x|^2`` (intensities) or
``|F A x|`` (amplitudes, §8). :class:`PtychoOperator` holds the static part (patch side, frame,
smoothing, mask) and takes the tensors (object, probe, positions) per call, because the probe is
a trainable weight of the model and an unknown of the refinement. Every stage is one of the
existing ``physics`` functions, so composing here changes no number.

Two frames of extraction, the same sampling (``patch[N/2, N/2] = O(y, x)``, content moves by
+offset, bilinear, §3):

- ``"scan"``: one ``(H, W)`` canvas, absolute positions ``(B, 2)`` ``[x, y]`` in canvas pixels
  (:func:`~ptycho_k3.physics.scan.extract_many_at`, a gather; every ``(N+1)``-window must lie
  inside the canvas). ``E^H`` is :func:`~ptycho_k3.physics.scan.place_many_at`, a scatter-add.
- ``"groups"``: one ``(P, P)`` canvas per group ``(G, P, P)``, relative offsets ``(G, C, 2)``
  ``[dx, dy]`` (:func:`~ptycho_k3.physics.patches.extract_patches`, resampling matrices, zero
  outside the canvas) -> patches ``(G, C, N, N)``. ``E^H`` is the unnormalised reassembly (§5).

Users: the refinement engine (``"scan"``, :meth:`PtychoOperator.intensities_and_patches`), the
model's physics layers (``"groups"``: ``PatchExtraction`` -> ``extract``, ``ProbeIllumination``
-> ``illuminate``, ``FarField`` -> ``amplitude``) and the simulator (``illuminate`` and
``amplitude`` of its ground-truth patches; see :mod:`ptycho_k3.data.simulate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keras import ops

from .diffraction import (
    complex_multiply,
    diffract,
    far_field_intensity,
    illuminate,
    smoothing_kernel_1d,
)
from .patches import _check_group_offsets, _member_matrices, _sum_placed, extract_patches
from .probe import probe_mask
from .scan import extract_many_at, place_many_at

FRAMES = ("scan", "groups")


def _one_hot_along(v, before: int, after: int, axis: int):
    """Zero-pad a length-1 slice ``v`` along ``axis`` with ``before`` / ``after`` zeros."""
    widths = [(0, 0)] * len(v.shape)
    widths[axis] = (before, after)
    return ops.pad(v, widths)


def _smooth_axis_adjoint(y, weights: list[float], axis: int):
    """Transpose of ``diffraction._smooth_axis`` (3 taps, reflect padding without the edge).

    The forward reads ``x[1]`` for the missing ``x[-1]`` and ``x[n-2]`` for ``x[n]``, so its
    transpose is the zero-padded correlation plus those two reflected taps.
    """
    axis = axis % len(y.shape)
    n = int(y.shape[axis])
    if n < 3:
        raise ValueError(f"smoothing adjoint needs at least 3 pixels along an axis, got {n}")
    first, last = ops.take(y, [0], axis=axis), ops.take(y, [n - 1], axis=axis)
    nxt = _one_hot_along(ops.take(y, list(range(1, n)), axis=axis), 0, 1, axis)  # y[j + 1]
    prev = _one_hot_along(ops.take(y, list(range(n - 1)), axis=axis), 1, 0, axis)  # y[j - 1]
    out = weights[0] * nxt + weights[1] * y + weights[2] * prev
    return (out + _one_hot_along(weights[0] * first, 1, n - 2, axis)
            + _one_hot_along(weights[2] * last, n - 2, 1, axis))


def smooth_adjoint(re, im, sigma: float):
    """Transpose of :func:`~ptycho_k3.physics.diffraction.smooth` (last two axes)."""
    k = smoothing_kernel_1d(sigma)

    def one(x):
        return _smooth_axis_adjoint(_smooth_axis_adjoint(x, k, -1), k, -2)

    return one(re), one(im)


@dataclass(frozen=True)
class PtychoOperator:
    """The forward model ``object -> exit waves -> far field`` and the adjoint of its linear part.

    Args:
        n: patch (and probe, and pattern) side N.
        frame: ``"scan"`` (one canvas, absolute positions) or ``"groups"`` (one canvas per group,
            relative offsets); see the module docstring.
        smoothing_sigma: ``gaussian_smoothing_sigma`` of the exit wave (0 disables; §7).
        use_mask: multiply the exit wave by ``physics.probe_mask(n)`` (§6, §7).

    Complex fields are ``(re, im)`` float32 pairs; the probe is ``(N, N)`` and broadcasts over
    the patches. The instance is immutable and hashable (usable as a compile-cache key).
    """

    n: int
    frame: str = "scan"
    smoothing_sigma: float = 0.0
    use_mask: bool = False

    def __post_init__(self) -> None:
        if int(self.n) != self.n or self.n <= 0:
            raise ValueError(f"PtychoOperator: n must be a positive integer, got {self.n!r}")
        if self.frame not in FRAMES:
            raise ValueError(f"PtychoOperator: frame must be one of {FRAMES}, got {self.frame!r}")
        if self.smoothing_sigma < 0:
            raise ValueError(
                f"PtychoOperator: smoothing_sigma must be >= 0, got {self.smoothing_sigma}")
        # NumPy, made once; converted per call (as the model layer always did).
        object.__setattr__(self, "_mask", probe_mask(int(self.n)) if self.use_mask else None)

    def _mask_tensor(self) -> Any:
        return None if self._mask is None else ops.convert_to_tensor(self._mask)

    # -- E: object -> patches ----------------------------------------------------------------

    def extract(self, obj_re, obj_im, positions):
        """Object patches at the positions: ``(B, N, N)`` (scan) or ``(G, C, N, N)`` (groups)."""
        if self.frame == "scan":
            return extract_many_at((obj_re, obj_im), positions, self.n)
        return extract_patches(obj_re, obj_im, positions, self.n)

    def extract_adjoint(self, re, im, positions, shape):
        """``E^H``: patches placed back and summed on a canvas of ``shape`` (``(H, W)`` for the
        scan frame, ``(P, P)`` or ``(Ph, Pw)`` per group for the groups frame)."""
        if self.frame == "scan":
            return place_many_at((re, im), positions, shape)
        if len(re.shape) != 4:
            raise ValueError(f"extract_adjoint: patches must be (G, C, n, n), got {tuple(re.shape)}")
        _check_group_offsets(positions, re.shape[0], re.shape[1], "extract_adjoint")
        a_y, a_x = _member_matrices(positions, int(re.shape[-1]), int(shape[0]), int(shape[1]))
        return _sum_placed(a_y, a_x, re), _sum_placed(a_y, a_x, im)

    # -- P, S, M: patches -> exit waves ------------------------------------------------------

    def illuminate(self, patch_re, patch_im, probe_re, probe_im):
        """Exit waves ``M . S(P . O)`` of patches (any leading axes), §7."""
        return illuminate(patch_re, patch_im, probe_re, probe_im,
                          smoothing_sigma=self.smoothing_sigma, mask=self._mask_tensor())

    def illuminate_adjoint(self, re, im, probe_re, probe_im):
        """``conj(P) . S^T(M . y)`` of exit waves ``y``: the transpose of :meth:`illuminate`."""
        mask = self._mask_tensor()
        if mask is not None:
            re, im = re * mask, im * mask
        if self.smoothing_sigma:
            re, im = smooth_adjoint(re, im, self.smoothing_sigma)
        return complex_multiply(re, im, probe_re, ops.negative(probe_im))

    # -- A and A^H ---------------------------------------------------------------------------

    def forward(self, obj_re, obj_im, probe_re, probe_im, positions):
        """``A x``: the exit waves of the object at the positions (linear in the object)."""
        return self.illuminate(*self.extract(obj_re, obj_im, positions), probe_re, probe_im)

    def adjoint(self, re, im, probe_re, probe_im, positions, shape):
        """``A^H y``: exit waves back to an object canvas of ``shape``; ``<A x, y> = <x, A^H y>``."""
        back = self.illuminate_adjoint(re, im, probe_re, probe_im)
        return self.extract_adjoint(*back, positions, shape)

    # -- the far field -----------------------------------------------------------------------

    @staticmethod
    def intensity(re, im):
        """Far-field intensity of exit waves, ``fftshift(|FFT2 psi|^2) / N^2`` (§8)."""
        return far_field_intensity(re, im)

    @staticmethod
    def amplitude(re, im):
        """Far-field amplitude of exit waves, ``fftshift(|FFT2 psi|) / N`` (§8)."""
        return diffract(re, im)

    def intensities(self, obj_re, obj_im, probe_re, probe_im, positions, scale: float = 1.0):
        """``s^2 |F A x|^2``: predicted intensities (counts when ``scale`` = s)."""
        return far_field_intensity(*self.forward(obj_re, obj_im, probe_re, probe_im, positions)) * (
            scale * scale)

    def amplitudes(self, obj_re, obj_im, probe_re, probe_im, positions):
        """``|F A x|``: predicted far-field amplitudes."""
        return diffract(*self.forward(obj_re, obj_im, probe_re, probe_im, positions))

    def intensities_and_patches(self, canvases, probe_re, probe_im, positions,
                                scale: float = 1.0):
        """Scan frame: :meth:`intensities` of the object ``canvases[:2]`` and every canvas's patches.

        Args:
            canvases: float32 ``(H, W)`` canvases, the object's re and im first; any further
                canvas is extracted at the same positions (the refinement extracts a zero canvas
                so that its gradient is ``E^H |P|^2``).
            probe_re, probe_im: float32 probe ``(N, N)``.
            positions: float32 ``(B, 2)`` ``[x, y]`` canvas pixels.
            scale: ``s``; intensities are multiplied by ``s^2``.

        Returns:
            ``(I, patches)``: float32 ``(B, N, N)`` and the tuple of ``(B, N, N)`` patches.
        """
        if self.frame != "scan":
            raise ValueError("intensities_and_patches needs the 'scan' frame")
        patches = extract_many_at(canvases, positions, self.n)
        e_re, e_im = self.illuminate(patches[0], patches[1], probe_re, probe_im)
        return far_field_intensity(e_re, e_im) * (scale * scale), patches


def scan_forward(canvases, probe_re, probe_im, positions, scale: float = 1.0):
    """Predicted diffraction intensities of a scan: extract, illuminate, diffract.

    :meth:`PtychoOperator.intensities_and_patches` of the scan frame with ``N`` = the probe side:
    ``(I, patches)``, float32 ``(B, N, N)`` counts (DC at ``(N/2, N/2)``) and the tuple of
    ``(B, N, N)`` patches, one per canvas (the object's re and im first).
    """
    return PtychoOperator(int(probe_re.shape[-1])).intensities_and_patches(
        canvases, probe_re, probe_im, positions, scale)


def scan_intensities(obj_re, obj_im, probe_re, probe_im, positions, scale: float = 1.0):
    """:func:`scan_forward` of one object ``(H, W)`` given as re and im: ``(B, N, N)`` counts."""
    return scan_forward((obj_re, obj_im), probe_re, probe_im, positions, scale)[0]

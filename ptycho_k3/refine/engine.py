"""The refinement engine: minibatch gradient steps on the full-scan forward model.

Unknowns are real float32 tensors: the object canvas as ``(re, im)``, the probe as ``(re, im)`` and
the positions ``(M, 2)``. Real and imaginary parts (not amplitude and phase) because the exit wave
is linear in them, so the loss is a smooth function of the unknowns with an ePIE-like
preconditioner, and nothing wraps or becomes singular at zero amplitude.

One update, on a minibatch ``b`` of positions, with ``g`` the autodiff gradient of the batch loss
(the scan frame of ``physics.PtychoOperator``, then the Poisson deviance or the amplitude least
squares, summed over valid pixels):

    O <- O - object_step * g_O / (c s^2 [(1 - alpha) I_b + alpha max I_b]),  I_b = sum_b |P|^2 placed
    P <- P - probe_step  * g_P / (c s^2 [(1 - alpha) J_b + alpha max J_b]),  J_b = sum_b |O_b|^2
    r <- r - position_step * g_r / H_r, clamped per iteration, batch mean removed

where ``c`` = 4 for Poisson (its curvature in the amplitude near a fit) and 2 for amplitude least
squares, so a step of 1 is one ePIE step. ``I_b`` comes from the same autodiff transpose as the
gradient (the adjoint of extraction applied to ``|P|^2``), ``H_r`` is the Gauss-Newton curvature
``c s^2 sum |P|^2 |d O_b / d x|^2``. The probe keeps its starting power. Every line is one code
path in ``keras.ops``; :mod:`ptycho_k3.autodiff` supplies the gradient and the compilation.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptycho_k3.config import RefineConfig

from .problem import Canvas, Measurements

_TINY = 1e-12


@dataclass
class RefineResult:
    """Result of :func:`ptycho_k3.refine.refine`.

    Attributes:
        obj: complex64 ``(H, W)`` refined object; pixel ``[r, c]`` is scan position
            ``(x0 + c, y0 + r)``.
        x0, y0: integer origin of ``obj`` in scan coordinates.
        probe: complex64 ``(N, N)`` probe (refined when asked, else the scan's).
        positions: float64 ``(M, 2)`` ``[x, y]`` scan coordinates (corrected when asked).
        initial_positions: float64 ``(M, 2)`` the scan's positions.
        history: ``iteration`` (0 = the start), ``loss`` (mean Poisson deviance, or squared
            amplitude error, per valid pixel; entry ``i > 0`` is measured during iteration ``i``,
            each batch just before its update), ``seconds`` (wall time since the start, monitor
            excluded) and whatever the monitor returned, per entry.
        scale: ``s`` used to turn amplitudes into counts.
        illumination: float32 ``(H, W)`` ``sum |P|^2`` over the final positions (coverage).
    """

    obj: np.ndarray
    x0: int
    y0: int
    probe: np.ndarray
    positions: np.ndarray
    initial_positions: np.ndarray
    history: dict[str, list[Any]] = field(default_factory=dict)
    scale: float = 1.0
    illumination: np.ndarray | None = None

    @property
    def iterations(self) -> int:
        return len(self.history.get("iteration", [1])) - 1

    def lit(self, fraction: float = 0.05) -> np.ndarray:
        """bool ``(H, W)``: pixels whose illumination is at least ``fraction`` of the maximum."""
        if self.illumination is None:
            return np.ones(self.obj.shape, bool)
        return self.illumination >= fraction * float(self.illumination.max())

    def as_stitch(self, M: int) -> Any:
        """The object as a :class:`~ptycho_k3.stitch.StitchResult` (weight = illumination), so
        the stitched-object tools (metrics, pictures) take it; ``M`` is recorded as given."""
        from ptycho_k3.stitch import StitchResult

        weight = self.illumination if self.illumination is not None else np.ones(
            self.obj.shape, np.float32)
        return StitchResult(obj=self.obj, weight=weight, x0=self.x0, y0=self.y0, M=M)


@dataclass(frozen=True)
class StepSpec:
    """Everything a compiled step depends on besides its tensor arguments (hashable, so equal
    problems share one compiled function: a second ``refine`` call does not recompile)."""

    n: int
    loss: str
    s2: float
    alpha: float
    object_step: float
    probe_step: float
    position_step: float
    max_shift: float
    masked: bool
    pos_hi: tuple[float, float]

    @property
    def c(self) -> float:
        """4 for Poisson (its curvature in the modulus near a fit), 2 for least squares."""
        return 4.0 if self.loss == "poisson" else 2.0


def batch_loss(spec: StepSpec, canvases, p_re, p_im, pos_b, counts_b, valid_b):
    """Per-pixel loss of a batch (0 where invalid), its patches and the intensities.

    ``canvases`` is a tuple of ``(H, W)`` tensors, the object's re and im first (see
    :meth:`ptycho_k3.physics.PtychoOperator.intensities_and_patches`).
    """
    from keras import ops

    from ptycho_k3 import physics

    intensity, patches = physics.PtychoOperator(spec.n).intensities_and_patches(
        canvases, p_re, p_im, pos_b, math.sqrt(spec.s2))
    if spec.loss == "poisson":
        per_pixel = physics.poisson_deviance(intensity, counts_b)
    else:
        per_pixel = ops.square(ops.sqrt(ops.maximum(intensity, 1e-30)) - ops.sqrt(counts_b))
    if spec.masked:
        per_pixel = per_pixel * valid_b
    return per_pixel, patches, intensity


@functools.lru_cache(maxsize=64)
def compiled_step(spec: StepSpec, update_probe: bool, update_positions: bool) -> Callable:
    """The compiled minibatch update ``(o_re, o_im, p_re, p_im, pos, idx, counts, valid, zero)
    -> (o_re, o_im, p_re, p_im, pos, loss)`` (module docstring)."""
    from keras import ops

    from ptycho_k3 import autodiff

    c, s2, alpha = spec.c, spec.s2, float(spec.alpha)
    poisson = spec.loss == "poisson"

    def objective(o_re, o_im, zero, p_re, p_im, pos_b, counts_b, valid_b):
        # ``zero`` is a zero canvas extracted with the object: its gradient is the batch
        # illumination sum_b |P|^2 placed (the adjoint of extraction applied to |P|^2), and
        # it adds nothing to the loss or to the other gradients.
        per_pixel, patches, intensity = batch_loss(
            spec, (o_re, o_im, zero), p_re, p_im, pos_b, counts_b, valid_b)
        loss = ops.sum(per_pixel)
        surrogate = loss
        if poisson:
            # Diagonal Newton scaling in the detector: the Poisson curvature in the modulus
            # a = sqrt(I) is 2 + 2k/I, so each pixel's gradient is weighted by 2I / (I + k)
            # (1 at a fit, where c = 4 holds). The direction stays bounded where I << k,
            # which a plain Poisson gradient (~k / a) is not; the loss itself is unchanged.
            weight = ops.stop_gradient(2.0 * intensity / (intensity + counts_b + _TINY))
            surrogate = ops.sum(weight * per_pixel)
        probe_int = ops.stop_gradient(p_re * p_re + p_im * p_im)
        return surrogate + ops.sum(patches[2] * probe_int), (loss, patches[:2])

    grad_fn = autodiff.value_and_grad(objective, argnums=(0, 1, 2, 3, 4, 5))

    def regularised(x):
        return c * s2 * ((1.0 - alpha) * x + alpha * ops.max(x)) + _TINY

    def step(o_re, o_im, p_re, p_im, pos, idx, counts, valid, zero):
        pos_b = ops.take(pos, idx, axis=0)
        counts_b = ops.take(counts, idx, axis=0)
        valid_b = ops.take(valid, idx, axis=0) if spec.masked else valid
        (_, (loss, (pa_re, pa_im))), grads = grad_fn(
            o_re, o_im, zero, p_re, p_im, pos_b, counts_b, valid_b)
        g_re, g_im, illum, g_pre, g_pim, g_pos = grads
        rate = spec.object_step / regularised(illum)
        o_re, o_im = o_re - rate * g_re, o_im - rate * g_im
        if update_probe:
            obj_int = ops.sum(pa_re * pa_re + pa_im * pa_im, axis=0)
            pdenom = regularised(obj_int)
            power = ops.sum(p_re * p_re + p_im * p_im)
            q_re = p_re - spec.probe_step * g_pre / pdenom
            q_im = p_im - spec.probe_step * g_pim / pdenom
            keep = ops.sqrt(power / (ops.sum(q_re * q_re + q_im * q_im) + _TINY))
            p_re, p_im = q_re * keep, q_im * keep
        if update_positions:
            pos = _position_update(spec, pos, pos_b, idx, g_pos, pa_re, pa_im, p_re, p_im)
        return o_re, o_im, p_re, p_im, pos, loss

    return autodiff.compile_function(step)


def _position_update(spec: StepSpec, pos, pos_b, idx, g_pos, pa_re, pa_im, p_re, p_im):
    from keras import ops

    probe_int = (p_re * p_re + p_im * p_im)[None, 1:-1, 1:-1]

    def slope_energy(d_re, d_im):
        return ops.sum((d_re * d_re + d_im * d_im) * probe_int, axis=(1, 2))

    dx = slope_energy((pa_re[:, 1:-1, 2:] - pa_re[:, 1:-1, :-2]) * 0.5,
                      (pa_im[:, 1:-1, 2:] - pa_im[:, 1:-1, :-2]) * 0.5)
    dy = slope_energy((pa_re[:, 2:, 1:-1] - pa_re[:, :-2, 1:-1]) * 0.5,
                      (pa_im[:, 2:, 1:-1] - pa_im[:, :-2, 1:-1]) * 0.5)
    curvature = spec.c * spec.s2 * ops.stack([dx, dy], axis=1)
    curvature = curvature + 1e-3 * ops.max(curvature) + _TINY
    delta = -spec.position_step * g_pos / curvature
    delta = ops.clip(delta, -spec.max_shift, spec.max_shift)
    delta = delta - ops.mean(delta, axis=0, keepdims=True)
    lo = float(spec.n // 2)
    new_b = ops.clip(pos_b + delta, ops.convert_to_tensor(np.array([lo, lo], np.float32)),
                     ops.convert_to_tensor(np.array(spec.pos_hi, np.float32)))
    return ops.scatter_update(pos, ops.expand_dims(idx, 1), new_b)


@functools.lru_cache(maxsize=64)
def compiled_evaluate(spec: StepSpec) -> Callable:
    """Compiled ``(o_re, o_im, p_re, p_im, pos, idx, counts, valid) -> (loss sum, predicted
    sum, measured sum)`` of a batch (sums over valid pixels)."""
    from keras import ops

    from ptycho_k3 import autodiff

    def sums(o_re, o_im, p_re, p_im, pos, idx, counts, valid):
        counts_b = ops.take(counts, idx, axis=0)
        valid_b = ops.take(valid, idx, axis=0) if spec.masked else valid
        per_pixel, _, intensity = batch_loss(
            spec, (o_re, o_im), p_re, p_im, ops.take(pos, idx, axis=0), counts_b, valid_b)
        if spec.masked:
            intensity, counts_b = intensity * valid_b, counts_b * valid_b
        return ops.sum(per_pixel), ops.sum(intensity), ops.sum(counts_b)

    return autodiff.compile_function(sums)


class Engine:
    """The tensors of one problem (counts, valid pixels, the zero canvas) and its compiled
    functions (shared between problems with the same :class:`StepSpec`)."""

    def __init__(self, meas: Measurements, canvas: Canvas, n: int, config: RefineConfig):
        from keras import ops

        self.n_valid = float(meas.valid.sum())
        # Without invalid pixels the mask is not gathered or multiplied at all.
        masked = bool(self.n_valid < meas.valid.size)
        self.spec = StepSpec(
            n=n, loss=config.loss, s2=float(meas.scale) ** 2, alpha=float(config.alpha),
            object_step=float(config.object_step), probe_step=float(config.probe_step),
            position_step=float(config.position_step),
            max_shift=float(config.max_position_shift), masked=masked,
            pos_hi=canvas.upper_position(n))
        self.counts = ops.convert_to_tensor(meas.counts)
        self.valid = ops.convert_to_tensor(meas.valid if masked else np.ones((), np.float32))
        self.zero = ops.zeros((canvas.height, canvas.width), dtype="float32")

    def step(self, update_probe: bool, update_positions: bool) -> Callable:
        return compiled_step(self.spec, bool(update_probe), bool(update_positions))

    def evaluate(self) -> Callable:
        return compiled_evaluate(self.spec)


def batches(m: int, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Positions split into ``ceil(m / batch)`` batches of near-equal size (at most two sizes, so
    a compiled step traces at most twice); shuffled when ``rng`` is given."""
    order = np.arange(m) if rng is None else rng.permutation(m)
    count = max(1, math.ceil(m / batch))
    return [b.astype(np.int32) for b in np.array_split(order, count)]


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        sys.stderr.write(f"\rrefine [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{self.total} iterations, loss {loss:.4g}")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

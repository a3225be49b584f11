"""Loss terms of the PINN, written once in ``keras.ops``.

Every reduced loss is a plain mean over **all** elements of its inputs (batch, pixels and group
members alike), so the value does not depend on the backend's own loss-reduction rules.
Units: the diffraction-side losses take counts (intensities ``(s * A)^2``) or sqrt(counts).
L1 terms use :func:`~ptycho_k3.physics.kinks.absolute`, so their gradient where two values are
equal is 0 on every backend (``ops.abs`` would give 1 under JAX).
"""

from __future__ import annotations

from keras import ops

from .kinks import absolute


def poisson_nll(pred_intensity, obs_intensity, eps: float = 1e-12):
    """Element-wise Poisson negative log-likelihood without the ``log k!`` term.

    ``L = lambda - k * log(lambda + eps)`` with ``lambda`` = predicted and ``k`` = observed
    intensity (counts, >= 0). ``dL/dlambda = 1 - k / (lambda + eps)``: zero at ``lambda = k``.
    ``eps`` keeps ``lambda = 0`` finite (the original had none). Same shape as the inputs.
    """
    pred_intensity = ops.cast(pred_intensity, "float32")
    obs_intensity = ops.cast(obs_intensity, "float32")
    return pred_intensity - obs_intensity * ops.log(pred_intensity + eps)


def mean_poisson_nll(pred_intensity, obs_intensity, eps: float = 1e-12):
    """Scalar mean of :func:`poisson_nll` over all elements."""
    return ops.mean(poisson_nll(pred_intensity, obs_intensity, eps))


def poisson_deviance(pred_intensity, obs_intensity, eps: float = 1e-12):
    """Element-wise Poisson NLL minus its value at a perfect fit (``lambda = k``).

    ``D = lambda - k - k * log((lambda + eps) / (k + eps))`` >= 0, zero only at ``lambda = k``; it
    differs from :func:`poisson_nll` by a term of the data alone, so its gradient in ``lambda`` is
    the same, but a loss curve of it falls towards 0 and compares across datasets. (Statistics
    texts call twice this the deviance; the factor is left out so that ``D`` and the NLL move
    together.) Same shape as the inputs, float32.
    """
    pred_intensity = ops.cast(pred_intensity, "float32")
    obs_intensity = ops.cast(obs_intensity, "float32")
    return (pred_intensity - obs_intensity
            - obs_intensity * ops.log((pred_intensity + eps) / (obs_intensity + eps)))


def mean_poisson_deviance(pred_intensity, obs_intensity, eps: float = 1e-12):
    """Scalar mean of :func:`poisson_deviance` over all elements."""
    return ops.mean(poisson_deviance(pred_intensity, obs_intensity, eps))


def amplitude_mae(pred_amplitude, obs_amplitude):
    """Scalar mean of ``|pred - obs|`` over all elements (amplitudes in the same units)."""
    return ops.mean(absolute(ops.cast(pred_amplitude, "float32")
                             - ops.cast(obs_amplitude, "float32")))


def total_variation(re, im):
    """Anisotropic total variation of a complex image, mean-reduced.

    ``mean|d_y re| + mean|d_x re| + mean|d_y im| + mean|d_x im|`` where ``d_y``/``d_x`` are forward
    differences along the last-but-one / last axis of ``(..., H, W)`` inputs. Mean (not sum)
    reduction keeps the weight independent of the image size.
    """

    def one(x):
        dy = x[..., 1:, :] - x[..., :-1, :]
        dx = x[..., :, 1:] - x[..., :, :-1]
        return ops.mean(absolute(dy)) + ops.mean(absolute(dx))

    return one(re) + one(im)


def realspace_mae(pred_re, pred_im, true_re, true_im):
    """Complex L1 in real space: ``mean(|re_p - re_t| + |im_p - im_t|)`` over all elements."""
    return ops.mean(absolute(pred_re - true_re) + absolute(pred_im - true_im))

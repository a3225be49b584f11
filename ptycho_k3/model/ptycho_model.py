"""The training model: a functional Keras model whose loss is computed once, in keras.ops."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ptycho_k3 import physics
from ptycho_k3.config import LossSpec


def _masked_mean(values, mask):
    """Mean of ``values`` ``(B, N, N, C)`` over the elements where ``mask`` is 1.

    ``mask`` broadcasts to ``values``: ``(N, N, 1)`` (a decoder support) or ``(B, N, N, C)``
    (valid detector pixels). A masked element contributes nothing, whatever its value (also
    inf/NaN-free: ``values`` there are finite because the stored counts are 0).
    """
    weights = ops.zeros_like(values) + mask
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)


class PtychoModel(keras.Model):
    """Functional PtychoPINN training model with the loss of a :class:`LossSpec`.

    Outputs (a dict): ``trimmed_obj`` ``(B, N, N, 2)`` [re, im]; ``amplitude`` and ``phase``
    ``(B, N, N, C')`` decoded patches; for ``pinn`` also ``pred_amp_scaled`` ``(B, N, N, C)`` =
    s * A (sqrt(counts)) and ``pred_intensity`` = its square (counts).

    Targets (a dict, from :mod:`ptycho_k3.train`): ``amplitude`` = s * X (sqrt(counts)) for the
    diffraction terms; optional ``valid`` ``(B, N, N, C)`` (1 = the detector pixel counts): the
    ``nll`` and ``mae`` terms are then means over valid pixels only; ``label_amp`` /
    ``label_phase`` ``(B, N, N, C)`` for the label terms.

    The total loss is ``sum_k w_k * term_k`` where every term is a plain mean over all its
    elements (``nll`` is the Poisson NLL reported as its deviance, NLL minus its perfect-fit
    value, per pixel) (label terms: over the region the decoder fills, ``support``). Each term is logged
    under its own name (``nll``, ``mae``, ``realspace_mae``, ``tv``, ``amp_mae``, ``phase_mae``),
    with ``val_`` prefixes on validation data, identically on every backend.
    """

    def __init__(self, inputs, outputs, loss_spec: LossSpec, support: np.ndarray, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.loss_spec = loss_spec
        self._support = np.asarray(support, np.float32)[:, :, None]
        self._term_trackers = [keras.metrics.Mean(name=name) for name in loss_spec.metric_names]

    @property
    def metrics(self):
        base = list(super().metrics)
        return base + [t for t in self._term_trackers if all(t is not m for m in base)]

    def loss_terms(self, y, y_pred) -> dict:
        """Unweighted scalar loss terms by name (only those with a non-zero weight)."""
        support = ops.convert_to_tensor(self._support)
        terms = {}
        names = set(self.loss_spec.metric_names)
        valid = y.get("valid")  # (B, N, N, C) 1 = detector pixel counts; absent = all count
        if "nll" in names:
            k = ops.square(y["amplitude"])
            # The deviance: the NLL minus its value at a perfect fit (a constant of the data, so
            # the same gradients), which falls towards 0 instead of sitting near -4e6.
            if valid is None:
                terms["nll"] = physics.mean_poisson_deviance(y_pred["pred_intensity"], k)
            else:
                terms["nll"] = _masked_mean(
                    physics.poisson_deviance(y_pred["pred_intensity"], k), valid)
        if "mae" in names:
            if valid is None:
                terms["mae"] = physics.amplitude_mae(y_pred["pred_amp_scaled"], y["amplitude"])
            else:
                terms["mae"] = _masked_mean(
                    physics.absolute(y_pred["pred_amp_scaled"] - y["amplitude"]), valid)
        if "amp_mae" in names:
            terms["amp_mae"] = _masked_mean(
                physics.absolute(y_pred["amplitude"] - y["label_amp"]), support)
        if "phase_mae" in names:
            terms["phase_mae"] = _masked_mean(
                physics.absolute(y_pred["phase"] - y["label_phase"]), support
            )
        if "realspace_mae" in names:
            amp, phase = y_pred["amplitude"], y_pred["phase"]
            la, lp = y["label_amp"], y["label_phase"]
            diff = physics.absolute(amp * ops.cos(phase) - la * ops.cos(lp)) + physics.absolute(
                amp * ops.sin(phase) - la * ops.sin(lp)
            )
            terms["realspace_mae"] = _masked_mean(diff, support)
        if "tv" in names:
            obj = ops.transpose(y_pred["trimmed_obj"], (0, 3, 1, 2))
            terms["tv"] = physics.total_variation(obj[:, 0], obj[:, 1])
        return terms

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y, y_pred)
        # Weight each batch by its size, as Keras does for "loss", so a short last batch does not
        # skew the epoch mean of a term (and "loss" equals the weighted sum of the terms).
        batch = ops.cast(ops.shape(y_pred["trimmed_obj"])[0], "float32")
        total = 0.0
        for tracker, (name, weight) in zip(self._term_trackers, self.loss_spec.terms, strict=True):
            tracker.update_state(terms[name], sample_weight=batch)
            total = total + weight * terms[name]
        return total

"""The probe as two real Keras weights, illuminating object patches."""

from __future__ import annotations

import keras
import numpy as np

from ptycho_k3 import physics

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class ProbeIllumination(PhysicsLayer):
    """Exit waves ``Psi = P * O`` (then optional smoothing, then optional mask; docs/conventions.md §7).

    ``call([obj_re, obj_im])`` with float32 ``(B, C, N, N)`` patches returns the ``(re, im)``
    exit-wave pair of the same shape. The probe is held as real weights ``probe_re`` and
    ``probe_im`` ``(N, N)`` (normalised, docs/conventions.md §6), trainable iff ``trainable``.
    The product, smoothing and mask are the illumination stage of ``physics.PtychoOperator``.

    Args:
        n: probe side N.
        smoothing_sigma: ``gaussian_smoothing_sigma`` (0 disables).
        use_mask: multiply by ``physics.probe_mask(n)``.
        initial_probe: complex ``(N, N)`` initial value (already normalised); not part of the
            config, since the weights carry it (a bundle restores them).
    """

    def __init__(self, n: int, smoothing_sigma: float = 0.0, use_mask: bool = False,
                 initial_probe: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)
        self.smoothing_sigma = float(smoothing_sigma)
        self.use_mask = bool(use_mask)
        if initial_probe is None:
            initial_probe = physics.normalize_probe(physics.default_probe(self.n))
        p = np.asarray(initial_probe)
        if p.shape != (self.n, self.n):
            raise ValueError(f"ProbeIllumination: probe must be ({n}, {n}), got {p.shape}")
        self._operator = physics.PtychoOperator(
            self.n, frame="groups", smoothing_sigma=self.smoothing_sigma, use_mask=self.use_mask)
        self.probe_re = self.add_weight(
            name="probe_re", shape=(self.n, self.n), dtype="float32", trainable=True,
            initializer=keras.initializers.Constant(p.real.astype(np.float32)),
        )
        self.probe_im = self.add_weight(
            name="probe_im", shape=(self.n, self.n), dtype="float32", trainable=True,
            initializer=keras.initializers.Constant(p.imag.astype(np.float32)),
        )

    def call(self, inputs):
        obj_re, obj_im = inputs
        return self._operator.illuminate(obj_re, obj_im, self.probe_re, self.probe_im)

    def compute_output_shape(self, input_shape):
        return input_shape[0], input_shape[0]

    def probe(self) -> np.ndarray:
        """The current probe as complex64 ``(N, N)``."""
        re = keras.ops.convert_to_numpy(self.probe_re)
        im = keras.ops.convert_to_numpy(self.probe_im)
        return (re + 1j * im).astype(np.complex64)

    def get_config(self):
        return {
            **super().get_config(),
            "n": self.n,
            "smoothing_sigma": self.smoothing_sigma,
            "use_mask": self.use_mask,
        }

"""ptycho-k3: PtychoPINN as one Keras 3 model for TensorFlow, PyTorch and JAX.

Importing this package imports neither Keras nor any framework, so a caller (or the CLI) can still
choose the backend with ``KERAS_BACKEND`` afterwards. The physics core is ``ptycho_k3.physics``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

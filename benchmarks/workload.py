"""Inputs the workers share: simulated scans, random scans, untrained models, backend sync."""

from __future__ import annotations

from typing import Any

import numpy as np


def backend_name() -> str:
    """The active Keras backend (imports keras)."""
    import keras

    return keras.backend.backend()


def framework_version() -> str:
    """Version of the framework behind the active backend, plus Keras'."""
    import keras

    name = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[name]
    mod = __import__(module)
    return f"{module} {mod.__version__}, keras {keras.__version__}"


def framework_threads() -> dict[str, Any]:
    """Intra/inter-op thread counts where the framework reports them."""
    import keras

    name = keras.backend.backend()
    if name == "torch":
        import torch

        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    if name == "tensorflow":
        import tensorflow as tf

        return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default",
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default"}
    return {"intra_op": "default (XLA)"}


def sync(x: Any) -> None:
    """Block until ``x`` (a backend tensor or a nest of them) is computed."""
    import keras

    leaves = x if isinstance(x, (list, tuple)) else (x.values() if isinstance(x, dict) else [x])
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
        else:
            keras.ops.convert_to_numpy(keras.ops.ravel(leaf)[:1])


def simulated_scan(n: int, n_images: int, seed: int = 0, *, test: bool = False):
    """A simulated ``lines`` scan with phase at 1e9 photons (train or test half)."""
    from ptycho_k3.data import simulate_train_test

    train, test_data = simulate_train_test("lines", n, n_images=n_images, nphotons=1e9, seed=seed,
                                           phase=True)
    return test_data if test else train


def random_scan(n: int, n_patterns: int, seed: int = 0, density: float = 50.0):
    """A scan of random diffraction amplitudes at random positions, for speed and memory.

    Positions are uniform on a square whose area grows with the scan (``density`` square pixels
    per pattern, about the simulated sets'), so the stitched canvas grows like a real scan's.
    """
    from ptycho_k3 import physics
    from ptycho_k3.data import ScanData

    rng = np.random.default_rng(seed)
    side = max(float(n), float(np.sqrt(n_patterns * density)))
    diff = rng.random((n_patterns, n, n), dtype=np.float32)
    probe = np.asarray(physics.default_probe(n), dtype=np.complex64)
    return ScanData(xcoords=rng.uniform(0, side, n_patterns), ycoords=rng.uniform(0, side, n_patterns),
                    diffraction=diff, probe=probe)


def untrained_models(n: int, gridsize: int, probe: np.ndarray | None = None, seed: int = 0):
    """A freshly initialised (seeded) model pair; its speed equals a trained one's."""
    from ptycho_k3.config import ModelConfig
    from ptycho_k3.model import build_model
    from ptycho_k3.seeding import set_random_seed

    set_random_seed(seed)
    return build_model(ModelConfig(N=n, gridsize=gridsize), probe=probe)

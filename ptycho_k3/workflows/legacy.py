"""The original PtychoPINN's Python selector API (docs/conventions.md §20), for callers such as
ptychodus: :func:`train_cdi_model_with_backend`, :func:`run_cdi_example_with_backend`,
:func:`load_inference_bundle_with_backend`. Also importable from :mod:`ptycho_k3.backend`, where
the original's users look for them. Keras is imported only inside the functions, after the
backend is selected.
"""

from __future__ import annotations

import logging
from typing import Any

from ptycho_k3.backend import select
from ptycho_k3.config import DEFAULT_M

_log = logging.getLogger(__name__)


def _activate_for(config: Any) -> str:
    """Activate the backend named by ``config.backend`` (if any) or the environment."""
    return select(getattr(config, "backend", None))


def train_cdi_model_with_backend(train_data: Any, test_data: Any, config: Any) -> dict[str, Any]:
    """Train ``config`` (a :class:`ptycho_k3.config.TrainingConfig`) on ``train_data``.

    ``train_data`` / ``test_data`` are :class:`ptycho_k3.data.ScanData` (or paths of any format
    :func:`ptycho_k3.data.load_scan` reads, with its defaults).

    Returns:
        The original's ``results`` dict: ``history`` (with the ``train_loss`` alias of ``loss``),
        ``history_epochs``, ``model_instance`` (the training model), ``models``, ``backend``,
        ``input_scale``, ``intensity_scale``, ``train_result``.
    """
    backend = _activate_for(config)
    from ptycho_k3.data import ScanData, load_scan
    from ptycho_k3.train import train

    def as_scan(d: Any) -> Any:
        return d if d is None or isinstance(d, ScanData) else load_scan(d)

    result = train(config, as_scan(train_data), test_data=as_scan(test_data))
    history = dict(result.history)
    if "loss" in history:
        history["train_loss"] = list(history["loss"])
    return {
        "history": history,
        "history_epochs": result.epochs_run,
        "model_instance": result.models.training,
        "models": result.models,
        "backend": backend,
        "input_scale": result.input_scale,
        "intensity_scale": result.models.intensity_scale,
        "train_result": result,
    }


def run_cdi_example_with_backend(
    train_data: Any,
    test_data: Any,
    config: Any,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    M: int = DEFAULT_M,
    do_stitching: bool = False,
    torch_execution_config: Any = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train, then (with ``do_stitching`` and test data) reconstruct and stitch the test scan.

    ``flip_x``, ``flip_y`` and ``transpose`` apply to the stitched image, as in the original.
    ``torch_execution_config`` is accepted and ignored (one Keras model serves every backend).

    Returns:
        ``(recon_amp, recon_phase, results)``; the images are float32 ``(H, W)`` or None.
    """
    results = train_cdi_model_with_backend(train_data, test_data, config)
    if torch_execution_config is not None:
        _log.warning("torch_execution_config is ignored: ptycho-k3 runs one Keras model")
    if not do_stitching or test_data is None:
        return None, None, results
    import numpy as np

    from ptycho_k3.data import ScanData, load_scan
    from ptycho_k3.infer import reconstruct

    test = test_data if isinstance(test_data, ScanData) else load_scan(test_data)
    rec = reconstruct(results["models"], test, input_scale=results["input_scale"], M=M)
    obj = rec.stitched.obj
    if transpose:
        obj = obj.T
    if flip_x:
        obj = obj[:, ::-1]
    if flip_y:
        obj = obj[::-1, :]
    results.update(
        obj_tensor_full=rec.patches,
        global_offsets=rec.centres,
        reconstruction=rec,
        recon_amp=np.abs(obj).astype(np.float32),
        recon_phase=np.angle(obj).astype(np.float32),
    )
    return results["recon_amp"], results["recon_phase"], results


def load_inference_bundle_with_backend(
    bundle_dir: Any, config: Any = None, model_name: str = "diffraction_to_obj"
) -> tuple[Any, dict[str, Any]]:
    """Load a ptycho-k3 bundle (directory or ``wts.h5.zip``) under the selected backend.

    Returns:
        ``(model, params)``: the named Keras model (``diffraction_to_obj`` or ``autoencoder``)
        and the bundle's ``params.json`` with ``intensity_scale`` at the top level.
    """
    _activate_for(config)
    from ptycho_k3.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    models = {"diffraction_to_obj": bundle.models.inference, "autoencoder": bundle.models.training}
    if model_name not in models:
        raise ValueError(f"model_name must be one of {sorted(models)}, got {model_name!r}")
    params = dict(bundle.params)
    params.setdefault("intensity_scale", bundle.models.intensity_scale)
    return models[model_name], params

"""The backend selector: choose TensorFlow, PyTorch or JAX before Keras is imported.

Keras fixes its backend on first import, so a command parses its arguments, calls
:func:`resolve_backend` (``--backend`` > ``KERAS_BACKEND`` > ``tensorflow``) and :func:`activate`
(sets ``KERAS_BACKEND``), and only then imports anything that imports Keras. Importing this module
imports neither Keras nor a framework.

The original's three selector functions (docs/conventions.md §20) are kept as thin wrappers for
callers such as ptychodus: :func:`run_cdi_example_with_backend`, :func:`train_cdi_model_with_backend` and
:func:`load_inference_bundle_with_backend`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

#: Accepted spellings -> Keras backend name (``pytorch`` is the original's name for torch).
ALIASES: dict[str, str] = {
    "tensorflow": "tensorflow",
    "pytorch": "torch",
    "torch": "torch",
    "jax": "jax",
}
#: Spellings offered on the command line, in the order the help lists them.
CHOICES: tuple[str, ...] = ("tensorflow", "pytorch", "torch", "jax")
DEFAULT = "tensorflow"
#: Backend -> the importable package it needs and the pip extra that installs it.
_PACKAGE = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}

#: XLA:CPU default for the jax backend: run convolutions through XLA's own emitter instead of
#: the YNNPACK fusion this jaxlib uses by default, whose backward (weight-gradient) convolutions
#: are slow on CPU. Measured on the 2-core AVX-512 machine, N64 gs1 batch 16: training step
#: 0.70 -> 0.60 s, inference 82 -> 94 patterns/s; forward outputs bit-identical, gradients within
#: 3e-6 relative. XLA aborts on flags it does not know, so it is only added for the jaxlib
#: versions it was tested with, and never when XLA_FLAGS already chooses a YNN fusion setting.
JAX_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_JAX_FLAG_JAXLIB = ((0, 10),)

_log = logging.getLogger(__name__)


class BackendError(ValueError):
    """The backend cannot be used; the one-line message names the fix."""


def resolve_backend(flag: str | None, env: dict[str, str] | None = None) -> str:
    """The Keras backend name chosen by ``--backend`` > ``KERAS_BACKEND`` > ``tensorflow``.

    Args:
        flag: the ``--backend`` value, or None when the flag was not given.
        env: environment mapping (default ``os.environ``).

    Returns:
        ``"tensorflow"``, ``"torch"`` or ``"jax"``.

    Raises:
        BackendError: an unknown name (the message names where it came from and the choices).
    """
    env = os.environ if env is None else env
    if flag is not None:
        name, source = flag, "--backend"
    elif env.get("KERAS_BACKEND"):
        name, source = env["KERAS_BACKEND"], "KERAS_BACKEND"
    else:
        return DEFAULT
    backend = ALIASES.get(name.strip().lower())
    if backend is None:
        raise BackendError(
            f"unknown backend {name!r} (from {source}); choose one of {', '.join(CHOICES)}"
        )
    return backend


def _keras_backend_in_use() -> str | None:
    """The backend of an already-imported Keras, or None when Keras is not imported yet."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.backend.backend())
    except AttributeError:  # a half-imported keras: its config module knows
        config = sys.modules.get("keras.src.backend.config")
        return str(config.backend()) if config is not None else None


def jax_xla_flags(current: str | None, jaxlib_version: str | None) -> str | None:
    """``XLA_FLAGS`` with :data:`JAX_CPU_FLAG` added, or None to leave it as it is.

    Args:
        current: the environment's ``XLA_FLAGS`` (None when unset).
        jaxlib_version: the installed jaxlib's version (None when unknown).
    """
    if current and "ynn_fusion_type" in current:
        return None  # the user chose
    try:
        major_minor = tuple(int(p) for p in str(jaxlib_version).split(".")[:2])
    except ValueError:
        return None
    if major_minor not in _JAX_FLAG_JAXLIB:
        return None
    return f"{current} {JAX_CPU_FLAG}".strip() if current else JAX_CPU_FLAG


def _jax_defaults() -> None:
    """Apply :func:`jax_xla_flags` to this process while JAX is not imported yet."""
    if sys.modules.get("jax") is not None:
        return  # XLA read its flags already
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    flags = jax_xla_flags(os.environ.get("XLA_FLAGS"), version)
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags
        _log.debug("XLA_FLAGS=%s", flags)


def activate(name: str, *, flag_given: bool = True) -> str:
    """Make ``name`` the Keras backend of this process; call before importing Keras.

    For jax this also adds the XLA:CPU default :data:`JAX_CPU_FLAG` to ``XLA_FLAGS`` (see there).

    Logs one line when an explicit ``--backend`` overrides a different ``KERAS_BACKEND``.

    Args:
        name: a backend name or alias (``pytorch`` = ``torch``).
        flag_given: whether ``name`` came from an explicit ``--backend`` (for the log line only).

    Returns:
        The canonical backend name.

    Raises:
        BackendError: unknown name, the backend's package is not installed, or Keras is already
        imported with another backend (one line with the fix).
    """
    backend = ALIASES.get(str(name).strip().lower())
    if backend is None:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}")
    in_use = _keras_backend_in_use()
    if in_use is not None and in_use != backend:
        raise BackendError(
            f"keras is already imported with backend {in_use!r}, so {backend!r} cannot be "
            f"selected in this process; start a new process with KERAS_BACKEND={backend}"
        )
    package = _PACKAGE[backend]
    if importlib.util.find_spec(package) is None:
        raise BackendError(
            f"backend {backend!r} needs the {package!r} package, which is not installed; "
            f"install it with: pip install 'ptycho-k3[{backend}]'"
        )
    env_value = os.environ.get("KERAS_BACKEND")
    if flag_given and env_value and ALIASES.get(env_value.strip().lower()) != backend:
        _log.info("backend %s from --backend overrides KERAS_BACKEND=%s", backend, env_value)
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":
        _jax_defaults()
    return backend


def select(flag: str | None) -> str:
    """:func:`resolve_backend` then :func:`activate`: the one call a command makes."""
    return activate(resolve_backend(flag), flag_given=flag is not None)


def skip_unused_frameworks(backend: str) -> list[str]:
    """Keep Keras, in a fresh command process, from importing frameworks it will not run on.

    Keras imports JAX whenever it is installed (for an Orbax checkpoint callback), whatever the
    backend; with TensorFlow and torch that costs ~110 MiB of resident memory and ~0.3 s per
    command. Marking the unused framework packages as absent makes those optional imports fail
    fast, as they would on a machine without them. Acts only before Keras is imported and only
    on packages not imported yet; afterwards importing them in this process raises ImportError,
    so only our command entry points (one backend a process) call this, never library code.

    Returns:
        The packages marked absent (empty once Keras is imported).
    """
    if "keras" in sys.modules:
        return []
    skipped = []
    for package in ("jax", "tensorflow"):
        if package != _PACKAGE[backend] and package not in sys.modules:
            sys.modules[package] = None  # type: ignore[assignment]  # the import system's "absent"
            skipped.append(package)
    return skipped


# ------------------------------------------------------------------------------------------
# The original's selector API (docs/conventions.md §20), for callers such as ptychodus.


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
    M: int = 20,
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


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy, Keras' global seed generator and the active framework.

    Same effect as ``keras.utils.set_random_seed`` for the active backend, except that under
    torch and JAX it does not import TensorFlow just to seed it (Keras does whenever TF is
    installed: ~170 MiB of resident memory and ~2 s, for a framework that is not in use).
    """
    import keras

    with _unimported_tensorflow_hidden(keras.backend.backend() != "tensorflow"):
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def _unimported_tensorflow_hidden(hide: bool) -> Iterator[None]:
    """While active, Keras' seeding sees TensorFlow as absent, if ``hide`` and TF is not
    imported yet (touching Keras' lazy handle's ``.available`` would import it)."""
    try:
        from keras.src.utils import module_utils, rng_utils
    except ImportError:  # Keras moved its internals: seed the documented way
        hide = False
    lazy_tf = getattr(rng_utils, "tf", None) if hide else None
    if lazy_tf is None or not isinstance(lazy_tf, module_utils.LazyModule) or lazy_tf.module is not None:
        yield
        return

    class _Absent:
        available = False

    rng_utils.tf = _Absent()
    try:
        yield
    finally:
        rng_utils.tf = lazy_tf

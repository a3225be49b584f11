"""The backend selector: choose TensorFlow, PyTorch or JAX before Keras is imported.

Keras fixes its backend on first import, so a command parses its arguments, calls
:func:`resolve_backend` (``--backend`` > ``KERAS_BACKEND`` > ``tensorflow``) and :func:`activate`
(sets ``KERAS_BACKEND``), and only then imports anything that imports Keras. Importing this module
imports neither Keras nor a framework.

Framework settings that change speed or numerics live here and nowhere else:

- JAX: :data:`JAX_CPU_FLAG` is added to ``XLA_FLAGS`` by :func:`activate` (faster CPU convolution
  gradients with jaxlib 0.10; a user's own ``ynn_fusion_type`` wins).
- TensorFlow: oneDNN is left at TensorFlow's default (on), which is what commands, the demo and
  the benchmarks run. Only the test suite sets ``TF_ENABLE_ONEDNN_OPTS=0`` (Makefile, tests/),
  for tighter cross-backend parity: oneDNN's reordered kernels differ from the other backends by
  more float32 rounding, and turning them off made TensorFlow training ~2.4x slower here.
- glibc ``malloc`` keeps large freed buffers in the process (:mod:`ptycho_k3.allocator`, applied
  by :func:`activate`): without it every PyTorch/JAX forward pass page-faults its activations in
  afresh.
- Threads are left at each framework's default.

The original's three selector functions (docs/conventions.md §20: ``run_cdi_example_with_backend``,
``train_cdi_model_with_backend``, ``load_inference_bundle_with_backend``) live in
:mod:`ptycho_k3.workflows.legacy` and ``set_random_seed`` in :mod:`ptycho_k3.seeding`; all four are
still importable from here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from typing import Any

from ptycho_k3 import allocator

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
    allocator.tune()
    if backend == "jax":
        _jax_defaults()
    return backend


def select(flag: str | None) -> str:
    """:func:`resolve_backend` then :func:`activate`: the one call a command makes."""
    return activate(resolve_backend(flag), flag_given=flag is not None)


#: Packages Keras imports at start-up only for optional integrations no command uses, when they
#: happen to be installed (scikit-learn for ``keras.wrappers``, pulled in by the ptychodus extra;
#: pyplot for ``keras.visualization``): ~0.5-0.9 s of a command's cold start on 2 cores. Our own
#: pictures use ``matplotlib.figure`` and the Agg canvas, never pyplot.
UNUSED_BY_COMMANDS: tuple[str, ...] = ("sklearn", "matplotlib.pyplot")


def skip_unused_frameworks(backend: str) -> list[str]:
    """Keep Keras, in a fresh command process, from importing packages it will not use.

    Keras imports JAX whenever it is installed (for an Orbax checkpoint callback), whatever the
    backend; with TensorFlow and torch that costs ~110 MiB of resident memory and ~0.3 s per
    command; likewise :data:`UNUSED_BY_COMMANDS`. Marking those packages as absent makes the
    optional imports fail fast, as they would on a machine without them. Acts only before Keras
    is imported and only on packages not imported yet; afterwards importing them in this process
    raises ImportError, so only our command entry points (one backend a process) call this,
    never library code.

    Returns:
        The packages marked absent (empty once Keras is imported).
    """
    if "keras" in sys.modules:
        return []
    unused = [p for p in ("jax", "tensorflow") if p != _PACKAGE[backend]]
    skipped = []
    for package in (*unused, *UNUSED_BY_COMMANDS):
        if package not in sys.modules:
            sys.modules[package] = None  # type: ignore[assignment]  # the import system's "absent"
            skipped.append(package)
    return skipped


# ------------------------------------------------------------------------------------------
# Moved names, still importable from here (resolved on first use, so this module keeps importing
# nothing of the layers above it).

_MOVED = {
    "train_cdi_model_with_backend": "ptycho_k3.workflows.legacy",
    "run_cdi_example_with_backend": "ptycho_k3.workflows.legacy",
    "load_inference_bundle_with_backend": "ptycho_k3.workflows.legacy",
    "set_random_seed": "ptycho_k3.seeding",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'ptycho_k3.backend' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

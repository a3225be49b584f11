"""Data-parallel training and inference through ``keras.distribution`` (``--distribute``).

Modes (:data:`DISTRIBUTE_MODES`): ``none`` (the default: one device, nothing here is used) and
``data_parallel``: Keras 3's :class:`keras.distribution.DataParallel` over every visible device of
every process. The variables are replicated on every device, each global batch is split along
its first axis, and XLA all-reduces the gradients, so every device applies the same update.

**Backends.** Keras 3's distribution API is complete only for JAX (Keras 3.15: the TensorFlow
backend's ``distribution_lib`` only lists devices and converts layouts, with no
``initialize`` and no sharding of ``fit``'s data; PyTorch has none). ``data_parallel`` under
another backend is a :class:`~ptycho_k3.backend.BackendError` (exit 2) whose one line names jax.

**Batches.** The global batch is the configured ``batch_size``: the same groups per optimiser
step as a one-device run, so the learning rate and the loss curve carry over. Each of the ``D``
devices gets ``batch_size / D`` groups; ``batch_size`` must be divisible by ``D`` (a
:class:`~ptycho_k3.config.ConfigError` otherwise, checked before anything is written). The loss
is the mean over the global batch, so a ``D``-device run takes the same steps as a one-device
run up to float32 summation order (the all-reduce adds per-device partial sums).

**The last partial batch** of an epoch (``n mod batch_size`` groups) cannot always be split
evenly. In training and validation it is cut to the largest multiple of ``D``: at most ``D - 1``
groups are left out of the epoch, the last ones of its shuffled order in training (a different
few each epoch), the same few every epoch in validation (its order is fixed); a batch of fewer
than ``D`` groups is dropped, and a validation set of fewer than ``D`` groups is refused. With one
device nothing is cut. At inference a batch is padded instead (its last group repeated up to a
multiple of ``D``; with a ``batch_size`` divisible by ``D`` only the last batch) and the padded
outputs are discarded, so every group is reconstructed.

**Processes and hosts.** With ``KERAS_DISTRIBUTION_NUM_PROCESSES`` > 1 (one command per host, or
per process on one host), :func:`setup` calls :func:`keras.distribution.initialize`, which reads
``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (``host:port`` of every process, comma-separated, the first
one being the coordinator; or only the coordinator's), ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
``KERAS_DISTRIBUTION_PROCESS_ID`` (0 is the coordinator). It must run before JAX computes anything
(commands call it right after their input checks). Every process reads the scan and forms the same
groups and the same shuffled order (all seeded by ``seed``); of each global batch (sorted) process
``p`` of ``P`` feeds rows ``[p b/P, (p+1) b/P)`` to its own devices (:meth:`ShardPlan.local_batch`),
and Keras assembles the global batch from the parts. At inference every process shards each batch
the same way and receives the whole prediction back. Every process ends with the same weights and
writes the same outputs: on a shared file system give each its own ``--output_dir``.

Importing this module imports no Keras; :func:`validate` needs none either.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho_k3.backend import BackendError
from ptycho_k3.config import DISTRIBUTE_MODES, ConfigError

__all__ = ["DISTRIBUTE_MODES", "NO_DISTRIBUTION", "ProcessEnv", "ShardPlan", "process_env",
           "setup", "validate"]

#: Backends on which Keras 3's distribution API can run ``DataParallel`` training.
SUPPORTED_BACKENDS = ("jax",)
ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"

_log = logging.getLogger(__name__)

#: A prediction function: model inputs ``(x, offsets)`` of one batch -> the outputs as NumPy.
Predictor = Callable[[tuple[np.ndarray, ...]], np.ndarray]


@dataclass(frozen=True)
class ProcessEnv:
    """The process layout of ``KERAS_DISTRIBUTION_*`` (:func:`process_env`).

    Attributes:
        num_processes: processes of the run (1 when the variables are unset).
        process_id: this process's index in ``[0, num_processes)``.
        addresses: the ``host:port`` addresses given (the first is the coordinator).
    """

    num_processes: int = 1
    process_id: int = 0
    addresses: tuple[str, ...] = ()


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None


def process_env(env: Mapping[str, str] | None = None) -> ProcessEnv:
    """Read and check ``KERAS_DISTRIBUTION_*`` (no Keras needed).

    Several processes are meant when ``KERAS_DISTRIBUTION_NUM_PROCESSES`` > 1, or when it is
    unset and ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` lists several addresses.

    Raises:
        ConfigError: a non-integer, a process id out of range, no address for several
            processes, or an address count that does not match the process count.
    """
    env = os.environ if env is None else env
    addresses = tuple(a.strip() for a in env.get(ENV_ADDRESSES, "").split(",") if a.strip())
    n = _env_int(env, ENV_NUM_PROCESSES)
    if n is None:
        n = len(addresses) if len(addresses) > 1 else 1
    if n < 1:
        raise ConfigError(f"{ENV_NUM_PROCESSES} must be >= 1, got {n}")
    pid = _env_int(env, ENV_PROCESS_ID)
    if n == 1:
        return ProcessEnv(1, 0, addresses)
    if pid is None or not 0 <= pid < n:
        raise ConfigError(f"{ENV_NUM_PROCESSES}={n} needs {ENV_PROCESS_ID} in 0..{n - 1} "
                          f"(this process's index), got {env.get(ENV_PROCESS_ID)!r}")
    if not addresses:
        raise ConfigError(f"{ENV_NUM_PROCESSES}={n} needs {ENV_ADDRESSES}: the coordinator's "
                          "host:port (or every process's, comma-separated, the coordinator first)")
    if len(addresses) > 1 and len(addresses) != n:
        raise ConfigError(f"{ENV_ADDRESSES} lists {len(addresses)} addresses but "
                          f"{ENV_NUM_PROCESSES} is {n}")
    return ProcessEnv(n, pid, addresses)


def validate(mode: str, backend: str, env: Mapping[str, str] | None = None) -> ProcessEnv:
    """Check ``--distribute mode`` against the active ``backend`` and the process variables.

    Call it with the other input checks, before anything is written; it needs no Keras.

    Returns:
        The process layout (one process for ``none``, whatever the variables say).

    Raises:
        ConfigError: an unknown mode, or bad ``KERAS_DISTRIBUTION_*`` values.
        BackendError: ``data_parallel`` on a backend other than jax (one line naming jax).
    """
    if mode not in DISTRIBUTE_MODES:
        raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTE_MODES)}, got {mode!r}")
    if mode == "none":
        env = os.environ if env is None else env
        layout = process_env(env) if env.get(ENV_NUM_PROCESSES) else ProcessEnv()
        if layout.num_processes > 1:
            _log.warning("%s=%d is set but --distribute is none: this process runs alone",
                         ENV_NUM_PROCESSES, layout.num_processes)
        return ProcessEnv()
    if backend not in SUPPORTED_BACKENDS:
        raise BackendError(
            f"--distribute {mode} needs the jax backend (Keras 3's distribution API is complete "
            f"only for JAX), but the backend is {backend}: run with --backend jax or "
            "KERAS_BACKEND=jax")
    return process_env(env)


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """How batches are split over devices and processes (:func:`setup`).

    Attributes:
        mode: ``none`` or ``data_parallel``.
        n_devices: devices of the whole run, every process counted (``D``).
        n_processes: processes of the run (``P``).
        process_index: this process's index ``p``.
        distribution: the active :class:`keras.distribution.DataParallel` (None for ``none``).
    """

    mode: str = "none"
    n_devices: int = 1
    n_processes: int = 1
    process_index: int = 0
    distribution: Any = None

    @property
    def active(self) -> bool:
        """Whether batches are sharded (a distribution exists)."""
        return self.distribution is not None

    def scope(self) -> contextlib.AbstractContextManager:
        """Context for building, compiling and fitting a model under this plan (the
        distribution's ``scope()``; a no-op for ``none``)."""
        return self.distribution.scope() if self.active else contextlib.nullcontext()

    def check_batch_size(self, batch_size: int, name: str = "batch_size") -> None:
        """Refuse a global batch that does not split evenly over the devices.

        Raises:
            ConfigError: ``batch_size`` is not a multiple of :attr:`n_devices`.
        """
        if batch_size % self.n_devices:
            fits = ", ".join(str(self.n_devices * k) for k in (1, 2, 4))
            raise ConfigError(
                f"--{name} {batch_size} is not divisible by the {self.n_devices} devices of "
                f"--distribute {self.mode} (each device takes {name} / devices groups); use a "
                f"multiple of {self.n_devices}, e.g. {fits}")

    def check_groups(self, n_groups: int, what: str = "validation") -> None:
        """Refuse a set of groups too small to give one batch over every device.

        Raises:
            ConfigError: fewer than :attr:`n_devices` groups (the batch would be empty).
        """
        if n_groups < self.n_devices:
            raise ConfigError(
                f"the {what} set has {n_groups} group(s), fewer than the {self.n_devices} devices "
                f"of --distribute {self.mode}, so it gives no batch; raise --n_groups (or "
                "--validation_fraction)")

    def usable(self, n: int) -> int:
        """The largest multiple of :attr:`n_devices` not above ``n`` (groups a batch keeps)."""
        return n - n % self.n_devices

    def n_batches(self, n_groups: int, batch_size: int) -> int:
        """Global batches of an epoch over ``n_groups`` (the last cut, or dropped when empty)."""
        full, rest = divmod(n_groups, batch_size)
        return full + (1 if self.usable(rest) else 0)

    def local_batch(self, order: np.ndarray, i: int, batch_size: int) -> np.ndarray:
        """This process's part of the ``i``-th global batch of ``order`` (sorted indices).

        The global batch is ``order[i b:(i+1) b]``, cut to a multiple of :attr:`n_devices`,
        sorted; process ``p`` of ``P`` takes its ``p``-th contiguous ``1/P``. With one process
        and one device this is ``np.sort(order[i b:(i+1) b])``.
        """
        batch = order[i * batch_size:(i + 1) * batch_size]
        batch = np.sort(batch[:self.usable(len(batch))])
        part = len(batch) // self.n_processes
        return batch[self.process_index * part:(self.process_index + 1) * part]

    def predictor(self, model: Any) -> Predictor:
        """A function predicting one batch with ``model`` under this plan.

        ``none``: ``model.predict_on_batch``. ``data_parallel`` (jax): the batch is padded to a
        multiple of :attr:`n_devices`, sharded over the devices (in every process, each process
        transferring only its own rows), run through ``model.stateless_call`` with the weights
        replicated, and the whole output comes back to every process, padding removed. The
        weights are read once, when the predictor is made.
        """
        if not self.active:
            return model.predict_on_batch
        return _jax_predictor(model, self.distribution, self.n_devices)


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with its last row repeated up to ``rows`` rows (a batch padded to a fixed length;
    the caller drops the padded rows' outputs). Repeating a real row keeps the padding inside
    the data's own range."""
    a = np.asarray(a)
    if len(a) >= rows:
        return a
    return np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)])


#: The plan of ``--distribute none``.
NO_DISTRIBUTION = ShardPlan()

_PLAN: ShardPlan | None = None


def setup(mode: str) -> ShardPlan:
    """The plan of ``--distribute mode`` in this process, initialising processes the first time.

    ``data_parallel``: checks the backend (:func:`validate`), calls
    :func:`keras.distribution.initialize` when ``KERAS_DISTRIBUTION_*`` name several processes
    (before JAX has computed anything), and builds a :class:`keras.distribution.DataParallel`
    over :func:`keras.distribution.list_devices` (every device of every process) with
    ``auto_shard_dataset=False`` (the data feeders hand over each process's own part). Later
    calls return the same plan. Nothing is set globally: use :meth:`ShardPlan.scope`.

    Raises:
        ConfigError, BackendError: as :func:`validate`.
    """
    import keras

    layout = validate(mode, keras.backend.backend())
    if mode == "none":
        return NO_DISTRIBUTION
    global _PLAN
    if _PLAN is None:
        if layout.num_processes > 1:
            _initialize(layout)
        devices = keras.distribution.list_devices()
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
        _PLAN = ShardPlan(mode, len(devices), distribution.num_processes, _process_index(),
                          distribution)
        _log.info("distribute %s: %d devices (%s) in %d process(es); this is process %d",
                  mode, len(devices), ", ".join(devices), _PLAN.n_processes, _PLAN.process_index)
    return _PLAN


def _initialize(layout: ProcessEnv) -> None:
    """:func:`keras.distribution.initialize` from the environment, once per process."""
    import jax
    import keras

    if jax.distributed.is_initialized():
        return
    try:
        keras.distribution.initialize()
    except RuntimeError as exc:
        raise RuntimeError(f"keras.distribution.initialize failed ({exc}); "
                           "ptycho_k3.distribute.setup must run before JAX computes anything"
                           ) from exc
    if jax.process_count() != layout.num_processes:
        raise RuntimeError(f"{ENV_NUM_PROCESSES}={layout.num_processes} but JAX sees "
                           f"{jax.process_count()} processes")


def _process_index() -> int:
    import jax

    return int(jax.process_index())


def _jax_predictor(model: Any, distribution: Any, n_devices: int) -> Predictor:
    """``data_parallel`` prediction under JAX (see :meth:`ShardPlan.predictor`)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec())

    def place(value: Any, sharding: Any) -> Any:
        """A host or device array onto ``sharding`` (every process passes the same value;
        each transfers only its own devices' shards)."""
        if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
            return value
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    trainable = [place(v.value, replicated) for v in model.trainable_variables]
    non_trainable = [place(v.value, replicated) for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, inputs):
        outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
        return jax.lax.with_sharding_constraint(outputs, replicated)

    def predict(inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        n = len(inputs[0])
        pad = -n % n_devices
        arrays = []
        for a in inputs:
            a = pad_rows(a, n + pad)
            arrays.append(place(a, distribution.get_data_layout(a.shape).backend_layout))
        out = forward(trainable, non_trainable, tuple(arrays))
        return np.asarray(out)[:n]

    return predict

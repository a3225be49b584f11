"""``--distribute data_parallel`` (:mod:`ptycho_k3.distribute`): batch bookkeeping, the backend
check, one-process runs over 1, 2 and 4 virtual CPU devices, and two processes joined through
``KERAS_DISTRIBUTION_*``.

The training runs happen in subprocesses (``tests/distribute_worker.py``, or the real
``ptycho-train``) with ``KERAS_BACKEND=jax`` and ``XLA_FLAGS=--xla_force_host_platform_device_count``
set before JAX is imported, whatever backend the suite runs under; like the flag's check under
TensorFlow and PyTorch they are marked ``crossbackend`` (run once, not per backend). The file
takes ~50 s on 2 quiet cores (~90 CPU seconds: five JAX processes, each compiling a tiny model).

Tolerances of a D-device run against the one-device run with the same global batch (8 Adam
steps, learning rate 1e-3): the arithmetic is the same except the order of the batch reductions
(each device sums its rows, the all-reduce adds the partial sums), so a reduction differs by
float32 rounding (~6e-8 relative per add, ~1e-6 over the 32k-element sums of the loss). Hence
the first step's loss (same weights on both sides) ``rtol 1e-5``. Every later loss (the other
steps, the epoch means, the validation loss) is taken after updates and so moves with the
weights, which are held to 2e-4 in relative L2 (below); the loss's relative sensitivity to a
relative weight change is O(1) here, so those losses get ``rtol 1e-3``. Adam normalises
every weight's step to about the learning rate whatever the gradient's size, so a weight whose
gradient is at rounding level (cancellation) can step differently: the weights must agree to
2e-4 in relative L2 norm, and no weight may differ by two steps (``2 lr``); the predicted
patches (values ~0.5) to ``atol 1e-4``. Measured on the 2-core development machine, 2 and 4
devices in one process: loss 1e-6, validation loss 3e-6, weights 1e-5 (L2) and 2.8e-4 = 0.28 lr
(max), patches 1e-5; two processes of 2 devices: loss 2e-6, validation loss 2e-5. With the
per-epoch shuffle keyed by (seed, epoch) a later step of the 4-device run reached 1.4e-5 and
the second epoch's loss of the two processes 2.1e-4.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ptycho_k3 import distribute
from ptycho_k3.backend import BackendError
from ptycho_k3.config import ConfigError, InferenceConfig, TrainingConfig

import distribute_worker as worker

HERE = Path(__file__).resolve().parent

HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
TIMEOUT = 300
LR = worker.LEARNING_RATE


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_DISTRIBUTION_")}
    env.update(KERAS_BACKEND="jax", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait(procs: list[subprocess.Popen], what: str) -> list[str]:
    """Wait for every process; on a failure or timeout kill the rest and fail with stderr."""
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=TIMEOUT)
            errs.append(err)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{what}: timed out after {TIMEOUT} s")
    for p, err in zip(procs, errs, strict=True):
        if p.returncode != 0:
            for q in procs:
                q.kill()
            pytest.fail(f"{what}: exit {p.returncode}:\n{err[-3000:]}")
    return errs


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=HERE.parent)


# ------------------------------------------------------------------------------------------
# bookkeeping (no Keras)


def _plan(devices: int, processes: int = 1, index: int = 0) -> distribute.ShardPlan:
    return distribute.ShardPlan("data_parallel", devices, processes, index, distribution=object())


def test_none_plan_batches_like_a_plain_epoch():
    order = np.random.default_rng(0).permutation(21)
    plan = distribute.NO_DISTRIBUTION
    assert plan.n_batches(21, 8) == 3
    for i in range(3):
        np.testing.assert_array_equal(plan.local_batch(order, i, 8), np.sort(order[i * 8:i * 8 + 8]))


def test_last_partial_batch_is_cut_to_a_multiple_of_the_devices():
    order = np.random.default_rng(1).permutation(23)  # 2 full batches of 8, then 7
    plan = _plan(4)
    assert plan.n_batches(23, 8) == 3
    np.testing.assert_array_equal(plan.local_batch(order, 2, 8), np.sort(order[16:20]))
    assert _plan(4).n_batches(19, 8) == 2  # 3 left: fewer than the devices, dropped
    assert _plan(1).n_batches(19, 8) == 3  # one device: nothing cut


def test_processes_take_contiguous_parts_of_the_sorted_global_batch():
    order = np.random.default_rng(2).permutation(40)
    parts = [_plan(4, 2, p).local_batch(order, 1, 8) for p in range(2)]
    assert [len(p) for p in parts] == [4, 4]
    np.testing.assert_array_equal(np.concatenate(parts), np.sort(order[8:16]))


def test_batch_size_must_split_over_the_devices():
    _plan(4).check_batch_size(16)
    with pytest.raises(ConfigError, match="not divisible by the 4 devices"):
        _plan(4).check_batch_size(18)
    with pytest.raises(ConfigError, match="validation set has 3 group"):
        _plan(4).check_groups(3, "validation")


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_validate_names_jax(backend):
    with pytest.raises(BackendError, match="needs the jax backend") as info:
        distribute.validate("data_parallel", backend, env={})
    assert "\n" not in str(info.value)
    assert distribute.validate("none", backend, env={}) == distribute.ProcessEnv()
    with pytest.raises(ConfigError, match="distribute must be one of"):
        distribute.validate("model_parallel", "jax", env={})


def test_process_env():
    env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:2345",
           "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    assert distribute.process_env(env) == distribute.ProcessEnv(
        2, 1, ("10.0.0.1:1234", "10.0.0.2:2345"))
    assert distribute.process_env({}) == distribute.ProcessEnv()
    assert distribute.process_env({**env, "KERAS_DISTRIBUTION_NUM_PROCESSES": ""}).num_processes == 2
    for bad, match in ((dict(env, KERAS_DISTRIBUTION_PROCESS_ID="2"), "PROCESS_ID in 0..1"),
                       (dict(env, KERAS_DISTRIBUTION_NUM_PROCESSES="3"), "lists 2 addresses"),
                       (dict(env, KERAS_DISTRIBUTION_JOB_ADDRESSES=""), "needs KERAS_DISTRIBUTION_JOB"),
                       (dict(env, KERAS_DISTRIBUTION_NUM_PROCESSES="two"), "must be an integer")):
        with pytest.raises(ConfigError, match=match):
            distribute.process_env(bad)


def test_distribute_is_a_validated_field_of_both_configs():
    assert TrainingConfig().distribute == "none" and InferenceConfig().distribute == "none"
    assert TrainingConfig(distribute="data_parallel").to_dict()["distribute"] == "data_parallel"
    for cls in (TrainingConfig, InferenceConfig):
        with pytest.raises(ConfigError, match="distribute must be one of"):
            cls(distribute="all")


# ------------------------------------------------------------------------------------------
# the flag under TensorFlow and PyTorch: exit 2, one line naming jax, before any framework

_FLAG_SCRIPT = textwrap.dedent("""
    import sys
    from ptycho_k3.cli import infer, reconstruct, train
    codes = [
        train.main(["--train_data_file", "t.npz", "--distribute", "data_parallel"]),
        infer.main(["--model_path", "m", "--test_data", "t.npz", "--distribute", "data_parallel"]),
        reconstruct.main(["--init", "pinn", "--model_path", "m", "--test_data", "t.npz",
                          "--distribute", "data_parallel"]),
    ]
    loaded = [m for m in ("keras", "tensorflow", "torch", "jax") if sys.modules.get(m) is not None]
    print(codes, loaded)
""")


@pytest.mark.crossbackend
@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_flag_exits_2_naming_jax(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_DISTRIBUTION_")}
    proc = subprocess.run([sys.executable, "-c", _FLAG_SCRIPT], env={**env, "KERAS_BACKEND": backend},
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 2, 2] []"  # exit 2 each; checked before Keras is imported
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr  # one line per command
    for prog, line in zip(("ptycho-train", "ptycho-infer", "ptycho-reconstruct"), lines,
                          strict=True):
        assert line.startswith(f"{prog}: error: --distribute data_parallel needs the jax backend")
        assert f"the backend is {backend}" in line and "KERAS_BACKEND=jax" in line


# ------------------------------------------------------------------------------------------
# one process, 1 / 2 / 4 virtual devices


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The worker run on 1 device (``none``) and on 2 and 4 devices (``data_parallel``), at the
    same time (compilation is single-threaded; 2 cores). Also the scan the runs trained on."""
    if not HAS_JAX:
        pytest.skip("jax is not installed")
    tmp = tmp_path_factory.mktemp("distribute")
    scan = tmp / "scan.npz"
    jobs = {1: ("none", [str(scan)]), 2: ("data_parallel", []), 4: ("data_parallel", [])}
    procs = [_start([sys.executable, str(worker.__file__), mode, str(tmp / f"d{d}.npz"), *extra],
                    _env(d)) for d, (mode, extra) in jobs.items()]
    _wait(procs, "distribute_worker")
    out = {}
    for d in jobs:
        with np.load(tmp / f"d{d}.npz") as f:
            out[d] = {k: f[k] for k in f.files}
    out["scan"] = scan
    return out


def _weights(run: dict) -> list[np.ndarray]:
    return [run[k] for k in sorted(k for k in run if k.startswith("w"))]


def assert_same_training(ref: dict, loss: np.ndarray, val_loss: np.ndarray,
                         weights: list[np.ndarray] | None = None) -> None:
    """The loss curves (and the weights) of a run equal the reference's within the module's
    tolerances."""
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-3)
    np.testing.assert_allclose(val_loss, ref["val_loss"], rtol=1e-3)
    if weights is None:
        return
    ref_w = _weights(ref)
    assert [w.shape for w in weights] == [w.shape for w in ref_w]
    diff = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(weights, ref_w, strict=True)))
    norm = np.sqrt(sum(float(np.sum(b**2)) for b in ref_w))
    assert diff / norm < 2e-4, f"relative L2 weight difference {diff / norm:.2e}"
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, ref_w, strict=True))
    assert worst < 2 * LR, f"max weight difference {worst:.2e} (learning rate {LR})"


@needs_jax
@pytest.mark.crossbackend
@pytest.mark.parametrize("devices", [2, 4])
def test_data_parallel_trains_and_predicts_like_one_device(runs, devices):
    one, run = runs[1], runs[devices]
    assert int(one["n_devices"]) == 1 and int(run["n_devices"]) == devices
    assert int(run["n_processes"]) == 1
    assert len(run["loss"]) == worker.EPOCHS
    assert len(run["step_loss"]) == worker.EPOCHS * worker.STEPS
    np.testing.assert_allclose(run["step_loss"][0], one["step_loss"][0], rtol=1e-5)
    np.testing.assert_allclose(run["step_loss"], one["step_loss"], rtol=1e-3)
    assert_same_training(one, run["loss"], run["val_loss"], _weights(run))
    # inference: every group reconstructed (padded batches), the same patches
    assert run["patches"].shape == one["patches"].shape == (worker.N_INFER, 64, 64)
    np.testing.assert_allclose(run["patches"], one["patches"], atol=1e-4)


# ------------------------------------------------------------------------------------------
# two processes through KERAS_DISTRIBUTION_*

_COLLECTIVES_PROBE = textwrap.dedent("""
    import os, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]), initialization_timeout=60)
    mesh = Mesh(np.array(jax.devices()), ("b",))
    local = np.full(jax.local_device_count(), jax.process_index() + 1.0, np.float32)
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("b")), local)
    total = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, P()))(x)
    print(float(total), jax.config.jax_cpu_collectives_implementation)
""")


def _collectives_work() -> str | None:
    """None when a cross-process all-reduce over JAX CPU devices works here, else why not."""
    address = f"localhost:{_free_port()}"
    procs = [_start([sys.executable, "-c", _COLLECTIVES_PROBE, address, str(i)], _env(2))
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=90) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        return "a cross-process psum over JAX CPU devices timed out"
    for p, (out, err) in zip(procs, outs, strict=True):
        last = (out.strip().splitlines() or [""])[-1]  # gloo prints its connections first
        if p.returncode != 0 or not last.startswith("6.0 "):  # 2 x 1 + 2 x 2
            return (f"a cross-process psum over JAX CPU devices failed (exit {p.returncode}): "
                    f"{(err.strip() or out.strip())[-300:]}")
    return None


@needs_jax
@pytest.mark.crossbackend
def test_two_processes_train_through_the_command(runs, tmp_path):
    """Two ``ptycho-train --distribute data_parallel --do_stitching`` processes with 2 devices
    each (4 in all), joined through KERAS_DISTRIBUTION_*: the same loss curve as the one-device
    run of the same global batch, identical in both processes; the sharded inference gives both
    the same reconstruction; each writes its own output directory."""
    why = _collectives_work()
    if why:
        pytest.skip(why)
    port = _free_port()
    common = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{port},localhost:{port + 1}",
              "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}
    cfg = worker.training_config("data_parallel")
    args = ["--train_data_file", str(runs["scan"]), "--N", "64", "--n_filters_scale", "1",
            "--nepochs", str(cfg.nepochs), "--n_groups", str(cfg.n_groups),
            "--batch_size", str(cfg.batch_size), "--validation_fraction",
            str(cfg.validation_fraction), "--seed", str(cfg.seed), "--learning_rate",
            str(cfg.learning_rate), "--nphotons", "1e9", "--distribute", "data_parallel",
            "--do_stitching", "--test_data_file", str(runs["scan"])]
    procs = [_start([sys.executable, "-m", "ptycho_k3.cli.train", *args, "--output_dir",
                     str(tmp_path / f"p{i}")],
                    _env(2, KERAS_DISTRIBUTION_PROCESS_ID=str(i), **common)) for i in range(2)]
    errs = _wait(procs, "two ptycho-train processes")
    histories = [json.loads((tmp_path / f"p{i}" / "history.json").read_text())["history"]
                 for i in range(2)]
    for i, err in enumerate(errs):
        assert "4 devices (cpu:" in err and f"in 2 process(es); this is process {i}" in err
        assert (tmp_path / f"p{i}" / "wts.h5.zip").exists()
    assert histories[0] == histories[1]
    objects = []
    for i in range(2):
        with np.load(tmp_path / f"p{i}" / "reconstruction.npz") as f:
            objects.append(f["object"])
    assert np.isfinite(objects[0]).all()
    np.testing.assert_array_equal(objects[0], objects[1])
    assert_same_training(runs[1], np.asarray(histories[0]["loss"]),
                         np.asarray(histories[0]["val_loss"]))

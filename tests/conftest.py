"""Shared test set-up: quiet, deterministic TensorFlow; hypothesis profiles; backend report.

The backend comes from ``KERAS_BACKEND`` (``make test`` runs the suite once per backend).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (``make test`` runs two workers) each worker computes on one thread:
    # the suite's arrays are small, and two workers whose OpenMP/Eigen pools each want every
    # core spin against each other (PyTorch several times slower). Set before any framework
    # (or NumPy's BLAS) is imported; subprocesses started by tests inherit it.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_var, "1")


def _jax_compilation_cache() -> None:
    """One JAX persistent compilation cache per pytest run, empty at the start.

    Every ``train``/``build_model`` call makes new jitted functions, so JAX recompiles programs
    it has compiled before in this run (same model, same shapes): a checkpoint-resume test
    compiles one training step three times. The cache (keyed by the program, not the function
    object) turns the repeats into reads, and subprocesses started by tests (the command-line
    and cross-backend workers) share it through the environment. Measured under JAX on 2 cores:
    tests/model/test_checkpoint.py 89 -> 50 s. It starts empty and is deleted at exit, so no
    state survives between runs; a ``JAX_COMPILATION_CACHE_DIR`` set by the caller wins.
    """
    import atexit
    import shutil
    import tempfile

    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    cache = tempfile.mkdtemp(prefix="ptycho-k3-test-jax-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    # JAX stores only programs that took >= 1 s to compile by default; a training step here
    # takes less on some machines.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")


_jax_compilation_cache()

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("thorough", max_examples=500, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Golden outputs of the original PtychoPINN, committed with the tests (see fixtures/README.md).
ORACLE = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def oracle():
    """``(inputs, outputs)`` dicts of the oracle NPZ files; a missing file fails, never skips."""
    if not (ORACLE / "oracle_in.npz").exists() or not (ORACLE / "oracle_out.npz").exists():
        pytest.fail(f"oracle files not found under {ORACLE}")
    with np.load(ORACLE / "oracle_in.npz") as fin, np.load(ORACLE / "oracle_out.npz") as fout:
        return {k: fin[k] for k in fin.files}, {k: fout[k] for k in fout.files}


@pytest.fixture(scope="session")
def tiny_trained_pinn():
    """The suite's briefly trained PINN (recipe and regeneration: ``tests/tiny_pinn.py``),
    loaded from its committed bundle under the suite's backend, and its reconstruction of the
    recipe's test scan. Returns ``(reconstruction, test_scan)`` with the predicted patches kept.
    """
    from tiny_pinn import BUNDLE, tiny_scans

    from ptycho_k3.bundle import load_bundle
    from ptycho_k3.infer import reconstruct

    bundle = load_bundle(BUNDLE)
    _, test_scan = tiny_scans()
    return reconstruct(bundle.models, test_scan, input_scale=bundle.input_scale), test_scan


def pytest_report_header(config):
    return f"keras backend (KERAS_BACKEND): {os.environ.get('KERAS_BACKEND', 'tensorflow')}"


def pytest_sessionfinish(session):
    """Under pytest-xdist, hand this worker's summary lines to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from xb_report import LINES

        workeroutput["xb_lines"] = list(LINES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: collect a finished worker's summary lines."""
    from xb_report import LINES

    LINES.extend(getattr(node, "workeroutput", {}).get("xb_lines", []))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from xb_report import LINES

    if LINES:
        terminalreporter.section("cross-backend agreement")
        for line in LINES:
            terminalreporter.write_line(line)

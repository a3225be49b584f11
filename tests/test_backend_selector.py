"""The backend selector: --backend > KERAS_BACKEND > tensorflow, activation checks."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import subprocess
import sys

import pytest

from ptycho_k3 import backend as sel


@pytest.mark.parametrize(("flag", "env", "expected"), [
    (None, {}, "tensorflow"),
    (None, {"KERAS_BACKEND": "jax"}, "jax"),
    (None, {"KERAS_BACKEND": "pytorch"}, "torch"),
    ("torch", {"KERAS_BACKEND": "jax"}, "torch"),
    ("pytorch", {}, "torch"),
    ("TensorFlow", {"KERAS_BACKEND": "torch"}, "tensorflow"),
    ("jax", {}, "jax"),
])
def test_resolution_order(flag, env, expected):
    assert sel.resolve_backend(flag, env) == expected


def test_unknown_names_list_the_choices():
    with pytest.raises(sel.BackendError, match=r"'tf' \(from --backend\); choose one of "
                                               r"tensorflow, pytorch, torch, jax"):
        sel.resolve_backend("tf", {})
    with pytest.raises(sel.BackendError, match=r"from KERAS_BACKEND"):
        sel.resolve_backend(None, {"KERAS_BACKEND": "numpy"})


def _current() -> str:
    return sel.resolve_backend(None)


def test_activate_sets_env_and_logs_override(monkeypatch, caplog):
    current = _current()
    monkeypatch.setenv("KERAS_BACKEND", "pytorch" if current != "torch" else "jax")
    with caplog.at_level(logging.INFO, logger="ptycho_k3.backend"):
        assert sel.activate(current) == current
    import os

    assert os.environ["KERAS_BACKEND"] == current
    assert [r.getMessage() for r in caplog.records] == [
        f"backend {current} from --backend overrides KERAS_BACKEND="
        f"{'pytorch' if current != 'torch' else 'jax'}"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptycho_k3.backend"):
        sel.activate(current)  # no override now: silent
    assert caplog.records == []


def test_missing_package_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else real(name, *a))
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    with pytest.raises(sel.BackendError) as info:
        sel.activate("jax")
    assert "pip install 'ptycho-k3[jax]'" in str(info.value)
    assert "\n" not in str(info.value)


def test_keras_already_imported_with_another_backend():
    import keras

    current = keras.backend.backend()
    other = "jax" if current != "jax" else "torch"
    with pytest.raises(sel.BackendError, match=f"already imported with backend '{current}'"):
        sel.activate(other)
    assert sel.activate(current) == current


def test_import_does_not_import_keras():
    code = ("import sys, ptycho_k3.backend, ptycho_k3.bundle, ptycho_k3.config_io, "
            "ptycho_k3.outputs, ptycho_k3.cli.train, ptycho_k3.cli.infer, ptycho_k3.cli.evaluate; "
            "bad = [m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_original_selector_api_is_importable():
    sig = inspect.signature(sel.run_cdi_example_with_backend)
    assert list(sig.parameters) == ["train_data", "test_data", "config", "flip_x", "flip_y",
                                    "transpose", "M", "do_stitching", "torch_execution_config"]
    assert list(inspect.signature(sel.train_cdi_model_with_backend).parameters) == [
        "train_data", "test_data", "config"]
    sig = inspect.signature(sel.load_inference_bundle_with_backend)
    assert list(sig.parameters) == ["bundle_dir", "config", "model_name"]
    assert sig.parameters["model_name"].default == "diffraction_to_obj"


def test_a_command_process_imports_only_its_framework():
    """skip_unused_frameworks + set_random_seed: a fresh process on the current backend seeds and
    runs a model without importing TensorFlow or JAX when those are not its backend."""
    import keras

    current = keras.backend.backend()
    code = (
        "import sys\n"
        "from ptycho_k3 import backend as sel\n"
        f"name = sel.activate({current!r})\n"
        "skipped = sel.skip_unused_frameworks(name)\n"
        "import keras, numpy as np\n"
        "sel.set_random_seed(1)\n"
        "a = keras.random.uniform((3,))\n"
        "sel.set_random_seed(1)\n"
        "b = keras.random.uniform((3,))\n"
        "assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))\n"
        "loaded = [m for m in ('tensorflow', 'jax', 'torch', 'sklearn', 'matplotlib.pyplot')\n"
        "          if sys.modules.get(m) is not None]\n"
        "print(sorted(skipped), loaded)\n"
        "assert sel.skip_unused_frameworks(name) == []  # keras imported: no-op\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, env={**os.environ, "KERAS_BACKEND": current})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped, loaded = proc.stdout.strip().splitlines()[-1].split("] ")
    package = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[current]
    expected_skipped = sorted(({"jax", "tensorflow"} - {package}) | set(sel.UNUSED_BY_COMMANDS))
    assert skipped + "]" == str(expected_skipped)
    assert loaded == str([package])


@pytest.mark.parametrize(("current", "version", "expected"), [
    (None, "0.10.2", sel.JAX_CPU_FLAG),
    ("--xla_dump_to=/tmp/x", "0.10.0", "--xla_dump_to=/tmp/x " + sel.JAX_CPU_FLAG),
    ("--xla_cpu_experimental_ynn_fusion_type=", "0.10.2", None),  # the user's choice stays
    (None, "0.11.0", None),  # untested jaxlib: an unknown flag would abort XLA
    (None, None, None),
    (None, "dev", None),
])
def test_jax_xla_flag_default(current, version, expected):
    assert sel.jax_xla_flags(current, version) == expected

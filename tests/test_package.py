"""Packaging promises: importing ptycho_k3 loads no framework; physics is ptycho_k3.physics."""

from __future__ import annotations

import subprocess
import sys


def test_import_ptycho_k3_imports_no_framework():
    code = (
        "import sys, ptycho_k3; "
        "bad = [m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules]; "
        "print(ptycho_k3.__version__); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "0.1.0"


def test_physics_installs_inside_the_namespace():
    import keras

    from ptycho_k3 import physics

    assert physics.__name__ == "ptycho_k3.physics"
    assert keras.backend.backend() in ("tensorflow", "torch", "jax")
    for name in physics.__all__:
        assert callable(getattr(physics, name)), name

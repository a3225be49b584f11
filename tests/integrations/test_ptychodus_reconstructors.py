"""The ptycho-k3 reconstructors' parent side without a child process (each test well under a
second): Supervised needs ground truth, the command lines built from the settings, the losses
read back, the launcher's plugin hook written and removed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="needs the ptychodus extra")

from ptychodus_helpers import write_workflow  # noqa: E402

N = 64


@pytest.fixture
def library():
    """The library on a fresh ptychodus settings registry; reconstructors by name."""
    from ptychodus.api.settings import SettingsRegistry

    from ptycho_k3.integrations.ptychodus.library import PtychoK3ReconstructorLibrary

    lib = PtychoK3ReconstructorLibrary(SettingsRegistry())
    return lib, {r.name: r for r in lib}


@pytest.fixture
def calls(monkeypatch):
    """Record ``run_command`` calls instead of starting a child; the run then stops."""
    from ptycho_k3.integrations.ptychodus import reconstructors

    seen: list[tuple[str, list[str], str]] = []

    def fake(command, args, backend, log):
        seen.append((command, list(args), backend))
        raise RuntimeError("stopped before the child")

    monkeypatch.setattr(reconstructors, "run_command", fake)
    return seen


def _workflow(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(40, 90, 6), rng.uniform(40, 90, 6)
    counts = rng.poisson(20.0, (6, N, N)).astype(np.float64)
    probe = np.ones((N, N), np.complex64)
    return write_workflow(tmp_path / "wf", x, y, counts, probe, object_shape=(130, 130))


def test_supervised_needs_ground_truth(tmp_path, library, calls):
    _, rec = library
    sup = rec["Supervised"]
    wf = _workflow(tmp_path)
    # ptychodus's product.h5: its object is the flat initial guess.
    with pytest.raises(ValueError, match=r"product.h5: Supervised training needs ground truth, "
                                         r"but the product's object is uniform"):
        next(sup.train(wf, tmp_path / "out"))
    no_labels = tmp_path / "nolabels.npz"
    np.savez(no_labels, diff3d=np.zeros((2, N, N)), xcoords=np.zeros(2), ycoords=np.zeros(2))
    with pytest.raises(ValueError, match=r"nolabels.npz: .*key 'objectGuess'.*neither "
                                         r"\(keys: diff3d, xcoords, ycoords\)"):
        next(sup.train(no_labels, tmp_path / "out"))
    flat = tmp_path / "flat.npz"
    np.savez(flat, objectGuess=np.ones((100, 100), np.complex64))
    with pytest.raises(ValueError, match="key 'objectGuess' is uniform"):
        next(sup.train(flat, tmp_path / "out"))
    assert calls == []  # refused before any child started
    known = tmp_path / "known.npz"
    np.savez(known, objectGuess=np.exp(1j * np.linspace(0, 1, 100 * 100)).reshape(100, 100))
    with pytest.raises(RuntimeError, match="stopped before the child"):
        next(sup.train(known, tmp_path / "out"))
    command, args, backend = calls[0]
    assert command == "train" and backend == "torch"
    assert args[args.index("--model_type") + 1] == "supervised"
    assert args[args.index("--train_data_file") + 1] == str(known)
    # PINN trains on the same flat product without labels: no check.
    with pytest.raises(RuntimeError, match="stopped before the child"):
        next(rec["PINN"].train(wf, tmp_path / "out"))
    assert calls[1][1][calls[1][1].index("--model_type") + 1] == "pinn"


def test_command_lines_follow_the_settings(tmp_path, library, calls):
    """Backend, iterations and extra arguments reach the child's command line."""
    from ptycho_k3.integrations.ptychodus.reconstructors import PtychoK3Reconstructor

    lib, rec = library
    s = lib.settings
    s.backend.set_value("PyTorch")
    s.iterations.set_value(7)
    s.refine_probe.set_value(True)
    s.reconstruct_arguments.set_value("--n_groups 256 --refine_loss 'poisson'")
    it = rec["Iterative"]
    assert isinstance(it, PtychoK3Reconstructor)
    command, args = it._command(tmp_path / "s.npz", tmp_path / "o")
    assert command == "reconstruct"
    assert args[args.index("--init") + 1] == "flat" and args[args.index("--iterations") + 1] == "7"
    assert "--refine_probe" in args and s.extra(False) == ["--n_groups", "256", "--refine_loss",
                                                          "poisson"]
    assert s.backend_name() == "torch"
    s.backend.set_value("numpy")
    with pytest.raises(ValueError, match=r"\[PtychoK3\] Backend must be one of"):
        s.backend_name()
    with pytest.raises(RuntimeError, match="PINN-Refined: no model loaded"):
        rec["PINN-Refined"]._command(tmp_path / "s.npz", tmp_path / "o")
    s.refine_iterations.set_value(5)
    rec["PINN-Refined"]._model_path = tmp_path / "m.zip"
    command, args = rec["PINN-Refined"]._command(tmp_path / "s.npz", tmp_path / "o")
    assert command == "infer" and args[args.index("--refine_iterations") + 1] == "5"
    with pytest.raises(ValueError, match=r"missing.zip"):
        rec["PINN"].load_model_from_file(tmp_path / "missing.zip")


def test_refinement_losses_read_the_first_run(tmp_path):
    from ptycho_k3.integrations.ptychodus.reconstructors import refinement_losses

    assert refinement_losses(tmp_path) == []
    (tmp_path / "refinement_history.json").write_text(json.dumps(
        {"loss": "poisson deviance per valid pixel",
         "runs": {"PINN start": {"loss": [3.0, 2.0, 1.5]}, "flat start": {"loss": [9.0]}}}))
    assert refinement_losses(tmp_path) == [3.0, 2.0, 1.5]


def test_install_and_remove_plugin(tmp_path, monkeypatch, capsys):
    """``--install-plugin`` writes a module whose ``register_plugins`` installs the library
    (into a stand-in plugins directory here); ``--remove-plugin`` deletes it."""
    import importlib.util

    import ptychodus.model.core as core

    from ptycho_k3.integrations.ptychodus import launcher

    target = tmp_path / "plugins" / launcher.PLUGIN_MODULE
    monkeypatch.setattr(launcher, "plugin_path", lambda: target)
    monkeypatch.setattr(core, "ProcessingCore", core.ProcessingCore)  # undone after the test
    argv = list(sys.argv)
    assert launcher.main(["--install-plugin"]) == 0
    assert target.is_file() and f"wrote {target}" in capsys.readouterr().out
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left
    spec = importlib.util.spec_from_file_location("ptycho_k3_plugin_under_test", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not getattr(core.ProcessingCore, "adds_ptycho_k3", False)
    module.register_plugins(None)
    assert core.ProcessingCore.adds_ptycho_k3
    assert launcher.main(["--remove-plugin"]) == 0 and not target.exists()
    assert launcher.main(["--remove-plugin"]) == 0  # nothing to remove: fine
    assert sys.argv == argv


def test_console_script_is_the_launcher():
    """``ptycho-k3-ptychodus`` runs :func:`launcher.main` (the batch tests call it in-process)."""
    from importlib.metadata import entry_points

    from ptycho_k3.integrations.ptychodus import launcher

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "ptycho-k3-ptychodus"]
    assert ep.load() is launcher.main

"""The ptycho-k3 reconstructors as ptychodus sees them (parent side: no Keras, no framework).

Each call writes the ptychodus input as a project NPZ that keeps the raw counts
(:func:`.convert.write_scan`), runs one ptycho-k3 command (``ptycho-infer``,
``ptycho-reconstruct`` or ``ptycho-train``) in a child process with ``KERAS_BACKEND`` from the
``PtychoK3`` settings, forwards its log lines, and turns the written ``reconstruction.npz``
(object, ``x0``, ``y0``) into a ptychodus ``Product`` whose object overlays the input.

- ``PINN``, ``Supervised``: trainable; reconstruct = ``ptycho-infer`` with the loaded bundle.
  ``Supervised`` training needs ground-truth objects: the training file's ``objectGuess`` (or
  ``Y``) is the label, so a file without one, or whose object is uniform (ptychodus's initial
  guess, as in a ``product.h5`` that was never reconstructed), is refused with a ValueError
  before any process starts. Export training data from a product that holds a known object.
- ``PINN-Refined``: trainable; ``ptycho-infer --refine_iterations RefineIterations``.
- ``Iterative``: ``ptycho-reconstruct --init flat --iterations Iterations`` (no model).

Models are ptycho-k3 bundles (``wts.h5.zip``; ptychodus's ``model.zip`` in batch mode). Training
data: a file (an NPZ written by *export training data*, or any file ``ptycho-train`` reads), or
a directory holding ``train_data.npz`` (else ptychodus's ``product.h5`` and ``diffraction.h5``)
and optionally ``test_data.npz``; the bundle, history and log go to the output directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ptychodus.api.product import LossValue, Product
from ptychodus.api.reconstruct import (
    ReconstructInput,
    Reconstructor,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)

from .convert import ObjectFrame, to_ptychodus_object, write_scan
from .settings import PtychoK3Settings

TRAINING_FILE = "train_data.npz"
TEST_FILE = "test_data.npz"


def run_command(command: str, args: list[str], backend: str, log: logging.Logger) -> None:
    """Run ``ptycho_k3.cli.<command>`` in a child Python with ``KERAS_BACKEND=backend``; its
    output lines go to ``log``. RuntimeError with the last lines when it exits non-zero."""
    argv = [sys.executable, "-m", f"ptycho_k3.cli.{command}", *args, "--backend", backend]
    env = dict(os.environ, KERAS_BACKEND=backend)
    log.info("running %s", " ".join(argv[2:]))
    tail: deque[str] = deque(maxlen=8)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            log.info("%s", line.rstrip())
        status = proc.wait()
    if status != 0:
        raise RuntimeError(f"ptycho-k3 {command} (backend {backend}) exited with status "
                           f"{status}: " + " | ".join(tail))


def refinement_losses(out_dir: Path) -> list[float]:
    """Per-iteration losses of the first run in ``out_dir/refinement_history.json`` (written by
    ``ptycho-reconstruct`` and ``ptycho-infer --refine_iterations``: ``{"runs": {label:
    {"loss": [...]}}}``, the first label being the run whose object is written); [] if absent."""
    path = out_dir / "refinement_history.json"
    if not path.is_file():
        return []
    runs = json.loads(path.read_text()).get("runs", {})
    first = next(iter(runs.values()), {}) if isinstance(runs, dict) else {}
    return [float(v) for v in first.get("loss", [])]


def _product(ri: ReconstructInput, out_dir: Path, refine_probe: bool) -> Product:
    """The input product with the reconstructed object (and refined probe, losses)."""
    from ptychodus.api.probe import ProbeSequence

    result = out_dir / "reconstruction.npz"
    if not result.is_file():
        raise RuntimeError(f"ptycho-k3 wrote no {result.name} in {out_dir}")
    with np.load(result, allow_pickle=False) as z:
        obj, x0, y0 = z["object"], float(z["x0"]), float(z["y0"])
        probe = z["probe"] if "probe" in z.files else None
    frame = ObjectFrame.of(ri.product.object_)
    probes = ri.product.probes
    if refine_probe and probe is not None:
        probes = ProbeSequence(array=np.asarray(probe)[np.newaxis, np.newaxis],
                               opr_weights=None, pixel_geometry=probes.get_pixel_geometry())
    losses = [LossValue(i, v) for i, v in enumerate(refinement_losses(out_dir))]
    return Product(metadata=ri.product.metadata, probe_positions=ri.product.probe_positions,
                   probes=probes, object_=to_ptychodus_object(obj, x0, y0, frame),
                   losses=losses)


class PtychoK3Reconstructor(Reconstructor):
    """``Iterative``: ``ptycho-reconstruct`` from a flat start (base of the others)."""

    def __init__(self, name: str, settings: PtychoK3Settings, log: logging.Logger) -> None:
        self._name = name
        self._settings = settings
        self._log = log

    @property
    def name(self) -> str:
        return self._name

    def get_progress_goal(self) -> int:
        return 0

    def _command(self, scan: Path, out: Path) -> tuple[str, list[str]]:
        s = self._settings
        args = ["--test_data", str(scan), "--output_dir", str(out), "--init", "flat",
                "--iterations", str(s.iterations.get_value())]
        return "reconstruct", args + self._refine_flags()

    def _refine_flags(self) -> list[str]:
        s = self._settings
        flags = ["--refine_probe"] if s.refine_probe.get_value() else []
        return flags + (["--refine_positions"] if s.refine_positions.get_value() else [])

    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        backend = self._settings.backend_name()
        with tempfile.TemporaryDirectory(prefix="ptycho-k3-ptychodus-") as tmp:
            scan = write_scan(Path(tmp) / "scan.npz", parameters)
            out = Path(tmp) / "out"
            command, args = self._command(scan, out)
            run_command(command, [*args, *self._settings.extra(False)], backend, self._log)
            product = _product(parameters, out, self._settings.refine_probe.get_value())
        yield ReconstructOutput(product=product)


class PtychoK3TrainableReconstructor(PtychoK3Reconstructor, TrainableReconstructor):
    """``PINN``, ``Supervised`` (``model_type``) and ``PINN-Refined`` (``refine``)."""

    def __init__(self, name: str, settings: PtychoK3Settings, log: logging.Logger, *,
                 model_type: str, refine: bool = False) -> None:
        super().__init__(name, settings, log)
        self._model_type = model_type
        self._refine = refine
        self._model_path: Path | None = None

    def _command(self, scan: Path, out: Path) -> tuple[str, list[str]]:
        if self._model_path is None:
            raise RuntimeError(f"ptycho-k3 {self._name}: no model loaded (load a ptycho-k3 "
                               "bundle, wts.h5.zip, or train one)")
        args = ["--model_path", str(self._model_path), "--test_data", str(scan),
                "--output_dir", str(out)]
        if self._refine:
            args += ["--refine_iterations", str(self._settings.refine_iterations.get_value()),
                     *self._refine_flags()]
        return "infer", args

    def is_model_loaded(self) -> bool:
        return self._model_path is not None

    def get_model_file_filter(self) -> str:
        return "ptycho-k3 bundle (*.zip)"

    def get_model_file_extension(self) -> str:
        return ".zip"

    def load_model_from_file(self, file_path: Path) -> None:
        from ptycho_k3.bundle import BundleError, inspect_bundle

        try:
            info = inspect_bundle(file_path)
        except BundleError as exc:
            raise ValueError(str(exc)) from None
        self._model_path = Path(info.path)
        self._log.info("ptycho-k3 bundle %s (written by %s)", info.path,
                       info.manifest.get("backend"))

    def save_model(self, file_path: Path) -> None:
        if self._model_path is None:
            raise RuntimeError(f"ptycho-k3 {self._name}: no model loaded or trained to save")
        from ptycho_k3.atomic import atomic_path

        with atomic_path(file_path) as tmp:
            shutil.copyfile(self._model_path, tmp)

    def get_training_data_file_filter(self) -> str:
        return "NumPy Zipped Archive (*.npz)"

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        write_scan(file_path, parameters, with_object=True)

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        s = self._settings
        backend = s.backend_name()
        data, test = training_files(Path(input_path))
        if self._model_type == "supervised":
            check_ground_truth(data)
        out = Path(output_path)
        args = ["--train_data_file", str(data), "--output_dir", str(out),
                "--model_type", self._model_type, "--gridsize", str(s.gridsize.get_value()),
                "--nepochs", str(s.nepochs.get_value()),
                "--batch_size", str(s.batch_size.get_value()), "--seed", str(s.seed.get_value())]
        if test is not None:
            args += ["--test_data_file", str(test)]
        if s.n_groups.get_value() > 0:
            args += ["--n_groups", str(s.n_groups.get_value())]
        if s.nphotons.get_value() > 0:
            args += ["--nphotons", repr(float(s.nphotons.get_value()))]
        run_command("train", [*args, *s.extra(True)], backend, self._log)
        self._model_path = out / "wts.h5.zip"
        history = json.loads((out / "history.json").read_text()).get("history", {})
        yield TrainOutput(
            training_loss=[LossValue(i, float(v)) for i, v in enumerate(history.get("loss", []))],
            validation_loss=[LossValue(i, float(v))
                             for i, v in enumerate(history.get("val_loss", []))])


def training_files(input_path: Path) -> tuple[Path, Path | None]:
    """(training file, test file or None) for ``train(input_path, ...)`` (module docstring).

    Raises:
        ValueError: nothing to train on (the message lists what was looked for).
    """
    if input_path.is_file():
        return input_path, None
    test = input_path / TEST_FILE
    test_file = test if test.is_file() else None
    for name in (TRAINING_FILE, "product.h5"):
        if (input_path / name).is_file():
            return input_path / name, test_file
    raise ValueError(f"{input_path}: no training data: expected {TRAINING_FILE} (written by "
                     "export training data) or ptychodus's product.h5 with diffraction.h5")


def check_ground_truth(path: Path) -> None:
    """Refuse supervised training on ``path`` without a usable ground-truth object.

    The labels are the file's ``Y`` patches or its ``objectGuess`` (an NPZ), or the object of a
    ptychodus ``product.h5`` (other formats are left to ``ptycho-train``, which refuses a file
    without labels itself). ptychodus products usually hold its initial guess, a uniform
    object, which would train the network towards a constant; that is refused too.

    Raises:
        ValueError: naming the file and what is missing.
    """
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "Y" in z.files:
                return
            if "objectGuess" not in z.files:
                raise ValueError(f"{path}: Supervised training needs ground truth: key "
                                 "'objectGuess' (complex (H, W)) or 'Y' (patches); this file has "
                                 f"neither (keys: {', '.join(sorted(z.files))}). Export training "
                                 "data from a product whose object is known")
            obj = np.asarray(z["objectGuess"])
        where = "key 'objectGuess'"
    else:
        from ptycho_k3.data import DataError
        from ptycho_k3.data.ptychodus import load_product_object

        try:
            obj = load_product_object(path)
        except DataError:  # not a ptychodus product: ptycho-train checks its labels itself
            return
        where = "the product's object"
    from ptycho_k3.data.ptychodus import is_uniform

    if is_uniform(obj):
        raise ValueError(f"{path}: Supervised training needs ground truth, but {where} is "
                         "uniform (ptychodus's initial guess, not a known object). Export "
                         "training data from a product whose object is known")


def build_reconstructors(settings: PtychoK3Settings, log: logging.Logger) -> list[Reconstructor]:
    """PINN, Supervised, PINN-Refined, Iterative."""
    return [
        PtychoK3TrainableReconstructor("PINN", settings, log, model_type="pinn"),
        PtychoK3TrainableReconstructor("Supervised", settings, log, model_type="supervised"),
        PtychoK3TrainableReconstructor("PINN-Refined", settings, log, model_type="pinn",
                                       refine=True),
        PtychoK3Reconstructor("Iterative", settings, log),
    ]

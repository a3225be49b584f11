"""The model bundle ``<output_dir>/wts.h5.zip``: backend-neutral, no pickles.

Members (format ``ptycho-k3-bundle`` version 1)::

    manifest.json                       format, format_version, backend (writer), keras and
                                        ptycho_k3 versions, models, members
    params.json                         model config, training config, input_scale,
                                        intensity_scale, nphotons, norm_factor, data statistics
    probe.npy                           complex64 (N, N) normalised probe (allow_pickle=False)
    autoencoder/model.weights.h5        Keras weights of the training model
    diffraction_to_obj/model.weights.h5 Keras weights of the inference model (a subset)

On load the models are rebuilt from ``params.json`` with :func:`ptycho_k3.model.build_model` and
the weights (which carry the trained probe and ``log_scale``) are loaded: no compile state, no
custom-object deserialisation, so any backend loads a bundle written by any other. The archive is
written to a temporary file in the same directory and renamed, so a failed save never leaves a
partial ``wts.h5.zip``. Legacy PtychoPINN bundles (dill pickles) are recognised and refused in
one line; nothing in a bundle is ever unpickled.

Importing this module does not import Keras; :func:`inspect_bundle` needs none either.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_k3.atomic import atomic_path, json_default

BUNDLE_NAME = "wts.h5.zip"
FORMAT_NAME = "ptycho-k3-bundle"
FORMAT_VERSION = 1
MODEL_NAMES = ("autoencoder", "diffraction_to_obj")
WEIGHTS_FILE = "model.weights.h5"
PROBE_MEMBER = "probe.npy"
REQUIRED_MEMBERS = (
    "manifest.json",
    "params.json",
    *(f"{name}/{WEIGHTS_FILE}" for name in MODEL_NAMES),
)


class BundleError(ValueError):
    """A path that is not a usable ptycho-k3 bundle; the message is one line with the reason."""


@dataclass(frozen=True)
class BundleInfo:
    """What :func:`inspect_bundle` reads without Keras: the zip path, manifest and params."""

    path: Path
    manifest: dict[str, Any]
    params: dict[str, Any]


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle.

    Attributes:
        path: the ``wts.h5.zip`` it came from.
        manifest, params: the parsed JSON members.
        models: :class:`ptycho_k3.model.ModelPair` rebuilt from the config, weights loaded.
        probe: complex64 ``(N, N)`` normalised probe from ``probe.npy`` (None if absent).
    """

    path: Path
    manifest: dict[str, Any]
    params: dict[str, Any]
    models: Any
    probe: np.ndarray | None

    @property
    def input_scale(self) -> float:
        """``s`` multiplying normalised diffraction at the model input."""
        return float(self.params["input_scale"])


# ------------------------------------------------------------------------------------------
# writing


def _versions() -> dict[str, str]:
    import keras

    import ptycho_k3

    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "ptycho_k3_version": ptycho_k3.__version__,
    }


def _json_bytes(obj: dict[str, Any]) -> bytes:
    # allow_nan=False: a NaN in params would make the file unreadable by strict JSON parsers.
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=json_default).encode()


def _fresh_weights(models: Any, tmp: Path) -> dict[str, Path]:
    """Save both models' weights from an uncompiled copy (no optimizer or metric state).

    ``save_weights`` on a compiled model also stores optimizer variables, which another backend
    (or an uncompiled model) would warn about; copying the weights into a model freshly built from
    the same config keeps the files to the layer weights only.
    """
    from ptycho_k3.model import build_model

    fresh = build_model(models.config, loss=models.training.loss_spec, random_init=False)
    fresh.training.set_weights(models.training.get_weights())
    out = {}
    for name, model in zip(MODEL_NAMES, (fresh.training, fresh.inference), strict=True):
        (tmp / name).mkdir()
        path = tmp / name / WEIGHTS_FILE
        model.save_weights(str(path))
        out[name] = path
    return out


def training_params(config: Any, result: Any, train_scan: Any, *, nphotons_source: str | None,
                    reading_options: dict[str, Any]) -> dict[str, Any]:
    """The ``params.json`` a training run records (with what :func:`save_bundle` adds: the model
    config, the trained intensity scale, the loss terms).

    Args:
        config: the run's :class:`~ptycho_k3.config.TrainingConfig`.
        result: the :class:`~ptycho_k3.train.TrainResult` (input scale, nphotons, norm factor,
            epochs run, grouping).
        train_scan: the training :class:`~ptycho_k3.data.ScanData` as read.
        nphotons_source: where nphotons came from (flag, yaml, metadata, default).
        reading_options: the :class:`~ptycho_k3.data.MeasuredOptions` used, as a dict.
    """
    return {
        "training": config.to_dict(),
        "input_scale": float(result.input_scale),
        "nphotons": float(result.nphotons),
        "nphotons_source": nphotons_source,
        "norm_factor": float(result.norm_factor),
        "seed": config.seed,
        "epochs_run": int(result.epochs_run),
        "data": {
            "train_data_file": str(config.train_data_file),
            "n_positions": int(train_scan.n_positions),
            "n_groups": int(result.grouped.n_groups),
            "N": int(train_scan.n),
            "gridsize": int(config.model.gridsize),
            "norm_factor": float(result.norm_factor),
            "metadata_nphotons": train_scan.nphotons,
            "reading": train_scan.reading,
            "reading_options": reading_options,
        },
    }


def save_bundle(
    output_dir: str | os.PathLike,
    models: Any,
    params: dict[str, Any],
) -> Path:
    """Write ``<output_dir>/wts.h5.zip`` atomically (temporary file in the same dir, renamed).

    Args:
        output_dir: existing or new directory.
        models: :class:`ptycho_k3.model.ModelPair` (trained).
        params: JSON-serialisable run parameters; must hold ``input_scale`` (float). The model
            config, the current intensity scale and the probe shape are filled in here.

    Returns:
        The bundle path.
    """
    if "input_scale" not in params:
        raise ValueError("save_bundle: params must hold 'input_scale'")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    probe = models.probe()
    full = dict(params)
    full["model"] = models.config.to_dict()
    full["intensity_scale"] = float(models.intensity_scale)
    full["loss_terms"] = [list(t) for t in models.training.loss_spec.terms]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **versions,
        "models": list(MODEL_NAMES),
        "members": list(REQUIRED_MEMBERS) + ([PROBE_MEMBER] if probe is not None else []),
    }
    target = out_dir / BUNDLE_NAME
    with atomic_path(target) as tmp_name, \
            tempfile.TemporaryDirectory(prefix="ptycho-k3-bundle-") as tmp:
        weights = _fresh_weights(models, Path(tmp))
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", _json_bytes(manifest))
            zf.writestr("params.json", _json_bytes(full))
            if probe is not None:
                buf = io.BytesIO()
                np.save(buf, np.asarray(probe, np.complex64), allow_pickle=False)
                zf.writestr(PROBE_MEMBER, buf.getvalue())
            for name, path in weights.items():
                zf.write(path, f"{name}/{WEIGHTS_FILE}")
    return target


# ------------------------------------------------------------------------------------------
# reading


def bundle_path(path: str | os.PathLike) -> Path:
    """The ``wts.h5.zip`` for ``path`` (a training output directory or the zip itself)."""
    p = Path(path)
    if p.is_dir():
        zp = p / BUNDLE_NAME
        if zp.is_file():
            return zp
        _refuse_legacy_dir(p)
        raise BundleError(f"{p} holds no {BUNDLE_NAME}; pass a training output directory or the zip")
    if not p.exists():
        raise BundleError(f"model path {p} does not exist")
    return p


def _refuse_legacy_dir(p: Path) -> None:
    names = {q.name for q in p.iterdir()}
    if names & {"model.pth", "torch_scaling_metadata.pt", "manifest.dill"}:
        raise BundleError(
            f"{p} is a legacy PtychoPINN model directory (pickle-based); ptycho-k3 does not load "
            "pickles: retrain with ptycho-train"
        )


def _legacy_kind(names: set[str], zf: zipfile.ZipFile) -> str | None:
    """'TensorFlow' / 'PyTorch' for a legacy PtychoPINN bundle, else None (never unpickles)."""
    base = {n.rsplit("/", 1)[-1] for n in names}
    if base & {"model.pth", "torch_scaling_metadata.pt"}:
        return "PyTorch"
    if "manifest.dill" in names:
        try:  # the torch port's version string appears verbatim in the pickle bytes
            if b"2.0-pytorch" in zf.read("manifest.dill"):
                return "PyTorch"
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError):
            pass
        return "TensorFlow"
    if {"model.keras", "custom_objects.dill"} <= base or "params.dill" in base:
        return "TensorFlow"
    return None


def _read_json(zf: zipfile.ZipFile, member: str, where: Path) -> dict[str, Any]:
    try:
        obj = json.loads(zf.read(member).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        raise BundleError(f"{where}: {member} is not valid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: {member} must hold a JSON object")
    return obj


def inspect_bundle(path: str | os.PathLike) -> BundleInfo:
    """Check a bundle and read its manifest and params, without Keras.

    Raises:
        BundleError: missing path, not a zip, truncated or corrupt zip, a legacy PtychoPINN
        (dill) bundle, a foreign zip, another format or an unknown format version, a missing
        member.
    """
    zp = bundle_path(path)
    if not zipfile.is_zipfile(zp):
        raise BundleError(f"{zp} is not a zip archive (truncated or not a ptycho-k3 bundle)")
    try:
        with zipfile.ZipFile(zp) as zf:
            names = set(zf.namelist())
            legacy = _legacy_kind(names, zf)
            if legacy is not None:
                raise BundleError(
                    f"{zp} is a legacy PtychoPINN {legacy} bundle (dill pickles); ptycho-k3 never "
                    "unpickles: retrain with ptycho-train to get a ptycho-k3 bundle"
                )
            if "manifest.json" not in names:
                raise BundleError(f"{zp} is not a ptycho-k3 bundle (no manifest.json in the zip)")
            manifest = _read_json(zf, "manifest.json", zp)
            if manifest.get("format") != FORMAT_NAME:
                raise BundleError(
                    f"{zp} is not a ptycho-k3 bundle (format {manifest.get('format')!r}, "
                    f"expected {FORMAT_NAME!r})"
                )
            version = manifest.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise BundleError(f"{zp}: invalid bundle format_version {version!r}")
            if version > FORMAT_VERSION:
                raise BundleError(
                    f"{zp} has bundle format version {version}, newer than this ptycho-k3 "
                    f"understands ({FORMAT_VERSION}); upgrade ptycho-k3"
                )
            missing = [m for m in REQUIRED_MEMBERS if m not in names]
            if missing:
                raise BundleError(f"{zp} is incomplete: missing {', '.join(missing)}")
            bad = zf.testzip()  # CRC check of every member: catches corruption inside the zip
            if bad is not None:
                raise BundleError(f"{zp} is corrupt: member {bad} fails its checksum")
            params = _read_json(zf, "params.json", zp)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BundleError(f"{zp} is a truncated or corrupt zip ({exc})") from None
    for key in ("model", "input_scale"):
        if key not in params:
            raise BundleError(f"{zp}: params.json lacks {key!r}")
    return BundleInfo(path=zp, manifest=manifest, params=params)


def load_bundle(path: str | os.PathLike, precision: str | None = None) -> Bundle:
    """Load a bundle (directory or zip) under the current Keras backend.

    ``precision`` (``float32`` or ``mixed_bfloat16``) rebuilds the model in that precision
    instead of the one it was trained in; the weights are float32 in both, the physics stays
    float32 (:class:`~ptycho_k3.config.ModelConfig`).

    Raises:
        BundleError: see :func:`inspect_bundle`; also a config or weights that do not fit.
    """
    info = inspect_bundle(path)
    import dataclasses

    from ptycho_k3.config import ConfigError, ModelConfig
    from ptycho_k3.model import build_model

    try:
        config = ModelConfig.from_dict(info.params["model"])
        if precision is not None:
            config = dataclasses.replace(config, precision=precision)
    except (ConfigError, TypeError) as exc:
        raise BundleError(f"{info.path}: invalid model config in params.json ({exc})") from None
    probe = None
    with tempfile.TemporaryDirectory(prefix="ptycho-k3-bundle-") as tmp, \
            zipfile.ZipFile(info.path) as zf:
        if PROBE_MEMBER in zf.namelist():
            try:
                probe = np.load(io.BytesIO(zf.read(PROBE_MEMBER)), allow_pickle=False)
            except ValueError as exc:
                raise BundleError(f"{info.path}: unreadable {PROBE_MEMBER} ({exc})") from None
        # The loss only matters for training; the probe and scale come from the weights.
        models = build_model(config, random_init=False)  # every weight is loaded next
        for name, model in zip(MODEL_NAMES, (models.training, models.inference), strict=True):
            member = f"{name}/{WEIGHTS_FILE}"
            target = Path(tmp) / name / WEIGHTS_FILE
            target.parent.mkdir()
            target.write_bytes(zf.read(member))
            try:
                model.load_weights(str(target))
            except (ValueError, KeyError, OSError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BundleError(
                    f"{info.path}: {member} does not fit the model in params.json ({msg})"
                ) from None
    return Bundle(path=info.path, manifest=info.manifest, params=info.params, models=models,
                  probe=None if probe is None else probe.astype(np.complex64))

"""The bundle: round trip on the current backend, atomic write, one-line refusals.

Cross-backend loading (a bundle written under each backend read by the other two) is checked
end to end in ``tests/cli/test_cli_e2e.py`` (marker ``crossbackend``).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from ptycho_k3 import bundle as bmod
from ptycho_k3.bundle import BundleError, inspect_bundle, load_bundle, save_bundle


@pytest.fixture(scope="module")
def trained_like():
    """A small model with perturbed weights (so a load that kept init weights would differ)."""
    import keras

    from ptycho_k3.config import ModelConfig
    from ptycho_k3.model import build_model

    keras.utils.set_random_seed(3)
    models = build_model(ModelConfig(N=64, n_filters_scale=1), intensity_scale=123.0)
    rng = np.random.default_rng(0)
    models.training.set_weights([
        w + 0.01 * rng.standard_normal(w.shape).astype(w.dtype)
        for w in models.training.get_weights()])
    return models


def _predict(models, x):
    import keras

    out = models.inference.predict_on_batch(x)
    return np.asarray(keras.ops.convert_to_numpy(out))


def test_round_trip_on_current_backend(tmp_path, trained_like):
    import keras

    params = {"input_scale": 3.5, "nphotons": 1e9, "data": {"norm_factor": 0.25}}
    path = save_bundle(tmp_path, trained_like, params)
    assert path == tmp_path / "wts.h5.zip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wts.h5.zip"]  # no temp files
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        probe = np.load(io.BytesIO(zf.read("probe.npy")), allow_pickle=False)
    assert names == {"manifest.json", "params.json", "probe.npy",
                     "autoencoder/model.weights.h5", "diffraction_to_obj/model.weights.h5"}
    assert manifest["format"] == "ptycho-k3-bundle" and manifest["format_version"] == 1
    assert manifest["backend"] == keras.backend.backend()
    assert manifest["keras_version"] == keras.__version__
    assert manifest["models"] == ["autoencoder", "diffraction_to_obj"]
    assert probe.dtype == np.complex64 and probe.shape == (64, 64)
    np.testing.assert_array_equal(probe, trained_like.probe())

    for where in (tmp_path, path):  # the directory or the zip itself
        b = load_bundle(where)
        assert b.input_scale == 3.5 and b.params["data"]["norm_factor"] == 0.25
        assert b.params["model"] == trained_like.config.to_dict()
        assert b.models.intensity_scale == pytest.approx(trained_like.intensity_scale, rel=1e-6)
        np.testing.assert_array_equal(b.models.probe(), trained_like.probe())
        for w_new, w_old in zip(b.models.training.get_weights(),
                                trained_like.training.get_weights(), strict=True):
            np.testing.assert_array_equal(w_new, w_old)
    x = np.random.default_rng(1).random((2, 64, 64, 1)).astype(np.float32)
    pos = np.zeros((2, 1, 2, 1), np.float32)
    np.testing.assert_array_equal(_predict(b.models, (x, pos)), _predict(trained_like, (x, pos)))


def test_failed_save_leaves_no_partial_file(tmp_path, trained_like, monkeypatch):
    target = tmp_path / "wts.h5.zip"
    target.write_bytes(b"previous bundle")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bmod, "_fresh_weights", boom)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(tmp_path, trained_like, {"input_scale": 1.0})
    assert target.read_bytes() == b"previous bundle"  # the old bundle is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["wts.h5.zip"]  # and no temp file is left


def test_save_requires_input_scale(tmp_path, trained_like):
    with pytest.raises(ValueError, match="input_scale"):
        save_bundle(tmp_path, trained_like, {})
    assert list(tmp_path.iterdir()) == []


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _members(changes=None):
    members = {
        "manifest.json": json.dumps({"format": "ptycho-k3-bundle", "format_version": 1}),
        "params.json": json.dumps({"model": {"N": 64}, "input_scale": 1.0}),
        "autoencoder/model.weights.h5": b"w",
        "diffraction_to_obj/model.weights.h5": b"w",
    }
    for key, value in (changes or {}).items():
        if value is None:
            members.pop(key)
        else:
            members[key] = value
    return members


@pytest.mark.parametrize(("members", "message"), [
    (_members(), None),
    ({"manifest.dill": b"\x80\x04...", "autoencoder/model.keras": b"PK",
      "autoencoder/custom_objects.dill": b"x"}, "legacy PtychoPINN TensorFlow bundle"),
    ({"manifest.dill": b"...2.0-pytorch...", "diffraction_to_obj/model.pth": b"x"},
     "legacy PtychoPINN PyTorch bundle"),
    ({"torch_scaling_metadata.pt": b"x"}, "legacy PtychoPINN PyTorch bundle"),
    ({"hello.txt": b"x"}, "not a ptycho-k3 bundle (no manifest.json"),
    (_members({"manifest.json": json.dumps({"format": "other"})}), "format 'other'"),
    (_members({"manifest.json": json.dumps({"format": "ptycho-k3-bundle",
                                         "format_version": 2})}),
     "format version 2, newer than"),
    (_members({"manifest.json": json.dumps({"format": "ptycho-k3-bundle",
                                         "format_version": "1"})}),
     "invalid bundle format_version '1'"),
    (_members({"manifest.json": "{not json"}), "manifest.json is not valid JSON"),
    (_members({"autoencoder/model.weights.h5": None}), "missing autoencoder/model.weights.h5"),
    (_members({"params.json": json.dumps({"model": {"N": 64}})}), "lacks 'input_scale'"),
])
def test_inspect_refuses_in_one_line(tmp_path, members, message):
    path = _zip(tmp_path / "wts.h5.zip", members)
    if message is None:
        assert inspect_bundle(tmp_path).manifest["format_version"] == 1
        return
    with pytest.raises(BundleError) as info:
        inspect_bundle(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_a_zip_truncated_and_missing(tmp_path):
    bad = tmp_path / "a" / "wts.h5.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"hello, not a zip" * 100)
    with pytest.raises(BundleError, match="not a zip archive"):
        inspect_bundle(bad.parent)
    good = _zip(tmp_path / "good.zip", _members(
        {"autoencoder/model.weights.h5": np.random.default_rng(0).bytes(20000)}))
    data = good.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a zip archive|truncated"):
        inspect_bundle(cut)
    # corrupt a member's bytes (same length): the CRC check catches it
    raw = bytearray(data)
    at = raw.find(b"diffraction_to_obj/model.weights.h5")  # local header of the last member
    assert at > 0
    idx = data.find(b"autoencoder/model.weights.h5") + len("autoencoder/model.weights.h5") + 100
    raw[idx] ^= 0xFF
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="corrupt"):
        inspect_bundle(flipped)
    with pytest.raises(BundleError, match="does not exist"):
        inspect_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="holds no wts.h5.zip"):
        inspect_bundle(tmp_path)


def test_legacy_model_directory(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"x")
    with pytest.raises(BundleError, match="legacy PtychoPINN model directory"):
        inspect_bundle(tmp_path)


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_weights_that_do_not_fit_are_refused(tmp_path, trained_like):
    save_bundle(tmp_path, trained_like, {"input_scale": 1.0})
    zp = tmp_path / "wts.h5.zip"
    with zipfile.ZipFile(zp) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    params = json.loads(members["params.json"])
    params["model"]["n_filters_scale"] = 2  # the weights are for n_filters_scale 1
    members["params.json"] = json.dumps(params).encode()
    _zip(zp, members)
    with pytest.raises(BundleError, match="does not fit the model"):
        load_bundle(zp)

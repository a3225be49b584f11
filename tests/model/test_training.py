"""Training and inference end to end on a tiny simulated dataset, under the current backend."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_k3.config import ModelConfig, TrainingConfig
from ptycho_k3.data import DataError, simulate_train_test
from ptycho_k3.infer import _fixed_batch_shape, inference_group_count, reconstruct
from ptycho_k3.train import GroupBatches, split_groups, train


@pytest.fixture(scope="module")
def scans():
    return simulate_train_test("lines", 64, n_images=96, nphotons=1e9, seed=3)


def small(**kw) -> TrainingConfig:
    model = ModelConfig(n_filters_scale=1, **kw.pop("model", {}))
    base = {"nepochs": 3, "n_groups": 40, "batch_size": 8, "seed": 1}
    base.update(kw)
    return TrainingConfig(model=model, **base)


def test_pinn_training_lowers_the_loss_and_trains_the_scale(scans):
    train_scan, test_scan = scans
    res = train(small(nepochs=4, learning_rate=2e-3), train_scan, verbose=0)
    h = res.history
    assert {"loss", "val_loss", "nll", "val_nll", "learning_rate"} <= set(h)
    assert res.epochs_run == len(h["loss"]) >= 2
    assert min(h["loss"][1:]) < h["loss"][0]
    assert all(np.isfinite(h["val_loss"]))
    # the only term is the NLL (weight 1): logged terms are batch-size weighted like "loss"
    np.testing.assert_allclose(h["nll"], h["loss"], rtol=1e-5)
    np.testing.assert_allclose(h["val_nll"], h["val_loss"], rtol=1e-5)
    # intensity_scale_trainable defaults to true and now really trains (docs/legacy.md §7)
    assert abs(res.models.intensity_scale - res.input_scale) > 1e-4
    assert len(res.val_indices) == 2 and len(res.train_indices) == 38

    rec = reconstruct(res.models, test_scan, input_scale=res.input_scale, batch_size=16)
    assert rec.patches.shape == (96, 64, 64) and rec.patches.dtype == np.complex64
    obj = rec.stitched.obj
    assert obj.dtype == np.complex64 and np.all(np.isfinite(obj))
    assert rec.stitched.covered.mean() > 0.3
    # the origin puts the stitched image in the object frame: it starts near min(pos) - M/2
    assert rec.stitched.x0 == int(np.floor(rec.centres[:, 0].min())) - 10
    assert rec.seconds_predict > 0 and rec.seconds_stitch >= 0

    # 96 groups in batches of 40: under JAX/TensorFlow the last batch of 16 is padded to 40 rows
    # (one compiled shape); the objects equal one batch of 96 up to float32 conv/FFT rounding
    # (a different batch shape may pick another kernel: ~1e-6 relative, 1e-5 allowed).
    import keras

    assert _fixed_batch_shape(96, 40) == (None if keras.backend.backend() == "torch" else 40)
    assert _fixed_batch_shape(40, 40) is None
    split = reconstruct(res.models, test_scan, input_scale=res.input_scale, batch_size=40)
    whole = reconstruct(res.models, test_scan, input_scale=res.input_scale, batch_size=96)
    scale = np.abs(whole.patches).max()
    np.testing.assert_allclose(split.patches, whole.patches, rtol=0, atol=1e-5 * scale)


def test_gridsize_2_trains_and_reconstructs(scans):
    train_scan, test_scan = scans
    res = train(small(model={"gridsize": 2}, nepochs=2, n_groups=24), train_scan, verbose=0)
    assert res.grouped.diffraction.shape == (24, 64, 64, 4)
    assert np.all(np.isfinite(res.history["loss"]))
    rec = reconstruct(res.models, test_scan, input_scale=res.input_scale, n_groups=10,
                      keep_patches=False)
    assert rec.patches is None and rec.grouped.n_groups == 10


def test_supervised_mode_runs_end_to_end(scans):
    train_scan, test_scan = scans
    res = train(small(model={"model_type": "supervised"}, nepochs=3), train_scan, verbose=0)
    h = res.history
    assert {"amp_mae", "phase_mae", "val_amp_mae", "val_phase_mae"} <= set(h)
    np.testing.assert_allclose(np.add(h["amp_mae"], h["phase_mae"]), h["loss"], rtol=1e-5)
    assert min(h["loss"][1:]) < h["loss"][0]
    rec = reconstruct(res.models, test_scan, input_scale=res.input_scale, n_groups=8)
    assert rec.patches.shape == (8, 64, 64)


def test_supervised_without_labels_fails_before_any_work(scans):
    train_scan, _ = scans
    unlabeled = train_scan.__class__(**{**train_scan.__dict__, "patches": None, "object": None})
    with pytest.raises(DataError, match="needs labels"):
        train(small(model={"model_type": "supervised"}), unlabeled, verbose=0)


def test_wrong_patch_size_is_rejected(scans):
    with pytest.raises(DataError, match="N=128"):
        train(small(model={"N": 128}), scans[0], verbose=0)


def test_same_seed_same_run_on_this_backend(scans):
    a = train(small(nepochs=1, n_groups=16), scans[0], verbose=0)
    b = train(small(nepochs=1, n_groups=16), scans[0], verbose=0)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_validation_split_is_seeded_random_not_the_tail():
    tr, va = split_groups(200, 0.05, seed=0)
    assert len(va) == 10 and len(tr) == 190
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(200))
    assert not np.array_equal(va, np.arange(190, 200))
    tr2, va2 = split_groups(200, 0.05, seed=1)
    assert not np.array_equal(va, va2)
    np.testing.assert_array_equal(split_groups(200, 0.05, seed=0)[1], va)
    with pytest.raises(DataError, match="at least 2"):
        split_groups(1, 0.05, seed=0)


def test_batches_cover_every_group_once_per_epoch():
    x = np.arange(10, dtype=np.float32)[:, None]
    seq = GroupBatches((x, x), {"amplitude": x}, np.arange(10), 4, seed=0)
    assert len(seq) == 3
    seen = np.concatenate([seq[i][0][0][:, 0] for i in range(len(seq))])
    assert sorted(seen) == list(range(10))
    first = [seq[i][0][0][:, 0].tolist() for i in range(3)]
    seq.on_epoch_end()
    second = [seq[i][0][0][:, 0].tolist() for i in range(3)]
    assert first != second
    # The order of an epoch depends on (seed, epoch) only: a resumed run sees the same batches.
    resumed = GroupBatches((x, x), {"amplitude": x}, np.arange(10), 4, seed=0, epoch=1)
    assert [resumed[i][0][0][:, 0].tolist() for i in range(3)] == second


def test_inference_group_count_rule():
    assert inference_group_count(100, 1, None) == 100
    assert inference_group_count(100, 2, None) == 25
    assert inference_group_count(100, 2, 10) == 10
    assert inference_group_count(3, 2, None) == 1

"""Configuration validation and the exhaustive (model_type, loss) resolver."""

from __future__ import annotations

import pytest

from ptycho_k3.config import ConfigError, ModelConfig, TrainingConfig, resolve_loss


def test_defaults_are_the_original_cli_defaults():
    m = ModelConfig()
    assert (m.N, m.gridsize, m.n_filters_scale, m.probe_scale) == (64, 1, 2, 4.0)
    assert m.object_big and m.probe_big and m.pad_object and not m.probe_mask
    assert m.intensity_scale_trainable and not m.probe_trainable
    assert m.canvas_size == 74 and ModelConfig(gridsize=2).canvas_size == 78
    t = TrainingConfig()
    assert (t.batch_size, t.nepochs, t.nphotons, t.n_groups) == (16, 50, 1e9, 512)
    assert t.loss.terms == (("nll", 1.0),)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"N": 63}, "N must be one of"),
        ({"N": 96}, "N must be one of"),
        ({"gridsize": 0}, "gridsize"),
        ({"amp_activation": "tanh"}, "amp_activation"),
        ({"architecture": "fno"}, "PyTorch port"),
        ({"model_type": "gan"}, "model_type"),
        ({"probe_scale": 0.0}, "probe_scale"),
        ({"gaussian_smoothing_sigma": -1.0}, "gaussian_smoothing_sigma"),
    ],
)
def test_model_config_rejections(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


def test_every_model_type_and_weight_combination_resolves_or_is_rejected():
    pinn = resolve_loss("pinn")
    assert pinn.metric_names == ("nll",) and not pinn.needs_labels
    both = resolve_loss("pinn", nll_weight=0.5, mae_weight=1.0)
    assert dict(both.terms) == {"nll": 0.5, "mae": 1.0}
    assert resolve_loss("pinn", nll_weight=0.0, mae_weight=1.0).metric_names == ("mae",)
    rs = resolve_loss("pinn", realspace_weight=2.0, realspace_mae_weight=1.0, tv_weight=0.5)
    assert dict(rs.terms) == {"nll": 1.0, "realspace_mae": 2.0, "tv": 1.0} and rs.needs_labels
    sup = resolve_loss("supervised")
    assert sup.metric_names == ("amp_mae", "phase_mae") and sup.needs_labels
    with pytest.raises(ConfigError, match="nothing to train"):
        resolve_loss("pinn", nll_weight=0.0, mae_weight=0.0)
    with pytest.raises(ConfigError, match="supervised.*nll_weight"):
        resolve_loss("supervised", nll_weight=1.0)
    with pytest.raises(ConfigError, match="supervised.*mae_weight"):
        resolve_loss("supervised", mae_weight=0.5)
    with pytest.raises(ConfigError, match="real-space"):
        resolve_loss("supervised", realspace_weight=1.0)
    with pytest.raises(ConfigError, match="needs realspace_weight"):
        resolve_loss("pinn", realspace_mae_weight=1.0)
    with pytest.raises(ConfigError, match=">= 0"):
        resolve_loss("pinn", nll_weight=-1.0)
    with pytest.raises(ConfigError, match="model_type"):
        resolve_loss("diffusion")


def test_training_config_validates_the_loss_at_construction():
    with pytest.raises(ConfigError, match="supervised"):
        TrainingConfig(model=ModelConfig(model_type="supervised"), nll_weight=1.0)
    with pytest.raises(ConfigError, match="neighbor_count"):
        TrainingConfig(model=ModelConfig(gridsize=3), neighbor_count=4)
    with pytest.raises(ConfigError, match="gridsize 1"):
        TrainingConfig(model=ModelConfig(model_type="supervised", object_big=False, gridsize=2))
    with pytest.raises(ConfigError, match="nphotons"):
        TrainingConfig(nphotons=float("nan"))
    with pytest.warns(UserWarning, match="power of two"):
        TrainingConfig(batch_size=12)


@pytest.mark.parametrize("weights", [
    {"realspace_weight": 1.0, "realspace_mae_weight": 1.0},  # realspace_mae: complex L1
    {"realspace_weight": 1.0, "realspace_mae_weight": 0.5, "tv_weight": 0.1},
])
def test_label_terms_need_one_decoded_patch_per_member(weights):
    """With object_big false the model decodes one patch per group; the label terms compare it
    with one label per member, which would only broadcast (four labels against one patch)."""
    with pytest.raises(ConfigError, match=r"object_big false and gridsize 2 decodes one patch "
                                          r"per group of 4.*realspace_mae"):
        TrainingConfig(model=ModelConfig(gridsize=2, object_big=False), **weights)
    with pytest.raises(ConfigError, match=r"object_big false and gridsize 3.*amp_mae, phase_mae"):
        TrainingConfig(model=ModelConfig(model_type="supervised", gridsize=3, object_big=False),
                       neighbor_count=9)
    # The shapes agree: object_big (C patches decoded) or gridsize 1 (C = 1).
    TrainingConfig(model=ModelConfig(gridsize=2, object_big=True), **weights)
    TrainingConfig(model=ModelConfig(gridsize=1, object_big=False), **weights)
    TrainingConfig(model=ModelConfig(model_type="supervised", gridsize=1, object_big=False))
    # Terms without labels do not care: the diffraction terms, and TV of the trimmed object.
    TrainingConfig(model=ModelConfig(gridsize=2, object_big=False), mae_weight=0.5)
    TrainingConfig(model=ModelConfig(gridsize=2, object_big=False), realspace_weight=1.0,
                   tv_weight=0.1)


def test_settings_that_would_do_nothing_or_fail_later_are_named():
    with pytest.warns(UserWarning, match="realspace_weight=1.0 has no effect"):
        TrainingConfig(realspace_weight=1.0)
    with pytest.raises(ConfigError, match="neighbor_pool_size must be an integer >= 1"):
        TrainingConfig(neighbor_pool_size=0)
    with pytest.raises(ConfigError, match=r"neighbor_pool_size \(3\) must be >= gridsize\^2 \(4\)"):
        TrainingConfig(model=ModelConfig(gridsize=2), enable_oversampling=True,
                       neighbor_pool_size=3)
    TrainingConfig(model=ModelConfig(gridsize=2), enable_oversampling=True, neighbor_pool_size=6)
    TrainingConfig(model=ModelConfig(gridsize=2), neighbor_pool_size=3)  # no oversampling: unused


def test_round_trip_through_dicts():
    t = TrainingConfig(model=ModelConfig(N=128, gridsize=2, probe_big=False), nepochs=3,
                       mae_weight=0.2, seed=7)
    again = TrainingConfig.from_dict(t.to_dict())
    assert again == t
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainingConfig.from_dict({**t.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="unknown model setting"):
        ModelConfig.from_dict({"N": 64, "nope": 2})

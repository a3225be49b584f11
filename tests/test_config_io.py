"""YAML config files and the precedence explicit flag > YAML > _metadata > default."""

from __future__ import annotations

import pytest

from ptycho_k3.config import ConfigError, TrainingConfig
from ptycho_k3.config_io import (
    load_yaml,
    merge_training,
    nphotons_message,
    parse_yaml,
    save_config_yaml,
)


def test_exponent_numbers_are_numbers():
    data = parse_yaml("a: 1e9\nb: 5E-5\nc: -2e+3\nd: 1.5\ne: 12\nf: 1e\ng: abc\nh: 1_000\n")
    assert data == {"a": 1e9, "b": 5e-5, "c": -2e3, "d": 1.5, "e": 12, "f": "1e", "g": "abc",
                    "h": 1000}
    assert isinstance(data["a"], float) and isinstance(data["e"], int)


def test_bad_yaml_is_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML at line 2") as info:
        parse_yaml("N: [64\n", "x.yaml")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_yaml("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml(tmp_path / "missing.yaml")
    assert parse_yaml("") == {}


def test_precedence_flag_over_yaml_over_metadata_over_default():
    yaml_map = {"nepochs": 7, "batch_size": 8, "model": {"N": 128, "gridsize": 2}}
    m = merge_training({"nepochs": 3}, yaml_map, metadata_nphotons=1e5)
    cfg = m.config
    assert cfg.nepochs == 3 and m.sources["nepochs"] == "flag"
    assert cfg.batch_size == 8 and m.sources["batch_size"] == "yaml"
    assert cfg.model.N == 128 and m.sources["model.N"] == "yaml"
    assert cfg.model.gridsize == 2
    assert cfg.nphotons == 1e5 and m.sources["nphotons"] == "metadata"
    assert cfg.n_groups == 512 and m.sources["n_groups"] == "default"


def test_flat_yaml_keys_survive_and_flags_beat_nested_model_block():
    # The original let CLI defaults replace flat keys and let model: beat explicit flags.
    m = merge_training({"N": 64}, {"N": 128, "nphotons": 1e9, "output_dir": "y",
                                   "model": {"gridsize": 2}})
    assert m.config.model.N == 64 and m.config.output_dir == "y"
    m = merge_training({"gridsize": 1}, {"model": {"gridsize": 2}})
    assert m.config.model.gridsize == 1


def test_nphotons_yaml_beats_metadata_and_is_logged():
    m = merge_training({}, parse_yaml("nphotons: 1e6"), metadata_nphotons=1e9)
    assert m.config.nphotons == 1e6 and m.sources["nphotons"] == "yaml"
    line = nphotons_message(m, 1e9)
    assert "from the --config file" in line and "_metadata says 1e+09; not used" in line
    m = merge_training({"nphotons": 5e7}, {"nphotons": 1e6}, metadata_nphotons=1e9)
    assert m.config.nphotons == 5e7
    assert nphotons_message(m, 1e9).startswith("nphotons = 5e+07 from --nphotons")
    m = merge_training({}, {}, metadata_nphotons=None)
    assert nphotons_message(m, None) == "nphotons = 1e+09 from the default"


def test_unknown_and_ignored_keys_warn(caplog):
    m = merge_training({}, {"bogus": 1, "typo_epochs": 2, "optimizer": "sgd", "fno_modes": 12})
    assert any("unknown setting(s) ignored: bogus, typo_epochs" in w for w in m.warnings)
    assert any("optimizer='sgd'" in w and "ignored" in w for w in m.warnings)
    assert not any("fno_modes" in w for w in m.warnings)  # the original default: silent
    assert "unknown setting(s) ignored" in caplog.text


def test_key_set_twice_is_an_error():
    with pytest.raises(ConfigError, match="set twice"):
        merge_training({}, {"N": 64, "model": {"N": 128}})


def test_invalid_values_are_config_errors():
    with pytest.raises(ConfigError, match="N must be one of"):
        merge_training({}, {"N": 63})
    with pytest.raises(ConfigError, match="nepochs"):
        merge_training({}, {"nepochs": 0})


def test_effective_config_yaml_round_trips(tmp_path):
    m = merge_training({"nepochs": 3, "nphotons": 1e6, "N": 128, "probe_trainable": True,
                        "n_subsample": 100}, {})
    path = save_config_yaml(tmp_path / "config.yaml", m.config, {"do_stitching": True},
                            header="effective config")
    text = path.read_text()
    assert text.startswith("# effective config")
    reloaded = merge_training({}, load_yaml(path))
    assert reloaded.config == m.config
    assert reloaded.run == {"do_stitching": True}
    assert reloaded.warnings == []
    assert isinstance(reloaded.config, TrainingConfig)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left

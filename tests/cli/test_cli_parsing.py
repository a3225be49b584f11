"""Flag parsing of ptycho-train / ptycho-infer: the original's parser defects are fixed.

These call the parsers and the merge in-process; nothing imports Keras.
"""

from __future__ import annotations

import logging

import pytest

from ptycho_k3.cli import infer as infer_cli
from ptycho_k3.cli import train as train_cli
from ptycho_k3.cli._common import UsageError
from ptycho_k3.config import ConfigError
from ptycho_k3.config_io import UNSET


def parse(*argv: str):
    return train_cli.parse(["--train_data_file", "t.npz", *argv])


def config_of(*argv: str):
    return train_cli.merge(parse(*argv)).config


@pytest.mark.parametrize("n", ["64", "128", "256"])
def test_N_accepts_supported_sizes(n):
    assert config_of("--N", n).model.N == int(n)


def test_N_63_is_a_config_error():
    with pytest.raises(ConfigError, match="N must be one of"):
        config_of("--N", "63")


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("False", False), ("yes", True), ("NO", False), ("1", True), ("0", False),
])
def test_boolean_values(text, value):
    cfg = config_of("--object_big", text, "--probe_trainable", text)
    assert cfg.model.object_big is value
    assert cfg.model.probe_trainable is value


def test_bare_and_negated_booleans():
    cfg = config_of("--sequential_sampling", "--no-probe-big", "--no-object_big",
                    "--probe-mask")
    assert cfg.sequential_sampling is True
    assert cfg.model.probe_big is False and cfg.model.object_big is False
    assert cfg.model.probe_mask is True


def test_bad_boolean_is_usage_error():
    with pytest.raises(UsageError, match="true/false"):
        parse("--object_big", "maybe")


def test_hyphen_aliases_and_prefix_abbreviation():
    args = train_cli.parse(["--train_data", "a.npz", "--n-groups", "7", "--n-subsample", "30",
                            "--subsample-seed", "3", "--test-data-file", "b.npz"])
    cfg = train_cli.merge(args).config
    assert (cfg.train_data_file, cfg.test_data_file) == ("a.npz", "b.npz")
    assert (cfg.n_groups, cfg.n_subsample, cfg.subsample_seed) == (7, 30, 3)


def test_optional_numbers_accept_none():
    cfg = config_of("--n_subsample", "none", "--neighbor_pool_size", "None", "--nll_weight",
                    "none", "--n_groups", "none")
    assert cfg.n_subsample is None and cfg.neighbor_pool_size is None
    assert cfg.nll_weight is None and cfg.n_groups == 512  # none = the default
    args = parse("--probe_mask_diameter", "12", "--max_hidden_channels", "none")
    assert args.probe_mask_diameter == 12 and args.max_hidden_channels is None


def test_unset_sentinel_separates_explicit_flags():
    args = parse("--nepochs", "3")
    assert args.batch_size is UNSET and args.nepochs == 3
    merged = train_cli.merge(args)
    assert merged.sources["nepochs"] == "flag" and merged.sources["batch_size"] == "default"


def test_numbers_and_model_options():
    cfg = config_of("--nphotons", "1e6", "--mae_weight", "0.5", "--nll_weight", "0",
                    "--model_type", "pinn", "--gridsize", "2", "--n_filters_scale", "1",
                    "--seed", "7", "--amp_activation", "swish", "--intensity_scale_trainable",
                    "false")
    assert cfg.nphotons == 1e6 and cfg.loss.terms == (("mae", 0.5),)
    assert (cfg.model.gridsize, cfg.model.n_filters_scale, cfg.seed) == (2, 1, 7)
    assert cfg.model.amp_activation == "swish"
    assert cfg.model.intensity_scale_trainable is False


def test_n_images_is_a_deprecated_alias(caplog):
    with caplog.at_level(logging.WARNING, logger="ptycho_k3"):
        merged = train_cli.merge(parse("--n_images", "32"))
    assert merged.config.n_groups == 32
    assert any("n_images is deprecated" in w for w in merged.warnings)
    merged = train_cli.merge(parse("--n_images", "32", "--n_groups", "16"))
    assert merged.config.n_groups == 16


def test_torch_only_flags_parse_and_warn_once_each():
    args = parse("--torch-accelerator", "cpu", "--torch-deterministic", "--torch_num_workers",
                 "2", "--optimizer", "sgd", "--fno_modes", "12", "--torch-logger", "csv",
                 "--gradient_clip_val", "1.0")
    merged = train_cli.merge(args)
    ignored = [w for w in merged.warnings if "not implemented" in w]
    # set to a non-default value: accelerator, num_workers, optimizer, gradient_clip_val;
    # --torch-deterministic, --fno_modes 12 and --torch-logger csv are the original defaults.
    assert len(ignored) == 4
    for name in ("torch_accelerator", "torch_num_workers", "optimizer", "gradient_clip_val"):
        assert sum(name in w for w in ignored) == 1


def test_backend_and_logging_flags_parse():
    args = parse("--backend", "pytorch", "--quiet", "--console-level", "debug")
    assert (args.backend, args.quiet, args.console_level) == ("pytorch", True, "DEBUG")


def test_infer_parser():
    args = infer_cli.parse(["--model_path", "run", "--test_data", "t.npz", "--n_images", "5",
                            "--phase-vmin", "-1", "--phase_vmax", "none", "--debug_dump",
                            "--comparison_plot", "--batch-size", "8",
                            "--torch-accelerator", "cpu"])
    opts = infer_cli.resolve_options(args, logging.getLogger("test"))
    assert opts["n_groups"] == 5 and opts["batch_size"] == 8
    assert opts["phase_vmin"] == -1.0 and opts["phase_vmax"] is None
    assert opts["debug_dump"] == "" and opts["comparison_plot"] is True
    assert opts["output_dir"] == "inference_outputs"
    with pytest.raises(UsageError, match="--test_data is required"):
        infer_cli.resolve_options(infer_cli.parse(["--model_path", "run"]),
                                  logging.getLogger("test"))


def test_infer_yaml_options_and_precedence(tmp_path):
    cfg = tmp_path / "infer.yaml"
    cfg.write_text("batch_size: 4\nn_images: 9\nmodel:\n  N: 128\nbogus: 1\n"
                   "test_data: from_yaml.npz\n")
    args = infer_cli.parse(["--model_path", "run", "--config", str(cfg), "--batch_size", "2"])
    opts = infer_cli.resolve_options(args, logging.getLogger("test"))
    assert opts["batch_size"] == 2  # flag beats YAML
    assert opts["n_groups"] == 9 and opts["test_data"] == "from_yaml.npz"
    assert "N" not in opts  # model settings come from the bundle


def test_precision_and_hidden_activation_flags_reach_the_model_config():
    from ptycho_k3.config_io import merge_training

    sys_argv = ["--train_data_file", "x.npz", "--precision", "mixed_bfloat16",
                "--hidden-activation", "swish"]
    args = train_cli.build_parser().parse_args(sys_argv)
    assert args.precision == "mixed_bfloat16" and args.hidden_activation == "swish"
    merged = merge_training({"precision": args.precision,
                             "hidden_activation": args.hidden_activation})
    assert merged.config.model.precision == "mixed_bfloat16"
    assert merged.config.model.hidden_activation == "swish"

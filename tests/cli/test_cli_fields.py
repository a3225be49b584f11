"""The commands' flags come from the config dataclasses' field metadata (ptycho_k3.config.option):
every described field has its flag, its help states the field's default, and parsing nothing
gives the dataclass's defaults. In-process; no Keras."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from ptycho_k3.cli import evaluate as evaluate_cli
from ptycho_k3.cli import infer as infer_cli
from ptycho_k3.cli import reconstruct as reconstruct_cli
from ptycho_k3.cli import simulate as simulate_cli
from ptycho_k3.cli import train as train_cli
from ptycho_k3.cli._common import UsageError, run_main
from ptycho_k3.cli._data import FLAGS as DATA_FLAGS
from ptycho_k3.cli._fields import default_text, described_fields
from ptycho_k3.cli._refine import FLAGS as REFINE_FLAGS
from ptycho_k3.config import (
    EvaluationConfig,
    InferenceConfig,
    InferenceJob,
    ModelConfig,
    ReconstructionJob,
    RefineConfig,
    SimulationConfig,
    TrainingConfig,
)
from ptycho_k3.data.measured import MeasuredOptions

LOG = logging.getLogger("test")


def _actions(parser):
    """dest -> the listed action (a boolean's hidden --no-name twin is skipped)."""
    out = {}
    for action in parser._actions:
        if not any(o.startswith("--no-") for o in action.option_strings):
            out.setdefault(action.dest, action)
    return out


# (command, config class, field -> flag renames, fields the command does not offer)
CASES = [
    (train_cli, ModelConfig, {}, ()),
    (train_cli, TrainingConfig, {}, ()),
    (train_cli, MeasuredOptions, DATA_FLAGS, ()),
    (infer_cli, InferenceJob, {}, ()),
    (infer_cli, InferenceConfig, {}, ()),
    (infer_cli, RefineConfig, {**REFINE_FLAGS, "iterations": "refine_iterations"}, ()),
    (infer_cli, MeasuredOptions, DATA_FLAGS, ()),
    (reconstruct_cli, ReconstructionJob, {}, ()),
    (reconstruct_cli, InferenceConfig, {}, ("n_groups", "comparison_plot", "debug_dump")),
    (reconstruct_cli, RefineConfig, REFINE_FLAGS, ()),
    (simulate_cli, SimulationConfig, {}, ()),
    (evaluate_cli, EvaluationConfig, {},
     ("register_images", "max_subpixel", "border", "phase_method", "scale_amplitude",
      "frc_sigma")),
]


@pytest.mark.parametrize(("cli", "cls", "flags", "absent"), CASES,
                         ids=[f"{c[0].PROG}-{c[1].__name__}" for c in CASES])
def test_every_described_field_has_its_flag_with_its_default_in_the_help(cli, cls, flags,
                                                                         absent):
    actions = _actions(cli.build_parser())
    fields = described_fields(cls, skip=absent)
    assert fields, f"{cls.__name__} has no described fields"
    for field in fields:
        name = flags.get(field.name, field.name)
        assert name in actions, f"{cli.PROG} has no --{name} for {cls.__name__}.{field.name}"
        action = actions[name]
        if field.metadata["hidden"]:
            continue
        stated = default_text(field)
        if stated and cli is not reconstruct_cli:  # reconstruct words a few defaults itself
            assert f"default {stated}" in action.help, (name, action.help)
        if field.metadata["choices"] is not None:
            assert tuple(action.choices) == field.metadata["choices"]


def test_parsing_nothing_gives_the_dataclass_defaults():
    cfg = train_cli.merge(train_cli.parse(["--train_data_file", "t.npz"])).config
    assert cfg == TrainingConfig(train_data_file="t.npz")
    args = simulate_cli.parse([])
    assert simulate_cli.simulation_config(args) == SimulationConfig()
    opts = infer_cli.resolve_options(infer_cli.parse(["--model_path", "m", "--test_data", "t"]),
                                     LOG)
    assert InferenceConfig(**{f.name: opts[f.name] for f in dataclasses.fields(InferenceConfig)
                              if f.name != "refine"}, refine=RefineConfig(seed=45)) == \
        InferenceConfig(refine=RefineConfig(seed=45))
    opts = reconstruct_cli.resolve_options(reconstruct_cli.parse(["--test_data", "t"]), LOG)
    assert opts["refine"] == RefineConfig(iterations=50, seed=45)
    assert opts["init"] == "flat" and opts["output_dir"] == "reconstruction_outputs"


@pytest.mark.parametrize(("argv", "message"), [
    (["--batch_size", "0"], "expected a positive integer, got '0'"),
    (["--subsample_seed", "-1"], "expected an integer >= 0"),
    (["--model_type", "gan"], "invalid choice"),
    (["--learning_rate", "fast"], "expected a number"),
])
def test_field_types_and_bounds_are_enforced_by_the_parser(argv, message):
    with pytest.raises(UsageError, match=message):
        train_cli.parse(["--train_data_file", "t.npz", *argv])


def test_simulation_settings_are_checked_when_parsed():
    with pytest.raises(UsageError, match="object_size 60 must be at least N \\+ 2 = 66"):
        simulate_cli.parse(["--object_size", "60"])
    with pytest.raises(UsageError, match="--output only applies with --from"):
        simulate_cli.parse(["--output", "x.npz"])


def test_a_failed_run_exits_3_with_one_line(capsys):
    from ptycho_k3.errors import RunFailure

    def body(args):
        raise RunFailure("training loss became NaN/inf at epoch 2; try a lower --learning_rate")

    status = run_main("ptycho-train", body, lambda argv: train_cli.parse(argv),
                      ["--train_data_file", "t.npz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3
    assert err == ["ptycho-train: failed: training loss became NaN/inf at epoch 2; try a lower "
                   "--learning_rate"]


def test_training_divergence_is_a_run_failure():
    pytest.importorskip("keras")
    from ptycho_k3.errors import RunFailure
    from ptycho_k3.train import TrainingError

    assert issubclass(TrainingError, RunFailure)

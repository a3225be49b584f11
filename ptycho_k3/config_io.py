"""YAML configuration files and the precedence merge: explicit flag > YAML > ``_metadata`` > default.

The original let argparse defaults overwrite flat YAML keys, let a nested ``model:`` block beat
explicit flags, dropped unknown keys silently and read ``1e9`` as a string (docs/legacy.md §18, §19).
Here:

- :func:`load_yaml` reads with ``yaml.safe_load`` semantics plus a float resolver for exponent
  numbers without a decimal point (``1e9``, ``5E-5``), so they are numbers, not text.
- The CLI gives every config flag the default :data:`UNSET`, so :func:`explicit_values` tells
  the flags the user typed from the ones argparse filled in.
- :func:`merge_training` applies flag > YAML (flat keys or a nested ``model:`` block) >
  dataset ``_metadata`` nphotons > dataclass default, records the source of every value, and
  warns on unknown keys and on legacy keys ptycho-k3 accepts but does not implement.
- :func:`save_config_yaml` writes the effective config as YAML that ``--config`` reloads.

Nothing here imports Keras.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ptycho_k3.atomic import atomic_write
from ptycho_k3.config import ConfigError, ModelConfig, TrainingConfig

_log = logging.getLogger(__name__)


class _Unset:
    """The default of every config flag: "not given on the command line"."""

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    # Copies stay the same object, so ``is UNSET`` holds after argparse or copy.deepcopy.
    def __copy__(self) -> _Unset:
        return self

    def __deepcopy__(self, memo: dict) -> _Unset:
        return self


UNSET: Any = _Unset()

MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
TRAINING_KEYS = frozenset(f.name for f in dataclasses.fields(TrainingConfig)) - {"model"}

#: The original's options that ptycho-k3 accepts (so old command lines and YAML files still
#: work) but does not implement, with the original's defaults: setting one to another value
#: warns once that it is ignored (docs/legacy.md §21).
LEGACY_IGNORED: dict[str, Any] = {
    # model (torch-only operators and soft mask)
    "fno_modes": 12, "fno_width": 32, "fno_blocks": 4, "fno_cnn_blocks": 2,
    "learned_input_channels": 1, "max_hidden_channels": None, "resnet_width": None,
    "fno_input_transform": None, "generator_output_mode": "real_imag",
    "probe_mask_sigma": 1.0, "probe_mask_diameter": None,
    # training (torch-only optimisation, legacy no-ops)
    "positions_provided": True,
    "torch_loss_mode": "poisson", "torch_mae_pred_l2_match_target": False,
    "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0,
    "adam_beta1": 0.9, "adam_beta2": 0.999,
    "scheduler": "Default", "lr_warmup_epochs": 0, "lr_min_ratio": 0.1,
    "plateau_factor": 0.5, "plateau_patience": 2, "plateau_min_lr": 5e-5,
    "plateau_threshold": 0.0,
    "gradient_clip_val": None, "gradient_clip_algorithm": "norm",
    # torch execution group (hyphenated on the original's command line)
    "torch_accelerator": "cuda", "torch_deterministic": True, "torch_num_workers": 0,
    "torch_accumulate_grad_batches": 1, "torch_learning_rate": None,
    "torch_scheduler": "Default", "torch_plateau_factor": None, "torch_plateau_patience": None,
    "torch_plateau_min_lr": None, "torch_plateau_threshold": None, "torch_logger": "csv",
    "torch_enable_checkpointing": True, "torch_checkpoint_save_top_k": 1,
    "torch_recon_log_every_n_epochs": None, "torch_recon_log_num_patches": None,
    "torch_recon_log_fixed_indices": None, "torch_recon_log_stitch": False,
    "torch_recon_log_max_stitch_samples": None,
    "torch_inference_batch_size": None,
}

#: Run options a training YAML may hold besides the config fields (written to config.yaml).
RUN_KEYS = frozenset({"do_stitching", "backend"})


# ------------------------------------------------------------------------------------------
# YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e9`` / ``-5E-5`` (no decimal point) as floats."""


# YAML 1.1's float pattern requires a '.', which is why ``1e9`` stays a string in PyYAML.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str, source: str = "<yaml>") -> dict[str, Any]:
    """Parse YAML text into a mapping (empty text -> ``{}``).

    Raises:
        ConfigError: a YAML syntax error or a top level that is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{source}: invalid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the YAML top level must be a mapping of settings")
    return data


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file (see :func:`parse_yaml`); a missing file is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    return parse_yaml(text, str(p))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :mod:`ptycho_k3.atomic`)."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def config_to_yaml(config: TrainingConfig, run: dict[str, Any] | None = None,
                   header: str = "") -> str:
    """YAML text of ``config`` (flat training keys, nested ``model:``) plus run options."""
    data = config.to_dict()
    data.update(run or {})
    lines = [f"# {line}" for line in header.splitlines()]
    body = yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    return "\n".join([*lines, body]) if lines else body


def save_config_yaml(path: str | os.PathLike, config: TrainingConfig,
                     run: dict[str, Any] | None = None, header: str = "") -> Path:
    """Write the effective config as YAML, reloadable with ``--config`` (atomic)."""
    return atomic_write_text(path, config_to_yaml(config, run, header))


# ------------------------------------------------------------------------------------------
# precedence


def explicit_values(namespace: Any) -> dict[str, Any]:
    """The argparse values the user gave explicitly (every value that is not :data:`UNSET`)."""
    return {k: v for k, v in vars(namespace).items() if v is not UNSET}


@dataclass
class Merged:
    """Result of :func:`merge_training`.

    Attributes:
        config: the validated :class:`TrainingConfig`.
        sources: config key -> ``"flag"``, ``"yaml"``, ``"metadata"`` or ``"default"``
            (model keys as ``"model.<name>"``).
        run: run options (``do_stitching``, ...) after the same precedence.
        warnings: every warning that was logged (unknown and ignored keys, deprecations).
    """

    config: TrainingConfig
    sources: dict[str, str]
    run: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _flatten_yaml(data: dict[str, Any], source: str, warn: list[str]) -> dict[str, Any]:
    """YAML mapping -> ``{key: value}`` with model keys from a nested ``model:`` block lifted.

    Also accepts a nested ``training:`` block. A key given both flat and nested is an error
    (which one would win is not obvious).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("model", "training") and isinstance(value, dict):
            for sub, v in value.items():
                if sub in flat:
                    raise ConfigError(f"{source}: {sub!r} is set twice (flat and under {key}:)")
                flat[str(sub)] = v
        elif key in flat:
            raise ConfigError(f"{source}: {key!r} is set twice (flat and nested)")
        else:
            flat[str(key)] = value
    return flat


def _deprecated_n_images(values: dict[str, Any], where: str, warn: list[str]) -> None:
    """Fold the deprecated ``n_images`` into ``n_groups`` (in place)."""
    if "n_images" not in values:
        return
    n_images = values.pop("n_images")
    if n_images is None:
        return
    if values.get("n_groups") is not None:
        warn.append(f"{where}: n_images is deprecated and ignored because n_groups is set")
    else:
        values["n_groups"] = n_images
        warn.append(f"{where}: n_images is deprecated; use n_groups (taking n_groups={n_images})")


def ignored_settings(values: dict[str, Any], where: str) -> list[str]:
    """Warnings for legacy keys set to a value other than the original's default."""
    out = []
    for key in sorted(set(values) & set(LEGACY_IGNORED)):
        if values[key] != LEGACY_IGNORED[key]:
            out.append(f"{where}: {key}={values[key]!r} is accepted for compatibility with "
                       "the original but not implemented in ptycho-k3; it is ignored")
    return out


def merge_training(
    explicit: dict[str, Any],
    yaml_map: dict[str, Any] | None = None,
    *,
    metadata_nphotons: float | None = None,
    yaml_source: str = "config",
) -> Merged:
    """Merge explicit flags, a YAML mapping, dataset metadata and defaults into a config.

    Args:
        explicit: flag values the user typed (keys are config field names, model fields flat,
            plus run options, ``n_images`` and legacy names); see :func:`explicit_values`.
        yaml_map: the parsed ``--config`` file (flat keys and/or nested ``model:``), or None.
        metadata_nphotons: ``nphotons`` from the training file's ``_metadata`` (used only when
            neither a flag nor the YAML sets it).
        yaml_source: name of the YAML file for messages.

    Raises:
        ConfigError: an invalid value (the dataclass validation message).
    """
    warn: list[str] = []
    flags = dict(explicit)
    _deprecated_n_images(flags, "--n_images", warn)
    from_yaml = _flatten_yaml(yaml_map or {}, yaml_source, warn)
    _deprecated_n_images(from_yaml, yaml_source, warn)

    known = MODEL_KEYS | TRAINING_KEYS | RUN_KEYS | set(LEGACY_IGNORED)
    unknown = sorted(set(from_yaml) - known)
    if unknown:
        warn.append(f"{yaml_source}: unknown setting(s) ignored: {', '.join(unknown)}")
    warn += ignored_settings(from_yaml, yaml_source)
    warn += ignored_settings(flags, "command line")

    model_vals: dict[str, Any] = {}
    train_vals: dict[str, Any] = {}
    run: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, name in ((from_yaml, "yaml"), (flags, "flag")):  # later layers win
        for key, value in layer.items():
            if key in MODEL_KEYS:
                model_vals[key], sources[f"model.{key}"] = value, name
            elif key in TRAINING_KEYS:
                train_vals[key], sources[key] = value, name
            elif key in RUN_KEYS:
                run[key] = value
    if "nphotons" not in sources and metadata_nphotons is not None:
        train_vals["nphotons"], sources["nphotons"] = float(metadata_nphotons), "metadata"
    for key in TRAINING_KEYS:
        sources.setdefault(key, "default")
    for key in MODEL_KEYS:
        sources.setdefault(f"model.{key}", "default")

    for message in warn:
        _log.warning("%s", message)
    try:
        config = TrainingConfig(model=ModelConfig(**model_vals), **train_vals)
    except TypeError as exc:  # e.g. a YAML list where a number belongs
        raise ConfigError(f"invalid configuration: {exc}") from None
    return Merged(config=config, sources=sources, run=run, warnings=warn)


def nphotons_message(merged: Merged, metadata_nphotons: float | None) -> str:
    """One log line saying where nphotons came from (docs/legacy.md §19)."""
    value, source = merged.config.nphotons, merged.sources.get("nphotons", "default")
    where = {"flag": "--nphotons", "yaml": "the --config file", "metadata":
             "the training file's _metadata", "default": "the default"}[source]
    line = f"nphotons = {value:g} from {where}"
    if source in ("flag", "yaml") and metadata_nphotons is not None \
            and metadata_nphotons != value:
        line += f" (the training file's _metadata says {metadata_nphotons:g}; not used)"
    return line

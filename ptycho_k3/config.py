"""Validated configuration dataclasses and the one loss resolver.

Configuration is explicit: nothing here is global or mutable after construction. Every dataclass
is validated once in ``__post_init__`` (the boundary), round-trips through ``to_dict`` /
``from_dict`` (and so through YAML/JSON), and every ``(model_type, loss weights)`` combination is
either resolved to a :class:`LossSpec` or rejected with a :class:`ConfigError` before any data or
model work happens.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

#: Patch / detector sides N the encoder/decoder ladders exist for.
SUPPORTED_N = (64, 128, 256)
#: Default side M of the central crop of each patch kept when stitching (the original CLIs use 20).
DEFAULT_M = 20
#: Default expected photons per diffraction pattern (simulation, training's intensity scale).
DEFAULT_NPHOTONS = 1e9
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
HIDDEN_ACTIVATIONS = ("relu", "swish", "gelu")
PRECISIONS = ("float32", "mixed_bfloat16")
MODEL_TYPES = ("pinn", "supervised")
#: Synthetic object kinds of the simulator (ptycho_k3/data/objects.py draws them).
OBJECT_KINDS = ("lines", "grf", "points", "diagonals")
SCAN_PATTERNS = ("random", "raster")
TORCH_ONLY_ARCHITECTURES = ("ffno", "fno", "fno_vanilla", "neuralop_uno")
#: ``--distribute`` modes (:mod:`ptycho_k3.distribute`): one device, or data parallel over all.
DISTRIBUTE_MODES = ("none", "data_parallel")


class ConfigError(ValueError):
    """An invalid or unsupported configuration; the message names the field and the fix."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _finite_nonneg(name: str, value: float) -> None:
    _require(
        isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
        f"{name} must be a finite number >= 0, got {value!r}",
    )


def option(default: Any = MISSING, help: str = "", *, choices: Sequence[Any] | None = None,
           minimum: int | None = None, default_text: str | None = None, hidden: bool = False,
           metavar: str | None = None, none_is_default: bool = False,
           default_factory: Any = MISSING) -> Any:
    """A config field with its command-line description (the one place for help and default).

    The commands build their flags from this metadata (``ptycho_k3/cli/_fields.py``): the flag
    is the field's name, its type the field's annotation, its help ``help`` plus the default
    (``default_text`` when the default needs words, e.g. "the file's _metadata").

    Args:
        default: the field's default (or ``default_factory``).
        help: one line for ``--help``.
        choices: the allowed values (checked by the parser and again by the dataclass).
        minimum: for integers: the parser refuses smaller values (0 or 1).
        default_text: how ``--help`` states the default, when the value alone would mislead.
        hidden: a legacy setting: accepted, not listed in ``--help``.
        metavar: the value's name in ``--help``.
        none_is_default: the flag also takes ``none``, meaning "the default" (a legacy spelling).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None,
                "minimum": minimum, "default_text": default_text, "hidden": hidden,
                "metavar": metavar, "none_is_default": none_is_default}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def group_size(gridsize: int) -> int:
    """C = gridsize^2, the number of diffraction patterns per group."""
    return gridsize * gridsize


class _FlatConfig:
    """``to_dict`` / ``from_dict`` of a flat config dataclass: plain JSON-ready values out, and in
    only known fields (an unknown key is a :class:`ConfigError` naming the section)."""

    _SECTION: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        return cls(**_known(cls, values, cls._SECTION))


@dataclass(frozen=True)
class ModelConfig(_FlatConfig):
    """Architecture and physics settings (docs/conventions.md §12; defaults are the original CLI's).

    ``hidden_activation`` is the activation of every hidden convolution (the original's ReLU);
    a smooth one (swish, gelu) makes float32 gradients comparable across backends in tests.
    ``precision`` ``mixed_bfloat16`` runs the encoder and decoders in bfloat16 (float32
    weights); the physics tail, the FFT and the loss always stay float32.
    ``offset``, ``max_position_jitter`` and ``default_probe_scale`` are the legacy keys that fix
    the per-group canvas ``P = N + (gridsize - 1) * offset + max_position_jitter`` and the
    default probe.
    """

    _SECTION: ClassVar[str] = "model"

    N: int = option(64, f"patch / detector side: one of {', '.join(map(str, SUPPORTED_N))}")
    gridsize: int = option(1, "group side: gridsize^2 patterns per group", minimum=1)
    n_filters_scale: int = option(2, "filter multiplier of the encoder/decoders", minimum=1)
    model_type: str = option("pinn", "pinn (physics loss on diffraction) or supervised "
                             "(amplitude/phase labels)", choices=MODEL_TYPES)
    architecture: str = option("cnn", "cnn (the only architecture)")
    amp_activation: str = option("sigmoid", "activation of the amplitude output",
                                 choices=AMP_ACTIVATIONS)
    hidden_activation: str = option("relu", "activation of the hidden convolutions (relu, as "
                                    "the original)", choices=HIDDEN_ACTIVATIONS)
    precision: str = option("float32", "float32 or mixed_bfloat16: the conv stack in bfloat16, "
                            "the physics and the loss in float32", choices=PRECISIONS)
    object_big: bool = option(True, "per-group canvas of C patches")
    probe_big: bool = option(True, "border decoder branch")
    probe_mask: bool = option(False, "multiply the exit wave by the N/4 disc")
    pad_object: bool = option(True, "decode only the central N/2 square")
    probe_scale: float = option(4.0, "probe normalisation divisor")
    gaussian_smoothing_sigma: float = option(0.0, "exit-wave smoothing sigma")
    probe_trainable: bool = option(False, "train the probe")
    intensity_scale_trainable: bool = option(True, "train log_scale")
    offset: int = option(4, "legacy canvas offset", hidden=True)
    max_position_jitter: int = option(10, "legacy canvas jitter", hidden=True)
    default_probe_scale: float = option(0.7, "legacy default probe scale", hidden=True)

    def __post_init__(self) -> None:
        _require(
            self.N in SUPPORTED_N,
            f"N must be one of {SUPPORTED_N} (the encoder/decoder ladders exist only for these), "
            f"got {self.N!r}",
        )
        _require(
            isinstance(self.gridsize, int) and self.gridsize >= 1,
            f"gridsize must be an integer >= 1, got {self.gridsize!r}",
        )
        _require(
            isinstance(self.n_filters_scale, int) and self.n_filters_scale >= 1,
            f"n_filters_scale must be an integer >= 1, got {self.n_filters_scale!r}",
        )
        _require(
            self.model_type in MODEL_TYPES,
            f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}",
        )
        if self.architecture in TORCH_ONLY_ARCHITECTURES:
            raise ConfigError(
                f"architecture {self.architecture!r} existed only in the original's PyTorch port "
                "and is not implemented in ptycho-k3; use --architecture cnn"
            )
        _require(
            self.architecture == "cnn",
            f"architecture must be 'cnn', got {self.architecture!r}",
        )
        _require(
            self.amp_activation in AMP_ACTIVATIONS,
            f"amp_activation must be one of {AMP_ACTIVATIONS}, got {self.amp_activation!r}",
        )
        _require(
            self.hidden_activation in HIDDEN_ACTIVATIONS,
            f"hidden_activation must be one of {HIDDEN_ACTIVATIONS}, got {self.hidden_activation!r}",
        )
        _require(
            self.precision in PRECISIONS,
            f"precision must be one of {PRECISIONS}, got {self.precision!r}",
        )
        _require(
            self.probe_scale > 0 and math.isfinite(self.probe_scale),
            f"probe_scale must be a finite number > 0, got {self.probe_scale!r}",
        )
        _finite_nonneg("gaussian_smoothing_sigma", self.gaussian_smoothing_sigma)
        _require(
            isinstance(self.offset, int) and self.offset >= 0,
            f"offset must be an integer >= 0, got {self.offset!r}",
        )
        _require(
            isinstance(self.max_position_jitter, int) and self.max_position_jitter >= 0,
            f"max_position_jitter must be an integer >= 0, got {self.max_position_jitter!r}",
        )
        _require(
            self.default_probe_scale > 0,
            f"default_probe_scale must be > 0, got {self.default_probe_scale!r}",
        )

    @property
    def group_size(self) -> int:
        """C, the diffraction patterns per group (:func:`group_size` of ``gridsize``)."""
        return group_size(self.gridsize)

    @property
    def object_channels(self) -> int:
        """C' = C patches decoded per group with ``object_big``, else 1."""
        return self.group_size if self.object_big else 1

    @property
    def canvas_size(self) -> int:
        """Per-group canvas side P (docs/conventions.md §4) of the configured geometry."""
        from ptycho_k3.physics.geometry import canvas_size  # integer arithmetic, no Keras

        return canvas_size(self.N, self.gridsize, self.offset, self.max_position_jitter)



@dataclass(frozen=True)
class LossSpec:
    """The resolved loss: weighted terms and the names logged for them.

    ``terms`` maps a term name (also the logged metric name) to its weight; only terms with a
    non-zero weight are present. ``needs_labels`` says whether ground-truth patches are required.
    """

    model_type: str
    terms: tuple[tuple[str, float], ...]
    needs_labels: bool

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.terms)

    def weight(self, name: str) -> float:
        return dict(self.terms).get(name, 0.0)


def resolve_loss(
    model_type: str,
    nll_weight: float | None = None,
    mae_weight: float | None = None,
    realspace_weight: float = 0.0,
    realspace_mae_weight: float = 0.0,
    tv_weight: float = 0.0,
    amp_label_weight: float = 1.0,
    phase_label_weight: float = 1.0,
) -> LossSpec:
    """Map ``(model_type, weights)`` to a :class:`LossSpec`, or raise :class:`ConfigError`.

    The mapping is exhaustive:

    - ``pinn``: ``nll`` (Poisson NLL on intensities, default weight 1), ``mae`` (amplitude MAE,
      default 0), and, when ``realspace_weight > 0``, ``realspace_mae`` and ``tv`` scaled by
      ``realspace_weight`` (they need labels). At least one term must be non-zero.
    - ``supervised``: ``amp_mae`` and ``phase_mae`` against labels. Diffraction-side weights
      (``nll_weight``, ``mae_weight``, real-space weights) do not apply and are rejected when
      set, rather than silently ignored.
    """
    for name, value in (
        ("realspace_weight", realspace_weight),
        ("realspace_mae_weight", realspace_mae_weight),
        ("tv_weight", tv_weight),
        ("amp_label_weight", amp_label_weight),
        ("phase_label_weight", phase_label_weight),
    ):
        _finite_nonneg(name, value)
    for name, value in (("nll_weight", nll_weight), ("mae_weight", mae_weight)):
        if value is not None:
            _finite_nonneg(name, value)

    if model_type == "pinn":
        nll = 1.0 if nll_weight is None else float(nll_weight)
        mae = 0.0 if mae_weight is None else float(mae_weight)
        _require(
            realspace_mae_weight == 0 or realspace_weight > 0,
            "realspace_mae_weight > 0 needs realspace_weight > 0 (the real-space loss is "
            "realspace_weight * (realspace_mae_weight * MAE + tv_weight * TV))",
        )
        _require(
            tv_weight == 0 or realspace_weight > 0,
            "tv_weight > 0 needs realspace_weight > 0",
        )
        terms = [("nll", nll), ("mae", mae)]
        if realspace_weight > 0:
            terms.append(("realspace_mae", realspace_weight * realspace_mae_weight))
            terms.append(("tv", realspace_weight * tv_weight))
        terms = [(n, w) for n, w in terms if w > 0]
        _require(
            bool(terms),
            "model_type 'pinn' with every loss weight 0 has nothing to train on; set "
            "--nll_weight or --mae_weight > 0",
        )
        needs_labels = any(n == "realspace_mae" for n, _ in terms)
        return LossSpec("pinn", tuple(terms), needs_labels)

    if model_type == "supervised":
        for name, value in (("nll_weight", nll_weight), ("mae_weight", mae_weight)):
            _require(
                value is None or value == 0,
                f"model_type 'supervised' trains on amplitude/phase labels with MAE and has no "
                f"diffraction output, so {name}={value} does not apply; drop it or use "
                "--model_type pinn",
            )
        _require(
            realspace_weight == 0 and realspace_mae_weight == 0 and tv_weight == 0,
            "model_type 'supervised' does not use the real-space PINN terms; set "
            "realspace_weight, realspace_mae_weight and tv_weight to 0",
        )
        terms = [(n, w) for n, w in (("amp_mae", amp_label_weight),
                                     ("phase_mae", phase_label_weight)) if w > 0]
        _require(bool(terms), "model_type 'supervised' needs amp or phase label weight > 0")
        return LossSpec("supervised", tuple(terms), True)

    raise ConfigError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Training run settings; ``model`` holds the architecture.

    ``nll_weight`` / ``mae_weight`` default to ``None`` meaning "the model type's default"
    (pinn: 1 / 0); :attr:`loss` is the resolved :class:`LossSpec`.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data_file: str | None = option(None, "training scan (required)", metavar="FILE")
    test_data_file: str | None = option(None, "test scan (for --do_stitching)", metavar="FILE")
    output_dir: str = option("training_outputs", "output directory")
    batch_size: int = option(16, "batch size", minimum=1)
    nepochs: int = option(50, "epochs", minimum=1)
    learning_rate: float = option(1e-3, "Adam learning rate")
    nll_weight: float | None = option(None, "Poisson NLL weight (none = the model type's "
                                      "default)", default_text="1 for pinn")
    mae_weight: float | None = option(None, "amplitude MAE weight (none = the model type's "
                                      "default)", default_text="0 for pinn")
    realspace_weight: float = option(0.0, "scale of the real-space terms (pinn)")
    realspace_mae_weight: float = option(0.0, "real-space amplitude MAE weight (pinn)")
    tv_weight: float = option(0.0, "total-variation weight (pinn)")
    amp_label_weight: float = option(1.0, "amplitude label weight (supervised)")
    phase_label_weight: float = option(1.0, "phase label weight (supervised)")
    nphotons: float = option(DEFAULT_NPHOTONS, "photons per pattern",
                             default_text=f"the file's _metadata, else {DEFAULT_NPHOTONS:g}")
    n_groups: int = option(512, "number of groups", minimum=1, none_is_default=True)
    n_subsample: int | None = option(None, "raw patterns to subsample before grouping",
                                     minimum=1, default_text="all")
    subsample_seed: int | None = option(None, "seed of the subsample", minimum=0,
                                        default_text="derived from --seed")
    neighbor_count: int = option(4, "K nearest neighbours for grouping", minimum=1)
    enable_oversampling: bool = option(False, "allow K-choose-C groups")
    neighbor_pool_size: int | None = option(None, "pool for oversampling", minimum=1,
                                            default_text="K")
    sequential_sampling: bool = option(False, "first-n seeds instead of random")
    validation_fraction: float = option(0.05, "random hold-out for validation")
    early_stopping_patience: int = option(3, "epochs without improvement before stopping",
                                          minimum=1)
    lr_patience: int = option(2, "ReduceLROnPlateau patience", minimum=1)
    lr_factor: float = option(0.5, "ReduceLROnPlateau factor")
    min_lr: float = option(1e-4, "ReduceLROnPlateau floor")
    seed: int = option(0, "one seed for every random choice")
    distribute: str = option("none", "data_parallel: shard each batch (batch_size groups) over "
                             "every device of every process (jax only; ptycho_k3/distribute.py)",
                             choices=DISTRIBUTE_MODES)

    def __post_init__(self) -> None:
        _require(isinstance(self.model, ModelConfig), "model must be a ModelConfig")
        _require(self.distribute in DISTRIBUTE_MODES,
                 f"distribute must be one of {DISTRIBUTE_MODES}, got {self.distribute!r}")
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            f"batch_size must be an integer >= 1, got {self.batch_size!r}",
        )
        _require(
            isinstance(self.nepochs, int) and self.nepochs >= 1,
            f"nepochs must be an integer >= 1, got {self.nepochs!r}",
        )
        _require(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            f"learning_rate must be > 0, got {self.learning_rate!r}",
        )
        _require(
            isinstance(self.nphotons, (int, float)) and math.isfinite(self.nphotons)
            and self.nphotons > 0,
            f"nphotons must be a finite number > 0, got {self.nphotons!r}",
        )
        _require(
            isinstance(self.n_groups, int) and self.n_groups >= 1,
            f"n_groups must be an integer >= 1, got {self.n_groups!r}",
        )
        _require(
            self.n_subsample is None or (isinstance(self.n_subsample, int) and self.n_subsample >= 1),
            f"n_subsample must be an integer >= 1 or none, got {self.n_subsample!r}",
        )
        _require(
            isinstance(self.neighbor_count, int) and self.neighbor_count >= 1,
            f"neighbor_count must be an integer >= 1, got {self.neighbor_count!r}",
        )
        _require(
            self.model.gridsize == 1 or self.neighbor_count >= self.model.group_size,
            f"neighbor_count ({self.neighbor_count}) must be >= gridsize^2 "
            f"({self.model.group_size}) to form groups",
        )
        _require(
            self.neighbor_pool_size is None
            or (isinstance(self.neighbor_pool_size, int) and self.neighbor_pool_size >= 1),
            f"neighbor_pool_size must be an integer >= 1 or none, got {self.neighbor_pool_size!r}",
        )
        _require(
            not self.enable_oversampling or self.model.gridsize == 1
            or self.neighbor_pool_size is None
            or self.neighbor_pool_size >= self.model.group_size,
            f"neighbor_pool_size ({self.neighbor_pool_size}) must be >= gridsize^2 "
            f"({self.model.group_size}) to oversample groups",
        )
        _require(
            0.0 < self.validation_fraction < 0.5,
            f"validation_fraction must be in (0, 0.5), got {self.validation_fraction!r}",
        )
        _require(self.early_stopping_patience >= 1, "early_stopping_patience must be >= 1")
        _require(self.lr_patience >= 1, "lr_patience must be >= 1")
        _require(0 < self.lr_factor < 1, f"lr_factor must be in (0, 1), got {self.lr_factor!r}")
        _require(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr!r}")
        _require(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        if self.batch_size & (self.batch_size - 1):
            warnings.warn(
                f"batch_size {self.batch_size} is not a power of two (the original required one)",
                stacklevel=2,
            )
        spec = self.loss  # resolve now: an unsupported combination fails here
        _check_loss_geometry(spec, self.model)
        if (spec.model_type == "pinn" and self.realspace_weight > 0
                and not {"realspace_mae", "tv"} & set(spec.metric_names)):
            warnings.warn(
                f"realspace_weight={self.realspace_weight} has no effect: it scales "
                "realspace_mae_weight and tv_weight, which are both 0",
                stacklevel=2,
            )

    @property
    def loss(self) -> LossSpec:
        return resolve_loss(
            self.model.model_type,
            nll_weight=self.nll_weight,
            mae_weight=self.mae_weight,
            realspace_weight=self.realspace_weight,
            realspace_mae_weight=self.realspace_mae_weight,
            tv_weight=self.tv_weight,
            amp_label_weight=self.amp_label_weight,
            phase_label_weight=self.phase_label_weight,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        values = dict(values)
        model = values.pop("model", None) or {}
        model = model if isinstance(model, ModelConfig) else ModelConfig.from_dict(model)
        return cls(model=model, **_known(cls, values, "training"))


#: Loss terms that compare the decoded patches ``(B, N, N, C')`` with per-member labels
#: ``(B, N, N, C)`` element by element.
LABEL_TERMS = ("amp_mae", "phase_mae", "realspace_mae")


def _check_loss_geometry(spec: LossSpec, model: ModelConfig) -> None:
    """Reject label terms whose shapes would only broadcast: with ``object_big`` false the model
    decodes one patch per group (``C' = 1``), the labels have one patch per member (``C``)."""
    label_terms = [name for name in spec.metric_names if name in LABEL_TERMS]
    if not label_terms or model.object_channels == model.group_size:
        return
    fix = ("use object_big true or gridsize 1" if spec.model_type == "supervised" else
           "use object_big true or gridsize 1, or set realspace_mae_weight 0")
    raise ConfigError(
        f"model_type {spec.model_type!r} with object_big false and gridsize "
        f"{model.gridsize} decodes one patch per group of {model.group_size}, but the loss "
        f"term(s) {', '.join(label_terms)} compare it with one label per member (labels are "
        f"per member); {fix}"
    )


def _known(cls, values: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - {"model"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {where} setting(s): {', '.join(unknown)}")
    return {k: v for k, v in values.items() if k in names}


REFINE_LOSSES = ("poisson", "amplitude")
REFINE_INITS = ("flat", "pinn")


@dataclass(frozen=True)
class RefineConfig(_FlatConfig):
    """Options of the iterative refinement (:mod:`ptycho_k3.refine`), shared by ``ptycho-infer
    --refine_iterations`` and ``ptycho-reconstruct``.

    One iteration is one pass over every scan position in minibatches of ``batch`` positions.
    Steps are preconditioned in the manner of (r)ePIE: the object step is divided by the batch's
    probe illumination ``(1 - alpha) * I + alpha * max(I)`` (the probe step likewise by the
    object's), so ``object_step = 1`` is a full ePIE-sized step whatever the probe's units.

    Attributes:
        iterations: passes over the scan (0 = no refinement).
        batch: positions per update (``--refine_batch``).
        loss: ``poisson`` (negative log-likelihood of counts; the default) or ``amplitude``
            (least squares on sqrt(counts)).
        object_step: step of the object update (> 0).
        alpha: rPIE regularisation in ``(0, 1]``; 1 is ePIE's ``max |P|^2`` normalisation.
        refine_probe: also update the probe (its power is kept), from iteration ``probe_start``.
        probe_step: step of the probe update.
        refine_positions: also correct the scan positions, from iteration ``position_start``.
        position_step: step of the position update (Gauss-Newton normalised, pixels).
        max_position_shift: clamp of one iteration's correction per position (pixels).
        seed: seeds the order of positions in each iteration.
    """

    _SECTION: ClassVar[str] = "refine"

    iterations: int = option(0, "passes over the scan", minimum=0)
    batch: int = option(128, "scan positions per update", minimum=1)
    loss: str = option("poisson", "poisson (counts) or amplitude least squares",
                       choices=REFINE_LOSSES)
    object_step: float = option(1.0, "object step, 1 = one ePIE-sized step")
    alpha: float = option(0.1, "rPIE regularisation in (0, 1]")
    refine_probe: bool = option(False, "also refine the probe (its power is kept)")
    probe_start: int = option(10, "iteration after which the probe is refined", minimum=0)
    probe_step: float = option(1.0, "probe step")
    refine_positions: bool = option(False, "also correct the scan positions")
    position_start: int = option(10, "iteration after which positions are corrected", minimum=0)
    position_step: float = option(0.5, "position step")
    max_position_shift: float = option(0.5, "largest correction of one position per "
                                       "iteration, pixels")
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "probe_start", "position_start", "seed"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                     f"refine {name} must be an integer >= 0, got {value!r}")
        _require(isinstance(self.batch, int) and self.batch >= 1,
                 f"refine batch must be an integer >= 1, got {self.batch!r}")
        _require(self.loss in REFINE_LOSSES,
                 f"refine loss must be one of {REFINE_LOSSES}, got {self.loss!r}")
        for name in ("object_step", "probe_step", "position_step", "max_position_shift"):
            value = getattr(self, name)
            _require(isinstance(value, int | float) and math.isfinite(value) and value > 0,
                     f"refine {name} must be a finite number > 0, got {value!r}")
        _require(isinstance(self.alpha, int | float) and 0 < self.alpha <= 1,
                 f"refine alpha must be in (0, 1], got {self.alpha!r}")



#: Phase alignment variants of the evaluation (:func:`ptycho_k3.metrics.align_phase`).
#:
#: * ``"difference"`` (default): fit one plane to the wrapped difference ``angle(rec conj(gt))`` and
#:   remove it from the reconstruction; the ground truth is untouched. This removes exactly the
#:   ptychographic ambiguities (global phase, linear ramp) without re-shaping the reference, is
#:   insensitive to phase wraps in the images themselves, and cannot hide a ramp that the ground
#:   truth really has (fitting each image separately can).
#: * ``"plane"``: the original's choice, a plane fitted separately to each image's ``angle()`` and
#:   subtracted from that image.
#: * ``"mean"``: the original's alternative, each image minus its own mean phase.
#: * ``"none"``: raw ``angle()`` of both.
PHASE_PLANE_METHODS: tuple[str, ...] = ("difference", "plane", "mean", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class EvaluationConfig(_FlatConfig):
    """Options of the evaluation against a ground truth (:func:`ptycho_k3.metrics.evaluate`,
    docs/conventions.md §18): the alignment (:func:`~ptycho_k3.metrics.align_for_evaluation`)
    and the scoring (:func:`~ptycho_k3.metrics.score`). The defaults here are those functions'.

    Attributes:
        M: stitching crop side of the evaluation window ``bbox(positions) ± M/2`` (``None``: the
            StitchResult's, else :data:`DEFAULT_M`).
        register_images: run the bounded registration; if ``False`` no shift and no border crop.
        max_shift: integer registration bound (px).
        max_subpixel: largest sub-pixel correction applied (px).
        border: pixels cropped from every side after registration.
        trim: pixels removed from every border before scoring (legacy ``offset // 2`` = 2).
        phase_method: one of :data:`PHASE_PLANE_METHODS`.
        scale_amplitude: multiply the predicted amplitude by ``mean(amp_gt) / mean(amp_pred)``.
        ms_ssim_sigma: Gaussian blur of the amplitudes before ``ms_ssim_legacy``.
        frc_sigma: Gaussian smoothing of the FRC curves (rings); 0 = none.
    """

    _SECTION: ClassVar[str] = "evaluation"

    M: int | None = option(None, "stitching crop for the scored window", minimum=1,
                           default_text="the reconstruction's")
    register_images: bool = option(True, "sub-pixel registration before scoring")
    max_shift: int = option(3, "registration bound (px)", minimum=0)
    max_subpixel: float = option(1.0, "largest sub-pixel correction applied (px)")
    border: int = option(2, "pixels cropped from every side after registration", minimum=0)
    trim: int = option(2, "pixels trimmed from each side before scoring", minimum=0)
    phase_method: str = option("difference", "phase alignment before scoring",
                               choices=PHASE_PLANE_METHODS)
    scale_amplitude: bool = option(True, "scale the amplitude to the ground truth's mean")
    ms_ssim_sigma: float = option(1.0, "amplitude blur of the legacy MS-SSIM")
    frc_sigma: float = option(0.0, "Gaussian smoothing of the FRC curves (rings)")

    def __post_init__(self) -> None:
        _require(self.M is None or (_is_int(self.M) and self.M >= 1),
                 f"M must be an integer >= 1 or none, got {self.M!r}")
        for name in ("max_shift", "border", "trim"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 0, f"{name} must be >= 0; got {value!r}")
        for name in ("register_images", "scale_amplitude"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        for name in ("max_subpixel", "ms_ssim_sigma", "frc_sigma"):
            _finite_nonneg(name, getattr(self, name))
        _require(self.phase_method in PHASE_PLANE_METHODS,
                 f"phase method must be one of {PHASE_PLANE_METHODS}; got {self.phase_method!r}")



@dataclass(frozen=True)
class InferenceConfig(_FlatConfig):
    """What ``ptycho-infer`` (and ``ptycho-train --do_stitching``) does with a loaded bundle and a
    scan (:func:`ptycho_k3.workflows.infer.reconstruct_and_save`); model settings come from the
    bundle, reading settings from :class:`ptycho_k3.data.MeasuredOptions`.

    Attributes:
        n_groups: groups to reconstruct (None = one per position, docs/conventions.md §14).
        batch_size: groups per forward pass.
        M: central crop of each patch kept when stitching (§17).
        seed: seed of grouping (45, the original's).
        neighbor_count: K nearest neighbours for grouping at gridsize > 1.
        phase_vmin, phase_vmax: colour limits of phase pictures (rad; None = automatic).
        comparison_plot: asked for comparison_plot.png (written anyway with a ground truth).
        debug_dump: directory of the debug dump ("" = <output_dir>/debug_dump; None = none).
        refine: the refinement after the PINN (None or 0 iterations = none).
        compare_flat: with refinement, also solve from a flat start.
        precision: the network's precision at inference (None = the bundle's). The refinement
            is all physics and always float32.
        distribute: ``none`` or ``data_parallel`` (:mod:`ptycho_k3.distribute`; jax only).
    """

    _SECTION: ClassVar[str] = "inference"

    n_groups: int | None = option(None, "number of groups to reconstruct", minimum=1,
                                  default_text="one per position")
    batch_size: int = option(32, "groups per forward pass", minimum=1)
    M: int = option(DEFAULT_M, "central crop of each patch kept when stitching", minimum=1)
    seed: int = option(45, "seed of grouping and subsampling (45, the original's)", minimum=0)
    neighbor_count: int = option(4, "K nearest neighbours for grouping at gridsize > 1",
                                 minimum=1)
    phase_vmin: float | None = option(None, "lower colour limit of phase images (rad)")
    phase_vmax: float | None = option(None, "upper colour limit of phase images (rad)")
    comparison_plot: bool = option(False, "comparison_plot.png (written anyway when the scan "
                                   "has a ground truth)")
    debug_dump: str | None = option(None, "write patch grid / offsets / stats / canvas files",
                                    metavar="DIR", default_text="<output_dir>/debug_dump")
    refine: RefineConfig | None = None
    compare_flat: bool = option(False, "with refinement, also solve from a flat start and draw "
                                "both curves")
    precision: str | None = option(None, "run the network in float32 or mixed_bfloat16 (conv "
                                   "stack in bfloat16; physics, stitching and refinement in "
                                   "float32)", choices=PRECISIONS,
                                   default_text="the bundle's")
    distribute: str = option("none", "data_parallel: shard each batch of the network over every "
                             "device of every process (jax only; ptycho_k3/distribute.py)",
                             choices=DISTRIBUTE_MODES)

    def __post_init__(self) -> None:
        _require(self.distribute in DISTRIBUTE_MODES,
                 f"distribute must be one of {DISTRIBUTE_MODES}, got {self.distribute!r}")
        for name in ("batch_size", "M", "neighbor_count"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        _require(self.n_groups is None or (_is_int(self.n_groups) and self.n_groups >= 1),
                 f"n_groups must be an integer >= 1 or none, got {self.n_groups!r}")
        _require(_is_int(self.seed) and self.seed >= 0,
                 f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("phase_vmin", "phase_vmax"):
            value = getattr(self, name)
            _require(value is None or (isinstance(value, int | float) and math.isfinite(value)),
                     f"{name} must be a finite number or none, got {value!r}")
        _require(self.precision is None or self.precision in PRECISIONS,
                 f"precision must be one of {PRECISIONS} or none, got {self.precision!r}")
        _require(self.refine is None or isinstance(self.refine, RefineConfig),
                 f"refine must be a RefineConfig or none, got {type(self.refine).__name__}")

    @property
    def refines(self) -> bool:
        """Whether a refinement follows the PINN."""
        return self.refine is not None and self.refine.iterations > 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InferenceConfig:
        values = dict(values)
        refine = values.pop("refine", None)
        if isinstance(refine, dict):
            refine = RefineConfig.from_dict(refine)
        return cls(**_known(cls, {**values, "refine": refine}, cls._SECTION))


def _check_path(name: str, value: Any) -> None:
    _require(value is None or (isinstance(value, str) and value != ""),
             f"{name} must be a path, got {value!r}")


@dataclass(frozen=True)
class InferenceJob(_FlatConfig):
    """One ``ptycho-infer`` run: the bundle, the scan, where the outputs go and how the scan is
    cut before the network sees it; what is done with it is :class:`InferenceConfig`, how the
    file is read :class:`ptycho_k3.data.MeasuredOptions`.

    Attributes:
        model_path: training output directory holding ``wts.h5.zip``, or the zip (required).
        test_data: the scan file (required).
        output_dir: where every output goes (created after every input check passed).
        n_subsample: raw patterns drawn before grouping (None = all).
        subsample_seed: seed of that draw (None = the inference seed).
        gridsize: the caller's expectation of the bundle's gridsize (None = the bundle decides).
        halves: reconstruct two disjoint halves and their FRC (:mod:`ptycho_k3.workflows.halves`).
    """

    _SECTION: ClassVar[str] = "inference"

    model_path: str | None = option(None, "training output directory holding wts.h5.zip, or the "
                                    "zip itself", metavar="PATH")
    test_data: str | None = option(None, "scan to reconstruct", metavar="FILE")
    output_dir: str = option("inference_outputs", "output directory")
    n_subsample: int | None = option(None, "subsample this many raw patterns first", minimum=1,
                                     default_text="all")
    subsample_seed: int | None = option(None, "seed of the subsample", minimum=0,
                                        default_text="--seed")
    gridsize: int | None = option(None, "must match the bundle's gridsize if given (the bundle "
                                  "decides)", minimum=1)
    halves: bool = option(False, "reconstruct two disjoint halves of the scan (alternate "
                          "positions) into half_1/ and half_2/ and write their FRC resolution "
                          "to frc.json / frc.png")

    def __post_init__(self) -> None:
        for name in ("model_path", "test_data"):
            _require(getattr(self, name) not in (None, ""), f"--{name} is required")
            _check_path(name, getattr(self, name))
        _check_path("output_dir", self.output_dir)
        for name, low in (("n_subsample", 1), ("subsample_seed", 0), ("gridsize", 1)):
            value = getattr(self, name)
            _require(value is None or (_is_int(value) and value >= low),
                     f"{name} must be an integer >= {low} or none, got {value!r}")


RECONSTRUCTION_INITS = ("flat", "pinn")


@dataclass(frozen=True)
class ReconstructionJob(_FlatConfig):
    """One ``ptycho-reconstruct`` run: the scan, the start (flat, or a bundle's PINN object),
    where the outputs go. The solver's options are the :class:`InferenceConfig`'s ``refine``
    (its grouping, stitching and picture options serve the PINN start).

    Attributes:
        test_data: the scan file (required).
        output_dir: where every output goes.
        init: ``flat`` or ``pinn`` (needs ``model_path``).
        model_path: the bundle of the PINN start.
        n_subsample: raw patterns drawn first (None = all; seeded by the inference seed).
        halves: reconstruct two disjoint halves and their FRC.
    """

    _SECTION: ClassVar[str] = "reconstruction"

    test_data: str | None = option(None, "scan to reconstruct", metavar="FILE")
    output_dir: str = option("reconstruction_outputs", "output directory")
    init: str = option("flat", "start from a flat object or the PINN's (needs --model_path)",
                       choices=RECONSTRUCTION_INITS)
    model_path: str | None = option(None, "training output directory or wts.h5.zip (for --init "
                                    "pinn)", metavar="PATH")
    n_subsample: int | None = option(None, "subsample this many patterns first", minimum=1,
                                     default_text="all")
    halves: bool = option(False, "reconstruct two disjoint halves of the scan (alternate "
                          "positions) into half_1/ and half_2/ and write their FRC resolution "
                          "to frc.json / frc.png")

    def __post_init__(self) -> None:
        _require(self.test_data not in (None, ""), "--test_data is required")
        for name in ("test_data", "model_path", "output_dir"):
            _check_path(name, getattr(self, name))
        _require(self.init in RECONSTRUCTION_INITS,
                 f"init must be one of {RECONSTRUCTION_INITS}, got {self.init!r}")
        _require(self.init != "pinn" or self.model_path not in (None, ""),
                 "--init pinn needs --model_path (a training output directory)")
        _require(self.n_subsample is None or (_is_int(self.n_subsample) and self.n_subsample >= 1),
                 f"n_subsample must be an integer >= 1 or none, got {self.n_subsample!r}")


@dataclass(frozen=True)
class SimulationConfig(_FlatConfig):
    """One ``ptycho-simulate`` run (docs/conventions.md §10, §15).

    Without ``from_npz``: ``output_dir/train.npz`` and ``test.npz`` from two objects of one
    kind, same probe and positions. With it: the scan re-simulated at its own object, probe and
    positions into ``output`` (default ``output_dir/<name>_sim.npz``).

    Attributes:
        object: synthetic object kind (:data:`OBJECT_KINDS`).
        N: patch / detector side (:data:`SUPPORTED_N`).
        n_images, n_test_images: patterns in train.npz / test.npz (None = n_images).
        nphotons: expected photons per pattern (the Poisson noise level).
        seed: seed of objects, positions and noise.
        object_size: object side in pixels (None = int(3.5 N)).
        positions: ``random`` (uniform inside the buffer) or ``raster``.
        buffer: distance of positions from the object edge, pixels (None = N/2).
        probe: an NPZ whose ``probeGuess`` replaces the default disc probe.
        phase: non-uniform object phase (set_phi) or zero.
        from_npz: re-simulate this scan (needs ``objectGuess`` and ``probeGuess``).
        output: the file written with ``from_npz``.
        chunk_size: patterns per backend call (bounds memory).
        compress: compressed NPZ files.
    """

    _SECTION: ClassVar[str] = "simulation"

    object: str = option("lines", "synthetic object kind", choices=OBJECT_KINDS)
    N: int = option(64, "patch / detector side in pixels", choices=SUPPORTED_N)
    n_images: int = option(2000, "diffraction patterns in train.npz", minimum=1)
    n_test_images: int | None = option(None, "patterns in test.npz", minimum=1,
                                       default_text="same as --n_images")
    nphotons: float = option(DEFAULT_NPHOTONS, "expected photons per pattern, the Poisson "
                             "noise level")
    seed: int = option(0, "seed of every random choice: objects, positions, noise")
    output_dir: str = option(".", "directory for the output files (created if missing)")
    object_size: int | None = option(None, "object side in pixels", minimum=1,
                                     default_text="int(3.5 N), 224 for N 64")
    positions: str = option("random", "scan positions: uniform random inside the buffer, or a "
                            "regular raster", choices=SCAN_PATTERNS)
    buffer: float | None = option(None, "distance of positions from the object edge in pixels",
                                  default_text="N/2")
    probe: str | None = option(None, "take the probe (probeGuess, (N, N)) from this NPZ instead "
                               "of the default disc", metavar="NPZ")
    phase: bool = option(True, "non-uniform object phase by the set_phi formula (--no-phase: "
                         "zero)")
    from_npz: str | None = None
    output: str | None = option(None, "output file for --from", metavar="NPZ",
                                default_text="OUTPUT_DIR/<input name>_sim.npz")
    chunk_size: int = option(512, "patterns per backend call (memory bound)", minimum=1)
    compress: bool = option(False, "write compressed NPZ files (smaller, slower)")

    def __post_init__(self) -> None:
        _require(self.object in OBJECT_KINDS,
                 f"object must be one of {OBJECT_KINDS}, got {self.object!r}")
        _require(self.N in SUPPORTED_N, f"N must be one of {SUPPORTED_N}, got {self.N!r}")
        for name in ("n_images", "chunk_size"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("n_test_images", "object_size"):
            value = getattr(self, name)
            _require(value is None or (_is_int(value) and value >= 1),
                     f"{name} must be an integer >= 1 or none, got {value!r}")
        _require(self.object_size is None or self.object_size >= self.N + 2,
                 f"object_size {self.object_size} must be at least N + 2 = {self.N + 2}")
        _require(isinstance(self.nphotons, int | float) and math.isfinite(self.nphotons)
                 and self.nphotons > 0,
                 f"nphotons must be a finite number > 0, got {self.nphotons!r}")
        _require(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        _require(self.positions in SCAN_PATTERNS,
                 f"positions must be one of {SCAN_PATTERNS}, got {self.positions!r}")
        _require(self.buffer is None or (isinstance(self.buffer, int | float)
                                         and math.isfinite(self.buffer) and self.buffer >= 0),
                 f"buffer must be a finite number >= 0 or none, got {self.buffer!r}")
        for name in ("probe", "from_npz", "output", "output_dir"):
            _check_path(name, getattr(self, name))
        _require(self.output is None or self.from_npz is not None,
                 "--output only applies with --from; use --output_dir")

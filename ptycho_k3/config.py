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
from dataclasses import dataclass, field
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
TORCH_ONLY_ARCHITECTURES = ("ffno", "fno", "fno_vanilla", "neuralop_uno")


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

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 2
    model_type: str = "pinn"
    architecture: str = "cnn"
    amp_activation: str = "sigmoid"
    hidden_activation: str = "relu"
    precision: str = "float32"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    offset: int = 4
    max_position_jitter: int = 10
    default_probe_scale: float = 0.7

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
    train_data_file: str | None = None
    test_data_file: str | None = None
    output_dir: str = "training_outputs"
    batch_size: int = 16
    nepochs: int = 50
    learning_rate: float = 1e-3
    nll_weight: float | None = None
    mae_weight: float | None = None
    realspace_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    tv_weight: float = 0.0
    amp_label_weight: float = 1.0
    phase_label_weight: float = 1.0
    nphotons: float = DEFAULT_NPHOTONS
    n_groups: int = 512
    n_subsample: int | None = None
    subsample_seed: int | None = None
    neighbor_count: int = 4
    enable_oversampling: bool = False
    neighbor_pool_size: int | None = None
    sequential_sampling: bool = False
    validation_fraction: float = 0.05
    early_stopping_patience: int = 3
    lr_patience: int = 2
    lr_factor: float = 0.5
    min_lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        _require(isinstance(self.model, ModelConfig), "model must be a ModelConfig")
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

    iterations: int = 0
    batch: int = 128
    loss: str = "poisson"
    object_step: float = 1.0
    alpha: float = 0.1
    refine_probe: bool = False
    probe_start: int = 10
    probe_step: float = 1.0
    refine_positions: bool = False
    position_start: int = 10
    position_step: float = 0.5
    max_position_shift: float = 0.5
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

    M: int | None = None
    register_images: bool = True
    max_shift: int = 3
    max_subpixel: float = 1.0
    border: int = 2
    trim: int = 2
    phase_method: str = "difference"
    scale_amplitude: bool = True
    ms_ssim_sigma: float = 1.0
    frc_sigma: float = 0.0

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
    """

    _SECTION: ClassVar[str] = "inference"

    n_groups: int | None = None
    batch_size: int = 32
    M: int = DEFAULT_M
    seed: int = 45
    neighbor_count: int = 4
    phase_vmin: float | None = None
    phase_vmax: float | None = None
    comparison_plot: bool = False
    debug_dump: str | None = None
    refine: RefineConfig | None = None
    compare_flat: bool = False

    def __post_init__(self) -> None:
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

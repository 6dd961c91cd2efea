"""The recipe: every fine-tuning and ranking setting, declared once.

``Recipe`` is the single source of truth for a setting's name, type, default, bounds and help text. From it
come the ``ncap rank`` flags (``ncap.service.commands.recipe_flags``), the service's job config and its
OpenAPI schema (``ncap.service.api.JobConfig``), and the benchmark's recipe and cache key
(``ncap.bench.runs.BenchRecipe``). Adding a setting is one field here plus its use.

Each field carries an :class:`Exposure` marker saying who may set it:

    Exposure.JOB       the CLI, the service's job config and Python
    Exposure.CLI       the CLI and Python only (settings of the operator's own machine)
    Exposure.INTERNAL  Python only (the benchmark's recording options)
"""
from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import core_schema

from ncap.capacitance.beta_eff import MAX_MAGNITUDE_FLOPS
from ncap.capacitance.line_graph import VARIANTS
from ncap.capacitance.predictor import MIN_POINTS
from ncap.capacitance.probe import probe_width_spec
from ncap.capacitance.ranking_rules import DEFAULT_RULE, RANKING_RULES
from ncap.models.partial import Trainable

__all__ = ["ALLOCATION", "Choices", "Duration", "Exposure", "Recipe", "VariantName", "exposed_fields",
           "plain_value_errors"]


class Exposure(enum.Enum):
    """Who may set a recipe field (see module docstring)."""

    JOB = "job"
    CLI = "cli"
    INTERNAL = "internal"


JOB, CLI, INTERNAL = Exposure.JOB, Exposure.CLI, Exposure.INTERNAL
VariantName = Literal[VARIANTS]  # type: ignore[valid-type]


_NUMBER_TYPES = frozenset({int, float})


def plain_value_errors(model: type[BaseModel], value, info: ValidationInfo):
    """A ``mode="before"`` field check shared by every model built from recipe fields: booleans and strings are
    not numbers, and a value outside a Literal's choices is named in the error."""
    annotation = model.model_fields[info.field_name].annotation
    if isinstance(value, bool) and annotation is not bool:
        raise ValueError("a boolean is not a number")
    if isinstance(value, str) and _NUMBER_TYPES & set(typing.get_args(annotation) or (annotation,)):
        raise ValueError(f"{value!r} is a string; give a number")
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
    if choices and value not in choices:
        raise ValueError(f"unknown {info.field_name} {value!r}; choose from {', '.join(choices)}")
    return value


POST_HOC = frozenset({"ranker"})  # settings applied to a finished run; they never change the training
# how far each candidate trains (ncap.models.allocation): a run stopped early is a prefix of its full run, so
# these never change what one run records up to where it stops
ALLOCATION = frozenset({"strategy", "halving_eta", "halving_min_epochs", "stop_p_best", "time_budget_s"})


class Duration:
    """Marks a field in seconds that the command line takes as a duration (``90s``, ``30m``, ``1h30m``)."""


@dataclass(frozen=True)
class Choices:
    """Marks a ``str`` field whose choices come from a registry that may grow after import (the ranking rules):
    ``options()`` gives ``{name: one-line description}`` each time it is asked, so a value is validated, the
    command line's help written and the JSON schema's ``enum`` listed from the registry as it is then. The
    field's ``Field`` passes ``json_schema_extra=choices.json_schema``: pydantic writes a field's description
    after any schema hook of its type, and runs ``json_schema_extra`` after that."""

    options: Callable[[], Mapping[str, str]]

    def names(self) -> tuple[str, ...]:
        return tuple(self.options())

    def describe(self, description: str) -> str:
        """``description`` followed by the choices and what each is (the CLI's help, the JSON schema)."""
        listed = "; ".join(f"{name} = {text}" for name, text in self.options().items())
        return f"{description} Choices: {listed}.".strip()

    def json_schema(self, schema: dict) -> None:
        """The field's JSON schema lists the choices (``enum``) and says what each is (``description``)."""
        schema["enum"] = list(self.names())
        schema["description"] = self.describe(schema.get("description", ""))

    def _check(self, value: str, info: ValidationInfo) -> str:
        if value not in self.options():
            raise ValueError(f"unknown {info.field_name} {value!r}; choose from {', '.join(self.names())}")
        return value

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.with_info_after_validator_function(self._check, handler(source))


_RULE_CHOICES = Choices(lambda: {name: rule.description for name, rule in RANKING_RULES.items()})


class Recipe(BaseModel):
    """One fine-tuning recipe, identical for every candidate of a ranking (which is what makes β_eff
    comparable across candidates), plus the predictor's settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    epochs: Annotated[int, JOB, Field(ge=1, le=1000, description="Fine-tuning epochs per candidate.")] = 4
    batch_size: Annotated[int, JOB, Field(ge=1, le=4096, description="Training batch size.")] = 64
    lr: Annotated[float, JOB, Field(gt=0, le=10, allow_inf_nan=False, description="AdamW peak learning rate of "
                                    "the probe; the backbone's is lr × backbone_lr_scale.")] = 1e-3
    weight_decay: Annotated[float, JOB, Field(ge=0, le=10, allow_inf_nan=False,
                                              description="AdamW weight decay.")] = 1e-4
    backbone_lr_scale: Annotated[float, JOB, Field(
        gt=0, le=10, allow_inf_nan=False, description="Backbone learning rate as a fraction of lr (< 1: "
                                                      "pretrained weights move less than the new probe).")] = 1.0
    warmup_fraction: Annotated[float, JOB, Field(
        ge=0, le=0.5, allow_inf_nan=False, description="Share of the steps with a linear learning-rate "
                                                       "warm-up (per step).")] = 0.1
    lr_schedule: Annotated[Literal["cosine", "constant"], JOB, Field(
        description="After the warm-up: cosine decay to 0 over the remaining steps, or constant.")] = "cosine"
    label_smoothing: Annotated[float, JOB, Field(
        ge=0, le=0.5, allow_inf_nan=False, description="Label smoothing of the training loss (β_eff is always "
                                                       "measured on plain cross-entropy).")] = 0.0
    grad_clip_norm: Annotated[float | None, JOB, Field(
        gt=0, allow_inf_nan=False, description="Clip the gradient norm to this value; null = no clipping.")] = None
    augmentation: Annotated[Literal["light", "none"], JOB, Field(
        description="Training augmentation: light = timm random resized crops keeping 80-100 % of the area "
                    "(no flips, no colour jitter); none = the eval transform.")] = "light"
    probe_width: Annotated[int, JOB, Field(
        ge=4, le=8192, description="First hidden width of the capacitance probe (then w/2, w/4, ...); 128 was "
                                   "chosen by the benchmark's width sweep.")] = 128
    probe_depth: Annotated[int, JOB, Field(
        ge=3, le=16, description="Hidden Linear layers of the probe (β_eff is structurally 0 below 3).")] = 3
    trainable: Annotated[Trainable, JOB, Field(
        description="What trains (models/partial.py): all = the whole backbone, the probe and the classifier; "
                    "top = the backbone's last stage (timm's last feature level) and its head conv, the probe "
                    "and the classifier, on cached activations of the frozen rest; probe = the probe and the "
                    "classifier only, on cached pooled features.")] = "all"
    cached_views: Annotated[int, JOB, Field(
        ge=1, le=16, description="trainable top/probe: augmented views cached per training image (each epoch "
                                 "reads one at random); 1 with augmentation none. Default 1: on elpv, 2 and 4 "
                                 "views gave no better accuracy (bench/results/partial_views.md) and cost more "
                                 "caching.")] = 1
    seed: Annotated[int, JOB, Field(ge=0, le=2**31 - 1, description="Seed of the split, the probe batch and "
                                                                  "the training order.")] = 0
    variant: Annotated[VariantName, JOB, Field(
        description="β_eff variant the predictor uses: default (signed P), support (P on the line graph's "
                    "edges), magnitude (|P|).")] = "support"
    beta_batch_size: Annotated[int, JOB, Field(ge=2, le=4096, description="Images β_eff is measured on "
                                                                      "at each observation.")] = 256
    beta_features: Annotated[Literal["validation", "fixed", "window"], JOB, Field(
        description="Features β_eff is measured on: validation = the first beta_batch_size images of each "
                    "observation's validation pass (fixed images, eval mode, no extra cost); fixed = a fixed batch "
                    "of training images through the backbone in eval mode (an extra forward pass per "
                    "observation); window = the last beta_batch_size training images (no extra cost, "
                    "noisiest).")] = "validation"
    evals_per_epoch: Annotated[int, JOB, Field(ge=1, le=20, description="Observations (validation accuracy "
                                                                    "and β_eff) per epoch.")] = 2
    image_size: Annotated[int | None, JOB, Field(
        ge=8, le=1024, description="Square input side in pixels; null (CLI: none or 0) = each candidate's native "
                                   "input size (timm's data config).")] = None
    val_fraction: Annotated[float, JOB, Field(gt=0, lt=1, description="Share of the dataset held out for "
                                                                    "validation (stratified).")] = 0.2
    t0: Annotated[int, JOB, Field(ge=0, le=100, description="Predictor: leading observations skipped.")] = 1
    ranker: Annotated[str, JOB, _RULE_CHOICES, Field(
        description="Rule the candidates are ranked by (capacitance/ranking_rules.py). β_eff and its prediction "
                    "are reported whatever the rule; the default is the selection benchmark's choice.",
        json_schema_extra=_RULE_CHOICES.json_schema)] = DEFAULT_RULE
    prune_sparsity: Annotated[float | None, JOB, Field(
        gt=0, lt=1, description="Attach a pruning report per candidate: magnitude-prune the fine-tuned probe "
                                "to this sparsity and fit power laws to its degree distributions.")] = None
    strategy: Annotated[Literal["equal", "halving"], JOB, Field(
        description="How training is allocated across the candidates (ncap.models.allocation): equal = every "
                    "candidate trains for epochs; halving = successive halving on the ranking rule, which stops "
                    "a candidate once it ranks in the worse part of a rung.")] = "equal"
    # defaults: the cheapest setting that matched equal allocation's pick quality on the allocation benchmark's
    # development tasks (bench/results/allocation.md)
    halving_eta: Annotated[int, JOB, Field(
        ge=2, le=8, description="Successive halving: the best 1/eta of the candidates go on at each rung.")] = 3
    halving_min_epochs: Annotated[float | None, JOB, Field(
        gt=0, le=1000, allow_inf_nan=False, description="Successive halving: epoch of the first rung (rungs follow "
                                                        "at ×eta); null (CLI: none) = epochs / eta^K, K halvings "
                                                        "reaching one candidate.")] = 0.5
    stop_p_best: Annotated[float, JOB, Field(
        gt=0.5, le=1, allow_inf_nan=False, description="Successive halving stops as soon as one candidate's P(best) "
                                                       "reaches this (1 = never early).")] = 0.95
    time_budget_s: Annotated[float | None, JOB, Duration(), Field(
        ge=1, le=30 * 86400, allow_inf_nan=False,
        description="Time budget of the whole ranking in seconds (CLI: a duration such as 30m): epochs become "
                    "the most (at most epochs) the measured cost estimate fits, and training stops when it is "
                    "spent; null = none.")] = None
    activation_cache_gb: Annotated[float, CLI, Field(
        gt=0, le=100000, allow_inf_nan=False, description="Bound of the activation cache on disk "
                                                          "($NCAP_CACHE/activations); least recently used "
                                                          "entries are evicted.")] = 20.0
    device: Annotated[str, CLI, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
                                      description="auto, cpu, cuda, cuda:N or mps.")] = "auto"
    amp: Annotated[Literal["auto", "off", "bf16", "fp16"], CLI, Field(
        description="Mixed precision on CUDA (auto = bf16 where supported, else fp16); CPU runs in float32.")] = "auto"
    num_workers: Annotated[int, CLI, Field(
        ge=-1, le=64, description="Data-loading worker processes; -1 = auto (CUDA: cores - 1, at most 8; "
                                  "CPU: half the cores, at most 4).")] = -1
    max_magnitude_flops: Annotated[float, CLI, Field(
        gt=0, allow_inf_nan=False, description="Work limit of the magnitude variant per observation "
                                               "(multiply-adds); a wide probe on a wide backbone needs more.")
    ] = MAX_MAGNITUDE_FLOPS
    extra_variants: Annotated[tuple[VariantName, ...], INTERNAL, Field(
        description="Variants recorded besides `variant` (benchmark).")] = ()
    extra_variants_until: Annotated[float | None, INTERNAL, Field(
        ge=0, description="Record the extra variants only up to this epoch (cost).")] = None
    observe_at_epochs: Annotated[tuple[float, ...] | None, INTERNAL, Field(
        description="Observe at exactly these epochs (rounded to whole steps) instead of evals_per_epoch times per "
                    "epoch (benchmark: dense early observations, then only what the truth needs).")] = None
    max_snapshots: Annotated[int, INTERNAL, Field(ge=0, description="Probe weight snapshots kept.")] = 16
    track_beta: Annotated[bool, INTERNAL, Field(
        description="False = the same fine-tune and observations without β_eff (overhead baseline).")] = True
    measure_latency: Annotated[bool, INTERNAL, Field(
        description="Measure each candidate's inference latency after fine-tuning.")] = True

    _plain_errors = field_validator("*", mode="before")(classmethod(lambda cls, v, info: plain_value_errors(cls, v, info)))

    @model_validator(mode="before")
    @classmethod
    def _legacy_freeze_backbone(cls, data):
        """Records written before ``trainable`` existed say ``freeze_backbone`` (true = ``trainable`` probe)."""
        if isinstance(data, dict) and "freeze_backbone" in data:
            data = dict(data)
            if data.pop("freeze_backbone") is True:
                data.setdefault("trainable", "probe")
        return data

    @model_validator(mode="after")
    def _check_observation_epochs(self) -> Recipe:
        e = self.observe_at_epochs
        if e is not None and (not e or list(e) != sorted(set(e)) or e[0] <= 0 or e[-1] > self.epochs):
            raise ValueError(f"observe_at_epochs must be increasing epochs in (0, epochs={self.epochs}], got {list(e)}")
        return self

    @model_validator(mode="after")
    def _drop_duplicate_variants(self) -> Recipe:
        extra = tuple(v for v in dict.fromkeys(self.extra_variants) if v != self.variant)
        if extra != self.extra_variants:
            object.__setattr__(self, "extra_variants", extra)  # no re-validation loop
        return self

    @model_validator(mode="after")
    def _enough_observations_for_beta_eff(self) -> Recipe:
        """Ranking by β_eff's prediction needs MIN_POINTS observations; refuse a recipe that cannot give them."""
        if self.ranker == "beta_eff" and self.track_beta and (problem := self.beta_eff_shortfall):
            raise ValueError(f"ranker 'beta_eff' {problem}")
        return self

    @property
    def observations(self) -> int:
        """Observations per candidate run (validation accuracy and β_eff)."""
        return len(self.observe_at_epochs) if self.observe_at_epochs is not None else self.epochs * self.evals_per_epoch

    @property
    def beta_eff_shortfall(self) -> str | None:
        """Why β_eff's prediction can never be made with this recipe (too few observations), or None."""
        if self.observations >= MIN_POINTS:
            return None
        return (f"needs at least {MIN_POINTS} observations (Algorithm 1), and epochs={self.epochs} × "
                f"evals_per_epoch={self.evals_per_epoch} gives {self.observations}: use epochs >= "
                f"{-(-MIN_POINTS // self.evals_per_epoch)} (or evals_per_epoch >= {-(-MIN_POINTS // self.epochs)})")

    @property
    def variants(self) -> tuple[str, ...]:
        """The predictor's variant first, then the extra ones."""
        return (self.variant, *self.extra_variants)

    @property
    def probe_hidden(self) -> tuple[int, ...]:
        return probe_width_spec(self.probe_width, self.probe_depth)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples as lists)."""
        return self.model_dump(mode="json")

    def run_dict(self) -> dict:
        """:meth:`to_dict` without the settings that only read a finished run (:data:`POST_HOC`) or say how far
        it goes (:data:`ALLOCATION`): what a cached fine-tuning run depends on, so cache keys stay valid when only
        those change."""
        return {k: v for k, v in self.to_dict().items() if k not in POST_HOC | ALLOCATION}

    @property
    def trains_in_turns(self) -> bool:
        """Successive halving or a time budget: the candidates train in turns (``ncap.service.rounds``)."""
        return self.strategy == "halving" or self.time_budget_s is not None

    def allocation_dict(self) -> dict:
        """The allocation settings (:data:`ALLOCATION`) when they are not the defaults' (equal, no budget), else
        an empty dict: what a resumed run must also match, beyond :meth:`run_dict`."""
        if not self.trains_in_turns:
            return {}
        return {k: v for k, v in self.to_dict().items() if k in ALLOCATION}

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Validate a dict; unknown keys are refused."""
        return cls.model_validate(d)


def exposed_fields(*exposures: Exposure) -> dict:
    """``{name: FieldInfo}`` of the recipe fields whose marker is one of ``exposures``, in declaration order."""
    return {name: info for name, info in Recipe.model_fields.items()
            if any(m in exposures for m in info.metadata if isinstance(m, Exposure))}

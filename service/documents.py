"""The ranking document, typed: what ``ncap rank`` writes to ``ranking.json``, what ``/jobs/result`` returns
and what the OpenAPI spec shows.

    RankingDocument
      schema_version        2 (documents without it are version 1 and read the same way)
      candidates            [CandidateRecord, ...] sorted by rank
      config                the Recipe every candidate got
      dataset               DatasetInfo
      device, wall_time_s, plots, ncap_version

Non-finite numbers (NaN placeholders of unrecorded β_eff, a diverged loss) become ``null``.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ncap.jsonsafe import to_jsonable
from ncap.models.recipe import Recipe

__all__ = ["SCHEMA_VERSION", "CandidateRecord", "DatasetInfo", "RankingDocument"]
SCHEMA_VERSION = 2


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _non_finite_to_none(cls, data: Any) -> Any:
        return to_jsonable(data) if isinstance(data, dict) else data


Series = list[float | None]


class CandidateRecord(_Document):
    """One candidate of a ranking: its prediction, its recorded trajectory and what it cost."""

    candidate: str = Field(description="Display name (zoo name, label, arch, arch=random, arch=file name).")
    rank: int = Field(0, description="1 = predicted best; failed candidates rank last.")
    status: str = Field("ok", description="ok | failed")
    error: str | None = Field(None, description="Why a failed candidate failed.")
    predicted_accuracy: float | None = Field(None, description="Predicted final validation accuracy (0..1).")
    predicted_std: float | None = Field(None, description="Predictive standard deviation.")
    score: float | None = Field(None, description="Score under the ranking rule (config.ranker), higher = "
                                                   "better: the β_eff prediction, the last accuracy or -TSE-EMA.")
    score_std: float | None = Field(None, description="Standard deviation of the score, where the rule has one.")
    p_best: float | None = Field(0.0, description="P(this candidate is the best), Monte Carlo over N(score, "
                                                  "score_std²); null when the rule has no std (tse_ema).")
    observed_accuracy: float | None = Field(None, description="Validation accuracy at the last observation.")
    prediction_method: str | None = Field(None, description="beta_extrapolation | fallback_last | none")
    prediction_flags: list[str] = Field(default_factory=list, description="What the predictor dropped or "
                                                                          "clipped, and why.")
    epoch: Series = Field(default_factory=list, description="Fractional epoch of each observation.")
    beta_eff: Series = Field(default_factory=list, description="β_eff of the recipe's variant per observation.")
    beta_numerator: Series = Field(default_factory=list, description="s_out·s_in per observation.")
    beta_denominator: Series = Field(default_factory=list, description="1ᵀs_in per observation.")
    beta_eff_variants: dict[str, Series] = Field(default_factory=dict, description="β_eff of every recorded "
                                                                                   "variant.")
    val_accuracy: Series = Field(default_factory=list, description="Validation accuracy per observation.")
    train_loss: Series = Field(default_factory=list, description="Mean training loss since the previous "
                                                                 "observation.")
    wall_time_s: float = 0.0
    beta_time_s: float = Field(0.0, description="Part of wall_time_s spent measuring β_eff.")
    train_time_s: float = Field(0.0, description="Part of wall_time_s spent in optimiser steps.")
    feature_dim: int | None = Field(None, description="Width of the backbone's pooled features.")
    n_params: int | None = Field(None, description="Parameters of backbone + probe.")
    latency_ms: dict[int, float] = Field(default_factory=dict, description="Measured inference latency per "
                                         "image (ms) at batch sizes 1 and 64 on the ranking's device.")
    pareto: bool = Field(False, description="On the Pareto front of predicted accuracy against latency at "
                                            "batch 1 (no other candidate is both more accurate and faster).")
    weights_remap: dict[str, Any] | None = Field(None, description="How a checkpoint with other key names was "
                                                 "mapped onto the model by tensor order and shape, if it was.")
    pruning_report: dict[str, Any] | None = Field(None, description="Degree distributions and power-law fits "
                                                                   "of the magnitude-pruned probe.")
    reused: bool = Field(False, description="Taken from an interrupted earlier attempt, not retrained.")
    checkpoint: str | None = Field(None, description="The fine-tuned model kept next to ranking.json (top `keep` "
                                   "candidates): a safetensors file of backbone.* (timm keys) and probe.*.")
    checkpoint_bytes: int | None = Field(None, description="Its size on disk.")
    checkpoint_error: str | None = Field(None, description="Why it was not kept (e.g. too little disk space).")
    stopped_at_epoch: float | None = Field(None, description="Epochs it trained when successive halving or the "
                                           "time budget stopped it before config.epochs (None: it ran them all).")
    stopped_reason: str | None = Field(None, description="Why it stopped there.")


class DatasetInfo(_Document):
    source: str
    n_images: int
    n_train: int
    n_val: int
    classes: list[str]
    image_shape: list[int] = Field(default_factory=list, description="(C, H, W) as stored.")


class RankingDocument(_Document):
    """A whole ranking (``ranking.json``)."""

    schema_version: int = SCHEMA_VERSION
    candidates: list[CandidateRecord]
    config: Recipe
    dataset: DatasetInfo
    device: str = "cpu"
    wall_time_s: float = 0.0
    plots: list[str] = Field(default_factory=list, description="Plot file names next to ranking.json.")
    warnings: list[str] = Field(default_factory=list, description="What went wrong without spoiling the "
                                "ranking, e.g. a plot that could not be drawn.")
    ncap_version: str = ""
    pruning_report: dict[str, Any] | None = Field(None, description="The `ncap prune` report a service job "
                                                                   "was submitted with, if any.")
    allocation: dict[str, Any] | None = Field(None, description="How training was allocated when not equally "
                                              "without a budget (config.strategy, config.time_budget_s): the "
                                              "rungs' decisions, the planned epochs and the time spent.")

    @model_validator(mode="after")
    def _stamp_version(self) -> RankingDocument:
        if not self.ncap_version:
            from ncap import __version__

            self.ncap_version = __version__
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @property
    def best(self) -> CandidateRecord | None:
        """The top-ranked candidate that did not fail (None when every one failed)."""
        ok = [r for r in self.candidates if r.status == "ok"]
        return min(ok, key=lambda r: r.rank) if ok else None

    @property
    def failed(self) -> list[CandidateRecord]:
        return [r for r in self.candidates if r.status != "ok"]

    def table(self, pareto_only: bool = False) -> str:
        """The ranking table ``ncap rank`` prints."""
        from ncap.service.tables import format_table

        return format_table(self, pareto_only)

    def __repr__(self) -> str:
        best = self.best
        top = "no candidate succeeded" if best is None else (
            f"best {best.candidate!r}" + ("" if best.score is None else f" (score {best.score:.3g})"))
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (f"<RankingDocument: {len(self.candidates)} candidates on {self.dataset.source!r}, ranked by "
                f"{self.config.ranker}; {top}{failed}; .table() shows all>")

    def _repr_html_(self) -> str:
        from ncap.service.tables import html_table

        return html_table(self)

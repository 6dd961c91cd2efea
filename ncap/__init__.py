"""ncap: model selection by neural capacitance (β_eff of the probe's line graph; Jiang et al. 2024).

The public API (each name is imported on first use, so ``import ncap`` stays light: no torch, Optuna or Ray):

    ncap.BetaEffTracker          track β_eff of a probe in your own training loop; predict() its final accuracy
    ncap.predict_final_accuracy  Algorithm 1 on (β_eff, accuracy) observations -> ncap.Prediction
    ncap.p_best                  P(each candidate is the best) from Gaussian predictions
    ncap.rank                    the `ncap rank` pipeline as a function -> ncap.RankingDocument
    ncap.Recipe                  every fine-tuning / ranking setting, declared once (pydantic)
    ncap.finetune                continue a candidate `ncap rank --keep` kept to a full fine-tune

Optional integrations (not imported by ``import ncap``): ``ncap.integrations.optuna.CapacitancePruner``
(``pip install 'ncap[optuna]'``) and ``ncap.integrations.ray_tune.CapacitanceScheduler`` (``'ncap[ray]'``).

The repository's top-level folders are this package's layers, installed under the one name ``ncap``:

    ncap.capacitance   the β_eff method (probe, line graph, β_eff, tracker, predictor, ranking rules)
    ncap.network       network science of weights (masks, degrees, measures, power-law fits)
    ncap.models        data, candidates, training loop, harness, zoo, pruning
    ncap.bench         benchmarks
    ncap.service       ranking jobs, typed documents, store, BentoML service, CLI
"""
from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily (__getattr__)
    from ncap.capacitance.predictor import Prediction, p_best, predict_final_accuracy
    from ncap.capacitance.tracker import BetaEffTracker
    from ncap.models.recipe import Recipe
    from ncap.service.documents import RankingDocument
    from ncap.service.finetune import finetune

try:
    __version__ = importlib.metadata.version("ncap")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["BetaEffTracker", "Prediction", "RankingDocument", "Recipe", "__version__", "finetune", "p_best",
           "predict_final_accuracy", "rank"]

# public name -> module defining it (PEP 562 lazy attributes: the heavy modules import on first use)
LAZY_NAMES = {
    "BetaEffTracker": "ncap.capacitance.tracker",
    "Prediction": "ncap.capacitance.predictor",
    "predict_final_accuracy": "ncap.capacitance.predictor",
    "p_best": "ncap.capacitance.predictor",
    "Recipe": "ncap.models.recipe",
    "RankingDocument": "ncap.service.documents",
    "finetune": "ncap.service.finetune",
}


def __getattr__(name: str) -> Any:
    if name not in LAZY_NAMES:
        raise AttributeError(f"module 'ncap' has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY_NAMES[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def rank(dataset: str | Path | None = None, candidates: str | list[str] | None = None, *,
         out_dir: str | Path | None = None, recipe: Recipe | None = None, make_plots: bool = True,
         progress: bool = True, on_failure: str = "warn", **recipe_fields: Any) -> RankingDocument:
    """Rank candidate models on a dataset, as ``ncap rank`` does, and return the typed document.

    Each candidate is fine-tuned briefly with the capacitance probe under one shared recipe (``trainable``:
    the whole backbone, its last stage, or the probe only, on cached activations); β_eff and the validation
    accuracy are recorded at every observation and Algorithm 1 predicts each final accuracy. The candidates are
    ranked by the recipe's ``ranker`` (default ``"val_acc"``: the last validation accuracy; ``"beta_eff"``: the
    Algorithm 1 prediction; ``"tse_ema"``: training speed), with P(best); β_eff's prediction is reported
    whatever the rule. ``strategy="halving"`` stops the worse candidates early (successive halving) and
    ``time_budget_s`` plans the epochs to fit a time budget (``ncap.models.allocation``).

    Parameters
    ----------
    dataset : str or Path, optional
        A ``.npz`` (x: (N, H, W) or (N, C, H, W), y: (N,)), an ImageFolder directory or a ``.zip`` of one, or a
        named dataset (``"digits"``, ``"mnist5k"``, ...). None: scikit-learn's digits.
    candidates : str or list of str, optional
        Candidate entries as for ``ncap rank --candidates`` (zoo names, timm names, ``arch=weights``,
        ``arch=random``); a string is comma-separated. None: the demo zoo.
    out_dir : str or Path, optional
        Also write ``ranking.json`` (and the plots if ``make_plots``) there. None: write nothing.
    recipe : ncap.Recipe, optional
        The settings; ``recipe_fields`` override single fields of it (or of the defaults).
    progress : bool
        Show progress bars.
    on_failure : {"warn", "raise", "ignore"}
        What a failed candidate does: a warning naming each with its reason (default), a ``RuntimeError``
        after the ranking, or nothing (the failed ones are in ``doc.failed`` either way).
    **recipe_fields
        Any field of :class:`ncap.Recipe`: ``epochs``, ``lr``, ``batch_size``, ``trainable`` (``"all"``,
        ``"top"``, ``"probe"``), ``ranker``, ``probe_width``, ``variant`` (default ``"support"``), ``t0``,
        ``seed``, ``device``, ... An unknown name raises ``TypeError`` with the closest field ("did you
        mean"); a bad value raises ``pydantic.ValidationError`` (a ``ValueError``).

    Returns
    -------
    ncap.RankingDocument
        ``.best``: the top candidate that did not fail; ``.table()``: the table ``ncap rank`` prints (a
        notebook shows it as HTML); ``.candidates``: one ``CandidateRecord`` per candidate, best first
        (``rank``, ``p_best``, ``predicted_accuracy`` ± ``predicted_std``, the trajectories); ``.failed``;
        ``.config``: the recipe used; ``.dataset``, ``.device``, ``.wall_time_s``. ``.to_json()`` gives the
        ``ranking.json`` text.
    """
    import warnings

    from ncap.models.recipe import Recipe
    from ncap.service.ranking import run_ranking

    if on_failure not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_failure={on_failure!r}: choose 'raise', 'warn' or 'ignore'")
    unknown = sorted(set(recipe_fields) - set(Recipe.model_fields))
    if unknown:
        import difflib

        hints = [f"{k!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
            k, list(Recipe.model_fields), n=1)) else "") for k in unknown]
        raise TypeError(f"ncap.rank() got unknown recipe fields {', '.join(hints)}; the fields are ncap.Recipe's")
    base = recipe.to_dict() if recipe is not None else {}
    config = Recipe.model_validate({**base, **recipe_fields})
    if config.beta_eff_shortfall and config.track_beta:  # the ranking rule does not need it (else: refused above)
        warnings.warn(f"β_eff's prediction {config.beta_eff_shortfall}; it will be a flagged fallback", stacklevel=2)
    doc = run_ranking(dataset, candidates, config, None if out_dir is None else Path(out_dir),
                      make_plots=make_plots, progress=progress)
    if doc.failed and on_failure != "ignore":
        reasons = "; ".join(f"{r.candidate}: {r.error}" for r in doc.failed)
        if on_failure == "raise":
            raise RuntimeError(f"{len(doc.failed)} of {len(doc.candidates)} candidates failed: {reasons}")
        warnings.warn(f"{len(doc.failed)} of {len(doc.candidates)} candidates failed: {reasons}", stacklevel=2)
    return doc

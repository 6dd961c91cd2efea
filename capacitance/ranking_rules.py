"""Ranking rules: how one candidate's short fine-tuning run becomes the score ``ncap rank`` ranks it by.

Every rule reads the same observed run (per observation: validation accuracy ``a_t``, mean training loss
``L_t`` since the previous observation, β_eff ``β_t``) and returns a :class:`RuleScore` (score, higher =
better, and a standard deviation where the rule has one, for P(best)):

* ``beta_eff``: Algorithm 1 (:func:`ncap.capacitance.predictor.predict_final_accuracy`): the accuracy
  predicted at β_eff = 0 by a Bayesian ridge fit of ``a_t`` on ``β_t`` (t ≥ t0), ± its predictive std.
* ``val_acc``: the last observed accuracy ``a_T``, ± its binomial standard error ``sqrt(a_T (1 - a_T) / n_val)``.
* ``tse_ema``: training speed estimation (Ru et al., NeurIPS 2021), ``-Σ_t γ^(T-t) L_t`` with γ = 0.9;
  no std (P(best) is not defined for it).

:data:`RANKING_RULES` is the one registry of rules, by their one name: ``Recipe.ranker``'s choices, ``ncap rank
--ranker``, the service's job config and the selection benchmark (``ncap.bench.rankers``, which scores these same
functions) all read it when they are used, so :func:`register_rule` adds a rule everywhere. Each
:class:`RankingRule` carries how its score is shown (table column, plot label, percent or not, whether it has
a std). The benchmark's result sets the default rule (:data:`DEFAULT_RULE`, read by ``Recipe.ranker``).
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULT_RULE", "RANKING_RULES", "RankingRule", "RuleScore", "rank_scores", "register_rule",
           "score_run", "tse_ema"]

# Set by the selection benchmark v2 (bench/results/selection/results.json, "default_choice"): the highest
# development-task mean Spearman rho on ncap's own short run among the rules ncap rank can compute
# (val_acc 0.70, beta_eff at its best settings 0.61, tse_ema 0.55).
DEFAULT_RULE = "val_acc"
_NAME = re.compile(r"[a-z][a-z0-9_]*")  # one spelling: lower case and underscores (val_acc, never val-acc)


@dataclass(frozen=True)
class RuleScore:
    """A candidate's score under one rule: ``score`` (NaN = cannot be scored, ranks last), ``std`` (NaN = the
    rule has none), ``method`` (how it was computed) and ``flags`` (what was dropped or fell back)."""

    score: float
    std: float = math.nan
    method: str = ""
    flags: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RankingRule:
    """One ranking rule: how it scores an observed run, and how that score is shown.

    Parameters
    ----------
    name : str
        The rule's one name (lower case and underscores): ``Recipe.ranker``, ``--ranker``, the job config and
        the benchmark's ranker.
    score : callable
        ``score(beta, denominators, accuracy, losses, n_val, t0) -> RuleScore`` on one run's per-observation
        float arrays of equal length T ≥ 1 (``denominators`` may be empty; ``n_val`` may be None).
    description : str
        One line for help texts (the CLI's ``--ranker``, the job config's schema).
    label : str
        What the score is, for a plot axis ("last validation accuracy").
    column : str or None
        Header of the ranking table's column for the score (after "ranked by: "); None where the table
        already shows it (β_eff's prediction has its own column whatever the rule).
    percent : bool
        The score is an accuracy fraction, shown in %; else shown as it is.
    has_std : bool
        The rule gives a standard deviation (shown as ±; P(best) is computed from it).
    settings : tuple of str
        The recipe fields the score depends on besides the run (``beta_eff``: the β_eff ``variant`` it reads
        and ``t0``); the benchmark scores a rule that reads β_eff at each variant, t0 and smoothing.
    """

    name: str
    score: Callable[..., RuleScore]
    description: str
    label: str
    column: str | None
    percent: bool = True
    has_std: bool = True
    settings: tuple[str, ...] = ()


RANKING_RULES: dict[str, RankingRule] = {}


def register_rule(rule: RankingRule) -> RankingRule:
    """Add ``rule`` to :data:`RANKING_RULES` (and so to every place that offers or scores rules); returns it.
    ``ValueError`` for a name that is taken or not spelled in lower case and underscores."""
    if not _NAME.fullmatch(rule.name):
        raise ValueError(f"a ranking rule's name is lower case and underscores; got {rule.name!r}")
    if rule.name in RANKING_RULES:
        raise ValueError(f"ranking rule {rule.name!r} is already registered")
    RANKING_RULES[rule.name] = rule
    return rule


def _epoch_means(train_losses, steps_per_epoch) -> np.ndarray:
    if isinstance(train_losses, np.ndarray) and train_losses.ndim == 1:
        nested = False
    else:
        try:
            items = list(train_losses)
        except TypeError:
            raise ValueError("train_losses must be a sequence of losses.") from None
        if not items:
            raise ValueError("train_losses is empty.")
        nested = all(np.ndim(item) == 1 for item in items)
        if not nested and any(np.ndim(item) != 0 for item in items):
            raise ValueError(
                "train_losses must be a flat sequence of per-epoch (or per-step) losses, or a "
                "sequence of per-epoch sequences of per-step losses."
            )
    if nested:
        if steps_per_epoch is not None:
            raise ValueError("steps_per_epoch is only meaningful for a flat sequence of per-step losses.")
        epochs = [np.asarray(item, dtype=np.float64) for item in items]
        if any(e.size == 0 for e in epochs):
            raise ValueError("train_losses contains an epoch without any step loss.")
        return np.array([e.mean() for e in epochs])
    flat = np.asarray(train_losses, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError("train_losses is empty.")
    if steps_per_epoch is None:
        return flat
    if (
        isinstance(steps_per_epoch, bool)
        or not isinstance(steps_per_epoch, numbers.Integral)
        or steps_per_epoch < 1
    ):
        raise ValueError(f"steps_per_epoch must be a positive integer; got {steps_per_epoch!r}.")
    if flat.size % steps_per_epoch:
        raise ValueError(
            f"{flat.size} step losses is not a whole number of epochs of {steps_per_epoch} steps."
        )
    return flat.reshape(-1, steps_per_epoch).mean(axis=1)


def tse_ema(train_losses, gamma: float = 0.9, *, steps_per_epoch: int | None = None) -> float:
    """Training speed estimation with exponential weighting (TSE-EMA), negated.

    Ru, Lyle, Schut, Fil, van der Wilk & Gal, "Speedy Performance Estimation for
    Neural Architecture Search", NeurIPS 2021. With ``T`` epochs observed and
    ``L_t`` the mean of the training losses of the ``B_t`` minibatch steps of
    epoch ``t`` (the loss of each step as logged during training, not re-evaluated)::

        TSE-EMA = sum_{t=1}^{T} gamma^(T - t) * L_t,   L_t = (1/B_t) sum_i loss_{t,i}

    Later epochs weigh more; ``gamma = 1`` is the plain TSE (sum of epoch losses).
    A model that trains faster has a smaller TSE, so this returns ``-TSE-EMA``
    (higher = better). Only compare candidates observed for the same ``T``.

    Parameters
    ----------
    train_losses : sequence
        Either per-epoch losses, shape (T,); or per-step losses grouped by epoch,
        a sequence of T sequences (may be ragged); or flat per-step losses of
        shape (T * steps_per_epoch,) together with ``steps_per_epoch``.
    gamma : float in (0, 1], default=0.9
        Decay of the weight of earlier epochs.
    steps_per_epoch : int, optional
        Number of steps per epoch for a flat per-step sequence.

    Returns
    -------
    float
        ``-TSE-EMA``. A NaN loss (diverged training) gives NaN, which
        :mod:`bench.evaluation` ranks last; an infinite loss gives ``-inf``.
    """
    if not (isinstance(gamma, numbers.Real) and 0.0 < gamma <= 1.0):
        raise ValueError(f"gamma must be in (0, 1]; got {gamma!r}.")
    losses = _epoch_means(train_losses, steps_per_epoch)
    weights = float(gamma) ** np.arange(losses.size - 1, -1, -1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return -float(np.sum(weights * losses))


def _beta_eff_rule(beta, denominators, accuracy, losses, n_val, t0) -> RuleScore:
    from ncap.capacitance.predictor import predict_final_accuracy

    p = predict_final_accuracy(beta, accuracy, t0=t0, denominators=denominators if len(denominators) else None)
    return RuleScore(p.accuracy, p.std, p.method, tuple(p.flags))


def _val_acc_rule(beta, denominators, accuracy, losses, n_val, t0) -> RuleScore:
    a = float(accuracy[-1])
    std = math.sqrt(a * (1.0 - a) / n_val) if n_val and math.isfinite(a) else math.nan
    return RuleScore(a, std, "last_accuracy")


def _tse_ema_rule(beta, denominators, accuracy, losses, n_val, t0) -> RuleScore:
    return RuleScore(tse_ema(losses) if len(losses) else math.nan, math.nan, "tse_ema")


register_rule(RankingRule(
    "beta_eff", _beta_eff_rule, "accuracy predicted at β_eff = 0 (Algorithm 1)", "predicted final accuracy", None,
    settings=("variant", "t0")))
register_rule(RankingRule("val_acc", _val_acc_rule, "last validation accuracy", "last validation accuracy",
                          "last acc"))
register_rule(RankingRule("tse_ema", _tse_ema_rule, "training speed, -TSE-EMA (Ru et al. 2021)",
                          "-TSE-EMA (training speed)", "-TSE-EMA", percent=False, has_std=False))


def score_run(rule: str, *, beta_eff: Sequence[float], val_accuracy: Sequence[float], train_loss: Sequence[float],
              beta_denominator: Sequence[float] = (), n_val: int | None = None, t0: int = 1) -> RuleScore:
    """Score one observed run (per-observation series of equal length T) under ``rule`` (a name in
    :data:`RANKING_RULES`). An empty run scores NaN; ``beta_eff`` raises ``ValueError`` as the predictor does
    for malformed input."""
    if rule not in RANKING_RULES:
        raise ValueError(f"unknown ranking rule {rule!r}; choose from {', '.join(RANKING_RULES)}")
    acc = np.asarray(val_accuracy, dtype=float)
    if acc.size == 0:
        return RuleScore(math.nan, math.nan, "none", ("no observations",))
    return RANKING_RULES[rule].score(np.asarray(beta_eff, dtype=float), np.asarray(beta_denominator, dtype=float),
                                     acc, np.asarray(train_loss, dtype=float), n_val, t0)


def rank_scores(scores: Sequence[float], stds: Sequence[float], *, seed: int = 0,
                n_samples: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, P(best)) of candidates scored ``scores`` ± ``stds``, shape (n,) each: the one ranking of
    ``ncap rank``, the service and its ``/predict``.

    Ranks are 1-based, best (highest score) first, non-finite scores last, ties in input order
    (:func:`~ncap.capacitance.predictor.rank_order`). P(best) is Monte Carlo over N(score, std²)
    (:func:`~ncap.capacitance.predictor.p_best`, ``n_samples`` draws; an unscored candidate gets 0) when every
    finite score has a finite std, else NaN for every candidate (a rule without a std, such as ``tse_ema``).
    """
    from ncap.capacitance.predictor import p_best, rank_order

    means, sds = np.asarray(scores, dtype=float), np.asarray(stds, dtype=float)
    ok = np.isfinite(means)
    has_std = bool(ok.any()) and bool(np.isfinite(sds[ok]).all())
    probs = p_best(means, sds, n_samples=n_samples, seed=seed) if has_std else np.full(len(means), np.nan)
    return rank_order(means), probs

"""CapacitancePruner in a real Optuna study: a small MLP on digits (docs/examples/training_loop.py, β_eff
measured by ncap.BetaEffTracker), plus Optuna's startup / warm-up / interval conventions on synthetic
reports. The rule is re-derived independently: Algorithm 1 + a Monte Carlo of the Gaussian."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from ncap.capacitance.predictor import predict_final_accuracy
from ncap.integrations.optuna import (
    BETA_ATTR,
    CapacitancePruner,
    report_beta,
    report_tracker,
    trial_observations,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
THRESHOLD, WARMUP, EPOCHS = 0.05, 3, 12


@pytest.fixture(scope="module")
def train_probe():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from training_loop import train_probe
        yield train_probe
    finally:
        sys.path.remove(str(EXAMPLES))


def monte_carlo_p_better(trial, incumbent, k, n=200_000):
    """P(trial's final > incumbent's) from the first k observations of each, by sampling Algorithm 1's two
    Gaussians; NaN where the predictor falls back (no verdict)."""
    preds = []
    for t in (trial, incumbent):
        _, acc, beta, den = trial_observations(t)
        preds.append(predict_final_accuracy(beta[:k], acc[:k], t0=1, denominators=den[:k]))
    if any(p.method != "beta_extrapolation" for p in preds):
        return float("nan")
    rng = np.random.default_rng(0)
    mine, theirs = (rng.normal(p.accuracy, max(p.std, 0.01), n) for p in preds)
    return float(np.mean(mine > theirs))


def test_a_real_study_prunes_by_the_rule_and_keeps_a_better_trial(train_probe):
    """lr 1e-3 runs first (the incumbent, slow learner), 1e-2 should beat it and must be kept, 1e-4 and
    3e-4 stay near chance and must be pruned early: at the first step after the warm-up where Algorithm 1
    makes a prediction (before it, the predictor falls back: constant accuracy)."""
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)

        def report(epoch, tracker):
            report_tracker(trial, tracker, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return train_probe(lr, epochs=EPOCHS, report=report).val_accuracy[-1]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=CapacitancePruner(THRESHOLD, n_warmup_steps=WARMUP))
    for lr in (1e-3, 1e-2, 1e-4, 3e-4):
        study.enqueue_trial({"lr": lr})
    study.optimize(objective, n_trials=4)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"], states
    incumbent, kept = study.trials[0], study.trials[1]
    assert kept.value > incumbent.value and study.best_trial.number == kept.number
    # the kept trial: at every pruning step P(better than the incumbent) stayed >= threshold
    steps, _, beta, _ = trial_observations(kept)
    assert list(steps) == list(range(EPOCHS)) and np.isfinite(beta).all()
    for k in range(WARMUP + 1, EPOCHS + 1):
        assert not monte_carlo_p_better(kept, incumbent, k) < THRESHOLD - 0.01
    # the pruned trials (incumbent: the kept trial): stopped at the first allowed step where P(better) < threshold
    for t in study.trials[2:]:
        steps = trial_observations(t)[0]
        assert WARMUP <= steps[-1] <= EPOCHS // 2
        verdicts = [monte_carlo_p_better(t, kept, k) for k in range(WARMUP + 1, len(steps) + 1)]
        assert verdicts[-1] < THRESHOLD and not any(p < THRESHOLD for p in verdicts[:-1]), verdicts


def synthetic_trial(study, final=0.3, n_steps=8, pruner_steps=None):
    """Ask a trial and report a β→0 trajectory heading to ``final``; returns the steps where it asked to prune."""
    trial = study.ask()
    beta = 0.5 * 0.7 ** np.arange(n_steps)
    acc = final - 0.8 * beta + np.random.default_rng(1).normal(0, 0.003, n_steps)
    asked = []
    for step, (b, a) in enumerate(zip(beta, acc)):
        trial.report(float(a), step)
        report_beta(trial, step, float(b), numerator=float(b) * 2.0, denominator=2.0)
        if trial.should_prune():
            asked.append(step)
    study.tell(trial, float(acc[-1]))
    return trial, asked


@pytest.mark.parametrize("startup,warmup,interval,expected", [
    (1, 0, 1, [2, 3, 4, 5, 6, 7]),  # min_points=3 observations: the first prediction is at step 2
    (1, 4, 1, [4, 5, 6, 7]),
    (1, 3, 2, [3, 5, 7]),
    (3, 0, 1, []),  # only one complete trial so far
])
def test_optuna_conventions_startup_warmup_interval(startup, warmup, interval, expected):
    study = optuna.create_study(direction="maximize", pruner=CapacitancePruner(
        n_startup_trials=startup, n_warmup_steps=warmup, interval_steps=interval))
    assert synthetic_trial(study, final=0.9)[1] == []  # the incumbent: nothing to beat yet
    _, asked = synthetic_trial(study)
    assert asked == expected


def test_no_incumbent_no_pruning_and_user_attr_format():
    study = optuna.create_study(direction="maximize", pruner=CapacitancePruner())
    _, asked = synthetic_trial(study)
    assert asked == []  # nothing completed yet: nothing to beat
    study.add_trial(optuna.trial.create_trial(value=0.99, state=optuna.trial.TrialState.COMPLETE))
    assert synthetic_trial(study)[1] == []  # an incumbent without beta_eff reports: no prediction, no pruning
    rows = study.trials[0].user_attrs[BETA_ATTR]
    assert rows[0] == [0, 0.5, 1.0, 2.0] and len(rows) == 8
    t = study.ask()
    report_beta(t, 0, float("nan"))
    report_beta(t, 0, 0.25)  # a step reported twice keeps the last value
    assert t.user_attrs[BETA_ATTR] == [[0, 0.25, None, None]]
    with pytest.raises(ValueError, match="step"):
        report_beta(t, -1, 0.1)


def test_a_better_trajectory_survives_and_minimize_flips():
    study = optuna.create_study(direction="maximize", pruner=CapacitancePruner())
    synthetic_trial(study, final=0.5)
    assert synthetic_trial(study, final=0.8)[1] == []
    study = optuna.create_study(direction="minimize", pruner=CapacitancePruner())
    synthetic_trial(study, final=0.1)
    assert synthetic_trial(study, final=0.3)[1][0] == 2  # an error rate heading to 0.3 cannot beat 0.1


def test_importing_ncap_imports_neither_optuna_nor_ray():
    code = ("import sys, ncap, ncap.integrations, ncap.integrations.rule; "
            "print(sorted(m for m in ('optuna', 'ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

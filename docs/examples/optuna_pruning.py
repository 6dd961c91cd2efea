"""Optuna: prune learning rates whose predicted final accuracy is unlikely to beat the best trial.

Run next to training_loop.py (it imports ``train_probe`` from there): ``python optuna_pruning.py``.
"""
import optuna
from training_loop import train_probe

from ncap.integrations.optuna import CapacitancePruner, report_tracker


def objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)

    def report(epoch, tracker):
        report_tracker(trial, tracker, step=epoch)  # trial.report(accuracy, epoch) + beta_eff as a user attr
        if trial.should_prune():
            raise optuna.TrialPruned()

    return train_probe(lr, epochs=12, report=report).val_accuracy[-1]


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = CapacitancePruner(threshold=0.05, n_startup_trials=1, n_warmup_steps=3)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0), pruner=pruner)
    study.optimize(objective, n_trials=10)
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    print(f"best lr {study.best_params['lr']:.2e}: val accuracy {study.best_value:.3f}; "
          f"{len(pruned)} of {len(study.trials)} trials pruned, {epochs} of {12 * len(study.trials)} epochs trained")

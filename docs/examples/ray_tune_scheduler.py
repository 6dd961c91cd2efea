"""Ray Tune: stop learning rates whose predicted final accuracy is unlikely to beat the best finished trial.

Run next to training_loop.py (it imports ``train_probe`` from there): ``python ray_tune_scheduler.py``.
Ray runs locally on 127.0.0.1, one trial at a time.
"""
import ray
from ray import tune
from training_loop import train_probe

from ncap.integrations.ray_tune import CapacitanceScheduler, tracker_metrics


def trainable(config):
    train_probe(config["lr"], epochs=config["epochs"],
                report=lambda epoch, tracker: tune.report(tracker_metrics(tracker)))  # accuracy, beta_eff, ...


def tune_learning_rate(lrs, epochs=12, storage_path=None):
    """Grid over ``lrs``; returns (the ResultGrid, the scheduler, which records its verdicts)."""
    scheduler = CapacitanceScheduler(threshold=0.05, grace_period=4)  # grace_period: training iterations
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search(list(lrs)), "epochs": epochs},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=storage_path, verbose=0),
    )
    return tuner.fit(), scheduler


if __name__ == "__main__":
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    results, scheduler = tune_learning_rate([1e-2, 1e-4, 3e-4])
    best = results.get_best_result()
    print(f"best lr {best.config['lr']:.0e}: val accuracy {best.metrics['accuracy']:.3f}; "
          f"{len(scheduler.stopped)} of {len(results)} trials stopped early")
    ray.shutdown()

"""AutoML benchmark: does CapacitancePruner find the best (candidate, learning rate) at a fraction of the compute?

    python -m ncap.bench.automl                       # 5 zoo candidates x 6 lrs on digits-noisy, 3 seeds
    python -m ncap.bench.automl --seeds 0 1 2 3 4 --epochs 30

Search space: the demo zoo's candidates (frozen, pretrained by ncap on MNIST-5k) x learning rates; each
configuration trains the recipe's capacitance probe (widths 128-64-32) on the candidate's frozen pooled
features of a selection-benchmark task for ``--epochs`` epochs with ncap's one training loop
(``ncap.models.training.train``: AdamW, the recipe's schedule) and an ``ncap.BetaEffTracker`` observing the
validation accuracy and β_eff ("support") once per epoch.

The task's split is fixed (``ncap.bench.tasks``); seeds vary the probe's initialisation and batch order and\nthe order in which the study tries the configurations. Every configuration is trained once per seed, to the end, and cached (``$NCAP_CACHE/bench/automl/``: a rerun
resumes). Each pruner then runs a real Optuna study over the same configurations in the same seeded order;
the objective replays the cached epochs (``trial.report`` + β_eff), so a pruner sees exactly what a live
run would show it and the compute it spends is the number of epochs it let run. Regret = best final
validation accuracy of any configuration − final validation accuracy of the configuration the study returns.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from ncap.bench.tasks import get_task
from ncap.capacitance.probe import NeuralCapacitanceProbe
from ncap.capacitance.tracker import BetaEffTracker
from ncap.integrations.optuna import CapacitancePruner, report_beta
from ncap.models import training, zoo
from ncap.models.data import prepare_batch
from ncap.models.paths import cache_root as ncap_cache_root
from ncap.models.recipe import Recipe

RESULTS = Path(__file__).parent / "results" / "automl"
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
VARIANT = "support"


def pruners(epochs: int) -> dict[str, optuna.pruners.BasePruner]:
    """The compared pruners, each at its defaults (Hyperband given the budget)."""
    return {
        "none": optuna.pruners.NopPruner(),
        "median": optuna.pruners.MedianPruner(),
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner(),
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
        "capacitance": CapacitancePruner(),
    }


@torch.no_grad()
def frozen_features(name: str, task: str) -> dict[str, np.ndarray]:
    """Pooled features of the task's fixed split under candidate ``name`` (eval mode), cached:
    ``x_train`` (n_train, D), ``y_train`` (n_train,), ``x_val`` (n_val, D), ``y_val`` (n_val,)."""
    path = ncap_cache_root() / "bench" / "automl" / "features" / task / f"{name}.npz"
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    from ncap.models.candidates import create_backbone
    from ncap.models.registry import resolve_candidates

    backbone, _, cfg = create_backbone(resolve_candidates([name], progress=False)[0])
    backbone.eval()
    c, h, w = cfg["input_size"]
    if Recipe().image_size:  # the size `ncap rank` would show the candidate
        h = w = Recipe().image_size
    out = {}
    for part, ds in zip(("train", "val"), get_task(task).split()):
        x = prepare_batch(ds.x, input_size=(c, h, w), mean=cfg["mean"], std=cfg["std"])
        out[f"x_{part}"] = torch.cat([backbone(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy().astype(np.float32)
        out[f"y_{part}"] = np.asarray(ds.y, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def train_probe(data: dict[str, np.ndarray], lr: float, epochs: int, seed: int) -> dict:
    """One configuration to the end on :func:`frozen_features` ``data``: per-epoch validation accuracy, β_eff
    and its denominator, seconds (training, and measuring β_eff)."""
    recipe = Recipe(epochs=epochs, lr=lr, seed=seed, variant=VARIANT)
    # frozen pooled features come on arbitrary scales (ResNet-18: mean |x| ≈ 12, where the probe learns nothing
    # at these learning rates): standardise with the training statistics, as for any probe on frozen features
    scaler = StandardScaler().fit(data["x_train"])
    x, y = torch.as_tensor(scaler.transform(data["x_train"]), dtype=torch.float32), torch.as_tensor(data["y_train"])
    n_classes = int(max(data["y_train"].max(), data["y_val"].max())) + 1
    training.seed_everything(seed)
    probe = NeuralCapacitanceProbe(x.shape[1], n_classes, recipe.probe_hidden)
    tracker = BetaEffTracker(probe, variant=VARIANT, batch_size=recipe.beta_batch_size, t0=recipe.t0)
    loader = DataLoader(TensorDataset(x, y), batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    val = [(torch.as_tensor(scaler.transform(data["x_val"]), dtype=torch.float32), torch.as_tensor(data["y_val"]))]
    seen = {}
    hook = probe.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0]))

    def on_step(info: training.StepInfo) -> None:
        tracker.collect(seen["x"], info.labels)
        if info.step % len(loader) == 0:
            tracker.observe(info.epoch, training.evaluate_accuracy(probe, val))

    t0 = time.perf_counter()
    try:
        training.train(probe, loader, training.TrainSettings.from_recipe(recipe), on_step=on_step)
    except training.DivergedError:  # a diverged run scores chance from then on: Optuna sees it fail
        while len(tracker) < epochs:
            tracker.observe(len(tracker) + 1, 1.0 / n_classes)
    finally:
        hook.remove()
    return {"val_accuracy": tracker.val_accuracy, "beta_eff": tracker.beta_eff[VARIANT],
            "denominator": tracker.denominator[VARIANT], "seconds": time.perf_counter() - t0,
            "beta_seconds": tracker.seconds}


def trajectories(candidates, lrs, task: str, epochs: int, seed: int, progress: bool = True) -> dict[str, dict]:
    """``{"<candidate>@lr=<lr>": run}`` for the whole grid at one seed, each run cached on disk."""
    out = {}
    for name in candidates:
        data = frozen_features(name, task)
        for lr in lrs:
            key = f"{name}@lr={lr:g}"
            blob = json.dumps([task, name, lr, epochs, seed, Recipe().run_dict(), "v2"], sort_keys=True)
            path = ncap_cache_root() / "bench" / "automl" / "runs" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(train_probe(data, lr, epochs, seed)))
                if progress:
                    print(f"  seed {seed}: trained {key}", file=sys.stderr)
            out[key] = json.loads(path.read_text())
    return out


def search(runs: dict[str, dict], pruner: optuna.pruners.BasePruner, seed: int) -> dict:
    """One Optuna study over every configuration (seeded order), replaying the cached epochs."""
    spent = {"epochs": 0}

    def objective(trial: optuna.Trial) -> float:
        run = runs[trial.suggest_categorical("config", list(runs))]
        for step, (acc, beta, den) in enumerate(zip(run["val_accuracy"], run["beta_eff"], run["denominator"])):
            spent["epochs"] += 1
            trial.report(acc, step)
            report_beta(trial, step, beta, denominator=den)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return run["val_accuracy"][-1]

    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed),
                                study_name=f"automl-seed{seed}")  # Hyperband's brackets hash the study name
    for i in np.random.default_rng(seed).permutation(len(runs)):
        study.enqueue_trial({"config": list(runs)[i]})
    study.optimize(objective, n_trials=len(runs))
    finals = {k: r["val_accuracy"][-1] for k, r in runs.items()}
    chosen = study.best_params["config"]
    return {"epochs": spent["epochs"], "chosen": chosen, "chosen_accuracy": finals[chosen],
            "regret": max(finals.values()) - finals[chosen], "best": max(finals, key=finals.get),
            "n_pruned": len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,)))}


def summarize(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per pruner over seeds: compute as a share of no pruning, regret, how often it found the true best."""
    out = {}
    for name in next(iter(per_seed.values())):
        rows = [per_seed[s][name] for s in per_seed]
        share = [r["epochs"] / per_seed[s]["none"]["epochs"] for s, r in zip(per_seed, rows)]
        out[name] = {"epochs_mean": float(np.mean([r["epochs"] for r in rows])), "compute_share_mean": float(np.mean(share)),
                     "compute_share_max": float(np.max(share)), "regret_mean": float(np.mean([r["regret"] for r in rows])),
                     "regret_max": float(np.max([r["regret"] for r in rows])),
                     "found_best": int(sum(r["chosen"] == per_seed[s]["none"]["chosen"] for s, r in zip(per_seed, rows))),
                     "n_seeds": len(rows), "pruned_mean": float(np.mean([r["n_pruned"] for r in rows]))}
    return out


def write_results(summary: dict, per_seed: dict, args: argparse.Namespace, out: Path, seconds: float,
                  beta_share: float) -> None:
    """results.json (every number) and results.md (the table, the verdict against the target)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(["python -m ncap.bench.automl", *sys.argv[1:]]), "task": args.task,
           "candidates": args.candidates, "lrs": args.lrs, "epochs": args.epochs, "seeds": args.seeds,
           "summary": summary, "per_seed": {str(s): v for s, v in per_seed.items()}, "wall_time_s": seconds,
           "beta_seconds_share": beta_share,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, optuna {optuna.__version__}"}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    n_configs = len(args.candidates) * len(args.lrs)
    lines = [(f"# AutoML benchmark: pruners on {n_configs} configurations ({len(args.candidates)} candidates x "
             f"{len(args.lrs)} learning rates), {args.task}, {args.epochs} epochs each, seeds {args.seeds}"), "",
             f"Command: `{doc['command']}` ({seconds:.0f} s on {doc['machine']}).", "",
             "| pruner | epochs (mean) | compute vs no pruning (mean / worst) | trials pruned | regret (mean / worst, acc. points) | found the best config |",
             "|---|---|---|---|---|---|"]
    for name, r in summary.items():
        lines.append(f"| {name} | {r['epochs_mean']:.0f} | {100 * r['compute_share_mean']:.0f} % / "
                     f"{100 * r['compute_share_max']:.0f} % | {r['pruned_mean']:.1f} | {100 * r['regret_mean']:.2f} / "
                     f"{100 * r['regret_max']:.2f} | {r['found_best']} of {r['n_seeds']} |")
    lines += ["", *verdict(summary), "",
              (f"Compute is counted in epochs. Measuring β_eff (which only CapacitancePruner needs) took "
              f"{100 * beta_share:.0f} % of the configurations' training time here, where the probe trains on "
              "precomputed features and an epoch is tiny; next to a backbone's forward passes it is a few per cent "
              "(bench/results/tracking_overhead.md)."), "", "Per seed (configuration chosen, its final accuracy, epochs spent):", ""]
    for s, rows in per_seed.items():
        lines.append(f"- seed {s}: " + "; ".join(f"{k} {r['chosen']} {r['chosen_accuracy']:.3f} ({r['epochs']} ep)"
                                                  for k, r in rows.items()))
    (out / "results.md").write_text("\n".join(lines) + "\n")


def verdict(summary: dict) -> list[str]:
    """The target, checked: same best configuration as no pruning, <= 30 % of its compute, less compute than
    the best built-in pruner that also finds the best configuration on every seed."""
    cap, n = summary["capacitance"], summary["capacitance"]["n_seeds"]
    builtins = {k: v for k, v in summary.items() if k not in ("none", "capacitance")}
    exact = {k: v for k, v in builtins.items() if v["found_best"] == n} or builtins
    best_builtin = min(exact, key=lambda k: exact[k]["compute_share_mean"])
    checks = [(cap["found_best"] == n, f"same best configuration as no pruning on {cap['found_best']} of {n} seeds"),
              (cap["compute_share_max"] <= 0.30, (f"compute {100 * cap['compute_share_mean']:.0f} % of no pruning, mean over seeds "
                                                   f"(worst seed {100 * cap['compute_share_max']:.0f} %; target <= 30 %)")),
              (cap["compute_share_mean"] < exact[best_builtin]["compute_share_mean"],
               (f"less compute than the cheapest built-in that finds the best on every seed ({best_builtin}: "
               f"{100 * exact[best_builtin]['compute_share_mean']:.0f} %)"))]
    return [f"- {'met' if ok else 'NOT met'}: {text}" for ok, text in checks]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.bench.automl", description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="digits-noisy", help="a selection-benchmark task (ncap.bench.tasks)")
    ap.add_argument("--candidates", nargs="+", default=list(zoo.DEMO_CANDIDATES))
    ap.add_argument("--lrs", nargs="+", type=float, default=list(LRS))
    ap.add_argument("--epochs", type=int, default=20, help="full budget per configuration")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # small probes: one thread is fastest and leaves the other core free
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    per_seed, seconds = {}, np.zeros(2)
    for seed in args.seeds:
        runs = trajectories(args.candidates, args.lrs, args.task, args.epochs, seed)
        seconds += [sum(r["beta_seconds"] for r in runs.values()), sum(r["seconds"] for r in runs.values())]
        per_seed[seed] = {name: search(runs, pruner, seed) for name, pruner in pruners(args.epochs).items()}
    summary = summarize(per_seed)
    write_results(summary, per_seed, args, args.out, time.perf_counter() - t0, float(seconds[0] / seconds[1]))
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

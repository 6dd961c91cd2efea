"""The selection benchmark's evaluation and report on synthetic runs: every number is computed, the default is
chosen among what `ncap rank` can compute, and the report renders (no training: seconds)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from ncap.bench import report
from ncap.bench.__main__ import evaluate
from ncap.bench.design import Design


def fake_run(quality: float, rng, epochs: list[float]) -> dict:
    """A run whose accuracy rises towards ``quality`` with noise and whose loss and β_eff fall with it."""
    e = np.asarray(epochs)
    acc = np.clip(quality * (1 - np.exp(-e)) + rng.normal(0, 0.01, len(e)), 0, 1)
    beta = {v: list(3.0 * np.exp(-e * quality) + rng.normal(0, 0.05, len(e))) for v in ("support", "default")}
    return {"status": "ok", "epoch": list(e), "val_accuracy": list(acc), "train_loss": list(2.5 * (1 - acc) + 0.1),
            "beta_eff": beta, "beta_denominator": {v: [1.0] * len(e) for v in beta}, "wall_time_s": 1.0,
            "beta_time_s": 0.1}


@pytest.fixture(scope="module")
def results():
    design = Design("test", ("a", "b", "c", "d", "e"), ("digits", "animal-mnist", "animal-mnist-inverted"),
                    full_epochs=4, truth_seeds=(0, 1, 2), budget_fractions=(0.25, 0.5), primary_fraction=0.25)
    rng = np.random.default_rng(0)
    data = {}
    for k, task in enumerate(design.tasks):
        quality = np.linspace(0.5, 0.95, 5)[rng.permutation(5)]
        truth = [[fake_run(q, rng, design.observation_epochs(i == 0)) for q in quality] for i in range(3)]
        short = [fake_run(q, rng, [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]) for q in quality]
        static = [{"logme": float(q + rng.normal(0, 0.1)), "h-score": float(q), "source-accuracy": None} for q in quality]
        data[task] = {"truth": truth, "short": short, "static": static}
    args = argparse.Namespace(partial=False, n_boot=50)
    return evaluate(design, data, args)


def test_every_required_field_and_a_ceiling_per_task(results):
    for key in ("candidates", "tasks", "held_out", "noise_ceiling", "default_ranker", "held_out_summary", "dev_summary"):
        assert key in results, key
    assert results["held_out"] == ["animal-mnist-inverted"] and set(results["noise_ceiling"]) == set(results["tasks"])
    row = results["held_out_summary"][results["default_ranker"]]
    assert {"rho", "rho_ci", "tau_w", "regret"} <= set(row) and len(row["rho_ci"]) == 2


def test_default_is_the_best_product_ranker_on_the_development_short_runs(results):
    from ncap.bench.rankers import product_settings

    choice = results["default_choice"]
    assert choice["signal"] == "short" and product_settings(results["default_ranker"]) == choice["ncap_rank_settings"]
    means = choice["dev_mean_rho"]
    assert all(product_settings(r) is not None for r in means)
    assert means[results["default_ranker"]] == max(means.values())


def test_report_renders_with_the_choice(results, tmp_path):
    md = report.markdown({**results, "command": "python -m ncap.bench", "machine": "test", "bench_wall_time_s": 1.0})
    assert "Default ranker of `ncap rank`" in md and results["default_ranker"] in md
    report.plots(results, tmp_path)
    assert any(tmp_path.glob("*.png"))


def test_headline_table_puts_held_out_first_and_shows_every_ranker(results):
    lines = report.headline_lines(results)
    header = lines[0]
    assert header.index("held out: ρ") < header.index("dev: ρ")
    rows = lines[2:]
    assert len(rows) == len(report.shown_rankers(results["table"], results["default_ranker"]))
    default_row = next(r for r in rows if "(default)" in r)
    rho = results["summaries"]["held_out"][results["primary_signal"]][results["default_ranker"]]["rho"]
    assert f"{rho:.2f}" in default_row.split("|")[2]
    md = report.markdown({**results, "command": "python -m ncap.bench", "machine": "test", "bench_wall_time_s": 1.0})
    assert md.index("## Summary: held-out tasks, then development tasks") < md.index("## Held-out tasks,")


def test_a_task_resolution_changes_only_that_tasks_recipes():
    from ncap.bench.design import full_design

    d = full_design()
    elpv, digits = d.for_task("elpv-mono"), d.for_task("digits")
    assert elpv.base_recipe().image_size == 64 and digits.base_recipe().image_size == d.resolution == 32
    assert digits.short_recipe.key() == d.short_recipe.key()
    assert elpv.short_recipe.key() != d.short_recipe.key()
    assert [r.key() for r in digits.truth_recipes] == [r.key() for r in d.truth_recipes]
    assert d.describe()["task_resolution_px"]["elpv-poly"] == 64


def test_task_resolution_option_parses_overrides_and_refuses_bad_values():
    import argparse as ap_mod

    from ncap.bench.design import full_design
    from ncap.bench.options import add_arguments, command

    ap = ap_mod.ArgumentParser()
    add_arguments(ap)
    args = ap.parse_args(["--task-resolution", "elpv-mono=96"])
    assert args.task_resolution == [("elpv-mono", 96)] and "--task-resolution elpv-mono=96" in command(args)
    d = full_design().with_task_resolution(dict(args.task_resolution))
    assert d.for_task("elpv-mono").resolution == 96 and d.for_task("elpv-poly").resolution == 64
    for bad in ("elpv-mono", "elpv-mono=x", "=96", "elpv-mono=4"):
        with pytest.raises(SystemExit):
            ap.parse_args(["--task-resolution", bad])
    with pytest.raises(SystemExit, match="not in the full design"):
        full_design().with_task_resolution({"nope": 96})

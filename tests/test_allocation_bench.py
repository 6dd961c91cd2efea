"""The allocation benchmark (bench/allocation.py): replayed compute, picks, Optuna's pruning, the command."""

import json

import numpy as np
import pytest

from ncap.bench import allocation as bench
from ncap.bench.allocation import Pool, ReplaySession, Setting

QUARTERS = [0.25, 0.5, 0.75, 1.0]


def _record(acc, epochs=QUARTERS, recorded=None, **extra) -> dict:
    """A run record as benchmark v3 writes one (the fields the replay reads)."""
    return {
        "epoch": list(recorded or epochs),
        "val_accuracy": list(acc),
        "train_loss": [1.0] * len(acc),
        "beta_eff": {},
        "beta_denominator": {},
        "status": "ok",
        "recipe": {"variant": "support", "t0": 1, "observe_at_epochs": list(epochs)},
        **extra,
    }


def _pool(accs, truth, epochs=QUARTERS, task="synthetic", role="dev") -> Pool:
    """Candidates c0.. whose run costs 1 + (epoch) FLOPs units up to each observation."""
    runs = [_record(a, epochs) for a in accs]
    flops = [1.0 + np.asarray(epochs, float) for _ in runs]
    return Pool(
        task, role, tuple(f"c{i}" for i in range(len(runs))), runs, flops, np.asarray(truth, float), 1000
    )


def test_a_replayed_session_charges_run_flops_as_computed_by_hand(monkeypatch):
    from ncap.bench import run_flops

    monkeypatch.setattr(
        run_flops, "forward_flops", lambda entry, trainable, size: (1000, 10)
    )  # trunk, trained
    recorded = [2 / 7, 4 / 7, 5 / 7, 1.0]  # 7 steps per epoch: the observations land on whole steps
    run = _record(
        [0.3, 0.4, 0.5, 0.6],
        QUARTERS,
        recorded,
        task="elpv-poly",
        entry="x",
        trainable="top",
        input_size=[3, 8, 8],
        feature_dim=0,
    )
    run["recipe"].update(probe_width=4, probe_depth=1, cached_views=2, augmentation="light")
    s = ReplaySession("x", run, bench.cumulative_flops(run))
    assert s.flops == 0 and s.epoch == 0
    s.advance(0.3)  # a rung at 0.3 epochs: trains to the next observation, nominal 0.5 (4 steps)
    n_train, n_val = 500, 1050  # elpv-poly
    by_hand = (2 * n_train + n_val) * 1000 + 3 * 10 * n_train * (4 / 7) + 2 * n_val * 10
    assert s.epoch == 0.5 and s.seen(0.3) == 2 and s.flops == pytest.approx(by_hand)
    s.advance(0.25)  # never backwards
    assert s.epoch == 0.5
    s.halt("stopped")
    with pytest.raises(RuntimeError):
        s.advance(1.0)


def test_halving_picks_a_dominant_candidate_at_a_fraction_of_equal_allocation():
    rng = np.random.default_rng(0)
    epochs = [0.25 * k for k in range(1, 41)]
    accs = [np.linspace(0.3, 0.5 + 0.02 * i, 40) for i in range(7)] + [np.linspace(0.6, 0.95, 40)]
    truth = np.array([[0.5 + 0.02 * i] * 4 for i in range(7)] + [[0.95] * 4]) + rng.normal(0, 0.005, (8, 4))
    pool = _pool(accs, truth, epochs)
    equal = bench.replay(pool, Setting("equal", (("epochs", 10.0),)), np.arange(8))
    halving = bench.replay(
        pool,
        Setting(
            "ncap halving", (("eta", 2), ("min_epochs", None), ("stop_p_best", 0.95), ("rule", "val_acc"))
        ),
        np.arange(8)[::-1],
    )
    assert equal.pick == halving.pick == 7
    assert equal.flops == pytest.approx(pool.equal_flops)
    assert halving.flops < 0.4 * equal.flops
    out = bench.outcome(pool, halving, 0)
    assert out["within_noise"] and out["regret_pt"] == 0 and out["fraction"] < 0.4


def test_the_optuna_replay_prunes_as_successive_halving_does_by_hand():
    # steps are quarter epochs: 1, 2, 3, 4; SHA(min_resource=1, reduction_factor=2) has rungs at steps 1, 2, 4
    accs = {"a": [0.5, 0.6, 0.7, 0.8], "b": [0.4, 0.9, 0.9, 0.9], "c": [0.6, 0.7, 0.8, 0.9]}
    pool = _pool(list(accs.values()), [[0.8, 0.8], [0.9, 0.9], [0.9, 0.91]])
    sha = Setting("optuna SHA", (("min_resource", 1), ("reduction_factor", 2)))
    # a completes (alone at each rung); b is below a at step 1: pruned after 1 observation;
    # c beats a everywhere
    r = bench.replay(pool, sha, [0, 1, 2])
    assert r.pick == 2 and r.ended == "1 pruned"
    assert r.flops == pytest.approx(2.0 + 1.25 + 2.0)  # cumulative FLOPs 1 + epoch: a, c to 1.0, b to 0.25
    # c first: a and b each fall below c's value at the first rung
    r = bench.replay(pool, sha, [2, 0, 1])
    assert r.pick == 2 and r.ended == "2 pruned" and r.flops == pytest.approx(2.0 + 1.25 + 1.25)


def test_the_pick_quality_uses_the_decisive_pairs_and_choose_takes_the_cheapest_match():
    pool = _pool([[0.5]] * 3, [[0.80, 0.81, 0.79], [0.795, 0.80, 0.81], [0.60, 0.61, 0.59]], epochs=[1.0])
    within, regret = pool.quality
    assert within.tolist() == [True, True, False]  # c1 is the best; c0 is not decisively worse, c2 is
    assert regret[1] == 0 and regret[2] == pytest.approx(100 * (2.405 / 3 - 0.60))
    summaries = {
        "eq": {"within_noise": 1.0, "fraction": 1.0, "regret_pt": 0},
        "x": {"within_noise": 1.0, "fraction": 0.5, "regret_pt": 0},
        "y": {"within_noise": 0.5, "fraction": 0.1, "regret_pt": 3},
    }
    assert bench.choose(summaries, ["x", "y"], summaries["eq"]) == "x"
    assert bench.choose(summaries, ["y"], summaries["eq"]) == "y"  # none matches: the best rate


def test_load_pool_judges_with_the_other_seeds_and_skips_incomplete_candidates(monkeypatch):
    from ncap.bench import evaluate_v3, selection_v3
    from ncap.bench.design_v3 import CANDIDATES

    missing = CANDIDATES[1].name

    def load_record(task, cand, label):
        if cand.name == missing and label == "seed4":
            return None
        return _record([0.5, 0.6 + 0.01 * int(label[-1])], [0.5, 1.0])

    monkeypatch.setattr(selection_v3, "load_record", load_record)
    monkeypatch.setattr(evaluate_v3, "run_cost", lambda run, upto=None: float(upto + 1))
    pool, skipped = bench.load_pool("elpv-poly")
    assert skipped == [missing] and missing not in pool.names and len(pool.names) == len(CANDIDATES) - 1
    assert pool.truth.shape == (len(CANDIDATES) - 1, 4) and np.allclose(
        pool.truth[0], [0.61, 0.62, 0.63, 0.64]
    )
    assert pool.runs[0]["val_accuracy"][-1] == 0.6 and pool.role == "held out" and pool.n_val == 1050
    assert pool.flops[0].tolist() == [1.0, 2.0]
    assert bench.load_pool("elpv-poly", min_candidates=len(CANDIDATES))[0] is None


def test_the_command_writes_parseable_json_markdown_and_a_plot(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    epochs = [0.25 * k for k in range(1, 21)] + [6.0, 7.0, 8.0, 9.0, 10.0]

    def load_pool(task, min_candidates=4):
        accs = [
            np.clip(np.linspace(0.3, 0.6 + 0.05 * i, 25) + rng.normal(0, 0.01, 25), 0, 1) for i in range(5)
        ]
        truth = np.array([[0.6 + 0.05 * i] * 4 for i in range(5)]) + rng.normal(0, 0.01, (5, 4))
        return _pool(accs, truth, epochs, task, "held out" if task == "elpv-poly" else "dev"), []

    monkeypatch.setattr(bench, "load_pool", load_pool)
    out = tmp_path / "res"
    assert (
        bench.main(
            [
                "--tasks",
                "elpv-mono,elpv-poly",
                "--out",
                str(out),
                "--permutations",
                "2",
                "--subpools",
                "2",
                "--rules",
                "val_acc",
            ]
        )
        == 0
    )

    def strict(name):
        raise ValueError(f"not strict JSON: {name}")

    doc = json.loads((out / "allocation.json").read_text(), parse_constant=strict)
    assert doc["command"].startswith("python -m ncap.bench.allocation --tasks elpv-mono,elpv-poly")
    assert doc["chosen"]["chosen_on"] == ["elpv-mono"] and not doc["chosen"]["in_sample"]
    assert doc["verdict"]["tasks"] == ["elpv-poly"] and isinstance(doc["verdict"]["met"], bool)
    families = {e["family"] for e in doc["settings"]}
    assert families == {"equal", "equal prefix", "ncap halving", "optuna SHA", "optuna hyperband"}
    equal = next(e for e in doc["settings"] if e["family"] == "equal")
    assert (
        equal["summary"]["all"]["fraction"] == pytest.approx(1.0) and equal["summary"]["all"]["replays"] == 4
    )
    md = (out / "allocation.md").read_text()
    assert "**Target " in md and "| method | setting |" in md and doc["command"] in md
    assert (out / "allocation.png").stat().st_size > 1000

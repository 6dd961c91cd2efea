"""What a ranking shows a user: cost columns, the Pareto view, readable errors, plots without warnings."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ncap.models.latency import count_parameters, measure_latency
from ncap.models.recipe import Recipe
from ncap.service.documents import CandidateRecord, DatasetInfo, RankingDocument
from ncap.service.plots import plot_ranking
from ncap.service.ranking import format_table, mark_pareto, pareto_front


def brute_force_front(acc, lat):
    n = len(acc)
    out = []
    for i in range(n):
        if not (np.isfinite(acc[i]) and np.isfinite(lat[i])):
            out.append(False)
            continue
        out.append(not any(np.isfinite(acc[j]) and np.isfinite(lat[j]) and acc[j] >= acc[i] and lat[j] <= lat[i]
                           and (acc[j] > acc[i] or lat[j] < lat[i]) for j in range(n)))
    return np.array(out)


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        acc = rng.choice([0.5, 0.6, 0.7, 0.8, np.nan], size=n)  # ties and NaN on purpose
        lat = rng.choice([1.0, 2.0, 3.0, np.inf], size=n)
        np.testing.assert_array_equal(pareto_front(acc, lat), brute_force_front(acc, lat))


class Sleepy(nn.Module):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.lin = seconds, nn.Linear(3, 2)

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_latency_is_per_image_and_parameters_counted():
    model = Sleepy(0.02)
    assert count_parameters(model) == 3 * 2 + 2
    lat = measure_latency(model, (3, 4, 4), batch_sizes=(1, 4), warmup=0, repeats=2)
    assert set(lat) == {1, 4}
    assert lat[1] >= 20 and 5 <= lat[4] < lat[1]  # one 20 ms pass per batch, divided by the batch size
    assert model.training  # mode restored


def _doc(records) -> RankingDocument:
    return RankingDocument(candidates=records, config=Recipe(),
                           dataset=DatasetInfo(source="digits", n_images=10, n_train=8, n_val=2, classes=["a", "b"]))


def test_table_cuts_long_errors_and_prints_them_below():
    long = "RuntimeError: " + "x" * 500
    doc = _doc([CandidateRecord(candidate="ok", rank=1, predicted_accuracy=0.9, predicted_std=0.01, p_best=1.0),
                CandidateRecord(candidate="bad", rank=2, status="failed", error=long)])
    text = format_table(doc)
    table, _, below = text.partition("Errors:")
    assert all(len(line) < 200 for line in table.splitlines())
    assert "(see below)" in table and long in below


def test_pareto_view_lists_the_front_fastest_first():
    recs = [CandidateRecord(candidate=n, rank=k, predicted_accuracy=a, score=a, latency_ms={1: t, 64: t / 4})
            for k, (n, a, t) in enumerate([("big", 0.9, 10.0), ("small", 0.8, 1.0), ("worse", 0.7, 5.0)], 1)]
    doc = _doc(mark_pareto(recs))
    assert [r.pareto for r in doc.candidates] == [True, True, False]
    view = format_table(doc, pareto_only=True)
    assert view.index("small") < view.index("big") and "worse" not in view


def test_plots_without_anything_to_plot_make_no_warning(tmp_path):
    doc = _doc([CandidateRecord(candidate="bad", status="failed", error="boom")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_ranking(doc, tmp_path) == []


@pytest.mark.slow
def test_rank_exits_nonzero_when_every_candidate_fails(tmp_path, capsys):
    import timm

    from ncap.models.candidates import save_backbone
    from ncap.service.cli import main

    backbone = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    with torch.no_grad():
        for p in backbone.parameters():
            p.fill_(float("nan"))
    path = save_backbone(backbone, tmp_path / "nan.safetensors", arch="resnet10t", in_chans=1)
    rc = main(["rank", "--data", "digits", "--candidates", f"bad:resnet10t={path}", "--epochs", "1",
               "--image-size", "16", "--probe-width", "16", "--out", str(tmp_path / "out"), "--quiet", "--no-plots"])
    captured = capsys.readouterr()
    assert rc == 1 and "every candidate failed" in captured.err and "failed" in captured.out


def test_every_command_prints_its_help(capsys):
    """Generated help texts (recipe descriptions may contain '%') render for every subcommand."""
    from ncap.service.cli import COMMAND_MODULES, main

    for module in COMMAND_MODULES:
        name = module.rsplit(".", 1)[-1].replace("_", "-")
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        assert "usage: ncap" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--probe-width", "8192"], ["--max-memory-gb", "0.5"]])
def test_rank_refuses_a_job_that_cannot_fit_before_any_training(tmp_path, capsys, extra):
    """Issue 13's repro (probe width 8192 needs ~150 GB) and an explicit limit below the process's own base:
    exit 2 with the estimate's reason, and nothing is trained or written."""
    from ncap.service.cli import main

    out = tmp_path / "out"
    rc = main(["rank", "--data", "digits", "--candidates", "resnet10t=random", "--epochs", "1", "--out", str(out),
               "--quiet", "--no-plots", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "exceeds the per-job limit" in err and "resnet10t=random" in err
    assert not out.exists()


@pytest.mark.parametrize("beta_features", ["validation", "fixed"])
def test_a_diverged_candidate_on_npz_data_says_its_loss_became_nan(tmp_path, beta_features):
    """Issue 13, minor item: a run that diverges on .npz data used to fail with "x contains NaN or inf" (the
    fixed probe batch went through the NaN backbone first); the reason is now the loss."""
    import timm

    from ncap.models.candidates import save_backbone
    from ncap.service.ranking import run_ranking

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (60, 16, 16), dtype=np.uint8), y=np.arange(60) % 3)
    backbone = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    with torch.no_grad():
        for p in backbone.parameters():
            p.fill_(float("nan"))
    path = save_backbone(backbone, tmp_path / "nan.safetensors", arch="resnet10t", in_chans=1)
    recipe = Recipe(epochs=1, image_size=16, probe_width=16, beta_batch_size=8, beta_features=beta_features)
    doc = run_ranking(tmp_path / "d.npz", [f"bad:resnet10t={path}"], recipe, None, make_plots=False, progress=False)
    (rec,) = doc.candidates
    assert rec.status == "failed" and rec.error.startswith("training loss became nan"), rec.error


def _trajectory_record(name, acc, loss, beta):
    """A record as ``candidate_record`` makes it: the trajectories and β_eff's prediction from them."""
    from ncap.capacitance.ranking_rules import score_run

    p = score_run("beta_eff", beta_eff=beta, val_accuracy=acc, train_loss=loss)
    return CandidateRecord(candidate=name, val_accuracy=acc, train_loss=loss, beta_eff=beta,
                           predicted_accuracy=p.score, predicted_std=p.std)


@pytest.mark.parametrize("ranker, order", [("beta_eff", ["a", "b", "c"]), ("val_acc", ["b", "c", "a"]),
                                           ("tse_ema", ["c", "b", "a"])])
def test_the_ranking_rule_decides_the_order_and_the_table_shows_its_score(ranker, order):
    """a: best β_eff prediction; b: best last accuracy; c: fastest-falling training loss. Each rule ranks its
    own winner first; β_eff's prediction stays in every record; P(best) only where the rule has a std."""
    from ncap.service.ranking import rank_runs

    recs = [_trajectory_record("a", [0.5, 0.6, 0.62], [2.0, 1.8, 1.7], [3.0, 2.0, 1.0]),
            _trajectory_record("b", [0.5, 0.7, 0.80], [2.0, 1.5, 1.2], [1.0, 3.0, 5.0]),
            _trajectory_record("c", [0.5, 0.7, 0.75], [1.0, 0.6, 0.4], [1.0, 2.0, 3.0]),
            CandidateRecord(candidate="failed", status="failed", error="boom")]
    predicted = {r.candidate: r.predicted_accuracy for r in recs}
    assert predicted["a"] > predicted["b"] > predicted["c"]
    ranked = rank_runs(recs, ranker=ranker, n_val=400)
    assert [r.candidate for r in ranked] == [*order, "failed"]
    assert [r.predicted_accuracy for r in ranked[:3]] == [predicted[n] for n in order]
    if ranker == "beta_eff":  # the rule's score is the prediction the record shows
        assert [r.score for r in ranked[:3]] == [predicted[n] for n in order]
    if ranker == "tse_ema":
        assert all(r.p_best is None for r in ranked) and ranked[0].score == pytest.approx(-(0.81 * 1.0 + 0.9 * 0.6 + 0.4))
    else:
        assert sum(r.p_best for r in ranked) == pytest.approx(1.0) and ranked[-1].p_best == 0
    doc = RankingDocument(candidates=ranked, config=Recipe(ranker=ranker),
                          dataset=DatasetInfo(source="x", n_images=10, n_train=8, n_val=2, classes=["a", "b"]))
    header = format_table(doc).splitlines()[0]
    assert ("ranked by" in header) == (ranker != "beta_eff") and "predicted acc (β_eff)" in header


def test_the_pareto_plot_draws_the_ranking_score_the_front_was_computed_on(tmp_path, monkeypatch):
    """The front is computed on the ranking score (default val_acc), so the plot draws that score: a candidate
    without a β_eff prediction is still on it, and the y values are the scores."""
    from ncap.service import plots

    recs = [CandidateRecord(candidate=n, rank=k, score=a, score_std=0.01, predicted_accuracy=None,
                            latency_ms={1: t}) for k, (n, a, t) in enumerate([("big", 0.9, 10.0), ("small", 0.8, 1.0)], 1)]
    drawn = []
    real = plots.plt.subplots

    def spy(*a, **k):
        fig, ax = real(*a, **k)
        monkeypatch.setattr(ax, "errorbar", lambda x, y, **kw: drawn.append((x, y)))
        return fig, ax

    monkeypatch.setattr(plots.plt, "subplots", spy)
    assert plots.plot_pareto(_doc(mark_pareto(recs)), tmp_path) == ["pareto.png"]
    assert sorted(drawn) == [(1.0, pytest.approx(80.0)), (10.0, pytest.approx(90.0))]

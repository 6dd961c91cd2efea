"""The public API in ``ncap/__init__.py``: lazy names (``import ncap`` imports no torch), ``ncap.rank`` returning the
typed document, readable help, and the tracker measuring what the harness records."""
from __future__ import annotations

import pydoc
import subprocess
import sys

import pytest

import ncap


def test_import_ncap_is_light_and_names_load_on_use():
    code = ("import sys, ncap; before = sorted(m for m in ('torch', 'optuna', 'ray', 'sklearn') if m in sys.modules); "
            "ncap.predict_final_accuracy; mid = 'torch' in sys.modules; ncap.BetaEffTracker; "
            "print(before, mid, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False True"  # the predictor needs no torch; the tracker does


def test_public_names_are_the_implementations():
    from ncap.capacitance import predictor, tracker
    from ncap.models.recipe import Recipe
    from ncap.service.documents import RankingDocument

    assert ncap.BetaEffTracker is tracker.BetaEffTracker
    assert ncap.predict_final_accuracy is predictor.predict_final_accuracy and ncap.p_best is predictor.p_best
    assert ncap.Recipe is Recipe and ncap.RankingDocument is RankingDocument and ncap.Prediction is predictor.Prediction
    assert set(ncap.__all__) <= set(dir(ncap))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ncap.nope  # noqa: B018


def test_defaults_agree_on_the_support_variant():
    import inspect

    assert ncap.Recipe().variant == "support"
    assert inspect.signature(ncap.BetaEffTracker).parameters["variant"].default == "support"


def test_help_of_the_tracker_reads_well():
    text = pydoc.render_doc(ncap.BetaEffTracker, renderer=pydoc.plaintext)
    for words in ("collect(", "observe(", "predict(", "state_dict(", "load_state_dict(", "(B, D)", "variant"):
        assert words in text, words


TINY = {"epochs": 1, "batch_size": 64, "image_size": 16, "evals_per_epoch": 2, "beta_batch_size": 64,
        "probe_width": 16, "num_workers": 0, "measure_latency": False}


def test_rank_returns_the_typed_document_and_validates_fields(tmp_path):
    doc = ncap.rank("digits", "mobilenetv3_small_050=random", out_dir=tmp_path, make_plots=False, progress=False, **TINY)
    assert isinstance(doc, ncap.RankingDocument)
    assert doc.config == ncap.Recipe(**TINY) and doc.candidates[0].rank == 1
    assert (tmp_path / "ranking.json").read_text() == doc.to_json()
    with pytest.raises(TypeError, match="'epoch' \\(did you mean 'epochs'\\?\\)"):  # before any training
        ncap.rank("digits", "mobilenetv3_small_050=random", epoch=3)
    with pytest.raises(ValueError, match="lr"):
        ncap.rank("digits", "mobilenetv3_small_050=random", recipe=ncap.Recipe(**TINY), lr=-1.0)
    # the document's conveniences
    assert doc.best is doc.candidates[0] and doc.failed == []
    assert doc.table().splitlines()[0].startswith("rank  candidate") and "mobilenetv3_small_050=random" in doc.table()
    assert repr(doc).startswith("<RankingDocument: 1 candidates on 'digits'") and len(repr(doc)) < 300
    assert "<table>" in doc._repr_html_() and "mobilenetv3_small_050=random" in doc._repr_html_()


def test_rank_on_failure_warns_raises_or_ignores(monkeypatch):
    """A failed candidate is a warning naming it by default, an error with on_failure='raise', silent with
    'ignore'; the failed ones are in doc.failed, and labels are escaped in the notebook table."""
    import warnings

    from ncap.service import ranking
    from ncap.service.documents import CandidateRecord, DatasetInfo, RankingDocument

    doc = RankingDocument(candidates=[CandidateRecord(candidate="<b>ok</b>", rank=1),
                                      CandidateRecord(candidate="bad", rank=2, status="failed", error="boom")],
                          config=ncap.Recipe(), dataset=DatasetInfo(source="d", n_images=1, n_train=1, n_val=1,
                                                                    classes=["a"]))
    monkeypatch.setattr(ranking, "run_ranking", lambda *a, **k: doc)
    with pytest.warns(UserWarning, match="1 of 2 candidates failed: bad: boom"):
        assert ncap.rank("digits", "x") is doc
    with pytest.raises(RuntimeError, match="bad: boom"):
        ncap.rank("digits", "x", on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ncap.rank("digits", "x", on_failure="ignore").failed == [doc.candidates[1]]
    assert doc.best.candidate == "<b>ok</b>" and "&lt;b&gt;ok&lt;/b&gt;" in doc._repr_html_()
    assert "1 failed" in repr(doc)


def test_a_user_loop_with_the_tracker_reproduces_the_harness():
    """The same seeded run written by a user with public pieces (candidate model, timm loaders, the one training
    loop, ncap.BetaEffTracker fed the probe's input) gives the harness's β_eff, accuracy and prediction."""
    import numpy as np
    import torch

    from ncap.models import training
    from ncap.models.candidates import CandidateSpec, build_candidate_model
    from ncap.models.data import candidate_transforms, load_dataset, make_loader, split_dataset
    from ncap.models.harness import fine_tune_candidate

    ds = load_dataset("digits")
    train, val = split_dataset(ds.select(np.flatnonzero(np.arange(len(ds.y)) % 3 == 0)), val_fraction=0.25, seed=0)
    config = ncap.Recipe(**{**TINY, "epochs": 3, "evals_per_epoch": 1, "beta_features": "window"})  # the rule this loop feeds
    spec = CandidateSpec(name="r", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    run = fine_tune_candidate(spec, train, val, config, progress=False)

    training.seed_everything(config.seed)
    model, data_cfg = build_candidate_model(spec, len(train.class_names), probe_hidden=config.probe_hidden)
    train_tf, eval_tf, (c, _, _) = candidate_transforms(data_cfg, image_size=config.image_size,
                                                         augmentation=config.augmentation)
    loader = make_loader(train, train_tf, c, batch_size=config.batch_size, shuffle=True, drop_last=True, seed=config.seed)
    val_loader = make_loader(val, eval_tf, c, batch_size=config.batch_size, seed=config.seed)
    tracker = ncap.BetaEffTracker(model.probe, variant=config.variant, batch_size=config.beta_batch_size, t0=config.t0)
    seen = {}
    model.probe.register_forward_pre_hook(lambda _m, args: seen.update(features=args[0]))

    def on_step(info):
        tracker.collect(seen["features"], info.labels)
        if info.step % len(loader) == 0:  # one observation at the end of every epoch
            tracker.observe(info.epoch, training.evaluate_accuracy(model, val_loader))

    training.train(model, loader, training.TrainSettings.from_recipe(config), on_step=on_step)
    v = config.variant
    assert tracker.epochs == pytest.approx(run.epoch) and tracker.val_accuracy == pytest.approx(run.val_accuracy)
    torch.testing.assert_close(torch.tensor(tracker.beta_eff[v]), torch.tensor(run.beta_eff[v]))
    torch.testing.assert_close(torch.tensor(tracker.denominator[v]), torch.tensor(run.beta_denominator[v]))
    assert tracker.predict() == ncap.predict_final_accuracy(run.beta_eff[v], run.val_accuracy, t0=config.t0,
                                                            denominators=run.beta_denominator[v])

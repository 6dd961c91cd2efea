"""Candidates trained in turns (issue 23): a run in pieces is the run at once, successive halving and a time
budget on real tiny runs end to end (CLI, Python API), and their bad input refused up front."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from ncap.models.candidates import CandidateSpec
from ncap.models.harness import CandidateSession, fine_tune_candidate
from ncap.models.recipe import Recipe
from ncap.models.training import TrainingLoop, TrainSettings, seed_everything
from ncap.service.cli import main
from ncap.service.executors import load_training_data

TINY = {"epochs": 2, "batch_size": 64, "image_size": 16, "evals_per_epoch": 2, "beta_batch_size": 64,
        "probe_width": 16, "num_workers": 0, "measure_latency": False}
FOUR = ["a:mobilenetv3_small_050=random", "b:resnet10t=random", "c:mobilenetv3_small_075=random",
        "d:lcnet_050=random"]


def _loop(seed: int) -> tuple[TrainingLoop, list]:
    seed_everything(seed)
    x, y = torch.randn(150, 6), torch.randint(0, 3, (150,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(6, 3))  # dropout draws from the global RNG
    losses: list = []
    return TrainingLoop(model, loader, TrainSettings(epochs=3, warmup_fraction=0.2), isolate_rng=True,
                        on_step=lambda info: losses.append(info.loss)), losses


def test_a_loop_run_in_pieces_between_other_runs_is_the_loop_run_at_once():
    whole, whole_losses = _loop(0)
    whole.run()
    a, a_losses = _loop(0)
    b, _ = _loop(1)
    for step in (2, 5, 9, 10, None):  # mid-epoch, at an epoch's end (5 steps per epoch), to the end
        a.run(step)
        torch.rand(7)  # the caller's draws in between change nothing
        b.run(step)
    assert a_losses == whole_losses and a.result.epoch_losses == whole.result.epoch_losses
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), whole.model.parameters()))
    paused = _loop(0)[0]
    assert paused.run(pause=lambda: True).steps == 0  # pause() is asked before each step


def test_a_candidate_session_in_turns_records_what_the_plain_fine_tune_records():
    _, data = load_training_data("digits", Recipe(**TINY))
    small = data.train.select(np.arange(320)), data.val.select(np.arange(120))
    config = Recipe(**TINY)
    specs = [CandidateSpec(name=n, arch=a, source="random", kwargs={"in_chans": 1})
             for n, a in (("p", "mobilenetv3_small_050"), ("q", "lcnet_050"))]
    plain = [fine_tune_candidate(s, *small, config, progress=False) for s in specs]
    sessions = [CandidateSession(s, *small, config, progress=False) for s in specs]
    for epoch in (0.5, 1.25, 2):
        for s in sessions:
            s.advance(epoch)
    turns = [s.finish() for s in sessions]
    for p, t in zip(plain, turns):
        assert t.val_accuracy == p.val_accuracy and t.train_loss == p.train_loss and t.beta_eff == p.beta_eff
    assert sessions[0].observed(1.0)["val_accuracy"] == plain[0].val_accuracy[:2]


def test_halving_on_a_real_tiny_run_stops_the_worse_half_and_ranks_by_the_rungs(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["rank", "--candidates", ",".join(FOUR), "--out", str(out), "--strategy", "halving",
                 "--halving-eta", "2", "--halving-min-epochs", "none", "--stop-p-best", "1", "--epochs", "4", "--quiet", "--no-plots", "--json",
                 *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k not in ("epochs", "measure_latency")]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    decisions = doc["allocation"]["decisions"]
    epochs = [d["epoch"] for d in decisions]
    assert epochs == pytest.approx([1.0, 2.0, 4.0][: len(epochs)]) and len(decisions[0]["ranked"]) == 4
    by_name, expected_order = {r["candidate"]: r for r in doc["candidates"]}, []
    for d in decisions:
        scores = {k: v[0] for k, v in d["scores"].items()}
        if d["reason"] == "halving":  # the best half go on, and any tied with the last of them
            n = -(-len(d["ranked"]) // 2)
            assert d["continuing"] == [k for i, k in enumerate(d["ranked"])
                                       if i < n or scores[k] == scores[d["ranked"][n - 1]]]
        for name in d["stopped"]:
            assert by_name[name]["stopped_at_epoch"] == pytest.approx(d["epoch"])
            assert by_name[name]["stopped_reason"].startswith("stopped by successive halving")
            assert by_name[name]["epoch"][-1] <= d["epoch"] + 1e-9  # it trained no further
        expected_order = [k for k in d["stopped"]] + expected_order
    last = decisions[-1]
    expected_order = last["ranked"] + [k for k in expected_order if k not in last["ranked"]]
    assert [r["candidate"] for r in sorted(doc["candidates"], key=lambda r: r["rank"])] == expected_order
    pick = expected_order[0]
    assert by_name[pick]["p_best"] is not None
    assert f"Successive halving (eta 2): epoch 1: 4 compared, {len(decisions[0]['continuing'])} went on" in captured.err
    kept = [r for r in doc["candidates"] if r.get("checkpoint")]
    assert [r["candidate"] for r in kept] == [pick] and (out / kept[0]["checkpoint"]).exists()


def test_a_time_budget_plans_the_epochs_and_is_never_exceeded_by_more_than_a_tenth(tmp_path):
    import ncap

    budget = 25.0
    t0 = time.monotonic()
    doc = ncap.rank("digits", FOUR[:3], out_dir=tmp_path, make_plots=False, progress=False, time_budget_s=budget,
                    **{**TINY, "epochs": 50})
    took = time.monotonic() - t0
    assert took <= 1.1 * budget, (took, doc.allocation)
    plan = doc.allocation
    assert 1 <= plan["planned_epochs"] < 50 and doc.config.epochs == plan["planned_epochs"]
    assert plan["estimated_s"] <= budget
    assert all(r.status == "ok" and r.observed_accuracy is not None for r in doc.candidates)


@pytest.mark.parametrize("argv,words", [
    (["--time-budget", "5x"], ["--time-budget", "not a duration: '5x'"]),
    (["--strategy", "halvin"], ["unknown strategy 'halvin'", "equal, halving"]),
    (["--halving-eta", "1"], ["--halving-eta", "greater than or equal to 2"]),
    (["--strategy", "halving", "--executor", "ray"], ["--executor local"]),
    (["--time-budget", "1s"], ["time budget of 1 s is less than the estimated"]),
])
def test_bad_allocation_input_exits_2_with_the_reason_before_training(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) if argv[0] == "--time-budget" and argv[1] == "5x" else _no_raise() as exc:
        code = main(["rank", "--candidates", FOUR[0], "--out", str(tmp_path), "--quiet", "--no-plots",
                     "--image-size", "16", *argv])
    code = exc.value.code if exc is not None and hasattr(exc, "value") else code
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert not (tmp_path / "ranking.json").exists() and "Traceback" not in err


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False

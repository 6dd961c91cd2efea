"""BetaEffTracker: the window, observations against direct capacitance calls, variant windows, the
disabled baseline, predictions against the predictor, and state_dict round trips through JSON."""
import json
import math

import numpy as np
import pytest
import torch

from ncap.capacitance.beta_eff import capacitance
from ncap.capacitance.line_graph import ProbeError
from ncap.capacitance.predictor import predict_final_accuracy
from ncap.capacitance.probe import NeuralCapacitanceProbe
from ncap.capacitance.tracker import BetaEffTracker


@pytest.fixture
def probe():
    torch.manual_seed(0)
    return NeuralCapacitanceProbe(12, 4, (10, 8, 6))


def _batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_window_holds_the_last_samples_in_order(probe):
    tracker = BetaEffTracker(probe, batch_size=7)
    batches = [_batch(3, s) for s in range(5)]
    for f, y in batches:
        tracker.collect(f, y)
    feats, labels = tracker.window()
    all_f = torch.cat([f for f, _ in batches])
    all_y = torch.cat([y for _, y in batches])
    torch.testing.assert_close(feats, all_f[-7:])
    assert labels.tolist() == all_y[-7:].tolist()
    assert sum(len(y) for _, y in tracker._window) <= 7 + 3 - 1  # only the batches the window needs are kept


def test_observe_matches_direct_capacitance(probe):
    tracker = BetaEffTracker(probe, variant="support", extra_variants=("default", "support"), batch_size=6)
    assert tracker.variants == ("support", "default")
    f, y = _batch(10, 1)
    tracker.collect(f, y)
    probe.train()
    out = tracker.observe(0.5, 0.4)
    assert probe.training  # mode restored
    for v in ("support", "default"):
        ref = capacitance(probe, f[-6:], y[-6:], variant=v)
        assert out[v].beta_eff == pytest.approx(ref.beta_eff, rel=1e-6)
        assert tracker.beta_eff[v] == [out[v].beta_eff]
        assert tracker.numerator[v][0] / tracker.denominator[v][0] == pytest.approx(ref.beta_eff, rel=1e-6)
    given_f, given_y = _batch(5, 2)  # explicit features win over the window
    out = tracker.observe(1.0, 0.5, given_f, given_y)
    assert out["support"].beta_eff == pytest.approx(capacitance(probe, given_f, given_y, variant="support").beta_eff)
    assert tracker.epochs == [0.5, 1.0] and tracker.val_accuracy == [0.4, 0.5] and tracker.n_samples == [6, 5]
    with pytest.raises(ValueError, match="together"):
        tracker.observe(1.5, 0.5, given_f)


def test_extra_variants_window_and_disabled_baseline(probe):
    tracker = BetaEffTracker(probe, variant="default", extra_variants=("magnitude",), extra_variants_until=1.0,
                             batch_size=8)
    f, y = _batch(8, 3)
    tracker.collect(f, y)
    for e in (0.5, 1.0, 1.5):
        tracker.observe(e, 0.3)
    assert all(math.isfinite(b) for b in tracker.beta_eff["default"])
    mag = tracker.beta_eff["magnitude"]
    assert math.isfinite(mag[0]) and math.isfinite(mag[1]) and math.isnan(mag[2])
    off = BetaEffTracker(probe, enabled=False)
    off.collect(f, y)
    off.observe(0.5, 0.7)
    assert off.val_accuracy == [0.7] and math.isnan(off.beta_eff["support"][0]) and off.n_samples == [0]
    with pytest.raises(ValueError, match="no features collected"):
        BetaEffTracker(probe).observe(0.5, 0.1)


def test_predict_is_the_predictor_on_the_history(probe):
    tracker = BetaEffTracker(probe, variant="default", batch_size=16, t0=1)
    opt = torch.optim.SGD(probe.parameters(), lr=0.2)
    f, y = _batch(16, 4)
    for step in range(1, 7):
        loss = torch.nn.functional.cross_entropy(probe(f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.collect(f, y)
        tracker.observe(step / 2, float((probe(f).argmax(1) == y).float().mean()))
    ref = predict_final_accuracy(tracker.beta_eff["default"], tracker.val_accuracy, t0=1,
                                 denominators=tracker.denominator["default"])
    assert tracker.predict().to_dict() == ref.to_dict()
    assert tracker.predict(t0=0).to_dict() == predict_final_accuracy(
        tracker.beta_eff["default"], tracker.val_accuracy, t0=0, denominators=tracker.denominator["default"]).to_dict()
    with pytest.raises(ValueError, match="not recorded"):
        tracker.predict("magnitude")


def test_state_dict_round_trip_through_json(probe):
    tracker = BetaEffTracker(probe, variant="support", extra_variants=("default",), extra_variants_until=0.5,
                             batch_size=8)
    f, y = _batch(8, 5)
    tracker.collect(f, y)
    for e in (0.5, 1.0):
        tracker.observe(e, 0.25 * e)
    state = json.loads(json.dumps(tracker.state_dict(), allow_nan=False))  # strict JSON: NaN went to null
    fresh = BetaEffTracker(probe, variant="support", extra_variants=("default",), extra_variants_until=0.5,
                           batch_size=8)
    fresh.load_state_dict(state)
    assert fresh.epochs == tracker.epochs and fresh.val_accuracy == tracker.val_accuracy
    for key in ("beta_eff", "numerator", "denominator"):
        for v in tracker.variants:
            np.testing.assert_array_equal(getattr(fresh, key)[v], getattr(tracker, key)[v])  # NaN-aware
    assert math.isnan(fresh.beta_eff["default"][1])
    fresh.collect(f, y)
    fresh.observe(1.5, 0.5)  # resumed trackers keep observing
    assert len(fresh) == 3
    with pytest.raises(ValueError, match="batch_size"):
        BetaEffTracker(probe, variant="support", extra_variants=("default",), extra_variants_until=0.5,
                       batch_size=16).load_state_dict(state)
    broken = {**state, "epochs": state["epochs"][:1]}
    with pytest.raises(ValueError, match="inconsistent"):
        fresh.load_state_dict(broken)


def test_refuses_a_probe_too_shallow_for_beta():
    shallow = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    with pytest.raises(ProbeError, match="at least 3 hidden"):
        BetaEffTracker(shallow)
    with pytest.raises(ValueError, match="unknown variant"):
        BetaEffTracker(NeuralCapacitanceProbe(4, 3, (5, 5, 5)), variant="bogus")

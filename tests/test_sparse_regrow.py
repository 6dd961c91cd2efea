"""Prune + regrow: exact counts, fixed per-layer sparsity, no regrowth into just-pruned slots, RigL against a
brute-force argsort, SNFS reading the optimiser's momentum buffer, the cosine schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ncap.models.sparse.dst import DynamicSparsity
from ncap.models.sparse.regrow import REGROW_RULES, cosine_prune_rate, top_k_exact, update_layer
from ncap.network import get_mask, set_mask


def _brute_top(scores, k, exclude=None):
    """k largest scores outside exclude, ties to the lower index (full stable argsort)."""
    idx = np.arange(scores.size) if exclude is None else np.flatnonzero(~exclude)
    order = np.lexsort((idx, -scores[idx]))  # by score desc, then index asc
    return np.sort(idx[order[:k]])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [50, 20000, 300000])
def test_top_k_exact_matches_a_full_argsort_with_ties(seed, size):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 50, size).astype(np.float32)  # many ties
    exclude = rng.random(size) < 0.3
    for k in (0, 1, size // 100, size // 7, size):
        np.testing.assert_array_equal(top_k_exact(scores, k, exclude), _brute_top(scores, k, exclude))
        np.testing.assert_array_equal(top_k_exact(scores, k), _brute_top(scores, k))


def _layer(seed=0, shape=(60, 80), density=0.1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) < density
    w *= mask
    return w, mask


@pytest.mark.parametrize("rule", REGROW_RULES)
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0])
def test_exact_counts_fixed_sparsity_and_no_regrowth_into_pruned_slots(rule, fraction):
    w, mask = _layer()
    before = mask.clone()
    w0 = w.clone()
    score = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    upd = update_layer(w, mask, fraction, rule, score=score, rng=np.random.default_rng(0))
    n = round(fraction * int(before.sum()))
    assert upd.pruned.size == upd.grown.size == n
    assert int(mask.sum()) == int(before.sum())  # per-layer sparsity unchanged
    flat0 = before.reshape(-1).numpy()
    assert flat0[upd.pruned].all() and not flat0[upd.grown].any()  # pruned were active, grown were inactive
    assert np.intersect1d(upd.pruned, upd.grown).size == 0  # no regrowth into a just-pruned slot
    # the pruned ones are exactly the n smallest |w| among the active weights (brute force, ties to lower index)
    act = np.flatnonzero(flat0)
    np.testing.assert_array_equal(upd.pruned, np.sort(act[np.lexsort((act, np.abs(w0.reshape(-1).numpy()[act])))[:n]]))
    flat = mask.reshape(-1).numpy()
    assert not flat[upd.pruned].any() and flat[upd.grown].all()
    assert (w.reshape(-1)[torch.from_numpy(np.concatenate([upd.pruned, upd.grown]))] == 0).all()
    np.testing.assert_array_equal(upd.after, np.flatnonzero(flat))


def test_rigl_grows_the_largest_gradients_among_inactive_slots():
    w, mask = _layer(3, (100, 120), 0.05)
    grad = torch.randn(w.shape, generator=torch.Generator().manual_seed(4))
    inactive = ~mask.reshape(-1).numpy()
    upd = update_layer(w, mask, 0.3, "gradient", score=grad)
    expect = _brute_top(np.abs(grad.reshape(-1).numpy()), upd.grown.size, ~inactive)
    np.testing.assert_array_equal(upd.grown, expect)


def test_just_pruned_slots_are_regrown_only_when_the_rule_allows_it():
    w, mask = _layer(5, (40, 50), 0.2)
    grad = torch.zeros(w.shape)
    grad[mask] = 100.0  # the largest gradients sit on active (soon pruned) slots
    grad[~mask] = torch.rand(int((~mask).sum()), generator=torch.Generator().manual_seed(0))
    upd = update_layer(w.clone(), mask.clone(), 0.5, "gradient", score=grad)
    assert np.intersect1d(upd.pruned, upd.grown).size == 0
    m2 = mask.clone()
    upd2 = update_layer(w.clone(), m2, 0.5, "gradient", score=grad, exclude_pruned=False)
    np.testing.assert_array_equal(upd2.grown, upd2.pruned)  # RigL's reference scoring regrows them all at once
    assert torch.equal(m2, mask)


def test_random_regrowth_is_uniform_over_inactive_slots():
    counts = np.zeros(400)
    mask0 = torch.zeros(20, 20, dtype=torch.bool)
    mask0.view(-1)[:100] = True
    rng = np.random.default_rng(0)
    for _ in range(400):
        w = torch.randn(20, 20) * mask0
        upd = update_layer(w, mask0.clone(), 0.2, "random", rng=rng)
        counts[upd.grown] += 1
    assert counts[:100].sum() == 0
    expected = 400 * 20 / 300
    assert abs(counts[100:].mean() - expected) < 1e-9
    assert counts[100:].std() < 0.5 * expected  # binomial spread, no slot starved or favoured


def _model_and_opt(momentum=0.9):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 5))
    for m in (model[0], model[2]):
        mask = torch.rand(m.weight.shape) < 0.2
        set_mask(m, mask)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)


def _steps(model, opt, n):
    x, y = torch.randn(64, 30), torch.randint(0, 5, (64,))
    for _ in range(n):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("rule", REGROW_RULES)
def test_hook_keeps_per_layer_sparsity_and_zeros_through_training(rule):
    model, opt = _model_and_opt()
    counts = {k: int(get_mask(model[k]).sum()) for k in (0, 2)}
    hook = DynamicSparsity(model, ["0", "2"], rule=rule, delta_t=3, total_steps=30, prune_rate=0.5).attach(opt)
    _steps(model, opt, 20)
    assert len(hook.timings) == 6  # updates at steps 3, 6, ..., 18
    assert all(t["moved"] > 0 for t in hook.timings)
    for k in (0, 2):
        mask = get_mask(model[k])
        assert int(mask.sum()) == counts[k]
        assert (model[k].weight[~mask] == 0).all()
    hook.detach()


def test_snfs_scores_the_optimizer_momentum_buffer():
    model, opt = _model_and_opt()
    _steps(model, opt, 2)
    layer = model[0]
    buf = opt.state[layer.weight]["momentum_buffer"]
    buf.copy_(torch.randn(buf.shape, generator=torch.Generator().manual_seed(7)))
    layer.weight.grad = torch.randn(buf.shape)  # a different ranking, which must not be used
    mask0 = get_mask(layer).clone().reshape(-1).numpy()
    expect_buf = buf.clone().reshape(-1).numpy()
    hook = DynamicSparsity(model, ["0"], rule="momentum", delta_t=1, total_steps=10, prune_rate=0.3)
    hook.attach(opt)
    upd = hook.update()["0"]
    np.testing.assert_array_equal(upd.grown, _brute_top(np.abs(expect_buf), upd.grown.size, mask0))
    assert (buf.reshape(-1)[torch.from_numpy(upd.grown)] == 0).all()  # regrown slots restart without momentum
    model2, opt2 = _model_and_opt(momentum=0.0)
    _steps(model2, opt2, 1)
    with pytest.raises(RuntimeError, match="momentum buffer"):
        DynamicSparsity(model2, ["0"], rule="momentum", delta_t=1, total_steps=10).attach(opt2).update()


def test_cosine_prune_rate():
    assert cosine_prune_rate(0, 100, 0.5) == 0.5
    assert cosine_prune_rate(50, 100, 0.5) == pytest.approx(0.25)
    assert cosine_prune_rate(25, 100, 0.4) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)))
    assert cosine_prune_rate(100, 100, 0.5) == 0.0 == cosine_prune_rate(7, 0, 0.5)


def test_bad_rule_and_missing_score_are_refused():
    w, mask = _layer()
    with pytest.raises(ValueError, match="unknown regrowth rule"):
        update_layer(w, mask, 0.1, "magic")
    with pytest.raises(ValueError, match="needs a score"):
        update_layer(w, mask, 0.1, "gradient")


def test_hook_plugs_into_the_shared_training_loop():
    """DynamicSparsity is an optimiser step post-hook, so ncap.models.training.train runs DST unchanged."""
    from ncap.models.pruning import tensor_loader
    from ncap.models.training import TrainSettings, train

    model, opt = _model_and_opt()
    counts = {k: int(get_mask(model[k]).sum()) for k in (0, 2)}
    hook = DynamicSparsity(model, ["0", "2"], rule="gradient", delta_t=2, total_steps=8).attach(opt)
    loader = tensor_loader(torch.randn(64, 30), torch.randint(0, 5, (64,)), 16, shuffle=True)
    train(model, loader, TrainSettings(epochs=2, lr=0.1, optimizer="sgd", schedule="constant"), optimizer=opt)
    assert hook.step == 8 and [t["step"] for t in hook.timings] == [2, 4, 6]
    for k in (0, 2):
        assert int(get_mask(model[k]).sum()) == counts[k] and (model[k].weight[~get_mask(model[k])] == 0).all()

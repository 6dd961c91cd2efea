"""The one training loop: schedule against its closed form, parameter groups, loss options, divergence,
cancellation, determinism, evaluation."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from ncap.models.training import (
    Cancelled,
    DivergedError,
    TrainSettings,
    evaluate_accuracy,
    lr_factor,
    make_optimizer,
    resolve_amp,
    seed_everything,
    train,
)


class TwoPart(nn.Module):
    """A model with a ``backbone`` (gets the scaled lr) and a head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def _loader(n=40, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _reference_schedule(total: int, warmup: int, cosine: bool) -> np.ndarray:
    s = np.arange(total, dtype=float)
    after = 0.5 * (1 + np.cos(np.pi * (s - warmup) / (total - warmup))) if cosine else np.ones(total)
    return np.where(s < warmup, (s + 1) / max(warmup, 1), after)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_schedule_matches_closed_form_per_group(schedule):
    seed_everything(0)
    model, loader = TwoPart(), _loader()  # 5 steps per epoch
    settings = TrainSettings(epochs=4, lr=0.01, warmup_fraction=0.25, schedule=schedule, backbone_lr_scale=0.1)
    seen = []
    opt = make_optimizer(model, settings)
    result = train(model, loader, settings, optimizer=opt,
                   on_step=lambda info: seen.append([g["lr"] for g in opt.param_groups]) or None)
    assert result.steps == 20 and result.images == 160 and len(result.epoch_losses) == 4
    total, warmup = 20, 5
    ref = _reference_schedule(total, warmup, schedule == "cosine")
    # on_step runs after the scheduler stepped: entry k holds the lr of step k + 1 (after the last: cos π or 1)
    following = np.append(ref[1:], 0.5 * (1 + math.cos(math.pi)) if schedule == "cosine" else 1.0)
    got = np.array(seen)
    np.testing.assert_allclose(got[:, 1], 0.01 * following, rtol=1e-12, atol=1e-15)  # probe / head group
    np.testing.assert_allclose(got[:, 0], 0.001 * following, rtol=1e-12, atol=1e-15)  # backbone group
    assert [lr_factor(s, total, warmup, schedule) for s in range(total)] == pytest.approx(ref, rel=1e-12)


def test_stepinfo_lr_is_the_lr_used_and_fractional_epochs():
    model, loader = TwoPart(), _loader()
    settings = TrainSettings(epochs=1.4, lr=0.1, warmup_fraction=0.3)
    lrs = []
    result = train(model, loader, settings, on_step=lambda info: lrs.append(info.lr) or None)
    assert result.steps == round(1.4 * 5) == 7
    np.testing.assert_allclose(lrs, 0.1 * _reference_schedule(7, 2, True))


def test_label_smoothing_loss_and_gradient_clipping():
    seed_everything(1)
    model, loader = TwoPart(), _loader(n=8, batch=8)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = next(iter(loader))
    expected = nn.functional.cross_entropy(model(x), y, label_smoothing=0.2).item()
    settings = TrainSettings(epochs=1, lr=1.0, optimizer="sgd", momentum=0.0, label_smoothing=0.2,
                             grad_clip_norm=1e-3)
    losses = []
    train(model, loader, settings, on_step=lambda info: losses.append(info.loss) or None)
    assert losses[0] == pytest.approx(expected, rel=1e-6)
    step = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)])
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-4)  # lr 1 × clipped gradient of norm 1e-3


def test_divergence_is_reported_with_the_step():
    model = TwoPart()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(DivergedError, match=r"training loss became nan at step 0 \(epoch 0\.00\)"):
        train(model, _loader(), TrainSettings(epochs=1))


def test_cancellation_and_empty_loader():
    calls = iter(range(100))
    with pytest.raises(Cancelled, match="cancelled at step 2"):
        train(TwoPart(), _loader(), TrainSettings(epochs=1), should_stop=lambda: next(calls) >= 2)
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(3, 6), torch.zeros(3).long()),
                                        batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="no batches"):
        train(TwoPart(), empty, TrainSettings(epochs=1))


def test_repeatable_on_cpu_and_frozen_submodule_stays_in_eval():
    def run():
        seed_everything(3)
        model = TwoPart()
        model.backbone.append(nn.BatchNorm1d(8))
        train(model, _loader(seed=3), TrainSettings(epochs=2, lr=0.05, warmup_fraction=0.2), frozen=model.backbone)
        return model

    a, b = run(), run()
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    bn = a.backbone[2]
    assert int(bn.num_batches_tracked) == 0  # eval mode throughout: running statistics never updated


def test_evaluate_accuracy_and_amp_is_gpu_only():
    model = TwoPart()
    loader = _loader(n=30, batch=7)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    model.train()
    ref = (model.eval()(x).argmax(1) == y).float().mean().item()
    model.train()
    assert evaluate_accuracy(model, loader) == pytest.approx(ref)
    assert model.training  # mode restored
    assert resolve_amp("bf16", torch.device("cpu")) is None and resolve_amp("auto", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="amp"):
        TrainSettings(amp="int8")

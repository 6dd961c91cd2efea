"""Magnitude pruning of Linear/Conv2d layers and the three-step train → prune → retrain procedure.

This follows §3 of the power-law-in-sparsified-DNNs paper (sources/000_…txt), which uses the three-step
method of Han et al.: a dense network is trained; in each layer a fraction ``s`` of the connections with
the smallest magnitudes is removed; the surviving connections are retrained. Connections into the output
layer are left dense by default ("as is common in network pruning"). Biases are never pruned: a
connection is a weight.

Masks
-----
Masks are our own boolean buffers (kept by :mod:`ncap.network.masks`, where degree counting
reads them), not ``torch.nn.utils.prune``. Reasons:

* ``torch.nn.utils.prune`` re-parametrises ``weight`` into ``weight_orig`` × ``weight_mask`` with a
  forward pre-hook: ``module.weight`` stops being a ``Parameter``, ``state_dict`` keys change, and an
  optimiser created before pruning keeps updating a tensor the module no longer uses. ncap's
  capacitance code (``capacitance.beta_eff``) and timm models read ``layer.weight`` directly.
* Its iterative ``amount`` is relative to what is still unpruned, so hitting an exact per-layer fraction
  after k steps needs bookkeeping anyway; here every step states the *total* fraction per layer, and the
  count is exact: ``round(s · n)`` weights are zero, ties broken by a stable sort.

Each pruned module gets a non-persistent buffer ``ncap_weight_mask`` (moves with ``.to()``, copied by
``deepcopy``, absent from ``state_dict``). The weights themselves are zeroed in place. During retraining
the mask is enforced twice: a gradient hook zeroes the gradient of pruned entries (so momentum / Adam
moments of pruned weights stay zero) and an optimiser step post-hook multiplies the weights by the mask
after every ``optimizer.step()`` (so weight decay, or any optimiser, cannot revive them).
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ncap.network.masks import get_mask, prunable_layers, remove_mask, set_mask

__all__ = [
    "Pruner",
    "ThreeStepResult",
    "accuracy",
    "paper_cnn",
    "paper_mlp",
    "prune_magnitude",
    "sparsity_schedule",
    "tensor_loader",
    "three_step_prune",
    "train_classifier",
]

# ----------------------------------------------------------------------------------------------- pruner


def _magnitude_mask(weight: torch.Tensor, old_mask: torch.Tensor | None, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask with exactly ``round(sparsity·n)`` False entries, pruning smallest |w| first.

    Entries already pruned (``old_mask`` False) rank below every surviving one, so masks only shrink.
    """
    w = weight.detach().abs().reshape(-1).float().cpu()
    n = w.numel()
    n_prune = round(sparsity * n)
    score = w.clone()
    if old_mask is not None:
        score[~old_mask.reshape(-1).cpu()] = -1.0
        n_prune = max(n_prune, int((~old_mask).sum()))
    keep = torch.ones(n, dtype=torch.bool)
    if n_prune > 0:
        order = torch.argsort(score, stable=True)
        keep[order[:n_prune]] = False
    return keep.reshape(weight.shape).to(weight.device)


class Pruner:
    """Per-layer magnitude pruning with masks that survive optimiser steps.

    Parameters
    ----------
    model : nn.Module
        Any module; its Linear and Conv2d layers are candidates.
    layers : sequence of str, optional
        Qualified names of the layers to prune. Default: every Linear/Conv2d layer in order except the
        last one (the output layer stays dense), or all of them with ``include_output=True``.
    include_output : bool
        Also prune the last prunable layer (ignored when ``layers`` is given).
    example_input : tensor, optional
        Used only to order layers by execution (see :func:`prunable_layers`).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, *, include_output: bool = False,
                 example_input: torch.Tensor | None = None):
        self.model = model
        all_layers = prunable_layers(model, example_input)
        if not all_layers:
            raise ValueError("model has no Linear or Conv2d layer to prune")
        self.all_layers: list[tuple[str, nn.Module]] = all_layers
        by_name = dict(all_layers)
        if layers is None:
            chosen = all_layers if include_output or len(all_layers) == 1 else all_layers[:-1]
        else:
            unknown = [n for n in layers if n not in by_name]
            if unknown:
                raise ValueError(f"not Linear/Conv2d layers of the model: {unknown}; "
                                 f"prunable layers are {[n for n, _ in all_layers]}")
            chosen = [(n, by_name[n]) for n in layers]
        self.layers: OrderedDict[str, nn.Module] = OrderedDict(chosen)
        self._grad_handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._opt_handles: list = []

    # ---------------------------------------------------------------- masks
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Current keep-masks (True = connection kept) of the pruned layers; layers not pruned yet are absent."""
        return {n: get_mask(m) for n, m in self.layers.items() if get_mask(m) is not None}

    def prune(self, sparsity: float | dict[str, float]) -> dict[str, float]:
        """Prune every layer to a total fraction ``sparsity`` of zero weights (per layer), smallest |w| first.

        Already pruned weights stay pruned (a lower ``sparsity`` than the current one changes nothing).
        ``sparsity`` may be a dict name → fraction. Returns the achieved sparsity per layer.
        """
        for name, module in self.layers.items():
            s = sparsity.get(name, 0.0) if isinstance(sparsity, dict) else sparsity
            s = float(s)
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity must lie in [0, 1), got {s} for layer {name}")
            set_mask(module, _magnitude_mask(module.weight, get_mask(module), s))
            if name not in self._grad_handles and module.weight.requires_grad:
                self._grad_handles[name] = module.weight.register_hook(self._grad_hook(module))
        self.apply()
        return self.sparsity()

    @staticmethod
    def _grad_hook(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(grad: torch.Tensor) -> torch.Tensor:
            mask = get_mask(module)
            return grad if mask is None else grad * mask
        return hook

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights in place (call after anything that may have changed them)."""
        for module in self.layers.values():
            mask = get_mask(module)
            if mask is not None:
                module.weight.mul_(mask)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply the masks after every ``optimizer.step()``."""
        self._opt_handles.append(optimizer.register_step_post_hook(lambda *_a, **_k: self.apply()))

    def remove(self) -> None:
        """Drop hooks and mask buffers; pruned weights stay zero but are free to change afterwards."""
        for h in list(self._grad_handles.values()) + self._opt_handles:
            h.remove()
        self._grad_handles.clear()
        self._opt_handles.clear()
        for module in self.layers.values():
            remove_mask(module)

    def sparsity(self) -> dict[str, float]:
        """Fraction of masked-out connections per pruned layer (0.0 for a layer not pruned yet)."""
        masks = self.masks
        return {n: float((~masks[n]).sum()) / masks[n].numel() if n in masks else 0.0 for n in self.layers}

    @property
    def pruned_names(self) -> list[str]:
        return list(self.layers)


def prune_magnitude(model: nn.Module, sparsity: float, *, layers: Sequence[str] | None = None,
                    include_output: bool = False) -> Pruner:
    """One-shot per-layer magnitude pruning; returns the :class:`Pruner` holding the masks."""
    pruner = Pruner(model, layers, include_output=include_output)
    pruner.prune(sparsity)
    return pruner


def sparsity_schedule(sparsity: float, steps: int, kind: str = "geometric") -> list[float]:
    """Total per-layer sparsity after each of ``steps`` pruning steps, ending exactly at ``sparsity``.

    ``geometric``: every step removes the same fraction of the weights still alive,
    s_j = 1 − (1 − s)^(j/k) (Han et al.'s iterative pruning); ``linear``: s_j = s·j/k.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    if kind == "geometric":
        out = [1.0 - (1.0 - sparsity) ** (j / steps) for j in range(1, steps + 1)]
    elif kind == "linear":
        out = [sparsity * j / steps for j in range(1, steps + 1)]
    else:
        raise ValueError(f"unknown schedule {kind!r} (geometric or linear)")
    out[-1] = float(sparsity)
    return out


# ------------------------------------------------------------------------------------------ paper models


def paper_mlp(in_features: int = 784, num_classes: int = 10, hidden: Sequence[int] = (1024, 1024),
              seed: int | None = 0) -> nn.Sequential:
    """The paper's MLP (§3.1): input − 1024FC − 1024FC − 10softmax, ReLU; layers named fc1, fc2, …

    The softmax is in the loss (cross-entropy on logits). Input (N, C, H, W) is flattened.
    """
    if seed is not None:
        torch.manual_seed(seed)
    mods: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = int(in_features)
    for i, h in enumerate(hidden, start=1):
        mods += [(f"fc{i}", nn.Linear(width, int(h))), (f"relu{i}", nn.ReLU())]
        width = int(h)
    mods.append((f"fc{len(hidden) + 1}", nn.Linear(width, int(num_classes))))
    return nn.Sequential(OrderedDict(mods))


def paper_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, channels: int = 32,
              hidden: int = 256, seed: int | None = 0) -> nn.Sequential:
    """The paper's CNN (§3.2): input − 32C5 − MP2 − 32C5 − MP2 − 256FC − 10softmax (ReLU)."""
    if seed is not None:
        torch.manual_seed(seed)
    s = ((image_size - 4) // 2 - 4) // 2
    if s < 1:
        raise ValueError(f"image_size {image_size} too small for two 5x5 convolutions with 2x2 pooling")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, channels, 5)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(channels, channels, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc3", nn.Linear(channels * s * s, hidden)), ("relu3", nn.ReLU()),
        ("fc4", nn.Linear(hidden, num_classes)),
    ]))


# ------------------------------------------------------------------------------------------- training


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def tensor_loader(x, y, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> torch.utils.data.DataLoader:
    """Batches ``(x float32, y int64)`` of in-memory arrays; shuffled with a generator seeded with ``seed``."""
    x_t, y_t = _as_tensor(x).float(), _as_tensor(y).long()
    if len(x_t) != len(y_t) or len(x_t) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x_t)} and {len(y_t)}")
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_t, y_t), batch_size=batch_size,
                                       shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def train_classifier(model: nn.Module, x, y, *, epochs: int, batch_size: int = 64, lr: float = 0.05,
                     momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0,
                     pruner: Pruner | None = None, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     device: str | torch.device = "cpu") -> list[float]:
    """Mini-batch SGD (momentum, constant lr) on cross-entropy with :func:`ncap.models.training.train`;
    returns the mean training loss of each epoch.

    A fresh optimiser is created; with ``pruner`` its masks are attached to it (and re-applied before
    the first step), so pruned weights stay exactly zero. ``transform`` maps a float batch to model input.
    """
    from ncap.models.training import TrainSettings, make_optimizer, train

    loader = tensor_loader(x, y, batch_size, shuffle=True, seed=seed)
    if epochs <= 0:
        return []
    settings = TrainSettings(epochs=epochs, lr=lr, optimizer="sgd", momentum=momentum, weight_decay=weight_decay,
                             schedule="constant")
    model.to(device)
    opt = make_optimizer(model, settings)
    if pruner is not None:
        pruner.apply()
        pruner.attach(opt)
    try:
        return train(model, loader, settings, device=device, optimizer=opt, input_transform=transform).epoch_losses
    finally:
        if pruner is not None and pruner._opt_handles:
            pruner._opt_handles.pop().remove()


def accuracy(model: nn.Module, x, y, *, batch_size: int = 512, transform=None,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` on (x, y) (:func:`ncap.models.training.evaluate_accuracy`)."""
    from ncap.models.training import evaluate_accuracy

    model.to(device)
    return evaluate_accuracy(model, tensor_loader(x, y, batch_size), device=device, input_transform=transform)


@dataclass
class ThreeStepResult:
    """Outcome of :func:`three_step_prune` (accuracies on the validation set)."""

    pruner: Pruner
    dense_accuracy: float
    pruned_accuracy: float
    retrained_accuracy: float
    sparsity: dict[str, float]
    steps: list[dict] = field(default_factory=list)
    dense_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    dense_state: dict | None = None

    def to_dict(self) -> dict:
        return {
            "dense_accuracy": self.dense_accuracy,
            "pruned_accuracy": self.pruned_accuracy,
            "retrained_accuracy": self.retrained_accuracy,
            "sparsity": self.sparsity,
            "steps": self.steps,
            "dense_losses": self.dense_losses,
            "seconds": self.seconds,
        }


def three_step_prune(model: nn.Module, train: tuple, val: tuple, *, sparsity: float, epochs: int,
                     retrain_epochs: int, iterative: int = 1, schedule: str = "geometric",
                     lr: float = 0.05, retrain_lr: float | None = None, momentum: float = 0.9,
                     batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
                     layers: Sequence[str] | None = None, include_output: bool = False,
                     transform=None, keep_dense: bool = False,
                     log: Callable[[str], None] | None = None) -> ThreeStepResult:
    """Train → prune → retrain (Han et al.; §3 of the source paper), in place on ``model``.

    1. train the dense model ``epochs`` epochs (skipped with ``epochs=0``, e.g. for a trained model);
    2. prune each layer to ``sparsity`` by magnitude — in one shot, or in ``iterative`` steps following
       :func:`sparsity_schedule`, with ``retrain_epochs`` epochs of masked retraining after every step;
    3. (retraining of the survivors, masks attached to the optimiser.)

    ``pruned_accuracy`` is measured right after the last pruning step, before its retraining (for one
    shot: the accuracy drop of pruning the dense model). ``train`` and ``val`` are ``(x, y)`` pairs. ``retrain_lr`` defaults to ``lr``. ``keep_dense`` stores a
    CPU copy of the dense state dict in the result (for before/after comparisons).
    """
    log = log or (lambda _m: None)
    t0 = time.perf_counter()
    retrain_lr = lr if retrain_lr is None else retrain_lr
    kw = {"batch_size": batch_size, "momentum": momentum, "weight_decay": weight_decay, "transform": transform}
    dense_losses: list[float] = []
    if epochs > 0:
        dense_losses = train_classifier(model, *train, epochs=epochs, lr=lr, seed=seed, **kw)
    dense_acc = accuracy(model, *val, transform=transform)
    log(f"dense: {epochs} epochs, val accuracy {dense_acc:.4f}")
    dense_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}) if keep_dense else None
    pruner = Pruner(model, layers, include_output=include_output)
    steps = []
    for j, s in enumerate(sparsity_schedule(sparsity, iterative, schedule), start=1):
        pruner.prune(s)
        acc_p = accuracy(model, *val, transform=transform)
        losses = train_classifier(model, *train, epochs=retrain_epochs, lr=retrain_lr, seed=seed + j,
                                  pruner=pruner, **kw) if retrain_epochs > 0 else []
        acc_r = accuracy(model, *val, transform=transform)
        steps.append({"step": j, "target_sparsity": s, "pruned_accuracy": acc_p, "retrained_accuracy": acc_r,
                      "retrain_losses": losses})
        log(f"step {j}/{iterative}: sparsity {s:.4f}, pruned acc {acc_p:.4f}, retrained acc {acc_r:.4f}")
    return ThreeStepResult(pruner=pruner, dense_accuracy=dense_acc, pruned_accuracy=steps[-1]["pruned_accuracy"],
                           retrained_accuracy=steps[-1]["retrained_accuracy"], sparsity=pruner.sparsity(),
                           steps=steps, dense_losses=dense_losses, seconds=time.perf_counter() - t0,
                           dense_state=dense_state)

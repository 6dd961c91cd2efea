"""The one training loop of ncap: candidates (the harness), zoo pretraining and pruning retraining.

    settings = TrainSettings(epochs=4, lr=1e-3, warmup_fraction=0.1, backbone_lr_scale=0.1)
    result = train(model, loader, settings, device="cuda", on_step=callback)   # TrainResult

Per optimizer step ``s`` (0-based) of ``T = round(epochs · len(loader))`` steps, with ``W =
round(warmup_fraction · T)`` warm-up steps, the learning rate of every parameter group is its base lr
times (:func:`lr_factor`)::

    (s + 1) / W                                   s < W      linear warm-up
    ½ (1 + cos(π (s − W) / (T − W)))              s ≥ W      cosine decay (schedule="cosine")
    1                                             s ≥ W      (schedule="constant")

Parameter groups (:func:`param_groups`): a model with a ``backbone`` attribute (``CandidateModel``) gets
``lr × backbone_lr_scale`` for the backbone and ``lr`` for everything else (the probe); other models one
group. Loss: cross-entropy with optional label smoothing; optional gradient-norm clipping. On CUDA:
automatic mixed precision (bf16 where supported, else fp16 with a gradient scaler; ``amp="off"``
disables it), channels_last memory format and cuDNN autotuning. On CPU: float32 and, with
:func:`seed_everything`, bit-for-bit repeatable runs. A tqdm bar counts images (so it shows images/s).

A loss that is NaN or inf raises :class:`DivergedError` ("training loss became nan at step N (epoch e)");
``should_stop()`` returning True raises :class:`Cancelled`.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "Cancelled",
    "DivergedError",
    "StepInfo",
    "TrainResult",
    "TrainSettings",
    "TrainingLoop",
    "evaluate_accuracy",
    "lr_factor",
    "make_optimizer",
    "param_groups",
    "resolve_amp",
    "seed_everything",
    "to_device",
    "train",
]


class Cancelled(RuntimeError):
    """Raised when ``should_stop()`` asks the loop to stop."""


class DivergedError(FloatingPointError):
    """The training loss became NaN or inf."""


@dataclass(frozen=True)
class TrainSettings:
    """How to train: optimiser, schedule, loss and precision (see the module docstring)."""

    epochs: float = 1.0  # fractions train on a prefix of the last epoch
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # "adamw" | "sgd"
    momentum: float = 0.9  # SGD only
    warmup_fraction: float = 0.0
    schedule: str = "cosine"  # "cosine" | "constant"
    backbone_lr_scale: float = 1.0
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    amp: str = "auto"  # "auto" | "off" | "bf16" | "fp16"; CUDA only

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose adamw or sgd")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose cosine or constant")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"unknown amp {self.amp!r}; choose auto, off, bf16 or fp16")
        if not 0.0 <= self.warmup_fraction < 1.0 or self.epochs <= 0 or self.lr <= 0:
            raise ValueError(f"bad settings: epochs={self.epochs}, lr={self.lr}, warmup_fraction={self.warmup_fraction}")

    @classmethod
    def from_recipe(cls, recipe) -> TrainSettings:
        """The fine-tuning settings of a :class:`ncap.models.recipe.Recipe`."""
        return cls(epochs=recipe.epochs, lr=recipe.lr, weight_decay=recipe.weight_decay,
                   warmup_fraction=recipe.warmup_fraction, schedule=recipe.lr_schedule,
                   backbone_lr_scale=recipe.backbone_lr_scale, label_smoothing=recipe.label_smoothing,
                   grad_clip_norm=recipe.grad_clip_norm, amp=recipe.amp)


@dataclass
class StepInfo:
    """What ``on_step`` receives after each optimizer step."""

    step: int  # optimizer steps done (1-based)
    epoch: float  # step / steps per epoch
    loss: float  # this step's training loss
    labels: torch.Tensor  # (B,) on the device
    lr: float  # learning rate of the last parameter group (the probe's) used for this step


@dataclass
class TrainResult:
    """Totals of one :func:`train` call. ``seconds`` (wall) and ``cpu_seconds`` (this process's CPU time)
    exclude the time spent in ``on_step``."""

    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    callback_seconds: float = 0.0
    callback_cpu_seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)  # mean loss of each (partial) pass over the data

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (timm's transforms draw from Python's and torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based); see the module docstring.
    (Hand-written: torch's SequentialLR warns when chained this way and timm's warm-up starts at lr 0.)"""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))


def param_groups(model: nn.Module, lr: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Trainable parameters in optimizer groups: ``model.backbone`` at ``lr × backbone_lr_scale`` (when the
    model has one and the scale is not 1), everything else at ``lr``; the last group is the head/probe."""
    backbone = getattr(model, "backbone", None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not isinstance(backbone, nn.Module) or backbone_lr_scale == 1.0:
        return [{"params": trainable, "lr": lr}]
    in_backbone = {id(p) for p in backbone.parameters()}
    groups = [{"params": [p for p in trainable if id(p) in in_backbone], "lr": lr * backbone_lr_scale},
              {"params": [p for p in trainable if id(p) not in in_backbone], "lr": lr}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over :func:`param_groups`, weight decay on every parameter."""
    groups = param_groups(model, settings.lr, settings.backbone_lr_scale)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None on CPU (AMP is GPU-only here) or with ``amp="off"``; ``auto`` = bf16 where the
    GPU supports it, else fp16."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device`` (non-blocking), in channels_last layout for 4-D image batches on CUDA."""
    if device.type == "cuda" and x.ndim == 4:
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)


def _prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, batches: Iterable, *, device: torch.device | str = "cpu", amp: str = "auto",
                      input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Top-1 accuracy of ``model`` in eval mode over ``batches`` of ``(x (B, ...), y (B,))`` (a DataLoader or a
    list of tensor pairs); autocast as in training. The model's train/eval mode is restored."""
    device = torch.device(device)
    dtype = resolve_amp(amp, device)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            x, y = to_device(x, device), y.to(device, non_blocking=True)
            if input_transform is not None:
                x = input_transform(x)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                pred = model(x).argmax(1)
            correct += int((pred == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


class TrainingLoop:
    """The training loop, resumable: :meth:`run` trains up to a step and returns; the next call goes on from
    there with the same optimiser, schedule, gradient scaler, random generators and place in the epoch, so a
    run done in pieces equals one done at once (bit for bit on CPU; with ``isolate_rng`` also when other runs
    train between the pieces). :func:`train` is one call of it.

    The schedule spans ``settings.epochs`` whatever the pieces; ``loader`` yields batches ``(x, y)``, is
    re-iterable and has a length. ``optimizer`` defaults to :func:`make_optimizer`; ``frozen`` is a submodule
    kept in eval mode (frozen BatchNorm statistics); ``input_transform`` maps each batch on the device to model
    input. ``on_step(StepInfo)`` runs after every step; a dict it returns is shown on the progress bar."""

    def __init__(self, model: nn.Module, loader: Iterable, settings: TrainSettings, *,
                 device: torch.device | str = "cpu", optimizer: torch.optim.Optimizer | None = None,
                 frozen: nn.Module | None = None, input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 on_step: Callable[[StepInfo], dict | None] | None = None, should_stop: Callable[[], bool] | None = None,
                 progress: bool = False, desc: str = "train", isolate_rng: bool = False):
        self.device = torch.device(device)
        self.steps_per_epoch = len(loader)  # type: ignore[arg-type]
        if self.steps_per_epoch == 0:
            raise ValueError("the loader yields no batches (fewer samples than one batch with drop_last?)")
        self.model, self.loader, self.frozen, self.input_transform = model, loader, frozen, input_transform
        self.on_step, self.should_stop, self.progress, self.desc = on_step, should_stop, progress, desc
        self.total = max(1, round(settings.epochs * self.steps_per_epoch))
        total, warmup = self.total, round(settings.warmup_fraction * self.total)
        _prepare_model(model, self.device)
        self.opt = optimizer or make_optimizer(model, settings)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, total, warmup, settings.schedule))
        self.dtype = resolve_amp(settings.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.clip = settings.grad_clip_norm
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.result = TrainResult()
        self._batches = None  # the current pass over the loader, when a run stopped inside it
        self._pending = None  # a batch drawn but not trained on yet
        self._pass = [0.0, 0]  # loss sum and images of the current pass
        # isolate_rng: this run's generator states are kept between pieces and the caller's restored after each,
        # so runs advanced in turns draw what each would draw alone
        self._rng = _rng_state() if isolate_rng else None

    @property
    def done(self) -> bool:
        return self.result.steps >= self.total

    def run(self, until_step: int | None = None, *, pause: Callable[[], bool] | None = None) -> TrainResult:
        """Train up to step ``until_step`` (default: the end), or until ``pause()`` returns True before a step;
        return the totals so far. Raises :class:`DivergedError` or :class:`Cancelled` (``should_stop``)."""
        until = self.total if until_step is None else min(int(until_step), self.total)
        result, batch = self.result, getattr(self.loader, "batch_size", None) or 1
        bar = tqdm(total=self.total * batch, initial=result.steps * batch, desc=self.desc, unit="img",
                   unit_scale=True, disable=not self.progress, leave=False)
        t_start, c_start, cb_s, cb_c = time.perf_counter(), time.process_time(), result.callback_seconds, result.callback_cpu_seconds
        outer = None if self._rng is None else _rng_state()
        if self._rng is not None:
            _set_rng_state(self._rng)
        try:
            while result.steps < until and not (pause is not None and pause()):
                if self._batches is None:
                    self._batches, self._pass = iter(self.loader), [0.0, 0]
                item, self._pending = self._pending or next(self._batches, None), None
                if item is None:  # the pass ended
                    self._end_pass()
                    continue
                self._step(*item, bar)
                if result.steps % self.steps_per_epoch == 0:  # the pass should end here: see that it does (the
                    # loader's sampler draws at its end), so no iterator is held while paused between epochs
                    self._pending = next(self._batches, None)
                    if self._pending is None:
                        self._end_pass()
        finally:
            if outer is not None:
                self._rng = _rng_state()
                _set_rng_state(outer)
            bar.close()
            result.seconds += time.perf_counter() - t_start - (result.callback_seconds - cb_s)
            result.cpu_seconds += time.process_time() - c_start - (result.callback_cpu_seconds - cb_c)
        if self.done and self._pass[1]:
            self._end_pass()
        return result

    def _end_pass(self) -> None:
        self.result.epoch_losses.append(self._pass[0] / max(self._pass[1], 1))
        self._batches, self._pass = None, [0.0, 0]

    def _step(self, x: torch.Tensor, y: torch.Tensor, bar) -> None:
        result, model, opt = self.result, self.model, self.opt
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"{self.desc}: cancelled at step {result.steps}")
        model.train()
        if self.frozen is not None:
            self.frozen.eval()
        x, y = to_device(x, self.device), y.to(self.device, non_blocking=True)
        if self.input_transform is not None:
            x = self.input_transform(x)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.loss_fn(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergedError(f"training loss became {value} at step {result.steps} "
                                f"(epoch {result.steps / self.steps_per_epoch:.2f})")
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip is not None:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.params, self.clip)
        lr = opt.param_groups[-1]["lr"]
        self.scaler.step(opt)
        self.scaler.update()
        self.sched.step()
        result.steps += 1
        result.images += len(y)
        self._pass[0] += value * len(y)
        self._pass[1] += len(y)
        bar.update(len(y))
        if self.on_step is not None:
            t_cb, c_cb = time.perf_counter(), time.process_time()
            shown = self.on_step(StepInfo(result.steps, result.steps / self.steps_per_epoch, value, y, lr))
            if shown:
                bar.set_postfix(shown, refresh=False)
            result.callback_seconds += time.perf_counter() - t_cb
            result.callback_cpu_seconds += time.process_time() - c_cb


def _rng_state() -> tuple:
    """The global generators' states (Python, NumPy, torch, and CUDA when it is initialised)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    py, np_state, torch_state, cuda = state
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def train(model: nn.Module, loader: Iterable, settings: TrainSettings, *, device: torch.device | str = "cpu",
          optimizer: torch.optim.Optimizer | None = None, frozen: nn.Module | None = None,
          input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
          on_step: Callable[[StepInfo], dict | None] | None = None, should_stop: Callable[[], bool] | None = None,
          progress: bool = False, desc: str = "train") -> TrainResult:
    """Train ``model`` in place for ``settings.epochs`` passes over ``loader``: one :meth:`TrainingLoop.run`
    (see :class:`TrainingLoop` for the arguments)."""
    return TrainingLoop(model, loader, settings, device=device, optimizer=optimizer, frozen=frozen,
                        input_transform=input_transform, on_step=on_step, should_stop=should_stop,
                        progress=progress, desc=desc).run()

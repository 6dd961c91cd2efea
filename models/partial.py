"""Partial fine-tuning: which part of a candidate trains (``Recipe.trainable``).

    all     every backbone parameter, the probe and the classifier train (a full fine-tune)
    top     the backbone's last stage, its head conv where it has one, the probe and the classifier
            train; everything below the last stage is frozen
    probe   the whole backbone is frozen; only the probe and the classifier train

What "the last stage" is comes from timm's own structure: ``model.feature_info`` lists the modules whose
outputs are the feature levels (one per reduction: ResNet ``layer1..4``, EfficientNet/MobileNet
``blocks.i``, ConvNeXt ``stages.i``, RegNet ``s1..4``). The frozen trunk is the model up to and including
the module of the second-to-last level (``feature_info[-2]``: stride 16 on ImageNet CNNs); the top is
everything after it, which computes the last level, then the head conv/norm and the pooling (EfficientNet
``blocks.5``-``blocks.6`` + ``conv_head``/``bn2``; ResNet ``layer4``; ConvNeXt ``stages.3`` + ``norm_pre``).

:func:`split_backbone` builds the two parts without copying weights twice: the trunk is the backbone run
until the split module returns (a forward hook stops it there); the top is a copy of the backbone whose
modules that run before the split (found by recording the call order of one forward pass) are replaced by
``nn.Identity``, so its ``forward`` maps the trunk's activation (B, C, h, w) to the pooled features (B, D).
That is only right when the backbone's forward is a chain of those modules, so every split is checked on
the spot: ``top(trunk(x))`` must equal ``backbone(x)`` on a random batch in eval mode (float32, relative
error ≤ 1e-4), or :class:`SplitError` refuses the candidate with the reason (a ViT adds its position
embedding between modules, for example). In ``probe`` mode the trunk is the whole backbone and the top is
``nn.Identity`` (the probe reads the cached pooled features).
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ncap.models.candidates import CandidateError
from ncap.models.memory import candidate_failure

__all__ = ["TRAINABLE", "SplitBackbone", "SplitError", "Trainable", "frozen_digest", "split_backbone",
           "split_module_name", "split_problem"]

TRAINABLE = ("all", "top", "probe")
Trainable = Literal["all", "top", "probe"]
SPLIT_RTOL = 1e-4  # max |top(trunk(x)) - backbone(x)| / max |backbone(x)| accepted by the split check


class SplitError(CandidateError):
    """The candidate's structure cannot be split into a frozen trunk and a trainable top."""


class _Stop(Exception):
    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output


class Trunk(nn.Module):
    """The frozen part: ``backbone`` run until the module at ``split`` returns (its output is the result), or
    the whole backbone (pooled features) when ``split`` is None. Always in eval mode, never with gradients."""

    def __init__(self, backbone: nn.Module, split: str | None):
        super().__init__()
        self.backbone, self.split = backbone, split
        self.backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> Trunk:  # the trunk's BatchNorm statistics never move
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split is None:
            return self.backbone(x)
        handle = self.backbone.get_submodule(self.split).register_forward_hook(_raise_output)
        try:
            self.backbone(x)
        except _Stop as stop:
            return stop.output
        finally:
            handle.remove()
        raise SplitError(f"the backbone never ran its module {self.split!r}")


def _raise_output(_module, _inputs, output):
    raise _Stop(output)


@dataclass
class SplitBackbone:
    """A backbone in two parts: ``trunk`` (frozen, (B, C, H, W) images → activation) and ``top`` (trainable,
    activation → pooled features (B, D)); ``frozen_names`` are the backbone's modules inside the trunk."""

    trunk: Trunk
    top: nn.Module
    split: str | None
    frozen_names: tuple[str, ...]

    @property
    def digest(self) -> str:
        return frozen_digest(self.trunk.backbone, self.frozen_names)


def split_module_name(backbone: nn.Module) -> str:
    """The module whose output the trunk stops at: ``feature_info[-2]``'s module (timm's second-to-last
    feature level). Raises :class:`SplitError` when the backbone has no usable ``feature_info``."""
    info = getattr(backbone, "feature_info", None)
    modules = [f.get("module") for f in info] if isinstance(info, list) else []
    if len(modules) < 2 or not all(isinstance(m, str) and m for m in modules):
        raise SplitError(f"{type(backbone).__name__} has no timm feature_info with two or more stages, so its last "
                         "stage cannot be told apart; use trainable='all' or 'probe'")
    return modules[-2]


def _call_order(backbone: nn.Module, split: str, x: torch.Tensor) -> list[str]:
    """Names of the children of ``split``'s ancestors (the root included) in the order their forward starts."""
    parts = split.split(".")
    ancestors = [".".join(parts[:i]) for i in range(len(parts))]
    order: list[str] = []
    handles = []
    for a in ancestors:
        parent = backbone.get_submodule(a) if a else backbone
        for name, child in parent.named_children():
            full = f"{a}.{name}" if a else name
            handles.append(child.register_forward_pre_hook(lambda _m, _i, n=full: order.append(n)))
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))


def _frozen_names(backbone: nn.Module, split: str, x: torch.Tensor) -> tuple[str, ...]:
    """The children (at each level of ``split``'s path) that run before ``split`` returns, and ``split``."""
    order = _call_order(backbone, split, x)
    if split not in order:
        raise SplitError(f"{type(backbone).__name__}: its module {split!r} does not run in forward")
    path = {".".join(split.split(".")[: i + 1]) for i in range(split.count(".") + 1)}
    before = order[: order.index(split)]
    return tuple(n for n in before if n not in path) + (split,)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _split_mismatch(backbone: nn.Module, trunk: Trunk, top: nn.Module, x: torch.Tensor) -> str | None:
    """None when ``top(trunk(x))`` equals ``backbone(x)`` (eval mode, :data:`SPLIT_RTOL`), else what differs."""
    top.eval()
    with torch.no_grad():
        full = backbone(x)
        try:
            err = _relative_error(top(trunk(x)), full)
        except Exception as exc:  # noqa: BLE001 - any failure of the top on the activation means: not a chain
            return f"fails: {candidate_failure(exc, width=200)}"
    return None if err <= SPLIT_RTOL else f"differs from the whole backbone by {err:.2g} relative"


def split_backbone(backbone: nn.Module, trainable: str, input_size: tuple[int, int, int]) -> SplitBackbone:
    """Split ``backbone`` (head-less timm model, forward → (B, D)) for ``trainable`` in ``("top", "probe")``.

    ``input_size`` (C, H, W) is the size the candidate is fed. The split is checked on a random batch (module
    docstring); :class:`SplitError` names the candidate's problem.
    """
    if trainable not in ("top", "probe"):
        raise ValueError(f"split_backbone splits for trainable 'top' or 'probe', got {trainable!r}")
    was_training = backbone.training
    backbone.eval()
    if trainable == "probe":
        return SplitBackbone(Trunk(backbone, None), nn.Identity(), None, tuple(n for n, _ in backbone.named_children()))
    split = split_module_name(backbone)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *input_size, generator=gen)
    frozen = _frozen_names(backbone, split, x)
    top = copy.deepcopy(backbone)
    for name in frozen:
        parent, _, leaf = name.rpartition(".")
        setattr(top.get_submodule(parent) if parent else top, leaf, nn.Identity())
    trunk = Trunk(backbone, split)
    problem = _split_mismatch(backbone, trunk, top, x)
    if problem:
        raise SplitError(f"{type(backbone).__name__}: its forward is not a chain of stages at {split!r} (the top "
                         f"on the trunk's output {problem}); use trainable='all' or 'probe'")
    for p in top.parameters():
        p.requires_grad_(True)
    top.train(was_training)
    return SplitBackbone(trunk, top, split, frozen)


def frozen_digest(backbone: nn.Module, names: tuple[str, ...]) -> str:
    """SHA-256 of the frozen modules' names, tensor names, shapes, dtypes and bytes (parameters and buffers:
    BatchNorm statistics included): the activation cache's key for the frozen weights."""
    h = hashlib.sha256()
    for name in names:
        for key, t in backbone.get_submodule(name).state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}.{key}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def split_problem(spec, trainable: str, image_size: int | None = None) -> str | None:
    """Why candidate ``spec`` (a :class:`~ncap.models.candidates.CandidateSpec`) cannot train with
    ``trainable``, or None when it can: its architecture, with random weights (the structure is what
    matters), is split and checked at the size the run feeds it. Used before any training starts."""
    from ncap.models.candidates import CandidateSpec, create_backbone

    if trainable == "all":
        return None
    backbone, _, cfg = create_backbone(CandidateSpec(spec.name, spec.arch, source="random", kwargs=spec.kwargs))
    c, h, w = cfg["input_size"]
    try:
        split_backbone(backbone, trainable, (c, image_size or h, image_size or w))
    except SplitError as exc:
        return f"cannot train with trainable={trainable!r}: {exc}"
    except Exception as exc:  # noqa: BLE001 - e.g. an input size the architecture cannot take: said in one line
        return f"cannot train with trainable={trainable!r}: {candidate_failure(exc, width=200)}"
    return None

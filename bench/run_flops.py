"""Compute of a benchmark run in floating-point operations, from its record: what benchmark v3's "fraction of
the truth's compute" counts (issue 21 allows CPU time or FLOPs). CPU seconds of a run grow with whatever else
the machine runs (two processes on two cores spin in OpenMP and can double each other's CPU time), FLOPs do
not, and the runs of one task are recorded over hours.

Every pass is counted, per image, with forward FLOPs from ``torch.utils.flop_counter`` at the run's input size:

* caching (``trainable`` top/probe): the frozen trunk, once per cached view of every training image and once
  per validation image;
* training: 3 x the forward FLOPs of what trains (the backward pass is about twice the forward), over every
  epoch's training images: the top and the probe on cached activations, or the whole backbone (``all``);
* training-free scores (LogME, LEEP, ...; :func:`static_flops`): one forward pass of the whole backbone over the
  training images;
* validation: one forward pass of what trains over the validation images at every observation (β_eff is
  measured on a few hundred of those same images' probe features: its cost is the probe's, counted there).
"""
from __future__ import annotations

import functools

__all__ = ["forward_flops", "probe_flops", "run_flops", "static_flops"]


@functools.cache
def forward_flops(entry: str, trainable: str, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(frozen trunk, trained part) forward FLOPs per image of candidate ``entry``'s backbone at
    ``input_size`` (C, H, W); the trunk is 0 for ``trainable="all"``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ncap.models.candidates import CandidateSpec, create_backbone
    from ncap.models.partial import split_backbone
    from ncap.models.registry import candidate_config

    cfg = candidate_config(entry)
    backbone = create_backbone(CandidateSpec(entry, cfg.arch, source="random", kwargs=cfg.kwargs))[0].eval()
    x = torch.zeros(1, *input_size)

    def count(module) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
        return int(counter.get_total_flops())

    full = count(backbone)
    if trainable == "all":
        return 0, full
    trunk = count(split_backbone(backbone, trainable, tuple(input_size)).trunk)
    return trunk, full - trunk


def probe_flops(record: dict) -> int:
    """Forward FLOPs per image of the probe's hidden layers (ReLU MLP: feature_dim -> width x depth; the
    classifier's width x classes is left out: under 0.1 % of any backbone here)."""
    recipe = record["recipe"]
    width, depth, dim = recipe["probe_width"], recipe["probe_depth"], record["feature_dim"] or 0
    return 2 * (dim * width + (depth - 1) * width * width)


def run_flops(record: dict, n_train: int, n_val: int, upto: int | None = None) -> float:
    """FLOPs of the run in ``record`` (a benchmark record: recipe, trainable, input size, observations) on a
    task with ``n_train`` / ``n_val`` images, up to observation ``upto`` (None: the whole run)."""
    recipe, epochs = record["recipe"], record["epoch"]
    observations = len(epochs) if upto is None else upto + 1
    trained_epochs = float(epochs[observations - 1]) if observations else 0.0
    trunk, trained = forward_flops(record["entry"], record["trainable"], tuple(record["input_size"]))
    trained += probe_flops(record)
    views = recipe["cached_views"] if recipe["augmentation"] != "none" else 1
    caching = (views * n_train + n_val) * trunk if record["trainable"] != "all" else 0
    return float(caching + 3 * trained * n_train * trained_epochs + observations * n_val * trained)


def static_flops(record: dict, n_train: int) -> float:
    """FLOPs of a candidate's training-free scores: one forward pass of its whole backbone over the ``n_train``
    training images at the input size of ``record`` (any run of that candidate)."""
    return float(sum(forward_flops(record["entry"], record["trainable"], tuple(record["input_size"]))) * n_train)

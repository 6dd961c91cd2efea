"""The benchmark's runs, each cached on disk as soon as it finishes (so the benchmark resumes where it stopped).

* **fine-tunes** (:func:`cached_run`): one :class:`BenchRecipe` × task × candidate, the harness's
  :class:`~ncap.models.harness.CandidateRun` as JSON. The truth runs (one recipe per seed) and ncap's short
  run (the ``ncap rank`` defaults) are all fine-tunes with different recipes;
* **training-free scores** (:func:`cached_static_scores`): LogME, H-score, LEEP and NCE of the candidate's
  pretrained weights on the task's training split, at the benchmark's resolution.

Cache: ``$NCAP_CACHE/bench/v2/<recipe key>/<task>-<task key>/<candidate>-<weights key>.json`` and
``$NCAP_CACHE/bench/v2/static-<key>/<task>-<task key>/<candidate>-<weights key>.json``; ``--rebuild`` ignores
it. The task key hashes the task's split definition (:meth:`ncap.bench.tasks.Task.key`).
The weights key hashes the candidate's architecture and weight file (a zoo entry's file name carries its
pretraining recipe hash), so retrained weights never reuse stale runs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ncap.bench.tasks import Task
from ncap.jsonsafe import write_json
from ncap.models.harness import fine_tune_candidate
from ncap.models.paths import cache_root as ncap_cache_root
from ncap.models.recipe import Recipe

__all__ = ["BenchRecipe", "cache_root", "cached_run", "cached_static_scores", "source_head"]

CACHE_VERSION = "v2"
SOURCE_CLASSES = 1000  # the head of a random initialisation: timm's default, ImageNet-1k's classes


@dataclass(frozen=True)
class BenchRecipe:
    """A fine-tuning :class:`Recipe` plus the split caps of quick mode. Its cache key hashes both."""

    recipe: Recipe
    max_train: int | None = None
    max_val: int | None = None

    def as_dict(self) -> dict:
        return {**self.recipe.to_dict(), "max_train": self.max_train, "max_val": self.max_val}

    def key(self) -> str:
        blob = json.dumps({"recipe": self.recipe.run_dict(), "max_train": self.max_train, "max_val": self.max_val,
                           "v": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    """The benchmark's runs: ``$NCAP_CACHE/bench/v2``."""
    return ncap_cache_root() / "bench" / CACHE_VERSION


def weights_key(spec) -> str:
    """Short hash of what defines a candidate's starting point: architecture, source, weight file name."""
    blob = json.dumps([spec.arch, spec.source, Path(spec.weights).name if spec.weights else None,
                       sorted((spec.kwargs or {}).items())], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def run_path(recipe: BenchRecipe, task: Task, spec) -> Path:
    return cache_root() / recipe.key() / f"{task.name}-{task.key()}" / f"{spec.name}-{weights_key(spec)}.json"


def is_cached(recipe: BenchRecipe, task: Task, spec) -> bool:
    return run_path(recipe, task, spec).is_file()


def cached_run(spec, task: Task, recipe: BenchRecipe, *, rebuild: bool = False, progress: bool = False) -> dict:
    """The fine-tune of ``spec`` on ``task``'s fixed split with ``recipe``: loaded from the cache, or run
    and cached. The dict is :meth:`CandidateRun.to_dict` plus ``task``, ``recipe`` and ``recipe_key``."""
    path = run_path(recipe, task, spec)
    if path.is_file() and not rebuild:
        return json.loads(path.read_text())
    train, val = task.split(recipe.max_train, recipe.max_val)
    run = fine_tune_candidate(spec, train, val, recipe.recipe, progress=progress)
    doc = {"task": task.name, "recipe": recipe.as_dict(), "recipe_key": recipe.key(), **run.to_dict()}
    write_json(path, doc)
    return doc


# ------------------------------------------------------------------------------- training-free scores
def source_head(spec) -> torch.nn.Linear | None:
    """The candidate's source classifier on its pooled features, or None where none exists.

    The backbone loads the one way candidates load (:func:`~ncap.models.candidates.create_backbone`). A weight
    file whose classifier the loader removed (the wheel-shipped ImageNet models: their order remap's
    ``head_dropped``) gives that classifier; a random initialisation has its own random head (timm's 1000-way
    classifier, seeded); the zoo saves backbones only, so zoo candidates have none.
    """
    from ncap.models.candidates import create_backbone
    from ncap.models.checkpoint import read_state_dict

    if spec.source == "random":
        torch.manual_seed(0)
        headed = replace(spec, kwargs={"num_classes": SOURCE_CLASSES, **spec.kwargs})
        head = create_backbone(headed)[0].get_classifier()
        return head if isinstance(head, torch.nn.Linear) and head.out_features > 0 else None
    remap = getattr(create_backbone(spec)[0], "ncap_weight_remap", None) or {}
    dropped = remap.get("head_dropped") or ()
    if len(dropped) != 2:
        return None
    sd, _ = read_state_dict(remap["file"])
    weight, bias = sd[dropped[0]], sd[dropped[1]]
    if weight.ndim != 2 or bias.shape != weight.shape[:1]:
        return None
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head


@torch.no_grad()
def pooled_features(spec, ds, image_size: int | None) -> np.ndarray:
    """Pooled features (n, D) of the pretrained backbone on ``ds`` (eval mode, eval transform), float64."""
    from ncap.models.candidates import create_backbone
    from ncap.models.data import candidate_transforms, make_loader

    torch.manual_seed(0)  # a random initialisation is the same one every time
    backbone, _, cfg = create_backbone(spec)
    backbone.eval()
    _, eval_tf, input_size = candidate_transforms(cfg, image_size=image_size, augmentation="none")
    loader = make_loader(ds, eval_tf, input_size[0], batch_size=128, num_workers=0)
    return torch.cat([backbone(x) for x, _ in loader]).double().numpy()


def static_scores(spec, task: Task, recipe: BenchRecipe) -> dict:
    """LogME, H-score (every candidate), LEEP and NCE (where :func:`source_head` exists) on the training split."""
    from ncap.bench.logme import logme_score
    from ncap.bench.transferability import h_score, leep, nce

    train, _ = task.split(recipe.max_train, recipe.max_val)
    feats = pooled_features(spec, train, recipe.recipe.image_size)
    out = {"logme": float(logme_score(feats, train.y)), "h-score": float(h_score(feats, train.y)),
           "leep": None, "nce": None, "n_source_classes": None}
    head = source_head(spec)
    if head is not None:
        with torch.no_grad():
            logits = head(torch.as_tensor(feats, dtype=torch.float32)).double()
        probs = torch.softmax(logits, 1).numpy()
        out.update(leep=float(leep(probs, train.y)), nce=float(nce(probs.argmax(1), train.y)),
                   n_source_classes=int(probs.shape[1]))
    return out


def cached_static_scores(spec, task: Task, recipe: BenchRecipe, *, rebuild: bool = False) -> dict:
    """:func:`static_scores`, cached per task split, resolution and candidate weights."""
    blob = json.dumps([recipe.max_train, recipe.max_val, recipe.recipe.image_size, CACHE_VERSION])
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    path = cache_root() / f"static-{key}" / f"{task.name}-{task.key()}" / f"{spec.name}-{weights_key(spec)}.json"
    if path.is_file() and not rebuild:
        return json.loads(path.read_text())
    doc = static_scores(spec, task, recipe)
    write_json(path, doc)
    return doc

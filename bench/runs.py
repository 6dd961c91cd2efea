"""Full fine-tunes with their whole trajectory, cached on disk with the recipe that produced them.

One full run per (candidate, task) gives both the ground truth (validation accuracy at the end of the
full budget) and every early signal (the prefix of the same run: with fixed seeds, stopping after k
epochs is the same as the first k epochs of the full run). Cache:
``$NCAP_CACHE/bench/<recipe hash>/<task>/<candidate>.json``; ``--rebuild`` ignores it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ncap.bench import options
from ncap.bench.tasks import make_task
from ncap.models.data import prepare_batch, split_dataset
from ncap.models.harness import CandidateRun, fine_tune_candidate
from ncap.models.paths import cache_root as ncap_cache_root
from ncap.models.recipe import Recipe


@dataclass(frozen=True)
class BenchRecipe:
    """The benchmark's full fine-tune: a :class:`Recipe` (``epochs`` = the full budget) plus the training-set
    cap of quick mode. Its cache key is a hash of both."""

    recipe: Recipe
    max_train: int | None = None  # subsample the training split (quick mode)

    @classmethod
    def make(cls, full_epochs: int, evals_per_epoch: int, extra_variants_until: float, max_train: int | None = None,
             **recipe_fields) -> BenchRecipe:
        """Every candidate records all three variants (the extra ones only in the early window: cost)."""
        recipe = Recipe(epochs=full_epochs, evals_per_epoch=evals_per_epoch, variant="default",
                        extra_variants=("support", "magnitude"), extra_variants_until=extra_variants_until,
                        **{"probe_width": options.PROBE_WIDTH, "seed": options.SEED, **recipe_fields})
        return cls(recipe, max_train)

    @property
    def full_epochs(self) -> int:
        return self.recipe.epochs

    @property
    def evals_per_epoch(self) -> int:
        return self.recipe.evals_per_epoch

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def as_dict(self) -> dict:
        """The recipe's fields plus ``full_epochs`` and ``max_train`` (for result files)."""
        return {**self.recipe.to_dict(), "full_epochs": self.full_epochs, "max_train": self.max_train}

    def key(self) -> str:
        blob = json.dumps({"recipe": self.recipe.to_dict(), "max_train": self.max_train, "v": 2}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    """The benchmark's runs: ``$NCAP_CACHE/bench``."""
    return ncap_cache_root() / "bench"


def task_split(task: str, recipe: BenchRecipe):
    train, val = split_dataset(make_task(task, seed=recipe.seed), val_fraction=0.2, seed=recipe.seed)
    if recipe.max_train and len(train.y) > recipe.max_train:
        from ncap.models.data import sample_per_class

        train = sample_per_class(train, recipe.max_train // len(train.class_names), seed=recipe.seed)
    return train, val


def full_run(spec, task: str, recipe: BenchRecipe, rebuild: bool = False, progress: bool = True) -> dict:
    """The cached full fine-tune of ``spec`` on ``task``, plus LogME of its pretrained features."""
    path = cache_root() / recipe.key() / task / f"{spec.name}.json"
    if path.is_file() and not rebuild:
        return json.loads(path.read_text())
    train, val = task_split(task, recipe)
    run: CandidateRun = fine_tune_candidate(spec, train, val, recipe.recipe, progress=progress)
    out = {"task": task, "recipe": recipe.as_dict(), "recipe_key": recipe.key(), **run.to_dict(),
           "logme": logme_of(spec, train, recipe)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def logme_of(spec, train, recipe: BenchRecipe) -> float:
    """LogME of the pretrained backbone's pooled features on the target training split (training-free)."""
    from ncap.bench.logme import logme_score
    from ncap.models.candidates import create_backbone

    torch.manual_seed(recipe.seed)
    backbone, _, cfg = create_backbone(spec)
    backbone.eval()
    c, side = cfg["input_size"][0], recipe.recipe.image_size  # the size the fine-tunes see
    x = prepare_batch(train.x, input_size=(c, side, side), mean=cfg["mean"], std=cfg["std"])
    with torch.no_grad():
        feats = torch.cat([backbone(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy().astype(np.float64)
    return float(logme_score(feats, train.y))

"""Full fine-tunes with their whole trajectory, cached on disk with the recipe that produced them.

One full run per (candidate, task) gives both the ground truth (validation accuracy at the end of the
full budget) and every early signal (the prefix of the same run: with fixed seeds, stopping after k
epochs is the same as the first k epochs of the full run). Cache:
``$NCAP_CACHE/bench/<recipe hash>/<task>/<candidate>.json``; ``--rebuild`` ignores it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ncap.bench import options
from ncap.bench.tasks import make_task
from ncap.capacitance.beta_eff import MAX_MAGNITUDE_FLOPS
from ncap.models.data import prepare_batch, split_dataset
from ncap.models.harness import CandidateRun, HarnessConfig, fine_tune_candidate

# Fields added after runs were cached: at these defaults they are left out of the key, so old caches stay valid.
_LATER_HARNESS_FIELDS = {"track_beta": True, "max_magnitude_flops": MAX_MAGNITUDE_FLOPS}
_LATER_RECIPE_FIELDS = {"max_magnitude_flops": MAX_MAGNITUDE_FLOPS}


@dataclass
class BenchRecipe:
    full_epochs: int = 12
    probe_width: int = options.PROBE_WIDTH
    evals_per_epoch: int = 4
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = options.SEED
    extra_variants_until: float = 1.5  # support/magnitude recorded only in the early window (cost)
    max_train: int | None = None  # subsample the training split (quick mode)
    max_magnitude_flops: float = MAX_MAGNITUDE_FLOPS  # the width sweep raises it for w = 128

    def harness_config(self) -> HarnessConfig:
        return HarnessConfig(epochs=self.full_epochs, probe_width=self.probe_width, evals_per_epoch=self.evals_per_epoch,
                             lr=self.lr, batch_size=self.batch_size, seed=self.seed, variant="default",
                             extra_variants=("support", "magnitude"), extra_variants_until=self.extra_variants_until,
                             max_magnitude_flops=self.max_magnitude_flops)

    def key(self) -> str:
        blob = json.dumps({**_without_defaults(self.__dict__, _LATER_RECIPE_FIELDS),
                           "harness": _without_defaults(self.harness_config().to_dict(), _LATER_HARNESS_FIELDS),
                           "v": 1}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _without_defaults(fields: dict, later: dict) -> dict:
    return {k: v for k, v in fields.items() if not (k in later and v == later[k])}


def cache_root() -> Path:
    return Path(os.environ.get("NCAP_CACHE", Path.home() / ".cache" / "ncap")) / "bench"


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
    run: CandidateRun = fine_tune_candidate(spec, train, val, recipe.harness_config(), progress=progress)
    out = {"task": task, "recipe": recipe.__dict__, "recipe_key": recipe.key(), **run.to_dict(),
           "logme": logme_of(spec, train, recipe)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def logme_of(spec, train, recipe: BenchRecipe) -> float:
    """LogME of the pretrained backbone's pooled features on the target training split (training-free)."""
    from ncap.capacitance.logme import logme_score
    from ncap.models.candidates import create_backbone

    torch.manual_seed(recipe.seed)
    backbone, _, cfg = create_backbone(spec)
    backbone.eval()
    c, side = cfg["input_size"][0], recipe.harness_config().image_size  # the size the fine-tunes see
    x = prepare_batch(train.x, input_size=(c, side, side), mean=cfg["mean"], std=cfg["std"])
    with torch.no_grad():
        feats = torch.cat([backbone(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy().astype(np.float64)
    return float(logme_score(feats, train.y))

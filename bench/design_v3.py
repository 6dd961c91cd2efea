"""Selection benchmark v3's design: real transfer at native size, candidates as (model, training regime) pairs.

Tasks (``bench.tasks.TASKS_V3``; each a fixed stratified split, whatever the run seed). Chosen, with their
roles, on 2026-12-07, before any v3 result existed:

=====================  ==================================================  =========  ======  =========
task                   images                                              role       real    train/val
=====================  ==================================================  =========  ======  =========
elpv-mono              elpv monocrystalline cells (300 px), 4 grades       dev        yes     500 / 574
elpv-mono-defect       the same cells, defective or not                    dev        yes     500 / 574
digits                 scikit-learn digits (8×8)                           dev        no      500 / 1297
elpv-poly              elpv polycrystalline cells (300 px), 4 grades       held out   yes     500 / 1050
animal-mnist-inverted  animal silhouettes, pool B, inverted                held out   no      500 / 1000
=====================  ==================================================  =========  ======  =========

The held-out real task uses other cells than every development task (poly against mono): a defect task over
all cells would have put held-out images into development. v2 ran elpv-poly at 64 px (its results were seen,
as v2's held-out task); v3 runs it at native size with other candidates and regimes.

Candidates: (model, regime) pairs, as in Quick-Tune. ``regime`` is ``Recipe.trainable``:

* the four ImageNet models (PyPI wheels) under ``top`` and under ``probe`` (8);
* the self-pretrained zoo (MNIST-5k and animal-mnist sources; ResNet-18, MobileNetV3-S, ConvNeXt-atto) under
  ``all``, at their native 32 px, 1 channel (6);
* random initialisations: ResNet-18 under ``top``, EfficientNet-Lite0 under ``probe`` (2).

Every candidate runs at its native input size (timm's data config; the ImageNet models 224-260 px, images
upsampled by timm's transform).

Runs per (task, candidate), each recorded as a small JSON under ``bench/results/selection-v3/runs/``:

* ``short``: ``ncap rank`` itself: ``Recipe`` defaults with the candidate's ``trainable``, through the same
  harness (4 epochs, batch 64, light augmentation, 2 observations per epoch, ``support`` variant; ``default``
  recorded too). Two settings that do not change what is learned differ: no loader worker processes (so the
  process's CPU time counts all the work) and no latency measurement;
* ``short-dense``: the same with 8 observations per epoch (new idea (c): more β_eff observations per run;
  cheap on cached activations);
* ``seed0``..``seed4``: the truth, 10 epochs of the same recipe (its own warm-up + cosine to 0), 5 seeds.
  Seed 0 observes 4 times per epoch up to epoch 5 with β_eff (new idea (b): β_eff read on the prefix of the
  full schedule), then once per epoch; seeds 1-4 observe only at the end, without β_eff.

Calibration (:data:`CALIBRATION`): one seed of ``trainable=all`` at :data:`CALIBRATION_SIZE` px for the four
ImageNet models on elpv-mono, 10 epochs; its agreement with the ``top`` truth is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

from ncap.bench.tasks import TASKS_V3
from ncap.models.recipe import Recipe

__all__ = ["CALIBRATION", "CANDIDATES", "DESIGN_DATE", "RUN_LABELS", "TRUTH_SEEDS", "Candidate", "run_recipe"]

DESIGN_DATE = "2026-12-07"
TRUTH_EPOCHS = 10
TRUTH_SEEDS = (0, 1, 2, 3, 4)
DENSE_UNTIL = 5.0  # seed 0 observes 4x per epoch up to here (the prefix read by new idea (b))
RUN_LABELS = ("short", "short-dense", *(f"seed{s}" for s in TRUTH_SEEDS))
EXTRA_VARIANTS = ("default",)
IMAGENET = ("mobilenetv2_100.tv_in1k", "efficientnet_lite0.in1k", "efficientnet_lite1.in1k", "efficientnet_lite2.in1k")
ZOO = ("resnet18-mnist", "mobilenetv3-mnist", "convnext-mnist", "resnet18-animal", "mobilenetv3-animal",
       "convnext-animal")
CALIBRATION_TASK = "elpv-mono"
CALIBRATION_SIZE = 128


@dataclass(frozen=True)
class Candidate:
    """A (model, regime) pair: ``entry`` in ncap's candidate grammar, ``trainable`` its training regime."""

    entry: str
    trainable: str

    @property
    def name(self) -> str:
        return f"{self.entry}@{self.trainable}"


CANDIDATES: tuple[Candidate, ...] = (
    *(Candidate(m, r) for m in IMAGENET for r in ("top", "probe")),
    *(Candidate(z, "all") for z in ZOO),
    Candidate("resnet18=random", "top"),
    Candidate("efficientnet_lite0=random", "probe"),
)
CALIBRATION: tuple[Candidate, ...] = tuple(Candidate(m, "all") for m in IMAGENET)
TASKS = tuple(TASKS_V3)


# Recipe.cached_views when this design was fixed (2026-12-07) and its first 250 runs were recorded; pinned, so
# that the product's default (measured afterwards: bench/results/partial_views.md) can change without
# invalidating them
CACHED_VIEWS = 2


def run_recipe(candidate: Candidate, label: str) -> Recipe:
    """The recipe of one run (module docstring): ``short``, ``short-dense``, ``seedN`` or ``calibration``."""
    base = {"trainable": candidate.trainable, "num_workers": 0, "measure_latency": False,
            "extra_variants": EXTRA_VARIANTS, "cached_views": CACHED_VIEWS}
    if label == "short":
        return Recipe(**base)
    if label == "short-dense":
        return Recipe(**base, evals_per_epoch=8)
    if label == "calibration":
        return Recipe(**base, epochs=TRUTH_EPOCHS, image_size=CALIBRATION_SIZE, evals_per_epoch=1,
                      extra_variants_until=DENSE_UNTIL)
    seed = int(label.removeprefix("seed"))
    if seed == 0:
        early = [j / 4 for j in range(1, int(DENSE_UNTIL * 4) + 1)]
        late = [float(e) for e in range(int(DENSE_UNTIL) + 1, TRUTH_EPOCHS + 1)]
        return Recipe(**base, epochs=TRUTH_EPOCHS, seed=0, observe_at_epochs=early + late,
                      extra_variants_until=DENSE_UNTIL)
    return Recipe(**{**base, "extra_variants": ()}, epochs=TRUTH_EPOCHS, seed=seed, track_beta=False,
                  observe_at_epochs=[float(TRUTH_EPOCHS)])


def describe() -> dict:
    """The design as a JSON-able dict (results.json's ``design``)."""
    return {"date": DESIGN_DATE, "tasks": {t: {"role": "held out" if TASKS_V3[t].held_out else "dev",
                                               "real_images": TASKS_V3[t].real_images,
                                               "n_train": TASKS_V3[t].n_train, "n_val": TASKS_V3[t].n_val}
                                           for t in TASKS},
            "candidates": [c.name for c in CANDIDATES], "runs": list(RUN_LABELS),
            "truth": f"mean final validation accuracy over seeds {list(TRUTH_SEEDS)} of a {TRUTH_EPOCHS}-epoch "
                     "fine-tune in the candidate's regime at its native size",
            "calibration": {"task": CALIBRATION_TASK, "image_size": CALIBRATION_SIZE,
                            "candidates": [c.name for c in CALIBRATION]}}

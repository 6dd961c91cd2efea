"""Target tasks of the model-selection benchmark (all offline, all real 10-class problems).

The zoo is pretrained on MNIST-5k; the targets are built from scikit-learn's digits (a different
dataset: 8×8 scans of other writers), so transfer is real but not trivial:

    digits           the 1 797 digits as they are
    digits-noisy     Gaussian pixel noise (σ = 0.25) and random ±1-pixel shifts
    digits-lowres    4×4 block-averaged then shown at 8×8 (resolution shift)
    digits-inverted  1 − x (contrast inversion: a domain shift) — HELD OUT: never used to choose defaults
"""
from __future__ import annotations

import numpy as np

from ncap.models.data import ImageDataset, load_dataset

HELD_OUT = "digits-inverted"


def _noisy(ds: ImageDataset, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    x = ds.x + rng.normal(0, 0.25, ds.x.shape).astype(np.float32)
    shifts = rng.integers(-1, 2, size=(len(x), 2))
    x = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(x, shifts)])
    return ImageDataset(np.clip(x, 0, 1), ds.y, ds.class_names, "digits-noisy")


def _lowres(ds: ImageDataset) -> ImageDataset:
    n, c, h, w = ds.x.shape
    small = ds.x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))
    return ImageDataset(small.repeat(2, axis=2).repeat(2, axis=3), ds.y, ds.class_names, "digits-lowres")


def _inverted(ds: ImageDataset) -> ImageDataset:
    return ImageDataset(1.0 - ds.x, ds.y, ds.class_names, "digits-inverted")


def make_task(name: str, seed: int = 0) -> ImageDataset:
    base = load_dataset("digits")
    builders = {"digits": lambda: base, "digits-noisy": lambda: _noisy(base, seed),
                "digits-lowres": lambda: _lowres(base), "digits-inverted": lambda: _inverted(base)}
    if name not in builders:
        raise KeyError(f"unknown benchmark task {name!r}; known: {', '.join(builders)}")
    return builders[name]()


TASKS = ("digits", "digits-noisy", "digits-lowres", HELD_OUT)

"""One topology update of one sparse layer: prune by magnitude, regrow the same number (sources/002 §4.3).

* Prune rate p(t) = p0 · (1 + cos(π t / T)) / 2 (eq. 5, :func:`cosine_prune_rate`); the layer prunes
  n = round(p(t) · active) of its active weights with the smallest |w| (eq. 7), exactly n, ties broken
  towards the lower flat index.
* Regrow exactly n inactive weights (so per-layer sparsity is unchanged) by one rule (Table 1):
  ``random`` (SET, eq. 8: uniform among the candidates), ``gradient`` (RigL, eq. 9: largest |∂E/∂w|),
  ``momentum`` (SNFS, eq. 11: largest |momentum|; the optimiser's momentum buffer, see
  :mod:`ncap.models.sparse.dst`). Ties again go to the lower flat index.
* Candidates for regrowth are the weights inactive *before* the update: a slot pruned in this update is
  not regrown in the same update (``exclude_pruned=True``, the default). RigL's reference implementation
  scores the just-pruned slots too; ``exclude_pruned=False`` does that (a slot pruned and regrown at once
  restarts at zero). If fewer candidates exist than n (density > 1/(1 + p)), n shrinks to their number.

Selection is exact but avoids sorting whole layers, which would cost more than the 1 %-of-an-epoch budget
(bench/results/sparse_lab/speed.md): a threshold from a strided subsample keeps a few times n entries, and
the exact top n is taken among them (:func:`top_k_exact`, checked against a full argsort in the tests).
Everything runs on numpy views of CPU tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["REGROW_RULES", "LayerUpdate", "cosine_prune_rate", "top_k_exact", "update_layer", "zero_entries"]

REGROW_RULES = ("random", "gradient", "momentum")


def cosine_prune_rate(step: int, total_steps: int, p0: float) -> float:
    """p(t) = p0 · (1 + cos(π t / T)) / 2, and 0 from t ≥ T on (sources/002 eq. 5)."""
    if total_steps <= 0 or step >= total_steps:
        return 0.0
    return float(p0) * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _exact_among(idx: np.ndarray, vals: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` entries of ``idx`` (ascending) with the largest ``vals``, ties to the lower index; ascending."""
    if k >= idx.size:
        return idx
    kth = np.partition(vals, idx.size - k)[idx.size - k]
    keep = vals > kth
    keep[np.flatnonzero(vals == kth)[: k - int(np.count_nonzero(keep))]] = True
    return idx[keep]


def top_k_exact(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the ``k`` largest ``scores`` outside ``exclude`` (bool, same size; None = none excluded).

    Exact, ties to the lower index, returned ascending. A strided subsample sets a threshold expected to
    keep ~1.5k candidates (the estimate's error is a few %); the exact top k is taken among those (falling back to all candidates).
    """
    scores = np.asarray(scores).reshape(-1)
    k = int(k)
    if k <= 0:
        return np.zeros(0, np.int64)
    n_cand = scores.size - (0 if exclude is None else int(np.count_nonzero(exclude)))
    stride = max(1, scores.size // 8192)
    sub = scores[::stride] if exclude is None else scores[::stride][~exclude[::stride]]
    q = 1.0 - min(1.0, 1.5 * k / n_cand + 32.0 / max(sub.size, 1))
    keep = np.zeros(0, np.int64)
    if n_cand > k and sub.size >= 64 and q > 0:
        keep = np.flatnonzero(scores >= np.quantile(sub, q))
        if exclude is not None:
            keep = keep[~exclude[keep]]
    if keep.size < k:  # too few above the threshold (or a small layer): all candidates
        keep = np.arange(scores.size) if exclude is None else np.flatnonzero(~exclude)
    return _exact_among(keep, scores[keep], k)


def _random_among(exclude: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct flat indices drawn uniformly among the entries not in ``exclude`` (bool), ascending.

    Uniform draws land in a bitmap (excluded ones dropped) until it holds at least ``k`` distinct candidates;
    by symmetry that pool is a uniformly random subset, and dropping a uniformly random part of it leaves a
    uniform ``k``-subset. No sort: the bitmap is read back in order.
    """
    n_cand = exclude.size - int(np.count_nonzero(exclude))
    if k >= n_cand:
        return np.flatnonzero(~exclude)
    if n_cand < exclude.size // 4:
        return np.sort(rng.choice(np.flatnonzero(~exclude), size=k, replace=False))
    seen = np.zeros(exclude.size, bool)
    pool = np.zeros(0, np.int64)
    while pool.size < k:
        draw = rng.integers(0, exclude.size, size=int(1.2 * (k - pool.size) * exclude.size / n_cand) + 16)
        seen[draw[~exclude[draw]]] = True
        pool = np.flatnonzero(seen)
    keep = np.ones(pool.size, bool)
    keep[rng.choice(pool.size, size=pool.size - k, replace=False)] = False
    return pool[keep]


@dataclass
class LayerUpdate:
    """Flat indices pruned and regrown in one update of one layer (ascending; disjoint by default), and the
    active ones before (``active``, what Δ̂ per free slot needs) and after it (``after``)."""

    pruned: np.ndarray
    grown: np.ndarray
    active: np.ndarray | None = None
    after: np.ndarray | None = None


def zero_entries(t: torch.Tensor, flat: np.ndarray) -> None:
    """Set the entries at flat indices ``flat`` of ``t`` to 0 in place (through a numpy view on CPU: 3x faster
    than torch's index_put here; call it outside autograd, between optimiser steps)."""
    if t.device.type == "cpu" and t.is_contiguous():
        t.detach().numpy().reshape(-1)[flat] = 0
    else:
        t.data.view(-1)[torch.from_numpy(flat).to(t.device)] = 0


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).cpu().numpy()


@torch.no_grad()
def update_layer(weight: torch.Tensor, mask: torch.Tensor, fraction: float, rule: str, *,
                 score: torch.Tensor | None = None, rng: np.random.Generator | None = None,
                 exclude_pruned: bool = True, active: np.ndarray | None = None) -> LayerUpdate:
    """Prune ``round(fraction · active)`` weights by magnitude and regrow as many by ``rule``, in place.

    ``mask`` (bool, weight's shape) and ``weight`` are updated: pruned and regrown weights are set to 0.
    ``score`` is the tensor whose magnitude ranks regrowth candidates (the gradient for ``gradient``, the
    momentum buffer for ``momentum``); ``rng`` draws for ``random``. ``active``: the mask's flat active
    indices if the caller has them (``LayerUpdate.after`` of the previous update), saving a scan.
    """
    if rule not in REGROW_RULES:
        raise ValueError(f"unknown regrowth rule {rule!r}: choose from {REGROW_RULES}")
    if rule != "random" and score is None:
        raise ValueError(f"rule {rule!r} needs a score tensor (gradient or momentum buffer)")
    shared = mask.device.type == "cpu" and mask.is_contiguous()
    flat_mask = mask.detach().numpy().reshape(-1) if shared else _as_numpy(mask).copy()  # a view: edits hit mask
    active = np.flatnonzero(flat_mask) if active is None else active
    n = round(float(fraction) * active.size)
    n = min(n, flat_mask.size - active.size) if exclude_pruned else n
    if n <= 0:
        return LayerUpdate(np.zeros(0, np.int64), np.zeros(0, np.int64), active, active)
    pruned = active[_exact_among(np.arange(active.size), -np.abs(_as_numpy(weight)[active]), n)]
    if not exclude_pruned:  # candidates: inactive after pruning
        flat_mask[pruned] = False
    if rule == "random":
        grown = _random_among(flat_mask, n, rng or np.random.default_rng(0))
    else:
        grown = top_k_exact(np.abs(_as_numpy(score)), n, flat_mask)
    flat_mask[pruned] = False
    flat_mask[grown] = True
    if not shared:
        mask.copy_(torch.from_numpy(flat_mask).reshape(mask.shape))
    zero_entries(weight, np.concatenate([pruned, grown]))
    return LayerUpdate(pruned, grown, active, np.flatnonzero(flat_mask))

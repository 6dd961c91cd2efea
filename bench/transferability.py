"""Training-free transferability peers: LEEP, NCE and H-score.

No maintained package provides them (tllib is not on PyPI), so they are written here, each checked against a
brute-force loop in ``tests/test_transferability.py``. All three read a pretrained model once on the target
training split, with no fine-tuning:

* LEEP (Nguyen et al., ICML 2020): from the source head's softmax outputs θ (n, |Z|),
  P̂(y, z) = 1/n Σ_i θ_iz [y_i = y], P̂(y | z) = P̂(y, z) / P̂(z),
  LEEP = 1/n Σ_i log Σ_z P̂(y_i | z) θ_iz.
* NCE (Tran et al., ICCV 2019): with hard source labels z_i = argmax θ_i,
  NCE = -H(Y | Z) = Σ_{y,z} P̂(y, z) log P̂(y | z).
* H-score (Bao et al., ICIP 2019): from features f (n, d),
  H = tr(cov(f)⁺ cov(E[f | y])), with the pseudo-inverse for rank-deficient covariances.

Higher is better for all three.
"""
from __future__ import annotations

import numpy as np

__all__ = ["h_score", "leep", "nce"]


def _check(n_rows: int, y) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_rows or n_rows == 0:
        raise ValueError(f"y must be a non-empty (n,) label array matching the {n_rows} rows, got shape {y.shape}")
    classes, y_idx = np.unique(y, return_inverse=True)
    return classes, y_idx


def _joint(weights: np.ndarray, y_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Empirical joint P̂(y, z) (n_classes, |Z|) from per-sample source-label weights (n, |Z|)."""
    joint = np.zeros((n_classes, weights.shape[1]))
    np.add.at(joint, y_idx, weights)
    return joint / len(y_idx)


def leep(source_probs, y) -> float:
    """LEEP score of source-head softmax outputs ``source_probs`` (n, |Z|) for target labels ``y`` (n,)."""
    theta = np.asarray(source_probs, dtype=np.float64)
    if theta.ndim != 2 or np.any(theta < 0) or not np.allclose(theta.sum(1), 1, atol=1e-4):
        raise ValueError("source_probs must be (n, |Z|) rows of probabilities")
    classes, y_idx = _check(len(theta), y)
    joint = _joint(theta, y_idx, len(classes))
    cond = np.divide(joint, joint.sum(0, keepdims=True), out=np.zeros_like(joint), where=joint.sum(0) > 0)
    eep = np.einsum("iz,iz->i", cond[y_idx], theta)  # Σ_z P̂(y_i | z) θ_iz
    return float(np.mean(np.log(eep)))


def nce(source_labels, y) -> float:
    """NCE score of hard source labels ``source_labels`` (n,) (argmax of the source head) for ``y`` (n,)."""
    z = np.asarray(source_labels)
    _, z_idx = np.unique(z, return_inverse=True)
    classes, y_idx = _check(len(z), y)
    joint = _joint(np.eye(z_idx.max() + 1)[z_idx], y_idx, len(classes))
    p_z = joint.sum(0, keepdims=True)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log((joint / p_z)[mask])))


def h_score(features, y) -> float:
    """H-score of ``features`` (n, d) for labels ``y`` (n,): tr(cov(f)⁺ · cov of the class-conditional means)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {f.shape}")
    classes, y_idx = _check(len(f), y)
    f = f - f.mean(0)
    cov_f = f.T @ f / len(f)
    means = np.zeros((len(classes), f.shape[1]))
    np.add.at(means, y_idx, f)
    means /= np.bincount(y_idx)[:, None]
    g = means[y_idx]  # each sample replaced by its class mean
    cov_g = g.T @ g / len(f)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))

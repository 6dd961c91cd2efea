"""LEEP, NCE and H-score against brute-force loops over samples and label pairs, and closed-form cases."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from ncap.bench.transferability import h_score, leep, nce


def leep_loops(theta, y):
    n, nz = theta.shape
    labels = sorted(set(y.tolist()))
    joint = {(a, z): sum(theta[i, z] for i in range(n) if y[i] == a) / n for a in labels for z in range(nz)}
    p_z = {z: sum(joint[(a, z)] for a in labels) for z in range(nz)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[(y[i], z)] / p_z[z] * theta[i, z] for z in range(nz) if p_z[z] > 0))
    return total / n


def nce_loops(z, y):
    n = len(y)
    pair, zc = Counter(zip(z.tolist(), y.tolist())), Counter(z.tolist())
    h = 0.0
    for (zz, _yy), c in pair.items():
        h -= c / n * math.log(c / zc[zz])
    return -h


def h_score_loops(f, y):
    n = len(f)
    mu = sum(f[i] for i in range(n)) / n
    cov_f = sum(np.outer(f[i] - mu, f[i] - mu) for i in range(n)) / n
    means = {c: sum(f[i] for i in range(n) if y[i] == c) / sum(1 for i in range(n) if y[i] == c) for c in set(y.tolist())}
    cov_g = sum(np.outer(means[y[i]] - mu, means[y[i]] - mu) for i in range(n)) / n
    return float(np.trace(np.linalg.pinv(cov_f) @ cov_g))


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, nz, ny, d = 40, 6, 3, 5
    logits = rng.normal(size=(n, nz))
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, ny, size=n) * 7 + 1  # arbitrary label values
    assert leep(theta, y) == pytest.approx(leep_loops(theta, y), rel=1e-10)
    z = theta.argmax(1)
    assert nce(z, y) == pytest.approx(nce_loops(z, y), rel=1e-10)
    f = rng.normal(size=(n, d)) + y[:, None] * 0.1
    assert h_score(f, y) == pytest.approx(h_score_loops(f, y), rel=1e-8)


def test_closed_forms():
    y = np.repeat(np.arange(4), 10)
    onehot = np.eye(4)[y]
    assert leep(onehot, y) == pytest.approx(0.0)  # the source labels determine the target labels
    assert nce(y, y) == pytest.approx(0.0)
    z_indep = np.tile(np.arange(2), 20)  # independent of y: NCE = -H(Y) = -log 4
    assert nce(z_indep, y) == pytest.approx(-math.log(4))
    assert h_score(onehot, y) == pytest.approx(3.0)  # features = class indicators: rank C - 1
    rng = np.random.default_rng(0)
    assert h_score(rng.normal(size=(4000, 3)), rng.integers(0, 4, 4000)) < 0.02  # noise carries no label


def test_bad_input():
    with pytest.raises(ValueError):
        leep(np.full((3, 2), 0.7), [0, 1, 0])  # rows do not sum to 1
    with pytest.raises(ValueError):
        h_score(np.zeros((3, 2)), [0, 1])

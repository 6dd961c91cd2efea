"""Sparse initialisation: ER/ERK layer densities against their formulas, PSN fan-in profiles, masks, weights."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torch import nn

from ncap.models.sparse.init import (
    PROFILES,
    fan_in_cv,
    fan_in_profile,
    init_sparse_weights,
    layer_densities,
    mask_from_fan_in,
    random_mask,
)

SHAPES = [
    [(256, 784), (256, 256), (10, 256)],
    [(1024, 3072), (512, 1024), (10, 512)],
    [(32, 1, 5, 5), (32, 32, 5, 5), (256, 512), (10, 256)],
    [(64, 64), (64, 64)],
]


def _brute_force(shapes, density, method):
    """Densities min(1, ε·raw) with ε solved by root finding on the total (independent of the RigL loop)."""
    sizes = np.array([np.prod(s) for s in shapes], float)
    if method == "er":
        raw = np.array([(s[0] + s[1]) / (s[0] * s[1]) for s in shapes])
    else:
        raw = np.array([sum(s) / np.prod(s) for s in shapes])

    def excess(eps):
        return float((np.minimum(1.0, eps * raw) * sizes).sum() - density * sizes.sum())

    eps = brentq(excess, 1e-12, 1e6, xtol=1e-14)
    return np.minimum(1.0, eps * raw), sizes


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("method", ["er", "erk"])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.3])
def test_er_erk_densities_match_the_formulas_and_the_global_target(shapes, method, density):
    dens, counts = layer_densities(shapes, density, method)
    expect, sizes = _brute_force(shapes, density, method)
    assert counts.sum() == round(density * sizes.sum())  # the global target, exactly
    np.testing.assert_allclose(counts, expect * sizes, atol=1.0)  # each layer within one weight of the formula
    np.testing.assert_allclose(dens, counts / sizes)
    assert (counts <= sizes).all()


def test_er_ignores_the_kernel_and_erk_does_not():
    shapes = [(32, 16, 3, 3), (32, 16, 5, 5)]
    d_er, _ = layer_densities(shapes, 0.1, "er")
    d_erk, _ = layer_densities(shapes, 0.1, "erk")
    assert d_er[0] == pytest.approx(d_er[1], abs=1e-3)  # same channels -> same ER density
    assert d_erk[0] > d_erk[1]  # the larger kernel is sparser under ERK


def test_uniform_densities_are_the_global_density():
    dens, _counts = layer_densities(SHAPES[0], 0.1, "uniform")
    np.testing.assert_allclose(dens, 0.1, atol=1e-4)
    with pytest.raises(ValueError, match="unknown density"):
        layer_densities(SHAPES[0], 0.1, "xyz")


@pytest.mark.parametrize("name", [p for p in PROFILES if p not in ("random", "lognormal", "powerlaw")])
def test_profiles_hit_the_requested_mean_fan_in_exactly(name):
    n_out, n_in, total = 300, 200, 300 * 23 + 7
    f = fan_in_profile(name, n_out, n_in, total, min_fan_in=2)
    assert f.sum() == total and f.min() >= 2 and f.max() <= n_in and f.dtype.kind == "i"


def test_profile_cv_ordering():
    args = (1024, 784, 80282)  # 784-input layer at 90 % sparsity (mean fan-in 78.4)
    cv = {p: fan_in_cv(fan_in_profile(p, *args)) for p in ("uniform", "quadratic", "linear", "bell", "exponential")}
    assert cv["uniform"] < 0.01
    assert cv["uniform"] < cv["quadratic"] < cv["linear"] < cv["bell"] < cv["exponential"]
    assert cv["exponential"] == pytest.approx(0.82, abs=0.03)  # the CV sources/003 reports
    f = fan_in_profile("exponential", *args)
    assert (f.max(), f.min()) == (247, 12)  # sources/003: 247 to 12 connections at 90 %
    inv = fan_in_profile("inverse-exponential", *args)
    np.testing.assert_array_equal(np.sort(inv), np.sort(f))
    assert inv[0] < inv[-1]


@pytest.mark.parametrize("name", ["lognormal", "powerlaw"])
def test_cv_profiles_reach_their_target_cv_in_order(name):
    cvs = [0.3, 1.0, 2.0]
    got = [fan_in_cv(fan_in_profile(name, 1024, 784, 80282, cv=c)) for c in cvs]
    np.testing.assert_allclose(got, cvs, atol=0.01)
    with pytest.raises(ValueError, match="target fan-in CV"):
        fan_in_profile(name, 1024, 784, 80282)


def test_multipeak_cv_falls_as_peaks_widen():
    cvs = [fan_in_cv(fan_in_profile("multipeak", 512, 784, 512 * 78, peaks=3, sigma=s)) for s in (0.02, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in itertools.pairwise(cvs))


def test_impossible_totals_are_refused():
    with pytest.raises(ValueError, match="cannot give"):
        fan_in_profile("linear", 10, 5, 60)


@pytest.mark.parametrize("spread", ["random", "even"])
def test_masks_have_the_requested_fan_in_per_row(spread):
    fan = fan_in_profile("exponential", 200, 150, 200 * 15)
    mask = mask_from_fan_in(fan, 150, spread=spread, generator=np.random.default_rng(1))
    np.testing.assert_array_equal(mask.sum(1), fan)


def test_even_spread_keeps_fan_out_nearly_uniform_for_equal_fan_ins():
    fan = fan_in_profile("uniform", 400, 100, 400 * 10)
    even = mask_from_fan_in(fan, 100, spread="even").sum(0)
    rand = mask_from_fan_in(fan, 100, spread="random").sum(0)
    assert even.std() / even.mean() < 0.05
    assert rand.std() / rand.mean() > 0.1  # random spreading: binomial fan-out (~0.14)


def test_random_mask_count_and_spread():
    m = random_mask((64, 50), 321, np.random.default_rng(0))
    assert m.sum() == 321 and m.shape == (64, 50)


def test_mean_fan_in_init_scale_and_zeros():
    layer = nn.Linear(400, 300)
    fan = fan_in_profile("lognormal", 300, 400, 300 * 40, cv=1.0)
    mask = torch.from_numpy(mask_from_fan_in(fan, 400))
    init_sparse_weights(layer, mask, "mean-fan-in", generator=torch.Generator().manual_seed(0))
    w = layer.weight.detach()
    assert (w[~mask] == 0).all() and (layer.bias == 0).all()
    assert w[mask].std().item() == pytest.approx(np.sqrt(2 / 40), rel=0.05)
    init_sparse_weights(layer, mask, "per-neuron", generator=torch.Generator().manual_seed(0))
    hub = int(np.argmax(fan))
    assert fan[hub] > 150
    assert layer.weight[hub][mask[hub]].std().item() == pytest.approx(np.sqrt(2 / fan[hub]), rel=0.15)
    with pytest.raises(ValueError, match="unknown weight init"):
        init_sparse_weights(layer, mask, "xyz")

"""Sparse initialisation: how dense each layer is, how its connections are spread over neurons, and the weights.

Layer densities (:func:`layer_densities`), as in sources/002 Table 2 and RigL (Evci et al. 2020):

* ``uniform``: every sparse layer has the global density D.
* ``er`` (SET's ε rule): density_l = ε (n_in + n_out) / (n_in · n_out), with n_in / n_out the input /
  output *features* (channels for Conv2d, the kernel ignored, as RigL's ``erdos_renyi``).
* ``erk``: density_l = ε · sum(shape) / prod(shape) over the whole weight shape, e.g.
  (C_out + C_in + kh + kw) / (C_out · C_in · kh · kw) for a convolution (RigL's ``erdos_renyi_kernel``).
  For Linear layers ER and ERK coincide.

ε is chosen so that the active weights add up to D · (weights of the sparse layers); a layer whose density
would exceed 1 is made dense and ε is solved again for the others (RigL's rule). Per-layer counts are
integers whose total is exactly ``round(D · total)`` (largest remainders).

Fan-in profiles (:func:`fan_in_profile`, profiled sparse networks, sources/003 §2.2–2.3): a profile assigns
every output neuron i (normalised index u = (i + ½)/n) a relative connectivity v(u); fan-ins are
``clip(c · v, min_fan_in, n_in)`` with c found by bisection so that they add up to the layer's active
count, rounded to integers with exactly that sum. The source's equations (1)–(4) and (10) are missing from
its text (only their names, orientations and reported CVs survive), so ncap chooses these forms:

* monotonic family, hubs at low indices, hub/specialist ratio 1/r (r = 0.05, the source's ~20× ratio):
  ``linear`` 1 − (1 − r)u, ``quadratic`` 1 − (1 − r)u², ``exponential`` r^u (CV ≈ 0.8, as reported),
  each with an ``inverse-`` variant v(1 − u);
* bell family: ``bell`` exp(−(u − ½)² / 2σ²) (σ = 0.2), ``inverse-bell`` 1 − (1 − r)·bell (hubs at both
  ends); ``multipeak`` Σ_k exp(−(u − c_k)² / 2σ²) over K evenly spaced peaks c_k = (k + ½)/K (§2.8): one
  narrow peak is one hub cluster, wide peaks merge into the uniform profile;
* ``lognormal``: the sorted (descending) quantiles of a lognormal at (i + ½)/n, its shape found by bisection
  so that the *realised* fan-in CV (after clamping and rounding) hits ``cv`` (§2.2: clamping compresses the
  tail, hence the search); deterministic quantiles instead of random draws make the profile reproducible;
* ``powerlaw``: rank-frequency law v_i = (i + 1)^(−a), the exponent a found the same way for ``cv``;
* ``uniform`` (every neuron the same fan-in, CV ≈ 0) and ``random`` (no profile: the layer's active
  weights drawn uniformly at random, Erdős–Rényi, binomial fan-in).

Which inputs each neuron connects to (``spread``): ``random`` (uniform without replacement, the default) or
``even`` (§2.4: evenly spaced with a golden-ratio offset per neuron; fan-out is nearly uniform when fan-ins
are equal, and about as spread as random spreading's when they are heterogeneous).

Weights (:func:`init_sparse_weights`, §2.5): He-normal with the layer's *mean* fan-in,
std = sqrt(2 / mean fan-in) (``mean-fan-in``, the source's choice), per-neuron fan-in (``per-neuron``), or
the module's own dense initialisation (``dense``); biases are zeroed except for ``dense``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import ndtri
from torch import nn

__all__ = [
    "DENSITY_METHODS",
    "PROFILES",
    "WEIGHT_INITS",
    "fan_in_cv",
    "fan_in_profile",
    "init_sparse_weights",
    "integer_counts",
    "layer_densities",
    "mask_from_fan_in",
    "profile_values",
    "random_mask",
]

DENSITY_METHODS = ("uniform", "er", "erk")
MONOTONIC = ("linear", "quadratic", "exponential")
PROFILES = ("random", "uniform", *MONOTONIC, *(f"inverse-{p}" for p in MONOTONIC), "bell", "inverse-bell",
            "multipeak", "lognormal", "powerlaw")
CV_PROFILES = ("lognormal", "powerlaw")
WEIGHT_INITS = ("mean-fan-in", "per-neuron", "dense")
HUB_RATIO = 0.05  # r: specialist / hub connectivity of the monotonic and bell profiles


# ------------------------------------------------------------------------------------- layer densities


def _raw_scale(shape: Sequence[int], method: str) -> float:
    """Unnormalised ER / ERK density of a weight of ``shape`` (out, in, *kernel)."""
    if method == "er":
        n_out, n_in = shape[0], shape[1]
        return (n_in + n_out) / (n_in * n_out)
    return float(sum(shape)) / float(np.prod(shape))


def integer_counts(real: np.ndarray, total: int, upper: np.ndarray | None = None) -> np.ndarray:
    """Integers close to ``real`` (≥ 0) adding up to ``total``: floors, then +1 for the largest remainders.

    ``upper`` caps every entry (entries at their cap never get the +1).
    """
    real = np.asarray(real, float)
    base = np.floor(real + 1e-9).astype(np.int64)
    if upper is not None:
        base = np.minimum(base, upper)
    short = int(total) - int(base.sum())
    if short < 0 or short > real.size:
        raise ValueError(f"cannot round {real.sum():.3f} to {total} with {real.size} entries")
    frac = real - base
    if upper is not None:
        frac = np.where(base >= upper, -np.inf, frac)
    order = np.argsort(-frac, kind="stable")[:short]
    base[order] += 1
    return base


def layer_densities(shapes: Sequence[Sequence[int]], density: float, method: str = "erk") -> tuple[np.ndarray, np.ndarray]:
    """Per-layer densities and exact active counts for weights of ``shapes`` at global ``density``.

    Returns ``(densities, counts)``: ``counts`` are integers summing to ``round(density · Σ sizes)``;
    ``densities = counts / sizes``. ``method``: ``uniform``, ``er`` or ``erk`` (module docstring).
    """
    if method not in DENSITY_METHODS:
        raise ValueError(f"unknown density method {method!r}: choose from {DENSITY_METHODS}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density}")
    sizes = np.array([int(np.prod(s)) for s in shapes], np.int64)
    if method == "uniform":
        real = density * sizes.astype(float)
    else:
        raw = np.array([_raw_scale(s, method) for s in shapes])
        dense = np.zeros(len(sizes), bool)
        while True:  # RigL: layers that would exceed density 1 become dense, ε is solved again
            budget = density * sizes.sum() - sizes[dense].sum()
            eps = budget / float((raw * sizes)[~dense].sum())
            over = ~dense & (eps * raw > 1.0)
            if not over.any():
                break
            dense[np.argmax(np.where(over, eps * raw, -np.inf))] = True
        real = np.where(dense, sizes, eps * raw * sizes)
    counts = integer_counts(real, round(density * sizes.sum()), upper=sizes)
    return counts / sizes, counts


# ------------------------------------------------------------------------------------- fan-in profiles


def profile_values(name: str, n: int, *, shape: float | None = None, peaks: int = 1, sigma: float = 0.2) -> np.ndarray:
    """Relative connectivity v_i > 0 of ``n`` neurons under profile ``name`` (before scaling).

    ``shape`` is the lognormal σ or the power-law exponent (found from ``cv`` by :func:`fan_in_profile`);
    ``peaks`` / ``sigma`` shape ``multipeak`` (``sigma`` also ``bell``).
    """
    u = (np.arange(n) + 0.5) / n
    r = HUB_RATIO
    if name.startswith("inverse-") and name[8:] in MONOTONIC:
        return profile_values(name[8:], n)[::-1].copy()
    if name == "uniform":
        return np.ones(n)
    if name == "linear":
        return 1.0 - (1.0 - r) * u
    if name == "quadratic":
        return 1.0 - (1.0 - r) * u ** 2
    if name == "exponential":
        return r ** u
    if name in ("bell", "inverse-bell"):
        bell = np.exp(-((u - 0.5) ** 2) / (2 * sigma ** 2))
        return bell if name == "bell" else 1.0 - (1.0 - r) * bell
    if name == "multipeak":
        centres = (np.arange(int(peaks)) + 0.5) / int(peaks)
        return np.exp(-((u[:, None] - centres[None, :]) ** 2) / (2 * sigma ** 2)).sum(1) + 1e-12
    if name == "lognormal":
        s = float(shape or 0.0)
        return np.exp(s * ndtri(1.0 - u))  # descending quantiles; the scale is set later
    if name == "powerlaw":
        return (np.arange(n) + 1.0) ** (-float(shape or 0.0))
    raise ValueError(f"unknown fan-in profile {name!r}: choose from {PROFILES}")


def _scale_to_total(v: np.ndarray, total: int, lo: int, hi: int) -> np.ndarray:
    """Integer fan-ins clip(c·v, lo, hi) with c by bisection, rounded to add up to exactly ``total``."""
    a, b = 0.0, 1.0
    while np.clip(b * v, lo, hi).sum() < total:
        b *= 2.0
        if b > 1e300:
            break
    for _ in range(200):
        c = 0.5 * (a + b)
        if np.clip(c * v, lo, hi).sum() < total:
            a = c
        else:
            b = c
    real = np.clip(b * v, lo, hi)
    real = real * (total / real.sum()) if real.sum() > 0 else real
    return integer_counts(np.clip(real, lo, hi), total, upper=np.full(v.size, hi))


def fan_in_cv(fan_in: np.ndarray) -> float:
    """Coefficient of variation std/mean (population std) of a fan-in vector."""
    f = np.asarray(fan_in, float)
    return float(f.std() / f.mean()) if f.size and f.mean() > 0 else 0.0


def _search_shape(name: str, n: int, total: int, lo: int, hi: int, cv: float) -> np.ndarray:
    """Fan-ins of a lognormal / power-law profile whose realised CV is as close to ``cv`` as bisection gets."""
    def realised(s):
        f = _scale_to_total(profile_values(name, n, shape=s), total, lo, hi)
        return f, fan_in_cv(f)

    a, b = 0.0, 8.0
    f_hi, cv_hi = realised(b)
    if cv_hi <= cv:
        return f_hi  # the bounds cap the CV below the target; the caller reports the realised one
    best = f_hi
    for _ in range(40):
        m = 0.5 * (a + b)
        f, c = realised(m)
        if c < cv:
            a = m
        else:
            b, best = m, f
        if abs(c - cv) < 1e-3:
            return f
    return best


def fan_in_profile(name: str, n_out: int, n_in: int, total: int, *, min_fan_in: int = 1, cv: float | None = None,
                   peaks: int = 1, sigma: float = 0.2) -> np.ndarray:
    """Integer fan-in (n_out,) under profile ``name``: each in [min_fan_in, n_in], summing to exactly ``total``.

    ``cv`` is required by ``lognormal`` and ``powerlaw`` (target CV after clamping); the realised CV is
    :func:`fan_in_cv` of the result. ``random`` has no profile (see :func:`random_mask`).
    """
    lo, hi = int(min_fan_in), int(n_in)
    if not n_out * lo <= total <= n_out * hi:
        raise ValueError(f"{total} connections cannot give {n_out} neurons a fan-in in [{lo}, {hi}]")
    if name in CV_PROFILES:
        if cv is None or cv < 0:
            raise ValueError(f"profile {name!r} needs a target fan-in CV >= 0 (cv=...)")
        return _search_shape(name, n_out, total, lo, hi, float(cv))
    if name == "random" or name not in PROFILES:
        raise ValueError(f"profile {name!r} has no fan-in function: choose from {PROFILES[1:]}")
    return _scale_to_total(profile_values(name, n_out, peaks=peaks, sigma=sigma), total, lo, hi)


# ------------------------------------------------------------------------------------------------ masks

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def mask_from_fan_in(fan_in: np.ndarray, n_in: int, *, spread: str = "random",
                     generator: np.random.Generator | None = None) -> np.ndarray:
    """Bool mask (n_out, n_in) whose row i has exactly ``fan_in[i]`` True entries.

    ``spread='random'``: inputs drawn uniformly without replacement; ``'even'``: inputs
    ``floor(m · n_in / k + φ_i) mod n_in`` (m < k) with φ_i = frac(i·golden ratio)·n_in (sources/003 eq. 8).
    """
    fan_in = np.asarray(fan_in, np.int64)
    n_out = fan_in.size
    if spread == "random":
        rng = generator or np.random.default_rng(0)
        rank = np.argsort(rng.random((n_out, n_in)), axis=1).argsort(axis=1)
        return rank < fan_in[:, None]
    if spread != "even":
        raise ValueError(f"unknown spread {spread!r}: 'random' or 'even'")
    mask = np.zeros((n_out, n_in), bool)
    offset = ((np.arange(n_out) * GOLDEN) % 1.0) * n_in
    for i, k in enumerate(fan_in):  # one short vector op per neuron; masks are built once
        if k > 0:
            mask[i, np.floor(np.arange(k) * (n_in / k) + offset[i]).astype(np.int64) % n_in] = True
    return mask


def random_mask(shape: Sequence[int], count: int, generator: np.random.Generator | None = None) -> np.ndarray:
    """Bool mask of ``shape`` with exactly ``count`` True entries placed uniformly at random (Erdős–Rényi)."""
    rng = generator or np.random.default_rng(0)
    size = int(np.prod(shape))
    flat = np.zeros(size, bool)
    flat[rng.choice(size, size=int(count), replace=False)] = True
    return flat.reshape(tuple(shape))


# ---------------------------------------------------------------------------------------------- weights


@torch.no_grad()
def init_sparse_weights(module: nn.Module, mask: torch.Tensor, mode: str = "mean-fan-in",
                        generator: torch.Generator | None = None) -> None:
    """Initialise ``module.weight`` for keep-mask ``mask`` and zero its inactive entries.

    ``mean-fan-in``: N(0, 2 / mean fan-in) with mean fan-in = active weights / output units (sources/003
    eq. 9); ``per-neuron``: N(0, 2 / fan-in of the unit); ``dense``: keep the module's initialisation.
    Biases are zeroed except for ``dense``.
    """
    if mode not in WEIGHT_INITS:
        raise ValueError(f"unknown weight init {mode!r}: choose from {WEIGHT_INITS}")
    w = module.weight
    m = mask.to(w.device).reshape(w.shape[0], -1)
    if mode != "dense":
        fan = m.sum(1).clamp(min=1).to(w.dtype)
        std = torch.sqrt(2.0 / fan.mean()) if mode == "mean-fan-in" else torch.sqrt(2.0 / fan)
        noise = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        w.copy_(noise * std.reshape(-1, *([1] * (w.dim() - 1))))
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    w.mul_(mask.to(w.device, w.dtype))

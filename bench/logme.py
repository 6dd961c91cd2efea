"""LogME: the log of the maximum evidence of a linear model on frozen features.

You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for
Transfer Learning", ICML 2021.

For each class ``k`` the labels give a one-vs-rest target ``y_k`` in {0, 1}^N,
modelled by Bayesian linear regression on the features ``F`` (N, D)::

    y = F w + eps,    w ~ N(0, alpha^-1 I_D),    eps ~ N(0, beta^-1 I_N)

so that, marginally, ``y ~ N(0, alpha^-1 F F^T + beta^-1 I_N)``. The log
evidence ``L(alpha, beta) = log p(y | F, alpha, beta)`` is maximised over
``(alpha, beta)`` by MacKay's fixed-point iteration, and

    LogME = mean_k  max_{alpha, beta} L_k(alpha, beta) / N.

Everything is expressed in the thin SVD ``F = U diag(s) V^T`` (computed once for
all classes). With ``r`` the numerical rank, ``sigma_i = s_i^2`` (i < r),
``z = U_r^T y`` and ``rho = ||y||^2 - ||z||^2`` (the part of ``y`` outside the
column space of ``F``)::

    m^T m        = sum_i beta^2 sigma_i z_i^2 / (alpha + beta sigma_i)^2
    ||F m - y||^2 = sum_i alpha^2 z_i^2 / (alpha + beta sigma_i)^2 + rho
    gamma        = sum_i beta sigma_i / (alpha + beta sigma_i)
    L = r/2 log alpha + N/2 log beta - N/2 log 2 pi
        - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 sum_i log(alpha + beta sigma_i)

where ``m`` is the posterior mean of ``w``. (The ``D - r`` directions of weight
space that ``F`` does not see contribute ``(D - r)/2 log alpha`` to both the
prior and ``log|A|`` and cancel, which is why only ``r`` appears.) The
fixed point is ``alpha <- gamma / m^T m``, ``beta <- (N - gamma) / ||F m - y||^2``.
The same expressions hold whether ``N < D`` or ``N >= D``. When the supremum lies
on an edge of the domain (``alpha -> inf`` or ``beta -> inf``) the iteration only
creeps towards it, so the edges are also evaluated in closed form (see
``_maximise``) and the largest value is kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_evidence", "logme_per_class", "logme_score"]

_LOG_2PI = float(np.log(2.0 * np.pi))
# Keep alpha and beta inside a range where float64 arithmetic stays meaningful;
# the evidence is flat far beyond these values anyway.
_LOG_BOUND = 30.0


def _check_features(features) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D); got shape {f.shape}.")
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"features must have at least 2 samples and 1 dimension; got shape {f.shape}.")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or infinite values.")
    return f


def _check_labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array (N,); got shape {y.shape}.")
    if y.shape[0] != n:
        raise ValueError(f"features and labels have mismatched lengths: {n} samples vs {y.shape[0]} labels.")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise ValueError("labels contain NaN or infinite values.")
        if not np.all(y == np.round(y)):
            raise ValueError("labels must be integer class indices; got non-integer floats.")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class indices; got dtype {y.dtype}.")
    if np.unique(y).size < 2:
        raise ValueError("labels contain fewer than 2 classes; LogME needs at least 2.")
    return y


def _spectrum(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and squared singular values of the numerical range of ``f``."""
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    tol = s[0] * max(f.shape) * np.finfo(np.float64).eps if s.size else 0.0
    keep = s > tol
    return u[:, keep], s[keep] ** 2


def _evidence(alpha: float, beta: float, sigma: np.ndarray, z2: np.ndarray, rho: float, n: int):
    """Log evidence and the fixed-point statistics at (alpha, beta)."""
    denom = alpha + beta * sigma
    mtm = float(np.sum(beta**2 * sigma * z2 / denom**2))
    res = float(np.sum(alpha**2 * z2 / denom**2)) + rho
    gamma = float(np.sum(beta * sigma / denom))
    value = (
        0.5 * sigma.size * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - 0.5 * n * _LOG_2PI
        - 0.5 * beta * res
        - 0.5 * alpha * mtm
        - 0.5 * float(np.sum(np.log(denom)))
    )
    return float(value), mtm, res, gamma


def _maximise(sigma, z2, rho, n, max_iter, tol):
    """Maximise the evidence over (alpha, beta); returns (evidence, alpha, beta).

    MacKay's fixed point from ``alpha = beta = 1``, compared with the two edges of
    the domain where the supremum can lie instead. When it does, the fixed point only
    creeps towards the edge, so the edge is evaluated in closed form:

    - ``alpha -> inf`` (the features explain nothing, ``y ~ N(0, I / beta)``), where
      the best ``beta`` is ``N / ||y||^2``;
    - ``beta -> inf`` (noise-free, only possible when rank ``r = N`` so ``y`` lies in
      the span of ``F``: ``y ~ N(0, F F^T / alpha)``), where the best ``alpha`` is
      ``N / sum_i z_i^2 / sigma_i``.
    """
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        _, mtm, res, gamma = _evidence(alpha, beta, sigma, z2, rho, n)
        tiny = np.finfo(np.float64).tiny
        new_alpha = _clip_log(gamma / max(mtm, tiny))
        new_beta = _clip_log((n - gamma) / max(res, tiny))
        done = abs(np.log(new_alpha / alpha)) < tol and abs(np.log(new_beta / beta)) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    best = (_evidence(alpha, beta, sigma, z2, rho, n)[0], alpha, beta)

    noise_only = _evidence_at_edge(np.inf, n / (float(np.sum(z2)) + rho), sigma, z2, rho, n)
    if noise_only > best[0]:
        best = (noise_only, np.inf, n / (float(np.sum(z2)) + rho))
    if sigma.size == n:
        alpha_edge = n / float(np.sum(z2 / sigma))
        noise_free = _evidence_at_edge(alpha_edge, np.inf, sigma, z2, rho, n)
        if noise_free > best[0]:
            best = (noise_free, alpha_edge, np.inf)
    return best


def _evidence_at_edge(alpha: float, beta: float, sigma, z2, rho: float, n: int) -> float:
    """Limit of the log evidence as alpha and/or beta go to infinity."""
    if np.isinf(alpha) and np.isinf(beta):
        return -np.inf  # y ~ N(0, 0)
    if np.isinf(alpha):  # y ~ N(0, I / beta)
        return float(0.5 * n * (np.log(beta) - _LOG_2PI) - 0.5 * beta * (float(np.sum(z2)) + rho))
    if sigma.size < n:  # y ~ N(0, F F^T / alpha) is degenerate: density 0 almost surely
        return -np.inf
    return float(
        0.5 * n * (np.log(alpha) - _LOG_2PI)
        - 0.5 * float(np.sum(np.log(sigma)))
        - 0.5 * alpha * float(np.sum(z2 / sigma))
    )


def _clip_log(x: float) -> float:
    return float(np.exp(np.clip(np.log(max(x, 1e-300)), -_LOG_BOUND, _LOG_BOUND)))


def log_evidence(features, target, alpha: float, beta: float) -> float:
    """Log marginal evidence of Bayesian linear regression at fixed (alpha, beta).

    Parameters
    ----------
    features : array-like of shape (N, D)
        Feature matrix ``F``.
    target : array-like of shape (N,)
        Real-valued regression target ``y``.
    alpha, beta : float
        Prior precision of the weights and precision of the noise, both > 0.
        ``inf`` gives the limit (``alpha = inf``: noise-only model; ``beta = inf``:
        noise-free model, ``-inf`` unless ``rank(F) = N``).

    Returns
    -------
    float
        ``log N(y | 0, alpha^-1 F F^T + beta^-1 I)`` (not divided by N).
    """
    f = _check_features(features)
    y = np.asarray(target, dtype=np.float64)
    if y.shape != (f.shape[0],):
        raise ValueError(f"target must have shape ({f.shape[0]},); got {y.shape}.")
    if not np.all(np.isfinite(y)):
        raise ValueError("target contains NaN or infinite values.")
    if not (alpha > 0 and beta > 0):  # also rejects NaN
        raise ValueError(f"alpha and beta must be > 0 (inf allowed); got alpha={alpha}, beta={beta}.")
    u, sigma = _spectrum(f)
    z = u.T @ y
    rho = max(float(y @ y - z @ z), 0.0)
    alpha, beta = float(alpha), float(beta)
    if np.isinf(alpha) or np.isinf(beta):
        return _evidence_at_edge(alpha, beta, sigma, z**2, rho, f.shape[0])
    return _evidence(alpha, beta, sigma, z**2, rho, f.shape[0])[0]


def logme_per_class(features, labels, *, max_iter: int = 200, tol: float = 1e-7, return_params: bool = False):
    """Maximised log evidence per class (one-vs-rest), divided by N.

    Parameters
    ----------
    features : array-like of shape (N, D)
        Frozen features of the target data set, one row per sample.
    labels : array-like of shape (N,)
        Integer class labels (any integer values; at least 2 distinct).
    max_iter : int, default=200
        Maximum number of fixed-point iterations per class.
    tol : float, default=1e-7
        Stop when both ``|log alpha_new - log alpha|`` and ``|log beta_new - log beta|``
        fall below ``tol``.
    return_params : bool, default=False
        Also return the maximising ``alpha`` and ``beta`` per class.

    Returns
    -------
    evidence : ndarray of shape (K,)
        ``max_{alpha, beta} log p(y_k | F, alpha, beta) / N`` for each class, in the
        order of ``np.unique(labels)``.
    alphas, betas : ndarray of shape (K,)
        Only if ``return_params``; the maximiser for each class. ``alpha = inf``
        means the evidence is highest for the noise-only model (the features do
        not help predict this class); ``beta = inf`` the noise-free one (only when
        ``rank(F) = N``).
    """
    f = _check_features(features)
    y = _check_labels(labels, f.shape[0])
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}.")
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol}.")
    n = f.shape[0]
    u, sigma = _spectrum(f)
    classes = np.unique(y)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)  # (N, K)
    z = u.T @ targets  # (r, K)
    rho = np.maximum(np.sum(targets**2, axis=0) - np.sum(z**2, axis=0), 0.0)
    out = np.empty((3, classes.size))
    for k in range(classes.size):
        out[:, k] = _maximise(sigma, z[:, k] ** 2, float(rho[k]), n, int(max_iter), float(tol))
    evidence = out[0] / n
    if return_params:
        return evidence, out[1], out[2]
    return evidence


def logme_score(features, labels, *, max_iter: int = 200, tol: float = 1e-7) -> float:
    """LogME transferability score (higher = features fit the labels better).

    Parameters
    ----------
    features : array-like of shape (N, D)
        Frozen features of the target data set. Works for ``N < D`` and ``N >= D``.
    labels : array-like of shape (N,)
        Integer class labels with at least 2 distinct values.
    max_iter, tol
        See :func:`logme_per_class`.

    Returns
    -------
    float
        Mean over classes of the maximised per-sample log evidence.

    Raises
    ------
    ValueError
        Non-finite features, mismatched lengths, non-integer labels or fewer
        than 2 classes.
    """
    return float(np.mean(logme_per_class(features, labels, max_iter=max_iter, tol=tol)))

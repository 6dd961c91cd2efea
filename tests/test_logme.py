"""LogME against a brute-force maximisation of the Gaussian marginal likelihood."""

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar
from scipy.stats import multivariate_normal

from ncap.bench.logme import log_evidence, logme_per_class, logme_score


def _direct_log_evidence(F, y, log_alpha, log_beta):
    """log N(y | 0, alpha^-1 F F^T + beta^-1 I) with a dense N x N covariance."""
    n = F.shape[0]
    cov = np.exp(-log_alpha) * (F @ F.T) + np.exp(-log_beta) * np.eye(n)
    try:
        return multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(y)
    except np.linalg.LinAlgError:  # numerically singular: far from the maximum
        return -np.inf


def _brute_force_max(F, y):
    """Grid over (log alpha, log beta), then Nelder-Mead from the best grid point."""
    grid_a = np.linspace(-10.0, 12.0, 23)
    grid_b = np.linspace(-6.0, 8.0, 15)
    values = np.array([[_direct_log_evidence(F, y, a, b) for b in grid_b] for a in grid_a])
    i, j = np.unravel_index(np.argmax(values), values.shape)
    res = minimize(
        lambda p: -_direct_log_evidence(F, y, *p),
        x0=[grid_a[i], grid_b[j]],
        method="Nelder-Mead",
        # Wide enough that the evidence at the bounds is within ~1e-8 of its limit there.
        bounds=[(-15.0, 40.0), (-15.0, 20.0)],
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000},
    )
    return max(-res.fun, values.max())


def _data(n, d, n_classes, seed, signal=1.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    F = rng.normal(size=(n, d))
    F[:, 0] += signal * labels
    return F, labels


# Cover N > D, N < D and N = D, with maximisers both inside the domain (finite alpha)
# and on the alpha = inf edge (features useless for that class).
@pytest.mark.parametrize(
    "n,d,n_classes,signal", [(30, 4, 3, 1.0), (8, 15, 3, 1.0), (10, 15, 2, 4.0), (12, 12, 3, 1.0)]
)
def test_matches_brute_force_maximum(n, d, n_classes, signal):
    F, labels = _data(n, d, n_classes, seed=n + d, signal=signal)
    ev = logme_per_class(F, labels)
    assert ev.shape == (n_classes,)
    for k, c in enumerate(np.unique(labels)):
        brute = _brute_force_max(F, (labels == c).astype(float))
        # LogME evaluates the exact evidence at its fixed point, so it cannot exceed the true
        # maximum; it must also not fall short of what the brute-force search found.
        assert ev[k] * n == pytest.approx(brute, abs=1e-6)


def test_noise_free_edge_matches_dense_maximum():
    # rank(F) = N and F F^T nearly proportional to the class-indicator structure: the
    # evidence keeps growing as the noise vanishes, so the supremum is at beta = inf.
    n = 8
    labels = np.arange(n) % 2
    F = np.hstack([0.01 * np.eye(n), np.eye(2)[labels]])
    ev, alphas, betas = logme_per_class(F, labels, return_params=True)
    assert np.all(np.isinf(betas))
    for k in range(2):
        y = (labels == k).astype(float)
        gram = F @ F.T

        def neg(log_alpha, gram=gram, y=y):
            return -multivariate_normal(np.zeros(n), np.exp(-log_alpha) * gram).logpdf(y)

        brute = -minimize_scalar(neg, bounds=(-20, 20), method="bounded", options={"xatol": 1e-10}).fun
        assert ev[k] * n == pytest.approx(brute, abs=1e-8)
        # and the interior evidence approaches it from below as beta grows
        assert log_evidence(F, y, alphas[k], 1e12) == pytest.approx(brute, abs=1e-5)
        assert log_evidence(F, y, alphas[k], 1e12) <= ev[k] * n


def test_log_evidence_formula_matches_dense_gaussian():
    rng = np.random.default_rng(1)
    for n, d in [(10, 3), (5, 9), (6, 6)]:
        F = rng.normal(size=(n, d))
        y = rng.normal(size=n)
        for a, b in [(0.1, 3.0), (2.0, 0.5), (50.0, 20.0)]:
            expected = _direct_log_evidence(F, y, np.log(a), np.log(b))
            assert log_evidence(F, y, a, b) == pytest.approx(expected, rel=1e-10, abs=1e-9)


def test_rank_deficient_features():
    # Duplicate columns: numerical rank 2 < D = 4 < N. The truncated SVD must still be exact.
    rng = np.random.default_rng(2)
    base = rng.normal(size=(9, 2))
    F = np.hstack([base, base])
    y = rng.normal(size=9)
    assert log_evidence(F, y, 0.7, 1.3) == pytest.approx(
        _direct_log_evidence(F, y, np.log(0.7), np.log(1.3)), rel=1e-9
    )
    labels = np.arange(9) % 2
    ev = logme_per_class(F, labels)
    for k in range(2):
        assert ev[k] * 9 == pytest.approx(_brute_force_max(F, (labels == k).astype(float)), abs=1e-6)


def test_score_is_mean_of_classes_and_params_are_the_maximiser():
    F, labels = _data(20, 5, 4, seed=3)
    ev, alphas, betas = logme_per_class(F, labels, return_params=True)
    assert logme_score(F, labels) == pytest.approx(ev.mean())
    for k in range(4):
        y = (labels == k).astype(float)
        assert log_evidence(F, y, alphas[k], betas[k]) / 20 == pytest.approx(ev[k], abs=1e-12)


def test_separating_features_score_higher_than_random():
    rng = np.random.default_rng(4)
    n, d = 120, 16
    labels = rng.integers(0, 4, size=n)
    means = rng.normal(scale=3.0, size=(4, d))
    good = means[labels] + rng.normal(size=(n, d))
    random = rng.normal(size=(n, d))
    assert logme_score(good, labels) > logme_score(random, labels) + 0.1


def test_label_values_do_not_matter():
    F, labels = _data(15, 4, 3, seed=5)
    relabelled = np.array([10, -3, 7])[labels]
    assert logme_score(F, relabelled) == pytest.approx(logme_score(F, labels))
    assert logme_score(F, labels.astype(float)) == pytest.approx(logme_score(F, labels))


@pytest.mark.parametrize(
    "features,labels,match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]), [0, 1, 0], "NaN or infinite"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 1.0]]), [0, 1, 0], "NaN or infinite"),
        (np.ones((3, 2)), [0, 1], "mismatched lengths"),
        (np.ones((3, 2)), [1, 1, 1], "fewer than 2 classes"),
        (np.ones(3), [0, 1, 0], "2-D"),
        (np.ones((3, 2)), [0.5, 1, 0], "integer"),
        (np.ones((3, 2)), ["a", "b", "a"], "integer"),
    ],
)
def test_validation(features, labels, match):
    with pytest.raises(ValueError, match=match):
        logme_score(features, labels)

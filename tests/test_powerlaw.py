"""Power-law fitting (network/powerlaw*.py) and the `ncap powerlaw` command."""
from __future__ import annotations

import io
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, special

import ncap.network.powerlaw_ks as plmod
from ncap.network import (
    best_alternative,
    check_sample,
    compare_distributions,
    fit_alternatives,
    fit_power_law,
    fit_report,
    fit_truncated_power_law,
    log_normaliser,
    loglikelihood_ratio,
    plot_ccdf,
    power_law_gof,
    sample_power_law,
    sample_truncated_power_law,
)
from ncap.service.cli import main

powerlaw = pytest.importorskip("powerlaw")
REF = Path(powerlaw.__file__).parent / "reference_data"


def _ref(name: str) -> np.ndarray:
    return np.loadtxt(REF / f"{name}.txt")


def _mixture(n_tail: int, alpha: float, xmin: int, n_body: int, seed: int) -> np.ndarray:
    """Uniform integers below xmin plus an exact discrete power law above it."""
    rng = np.random.default_rng(seed)
    body = rng.integers(1, xmin, n_body).astype(float)
    return np.concatenate([body, sample_power_law(n_tail, alpha, xmin, rng=rng)])


# --------------------------------------------------------------------------- numerics


def test_log_normaliser_matches_zeta_and_brute_force_sums():
    rng = np.random.default_rng(0)
    a = rng.uniform(1.01, 50, 500)
    q = np.floor(10 ** rng.uniform(0, 6, 500))
    ref = np.log(special.zeta(a, q))
    ok = ref > -700
    np.testing.assert_allclose(log_normaliser(a, q, np.inf)[ok], ref[ok], rtol=1e-13, atol=1e-13)
    # finite sums for any real exponent (the bounded law), including around a = 1 and a = 0
    for alpha in (-40.0, -3.3, -1e-13, 0.0, 0.5, 1 - 1e-12, 1.0, 1 + 1e-9, 2.5, 45.0):
        for lo, hi in ((1, 1), (1, 7), (3, 5000), (40, 41), (17, 2000)):
            x = np.arange(lo, hi + 1, dtype=float)
            lw = -alpha * np.log(x)
            brute = lw.max() + np.log(np.exp(lw - lw.max()).sum())
            assert log_normaliser(alpha, lo, hi)[0] == pytest.approx(brute, rel=1e-12, abs=1e-12)
    # continuous: closed forms
    assert log_normaliser(2.5, 3.0, np.inf, discrete=False)[0] == pytest.approx(math.log(3**-1.5 / 1.5))
    assert log_normaliser(0.5, 3.0, 10.0, discrete=False)[0] == pytest.approx(math.log((10**0.5 - 3**0.5) / 0.5))


def test_discrete_sampler_is_exact():
    rng = np.random.default_rng(1)
    alpha, xmin, n = 1.6, 2, 200_000
    x = sample_power_law(n, alpha, xmin, rng=rng)
    assert x.min() == xmin and np.all(x == np.round(x))
    lz = log_normaliser(alpha, xmin, np.inf)[0]
    for k in (2, 3, 4, 10):  # pmf at small values
        p = math.exp(-alpha * math.log(k) - lz)
        assert np.mean(x == k) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n))
    for k in (100, 10_000, 1_000_000):  # survival, also beyond the 4096-entry table
        s = math.exp(log_normaliser(alpha, k, np.inf)[0] - lz)
        assert np.mean(x >= k) == pytest.approx(s, abs=4 * math.sqrt(s * (1 - s) / n) + 1e-6)


# --------------------------------------------------------------------------- power law


@pytest.mark.parametrize("alpha,xmin", [(2.5, 5), (3.5, 4)])
def test_recovers_alpha_and_xmin(alpha, xmin):
    x = _mixture(20_000, alpha, xmin, 6_000, seed=int(alpha * 10))
    fit = fit_power_law(x)
    assert fit.xmin == xmin and not fit.at_bound
    assert fit.n_tail == 20_000 + np.sum(x[:0]) and fit.n == x.size
    assert abs(fit.alpha - alpha) < 4 * fit.alpha_se
    # discrete SE is Clauset's eq. 3.6, 1/sqrt(n (zeta''/zeta - (zeta'/zeta)^2)), here by finite differences
    h = 1e-4
    lz = [math.log(special.zeta(fit.alpha + d, fit.xmin)) for d in (-h, 0, h)]
    se = 1 / math.sqrt(fit.n_tail * (lz[0] - 2 * lz[1] + lz[2]) / h**2)
    assert fit.alpha_se == pytest.approx(se, rel=1e-4)


def test_no_alpha_cap_and_bound_is_flagged():
    x = sample_power_law(5_000, 6.0, 1, rng=np.random.default_rng(2))
    fit = fit_power_law(x, xmin=1)
    assert abs(fit.alpha - 6.0) < 4 * fit.alpha_se and not fit.at_bound
    with pytest.warns(RuntimeWarning, match="search bound"):
        capped = fit_power_law(x, xmin=1, xmin_candidates=None, alpha_max=4.0)
    assert capped.at_bound and capped.alpha == 4.0


def test_continuous_recovery():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0.1, 2.0, 500), sample_power_law(3000, 2.7, 2.0, discrete=False, rng=rng)])
    fit = fit_power_law(x, discrete=False)
    assert fit.xmin == pytest.approx(2.0, rel=0.05)
    assert abs(fit.alpha - 2.7) < 4 * fit.alpha_se
    assert fit.alpha_se == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))


def _plfit_brute(x):
    """Clauset's procedure written plainly: every candidate, scalar MLE, KS over all integers xmin..max."""
    best = None
    u = np.unique(x)
    for xm in u[:-2]:
        t = x[x >= xm]
        slog = np.log(t).sum()
        nll = lambda a, slog=slog, m=t.size, xm=xm: a * slog + m * math.log(special.zeta(a, xm))
        a = optimize.minimize_scalar(nll, bounds=(1.0001, 50), method="bounded",
                                     options={"xatol": 1e-10}).x
        grid = np.arange(xm, t.max() + 1)
        model = 1 - special.zeta(a, grid + 1) / special.zeta(a, xm)  # P(X <= x)
        emp = np.searchsorted(np.sort(t), grid, side="right") / t.size
        d = np.abs(emp - model).max()
        if best is None or d < best[0]:
            best = (d, xm, a)
    return best


def test_matches_brute_force_clauset_procedure():
    x = _mixture(300, 2.3, 4, 150, seed=7)
    d, xm, a = _plfit_brute(x)
    fit = fit_power_law(x)  # ks_variant="sup": the sup over all integers, as plfit
    assert fit.xmin == xm
    assert fit.alpha == pytest.approx(a, abs=1e-5)
    assert fit.ks == pytest.approx(d, abs=1e-6)


def test_agrees_with_powerlaw_package():
    x = _mixture(6000, 2.6, 6, 3000, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(x, discrete=True, verbose=0, estimate_discrete=False,
                           parameter_ranges={"alpha": [1.0, 50.0]})
    fit = fit_power_law(x, ks_variant="left")
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, abs=2e-4)  # powerlaw's Nelder-Mead stops at tol 1e-4
    assert fit.ks == pytest.approx(ref.D, abs=1e-5)
    assert fit.n_tail == ref.n_tail


@pytest.mark.parametrize(
    "name,discrete,xmin,alpha,tol",
    [  # Clauset, Shalizi & Newman 2009, Table 6.1 (xmin, alpha with its quoted uncertainty)
        ("words", True, 7, 1.95, 0.02),
        ("terrorism", True, 12, 2.4, 0.2),
        ("flares", True, 323, 1.79, 0.02),
        ("blackouts", False, 230_000, 2.3, 0.3),
    ],
)
def test_published_clauset_values(name, discrete, xmin, alpha, tol):
    fit = fit_power_law(_ref(name), discrete=discrete)
    assert fit.xmin == xmin
    assert abs(fit.alpha - alpha) <= tol
    if name == "words":
        assert fit.n_tail == 2958 and fit.alpha == pytest.approx(1.9527, abs=1e-3)
        assert fit_power_law(_ref(name), ks_variant="left").xmin == 7


def test_staged_ks_screening_equals_exhaustive(monkeypatch):
    x = _ref("flares")
    exact = fit_power_law(x)
    tpl_exact = fit_truncated_power_law(x, max_candidates=24)
    monkeypatch.setattr(plmod, "_CHUNK", 1000)  # force the bound-and-prune path
    staged = fit_power_law(x)
    tpl_staged = fit_truncated_power_law(x, max_candidates=24)
    assert (staged.xmin, staged.alpha, staged.ks) == (exact.xmin, exact.alpha, exact.ks)
    assert tpl_staged == tpl_exact


# --------------------------------------------------------------------------- goodness of fit


def test_bootstrap_pvalue_is_calibrated_and_rejects_lognormal():
    # under the null the p-value is uniform: its mean over independent power-law samples is ~0.5
    ps = []
    for i in range(20):
        x = sample_power_law(400, 2.5, 1, rng=np.random.default_rng(100 + i))
        ps.append(power_law_gof(x, fit_power_law(x), n_bootstrap=19, seed=i))
    assert 0.25 < np.mean(ps) < 0.75
    assert power_law_gof(x, fit_power_law(x), n_bootstrap=19, seed=19) == ps[-1]  # seeded
    ln = np.round(np.random.default_rng(5).lognormal(2.0, 1.0, 3000)) + 1
    f_ln = fit_power_law(ln)
    assert power_law_gof(ln, f_ln, n_bootstrap=40, seed=0) < 0.05
    with pytest.raises(ValueError, match="values but the fit"):
        power_law_gof(ln[:-1], f_ln, n_bootstrap=2)


# --------------------------------------------------------------------------- bounded power law


@pytest.mark.parametrize("alpha", [1.7, -0.5])
def test_truncated_power_law_recovers_alpha(alpha):
    x = sample_truncated_power_law(6000, alpha, 2, 300, rng=np.random.default_rng(8))
    tpl = fit_truncated_power_law(x)
    assert abs(tpl.alpha - alpha) < 4 * tpl.alpha_se and not tpl.at_bound
    assert 2 <= tpl.xmin < tpl.xmax <= 300


@pytest.mark.parametrize("frac", [0.3, 0.1])
def test_truncated_search_windows(frac):
    x = sample_truncated_power_law(400, 1.2, 1, 150, rng=np.random.default_rng(9))
    tpl = fit_truncated_power_law(x, search_fraction=frac, max_candidates=None)
    m = math.floor(x.size * frac)
    xs = np.sort(x)
    assert tpl.xmin in set(xs[:m]) and tpl.xmax in set(xs[-m:])
    # brute force over the same windows: scalar MLE + KS over all integers of the support (the study)
    best = None
    for lo in np.unique(xs[:m]):
        for hi in np.unique(xs[-m:]):
            t = x[(x >= lo) & (x <= hi)]
            if np.unique(t).size < 3:
                continue
            grid = np.arange(lo, hi + 1)
            slog = np.log(t).sum()

            def nll(a, grid=grid, slog=slog, m=t.size):
                lw = -a * np.log(grid)
                return a * slog + m * (lw.max() + np.log(np.exp(lw - lw.max()).sum()))

            a = optimize.minimize_scalar(nll, bounds=(-50, 50), method="bounded", options={"xatol": 1e-10}).x
            w = np.exp(-a * np.log(grid) - (-a * np.log(grid)).max())
            sf_model = np.cumsum(w[::-1])[::-1] / w.sum()  # P(X >= x)
            sf_emp = 1 - np.searchsorted(np.sort(t), grid, side="left") / t.size
            d = np.abs(sf_model - sf_emp).max()
            if best is None or d < best[0] - 1e-12:
                best = (d, lo, hi, a)
    assert (tpl.xmin, tpl.xmax) == (best[1], best[2])
    assert tpl.alpha == pytest.approx(best[3], abs=1e-5)
    assert tpl.ks == pytest.approx(best[0], abs=1e-6)


# --------------------------------------------------------------------------- comparisons


def test_likelihood_ratio_signs():
    rng = np.random.default_rng(4)
    ln = np.round(rng.lognormal(2.0, 0.8, 6000)) + 1
    f = fit_power_law(ln, xmin=10)  # a long tail: with the KS-chosen xmin the tail is short and ambiguous
    comp = compare_distributions(ln, f)
    assert comp["lognormal"][0] < 0 and comp["lognormal"][1] < 0.1
    pl = sample_power_law(4000, 2.3, 1, rng=rng)
    comp = compare_distributions(pl, fit_power_law(pl))
    assert comp["exponential"][0] > 0 and comp["exponential"][1] < 0.01
    assert comp["lognormal"][1] > 0.05 or comp["lognormal"][0] > 0
    assert best_alternative(comp, significance=0.01) == "power_law"
    assert best_alternative({"lognormal": (-3.0, 0.001), "exponential": (-5.0, 0.5)}) == "lognormal"
    r, p = loglikelihood_ratio([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    assert (r, p) == (0.0, 1.0)


def test_comparisons_agree_with_powerlaw_package():
    x = _ref("words")
    fit = fit_power_law(x, ks_variant="left")
    ours = compare_distributions(x, fit)
    alts = fit_alternatives(x, fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(x, discrete=True, verbose=0, estimate_discrete=False,
                           parameter_ranges={"alpha": [1.0, 50.0]})
        for name, theirs in (("exponential", "exponential"), ("cutoff_power_law", "truncated_power_law")):
            r, p = ref.distribution_compare("power_law", theirs, normalized_ratio=True)
            assert ours[name][0] == pytest.approx(r, abs=0.02) and ours[name][1] == pytest.approx(p, abs=0.01)
        # our lognormal MLE is at least as good as powerlaw's Nelder-Mead optimum
        assert alts["lognormal"]["loglik"] >= ref.lognormal.loglikelihood - 1e-6
    assert alts["cutoff_power_law"]["loglik"] >= alts["power_law"]["loglik"]  # nested


# --------------------------------------------------------------------------- report, plot, validation


def test_fit_report_and_plot(tmp_path):
    x = _ref("terrorism")
    rep = fit_report(x, n_bootstrap=3, seed=1)
    assert set(rep) == {"power_law", "truncated_power_law", "comparisons", "n"}
    assert set(rep["power_law"]) == {"alpha", "alpha_se", "xmin", "n_tail", "ks", "p_value"}
    assert {"alpha", "xmin", "xmax", "ks"} <= set(rep["truncated_power_law"])
    assert set(rep["comparisons"]) == {"lognormal", "exponential", "cutoff_power_law"}
    assert 0 <= rep["power_law"]["p_value"] <= 1 and rep["n"] == x.size
    json.dumps(rep)
    ax = plot_ccdf(x, fit_power_law(x), fit_truncated_power_law(x))
    ax.figure.savefig(tmp_path / "ccdf.png")
    assert (tmp_path / "ccdf.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "data,match",
    [
        (np.arange(1, 5), "at least 10"),
        (np.r_[np.arange(1, 12), 0], "positive"),
        (np.r_[np.arange(1, 12), 2.5], "integer"),
        (np.r_[np.arange(1, 12), np.nan], "NaN"),
        (np.ones((4, 4)), "1-D"),
    ],
)
def test_check_sample_rejects(data, match):
    with pytest.raises(ValueError, match=match):
        check_sample(data, discrete=True)


# --------------------------------------------------------------------------- CLI


def test_cli_json(tmp_path, capsys):
    f = tmp_path / "deg.txt"
    f.write_text("\n".join(str(int(v)) for v in _ref("terrorism")))
    plot = tmp_path / "p.png"
    assert main(["powerlaw", str(f), "--json", "--bootstrap", "2", "--seed", "3", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"power_law", "truncated_power_law", "comparisons", "n", "dropped_nonpositive"}
    assert out["power_law"]["xmin"] == 12 and out["n"] == 9101
    assert set(out["power_law"]) == {"alpha", "alpha_se", "xmin", "n_tail", "ks", "p_value"}
    assert plot.stat().st_size > 1000


def test_cli_text_and_stdin(monkeypatch, capsys):
    x = sample_power_law(300, 2.5, 1, rng=np.random.default_rng(0))
    monkeypatch.setattr(sys, "stdin", io.StringIO(" ".join(str(int(v)) for v in x)))
    assert main(["powerlaw", "-"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "xmin" in out and "lognormal" in out


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "no such file"),
        ("1 2 3\n4 five 6\n" + "7\n" * 20, "line 2: not a number: 'five'"),
        ("1 2 3\n", "at least 10"),
        ("0 0 0 1 2 3 4 5 6 7 8\n", "at least 10 positive values, got 8"),
        ("1.5 2 3 4 5 6 7 8 9 10 11\n", "integers"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, content, match):
    f = tmp_path / "in.txt"
    if content is not None:
        f.write_text(content)
    assert main(["powerlaw", str(f)]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_cli_continuous_accepts_reals(tmp_path, capsys):
    f = tmp_path / "ev.txt"
    x = sample_power_law(400, 2.5, 1.0, discrete=False, rng=np.random.default_rng(1))
    f.write_text("\n".join(f"{v:.6f}" for v in x))
    assert main(["powerlaw", str(f), "--continuous", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 400


def test_cli_drops_zero_degrees_counts_them_and_fits_the_rest(tmp_path, capsys):
    """A degree sequence has zero-degree nodes (C. elegans: 26; dormant neurons of a pruned layer): they are dropped
    with a message, counted in the report, and the fit is the one of the positive values (as the powerlaw package
    fits them)."""
    import powerlaw

    x = sample_power_law(300, 2.5, 1, rng=np.random.default_rng(0)).astype(int)
    with_zeros, without = tmp_path / "z.txt", tmp_path / "p.txt"
    with_zeros.write_text(" ".join(map(str, [0] * 26 + x.tolist())))
    without.write_text(" ".join(map(str, x.tolist())))
    assert main(["powerlaw", str(with_zeros), "--json"]) == 0
    out, err = capsys.readouterr()
    rep = json.loads(out)
    assert "dropped 26 value(s) <= 0" in err and rep["dropped_nonpositive"] == 26 and rep["n"] == 300
    assert main(["powerlaw", str(without), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert rep["power_law"] == ref["power_law"] and ref["dropped_nonpositive"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(np.r_[np.zeros(26), x], discrete=True, verbose=False)
    assert rep["power_law"]["xmin"] == fit.power_law.xmin
    assert rep["power_law"]["alpha"] == pytest.approx(fit.power_law.alpha, rel=0.05)

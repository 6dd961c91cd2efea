"""The per-layer degree report of a (pruned) model, :func:`pruning_report`: what ``ncap prune`` prints.

For every reported node layer (:mod:`ncap.network.degrees`) it fits the positive degrees
(:func:`degree_fit`: power law, bounded power law, likelihood-ratio comparisons), and adds the measures of
:mod:`ncap.network.measures` (k-shells, dormant neurons, ESD) and the sparsity of every
layer (:mod:`ncap.network.masks`); :func:`plot_degree_ccdfs` draws the log-log CCDFs.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ncap.jsonsafe import to_jsonable
from ncap.network.degrees import LayerDegrees, network_from_model
from ncap.network.masks import get_mask, prunable_layers
from ncap.network.measures import dormant_neurons, esd_report, kshell
from ncap.network.powerlaw import fit_power_law, plot_ccdf
from ncap.network.powerlaw_compare import best_alternative, compare_distributions
from ncap.network.powerlaw_sampling import power_law_gof
from ncap.network.powerlaw_tpl import fit_truncated_power_law

__all__ = ["degree_fit", "plot_degree_ccdfs", "pruning_report"]


# ------------------------------------------------------------------------------------- degree fits


def _verdict(comparisons: dict, alpha_level: float = 0.1) -> str:
    """Winner of the likelihood-ratio tests (R > 0 favours the power law).

    An alternative wins if it beats the power law significantly (R < 0, p < level): the most negative R
    among those. The power law wins if it beats every alternative significantly. Otherwise
    ``"inconclusive"``.
    """
    if not comparisons:
        return "inconclusive"
    beat = {k: v["R"] for k, v in comparisons.items() if v["R"] < 0 and v["p"] < alpha_level}
    if beat:
        return min(beat, key=beat.get)
    if all(v["R"] > 0 and v["p"] < alpha_level for v in comparisons.values()):
        return "power_law"
    return "inconclusive"


def degree_fit(degree, *, n_bootstrap: int = 0, seed: int = 0, search_fraction: float = 0.3,
               min_nodes: int = 10) -> dict:
    """Power-law, truncated (bounded) power-law fit and comparisons of one layer's positive degrees.

    Zero degrees (isolated nodes) are excluded from the fit and counted in ``n_zero``. Returns
    ``{"fitted": bool, "n", "n_zero", "power_law": {...}, "truncated_power_law": {...},
    "comparisons": {name: {R, p}}, "best_alternative": str, "verdict": str}`` or
    ``{"fitted": False, "reason": ...}``. ``best_alternative`` follows :func:`best_alternative`
    (the power law unless an alternative beats it with p < 0.1); ``verdict`` is stricter: ``power_law``
    only if it beats every alternative with p < 0.1, an alternative if one beats it, else ``inconclusive``.
    """
    d = np.asarray(degree, dtype=np.int64)
    pos = d[d > 0]
    res: dict = {"n": int(d.size), "n_zero": int((d == 0).sum())}
    if pos.size < min_nodes or np.unique(pos).size < 3:
        res.update(fitted=False, reason=f"{pos.size} nonzero degrees, {np.unique(pos).size} distinct "
                                        f"(need >= {min_nodes} and >= 3)")
        return res
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fit = fit_power_law(pos, discrete=True)
            p_value = power_law_gof(pos, fit, n_bootstrap=n_bootstrap, seed=seed) if n_bootstrap else None
            tpl = fit_truncated_power_law(pos, search_fraction=search_fraction, discrete=True)
    except ValueError as exc:
        res.update(fitted=False, reason=str(exc))
        return res
    plr = fit.to_dict()
    plr["p_value"] = p_value
    plr["at_bound"] = bool(fit.at_bound)
    res.update(fitted=True, power_law=plr, truncated_power_law=tpl.to_dict(), comparisons={})
    res["truncated_power_law"]["alpha_se"] = float(tpl.alpha_se) if math.isfinite(tpl.alpha_se) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comps = compare_distributions(pos, fit)
        res["comparisons"] = {k: {"R": float(r), "p": float(p)} for k, (r, p) in comps.items()}
    except (ValueError, RuntimeError, ArithmeticError) as exc:  # a failed comparison must not lose the fits
        res["comparisons_error"] = f"{type(exc).__name__}: {exc}"
    # best_alternative: the rule of `ncap powerlaw` (power_law unless an alternative beats it significantly);
    # verdict: stricter, "power_law" only if it beats every alternative significantly, else "inconclusive".
    res["verdict"] = _verdict(res["comparisons"])
    res["best_alternative"] = best_alternative(res["comparisons"])
    res["_fit"] = fit
    res["_tpl"] = tpl
    return res


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def plot_degree_ccdfs(degrees: Sequence[LayerDegrees], fits: Sequence[dict], out_dir: str | Path,
                      prefix: str = "ccdf") -> list[str]:
    """Log-log CCDF with the fitted power law and truncated (bounded) power law; one PNG per layer + combined.

    The truncated fit is drawn as P(X > x_max) + (n_tail/n)·S(x) so that it sits on the data even when
    degrees above x_max exist.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fitted = [(ld, f) for ld, f in zip(degrees, fits) if f.get("fitted")]
    if not fitted:
        return paths
    big = Figure(figsize=(4.2 * len(fitted), 3.6))
    FigureCanvasAgg(big)
    for k, (ld, f) in enumerate(fitted):
        pos = ld.degree[ld.degree > 0]
        fig = Figure(figsize=(5.0, 4.0))
        FigureCanvasAgg(fig)
        for ax in (fig.add_subplot(), big.add_subplot(1, len(fitted), k + 1)):
            plot_ccdf(pos, f["_fit"], f["_tpl"], ax=ax)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{ld.name} ({ld.size} nodes)", fontsize=9)
            ax.set_xlabel("degree")
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in ld.name)
        p = out_dir / f"{prefix}_{safe}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        paths.append(str(p))
    big.tight_layout()
    p = out_dir / f"{prefix}_all.png"
    big.savefig(p, dpi=100)
    paths.append(str(p))
    return paths


# ------------------------------------------------------------------------------------------- report


def pruning_report(model: nn.Module, *, input_shape: Sequence[int] | None = None, pruned: Sequence[str] | None = None,
                   masks: dict | None = None, n_bootstrap: int = 0, seed: int = 0,
                   dormant_thresholds: Sequence[int] = (1, 10), with_esd: bool = True, with_kshell: bool = True,
                   search_fraction: float = 0.3, strict: bool = False, plot_dir: str | Path | None = None,
                   min_nodes: int = 10) -> dict:
    """Per-layer degree statistics of a (pruned) model as a JSON-serialisable dict.

    Layers and degrees: see :func:`ncap.network.degrees.network_from_model` (``input_shape`` is needed
    for conv models). For every reported node layer: node count, which sides count, degree summary,
    power-law fit (α, x_min, KS, bootstrap p-value if ``n_bootstrap``), truncated power-law fit (α, x_min,
    x_max, KS), likelihood-ratio comparisons and the best alternative, k-shell summary and dormant counts.
    Also the sparsity of every Linear/Conv2d layer, the network k-shell summary, and the ESD α per layer.
    ``plot_dir`` writes CCDF PNGs (``ccdf_<layer>.png`` and ``ccdf_all.png``).
    """
    net = network_from_model(model, input_shape=input_shape, pruned=pruned, masks=masks, strict=strict)
    degs = net.degrees()
    fits = [degree_fit(ld.degree, n_bootstrap=n_bootstrap, seed=seed, search_fraction=search_fraction,
                       min_nodes=min_nodes) for ld in degs]
    ks = kshell(net) if with_kshell else None
    ks_by_layer = {row["layer"]: row for row in ks["layers"]} if ks else {}
    dormant = {row["layer"]: row for row in dormant_neurons(degs, dormant_thresholds)}
    layers = []
    for ld, f in zip(degs, fits):
        row = ld.summary()
        row["fit"] = _public(f)
        if ks:
            kr = ks_by_layer[ld.name]
            row["kshell"] = {k: kr[k] for k in ("k_min", "k_max", "k_mean", "in_core")}
        row["dormant"] = {k: v for k, v in dormant[ld.name].items() if k not in ("layer", "nodes")}
        layers.append(row)
    conn = []
    for lc in net.layers:
        total = lc.counts.size  # node pairs
        conn.append({"layer": lc.name, "kind": lc.kind, "pruned": lc.pruned, "connections": lc.n_connections,
                     "node_pairs_connected": int((lc.counts > 0).sum()), "node_pairs": int(total),
                     "weight_uses": lc.uses})
    by_name = dict(prunable_layers(model))
    sparsity = {}
    for lc in net.layers:
        m = by_name.get(lc.name)
        if m is not None:
            w = m.weight.detach()
            mask = masks.get(lc.name) if masks else get_mask(m)
            zero = (~mask.bool()).sum() if mask is not None else (w == 0).sum()
            sparsity[lc.name] = float(zero) / w.numel()
    report = {
        "layers": layers,
        "connections": conn,
        "sparsity": sparsity,
        "notes": list(net.notes),
    }
    if ks:
        report["kshell"] = {k: ks[k] for k in ("k_min", "k_max", "core_size", "weighted")}
        report["kshell"]["layers"] = ks["layers"]
    if with_esd:
        report["esd"] = esd_report(model, layers=[lc.name for lc in net.layers])
    if plot_dir is not None:
        report["plots"] = plot_degree_ccdfs(degs, fits, plot_dir)
    return to_jsonable(report)

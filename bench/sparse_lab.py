"""The sparse-training lab's benchmark: the six qualitative findings of sources/002 and sources/003 at CPU scale.

    python -m ncap.bench.sparse_lab [--quick] [--seeds 3] [--datasets mnist5k,animal-mnist,digits]
    python -m ncap.bench.sparse_lab --speed       # one topology update vs one epoch, 784-1024-1024-10 at 95 %

Every (dataset, run, seed) is cached as JSON (+ its topology arrays as .npz) under
``$NCAP_CACHE/sparse_lab/`` (``ncap.models.paths.cache_root``), so an interrupted run resumes. Runs, per
dataset and seed (MLP input-256-256-classes with LayerNorm, SGD + Nesterov, lr 0.1 with 10× drops at 50 %
and 75 %, weight decay 5e-4, batch 128, 20 epochs, 80/20 stratified split; sparse layers fc1, fc2 at 90 %,
output dense; topology update every half epoch, prune rate 0.5 decaying by cosine to 0):

* ``dense``; ERK + ``random`` (SET), ``gradient`` (RigL), ``momentum`` (SNFS); ERK + ``random`` at 95 %;
* RigL from a ``uniform`` fan-in profile (CV 0) and a ``lognormal`` one at CV 2 (far above equilibrium);
* RigL from ``lognormal`` at the equilibrium CV: per layer, the seed-mean final fan-in CV of RigL from ERK
  on that dataset (so it runs after the others);
* finding 4 needs no training: 16 static fan-in profiles (CV 0 to ~3), one forward-backward pass each.

Findings (sources' claims; ``results.md`` says for each whether it held and by how much):

1. at 90-95 % sparsity, sparse MLPs are within ~1 point of dense (val accuracy, seed mean);
2. gradient and momentum regrowth create hubs faster than random (hidden-layer degree CV and max degree
   after a quarter of training, and averaged over training);
3. dormant neurons increase during training under preferential regrowth (hidden neurons below 63 % of
   their layer's initial mean degree, sources/002's 110 rescaled; also the absolute 10);
4. fan-in CV predicts gradient concentration at hubs (Spearman and Pearson of CV vs log gradient ratio);
5. RigL converges to a characteristic fan-in distribution (spread of the fan-in CV across initialisations,
   start vs end);
6. lognormal initialisation at the equilibrium CV against ERK under RigL (paired accuracy difference).

Writes ``results.json``, ``results.md`` and PNG plots to ``--out`` (default ``bench/results/sparse_lab``;
``--quick`` writes ``.../quick``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ncap.jsonsafe import to_jsonable, write_json
from ncap.models.sparse import DSTConfig, train_dst
from ncap.models.sparse.dst import as_tensors, build_model, sparsify
from ncap.models.sparse.plots import plot_ccdfs_by_epoch, plot_series
from ncap.models.sparse.report import run_label, summarize_run
from ncap.models.sparse.topology import TopologyTracker

RESULTS = Path(__file__).parent / "results" / "sparse_lab"
FULL = {"datasets": ["mnist5k", "animal-mnist", "digits"], "seeds": 3, "epochs": 20, "hidden": "256,256",
        "per_class": None}
QUICK = {"datasets": ["mnist5k", "animal-mnist", "digits"], "seeds": 1, "epochs": 6, "hidden": "64,64",
         "per_class": 60}
BASE = {"sparsity": 0.9, "layer_norm": True, "lr": 0.1, "density": "erk"}
HIGH_CV = 2.0
F4_PROFILES = [("random", None, {}), ("uniform", None, {}), ("quadratic", None, {}), ("linear", None, {}),
               ("bell", None, {}), ("exponential", None, {}), ("multipeak", None, {"peaks": 4, "sigma": 0.05}),
               ("multipeak", None, {"peaks": 1, "sigma": 0.1}), ("multipeak", None, {"peaks": 1, "sigma": 0.03}),
               *[("lognormal", cv, {}) for cv in (0.5, 1.0, 1.5, 2.0, 2.5)],
               *[("powerlaw", cv, {}) for cv in (0.5, 1.5)]]


# ------------------------------------------------------------------------------------------ running


def cache_dir() -> Path:
    from ncap.models.paths import cache_root

    return cache_root() / "sparse_lab"


def _key(dataset: str, settings: dict, cfg: DSTConfig) -> str:
    blob = json.dumps({"v": 2, "dataset": dataset, "per_class": settings["per_class"], "config": cfg.model_dump()},
                      sort_keys=True)
    return f"{dataset}-{run_label(cfg)}-s{cfg.seed}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def run_cached(ds, dataset: str, settings: dict, cfg: DSTConfig, *, use_cache: bool = True) -> dict:
    """One run's summary (plus its per-update rows), from the cache or trained and cached."""
    path = cache_dir() / f"{_key(dataset, settings, cfg)}.json"
    if use_cache and path.exists():
        return json.loads(path.read_text())
    res = train_dst(cfg, ds)
    rec = to_jsonable({**summarize_run(res), "topology": res["topology"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    if res.get("_arrays"):
        np.savez_compressed(path.with_suffix(".npz"), **res["_arrays"])
    write_json(path, rec)
    return rec


def load_data(dataset: str, settings: dict):
    from ncap.models.data import load_dataset, sample_per_class

    ds = load_dataset(dataset)
    return sample_per_class(ds, settings["per_class"], seed=0) if settings["per_class"] else ds


def phase_one(settings: dict, seed: int) -> dict[str, DSTConfig]:
    """The runs that do not need the equilibrium CV, by name."""
    base = {**BASE, "model": f"mlp:{settings['hidden']}", "epochs": settings["epochs"], "seed": seed}
    return {
        "dense": DSTConfig(**base, rule="dense"),
        "random": DSTConfig(**base, rule="random"),
        "gradient": DSTConfig(**base, rule="gradient"),
        "momentum": DSTConfig(**base, rule="momentum"),
        "random@95": DSTConfig(**{**base, "sparsity": 0.95}, rule="random"),
        "rigl-uniform": DSTConfig(**base, rule="gradient", profile="uniform"),
        "rigl-lognormal-high": DSTConfig(**base, rule="gradient", profile="lognormal", profile_cv=[HIGH_CV]),
    }


def equilibrium_cv(runs: dict) -> list[float]:
    """Per sparse layer, the seed-mean final fan-in CV of RigL from ERK."""
    lasts = [r["last"]["layers"] for (name, _s), r in runs.items() if name == "gradient"]
    return [float(np.mean([lay[n]["fan_in_cv"] for lay in lasts])) for n in lasts[0]]


def gradient_concentration(ds, settings: dict, seed: int) -> list[dict]:
    """Finding 4: fan-in CV and gradient ratio of every sparse layer for each static profile, one batch."""
    from ncap.models.data import split_dataset

    tr, _ = split_dataset(ds, 0.2, seed)
    x, y = as_tensors(tr)
    rows = []
    for profile, cv, extra in F4_PROFILES:
        cfg = DSTConfig(**BASE, model=f"mlp:{settings['hidden']}", rule="static", profile=profile,
                        profile_cv=None if cv is None else [cv], seed=seed, **extra)
        torch.manual_seed(seed)
        model, _tf, shape = build_model(cfg, tuple(x.shape[1:]), int(y.max()) + 1)
        sparse, _ = sparsify(model, cfg, shape)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:128]), y[:128]).backward()
        mods = dict(model.named_modules())
        row = TopologyTracker(model, sparse, with_kshell=False).record(
            step=0, epoch=0, grads={n: mods[n].weight.grad for n in sparse})
        for name, lay in row["layers"].items():
            rows.append({"profile": profile, "cv_target": cv, **extra, "layer": name, "fan_in_cv": lay["fan_in_cv"],
                         "grad_ratio": lay["grad_ratio"]})
    return rows


def run_all(settings: dict, *, use_cache: bool = True, log=print) -> dict:
    """Every run of every dataset and seed (phase 1, then lognormal at equilibrium), and finding 4's rows."""
    from tqdm.auto import tqdm

    out = {}
    for dataset in settings["datasets"]:
        ds = load_data(dataset, settings)
        runs: dict = {}
        keys: dict = {}
        jobs = [(name, seed, cfg) for seed in range(settings["seeds"]) for name, cfg in phase_one(settings, seed).items()]
        for name, seed, cfg in tqdm(jobs, desc=f"{dataset} runs", file=sys.stderr):
            runs[(name, seed)] = run_cached(ds, dataset, settings, cfg, use_cache=use_cache)
            keys[(name, seed)] = _key(dataset, settings, cfg)
        eq = equilibrium_cv(runs)
        log(f"{dataset}: RigL equilibrium fan-in CV per layer {[round(c, 2) for c in eq]}")
        for seed in range(settings["seeds"]):
            base = phase_one(settings, seed)["gradient"].model_dump()
            cfg = DSTConfig(**{**base, "profile": "lognormal", "profile_cv": [round(c, 3) for c in eq]})
            runs[("rigl-lognormal-eq", seed)] = run_cached(ds, dataset, settings, cfg, use_cache=use_cache)
            keys[("rigl-lognormal-eq", seed)] = _key(dataset, settings, cfg)
        f4 = [dict(r, seed=s) for s in range(settings["seeds"]) for r in gradient_concentration(ds, settings, s)]
        out[dataset] = {"runs": runs, "keys": keys, "equilibrium_cv": eq, "gradient_concentration": f4, "n": len(ds)}
    return out


# ------------------------------------------------------------------------------------------ findings


def _ms(vals) -> dict:
    vals = [float(v) for v in vals if v is not None]
    return {"mean": float(np.mean(vals)) if vals else None, "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            "n": len(vals)}


def _seeds(runs: dict, name: str) -> list[dict]:
    return [r for (n, _s), r in sorted(runs.items(), key=lambda kv: kv[0][1]) if n == name]


def _hidden(row: dict) -> list[str]:
    return [n for n in row["nodes"] if n != "input"]


def _at(rows: list[dict], frac: float) -> dict:
    return rows[round(frac * (len(rows) - 1))]


def _verdict(flags: list[bool]) -> str:
    return "held" if all(flags) else "partly" if any(flags) else "not held"


def finding1(data: dict) -> dict:
    per, flags = {}, []
    for ds, d in data.items():
        dense = [r["accuracy"] for r in _seeds(d["runs"], "dense")]
        per[ds] = {"dense": _ms(100 * np.array(dense))}
        for name in ("random", "gradient", "momentum", "random@95"):
            acc = [r["accuracy"] for r in _seeds(d["runs"], name)]
            gap = 100 * (np.array(dense) - np.array(acc))
            per[ds][name] = {"accuracy": _ms(100 * np.array(acc)), "gap": _ms(gap)}
            flags.append(float(gap.mean()) <= 1.0)
    return {"per_dataset": per, "verdict": _verdict(flags)}


def _hub_metrics(rows: list[dict]) -> dict:
    early = _at(rows, 0.25)
    return {"cv_early": float(np.mean([early["nodes"][n]["degree_cv"] for n in _hidden(early)])),
            "max_early": float(np.mean([early["nodes"][n]["degree_max"] for n in _hidden(early)])),
            "cv_mean": float(np.mean([np.mean([r["nodes"][n]["degree_cv"] for n in _hidden(r)]) for r in rows[1:]])),
            "cv_start": float(np.mean([rows[0]["nodes"][n]["degree_cv"] for n in _hidden(rows[0])]))}


def finding2(data: dict) -> dict:
    per, flags = {}, []
    for ds, d in data.items():
        m = {name: [_hub_metrics(r["topology"]) for r in _seeds(d["runs"], name)] for name in ("random", "gradient", "momentum")}
        row = {name: {k: _ms([x[k] for x in v]) for k in v[0]} for name, v in m.items()}
        for name in ("gradient", "momentum"):
            ratio = row[name]["cv_early"]["mean"] / row["random"]["cv_early"]["mean"]
            row[name]["cv_early_ratio_vs_random"] = ratio
            row[name]["max_early_ratio_vs_random"] = row[name]["max_early"]["mean"] / row["random"]["max_early"]["mean"]
            flags.append(ratio > 1.0)
        per[ds] = row
    return {"per_dataset": per, "verdict": _verdict(flags)}


def _dormant(row: dict, kind: str) -> int:
    if kind == "relative":
        return sum(row["nodes"][n]["dormant_rel"][max(row["nodes"][n]["dormant_rel"])] for n in _hidden(row))
    return sum(row["nodes"][n]["dormant"]["10"] for n in _hidden(row))


def finding3(data: dict) -> dict:
    per, flags = {}, []
    for ds, d in data.items():
        per[ds] = {}
        for name in ("random", "gradient", "momentum"):
            rs = _seeds(d["runs"], name)
            per[ds][name] = {kind: {"start": _ms([_dormant(r["topology"][0], kind) for r in rs]),
                                    "end": _ms([_dormant(r["topology"][-1], kind) for r in rs]),
                                    "increase": _ms([_dormant(r["topology"][-1], kind) - _dormant(r["topology"][0], kind)
                                                     for r in rs])}
                             for kind in ("relative", "absolute10")}
            if name != "random":
                flags.append(per[ds][name]["relative"]["increase"]["mean"] > 0)
    return {"per_dataset": per, "verdict": _verdict(flags)}


def finding4(data: dict) -> dict:
    from scipy.stats import pearsonr, spearmanr

    per, flags = {}, []
    for ds, d in data.items():
        rows = [r for r in d["gradient_concentration"] if r["grad_ratio"] and r["grad_ratio"] > 0]
        cv = np.array([r["fan_in_cv"] for r in rows])
        lr = np.log(np.array([r["grad_ratio"] for r in rows]))
        rho, r = float(spearmanr(cv, lr)[0]), float(pearsonr(cv, lr)[0])
        dst = [(lay["fan_in_cv"], lay["grad_ratio"]) for (_n, _s), run in d["runs"].items() for row in run["topology"]
               for lay in row["layers"].values() if lay.get("grad_ratio")]
        dcv, dgr = np.array(dst).T if dst else (np.zeros(0), np.zeros(0))
        per[ds] = {"static_profiles": {"spearman": rho, "pearson_log": r, "points": len(rows),
                                       "cv_range": [float(cv.min()), float(cv.max())],
                                       "ratio_range": [float(np.exp(lr.min())), float(np.exp(lr.max()))]},
                   "during_dst": {"spearman": float(spearmanr(dcv, np.log(dgr))[0]) if len(dcv) > 2 else None,
                                  "points": len(dcv)}}
        flags.append(rho >= 0.8)
    return {"per_dataset": per, "verdict": _verdict(flags)}


RIGL_INITS = ("gradient", "rigl-uniform", "rigl-lognormal-high", "rigl-lognormal-eq")


def finding5(data: dict) -> dict:
    per, flags = {}, []
    for ds, d in data.items():
        layers = list(_seeds(d["runs"], "gradient")[0]["last"]["layers"])
        per[ds] = {}
        for lay in layers:
            start = {i: _ms([r["first"]["layers"][lay]["fan_in_cv"] for r in _seeds(d["runs"], i)])["mean"] for i in RIGL_INITS}
            end = {i: _ms([r["last"]["layers"][lay]["fan_in_cv"] for r in _seeds(d["runs"], i)])["mean"] for i in RIGL_INITS}
            s0, s1 = max(start.values()) - min(start.values()), max(end.values()) - min(end.values())
            per[ds][lay] = {"start": start, "end": end, "spread_start": s0, "spread_end": s1, "ratio": s1 / s0}
            flags.append(s1 / s0 <= 0.5)
    return {"per_dataset": per, "verdict": _verdict(flags)}


def finding6(data: dict) -> dict:
    per, flags = {}, []
    for ds, d in data.items():
        erk = [r["accuracy"] for r in _seeds(d["runs"], "gradient")]
        logn = [r["accuracy"] for r in _seeds(d["runs"], "rigl-lognormal-eq")]
        diff = 100 * (np.array(logn) - np.array(erk))
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        outcome = "better" if diff.mean() - se > 0 else "worse" if diff.mean() + se < 0 else "no difference"
        per[ds] = {"erk": _ms(100 * np.array(erk)), "lognormal_eq": _ms(100 * np.array(logn)), "diff": _ms(diff),
                   "se": se, "outcome": outcome, "equilibrium_cv": d["equilibrium_cv"]}
        flags.append(outcome == "better")
    return {"per_dataset": per, "verdict": _verdict(flags)}


FINDINGS = [
    ("1", "at 90-95 % sparsity, sparse MLPs are within ~1 point of dense", finding1),
    ("2", "gradient and momentum regrowth create hubs faster than random", finding2),
    ("3", "dormant neurons increase during training under preferential regrowth", finding3),
    ("4", "fan-in CV predicts gradient concentration at hubs", finding4),
    ("5", "RigL converges to a characteristic fan-in distribution from different initialisations", finding5),
    ("6", "lognormal-equilibrium initialisation beats ERK under RigL", finding6),
]


# ------------------------------------------------------------------------------------------ output


def _fmt(ms: dict | float | None, spec: str = "{:.2f}") -> str:
    if ms is None:
        return "–"
    if isinstance(ms, dict):
        return "–" if ms["mean"] is None else (spec.format(ms["mean"]) + (f" ± {spec.format(ms['sd'])}" if ms["n"] > 1 else ""))
    return spec.format(ms)


def _summary_line(num: str, res: dict) -> str:
    """One sentence per finding with its numbers, per dataset."""
    p = res["per_dataset"]
    if num == "1":
        parts = [f"{ds}: dense {_fmt(v['dense'])} %, gap " + ", ".join(
            f"{n} {_fmt(v[n]['gap'])}" for n in ("random", "gradient", "momentum", "random@95")) for ds, v in p.items()]
    elif num == "2":
        parts = [f"{ds}: degree CV at 25 % of training random {_fmt(v['random']['cv_early'])}, gradient "
                 f"{_fmt(v['gradient']['cv_early'])} (×{v['gradient']['cv_early_ratio_vs_random']:.2f}), momentum "
                 f"{_fmt(v['momentum']['cv_early'])} (×{v['momentum']['cv_early_ratio_vs_random']:.2f}); max degree "
                 f"×{v['gradient']['max_early_ratio_vs_random']:.2f} / ×{v['momentum']['max_early_ratio_vs_random']:.2f}"
                 for ds, v in p.items()]
    elif num == "3":
        parts = [f"{ds}: dormant hidden neurons (< 63 % of initial mean degree) start → end: " + ", ".join(
            f"{n} {_fmt(v[n]['relative']['start'], '{:.0f}')} → {_fmt(v[n]['relative']['end'], '{:.0f}')}"
            for n in ("random", "gradient", "momentum")) + "; degree < 10 at the end: " + ", ".join(
            f"{n} {_fmt(v[n]['absolute10']['end'], '{:.1f}')}" for n in ("random", "gradient", "momentum"))
            for ds, v in p.items()]
    elif num == "4":
        parts = [f"{ds}: Spearman {v['static_profiles']['spearman']:.2f}, Pearson(log) {v['static_profiles']['pearson_log']:.2f} "
                 f"over {v['static_profiles']['points']} layer-profiles (CV {v['static_profiles']['cv_range'][0]:.2f}–"
                 f"{v['static_profiles']['cv_range'][1]:.2f}, ratio {v['static_profiles']['ratio_range'][0]:.2f}–"
                 f"{v['static_profiles']['ratio_range'][1]:.1f}); during DST Spearman {_fmt(v['during_dst']['spearman'])}"
                 for ds, v in p.items()]
    elif num == "5":
        parts = [f"{ds} {lay}: CV spread across inits {v['spread_start']:.2f} → {v['spread_end']:.2f} (×{v['ratio']:.2f}); "
                 "end CVs " + "/".join(f"{c:.2f}" for c in v["end"].values())
                 for ds, lays in p.items() for lay, v in lays.items()]
    else:
        parts = [f"{ds}: ERK {_fmt(v['erk'])} %, lognormal@eq (CV {', '.join(f'{c:.2f}' for c in v['equilibrium_cv'])}) "
                 f"{_fmt(v['lognormal_eq'])} %, paired diff {_fmt(v['diff'])} points ({v['outcome']})" for ds, v in p.items()]
    return "; ".join(parts)


def accuracy_table(data: dict) -> list[str]:
    names = list(next(iter(data.values()))["runs"])
    runs = list(dict.fromkeys(n for n, _s in names))
    lines = ["| run | " + " | ".join(data) + " |", "|---|" + "---|" * len(data)]
    for name in runs:
        lines.append(f"| {name} | " + " | ".join(
            _fmt(_ms([100 * r["accuracy"] for r in _seeds(d["runs"], name)])) for d in data.values()) + " |")
    return lines


def plots(data: dict, out: Path) -> list[str]:
    """Seed-0 time series per dataset (degree CV, dormant neurons, fan-in CV of the RigL inits), finding 4's
    scatter, and degree CCDFs by epoch for random vs gradient on the first dataset."""
    
    paths = []
    for ds, d in data.items():
        rules = {n: d["runs"][(n, 0)]["topology"] for n in ("random", "gradient", "momentum")}
        paths.append(plot_series(rules, lambda r: {n: r["nodes"][n]["degree_cv"] for n in _hidden(r)},
                                 out / f"f2_degree_cv_{ds}.png", ylabel="degree CV", title=f"{ds}: hidden-layer degree CV"))
        paths.append(plot_series(rules, lambda r: {n: _dormant({"nodes": {n: r["nodes"][n]}}, "relative") for n in _hidden(r)},
                                 out / f"f3_dormant_{ds}.png", ylabel="dormant neurons",
                                 title=f"{ds}: hidden neurons below 63 % of initial mean degree"))
        inits = {n: d["runs"][(n, 0)]["topology"] for n in RIGL_INITS}
        paths.append(plot_series(inits, lambda r: {k: v["fan_in_cv"] for k, v in r["layers"].items()},
                                 out / f"f5_fan_in_cv_{ds}.png", ylabel="fan-in CV", title=f"{ds}: RigL from four initialisations"))
    paths.append(_scatter(data, out / "f4_gradient_ratio.png"))
    first = next(iter(data))
    for name in ("random", "gradient"):
        npz = cache_dir() / f"{data[first]['keys'][(name, 0)]}.npz"
        if npz.exists():
            arrays = dict(np.load(npz))
            nodes = list(data[first]["runs"][(name, 0)]["topology"][0]["nodes"])
            paths.append(plot_ccdfs_by_epoch(arrays, nodes, out / f"ccdf_epochs_{first}_{name}.png",
                                             title=f"{first}, {name} regrowth, seed 0"))
    return paths


def _scatter(data: dict, path: Path) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for c, (ds, d) in enumerate(data.items()):
        pts = [(r["fan_in_cv"], r["grad_ratio"]) for r in d["gradient_concentration"] if r["grad_ratio"]]
        x, y = np.array(pts).T
        ax.semilogy(x, y, "o", ms=3, color=f"C{c}", label=ds, alpha=0.7)
    ax.set_xlabel("fan-in CV (static profile)")
    ax.set_ylabel("gradient ratio hubs / specialists")
    ax.set_title("finding 4: one forward-backward pass at init", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


def write_results(data: dict, settings: dict, out: Path, command: str, wall: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    findings = {num: {"claim": claim, **fn(data)} for num, claim, fn in FINDINGS}
    pngs = [Path(p).name for p in plots(data, out)]
    doc = {"command": command, "settings": settings, "base": BASE, "wall_seconds": wall, "findings": findings,
           "datasets": {ds: {"n": d["n"], "equilibrium_cv": d["equilibrium_cv"],
                             "accuracy": {n: _ms([100 * r["accuracy"] for r in _seeds(d["runs"], n)])
                                          for n in dict.fromkeys(k for k, _ in d["runs"])}}
                        for ds, d in data.items()},
           "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
           "plots": pngs}
    doc["train_seconds"] = float(sum(r["seconds"] for d in data.values() for r in d["runs"].values()))
    (out / "results.json").write_text(json.dumps(to_jsonable(doc), indent=1))
    sizes = ", ".join(f"{ds} ({d['n']} images, 80/20 split)" for ds, d in data.items())
    lines = ["# Sparse-training lab: the six findings at CPU scale", "",
             (f"Command: `{command}`. Training the {sum(len(d['runs']) for d in data.values())} runs took "
              f"{doc['train_seconds'] / 60:.1f} min of run time; this invocation {wall / 60:.1f} min wall (runs found "
              f"in the cache `$NCAP_CACHE/sparse_lab/` are not retrained); shared 2-core machine, torch threads "
              f"{torch.get_num_threads()}."), "",
             (f"Datasets {sizes}; "
             f"{settings['seeds']} seeds; MLP input-{settings['hidden'].replace(',', '-')}-classes with LayerNorm, "
             f"{settings['epochs']} epochs, SGD Nesterov lr {BASE['lr']} (÷10 at 50 %, 75 %), batch 128, "
             f"sparsity {BASE['sparsity']} (ERK over fc1, fc2; output dense), update every half epoch, prune rate "
             "0.5 with cosine decay, zero-initialised regrowth. Numbers are mean ± sd over seeds."), "",
             "| # | claim (sources) | held? | numbers |", "|---|---|---|---|"]
    for num, claim, _fn in FINDINGS:
        lines.append(f"| {num} | {claim} | **{findings[num]['verdict']}** | {_summary_line(num, findings[num])} |")
    lines += ["", "Validation accuracy (%):", "", *accuracy_table(data), "",
              ("Held = on every dataset (and rule / layer): (1) dense − sparse ≤ 1.0 point; (2) degree CV after a "
              "quarter of training higher than random's; (3) more dormant neurons at the end than at the start for "
              "gradient and momentum; (4) Spearman(CV, gradient ratio) ≥ 0.8; (5) the fan-in CV spread across "
              "initialisations at least halves; (6) mean paired difference minus its standard error > 0 (better; worse: "
              "mean plus SE < 0; else no difference). Partly = on some."), "",
              *[f"![{p}]({p})" for p in pngs]]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return doc


# ------------------------------------------------------------------------------------------ speed


def _epoch_seconds(model, opt, x, y, batch: int = 128) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in __import__("os").getloadavg())
    except OSError:
        return "unknown"


def speed(out: Path, command: str, repeats: int = 9) -> dict:
    """One topology update (prune + regrow + every metric) against one training epoch, 784-1024-1024-10 at 95 %
    on MNIST-5k's training split, per rule. The update is timed at step 1, where the prune rate is p0 = 0.5 (the
    most expensive update of a run); epochs and updates are interleaved; medians and minima are compared (the
    minimum of each is the least disturbed by other jobs on a shared machine)."""
    from ncap.models.data import load_dataset, split_dataset
    from ncap.models.sparse.dst import DynamicSparsity

    tr, _ = split_dataset(load_dataset("mnist5k"), 0.2, 0)
    x, y = as_tensors(tr)
    rows = []
    for rule in ("random", "gradient", "momentum"):
        for kshell in (True, False):
            cfg = DSTConfig(model="mlp:1024,1024", rule=rule, sparsity=0.95, kshell=kshell)
            torch.manual_seed(0)
            model, _tf, shape = build_model(cfg, (1, 28, 28), 10)
            sparse, _ = sparsify(model, cfg, shape)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
            tracker = TopologyTracker(model, sparse, input_shape=shape, with_kshell=kshell)
            tracker.record(step=0, epoch=0)
            hook = DynamicSparsity(model, sparse, rule=rule, delta_t=10 ** 9, total_steps=10 ** 6, tracker=tracker,
                                   steps_per_epoch=32).attach(opt)
            epochs, updates = [], []
            _epoch_seconds(model, opt, x, y)  # warm-up
            for _ in range(repeats):
                epochs.append(_epoch_seconds(model, opt, x, y))
                hook.step = 1  # prune rate p(1) ≈ p0 = 0.5
                hook.update()
                updates.append(hook.timings[-1])
            ep = float(np.median(epochs))
            rew = float(np.median([t["rewire_s"] for t in updates]))
            met = float(np.median([t["metrics_s"] for t in updates]))
            totals = [t["rewire_s"] + t["metrics_s"] for t in updates]
            tot = float(np.median(totals))
            rows.append({"rule": rule, "kshell": kshell, "epoch_s": ep, "rewire_ms": 1e3 * rew, "metrics_ms": 1e3 * met,
                         "update_ms": 1e3 * tot, "ratio_percent": 100 * tot / ep,
                         "ratio_min_percent": 100 * min(totals) / min(epochs), "moved": updates[-1]["moved"],
                         "epochs_s": epochs, "updates_ms": [1e3 * t for t in totals]})
            print(f"{rule} kshell={kshell}: epoch {ep:.3f} s, update {1e3 * tot:.1f} ms "
                  f"(rewire {1e3 * rew:.1f}, metrics {1e3 * met:.1f}) = {100 * tot / ep:.2f} % "
                  f"(fastest/fastest {rows[-1]['ratio_min_percent']:.2f} %)", file=sys.stderr)
    doc = {"command": command, "model": "784-1024-1024-10, fc1/fc2 ERK at 95 %, output dense", "data": "mnist5k train split (4000)",
           "batch": 128, "threads": torch.get_num_threads(), "repeats": repeats, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(doc, indent=1))
    lines = ["# One topology update vs one training epoch", "",
             (f"Command: `{command}`. Model 784-1024-1024-10, fc1/fc2 sparse (ERK, 95 %), output dense; MNIST-5k training "
             f"split (4 000 images, batch 128, SGD Nesterov, masks re-applied after every step); torch threads "
             f"{torch.get_num_threads()}. An update = prune 50 % of the active weights (p0, the largest update of a run) "
             "+ regrow as many + every metric (incremental degrees, fan-in CV, Ω̂/Δ̂ from the regrown edges, dormant "
             "neurons, per-neuron gradient norms, k-shells); medians and minima of "
             f"{repeats} interleaved epoch/update pairs, on a 2-core machine shared with other jobs (load average "
             f"{_load()})."), "",
             ("| rule | k-shell | epoch (s) | update (ms) | of which rewire / metrics (ms) | weights moved | update / epoch "
             "(medians) | fastest update / fastest epoch |"),
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rule']} | {'yes' if r['kshell'] else 'no'} | {r['epoch_s']:.3f} | {r['update_ms']:.1f} | "
              f"{r['rewire_ms']:.1f} / {r['metrics_ms']:.1f} | {r['moved']} | {r['ratio_percent']:.2f} % | "
              f"{r['ratio_min_percent']:.2f} % |" for r in rows]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    return doc


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncap.bench.sparse_lab", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 600-image subsets, MLP 64-64, 6 epochs (a few minutes)")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 1)")
    p.add_argument("--datasets", default=None, help="comma-separated (default mnist5k,animal-mnist,digits)")
    p.add_argument("--out", default=None, help="results folder (default bench/results/sparse_lab[/quick])")
    p.add_argument("--no-cache", action="store_true", help="retrain even when a cached run exists")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--speed", action="store_true", help="measure one topology update against one epoch instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m ncap.bench.sparse_lab " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.speed:
        speed(Path(args.out) if args.out else RESULTS, command.strip())
        return 0
    settings = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.datasets:
        settings["datasets"] = [d.strip() for d in args.datasets.split(",") if d.strip()]
    out = Path(args.out) if args.out else (RESULTS / "quick" if args.quick else RESULTS)
    t0 = time.perf_counter()
    data = run_all(settings, use_cache=not args.no_cache, log=lambda m: print(m, file=sys.stderr))
    doc = write_results(data, settings, out, command.strip(), time.perf_counter() - t0)
    for num, f in doc["findings"].items():
        print(f"finding {num}: {f['verdict']} — {f['claim']}")
    print(f"wrote {out / 'results.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

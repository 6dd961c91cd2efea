"""`ncap prune`: train → prune → retrain a candidate, then report per-layer degree distributions.

Candidates (``--candidate``):

* ``mlp`` — the power-law paper's MLP, input − 1024FC − 1024FC − classes (needs no timm);
  ``mlp:300,100`` sets the hidden widths. Input features = C·H·W of the data set.
* ``cnn`` — the paper's CNN, 32C5 − MP2 − 32C5 − MP2 − 256FC − classes (images smaller than 28×28
  are upsampled to 28×28 bilinearly).
* anything else is one ncap candidate spec (``resnet18``, ``resnet18=random``, ``arch=path``; see
  ``models.candidates``). With ``--scope probe`` (default) the backbone is frozen, its pooled features are
  computed once and only the NCP probe is trained, pruned and reported; ``--scope all`` prunes every
  Linear/Conv2d layer of backbone + probe except the last (slow on CPU; degrees of branching
  backbones follow execution order, an approximation — see ``capacitance.degrees``).

Per node layer the report gives: nodes, which sides count toward the degree, mean degree, the power-law
fit (α, x_min, KS, bootstrap p-value with ``--bootstrap N``), the bounded/truncated power-law fit
(α, x_min, x_max, KS), the likelihood-ratio verdict against lognormal / exponential / cutoff power law
(``power_law``, an alternative, or ``inconclusive``; the JSON also has ``best_alternative`` as
``ncap powerlaw`` reports it), the k-shell range and the number of isolated nodes. ``--out DIR`` writes
``report.json``, ``report.md`` and log-log CCDF plots.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["build_model", "markdown_table", "register", "run_pruning", "text_table"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="train, prune, retrain a candidate; report degree distributions (power-law fits)",
        description="Three-step pruning (train -> magnitude-prune a fraction s of every layer but the output "
        "layer -> retrain the survivors) and per-layer degree-distribution fits, k-shells and CCDF plots.")
    p.add_argument("--candidate", required=True, metavar="SPEC",
                   help="'mlp' (paper MLP), 'mlp:W1,W2,...', 'cnn' (paper CNN), or a candidate spec (timm)")
    p.add_argument("--sparsity", required=True, type=float, metavar="S",
                   help="fraction of connections pruned in every pruned layer, 0 <= S < 1 (paper: 0.9)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="'digits' (default), 'mnist5k', a .npz, an ImageFolder directory or a .zip")
    p.add_argument("--epochs", type=int, default=10, help="dense training epochs (default 10)")
    p.add_argument("--retrain-epochs", type=int, default=5, help="retraining epochs after each pruning step (default 5)")
    p.add_argument("--iterative", type=int, default=1, metavar="K",
                   help="reach the sparsity in K pruning steps, retraining after each (default 1 = one shot)")
    p.add_argument("--schedule", choices=("geometric", "linear"), default="geometric",
                   help="sparsity after step j of K: 1-(1-s)^(j/K) (geometric) or s*j/K (linear)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9)")
    p.add_argument("--retrain-lr", type=float, default=None, help="learning rate for retraining (default: --lr)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prune-output", action="store_true", help="also prune the output layer")
    p.add_argument("--scope", choices=("probe", "all"), default="probe",
                   help="timm candidates: prune only the NCP probe on frozen features (default) or everything")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap replicates for the power-law p-value (0 = skip; 100+ is slow)")
    p.add_argument("--out", default=None, metavar="DIR", help="write report.json, report.md and CCDF PNGs here")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.set_defaults(func=_main)


# ------------------------------------------------------------------------------------------ models


def _parse_mlp(spec: str) -> tuple[int, ...] | None:
    s = spec.strip().lower()
    if s == "mlp":
        return (1024, 1024)
    if s.startswith("mlp:"):
        try:
            widths = tuple(int(w) for w in s[4:].split(",") if w.strip())
        except ValueError:
            raise ValueError(f"bad MLP spec {spec!r}: expected mlp:W1,W2,... with integer widths") from None
        if not widths or min(widths) < 1:
            raise ValueError(f"bad MLP spec {spec!r}: need at least one positive hidden width")
        return widths
    return None


def build_model(spec: str, shape: tuple[int, int, int], num_classes: int, *, seed: int = 0, scope: str = "probe"):
    """Model for ``--candidate``: ``(model, transform, input_shape, info)``.

    ``transform`` maps a float batch (N, C, H, W) in [0, 1] to model input; ``input_shape`` is one input's
    shape for degree counting. For timm candidates with ``scope='probe'`` the returned model is the
    probe and ``transform`` is None: the caller feeds it ``info['features'](x)``.
    """
    import torch.nn.functional as F

    from ncap.models.pruning import paper_cnn, paper_mlp

    c, h, w = shape
    hidden = _parse_mlp(spec)
    if hidden is not None:
        return paper_mlp(c * h * w, num_classes, hidden, seed=seed), None, (c, h, w), {"kind": "mlp", "hidden": list(hidden)}
    if spec.strip().lower() == "cnn":
        size = max(28, h, w)
        model = paper_cnn(c, num_classes, image_size=size, seed=seed)
        tf = None
        if (h, w) != (size, size):
            def tf(x, _s=size):
                return F.interpolate(x, size=(_s, _s), mode="bilinear", align_corners=False)
        return model, tf, (c, size, size), {"kind": "cnn", "image_size": size}

    import torch

    from ncap.models.candidates import build_candidate_model, parse_candidates
    from ncap.models.data import prepare_batch

    specs = parse_candidates(spec)
    if len(specs) != 1:
        raise ValueError(f"--candidate takes one candidate, got {len(specs)}: {spec!r}")
    torch.manual_seed(seed)
    model, cfg = build_candidate_model(specs[0], num_classes, freeze_backbone=(scope == "probe"))
    size, mean, std = tuple(cfg["input_size"]), cfg["mean"], cfg["std"]

    def tf(x):
        return prepare_batch(x, input_size=size, mean=mean, std=std)

    if scope == "all":
        return model, tf, size, {"kind": "timm", "scope": "all", "arch": specs[0].arch}

    @torch.no_grad()
    def features(x, batch: int = 128):
        model.backbone.eval()
        out = [model.backbone(tf(torch.as_tensor(x[i:i + batch]))) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy()

    return model.probe, None, (model.probe.in_features,), {"kind": "timm", "scope": "probe", "arch": specs[0].arch,
                                                            "features": features}


# ------------------------------------------------------------------------------------------ pipeline


def run_pruning(candidate: str, sparsity: float, *, data=None, epochs: int = 10, retrain_epochs: int = 5,
                iterative: int = 1, schedule: str = "geometric", lr: float = 0.05, retrain_lr: float | None = None,
                batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0, prune_output: bool = False,
                scope: str = "probe", n_bootstrap: int = 0, out_dir: str | Path | None = None,
                plot_dir: str | Path | None = None, return_model: bool = False, log=None) -> dict:
    """Load data, build the candidate, run :func:`models.pruning.three_step_prune`, return the report dict.

    ``data`` is a :func:`models.data.load_dataset` source or an :class:`models.data.ImageDataset`.
    CCDF plots go to ``plot_dir`` (default ``out_dir``). ``return_model`` adds the trained model and its
    :class:`models.pruning.Pruner` under ``"_model"`` / ``"_pruner"`` (not JSON; pop them before dumping).

    The report holds the run settings, accuracies (validation split), the per-layer
    :func:`capacitance.network_measures.pruning_report` and, with ``out_dir``, the written files.
    """
    from ncap.capacitance.network_measures import pruning_report
    from ncap.models.data import ImageDataset, load_dataset, split_dataset
    from ncap.models.pruning import three_step_prune

    log = log or (lambda _m: None)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"--sparsity must lie in [0, 1), got {sparsity}")
    for name, v, lo in (("--epochs", epochs, 0), ("--retrain-epochs", retrain_epochs, 0), ("--iterative", iterative, 1),
                        ("--batch-size", batch_size, 1), ("--bootstrap", n_bootstrap, 0)):
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    _parse_mlp(candidate)  # a malformed mlp:... spec fails before any data is loaded
    t0 = time.perf_counter()
    ds = data if isinstance(data, ImageDataset) else load_dataset(data)
    tr, va = split_dataset(ds, val_fraction, seed)
    log(f"data: {ds.source}, {len(tr)} train / {len(va)} val, shape {tuple(ds.x.shape[1:])}, {ds.num_classes} classes")
    model, tf, input_shape, info = build_model(candidate, tuple(ds.x.shape[1:]), ds.num_classes, seed=seed, scope=scope)
    xtr, xva = tr.x, va.x
    features = info.pop("features", None)
    if features is not None:
        log("computing frozen backbone features")
        xtr, xva = features(tr.x), features(va.x)
    result = three_step_prune(
        model, (xtr, tr.y), (xva, va.y), sparsity=sparsity, epochs=epochs,
        retrain_epochs=retrain_epochs, iterative=iterative, schedule=schedule, lr=lr, retrain_lr=retrain_lr,
        batch_size=batch_size, seed=seed, include_output=prune_output, transform=tf, log=log)
    log(f"fitting degree distributions ({time.perf_counter() - t0:.0f} s so far)")
    rep = pruning_report(model, input_shape=input_shape, n_bootstrap=n_bootstrap, seed=seed,
                         strict=False, plot_dir=plot_dir if plot_dir is not None else out_dir)
    out = {
        "candidate": candidate,
        "model": {k: v for k, v in info.items() if not callable(v)},
        "data": {"source": ds.source, "train": len(tr), "val": len(va), "shape": list(ds.x.shape[1:]),
                 "classes": ds.num_classes},
        "settings": {"sparsity": sparsity, "epochs": epochs, "retrain_epochs": retrain_epochs,
                     "iterative": iterative, "schedule": schedule, "lr": lr,
                     "retrain_lr": lr if retrain_lr is None else retrain_lr, "batch_size": batch_size,
                     "seed": seed, "prune_output": prune_output, "bootstrap": n_bootstrap},
        "accuracy": {"dense": result.dense_accuracy, "pruned": result.pruned_accuracy,
                     "retrained": result.retrained_accuracy},
        "steps": [{k: v for k, v in s.items()} for s in result.steps],
        "report": rep,
        "seconds": time.perf_counter() - t0,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(out, indent=1))
        (out_dir / "report.md").write_text(markdown_table(out) + "\n")
    if return_model:
        out["_model"], out["_pruner"] = model, result.pruner
    return out


# ------------------------------------------------------------------------------------------ output


def _f(v, fmt="{:.3g}"):
    return "–" if v is None else fmt.format(v)


def _rows(out: dict) -> list[list[str]]:
    rows = []
    for row in out["report"]["layers"]:
        fit = row["fit"]
        pl = fit.get("power_law") or {}
        tpl = fit.get("truncated_power_law") or {}
        ks = row.get("kshell") or {}
        rows.append([
            row["layer"], str(row["nodes"]), row["sides"], f"{row['degree_mean']:.1f}",
            f"{row['degree_min']}–{row['degree_max']}",
            _f(pl.get("alpha"), "{:.2f}"), _f(pl.get("xmin"), "{}"), _f(pl.get("ks"), "{:.3f}"),
            _f(pl.get("p_value"), "{:.2f}"),
            _f(tpl.get("alpha"), "{:.2f}"),
            "–" if not tpl else f"[{tpl['xmin']}, {tpl['xmax']}]", _f(tpl.get("ks"), "{:.3f}"),
            fit.get("verdict", "–") if fit.get("fitted") else "not fitted",
            "–" if not ks else f"{ks['k_min']}–{ks['k_max']}",
            str(row["dormant"]["isolated"]),
        ])
    return rows


HEADER = ["layer", "nodes", "sides", "mean deg", "deg range", "PL α", "x_min", "KS", "p", "TPL α",
          "[x_min, x_max]", "TPL KS", "LR verdict", "k-shell", "isolated"]


def markdown_table(out: dict) -> str:
    """The per-layer table (markdown) with a line of accuracies."""
    acc = out["accuracy"]
    first = (f"Candidate `{out['candidate']}` on {out['data']['source']}, sparsity {out['settings']['sparsity']}: "
             f"val accuracy dense {100 * acc['dense']:.2f}%, pruned {100 * acc['pruned']:.2f}%, "
             f"retrained {100 * acc['retrained']:.2f}%.")
    lines = [first, "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(out)]
    esd = out["report"].get("esd")
    if esd:
        lines += ["", "ESD of WᵀW/N per weight matrix (continuous power-law fit of the tail):", "",
                  "| layer | shape | λ_max | α | x_min | KS |", "|---|---|---|---|---|---|"]
        lines += [f"| {e['layer']} | {'×'.join(map(str, e['shape']))} | {e['lambda_max']:.3g} | "
                  f"{_f(e.get('alpha'), '{:.2f}')} | {_f(e.get('xmin'), '{:.3g}')} | {_f(e.get('ks'), '{:.3f}')} |"
                  for e in esd]
    return "\n".join(lines)


def text_table(out: dict) -> str:
    rows = [HEADER] + _rows(out)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    acc = out["accuracy"]
    head = (f"{out['candidate']} on {out['data']['source']}: sparsity {out['settings']['sparsity']}, "
            f"val accuracy dense {100 * acc['dense']:.2f}% -> pruned {100 * acc['pruned']:.2f}% -> "
            f"retrained {100 * acc['retrained']:.2f}%")
    ks = out["report"].get("kshell")
    tail = [] if not ks else [f"k-shell: k_min {ks['k_min']}, k_max {ks['k_max']}, core size {ks['core_size']}"]
    return "\n".join([head, *lines, *tail])


def _main(args) -> int:
    def log(msg):
        print(msg, file=sys.stderr)

    try:
        out = run_pruning(
            args.candidate, args.sparsity, data=args.data, epochs=args.epochs, retrain_epochs=args.retrain_epochs,
            iterative=args.iterative, schedule=args.schedule, lr=args.lr, retrain_lr=args.retrain_lr,
            batch_size=args.batch_size, val_fraction=args.val_fraction, seed=args.seed,
            prune_output=args.prune_output, scope=args.scope, n_bootstrap=args.bootstrap, out_dir=args.out,
            log=None if args.json else log)
    except (ValueError, FileNotFoundError) as exc:  # DataError / CandidateError are ValueErrors
        print(f"ncap prune: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(text_table(out))
        if args.out:
            print(f"wrote {Path(args.out) / 'report.json'}, report.md and {len(out['report'].get('plots', []))} plots")
    return 0

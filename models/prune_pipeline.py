"""The ``ncap prune`` pipeline: load data, build a candidate, train -> prune -> retrain it
(:func:`ncap.models.pruning.three_step_prune`) and report its per-layer degree distributions
(:func:`ncap.network.pruning_report`), as a dict, ``report.json`` and ``report.md``.

Candidates (:func:`build_pruning_model`):

* ``mlp`` — the power-law paper's MLP, input − 1024FC − 1024FC − classes (needs no timm);
  ``mlp:300,100`` sets the hidden widths. Input features = C·H·W of the data set.
* ``cnn`` — the paper's CNN, 32C5 − MP2 − 32C5 − MP2 − 256FC − classes (images smaller than 28×28
  are upsampled to 28×28 bilinearly).
* anything else is one ncap candidate spec (``resnet18``, ``resnet18=random``, ``arch=path``; see
  :mod:`ncap.models.candidates`). With ``scope="probe"`` (default) the backbone is frozen, its pooled
  features are computed once and only the NCP probe is trained, pruned and reported; ``scope="all"``
  prunes every Linear/Conv2d layer of backbone + probe except the last (slow on CPU; degrees of branching
  backbones follow execution order, an approximation — see :mod:`ncap.network.degrees`).

:func:`text_table` and :func:`markdown_table` render the result of :func:`run_pruning`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ncap.models.data import ImageDataset, load_dataset, split_dataset
from ncap.models.pruning import paper_cnn, paper_mlp, three_step_prune
from ncap.network import pruning_report

__all__ = ["HEADER", "build_pruning_model", "markdown_table", "run_pruning", "text_table"]


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


def build_pruning_model(spec: str, shape: tuple[int, int, int], num_classes: int, *, seed: int = 0,
                        scope: str = "probe"):
    """Model for the candidate ``spec`` (see the module docstring): ``(model, transform, input_shape, info)``.

    ``transform`` maps a float batch (N, C, H, W) in [0, 1] to model input; ``input_shape`` is one input's
    shape for degree counting. For timm candidates with ``scope='probe'`` the returned model is the
    probe and ``transform`` is None: the caller feeds it ``info['features'](x)``.
    """
    import torch.nn.functional as F

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

    from ncap.models.candidates import build_candidate_model
    from ncap.models.data import prepare_batch
    from ncap.models.registry import resolve_candidates

    specs = resolve_candidates(spec)
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
    """Load data, build the candidate, run :func:`ncap.models.pruning.three_step_prune`, return the report dict.

    ``data`` is a :func:`ncap.models.data.load_dataset` source or an :class:`ncap.models.data.ImageDataset`.
    CCDF plots go to ``plot_dir`` (default ``out_dir``). ``return_model`` adds the trained model and its
    :class:`ncap.models.pruning.Pruner` under ``"_model"`` / ``"_pruner"`` (not JSON; pop them before dumping).
    Argument errors name the ``ncap prune`` flag (``--sparsity``, ``--epochs``, ...).

    The report holds the run settings, accuracies (validation split), the per-layer
    :func:`ncap.network.pruning_report` and, with ``out_dir``, the written files.
    """
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
    model, tf, input_shape, info = build_pruning_model(candidate, tuple(ds.x.shape[1:]), ds.num_classes, seed=seed,
                                                       scope=scope)
    xtr, xva = tr.float_images(), va.float_images()  # in memory, in [0, 1]: the MLP/CNN experiments are small
    features = info.pop("features", None)
    if features is not None:
        log("computing frozen backbone features")
        xtr, xva = features(xtr), features(xva)
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
    """The per-layer table as aligned plain text, with a line of accuracies and the k-shell summary."""
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

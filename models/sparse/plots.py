"""Plots of a sparse network's topology over training (Agg canvases, no pyplot state).

* :func:`plot_ccdfs_by_epoch`: per node layer, the CCDF of the total degree at a few updates (sources/002 Fig. 5).
* :func:`plot_series`: one quantity of :attr:`ncap.models.sparse.topology.TopologyTracker.rows` against the
  epoch, one line per run and layer (fan-in CV, dormant count, degree CV, ...).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_ccdfs_by_epoch", "plot_series"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_ccdfs_by_epoch(arrays: Mapping[str, np.ndarray], layers: Sequence[str], path: str | Path, *,
                        snapshots: int = 5, title: str = "") -> str:
    """Log-log CCDF P(degree ≥ d) of every node layer in ``layers`` at ``snapshots`` evenly spaced updates.

    ``arrays`` are :meth:`TopologyTracker.arrays` (``<layer>/degree`` and ``epoch``). Returns the PNG path.
    """
    epochs = np.asarray(arrays["epoch"])
    picks = np.unique(np.linspace(0, epochs.size - 1, min(snapshots, epochs.size)).round().astype(int))
    fig = _figure(4.0 * len(layers), 3.4)
    from matplotlib import colormaps
    from matplotlib.ticker import NullFormatter

    cmap = colormaps["viridis"]
    for k, name in enumerate(layers):
        ax = fig.add_subplot(1, len(layers), k + 1)
        deg = np.asarray(arrays[f"{name}/degree"])
        for i, u in enumerate(picks):
            d = np.sort(deg[u][deg[u] > 0])
            if d.size:
                ax.loglog(d, 1.0 - np.arange(d.size) / d.size, color=cmap(i / max(len(picks) - 1, 1)),
                          label=f"epoch {epochs[u]:.1f}")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{name} ({deg.shape[1]} nodes)", fontsize=9)
        ax.set_xlabel("degree")
        if k == 0:
            ax.set_ylabel("P(degree ≥ d)")
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


def plot_series(runs: Mapping[str, Sequence[dict]], value: Callable[[dict], dict[str, float | None]],
                path: str | Path, *, ylabel: str, title: str = "", logy: bool = False) -> str:
    """``value(row) -> {layer: number}`` for every topology row of every run, against the epoch.

    One line per (run, layer); runs share a colour, layers a line style. Returns the PNG path.
    """
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    layer_style: dict[str, str] = {}
    for c, (label, rows) in enumerate(runs.items()):
        series: dict[str, list] = {}
        for row in rows:
            for layer, v in value(row).items():
                series.setdefault(layer, []).append((row["epoch"], np.nan if v is None else v))
        for layer, pts in series.items():
            ls = layer_style.setdefault(layer, styles[len(layer_style) % len(styles)])
            x, y = np.array(pts).T
            ax.plot(x, y, ls, color=f"C{c % 10}", label=f"{label} {layer}", lw=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("symlog", linthresh=1)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)

"""The demo's spread: ``ncap rank`` (the demo zoo on digits, every default) rerun over seeds, on the same zoo weights.

    python -m ncap.service.measurements.demo_spread [--seeds 0 1 2 3 4 5 6 7]

A 4-epoch fine-tune on 1 437 images turns small differences (a seed, or another CPU's float rounding) into
points of accuracy, so one run's table cannot say which of its differences are real. This reruns the demo with
``--seed S`` for each seed. Each finished seed's small record (per candidate: last accuracy, β_eff's prediction,
rank, time) goes to ``bench/results/demo-spread/seed{S}.json`` and is reused: rerun the command to resume.

It writes ``bench/results/demo_spread.{json,md,png}``: per candidate the mean, SD (ddof 1), range and how often
it ranked first; and which pairs are *decisive* (means differ by more than the 97.5 % t-quantile times their
Welch standard error, as in benchmark v3, :func:`ncap.bench.decisive.decisive_pairs`). Pairs that are not
decisive are noise at this budget: their order in one run of the table means nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ncap.jsonsafe import write_json

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
RECORDS = RESULTS / "demo-spread"


def run_seed(seed: int, records: Path = RECORDS) -> dict:
    """The demo with ``--seed seed`` (its record when one exists); returns the record."""
    path = records / f"seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from ncap.service.cli import main as cli_main

    with tempfile.TemporaryDirectory(prefix="ncap-demo-spread-") as tmp:
        t0 = time.perf_counter()
        code = cli_main(["rank", "--out", tmp, "--seed", str(seed), "--quiet", "--no-plots", "--keep", "0"])
        if code != 0:
            raise RuntimeError(f"ncap rank --seed {seed} exited {code}")
        doc = json.loads((Path(tmp) / "ranking.json").read_text())
    record = {"seed": seed, "wall_time_s": time.perf_counter() - t0,
              "candidates": {c["candidate"]: {"rank": c["rank"], "status": c["status"],
                                              "last_accuracy": c["observed_accuracy"],
                                              "predicted_accuracy": c["predicted_accuracy"]}
                             for c in doc["candidates"]}}
    write_json(path, record, indent=1)
    return record


def summarise(records: list[dict]) -> dict:
    """Per candidate mean / SD / range of the last accuracy and wins; the decisive pairs (benchmark v3's rule)."""
    from ncap.bench.decisive import decisive_pairs

    names = sorted(records[0]["candidates"], key=lambda n: -np.mean(
        [r["candidates"][n]["last_accuracy"] for r in records]))
    acc = np.array([[r["candidates"][n]["last_accuracy"] for r in records] for n in names], float)
    wins = {n: sum(r["candidates"][n]["rank"] == 1 for r in records) for n in names}
    per = {n: {"mean": float(acc[i].mean()), "sd": float(acc[i].std(ddof=1)), "min": float(acc[i].min()),
               "max": float(acc[i].max()), "ranked_first": wins[n], "last_accuracy": acc[i].tolist()}
           for i, n in enumerate(names)}
    decisive = {(names[i], names[j]) for i, j in decisive_pairs(acc)}
    pairs = [{"a": names[i], "b": names[j], "decisive": (names[i], names[j]) in decisive,
              "difference_mean": float(acc[i].mean() - acc[j].mean())}
             for i in range(len(names)) for j in range(i + 1, len(names))]
    orders = {" > ".join(sorted(r["candidates"], key=lambda n: r["candidates"][n]["rank"])) for r in records}
    return {"seeds": [r["seed"] for r in records], "candidates": per, "pairs": pairs,
            "distinct_orders": len(orders), "wall_time_s": [r["wall_time_s"] for r in records]}


def markdown(summary: dict, command: str) -> str:
    lines = ["# The demo's spread over seeds", "", (f"Command: `{command}`. `ncap rank` with every default (the demo "
             f"zoo on digits, 4 epochs, ranked by the last validation accuracy) and `--seed S` for the "
             f"{len(summary['seeds'])} seeds {summary['seeds']}, on the same zoo weights. "
             f"{summary['distinct_orders']} distinct orders came out of {len(summary['seeds'])} runs."), "",
             "| candidate | last acc mean ± SD | range | ranked first |", "|---|---|---|---|"]
    for name, c in summary["candidates"].items():
        lines.append(f"| {name} | {100 * c['mean']:.1f} ± {100 * c['sd']:.1f} | {100 * c['min']:.1f}–"
                     f"{100 * c['max']:.1f} | {c['ranked_first']} of {len(summary['seeds'])} |")
    lines += ["", ("Pairs (decisive: the means differ by more than the 97.5 % t-quantile times their Welch standard "
              "error, benchmark v3's rule; the others are noise at this budget):"), "",
              "| pair | mean difference (points) | decisive |", "|---|---|---|"]
    lines += [f"| {p['a']} vs {p['b']} | {100 * p['difference_mean']:+.1f} | {'yes' if p['decisive'] else 'no'} |"
              for p in summary["pairs"]]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["candidates"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for i, n in enumerate(names):
        acc = 100 * np.asarray(summary["candidates"][n]["last_accuracy"])
        ax.scatter(acc, np.full(acc.size, i) + np.linspace(-0.15, 0.15, acc.size), s=18, alpha=0.8)
        ax.plot([acc.mean()] * 2, [i - 0.3, i + 0.3], color="k", lw=1.5)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("last validation accuracy (%), one dot per seed; bar = mean")
    ax.set_title("ncap rank (the demo) over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.service.measurements.demo_spread",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)), help="seeds to run [0..7]")
    args = ap.parse_args(argv)
    if len(args.seeds) < 2:
        ap.error("--seeds needs at least 2 seeds to measure a spread")
    records = []
    for seed in args.seeds:
        records.append(run_seed(seed))
        print(f"seed {seed}: " + ", ".join(f"{n} {100 * c['last_accuracy']:.1f}"
                                           for n, c in records[-1]["candidates"].items()), flush=True)
    summary = summarise(records)
    command = "python -m ncap.service.measurements.demo_spread --seeds " + " ".join(map(str, args.seeds))
    write_json(RESULTS / "demo_spread.json", {**summary, "command": command}, indent=1)
    (RESULTS / "demo_spread.md").write_text(markdown(summary, command))
    plot(summary, RESULTS / "demo_spread.png")
    print(markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

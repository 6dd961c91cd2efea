"""The demo-spread measurement's summary (service/measurements/demo_spread.py) on made-up seed records."""
from __future__ import annotations

import numpy as np
import pytest

from ncap.service.measurements.demo_spread import markdown, run_seed, summarise


def _records(table: dict[str, list[float]]) -> list[dict]:
    seeds = len(next(iter(table.values())))
    out = []
    for s in range(seeds):
        accs = {n: v[s] for n, v in table.items()}
        order = sorted(accs, key=lambda n: -accs[n])
        out.append({"seed": s, "wall_time_s": 1.0,
                    "candidates": {n: {"rank": order.index(n) + 1, "status": "ok", "last_accuracy": a,
                                       "predicted_accuracy": None} for n, a in accs.items()}})
    return out


def test_summary_counts_wins_orders_and_decisive_pairs():
    table = {"good": [0.95, 0.96, 0.95, 0.97], "noisy-a": [0.90, 0.86, 0.92, 0.87],
             "noisy-b": [0.88, 0.91, 0.86, 0.90]}
    s = summarise(_records(table))
    assert list(s["candidates"]) == ["good", "noisy-a", "noisy-b"]  # by mean, best first
    good = s["candidates"]["good"]
    assert good["ranked_first"] == 4
    assert good["sd"] == pytest.approx(np.std(table["good"], ddof=1))
    assert (good["min"], good["max"]) == (0.95, 0.97)
    decisive = {(p["a"], p["b"]): p["decisive"] for p in s["pairs"]}
    assert decisive == {("good", "noisy-a"): True, ("good", "noisy-b"): True, ("noisy-a", "noisy-b"): False}
    assert s["distinct_orders"] == 2  # noisy-a and noisy-b swap places between seeds
    text = markdown(s, "cmd")
    assert "| good | 95.8 ± 1.0 | 95.0–97.0 | 4 of 4 |" in text
    assert "| noisy-a vs noisy-b | +0.0 | no |" in text


def test_a_finished_seed_is_read_back_not_rerun(tmp_path):
    record = _records({"a": [0.5, 0.6]})[0]
    (tmp_path / "seed0.json").write_text(__import__("json").dumps(record))
    assert run_seed(0, records=tmp_path) == record  # would start a real `ncap rank` otherwise

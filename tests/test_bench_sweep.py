"""The width sweep picks the width from the development tasks only and reports the seed noise ceiling."""
import json

import pytest

from ncap.bench import sweep

CANDS = ["a", "b", "c", "d"]
TASKS = ["t1", "t2", "held"]
RANKERS = ["ncap[default,t0=1]", "ncap[magnitude,t0=1]", "val-acc@k"]


def fake_result(dev_rho: dict, held_rho: float, truth_order) -> dict:
    def cell(name, task):
        rho = held_rho if task == "held" else dev_rho.get(name, 0.0)
        return {"spearman": rho, "weighted_tau": rho, "top1_regret": 1.0}

    table = {t: {k: {n: cell(n, t) for n in RANKERS} for k in ("0.25", "0.75")} for t in TASKS}
    return {"tasks": TASKS, "held_out": "held", "candidates": CANDS, "chosen": {"k": 0.75, "ncap": RANKERS[0]},
            "table": table, "truth": {t: dict(zip(CANDS, truth_order)) for t in TASKS},
            "compute": {"beta_time_s": {t: 1.0 for t in TASKS}}}


def write(root, name, res):
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(res))


def test_sweep_chooses_width_on_dev_tasks_and_reports_ceiling(tmp_path, capsys):
    # width 128 is best on dev; width 32 is best on the held-out task, which must not count
    write(tmp_path, "full-w32", fake_result({"ncap[default,t0=1]": 0.1}, held_rho=0.99, truth_order=[1, 2, 3, 4]))
    write(tmp_path, "full", fake_result({"ncap[default,t0=1]": 0.3}, held_rho=0.2, truth_order=[1, 2, 3, 4]))
    write(tmp_path, "full-w128", fake_result({"ncap[magnitude,t0=1]": 0.6}, held_rho=-0.5, truth_order=[1, 2, 3, 4]))
    write(tmp_path, "full-s1", fake_result({"ncap[magnitude,t0=1]": 0.4}, held_rho=0.0, truth_order=[2, 1, 3, 4]))
    assert sweep.main(["--results", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "sweep.json").read_text())
    assert out["chosen_width"] == 128
    assert out["widths"]["128"]["best_config"] == "ncap[magnitude,t0=1]"
    assert out["widths"]["128"]["dev_rho_all_k"] == pytest.approx(0.6)
    # ceiling = Spearman of [1,2,3,4] vs [2,1,3,4] = 1 - 6·2/(4·15) = 0.8
    assert out["replications"]["64"]["noise_ceiling"]["t1"] == pytest.approx(0.8)
    # both seeds: magnitude 0 (seed 0) and 0.4 (seed 1) -> 0.2; default 0.3 and 0 -> 0.15
    assert out["replications"]["64"]["best_ncap_both_seeds"] == "ncap[magnitude,t0=1]"
    assert set(out["replications"]) == {"64"}  # no replicate at the other widths
    assert (tmp_path / "sweep.png").is_file() and "probe width 128" in (tmp_path / "sweep.md").read_text()


def test_sweep_names_the_missing_runs(tmp_path, capsys):
    write(tmp_path, "full", fake_result({}, 0.0, [1, 2, 3, 4]))
    assert sweep.main(["--results", str(tmp_path)]) == 2
    assert "python -m ncap.bench --probe-width 32" in capsys.readouterr().err

"""The README section "Use ncap in your own training loop": its python blocks are the files in docs/examples/
(word for word), and they run as written: each block saved under its file name in an empty folder and run
as a script (Ray with a temporary HOME, bound to 127.0.0.1)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Use ncap in your own training loop"
EXAMPLE_FILES = ("training_loop.py", "optuna_pruning.py", "ray_tune_scheduler.py")


def readme_examples() -> dict[str, str]:
    """``{file name: code}`` of the section's python blocks, each named by the ``docs/examples/<file>`` in
    backticks just above it."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    blocks = re.findall(r"`docs/examples/(\w+\.py)`[^\n]*\n+```python\n(.*?)```", section, flags=re.DOTALL)
    return dict(blocks)


def test_readme_blocks_are_the_example_files():
    blocks = readme_examples()
    assert tuple(blocks) == EXAMPLE_FILES
    for name, code in blocks.items():
        assert code == (ROOT / "docs" / "examples" / name).read_text(), f"README block differs from docs/examples/{name}"


def run_block(tmp_path: Path, name: str, timeout: int) -> str:
    for file, code in readme_examples().items():
        (tmp_path / file).write_text(code)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, name], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_training_loop_example_runs(tmp_path):
    out = run_block(tmp_path, "training_loop.py", timeout=300)
    assert re.search(r"predicted final accuracy 0\.\d+ ± 0\.\d+ \(beta_extrapolation\)", out), out


@pytest.mark.slow
def test_optuna_example_runs(tmp_path):
    pytest.importorskip("optuna")
    out = run_block(tmp_path, "optuna_pruning.py", timeout=600)
    m = re.search(r"best lr (\S+): val accuracy (0\.\d+); (\d+) of 10 trials pruned, (\d+) of 120 epochs", out)
    assert m, out
    assert float(m[2]) > 0.9 and int(m[3]) >= 1 and int(m[4]) < 120


@pytest.mark.slow
def test_ray_tune_example_runs(tmp_path):
    pytest.importorskip("ray")
    out = run_block(tmp_path, "ray_tune_scheduler.py", timeout=600)
    m = re.search(r"best lr (\S+): val accuracy (0\.\d+); (\d+) of 3 trials stopped early", out)
    assert m, out
    assert float(m[2]) > 0.9 and int(m[3]) >= 1

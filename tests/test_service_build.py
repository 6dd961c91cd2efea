"""`bentoml build` succeeds with the committed bentofile.yaml (building only, not containerising)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bentoml_build(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true",
           "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "-o", "tag", "."],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    bentos = list((tmp_path / "bentoml_home" / "bentos" / "ncap").glob("*/bento.yaml"))
    assert len(bentos) == 1, r.stdout
    bento = bentos[0].parent
    info = yaml.safe_load(bentos[0].read_text())
    assert info["service"] == "ncap.service.api:NcapService"
    routes = {x["route"] for x in info["schema"]["routes"]}
    assert {"/jobs/submit", "/jobs/status", "/jobs/result", "/jobs/cancel", "/jobs/list", "/predict"} <= routes
    for f in ("service/api.py", "service/jobs.py", "service/store.py", "service/ranking.py", "models/harness.py",
              "capacitance/predictor.py"):
        assert (bento / "src" / f).is_file(), f
    assert not (bento / "src" / "tests").exists()
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.14.1" in reqs and "bentoml==1.4.39" in reqs

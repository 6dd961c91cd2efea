"""bentofile.yaml agrees with pyproject.toml, and `bentoml build` packages ncap as a wheel with complete
requirements (building only; tests/test_bento_standalone.py installs and serves the bento)."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_bentofile_ships_ncaps_wheel_with_every_dependency():
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert bento["python"]["wheels"] == [f"dist/ncap-{project['version']}-py3-none-any.whl"]
    packages = set(bento["python"]["packages"])
    assert set(project["dependencies"]) <= packages  # the same pins
    assert set(project["optional-dependencies"]["service"]) <= packages
    assert not any(p.split("/")[0] in ("service", "models", "capacitance", "bench") for p in bento["include"])


@pytest.mark.slow
def test_bentoml_build(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true",
           "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
                   cwd=ROOT, env=env, capture_output=True, timeout=300, check=True)
    r = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "-o", "tag", "."],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    bentos = list((tmp_path / "bentoml_home" / "bentos" / "ncap").glob("*/bento.yaml"))
    assert len(bentos) == 1, r.stdout
    bento = bentos[0].parent
    info = yaml.safe_load(bentos[0].read_text())
    assert info["service"] == "ncap.service.api:NcapService"
    routes = {x["route"] for x in info["schema"]["routes"]}
    assert {"/jobs/submit", "/jobs/status", "/jobs/result", "/jobs/cancel", "/jobs/list", "/predict", "/catalog"} <= routes
    (wheel,) = (bento / "env" / "python" / "wheels").glob("ncap-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ncap/service/api.py", "ncap/models/harness.py", "ncap/capacitance/predictor.py",
            "ncap/service/web/index.html", "ncap/service/web/app.js", "ncap/service/web/app.css"} <= names
    assert not (bento / "src" / "service").exists() and not (bento / "src" / "tests").exists()
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert all(p in reqs for p in ("torch==2.14.1", "bentoml==1.4.39", "psycopg[binary]", "httpx"))

"""The bento runs on its own (issue 24): built from a copy of the checkout as `make bento` builds it (ncap's
wheel, then `bentoml build`), its requirements installed into a fresh virtual environment by the bento's own
install script (pip's cache and the package registries only), served from the bento's folder with nothing of
the checkout on the path, and one tiny real job run through the HTTP API. Then the copy's code is edited, and
the bento still serves what was built."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_service_helpers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bento-token"
MARK = "State and progress of a job"  # the /jobs/status docstring, as the OpenAPI spec shows it


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _copy_checkout(dest: Path) -> Path:
    """The checkout's tracked and unignored files (what a clean clone holds, plus work not yet committed)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _build(checkout: Path, home: Path) -> Path:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
         checkout, env, 300)
    _run([sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "."], checkout, env, 300)
    (bento,) = (home / "bentos" / "ncap").glob("*/bento.yaml")
    return bento.parent


def _fresh_venv(bento: Path, venv: Path) -> dict:
    """A new venv with the bento's requirements and wheels, installed by the bento's env/python/install.sh."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("NCAP_")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    _run(["bash", str(bento / "env" / "python" / "install.sh")], bento, env, 1500)
    return env


def test_the_built_bento_serves_on_its_own_from_a_fresh_environment(tmp_path):
    checkout = _copy_checkout(tmp_path / "checkout")
    bento = _build(checkout, tmp_path / "bentoml_home")
    assert not (bento / "src" / "service").exists()  # no source folders: ncap comes from the wheel
    (wheel,) = (bento / "env" / "python" / "wheels").glob("ncap-*.whl")
    env = _fresh_venv(bento, tmp_path / "venv")
    where = _run([str(tmp_path / "venv" / "bin" / "python"), "-c", "import ncap.service.api as m; print(m.__file__)"],
                 tmp_path, env, 300)
    assert str(tmp_path / "venv") in where and str(checkout) not in where and str(ROOT) not in where, where
    # edit the checkout after the build: the bento must keep serving what was built
    api = checkout / "service" / "api.py"
    api.write_text(api.read_text().replace(MARK, "EDITED AFTER THE BUILD"))
    (checkout / "service" / "web" / "index.html").write_text("edited after the build")
    port = free_port()
    env.update(NCAP_TOKEN=TOKEN, NCAP_DATA_DIR=str(tmp_path / "data"), BENTOML_HOME=str(tmp_path / "bentoml_home"),
               BENTOML_DO_NOT_TRACK="true", HF_HUB_OFFLINE="1")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(tmp_path / "venv" / "bin" / "bentoml"), "serve", str(bento), "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        _wait(lambda: httpx.get(url + "/readyz", timeout=5).status_code == 200, 180, proc, tmp_path / "serve.log")
        config = {"candidates": ["resnet10t=random"], "epochs": 1, "image_size": 32, "dataset": "digits"}
        job = httpx.post(url + "/jobs/submit", json={"config": config}, headers=auth, timeout=60)
        assert job.status_code == 200, job.text
        job_id = job.json()["job_id"]
        state = {}

        def finished() -> bool:
            state.update(httpx.post(url + "/jobs/status", json={"job_id": job_id}, headers=auth, timeout=30).json())
            return state["state"] in ("done", "failed", "cancelled")

        _wait(finished, 600, proc, tmp_path / "serve.log")
        assert state["state"] == "done", state
        result = httpx.post(url + "/jobs/result", json={"job_id": job_id}, headers=auth, timeout=30).json()
        assert [c["status"] for c in result["ranking"]["candidates"]] == ["ok"]
        spec = httpx.get(url + "/docs.json", headers=auth, timeout=30).json()
        assert MARK in spec["paths"]["/jobs/status"]["post"]["description"]
        assert httpx.get(url + "/", timeout=30).text != "edited after the build"
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert wheel.name.startswith("ncap-")


def _wait(ready, timeout: float, proc, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bentoml serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"not ready after {timeout} s:\n{log.read_text()[-4000:]}")

"""Helpers for the service tests (no tests here): a real `ncap serve` subprocess on 127.0.0.1, a small
HTTP client, and builders for good and bad dataset uploads."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NCAP = [sys.executable, "-m", "ncap.service.cli"]
FAST_CANDIDATES = ["mobilenetv3_small_050=random", "resnet10t=random"]  # ~5 s and ~9 s for 2 epochs


def _kill_all(procs) -> None:
    """SIGKILL processes that outlived a graceful stop, then reap them."""
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ncap serve` in its own process group (bentoml spawns workers; the job worker a trainer)."""

    def __init__(self, tmp: Path, token: str | None = "test-token", **settings: str):
        self.tmp = Path(tmp)
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / f"server-{self.port}.log"
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self._known: list = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("NCAP_") and key != "NCAP_CACHE":
                del env[key]
        env.update(HF_HUB_OFFLINE="1", BENTOML_HOME=str(self.tmp / "bentoml_home"),
                   BENTOML_DO_NOT_TRACK="true", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        if self.token:
            env["NCAP_TOKEN"] = self.token
        for k, v in self.settings.items():
            env["NCAP_" + k.upper()] = str(v)
        return env

    def start(self, timeout: float = 90.0) -> Server:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*NCAP, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir)],
                cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def tree(self) -> list:
        """The server's processes: `ncap serve`/bentoml main process and all its descendants (BentoML
        starts its workers in their own sessions, so a process-group kill would miss them)."""
        import psutil

        if self.proc is None:
            return []
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def group_alive(self) -> bool:
        return any(p.is_running() and p.status() != "zombie" for p in self._known)

    def kill9(self, whole_tree: bool = True, settle: float = 15.0) -> list:
        """SIGKILL the server: every process of its tree at once (``whole_tree``), or only the main
        process (what ``kill -9 <pid>`` does). Returns the processes still alive after ``settle`` s
        (before they are SIGKILLed too)."""
        import psutil

        self._known = self.tree()
        targets = self._known if whole_tree else self._known[:1]
        for p in targets:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc is not None:
            self.proc.wait(10)
        _gone, alive = psutil.wait_procs(self._known, timeout=settle)
        _kill_all(alive)
        return alive

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL whatever of the tree is left."""
        import psutil

        if self.proc is None:
            return
        procs = self.tree()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _gone, alive = psutil.wait_procs(procs, timeout=20)
        _kill_all(alive)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    # -- HTTP ----------------------------------------------------------------------------------------
    def headers(self, token: str | None = "default") -> dict[str, str]:
        token = self.token if token == "default" else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def post(self, route: str, payload: dict | None = None, *, token: str | None = "default",
             timeout: float = 30, **kw) -> httpx.Response:
        if payload is not None:
            kw["json"] = payload
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return httpx.post(self.url + route, headers=headers, timeout=timeout, **kw)

    def submit(self, config: dict, file: tuple[str, bytes] | None = None, **kw) -> httpx.Response:
        if file is None:
            return self.post("/jobs/submit", {"config": config}, **kw)
        return self.post("/jobs/submit", files={"dataset": (file[0], file[1], "application/octet-stream")},
                         data={"config": json.dumps(config)}, **kw)

    def status(self, job_id: str) -> dict:
        r = self.post("/jobs/status", {"job_id": job_id})
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, until=lambda s: s["state"] in ("done", "failed", "cancelled"),
             timeout: float = 240, interval: float = 0.5) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status(job_id)
            if until(s):
                return s
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for job {job_id}: {s}\n{self.log()}")

    def healthy(self) -> bool:
        return all(httpx.get(self.url + p, timeout=5).status_code == 200 for p in ("/healthz", "/readyz"))


# -------------------------------------------------------------------------------------- dataset files
def png_bytes(value: int, size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_folder_zip(n_per_class: int = 6) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("cats", "dogs"):
            for i in range(n_per_class):
                zf.writestr(f"pets/{cls}/{i}.png", png_bytes(int(rng.integers(0, 255))))
    return buf.getvalue()


def zip_with(members: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("ok/a.png", png_bytes(1))
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def symlink_zip() -> bytes:
    info = zipfile.ZipInfo("ok/link.png")
    info.external_attr = (0o120777 << 16)
    return zip_with([(info, b"/etc/passwd")])


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()

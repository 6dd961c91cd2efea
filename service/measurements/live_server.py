"""A real ``ncap serve`` process on 127.0.0.1 for the reliability benchmarks and the service tests.

``LiveServer`` starts the server in its own session with its own data dir and settings (``NCAP_*``), waits
until ``/readyz`` answers, and can stop it gracefully, SIGKILL its whole process tree or one process of it
(the ``ncap serve``/BentoML main process, the BentoML worker holding the API and the job worker, or the
training process), and start it again on the same data dir. It only ever binds to 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_all(procs) -> None:
    """SIGKILL processes that outlived a graceful stop, then reap them."""
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


class LiveServer:
    """``ncap serve`` in its own process group (bentoml spawns workers; the job worker a trainer)."""

    def __init__(self, tmp: Path, token: str | None = "test-token", env: dict[str, str] | None = None,
                 **settings: str):
        self.tmp = Path(tmp)
        self.extra_env = dict(env or {})
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "server.log"
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self._known: list = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NCAP_") or k == "NCAP_CACHE"}
        paths = [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
        env.update(HF_HUB_OFFLINE="1", BENTOML_HOME=str(self.tmp / "bentoml_home"), BENTOML_DO_NOT_TRACK="true",
                   PYTHONPATH=os.pathsep.join(p for p in paths if p))
        if self.token:
            env["NCAP_TOKEN"] = self.token
        for k, v in self.settings.items():
            env["NCAP_" + k.upper()] = str(v)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> LiveServer:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ncap.service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(self.data_dir)],
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

    def log(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def tree(self) -> list:
        """The server's processes: the main process and all its descendants (BentoML starts its workers in
        their own sessions, so a process-group kill would miss them)."""
        import psutil

        if self.proc is None:
            return []
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def roles(self) -> dict[str, object]:
        """``{"server": main process, "worker": the BentoML worker, "trainer": the training process}``
        of the live tree (a role is missing while its process does not exist)."""
        import psutil

        found: dict[str, object] = {}
        for p in self.tree():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:  # it just ended
                cmd = ""
            if "ncap.service.jobs" in cmd:
                found.setdefault("trainer", p)
            elif "_bentoml_impl.worker" in cmd or "--worker-id" in cmd:
                found.setdefault("worker", p)
            elif p.pid == self.proc.pid:
                found["server"] = p
        return found

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
        if r.status_code != 200:
            raise AssertionError(r.text)
        return r.json()

    def wait(self, job_id: str, until=lambda s: s["state"] in ("done", "failed", "cancelled"),
             timeout: float = 240, interval: float = 0.5) -> dict:
        deadline = time.time() + timeout
        s: dict = {}
        while time.time() < deadline:
            s = self.status(job_id)
            if until(s):
                return s
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for job {job_id}: {s}\n{self.log()}")

    def healthy(self) -> bool:
        return all(httpx.get(self.url + p, timeout=5).status_code == 200 for p in ("/healthz", "/readyz"))

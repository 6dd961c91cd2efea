"""Service parts without a server: progress, worker (with a fake ranking function in a real training
subprocess), settings, auth/limit middleware, upload checks, `ncap serve` checks. The job store's own tests,
on SQLite and PostgreSQL, are in test_store.py."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from ncap.service import jobs
from ncap.service.config import ServiceSettings, SettingsError, load_settings, settings_env
from ncap.service.security import (
    GuardMiddleware,
    InsecureBindError,
    Rejected,
    bound_hosts,
    check_bind,
    check_upload_file,
    dataset_kind,
    is_loopback,
    safe_filename,
)
from ncap.service.store import JobStore


# ----------------------------------------------------------------------------- fake ranking function
class Cancelled(RuntimeError):
    pass


def fake_runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_done=None, on_epoch=None,
                should_stop=None, make_plots=True, progress=True):
    """Stands in for service.ranking.run_ranking: 'epochs' of 0.15 s; candidate 'boom' raises."""
    completed = dict(completed or {})
    epochs = config.epochs if hasattr(config, "epochs") else config["epochs"]
    records = []
    for name in candidates:
        if name in completed:
            records.append({**completed[name], "reused": True})
            continue
        if name == "boom":
            raise ValueError("the fake runner exploded on purpose")
        for e in range(1, epochs + 1):
            if should_stop and should_stop():
                raise Cancelled("stop")
            time.sleep(0.15)
            on_epoch(name, float(e), {"val_accuracy": 0.1 * e})
        rec = {"candidate": name, "status": "ok", "predicted_accuracy": 0.5, "predicted_std": 0.1,
               "val_accuracy": [0.1] * epochs, "wall_time_s": 0.15 * epochs}
        on_candidate_done(rec)
        records.append(rec)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return {"candidates": records, "plots": [], "dataset": {"source": str(dataset)}}


def _new_job(store: JobStore, tmp: Path, candidates=("a", "b"), epochs=2, job_id="j1") -> dict:
    return store.create_job(job_id, config={"epochs": epochs, "seed": 0}, candidates=list(candidates),
                            out_dir=tmp / "jobs" / job_id / "out")


def test_progress_summary_eta():
    now = 1000.0
    job = {"state": "running", "config": {"epochs": 4}, "candidates": ["a", "b", "c"], "started_at": 900.0,
           "run_started_at": 960.0, "finished_at": None, "done_at_start": 1, "current_candidate": "b",
           "current_epoch": 2.0}
    cands = [{"name": "a", "state": "done"}, {"name": "b", "state": "running", "epoch": 2.0},
             {"name": "c", "state": "pending"}]
    p = jobs.progress_summary(job, cands, now)
    assert (p["candidates_done"], p["candidates_running"], p["candidates_pending"]) == (1, 1, 1)
    assert p["elapsed_s"] == 100.0
    # this run trained 2 epochs in 40 s (candidate a was reused); 6 epochs are left -> 120 s
    assert p["eta_s"] == pytest.approx(120.0)
    assert p["fraction"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------- worker
def _worker(store, tmp_path, runner="test_service_unit:fake_runner", **kw):
    return jobs.JobWorker(store, runner=runner, data_dir=tmp_path, poll_interval_s=0.1, **kw)


def _wait(store, job_id, states=("done", "failed", "cancelled"), timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = store.get_job(job_id)
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(store.get_job(job_id))


def test_worker_runs_cancels_and_reports_failures(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    _new_job(store, tmp_path, ["a", "b"], epochs=2, job_id="ok")
    _new_job(store, tmp_path, ["a", "boom"], epochs=1, job_id="bad")
    _new_job(store, tmp_path, ["a", "b", "c"], epochs=40, job_id="long")
    worker = _worker(store, tmp_path)
    worker.start()
    try:
        ok = _wait(store, "ok")
        assert ok["state"] == "done", ok
        assert [c["candidate"] for c in store.get_result("ok")["candidates"]] == ["a", "b"]
        bad = _wait(store, "bad")  # one candidate raising does not sink the job (per-candidate isolation)
        assert bad["state"] == "done", bad
        cands = {c["name"]: c for c in store.candidates("bad")}
        assert cands["a"]["state"] == "done" and cands["boom"]["state"] == "failed"
        assert cands["boom"]["error"] == "ValueError: the fake runner exploded on purpose"
        assert bad["error_detail"] is None  # tracebacks go to the job's log, never to the store
        assert "Traceback" in (tmp_path / "jobs" / "bad" / "train.log").read_text()
        _wait(store, "long", states=("running",))
        while not store.events("long", "epoch"):
            time.sleep(0.05)
        assert store.request_cancel("long") == "running"
        long = _wait(store, "long", timeout=20)
        assert long["state"] == "cancelled"
    finally:
        worker.stop()
    assert not worker.alive


def test_trainer_reuses_completed_candidates(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    _new_job(store, tmp_path, ["a", "b"], epochs=2)
    store.claim_next()
    store.save_candidate("j1", {"candidate": "a", "status": "ok", "wall_time_s": 7.0, "predicted_accuracy": 0.9})
    state = jobs.train_job(store, "j1", fake_runner)
    assert state == "done"
    epochs = store.events("j1", "epoch")
    assert epochs and {e["candidate"] for e in epochs} == {"b"}  # a was not trained again
    assert [e["candidate"] for e in store.events("j1", "candidate_reused")] == ["a"]
    recs = {r["candidate"]: r for r in store.get_result("j1")["candidates"]}
    assert recs["a"]["reused"] and recs["a"]["predicted_accuracy"] == 0.9


def test_second_worker_on_the_same_data_dir_stands_by(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    first, second = _worker(store, tmp_path), _worker(store, tmp_path)
    first.start()
    try:
        deadline = time.time() + 5
        while not first.owner and time.time() < deadline:
            time.sleep(0.02)
        second.start()
        time.sleep(0.3)
        assert first.owner and not second.owner
    finally:
        second.stop()
        first.stop()


# ---------------------------------------------------------------------------------------- settings
def test_settings_file_env_and_errors(tmp_path):
    cfg = tmp_path / "svc.toml"
    cfg.write_text(f'[service]\ntoken = "from-file"\nmax_epochs = 7\ndata_dir = "{tmp_path}"\n')
    s = load_settings({"NCAP_SERVICE_CONFIG": str(cfg), "NCAP_MAX_EPOCHS": "9"})
    assert s.token == "from-file" and s.max_epochs == 9 and s.resolved_data_dir == tmp_path
    assert s.resolved_db_url == f"sqlite:///{tmp_path}/jobs.db"
    assert load_settings({"NCAP_TOKEN": "  "}).token is None
    with pytest.raises(SettingsError, match="max_upload_mb"):
        load_settings({"NCAP_MAX_UPLOAD_MB": "-1"})
    with pytest.raises(SettingsError, match="max_epochs"):
        load_settings({"NCAP_MAX_EPOCHS": "many"})
    round_trip = load_settings(settings_env(s))
    assert round_trip == s


def test_settings_read_os_environ_unless_given_a_mapping(tmp_path, monkeypatch):
    cfg = tmp_path / "svc.json"
    cfg.write_text('{"max_epochs": 7, "max_candidates": 3}')
    monkeypatch.setenv("NCAP_SERVICE_CONFIG", str(cfg))
    monkeypatch.setenv("NCAP_MAX_EPOCHS", "9")
    monkeypatch.setenv("NCAP_API_THREADS", "")  # empty: ignored, the default stays
    s = ServiceSettings()  # pydantic-settings: os.environ over the file over the defaults
    assert (s.max_epochs, s.max_candidates, s.api_threads) == (9, 3, 16)
    assert load_settings(max_epochs=5, token=None).max_epochs == 5  # keyword arguments win
    assert load_settings({}).max_epochs == 50  # an explicit mapping replaces os.environ


# --------------------------------------------------------------------------------- security helpers
def test_bind_rules():
    open_settings = load_settings({})
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback(None)
    check_bind("127.0.0.1", open_settings)
    with pytest.raises(InsecureBindError, match="NCAP_TOKEN"):
        check_bind("0.0.0.0", open_settings)
    check_bind("0.0.0.0", load_settings({"NCAP_TOKEN": "t"}))
    check_bind("0.0.0.0", load_settings({"NCAP_ALLOW_REMOTE_WITHOUT_TOKEN": "1"}))


def test_bound_hosts_reads_the_socket_it_was_given():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert bound_hosts(["worker", "--fd", str(s.fileno())]) == ["127.0.0.1"]
    assert bound_hosts(["pytest"]) == []


def test_upload_file_checks(tmp_path):
    settings = load_settings({"NCAP_MAX_UPLOAD_MB": "0.001"})
    assert dataset_kind("a.NPZ") == "npz" and dataset_kind("x.zip") == "zip"
    with pytest.raises(Rejected) as exc:
        dataset_kind("evil.exe")
    assert exc.value.status == 415 and "evil.exe" in exc.value.message
    p = tmp_path / "d.zip"
    p.write_bytes(b"PK\x03\x04" + b"0" * 2000)
    with pytest.raises(Rejected) as exc:
        check_upload_file(p, "d.zip", settings)
    assert exc.value.status == 413
    p.write_bytes(b"MZ" + b"0" * 10)
    with pytest.raises(Rejected, match="not a zip"):
        check_upload_file(p, "d.zip", settings)
    assert safe_filename("../../etc/pass wd.zip") == "pass_wd.zip"
    assert safe_filename("..") == "dataset"


def _guarded_app(settings):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):
        body = await request.body()
        return JSONResponse({"n": len(body)})

    async def health(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/jobs/submit", echo, methods=["POST"]), Route("/jobs/list", echo, methods=["POST"]),
                            Route("/healthz", health)])
    return GuardMiddleware(app, settings=settings)


def test_middleware_auth_and_limits():
    from starlette.testclient import TestClient

    settings = load_settings({"NCAP_TOKEN": "s3cret", "NCAP_MAX_UPLOAD_MB": "0.01", "NCAP_MAX_REQUEST_KB": "1"})
    c = TestClient(_guarded_app(settings))
    auth = {"Authorization": "Bearer s3cret"}
    assert c.get("/healthz").status_code == 200
    assert c.post("/jobs/list", content=b"{}").status_code == 401
    assert c.post("/jobs/list", content=b"{}", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/jobs/list", content=b"{}", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert c.post("/jobs/list", content=b"{}", headers=auth).json() == {"n": 2}
    r = c.post("/jobs/list", content=b"x" * 2000, headers=auth)
    assert r.status_code == 413 and "1024 bytes" in r.json()["error"]
    assert c.post("/jobs/submit", content=b"x" * 5000, headers=auth).status_code == 200
    assert c.post("/jobs/submit", content=b"x" * 20000, headers=auth).status_code == 413

    def chunks():
        for _ in range(10):
            yield b"x" * 4096

    r = c.post("/jobs/submit", content=chunks(), headers=auth)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]


def test_middleware_without_token_serves_loopback_only():
    from starlette.testclient import TestClient

    settings = load_settings({})
    remote = TestClient(_guarded_app(settings), client=("203.0.113.9", 5555))
    local = TestClient(_guarded_app(settings), client=("127.0.0.1", 5555))
    r = remote.post("/jobs/list", content=b"{}")
    assert r.status_code == 403 and "NCAP_TOKEN" in r.json()["error"]
    assert remote.get("/healthz").status_code == 200
    assert local.post("/jobs/list", content=b"{}").status_code == 200


# -------------------------------------------------------------------------------------- ncap serve
def test_ncap_serve_refuses_public_bind_without_token(tmp_path, monkeypatch, capsys):
    from ncap.service.cli import main

    for key in ("NCAP_TOKEN", "NCAP_ALLOW_REMOTE_WITHOUT_TOKEN", "NCAP_SERVICE_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    data = ["--data-dir", str(tmp_path / "d"), "--check"]
    assert main(["serve", "--host", "0.0.0.0", *data]) == 2
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", "--host", "127.0.0.1", *data]) == 0
    monkeypatch.setenv("NCAP_TOKEN", "t")
    assert main(["serve", "--host", "0.0.0.0", *data]) == 0
    assert main(["serve", "--db", "postgresql://h/db", *data]) == 2
    assert (tmp_path / "d" / "jobs.db").exists()


def test_jobs_module_json_safety():

    out = jobs.to_jsonable({"a": np.float32(0.5), "b": np.arange(3), "c": Path("/x")})
    assert json.dumps(out) == '{"a": 0.5, "b": [0, 1, 2], "c": "/x"}'


def test_the_settings_table_in_docs_is_generated_from_the_settings():
    """docs/service.md's settings table is `python -m ncap.service.config`'s output: a new setting, or a changed
    default or description, fails here until the docs are regenerated."""
    from ncap.service.config import ServiceSettings, settings_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "service.md").read_text()
    block = docs.split("<!-- settings: generated")[1].split("-->", 1)[1].split("<!-- /settings -->")[0].strip()
    assert block == settings_table()
    assert all(f"`NCAP_{name.upper()}`" in block for name in ServiceSettings.model_fields)


def test_the_endpoint_table_in_docs_lists_every_route_of_the_openapi_spec():
    """docs/service.md holds the one endpoint table: every route the service declares is in it, and it names
    no route the service does not have."""
    import re

    from ncap.service.api import NcapService

    docs = (Path(__file__).resolve().parents[1] / "docs" / "service.md").read_text()
    table = docs.split("### Endpoints")[1].split("\n\n")[2]
    documented = set(re.findall(r"`(/[a-z/._]*)`", "\n".join(line.split("|")[1] for line in table.splitlines()[2:])))
    declared = set(NcapService.openapi_spec.asdict()["paths"]) - {"/metrics"}
    assert declared - documented == set()
    assert documented - declared == {"/", "/docs", "/docs.json"}  # the web page, Swagger page and spec (BentoML's)

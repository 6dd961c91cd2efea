"""End to end: the real service (`ncap serve` subprocess on 127.0.0.1), a real ranking job on the embedded
digits data over HTTP, every bad input (4xx naming the problem, service healthy after), auth, cancel."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from test_service_helpers import (
    FAST_CANDIDATES,
    Server,
    image_folder_zip,
    npz_bytes,
    png_bytes,
    symlink_zip,
    zip_with,
)

pytestmark = pytest.mark.slow

TOKEN = "e2e-token-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("svc"), token=TOKEN, max_upload_mb="1", max_extract_mb="3",
                 max_epochs="20")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def job(server):
    """The real ranking job; submitted first so that it trains while the other tests run."""
    r = server.submit({"candidates": FAST_CANDIDATES, "epochs": 2, "seed": 0, "image_size": 32})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "queued" and body["progress"]["candidates_total"] == 2
    return body["job_id"]


def test_submit_returns_immediately(server, job):
    s = server.status(job)
    assert s["state"] in ("queued", "running", "done")
    assert [c["name"] for c in s["candidates"]] == FAST_CANDIDATES


# ------------------------------------------------------------------------------------------- auth
def test_health_is_open_and_everything_else_needs_the_token(server, job):
    for path in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(server.url + path, timeout=5).status_code == 200
    for route, payload in [("/jobs/list", {}), ("/jobs/status", {"job_id": job}), ("/jobs/submit", {}),
                           ("/predict", {"trajectories": []})]:
        for token in (None, "wrong-token"):
            r = server.post(route, payload, token=token)
            assert r.status_code == 401, (route, token, r.text)
            assert "bearer token" in r.json()["error"]
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(server.url + "/docs.json", timeout=5).status_code == 401
    r = server.post("/jobs/list", {})
    assert r.status_code == 200 and any(j["job_id"] == job for j in r.json()["jobs"])


def test_openapi_spec_published(server):
    r = httpx.get(server.url + "/docs.json", headers=server.headers(), timeout=10)
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in ("/jobs/submit", "/jobs/status", "/jobs/result", "/jobs/cancel", "/jobs/list", "/predict",
              "/jobs/plot", "/readyz"):
        assert p in paths, p


# ----------------------------------------------------------------------------------- bad inputs
def _bomb() -> bytes:
    return zip_with([("ok/bomb.png", b"\0" * (5 << 20))])  # ~5 KB upload, 5 MiB inflated


def _too_big_total() -> bytes:  # 4 members of 0.9 MiB: each below the ratio check size, 3.6 MiB in all
    return zip_with([(f"ok/{i}.png", b"\0" * 900_000) for i in range(4)])


BAD_UPLOADS = [
    # (case, file name, bytes, status, words the message must contain)
    ("traversal", "d.zip", zip_with([("../evil.png", png_bytes(2))]), 400, ["../evil.png", "traversal"]),
    ("absolute", "d.zip", zip_with([("/etc/evil.png", png_bytes(2))]), 400, ["/etc/evil.png", "absolute"]),
    ("symlink", "d.zip", symlink_zip(), 400, ["ok/link.png", "symbolic link"]),
    ("bomb ratio", "d.zip", _bomb(), 400, ["ok/bomb.png", "compression ratio"]),
    ("bomb total", "d.zip", _too_big_total(), 400, ["total uncompressed size"]),
    ("non-image", "d.zip", zip_with([("ok/notes.txt", b"hello")]), 400, ["ok/notes.txt", "not an image"]),
    ("corrupt zip", "d.zip", b"PK\x03\x04" + b"\x00garbage" * 50, 400, ["corrupt"]),
    ("not a zip", "d.zip", b"hello world, not an archive", 400, ["not a zip"]),
    ("wrong type", "d.tar", b"whatever", 415, ["d.tar", ".npz", ".zip"]),
    ("too large", "d.zip", b"PK\x03\x04" + b"\x00" * (1 << 20), 413, ["exceeds the limit"]),
    ("empty", "d.npz", b"", 400, ["empty"]),
    ("npz pickle", "d.npz", npz_bytes(x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4)), 400,
     ["object arrays"]),
    ("npz keys", "d.npz", npz_bytes(images=np.zeros((4, 8, 8)), labels=np.arange(4)), 400,
     ["missing array", "'x'"]),
    ("npz one class", "d.npz", npz_bytes(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4, int)), 400,
     ["one class"]),
]


@pytest.mark.parametrize("case,name,data,status,words", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_rejected(server, case, name, data, status, words):
    r = server.submit({"candidates": FAST_CANDIDATES[:1], "epochs": 1}, file=(name, data))
    assert r.status_code == status, (case, r.status_code, r.text)
    msg = r.json()["error"]
    for w in words:
        assert w in msg, (case, w, msg)
    assert server.healthy()


def test_chunked_upload_over_limit_rejected(server):
    def body():  # a well-formed multipart start, then 2.5 MiB of file data, without Content-Length
        yield (b'--zz\r\nContent-Disposition: form-data; name="dataset"; filename="d.zip"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        for _ in range(40):
            yield b"x" * 65536

    r = server.post("/jobs/submit", content=body(), headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413, r.text
    assert "exceeds the limit" in r.json()["error"]
    assert server.healthy()


BAD_CONFIGS = [
    ("unknown timm name", {"candidates": ["resnet18x=random"]}, ["resnet18x", "did you mean", "resnet18"]),
    ("weight path", {"candidates": ["resnet18=/etc/passwd.pth"]}, ["weight file paths are not accepted"]),
    ("no cached weights", {"candidates": ["resnet50"]}, ["no cached pretrained weights", "resnet50=random"]),
    ("too many", {"candidates": [f"m{i}:resnet10t=random" for i in range(9)]}, ["too many candidates", "9"]),
    ("duplicate", {"candidates": ["resnet10t=random", "resnet10t=random"]}, ["listed twice"]),
    ("epochs high", {"epochs": 21}, ["epochs=21", "1..20"]),
    ("epochs zero", {"epochs": 0}, ["epochs"]),
    ("unknown field", {"epochz": 3}, ["epochz"]),
    ("bad variant", {"candidates": ["resnet10t=random"], "variant": "nope"}, ["variant", "nope"]),
    ("named dataset", {"candidates": ["resnet10t=random"], "dataset": "/etc/passwd"}, ["unknown dataset", "not a named dataset"]),
    ("bad strategy", {"candidates": ["resnet10t=random"], "strategy": "fast"}, ["unknown strategy 'fast'", "halving"]),
    ("budget zero", {"candidates": ["resnet10t=random"], "time_budget_s": 0}, ["time_budget_s", "greater than or equal to 1"]),
    ("halving eta", {"candidates": ["resnet10t=random"], "halving_eta": 1}, ["halving_eta"]),
]


@pytest.mark.parametrize("case,config,words", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_rejected(server, case, config, words):
    r = server.submit(config)
    assert r.status_code == 400, (case, r.text)
    text = r.text  # pydantic errors come as a list of {loc, msg}
    for w in words:
        assert w in text, (case, w, text)
    assert "no such file" not in text, (case, text)  # the server never looks at a client's path
    assert server.healthy()


def test_bad_requests_on_other_routes(server, job):
    r = server.post("/jobs/status", {"job_id": "no-such-job"})
    assert r.status_code == 404 and "no-such-job" in r.json()["error"]
    r = server.post("/jobs/plot", {"job_id": job, "name": "../../jobs.db"})
    assert r.status_code == 404 and "no plot" in r.json()["error"]
    r = server.post("/jobs/list", {"state": "weird"})
    assert r.status_code == 400 and "weird" in r.json()["error"]
    r = server.post("/predict", {"trajectories": [{"beta_eff": [1, 2], "val_accuracy": [0.5]}]})
    assert r.status_code == 400 and "val_accuracy has 1" in r.json()["error"]
    r = server.post("/predict", {"trajectories": [{"beta_eff": [3, 2, 1], "val_accuracy": [50, 60, 70]}]})
    assert r.status_code == 400 and "fractions" in r.json()["error"]
    r = server.post("/jobs/status", content=b"{not json", headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    r = server.post("/jobs/list", content=b"x" * (5 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert server.healthy()


# ------------------------------------------------------------------------------- good uploads, cancel
def test_zip_and_npz_uploads_accepted_then_cancelled(server, job):
    x = (np.random.default_rng(0).random((20, 8, 8)) * 255).astype(np.uint8)
    for name, data in [("pets.zip", image_folder_zip()), ("arr.npz", npz_bytes(x=x, y=np.arange(20) % 2))]:
        r = server.submit({"candidates": ["resnet10t=random"], "epochs": 1}, file=(name, data))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dataset"] == name and body["state"] == "queued"
        c = server.post("/jobs/cancel", {"job_id": body["job_id"]})  # queued behind the main job
        assert c.status_code == 200 and c.json()["state"] == "cancelled", c.text
        again = server.post("/jobs/cancel", {"job_id": body["job_id"]})
        assert again.status_code == 409 and "already cancelled" in again.json()["error"]
        res = server.post("/jobs/result", {"job_id": body["job_id"]})
        assert res.status_code == 409 and "cancelled" in res.json()["error"]


def test_predict_endpoint(server):
    r = server.post("/predict", {"trajectories": [
        {"name": "a", "beta_eff": [4.0, 3.0, 2.2, 1.5, 1.0], "val_accuracy": [0.3, 0.45, 0.55, 0.62, 0.67]},
        {"name": "b", "beta_eff": [2.0, 1.9, 1.8, 1.7, 1.6], "val_accuracy": [0.2, 0.22, 0.23, 0.25, 0.26]}]})
    assert r.status_code == 200, r.text
    preds = {p["name"]: p for p in r.json()["predictions"]}
    assert preds["a"]["rank"] == 1 and preds["a"]["p_best"] > 0.5
    for p in preds.values():
        assert 0 <= p["predicted_accuracy"] <= 1 and p["predicted_std"] >= 0


# ---------------------------------------------------------------------------------- the real job
def test_job_runs_to_a_ranking(server, job):
    seen_running = []

    def until(s):
        if s["state"] == "running" and s["progress"]["epoch"] is not None:
            seen_running.append(s["progress"])
        return s["state"] in ("done", "failed", "cancelled")

    final = server.wait(job, until, timeout=240)
    assert final["state"] == "done", final
    assert final["progress"]["candidates_done"] == 2 and final["progress"]["fraction"] == 1.0
    assert final["attempts"] == 1
    if seen_running:
        p = seen_running[-1]
        assert p["current_candidate"] in FAST_CANDIDATES and p["elapsed_s"] > 0
    r = server.post("/jobs/result", {"job_id": job})
    assert r.status_code == 200, r.text
    body = r.json()
    doc = body["ranking"]
    from ncap.service.documents import CandidateRecord, RankingDocument

    assert RankingDocument.model_validate(doc).schema_version == 2
    recs = doc["candidates"]
    assert sorted(c["candidate"] for c in recs) == sorted(FAST_CANDIDATES)
    assert sorted(c["rank"] for c in recs) == [1, 2]
    for rec in recs:
        assert set(rec) == set(CandidateRecord.model_fields)
        assert rec["status"] == "ok" and 0 <= rec["predicted_accuracy"] <= 1
        assert len(rec["val_accuracy"]) == len(rec["beta_eff"]) >= 2
    assert abs(sum(c["p_best"] for c in recs) - 1) < 1e-6
    assert doc["dataset"]["n_images"] == 1797  # embedded digits
    assert body["plots"], body
    for name in body["plots"]:
        p = server.post("/jobs/plot", {"job_id": job, "name": name})
        assert p.status_code == 200 and p.content[:4] == b"\x89PNG", name
    z = server.post("/jobs/artifacts", {"job_id": job})
    assert z.status_code == 200 and z.content[:2] == b"PK"
    assert server.healthy()

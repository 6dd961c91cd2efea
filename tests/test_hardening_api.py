"""Issue 13 over HTTP: one regression test per defect against a real server on 127.0.0.1, a short fuzzing run
(schemathesis + hypothesis, no response >= 500), and a kill -9 during submit validation.

The server's ranking function is :func:`api_runner` (trains nothing; a candidate labelled ``boom`` raises), so
accepted jobs finish at once; real training is covered by test_service_e2e.py and test_service_resume.py."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_service_helpers import Server, npz_bytes

from ncap.service.measurements.api_fuzz import fuzz, instant_runner

pytestmark = pytest.mark.slow
TOKEN = "hardening-token"
SMALL = {"candidates": ["resnet10t=random"], "epochs": 1, "image_size": 32}


def api_runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_done=None, **_):
    """instant_runner, except that a candidate labelled 'boom' raises like timm's ViT at the wrong size."""
    names = [c.split(":", 1)[0] if ":" in c.split("=", 1)[0] else c for c in candidates]
    done = dict(completed or {})
    for name in names:  # in order, as the real ranking does
        if name not in done:
            if name == "boom":
                raise AssertionError("Input height (32) doesn't match model (224).")
            done[name] = {"candidate": name, "status": "ok", "predicted_accuracy": 0.5, "predicted_std": 0.1}
            on_candidate_done(done[name])
    return instant_runner(dataset, names, config, out_dir, completed=done)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    (tmp / "systmp").mkdir()
    srv = Server(tmp, token=TOKEN, env={"TMPDIR": str(tmp / "systmp")}, runner="test_hardening_api:api_runner",
                 max_job_memory_gb="2", max_upload_mb="64", max_epochs="20")
    srv.start()
    yield srv
    srv.stop()


def _error(r) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body, dict), body  # {"error": ...}, never BentoML's one-element list
    return body["error"]


def _peak_rss(proc) -> int:
    """VmHWM: the kernel's record of the process's peak resident memory."""
    status = Path(f"/proc/{proc.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


# --------------------------------------------------------------------------------- one test per defect
def test_defect7_validation_does_not_inflate_the_api_process(server, tmp_path):
    """A 41 MB float32 upload is checked in chunks: the API process's peak RSS grows by far less than the
    decoded dataset (it grew ~9x the upload before)."""
    worker = server.roles()["worker"]
    warm = server.submit(SMALL)  # warm every import the submit path needs
    server.post("/jobs/cancel", {"job_id": warm.json()["job_id"]})
    before = _peak_rss(worker)
    x = np.random.default_rng(0).random((2500, 64, 64), dtype=np.float32)
    buf = tmp_path / "big.npz"
    np.savez(buf, x=x, y=np.arange(2500) % 5)
    r = server.submit(SMALL, file=("big.npz", buf.read_bytes()))
    assert r.status_code == 200, r.text
    grew = _peak_rss(worker) - before
    server.post("/jobs/cancel", {"job_id": r.json()["job_id"]})  # queued: cancelled at once
    assert grew < 60 * 2**20, f"API peak RSS grew by {grew / 2**20:.0f} MiB for a 41 MB upload"


def test_defect1_wide_probe_is_refused_at_submit(server):
    msg = _error(server.submit({**SMALL, "probe_width": 8192}))
    assert "exceeds the per-job limit of 2.0 GB" in msg and "probe_width" in msg
    ok = server.submit(SMALL)
    assert ok.status_code == 200
    server.post("/jobs/cancel", {"job_id": ok.json()["job_id"]})


def test_defect2_predict_enforces_its_model(server):
    ok = {"beta_eff": [3.0, 2.0, 1.5, 1.0], "val_accuracy": [0.3, 0.4, 0.5, 0.55]}
    for payload, words in [
        ({"trajectories": []}, "at least 1 item"),
        ({"trajectories": [ok], "min_points": -5}, "min_points"),
        ({"trajectories": [ok], "t0": 1e9}, "t0"),
        ({"trajectories": [ok], "t0": True}, "t0"),
        ({"trajectories": [ok] * 257}, "at most 256"),
        ({"trajectories": [{"beta_eff": [1.0] * 10000, "val_accuracy": [0.5] * 10000}] * 6}, "50000"),
        ({"trajectories": [ok], "confg": 1}, "confg"),
        ({"trajectories": [{**ok, "val_accuracy": [30, 40, 50, 55]}]}, "divide percentages by 100"),
        ({"trajectories": [{**ok, "beta_eff": [1.0, 2.0]}]}, "beta_eff has 2 values"),
    ]:
        assert words in _error(server.post("/predict", payload)), payload
    r = server.post("/predict", content=b'{"trajectories": [{"beta_eff": [NaN, 1, 2], "val_accuracy": [0.1, 0.2, 0.3]}]}',
                    headers={"Content-Type": "application/json"})
    assert "finite number" in _error(r)


def test_defect9_huge_beta_values_are_not_flagged_constant(server):
    r = server.post("/predict", {"trajectories": [
        {"beta_eff": [4e300, 3e300, 2.2e300, 1.5e300, 1e300], "val_accuracy": [0.3, 0.45, 0.55, 0.62, 0.67]}]})
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    scaled = server.post("/predict", {"trajectories": [
        {"beta_eff": [4.0, 3.0, 2.2, 1.5, 1.0], "val_accuracy": [0.3, 0.45, 0.55, 0.62, 0.67]}]}).json()
    assert p["method"] == "beta_extrapolation" and not any("constant" in f for f in p["flags"])
    assert p["predicted_accuracy"] == pytest.approx(scaled["predictions"][0]["predicted_accuracy"], rel=1e-9)


def test_defect3_incompatible_candidate_refused_at_submit_and_isolated_at_run_time(server):
    msg = _error(server.submit({**SMALL, "candidates": ["resnet10t=random", "vit_tiny_patch16_224=random"]}))
    assert "vit_tiny_patch16_224 cannot take 32x32 images" in msg
    r = server.submit({**SMALL, "candidates": ["ok:resnet10t=random", "boom:resnet10t=random"]})
    job = r.json()["job_id"]
    final = server.wait(job, timeout=120)
    assert final["state"] == "done", final
    states = {c["name"]: (c["state"], c["error"]) for c in final["candidates"]}
    assert states == {"ok": ("done", None),
                      "boom": ("failed", "AssertionError: Input height (32) doesn't match model (224).")}
    assert final["error_detail"] is None
    assert server.post("/jobs/result", {"job_id": job}).status_code == 200
    assert server.post("/jobs/artifacts", {"job_id": job}).status_code == 200


BAD_BODIES = [
    ("npz 0-d x", {"files": {"dataset": ("d.npz", npz_bytes(x=np.array(3.0), y=np.arange(2)))},
                   "data": {"config": json.dumps(SMALL)}}, "rank 0"),
    ("field name data", {"files": {"data": ("d.npz", b"PK\x03\x04")}, "data": {"config": "{}"}},
     "unknown multipart field 'data'"),
    ("no boundary", {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}, "boundary"),
    ("garbage", {"content": b"\x00garbage", "headers": {"Content-Type": "multipart/form-data; boundary=zz"}},
     "malformed multipart"),
    ("dataset not a file", {"content": b'--zz\r\nContent-Disposition: form-data; name="dataset"\r\n\r\nhttp://x/\r\n'
                                       b"--zz--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=zz"}},
     "must be a file"),
    ("deep json", {"content": b"[" * 100_000, "headers": {"Content-Type": "application/json"}}, "not valid JSON"),
]


@pytest.mark.parametrize("case,kw,words", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_defect5_malformed_input_is_a_400(server, case, kw, words):
    assert words in _error(server.post("/jobs/submit", **kw)), case


def test_defect5_header_declaring_a_huge_array_is_a_400(server):
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (10**11, 8, 8)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", head.getvalue() + b"\0" * 64)
        zf.writestr("y.npy", head.getvalue())
    msg = _error(server.submit(SMALL, file=("d.npz", buf.getvalue())))
    assert "declares shape (100000000000, 8, 8)" in msg and "/" not in msg.split("d.npz")[0]


def test_defect6_typos_and_cut_bodies_queue_nothing(server):
    before = server.post("/jobs/list", {}).json()["total"]
    assert "confg" in _error(server.post("/jobs/submit", {"confg": {"epochs": 1}}))
    cut = b'--zz\r\nContent-Disposition: form-data; name="config"\r\n\r\n{"epochs": 1}\r\n'
    assert "closing boundary" in _error(server.post("/jobs/submit", content=cut, headers={
        "Content-Type": "multipart/form-data; boundary=zz"}))
    assert "epochz" in _error(server.submit({**SMALL, "epochz": 3}))
    assert server.post("/jobs/list", {}).json()["total"] == before


def test_defect9_minor_items(server):
    assert "a boolean is not a number" in _error(server.submit({**SMALL, "epochs": True}))
    r = server.post("/jobs/submit", content=b'{"config": {"lr": NaN}}', headers={"Content-Type": "application/json"})
    assert "finite number" in _error(r)
    msg = _error(server.submit(SMALL, file=("d.npz", npz_bytes(x=np.zeros((4, 8, 8)), y=np.zeros(4)))))
    assert msg == "invalid dataset: d.npz: only one class (0.0); classification needs at least two"
    x = np.zeros((6, 8, 8), np.uint8)
    job = server.submit(SMALL, file=("d.npz", npz_bytes(x=x, y=np.arange(6) % 2))).json()["job_id"]
    job_dir = server.data_dir / "jobs" / job
    assert (job_dir / "upload" / "d.npz").is_file()
    assert "cancel it first" in _error(server.post("/jobs/delete", {"job_id": job}))  # queued or running
    server.post("/jobs/cancel", {"job_id": job})
    assert server.wait(job, timeout=120)["state"] in ("cancelled", "done")
    r = server.post("/jobs/delete", {"job_id": job})
    assert r.status_code == 200 and r.json()["deleted"] and r.json()["freed_bytes"] > 0
    assert not job_dir.exists() and server.post("/jobs/status", {"job_id": job}).status_code == 404


def test_no_bentoml_request_temp_files(server):
    assert not list((server.tmp / "systmp").glob("bentoml-request-*"))


def test_short_fuzzing_run_finds_no_5xx(server):
    tally = fuzz(server.url, TOKEN, max_cases=300, max_seconds=45, seed=13)
    five = {k: n for k, n in tally.counts.items() if k[1] >= 500}
    assert not five, (five, tally.failures[:3])
    assert sum(tally.counts.values()) >= 100 and server.healthy()
    assert tally.checked >= 20 and not tally.mismatches, tally.mismatch_examples[:3]  # 4xx bodies match the spec


# ------------------------------------------------------------------------------------------- defect 8
def test_defect8_kill9_during_submit_validation_leaves_nothing_after_restart(tmp_path):
    srv = Server(tmp_path, token=TOKEN, env={"TMPDIR": str(tmp_path)}, runner="test_hardening_api:api_runner",
                 max_upload_mb="200")
    srv.start()
    try:
        x = np.random.default_rng(1).random((7000, 64, 64), dtype=np.float32)  # 115 MB: streaming takes a while
        path = tmp_path / "big.npz"
        np.savez(path, x=x, y=np.arange(7000) % 3)
        del x
        data = path.read_bytes()
        path.unlink()
        staging = srv.data_dir / "staging"
        thread = threading.Thread(target=lambda: _ignore(lambda: srv.submit(SMALL, file=("big.npz", data),
                                                                            timeout=120)), daemon=True)
        thread.start()
        deadline = time.time() + 60
        while time.time() < deadline and not any(p.is_file() and p.stat().st_size > 50e6
                                                 for p in staging.rglob("*.npz")):
            time.sleep(0.01)
        assert any(staging.rglob("*.npz")), "the upload never reached the staging folder"
        srv.kill9(whole_tree=True)
        assert any(staging.rglob("*.npz"))  # what the kill left behind
        srv.start()
        deadline = time.time() + 30
        while time.time() < deadline and any(staging.rglob("*.npz")):
            time.sleep(0.2)
        assert not any(staging.rglob("*.npz")), "staging leftovers survived the restart"
        assert not [d for d in (srv.data_dir / "jobs").iterdir()], "an orphaned job folder survived"
        assert not list(tmp_path.glob("bentoml-request-*"))
        assert srv.post("/jobs/list", {}).json()["total"] == 0
    finally:
        srv.stop()


def _ignore(fn) -> None:
    with contextlib.suppress(Exception):  # the server is killed under this request
        fn()

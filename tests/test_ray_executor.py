"""The Ray executor on a real local cluster: a head plus one more node process, both started by this module
with `ray start` on 127.0.0.1 (one CPU each, temporary HOME and temp dir) and killed by PID at the end.

In order: equality with the local executor (same ranking, same predictions, bit for bit on CPU with fixed
seeds), the service with executor 'ray' (submit, status while running, result), a cancel, and a fault: the extra node
is killed while a candidate runs there; the ranking still finishes, the lost candidate is retried on the
head, and no candidate that had finished is trained again. The fault test runs last (the node stays dead).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from ncap.models.recipe import Recipe
from ncap.service import jobs
from ncap.service.executors import RayExecutor
from ncap.service.ranking import run_ranking
from ncap.service.store import JobStore

TINY = {"epochs": 1, "batch_size": 64, "image_size": 16, "evals_per_epoch": 2, "beta_batch_size": 64,
        "probe_width": 16, "num_workers": 0, "measure_latency": False, "seed": 0}
CANDIDATES = ["resnet10t=random", "resnet18=random", "mobilenetv3_small_050=random"]
# The fault test runs four candidates on the cluster's two CPUs: whichever node frees first takes the third, so the
# extra node is surely running one (its first, or the fourth) while another has finished. With three, the two
# first could end together and the third land on the head, leaving nothing to kill (a CI flake).
FAULT_CANDIDATES = [*CANDIDATES, "resnet14t=random"]
TIMING_FIELDS = {"wall_time_s", "beta_time_s", "train_time_s", "latency_ms"}
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree(procs) -> None:
    """SIGKILL these processes and everything under them, by PID."""
    victims = []
    for p in procs:
        try:
            victims += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=10)


def _cluster_processes(temp_dir: str) -> list:
    """This cluster's Ray processes: those whose command line names its temp dir (not this test process)."""
    mine = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and any(temp_dir in arg for arg in (p.info["cmdline"] or [])):
            mine.append(p)
    return mine


class Cluster:
    def __init__(self, address: str, node: subprocess.Popen, temp_dir: str):
        self.address, self.node, self.temp_dir = address, node, temp_dir

    def node_tasks(self) -> list[str]:
        """Names of the ncap tasks (``ray::ncap:<candidate>``) running on the extra node now."""
        try:
            procs = psutil.Process(self.node.pid).children(recursive=True)
        except psutil.Error:
            return []
        names = []
        for p in procs:
            try:
                names.append(p.name() if p.name().startswith("ray::") else " ".join(p.cmdline()))
            except psutil.Error:
                pass
        return [n.removeprefix("ray::ncap:").strip() for n in names if n.startswith("ray::ncap:")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"]}  # the session token (conftest.py)
    env = {**os.environ, **auth, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           # a dead node is noticed in ~3 s instead of ~30 s
           "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
           "RAY_health_check_failure_threshold": "3",
           # workers stay for the next candidate (as ncap's own local Ray does: executors.KEEP_IDLE_WORKERS)
           "RAY_idle_worker_killing_time_threshold_ms": "60000"}
    patch = pytest.MonkeyPatch()
    for key, value in {**auth, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}.items():
        patch.setenv(key, value)  # this driver and the service's trainers authenticate with the token
    ray._raylet.Config.initialize("")  # Ray read RAY_AUTH_MODE at import; re-read it (as ray.init itself does)
    node = None
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", "1", "--temp-dir", temp_dir, "--include-dashboard", "false",
                        "--disable-usage-stats"], env=env, check=True, timeout=120, capture_output=True)
        node = subprocess.Popen([RAY, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                                 "--num-cpus", "1", "--block"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        deadline = time.time() + 90
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.time() < deadline, "the second Ray node did not join"
            time.sleep(0.5)
        yield Cluster(f"127.0.0.1:{port}", node, temp_dir)
    finally:
        ray.shutdown()
        if node is not None:
            _kill_tree([psutil.Process(node.pid)] if node.poll() is None else [])
        _kill_tree(_cluster_processes(temp_dir))
        patch.undo()
        ray._raylet.Config.initialize("")
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ncap.models.data import load_dataset

    ds = load_dataset("digits")
    keep = np.flatnonzero(np.arange(len(ds.y)) % 5 == 0)
    folder = tmp_path_factory.mktemp("data")
    np.savez_compressed(folder / "packed.npz", x=ds.x[keep], y=ds.y[keep])  # read into memory: object store
    np.savez(folder / "mapped.npz", x=ds.x[keep], y=ds.y[keep])  # memory-mapped (lazy): shipped by path
    return folder


@pytest.fixture(scope="module")
def local_doc(data):
    return _local_ranking(data, CANDIDATES)


def _local_ranking(data, candidates):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a one-CPU Ray task
    try:
        return run_ranking(str(data / "packed.npz"), candidates, Recipe(**TINY), None, progress=False)
    finally:
        torch.set_num_threads(threads)


def _same(a, b) -> None:
    assert a.model_dump(exclude=TIMING_FIELDS) == b.model_dump(exclude=TIMING_FIELDS)


def test_ray_gives_the_local_ranking_and_predictions(cluster, data, local_doc):
    events: list[tuple] = []
    with RayExecutor(cluster.address) as executor:  # joins the cluster this module connected to
        doc = run_ranking(str(data / "packed.npz"), CANDIDATES, Recipe(**TINY), None, progress=False,
                          executor=executor, on_candidate_start=lambda n: events.append(("start", n)),
                          on_epoch=lambda n, e, m: events.append(("epoch", n, e, m["val_accuracy"])),
                          on_candidate_done=lambda r: events.append(("done", r.candidate)))
    assert [r.candidate for r in doc.candidates] == [r.candidate for r in local_doc.candidates]
    for mine, theirs in zip(doc.candidates, local_doc.candidates):
        _same(mine, theirs)
    for rec in doc.candidates:  # every observation streamed back, in order, between start and done
        name = rec.candidate
        mine = [e for e in events if e[1] == name]
        assert mine[0] == ("start", name) and mine[-1] == ("done", name)
        assert [e[2:] for e in mine[1:-1]] == list(zip(rec.epoch, rec.val_accuracy))
    assert len(doc.candidates) == 3 and all(r.status == "ok" for r in doc.candidates)


def test_service_runs_jobs_on_ray_concurrently(cluster, data, local_doc, tmp_path):
    """Two single-candidate jobs on a worker with executor 'ray' and max_concurrent_jobs=2: both are running
    at once (each trainer drives its candidate on the cluster), progress is visible while they run, and the
    results hold the local executor's predictions."""
    store = JobStore(str(tmp_path / "jobs.db"))
    names = {"j-a": CANDIDATES[0], "j-b": CANDIDATES[2]}
    for job_id, cand in names.items():
        store.create_job(job_id, config={**TINY, "candidates": [cand]}, candidates=[cand],
                         out_dir=tmp_path / "jobs" / job_id / "out", dataset_path=str(data / "packed.npz"))
    worker = jobs.JobWorker(store, runner="ncap.service.ranking:run_ranking", data_dir=tmp_path,
                            poll_interval_s=0.1, executor="ray", ray_address=cluster.address, max_concurrent_jobs=2)
    seen_running: set[tuple[str, ...]] = set()
    seen_epochs: dict[str, float] = {}
    worker.start()
    try:
        deadline = time.time() + 240
        while {store.get_job(j)["state"] for j in names} - {"done", "failed", "cancelled"}:
            assert time.time() < deadline, [store.get_job(j) for j in names]
            running = tuple(sorted(j for j in names if store.get_job(j)["state"] == "running"))
            seen_running.add(running)
            for j in running:  # status while running: the progress the API reports
                p = jobs.progress_summary(store.get_job(j), store.candidates(j))
                if p["epoch"] is not None:
                    seen_epochs[j] = max(seen_epochs.get(j, 0.0), p["epoch"])
            time.sleep(0.1)
    finally:
        worker.stop()
    assert ("j-a", "j-b") in seen_running  # several jobs at once
    assert seen_epochs and all(0 < e <= 1 for e in seen_epochs.values())  # epochs streamed from the workers
    reference = {r.candidate: r for r in local_doc.candidates}
    for job_id, cand in names.items():
        assert store.get_job(job_id)["state"] == "done", store.get_job(job_id)
        (rec,) = store.get_result(job_id)["candidates"]
        assert rec["candidate"] == cand and rec["status"] == "ok"
        assert rec["val_accuracy"] == reference[cand].val_accuracy
        assert rec["predicted_accuracy"] == reference[cand].predicted_accuracy
        assert rec["beta_eff"] == reference[cand].beta_eff




def test_concurrent_rankings_share_one_executor(cluster, data, local_doc):
    """Two rankings at once on one executor (as `ncap rank --manifest` runs its datasets): each gets exactly
    its own candidates' progress events, in order, and the local executor's results."""
    reference = {r.candidate: r for r in local_doc.candidates}
    events: dict[str, list] = {CANDIDATES[0]: [], CANDIDATES[2]: []}
    docs: dict[str, object] = {}

    def rank(cand: str, executor: RayExecutor) -> None:
        docs[cand] = run_ranking(str(data / "packed.npz"), [cand], Recipe(**TINY), None, progress=False,
                                 executor=executor, on_epoch=lambda n, e, m: events[cand].append((n, e)))

    with RayExecutor(cluster.address) as executor:
        threads = [threading.Thread(target=rank, args=(c, executor)) for c in events]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    for cand, seen in events.items():
        (rec,) = docs[cand].candidates
        assert seen == [(cand, e) for e in rec.epoch]  # nothing of the other ranking, nothing lost
        assert rec.val_accuracy == reference[cand].val_accuracy and rec.beta_eff == reference[cand].beta_eff

def test_a_cancel_stops_the_running_tasks(cluster, data):
    """should_stop() turning true while candidates run on Ray raises Cancelled at the driver's next poll and
    cancels the tasks: no candidate reports done, and the cluster's CPUs are free again."""
    from ncap.models.harness import Cancelled

    started, done, stop = [], [], threading.Event()

    def on_start(name: str) -> None:
        started.append(name)
        stop.set()

    with RayExecutor(cluster.address) as executor, pytest.raises(Cancelled):
        run_ranking(str(data / "packed.npz"), CANDIDATES, Recipe(**{**TINY, "epochs": 3}), None, progress=False,
                    executor=executor, on_candidate_start=on_start, should_stop=stop.is_set,
                    on_candidate_done=done.append)
    assert started and not done
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.time() < deadline, ray.available_resources()
        time.sleep(0.2)

def test_a_dead_node_costs_only_its_candidate(cluster, data, local_doc):
    """Kill the extra node (its `ray start` process, raylet and workers, by PID) while a candidate runs there
    after another one has finished: every candidate still ends ok with the local executor's result, the lost
    one was started twice (retried on the head), and no candidate finished before the kill started again.
    Uses memory-mapped data (shipped by path)."""
    starts: dict[str, int] = {}
    finished: list[str] = []
    result: dict = {}

    def rank() -> None:
        try:
            with RayExecutor(cluster.address, max_retries=2) as executor:
                result["doc"] = run_ranking(
                    str(data / "mapped.npz"), FAULT_CANDIDATES, Recipe(**TINY), None, progress=False, executor=executor,
                    on_candidate_start=lambda n: starts.__setitem__(n, starts.get(n, 0) + 1),
                    on_candidate_done=lambda r: finished.append(r.candidate))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertions below
            result["error"] = exc

    thread = threading.Thread(target=rank, daemon=True)
    thread.start()
    deadline, victim = time.time() + 180, None
    while victim is None and thread.is_alive():
        assert time.time() < deadline, (starts, finished)
        on_node = [n for n in cluster.node_tasks() if starts.get(n) and n not in finished]
        if on_node and finished:
            victim = on_node[0]
        time.sleep(0.1)
    assert victim is not None, ("the ranking ended before a candidate ran on the extra node after another "
                                f"finished: {starts}, {finished}")
    done_before_kill = list(finished)
    _kill_tree([psutil.Process(cluster.node.pid)])
    thread.join(240)
    assert not thread.is_alive() and "error" not in result, result
    doc = result["doc"]
    assert all(r.status == "ok" for r in doc.candidates), [(r.candidate, r.error) for r in doc.candidates]
    extra = _local_ranking(data, FAULT_CANDIDATES[len(CANDIDATES):])  # a record does not depend on the others
    reference = {r.candidate: r for r in [*local_doc.candidates, *extra.candidates]}
    for rec in doc.candidates:
        _same(rec.model_copy(update={"rank": 0, "p_best": 0.0, "pareto": False}),
              reference[rec.candidate].model_copy(update={"rank": 0, "p_best": 0.0, "pareto": False}))
    assert starts[victim] == 2  # retried after its node died
    assert all(starts[n] == 1 for n in done_before_kill)  # finished candidates are never retrained
    assert sorted(finished) == sorted(FAULT_CANDIDATES)  # each reported once

"""The ncap ranking service (BentoML 1.4): submit a dataset and candidates, get a ranking back.

Start it with ``ncap serve`` (or ``bentoml serve ncap.service.api:NcapService``). Endpoints (all POST with a
JSON body unless noted; every route except /healthz, /livez, /readyz needs ``Authorization: Bearer
$NCAP_TOKEN`` when a token is configured):

=====================  =============================================================================
/jobs/submit           multipart: ``dataset`` (.npz or .zip file, optional) + ``config`` (JSON) -> job
/jobs/status           {"job_id"} -> state, progress (candidates done/running/failed, epoch, ETA)
/jobs/result           {"job_id"} -> the ranking document (``ranking.json`` schema) and plot names
/jobs/plot             {"job_id", "name"} -> one plot file (image/png)
/jobs/artifacts        {"job_id"} -> zip of ranking.json and the plots
/jobs/cancel           {"job_id"} -> status after the cancel request
/jobs/list             {"state"?, "limit"?, "offset"?} -> job summaries, newest first
/predict               {"trajectories": [{beta_eff: [...], val_accuracy: [...]}, ...]} -> predictions
=====================  =============================================================================

BentoML's OpenAPI spec is at /docs.json. Jobs run in ``service.jobs.JobWorker`` (one training process at
a time) and live in the durable ``service.store.JobStore``.
"""
from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from starlette.responses import JSONResponse

from ncap.models.recipe import Exposure, exposed_fields, plain_value_errors
from ncap.service.config import ServiceSettings, load_settings
from ncap.service.documents import CandidateRecord, RankingDocument
from ncap.service.jobs import JobWorker, progress_summary, watch_parent
from ncap.service.security import (
    GuardMiddleware,
    InsecureBindError,
    Rejected,
    bound_hosts,
    check_bind,
    check_quota,
    check_upload_file,
    safe_filename,
)
from ncap.service.store import DONE, FINAL_STATES, JOB_STATES, QUEUED, JobStore

log = logging.getLogger("ncap.service")
SETTINGS: ServiceSettings = load_settings()


# ------------------------------------------------------------------------------------------ schemas
class _JobRequest(BaseModel):
    """What to rank. The recipe fields (epochs, lr, probe_width, ...) are added from
    ``ncap.models.recipe.Recipe``; limits such as the candidate count and epochs are the server's settings."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str] = Field(
        default_factory=list, max_length=64,
        description="Zoo names (`ncap zoo list`), timm architectures with locally cached weights, or "
                    "'arch=random' (optionally 'label:arch=random'); empty = the demo zoo. Weight file paths "
                    "are not accepted over HTTP.")
    dataset: str | None = Field(
        None, max_length=64,
        description="A named built-in dataset ('digits', 'mnist5k') when no file is uploaded; "
                    "neither = the embedded 'digits' data.")
    pruning_report: dict[str, Any] | None = Field(
        None, description="Optional `ncap prune` report; kept with the job and in its result.")


_JOB_FIELDS = exposed_fields(Exposure.JOB)
JobConfig = create_model(
    "JobConfig", __base__=_JobRequest, __doc__=_JobRequest.__doc__,
    __validators__={"_plain_errors": field_validator(*_JOB_FIELDS, mode="before")(
        classmethod(lambda cls, v, info: plain_value_errors(cls, v, info)))},
    **{name: (info.annotation, info) for name, info in _JOB_FIELDS.items()})
DEFAULT_CONFIG = JobConfig()


class Progress(BaseModel):
    candidates_total: int
    candidates_done: int
    candidates_running: int
    candidates_failed: int
    candidates_pending: int
    current_candidate: str | None = None
    epoch: float | None = None
    epochs: int
    fraction: float
    elapsed_s: float | None = None
    eta_s: float | None = None


class CandidateStatus(BaseModel):
    name: str
    state: str
    epoch: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    wall_time_s: float | None = None
    predicted_accuracy: float | None = None
    predicted_std: float | None = None
    observed_accuracy: float | None = None
    error: str | None = None


class JobStatus(BaseModel):
    job_id: str
    state: str = Field(description="queued | running | done | failed | cancelled")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = Field(description="How many times the job was started (>1 after a resume).")
    cancel_requested: bool
    dataset: str = Field(description="Uploaded file name or named dataset.")
    config: dict[str, Any]
    progress: Progress
    candidates: list[CandidateStatus]
    error: str | None = None
    error_detail: str | None = None


class JobSummary(BaseModel):
    job_id: str
    state: str
    created_at: float
    finished_at: float | None = None
    dataset: str
    candidates: list[str]
    epochs: int
    error: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    total: int


class JobResult(BaseModel):
    job_id: str
    state: str
    ranking: RankingDocument = Field(description="The ranking document (`ncap rank`'s ranking.json).")
    plots: list[str] = Field(description="Plot file names; fetch each with /jobs/plot.")


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    beta_eff: list[float] = Field(min_length=1, max_length=10000, description="β_eff after each epoch.")
    val_accuracy: list[float] = Field(min_length=1, max_length=10000,
                                      description="Validation accuracy (fraction 0..1) after each epoch.")
    denominators: list[float] | None = Field(None, max_length=10000,
                                             description="Optional 1ᵀP1 per epoch (unstable points dropped).")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trajectories: list[Trajectory] = Field(min_length=1, max_length=1000)
    t0: int = Field(1, ge=0, le=1000, description="Leading observations to skip.")
    min_points: int = Field(3, ge=2, le=1000)


class TrajectoryPrediction(BaseModel):
    """The predictor's answer for one submitted trajectory."""

    name: str
    predicted_accuracy: float
    predicted_std: float
    p_best: float
    rank: int
    n_points: int
    method: str
    flags: list[str]


class PredictResponse(BaseModel):
    predictions: list[TrajectoryPrediction]


# ----------------------------------------------------------------------------------------- helpers
def _rejections(fn):
    """Turn ``Rejected`` into a JSON 4xx response naming the problem."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Rejected as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    return wrapper


def _original_name(path: Path) -> str:
    """BentoML saves an upload as ``tmp<8 random chars><original basename>``."""
    name = path.name
    return name[11:] if name.startswith("tmp") and len(name) > 11 else name


def validate_candidates(names: list[str], settings: ServiceSettings) -> list[tuple[str, str]]:
    """(entry, name) per candidate: the entry as the ranking function takes it, and the name it reports
    the candidate under. Checked by the one candidate resolver with weight-file paths refused (they would
    make the server read, and unpickle, files of its own choosing on a client's behalf) and hf-cache
    architectures only when their weights are cached on the server. Every problem is a 400."""
    from ncap.models.registry import check_candidates, list_candidates

    entries = [n.strip() for n in names]
    for entry in entries:
        if not entry or "," in entry:
            raise Rejected(400, f"candidate {entry!r}: give one non-empty candidate per list item (no commas)")
    try:
        shown = check_candidates(entries, allow_files=False, require_local_weights=True,
                                 max_candidates=settings.max_candidates) if entries else []
    except ValueError as exc:
        raise Rejected(400, f"{exc}; named candidates: {', '.join(list_candidates())}") from exc
    return list(zip(entries, shown))


def default_candidates() -> list[str]:
    """The demo zoo, used when a job names no candidates."""
    from ncap.models.zoo import DEMO_CANDIDATES

    return list(DEMO_CANDIDATES)


def _warm_up() -> None:
    """Import what submit needs (torch, timm, the model list) in the background, so that the first
    submission does not pay several seconds of imports."""
    try:
        from ncap.models.candidates import check_arch
        from ncap.models.data import NAMED_DATASETS  # noqa: F401
        from ncap.models.zoo import ZOO  # noqa: F401

        check_arch("resnet18")
    except Exception:  # a failed warm-up only costs time later
        log.exception("warm-up failed")


# ----------------------------------------------------------------------------------------- service
@bentoml.service(
    name="ncap",
    workers=1,  # one process owns the job queue (see service/jobs.py)
    threads=SETTINGS.api_threads,
    traffic={"timeout": 900},
    logging={"access": {"enabled": False}},
)
class NcapService:
    """Rank pretrained image models for your dataset by neural capacitance."""

    def __init__(self) -> None:
        self.settings = load_settings()
        hosts = bound_hosts()
        self._under_server = bool(hosts)  # a worker of `bentoml serve` (not an in-process test client)
        for host in hosts:
            check_bind(host, self.settings)  # InsecureBindError stops the server
        self.data_dir = self.settings.resolved_data_dir
        (self.data_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.settings.resolved_db_url)
        self.worker = JobWorker(
            self.store, runner=self.settings.runner, data_dir=self.data_dir,
            train_threads=self.settings.train_threads, train_nice=self.settings.train_nice,
            cancel_grace_s=self.settings.cancel_grace_s,
            poll_interval_s=self.settings.poll_interval_s)
        self._validate_lock = threading.BoundedSemaphore(2)
        log.info("ncap service: data dir %s, store %s, bound to %s, auth %s", self.data_dir,
                 self.store.url, hosts or "(in-process)", "token" if self.settings.token else "loopback only")

    @bentoml.on_startup
    def _start_worker(self) -> None:
        if self._under_server:  # die with the server's main process, whatever kills it
            import os

            watch_parent(os.getppid())
        self.worker.start()
        threading.Thread(target=_warm_up, name="ncap-warm-up", daemon=True).start()

    @bentoml.on_shutdown
    def _stop_worker(self) -> None:
        self.worker.stop()

    def __is_ready__(self) -> bool:
        return self.store.ping() and self.worker.alive

    # -- jobs ----------------------------------------------------------------------------------------
    @bentoml.api(route="/jobs/submit")
    @_rejections
    def submit(self, config: JobConfig = DEFAULT_CONFIG, dataset: list[Path] = []) -> JobStatus:  # noqa: B006
        """Queue a ranking job and return at once. Upload the dataset as the multipart file field
        ``dataset`` (.npz with arrays x, y; or a .zip of an ImageFolder) and the config as the JSON
        field ``config``; without a file the job uses ``config.dataset`` or the embedded digits."""
        s = self.settings
        if config.epochs > s.max_epochs:
            raise Rejected(400, f"epochs={config.epochs} is out of range 1..{s.max_epochs} (max_epochs)")
        pairs = validate_candidates(config.candidates, s) or [(n, n) for n in default_candidates()]
        candidates = [name for _entry, name in pairs]
        job_config = config.model_dump(exclude={"candidates", "dataset"})
        job_config["candidates"] = [entry for entry, _name in pairs]  # what the ranking function is given
        if len(dataset) > 1:
            raise Rejected(400, f"upload one dataset file, got {len(dataset)}")
        if dataset and config.dataset:
            raise Rejected(400, "give either an uploaded dataset file or config.dataset, not both")
        if self.store.count_jobs(QUEUED) >= s.max_queued_jobs:
            raise Rejected(429, f"the queue is full ({s.max_queued_jobs} jobs waiting); try again later")
        job_id = uuid.uuid4().hex
        job_dir = self.data_dir / "jobs" / job_id
        try:
            if dataset:
                dataset_path, name, kind, size = self._take_upload(dataset[0], job_dir)
            else:
                name = config.dataset or "digits"
                self._check_named(name)
                dataset_path, kind, size = (config.dataset or None), "named", 0
            job = self.store.create_job(
                job_id, config=job_config, candidates=candidates, out_dir=job_dir / "out",
                dataset_path=None if dataset_path is None else str(dataset_path), dataset_name=name,
                dataset_kind=kind, dataset_bytes=size)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        return self._status(job)

    @staticmethod
    def _check_named(name: str) -> None:
        from ncap.models.data import NAMED_DATASETS

        if name not in NAMED_DATASETS:
            raise Rejected(400, f"unknown named dataset {name!r}; known: {', '.join(sorted(NAMED_DATASETS))} "
                                "(or upload a .npz / .zip file)")

    def _take_upload(self, upload: Path, job_dir: Path) -> tuple[Path, str, str, int]:
        """Copy the upload into the data dir, check it, extract zips; returns (path, name, kind, bytes)."""
        from ncap.models.archive import IMAGE_SUFFIXES, check_zip, safe_extract_zip
        from ncap.models.data import DataError, load_dataset

        s = self.settings
        name = _original_name(upload)
        kind = check_upload_file(upload, name, s)
        size = upload.stat().st_size
        check_quota(self.data_dir, size, s)
        (job_dir / "upload").mkdir(parents=True, exist_ok=True)
        stored = job_dir / "upload" / safe_filename(name)
        shutil.copyfile(upload, stored)
        limits = {"max_total_bytes": s.max_extract_bytes, "max_members": s.max_members, "max_ratio": s.max_ratio}
        with self._validate_lock:
            try:
                if kind == "zip":
                    check_quota(self.data_dir, 0, s)
                    path = safe_extract_zip(stored, job_dir / "dataset", allowed_suffixes=IMAGE_SUFFIXES, **limits)
                    stored.unlink()
                else:
                    check_zip(stored, allowed_suffixes={".npy"}, **limits)
                    path = stored
                ds = load_dataset(path)  # the same loader the trainer uses: reject now, not later
                del ds
            except DataError as exc:
                msg = str(exc).replace(str(stored), name).replace(str(job_dir), "")
                raise Rejected(400, f"invalid dataset {name!r}: {msg}") from exc
        return path, name, kind, size

    @bentoml.api(route="/jobs/status")
    @_rejections
    def status(self, job_id: str) -> JobStatus:
        """State and progress of a job: candidates done / running / failed, current epoch, elapsed, ETA."""
        return self._status(self._job(job_id))

    @bentoml.api(route="/jobs/result")
    @_rejections
    def result(self, job_id: str) -> JobResult:
        """The ranking document of a finished job (409 while it is not done)."""
        job = self._job(job_id)
        if job["state"] != DONE:
            prog = progress_summary(job, self.store.candidates(job_id))
            extra = {"state": job["state"], "error_detail": None}
            if job.get("error"):
                extra["error_detail"] = job.get("error")
            raise Rejected(409, f"job {job_id} is {job['state']} ({prog['candidates_done']}/"
                                f"{prog['candidates_total']} candidates done); no result"
                                + (f": {job['error']}" if job.get("error") else ""), **extra)
        doc = self.store.get_result(job_id) or {}
        return JobResult(job_id=job_id, state=job["state"], ranking=RankingDocument.model_validate(doc),
                         plots=self._plots(job, doc))

    def _plots(self, job: dict, doc: dict) -> list[str]:
        out_dir = Path(job["out_dir"])
        names = [Path(str(p)).name for p in doc.get("plots", []) or []]
        return [n for n in names if (out_dir / n).is_file()]

    @bentoml.api(route="/jobs/plot")
    @_rejections
    def plot(self, job_id: str, name: str) -> Annotated[Path, ContentType("image/png")]:
        """One plot file of a finished job (names from /jobs/result)."""
        job = self._job(job_id)
        doc = self.store.get_result(job_id) or {}
        plots = self._plots(job, doc)
        if name not in plots:
            raise Rejected(404, f"job {job_id} has no plot {name!r}; plots: {plots}")
        return Path(job["out_dir"]) / name

    @bentoml.api(route="/jobs/artifacts")
    @_rejections
    def artifacts(self, job_id: str) -> Annotated[Path, ContentType("application/zip")]:
        """A zip of a finished job's ranking.json and plots."""
        job = self._job(job_id)
        if job["state"] != DONE:
            raise Rejected(409, f"job {job_id} is {job['state']}; artifacts exist once it is done")
        doc = self.store.get_result(job_id) or {}
        out_dir = Path(job["out_dir"])
        target = out_dir.parent / f"ncap-{job_id}.zip"
        if not target.exists():
            import json

            tmp = target.with_suffix(".tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("ranking.json", json.dumps(doc, indent=2))
                for n in self._plots(job, doc):
                    zf.write(out_dir / n, n)
            tmp.replace(target)
        return target

    @bentoml.api(route="/jobs/cancel")
    @_rejections
    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued or running job (a running one stops after its current epoch)."""
        job = self._job(job_id)
        if job["state"] in FINAL_STATES:
            raise Rejected(409, f"job {job_id} is already {job['state']}", state=job["state"])
        self.store.request_cancel(job_id)
        return self._status(self._job(job_id))

    @bentoml.api(route="/jobs/list")
    @_rejections
    def list_jobs(self, state: str | None = None, limit: int = 50, offset: int = 0) -> JobList:
        """Jobs, newest first, optionally of one state."""
        if state is not None and state not in JOB_STATES:
            raise Rejected(400, f"unknown state {state!r}; states: {', '.join(JOB_STATES)}")
        if not 1 <= limit <= 1000 or offset < 0:
            raise Rejected(400, "limit must be 1..1000 and offset >= 0")
        jobs = self.store.list_jobs(state, limit, offset)
        return JobList(total=self.store.count_jobs(state), jobs=[
            JobSummary(job_id=j["id"], state=j["state"], created_at=j["created_at"],
                       finished_at=j["finished_at"], dataset=j["dataset_name"] or "digits",
                       candidates=j["candidates"], epochs=int(j["config"].get("epochs", 0)),
                       error=j["error"]) for j in jobs])

    # -- AutoML helper -------------------------------------------------------------------------------
    @bentoml.api(route="/predict")
    @_rejections
    def predict(self, trajectories: list[Trajectory], t0: int = 1, min_points: int = 3) -> PredictResponse:
        """Predicted final accuracy ± std from observed (β_eff, accuracy) per epoch; no training."""
        import math

        from ncap.capacitance.predictor import p_best, predict_final_accuracy, rank_order

        preds = []
        for i, tr in enumerate(trajectories):
            label = tr.name or f"trajectory {i}"
            if len(tr.beta_eff) != len(tr.val_accuracy):
                raise Rejected(400, f"{label}: beta_eff has {len(tr.beta_eff)} values but val_accuracy has "
                                    f"{len(tr.val_accuracy)}")
            if tr.denominators is not None and len(tr.denominators) != len(tr.beta_eff):
                raise Rejected(400, f"{label}: denominators has {len(tr.denominators)} values, expected "
                                    f"{len(tr.beta_eff)}")
            bad = [a for a in tr.val_accuracy if not (math.isfinite(a) and 0.0 <= a <= 1.0)]
            if bad:
                raise Rejected(400, f"{label}: val_accuracy must be fractions in [0, 1] (got {bad[0]}); "
                                    "divide percentages by 100")
            try:
                preds.append(predict_final_accuracy(tr.beta_eff, tr.val_accuracy, t0=t0,
                                                    denominators=tr.denominators, min_points=min_points))
            except ValueError as exc:
                raise Rejected(400, f"{label}: {exc}") from exc
        means = [p.accuracy for p in preds]
        pb = p_best(means, [p.std for p in preds])
        ranks = rank_order(means)
        return PredictResponse(predictions=[
            TrajectoryPrediction(name=tr.name or str(i), predicted_accuracy=p.accuracy, predicted_std=p.std,
                       p_best=float(pb[i]), rank=int(ranks[i]), n_points=p.n_points, method=p.method,
                       flags=list(p.flags))
            for i, (tr, p) in enumerate(zip(trajectories, preds))])

    # -- internals -----------------------------------------------------------------------------------
    def _job(self, job_id: str) -> dict:
        job = self.store.get_job(job_id) if job_id else None
        if job is None:
            raise Rejected(404, f"no job {job_id!r}")
        return job

    def _status(self, job: dict) -> JobStatus:
        cands = self.store.candidates(job["id"])
        prog = progress_summary(job, cands, time.time())
        if not cands:
            cands = [{"name": n, "state": "pending"} for n in job["candidates"]]
        items = []
        for c in cands:
            rec = CandidateRecord.model_validate(c.get("record") or {"candidate": c["name"]})
            items.append(CandidateStatus(
                name=c["name"], state=c["state"], epoch=c.get("epoch"), started_at=c.get("started_at"),
                finished_at=c.get("finished_at"), wall_time_s=c.get("wall_time"),
                predicted_accuracy=rec.predicted_accuracy, predicted_std=rec.predicted_std,
                observed_accuracy=rec.observed_accuracy, error=c.get("error")))
        return JobStatus(
            job_id=job["id"], state=job["state"], created_at=job["created_at"], started_at=job["started_at"],
            finished_at=job["finished_at"], attempts=job["attempts"], cancel_requested=job["cancel_requested"],
            dataset=job["dataset_name"] or "digits", config=job["config"], progress=Progress(**prog),
            candidates=items, error=job.get("error"), error_detail=job.get("error_detail"))


NcapService.add_asgi_middleware(GuardMiddleware, settings=SETTINGS)

__all__ = ["InsecureBindError", "JobConfig", "NcapService"]

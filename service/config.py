"""Settings of the ranking service (`ncap serve`, `bentoml serve ncap.service.api:NcapService`).

``ServiceSettings`` is a pydantic-settings ``BaseSettings``. Every setting has a default, can be set in a
TOML or JSON file named by ``NCAP_SERVICE_CONFIG`` (a flat table, or a ``[service]`` table), and can be
overridden by an environment variable ``NCAP_<FIELD>`` (``env_prefix="NCAP_"``; empty values are ignored),
which wins over the file. The bearer token is ``NCAP_TOKEN`` (or ``token`` in the file).

The BentoML worker process reads these settings when it imports ``service.api``; ``ncap serve`` passes
its options on as environment variables, so both ways of starting the server behave the same.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "NCAP_"
CONFIG_ENV = "NCAP_SERVICE_CONFIG"
DEFAULT_DATA_DIR = Path("~/.ncap/service")
# The environment that settings are read from: os.environ, or the mapping given to load_settings(env).
# pydantic-settings reads only os.environ; a context variable lets one call read another mapping
# without touching os.environ (safe across threads).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("ncap_settings_environ", default=None)


def _environ() -> Mapping[str, str]:
    environ = _ENVIRON.get()
    return os.environ if environ is None else environ


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' ``NCAP_*`` environment source, reading :func:`_environ`."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(_environ(), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class ServiceSettings(BaseSettings):
    """Service settings; see the module docstring for where they come from. Precedence, highest first:
    keyword arguments, ``NCAP_<FIELD>`` environment variables, the ``NCAP_SERVICE_CONFIG`` file, defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid")

    token: str | None = Field(None, description="The admin's bearer token, needed on every route except the health "
                              "checks; users get their own API keys (`ncap keys add`). None: loopback clients only, "
                              "each as the admin.")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Uploads, job outputs, the default database.")
    db_url: str | None = Field(
        None, description="Job store URL: 'sqlite:///abs/path.db', a plain file path, or "
        "'postgresql://user@host/db' (password from PGPASSWORD or ~/.pgpass). Default: jobs.db in data_dir.")
    allow_remote_without_token: bool = Field(
        False, description="Serve non-loopback clients when no token is configured (not recommended).")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Without a token: addresses of reverse proxies whose forwarding headers "
        "(Forwarded, X-Forwarded-For, X-Real-IP) are trusted. A request that carries such a header is refused "
        "unless this is set, and then served only when every address the headers name is loopback or a "
        "trusted proxy. With a token, the token decides and these headers are not consulted.")
    public_docs: bool = Field(False, description="Serve the OpenAPI spec (/docs.json) and BentoML's Swagger page "
                              "(/docs) without a token. The web page (/) never needs one; its data calls do.")

    # upload limits
    max_upload_mb: float = Field(200.0, gt=0, description="Largest accepted request body for /jobs/submit.")
    max_request_kb: float = Field(4096.0, gt=0, description="Largest body for every other route.")
    max_extract_mb: float = Field(1024.0, gt=0, description="Largest total uncompressed size of a zip.")
    max_members: int = Field(50_000, gt=0, description="Most members (files and folders) in an uploaded zip.")
    max_ratio: float = Field(200.0, gt=1, description="Largest compression ratio of a zip member.")
    max_data_dir_gb: float = Field(20.0, gt=0, description="Submissions are refused once data_dir (job folders "
                                   "as the disk counts them, and a SQLite job store) holds this much.")
    max_image_pixels: int = Field(40_000_000, gt=0, description="Largest image (width x height) in an uploaded "
                                  "zip; each is decoded once, alone, when the upload is checked.")

    # job config limits
    max_candidates: int = Field(8, ge=1, description="Most candidates in one job.")
    max_epochs: int = Field(50, ge=1, description="Largest 'epochs' of a job.")
    max_queued_jobs: int = Field(100, ge=1, description="Submissions are refused while this many wait.")
    max_queued_jobs_per_user: int = Field(20, ge=1, description="Jobs one user may have queued or running at "
                                          "once (an API key may set its own).")
    max_user_gb: float | None = Field(None, gt=0, description="Bytes one user's jobs may take (their folders as "
                                      "the disk counts them, plus what the job store keeps for them) until "
                                      "deleted, whatever their state. Default: max_data_dir_gb. A key may set its own.")
    max_stored_kb: float = Field(256.0, gt=0, description="Largest job config (with its pruning_report) the job "
                                 "store keeps, as JSON.")
    allow_zoo_builds: bool = Field(
        False, description="Accept zoo candidates that are not built yet (`ncap zoo list`); each is pretrained "
        "first, and its pretraining epochs count against max_epochs. Off: build them with `ncap zoo build`.")
    max_job_memory_gb: float | None = Field(
        None, gt=0, description="Per-job memory limit: a job whose estimated peak exceeds it is refused at "
        "submit, and the training process runs under it (RLIMIT_DATA). Default: 75% of the machine's memory.")
    max_trainer_restarts: int = Field(3, ge=0, le=100, description="A job whose training process dies (a signal, "
                                      "the OOM killer) is restarted this many times, reusing finished candidates.")

    # worker
    runner: str = Field("ncap.service.ranking:run_ranking", description="'module:function' that ranks.")
    train_threads: int = Field(1, ge=1, description="torch threads of the training process.")
    train_nice: int = Field(10, ge=0, le=19, description="Niceness of the training process, so that on a "
                            "busy machine the API is scheduled first.")
    cancel_grace_s: float = Field(30.0, ge=0, description="Seconds a cancelled job may take to stop.")
    poll_interval_s: float = Field(0.5, gt=0, description="How often the worker looks for work.")
    api_threads: int = Field(16, ge=1, description="Threads serving synchronous endpoints.")

    # scale-out (docs/ray.md)
    executor: Literal["local", "ray"] = Field(
        "local", description="Where a job's candidates train: 'local' one after another in the training process, "
        "'ray' each candidate as one task on the Ray cluster at ray_address (concurrently).")
    ray_address: str | None = Field(
        None, description="Ray cluster of executor 'ray': 'auto' (the cluster this machine belongs to) or "
        "HOST:PORT of its head. Required with executor 'ray'.")
    max_concurrent_jobs: int = Field(1, ge=1, le=1000, description="Jobs trained at once with executor 'ray' "
                                     "(each in its own training process); the local executor runs one at a time.")
    ray_cpus_per_candidate: float = Field(1.0, gt=0, description="Ray CPUs per candidate task (fractions allowed).")
    ray_gpus_per_candidate: float = Field(0.0, ge=0, description="Ray GPUs per candidate task (fractions allowed).")

    @field_validator("token")
    @classmethod
    def _strip_token(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        return value or None

    @model_validator(mode="after")
    def _check_ray(self) -> ServiceSettings:
        if self.executor == "ray" and not self.ray_address:
            raise ValueError("executor 'ray' needs ray_address ('auto' or HOST:PORT of a running cluster, e.g. "
                             "one started with `ray start --head --node-ip-address 127.0.0.1`)")
        if self.ray_address:
            from ncap.service.executors import check_ray_address, check_resource

            check_ray_address(self.ray_address)
            check_resource("ray_cpus_per_candidate", self.ray_cpus_per_candidate, positive=True)
            check_resource("ray_gpus_per_candidate", self.ray_gpus_per_candidate, positive=False)
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        config_file = _environ().get(CONFIG_ENV)
        file_values = _read_file(Path(config_file).expanduser()) if config_file else {}
        return init_settings, _EnvironSource(settings_cls), InitSettingsSource(settings_cls, file_values)

    @property
    def resolved_data_dir(self) -> Path:
        return Path(os.path.expanduser(str(self.data_dir))).resolve()

    @property
    def resolved_db_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.resolved_data_dir / 'jobs.db'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_kb * 1024)

    @property
    def max_extract_bytes(self) -> int:
        return int(self.max_extract_mb * 1024 * 1024)

    @property
    def max_data_dir_bytes(self) -> int:
        return int(self.max_data_dir_gb * 1024**3)

    @property
    def max_user_bytes(self) -> int:
        return int((self.max_user_gb or self.max_data_dir_gb) * 1024**3)

    @property
    def job_memory_limit_bytes(self) -> int:
        if self.max_job_memory_gb is not None:
            return int(self.max_job_memory_gb * 1024**3)
        from ncap.models.memory import default_memory_limit

        return default_memory_limit()


class SettingsError(ValueError):
    """A setting (file or environment variable) is invalid."""


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read service config {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise SettingsError(f"service config {path} is not valid {path.suffix or 'TOML'}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("service"), dict):
        data = data["service"]
    if not isinstance(data, dict):
        raise SettingsError(f"service config {path} must hold a table of settings")
    return data


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> ServiceSettings:
    """``ServiceSettings`` from the config file, then ``env`` (default ``os.environ``), then ``overrides``
    (``None`` values ignored). Invalid values raise :class:`SettingsError` naming the fields."""
    token = _ENVIRON.set(None if env is None else dict(env))
    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid service settings: {problems}") from exc
    finally:
        _ENVIRON.reset(token)


def settings_env(settings: ServiceSettings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in another process."""
    out: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)  # pydantic-settings reads complex values as JSON
        out[ENV_PREFIX + name.upper()] = str(value)
    return out


def settings_table() -> str:
    """The Markdown table of every setting (name, environment variable, default, what it does), generated
    from :class:`ServiceSettings` for docs/service.md (``python -m ncap.service.config`` prints it)."""
    rows = ["| setting | environment variable | default | what it does |", "|---|---|---|---|"]
    for name, field in ServiceSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default is None or default == [] else f"`{default}`"
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| {name} | `{ENV_PREFIX}{name.upper()}` | {shown} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())

"""Executors: where the fine-tunes of a ranking run. Each (dataset, candidate) pair is independent.

``LocalExecutor`` (the default) trains the candidates one after another in this process, exactly as
``run_ranking`` always did. ``RayExecutor`` sends each candidate to a Ray cluster as one task
(``num_cpus`` / ``num_gpus``, fractions allowed) and reports candidates as they finish.

Both take the training function from the caller (``ncap.service.ranking`` passes its ``_train_one``, the
one place that turns a candidate's exception into a failed record) and call the same hooks:
``on_candidate_start(name)``, ``on_epoch(name, epoch, metrics)``, ``on_candidate_done(record)``,
``should_stop()`` (raises :class:`~ncap.models.harness.Cancelled`).

How the dataset reaches Ray workers (once per cluster, or once per worker process, never once per task):

* in-memory images (``.npz`` read into memory, named datasets, the embedded digits): the split
  (train, val) is put into Ray's object store once (``ray.put``); every task reads it from there;
* lazy images (ImageFolder directories, zips, memory-mapped ``.npz``): the task gets the dataset's *path*
  (or name) and loads it itself, once per worker process (cached), with the same split. The path must be
  visible to every node: one machine, or a shared filesystem (NFS, a mounted bucket) on a cluster.
"""
from __future__ import annotations

import abc
import functools
import logging
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MAX_RETRIES", "EXECUTORS", "Hooks", "LocalExecutor", "RayExecutor", "TrainingData",
           "load_training_data", "make_executor"]
log = logging.getLogger("ncap.executors")
EXECUTORS = ("local", "ray")
DEFAULT_MAX_RETRIES = 3  # a task whose worker or node dies is run again this many times, then reported failed
POLL_S = 0.2  # how often the Ray driver forwards progress and polls should_stop
# Ray kills a worker idle for 1 s once the node has more workers than CPUs (the progress queue's actor counts):
# between two candidates the next one then pays a new process and torch's import (~2.4 s a task measured,
# bench/results/ray_scale.md). Idle workers are kept for a minute instead; set the same on `ray start` nodes
# (env RAY_idle_worker_killing_time_threshold_ms=60000, docs/ray.md).
KEEP_IDLE_WORKERS = {"idle_worker_killing_time_threshold_ms": 60_000}

TrainFn = Callable[..., Any]  # (spec, train, val, config, *, progress, on_epoch, should_stop) -> CandidateRecord
FailFn = Callable[[str, str, Any], Any]  # (candidate name, reason, config) -> failed CandidateRecord


@dataclass(frozen=True)
class TrainingData:
    """A dataset split as the executors need it: ``train``/``val`` ImageDatasets and the ``source`` they
    were loaded from (a path or a name; ``None`` = the embedded digits), so that a worker can load lazy
    images itself."""

    train: Any
    val: Any
    source: str | None
    val_fraction: float
    seed: int

    @property
    def lazy(self) -> bool:
        return bool(self.train.lazy or self.val.lazy)


def load_training_data(source, config) -> tuple[Any, TrainingData]:
    """``(dataset, TrainingData)``: ``load_dataset(source)`` split by ``config.val_fraction`` and ``config.seed``
    (a Recipe, or anything with those two attributes)."""
    from ncap.models.data import load_dataset, split_dataset

    ds = load_dataset(source)
    train, val = split_dataset(ds, val_fraction=config.val_fraction, seed=config.seed)
    if source is not None and Path(source).expanduser().exists():  # a worker's cwd is not ours: absolute
        source = Path(source).expanduser().resolve()
    return ds, TrainingData(train, val, None if source is None else str(source), config.val_fraction, config.seed)


@dataclass
class Hooks:
    """The callbacks of one ranking (all optional) and whether to draw progress bars."""

    on_candidate_start: Callable[[str], None] | None = None
    on_epoch: Callable[[str, float, dict], None] | None = None
    on_candidate_done: Callable[[Any], None] | None = None
    should_stop: Callable[[], bool] | None = None
    progress: bool = True

    def start(self, name: str) -> None:
        if self.on_candidate_start:
            self.on_candidate_start(name)

    def done(self, record) -> None:
        if self.on_candidate_done:
            self.on_candidate_done(record)

    def stop_requested(self) -> bool:
        return bool(self.should_stop and self.should_stop())


class Executor(abc.ABC):
    """Runs the fine-tunes of one ranking; usable as a context manager (``close`` on exit)."""

    name: str

    @abc.abstractmethod
    def run(self, specs: Sequence[Any], data: TrainingData, config, hooks: Hooks, *, train: TrainFn,
            fail: FailFn) -> dict[str, Any]:
        """Train every spec; returns ``{candidate name: record}``. ``hooks.done`` is called as each finishes."""

    def close(self) -> None:
        """Release what the executor started (nothing for the local one)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """One candidate after another in this process (the default; the same results as ever)."""

    name = "local"

    def run(self, specs, data, config, hooks, *, train, fail):
        from tqdm.auto import tqdm

        records = {}
        for spec in tqdm(specs, desc="candidates", unit="model", disable=not hooks.progress):
            hooks.start(spec.name)
            rec = train(spec, data.train, data.val, config, progress=hooks.progress, on_epoch=hooks.on_epoch,
                        should_stop=hooks.should_stop)
            records[spec.name] = rec
            hooks.done(rec)
        return records


def check_ray_address(address: str | None) -> str | None:
    """``None`` (start a local Ray on 127.0.0.1), ``auto`` (the running cluster this machine belongs to),
    ``HOST:PORT`` (a cluster's head, GCS port) or ``ray://HOST:PORT`` (Ray Client); else ``ValueError``."""
    if address is None or address == "auto":
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Ray address must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
    return address


def check_resource(name: str, value: float, *, positive: bool) -> float:
    """A per-candidate Ray resource: finite, > 0 (or >= 0), and a whole number when above 1 (Ray's rule)."""
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value:g}")
    if value > 1 and value != int(value):
        raise ValueError(f"{name} above 1 must be a whole number (Ray's rule for fractions), got {value:g}")
    return value


class RayExecutor(Executor):
    """Each candidate is one Ray task with ``num_cpus``/``num_gpus``; they run as the cluster allows.

    Faults: a task whose worker process or node dies is run again elsewhere, up to ``max_retries`` times
    (system failures only); then it is reported failed. A candidate that fails for its own reasons (NaN
    loss, bad weights) returns a failed record and is never retried (``retry_exceptions=False``). Without
    ``address``, a private local Ray is started bound to 127.0.0.1 (no dashboard) and shut down by
    :meth:`close`.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 max_retries: int = DEFAULT_MAX_RETRIES, local_cpus: int | None = None,
                 temp_dir: str | None = None):
        self.address = check_ray_address(address)
        self.num_cpus = check_resource("cpus per candidate", num_cpus, positive=True)
        self.num_gpus = check_resource("gpus per candidate", num_gpus, positive=False)
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries, self.local_cpus, self.temp_dir = int(max_retries), local_cpus, temp_dir
        self._connected = False
        self._events = None  # one progress queue per executor, shared by concurrent runs (the manifest's)
        self._inbox: dict[str, list[tuple]] = {}  # events drained for another run, by run id
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Join the cluster at ``address``, or start the private local one (no-op when Ray is initialised)."""
        import ray

        if ray.is_initialized():
            return
        if self.address is None:
            ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=self.local_cpus,
                     include_dashboard=False, _temp_dir=self.temp_dir, _system_config=KEEP_IDLE_WORKERS)
        else:
            ray.init(address=self.address)
        self._connected = True

    def _check_fits(self) -> None:
        """A candidate asking for more than the cluster has would wait forever: refuse it on the private
        local cluster (``ValueError``), warn on a real one (it may be autoscaling)."""
        import ray

        total = ray.cluster_resources()
        short = [f"{need:g} {kind}" for kind, need in (("CPU", self.num_cpus), ("GPU", self.num_gpus))
                 if need > total.get(kind, 0)]
        if short:
            msg = (f"each candidate asks for {' and '.join(short)} but the Ray cluster has {total.get('CPU', 0):g} "
                   f"CPU and {total.get('GPU', 0):g} GPU")
            if self.address is None:
                raise ValueError(msg)
            log.warning("%s: the tasks wait until such a node joins", msg)

    def close(self) -> None:
        import ray

        if self._events is not None and ray.is_initialized():
            self._events.shutdown(force=True)
        self._events = None
        if self._connected:
            ray.shutdown()
            self._connected = False

    def _queue(self):
        with self._lock:
            if self._events is None:
                self._events = _event_queue()
            return self._events

    def _drain(self, run_id: str) -> list[tuple]:
        """This run's queued (kind, candidate, epoch, metrics) events, in order; others' are kept for them."""
        with self._lock:
            n = self._events.qsize()
            for run, *event in self._events.get_nowait_batch(n) if n else []:
                self._inbox.setdefault(run, []).append(tuple(event))
            return self._inbox.pop(run_id, [])

    def run(self, specs, data, config, hooks, *, train, fail):
        import ray

        if not specs:
            return {}
        self.connect()
        self._check_fits()
        events, run_id = self._queue(), uuid.uuid4().hex
        shipped = _DataPath(data.source, data.val_fraction, data.seed) if data.lazy else ray.put((data.train, data.val))
        task = ray.remote(_candidate_task)
        threads = max(1, math.floor(self.num_cpus))
        pending = {task.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                                retry_exceptions=False, name=f"ncap:{spec.name}")
                   .remote(train, spec, shipped, config, (events, run_id), threads): spec for spec in specs}
        try:
            return self._collect(pending, run_id, config, hooks, fail)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            with self._lock:
                self._inbox.pop(run_id, None)

    def _collect(self, pending: dict, run_id: str, config, hooks: Hooks, fail: FailFn) -> dict[str, Any]:
        import ray
        from tqdm.auto import tqdm

        from ncap.models.training import Cancelled

        records: dict[str, Any] = {}
        epochs: dict[str, float] = {}
        with tqdm(total=len(pending) * config.epochs, desc="epochs", unit="epoch", disable=not hooks.progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                _forward(self._drain(run_id), hooks, epochs)  # a task's events are queued before it returns
                bar.n = round(sum(epochs.values()), 2)
                bar.refresh()
                for ref in ready:
                    spec = pending.pop(ref)
                    records[spec.name] = self._result(ref, spec.name, config, fail)
                    hooks.done(records[spec.name])
                if pending and hooks.stop_requested():
                    raise Cancelled(f"cancelled with {len(pending)} candidate(s) running on Ray")
        return records

    def _result(self, ref, name: str, config, fail: FailFn):
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised outside training (its data): the job's problem
            raise exc.as_instanceof_cause() from None
        except ray.exceptions.RayError as exc:  # the worker or node died on every attempt
            log.error("candidate %s: Ray worker lost %d time(s): %s", name, self.max_retries + 1, exc)
            return fail(name, f"its Ray worker was lost {self.max_retries + 1} time(s) ({type(exc).__name__})", config)


def make_executor(name: str = "local", **options) -> Executor:
    """``local`` or ``ray`` (``options`` go to :class:`RayExecutor`); ``ValueError`` for anything else."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(**options)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")


# ----------------------------------------------------------------------------------------- Ray plumbing
def _event_queue():
    """A Ray queue for progress events, pinned to the driver's node (it must outlive any worker node)."""
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})


def _forward(events: list[tuple], hooks: Hooks, epochs: dict[str, float]) -> None:
    """Pass (kind, candidate, epoch, metrics) events on to the hooks, in order."""
    for kind, name, epoch, metrics in events:
        epochs[name] = epoch
        if kind == "start":
            hooks.start(name)
        elif hooks.on_epoch:
            hooks.on_epoch(name, epoch, metrics)


@dataclass(frozen=True)
class _DataPath:
    """Lazy data shipped by reference: the worker loads ``source`` itself (see the module docstring)."""

    source: str | None
    val_fraction: float
    seed: int


@functools.lru_cache(maxsize=2)  # once per worker process and dataset, not once per task
def _worker_data(path: _DataPath) -> TrainingData:
    return load_training_data(path.source, path)[1]


def _candidate_task(train: TrainFn, spec, data, config, channel: tuple, threads: int):
    """Body of one Ray task: fine-tune ``spec`` and return its record; progress goes to ``channel``, a
    (queue, run id) pair."""
    import torch

    events, run_id = channel
    torch.set_num_threads(threads)
    if isinstance(data, _DataPath):
        data = _worker_data(data)
        data = (data.train, data.val)
    train_set, val_set = data
    events.put((run_id, "start", spec.name, 0.0, {}))

    def on_epoch(name: str, epoch: float, metrics: dict) -> None:
        events.put((run_id, "epoch", name, float(epoch), dict(metrics or {})))

    return train(spec, train_set, val_set, config, progress=False, on_epoch=on_epoch, should_stop=None)

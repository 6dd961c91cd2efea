"""Cached activations of a frozen trunk (``Recipe.trainable`` = ``top`` or ``probe``), on disk.

The frozen part of a candidate (:mod:`ncap.models.partial`) runs once per image and view, in eval mode, at
the candidate's input size; its output is written as float16 to ``$NCAP_CACHE/activations/<key>/``::

    activations.npy   (V, N, *shape) float16, memory-mapped when read; view-major, so each view is
                      written as one sequential pass over the N images
    entry.json        the key's parts, the shape and the file's byte size; written last

The key hashes everything the activations depend on: the frozen weights (:func:`~ncap.models.partial.
frozen_digest`: names, shapes and bytes of every frozen parameter and buffer), the transform (timm's
transform ``repr``: sizes, crop, interpolation, mean/std, augmentation), the model's input channels, the
number of views, and the images (:meth:`~ncap.models.data.ImageDataset.fingerprint`: every image's bytes
and label, in order). Any change gives another entry, so a stale one is never read. Entries are shared by
runs and by candidates with the same frozen part.

Views: ``views`` passes over the images with the (augmenting) training transform, each pass with its own
seed (``VIEW_SEED + v``, whatever the run's seed, so every run on the same images shares them); an epoch
then reads one view per image, drawn at random (:class:`CachedBatches`). Validation images get one view
through the eval transform.

The trunk runs on channels_last batches (so does the top, in the harness): on CPU that is 1.8x faster.

Crash safety: an entry is built in a hidden ``.tmp-*`` folder and renamed into place only once its data
are flushed and ``entry.json`` is written, so a killed build (kill -9) leaves only a ``.tmp-*`` folder that
is never read and is removed by the next build. An entry whose file size differs from its record (a
truncated file) is rebuilt.

Size: :func:`entry_bytes` estimates an entry before it is built. ``max_bytes`` bounds the whole cache: older
entries (by last use) are removed to make room, an entry larger than the bound is refused with
:class:`CacheError`, and so is one that does not fit the free disk space. Reading memory-maps the file and
drops the touched pages after each epoch, so the process's memory stays flat in the number of images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import mmap
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ncap.models.paths import cache_root

__all__ = ["CACHE_VERSION", "ActivationCache", "CacheError", "CachedBatches", "cache_dir", "cached_activations",
           "entry_bytes"]

log = logging.getLogger(__name__)
CACHE_VERSION = 1
VIEW_SEED = 1000  # view v of every entry is drawn with the loader seed VIEW_SEED + v
DISK_MARGIN = 512 * 1024**2  # free space left on the disk after an entry is written
DTYPE = np.float16


class CacheError(RuntimeError):
    """The activation cache cannot hold an entry (bound or disk space); the message says what to change."""


def cache_dir() -> Path:
    """``$NCAP_CACHE/activations``."""
    return cache_root() / "activations"


def entry_bytes(shape: tuple[int, ...], n_images: int, views: int, dtype=DTYPE) -> int:
    """Bytes of one entry's data: ``views × n_images`` activations of ``shape`` (float16 by default)."""
    return int(views * n_images * math.prod(shape) * np.dtype(dtype).itemsize)


@dataclass
class ActivationCache:
    """One entry: ``data`` (V, N, *shape) float16 (read-only memory map) and where it lives."""

    path: Path
    data: np.ndarray
    reused: bool  # True when the entry existed before this run asked for it
    build_cpu_s: float = 0.0  # CPU seconds of the process that built it (recorded in entry.json)

    @property
    def views(self) -> int:
        return int(self.data.shape[0])

    def __len__(self) -> int:
        return int(self.data.shape[1])

    def release_pages(self) -> None:
        """Drop the pages of the map this process has touched (they stay in the OS page cache)."""
        mm = getattr(self.data, "_mmap", None) or getattr(getattr(self.data, "base", None), "_mmap", None)
        if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _open_entry(path: Path, parts: dict) -> tuple[np.ndarray, dict] | None:
    """The entry's memory map and record, or None when it is missing, from another key or damaged (then
    removed)."""
    record = path / "entry.json"
    if not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text())
        file = path / "activations.npy"
        if meta.get("parts") != parts or file.stat().st_size != meta["file_bytes"]:
            raise ValueError(f"size {file.stat().st_size} B, recorded {meta.get('file_bytes')} B")
        data = np.load(file, mmap_mode="r")
        if list(data.shape) != meta["shape"] or data.dtype.name != parts["dtype"]:
            raise ValueError(f"shape {data.shape} {data.dtype}, recorded {meta['shape']}")
    except (OSError, ValueError, KeyError) as exc:
        log.warning("activation cache entry %s is damaged (%s): rebuilding it", path.name, exc)
        shutil.rmtree(path, ignore_errors=True)
        return None
    os.utime(record)  # last use, for the bound's eviction order
    return data, meta


def _remove_stale_builds(root: Path) -> None:
    """Remove ``.tmp-*`` folders of builds whose process is gone (killed mid-build)."""
    for tmp in root.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[2])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def _entries_by_age(root: Path) -> list[tuple[float, int, Path]]:
    out = []
    for record in root.glob("*/entry.json"):
        try:
            out.append((record.stat().st_mtime, json.loads(record.read_text())["file_bytes"], record.parent))
        except (OSError, ValueError, KeyError):
            continue
    return sorted(out)


def _make_room(root: Path, need: int, max_bytes: int) -> None:
    """Evict the least recently used entries until ``need`` more bytes fit ``max_bytes``; check the disk."""
    if need > max_bytes:
        raise CacheError(f"this activation cache entry needs {need / 1024**3:.2f} GB, more than the cache's bound of "
                         f"{max_bytes / 1024**3:.2f} GB (activation_cache_gb); raise the bound or lower cached_views")
    entries = _entries_by_age(root)
    used = sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if used + need <= max_bytes:
            break
        log.info("activation cache: evicting %s (%.2f GB, least recently used)", path.name, size / 1024**3)
        shutil.rmtree(path, ignore_errors=True)
        used -= size
    free = shutil.disk_usage(root).free
    if need + DISK_MARGIN > free:
        raise CacheError(f"this activation cache entry needs {need / 1024**3:.2f} GB but {root} has "
                         f"{free / 1024**3:.2f} GB free; free disk space or set NCAP_CACHE elsewhere")


def _write_entry(tmp: Path, shape: tuple, views: int, n: int, passes: Callable[[int], Iterator[np.ndarray]],
                 parts: dict, cpu_start: float) -> None:
    """Write ``views`` sequential passes of activations, flush them, then ``entry.json``."""
    file = tmp / "activations.npy"
    dtype = np.dtype(parts["dtype"])
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (views, n, *shape)}
    with open(file, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for v in range(views):
            written = 0
            for chunk in passes(v):
                f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
                written += len(chunk)
            if written != n:
                raise RuntimeError(f"view {v} produced {written} activations for {n} images")
        f.flush()
        os.fsync(f.fileno())
    meta = {"version": CACHE_VERSION, "parts": parts, "shape": [views, n, *shape],
            "file_bytes": file.stat().st_size, "created": time.time(), "build_cpu_s": time.process_time() - cpu_start}
    (tmp / "entry.json").write_text(json.dumps(meta, indent=1))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """4-D batches in channels_last layout: on CPU, timm's CNNs run 1.8x faster so (measured: EfficientNet-Lite2's
    trunk 43 → 24 ms per image, its top's training step 21 → 11 ms, 2 cores)."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def cached_activations(trunk: torch.nn.Module, ds, transform, channels: int, *, views: int, frozen: str,
                       device: torch.device, batch_size: int = 64, num_workers: int = 0,
                       max_bytes: int | None = None, progress: bool = False, desc: str = "cache",
                       dtype=DTYPE) -> ActivationCache:
    """The cache entry of ``trunk`` on ``ds`` (a :class:`~ncap.models.data.ImageDataset`) through
    ``transform``: reused when it exists and is whole, else built (module docstring).

    ``frozen`` is the trunk's weight digest; ``max_bytes`` bounds the whole cache (None: no bound); ``dtype``
    float16 (what ranking uses) or float32 (exact; tests).
    """
    from ncap.models.data import make_loader
    from ncap.models.training import to_device

    parts = {"version": CACHE_VERSION, "frozen": frozen, "transform": repr(transform), "channels": int(channels),
             "views": int(views), "images": ds.fingerprint(), "dtype": np.dtype(dtype).name}
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / _key(parts)
    opened = _open_entry(path, parts)
    if opened is not None:
        return ActivationCache(path, opened[0], reused=True, build_cpu_s=opened[1].get("build_cpu_s", 0.0))
    cpu_start = time.process_time()
    _remove_stale_builds(root)
    first = make_loader(ds, transform, channels, batch_size=1, seed=VIEW_SEED, num_workers=0)
    with torch.no_grad():
        x0 = next(iter(first))[0][:1]
        shape = tuple(int(s) for s in trunk(_channels_last(to_device(x0, device))).shape[1:])
    need = entry_bytes(shape, len(ds), views, dtype)
    if max_bytes is not None:
        _make_room(root, need, max_bytes)
    bar = tqdm(total=views * len(ds), desc=f"{desc}: caching", unit="img", disable=not progress, leave=False)

    def one_pass(v: int) -> Iterator[np.ndarray]:
        loader = make_loader(ds, transform, channels, batch_size=batch_size, seed=VIEW_SEED + v,
                             num_workers=num_workers)
        with torch.no_grad():
            for x, _ in loader:
                out = trunk(_channels_last(to_device(x, device))).float().cpu().numpy()
                bar.update(len(out))
                yield out

    tmp = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_entry(tmp, shape, views, len(ds), one_pass, parts, cpu_start)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished the same entry first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    opened = _open_entry(path, parts)
    if opened is None:
        raise CacheError(f"activation cache entry {path} could not be read back after it was written")
    return ActivationCache(path, opened[0], reused=False, build_cpu_s=opened[1].get("build_cpu_s", 0.0))


class CachedBatches:
    """Batches ``(x (B, *shape) float32, y (B,) int64)`` read from an :class:`ActivationCache`, a DataLoader
    stand-in for :func:`ncap.models.training.train` and ``evaluate_accuracy``.

    Feature maps come in channels_last layout (:func:`_channels_last`). ``order`` (default: 0..N-1) is the image
    order when not shuffling. With ``shuffle``, each pass draws a new
    order and, per image, one of the entry's views, from a generator seeded with ``seed``; otherwise view 0.
    """

    def __init__(self, cache: ActivationCache, labels: np.ndarray, *, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, order: np.ndarray | None = None):
        if len(labels) != len(cache):
            raise ValueError(f"{len(labels)} labels for {len(cache)} cached images")
        self.cache, self.labels, self.batch_size = cache, np.asarray(labels, dtype=np.int64), int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.order = np.arange(len(cache)) if order is None else np.asarray(order, dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = self.rng.permutation(self.order)
            views = self.rng.integers(0, self.cache.views, size=len(order))
        else:
            order, views = self.order, np.zeros(len(self.order), dtype=np.int64)
        try:
            for b in range(len(self)):
                idx, v = order[b * self.batch_size:(b + 1) * self.batch_size], views[b * self.batch_size:(b + 1) * self.batch_size]
                x = _channels_last(torch.from_numpy(self.cache.data[v, idx].astype(np.float32)))
                yield x, torch.from_numpy(self.labels[idx])
        finally:
            self.cache.release_pages()

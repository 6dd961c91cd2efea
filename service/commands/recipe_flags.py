"""Command-line flags generated from :class:`ncap.models.recipe.Recipe`, so that none is missing and each
has the recipe's type, default, bounds (in its help) and help text. Field ``probe_width`` becomes
``--probe-width``; booleans become ``--x/--no-x``; a nullable field takes ``none``; the choices of a
``Literal`` field or of a registry (``Choices``: the ranking rules) are listed in the help as the parser is
built."""
from __future__ import annotations

import argparse
import re
import types
import typing

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from ncap.models.recipe import Choices, Duration, Exposure, Recipe, exposed_fields

__all__ = ["add_recipe_flags", "parse_duration", "recipe_from_args", "validation_message"]
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _base_type(annotation) -> tuple[type | None, tuple | None, bool]:
    """(scalar type, Literal choices, nullable) of a field annotation."""
    args = typing.get_args(annotation)
    nullable = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    if nullable:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return str, typing.get_args(annotation), nullable
    return annotation, None, nullable


def _parse_as(kind: type, nullable: bool):
    nulls = ({"none", "null"} | ({"0"} if kind is int else set())) if nullable else set()

    def parse(text: str):
        return None if text.strip().lower() in nulls else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float | None:
    """Seconds of ``90``, ``90s``, ``30m``, ``1.5h``, ``1h30m``; ``none`` = None. ``argparse.ArgumentTypeError``
    (argparse prints its message) otherwise."""
    text = text.strip().lower()
    if text in ("none", "null"):
        return None
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 30m, 1h30m)")
    h, m, sec = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + sec


parse_duration.__name__ = "duration"  # argparse names the type in its error messages


def _choices(info: FieldInfo) -> Choices | None:
    """The field's :class:`~ncap.models.recipe.Choices` marker (choices read from a registry), if any."""
    return next((m for m in info.metadata if isinstance(m, Choices)), None)


def _help(info: FieldInfo) -> str:
    bounds = [f"{sym} {getattr(m, key):{'g' if isinstance(getattr(m, key), float) else ''}}"
              for m in info.metadata for key, sym in _BOUNDS if getattr(m, key, None) is not None]
    text = info.description or ""
    if marker := _choices(info):  # the registry as it is now: a rule registered after import is listed
        text = marker.describe(text)
    text = text.replace("%", "%%")  # argparse expands %-formats in help strings
    return text + (f" ({', '.join(bounds)})" if bounds else "") + " [default: %(default)s]"


def add_recipe_flags(parser: argparse.ArgumentParser, *exposures: Exposure) -> None:
    """One flag per recipe field exposed to ``exposures`` (default: JOB and CLI fields)."""
    group = parser.add_argument_group("recipe (the same for every candidate)")
    for name, info in exposed_fields(*(exposures or (Exposure.JOB, Exposure.CLI))).items():
        kind, choices, nullable = _base_type(info.annotation)  # a registry's choices: in the help (_help)
        flag = "--" + name.replace("_", "-")
        kwargs = {"dest": name, "default": info.default, "help": _help(info)}
        if any(isinstance(m, Duration) for m in info.metadata):  # time_budget_s -> --time-budget 30m
            group.add_argument(flag.removesuffix("-s"), type=parse_duration, metavar="DURATION", **kwargs)
        elif kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind in (int, float, str):
            meta = "N" if kind is int else ("X" if kind is float else None)
            if choices:  # validated by the recipe, so a bad value gets the same message as everywhere else
                kwargs["help"] = f"one of {', '.join(choices)}: " + kwargs["help"]
            group.add_argument(flag, type=_parse_as(kind, nullable), metavar=meta or "NAME", **kwargs)
        else:  # pragma: no cover - a new field type needs a rule here
            raise TypeError(f"no command-line rule for recipe field {name}: {info.annotation}")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe the parsed flags describe; raises ``ValueError`` with :func:`validation_message`."""
    values = {name: getattr(args, name) for name in Recipe.model_fields if hasattr(args, name)}
    try:
        return Recipe(**values)
    except ValidationError as exc:
        raise ValueError(validation_message(exc, flags=True)) from None


def validation_message(exc: ValidationError, flags: bool = False) -> str:
    """One line per problem: ``--probe-width: Input should be less than or equal to 8192 (got 9000)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if flags and loc:
            loc = "--" + loc.replace("_", "-")
        lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
    return "; ".join(lines)

"""One JSON sanitiser for every document ncap writes (reports, ranking records, the job store).

``to_jsonable(obj)`` returns a copy made only of dict/list/str/int/float/bool/None that ``json.dumps``
writes as strict JSON (``allow_nan=False``). It is pydantic-core's ``to_jsonable_python`` with
``inf_nan_mode="null"`` (NaN and ±inf → ``None``; tuples and sets → lists; dict keys, paths, enums,
dataclasses handled) plus a fallback for what pydantic does not know:

- numpy scalars and arrays, torch tensors (anything with ``tolist``/``item``) → Python numbers/lists
  (their NaN → ``None`` too);
- other objects → their public attributes (``vars``), or ``str(obj)`` when they have none.

It also works as the hook of ``json.dumps(obj, default=to_jsonable)``.

``write_json(path, doc)`` is the one atomic writer of JSON files: the text goes to a temporary file of this
process next to ``path``, then replaces ``path`` in one rename, so a reader (or a restart after kill -9) sees
the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

__all__ = ["to_jsonable", "write_json"]


def _fallback(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


def to_jsonable(obj: Any) -> Any:
    """JSON-safe copy of ``obj`` (NaN/inf → None, numpy → Python); see the module docstring."""
    return to_jsonable_python(obj, inf_nan_mode="null", fallback=_fallback)


def write_json(path: str | os.PathLike, doc: Any, **dumps_kwargs) -> Path:
    """Write ``doc`` (an object for ``json.dumps(doc, **dumps_kwargs)``, or JSON text) to ``path`` atomically
    (module docstring); parent folders are created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc, **dumps_kwargs))
    os.replace(tmp, path)
    return path

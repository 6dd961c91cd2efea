"""Where ncap caches what it builds: one root, ``$NCAP_CACHE`` (default ``~/.cache/ncap``).

The zoo keeps its pretrained weights under ``cache_root() / "zoo"``, the benchmark its runs under
``cache_root() / "bench"``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$NCAP_CACHE``, or ``~/.cache/ncap`` when it is not set."""
    return Path(os.environ.get("NCAP_CACHE", Path.home() / ".cache" / "ncap"))

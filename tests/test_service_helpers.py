"""Helpers for the service tests (no tests here): a real `ncap serve` subprocess on 127.0.0.1 with a small
HTTP client (``ncap.service.measurements.live_server.LiveServer``), and builders for good and bad dataset uploads."""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from ncap.service.measurements.live_server import LiveServer, free_port  # noqa: F401 - free_port re-exported for tests

ROOT = Path(__file__).resolve().parents[1]
NCAP = [sys.executable, "-m", "ncap.service.cli"]
FAST_CANDIDATES = ["mobilenetv3_small_050=random", "resnet10t=random"]  # ~5 s and ~9 s for 2 epochs
Server = LiveServer  # `ncap serve` on 127.0.0.1 (ncap.service.measurements.live_server), shared with the benchmarks


# -------------------------------------------------------------------------------------- dataset files
def png_bytes(value: int, size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_folder_zip(n_per_class: int = 6) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("cats", "dogs"):
            for i in range(n_per_class):
                zf.writestr(f"pets/{cls}/{i}.png", png_bytes(int(rng.integers(0, 255))))
    return buf.getvalue()


def zip_with(members: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("ok/a.png", png_bytes(1))
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def symlink_zip() -> bytes:
    info = zipfile.ZipInfo("ok/link.png")
    info.external_attr = (0o120777 << 16)
    return zip_with([(info, b"/etc/passwd")])


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()

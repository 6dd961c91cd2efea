"""Safe extraction of uploaded ``.zip`` image datasets.

The web service calls :func:`safe_extract_zip` on untrusted uploads, so every member is checked before
anything is written, and the size limits are enforced again while streaming (header sizes are not trusted):

* path traversal: ``..`` components, absolute paths, drive letters (``C:``), backslashes, NUL bytes;
* symbolic links (Unix mode ``S_IFLNK`` in the external attributes), encrypted members, duplicate names;
* decompression bombs: total uncompressed size above ``max_total_bytes``, a member whose
  uncompressed/compressed ratio exceeds ``max_ratio`` (only checked for members larger than
  ``ratio_min_bytes``: tiny files legitimately compress very well), more than ``max_members`` entries;
* non-image members: anything whose suffix is not in ``allowed_suffixes`` (``None`` allows every suffix),
  except the usual OS clutter (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``), which is
  skipped, not extracted;
* corrupt or non-zip files, and CRC errors found while extracting.

Every problem raises :class:`ArchiveError` (a :class:`DataError`, itself a ``ValueError``) whose message
names the archive, the member and the problem. ``DataError`` lives here, not in ``models.data``, so that
this module needs nothing but the standard library; ``models.data`` re-exports it.
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path, PurePosixPath

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_BYTES",
    "DEFAULT_RATIO_MIN_BYTES",
    "IMAGE_SUFFIXES",
    "ArchiveError",
    "DataError",
    "check_zip",
    "error_text",
    "is_ignored_member",
    "safe_extract_zip",
]


class DataError(ValueError):
    """A dataset (file, folder, archive or array) cannot be used; the message names it and the problem."""


class ArchiveError(DataError):
    """A zip archive is corrupt or unsafe; the message names the archive, the member and the problem."""


#: Suffixes (lower case) accepted as images, all readable by Pillow.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)

DEFAULT_MAX_TOTAL_BYTES = 2 * 1024**3  # 2 GiB uncompressed in total
DEFAULT_MAX_MEMBERS = 200_000
DEFAULT_MAX_RATIO = 200.0  # deflate tops out near 1030:1; real image files are far below 200:1
DEFAULT_RATIO_MIN_BYTES = 1024**2  # the ratio check applies to members above 1 MiB uncompressed
MAX_NAME_BYTES = 255  # the longest file name Linux file systems take (NAME_MAX)
MAX_DEPTH = 32  # folders deep; an ImageFolder needs 2

_IGNORED_BASENAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_CHUNK = 1 << 20


def is_ignored_member(name: str) -> bool:
    """OS clutter that is skipped silently: anything under ``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if not parts:
        return False
    if parts[0] == "__MACOSX":
        return True
    return parts[-1].lower() in _IGNORED_BASENAMES or parts[-1].startswith("._")


def error_text(exc: BaseException) -> str:
    """An exception's message without file paths: an ``OSError``'s text names the path it failed on (on a
    server, the data dir), so it is reduced to its ``strerror``."""
    if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _unsafe_path_reason(name: str) -> str | None:
    if "\x00" in name:
        return "NUL byte in member name"
    if "\\" in name:
        return "backslash in member name (Windows-style path)"
    if name.startswith("/"):
        return "absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return "drive letter in member name"
    if any(p == ".." for p in name.split("/")):
        return "path traversal ('..' component)"
    if not name.strip("/"):
        return "empty member name"
    parts = [p for p in name.split("/") if p]
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        return f"a file or folder name longer than {MAX_NAME_BYTES} bytes"
    if len(parts) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} folders"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return stat.S_ISLNK(mode)


def _open_zip(path: Path, shown: str) -> zipfile.ZipFile:
    if not path.exists():
        raise ArchiveError(f"{shown}: archive not found")
    if not path.is_file():
        raise ArchiveError(f"{shown}: not a file")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{shown}: corrupt or not a zip archive ({exc})") from exc
    except OSError as exc:  # strerror only: the full error text holds the path
        raise ArchiveError(f"{shown}: cannot read zip archive ({error_text(exc)})") from exc
    except (ValueError, NotImplementedError, EOFError) as exc:
        raise ArchiveError(f"{shown}: cannot read zip archive ({exc})") from exc


def _check_member_entry(info: zipfile.ZipInfo, shown: str) -> None:
    """Refuse a member whose name escapes the extraction folder, a symbolic link or an encrypted member."""
    reason = _unsafe_path_reason(info.filename)
    if reason:
        raise ArchiveError(f"{shown}: member {info.filename!r}: {reason}")
    if _is_symlink(info):
        raise ArchiveError(f"{shown}: member {info.filename!r}: symbolic link not allowed")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{shown}: member {info.filename!r}: encrypted members are not supported")


def _check_member_content(info: zipfile.ZipInfo, shown: str, *, allowed: set[str] | None, max_ratio: float,
                          ratio_min_bytes: int) -> None:
    """Refuse a file member of a suffix not ``allowed`` or compressed more than ``max_ratio`` : 1."""
    name = info.filename
    suffix = PurePosixPath(name).suffix.lower()
    if allowed is not None and suffix not in allowed:
        raise ArchiveError(
            f"{shown}: member {name!r}: not an image file (suffix {suffix or '<none>'!r}; "
            f"allowed: {', '.join(sorted(allowed))})"
        )
    if info.file_size > ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > max_ratio:
            raise ArchiveError(
                f"{shown}: member {name!r}: compression ratio {ratio:.0f}:1 exceeds max_ratio={max_ratio:g} "
                "(possible decompression bomb)"
            )


def _check_members(
    zf: zipfile.ZipFile,
    shown: str,
    *,
    max_total_bytes: int,
    max_members: int,
    max_ratio: float,
    ratio_min_bytes: int,
    allowed_suffixes: Collection[str] | None,
) -> list[zipfile.ZipInfo]:
    try:
        infos = zf.infolist()
    except Exception as exc:  # pragma: no cover - infolist is read at open time
        raise ArchiveError(f"{shown}: corrupt zip directory ({exc})") from exc
    if len(infos) > max_members:
        raise ArchiveError(f"{shown}: too many members ({len(infos)} > max_members={max_members})")
    allowed = None if allowed_suffixes is None else {s.lower() for s in allowed_suffixes}
    seen: set[str] = set()
    files: set[str] = set()
    total = 0
    keep: list[zipfile.ZipInfo] = []
    for info in infos:
        name = info.filename
        _check_member_entry(info, shown)
        key = name.rstrip("/")
        if key in seen:
            raise ArchiveError(f"{shown}: member {name!r}: duplicate member name")
        seen.add(key)
        if info.is_dir():
            keep.append(info)
            continue
        files.add(key)
        if is_ignored_member(name):
            continue
        _check_member_content(info, shown, allowed=allowed, max_ratio=max_ratio, ratio_min_bytes=ratio_min_bytes)
        total += info.file_size
        if total > max_total_bytes:
            raise ArchiveError(
                f"{shown}: member {name!r}: total uncompressed size exceeds max_total_bytes={max_total_bytes} "
                "(possible decompression bomb)"
            )
        keep.append(info)
    for info in keep:  # 'a/x.png' and 'a/x.png/y.png': a name cannot be a file and a folder at once
        parents = PurePosixPath(info.filename.rstrip("/")).parents
        clash = next((str(p) for p in parents if str(p) in files), None)
        if clash is not None:
            raise ArchiveError(f"{shown}: member {info.filename!r}: {clash!r} is a file, so it cannot be a folder")
    return keep


def check_zip(
    path: str | os.PathLike,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    ratio_min_bytes: int = DEFAULT_RATIO_MIN_BYTES,
    allowed_suffixes: Collection[str] | None = IMAGE_SUFFIXES,
    label: str | None = None,
) -> list[str]:
    """Validate a zip archive from its central directory without extracting anything.

    Returns the names of the members that :func:`safe_extract_zip` would write (directories included,
    ignored OS clutter excluded). Raises :class:`ArchiveError` on the first problem; messages name the
    archive by ``label`` (e.g. the client's file name) when given, else by its path. Header sizes can lie;
    :func:`safe_extract_zip` enforces the limits again on the decompressed bytes.
    """
    path = Path(path)
    shown = label or str(path)
    with _open_zip(path, shown) as zf:
        infos = _check_members(
            zf, shown, max_total_bytes=max_total_bytes, max_members=max_members, max_ratio=max_ratio,
            ratio_min_bytes=ratio_min_bytes, allowed_suffixes=allowed_suffixes,
        )
    return [i.filename for i in infos]


def safe_extract_zip(
    path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
    ratio_min_bytes: int = DEFAULT_RATIO_MIN_BYTES,
    allowed_suffixes: Collection[str] | None = IMAGE_SUFFIXES,
    label: str | None = None,
) -> Path:
    """Check, then extract a zip archive into ``dest`` (created if missing; must be empty) and return it.

    Files are written with default permissions (the archive's modes are ignored), never followed through
    links, and the decompressed byte counts are checked while streaming against the per-member header size,
    ``max_ratio`` and ``max_total_bytes``. On any error, everything extracted so far is removed and
    :class:`ArchiveError` is raised.
    """
    path = Path(path)
    shown = label or str(path)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ArchiveError(f"{shown}: extraction target {dest} must be a new or empty directory")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with _open_zip(path, shown) as zf:
            infos = _check_members(
                zf, shown, max_total_bytes=max_total_bytes, max_members=max_members, max_ratio=max_ratio,
                ratio_min_bytes=ratio_min_bytes, allowed_suffixes=allowed_suffixes,
            )
            total = 0
            for info in infos:
                try:
                    total = _extract_member(zf, info, root, shown, total, max_total_bytes=max_total_bytes,
                                            max_ratio=max_ratio, ratio_min_bytes=ratio_min_bytes)
                except ArchiveError:
                    raise
                except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
                    raise ArchiveError(f"{shown}: member {info.filename!r}: corrupt data ({exc})") from exc
                except OSError as exc:  # strerror only: the full error text holds the server's path
                    raise ArchiveError(f"{shown}: member {info.filename!r}: cannot extract "
                                       f"({error_text(exc)})") from exc
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return dest


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, shown: str, total: int, *,
                    max_total_bytes: int, max_ratio: float, ratio_min_bytes: int) -> int:
    """Write one checked member under ``root``, enforcing the limits on the decompressed bytes; returns the
    running total of bytes written."""
    target = (root / info.filename).resolve()
    if target != root and root not in target.parents:
        raise ArchiveError(f"{shown}: member {info.filename!r}: path escapes the extraction directory")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return total
    written = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            total += len(chunk)
            if written > info.file_size:
                raise ArchiveError(f"{shown}: member {info.filename!r}: decompresses to more bytes than its "
                                   f"header declares ({info.file_size})")
            if written > ratio_min_bytes and written / max(info.compress_size, 1) > max_ratio:
                raise ArchiveError(f"{shown}: member {info.filename!r}: compression ratio exceeds "
                                   f"max_ratio={max_ratio:g} (possible decompression bomb)")
            if total > max_total_bytes:
                raise ArchiveError(f"{shown}: member {info.filename!r}: total uncompressed size exceeds "
                                   f"max_total_bytes={max_total_bytes} (possible decompression bomb)")
            out.write(chunk)
    return total

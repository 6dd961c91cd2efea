"""Safe zip extraction: valid archives extract, every attack is refused with a named member and reason."""
from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from ncap.models.archive import (
    IMAGE_SUFFIXES,
    ArchiveError,
    DataError,
    check_zip,
    safe_extract_zip,
)


def _png_bytes(color: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes] | list[tuple[zipfile.ZipInfo | str, bytes]],
         compression=zipfile.ZIP_DEFLATED) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in items:
            zf.writestr(name, data)
    return path


def test_valid_archive_extracts_and_skips_clutter(tmp_path):
    z = _zip(tmp_path / "ok.zip", {
        "data/cat/a.png": _png_bytes(1),
        "data/dog/b.PNG": _png_bytes(2),
        "__MACOSX/data/._a.png": b"junk",
        "data/.DS_Store": b"junk",
        "data/dog/Thumbs.db": b"junk",
    })
    names = check_zip(z)
    assert "data/cat/a.png" in names and not any("MACOSX" in n or "DS_Store" in n for n in names)
    out = safe_extract_zip(z, tmp_path / "out")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["data/cat/a.png", "data/dog/b.PNG"]
    assert (out / "data/cat/a.png").read_bytes() == _png_bytes(1)


def test_error_types():
    assert issubclass(ArchiveError, DataError) and issubclass(DataError, ValueError)
    assert ".png" in IMAGE_SUFFIXES and ".jpg" in IMAGE_SUFFIXES


@pytest.mark.parametrize("name, reason", [
    ("../evil.png", "traversal"),
    ("data/../../evil.png", "traversal"),
    ("/etc/evil.png", "absolute"),
    ("C:/evil.png", "drive letter"),
    ("data\\..\\evil.png", "backslash"),
])
def test_path_attacks_rejected(tmp_path, name, reason):
    z = _zip(tmp_path / "bad.zip", {"ok/a.png": _png_bytes(), name: _png_bytes()})
    for call in (lambda: check_zip(z), lambda: safe_extract_zip(z, tmp_path / "out")):
        with pytest.raises(ArchiveError) as ei:
            call()
        msg = str(ei.value)
        assert str(z) in msg and repr(name) in msg and reason in msg
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.png").exists()


def test_symlink_member_rejected(tmp_path):
    info = zipfile.ZipInfo("data/cat/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "link.zip", [("data/cat/a.png", _png_bytes()), (info, b"/etc/passwd")])
    with pytest.raises(ArchiveError, match=r"link\.png.*symbolic link") as ei:
        safe_extract_zip(z, tmp_path / "out")
    assert str(z) in str(ei.value)
    assert not (tmp_path / "out").exists()


def test_high_ratio_bomb_rejected(tmp_path):
    z = _zip(tmp_path / "bomb.zip", {"data/a/bomb.png": b"\0" * (4 << 20), "data/b/x.png": _png_bytes()})
    with pytest.raises(ArchiveError, match=r"bomb\.png.*compression ratio.*max_ratio"):
        check_zip(z)
    with pytest.raises(ArchiveError, match="decompression bomb"):
        safe_extract_zip(z, tmp_path / "out")
    # the limit is overridable
    out = safe_extract_zip(z, tmp_path / "out2", max_ratio=1e6)
    assert (out / "data/a/bomb.png").stat().st_size == 4 << 20


def test_total_size_limit(tmp_path):
    z = _zip(tmp_path / "big.zip", {f"d/c/{i}.png": bytes(range(256)) * 4 for i in range(3)},
             compression=zipfile.ZIP_STORED)
    with pytest.raises(ArchiveError, match=r"'d/c/1\.png'.*total uncompressed size exceeds max_total_bytes=2000"):
        safe_extract_zip(z, tmp_path / "out", max_total_bytes=2000)
    assert not (tmp_path / "out").exists()
    safe_extract_zip(z, tmp_path / "ok", max_total_bytes=4000)


def test_too_many_members(tmp_path):
    z = _zip(tmp_path / "many.zip", {f"d/c/{i}.png": _png_bytes() for i in range(5)})
    with pytest.raises(ArchiveError, match=r"many\.zip: too many members \(5 > max_members=3\)"):
        check_zip(z, max_members=3)


@pytest.mark.parametrize("name", ["data/cat/run.sh", "data/readme.txt", "data/cat/noext"])
def test_non_image_member_rejected(tmp_path, name):
    z = _zip(tmp_path / "mixed.zip", {"data/cat/a.png": _png_bytes(), name: b"#!/bin/sh\n"})
    with pytest.raises(ArchiveError) as ei:
        safe_extract_zip(z, tmp_path / "out")
    assert repr(name) in str(ei.value) and "not an image" in str(ei.value)
    # allowed_suffixes=None lets anything through
    safe_extract_zip(z, tmp_path / "out2", allowed_suffixes=None)


def test_duplicate_member_rejected(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = _zip(tmp_path / "dup.zip", [("d/c/a.png", _png_bytes(1)), ("d/c/a.png", _png_bytes(2))])
    with pytest.raises(ArchiveError, match="duplicate"):
        check_zip(z)


def test_not_a_zip_and_truncated(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ArchiveError, match=r"junk\.zip: corrupt or not a zip"):
        check_zip(junk)
    good = _zip(tmp_path / "good.zip", {f"d/c/{i}.png": _png_bytes(i) for i in range(4)})
    trunc = tmp_path / "trunc.zip"
    trunc.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ArchiveError, match=r"trunc\.zip"):
        safe_extract_zip(trunc, tmp_path / "out")
    with pytest.raises(ArchiveError, match="not found"):
        check_zip(tmp_path / "missing.zip")


def test_corrupt_member_data_and_lying_header(tmp_path):
    payload = bytes(range(256)) * 8
    z = _zip(tmp_path / "crc.zip", {"d/c/a.png": payload}, compression=zipfile.ZIP_STORED)
    raw = bytearray(z.read_bytes())
    i = raw.index(payload)
    raw[i + 100] ^= 0xFF  # flip a data byte: CRC mismatch
    z.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=r"'d/c/a\.png': corrupt data"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    # central directory claims a smaller uncompressed size than the data really has
    z2 = _zip(tmp_path / "lie.zip", {"d/c/a.png": payload}, compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(z2.read_bytes())
    cd = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, 10)
    z2.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=r"'d/c/a\.png'"):
        safe_extract_zip(z2, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_dest_must_be_empty_and_is_cleaned_on_failure(tmp_path):
    z = _zip(tmp_path / "ok.zip", {"d/c/a.png": _png_bytes()})
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("x")
    with pytest.raises(ArchiveError, match="new or empty directory"):
        safe_extract_zip(z, dest)
    assert (dest / "keep.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    payload = bytes(range(256)) * 4
    bad = _zip(tmp_path / "bad.zip", [("d/c/a.png", _png_bytes()), ("d/c/b.png", payload)],
               compression=zipfile.ZIP_STORED)
    raw = bytearray(bad.read_bytes())
    raw[raw.index(payload) + 5] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=r"'d/c/b\.png': corrupt data"):
        safe_extract_zip(bad, empty)
    assert empty.exists() and not any(empty.iterdir())

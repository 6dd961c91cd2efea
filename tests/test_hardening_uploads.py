"""Issue 13, defects 5 and 7: uploads are checked in bounded memory (``models.upload_checks``), every bad file
is a ``DataError`` (a 4xx at the service), and what the checks accept the loader loads.

The reference is the dataset loader itself (``models.data.load_dataset``). The loaders are fuzzed with
hypothesis: random ``.npy`` headers inside ``.npz`` files, truncated archives, random image folders."""
from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ncap.models.archive import DataError, safe_extract_zip
from ncap.models.data import load_dataset
from ncap.models.upload_checks import check_image_folder, check_npz, read_npz_headers
from ncap.service.measurements.api_fuzz import npz_payloads, zip_payloads

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _npy_header_only(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_zero_d_images_and_huge_declared_shapes_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="rank 0"):
        check_npz(_npz(tmp_path / "a.npz", x=np.array(3.0), y=np.arange(2)), label="a.npz")
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as zf:  # declares 23 TiB of float32, holds 16 bytes
        zf.writestr("x.npy", _npy_header_only((10**11, 8, 8)) + b"\0" * 16)
        zf.writestr("y.npy", _npy_header_only((10**11,), "<i8") + b"\0" * 16)
    tracemalloc.start()
    with pytest.raises(DataError, match=r"declares shape \(100000000000, 8, 8\).*holds 16 bytes"):
        check_npz(huge, label="huge.npz")
    assert tracemalloc.get_traced_memory()[1] < 1 << 20  # nothing near the declared size was allocated
    tracemalloc.stop()


def test_npz_is_checked_in_bounded_memory(tmp_path):
    x = np.random.default_rng(0).random((2500, 64, 64), dtype=np.float32)  # 41 MB of float32 in [0, 1)
    path = _npz(tmp_path / "big.npz", x=x, y=np.arange(2500) % 5)
    del x
    tracemalloc.start()
    summary = check_npz(path, label="big.npz", chunk_bytes=4 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (summary.n_images, summary.image_shape, summary.class_counts) == (2500, (1, 64, 64), (500,) * 5)
    assert peak < 12 << 20, f"peak {peak / 2**20:.1f} MiB while checking a 41 MB array"


CASES = [  # (arrays, words of the error or None when valid)
    ({"x": np.zeros((6, 8, 8, 3), np.uint8), "y": np.arange(6) % 2}, None),
    ({"x": np.full((6, 3, 8, 8), 200.0), "y": np.array(list("ababab"))}, None),
    ({"x": np.zeros((6, 8, 8), np.float32), "y": (np.arange(6) % 3).astype(float).reshape(6, 1)}, None),
    ({"x": np.zeros((6, 8, 8)), "y": np.arange(6) % 2, "class_names": np.array(["cat", "dog"])}, None),
    ({"x": np.full((6, 8, 8), np.nan), "y": np.arange(6) % 2}, "NaN"),
    ({"x": np.full((6, 8, 8), 300.0), "y": np.arange(6) % 2}, "[0, 1] or [0, 255]"),
    ({"x": np.zeros((6, 8, 8)), "y": np.zeros(6)}, "one class"),
    ({"x": np.zeros((6, 8, 8)), "y": np.arange(5) % 2}, "mismatched lengths"),
    ({"x": np.zeros((6, 8, 8, 7)), "y": np.arange(6) % 2}, "channel axis"),
    ({"x": np.zeros((6, 8, 8)), "y": np.arange(6) % 2 + 0.5}, "non-integer"),
    ({"x": np.zeros((6, 8, 8), complex), "y": np.arange(6) % 2}, "numeric"),
    ({"x": np.zeros((6, 8, 8)), "y": np.arange(6) % 3, "class_names": np.array(["a", "b"])}, "class_names"),
    ({"images": np.zeros((6, 8, 8)), "y": np.arange(6) % 2}, "missing array"),
    ({"x": np.array([{"a": 1}] * 6, dtype=object), "y": np.arange(6) % 2}, "object arrays"),
]


@pytest.mark.parametrize("arrays,words", CASES, ids=[str(i) for i in range(len(CASES))])
def test_npz_checks_agree_with_the_loader(tmp_path, arrays, words):
    path = tmp_path / "d.npz"
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    if words is None:
        summary = check_npz(path, label="d.npz")
        ds = load_dataset(path)
        assert (summary.n_images, summary.n_classes, summary.image_shape) == (len(ds), ds.num_classes,
                                                                               tuple(ds.image_shape))
    else:
        with pytest.raises(DataError, match=None) as exc:
            check_npz(path, label="d.npz")
        assert words in str(exc.value) and str(tmp_path) not in str(exc.value)
        with pytest.raises(DataError):
            load_dataset(path)


@FUZZ
@given(data=npz_payloads())
def test_fuzz_npz_checks_raise_only_data_errors_and_accept_what_the_loader_loads(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz") / "f.npz"
    path.write_bytes(data)
    try:
        summary = check_npz(path, label="f.npz")
    except DataError:
        return
    ds = load_dataset(path)  # accepted uploads never fail later in the trainer
    assert (len(ds), ds.num_classes) == (summary.n_images, summary.n_classes)


@FUZZ
@given(data=npz_payloads())
def test_fuzz_npz_headers_are_read_without_loading(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("hdr") / "f.npz"
    path.write_bytes(data)
    try:
        headers = read_npz_headers(path, label="f.npz")
    except DataError:
        return
    for h in headers.values():
        assert h.declared_bytes == h.data_bytes


@FUZZ
@given(data=zip_payloads())
def test_fuzz_zips_extract_and_check_or_raise_data_errors(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("zip")
    (tmp / "f.zip").write_bytes(data)
    try:
        folder = safe_extract_zip(tmp / "f.zip", tmp / "out", label="f.zip")
        summary = check_image_folder(folder, label="f.zip")
    except DataError as exc:
        assert str(tmp) not in str(exc)
        return
    ds = load_dataset(folder)
    assert (len(ds), ds.num_classes) == (summary.n_images, summary.n_classes)


def test_image_folder_check_refuses_huge_and_broken_images(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / cls / f"{i}.png")
    assert check_image_folder(tmp_path, label="d.zip").image_shape == (1, 10, 10)
    with pytest.raises(DataError, match=r"'a/0.png' has 10x10 pixels, more than the limit of 50"):
        check_image_folder(tmp_path, label="d.zip", max_pixels=50)
    (tmp_path / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match=r"d.zip: unreadable image 'b/1.png'"):
        check_image_folder(tmp_path, label="d.zip")
    (tmp_path / "b" / "1.png").write_bytes(b"not an image")  # PIL's own message names the file's full path
    with pytest.raises(DataError, match=r"unreadable image 'b/1.png' \(UnidentifiedImageError: .*'b/1.png'") as err:
        check_image_folder(tmp_path, label="d.zip")
    assert str(tmp_path) not in str(err.value)  # the server's folders never reach the user

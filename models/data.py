"""Labelled image datasets: loading, validation, splitting, and streaming them to a candidate per batch.

Sources accepted by :func:`load_dataset`:

* ``None`` or ``"digits"``: scikit-learn's bundled ``load_digits`` (1 797 gray 8×8 images, 10 classes,
  values 0-16 scaled by 1/16, held as float32). Other named datasets (``mnist5k``, ``elpv``,
  ``animal-mnist``; see :mod:`ncap.models.named_datasets`) are read from installed packages and held as
  their read-only uint8 arrays (``max_value`` 255). None needs a network.
* ``.npz`` with arrays ``x`` and ``y``. ``x`` is **memory-mapped, never loaded**: a member stored
  uncompressed (``np.savez``) is mapped in place at its offset inside the zip; a compressed member
  (``np.savez_compressed``) is decompressed once, in bounded chunks, into a temporary ``.npy`` file that is
  mapped and removed with the dataset. ``x`` is (N, H, W) gray or (N, H, W, C) channels-last with C in
  {1, 3, 4} (alpha is dropped); (N, C, H, W) with C in {1, 3, 4} is accepted when the last axis cannot be
  a channel axis. Scale: uint8 and bool are used as they are; other arrays are scanned once in chunks:
  values in [0, 1] mean [0, 1], otherwise values in [0, 255] mean /255; anything else (or NaN/inf) is an
  error. ``y`` holds integers or strings; the sorted distinct values become the classes (relabelled
  0..K-1, names ``str(value)``). An optional ``class_names`` array names integer labels 0..K-1. Object
  arrays are refused (no pickle).
* An ImageFolder directory: one subfolder per class (sorted names), image files (see
  ``archive.IMAGE_SUFFIXES``) anywhere below each class folder; hidden files/folders and OS clutter are
  skipped, other files are ignored. If the directory holds a single visible subfolder that itself holds
  the class folders, it is descended into. **Only the file list is kept**: a header pass (Pillow reads no
  pixels) checks every image is readable and finds one mode, ``L`` when all are grayscale, otherwise
  ``RGB``, and the most common size (ties: the size met first in sorted file order); pixels are decoded
  one image at a time when a batch needs them.
* A ``.zip`` of such a folder (optionally under one top-level folder), checked and extracted by
  :func:`models.archive.safe_extract_zip` into a temporary directory that lives as long as the dataset.

Streaming to a candidate (:func:`candidate_transforms`, :func:`make_loader`): each image is turned into a
PIL image in the candidate's mode (gray → RGB when the stem expects 3 channels, RGB → L for 1-channel
stems) and through timm's transform for the candidate's data config (``resolve_data_config``,
``create_transform``) at its native input size unless a size is given; training uses timm's training
transform with light augmentation, evaluation timm's eval transform (resize, centre crop by ``crop_pct``).
A torch ``DataLoader`` with workers decodes per batch, so peak memory does not grow with the number of
images of a folder, zip or ``.npz``.

All problems raise :class:`DataError` (a ``ValueError``) naming the file/member and the problem.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ncap.models.archive import ArchiveError, DataError
from ncap.models.named_datasets import NAMED, load_named_arrays
from ncap.models.upload_checks import GRAY_MODES, image_folder_files, unreadable_image

__all__ = [
    "LIGHT_AUGMENTATION",
    "NAMED_DATASETS",
    "ArchiveError",
    "DataError",
    "FileImages",
    "ImageDataset",
    "LazyImages",
    "MappedImages",
    "TransformedImages",
    "candidate_transforms",
    "data_fingerprint",
    "load_dataset",
    "make_loader",
    "missing_dataset_error",
    "prepare_batch",
    "resolve_num_workers",
    "sample_per_class",
    "split_dataset",
    "subset_classes",
]

NAMED_DATASETS: dict[str, str] = {name: entry.description for name, entry in NAMED.items()}
#: timm training-transform arguments of the "light" augmentation: random resized crops keeping 80-100 % of the
#: image area at aspect ratios 0.9-1.1 (timm's ImageNet default, 8-100 % and 3/4-4/3, is far too strong for a
#: few epochs: on digits, crops keeping 50 % cost 14 points of accuracy after 4 epochs), no flips (digits,
#: text and many defect images are not mirror-symmetric; flips cost 60 points on digits), no colour jitter.
LIGHT_AUGMENTATION: dict[str, Any] = {"scale": (0.8, 1.0), "ratio": (0.9, 1 / 0.9), "hflip": 0.0, "color_jitter": None}


# ------------------------------------------------------------------------------------ lazy image arrays


class LazyImages(abc.ABC):
    """An (N, C, H, W) uint8-or-numeric image array read one image at a time, never held whole.

    Subclasses keep their source and an index array; :meth:`take` selects a subset without reading
    anything; ``x[i]`` reads image ``i`` as a (C, H, W) array; ``np.asarray(x)`` reads them all (only for
    small sets: the pruning experiment, tests).
    """

    indices: np.ndarray

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.indices), *self.image_shape)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} reads one image per index; use take() for subsets")
        return self.read(int(i))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.stack([self[i] for i in range(len(self))]) if len(self) else np.empty(self.shape, self.dtype)
        return out if dtype is None else out.astype(dtype)

    @abc.abstractmethod
    def take(self, indices: Sequence[int] | np.ndarray) -> LazyImages:
        """The images at ``indices`` of this view, as a view of the same kind (nothing is read)."""

    @abc.abstractmethod
    def read(self, i: int) -> np.ndarray:
        """Image at position ``i`` of this view, (C, H, W)."""


class FileImages(LazyImages):
    """Image files decoded on demand.

    ``image(i)`` is the decoded file in ``mode`` at its own size (what the streaming pipeline uses);
    ``x[i]`` is the same image resized (Pillow bilinear) to the common ``size`` (H, W), as a (C, H, W) uint8
    array. ``owner`` keeps an extracted zip's temporary directory alive as long as any view needs it.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, paths: Sequence[Path], mode: str, size: tuple[int, int], *, label: str,
                 base: Path, indices: np.ndarray | None = None, owner: object | None = None):
        self.paths, self.mode, self.size, self.label, self.base, self.owner = tuple(paths), mode, size, label, base, owner
        self.indices = np.arange(len(self.paths)) if indices is None else np.asarray(indices, dtype=np.int64)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.size)

    def take(self, indices) -> FileImages:
        return FileImages(self.paths, self.mode, self.size, label=self.label, base=self.base,
                          indices=self.indices[np.asarray(indices, dtype=np.int64)], owner=self.owner)

    def image(self, i: int):
        """Image ``i`` decoded and converted to ``mode`` (native size), a PIL image."""
        from PIL import Image

        path = self.paths[int(self.indices[i])]
        try:
            with Image.open(path) as im:
                return im.convert(self.mode)
        except Exception as exc:  # UnidentifiedImageError, OSError (truncated), DecompressionBombError, ...
            raise unreadable_image(self.label, Path(self.base), Path(path), exc) from exc

    def read(self, i: int) -> np.ndarray:
        from PIL import Image

        img = self.image(i)
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8).reshape(h, w, -1).transpose(2, 0, 1)


class MappedImages(LazyImages):
    """A view of a memory-mapped (N, C, H, W) array (possibly strided: channels-last files are viewed, not
    copied); ``x[i]`` copies one image out of the map. ``owner`` keeps a temporary file alive."""

    def __init__(self, array: np.ndarray, indices: np.ndarray | None = None, owner: object | None = None):
        self.array, self.owner = array, owner
        self.indices = np.arange(len(array)) if indices is None else np.asarray(indices, dtype=np.int64)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    def take(self, indices) -> MappedImages:
        return MappedImages(self.array, self.indices[np.asarray(indices, dtype=np.int64)], self.owner)

    def read(self, i: int) -> np.ndarray:
        return np.array(self.array[int(self.indices[i])])


# ---------------------------------------------------------------------------------------------- dataset


@dataclass
class ImageDataset:
    """Images ``x`` (N, C, H, W), labels ``y`` int64 (N,) in 0..K-1, K = len(class_names).

    ``x`` is an in-memory array or a :class:`LazyImages` (files, memory map) read per image. Pixel values
    lie in [0, ``max_value``], which means [0, 1]; ``max_value`` defaults to 255 for uint8 (and lazy)
    images and 1.0 otherwise. In-memory arrays other than uint8 are converted to float32, as before.

    ``__post_init__`` raises :class:`DataError` (naming ``source``) on a wrong rank, mismatched lengths, an
    empty set, NaN/inf or values outside [0, max_value] (in-memory arrays; lazy ones are checked by their
    loader), labels outside 0..K-1, duplicate class names, or fewer than two classes.
    """

    x: np.ndarray | LazyImages
    y: np.ndarray
    class_names: list[str]
    source: str = "<array>"
    max_value: float | None = None

    def __post_init__(self) -> None:
        src = self.source
        lazy = isinstance(self.x, LazyImages)
        x = self.x if lazy else np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim != 4:
            raise DataError(f"{src}: images must have shape (N, C, H, W), got rank {x.ndim} {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{src}: labels must have shape (N,), got {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{src}: mismatched lengths: {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{src}: empty dataset (no images)")
        if min(x.shape[1:]) < 1:
            raise DataError(f"{src}: bad image shape {x.shape[1:]}")
        if self.max_value is None:
            self.max_value = 255.0 if x.dtype == np.uint8 else 1.0
        if not lazy:
            x = self._checked_array(x)
        self.x, self.y, self.class_names = x, self._checked_labels(y), self._checked_names()

    def _checked_array(self, x: np.ndarray) -> np.ndarray:
        src, top = self.source, float(self.max_value)
        if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
            raise DataError(f"{src}: images must be numeric, got dtype {x.dtype}")
        if x.dtype != np.uint8:
            x = x.astype(np.float32, copy=False)
            if not np.isfinite(x).all():
                raise DataError(f"{src}: images contain NaN or inf values")
        elif top >= 255:
            return x
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > top:
            raise DataError(f"{src}: image values must lie in [0, {top:g}], got [{lo:g}, {hi:g}]")
        return x

    def _checked_labels(self, y: np.ndarray) -> np.ndarray:
        src = self.source
        if not (np.issubdtype(y.dtype, np.integer) or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
            raise DataError(f"{src}: labels must be integers 0..K-1, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        k = len(self.class_names)
        if y.min() < 0 or y.max() >= k:
            raise DataError(f"{src}: labels must lie in 0..{k - 1}, got [{y.min()}, {y.max()}]")
        return y

    def _checked_names(self) -> list[str]:
        names = [str(c) for c in self.class_names]
        if len(set(names)) != len(names):
            raise DataError(f"{self.source}: duplicate class names {names}")
        if len(names) < 2:
            raise DataError(f"{self.source}: only one class ({names}); classification needs at least two")
        return names

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) (for files: the common size)."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    @property
    def lazy(self) -> bool:
        """True when images are read per batch (files, memory maps), False when they are in memory."""
        return isinstance(self.x, LazyImages)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.num_classes)

    def select(self, indices: Sequence[int] | np.ndarray, source: str | None = None) -> ImageDataset:
        """A new dataset with the given sample indices (same classes; empty classes may remain). Lazy images
        stay lazy (an index view), in-memory ones are copied."""
        idx = np.asarray(indices, dtype=np.int64)
        x = self.x.take(idx) if isinstance(self.x, LazyImages) else self.x[idx]
        return ImageDataset(x, self.y[idx], list(self.class_names), source or self.source, self.max_value)

    def fingerprint(self) -> str:
        """SHA-256 of the labels, the class names, the value scale and every image's bytes in order (a file's
        own bytes for image files), read one image at a time: any changed, added, removed or reordered image
        changes it."""
        h = hashlib.sha256(json.dumps([self.class_names, float(self.max_value)]).encode())
        h.update(np.ascontiguousarray(self.y).tobytes())
        x = self.x
        for i in range(len(self)):
            if isinstance(x, FileImages):
                h.update(Path(x.paths[int(x.indices[i])]).read_bytes())
            else:
                a = np.ascontiguousarray(x[i])
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    def float_images(self) -> np.ndarray:
        """Every image as float32 (N, C, H, W) in [0, 1], in memory: only for small sets (pruning, tests)."""
        return np.asarray(self.x, dtype=np.float32) / np.float32(self.max_value)

    def pil_image(self, i: int):
        """Image ``i`` as an 8-bit PIL image (``L`` or ``RGB``; alpha dropped), at its stored size."""
        from PIL import Image

        if isinstance(self.x, FileImages):
            return self.x.image(i)
        a = np.asarray(self.x[i])
        if a.dtype != np.uint8 or self.max_value != 255:
            a = np.clip(np.rint(a.astype(np.float32) * np.float32(255.0 / self.max_value)), 0, 255).astype(np.uint8)
        if a.shape[0] == 1:
            return Image.fromarray(a[0], "L")
        if a.shape[0] in (3, 4):
            return Image.fromarray(np.ascontiguousarray(a[:3].transpose(1, 2, 0)), "RGB")
        raise DataError(f"{self.source}: cannot show {a.shape[0]}-channel images as pictures (need 1, 3 or 4)")

    def __repr__(self) -> str:
        kind = type(self.x).__name__ if self.lazy else f"array {self.x.dtype}"
        return (f"ImageDataset(n={len(self)}, shape={self.image_shape}, classes={self.num_classes}, {kind}, "
                f"source={self.source!r})")


# --------------------------------------------------------------------------------------------- loaders


def load_dataset(source: str | os.PathLike | None = None, *, image_size: int | tuple[int, int] | None = None
                 ) -> ImageDataset:
    """Load a labelled image dataset (see the module docstring for the accepted sources).

    ``image_size`` (int or (H, W)) sets the common size that ``x[i]`` of a folder/zip resizes to (the
    streaming pipeline resizes per candidate anyway); it is ignored for named datasets and ``.npz``.
    """
    if source is None:
        return _load_named("digits")
    if isinstance(source, str) and source in NAMED_DATASETS and not Path(source).exists():
        return _load_named(source)
    path = Path(source).expanduser()
    size = _norm_size(image_size)
    if not path.exists():
        raise missing_dataset_error(source)
    if path.is_dir():
        return _load_folder(path, source_label=str(path), image_size=size)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".zip" or zipfile.is_zipfile(path):
        return _load_zip(path, image_size=size)
    raise DataError(f"{path}: unsupported dataset file (expected a .npz, a .zip or an ImageFolder directory)")


def missing_dataset_error(source: str | os.PathLike, files: bool = True) -> DataError:
    """The one error for a dataset that is neither a file, a folder nor a named dataset: a bare name (no
    folder, no suffix) gets the known named datasets and the closest of them; a path gets "no such file".
    ``files=False``: where only named datasets are taken (the service), the same words without the file."""
    import difflib

    text = str(source)
    if not files or isinstance(source, str) and "/" not in text and "\\" not in text and not Path(text).suffix:
        known = ", ".join(f"{k} ({v})" for k, v in NAMED_DATASETS.items())
        close = difflib.get_close_matches(text, list(NAMED_DATASETS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = "no such file or directory, and not a named dataset" if files else "not a named dataset"
        return DataError(f"unknown dataset {text!r}: {where}; {hint}known named datasets: {known}")
    return DataError(f"{Path(source).expanduser()}: no such file or directory")


def _norm_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"bad image_size {size}")
    return h, w


# named ---------------------------------------------------------------------------------------------------


def _load_named(name: str) -> ImageDataset:
    """A named dataset (:mod:`ncap.models.named_datasets`, cached there as read-only uint8). 8-bit data is
    used as it is; ``digits`` (values 0-16) becomes float32 in [0, 1], 0.5 MB, as before."""
    x, y, classes, max_value = load_named_arrays(name)
    if max_value == 255:
        return ImageDataset(x, y.copy(), list(classes), name, 255.0)
    return ImageDataset(x.astype(np.float32) / np.float32(max_value), y.copy(), list(classes), name)


# npz -----------------------------------------------------------------------------------------------------


def _labels_to_index(y: np.ndarray, src: str) -> tuple[np.ndarray, list[str]]:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{src}: labels 'y' must have shape (N,), got {y.shape}")
    if y.dtype.kind in "US":
        y = y.astype(str)
    elif y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{src}: labels 'y' contain NaN or inf")
        if not np.all(y == np.round(y)):
            raise DataError(f"{src}: labels 'y' are non-integer floats")
        y = y.astype(np.int64)
    elif y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise DataError(f"{src}: labels 'y' must be integers or strings, got dtype {y.dtype}")
    values, index = np.unique(y, return_inverse=True)
    return index.astype(np.int64).reshape(-1), [str(v) for v in values]


def _value_scale(x: np.ndarray, src: str) -> float:
    """The value meaning 1.0 of images ``x``, from one pass over them in chunks of ~16 M values."""
    if x.dtype == np.uint8:
        return 255.0
    if x.dtype == np.bool_:
        return 1.0
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{src}: images 'x' must be numeric, got dtype {x.dtype}")
    lo, hi = np.inf, -np.inf
    step = max(1, (1 << 24) // max(1, int(np.prod(x.shape[1:]))))
    for i in range(0, len(x), step):
        chunk = np.asarray(x[i:i + step], dtype=np.float64)
        if not np.isfinite(chunk).all():
            raise DataError(f"{src}: images 'x' contain NaN or inf values")
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if lo >= 0.0 and hi <= 1.0:
        return 1.0
    if lo >= 0.0 and hi <= 255.0:
        return 255.0
    raise DataError(f"{src}: image values must lie in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]")


def _to_nchw(x: np.ndarray, src: str) -> np.ndarray:
    """A view (never a copy) of ``x`` as (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4):
            x = np.moveaxis(x, -1, 1)
        elif x.shape[1] not in (1, 3, 4):
            raise DataError(f"{src}: cannot find the channel axis of images 'x' with shape {x.shape} "
                            "(expected (N, H, W, C) with C in 1, 3, 4)")
        if x.shape[1] == 4:  # RGBA: drop alpha
            x = x[:, :3]
        return x
    raise DataError(f"{src}: images 'x' must have rank 3 (N, H, W) or 4 (N, H, W, C), got rank {x.ndim} {x.shape}")


def _map_stored_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npy`` member in place; None when its header version needs numpy's
    private reader (then it is copied out like a compressed member)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = struct.unpack(zipfile.structFileHeader, f.read(zipfile.sizeFileHeader))
        name_len, extra_len = local[10], local[11]  # zipfile.structFileHeader: filename and extra lengths
        data_start = info.header_offset + zipfile.sizeFileHeader + name_len + extra_len
        f.seek(data_start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if info.file_size != offset - data_start + nbytes:
        raise DataError(f"{path}: member {info.filename!r} is truncated or inconsistent with its header")
    if nbytes == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _map_member(path: Path, zf: zipfile.ZipFile, name: str) -> tuple[np.ndarray, tempfile.TemporaryDirectory | None]:
    """Array ``name`` of an npz, memory-mapped: in place when stored, else decompressed (streamed in 256 KiB
    chunks) into a temporary ``.npy`` that is mapped; returns (array, owner of the temporary file)."""
    info = zf.getinfo(f"{name}.npy")
    if info.flag_bits & 0x1:
        raise DataError(f"{path}: member {info.filename!r} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        mapped = _map_stored_member(path, info)
        if mapped is not None:
            return mapped, None
    scratch = tempfile.TemporaryDirectory(prefix="ncap-npz-")  # removed when the dataset is collected
    dest = Path(scratch.name) / f"{name}.npy"
    with zf.open(info) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 18)
    return np.load(dest, mmap_mode="r", allow_pickle=False), scratch


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, object]:
    src = str(path)
    if not zipfile.is_zipfile(path):
        raise DataError(f"{src}: corrupt or not a .npz file (expected a zip of .npy arrays from np.savez)")
    try:
        with np.load(path, allow_pickle=False) as npz, zipfile.ZipFile(path) as zf:
            keys = list(npz.keys())
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(f"{src}: missing array(s) {missing} (found: {keys or 'none'}); "
                                "save with np.savez(path, x=images, y=labels)")
            y = npz["y"]
            names = npz["class_names"] if "class_names" in keys else None
            x, owner = _map_member(path, zf, "x")
    except DataError:
        raise
    except ValueError as exc:  # object arrays need pickle
        raise DataError(f"{src}: cannot read arrays ({exc}); object arrays are not accepted, use numeric or "
                        "fixed-width string arrays") from exc
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataError(f"{src}: corrupt or unreadable .npz file ({exc})") from exc
    return x, y, names, owner


def _load_npz(path: Path) -> ImageDataset:
    """An ``.npz`` whose images stay in the file (memory-mapped) and are read per image."""
    src = str(path)
    x, y, names, owner = _read_npz(path)
    if len(x) != len(y):
        raise DataError(f"{src}: mismatched lengths: 'x' has {len(x)} images but 'y' has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{src}: empty dataset (no images)")
    x = _to_nchw(x, src)
    max_value = _value_scale(x, src)
    labels, class_names = _labels_to_index(np.asarray(y), src)
    if names is not None and np.asarray(y).dtype.kind in "iu":
        names = [str(n) for n in np.asarray(names).reshape(-1)]
        raw = np.unique(np.asarray(y))
        if raw.min() < 0 or raw.max() >= len(names):
            raise DataError(f"{src}: 'class_names' has {len(names)} entries but labels reach {raw.max()}")
        class_names = [names[int(v)] for v in raw]
    if len(class_names) < 2:
        raise DataError(f"{src}: only one class ({class_names[0]!r}); classification needs at least two")
    return ImageDataset(MappedImages(x, owner=owner), labels, class_names, src, max_value)


# folders and zips ---------------------------------------------------------------------------------------


def _scan_headers(paths: list[Path], source_label: str, base: Path) -> tuple[str, tuple[int, int]]:
    """One pass over the file headers (Pillow reads no pixels here): the common mode and (H, W)."""
    from PIL import Image

    sizes: Counter = Counter()
    all_gray = True
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes[im.size] += 1
                all_gray &= im.mode in GRAY_MODES
        except Exception as exc:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
            raise unreadable_image(source_label, Path(base), Path(p), exc) from exc
    w, h = sizes.most_common(1)[0][0]
    return ("L" if all_gray else "RGB"), (h, w)


def _load_folder(path: Path, *, source_label: str, image_size: tuple[int, int] | None,
                 member_base: Path | None = None, owner: object | None = None) -> ImageDataset:
    base = member_base or path
    classes, files = image_folder_files(path, source_label)
    paths, labels = [f for f, _ in files], np.asarray([k for _, k in files], dtype=np.int64)
    mode, size = _scan_headers(paths, source_label, base)
    images = FileImages(paths, mode, image_size or size, label=source_label, base=base, owner=owner)
    return ImageDataset(images, labels, classes, source_label, 255.0)


def _load_zip(path: Path, *, image_size: tuple[int, int] | None, **limits) -> ImageDataset:
    """A zip of an ImageFolder, extracted (checked) into a temporary directory owned by the dataset."""
    from ncap.models.archive import safe_extract_zip

    tmp = tempfile.TemporaryDirectory(prefix="ncap-zip-")  # removed when the dataset is collected
    dest = Path(tmp.name) / "x"
    try:
        safe_extract_zip(path, dest, **limits)
        return _load_folder(dest, source_label=str(path), image_size=image_size, member_base=dest, owner=tmp)
    except BaseException:
        tmp.cleanup()
        raise


# ------------------------------------------------------------------------------------ splits and subsets


def data_fingerprint(source: str | os.PathLike | None) -> str:
    """A short identity of a dataset source without loading it: a named dataset's name; a file's SHA-256; a
    folder's SHA-256 over every file's relative path, size and modification time. A rerun that finds another
    fingerprint retrains instead of reusing records of other data."""
    import hashlib

    if source is None or (isinstance(source, str) and source in NAMED_DATASETS and not Path(source).exists()):
        return f"named:{source or 'digits'}"
    path = Path(source).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return f"file:{digest.hexdigest()[:16]}"
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"folder:{digest.hexdigest()[:16]}"


def split_problem(class_counts: Sequence[int], class_names: Sequence[str], val_fraction: float) -> str | None:
    """Why a dataset with these per-class image counts cannot be split into training and validation parts
    that both hold every class (:func:`split_dataset`'s rule), or None. The service asks it at upload time."""
    counts = np.asarray(class_counts)
    small = [str(class_names[k]) for k in np.flatnonzero(counts < 2)]
    if small:
        return f"classes {small} have fewer than 2 samples; cannot split them into train and validation"
    n, k = int(counts.sum()), len(counts)
    n_val = int(np.ceil(val_fraction * n))
    if n_val < k or n - n_val < k:
        return f"a {val_fraction:g} validation split of {n} samples cannot hold all {k} classes in both parts"
    return None


def split_dataset(ds: ImageDataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Deterministic stratified split (sklearn ``train_test_split``); every class lands in both parts.

    Raises :class:`DataError` if a class has fewer than two samples or the validation part would be too
    small (or too large) to hold every class.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    problem = split_problem(ds.class_counts(), ds.class_names, val_fraction)
    if problem:
        raise DataError(f"{ds.source}: {problem}")
    n = len(ds)
    n_val = int(np.ceil(val_fraction * n))
    idx = np.arange(n)
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=ds.y)
    tr, va = np.sort(tr), np.sort(va)
    return ds.select(tr, f"{ds.source}[train]"), ds.select(va, f"{ds.source}[val]")


def subset_classes(ds: ImageDataset, classes: Sequence[str | int]) -> ImageDataset:
    """Keep only the given classes (names or indices), relabelled 0..K-1 in the order given."""
    ids: list[int] = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < ds.num_classes:
                raise DataError(f"{ds.source}: class index {c} out of range 0..{ds.num_classes - 1}")
            ids.append(int(c))
        else:
            if str(c) not in ds.class_names:
                raise DataError(f"{ds.source}: unknown class {c!r}; classes are {ds.class_names}")
            ids.append(ds.class_names.index(str(c)))
    if len(set(ids)) != len(ids):
        raise DataError(f"{ds.source}: duplicate classes in {list(classes)}")
    remap = np.full(ds.num_classes, -1, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    keep = np.flatnonzero(remap[ds.y] >= 0)
    names = [ds.class_names[i] for i in ids]
    kept = ds.select(keep)
    return ImageDataset(kept.x, remap[ds.y[keep]], names, f"{ds.source}{{{','.join(names)}}}", ds.max_value)


def sample_per_class(ds: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """At most ``n`` samples per class, chosen with a seeded RNG (original order kept)."""
    rng = np.random.default_rng(seed)
    keep = []
    for k in range(ds.num_classes):
        idx = np.flatnonzero(ds.y == k)
        keep.append(idx if len(idx) <= n else rng.choice(idx, size=n, replace=False))
    return ds.select(np.sort(np.concatenate(keep)), f"{ds.source}[{n}/class]")


# ---------------------------------------------------------------------------------- streaming to a model


def candidate_transforms(data_config: dict, *, image_size: int | None = None, augmentation: str = "light"
                         ) -> tuple[Callable, Callable, tuple[int, int, int]]:
    """(training transform, eval transform, input size (C, H, W)) of a candidate, from timm.

    ``data_config`` is the candidate's timm data config (``resolve_data_config``: ``input_size``, ``mean``,
    ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``); ``image_size`` overrides its side (square).
    The eval transform is timm's (resize to side/crop_pct, centre crop, normalise). The training transform is
    timm's training transform with :data:`LIGHT_AUGMENTATION` for ``augmentation="light"``, or the eval
    transform for ``"none"``. Both take a PIL image and return a float tensor (C, H, W).
    """
    from timm.data import create_transform

    if augmentation not in ("light", "none"):
        raise ValueError(f"unknown augmentation {augmentation!r}; choose light or none")
    c, h, w = (int(v) for v in data_config["input_size"])
    if image_size:
        h = w = int(image_size)
    common = {"input_size": (c, h, w), "interpolation": data_config.get("interpolation") or "bilinear",
              "mean": tuple(data_config["mean"]), "std": tuple(data_config["std"])}
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config.get("crop_pct"),
                               crop_mode=data_config.get("crop_mode"))
    train_tf = eval_tf if augmentation == "none" else create_transform(**common, is_training=True, **LIGHT_AUGMENTATION)
    return train_tf, eval_tf, (c, h, w)


class TransformedImages(torch.utils.data.Dataset):
    """``ds[i]`` → ``(transform(image i in the model's mode), label i)``; one image is decoded per call.

    ``channels`` is the model's input channel count: 1 (images converted to ``L``) or 3 (``RGB``; gray
    images are repeated over the three channels).
    """

    def __init__(self, ds: ImageDataset, transform: Callable, channels: int):
        if channels not in (1, 3):
            raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
        self.ds, self.transform, self.mode = ds, transform, "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.ds.pil_image(i)
        if img.mode != self.mode:
            img = img.convert(self.mode)
        return self.transform(img), int(self.ds.y[i])


def resolve_num_workers(requested: int, device: torch.device | str = "cpu") -> int:
    """Loader worker processes: ``requested`` when ≥ 0; -1 = auto: on CUDA all cores but one (at most 8),
    on CPU half the cores (the other half computes), at most 4."""
    if requested >= 0:
        return int(requested)
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return max(0, min(4, cores // 2))


def make_loader(ds: ImageDataset, transform: Callable, channels: int, *, batch_size: int, shuffle: bool = False,
                drop_last: bool = False, seed: int = 0, num_workers: int = 0, pin_memory: bool = False
                ) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` of ``TransformedImages(ds, transform, channels)`` yielding ``(x (B, C, H, W) float32,
    y (B,) int64)``. Shuffling and the workers' seeds come from a generator seeded with ``seed``, so the
    order and the augmentations repeat for the same seed; workers persist across epochs (forked on Linux)."""
    gen = torch.Generator().manual_seed(int(seed))
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": 2}
        if sys.platform == "linux":  # forked workers share in-memory and memory-mapped images instead of pickling them
            kwargs["multiprocessing_context"] = "fork"
    return torch.utils.data.DataLoader(
        TransformedImages(ds, transform, channels), batch_size=batch_size, shuffle=shuffle,
        drop_last=drop_last, generator=gen, num_workers=num_workers, pin_memory=pin_memory, **kwargs)


def prepare_batch(
    x: np.ndarray | torch.Tensor,
    *,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn a batch (N, C, H, W) in [0, 1] into a normalised float32 tensor of shape (N, *input_size).

    A tensor-level alternative to the timm transforms, for code that holds small batches as arrays (the
    pruning experiment, tests). Channels: 1 → 3 by repetition, 3 → 1 by averaging, equal counts unchanged.
    Spatial size: bilinear ``interpolate`` (antialiased when either side shrinks). Normalisation:
    ``(x - mean) / std`` per channel; a 3-value mean/std used with a 1-channel input is averaged, a
    1-value one is broadcast. uint8 input is scaled by 1/255. ``device`` moves the batch first.
    """
    t = torch.as_tensor(x)
    if device is not None:
        t = t.to(device)
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    else:
        t = t.float()
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"prepare_batch expects (N, C, H, W), got shape {tuple(t.shape)}")
    c, h, w = (int(s) for s in input_size)
    cin = t.shape[1]
    if cin != c:
        if cin == 1:
            t = t.expand(-1, c, -1, -1)
        elif c == 1:
            t = t.mean(dim=1, keepdim=True)
        elif cin == 4 and c == 3:
            t = t[:, :3]
        else:
            raise ValueError(f"cannot convert {cin}-channel images to {c} channels")
    if (t.shape[2], t.shape[3]) != (h, w):
        down = t.shape[2] > h or t.shape[3] > w
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=down)
    m = _stat_tensor(mean, c, t)
    s = _stat_tensor(std, c, t)
    return ((t - m) / s).contiguous()


def _stat_tensor(v: Sequence[float], c: int, like: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32, device=like.device).reshape(-1)
    if v.numel() != c:
        if v.numel() == 1:
            v = v.expand(c)
        elif c == 1:
            v = v.mean().reshape(1)
        else:
            raise ValueError(f"mean/std has {v.numel()} values for {c}-channel input")
    return v.reshape(1, c, 1, 1)

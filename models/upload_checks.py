"""Checks of an uploaded dataset that never hold the decoded dataset in memory.

The service checks every upload before it queues a job, so that a bad file is a 4xx naming the problem and
never a failed job later; this module does it in bounded memory, whatever the upload's size:

* ``.npz``: :func:`read_npz_headers` reads only the ``.npy`` headers inside the archive
  (``numpy.lib.format``), so a header that declares a (10¹¹, 8, 8) array is refused from its shape and the
  member's real size, before anything is allocated. :func:`check_npz` then applies the rules of
  ``models.data``'s ``.npz`` loader to the declared shapes and dtypes, and streams the arrays in chunks of
  ``chunk_bytes`` (finite values, the value range that decides the scale, the label values and counts).
* an ImageFolder (a ``.zip`` once ``archive.safe_extract_zip`` extracted it to disk):
  :func:`check_image_folder` finds the class folders and images with the loader's rules
  (:func:`image_folder_files`) and opens and decodes one image at a time, refusing any image above
  ``max_pixels``.

Both return a :class:`DatasetSummary` (image count, (C, H, W) as the loader will produce it, class counts),
which is what the memory estimate of a job needs. Every problem raises :class:`DataError` whose message
names the upload by ``label`` (the client's file name), never by a path on the server.
"""
from __future__ import annotations

import math
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ncap.models.archive import IMAGE_SUFFIXES, DataError, error_text, is_ignored_member

__all__ = [
    "ArrayHeader",
    "DatasetSummary",
    "channel_layout",
    "check_image_folder",
    "check_npz",
    "find_class_root",
    "image_folder_files",
    "npz_image_shape",
    "read_npz_headers",
    "unreadable_image",
]

DEFAULT_CHUNK_BYTES = 16 * 1024**2
DEFAULT_MAX_CLASSES = 10_000
DEFAULT_MAX_SIDE = 8192
DEFAULT_MAX_PIXELS = 40_000_000  # one image, decoded: 160 MB as RGBA
_HEADER_LIMIT = 10_000  # bytes of a .npy header (numpy's own default)
_NUMERIC_KINDS = "biuf"
_LABEL_KINDS = "biufUS"


@dataclass(frozen=True)
class ArrayHeader:
    """What a ``.npy`` header inside an ``.npz`` declares, and the member's real size."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_bytes: int  # bytes after the header in the member (uncompressed)

    @property
    def declared_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class DatasetSummary:
    """A checked dataset: ``n_images``, ``image_shape`` (C, H, W) as the loader produces it, and the image
    count per class (``class_counts``, in the loader's class order)."""

    n_images: int
    image_shape: tuple[int, int, int]
    class_counts: tuple[int, ...]
    class_names: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.class_counts)


# ------------------------------------------------------------------------------------------------ npz
def _read_header(fp, name: str, label: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=_HEADER_LIMIT)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=_HEADER_LIMIT)
        else:
            raise DataError(f"{label}: {name}: unsupported .npy format version {version} (save with np.savez)")
        return shape, dtype, fortran
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{label}: {name}: not a valid .npy array header ({error_text(exc)})") from exc


def read_npz_headers(path: str | Path, label: str | None = None) -> dict[str, ArrayHeader]:
    """``{array name: ArrayHeader}`` of every ``.npy`` member of an ``.npz``, reading headers only.

    Raises :class:`DataError` for a file that is not a zip, a member that is not a ``.npy`` array, an
    object (pickled) dtype, or a header whose declared size differs from the member's real size."""
    label = label or str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{label}: corrupt or not a .npz file ({error_text(exc)})") from exc
    headers: dict[str, ArrayHeader] = {}
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise DataError(f"{label}: member {info.filename!r} is not a .npy array")
            name = info.filename[:-4]
            try:
                with zf.open(info) as fp:
                    shape, dtype, fortran = _read_header(fp, info.filename, label)
                    offset = fp.tell()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                raise DataError(f"{label}: {info.filename}: corrupt member ({error_text(exc)})") from exc
            if dtype.hasobject:
                raise DataError(f"{label}: array {name!r} has dtype {dtype} (object arrays need pickle, which is "
                                "not accepted); object arrays are not accepted, use numeric or fixed-width string "
                                "arrays")
            header = ArrayHeader(name, tuple(int(s) for s in shape), dtype, bool(fortran), info.file_size - offset)
            if header.declared_bytes != header.data_bytes:
                raise DataError(f"{label}: array {name!r} declares shape {header.shape} of {dtype} "
                                f"({header.declared_bytes} bytes) but holds {header.data_bytes} bytes")
            headers[name] = header
    return headers


def channel_layout(shape: tuple[int, ...]) -> str:
    """How the loader reads an image array of ``shape``: ``"NHW"``, ``"NHWC"`` or ``"NCHW"`` (channel axis
    last when it can be one, C in 1, 3, 4); raises ``ValueError`` otherwise."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[-1] in (1, 3, 4):
            return "NHWC"
        if shape[1] in (1, 3, 4):
            return "NCHW"
        raise ValueError(f"cannot find the channel axis of images 'x' with shape {shape} "
                         "(expected (N, H, W, C) with C in 1, 3, 4)")
    raise ValueError(f"images 'x' must have rank 3 (N, H, W) or 4 (N, H, W, C), got rank {len(shape)} {shape}")


def npz_image_shape(x: ArrayHeader, label: str, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int, int]:
    """(C, H, W) the loader makes of images with header ``x`` (alpha dropped); DataError if it cannot."""
    try:
        layout = channel_layout(x.shape)
    except ValueError as exc:
        raise DataError(f"{label}: {exc}") from exc
    if layout == "NHW":
        c, h, w = 1, x.shape[1], x.shape[2]
    elif layout == "NHWC":
        h, w, c = x.shape[1:]
    else:
        c, h, w = x.shape[1:]
    if min(h, w) < 1 or max(h, w) > max_side:
        raise DataError(f"{label}: image side {h}x{w} outside 1..{max_side}")
    return (3 if c == 4 else c), int(h), int(w)  # the loader drops alpha


def _chunks(zf: zipfile.ZipFile, header: ArrayHeader, chunk_bytes: int) -> Iterator[np.ndarray]:
    """The array's elements in flat chunks (storage order), read from the member stream."""
    item = header.dtype.itemsize
    step = max(item, chunk_bytes // item * item)
    with zf.open(header.name + ".npy") as fp:
        _read_header(fp, header.name, "")
        left = header.data_bytes
        while left > 0:
            raw = fp.read(min(step, left))
            if not raw:
                raise DataError(f"array {header.name!r} ends early")
            left -= len(raw)
            yield np.frombuffer(raw, dtype=header.dtype)


def _scan_images(zf, x: ArrayHeader, label: str, chunk_bytes: int) -> None:
    kind = x.dtype.kind
    if kind not in _NUMERIC_KINDS:
        raise DataError(f"{label}: images 'x' must be numeric, got dtype {x.dtype}")
    if x.dtype in (np.uint8, np.bool_):
        return  # the loader scales these without looking at the values
    lo, hi = math.inf, -math.inf
    for chunk in _chunks(zf, x, chunk_bytes):
        if chunk.size == 0:
            continue
        if kind == "f" and not np.isfinite(chunk).all():
            raise DataError(f"{label}: images 'x' contain NaN or inf values")
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if not (lo >= 0.0 and hi <= 255.0):
        raise DataError(f"{label}: image values must lie in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]")


def _scan_labels(zf, y: ArrayHeader, label: str, chunk_bytes: int, max_classes: int) -> Counter:
    if y.dtype.kind not in _LABEL_KINDS:
        raise DataError(f"{label}: labels 'y' must be integers or strings, got dtype {y.dtype}")
    counts: Counter = Counter()
    for chunk in _chunks(zf, y, chunk_bytes):
        if y.dtype.kind == "f":
            if not np.isfinite(chunk).all():
                raise DataError(f"{label}: labels 'y' contain NaN or inf")
            if not np.all(chunk == np.round(chunk)):
                raise DataError(f"{label}: labels 'y' are non-integer floats")
        values, n = np.unique(chunk, return_counts=True)
        counts.update(dict(zip(values.tolist(), n.tolist())))
        if len(counts) > max_classes:
            raise DataError(f"{label}: labels 'y' hold more than {max_classes} distinct values")
    return counts


def check_npz(path: str | Path, *, label: str | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
              max_classes: int = DEFAULT_MAX_CLASSES, max_side: int = DEFAULT_MAX_SIDE) -> DatasetSummary:
    """Check an ``.npz`` dataset (arrays ``x``, ``y``, optional ``class_names``) as ``models.data`` would
    load it, streaming the arrays in chunks of ``chunk_bytes``; returns its :class:`DatasetSummary`."""
    label = label or str(path)
    headers = read_npz_headers(path, label)
    missing = [k for k in ("x", "y") if k not in headers]
    if missing:
        raise DataError(f"{label}: missing array(s) {missing} (found: {sorted(headers) or 'none'}); "
                        "save with np.savez(path, x=images, y=labels)")
    x, y = headers["x"], headers["y"]
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(f"{label}: images 'x' must be numeric, got dtype {x.dtype}")
    shape = npz_image_shape(x, label, max_side)
    if len(y.shape) == 2 and y.shape[1] == 1:
        y = ArrayHeader(y.name, (y.shape[0],), y.dtype, y.fortran_order, y.data_bytes)
    if len(y.shape) != 1:
        raise DataError(f"{label}: labels 'y' must have shape (N,), got {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{label}: mismatched lengths: 'x' has {x.shape[0]} images but 'y' has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise DataError(f"{label}: empty dataset (no images)")
    try:
        with zipfile.ZipFile(path) as zf:
            _scan_images(zf, x, label, chunk_bytes)
            counts = _scan_labels(zf, y, label, chunk_bytes, max_classes)
            if "class_names" in headers and y.dtype.kind in "iu":
                names = headers["class_names"]
                top = max(counts)
                if min(counts) < 0 or top >= math.prod(names.shape):
                    raise DataError(f"{label}: 'class_names' has {math.prod(names.shape)} entries but labels "
                                    f"reach {top}")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{label}: corrupt or unreadable .npz file ({error_text(exc)})") from exc
    if len(counts) < 2:
        raise DataError(f"{label}: only one class ({next(iter(counts))!r}); classification needs at least two")
    ordered = [counts[k] for k in sorted(counts)]
    return DatasetSummary(int(x.shape[0]), shape, tuple(ordered), tuple(str(k) for k in sorted(counts)))


# -------------------------------------------------------------------------------------- image folders
def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and not is_ignored_member(p.name) and p.name != "__MACOSX"


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p)


def find_class_root(root: Path) -> Path:
    """Descend through single wrapper folders (``data.zip`` → ``data/`` → class folders)."""
    for _ in range(8):
        subdirs = [d for d in root.iterdir() if d.is_dir() and _visible(d)]
        images_here = [f for f in root.iterdir() if _is_image(f)]
        if len(subdirs) == 1 and not images_here and any(d.is_dir() and _visible(d) for d in subdirs[0].iterdir()):
            root = subdirs[0]
        else:
            break
    return root


def image_folder_files(path: Path, label: str | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image file, class index)]) of an ImageFolder: one visible subfolder per class
    (sorted), image files anywhere below it (hidden files and folders and OS clutter skipped), after
    :func:`find_class_root`. Raises :class:`DataError` for no classes, an empty class or one class."""
    label = label or str(path)
    root = find_class_root(Path(path))
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _visible(d))
    if not classes:
        raise DataError(f"{label}: no class subfolders found (expected one folder of images per class)")
    files: list[tuple[Path, int]] = []
    for k, cls in enumerate(classes):
        found = sorted(p for p in (root / cls).rglob("*")
                       if _is_image(p) and all(_visible(q) for q in p.relative_to(root).parents if q.name))
        if not found:
            raise DataError(f"{label}: class folder {(root / cls).relative_to(path).as_posix()!r} contains no "
                            f"images (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(p, k) for p in found]
    if len(classes) < 2:
        raise DataError(f"{label}: only one class ({classes[0]!r}); classification needs at least two")
    return classes, files


def unreadable_image(label: str, root: Path, file: Path, exc: BaseException) -> DataError:
    """The error for an image PIL cannot decode: named by its path inside the upload; PIL's own message names
    the file's full path on this machine, which is replaced by that name (and ``root`` by ``label``)."""
    member = file.relative_to(root).as_posix()
    reason = str(exc).replace(str(file), member).replace(str(root), label)
    return DataError(f"{label}: unreadable image {member!r} ({type(exc).__name__}: {reason})")


GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def check_image_folder(path: str | Path, *, label: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_images: int | None = None) -> DatasetSummary:
    """Open and decode every image of an ImageFolder, one at a time; returns its :class:`DatasetSummary`
    with the shape the loader produces (1 channel when every image is grayscale, else 3; the most common
    size). Raises :class:`DataError` naming the member for an unreadable image or one above ``max_pixels``."""
    from PIL import Image

    path = Path(path)
    label = label or str(path)
    classes, files = image_folder_files(path, label)
    if max_images is not None and len(files) > max_images:
        raise DataError(f"{label}: {len(files)} images, more than the limit of {max_images}")
    sizes: Counter = Counter()
    all_gray = True
    for p, _k in files:
        member = p.relative_to(path).as_posix()
        try:
            with Image.open(p) as im:
                if im.size[0] * im.size[1] > max_pixels:
                    raise DataError(f"{label}: image {member!r} has {im.size[0]}x{im.size[1]} pixels, more than "
                                    f"the limit of {max_pixels}")
                im.load()
                sizes[im.size] += 1
                all_gray &= im.mode in GRAY_MODES
        except DataError:
            raise
        except Exception as exc:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
            raise unreadable_image(label, path, p, exc) from exc
    w, h = sizes.most_common(1)[0][0]
    counts = Counter(k for _p, k in files)
    return DatasetSummary(len(files), (1 if all_gray else 3, int(h), int(w)),
                          tuple(counts[k] for k in range(len(classes))), tuple(classes))

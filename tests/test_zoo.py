"""Zoo: deterministic pretraining, cache hits, recipe changes rebuild, and loading as a candidate."""
import json

import pytest

from ncap.models import zoo


@pytest.fixture
def tiny_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("NCAP_CACHE", str(tmp_path))
    entry = zoo.ZooEntry("tiny-test", "mobilenetv3_small_050", "mnist5k-5class", 0.05, "test entry", batch_size=64)
    monkeypatch.setitem(zoo.ZOO, entry.name, entry)
    return entry


def test_pretrain_caches_and_reuses(tiny_entry):
    card = zoo.ensure([tiny_entry.name], progress=False)[0]
    weights, card_path = tiny_entry.cache_paths()
    assert weights.is_file() and json.loads(card_path.read_text())["recipe_hash"] == tiny_entry.recipe_hash()
    assert 0.0 <= card["source_accuracy"] <= 1.0 and card["source"] == "mnist5k-5class"
    mtime = weights.stat().st_mtime_ns
    assert zoo.ensure([tiny_entry.name], progress=False)[0] == card  # cache hit: same card ...
    assert weights.stat().st_mtime_ns == mtime  # ... and no retraining


def test_pretraining_is_deterministic(tiny_entry):
    a = zoo.ensure([tiny_entry.name], progress=False)[0]["source_accuracy"]
    b = zoo.ensure([tiny_entry.name], progress=False, rebuild=True)[0]["source_accuracy"]
    assert a == b


def test_recipe_change_changes_cache_key(tiny_entry, tmp_path):
    other = zoo.ZooEntry(**{**tiny_entry.__dict__, "epochs": 0.1})
    assert other.recipe_hash() != tiny_entry.recipe_hash()
    assert other.cache_paths()[0] != tiny_entry.cache_paths()[0]
    assert tiny_entry.cache_paths()[0].parent == zoo.cache_dir() == tmp_path / "zoo"  # under $NCAP_CACHE


def test_zoo_weights_build_a_candidate(tiny_entry):
    from ncap.models.candidates import CandidateSpec, build_candidate_model, create_backbone

    weights = zoo.weights_file(tiny_entry.name, progress=False)
    spec = CandidateSpec(tiny_entry.name, tiny_entry.arch, weights, "file", tiny_entry.create_kwargs)
    model, cfg = build_candidate_model(spec, num_classes=10)
    assert cfg["input_size"] == (1, zoo.ZOO_IMAGE_SIZE, zoo.ZOO_IMAGE_SIZE)  # native: 1 channel at 32 px
    assert len(model.probe.linear_layers) == 4
    by_file = CandidateSpec("f", spec.arch, spec.weights, "file")  # `arch=path` reads the size from the file
    assert create_backbone(by_file)[2]["input_size"] == (1, zoo.ZOO_IMAGE_SIZE, zoo.ZOO_IMAGE_SIZE)


def test_unknown_zoo_name():
    with pytest.raises(KeyError, match="known"):
        zoo.ensure(["no-such-model"])
    # real zoo entries differ in architecture, source data and pretraining length
    assert len({e.arch for e in zoo.ZOO.values()}) >= 4 and len({e.source for e in zoo.ZOO.values()}) >= 3
    assert len({e.epochs for e in zoo.ZOO.values()}) >= 3 and len(zoo.ZOO) >= 8


def test_pretraining_runs_at_a_fixed_thread_count_and_restores_the_callers(monkeypatch):
    """CPU float sums depend on the thread count: zoo weights are reproducible only at one count."""
    import torch

    from ncap.models import zoo

    seen = []
    monkeypatch.setattr(zoo, "pretrain_at_fixed_threads", lambda entry, progress: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        zoo.pretrain(zoo.ZOO["resnet18-mnist"], progress=False)
        assert seen == [zoo.ZOO_THREADS] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

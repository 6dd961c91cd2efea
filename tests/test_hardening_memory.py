"""Issue 13, defect 1: a job's memory is estimated before it starts and enforced while it runs.

References: the meta-device profile against a real model (parameters, feature width), the β_eff term against
the size of the per-sample Jacobian it must hold, RLIMIT_DATA against a real allocation in a fresh process."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ncap.models.candidates import CandidateError
from ncap.models.memory import (
    GB,
    DatasetShape,
    MemoryBudgetError,
    backbone_profile,
    check_memory_budget,
    estimate_peak_memory,
)
from ncap.models.recipe import Recipe

DIGITS = DatasetShape(1797, (1, 8, 8), 10, resident_bytes=1797 * 64 * 4)


@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small_050"])
def test_meta_profile_matches_the_real_model(arch):
    import timm

    real = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    prof = backbone_profile(arch, {}, 32)
    assert prof.params == sum(p.numel() for p in real.parameters())
    with torch.no_grad():
        assert prof.feature_dim == real(torch.zeros(1, 3, 32, 32)).shape[-1]
    assert prof.input_size == (3, 32, 32) and 0 < prof.largest_output_bytes < prof.activation_bytes


def test_probe_width_8192_is_refused_at_a_2gb_limit_and_a_small_job_fits():
    wide = Recipe(epochs=1, probe_width=8192, image_size=32)
    with pytest.raises(MemoryBudgetError, match=r"resnet10t=random.*exceeds the per-job limit of 2.0 GB.*probe_width"):
        check_memory_budget(["resnet10t=random"], wide, DIGITS, 2 * GB)
    est = estimate_peak_memory(["resnet10t=random"], wide, DIGITS)
    jacobian = 4 * wide.beta_batch_size * 4096 * 8192  # (B, n_2, n_1) float32 of the first probe block
    assert est.parts["largest step (train, beta_eff or eval)"] >= jacobian
    small = Recipe(epochs=1, image_size=32)
    assert check_memory_budget(["resnet10t=random", "mobilenetv3_small_050=random"], small, DIGITS, 2 * GB).total < 2 * GB


def test_incompatible_image_size_is_caught_before_training():
    with pytest.raises(CandidateError, match=r"vit_tiny_patch16_224 cannot take 32x32 images.*224"):
        estimate_peak_memory(["resnet10t=random", "vit_tiny_patch16_224=random"], Recipe(image_size=32), DIGITS)
    estimate_peak_memory(["vit_tiny_patch16_224=random"], Recipe(image_size=None), DIGITS)  # native 224 is fine


def test_named_candidates_are_profiled_without_building_them():
    from ncap.models.registry import candidate_config

    assert candidate_config("resnet18-mnist").arch == "resnet18"
    assert candidate_config("resnet18-mnist").kwargs == {"in_chans": 1, "img_size": 32}
    assert candidate_config("mine:mobilenetv2_100.tv_in1k").arch == "mobilenetv2_100"
    assert (candidate_config("lbl:resnet10t=random").arch, candidate_config("lbl:resnet10t=random").kwargs) == (
        "resnet10t", {})
    # a zoo model is estimated at its native 32 px (what it runs at), not at its architecture's 224
    est = estimate_peak_memory(["resnet18-mnist"], Recipe(epochs=1), DIGITS)
    assert est.total == estimate_peak_memory(["resnet18-mnist"], Recipe(epochs=1, image_size=32), DIGITS).total
    assert est.total < estimate_peak_memory(["resnet18-mnist"], Recipe(epochs=1, image_size=224), DIGITS).total


_ALLOC = """
import torch
from ncap.models.memory import GB, apply_memory_limit, candidate_failure
apply_memory_limit(int(1.5 * GB))
small = torch.ones(64 * 2**20 // 4)  # 64 MB: fine under the limit
try:
    torch.empty(3 * GB // 4).fill_(1)
    print("allocated")
except RuntimeError as exc:
    print(candidate_failure(exc))
"""


def test_rlimit_data_turns_an_allocation_past_the_limit_into_out_of_memory():
    out = subprocess.run([sys.executable, "-c", _ALLOC], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "out of memory (limit 1.5 GB)"


def test_ncap_rank_inputs_are_read_cheaply(tmp_path):
    """What `ncap rank` checks before work starts: its --candidates string and --data source."""
    import numpy as np

    from ncap.models.memory import dataset_shape
    from ncap.models.registry import candidate_entries

    np.savez(tmp_path / "d.npz", x=np.zeros((5, 8, 8, 4), np.uint8), y=np.arange(5) % 2)
    assert dataset_shape(tmp_path / "d.npz") == DatasetShape(5, (3, 8, 8), 2)
    assert dataset_shape(None).n_images == 1797
    assert candidate_entries(" resnet10t=random, x:resnet18=random ") == ["resnet10t=random", "x:resnet18=random"]
    with pytest.raises(MemoryBudgetError, match="probe_width"):
        check_memory_budget("resnet10t=random", Recipe(epochs=1, probe_width=8192), dataset_shape(None), 16 * GB)

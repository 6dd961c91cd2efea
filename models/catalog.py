"""What a user picks candidates by: every registered candidate with its kind, timm architecture, parameter
count and native input size, measured on the meta device (nothing is built or downloaded). The service's
``/catalog`` and its web page read it."""
from __future__ import annotations

from ncap.models import zoo
from ncap.models.candidates import CandidateError
from ncap.models.memory import backbone_profile, candidate_architecture
from ncap.models.registry import named_candidates

__all__ = ["candidate_catalog"]


def candidate_catalog() -> list[dict]:
    """Every registered candidate with what a user picks by: ``name``, ``kind`` ("zoo" | "imagenet"),
    ``description``, timm ``arch``, ``params_m`` (millions, backbone), native ``input_size`` (C, H, W) and
    ``built`` (False: a zoo entry that would be pretrained first). Measured on the meta device, nothing built."""
    out = []
    for name, c in named_candidates().items():
        arch, kwargs = candidate_architecture(name)
        try:
            profile = backbone_profile(arch, kwargs, zoo.ZOO_IMAGE_SIZE if c.kind == "zoo" else None)
            params_m, size = round(profile.params / 1e6, 3), list(profile.input_size)
        except (CandidateError, RuntimeError, ValueError):  # a candidate that cannot be profiled is still listed
            params_m, size = None, None
        out.append({"name": name, "kind": c.kind, "description": c.description, "arch": arch, "params_m": params_m,
                    "input_size": size, "built": c.kind != "zoo" or zoo.is_built(name)})
    return out

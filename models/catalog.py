"""What a user picks candidates by: every registered candidate with its kind, its registry metadata (timm
architecture, weight source, native input size, the weight file's pinned SHA-256) and its parameter count,
measured on the meta device (nothing is built or downloaded). The service's ``/catalog`` and its web page read it."""
from __future__ import annotations

from ncap.models import zoo
from ncap.models.candidates import CandidateError
from ncap.models.memory import backbone_profile
from ncap.models.registry import named_candidates

__all__ = ["candidate_catalog"]


def candidate_catalog() -> list[dict]:
    """Every registered candidate with what a user picks by: ``name``, ``kind`` ("zoo" | "imagenet"),
    ``description``, timm ``arch``, weight ``source`` ("zoo" | "wheel" | ...), ``params_m`` (millions,
    backbone), native ``input_size`` (C, H, W), ``sha256`` (None where not pinned) and ``built`` (False: a zoo
    entry that would be pretrained first). All but the parameter count are the registry's
    :class:`~ncap.models.registry.CandidateConfig`; nothing is built."""
    out = []
    for name, c in named_candidates().items():
        try:
            params_m = round(backbone_profile(c.cfg.arch, c.cfg.kwargs).params / 1e6, 3)
        except (CandidateError, RuntimeError, ValueError):  # a candidate that cannot be profiled is still listed
            params_m = None
        out.append({"name": name, "kind": c.kind, "description": c.description, "arch": c.cfg.arch,
                    "source": c.cfg.source, "params_m": params_m, "input_size": list(c.cfg.input_size),
                    "sha256": c.cfg.sha256, "built": c.cfg.source != "zoo" or zoo.is_built(name)})
    return out

"""The neural capacitance probe (NCP): a small ReLU MLP put on a backbone's pooled features.

    features (B, in_features) -> [Linear -> ReLU] x n_hidden -> Linear head -> logits (B, num_classes)

β_eff is computed on the probe's Linear layers only (see ``capacitance.beta_eff``). Every candidate gets
the same probe shape (hidden widths, depth, head) so that β_eff values are comparable across candidates;
only ``in_features`` follows the backbone.

Depth matters: softmax cross-entropy is unchanged when every logit moves by the same amount, so the
block of the interaction matrix feeding the head has zero row sums, and a probe with only two Linear
layers before the head has β_eff ≡ 0 (``capacitance.line_graph.check_probe`` refuses it). The default
is three hidden layers plus the head.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_HIDDEN = (128, 64, 32)


class NeuralCapacitanceProbe(nn.Sequential):
    """ReLU MLP probe: ``len(hidden)`` hidden Linear layers plus a Linear classifier head.

    Parameters
    ----------
    in_features : int
        Width of the backbone's pooled features.
    num_classes : int
        Number of target classes (head width).
    hidden : sequence of int
        Hidden widths, at least 3 entries (see the module docstring).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = DEFAULT_HIDDEN):
        hidden = tuple(int(h) for h in hidden)
        if len(hidden) < 3:
            raise ValueError(
                f"the capacitance probe needs at least 3 hidden Linear layers before the head, got {len(hidden)} "
                "(with fewer, beta_eff is structurally 0 under softmax cross-entropy)"
            )
        if in_features < 1 or num_classes < 2 or min(hidden) < 1:
            raise ValueError(f"bad probe shape: in_features={in_features}, hidden={hidden}, num_classes={num_classes}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.in_features = in_features
        self.num_classes = num_classes
        self.hidden = hidden

    @property
    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]


def probe_width_spec(width: int, depth: int = 3) -> tuple[int, ...]:
    """Hidden widths for a probe of a given first width, halving each layer: 128 -> (128, 64, 32)."""
    return tuple(max(int(width) // (2**i), 4) for i in range(depth))


class CandidateModel(nn.Module):
    """A backbone producing pooled features (B, D) followed by the NCP probe."""

    def __init__(self, backbone: nn.Module, probe: NeuralCapacitanceProbe):
        super().__init__()
        self.backbone = backbone
        self.probe = probe

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.backbone(x))

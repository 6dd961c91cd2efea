"""β_eff of a probe, matrix-free (never materialises the interaction matrix P).

Equations (Gao, Barzel & Barabási, Nature 2016; Jiang et al., Nat. Commun. 15:5718, 2024), with P the
line-graph interaction matrix of ``capacitance.line_graph`` (block (l, l+1) = ∂²C/∂W^(l)∂W^(l+1)):

    (1)  s_in  = P·1                      one entry per weight (row sums)
    (2)  s_out = Pᵀ·1                     (column sums)
    (3)  β_eff = (s_out · s_in) / (1ᵀ s_in)        numerator / denominator
    (4)  x_eff = (s_out · w)    / (1ᵀ s_in)

Row and column sums of a mixed-Hessian block are Hessian-vector products with ones vectors. With
g^(k) = ∂C/∂W^(k) and the scalar S_k = 1ᵀ g^(k):

    (5)  s_in^(l)  = P^(l,l+1)·1   = ∂S_{l+1} / ∂W^(l)          (l = 1..m-1;  s_in^(m)  = 0)
    (6)  s_out^(l) = P^(l-1,l)ᵀ·1  = ∂S_{l-1} / ∂W^(l)          (l = 2..m;    s_out^(1) = 0)

and S_k is cheap: for a Linear layer z = h W^(k)ᵀ + b with δ_k = ∂C/∂z (B, n_k) and input h (B, n_{k-1}),
g^(k) = δ_kᵀ h, so

    (7)  S_k = Σ_n (1ᵀ δ_k[n]) (1ᵀ h[n]).

We get every δ_k in one backward pass with ``create_graph=True`` and differentiate (7) once per layer
(double backward restricted to one weight), so the cost is a small constant times one forward+backward
(``bench/beta_cost.py``) and the memory is that of the autograd graph, independent of the size of P.

The "support" and "magnitude" variants cannot be written as products with ones vectors. They use the
explicit per-sample form of a block (element-wise activation φ between Linear layers, no batch coupling):

    (8)  P^(l,l+1)[(b,a),(c,b')] = Σ_n J_n[c,b] h_{l-1}[n,a] h_l[n,b']  +  [b=b'] Σ_n δ_{l+1}[n,c] φ'_l[n,b] h_{l-1}[n,a]

with J_n = ∂δ_{l+1}[n] / ∂z_l[n] (per-sample Jacobian, from one batched vector-Jacobian product).
On the support (b = b') this is Σ_n K[n,c,b] h_{l-1}[n,a] with K = J·h_l + δ_{l+1}·φ'_l, whose row and
column sums are two small contractions. The magnitude variant |P| needs every entry of (8): it is
computed block by block in bounded chunks, O(B·n_{l-1}·n_l²·n_{l+1}) work, fine for the small probes ncap
uses and refused (``max_magnitude_flops``) for big ones.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ncap.capacitance.line_graph import VARIANTS, LossFn, ProbeError, check_probe

# Work limit for the magnitude variant (multiply-adds of eq. 8 over all blocks).
MAX_MAGNITUDE_FLOPS = 2e11


@dataclass(frozen=True)
class CapacitanceResult:
    """β_eff with its parts. ``denominator`` = 1ᵀ s_in = 1ᵀP1; for the signed variants it can pass
    through zero during training, where β_eff = numerator/denominator blows up and flips sign."""

    beta_eff: float
    numerator: float
    denominator: float
    x_eff: float
    variant: str

    def to_dict(self) -> dict:
        return asdict(self)


class _Taps:
    """Forward hooks recording each Linear layer's input h (B, n_in) and output z (B, n_out)."""

    def __init__(self, layers: list[nn.Linear]):
        self.layers = layers
        self.inputs: list[torch.Tensor | None] = [None] * len(layers)
        self.outputs: list[torch.Tensor | None] = [None] * len(layers)
        self.versions: list[int] = [0] * len(layers)
        self.calls = [0] * len(layers)

    def __enter__(self):
        def hook(i):
            def record(module, inputs, output):
                self.inputs[i], self.outputs[i] = inputs[0], output
                self.versions[i] = output._version
                self.calls[i] += 1

            return record

        self.handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def check(self) -> None:
        for i, n in enumerate(self.calls):
            if n != 1:
                raise ProbeError(f"Linear layer {i + 1} of the probe ran {n} times in one forward pass; each must run once")
            if self.outputs[i]._version != self.versions[i]:
                raise ProbeError(
                    f"the output of Linear layer {i + 1} was modified in place (e.g. ReLU(inplace=True)); "
                    "use out-of-place activations in the probe"
                )


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(…, n) -> (N, n): every leading index is a sample."""
    return t.reshape(-1, t.shape[-1])


def _grad(output: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(output, wrt, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def _per_sample_jacobian(delta_next: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """J[n, c, b] = ∂δ_{l+1}[n, c] / ∂z_l[n, b], shape (B, n_{l+1}, n_l), by a batched VJP."""
    n_next = delta_next.shape[-1]
    eye = torch.eye(n_next, dtype=delta_next.dtype, device=delta_next.device)
    seeds = eye[:, None, :].expand(n_next, *delta_next.shape)  # (n_{l+1}, B, n_{l+1})
    try:
        (jac,) = torch.autograd.grad(delta_next, z, seeds, retain_graph=True, is_grads_batched=True)
    except RuntimeError:  # an op without a batching rule: one VJP per output unit
        jac = torch.stack([torch.autograd.grad(delta_next, z, s, retain_graph=True)[0] for s in seeds])
    return jac.permute(1, 0, 2)


def _default_sums(layers, deltas, inputs):
    """Eqs. (5)-(7): s_in, s_out per layer (each shaped like W^(l)) by double backward."""
    weights = [layer.weight for layer in layers]
    S = [(_rows(d).sum(1) * _rows(h).sum(1)).sum() for d, h in zip(deltas, inputs)]  # eq. (7)
    m = len(layers)
    s_in = [_grad(S[l + 1], weights[l]) for l in range(m - 1)] + [torch.zeros_like(weights[-1])]
    s_out = [torch.zeros_like(weights[0])] + [_grad(S[l - 1], weights[l]) for l in range(1, m)]
    return s_in, s_out


def _block_factors(l, deltas, inputs, outputs):
    """Per-sample pieces of eq. (8) for block (l, l+1): h_{l-1}, h_l, δ_{l+1}, φ'_l, J."""
    h_prev = _rows(inputs[l]).detach()
    z, h = outputs[l], inputs[l + 1]
    # φ'_l: for an element-wise activation the vector-Jacobian product with ones is the diagonal of ∂h/∂z
    phi = torch.autograd.grad(h, z, torch.ones_like(h), retain_graph=True)[0]
    delta_next = deltas[l + 1]
    J = _per_sample_jacobian(delta_next, z)
    return h_prev, _rows(h).detach(), _rows(delta_next).detach(), _rows(phi).detach(), J.reshape(-1, *J.shape[-2:]).detach()


def _support_sums(layers, deltas, inputs, outputs):
    """Row/column sums of P ⊙ S (eq. 8 with b = b')."""
    s_in = [torch.zeros_like(layer.weight) for layer in layers]
    s_out = [torch.zeros_like(layer.weight) for layer in layers]
    for l in range(len(layers) - 1):
        h_prev, h, delta_next, phi, J = _block_factors(l, deltas, inputs, outputs)
        K = J * h[:, None, :] + delta_next[:, :, None] * phi[:, None, :]  # (B, n_{l+1}, n_l)
        s_in[l] = K.sum(1).T @ h_prev  # (n_l, n_{l-1}):  Σ_c Σ_n K[n,c,b] h_{l-1}[n,a]
        s_out[l + 1] = torch.einsum("ncb,n->cb", K, h_prev.sum(1))  # (n_{l+1}, n_l)
    return s_in, s_out


def _magnitude_sums(layers, deltas, inputs, outputs, chunk_elements: int = 1 << 24):
    """Row/column sums of |P| from every entry of eq. (8), chunked over the neuron b of layer l."""
    s_in = [torch.zeros_like(layer.weight) for layer in layers]
    s_out = [torch.zeros_like(layer.weight) for layer in layers]
    for l in range(len(layers) - 1):
        h_prev, h, delta_next, phi, J = _block_factors(l, deltas, inputs, outputs)
        n_samples, n_next, n_l = J.shape
        n_prev = h_prev.shape[1]
        step = max(1, chunk_elements // max(1, n_samples * n_next * n_l))
        for b0 in range(0, n_l, step):
            b1 = min(n_l, b0 + step)
            # first term: T[a, b, c, d] = Σ_n h_{l-1}[n,a] J[n,c,b] h_l[n,d]
            A = J[:, :, b0:b1].permute(0, 2, 1)[..., None] * h[:, None, None, :]  # (B, nb, n_{l+1}, n_l)
            T = (h_prev.T @ A.reshape(n_samples, -1)).reshape(n_prev, b1 - b0, n_next, n_l)
            # second term on the diagonal d = b: D[a, b, c] = Σ_n h_{l-1}[n,a] φ'[n,b] δ_{l+1}[n,c]
            D = torch.einsum("na,nb,nc->abc", h_prev, phi[:, b0:b1], delta_next)
            idx = torch.arange(b0, b1, device=T.device)
            T[:, idx - b0, :, idx] += D.permute(1, 0, 2)  # advanced indexing puts the b axis first
            T = T.abs()
            s_in[l][b0:b1] = T.sum((2, 3)).T  # (nb, n_{l-1})
            s_out[l + 1] += T.sum((0, 1))  # (n_{l+1}, n_l)
    return s_in, s_out


def magnitude_flops(layers: list[nn.Linear], n_samples: int) -> float:
    return float(sum(n_samples * a.in_features * a.out_features**2 * b.out_features for a, b in itertools.pairwise(layers)))


def capacitance(
    probe: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
    variant: str = "support",
    max_magnitude_flops: float = MAX_MAGNITUDE_FLOPS,
) -> CapacitanceResult:
    """β_eff, its numerator and denominator, and x_eff of ``probe`` on one batch (matrix-free).

    Parameters
    ----------
    probe : nn.Module
        Module whose Linear layers, in module order, form the probe; ≥ 3 hidden Linear layers + head.
    x : Tensor, shape (B, in_features)
        Probe input (the backbone's pooled features, detached or not: only probe weights are nodes).
    y : Tensor, shape (B,)
        Targets.
    loss_fn : callable
        Batch-mean loss ``loss_fn(logits, y)``; the default is softmax cross-entropy.
    variant : {"default", "support", "magnitude"}
        Which interaction matrix (see ``capacitance.line_graph``).

    The probe's parameters are left untouched (no ``.grad`` is written).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    layers = check_probe(probe, elementwise_only=variant != "default")
    if x.ndim < 2 or x.shape[-1] != layers[0].in_features:
        raise ValueError(f"x must have shape (B, {layers[0].in_features}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if variant == "magnitude":
        flops = magnitude_flops(layers, x.shape[0])
        if flops > max_magnitude_flops:
            raise ValueError(
                f"the magnitude variant needs ~{flops:.1e} multiply-adds on this probe and batch "
                f"(limit {max_magnitude_flops:.1e}); use a narrower probe, a smaller batch, or variant='default'"
            )
    weights = [layer.weight for layer in layers]
    with torch.enable_grad(), _Taps(layers) as taps:
        logits = probe(x)
        taps.check()
        loss = loss_fn(logits, y)
        deltas = torch.autograd.grad(loss, taps.outputs, create_graph=True)  # δ_k = ∂C/∂z_k, with graph
        if variant == "default":
            s_in, s_out = _default_sums(layers, deltas, taps.inputs)
        elif variant == "support":
            s_in, s_out = _support_sums(layers, deltas, taps.inputs, taps.outputs)
        else:
            s_in, s_out = _magnitude_sums(layers, deltas, taps.inputs, taps.outputs)
    numerator = sum(float((o * i).sum()) for o, i in zip(s_out, s_in))  # eq. (3), s_out · s_in
    denominator = sum(float(i.sum()) for i in s_in)  # 1ᵀ s_in
    w_term = sum(float((o * w.detach()).sum()) for o, w in zip(s_out, weights))  # eq. (4)
    beta = numerator / denominator if denominator != 0 else float("nan")
    x_eff = w_term / denominator if denominator != 0 else float("nan")
    return CapacitanceResult(beta, numerator, denominator, x_eff, variant)


def beta_eff(
    probe: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
    variant: str = "support",
) -> float:
    """β_eff = (s_out · s_in) / (1ᵀ s_in) of the probe's line graph on one batch. See ``capacitance``."""
    return capacitance(probe, x, y, loss_fn=loss_fn, variant=variant).beta_eff

"""β_eff core: dense P against an independent full Hessian, matrix-free β_eff against the dense P."""
import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ncap.capacitance import line_graph
from ncap.capacitance.beta_eff import beta_eff, capacitance
from ncap.capacitance.line_graph import ProbeError, interaction_matrix, reduce_dense, support_mask

SHAPES = [(5, 4, 4, 3, 3), (6, 5, 3, 4, 2), (3, 4, 5, 3, 4, 4)]  # in, hidden..., classes


def make_probe(widths, seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    probe = nn.Sequential(*layers).double()
    with torch.no_grad():  # keep tiny ReLU layers alive so every block of P is non-zero
        for m in probe:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(0.05, 0.3)
    return probe


def make_batch(widths, n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, widths[0], generator=g, dtype=torch.float64)
    y = torch.randint(0, widths[-1], (n,), generator=g)
    return x, y


def hessian_reference(probe, x, y):
    """Full Hessian of C w.r.t. all Linear weights (biases fixed), via torch.autograd.functional.hessian."""
    layers = line_graph.probe_linear_layers(probe)
    names = {id(p): n for n, p in probe.named_parameters()}
    w_names = [names[id(layer.weight)] for layer in layers]
    shapes = [layer.weight.shape for layer in layers]
    others = {n: p.detach() for n, p in probe.named_parameters() if n not in w_names}
    flat0 = torch.cat([layer.weight.detach().reshape(-1) for layer in layers])

    def loss(flat):
        params, start = dict(others), 0
        for n, s in zip(w_names, shapes):
            k = s.numel()
            params[n] = flat[start:start + k].reshape(s)
            start += k
        return F.cross_entropy(functional_call(probe, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat0), line_graph.weight_layout(layers)


@pytest.mark.parametrize("widths", SHAPES)
def test_dense_P_matches_full_hessian_blocks(widths):
    probe = make_probe(widths)
    x, y = make_batch(widths)
    P = interaction_matrix(probe, x, y)
    H, layout = hessian_reference(probe, x, y)
    expected = torch.zeros_like(H)
    for (r0, r1), (c0, c1) in itertools.pairwise(layout):
        expected[r0:r1, c0:c1] = H[r0:r1, c0:c1]  # rows layer l, columns layer l+1; all else 0
    assert torch.allclose(P, expected, atol=1e-12, rtol=1e-9)
    for (r0, r1), (c0, c1) in itertools.pairwise(layout):
        assert P[r0:r1, c0:c1].abs().sum() > 0  # every block is exercised


@pytest.mark.parametrize("widths", SHAPES)
@pytest.mark.parametrize("variant", line_graph.VARIANTS)
def test_matrix_free_matches_dense(widths, variant):
    probe = make_probe(widths, seed=3)
    x, y = make_batch(widths, seed=4)
    P = interaction_matrix(probe, x, y, variant=variant)
    w = torch.cat([m.weight.detach().reshape(-1) for m in line_graph.probe_linear_layers(probe)])
    ref = reduce_dense(P, w)
    got = capacitance(probe, x, y, variant=variant)
    for key in ("numerator", "denominator", "beta_eff", "x_eff"):
        assert getattr(got, key) == pytest.approx(ref[key], rel=1e-5, abs=1e-12), key
    assert got.beta_eff == pytest.approx(beta_eff(probe, x, y, variant=variant), rel=1e-12)


def test_variants_differ_and_magnitude_is_nonnegative():
    widths = SHAPES[0]
    probe = make_probe(widths, seed=5)
    x, y = make_batch(widths, seed=6)
    P = interaction_matrix(probe, x, y)
    Ps = interaction_matrix(probe, x, y, variant="support")
    Pm = interaction_matrix(probe, x, y, variant="magnitude")
    assert (Pm >= 0).all() and torch.allclose(Pm, P.abs())
    assert torch.count_nonzero(Ps) < torch.count_nonzero(P)
    res = {v: capacitance(probe, x, y, variant=v).beta_eff for v in line_graph.VARIANTS}
    assert len({round(v, 12) for v in res.values()}) == 3
    assert capacitance(probe, x, y, variant="magnitude").denominator > 0


def test_support_mask_links_weights_sharing_a_neuron():
    a, b = nn.Linear(2, 3), nn.Linear(3, 2)
    S = support_mask(a, b)
    # W1[b=1, a=0] is row 1*2+0 = 2; W2[c=1, b'=1] is column 1*3+1 = 4 -> share neuron 1
    assert S.shape == (6, 6) and S[2, 4] == 1 and S[2, 3] == 0 and S.sum() == 2 * 3 * 2


def test_probe_with_too_few_layers_is_refused():
    probe = make_probe((5, 4, 3, 3))  # 2 hidden + head: beta_eff structurally 0
    x, y = make_batch((5, 4, 3, 3))
    with pytest.raises(ProbeError, match="at least 3 hidden Linear"):
        beta_eff(probe, x, y)
    with pytest.raises(ProbeError, match="at least 3 hidden"):
        interaction_matrix(probe, x, y)


def test_block_feeding_the_head_has_zero_row_sums():
    """The degeneracy that forces ≥ 3 hidden layers: shift invariance of softmax cross-entropy."""
    widths = (5, 4, 4, 3, 3)
    probe = make_probe(widths, seed=7)
    x, y = make_batch(widths, seed=8)
    P = interaction_matrix(probe, x, y)
    layout = line_graph.weight_layout(line_graph.probe_linear_layers(probe))
    (r0, r1), (c0, c1) = layout[-2], layout[-1]
    assert P[r0:r1, c0:c1].abs().max() > 1e-3  # the block is not zero ...
    assert P[r0:r1, c0:c1].sum(1).abs().max() < 1e-12  # ... but its row sums are
    # with 2 hidden layers the only numerator term is s_out^(2)·s_in^(2) = s_out^(2)·0
    small = make_probe((5, 4, 3, 3), seed=7)
    Ps = torch.zeros(4 * 5 + 3 * 4 + 3 * 3, 4 * 5 + 3 * 4 + 3 * 3, dtype=torch.float64)
    loss = F.cross_entropy(small(x), y)
    ws = [m.weight for m in line_graph.probe_linear_layers(small)]
    g = torch.autograd.grad(loss, ws, create_graph=True)
    offs = line_graph.weight_layout(line_graph.probe_linear_layers(small))
    for l in range(2):
        for j in range(g[l + 1].numel()):
            col = torch.autograd.grad(g[l + 1].reshape(-1)[j], ws[l], retain_graph=True)[0]
            Ps[offs[l][0]:offs[l][1], offs[l + 1][0] + j] = col.reshape(-1)
    assert abs(reduce_dense(Ps)["numerator"]) < 1e-12


def test_inplace_activation_and_bad_input_are_rejected():
    probe = make_probe((5, 4, 4, 3, 3), act=lambda: nn.ReLU(inplace=True))
    x, y = make_batch((5, 4, 4, 3, 3))
    with pytest.raises(ProbeError, match="in place"):
        beta_eff(probe, x, y)
    probe = make_probe((5, 4, 4, 3, 3))
    with pytest.raises(ValueError, match="shape"):
        beta_eff(probe, x[:, :4], y)
    with pytest.raises(ValueError, match="NaN"):
        beta_eff(probe, x * float("nan"), y)
    with pytest.raises(ValueError, match="unknown variant"):
        beta_eff(probe, x, y, variant="nope")


def test_parameters_and_grads_untouched():
    probe = make_probe((5, 4, 4, 3, 3))
    x, y = make_batch((5, 4, 4, 3, 3))
    before = [p.detach().clone() for p in probe.parameters()]
    capacitance(probe, x, y, variant="support")
    assert all(p.grad is None for p in probe.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, probe.parameters()))


def test_beta_eff_vanishes_at_convergence():
    """Theorem 1 (Jiang et al. 2024): for a ReLU network trained to convergence, β_eff → 0."""
    torch.manual_seed(0)
    n, d, k = 120, 6, 3
    centers = torch.randn(k, d, dtype=torch.float64) * 4
    y = torch.arange(n) % k
    x = centers[y] + 0.3 * torch.randn(n, d, dtype=torch.float64)  # separable blobs
    probe = make_probe((d, 16, 16, 16, k), seed=1)
    b0 = abs(beta_eff(probe, x, y, variant="default"))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(1500):
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3
    b1 = abs(beta_eff(probe, x, y, variant="default"))
    assert b0 > 0 and b1 < 1e-2 * b0

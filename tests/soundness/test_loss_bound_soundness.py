"""The robust-loss bounds (snncertify.loss_bound) against the REAL snnTorch forward.

On random FC and conv networks (every reset, encoding and readout of ``netgen``), the
cross-entropy of hundreds of perturbed inputs run through snnTorch itself never exceeds
the margin-row bound (IBP, CROWN-IBP) or the fused one-row bound (up to the float32
rounding of the final log-sum-exp, ``CE_RTOL``, ``CE_ATOL``); the fused bound is
never above IBP's margin loss, and it is the CE itself at eps 0.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netgen import build, net_specs, perturbations, reference, sample_input

from snncertify import certify
from snncertify.budget import Plan
from snncertify.loss_bound import chord, robust_ce

BATCH = 3
#: the bounds' last step, the float32 log-sum-exp, rounds (a few ulps of 1 + CE); the
#: reference is float64
CE_RTOL, CE_ATOL = 1e-6, 1e-6
N_PERTURBED = 90
SETTINGS = settings(
    max_examples=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def perturbed_ce(bnet, net, spec, x, y, noise, eps, mask, scale: float) -> torch.Tensor:
    """CE ``[n, B]`` of ``N_PERTURBED`` inputs of the threat, by snnTorch itself."""
    xs = perturbations(bnet, x, eps, N_PERTURBED, spec.seed, noise=noise, mask=mask)
    n = xs.shape[0]
    if spec.encoding == "event":
        big = xs.permute(1, 0, 2, *range(3, xs.ndim)).reshape(xs.shape[1], n * BATCH,
                                                               *xs.shape[3:])
    else:
        big = xs.reshape(-1, *xs.shape[2:])
    big_noise = None if noise is None else noise.repeat(1, n, *([1] * (noise.ndim - 2)))
    bnet_big = certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout)
    scores = reference(bnet_big, net, big, big_noise)[0].double()
    return F.cross_entropy(scale * scores, y.repeat(n), reduction="none").reshape(n, BATCH)


@SETTINGS
@given(spec=net_specs(max_steps=5), eps=st.sampled_from([0.01, 0.05, 0.2]),
       scale=st.sampled_from([1.0, 10.0]), top=st.sampled_from([1, 3]))
def test_robust_ce_bounds_hold_on_random_networks(spec, eps, scale, top):
    net, in_shape = build(spec)
    bnet = certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout)
    x = sample_input(spec.encoding, in_shape, BATCH, spec.num_steps, spec.seed)
    noise = bnet.draw_noise(x) if spec.encoding == "rate" else None
    mask = None
    if spec.encoding == "event":
        gen = torch.Generator().manual_seed(spec.seed + 1)
        mask = torch.rand(x.shape, generator=gen) < eps
        threat = mask
    else:
        threat = eps
    K = bnet(x, noise=noise).shape[1]
    y = torch.randint(0, K, (BATCH,), generator=torch.Generator().manual_seed(spec.seed + 2))
    with torch.no_grad():
        bounds = {(m, loss): robust_ce(bnet, x, y, threat, m, noise, scale, loss).double()
                  for m, loss in (("ibp", "margins"), ("crown-ibp", "margins"),
                                  ("crown-ibp", "fused"))}
        bounds["fused", top] = robust_ce(bnet, x, y, threat, "crown-ibp", noise, scale,
                                         "fused", top_rows=top).double()
    worst = perturbed_ce(bnet, net, spec, x, y, noise, eps, mask, scale).amax(0)
    for key, bound in bounds.items():
        assert (worst <= bound * (1 + CE_RTOL) + CE_ATOL).all(), f"{key}: CE {worst.tolist()} above {bound.tolist()}"
    ibp = bounds["ibp", "margins"]
    for key in (("crown-ibp", "fused"), ("fused", top)):
        assert (bounds[key] <= ibp * (1 + 1e-5) + 1e-6).all(), key


@pytest.mark.parametrize("readout", ["rate", "count"])
def test_fused_bound_is_the_cross_entropy_at_a_point(fc_net, unit_inputs, readout):
    bnet = certify(fc_net(16, 12, 5), 4, readout=readout)
    x = unit_inputs(6, 16, seed=1)
    y = torch.arange(6) % 5
    ce = F.cross_entropy(10 * bnet(x), y, reduction="none")
    fused = robust_ce(bnet, x, y, 0.0, "crown-ibp", logit_scale=10, loss="fused")
    assert torch.allclose(fused, ce, rtol=1e-5, atol=1e-6)
    assert (fused >= ce).all()


def test_fused_with_every_class_kept_is_the_margin_loss(fc_net, unit_inputs):
    bnet = certify(fc_net(16, 12, 5), 4)
    x = unit_inputs(6, 16, seed=4)
    y = torch.arange(6) % 5
    with torch.no_grad():
        margins = robust_ce(bnet, x, y, 0.05, "crown-ibp", logit_scale=10)
        every = robust_ce(bnet, x, y, 0.05, "crown-ibp", logit_scale=10, loss="fused",
                          top_rows=4)  # K - 1 = 4 classes: no shared row is left
        more = robust_ce(bnet, x, y, 0.05, "crown-ibp", logit_scale=10, loss="fused",
                         top_rows=10)
    assert torch.allclose(every, margins, rtol=1e-5, atol=1e-6)
    assert torch.equal(more, every)


def test_chord_lies_above_exp_on_its_interval():
    gen = torch.Generator().manual_seed(0)
    lo = 20 * torch.rand(200, generator=gen) - 15
    width = torch.cat([torch.zeros(50), 1e-6 * torch.rand(50, generator=gen),
                       10 * torch.rand(100, generator=gen)])
    hi = lo + width
    slope, icpt = chord(lo, hi)
    t = torch.rand(200, 33, generator=gen).double()
    pts = lo.double()[:, None] + t * (hi.double() - lo.double())[:, None]
    line = slope.double()[:, None] * pts + icpt.double()[:, None]
    mag = hi.double().exp() + slope.double() * torch.maximum(lo.abs(), hi.abs()).double()
    assert (line >= pts.exp() - 1e-6 * mag[:, None]).all()  # the pad robust_ce adds


def test_fused_loss_is_differentiable_and_uses_one_row(fc_net, unit_inputs):
    bnet = certify(fc_net(16, 12, 5), 4)
    x = unit_inputs(4, 16, seed=2)
    y = torch.tensor([0, 1, 2, 3])
    loss = robust_ce(bnet, x, y, 0.05, "crown-ibp", logit_scale=10, loss="fused",
                     reduction="mean")
    loss.backward()
    grads = [p.grad for p in bnet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    C = bnet.margin_spec(x, y)
    rows_one = bnet.plan(x, C[:, :1], "crown-ibp", need_upper=False)
    rows_all = bnet.plan(x, C, "crown-ibp", need_upper=False)
    assert rows_one.batch >= rows_all.batch


def test_robust_ce_refuses_what_it_cannot_do(fc_net, unit_inputs):
    bnet = certify(fc_net(16, 12, 5), 4)
    x, y = unit_inputs(2, 16, seed=3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="fused"):
        robust_ce(bnet, x, y, 0.05, "ibp", loss="fused")
    with pytest.raises(ValueError, match="unknown robust loss"):
        robust_ce(bnet, x, y, 0.05, loss="sum")
    with pytest.raises(ValueError, match="top_rows"):
        robust_ce(bnet, x, y, 0.05, top_rows=2)
    with pytest.raises(ValueError, match="top_rows"):
        robust_ce(bnet, x, y, 0.05, loss="fused", top_rows=-1)
    with pytest.raises(ValueError, match="logit_scale"):
        robust_ce(bnet, x, y, 0.05, logit_scale=0)


def test_fused_bound_is_chunked_as_the_bounds_are(bn_net, unit_inputs, monkeypatch):
    bnet = certify(bn_net(), 4).eval()
    x, y = unit_inputs(6, 16, seed=5), torch.tensor([0, 1, 2, 3, 4, 0])
    whole = robust_ce(bnet, x, y, 0.05, "crown-ibp", logit_scale=10, loss="fused", top_rows=1)
    plan = bnet.plan(x, bnet.margin_spec(x, y)[:, :2], "crown-ibp", need_upper=False)
    monkeypatch.setattr(type(bnet), "plan", lambda self, *a, **k: Plan(
        2, plan.rows, plan.budget, plan.per_row))
    chunked = robust_ce(bnet, x, y, 0.05, "crown-ibp", logit_scale=10, loss="fused", top_rows=1)
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-7)

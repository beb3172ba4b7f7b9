"""Public contract of certify() / BoundedSNN: forward, shapes, errors, differentiability."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from snncertify import certify, verified_accuracy

# ``fc_net()`` (tests/conftest.py): Flatten, 16-12-5, seeded 0; input [B, 16] or [B, 4, 4]


@pytest.mark.parametrize("encoding", ["direct", "rate"])
@pytest.mark.parametrize("readout", ["rate", "count", "membrane"])
def test_forward_bit_identical_and_fresh_state(encoding, readout, fc_net, unit_inputs, snntorch_ref):
    net = fc_net()
    bnet = certify(net, 6, encoding=encoding, readout=readout)
    x = unit_inputs(7, 4, 4)
    noise = bnet.draw_noise(x) if encoding == "rate" else None
    first = bnet(x, noise=noise)
    second = bnet(x, noise=noise)  # no state leaks between calls
    assert torch.equal(first, second)
    assert torch.equal(first, snntorch_ref.outputs(bnet, net, x, noise)[0])
    assert first.shape == (7, 5)


def test_rate_noise_default_is_seeded_and_shared(fc_net, unit_inputs):
    bnet = certify(fc_net(), 5, encoding="rate", seed=3)
    x = unit_inputs(4, 16)
    assert torch.equal(bnet(x), bnet(x, noise=bnet.draw_noise(x)))
    lower, upper = bnet.bounds(x, 0.0)
    assert torch.equal(lower, bnet(x)) and torch.equal(upper, bnet(x))
    other = certify(fc_net(), 5, encoding="rate", seed=4)
    assert not torch.equal(bnet.draw_noise(x), other.draw_noise(x))


def test_rate_gradient_reaches_input(fc_net, unit_inputs):
    bnet = certify(fc_net(), 5, encoding="rate", readout="membrane")
    x = unit_inputs(3, 16).requires_grad_(True)
    bnet(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_event_masks_bound_the_forward_and_budgets_contain_them(fc_net, spike_inputs,
                                                                snntorch_ref):
    net = fc_net()
    bnet = certify(net, None, encoding="event")
    x = spike_inputs(6, 3, 16, p=0.4)
    scores = bnet(x)
    assert torch.equal(scores, snntorch_ref.outputs(bnet, net, x)[0])
    mask = torch.zeros_like(x, dtype=torch.bool)
    lower, upper = bnet.bounds(x, mask)
    assert torch.equal(lower, scores) and torch.equal(upper, scores)
    mask[:, :, :3] = True
    lower, upper = bnet.bounds(x, mask)
    lo_k, up_k = bnet.bounds(x, 2)  # a budget: IBP lets every position flip
    assert (lo_k <= lower).all() and (up_k >= upper).all()
    y = scores.argmax(1)
    full = bnet.certified(x, y, mask).float().mean().item()
    assert verified_accuracy(bnet, x, y, mask, batch_size=2) == pytest.approx(full)
    shared = mask[:, :1]  # [T, 1, 16]: the same positions for every sample
    full = bnet.certified(x, y, shared).float().mean().item()
    assert verified_accuracy(bnet, x, y, shared, batch_size=2) == pytest.approx(full)
    with pytest.raises(ValueError, match="binary"):
        bnet(x * 0.5)
    with pytest.raises(ValueError, match="bool mask of positions"):
        bnet.bounds(x, 0.1)


def test_margins_are_lower_minus_upper_and_certified_means_all_positive(fc_net, unit_inputs):
    bnet = certify(fc_net(), 8, readout="count")
    x = unit_inputs(10, 16)
    scores = bnet(x)
    y = scores.argmax(1)
    margins = bnet.margin_bounds(x, y, 0.0)
    assert torch.equal(margins, scores.gather(1, y[:, None]) - scores)
    lower, upper = bnet.bounds(x, 0.05)
    margins = bnet.margin_bounds(x, y, 0.05)
    expected = lower.gather(1, y[:, None]) - upper
    expected[torch.arange(10), y] = 0.0
    assert torch.equal(margins, expected)
    cert = bnet.certified(x, y, 0.05)
    others = margins.clone()
    others[torch.arange(10), y] = float("inf")
    assert torch.equal(cert, (others > 0).all(1))
    # a tie is never certified
    tie = torch.zeros(1, 16)
    s = bnet(tie)
    if (s == s.max()).sum() > 1:
        assert not bnet.certified(tie, s.argmax(1), 0.0).any()
    assert 0.0 <= verified_accuracy(bnet, x, y, 0.05) <= 1.0


def test_tie_is_not_certified(fc_net, unit_inputs):
    net = fc_net()
    with torch.no_grad():
        net[3].weight.zero_()
        net[3].bias.fill_(1.0)  # every output neuron spikes identically
    bnet = certify(net, 4, readout="count")
    x = unit_inputs(2, 16)
    assert not bnet.certified(x, torch.tensor([0, 1]), 0.0).any()


def test_bounds_are_differentiable(fc_net, unit_inputs):
    net = fc_net(reset="zero")
    bnet = certify(net, 6, readout="membrane")
    x = unit_inputs(8, 16)
    y = bnet(x).argmax(1)
    loss = -bnet.margin_bounds(x, y, 0.05).sum()
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_explicit_style_network_by_sequential_of_its_modules():
    class Explicit(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(16, 10), snn.Leaky(beta=0.9, threshold=0.4)
            self.fc2, self.lif2 = nn.Linear(10, 3), snn.Leaky(beta=0.9, threshold=0.4)

        def forward(self, x, steps):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            out = []
            for _ in range(steps):
                spk1, mem1 = self.lif1(self.fc1(x), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                out.append(spk2)
            return torch.stack(out)

    torch.manual_seed(1)
    model = Explicit()
    with pytest.raises(TypeError, match="explicit style"):
        certify(model, 5)
    bnet = certify(nn.Sequential(model.fc1, model.lif1, model.fc2, model.lif2), 5)
    x = torch.rand(6, 16)
    assert torch.equal(bnet(x), model(x, 5).mean(0))


def test_unsupported_module_named_with_position():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Identity(), nn.ReLU()),
                        snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(TypeError, match=r"ReLU at position '1\.1'"):
        certify(net, 3)
    with pytest.raises(TypeError, match="no snn.Leaky"):
        certify(nn.Sequential(nn.Linear(4, 2)), 3)
    with pytest.raises(TypeError, match="graded_spikes_factor"):
        certify(nn.Sequential(nn.Linear(4, 2), snn.Leaky(beta=0.5, graded_spikes_factor=2.0)), 3)
    with pytest.raises(TypeError, match="RLeaky at position '1'"):
        certify(nn.Sequential(nn.Linear(4, 2), snn.RLeaky(beta=0.5, linear_features=2)), 3)

    class MyLeaky(snn.Leaky):  # may change the dynamics: only the exact type is bounded
        pass

    with pytest.raises(TypeError, match="MyLeaky at position '1'"):
        certify(nn.Sequential(nn.Linear(4, 2), MyLeaky(beta=0.5, init_hidden=True)), 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b, x, y: b.bounds(x, -0.1), "eps must be >= 0"),
        (lambda b, x, y: b.bounds(x, float("nan")), "NaN"),
        (lambda b, x, y: b.bounds(x * 2, 0.1), r"\[0, 1\]"),
        (lambda b, x, y: b.bounds(x.clone().fill_(float("nan")), 0.1), "NaN"),
        (lambda b, x, y: b(torch.rand(3, 15)), "does not fit Linear at '1'"),
        (lambda b, x, y: b(torch.rand(16)), r"shape \[B, \.\.\.\]"),
        (lambda b, x, y: b.certified(x, y + 5, 0.1), "labels must lie in"),
        (lambda b, x, y: b.certified(x, y[:2], 0.1), "shape"),
        (lambda b, x, y: b.certified(x, y.float(), 0.1), "integer"),
        (lambda b, x, y: b.bounds(x, 0.1, method="nope"), "unknown bound method"),
        (lambda b, x, y: b(x, noise=torch.rand(2, 2)), "noise= only applies"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match, fc_net, unit_inputs):
    bnet = certify(fc_net(), 4)
    x, y = unit_inputs(3, 16), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=match):
        call(bnet, x, y)


def test_bad_certify_arguments_raise_clear_value_error(fc_net):
    with pytest.raises(ValueError, match="encoding"):
        certify(fc_net(), 4, encoding="poisson")
    with pytest.raises(ValueError, match="readout"):
        certify(fc_net(), 4, readout="max")
    with pytest.raises(ValueError, match="num_steps"):
        certify(fc_net(), 0)
    with pytest.raises(ValueError, match="end with snn.Leaky or snn.Synaptic"):
        certify(nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.5, init_hidden=True),
                              nn.Linear(4, 2)), 3, readout="membrane")
    bnet = certify(fc_net(), 4, encoding="rate")
    with pytest.raises(ValueError, match="rate noise must have shape"):
        bnet(torch.rand(2, 16), noise=torch.rand(3, 2, 16))


def test_paper_setting_fc_rate_zero_reset_bounds_hold(fc_net, unit_inputs, snntorch_ref):
    """NeurIPS 2022 setting: zero reset, beta = theta = 0.25, rate input, FC 784-512-256-10."""
    net = fc_net(784, 512, 256, 10, beta=0.25, threshold=0.25, reset="zero")
    bnet = certify(net, 10, encoding="rate")
    x = unit_inputs(4, 1, 28, 28)
    noise = bnet.draw_noise(x)
    for eps in (0.002, 0.02):
        lower, upper = bnet.bounds(x, eps, noise=noise)
        n = 64
        xs = (x + eps * (2 * torch.rand(n, *x.shape) - 1)).clamp(0, 1)
        corners = torch.where(torch.rand(n, *x.shape) < 0.5, -eps, eps)
        xs = torch.cat([xs, (x + corners).clamp(0, 1)]).reshape(-1, 1, 28, 28)
        frames = (xs > noise.repeat(1, 2 * n, 1, 1, 1)).float()
        out, _ = snntorch_ref.run(net, frames)
        scores = out.mean(0).reshape(2 * n, 4, 10)
        assert (scores >= lower).all() and (scores <= upper).all()
    assert (upper - lower).max() <= 1.0

"""``snn.Synaptic``: exact forward, and every bound method sound against snnTorch."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from snncertify import certify

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("encoding", ["direct", "rate"])
def test_synaptic_forward_is_snntorch_and_every_bound_is_sound(reset, per_neuron, encoding,
                                                              synaptic_net, snntorch_ref):
    net = synaptic_net(reset, per_neuron, seed=1 + per_neuron)
    T, eps = 5, 0.08
    bnet = certify(net, T, encoding=encoding, readout="rate")
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 6, generator=gen)
    noise = torch.rand(T, 6, 6, generator=gen) if encoding == "rate" else None
    with torch.no_grad():
        out, layers = snntorch_ref.run(net, snntorch_ref.frames(encoding, x, T, noise))
        assert torch.equal(bnet(x, noise), snntorch_ref.scores("rate", out, layers))
        _, trace = bnet.trace(x, noise)
        for rec, (mem, spk) in zip(trace.layers, layers.values(), strict=True):
            assert torch.equal(rec.mem_l, mem) and torch.equal(rec.spk_l, spk)
        bounds = {m: bnet.bounds(x, eps, method=m, noise=noise) for m in METHODS}
        inputs = []
        for k in range(200):
            u = torch.rand(x.shape, generator=gen)
            inputs.append(u.round() if k % 2 else u)  # box corners and random points
        for u in inputs:
            xp = (x + (2 * u - 1) * eps).clamp(0, 1)
            scores = bnet(xp, noise)
            for m, (lo, up) in bounds.items():
                assert (scores >= lo).all() and (scores <= up).all(), m
        ibp_w = (bounds["ibp"][1] - bounds["ibp"][0]).sum()
        assert (bounds["crown"][1] - bounds["crown"][0]).sum() <= ibp_w + 1e-6


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_synaptic_exact_verifier_is_sound_and_tightest(reset):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 5),
        snn.Synaptic(alpha=0.6, beta=0.8, threshold=0.5, init_hidden=True, reset_mechanism=reset),
        nn.Linear(5, 3),
        snn.Synaptic(alpha=0.4, beta=0.9, threshold=0.4, init_hidden=True, output=True,
                     reset_mechanism=reset),
    )
    bnet = certify(net, 3)
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ex_lo, ex_up = bnet.bounds(x, 0.1, method="exact")
        for m in METHODS:
            lo, up = bnet.bounds(x, 0.1, method=m)
            assert (ex_lo >= lo - 1e-6).all() and (ex_up <= up + 1e-6).all(), m
        gen = torch.Generator().manual_seed(6)
        for k in range(300):
            u = torch.rand(x.shape, generator=gen)
            xp = (x + (2 * (u.round() if k % 2 else u) - 1) * 0.1).clamp(0, 1)
            scores = bnet(xp)
            assert (scores >= ex_lo).all() and (scores <= ex_up).all()


def test_synaptic_options_the_bounds_do_not_model_are_rejected():
    bad = nn.Sequential(nn.Linear(3, 2), snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True,
                                                      reset_delay=False))
    with pytest.raises(TypeError, match=r"snn.Synaptic at '1' uses unsupported option\(s\): "
                                        "reset_delay=False"):
        certify(bad, 3)

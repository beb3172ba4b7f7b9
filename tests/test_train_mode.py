"""Train mode (BatchNorm, Dropout) and the one rate-noise policy, against the real snnTorch loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attacks
from snncertify import certify, verified_accuracy


def bn_states(net):
    return [t.clone() for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for t in (m.running_mean, m.running_var, m.num_batches_tracked)]


@pytest.mark.parametrize("encoding", ["direct", "rate"])
@pytest.mark.parametrize("conv", [False, True])
def test_train_mode_is_the_users_loop(encoding, conv, bn_net, unit_inputs, snntorch_ref):
    """BN normalises every step by its batch and updates running stats per step; Dropout
    draws a mask per step: outputs and running statistics equal the user's own loop."""
    net = bn_net(conv=conv)
    mine = copy.deepcopy(net)
    bnet = certify(mine, 5, encoding=encoding)
    x = unit_inputs(8, 1, 6, 6) if conv else unit_inputs(8, 16)
    noise = bnet.draw_noise(x) if encoding == "rate" else None
    net.train()
    bnet.train()
    assert mine.training
    for _ in range(2):  # running statistics keep matching over several batches
        torch.manual_seed(7)
        ref, _ = snntorch_ref.run(net, snntorch_ref.frames(encoding, x, 5, noise))
        torch.manual_seed(7)
        out = bnet.trace(x, noise)[1].out_l
        assert torch.equal(out, ref)
        for a, b in zip(bn_states(net), bn_states(mine), strict=True):
            assert torch.equal(a, b)
    assert int(bn_states(mine)[2]) == 10  # 5 steps x 2 calls, like the user's loop
    bnet.eval()  # eval: the running statistics, no dropout, no updates
    before = bn_states(mine)
    ref, _ = snntorch_ref.run(net.eval(), snntorch_ref.frames(encoding, x, 5, noise))
    assert torch.equal(bnet(x, noise), ref.mean(0))
    assert all(torch.equal(a, b) for a, b in zip(before, bn_states(mine), strict=True))


def _fixed_stats_loop(run_snntorch, net, frames_clean, frames):
    """The user's loop with each BatchNorm frozen to the CLEAN batch's statistics at
    every step and Dropout off: the function train-mode bounds bound."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    recorded = {id(m): [] for m in bns}
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp: recorded[id(mod)].append(
            (inp[0].mean([0, *range(2, inp[0].ndim)]),
             inp[0].var([0, *range(2, inp[0].ndim)], unbiased=False)))) for m in bns]
    run_snntorch(net, frames_clean)
    for h in hooks:
        h.remove()
    step = {id(m): 0 for m in bns}

    def frozen(mod, inp, _out):
        mean, var = recorded[id(mod)][step[id(mod)]]
        step[id(mod)] += 1
        return F.batch_norm(inp[0], mean, var, mod.weight, mod.bias, False, 0.0, mod.eps)

    hooks = [m.register_forward_hook(frozen) for m in bns]
    try:
        return run_snntorch(net, frames)[0].mean(0)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("encoding", ["direct", "rate"])
def test_train_mode_bounds_hold_for_clean_batch_statistics(encoding, bn_net, unit_inputs,
                                                           snntorch_ref, perturbations):
    net = bn_net()
    bnet = certify(copy.deepcopy(net), 5, encoding=encoding)
    bnet.train()
    x = unit_inputs(8, 16)
    noise = bnet.draw_noise(x) if encoding == "rate" else None
    before = bn_states(bnet.net)
    eps = 0.08
    lower, upper = bnet.bounds(x, eps, noise=noise)
    point_l, point_u = bnet.bounds(x, 0.0, noise=noise)
    assert all(torch.equal(a, b) for a, b in zip(before, bn_states(bnet.net), strict=True))
    ref_net = copy.deepcopy(net).train()
    for m in ref_net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    frames = snntorch_ref.frames
    clean = _fixed_stats_loop(snntorch_ref.run, ref_net, frames(encoding, x, 5, noise),
                              frames(encoding, x, 5, noise))
    assert torch.equal(point_l, point_u)
    assert torch.allclose(point_l, clean, atol=1e-6)
    xs = perturbations(bnet, x, eps, 24, seed=1)
    violations = 0
    for xp in xs:
        s = _fixed_stats_loop(snntorch_ref.run, ref_net, frames(encoding, x, 5, noise),
                              frames(encoding, xp, 5, noise))
        violations += int(((s < lower) | (s > upper)).sum())
    assert violations == 0
    # certified training: the bound loss reaches the parameters, also through the statistics
    y = torch.randint(0, 5, (8,))
    bnet.margin_bounds(x, y, eps, noise=noise).sum().backward()
    assert bnet.net[1].weight.grad is not None and bnet.net[1].weight.grad.abs().sum() > 0


def test_train_mode_batchnorm_rejects_linear_methods(bn_net, unit_inputs):
    bnet = certify(bn_net(), 4)
    x = unit_inputs(4, 16)
    bnet.train()
    with pytest.raises(ValueError, match="train mode"):
        bnet.bounds(x, 0.01, method="crown-ibp")
    bnet.eval()
    bnet.bounds(x, 0.01, method="crown-ibp")


def test_rate_noise_default_does_not_depend_on_the_batch(fc_net, unit_inputs, float64):
    net = fc_net(16, 12, 4, beta=0.8, threshold=1.0, flatten=False)
    bnet = certify(net, 6, encoding="rate", seed=5)
    x = unit_inputs(10, 16)
    full = bnet.draw_noise(x)
    for i in (0, 3, 9):
        assert torch.equal(full[:, i], bnet.draw_noise(x[i : i + 1])[:, 0])
        assert torch.equal(full[:, i], bnet.draw_noise(x[i:])[:, 0])
    clf = attacks.AttackableSNN(bnet)
    assert torch.equal(clf.eval_noise(x), full)
    y = torch.randint(0, 4, (10,))
    b64, x64 = float64(bnet), x.double()  # chunks of 3 round differently: float64
    whole = b64.certified(x64, y, 0.01)
    parts = torch.cat([b64.certified(x64[i : i + 3], y[i : i + 3], 0.01) for i in range(0, 10, 3)])
    assert torch.equal(whole, parts)
    assert verified_accuracy(b64, x64, y, 0.01, batch_size=3) == verified_accuracy(b64, x64, y, 0.01)
    gen = torch.Generator().manual_seed(1)  # training's fresh draws: independent per sample
    fresh = bnet.draw_noise(x, gen)
    assert fresh.shape == full.shape and not torch.equal(fresh[:, 0], fresh[:, 1])

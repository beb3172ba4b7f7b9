"""AttackableSNN: values, validation, state reset, gradient modes, noise policy."""

from __future__ import annotations

import warnings

import pytest
import snntorch as snn
import torch
import torchattacks
from torch import nn

import attacks
from attacks import AttackableSNN, ZeroGradientWarning
from snncertify import certify
from snncertify.ops import NeuronOp

MODES = ["bptt", "rate", "surrogate:atan", "surrogate:fast_sigmoid", "surrogate:triangular",
         "surrogate:straight_through", "surrogate:sigmoid(slope=5)"]


def _input_grad(clf, x, y):
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(clf(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return g


@pytest.mark.parametrize("mode", MODES)
def test_values_identical_in_every_gradient_mode(direct_model, mode):
    x, y = direct_model.x[:32], direct_model.y[:32]
    clf = AttackableSNN(direct_model.bnet, grad=mode)
    ref = direct_model.bnet(x)
    xg = x.clone().requires_grad_(True)
    assert torch.equal(clf(xg).detach(), ref)
    g = _input_grad(clf, x, y)
    assert g.abs().sum() > 0, mode
    # the mode is an argument of the core forward: nothing is stored on the shared ops
    for op in direct_model.bnet.ops:
        if isinstance(op, NeuronOp):
            assert set(vars(op)) == {"module", "path"}


def test_gradient_modes_are_reentrant_across_threads(direct_model, float64):
    """Two modes on ONE shared network, run concurrently, give each its own gradient."""
    from concurrent.futures import ThreadPoolExecutor

    # float64: a worker thread may run its kernels with another OpenMP thread count, which
    # rounds differently; the modes' gradients differ by far more than the tolerance
    bnet, x, y = float64(direct_model.bnet), direct_model.x[:16].double(), direct_model.y[:16]
    modes = ["rate", "surrogate:fast_sigmoid", "bptt", "surrogate:straight_through"] * 3
    serial = {m: _input_grad(AttackableSNN(bnet, grad=m), x, y) for m in set(modes)}
    with ThreadPoolExecutor(4) as pool:
        grads = list(pool.map(lambda m: _input_grad(AttackableSNN(bnet, grad=m), x, y), modes))
    for m, g in zip(modes, grads, strict=True):
        torch.testing.assert_close(g, serial[m], rtol=1e-6, atol=1e-9, msg=m)


def test_gradient_modes_differ(direct_model):
    x, y = direct_model.x[:32], direct_model.y[:32]
    grads = {m: _input_grad(AttackableSNN(direct_model.bnet, grad=m), x, y)
             for m in ["bptt", "rate", "surrogate:fast_sigmoid", "surrogate:straight_through"]}
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(grads[a], grads[b]), (a, b)


def test_surrogate_matches_setting_it_on_the_modules():
    """'surrogate:fast_sigmoid' gives the gradient of a net built with that spike_grad."""
    torch.manual_seed(0)

    def net(spike_grad):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 5), snn.Leaky(beta=0.8, init_hidden=True,
                                                        spike_grad=spike_grad),
                             nn.Linear(5, 3), snn.Leaky(beta=0.8, init_hidden=True, output=True,
                                                        spike_grad=spike_grad))

    x, y = torch.rand(7, 6), torch.randint(0, 3, (7,))
    own = AttackableSNN(certify(net(snn.surrogate.fast_sigmoid(slope=25)), 5), grad="bptt")
    swapped = AttackableSNN(certify(net(None), 5), grad="surrogate:fast_sigmoid")
    assert torch.allclose(_input_grad(own, x, y), _input_grad(swapped, x, y), atol=1e-7)


def test_rate_gradient_formula_single_layer():
    """grad='rate' on Linear -> Leaky with direct input: dL/dx = W^T (dL/dscores * rho'(I))."""
    torch.manual_seed(3)
    lin = nn.Linear(5, 4)
    with torch.no_grad():
        lin.bias.fill_(0.5)
    beta, thr, T = 0.7, 1.0, 6
    net = nn.Sequential(lin, snn.Leaky(beta=beta, threshold=thr, init_hidden=True, output=True))
    clf = AttackableSNN(certify(net, T), grad="rate")
    x = torch.rand(8, 5, requires_grad=True)
    w = torch.randn(8, 4)
    (g,) = torch.autograd.grad((clf(x) * w).sum(), x)
    cur = lin(x).detach()
    lo = thr / sum(beta**k for k in range(T))
    inside = ((cur > lo) & (cur < thr)).float()
    expect = (w * inside / (thr - lo)) @ lin.weight.detach()  # d rate/d score = 1 (rate readout)
    assert torch.allclose(g, expect, atol=1e-6)
    assert inside.sum() > 0  # the check is not vacuous


def test_triangular_surrogate_is_a_triangle():
    f = attacks.make_surrogate("triangular(width=2)")
    u = torch.tensor([-3.0, -1.0, 0.5, 1.0, 2.5], requires_grad=True)
    out = f(u)
    assert torch.equal(out, (u > 0).float())
    (g,) = torch.autograd.grad(out.sum(), u)
    assert torch.allclose(g, torch.tensor([0.0, 0.25, 0.375, 0.25, 0.0]))


def test_bad_modes_rejected(direct_model):
    with pytest.raises(ValueError, match="grad must be"):
        AttackableSNN(direct_model.bnet, grad="bpt")
    with pytest.raises(ValueError, match="unknown surrogate"):
        AttackableSNN(direct_model.bnet, grad="surrogate:nope")
    with pytest.raises(ValueError, match="noise"):
        AttackableSNN(direct_model.bnet, noise="sometimes")


def test_inputs_validated_to_unit_box(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x = direct_model.x[:4].clone()
    clf(x)
    nan = x.clone()
    nan[0, 0] = float("nan")
    for bad in (x + 1.5, x - 0.01, nan):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            clf(bad)
    with pytest.raises(ValueError, match="float"):
        clf((x * 16).long())


def test_state_is_reset_at_every_forward(direct_model, float64):
    """Scores of a batch do not depend on what ran before (no carried membrane)."""
    clf = AttackableSNN(direct_model.bnet)
    a, b = direct_model.x[:16], direct_model.x[16:48]
    first = clf(a)
    clf(b)
    clf(torch.ones_like(a))
    assert torch.equal(clf(a), first)  # the same computation again: bit for bit
    # and a sample's scores do not depend on its batch (float64: a batch of one rounds
    # differently, which in float32 may flip a spike on some CPUs)
    clf64, a64 = AttackableSNN(float64(direct_model.bnet)), a.double()
    full = clf64(a64)
    assert torch.equal(clf64(a64[3:4]), full[3:4]) and torch.equal(clf64(a64[5:9]), full[5:9])


def test_torchattacks_accepts_the_wrapper_directly(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:64], direct_model.y[:64]
    x_adv = torchattacks.PGD(clf, eps=0.15, alpha=0.02, steps=15)(x, y)
    assert (x_adv - x).abs().max() <= 0.15 + 1e-6
    assert clf.correct(x_adv, y).float().mean() < clf.correct(x, y).float().mean() - 0.5


def test_event_encoding_not_attackable():
    net = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    with pytest.raises(NotImplementedError, match="event"):
        AttackableSNN(certify(net, 4, encoding="event"))


# ------------------------------------------------------------------ rate noise
def test_fixed_draw_independent_of_batch_composition(rate_model, float64):
    clf = AttackableSNN(rate_model.bnet)
    x = rate_model.x[:40]
    full = clf.predict(x)
    idx = torch.tensor([5, 0, 33, 17])
    assert torch.equal(clf.eval_noise(x[idx]), clf.eval_noise(x)[:, idx])  # the draw itself
    clf64 = AttackableSNN(float64(rate_model.bnet))  # predictions: float64 (a smaller batch
    full64 = clf64.predict(x.double())  # rounds differently)
    assert torch.equal(clf64.predict(x[idx].double()), full64[idx])
    # the same draw is what certify gets
    assert torch.equal(rate_model.bnet(x, clf.eval_noise(x)), full)


def test_fresh_draws_differ_and_are_seeded(rate_model):
    x = rate_model.x[:40]
    clf = AttackableSNN(rate_model.bnet, noise="fresh", seed=7)
    a, b = clf(x), clf(x)
    assert not torch.equal(a, b)
    clf2 = AttackableSNN(rate_model.bnet, noise="fresh", seed=7)
    assert torch.equal(clf2(x), a)
    # predictions always use the fixed draw
    assert torch.equal(clf.predict(x), AttackableSNN(rate_model.bnet, seed=7).predict(x))


def test_zero_gradient_warning_without_straight_through(rate_model):
    """The exact (zero) encoder gradient masks PGD and is flagged; STE + EOT breaks it."""
    x, y = rate_model.x[:96], rate_model.y[:96]
    masked = AttackableSNN(rate_model.bnet, encoder_grad="exact")
    clean = masked.correct(x, y).float().mean()
    pgd = attacks.PGD(steps=10, random_start=False)
    with pytest.warns(ZeroGradientWarning, match="exactly zero"):
        x_adv = pgd(masked, x, y, 0.15)
    assert torch.equal(x_adv, x)  # sign(0) = 0: it never moved
    assert masked.grad_stats["zero_calls"] == masked.grad_stats["calls"] > 0

    ste = AttackableSNN(rate_model.bnet)  # straight-through encoder (default)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroGradientWarning)
        x_adv = attacks.EOTPGD(steps=10, eot_iter=4)(ste, x, y, 0.15)
        acc_eot = ste.correct(x_adv, y).float().mean()
        acc_pgd = ste.correct(pgd(ste, x, y, 0.15), y).float().mean()
    assert acc_eot < clean - 0.5 and acc_pgd < clean - 0.5

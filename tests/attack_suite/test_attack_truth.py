"""Attacks held against the truth: ties count as success, exact-proved samples never break,
and on a small net the default suite breaks what the exact verifier says is breakable."""

from __future__ import annotations

import warnings

import pytest
import snntorch as snn
import torch
from torch import nn

import attacks
from snncertify import certify, exact
from snncertify.gradmode import Relaxed

# every attack the suite can run by name (transfer needs a source: given below)
ALL = ["fgsm", "pgd", "apgd-ce", "apgd-dlr", "square", "eot-pgd", "spike-search", "transfer"]


@pytest.fixture
def tie_only_model() -> tuple:
    """Integrate-and-fire outputs over T = 2 steps, current ``I``: class 0 (I = 2) fires twice;
    class 1 (I = 2 x_0) fires once for x_0 in (1/4, 1/2] and twice above; class 2 never.
    From x_0 = 0.4 with eps 0.2 the only reachable error is a TIE (scores 1, 1, 0): no
    strict misclassification exists, and the competitors are not tied with each other
    (which would route DLR's gradient to the dead class 2)."""
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([2.0, 0.0, -5.0]))
        lin.weight[1, 0] = 2.0
    net = nn.Sequential(lin, snn.Leaky(beta=1.0, threshold=1.0, init_hidden=True, output=True))
    bnet = certify(net, 2, encoding="direct", readout="rate")
    x = torch.tensor([[0.4, 0.3, 0.6, 0.5]] * 3)
    y = torch.zeros(3, dtype=torch.long)
    return bnet, x, y


@pytest.mark.parametrize("name", ALL)
def test_a_tie_counts_as_success_for_every_attack(name, tie_only_model):
    bnet, x, y = tie_only_model
    clf = attacks.AttackableSNN(bnet)
    assert bool(clf.correct(x, y).all())
    kw = {"source": bnet} if name == "transfer" else {}
    atk = attacks.make_attack(name, **kw)
    x_adv = atk(clf, x, y, 0.2)
    scores = bnet(x_adv)
    assert torch.equal(scores[:, 0], scores[:, 1]), (name, scores)  # a tie, and it was kept
    assert not bool(attacks.strict_correct(scores, y).any()), name
    assert float((x_adv - x).abs().max()) <= 0.2 + 1e-6


def test_tie_aware_logits_only_shift_the_true_class(tie_only_model):
    bnet, x, y = tie_only_model
    clf = attacks.AttackableSNN(bnet)
    tied = torch.tensor([[0.6, 0.3, 0.6, 0.5]] * 3)
    pgd = attacks.suite._TA["PGD"](clf, eps=0.1, alpha=0.01, steps=1)
    pgd.forward(tied, y)  # registers the labels of this batch
    logits = pgd.get_logits(tied)
    raw = clf(tied)
    assert logits.argmax(1).tolist() == [1, 1, 1]  # the tie reads as a miss
    assert torch.equal(logits[:, 1], raw[:, 1])
    assert bool((raw[:, 0] - logits[:, 0] < 1e-4).all())


def test_relaxed_mode_is_smooth_and_tends_to_the_exact_net(direct_model):
    bnet, x = direct_model.bnet, direct_model.x[:64]
    exact_scores = bnet(x)
    with torch.no_grad():
        err = [float((bnet(x, grad=Relaxed(t)) - exact_scores).abs().mean())
               for t in (0.3, 0.03, 0.003)]
    assert err[0] > err[1] > err[2]
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bnet(xg, grad=Relaxed(0.3)).sum(), xg)
    assert g.abs().sum() > 0
    assert torch.equal(bnet(x), exact_scores)  # nothing stays switched


@pytest.fixture(scope="module")
def small_net(train_digits):
    """digits 64-12-10, T = 3, clean-trained: small enough for the exact verifier."""
    m = train_digits("direct", epochs=6, seed=7, hidden=12, beta=0.8, num_steps=3)
    return m.bnet, m.x[:12], m.y[:12]


def test_default_suite_reaches_the_exact_truth_and_never_breaks_a_proof(small_net):
    bnet, x, y = small_net
    eps = 0.05
    clf = attacks.AttackableSNN(bnet)
    truth = exact.verify(bnet, x, y, eps, time_limit=20)
    breakable = torch.tensor([r.margin_upper <= 0 for r in truth]) & clf.correct(x, y)
    proved = torch.tensor([r.margin_lower > 0 for r in truth])
    assert int(breakable.sum()) >= 3  # the test means something
    with warnings.catch_warnings():
        warnings.simplefilter("error", attacks.SoundnessWarning)
        res = attacks.evaluate(clf, (x, y), [eps], progress=False, exact=True)
    m = res.masks[eps]
    broken = m["clean"] & ~m["robust"]
    assert not bool((broken & proved).any())
    ties = breakable & torch.tensor([r.margin_upper == 0 for r in truth])
    assert int(ties.sum()) >= 3  # tie-only witnesses, the hard ones, are in the test
    # every breakable sample is found, ties included (SpikeSearch's MILP phase on a small net)
    assert torch.equal(broken, breakable)
    # the exact column: the truth, at most the attacks' robust accuracy
    assert torch.equal(m["exact"], m["clean"] & ~breakable)
    row = [r for r in res if r["attack"] == "exact"][0]
    assert row["undecided"] == 0
    assert res.accuracy(eps, "exact") <= res.accuracy(eps, "robust") <= res.accuracy(eps, "clean")


def test_spike_search_finds_more_than_the_old_suite(small_net):
    """On the same small net the previous protocol misses breakable samples SpikeSearch finds."""
    bnet, x, y = small_net
    eps = 0.05
    old = attacks.evaluate(bnet, (x, y), [eps], progress=False, run_sanity_checks=False,
                           attacks=["fgsm", "pgd", "apgd-ce", "apgd-dlr", "square"])
    new = attacks.evaluate(bnet, (x, y), [eps], progress=False, run_sanity_checks=False,
                           attacks=["spike-search"])
    assert new.accuracy(eps, "robust") < old.accuracy(eps, "robust")


def test_spike_search_arguments_are_checked():
    with pytest.raises(ValueError, match="temperatures"):
        attacks.SpikeSearch(taus=(0.3, 0.0))
    with pytest.raises(ValueError, match="levels"):
        attacks.SpikeSearch(levels=1)


def _queries(clf, atk, x, y, eps) -> tuple[torch.Tensor, int]:
    """The attack's output and the number of samples it ran through the network."""
    count = [0]
    hook = clf.bnet.register_forward_pre_hook(
        lambda _m, args: count.__setitem__(0, count[0] + args[0].shape[0]))
    try:
        return atk(clf, x, y, eps), count[0]
    finally:
        hook.remove()


def test_spike_search_skips_what_a_bound_proves(small_net):
    """Certified samples are returned unchanged (no input in the ball breaks them) at a
    lower cost; the full search never breaks them either."""
    bnet, x, y = small_net
    eps = 0.02
    clf = attacks.AttackableSNN(bnet)
    proved = bnet.certified(x, y, eps, "crown-ibp")
    assert 0 < int(proved.sum()) < int(clf.correct(x, y).sum())  # the test means something
    kw = dict(pgd_steps=10, restarts=2, iters=10)
    full, n_full = _queries(clf, attacks.SpikeSearch(prove=None, **kw), x, y, eps)
    cut, n_cut = _queries(clf, attacks.SpikeSearch(**kw), x, y, eps)
    assert torch.equal(cut[proved], x[proved])
    assert not bool((~attacks.strict_correct(bnet(full), y))[proved].any())
    assert n_cut < n_full


def test_spike_search_patience_ends_a_stalled_restart(small_net):
    bnet, x, y = small_net
    clf = attacks.AttackableSNN(bnet)
    kw = dict(pgd_steps=0, restarts=1, iters=40, prove=None)
    _, n_short = _queries(clf, attacks.SpikeSearch(patience=2, **kw), x, y, 0.02)
    _, n_long = _queries(clf, attacks.SpikeSearch(patience=40, **kw), x, y, 0.02)
    assert n_short < n_long
    with pytest.raises(ValueError, match="patience"):
        attacks.SpikeSearch(patience=0)
    with pytest.raises(ValueError, match="prove"):
        attacks.SpikeSearch(prove="no-such-method")


def test_spike_search_milp_phase_only_on_small_nets(small_net):
    """Over ``milp_neuron_steps`` the MILP phase does nothing: the output equals the search
    without it (the zoo's digits and MNIST nets are over the default)."""
    bnet, x, y = small_net
    clf = attacks.AttackableSNN(bnet)
    kw = dict(pgd_steps=0, restarts=1, iters=5, prove=None)
    without = attacks.SpikeSearch(milp_nodes=0, **kw)(clf, x, y, 0.05)
    gated = attacks.SpikeSearch(milp_neuron_steps=1, **kw)(clf, x, y, 0.05)
    assert torch.equal(without, gated)
    with_milp = attacks.SpikeSearch(**kw)(clf, x, y, 0.05)
    broken = lambda p: ~attacks.strict_correct(bnet(p), y)  # noqa: E731
    assert int(broken(with_milp).sum()) > int(broken(without).sum())
    with pytest.raises(ValueError, match="milp_nodes"):
        attacks.SpikeSearch(milp_nodes=-1)

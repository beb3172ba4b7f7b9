"""The MILP counterexample search (``snncertify.falsify``) and the exact verifier's warm start.

Held against ``exact.verify`` on small random nets of every encoding: the search finds a
counterexample exactly where the verifier says one exists, each one in the threat set
and misclassified (a tie included) by the real network, and never on a proved sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import snncertify
from snncertify import exact
from snncertify.correctness import margin, strict_correct
from snncertify.exact import _solve
from snncertify.falsify import FalsifyOptions, _build, _Sample, falsify
from snncertify.threat import FlipBudget, FlipMask, LinfBall


def _case(random_fc_net, unit_inputs, spike_inputs, encoding: str, seed: int, eps=0.05,
          B: int = 8):
    """A random 16-12-4 net for ``encoding`` (T = 3), inputs, the threat and the labels of
    the strictly correct samples (a clean tie would be broken at the anchor already)."""
    T, n_in = 3, 10 if encoding == "event" else 16
    net = random_fc_net(n_in, [12], 4, ["subtract", "zero"], seed)
    bnet = snncertify.certify(net, T, encoding=encoding, readout="count", seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if encoding == "event":
        x = spike_inputs(T, B, n_in, p=0.4, seed=gen)
    else:
        x = unit_inputs(B, n_in, seed=gen)
    scores = bnet(x)
    y = scores.argmax(1)
    keep = strict_correct(scores, y).nonzero().squeeze(1)
    x = x[:, keep] if encoding == "event" else x[keep]
    return bnet, x, y[keep], eps


@pytest.mark.parametrize("encoding,seed,eps", [("direct", 2, 0.05), ("direct", 5, 0.05),
                                               ("rate", 5, 0.05), ("event", 0, 1)])
def test_falsify_finds_exactly_what_the_exact_verifier_can_break(
        random_fc_net, unit_inputs, spike_inputs, encoding, seed, eps):
    bnet, x, y, eps = _case(random_fc_net, unit_inputs, spike_inputs, encoding, seed, eps)
    truth = exact.verify(bnet, x, y, eps, time_limit=20)
    breakable = torch.tensor([r.margin_upper <= 0 for r in truth])
    proved = torch.tensor([r.margin_lower > 0 for r in truth])
    assert bool(breakable.any()) and bool((~breakable).any())  # the test means something
    assert bool((breakable | proved).all())  # every sample decided
    # from the clean inputs, no attack's help: the full program must find them
    points, found = falsify(bnet, x, y, eps, None, x.clone(), FalsifyOptions(node_limit=100_000))
    assert torch.equal(found, breakable)
    threat = bnet.threat(x, eps)
    assert bool(threat.contains(x, points).all())
    m = margin(bnet(points), y)
    assert bool((m[found] <= 0).all()) and bool((m[~found] > 0).all())


def test_falsify_from_a_broken_anchor_keeps_it(random_fc_net, unit_inputs, spike_inputs):
    bnet, x, y, eps = _case(random_fc_net, unit_inputs, spike_inputs, "direct", 5)
    truth = exact.verify(bnet, x, y, eps, time_limit=20)
    anchors = torch.cat([r.witness for r in truth])
    points, found = falsify(bnet, x, y, eps, None, anchors)
    broken = margin(bnet(anchors), y) <= 0
    assert bool(broken.any())
    assert torch.equal(found[broken], broken[broken])
    assert torch.equal(points[broken], anchors[broken])


def test_neighbourhoods_grow_and_always_free_the_output_layer(random_fc_net, unit_inputs,
                                                              spike_inputs):
    bnet, x, y, eps = _case(random_fc_net, unit_inputs, spike_inputs, "direct", 5)
    threat = bnet.threat(x, eps)
    prop = bnet.interval_propagation(x, threat, None)
    prog = _build(bnet, x, threat, None, prop, 0, 2000)
    sample = _Sample(bnet, prog, None, int(y[0]), float("inf"),
                     FalsifyOptions(neighbourhoods=(2, 4)))
    sol = sample.anchor_assignment(x[:1])
    assert sol is not None
    sets = sample.free_sets(sol)
    assert sets[-1] is None  # the last try frees every binary (a small program)
    small = _Sample(bnet, prog, None, int(y[0]), float("inf"), FalsifyOptions(full_binaries=0))
    assert None not in small.free_sets(sol)
    last = max(prog.model.thr_layer)
    out_cols = {int(c) for e, g in zip(prog.model.thr, prog.model.thr_layer, strict=True)
                if g == last for c in e[1]}
    sizes = [len(s) for s in sets[:-1]]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for s in sets[:-1]:
        assert out_cols <= {int(c) for c in s}


def test_falsify_leaves_large_networks_alone(random_fc_net, unit_inputs, spike_inputs):
    bnet, x, y, eps = _case(random_fc_net, unit_inputs, spike_inputs, "direct", 5)
    points, found = falsify(bnet, x, y, eps, None, x, FalsifyOptions(max_neuron_steps=10))
    assert not bool(found.any()) and torch.equal(points, x)
    with pytest.warns(RuntimeWarning, match="not searched"):
        _, found = falsify(bnet, x, y, eps, None, x, FalsifyOptions(max_binaries=1))
    assert not bool(found.any())
    with pytest.raises(ValueError, match="threat set"):
        falsify(bnet, x, y, eps, None, (x + 2 * eps).clamp(0, 1))
    with pytest.raises(ValueError, match="must be > 0"):
        FalsifyOptions(time_budget=0)


def test_verify_warm_start_keeps_the_verdicts(random_fc_net, unit_inputs, spike_inputs):
    bnet, x, y, eps = _case(random_fc_net, unit_inputs, spike_inputs, "direct", 2)
    cold = exact.verify(bnet, x, y, eps, time_limit=20)
    start = torch.cat([r.witness for r in cold])
    warm = exact.verify(bnet, x, y, eps, start=start, time_limit=20)
    assert [r.verified for r in warm] == [r.verified for r in cold]
    assert [r.margin_upper <= 0 for r in warm] == [r.margin_upper <= 0 for r in cold]
    assert sum(r.details["solved"] for r in warm) <= sum(r.details["solved"] for r in cold)
    with pytest.raises(ValueError, match="threat set"):
        exact.verify(bnet, x, y, eps, start=(x + 2 * eps).clamp(0, 1))


def test_threats_know_their_members():
    x = torch.full((2, 3), 0.5)
    ball = LinfBall(0.1)
    assert ball.contains(x, x + 0.1).tolist() == [True, True]
    far = x.clone()
    far[1, 2] = 0.65
    assert ball.contains(x, far).tolist() == [True, False]
    frames = torch.zeros(2, 2, 3)  # [T, B, n]
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[0, 0, 1] = True
    flipped = frames.clone()
    flipped[0, 0, 1] = 1.0
    assert FlipMask(mask).contains(frames, flipped).tolist() == [True, True]
    other = frames.clone()
    other[1, 1, 0] = 1.0
    assert FlipMask(mask).contains(frames, other).tolist() == [True, False]
    two = flipped.clone()
    two[1, 0, 2] = 1.0
    assert FlipBudget(1).contains(frames, two).tolist() == [False, True]
    assert FlipBudget(2).contains(frames, two).tolist() == [True, True]
    half = frames.clone()
    half[0, 1, 0] = 0.5  # not a spike
    assert FlipBudget(3).contains(frames, half).tolist() == [True, False]


def test_a_node_limit_ends_a_solve_without_error(random_fc_net, unit_inputs, spike_inputs):
    """HiGHS reports a hit node limit as "solution limit" (status 16), which SciPy does not
    name: it ends that solve as a limit, like a time limit, not as a solver failure."""
    bnet, x, y, eps = _case(random_fc_net, unit_inputs, spike_inputs, "direct", 2, 0.1)
    threat = bnet.threat(x, eps)
    prog = _build(bnet, x, threat, None, bnet.interval_propagation(x, threat, None), 0, 2000)
    c = np.zeros(4)
    c[int(y[0])], c[(int(y[0]) + 1) % 4] = 1.0, -1.0
    vec, const = prog.objective(c)
    limited = _solve(prog.model, vec, const, "outer", 60.0, node_limit=1)
    assert limited.status == "timeout"
    full = _solve(prog.model, vec, const, "outer", 60.0)
    assert full.status == "optimal" and limited.lower <= full.lower + 1e-9

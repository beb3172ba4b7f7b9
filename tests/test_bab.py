"""Branch and bound (``snncertify.bab``): agreement with the exact MILP, sound bounds,
re-checked counterexamples.

Every verdict is checked against the REAL snnTorch network: a ``verified`` sample
must survive many perturbed inputs (random, box corners, flips) and the exact
verifier's witness; a ``falsified`` sample's counterexample must lie in the
threat set and be misclassified (a tie is wrong) by the real forward.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from test_exact import CASES, _resets, frames_of, perturbed, real_scores

import snncertify
from snncertify import bab, exact


def _real_margin(net, bnet, w, y: int, encoding: str, noise, readout: str) -> float:
    T = bnet.steps_for(w)
    s = real_scores(net, frames_of(encoding, w, T, noise), readout)[0]
    others = [j for j in range(s.numel()) if j != y]
    return float((s[y] - s[others]).min())


def _labels(bnet, x, noise) -> torch.Tensor:
    """The clean predictions (so most samples are correct and the margins matter)."""
    with torch.no_grad():
        return bnet(x, noise=noise).argmax(1)


@pytest.mark.parametrize("encoding,reset,hidden,readout,seed", CASES)
def test_bab_agrees_with_the_exact_milp(encoding, reset, hidden, readout, seed, make_case):
    net, bnet, x, eps = make_case(encoding, _resets(reset, hidden), hidden, seed, B=3,
                                  readout=readout)
    noise = bnet.prepare(x, None)
    y = _labels(bnet, x, noise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exact.ExactTimeoutWarning)
        ref = exact.verify(bnet, x, y, eps, noise=noise, time_limit=30)
    res = bab.verify(bnet, x, y, eps, noise=noise, time_limit=30)
    assert len(res) == len(ref)
    decided = 0
    for r, e in zip(res, ref, strict=True):
        assert r.status in ("verified", "falsified", "unknown")
        if r.verified:
            assert e.margin_upper > 0, "bab verified a sample the MILP falsifies"
            assert r.margin_lower > 0
        if r.falsified:
            assert not e.verified, "bab falsified a sample the MILP verifies"
        # the sound lower bound never exceeds what the real network achieves
        assert r.margin_lower <= e.margin_upper + 1e-9
        if e.status == "exact" and r.status != "unknown":
            decided += 1
            assert r.verified == e.verified
    # on these small nets branch and bound decides what the MILP decides
    assert decided == sum(e.status == "exact" for e in ref)


@pytest.mark.parametrize("encoding", ["direct", "rate", "event"])
def test_verified_samples_survive_sampled_inputs_and_counterexamples_are_real(encoding,
                                                                            make_case):
    net, bnet, x, eps = make_case(encoding, ["subtract", "subtract"], [12], 7, B=4)
    if encoding != "event":
        eps = 0.03  # some samples verified, some not
    noise = bnet.prepare(x, None)
    y = _labels(bnet, x, noise)
    y[-1] = (y[-1] + 1) % 4  # a wrong label: falsified by the clean input itself
    res = bab.verify(bnet, x, y, eps, noise=noise, time_limit=30)
    threat = bnet.threat(x, eps)
    gen = torch.Generator().manual_seed(0)
    pts = perturbed(encoding, x, eps, 64, gen)
    seen = {"verified": 0, "falsified": 0}
    for b, r in enumerate(res):
        sl = slice(b, b + 1)
        nb = None if noise is None else noise[:, sl]
        if r.verified:
            seen["verified"] += 1
            for p in pts:
                w = bnet.encoding.take(p, sl)
                m = _real_margin(net, bnet, w, int(y[b]), encoding, nb, "rate")
                assert m >= r.margin_lower - 1e-9 and m > 0
        if r.falsified:
            seen["falsified"] += 1
            w = r.counterexample
            assert bool(threat.take(sl, x.ndim).contains(bnet.encoding.take(x, sl), w).all())
            m = _real_margin(net, bnet, w, int(y[b]), encoding, nb, "rate")
            assert m <= 0 and math.isclose(m, r.margin_upper, abs_tol=1e-6)
    assert res[-1].falsified
    assert seen["verified"] >= 1, [r.status for r in res]


def test_bab_proves_more_than_crown_and_never_less(random_fc_net, unit_inputs):
    """On a net where CROWN leaves samples open, branching proves some of them, and a
    sample CROWN certifies is verified at once."""
    net = random_fc_net(16, [16], 4, ["subtract", "subtract"], 3)
    bnet = snncertify.certify(net, 4)
    x = unit_inputs(12, 16, seed=5)
    y = _labels(bnet, x, None)
    eps = 0.05
    cr = bnet.certified(x, y, eps, "crown")
    res = bab.verify(bnet, x, y, eps, time_limit=30)
    ver = torch.tensor([r.verified for r in res])
    assert bool((ver | ~cr).all()), "bab lost a sample CROWN certifies"
    assert int(ver.sum()) > int(cr.sum()), "the test net leaves nothing for branching"
    assert all(r.domains == 1 for r, c in zip(res, cr, strict=True) if c)
    assert any(r.domains > 1 and r.verified for r in res)


def test_method_bab_certifies_within_the_crown_and_exact_range(make_case):
    net, bnet, x, eps = make_case("direct", ["subtract", "subtract"], [12], 1, B=4)
    y = _labels(bnet, x, None)
    got = bnet.certified(x, y, eps, "bab")
    cr = bnet.certified(x, y, eps, "crown")
    ex = bnet.certified(x, y, eps, "exact")
    assert bool((cr <= got).all()) and bool((got <= ex).all())
    lower = bnet.margin_bounds(x, y, eps, "bab")
    assert bool((lower >= bnet.margin_bounds(x, y, eps, "crown") - 1e-6).all())


def test_time_limit_gives_unknown_with_a_sound_bound(random_fc_net, unit_inputs):
    net = random_fc_net(16, [24], 4, ["subtract", "subtract"], 4)
    bnet = snncertify.certify(net, 6)
    x = unit_inputs(6, 16, seed=2)
    y = _labels(bnet, x, None)
    res = bab.verify(bnet, x, y, 0.2, time_limit=0.3, leaf_unstable=0)
    assert any(r.status == "unknown" for r in res)
    for r in res:
        if r.status == "unknown":
            assert r.reason and r.margin_lower <= 0
            assert r.margin_lower <= r.margin_upper


def test_bad_options_are_named(make_case):
    net, bnet, x, eps = make_case("direct", ["subtract", "subtract"], [12], 1, B=1)
    y = _labels(bnet, x, None)
    with pytest.raises(ValueError, match="branching"):
        bab.verify(bnet, x, y, eps, branching="random")
    with pytest.raises(ValueError, match="unknown option"):
        bab.verify(bnet, x, y, eps, timelimit=3)
    with pytest.raises(ValueError, match="start"):
        bab.verify(bnet, x, y, eps, start=x + 1.0)

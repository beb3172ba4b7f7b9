"""The exact MILP verifier (``method="exact"``, ``snncertify.exact.verify``).

Every check is against the REAL snnTorch network, run step by step with its
own hidden state: bounds must contain its outputs on many perturbed inputs,
every witness must reproduce its margin, the exact optimum must be at least
as tight as every relaxation and, for a tiny event net, equal brute force.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import snntorch as snn
import torch
from torch import nn

import snncertify
from snncertify import exact

TOL = 1e-6


# ----------------------------------------------------------------- helpers
@torch.no_grad()
def real_scores(net: nn.Sequential, frames: torch.Tensor, readout: str) -> torch.Tensor:
    """snnTorch itself: reset every Leaky, loop ``net(x_t)``; scores ``[B, K]`` (float32
    readout, returned as float64)."""
    for m in net.modules():
        if isinstance(m, snn.Leaky):
            m.mem = torch.zeros(1)
    spks, mems = [], []
    for t in range(frames.shape[0]):
        spk, mem = net(frames[t])
        spks.append(spk)
        mems.append(mem)
    seq = torch.stack(mems if readout == "membrane" else spks)  # float32, as a user computes
    return (seq.sum(0) if readout == "count" else seq.mean(0)).double()


def frames_of(encoding: str, x: torch.Tensor, T: int, noise: torch.Tensor | None):
    if encoding == "direct":
        return x.unsqueeze(0).expand((T, *x.shape))
    if encoding == "rate":
        return (x > noise).to(x.dtype)
    return x


def perturbed(encoding: str, x: torch.Tensor, eps, n: int, gen: torch.Generator):
    """``n`` inputs per sample in the threat set: random, box corners, flips.

    Returns ``[n, B, ...]`` (event: ``[n, T, B, ...]``).
    """
    if encoding == "event":
        T, B = x.shape[:2]
        out = x.unsqueeze(0).repeat((n,) + (1,) * x.ndim)
        for i in range(n):
            for b in range(B):
                flat = out[i, :, b].reshape(-1)
                if isinstance(eps, int):  # a budget
                    k = int(torch.randint(0, eps + 1, (), generator=gen))
                    pos = torch.randperm(flat.numel(), generator=gen)[:k]
                else:
                    cand = torch.nonzero(eps[:, b].reshape(-1)).flatten()
                    pos = cand[torch.rand(len(cand), generator=gen) < 0.5]
                flat[pos] = 1 - flat[pos]
        return out
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    u = torch.rand((n, *x.shape), generator=gen)
    corner = (torch.rand((n, *x.shape), generator=gen) < 0.5).to(x.dtype)
    u[n // 2:] = corner[n // 2:]
    return lo + (hi - lo) * u


CASES = [
    (enc, reset, hidden, readout, seed)
    for enc in ("direct", "rate", "event")
    for seed, (reset, hidden, readout) in enumerate((
        ("subtract", [12], "rate"),
        ("zero", [10], "count"),
        ("none", [12], "membrane"),
        ("mixed", [8, 8], "rate"),
    ))
]


def _resets(reset: str, hidden: list[int]) -> list[str]:
    if reset == "mixed":
        return ["zero", "subtract", "none"][: len(hidden) + 1]
    return [reset] * (len(hidden) + 1)


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("encoding,reset,hidden,readout,seed", CASES)
def test_exact_bounds_sound_and_tighter_than_ibp(encoding, reset, hidden, readout, seed,
                                                 make_case):
    event = encoding == "event"  # smaller: HiGHS needs seconds for a budget over 48 flips
    net, bnet, x, eps = make_case(encoding, _resets(reset, hidden), hidden, seed,
                                  readout=readout, n_in=10 if event else 16,
                                  B=1 if event else 2, budget=seed % 2 == 1)
    noise = bnet.draw_noise(x) if encoding == "rate" else None
    il, iu = bnet.bounds(x, eps, noise=noise)
    el, eu = bnet.bounds(x, eps, method="exact", noise=noise)
    assert bool((el >= il - TOL).all()) and bool((eu <= iu + TOL).all())
    assert bool((el <= eu).all())

    # the real network on many inputs of the threat set stays inside
    gen = torch.Generator().manual_seed(seed)
    xs = perturbed(encoding, x, eps, 200, gen)
    T = bnet.num_steps
    worst_lo = torch.full_like(el, float("inf"), dtype=torch.float64)
    worst_hi = torch.full_like(eu, -float("inf"), dtype=torch.float64)
    for xp in xs:
        s = real_scores(net, frames_of(encoding, xp, T, noise), readout)
        worst_lo, worst_hi = torch.minimum(worst_lo, s), torch.maximum(worst_hi, s)
    assert bool((el.double() <= worst_lo).all()), (el, worst_lo)
    assert bool((eu.double() >= worst_hi).all()), (eu, worst_hi)

    # verify(): sound, reproducible witnesses, consistent with the margin bounds
    y = bnet(x, noise=noise).argmax(1)
    results = exact.verify(bnet, x, y, eps, noise=noise)
    margins_exact = bnet.margin_bounds(x, y, eps, method="exact", noise=noise)
    margins_ibp = bnet.margin_bounds(x, y, eps, noise=noise)
    for b, r in enumerate(results):
        others = torch.arange(margins_exact.shape[1]) != y[b]
        assert r.margin_lower >= margins_ibp[b, others].min().item() - TOL
        assert r.margin_lower == pytest.approx(margins_exact[b, others].min().item(), abs=TOL)
        check_witness(net, bnet, r, readout)
        for xp in xs[:, :, b:b + 1] if encoding == "event" else xs[:, b:b + 1]:
            nz = None if noise is None else noise[:, b:b + 1]
            s = real_scores(net, frames_of(encoding, xp, T, nz), readout)[0]
            m = (s[r.label] - s)[others].min().item()
            assert m >= r.margin_lower - TOL
    assert sum(r.status == "exact" for r in results) >= len(results) - 1


def check_witness(net, bnet, r: exact.ExactResult, readout: str) -> None:
    """The witness is in the threat set and the REAL net reproduces its margin."""
    assert r.status in ("exact", "gap")
    T = bnet.num_steps
    frames = frames_of(bnet.encoding.name, r.witness, T, r.noise)
    s = real_scores(net, frames, readout)[0]
    others = torch.arange(s.shape[0]) != r.label
    real = (s[r.label] - s)[others].min().item()
    assert real == pytest.approx(r.margin_upper, abs=TOL)
    assert r.margin_lower <= real + TOL  # sound
    if r.status == "exact":  # within 1e-5 + the float32 rounding allowance of the scores
        assert real <= r.margin_lower + r.details["exact_tol"]
        assert r.details["exact_tol"] < 1e-4
    if r.margin_upper <= 0:
        assert r.counterexample is not None
        assert s[r.label] <= s[others].max()  # the prediction really changes (or ties)


def test_witness_inside_threat_set(make_case):
    net, bnet, x, eps = make_case("direct", ["subtract", "subtract"], [12], seed=5, B=3)
    y = bnet(x).argmax(1)
    for b, r in enumerate(exact.verify(bnet, x, y, eps)):
        lo, hi = (x[b] - eps).clamp(0, 1), (x[b] + eps).clamp(0, 1)
        assert bool(((r.witness[0] >= lo) & (r.witness[0] <= hi)).all())
    net, bnet, x, eps = make_case("rate", ["zero", "zero"], [12], seed=6, B=3)
    y = bnet(x).argmax(1)
    for b, r in enumerate(exact.verify(bnet, x, y, eps)):
        lo, hi = (x[b] - eps).clamp(0, 1), (x[b] + eps).clamp(0, 1)
        assert bool(((r.witness[0] >= lo) & (r.witness[0] <= hi)).all())


def test_point_threat_is_the_forward(make_case):
    net, bnet, x, _ = make_case("direct", ["zero", "subtract"], [10], seed=11, B=2)
    s = bnet(x)
    el, eu = bnet.bounds(x, 0.0, method="exact")
    assert torch.allclose(el, s, atol=1e-5) and torch.allclose(eu, s, atol=1e-5)


def test_event_budget_matches_brute_force(random_fc_net, spike_inputs):
    T, n_in, k = 2, 6, 2
    net = random_fc_net(n_in, [6], 3, ["subtract", "zero"], seed=3, scale=3.0)
    bnet = snncertify.certify(net, T, encoding="event", readout="count")
    x = spike_inputs(T, 2, n_in, p=0.5, seed=0)
    y = bnet(x).argmax(1)
    el, eu = bnet.bounds(x, k, method="exact")
    results = exact.verify(bnet, x, y, k)
    for b in range(2):
        base = x[:, b].reshape(-1)
        best_lo = torch.full((3,), float("inf"), dtype=torch.float64)
        best_hi = -best_lo
        best_margin = float("inf")
        for r in range(k + 1):
            for pos in itertools.combinations(range(base.numel()), r):
                f = base.clone()
                f[list(pos)] = 1 - f[list(pos)]
                s = real_scores(net, f.reshape(T, 1, n_in), "count")[0]
                best_lo, best_hi = torch.minimum(best_lo, s), torch.maximum(best_hi, s)
                others = torch.arange(3) != y[b]
                best_margin = min(best_margin, (s[y[b]] - s)[others].min().item())
        assert torch.allclose(el[b].double(), best_lo, atol=TOL), (el[b], best_lo)
        assert torch.allclose(eu[b].double(), best_hi, atol=TOL), (eu[b], best_hi)
        assert results[b].status == "exact"
        assert results[b].margin_lower == pytest.approx(best_margin, abs=TOL)
        assert results[b].margin_upper == pytest.approx(best_margin, abs=TOL)
        check_witness(net, bnet, results[b], "count")
        assert int((results[b].witness[:, 0] != x[:, b]).sum()) <= k


@pytest.mark.slow  # 10-40 s each: HiGHS on the pooled conv MILPs
@pytest.mark.parametrize("pool_first", [True, False])
def test_conv_pool_batchnorm_exact_bounds_are_sound_and_tighter_than_ibp(pool_first,
                                                                         random_conv_net):
    net = random_conv_net(pool_first, seed=4)
    T = 2
    bnet = snncertify.certify(net, T, encoding="direct", readout="rate")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 6, 6, generator=gen)
    eps = 0.025
    il, iu = bnet.bounds(x, eps)
    el, eu = bnet.bounds(x, eps, method="exact")
    assert bool((el >= il - TOL).all()) and bool((eu <= iu + TOL).all())
    xs = perturbed("direct", x, eps, 200, gen)
    for xp in xs:
        s = real_scores(net, frames_of("direct", xp, T, None), "rate")
        assert bool((s >= el.double() - TOL).all()) and bool((s <= eu.double() + TOL).all())
    y = bnet(x).argmax(1)
    for r in exact.verify(bnet, x, y, eps):
        check_witness(net, bnet, r, "rate")


def test_too_many_binaries_raise_value_error(make_case):
    net, bnet, x, eps = make_case("direct", ["subtract", "subtract"], [12], seed=2)
    with pytest.raises(ValueError, match="too large"):
        exact.verify(bnet, x, bnet(x).argmax(1), 0.5, max_binaries=5)
    with pytest.raises(ValueError, match="too large"):
        exact.exact_bounds(bnet, x, bnet.threat(x, 0.5), None, None, max_binaries=5)


def test_timeout_is_sound(make_case):
    net, bnet, x, _ = make_case("event", ["zero", "zero"], [16], seed=1, B=1, n_in=24, T=4)
    y = bnet(x).argmax(1)
    threat = bnet.threat(x, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        el, _ = exact.exact_bounds(bnet, x, threat, None, bnet.margin_spec(x, y),
                                   time_limit=0.05)
    il = bnet.margin_bounds(x, y, 6)
    assert bool((el >= il - TOL).all())
    res = exact.verify(bnet, x, y, 6, time_limit=0.05)[0]
    if any(issubclass(w.category, exact.ExactTimeoutWarning) for w in caught):
        assert res.status == "timeout"
    gen = torch.Generator().manual_seed(0)
    for xp in perturbed("event", x, 6, 100, gen):
        s = real_scores(net, xp, "rate")[0]
        others = torch.arange(4) != y[0]
        assert ((s[y[0]] - s)[others] >= el[0, others].double() - TOL).all()
        assert (s[y[0]] - s)[others].min().item() >= res.margin_lower - TOL


@pytest.mark.parametrize("encoding", ["direct", "rate", "event"])
def test_bounds_tighten_from_ibp_and_crown_to_alpha_crown_to_exact(encoding, make_case):
    """exact >= alpha-crown >= max(ibp, crown), elementwise, on margins and on scores."""
    needed = {"crown", "alpha-crown"}
    if not needed <= set(snncertify.available_methods()):
        pytest.skip("crown / alpha-crown not registered yet")
    event = encoding == "event"
    for i, reset in enumerate(("subtract", "zero", "none")):
        net, bnet, x, eps = make_case(encoding, [reset, reset], [10], seed=13 + i,
                                      B=1, n_in=10 if event else 16, budget=i == 1)
        noise = bnet.draw_noise(x) if encoding == "rate" else None
        y = bnet(x, noise=noise).argmax(1)
        m = {name: bnet.margin_bounds(x, y, eps, method=name, noise=noise)
             for name in ("ibp", "crown", "alpha-crown", "exact")}
        assert bool((m["exact"] >= m["alpha-crown"] - TOL).all()), (reset, m)
        assert bool((m["alpha-crown"] >= torch.maximum(m["ibp"], m["crown"]) - TOL).all()), reset
        if encoding == "direct":
            b = {name: bnet.bounds(x, eps, method=name)
                 for name in ("ibp", "crown", "alpha-crown", "exact")}
            assert bool((b["exact"][0] >= b["alpha-crown"][0] - TOL).all())
            assert bool((b["exact"][1] <= b["alpha-crown"][1] + TOL).all())

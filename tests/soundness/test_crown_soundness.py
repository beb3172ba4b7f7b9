"""S-CROWN soundness (crown-ibp, crown, alpha-crown) against the REAL snnTorch forward.

Random FC and conv networks (1 to 3 Leaky layers, every reset mode, beta and
threshold scalar / per-neuron / per-channel / learnable, every encoding incl.
the k-flip budget, every readout, T = 1..6): the scores and margins of
hundreds of perturbed inputs run through snnTorch itself lie inside every
method's bounds, and every Leaky's membranes lie inside the intermediate
bounds that full CROWN refines.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netgen import build, net_specs, perturbations, reference, sample_input

from snncertify import FlipBudget, certify
from snncertify.alpha import AdamSteps, alpha_crown
from snncertify.crown import crown_bounds

BATCH = 2
N_RANDOM = 160  # uniform in the ball and box corners (random flips for events)
N_GRADIENT = 12  # signed-gradient steps (netgen.perturbations' third)
SETTINGS = settings(
    max_examples=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def budget_flips(x: torch.Tensor, k: int, n: int, seed: int) -> torch.Tensor:
    """``n`` event inputs ``[n, T, B, ...]`` with at most ``k`` flips per sample."""
    gen = torch.Generator().manual_seed(seed)
    T, B = x.shape[:2]
    flat = x.permute(1, 0, *range(2, x.ndim)).reshape(B, -1)  # [B, T*F]
    r = torch.rand((n, *flat.shape), generator=gen)
    rank = r.argsort(-1).argsort(-1)
    kn = torch.randint(0, k + 1, (n, 1, 1), generator=gen)
    kn[: n // 2] = k  # half of them use the full budget
    flip = rank < kn
    out = torch.where(flip, 1 - flat, flat)
    return out.reshape(n, B, T, *x.shape[2:]).transpose(1, 2)


def flatten_perturbed(bnet, xs: torch.Tensor) -> torch.Tensor:
    if bnet.encoding.name == "event":
        n, T, B = xs.shape[:3]
        return xs.permute(1, 0, 2, *range(3, xs.ndim)).reshape(T, n * B, *xs.shape[3:])
    return xs.reshape(-1, *xs.shape[2:])


def check_sound(spec, eps_choice: float, alpha_iters: int = 2) -> dict:
    net, in_shape = build(spec)
    bnet = certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout)
    x = sample_input(spec.encoding, in_shape, BATCH, spec.num_steps, spec.seed)
    noise = bnet.draw_noise(x) if spec.encoding == "rate" else None
    if spec.encoding == "event":
        if spec.seed % 2:
            k = 1 + spec.seed % 3
            eps, mask, threat = None, None, FlipBudget(k)
        else:
            gen = torch.Generator().manual_seed(spec.seed + 1)
            mask = torch.rand(x.shape, generator=gen) < eps_choice
            mask.view(-1)[spec.seed % mask.numel()] = True
            eps, threat = None, mask
    else:
        eps, mask, threat = eps_choice, None, eps_choice

    scores = bnet(x, noise=noise).detach()
    K = scores.shape[1]
    gen = torch.Generator().manual_seed(spec.seed + 2)
    y = torch.randint(0, K, (BATCH,), generator=gen)
    C = bnet.margin_spec(x, y)
    th = bnet.threat(x, threat)
    results = {}
    with torch.no_grad():
        for method in ("ibp", "crown-ibp", "crown"):
            results[method] = (
                bnet.spec_bounds(x, threat, None, method, noise),
                bnet.spec_bounds(x, threat, C, method, noise),
            )
        results["alpha-crown"] = (
            alpha_crown(bnet, x, th, noise, None, steps=AdamSteps(alpha_iters)),
            alpha_crown(bnet, x, th, noise, C, steps=AdamSteps(alpha_iters)),
        )

    # every method is at least as tight as IBP, by construction
    (il, iu), (cl, cu) = results["ibp"]
    for method, ((lo, hi), (mlo, mhi)) in results.items():
        assert (lo >= il).all() and (hi <= iu).all(), method
        assert (mlo >= cl).all() and (mhi <= cu).all(), method

    # perturbed inputs, run through snnTorch itself
    if isinstance(threat, FlipBudget):
        xs = budget_flips(x, threat.k, N_RANDOM, spec.seed)
    elif spec.encoding == "event":
        xs = perturbations(bnet, x, eps, N_RANDOM, spec.seed, noise=noise, mask=mask)
    else:
        gen = torch.Generator().manual_seed(spec.seed + 3)
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        half = N_RANDOM // 2
        uniform = lo + (hi - lo) * torch.rand((half, *x.shape), generator=gen)
        corners = torch.where(torch.rand((half, *x.shape), generator=gen) < 0.5, lo, hi)
        steps = perturbations(bnet, x, eps, 3 * N_GRADIENT, spec.seed, noise=noise)
        xs = torch.cat([uniform, corners, steps])
    n = xs.shape[0]
    big = flatten_perturbed(bnet, xs)
    big_noise = None if noise is None else noise.repeat(1, n, *([1] * (noise.ndim - 2)))
    bnet_big = certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout)
    ref_scores, ref_layers = reference(bnet_big, net, big, big_noise)
    ref_scores = ref_scores.reshape(n, BATCH, -1)
    ref_margins = torch.einsum("bmk,nbk->nbm", C, ref_scores)
    for method, ((lo, hi), (mlo, mhi)) in results.items():
        assert (ref_scores >= lo).all() and (ref_scores <= hi).all(), f"{method}: score bound"
        assert (ref_margins >= mlo).all() and (ref_margins <= mhi).all(), f"{method}: margin"

    # full CROWN's refined intermediate membrane bounds hold at every step
    with torch.no_grad():
        prop = bnet.interval_propagation(x, th, noise)
        refined = crown_bounds(bnet, x, th, noise, None).bounds
    for j, rec in zip(
        [i for i, op in enumerate(bnet.ops) if op.stateful], prop.layers, strict=True
    ):
        mem = ref_layers[rec.path][0]
        T = mem.shape[0]
        mem = mem.reshape(T, n, BATCH, *mem.shape[2:]).transpose(0, 1)
        lo, hi = torch.stack(refined.mem_l[j]), torch.stack(refined.mem_u[j])
        assert (lo >= rec.mem_l).all() and (hi <= rec.mem_u).all()
        assert (mem >= lo).all() and (mem <= hi).all(), f"crown membrane {rec.path}"
    return results


@SETTINGS
@given(spec=net_specs(max_steps=6), eps=st.sampled_from([0.01, 0.05, 0.2]))
def test_crown_sound_on_random_networks(spec, eps):
    check_sound(spec, eps)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(spec=net_specs(encodings=("direct",), max_steps=3))
def test_crown_sound_at_large_eps(spec):
    check_sound(spec, 0.5, alpha_iters=1)

"""α-CROWN: relaxation slopes optimised per neuron and per spec row.

Intermediate membrane bounds come from full CROWN (``crown.crown_bounds``) and
stay fixed; the slopes used for the OUTPUT bound are then optimised by
projected gradient ascent (Adam) on the sum of the lower bounds. Each Leaky
has four σ tensors ``[T, B, 2M, ...]`` in [0, 1] (spike lower/upper line,
reset lower/upper line), a slope being ``lo + σ (hi - lo)`` between the two
hull-segment slopes of ``relax.Relaxation.slope_range``; they start at CROWN's
own choice. Every slope gives a sound line (``relax.py``), so every iterate is
a sound bound: the best seen per entry is returned, together with CROWN's
own result (itself the best of CROWN, CROWN-IBP and IBP), so it never loses
to any of them.

The bound returned is not differentiable w.r.t. the network's parameters.
Spec rows are optimised in chunks that fit the call's memory budget (the σ
of one row never affect another row's bound, so chunks are independent).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .budget import CostModel, Plan, Sizes
from .crown import (
    ROW_KEPT,
    ROW_TENSORS,
    Setup,
    SpecRows,
    check_supported,
    crown_bounds,
    linear_cost,
    output_lower,
)
from .methods import register_method
from .relax import Relaxation, reset_fn, spike_fn
from .threat import Threat

ITERATIONS = 20
LEARNING_RATE = 0.1
#: per σ element: the value, its gradient and Adam's two moments, plus slack
SIGMA_TENSORS = 6


def alpha_cost(sizes: Sizes, rows: int) -> CostModel:
    """Memory model: full CROWN's, plus per row the σ of every Leaky (4 kinds)
    and the graph of one output pass (:mod:`snncertify.budget`)."""
    crown = linear_cost(sizes, rows)
    step = sizes.steps * sizes.itemsize
    per_row = (ROW_TENSORS * sizes.widest + ROW_KEPT * sizes.total
               + 4 * SIGMA_TENSORS * sizes.leaky) * step
    return CostModel(crown.per_sample, max(per_row, crown.per_row), 0.0)


def initial_sigmas(setup: Setup, rows: int) -> dict[int, dict[str, Tensor]]:
    """CROWN's slope choice as σ tensors ``[T, B, rows, ...]`` for every Leaky."""
    sigmas: dict[int, dict[str, Tensor]] = {}
    for j, op in enumerate(setup.ops):
        if not op.stateful:
            continue
        thr, beta = op.threshold().detach(), op.beta().detach()
        ml, mu = setup.mem_l[j], setup.mem_u[j]
        T = len(ml)
        found = {}
        kinds = [("spk", spike_fn(thr), 0)]
        if op.reset != "none":
            kinds.append(("rst", reset_fn(op.reset, beta, thr), 1))
        for kind, f, shift in kinds:
            for side, upper in (("lo", False), ("up", True)):
                steps = []
                for t in range(T):
                    if t - shift < 0:
                        steps.append(torch.zeros_like(ml[0]))
                        continue
                    rel = Relaxation(f, ml[t - shift], mu[t - shift])
                    steps.append(rel.default_sigma(upper))
                sig = torch.stack(steps).unsqueeze(2)  # [T, B, 1, ...]
                shape = (T, sig.shape[1], rows, *sig.shape[3:])
                found[f"{kind}_{side}"] = sig.expand(shape).clone().requires_grad_(True)
        sigmas[j] = found
    return sigmas


def alpha_crown(
    bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
    iterations: int | None = None, lr: float | None = None, need_upper: bool = True,
    plan: Plan | None = None,
) -> tuple[Tensor, Tensor]:
    """Bounds ``[B, M]`` of ``C @ scores`` with optimised slopes (see module doc).

    ``iterations`` (default :data:`ITERATIONS`) Adam steps of size ``lr``
    (default :data:`LEARNING_RATE`) on σ, each followed by projection onto [0, 1].
    ``need_upper=False`` optimises the lower bounds only (upper: IBP's).
    ``plan``: memory plan (spec rows per chunk).
    """
    iterations = ITERATIONS if iterations is None else iterations
    lr = LEARNING_RATE if lr is None else lr
    check_supported(bnet.ops, "alpha-crown")
    with torch.no_grad():
        setup, C, lower, upper = crown_bounds(bnet, x, threat, noise, C, "alpha-crown",
                                              need_upper, plan)
        if setup is None:  # a point threat: the forward itself
            return lower, upper
        spec = SpecRows(C, need_upper)
        C2 = spec.rows
        best = spec.as_rows(lower, upper)
    if iterations > 0:
        rows = C2.shape[1]
        step = setup.rows_per_pass(rows)
        setup.plan = None  # each chunk of rows below is one pass
        best = torch.cat([
            optimise(bnet, setup, C2[:, a:a + step], best[:, a:a + step], iterations, lr)
            for a in range(0, rows, step)], dim=1)
    return spec.merge(best, lower, upper)


def optimise(bnet, setup: Setup, C: Tensor, best: Tensor, iterations: int, lr: float) -> Tensor:
    """Best lower bounds ``[B, M]`` of the rows ``C`` ``[B, M, K]`` seen over ``iterations``
    Adam steps on σ, starting from ``best`` (sound bounds of the same rows)."""
    sigmas = initial_sigmas(setup, C.shape[1])
    params = [p for d in sigmas.values() for p in d.values()]
    opt = torch.optim.Adam(params, lr=lr)
    setup.alpha = sigmas
    try:
        for _ in range(iterations):
            with torch.enable_grad():
                bound = output_lower(bnet, setup, C)
                grads = torch.autograd.grad(-bound.sum(), params, allow_unused=True)
            best = torch.maximum(best, bound.detach())
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.detach()
            opt.step()
            with torch.no_grad():
                for p in params:
                    p.clamp_(0, 1)
        with torch.no_grad():
            return torch.maximum(best, output_lower(bnet, setup, C))
    finally:
        setup.alpha = {}


register_method("alpha-crown", alpha_crown, alpha_cost)

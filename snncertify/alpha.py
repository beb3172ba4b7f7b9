"""α-CROWN: relaxation slopes optimised per neuron and per spec row.

Intermediate membrane bounds come from full CROWN (``crown.crown_bounds``) and
stay fixed; the slopes used for the OUTPUT bound are then optimised by
projected gradient ascent (Adam) on the sum of the lower bounds. Each Leaky
has one σ tensor ``[T, B, M, ...]`` in [0, 1], the slope of the joint line of
everything a membrane feeds (``relax.joint_lower``) being ``lo + σ (hi - lo)``
between its two hull-segment slopes; they start at the S-CROWN rule's choice. Every slope gives a sound line (``relax.py``), so every iterate is
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
from .progress import progress_bar
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
               + SIGMA_TENSORS * sizes.leaky) * step
    return CostModel(crown.per_sample, max(per_row, crown.per_row), 0.0)


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
        starts = range(0, rows, step)
        with progress_bar(total=len(starts) * iterations, desc="alpha-crown: optimising slopes",
                          unit="it", leave=False, log=False) as bar:
            best = torch.cat([
                optimise(bnet, setup, C2[:, a:a + step], best[:, a:a + step], iterations, lr, bar)
                for a in starts], dim=1)
    return spec.merge(best, lower, upper)


def initial_sigmas(bnet, setup: Setup, C: Tensor) -> dict[int, Tensor]:
    """σ ``[T, B, M, ...]`` per Leaky reproducing the slopes of one plain pass for ``C``."""
    rows = C.shape[1]
    setup.alpha_start = {
        j: [None] * setup.num_steps for j, op in enumerate(setup.ops) if op.stateful}
    try:
        with torch.no_grad():
            output_lower(bnet, setup, C)
        found = {}
        for j, steps in setup.alpha_start.items():
            like = setup.mem_l[j][0]
            full = (setup.batch, rows, *like.shape[1:])
            found[j] = torch.stack([
                torch.full(full, 0.5, dtype=like.dtype, device=like.device) if s is None
                else s.expand(full) for s in steps]).detach().clone().requires_grad_(True)
        return found
    finally:
        setup.alpha_start = {}


def optimise(bnet, setup: Setup, C: Tensor, best: Tensor, iterations: int, lr: float,
             bar=None) -> Tensor:
    """Best lower bounds ``[B, M]`` of the rows ``C`` ``[B, M, K]`` seen over ``iterations``
    Adam steps on σ, starting from ``best`` (sound bounds of the same rows); ``bar``
    advances once per step."""
    sigmas = initial_sigmas(bnet, setup, C)
    params = list(sigmas.values())
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
            if bar is not None:
                bar.update()
        with torch.no_grad():
            return torch.maximum(best, output_lower(bnet, setup, C))
    finally:
        setup.alpha = {}


register_method("alpha-crown", alpha_crown, alpha_cost)

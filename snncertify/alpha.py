"""α-CROWN: relaxation slopes optimised per neuron and per spec row.

Intermediate membrane bounds come from full CROWN (``crown.crown_bounds``) and
stay fixed; the slopes used for the OUTPUT bound are then optimised by
projected gradient ascent (Adam) on the sum of the lower bounds. Each neuron op
has one σ tensor ``[T, B, M, ...]`` in [0, 1] (its "slopes"), the slope of the
joint line of everything a membrane feeds (``relax.joint_lower``) being
``lo + σ (hi - lo)`` between its two hull-segment slopes; they start at the
S-CROWN rule's choice. Every slope gives a sound line (``relax.py``), so every iterate is
a sound bound: the best seen per entry is returned, together with CROWN's
own result (itself the best of CROWN, CROWN-IBP and IBP), so it never loses
to any of them.

The bound returned is not differentiable w.r.t. the network's parameters.
Spec rows are optimised in chunks that fit the call's memory budget (the σ
of one row never affect another row's bound, so chunks are independent).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .budget import CostModel, Plan, Sizes
from .crown import (
    ROW_KEPT,
    ROW_TENSORS,
    CrownBounds,
    Intermediate,
    LineChoice,
    Problem,
    SpecRows,
    check_supported,
    crown_bounds,
    linear_cost,
    neuron_indices,
    output_lower,
    output_pass,
)
from .methods import register_method
from .progress import progress_bar
from .threat import Threat

ITERATIONS = 20
LEARNING_RATE = 0.1
#: per σ element: the value, its gradient and Adam's two moments, plus slack
SLOPE_TENSORS = 6


@dataclass(frozen=True)
class AdamSteps:
    """The slope optimiser: ``iterations`` Adam steps of size ``lr``, each followed by
    projection onto [0, 1]."""

    iterations: int = ITERATIONS
    lr: float = LEARNING_RATE


def alpha_cost(sizes: Sizes, rows: int) -> CostModel:
    """Memory model: full CROWN's, plus per row the σ of every neuron op (4 kinds)
    and the graph of one output pass (:mod:`snncertify.budget`)."""
    crown = linear_cost(sizes, rows)
    step = sizes.steps * sizes.itemsize
    per_row = (ROW_TENSORS * sizes.widest + ROW_KEPT * sizes.total
               + SLOPE_TENSORS * sizes.neurons) * step
    return CostModel(crown.per_sample, max(per_row, crown.per_row), 0.0)


def alpha_crown(
    bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
    need_upper: bool = True, plan: Plan | None = None, steps: AdamSteps | None = None,
) -> tuple[Tensor, Tensor]:
    """Bounds ``[B, M]`` of ``C @ scores`` with optimised slopes (see module doc).

    ``steps``: the optimiser (default :class:`AdamSteps`: :data:`ITERATIONS` steps
    of :data:`LEARNING_RATE`). ``need_upper=False`` optimises the lower bounds only
    (upper: IBP's). ``plan``: memory plan (spec rows per chunk).
    """
    steps = AdamSteps(ITERATIONS, LEARNING_RATE) if steps is None else steps  # read per call
    check_supported(bnet.ops, "alpha-crown")
    with torch.no_grad():
        res = crown_bounds(bnet, x, threat, noise, C, "alpha-crown", need_upper, plan)
        if res.problem is None:  # a point threat: the forward itself
            return res.lower, res.upper
        spec = SpecRows(res.spec, need_upper)
        best = spec.as_rows(res.lower, res.upper)
    if steps.iterations > 0:
        best = _optimise_chunks(bnet, res, spec.rows, best, steps)
    return spec.merge(best, res.lower, res.upper)


def _optimise_chunks(bnet, res: CrownBounds, C: Tensor, best: Tensor, steps: AdamSteps
                     ) -> Tensor:
    """:func:`optimise` on chunks of the rows ``C`` ``[B, M, K]`` that fit the memory
    plan (the σ of one row never affect another row's bound)."""
    rows = C.shape[1]
    step = res.problem.rows_per_pass(rows)
    problem = replace(res.problem, plan=None)  # each chunk of rows below is one pass
    starts = range(0, rows, step)
    with progress_bar(total=len(starts) * steps.iterations, desc="alpha-crown: optimising slopes",
                      unit="it", leave=False, log=False) as bar:
        return torch.cat([
            optimise(bnet, problem, res.bounds, C[:, a:a + step], best[:, a:a + step], steps, bar)
            for a in starts], dim=1)


def initial_slopes(bnet, problem: Problem, bounds: Intermediate, C: Tensor) -> dict[int, Tensor]:
    """σ ``[T, B, M, ...]`` per neuron op reproducing the slopes of one plain pass for ``C``
    (leaves of the autograd graph, for the optimiser)."""
    rows = C.shape[1]
    with torch.no_grad():
        _, used = output_pass(bnet, problem, bounds, C, LineChoice(record=True))
    found = {}
    for j in neuron_indices(problem.ops):
        like = bounds.mem_l[j][0]
        full = (problem.batch, rows, *like.shape[1:])
        found[j] = torch.stack([
            torch.full(full, 0.5, dtype=like.dtype, device=like.device) if s is None
            else s.expand(full)
            for s in used.get(j) or [None] * problem.num_steps]).detach().clone().requires_grad_(True)
    return found


def optimise(bnet, problem: Problem, bounds: Intermediate, C: Tensor, best: Tensor,
             steps: AdamSteps, bar=None) -> Tensor:
    """Best lower bounds ``[B, M]`` of the rows ``C`` ``[B, M, K]`` seen over the Adam
    ``steps`` on σ, starting from ``best`` (sound bounds of the same rows); ``bar``
    advances once per step."""
    slopes = initial_slopes(bnet, problem, bounds, C)
    params = list(slopes.values())
    opt = torch.optim.Adam(params, lr=steps.lr)
    lines = LineChoice(slopes=slopes)
    for _ in range(steps.iterations):
        with torch.enable_grad():
            bound = output_lower(bnet, problem, bounds, C, lines)
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
        return torch.maximum(best, output_lower(bnet, problem, bounds, C, lines))


register_method("alpha-crown", alpha_crown, alpha_cost)

"""Upper bounds of the cross-entropy over a threat set: the robust loss of certified training.

For logits ``s * scores`` (``s`` the logit scale) and label ``y``,
``CE = log(1 + sum_{j != y} exp(s d_j))`` with ``d_j = score_j - score_y``.
Two sound upper bounds of its maximum over the threat set:

* ``"margins"``: ``CE(-s m, y)`` with ``m`` ``[B, K]`` the lower bounds of
  ``score_y - score_j`` from the bound method: ``K - 1`` linear rows per
  sample (Gowal et al. 2018; Zhang et al. 2020).
* ``"fused"`` (loss fusion, after auto_LiRPA's): ONE linear row per sample.
  Each ``exp(s d_j)`` lies below its chord on ``d_j``'s IBP interval
  ``[l_j, u_j]``, so the sum is below an affine function ``c @ scores + b``;
  one back-substitution bounds ``c @ scores`` from above over the threat set,
  and ``log`` is increasing. The sum is also capped by IBP's
  ``sum_j exp(s u_j)``, so the fused bound is never above IBP's margin loss.
  Back-substitution memory is that of one row instead of ``K - 1``.
  ``top_rows = r > 0``: the ``r`` classes with the highest IBP bound ``u_j`` (the
  likeliest to win) keep their own margin row (``exp(-s m_j)`` as for
  ``"margins"``) and only the others share the fused row: ``r + 1`` rows, and
  (measured on ``mnist-fc-ibp``, eps 0.05-0.1) ``r = 2`` comes within 1-2 % of the
  margin rows' loss where ``r = 0`` stays near IBP's.

Both are differentiable (gradients flow through the chords too) and sound:
never below the CE of any input in the threat set, up to the float32 rounding of
the final log-sum-exp (a few ulps of ``1 + CE``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .crown import make_problem, output_lower
from .methods import spec_interval
from .readout import readout_bounds
from .threat import Threat

LOSSES = ("margins", "fused")
#: methods the fused bound runs its one row through (IBP: the chord adds nothing to IBP)
FUSED_METHODS = ("crown-ibp",)
#: chords narrower than this (in logit units) use the slope at the right end (a sound line)
_MIN_WIDTH = 1e-4
#: widening of the chord sum relative to the size of its terms (about 16 float32 ulps:
#: covers the rounding of exp, of the chords' intercepts and of their sum)
_PAD = 1e-6


def robust_ce(bnet, x: Tensor, y: Tensor, eps, method: str = "crown-ibp",
              noise: Tensor | None = None, logit_scale: float = 1.0,
              loss: str = "margins", reduction: str = "none", top_rows: int = 0) -> Tensor:
    """Upper bounds ``[B]`` (``reduction="mean"``: their mean, a scalar) of ``max CE(logit_scale * scores(x'), y)`` over the threat set.

    Args:
        bnet: a :class:`~snncertify.wrapper.BoundedSNN`.
        x: inputs ``[B, ...]`` (event: frames ``[T, B, ...]``); ``y``: labels ``[B]``.
        eps: the threat (L-inf radius in input units, or event flip mask / budget).
        method: the bound method (``"fused"``: one of :data:`FUSED_METHODS`).
        noise: the rate draw ``[T, B, ...]`` (None: the seeded default).
        logit_scale: ``s`` in the logits ``s * scores`` (> 0).
        loss: ``"margins"`` or ``"fused"`` (module docstring).
        reduction: ``"none"`` or ``"mean"``.
        top_rows: ``"fused"`` only: classes kept as their own margin row (module docstring).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown robust loss {loss!r}; known: {list(LOSSES)}")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
    if not isinstance(top_rows, int) or top_rows < 0:
        raise ValueError(f"top_rows must be an int >= 0, got {top_rows!r}")
    if loss == "margins":
        if top_rows:
            raise ValueError("top_rows applies to loss='fused' (margins keeps every row)")
        m = bnet.margin_bounds(x, y, eps, method=method, noise=noise)
        return F.cross_entropy(-logit_scale * m, y, reduction=reduction)
    if method not in FUSED_METHODS:
        raise ValueError(f"the fused robust loss runs through {list(FUSED_METHODS)}, "
                         f"not {method!r}: use loss='margins' for it")
    bnet.check_method_mode(method)
    top_rows = min(top_rows, bnet.num_classes(x) - 1)
    C = bnet.margin_spec(x, y)[:, : top_rows + 1]  # the rows' count, for the memory plan only
    noise = bnet.prepare(x, noise)
    threat = bnet.threat(x, eps)
    plan = bnet.plan(x, C, method, need_upper=False)
    out = torch.cat([_fused(bnet, xc, y[sl], tc, nc, logit_scale, method, plan, top_rows)
                     for sl, xc, tc, nc in bnet.split(x, threat, noise, plan, method)])
    return out.mean() if reduction == "mean" else out


def chord(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """``(slope, intercept)`` of a line above ``exp`` on ``[lo, hi]`` (elementwise):
    the chord, or for a width under :data:`_MIN_WIDTH` the line through ``(lo, e^lo)``
    with slope ``e^hi`` (above the chord there, as ``exp`` is convex)."""
    e_lo, e_hi = lo.exp(), hi.exp()
    width = hi - lo
    wide = width > _MIN_WIDTH
    slope = torch.where(wide, (e_hi - e_lo) / width.clamp(min=_MIN_WIDTH), e_hi)
    return slope, e_lo - slope * lo


def _fused(bnet, x: Tensor, y: Tensor, threat: Threat, noise: Tensor | None, scale: float,
           method: str, plan, top_rows: int) -> Tensor:
    """The fused bound ``[B]`` of one chunk (module docstring)."""
    prop = bnet.interval_propagation(x, threat, noise)
    s_lo, s_hi = readout_bounds(bnet.readout, prop)  # [B, K]
    col = y.unsqueeze(1)
    others = torch.ones_like(s_lo, dtype=torch.bool).scatter(1, col, False)
    lo = scale * (s_lo - s_hi.gather(1, col))  # s d_j in [lo_j, hi_j]
    hi = scale * (s_hi - s_lo.gather(1, col))
    # exp(s d_j - shift), shift >= 0: no overflow, and exp(-shift) <= 1 is the j = y term
    shift = hi.masked_fill(~others, -torch.inf).amax(1, keepdim=True).clamp(min=0).detach()
    lo, hi = lo - shift, hi - shift
    top = hi.masked_fill(~others, -torch.inf).argsort(1, descending=True)[:, :top_rows]
    rest = others.scatter(1, top, False)  # the classes that share the fused row
    slope, icpt = chord(lo, hi)
    slope, icpt = slope * rest, (icpt * rest).sum(1)  # [B, K], [B]
    # sum_j slope_j (s d_j - shift) + icpt_j = c @ scores + b, with c = s slope - s sum(slope) e_y
    c = scale * slope
    c = c - c.sum(1, keepdim=True) * (~others)
    b = icpt - (slope * shift).sum(1)  # slope sums over the shared classes only
    cap = (hi.exp() * rest).sum(1)  # IBP's bound of the shared classes' sum
    # the rounding of the chords and of c @ scores + b: relative to the terms' size
    mag = cap + (slope * torch.maximum(lo.abs(), hi.abs())).sum(1)
    eye = torch.eye(s_lo.shape[1], dtype=s_lo.dtype, device=s_lo.device)
    # rows: e_y - e_j for the top classes (margins), then -c (minus the fused row's upper bound)
    C = torch.cat([eye[y].unsqueeze(1) - eye[top], (-c).unsqueeze(1)], dim=1)
    low = spec_interval(C, s_lo, s_hi)[0]
    if not threat.is_point():
        problem, bounds = make_problem(bnet, x, threat, noise, prop, method, plan)
        low = torch.maximum(output_lower(bnet, problem, bounds, C), low)
    kept = (-scale * low[:, :top_rows] - shift).exp().sum(1)  # exp(-s m_j - shift), top j
    shared = b - low[:, top_rows]  # >= sum over the shared j of exp(s d_j - shift)
    shared = torch.minimum(shared, cap) + _PAD * mag
    shift = shift.squeeze(1)
    return shift + torch.log(torch.exp(-shift) + kept + shared)


__all__ = ["FUSED_METHODS", "LOSSES", "chord", "robust_ce"]

"""S-IBP through a neuron layer's T steps with a hand-written backward.

:meth:`NeuronOp.interval_seq <snncertify.ops.neuron.NeuronOp.interval_seq>` written
with autograd records about 20 elementwise ops per step, each with its own backward
kernel and saved tensors; on a convnet's first layer that was most of an IBP
training step. The rule lives here once (:func:`membrane_step`, :func:`pad_step`): the
autograd code records it, and :class:`_IntervalFn` runs it without autograd (so the
bounds are the same bit for bit), saving per step only the two bound tensors it
returns and three {0, 1} masks. The backward uses that every rule has
``d lo_t / d I^l_t = d hi_t / d I^u_t = 1`` and ``d lo_t / d lo_{t-1} = β`` or 0
(``hi`` alike), chosen by the masks; resets are detached, as in the autograd version.

Used for the base neuron rule (every reset of ``snn.Leaky``, the subtract and none
resets of ``snn.Synaptic``) when no other membrane bounds are intersected and neither
β nor θ needs a gradient; otherwise ``interval_seq`` runs its autograd code.
"""

from __future__ import annotations

import math

import torch
from snntorch import surrogate
from torch import Tensor
from torch.autograd.function import once_differentiable

#: per step, as {0, 1} tensors of the bounds' dtype (None: all ones): whether the lower /
#: upper bound carries β back to the previous one (its branch was taken), and whether the
#: slack's magnitude came from the upper bound (None: no slack)
Masks = tuple[Tensor | None, Tensor | None, Tensor | None]


def membrane_step(reset: str, ml: Tensor, mu: Tensor, rl: Tensor, ru: Tensor, il: Tensor,
                  iu: Tensor, beta: Tensor, thr: Tensor, masks: bool = False
                  ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The base rule of :meth:`NeuronOp.membrane_interval
    <snncertify.ops.neuron.NeuronOp.membrane_interval>` (before any slack):
    ``(lo, hi, keep_l, keep_u)``, the keep masks (:data:`Masks`) only if ``masks``.
    Plain tensor ops: under autograd they record their own graph."""
    keep_l = keep_u = None
    if reset == "subtract":
        # h(u) = βu - θ H(u - θ): βu up to θ, βu - θ above it (infimum βθ - θ).
        base_l, base_u = torch.addcmul(il, beta, ml), torch.addcmul(iu, beta, mu)
        lo = torch.addcmul(base_l, rl, thr, value=-1)
        hi = torch.addcmul(base_u, ru, thr, value=-1)
        unstable = rl != ru
        cap_l, top_u = beta * thr - thr + il, base_u - thr
        cap_u = beta * thr + iu
        lo = torch.where(unstable, torch.minimum(base_l, cap_l), lo)
        hi = torch.where(unstable, torch.maximum(top_u, cap_u), hi)
        if masks:
            keep_l = (~(unstable & (cap_l < base_l))).to(lo.dtype)
            keep_u = (~(unstable & (cap_u > top_u))).to(hi.dtype)
    elif reset == "zero":
        # g(u) = u 1[u <= θ] on [ml, mu]. Upper: mu if no spike is possible,
        # max(θ, 0) if one is, 0 if it is certain. Lower: ml if no spike is
        # possible, else min(ml, 0) (exact when unstable; when a spike is
        # certain g = 0 >= min(ml, 0), equal to it for θ >= 0).
        thr_pos = thr.clamp(min=0)
        spike_possible = ru > 0
        gl = torch.where(spike_possible, ml.clamp(max=0), ml)
        gu = torch.where(spike_possible, torch.addcmul(thr_pos, rl, thr_pos, value=-1), mu)
        lo, hi = torch.addcmul(il, beta, gl), torch.addcmul(iu, beta, gu)
        if masks:
            keep_l = (~spike_possible | (ml <= 0)).to(lo.dtype)
            keep_u = 1 - ru  # ru is 0 or 1: no spike possible
    else:
        lo, hi = torch.addcmul(il, beta, ml), torch.addcmul(iu, beta, mu)
    return lo, hi, keep_l, keep_u


def pad_step(lo: Tensor, hi: Tensor, slack: float, masks: bool = False
             ) -> tuple[Tensor, Tensor, Tensor | None]:
    """The membrane slack: ``lo - s mag, hi + s mag`` with ``mag = 1 + max(|lo|, |hi|) =
    1 + max(-lo, hi)``, and (if ``masks``) whether ``mag`` came from ``hi``."""
    if not slack:
        return lo, hi, None
    neg_lo = -lo
    mag = torch.maximum(hi, neg_lo).add_(1)  # in place on a fresh tensor
    from_hi = torch.ge(hi, neg_lo).to(hi.dtype) if masks else None
    return torch.add(lo, mag, alpha=-slack), torch.add(hi, mag, alpha=slack), from_hi


def _run(reset: str, beta: Tensor, thr: Tensor, cur_l: list[Tensor], cur_u: list[Tensor],
         slack: float, keep_masks: bool):
    """The T steps without autograd: ``(spk_l, spk_u, mem_l, mem_u, masks)``, lists of T
    tensors ``[B, ...]`` (``masks``: T :data:`Masks` if ``keep_masks``, else empty)."""
    ml = mu = torch.zeros_like(cur_l[0])
    rl = ru = torch.gt(ml, thr).to(ml.dtype)  # R_1 = H(U_0 - θ); u - θ > 0 iff u > θ
    sl_, su_, ml_, mu_, masks = [], [], [], [], []
    for il, iu in zip(cur_l, cur_u, strict=True):
        lo, hi, keep_l, keep_u = membrane_step(reset, ml, mu, rl, ru, il, iu, beta, thr,
                                               keep_masks)
        ml, mu, from_hi = pad_step(lo, hi, slack, keep_masks)
        rl, ru = torch.gt(ml, thr).to(ml.dtype), torch.gt(mu, thr).to(mu.dtype)  # strict H
        sl_.append(rl)
        su_.append(ru)
        ml_.append(ml)
        mu_.append(mu)
        if keep_masks:
            masks.append((keep_l, keep_u, from_hi))
    return sl_, su_, ml_, mu_, masks


def _sum(*terms: Tensor | None) -> Tensor | None:
    """The sum of the terms that are not None (None if none is); never writes into them."""
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0] + present[1] if len(present) > 1 else present[0]
    for t in present[2:]:
        total.add_(t)
    return total


def _masked(g: Tensor, mask: Tensor | None) -> Tensor:
    """``g * mask`` in place (``g`` is a fresh tensor)."""
    return g if mask is None else g.mul_(mask)


class _IntervalFn(torch.autograd.Function):
    """inputs ``(reset, beta, thr, slack, spike_fn, T, *cur_l, *cur_u)``; outputs
    ``(*spk_l, *spk_u, *mem_l, *mem_u)``; spikes get ``spike_fn``'s surrogate gradient."""

    @staticmethod
    def forward(ctx, reset, beta, thr, slack, spike_fn, steps, *cur):
        sl, su, ml, mu, masks = _run(reset, beta, thr, list(cur[:steps]), list(cur[steps:]),
                                     slack, keep_masks=True)
        ctx.set_materialize_grads(False)
        ctx.slack, ctx.spike_fn, ctx.steps = slack, spike_fn, steps
        ctx.masks = masks  # neither inputs nor outputs: kept on ctx
        ctx.save_for_backward(beta, thr, *ml, *mu)
        return (*sl, *su, *ml, *mu)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        T, slack = ctx.steps, ctx.slack
        beta, thr, *saved = ctx.saved_tensors
        ml, mu = saved[:T], saved[T:]
        deriv = _derivative(ctx.spike_fn, ml[0].dtype)
        g_sl, g_su, g_ml, g_mu = (grads[k * T:(k + 1) * T] for k in range(4))
        d_l: list[Tensor | None] = [None] * T
        d_u: list[Tensor | None] = [None] * T
        carry_l = carry_u = None
        for t in reversed(range(T)):
            gl = _sum(g_ml[t], carry_l, None if g_sl[t] is None else deriv(ml[t] - thr, g_sl[t]))
            gu = _sum(g_mu[t], carry_u, None if g_su[t] is None else deriv(mu[t] - thr, g_su[t]))
            keep_l, keep_u, from_hi = ctx.masks[t]
            if slack and (gl is not None or gu is not None):
                gl = torch.zeros_like(ml[t]) if gl is None else gl
                gu = torch.zeros_like(mu[t]) if gu is None else gu
                g_mag = torch.sub(gu, gl).mul_(slack)  # lo - s mag, hi + s mag
                to_hi = g_mag * from_hi  # mag = max(hi, -lo) + 1
                gl, gu = gl - g_mag.sub_(to_hi), gu + to_hi
            d_l[t], d_u[t] = gl, gu
            carry_l = None if gl is None else _masked(gl * beta, keep_l)
            carry_u = None if gu is None else _masked(gu * beta, keep_u)
        return (None, None, None, None, None, None, *d_l, *d_u)


def _derivative(spike_fn, dtype: torch.dtype):
    """``(v, grad) -> grad * d spike_fn(v) / d v`` (``v = mem - θ``, a fresh tensor the
    function may overwrite) through the module's own surrogate: snnTorch's atan and
    fast-sigmoid in place, any other through autograd."""
    known = _known_derivative(spike_fn)
    if known is not None:  # their forward returns float32: the gradient passes that cast
        return lambda v, grad: known(v, grad.to(torch.float32))

    def through_autograd(v: Tensor, grad: Tensor) -> Tensor:
        with torch.enable_grad():
            v.requires_grad_(True)
            (g,) = torch.autograd.grad(spike_fn(v).to(dtype), v, grad)
        return g
    return through_autograd


def _atan_grad(alpha: float):
    """snnTorch's ``ATan.backward`` in place on the fresh ``v``, in its float operations
    (``alpha / 2 / (1 + (pi / 2 * alpha * v) ** 2) * grad``)."""
    return lambda v, grad: v.mul_(math.pi / 2 * alpha).pow_(2).add_(1).reciprocal_() \
        .mul_(alpha / 2).mul_(grad)


def _fast_sigmoid_grad(slope: float):
    """snnTorch's ``FastSigmoid.backward`` (``grad / (slope * |v| + 1) ** 2``) in place."""
    return lambda v, grad: torch.div(grad, v.abs_().mul_(slope).add_(1.0).pow_(2), out=v)


#: the code of snnTorch's surrogate closures (one code object per factory) -> the backward
#: of that closure given its parameter; others go through autograd
_KNOWN = {surrogate.atan().__code__: ("alpha", _atan_grad),
          surrogate.fast_sigmoid().__code__: ("slope", _fast_sigmoid_grad)}


def _known_derivative(spike_fn):
    entry = _KNOWN.get(getattr(spike_fn, "__code__", None))
    if entry is None or not spike_fn.__closure__:
        return None
    name, make = entry
    cells = dict(zip(spike_fn.__code__.co_freevars, spike_fn.__closure__, strict=True))
    value = cells[name].cell_contents
    return make(value) if isinstance(value, (int, float)) else None


def interval_seq(reset: str, beta: Tensor, thr: Tensor, spike_fn, cur_l: list[Tensor],
                 cur_u: list[Tensor], slack: float
                 ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """S-IBP of one neuron layer over T steps: ``(spk_l, spk_u, mem_l, mem_u)``, each T
    tensors ``[B, ...]``, equal to the autograd rule's values; gradients flow to the
    currents (spikes through ``spike_fn``, the module's surrogate). ``beta`` and ``thr``
    must not need gradients (the caller falls back otherwise)."""
    steps = len(cur_l)
    if torch.is_grad_enabled() and any(c.requires_grad for c in (*cur_l, *cur_u)):
        out = _IntervalFn.apply(reset, beta.detach(), thr.detach(), slack, spike_fn, steps,
                                *cur_l, *cur_u)
        return tuple(list(out[k * steps:(k + 1) * steps]) for k in range(4))
    return _run(reset, beta, thr, cur_l, cur_u, slack, keep_masks=False)[:4]

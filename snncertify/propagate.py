"""Run the op list over time: the exact forward and S-IBP (interval) propagation.

Both walk the ops layer by layer. A stateless op is applied to each time step
separately with the shapes a user's own snnTorch loop would use (``[B, ...]``),
so results are bit-identical to it (batched matmuls round differently).
Before the first Leaky, a direct-encoded input is "static" (the same at every
step) and is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .ops import BoundOp, IdentityOp, LeakyOp


@dataclass
class LayerRecord:
    """Per-Leaky values (or bounds) over time, each ``[T, B, ...]``.

    For a forward trace, ``*_l`` and ``*_u`` are the same tensor.
    """

    path: str
    cur_l: Tensor
    cur_u: Tensor
    mem_l: Tensor
    mem_u: Tensor
    spk_l: Tensor
    spk_u: Tensor


@dataclass
class Propagation:
    """Output of a propagation: per-step network outputs ``[T, B, ...]`` and Leaky records."""

    out_l: Tensor
    out_u: Tensor
    layers: list[LayerRecord] = field(default_factory=list)


def _apply(op: BoundOp, fn, *xs: Tensor, static: bool) -> tuple[Tensor, ...]:
    """``fn`` on each time step (or once when static), with a clear shape error."""
    try:
        if static:
            res = fn(*xs)
            return res if isinstance(res, tuple) else (res,)
        steps = [fn(*(x[t] for x in xs)) for t in range(xs[0].shape[0])]
        if isinstance(steps[0], tuple):
            return tuple(torch.stack(s) for s in zip(*steps))
        return (torch.stack(steps),)
    except RuntimeError as err:
        shape = list(xs[0].shape[0 if static else 1:])
        raise ValueError(
            f"input of shape {shape} (per step, batch first) does not fit {op.name}: {err}"
        ) from err


def _expand(x: Tensor, num_steps: int) -> Tensor:
    return x.unsqueeze(0).expand((num_steps, *x.shape))


def forward(ops: list[BoundOp], z: Tensor, static: bool, num_steps: int) -> Propagation:
    """Exact forward. ``z``: ``[B, ...]`` if static else ``[T, B, ...]``."""
    layers = []
    for op in ops:
        if op.stateful:
            cur = _expand(z, num_steps) if static else z
            spk, mem = op.forward_seq(cur)
            layers.append(LayerRecord(op.path, cur, cur, mem, mem, spk, spk))
            z, static = spk, False
        else:
            (z,) = _apply(op, op.forward, z, static=static)
    return Propagation(z, z, layers)


def interval(
    ops: list[BoundOp], lo: Tensor, hi: Tensor, static: bool, num_steps: int, slack: float
) -> Propagation:
    """S-IBP over the unrolled network; ``slack`` widens membranes (0 at a point)."""
    layers = []
    for op in ops:
        if op.stateful:
            cl, cu = (_expand(lo, num_steps), _expand(hi, num_steps)) if static else (lo, hi)
            sl, su, ml, mu = op.interval_seq(cl, cu, slack)
            layers.append(LayerRecord(op.path, cl, cu, ml, mu, sl, su))
            lo, hi, static = sl, su, False
        else:
            lo, hi = _apply(op, op.interval, lo, hi, static=static)
    if slack and not _ends_in_leaky(ops):
        pad = slack * (1 + torch.maximum(lo.abs(), hi.abs()))
        lo, hi = lo - pad, hi + pad
    return Propagation(lo, hi, layers)


def _ends_in_leaky(ops: list[BoundOp]) -> bool:
    for op in reversed(ops):
        if not isinstance(op, IdentityOp):
            return isinstance(op, LeakyOp)
    return False

"""Run the op list over time: the exact forward and S-IBP (interval) propagation.

Both walk the ops layer by layer. Between ops a sequence is a LIST of per-step
tensors ``[B, ...]``: each op sees exactly the tensors a user's own snnTorch
loop would give it (same shapes, fresh allocations), so the forward is
bit-identical to that loop. Matmul and convolution results on the CPU depend
on the batch size and even on the memory alignment of their input, so neither
folding time into the batch nor slicing a stacked tensor would be.
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


Seq = Tensor | list[Tensor]  # [B, ...] when static, else T tensors [B, ...]


def _apply(op: BoundOp, fn, *xs: Seq, static: bool) -> tuple[Seq, ...]:
    """``fn`` on each time step (or once when static), with a clear shape error."""
    try:
        if static:
            res = fn(*xs)
            return res if isinstance(res, tuple) else (res,)
        steps = [fn(*step) for step in zip(*xs, strict=True)]
        if isinstance(steps[0], tuple):
            return tuple(list(s) for s in zip(*steps, strict=True))
        return (steps,)
    except RuntimeError as err:
        shape = list((xs[0] if static else xs[0][0]).shape)
        raise ValueError(
            f"input of shape {shape} (per step, batch first) does not fit {op.name}: {err}"
        ) from err


def _steps(z: Seq, static: bool, num_steps: int) -> list[Tensor]:
    return [z] * num_steps if static else list(z)


def forward(ops: list[BoundOp], z: Seq, static: bool, num_steps: int) -> Propagation:
    """Exact forward. ``z``: ``[B, ...]`` if static, else ``[T, B, ...]`` or T tensors."""
    layers = []
    for op in ops:
        if op.stateful:
            cur = _steps(z, static, num_steps)
            z, mem = op.forward_seq(cur)
            cur, spk = torch.stack(cur), torch.stack(z)
            layers.append(LayerRecord(op.path, cur, cur, mem, mem, spk, spk))
            static = False
        else:
            (z,) = _apply(op, op.forward, z, static=static)
    out = torch.stack(_steps(z, static, num_steps))
    return Propagation(out, out, layers)


def interval(
    ops: list[BoundOp], lo: Seq, hi: Seq, static: bool, num_steps: int, slack: float
) -> Propagation:
    """S-IBP over the unrolled network; ``slack`` widens membranes (0 at a point)."""
    layers = []
    for op in ops:
        if op.stateful:
            cl, cu = _steps(lo, static, num_steps), _steps(hi, static, num_steps)
            lo, hi, ml, mu = op.interval_seq(cl, cu, slack)
            layers.append(LayerRecord(
                op.path, torch.stack(cl), torch.stack(cu), ml, mu, torch.stack(lo), torch.stack(hi)
            ))
            static = False
        else:
            lo, hi = _apply(op, op.interval, lo, hi, static=static)
    lo, hi = torch.stack(_steps(lo, static, num_steps)), torch.stack(_steps(hi, static, num_steps))
    if slack and not _ends_in_leaky(ops):
        pad = slack * (1 + torch.maximum(lo.abs(), hi.abs()))
        lo, hi = lo - pad, hi + pad
    return Propagation(lo, hi, layers)


def _ends_in_leaky(ops: list[BoundOp]) -> bool:
    for op in reversed(ops):
        if not isinstance(op, IdentityOp):
            return isinstance(op, LeakyOp)
    return False

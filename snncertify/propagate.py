"""Run the op list over time: the exact forward and S-IBP (interval) propagation.

Both walk the ops layer by layer. Between ops a sequence is a LIST of per-step
tensors ``[B, ...]``: each op sees exactly the tensors a user's own snnTorch
loop would give it (same shapes, fresh allocations), so the forward is
bit-identical to that loop. Matmul and convolution results on the CPU depend
on the batch size and even on the memory alignment of their input, so neither
folding time into the batch nor slicing a stacked tensor would be.
Before the first neuron, a direct-encoded input is "static" (the same at every
step) and is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .gradmode import GradMode
from .ops import AffineOp, BoundOp, IdentityOp
from .ops.base import rounding_pad

Seq = Tensor | list[Tensor]  # [B, ...] when static, else T tensors [B, ...]


class LayerRecord:
    """Per-neuron-layer values (or bounds) over time: ``cur_*``, ``mem_*``, ``spk_*``, each ``[T, B, ...]``.

    For a forward trace, ``*_l`` and ``*_u`` are the same tensor. Sequences
    given as lists of per-step tensors are stacked on first access only, so
    a plain forward or bound computation does not pay for copies nobody reads.
    """

    _FIELDS = ("cur_l", "cur_u", "mem_l", "mem_u", "spk_l", "spk_u")

    def __init__(self, path: str, cur_l: Seq, cur_u: Seq, mem_l: Seq, mem_u: Seq,
                 spk_l: Seq, spk_u: Seq) -> None:
        self.path = path
        self._raw = dict(zip(self._FIELDS, (cur_l, cur_u, mem_l, mem_u, spk_l, spk_u), strict=True))

    def _get(self, name: str) -> Tensor:
        value = self._raw[name]
        if isinstance(value, list):
            twin = {"_l": "_u", "_u": "_l"}[name[-2:]]
            twin_name = name[:-2] + twin
            stacked = torch.stack(value)
            if self._raw[twin_name] is value:
                self._raw[twin_name] = stacked
            self._raw[name] = value = stacked
        return value

    def steps(self, name: str) -> list[Tensor]:
        """The field ``name`` as T tensors ``[B, ...]`` (no stacked copy is made)."""
        value = self._raw[name]
        return list(value) if isinstance(value, list) else list(value.unbind(0))

    cur_l = property(lambda self: self._get("cur_l"))
    cur_u = property(lambda self: self._get("cur_u"))
    mem_l = property(lambda self: self._get("mem_l"))
    mem_u = property(lambda self: self._get("mem_u"))
    spk_l = property(lambda self: self._get("spk_l"))
    spk_u = property(lambda self: self._get("spk_u"))

    def __repr__(self) -> str:
        return f"LayerRecord(path={self.path!r})"


@dataclass
class Propagation:
    """Output of a propagation: per-step network outputs ``[T, B, ...]``, neuron records,
    and the input bounds of every relaxed op (``op.relaxed``, e.g. MaxPool2d):
    ``inputs[i] = (lower, upper)``, ``[B, ...]`` when static, else ``[T, B, ...]`` or T
    tensors ``[B, ...]`` (stacked by whoever reads them: IBP alone never does)."""

    out_l: Tensor
    out_u: Tensor
    layers: list[LayerRecord] = field(default_factory=list)
    inputs: dict[int, tuple[Seq, Seq]] = field(default_factory=dict)


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


def _stacked(z: Seq, static: bool, num_steps: int) -> Tensor:
    """``[T, B, ...]`` (a zero-copy view when static)."""
    return z.unsqueeze(0).expand((num_steps, *z.shape)) if static else torch.stack(list(z))


def forward(
    ops: list[BoundOp], z: Seq, static: bool, num_steps: int, grad: GradMode | None = None,
    stats: dict[int, list] | None = None,
) -> Propagation:
    """Exact forward. ``z``: ``[B, ...]`` if static, else ``[T, B, ...]`` or T tensors.

    ``grad``: gradient mode of every neuron op for this call (None: their own surrogates).
    ``stats``: None runs every module in its own mode (the user's loop). A dict
    runs the function the bounds bound instead (``op.fixed_forward``: Dropout as
    the identity, no state changes) with each batch-dependent op (train-mode
    BatchNorm) normalising by this batch's statistics at each step, recorded in
    ``stats[op index]`` as one entry per step (a single entry when static).
    """
    layers = []
    for i, op in enumerate(ops):
        if op.stateful:
            cur = _stacked(z, static, num_steps) if static else list(z)  # lists stack lazily
            z, mem = op.forward_seq(_steps(z, static, num_steps), grad)
            layers.append(LayerRecord(op.path, cur, cur, mem, mem, z, z))
            static = False
        elif stats is not None and op.batch_dependent:
            steps = [z] if static else z
            stats[i] = [op.batch_stats(s) for s in steps]
            out = [op.fixed_forward(s, st) for s, st in zip(steps, stats[i], strict=True)]
            z = out[0] if static else out
        elif stats is not None:
            (z,) = _apply(op, op.fixed_forward, z, static=static)
        else:
            if static and op.per_step:  # calls with effects: once per step, as the user's loop
                z, static = _steps(z, static, num_steps), False
            (z,) = _apply(op, op.forward, z, static=static)
    out = _stacked(z, static, num_steps)
    return Propagation(out, out, layers)


def _spike_keys(spikes: list[Tensor]) -> Tensor:
    """Rows of T spike tensors ``[B, ...]`` (0 or 1: a neuron op's exact forward) packed
    64 spikes to an int64: ``[B, W]``."""
    n = spikes[0].shape[0]
    powers = 2.0 ** torch.arange(8, device=spikes[0].device, dtype=spikes[0].dtype)
    packed = []
    for s in spikes:
        flat = s.reshape(n, -1)
        if flat.shape[1] % 8:
            flat = F.pad(flat, (0, -flat.shape[1] % 8))
        packed.append((flat.view(n, -1, 8) @ powers).to(torch.uint8))  # exact: sums <= 255
    keys = torch.cat(packed, 1)
    return F.pad(keys, (0, -keys.shape[1] % 8)).view(torch.int64)


def rows_independent(ops: list[BoundOp]) -> bool:
    """Whether each row's output depends on that row alone and a call has no effect beyond
    it: no op normalises by the batch or acts per call (train-mode BatchNorm, Dropout)."""
    return not any(op.batch_dependent or op.per_step for op in ops)


def forward_distinct(ops: list[BoundOp], z: Seq, static: bool, num_steps: int) -> Propagation:
    """The exact forward of a batch whose rows often share spike trains (a search's
    candidates, most of which differ from each other in one input coordinate).

    After each neuron layer that other ops follow, the batch shrinks to its distinct
    spike trains: what follows depends on those alone, so it runs once per distinct
    train and every row gets its train's outputs. Values equal :func:`forward`'s up
    to the CPU rounding of matmuls over a different batch size (module docstring).
    The network must be in a mode whose ops neither depend on the batch nor act
    per call (eval mode); ``layers`` then holds the last neuron layer's record only.
    """
    if not rows_independent(ops):
        raise ValueError("forward_distinct: the network's output depends on the batch or "
                         "its calls act per step (train mode); use forward()")
    last = max((i for i, op in enumerate(ops) if op.stateful), default=-1)
    rows = None  # original row -> row of the current (distinct) batch; None: the same
    record, record_rows = None, None
    for i, op in enumerate(ops):
        if op.stateful:
            steps = _steps(z, static, num_steps)
            z, mem = op.forward_values(steps, keep_mem=i == last)
            if i == last:
                cur = _stacked(steps[0], True, num_steps) if static else steps
                record, record_rows = LayerRecord(op.path, cur, cur, mem, mem, z, z), rows
            static = False
            if len(z[0]) and any(not isinstance(o, IdentityOp) for o in ops[i + 1:]):
                _, inv = torch.unique(_spike_keys(z), dim=0, return_inverse=True)
                # one row per distinct train: any of its rows (they hold the same spikes)
                first = inv.new_empty(int(inv.max()) + 1).scatter_(
                    0, inv, torch.arange(len(inv), device=inv.device))
                z = [s[first] for s in z]
                rows = inv if rows is None else inv[rows]
        else:
            (z,) = _apply(op, op.forward, z, static=static)
    out = _stacked(z, static, num_steps)
    if rows is not None:
        out = out[:, rows]
    if record is not None and record_rows is not None:
        c, m, s = (v[:, record_rows] for v in (record.cur_l, record.mem_l, record.spk_l))
        record = LayerRecord(record.path, c, c, m, m, s, s)
    return Propagation(out, out, [] if record is None else [record])


def interval(
    ops: list[BoundOp], lo: Seq, hi: Seq, static: bool, num_steps: int, slack: float,
    mem_bounds: dict[int, tuple[list[Tensor], list[Tensor]]] | None = None,
    stats: dict[int, list] | None = None,
) -> Propagation:
    """S-IBP over the unrolled network; ``slack`` widens membranes (0 at a point).

    ``mem_bounds``: optional op index -> other sound per-step membrane bounds
    ``(lower, upper)`` of that neuron op (lists of ``[B, ...]``), intersected with
    the interval ones at every step before thresholding (see
    ``NeuronOp.interval_seq``). None (the default) leaves S-IBP unchanged.
    ``stats``: the per-step statistics of batch-dependent ops recorded by
    :func:`forward` on the clean batch (train-mode bounds); required for them.
    """
    layers, inputs = [], {}
    for i, op in enumerate(ops):
        if op.relaxed:
            inputs[i] = (lo, hi)
        if op.stateful:
            rec_l = _stacked(lo, static, num_steps) if static else lo
            rec_u = _stacked(hi, static, num_steps) if static else hi
            cl, cu = _steps(lo, static, num_steps), _steps(hi, static, num_steps)
            if mem_bounds is not None and i in mem_bounds:
                lo, hi, ml, mu = op.interval_seq(cl, cu, slack, mem_bounds[i])
            else:
                lo, hi, ml, mu = op.interval_seq(cl, cu, slack)
            layers.append(LayerRecord(op.path, rec_l, rec_u, ml, mu, lo, hi))
            static = False
        elif op.batch_dependent:
            if stats is None or i not in stats:
                raise ValueError(f"{op.name} in train mode: bounds need the clean batch's statistics")
            st = stats[i]
            if static:
                lo, hi = op.interval(lo, hi, st[0])
            else:
                pairs = [op.interval(lt, ht, s) for lt, ht, s in zip(lo, hi, st, strict=True)]
                lo, hi = [p[0] for p in pairs], [p[1] for p in pairs]
        elif isinstance(op, AffineOp) and not static:
            with op.reusing_abs():  # |W| once for the T steps
                lo, hi = _apply(op, op.interval, lo, hi, static=False)
        else:
            lo, hi = _apply(op, op.interval, lo, hi, static=static)
    lo, hi = _stacked(lo, static, num_steps), _stacked(hi, static, num_steps)
    if slack and not ends_in_neuron(ops):
        pad = rounding_pad(lo, hi, slack)
        lo, hi = lo - pad, hi + pad
    return Propagation(lo, hi, layers, inputs)


def ends_in_neuron(ops: list[BoundOp]) -> bool:
    """Whether the last op that is not an identity is a neuron (per-step output = spikes)."""
    for op in reversed(ops):
        if not isinstance(op, IdentityOp):
            return op.stateful
    return False

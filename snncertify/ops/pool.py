"""Pooling: ``nn.AvgPool2d`` (linear, non-negative) and ``nn.MaxPool2d`` (monotone).

Linear rule of max pooling (the standard one for ReLU networks, e.g. DeepPoly
and auto_LiRPA): in a window with input bounds ``[l_i, u_i]`` let ``i*`` be
the position of the largest lower bound. Then

* ``y >= x_{i*}`` always (the max is at least any of its inputs);
* ``y = x_{i*}`` when the window is stable (``l_{i*} >= u_j`` for every other
  ``j``: ``x_{i*}`` is the max for every input in the box);
* ``y <= max_i u_i`` otherwise (a constant).

A lower bound of ``lam · y`` takes the lower line where ``lam >= 0`` and the
upper one where ``lam < 0``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..milp import Expr, Model, pool_membership
from .base import AffineOp, MonotoneOp, vjp_backward
from .registry import register_op


@register_op(nn.AvgPool2d)
class AvgPool2dOp(AffineOp):
    """``nn.AvgPool2d``: a linear map with non-negative weights, so ``|A| r = A r``."""

    def abs_linear(self, r: Tensor) -> Tensor:
        return self.module(r)

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """``(pool(lower), pool(upper))``: non-negative weights make the pool non-decreasing,
        also in float (each output is a sum in a fixed order, then a division, both
        rounded monotonically), so these are sound without any slack and cost two pools
        instead of the centre and radius's two pools and six elementwise passes."""
        return MonotoneOp.interval(self, lower, upper)

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return vjp_backward(self.module, lam, in_shape)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@register_op(nn.MaxPool2d)
class MaxPool2dOp(MonotoneOp):
    """``nn.MaxPool2d``: non-decreasing in every input, so intervals map exactly;
    its linear rule (module docstring) needs the bounds of its input."""

    relaxed = True

    def milp_map(self, model: Model, in_shape: tuple[int, ...]):
        W, out_shape = pool_membership(self, in_shape)
        return lambda e: encode_max_pool(model, W, out_shape, e)

    @classmethod
    def from_module(cls, module: nn.Module, path: str) -> MaxPool2dOp:
        if module.return_indices:
            raise TypeError(f"MaxPool2d at {path!r}: return_indices=True is not supported")
        return cls(module, path)

    def _geometry(self, height: int, width: int):
        """``(kernel, dilation, stride, pads (left, right, top, bottom), out size)`` with the
        extra right/bottom padding ``ceil_mode`` needs, every pad filled with -inf."""
        m = self.module
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        p = _pair(m.padding)
        out, extra = [], []
        for size, kk, dd, ss, pp in zip((height, width), k, d, s, p, strict=True):
            span = dd * (kk - 1) + 1
            n = (size + 2 * pp - span) / ss
            o = (math.ceil(n) if m.ceil_mode else math.floor(n)) + 1
            if m.ceil_mode and (o - 1) * ss >= size + pp:  # the last window must start inside
                o -= 1
            out.append(o)
            extra.append(max(0, (o - 1) * ss + span - (size + 2 * pp)))
        pads = (p[1], p[1] + extra[1], p[0], p[0] + extra[0])
        return k, d, s, pads, tuple(out)

    def _windows(self, v: Tensor, geom) -> Tensor:
        """``v`` ``[N, C, H, W]`` -> its pooling windows ``[N, C, k*k, L]``."""
        k, d, s, pads, _ = geom
        vp = F.pad(v, pads, value=-math.inf)
        cols = F.unfold(vp, k, dilation=d, stride=s)
        return cols.reshape(v.shape[0], v.shape[1], k[0] * k[1], -1)

    def backward_relaxed(self, lam: Tensor, lower: Tensor, upper: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Lower bound of ``lam · y`` by the lines of the module docstring.

        Args:
            lam: coefficients on the output, ``[N, M, C, H', W']`` (N: batch, or
                time and batch folded; M: spec rows).
            lower, upper: bounds of the input, ``[N, C, H, W]``.

        Returns:
            ``(lam_in [N, M, C, H, W], const [N, M], mag [N, M])``: coefficients on
            the input, the constant and the magnitude of its terms.
        """
        N, C, H, W = lower.shape
        M = lam.shape[1]
        geom = self._geometry(H, W)
        lo_w, up_w = self._windows(lower, geom), self._windows(upper, geom)
        best, star = lo_w.max(dim=2, keepdim=True)  # [N, C, 1, L]
        others = up_w.scatter(2, star, -math.inf).amax(dim=2)  # largest other upper bound
        stable = (best.squeeze(2) >= others).unsqueeze(1)  # [N, 1, C, L]
        cap = up_w.amax(dim=2).unsqueeze(1)
        lam = lam.reshape(N, M, C, -1)
        use_var = (lam >= 0) | stable
        term = torch.where(use_var, torch.zeros_like(lam), lam * cap)
        const, mag = term.flatten(2).sum(-1), term.abs().flatten(2).sum(-1)
        lam_var = torch.where(use_var, lam, torch.zeros_like(lam))
        K2 = lo_w.shape[2]
        cols = lam.new_zeros((N, M, C, K2, lam.shape[-1]))
        idx = star.unsqueeze(1).expand(N, M, C, 1, lam.shape[-1])
        cols.scatter_(3, idx, lam_var.unsqueeze(3))
        k, d, s, pads, _ = geom
        padded = (H + pads[2] + pads[3], W + pads[0] + pads[1])
        grid = F.fold(cols.reshape(N * M, C * K2, -1), padded, k, dilation=d, stride=s)
        grid = grid[:, :, pads[2]:pads[2] + H, pads[0]:pads[0] + W]
        return grid.reshape(N, M, C, H, W), const, mag


def encode_max_pool(model: Model, W: sp.csr_matrix, out_shape: tuple[int, ...], e: Expr) -> Expr:
    """Exact max pooling (window membership ``W`` csr ``[n_out, n_in]``): OR over binary
    inputs, else one selection binary per candidate."""
    n_out = W.shape[0]
    windows = [W.indices[W.indptr[o]:W.indptr[o + 1]] for o in range(n_out)]
    Ec = e.c
    if e.binary:  # y = OR of the members: y >= e_j, y <= sum_j e_j, y in [0, 1]
        ycols = model.add_vars(np.zeros(n_out), 1.0, integer=False)
        EA = model.pad(e.A)
        for o, members in enumerate(windows):
            k = len(members)
            y = sp.csr_matrix((np.ones(k), (np.arange(k), np.full(k, ycols[o]))),
                              shape=(k, model.n))
            model.add_rows(y - EA[members], Ec[members], np.inf)
            total = sp.csr_matrix(EA[members].sum(0))
            model.add_rows(y[:1] - total, -np.inf, Ec[members].sum())
        return model.var_expr(ycols, out_shape, binary=True)  # spikes: no rounding
    err = e.error()
    out_err = np.array([err[m].max() for m in windows])  # max is exact in float
    lo, hi = model.expr_bounds(e)
    out_lo = np.array([lo[m].max() for m in windows])
    out_hi = np.array([hi[m].max() for m in windows])
    cands = [m[hi[m] >= out_lo[o]] for o, m in enumerate(windows)]  # others never the max
    ycols = model.add_vars(out_lo, out_hi, integer=False)
    zcols = [model.add_vars(np.zeros(len(m)), 1.0, integer=True) if len(m) > 1 else None
             for m in cands]
    EA = model.pad(e.A)
    for o, members in enumerate(cands):
        k = len(members)
        y = sp.csr_matrix((np.ones(k), (np.arange(k), np.full(k, ycols[o]))), shape=(k, model.n))
        if k == 1:
            model.add_rows(y - EA[members], Ec[members], Ec[members])
            continue
        z = zcols[o]
        big = out_hi[o] - lo[members]
        Z = sp.csr_matrix((big, (np.arange(k), z)), shape=(k, model.n))
        # y >= e_j ;  y <= e_j + (max hi - lo_j)(1 - z_j) ;  sum_j z_j = 1
        model.add_rows(y - EA[members], Ec[members], np.inf)
        model.add_rows(y - EA[members] + Z, -np.inf, Ec[members] + big)
        model.add_rows(sp.csr_matrix((np.ones(k), (np.zeros(k, dtype=np.int64), z)),
                                     shape=(1, model.n)), 1.0, 1.0)
    out = model.var_expr(ycols, out_shape)
    out.err = out_err
    return out

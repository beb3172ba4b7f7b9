"""``nn.BatchNorm1d`` / ``nn.BatchNorm2d``.

Forward: exactly the module in its current mode. In train mode that is what
the user's own loop does: every time step is its own batch (normalised with
that step's batch statistics) and updates the running statistics.

Bounds bound ONE fixed affine map per step:

* eval mode: the running statistics;
* train mode (certified training): the CLEAN batch's statistics at that step,
  as CROWN-IBP training does (Zhang et al., 2020), passed in as ``stats``;
  the bounds then hold for that affine map, not for the batch statistics a
  perturbed batch would have.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import AffineOp
from .registry import register_op

#: per-channel ``(mean, var)`` of one batch, each ``[C]``
Stats = tuple[Tensor, Tensor]


@register_op(nn.BatchNorm1d, nn.BatchNorm2d)
class BatchNormOp(AffineOp):
    """``y = (x - mean) / sqrt(var + eps) * w + b`` with fixed statistics for the bounds."""

    def milp_abs_const(self, in_shape: tuple[int, ...]) -> Tensor:
        """``|w / sqrt(var + eps) * mean| + |b|`` per element, ``[1, *in_shape]``."""
        mod = copy.deepcopy(self.module)
        for name in ("weight", "bias", "running_mean"):
            t = getattr(mod, name)
            if t is not None:
                t.data = -t.data.abs() if name == "running_mean" else t.data.abs()
        p = next(mod.buffers())
        with torch.no_grad():
            return type(self)(mod, self.path).forward(
                torch.zeros((1, *in_shape), dtype=p.dtype, device=p.device))

    @classmethod
    def from_module(cls, module: nn.Module, path: str) -> BatchNormOp:
        if module.running_mean is None:
            raise TypeError(
                f"{type(module).__name__} at {path!r} has no running statistics "
                "(track_running_stats=False): its eval-mode function is undefined"
            )
        return cls(module, path)

    @property
    def per_step(self) -> bool:
        return self.module.training

    @property
    def batch_dependent(self) -> bool:
        return self.module.training

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x) if self.module.training else self.fixed_forward(x)

    def fixed_forward(self, x: Tensor, stats: Stats | None = None) -> Tensor:
        """The affine map with ``stats`` (None: the running statistics); no state changes."""
        m = self.module
        if stats is None:
            return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        # written out: F.batch_norm takes no gradient through given statistics
        y = (x - self.channel_view(stats[0], x.ndim)) * self.channel_view(self.scale(stats), x.ndim)
        return y + self.channel_view(m.bias, x.ndim) if m.bias is not None else y

    def batch_stats(self, x: Tensor) -> Stats:
        """Per-channel batch mean and biased variance of ``x`` ``[N, C, ...]`` (as train mode normalises)."""
        dims = [0, *range(2, x.ndim)]
        return x.mean(dims), x.var(dims, unbiased=False)

    def scale(self, stats: Stats | None = None) -> Tensor:
        """Per-channel factor ``w / sqrt(var + eps)``, shape ``[C]``."""
        m = self.module
        var = stats[1] if stats is not None else m.running_var
        s = torch.rsqrt(var + m.eps)
        return s * m.weight if m.weight is not None else s

    def channel_view(self, v: Tensor, ndim: int) -> Tensor:
        """``[C]`` -> broadcastable against ``[N, C, ...]`` of rank ``ndim``."""
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def abs_linear(self, r: Tensor, stats: Stats | None = None) -> Tensor:
        return r * self.channel_view(self.scale(stats).abs(), r.ndim)

    def interval(
        self, lower: Tensor, upper: Tensor, stats: Stats | None = None
    ) -> tuple[Tensor, Tensor]:
        centre = torch.add(lower, upper).mul_(0.5)
        radius = torch.sub(upper, lower).mul_(0.5)
        c = self.fixed_forward(centre, stats)
        r = self.abs_linear(radius, stats)
        return c - r, c + r

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam * self.channel_view(self.scale(), lam.ndim)

    def bias(self, ndim: int) -> Tensor | None:
        m = self.module
        shift = -m.running_mean * self.scale()
        if m.bias is not None:
            shift = shift + m.bias
        return self.channel_view(shift, ndim)[0]

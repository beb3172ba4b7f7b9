"""``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in evaluation mode (running statistics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import AffineOp


class BatchNormOp(AffineOp):
    """Eval-mode batch norm: ``y = (x - mean) / sqrt(var + eps) * w + b``.

    Always uses the running statistics, whatever ``module.training`` says:
    a certificate is about one fixed function.
    """

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        return F.batch_norm(
            x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps
        )

    def scale(self) -> Tensor:
        """Per-channel factor ``w / sqrt(var + eps)``, shape ``[C]``."""
        m = self.module
        s = torch.rsqrt(m.running_var + m.eps)
        return s * m.weight if m.weight is not None else s

    def channel_view(self, v: Tensor, ndim: int) -> Tensor:
        """``[C]`` -> broadcastable against ``[N, C, ...]`` of rank ``ndim``."""
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def abs_linear(self, r: Tensor) -> Tensor:
        return r * self.channel_view(self.scale().abs(), r.ndim)

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam * self.channel_view(self.scale(), lam.ndim)

    def bias(self, ndim: int) -> Tensor | None:
        m = self.module
        shift = -m.running_mean * self.scale()
        if m.bias is not None:
            shift = shift + m.bias
        return self.channel_view(shift, ndim)[0]

"""Pooling: ``nn.AvgPool2d`` (linear, non-negative) and ``nn.MaxPool2d`` (monotone)."""

from __future__ import annotations

from torch import Tensor

from .base import AffineOp, MonotoneOp, vjp_backward


class AvgPool2dOp(AffineOp):
    """``nn.AvgPool2d``: a linear map with non-negative weights, so ``|A| r = A r``."""

    def abs_linear(self, r: Tensor) -> Tensor:
        return self.module(r)

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return vjp_backward(self.module, lam, in_shape)


class MaxPool2dOp(MonotoneOp):
    """``nn.MaxPool2d``: non-decreasing in every input, so bounds map exactly.

    It has no linear (CROWN) rule: linear bound methods reject it.
    """

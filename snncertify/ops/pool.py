"""Pooling: ``nn.AvgPool2d`` (linear, non-negative) and ``nn.MaxPool2d`` (monotone)."""

from __future__ import annotations

from torch import Tensor

from .base import AffineOp, MonotoneOp


class AvgPool2dOp(AffineOp):
    """``nn.AvgPool2d``: a linear map with non-negative weights, so ``|A| r = A r``."""

    def abs_linear(self, r: Tensor) -> Tensor:
        return self.module(r)


class MaxPool2dOp(MonotoneOp):
    """``nn.MaxPool2d``: non-decreasing in every input, so bounds map exactly."""

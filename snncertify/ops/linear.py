"""``nn.Linear`` and ``nn.Conv2d``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import AffineOp


class LinearOp(AffineOp):
    """``nn.Linear``: ``[N, in_features] -> [N, out_features]``."""

    def abs_linear(self, r: Tensor) -> Tensor:
        return F.linear(r, self.module.weight.abs())


class Conv2dOp(AffineOp):
    """``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode).

    ``[N, C_in, H, W] -> [N, C_out, H', W']``.
    """

    def abs_linear(self, r: Tensor) -> Tensor:
        return self.module._conv_forward(r, self.module.weight.abs(), None)

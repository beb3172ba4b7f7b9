"""``nn.Linear`` and ``nn.Conv2d``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import AffineOp, vjp_backward
from .registry import register_op


@register_op(nn.Linear)
class LinearOp(AffineOp):
    """``nn.Linear``: ``[N, in_features] -> [N, out_features]``."""

    def abs_linear(self, r: Tensor) -> Tensor:
        return F.linear(r, self.abs_weight())

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam.matmul(self.module.weight)

    def bias(self, ndim: int) -> Tensor | None:
        return self.module.bias


@register_op(nn.Conv2d)
class Conv2dOp(AffineOp):
    """``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode).

    ``[N, C_in, H, W] -> [N, C_out, H', W']``.
    """

    milp_fan_factor = 2

    def abs_linear(self, r: Tensor) -> Tensor:
        return self.module._conv_forward(r, self.abs_weight(), None)

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        """``conv_transpose2d`` with the output padding that restores ``in_shape``
        (zero padding); autograd's own transpose for other padding modes."""
        m = self.module
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return vjp_backward(lambda z: m._conv_forward(z, m.weight, None), lam, in_shape)
        out_pad = tuple(
            size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for size, o, s, p, d, k in zip(
                in_shape[-2:], lam.shape[-2:], m.stride, m.padding, m.dilation, m.kernel_size,
                strict=True,
            )
        )
        return F.conv_transpose2d(
            lam, m.weight, None, m.stride, m.padding, out_pad, m.groups, m.dilation
        )

    def bias(self, ndim: int) -> Tensor | None:
        b = self.module.bias
        return None if b is None else b.reshape(-1, 1, 1)

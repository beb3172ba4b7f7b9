"""Operations that only move values: ``nn.Flatten``, ``nn.Identity``, ``nn.Dropout``."""

from __future__ import annotations

from torch import Tensor

from .base import MonotoneOp


class FlattenOp(MonotoneOp):
    """``nn.Flatten(start_dim >= 1)``: ``[N, d1, d2, ...] -> [N, d1*d2*...]``."""

    linear = True

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam.reshape((lam.shape[0], *in_shape))


class IdentityOp(MonotoneOp):
    """``nn.Identity`` and ``nn.Dropout*`` (always the eval-mode identity)."""

    linear = True

    def forward(self, x: Tensor) -> Tensor:
        return x

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam

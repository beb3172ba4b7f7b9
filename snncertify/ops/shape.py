"""Operations that only move values: ``nn.Flatten``, ``nn.Identity``, ``nn.Dropout*``."""

from __future__ import annotations

from torch import Tensor

from .base import MonotoneOp


class FlattenOp(MonotoneOp):
    """``nn.Flatten(start_dim >= 1)``: ``[N, d1, d2, ...] -> [N, d1*d2*...]``."""

    linear = True

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam.reshape((lam.shape[0], *in_shape))


class IdentityOp(MonotoneOp):
    """``nn.Identity``."""

    linear = True

    def forward(self, x: Tensor) -> Tensor:
        return x

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam


class DropoutOp(IdentityOp):
    """``nn.Dropout*``: the module in its current mode in the forward (train mode draws
    a fresh mask at every call, i.e. every time step, as the user's loop does); the
    bounds bound the eval-mode identity, the network that is deployed and certified."""

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x) if self.module.training else x

    def fixed_forward(self, x: Tensor) -> Tensor:
        return x

    @property
    def per_step(self) -> bool:
        return self.module.training

"""Operations that only move values: ``nn.Flatten``, ``nn.Identity``, ``nn.Dropout*``."""

from __future__ import annotations

from torch import Tensor, nn

from .base import MonotoneOp
from .registry import register_op


@register_op(nn.Flatten)
class FlattenOp(MonotoneOp):
    """``nn.Flatten(start_dim >= 1)``: ``[N, d1, d2, ...] -> [N, d1*d2*...]``."""

    linear = True
    moves_values = True

    @classmethod
    def from_module(cls, module: nn.Module, path: str) -> FlattenOp:
        if module.start_dim == 0:
            raise TypeError(f"Flatten at {path!r}: start_dim=0 would merge the batch axis")
        return cls(module, path)

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam.reshape((lam.shape[0], *in_shape))


@register_op(nn.Identity)
class IdentityOp(MonotoneOp):
    """``nn.Identity``."""

    linear = True
    moves_values = True

    def forward(self, x: Tensor) -> Tensor:
        return x

    def backward(self, lam: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return lam


@register_op(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
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

"""One class per supported operation (see ``base.py`` for the contract)."""

from .base import AffineOp, BoundOp, MonotoneOp
from .leaky import LeakyOp
from .linear import Conv2dOp, LinearOp
from .norm import BatchNormOp
from .pool import AvgPool2dOp, MaxPool2dOp
from .shape import DropoutOp, FlattenOp, IdentityOp

__all__ = [
    "AffineOp",
    "AvgPool2dOp",
    "BatchNormOp",
    "BoundOp",
    "Conv2dOp",
    "DropoutOp",
    "FlattenOp",
    "IdentityOp",
    "LeakyOp",
    "LinearOp",
    "MaxPool2dOp",
    "MonotoneOp",
]

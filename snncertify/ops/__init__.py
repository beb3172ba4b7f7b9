"""One class per supported operation (see ``base.py`` for the contract)."""

from .base import AffineOp, BoundOp, MonotoneOp
from .leaky import LeakyOp
from .linear import Conv2dOp, LinearOp
from .neuron import NeuronOp
from .norm import BatchNormOp
from .pool import AvgPool2dOp, MaxPool2dOp
from .registry import op_for, register_op, supported_names
from .shape import DropoutOp, FlattenOp, IdentityOp
from .synaptic import SynapticOp

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
    "NeuronOp",
    "SynapticOp",
    "op_for",
    "register_op",
    "supported_names",
]

"""Turn an snnTorch network (``nn.Sequential``, nested allowed) into bound ops."""

from __future__ import annotations

from torch import nn

from .ops import BoundOp, op_for

EXPLICIT_STYLE_HELP = (
    "certify() needs the network as an nn.Sequential (nested allowed) of supported "
    "layers with snn.Leaky neurons, because it runs the time loop itself. For a "
    "network written in the explicit style (its own forward and time loop), pass "
    "the same modules in order, e.g. certify(nn.Sequential(net.fc1, net.lif1, "
    "net.fc2, net.lif2), num_steps=...): parameters stay shared, and the Leaky "
    "layers may keep init_hidden=False."
)


def parse_network(net: nn.Module) -> list[BoundOp]:
    """Flatten ``net`` into the list of ops it runs at every time step.

    Each module is looked up in the op registry (:mod:`snncertify.ops.registry`).

    Raises:
        TypeError: naming the class and dotted position of the first module
            that is not supported, or explaining how to pass an
            explicit-style network.
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"got a {type(net).__name__}, not an nn.Sequential. {EXPLICIT_STYLE_HELP}")
    ops: list[BoundOp] = []

    def walk(seq: nn.Sequential, prefix: str) -> None:
        for name, child in seq.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(child, path + ".")
            else:
                ops.append(op_for(child, path))

    walk(net, "")
    if not any(op.stateful for op in ops):
        raise TypeError("the network has no snn.Leaky (or snn.Synaptic) layer: nothing spikes")
    return ops

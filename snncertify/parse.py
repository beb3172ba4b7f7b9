"""Turn an snnTorch network (``nn.Sequential``, nested allowed) into bound ops."""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

from .ops import (
    AvgPool2dOp,
    BatchNormOp,
    BoundOp,
    Conv2dOp,
    DropoutOp,
    FlattenOp,
    IdentityOp,
    LeakyOp,
    LinearOp,
    MaxPool2dOp,
)
from .ops.leaky import unsupported_leaky_options

EXPLICIT_STYLE_HELP = (
    "certify() needs the network as an nn.Sequential (nested allowed) of supported "
    "layers with snn.Leaky neurons, because it runs the time loop itself. For a "
    "network written in the explicit style (its own forward and time loop), pass "
    "the same modules in order, e.g. certify(nn.Sequential(net.fc1, net.lif1, "
    "net.fc2, net.lif2), num_steps=...): parameters stay shared, and the Leaky "
    "layers may keep init_hidden=False."
)

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


def _leaky_op(module: nn.Module, path: str) -> BoundOp:
    bad = unsupported_leaky_options(module)
    if bad:
        raise TypeError(
            f"snn.Leaky at {path!r} uses unsupported option(s): {', '.join(bad)}"
        )
    probe = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 1.0])
    with torch.no_grad():
        fired = module.spike_grad(probe)
    if not torch.equal(fired.float(), (probe > 0).float()):
        raise TypeError(
            f"snn.Leaky at {path!r}: its spike_grad is not a strict Heaviside in the "
            "forward pass (spike iff U > threshold), which the bounds assume"
        )
    return LeakyOp(module, path)


def _op_for(module: nn.Module, path: str) -> BoundOp:
    if type(module) is snn.Leaky:
        return _leaky_op(module, path)
    if isinstance(module, nn.Linear):
        return LinearOp(module, path)
    if isinstance(module, nn.Conv2d):
        return Conv2dOp(module, path)
    if isinstance(module, nn.AvgPool2d):
        return AvgPool2dOp(module, path)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise TypeError(f"MaxPool2d at {path!r}: return_indices=True is not supported")
        return MaxPool2dOp(module, path)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if module.running_mean is None:
            raise TypeError(
                f"{type(module).__name__} at {path!r} has no running statistics "
                "(track_running_stats=False): its eval-mode function is undefined"
            )
        return BatchNormOp(module, path)
    if isinstance(module, nn.Flatten):
        if module.start_dim == 0:
            raise TypeError(f"Flatten at {path!r}: start_dim=0 would merge the batch axis")
        return FlattenOp(module, path)
    if isinstance(module, _DROPOUT):
        return DropoutOp(module, path)
    if isinstance(module, nn.Identity):
        return IdentityOp(module, path)
    raise TypeError(
        f"unsupported module {type(module).__module__}.{type(module).__name__} at "
        f"position {path!r}. Supported: Linear, Conv2d, AvgPool2d, MaxPool2d, Flatten, "
        "Dropout, Identity, BatchNorm1d/2d and snn.Leaky, inside nn.Sequential."
    )


def parse_network(net: nn.Module) -> list[BoundOp]:
    """Flatten ``net`` into the list of ops it runs at every time step.

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
                ops.append(_op_for(child, path))

    walk(net, "")
    if not any(op.stateful for op in ops):
        raise TypeError("the network has no snn.Leaky layer: nothing spikes")
    return ops

"""Module type -> op class: the one place that says which modules are supported.

Op classes register themselves with :func:`register_op`; the parser asks
:func:`op_for`. A neuron class is matched by its EXACT type (a subclass of
``snn.Leaky`` may change the dynamics the bounds assume); layers of ``torch.nn``
also match their subclasses (e.g. ``NonDynamicallyQuantizableLinear``).
Each op class validates its module in ``from_module`` (a ``TypeError`` naming
the option and the position).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import BoundOp

_EXACT: dict[type, type[BoundOp]] = {}
_SUBCLASS: dict[type, type[BoundOp]] = {}


def register_op(*module_types: type, exact: bool = False,
                replace: bool = False) -> Callable[[type], type]:
    """Class decorator: ``module_types`` are bounded by the decorated op class.

    A module type that already has an op class is refused (ValueError naming both)
    unless ``replace=True``."""

    def deco(cls: type[BoundOp]) -> type[BoundOp]:
        table = _EXACT if exact else _SUBCLASS
        for t in module_types:
            old = table.get(t)
            if old is not None and old is not cls and not replace:
                raise ValueError(f"{t.__module__}.{t.__name__} is already bounded by "
                                 f"{old.__module__}.{old.__name__}; pass replace=True to "
                                 f"register {cls.__name__} instead")
        for t in module_types:
            table[t] = cls
        return cls

    return deco


def op_class(module: nn.Module) -> type[BoundOp] | None:
    """The op class registered for ``module``'s type, or None."""
    cls = _EXACT.get(type(module))
    if cls is not None:
        return cls
    for t in type(module).__mro__:
        if t in _SUBCLASS:
            return _SUBCLASS[t]
    return None


def op_for(module: nn.Module, path: str) -> BoundOp:
    """The op for ``module`` at dotted position ``path``.

    Raises:
        TypeError: an unsupported module (its class and position named, with the
            supported list) or an unsupported option of a supported one.
    """
    cls = op_class(module)
    if cls is None:
        raise TypeError(
            f"unsupported module {type(module).__module__}.{type(module).__name__} at "
            f"position {path!r}. Supported: {', '.join(supported_names())}, inside nn.Sequential."
        )
    return cls.from_module(module, path)


def supported_names() -> list[str]:
    """Names of the supported module types, in registration order."""
    names = []
    for t in [*_SUBCLASS, *_EXACT]:
        prefix = "snn." if t.__module__.startswith("snntorch") else ""
        names.append(prefix + t.__name__)
    return names
